import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { KvCache } from '../model/kv-cache.js';
import { loadModel } from '../model/load-model.js';
import type { Quantization } from '../model/quantizer.js';
import { QUANTIZATIONS } from '../model/quantizer.js';

const HELP = `usage: loraserve generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3) --max-tokens N [options]

Greedy generation from a Hugging Face checkpoint directory.

options:
  --model DIR          checkpoint directory (config.json, *.safetensors, tokenizer.json)
  --prompt TEXT        prompt text (needs tokenizer.json)
  --prompt-ids IDS     prompt as comma-separated token ids
  --max-tokens N       tokens to generate (default 16)
  --quant Q            int4 | int8 | fp32 (default int4)
  --ignore-eos         keep generating past end-of-sequence tokens
  --threads N          ONNX Runtime threads (default: all cores)
  --json               print one line {"token_ids": [...], "text": "..."} (generated tokens only)
`;

export async function generateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      prompt: { type: 'string' },
      'prompt-ids': { type: 'string' },
      'max-tokens': { type: 'string', default: '16' },
      quant: { type: 'string', default: 'int4' },
      'ignore-eos': { type: 'boolean', default: false },
      threads: { type: 'string', default: String(availableParallelism()) },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const fail = (message: string) => {
    process.stderr.write(`loraserve generate: ${message}\n\n${HELP}`);
    return 2;
  };
  if (!values.model) return fail('--model is required');
  if ((values.prompt === undefined) === (values['prompt-ids'] === undefined)) return fail('give exactly one of --prompt and --prompt-ids');
  const maxTokens = Number(values['max-tokens']);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) return fail('--max-tokens must be a positive integer');
  const threads = Number(values.threads);
  if (!Number.isInteger(threads) || threads < 1) return fail('--threads must be a positive integer');
  if (!QUANTIZATIONS.includes(values.quant as Quantization)) return fail(`--quant must be one of ${QUANTIZATIONS.join(', ')}`);
  let promptIds: number[] | undefined;
  if (values['prompt-ids'] !== undefined) {
    promptIds = values['prompt-ids'].split(',').map((s) => Number(s.trim()));
    if (promptIds.length === 0 || promptIds.some((id) => !Number.isInteger(id) || id < 0)) return fail('--prompt-ids must be comma-separated non-negative integers');
  }

  const model = await loadModel({ modelDir: values.model, quantization: values.quant as Quantization, threads });
  const { config, decoder, tokenizer } = model;
  if (!promptIds) {
    if (!tokenizer) return fail(`${values.model} has no tokenizer.json: use --prompt-ids`);
    promptIds = tokenizer.encode(values.prompt ?? '');
  }
  const badId = promptIds.find((id) => id >= config.vocabSize);
  if (badId !== undefined) return fail(`token id ${badId} is outside the vocabulary (size ${config.vocabSize})`);
  if (promptIds.length + maxTokens > config.maxPositionEmbeddings) {
    return fail(`prompt (${promptIds.length}) + max tokens (${maxTokens}) exceed the context length ${config.maxPositionEmbeddings}`);
  }

  const kv = new KvCache(config, 1, promptIds.length + maxTokens);
  const stop = new Set(values['ignore-eos'] ? [] : config.eosTokenIds);
  const generated: number[] = [];
  let next = promptIds;
  let cached = 0;
  while (generated.length < maxTokens) {
    const logits = await decoder.forward({ firstRow: 0, tokens: [next], pastLengths: [cached] }, kv);
    cached += next.length;
    const id = argmax(logits);
    generated.push(id);
    if (stop.has(id)) break;
    next = [id];
  }
  await decoder.release();
  const text = tokenizer ? tokenizer.decode(generated, { skipSpecialTokens: true }) : '';
  process.stdout.write(values.json ? `${JSON.stringify({ token_ids: generated, text })}\n` : `${text}\n`);
  return 0;
}

function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}
