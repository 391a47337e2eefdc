// Batch invariance on a qwen2.5-0.5b-shaped checkpoint: greedy requests run alone (batch 1) and all at once (one batch),
// base and with rank-16 adapters; prints how many token sequences are identical and the largest logprob difference
// over the tokens both runs share. Prints one JSON object.
// Usage: npm run bench:batch-invariance [-- --quant int4|int8|fp32 --requests 16 --tokens 32 --runtime auto|native|stock]
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine } from '../src/engine/engine.js';
import type { GenerationEvent } from '../src/engine/engine-types.js';
import { DEFAULT_SAMPLING } from '../src/engine/sampling-params.js';
import { PROJECTIONS } from '../src/model/model-config.js';
import type { RuntimeChoice } from '../src/model/load-model.js';
import type { Quantization } from '../src/model/quantizer.js';
import { Random } from '../src/synth/random.js';
import { synthAdapter } from '../src/synth/adapter-synth.js';
import { benchCheckpoint } from './bench-checkpoint.js';

const { values } = parseArgs({
  options: {
    quant: { type: 'string', default: 'int4' },
    requests: { type: 'string', default: '16' },
    tokens: { type: 'string', default: '32' },
    threads: { type: 'string', default: String(availableParallelism()) },
    runtime: { type: 'string', default: 'auto' },
  },
});
const requests = Number(values.requests);
const maxTokens = Number(values.tokens);
const modelDir = benchCheckpoint('qwen2.5-0.5b');
const work = mkdtempSync(join(tmpdir(), 'loraserve-invariance-'));
const adapters = ['x', 'y'].map((name, i) => {
  const dir = join(work, name);
  synthAdapter(dir, modelDir, { rank: 16, alpha: 32, targetModules: [...PROJECTIONS], seed: 10 + i, dtype: 'BF16' });
  return { name, dir };
});

const engine = await Engine.start({
  modelDir, quantization: values.quant as Quantization, threads: Number(values.threads), maxBatch: requests, contextLength: 512,
  prefillChunk: 512, maxLoras: 2, maxLoraRank: 16, maxCpuLoraBytes: 2 ** 30, maxWaiting: requests, adapterWaitTimeoutMs: Number.POSITIVE_INFINITY,
  runtime: values.runtime as RuntimeChoice,
});
for (const a of adapters) await engine.adapters.register(a.name, a.dir);

const noise = new Float32Array(requests * 24);
new Random(3).fillNormal(noise, 1);
const prompts = Array.from({ length: requests }, (_, i) => Array.from(noise.subarray(i * 24, (i + 1) * 24), (v) => Math.floor(Math.abs(v) * 5000) % 20_000));
const adapterOf = (i: number) => (i % 3 === 0 ? null : adapters[i % 2].name);

async function greedy(i: number): Promise<{ tokens: number[]; logprobs: number[] }> {
  const tokens: number[] = [];
  const logprobs: number[] = [];
  const sampling = { ...DEFAULT_SAMPLING, temperature: 0, maxTokens, ignoreEos: true, logprobs: 0 };
  for await (const e of engine.submit({ id: `r${i}-${Math.random()}`, promptIds: prompts[i], adapter: adapterOf(i), sampling }) as AsyncIterable<GenerationEvent>) {
    if (e.type === 'error') throw new Error(e.message);
    if (e.type === 'token') {
      tokens.push(e.tokenId);
      logprobs.push(e.logprob ?? Number.NaN);
    }
  }
  return { tokens, logprobs };
}

const alone = [];
for (let i = 0; i < requests; i++) alone.push(await greedy(i));
const together = await Promise.all(prompts.map((_, i) => greedy(i)));
const rows = alone.map((a, i) => {
  const b = together[i];
  let shared = 0;
  while (shared < a.tokens.length && a.tokens[shared] === b.tokens[shared]) shared++;
  let maxDiff = 0;
  for (let t = 0; t < Math.min(shared + 1, a.tokens.length); t++) maxDiff = Math.max(maxDiff, Math.abs(a.logprobs[t] - b.logprobs[t]));
  return { adapter: adapterOf(i), identical: shared === a.tokens.length, sharedTokens: shared, maxLogprobDiff: maxDiff };
});
await engine.shutdown(0);
rmSync(work, { recursive: true, force: true });
const summarize = (filter: (r: (typeof rows)[number]) => boolean) => {
  const r = rows.filter(filter);
  return { requests: r.length, identical: r.filter((x) => x.identical).length, max_logprob_diff: Math.max(0, ...r.map((x) => x.maxLogprobDiff)) };
};
console.log(JSON.stringify({
  benchmark: 'batch-invariance', model: 'qwen2.5-0.5b', runtime: engine.runtime, quantization: values.quant, threads: Number(values.threads), batch: requests, max_tokens: maxTokens,
  base: summarize((r) => r.adapter === null),
  adapters: summarize((r) => r.adapter !== null),
  rows,
}));
