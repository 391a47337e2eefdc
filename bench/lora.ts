// Multi-adapter decode throughput through the engine on a qwen2.5-0.5b-shaped int4 checkpoint with rank-16 adapters
// on all 7 projections, and adapter cold-load latency. Prints one JSON object.
// Usage: npm run bench:lora [-- --registered 1000 --concurrency 16,32 --tokens 64 --runtime stock,native --decode-only]
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Engine } from '../src/engine/engine.js';
import type { EngineOptions } from '../src/engine/engine-options.js';
import type { GenerationRequest } from '../src/engine/engine-types.js';
import type { RuntimeChoice } from '../src/model/load-model.js';
import { DEFAULT_SAMPLING } from '../src/engine/sampling-params.js';
import { benchAdapters } from './bench-adapters.js';
import { benchCheckpoint } from './bench-checkpoint.js';
import { median } from './stats.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: String(availableParallelism()) },
    registered: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '16,32' },
    prompt: { type: 'string', default: '32' },
    tokens: { type: 'string', default: '96' },
    'cold-loads': { type: 'string', default: '100' },
    /** Stop after (a)–(c): skips registering 1,000 adapters. */
    'decode-only': { type: 'boolean', default: false },
    /** Runtimes whose (a)–(c) are measured one after the other in this process; (d) and the cold loads use the last. */
    runtime: { type: 'string', default: 'stock,native' },
  },
});
const registered = Number(values.registered);
const concurrencies = values.concurrency.split(',').map(Number);
const maxConcurrency = Math.max(...concurrencies);
const promptLength = Number(values.prompt);
const maxTokens = Number(values.tokens);

const modelDir = benchCheckpoint('qwen2.5-0.5b');
const adapterDir = benchAdapters(modelDir);

const baseOptions: EngineOptions = {
  modelDir, quantization: 'int4', threads: Number(values.threads), maxBatch: maxConcurrency, contextLength: promptLength + maxTokens + 8,
  prefillChunk: 512, maxLoras: 32, maxLoraRank: 16, maxCpuLoraBytes: 4 * 2 ** 30, maxWaiting: 4096, adapterWaitTimeoutMs: Number.POSITIVE_INFINITY,
};

let nextId = 0;
const prompt = Array.from({ length: promptLength }, (_, i) => 1000 + i);

/**
 * Runs `n` concurrent requests and returns decode tokens/s over the window in which all of them were decoding
 * (from the last request's first token to the first request's end): the steady state at that concurrency.
 */
async function decodeThroughput(engine: Engine, adapters: (string | null)[]): Promise<number> {
  const firstToken: number[] = [];
  const finished: number[] = [];
  const stamps: number[] = [];
  await Promise.all(adapters.map(async (adapter) => {
    const request: GenerationRequest = { id: `b${nextId++}`, promptIds: prompt, adapter, sampling: { ...DEFAULT_SAMPLING, temperature: 0, maxTokens, ignoreEos: true } };
    let first = true;
    for await (const e of engine.submit(request)) {
      if (e.type === 'error') throw new Error(e.message);
      if (e.type !== 'token') continue;
      const now = performance.now();
      stamps.push(now);
      if (first) firstToken.push(now);
      first = false;
    }
    finished.push(performance.now());
  }));
  const from = Math.max(...firstToken);
  const to = Math.min(...finished);
  const inWindow = stamps.filter((t) => t > from && t <= to).length;
  return to > from ? (inWindow * 1000) / (to - from) : Number.NaN;
}

const round = (x: number) => Math.round(x * 10) / 10;
const runtimes = values.runtime.split(',') as RuntimeChoice[];
const result: Record<string, unknown> = {
  benchmark: 'lora', model: 'qwen2.5-0.5b', quantization: 'int4', rank: 16, targets: 'all 7 projections', threads: baseOptions.threads,
  prompt_tokens: promptLength, max_tokens: maxTokens, max_loras: baseOptions.maxLoras,
};

/**
 * Decode tok/s per scenario and concurrency: (a0) no LoRA inputs, (a) LoRA graph without adapters, (b) one, (c) 8,
 * (e) one adapter merged into a session of its own (merged mode).
 */
async function decodeScenarios(runtime: RuntimeChoice): Promise<Record<string, Record<string, number>>> {
  // (a0) the same base graph built without LoRA inputs: what an adapter-free deployment gets.
  const plain = await Engine.start({ ...baseOptions, maxLoras: 0, runtime });
  await decodeThroughput(plain, Array(maxConcurrency).fill(null)); // warm-up: first runs of a session are slow
  const decode: Record<string, Record<string, number>> = { no_lora_graph: {}, a_no_adapter: {}, b_one_adapter: {}, c_8_adapters: {}, e_one_merged: {} };
  for (const n of concurrencies) decode.no_lora_graph[`c${n}`] = round(await decodeThroughput(plain, Array(n).fill(null)));
  await plain.shutdown(0);
  const engine = await Engine.start({ ...baseOptions, runtime, maxMerged: 1 });
  for (let i = 0; i < 8; i++) await engine.adapters.register(`warm${i}`, adapterDir(i));
  await decodeThroughput(engine, Array.from({ length: maxConcurrency }, (_, i) => (i % 2 ? `warm${i % 8}` : null)));
  for (const n of concurrencies) {
    decode.a_no_adapter[`c${n}`] = round(await decodeThroughput(engine, Array(n).fill(null)));
    decode.b_one_adapter[`c${n}`] = round(await decodeThroughput(engine, Array(n).fill('warm0')));
    decode.c_8_adapters[`c${n}`] = round(await decodeThroughput(engine, Array.from({ length: n }, (_, i) => `warm${i % 8}`)));
  }
  // (e) warm1 merged (its build is cached after the first run); a different adapter than (b), so (b) is unaffected.
  await engine.adapters.merge('warm1', true);
  while ((await engine.adapters.list()).find((a) => a.name === 'warm1')?.merged !== true) await new Promise((resolve) => setTimeout(resolve, 200));
  await decodeThroughput(engine, Array(maxConcurrency).fill('warm1'));
  for (const n of concurrencies) decode.e_one_merged[`c${n}`] = round(await decodeThroughput(engine, Array(n).fill('warm1')));
  await engine.shutdown(0);
  return decode;
}

