// The prompt tokenizer worker: renders chat templates and tokenizes long prompts, off the HTTP thread.
import { parentPort, workerData } from 'node:worker_threads';
import { ChatTemplateError, Tokenizer } from '../model/tokenizer.js';
import type { TokenizeCall, TokenizeJob, TokenizeReply, TokenizeResult } from './prompt-tokenizer.js';

const port = parentPort;
if (!port) throw new Error('prompt-tokenizer-worker must run in a worker thread');
const tokenizer = Tokenizer.fromDir((workerData as { modelDir: string }).modelDir);

function run(job: TokenizeJob): TokenizeResult {
  let text: string;
  if (job.kind === 'text') {
    text = job.text;
  } else {
    try {
      text = tokenizer.applyChatTemplate(job.messages, { addGenerationPrompt: job.addGenerationPrompt });
    } catch (err) {
      if (err instanceof ChatTemplateError) return { outcome: 'template_error', message: err.message };
      throw err;
    }
    if (text.length > job.maxChars) return { outcome: 'too_long', chars: text.length };
  }
  return { outcome: 'ids', ids: Uint32Array.from(tokenizer.encode(text, { addSpecialTokens: job.addSpecialTokens })) };
}

port.on('message', ({ id, job }: TokenizeCall) => {
  let result: TokenizeResult;
  try {
    result = run(job);
  } catch (err) {
    result = { outcome: 'failed', message: err instanceof Error ? err.message : String(err) };
  }
  port.postMessage({ id, result } satisfies TokenizeReply, result.outcome === 'ids' ? [result.ids.buffer] : []);
});
