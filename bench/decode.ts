// Decode and prefill throughput of the base model (no adapters) on a qwen2.5-0.5b-shaped synthetic checkpoint.
// Prints one JSON object. Usage: npm run bench:decode [-- --quant int4|int8|fp32 --runs N --preset qwen2.5-0.5b]
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { KvCache } from '../src/model/kv-cache.js';
import { loadModel } from '../src/model/load-model.js';
import type { Quantization } from '../src/model/quantizer.js';
import { benchCheckpoint } from './bench-checkpoint.js';
import { median } from './stats.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: String(availableParallelism()) },
    quant: { type: 'string', default: 'int4' },
    preset: { type: 'string', default: 'qwen2.5-0.5b' },
    runs: { type: 'string', default: '10' },
    context: { type: 'string', default: '256' },
    capacity: { type: 'string', default: '2048' },
    batches: { type: 'string', default: '1,4,16,32' },
    'prefill-tokens': { type: 'string', default: '512' },
  },
});
const runs = Number(values.runs);
const context = Number(values.context);
const batches = values.batches.split(',').map(Number);
const threads = Number(values.threads);

const modelDir = benchCheckpoint(values.preset);
// A fresh build cache: the first load is cold (quantize + build + session), the second reuses that build.
const cacheRoot = mkdtempSync(join(tmpdir(), 'loraserve-bench-'));
const first = await loadModel({ modelDir, quantization: values.quant as Quantization, threads, cacheRoot });
await first.decoder.release();
const model = await loadModel({ modelDir, quantization: values.quant as Quantization, threads, cacheRoot });
const { config, decoder } = model;

const maxBatch = Math.max(...batches);
const kv = new KvCache(config, maxBatch, Number(values.capacity));
const token = () => Math.floor(Math.random() * 1000) + 100;

async function time(fn: () => Promise<unknown>, warmup: number, n: number): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  return median(samples);
}

// Fill every row with `context` tokens of real K/V.
for (let row = 0; row < maxBatch; row++) {
  await decoder.forward({ firstRow: row, tokens: [Array.from({ length: context }, token)], pastLengths: [0] }, kv);
}
const decode: Record<string, { ms_per_step: number; tokens_per_s: number }> = {};
for (const batch of batches) {
  const ms = await time(() => decoder.forward({
    firstRow: 0,
    tokens: Array.from({ length: batch }, () => [token()]),
    pastLengths: Array.from({ length: batch }, () => context),
  }, kv), 3, runs);
  decode[`batch_${batch}`] = { ms_per_step: round(ms), tokens_per_s: round((batch * 1000) / ms) };
}
const prefillTokens = Number(values['prefill-tokens']);
const prompt = Array.from({ length: prefillTokens }, token);
const prefillMs = await time(() => decoder.forward({ firstRow: 0, tokens: [prompt], pastLengths: [0] }, kv), 1, Math.max(3, Math.floor(runs / 2)));
await decoder.release();
rmSync(cacheRoot, { recursive: true, force: true });

console.log(JSON.stringify({
  benchmark: 'decode',
  model: values.preset,
  quantization: values.quant,
  threads,
  cached_tokens_per_row: context,
  kv_capacity: Number(values.capacity),
  load_ms: { cold: round(first.loadMs), cached: round(model.loadMs) },
  decode,
  prefill: { tokens: prefillTokens, ms: round(prefillMs), tokens_per_s: round((prefillTokens * 1000) / prefillMs) },
}));

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