/** Each adapter scenario's cost against the graph without LoRA inputs (what an adapter-free deployment gets) and (a). */
function overheads(decode: Record<string, Record<string, number>>): Record<string, Record<string, Record<string, string>>> {
  const out: Record<string, Record<string, Record<string, string>>> = {};
  for (const against of ['no_lora_graph', 'a_no_adapter']) {
    out[`vs_${against}`] = {};
    for (const scenario of ['b_one_adapter', 'c_8_adapters', 'd_distinct_of_1000', 'e_one_merged'].filter((x) => x in decode)) {
      out[`vs_${against}`][scenario] = {};
      for (const n of concurrencies) out[`vs_${against}`][scenario][`c${n}`] = `${round((decode[against][`c${n}`] / decode[scenario][`c${n}`] - 1) * 100)}%`;
    }
  }
  return out;
}

const decodeByRuntime: Record<string, Record<string, Record<string, number>>> = {};
for (const runtime of runtimes) decodeByRuntime[runtime] = await decodeScenarios(runtime);
result.decode_tokens_per_s = decodeByRuntime;
if (values['decode-only']) {
  result.overhead = Object.fromEntries(runtimes.map((r) => [r, overheads(decodeByRuntime[r])]));
  console.log(JSON.stringify(result));
  process.exit(0);
}

const last = runtimes[runtimes.length - 1];
const engine = await Engine.start({ ...baseOptions, runtime: last });
for (let i = 0; i < 8; i++) await engine.adapters.register(`warm${i}`, adapterDir(i));

// (d) 1,000 registered adapters, every request a different one: most come from disk through both tiers. The window
// starts once every request has its first token, so this is decode after the loads (the loads are cold_load_ms).
const registerStart = performance.now();
for (let i = 8; i < registered; i++) await engine.adapters.register(`a${i}`, adapterDir(i));
result.register_ms_per_adapter = round((performance.now() - registerStart) / Math.max(1, registered - 8));
const decode = decodeByRuntime[last];
decode.d_distinct_of_1000 = {};
let cursor = 8;
for (const n of concurrencies) {
  decode.d_distinct_of_1000[`c${n}`] = round(await decodeThroughput(engine, Array.from({ length: n }, () => `a${cursor++}`)));
}
result.overhead = Object.fromEntries(runtimes.map((r) => [r, overheads(decodeByRuntime[r])]));

// Cold load: time to a first token for an adapter only on disk (registered early, since pushed out of the host tier
// by later registrations), minus the same for a resident one.
async function firstTokenMs(adapter: string): Promise<number> {
  const start = performance.now();
  for await (const e of engine.submit({ id: `c${nextId++}`, promptIds: prompt.slice(0, 4), adapter, sampling: { ...DEFAULT_SAMPLING, temperature: 0, maxTokens: 1 } })) {
    if (e.type === 'error') throw new Error(e.message);
  }
  return performance.now() - start;
}
const warm: number[] = [];
const cold: number[] = [];
// Where a cold load's time goes: reading it from disk into host memory (the loader worker), and writing it into a slot.
const tierMs: Record<'host' | 'slot', number[]> = { host: [], slot: [] };
engine.onAdapterLoad((tier, seconds) => tierMs[tier].push(seconds * 1000));
for (let i = 0; i < Number(values['cold-loads']); i++) {
  warm.push(await firstTokenMs('warm0'));
  cold.push(await firstTokenMs(`a${cursor + i}`));
}
const warmMs = median(warm);
const loads = cold.map((ms) => ms - warmMs);
const p99 = (samples: number[]) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return round(sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)]);
};
const stats = await engine.stats();
result.cold_load_ms = {
  runtime: engine.runtime,
  p50: round(median(loads)), p99: p99(loads), samples: loads.length,
  // The resident request's own spread: the noise under the cold loads' percentiles.
  resident_first_token_ms: round(warmMs), resident_first_token_p99: p99(warm),
  disk_to_host_p50: round(median(tierMs.host)), disk_to_host_p99: p99(tierMs.host), host_to_slot_p50: round(median(tierMs.slot)),
};
result.adapter_tiers = { loads: stats.adapterLoads, evictions: stats.adapterEvictions, lora_runs: stats.loraRuns };
await engine.shutdown(0);
console.log(JSON.stringify(result));
