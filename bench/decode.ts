// Decode and prefill throughput of the base model (no adapters) on a qwen2.5-0.5b-shaped synthetic checkpoint.
// Prints one JSON object. Usage: npm run bench:decode [-- --quant int4|int8|fp32 --runs N --preset qwen2.5-0.5b --runtime stock,native]
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { KvCache } from '../src/model/kv-cache.js';
import type { ModelRunner } from '../src/model/decoder.js';
import { loadModel } from '../src/model/load-model.js';
import type { Quantization } from '../src/model/quantizer.js';
import type { RuntimeChoice } from '../src/model/load-model.js';
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
    /** Comma-separated runtimes measured one after the other in this process, e.g. stock,native. */
    runtime: { type: 'string', default: 'stock,native' },
  },
});
const runs = Number(values.runs);
const context = Number(values.context);
const batches = values.batches.split(',').map(Number);
const threads = Number(values.threads);

const modelDir = benchCheckpoint(values.preset);
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

interface Setup {
  runtime: string;
  load_ms: { cold: number; cached: number };
  decoder: ModelRunner;
  kv: KvCache;
  cacheRoot: string;
}

/** Loads the model on one runtime (cold into a fresh build cache, then cached) and fills every KV row with `context` tokens. */
async function setUp(runtime: RuntimeChoice): Promise<Setup> {
  const cacheRoot = mkdtempSync(join(tmpdir(), 'loraserve-bench-'));
  const options = { modelDir, quantization: values.quant as Quantization, threads, cacheRoot, runtime };
  const first = await loadModel(options);
  await first.decoder.release();
  const model = await loadModel(options);
  const kv = new KvCache(model.config, Math.max(...batches), Number(values.capacity));
  for (let row = 0; row < kv.rows; row++) {
    await model.decoder.forward({ firstRow: row, tokens: [Array.from({ length: context }, token)], pastLengths: [0] }, kv);
  }
  return { runtime: model.runtime, load_ms: { cold: round(first.loadMs), cached: round(model.loadMs) }, decoder: model.decoder, kv, cacheRoot };
}

const setups = [];
for (const runtime of values.runtime.split(',')) setups.push(await setUp(runtime as RuntimeChoice));
// The runtimes take turns, round by round, so a disturbance of the shared machine hits both alike; each figure is the
// median over rounds of per-round medians.
const rounds = 3;
const decodeSamples = new Map<string, number[]>();
const prefillTokens = Number(values['prefill-tokens']);
const prompt = Array.from({ length: prefillTokens }, token);
for (let r = 0; r < rounds; r++) {
  for (const batch of batches) {
    for (const s of setups) {
      const ms = await time(() => s.decoder.forward({
        firstRow: 0,
        tokens: Array.from({ length: batch }, () => [token()]),
        pastLengths: Array.from({ length: batch }, () => context),
      }, s.kv), 3, runs);
      const key = `${s.runtime}/batch_${batch}`;
      decodeSamples.set(key, [...(decodeSamples.get(key) ?? []), ms]);
    }
  }
  for (const s of setups) {
    const ms = await time(() => s.decoder.forward({ firstRow: 0, tokens: [prompt], pastLengths: [0] }, s.kv), 1, Math.max(2, Math.floor(runs / 4)));
    decodeSamples.set(`${s.runtime}/prefill`, [...(decodeSamples.get(`${s.runtime}/prefill`) ?? []), ms]);
  }
}
const runtimes: Record<string, Record<string, unknown>> = {};
for (const s of setups) {
  const decode: Record<string, { ms_per_step: number; tokens_per_s: number }> = {};
  for (const batch of batches) {
    const ms = median(decodeSamples.get(`${s.runtime}/batch_${batch}`) ?? []);
    decode[`batch_${batch}`] = { ms_per_step: round(ms), tokens_per_s: round((batch * 1000) / ms) };
  }
  const prefillMs = median(decodeSamples.get(`${s.runtime}/prefill`) ?? []);
  runtimes[s.runtime] = { load_ms: s.load_ms, decode, prefill: { tokens: prefillTokens, ms: round(prefillMs), tokens_per_s: round((prefillTokens * 1000) / prefillMs) } };
  await s.decoder.release();
  rmSync(s.cacheRoot, { recursive: true, force: true });
}
const speedup: Record<string, number> = {};
const stock = runtimes.stock?.decode as Record<string, { tokens_per_s: number }> | undefined;
const native = runtimes.native?.decode as Record<string, { tokens_per_s: number }> | undefined;
if (stock && native) for (const key of Object.keys(stock)) speedup[key] = Math.round((native[key].tokens_per_s / stock[key].tokens_per_s) * 100) / 100;

console.log(JSON.stringify({
  benchmark: 'decode',
  model: values.preset,
  quantization: values.quant,
  threads,
  cached_tokens_per_row: context,
  kv_capacity: Number(values.capacity),
  rounds,
  runtimes,
  ...(stock && native ? { native_vs_stock_decode: speedup } : {}),
}));

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
