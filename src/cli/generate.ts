import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Engine } from '../engine/engine.js';
import type { GenerationRequest } from '../engine/engine-types.js';
import type { OpenAiSamplingFields } from '../api/request-mapping.js';
import { openAiSampling } from '../api/request-mapping.js';
import type { SamplingParams } from '../engine/sampling-params.js';
import type { RuntimeChoice } from '../model/load-model.js';
import type { Quantization } from '../model/quantizer.js';
import { positiveInt, quantization, runtimeChoice, UsageError } from './usage.js';

const HELP = `usage: loraserve generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3 | --requests FILE) [options]

Generation through the engine (greedy unless a request says otherwise).

options:
  --model DIR          checkpoint directory (config.json, *.safetensors, tokenizer.json)
  --prompt TEXT        prompt text
  --prompt-ids IDS     prompt as comma-separated token ids
  --requests FILE      JSON lines, each {"prompt" or "prompt_ids", "adapter"?, "max_tokens"?, sampling fields...};
                       all run concurrently; prints one line per request in input order:
                       {"index", "token_ids", "text"} or {"index", "error"}
  --adapter NAME=DIR   register a PEFT adapter under NAME (repeatable)
  --max-tokens N       tokens to generate per request (default 16)
  --quant Q            int4 | int8 | fp32 (default int4)
  --max-lora-rank N    largest adapter rank (default 16, as serve)
  --ignore-eos         keep generating past end-of-sequence tokens
  --threads N          ONNX Runtime threads (default: all cores)
  --runtime R          auto | native | stock (default auto: native where it can be loaded, LORASERVE_RUNTIME)
  --json               print {"token_ids": [...], "text": "..."} (generated tokens only)
`;

/** A line of --requests, with the OpenAI/vLLM field names. */
interface RequestLine extends OpenAiSamplingFields {
  prompt?: string;
  prompt_ids?: number[];
  adapter?: string | null;
  max_tokens?: number;
}

export async function generateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      prompt: { type: 'string' },
      'prompt-ids': { type: 'string' },
      requests: { type: 'string' },
      adapter: { type: 'string', multiple: true, default: [] },
      'max-tokens': { type: 'string', default: '16' },
      quant: { type: 'string', default: 'int4' },
      'max-lora-rank': { type: 'string', default: '16' },
      'ignore-eos': { type: 'boolean', default: false },
      threads: { type: 'string', default: String(availableParallelism()) },
      runtime: { type: 'string', default: process.env.LORASERVE_RUNTIME || 'auto' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let lines: RequestLine[];
  let adapters: [string, string][];
  let maxTokens: number;
  try {
    if (!values.model) throw new UsageError('--model is required');
    const sources = [values.prompt, values['prompt-ids'], values.requests].filter((v) => v !== undefined).length;
    if (sources !== 1) throw new UsageError('give exactly one of --prompt, --prompt-ids and --requests');
    quantization(values.quant);
    runtimeChoice(values.runtime);
    maxTokens = positiveInt(values['max-tokens'], '--max-tokens');
    adapters = values.adapter.map((spec) => {
      const eq = spec.indexOf('=');
      if (eq <= 0 || eq === spec.length - 1) throw new UsageError(`--adapter must be NAME=DIR (found ${spec})`);
      return [spec.slice(0, eq), spec.slice(eq + 1)];
    });
    lines = values.requests !== undefined ? readRequests(values.requests)
      : values.prompt !== undefined ? [{ prompt: values.prompt }]
        : [{ prompt_ids: parseIds(values['prompt-ids'] ?? '') }];
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`loraserve generate: ${err.message}\n\n${HELP}`);
    return 2;
  }

  const engine = await Engine.start({
    modelDir: values.model,
    quantization: values.quant as Quantization,
    threads: positiveInt(values.threads, '--threads'),
    runtime: values.runtime as RuntimeChoice,
    maxBatch: Math.min(64, Math.max(1, lines.length)),
    contextLength: 4096,
    prefillChunk: 512,
    maxLoras: adapters.length,
    maxLoraRank: positiveInt(values['max-lora-rank'], '--max-lora-rank'),
    maxCpuLoraBytes: 4 * 2 ** 30,
    maxWaiting: Math.max(1, lines.length),
    // Offline: every request is run, however long it waits for a slot.
    adapterWaitTimeoutMs: Number.POSITIVE_INFINITY,
  });
  try {
    const refused = new Map<string, string>();
    for (const [name, dir] of adapters) {
      await engine.adapters.register(name, dir).catch((err: Error) => refused.set(name, `${dir}: ${err.message}`));
    }
    const results = await Promise.all(lines.map(async (line, index) => {
      const adapter = line.adapter ?? null;
      if (adapter !== null && refused.has(adapter)) return { index, error: `adapter '${adapter}' was refused: ${refused.get(adapter)}` };
      const promptIds = line.prompt_ids ?? engine.tokenizer.encode(line.prompt ?? '');
      const request: GenerationRequest = { id: `cli-${index}`, promptIds, adapter, sampling: sampling(line, maxTokens, values['ignore-eos']) };
      const tokenIds: number[] = [];
      let text = '';
      for await (const event of engine.submit(request)) {
        if (event.type === 'error') return { index, error: event.message };
        if (event.type === 'token') tokenIds.push(event.tokenId);
        text += event.text;
      }
      return { index, token_ids: tokenIds, text };
    }));
    for (const r of results) {
      if (values.requests !== undefined) process.stdout.write(`${JSON.stringify(r)}\n`);
      else if ('error' in r) throw new Error(r.error);
      else process.stdout.write(values.json ? `${JSON.stringify({ token_ids: r.token_ids, text: r.text })}\n` : `${r.text}\n`);
    }
  } finally {
    await engine.shutdown(0);
  }
  return 0;
}

/** The line's OpenAI/vLLM sampling fields; greedy unless it sets a temperature. */
function sampling(line: RequestLine, maxTokens: number, ignoreEos: boolean): SamplingParams {
  return openAiSampling({ temperature: 0, ignore_eos: ignoreEos, ...line }, line.max_tokens ?? maxTokens, null);
}

function readRequests(path: string): RequestLine[] {
  return readFileSync(path, 'utf8').split('\n').flatMap((text, i) => {
    if (text.trim() === '') return [];
    let line: unknown;
    try {
      line = JSON.parse(text);
    } catch {
      throw new UsageError(`${path}:${i + 1}: not valid JSON`);
    }
    if (typeof line !== 'object' || line === null || Array.isArray(line)) throw new UsageError(`${path}:${i + 1}: each line must be a JSON object`);
    const r = line as RequestLine;
    if ((r.prompt === undefined) === (r.prompt_ids === undefined)) throw new UsageError(`${path}:${i + 1}: give exactly one of "prompt" and "prompt_ids"`);
    return [r];
  });
}

function parseIds(text: string): number[] {
  const ids = text.split(',').map((s) => Number(s.trim()));
  if (ids.some((id) => !Number.isInteger(id) || id < 0)) throw new UsageError('--prompt-ids must be comma-separated non-negative integers');
  return ids;
}
