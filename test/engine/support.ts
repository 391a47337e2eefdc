import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import type { EngineOptions } from '../../src/engine/engine-options.js';
import type { RuntimeChoice } from '../../src/model/load-model.js';
import type { GenerationEvent, GenerationRequest } from '../../src/engine/engine-types.js';
import type { SamplingParams } from '../../src/engine/sampling-params.js';
import { DEFAULT_SAMPLING } from '../../src/engine/sampling-params.js';

export const MODEL = 'test/fixtures/hf/tiny-llama';
export const ADAPTERS = 'test/fixtures/hf/adapters';

/** Greedy tokens of the independent PyTorch/PEFT tool for tiny-llama: base first, then adapter-a..d. */
export interface ExpectedCase { model: string; adapter: string | null; prompt_ids: number[]; greedy_ids: number[] }
export const cases = (JSON.parse(readFileSync('test/fixtures/hf/expected.json', 'utf8')) as { cases: ExpectedCase[] }).cases
  .filter((c) => c.model === 'tiny-llama');
export const PROMPT = cases[0].prompt_ids;

/** A temporary directory for one test file (build cache, adapter copies), removed by the returned function. */
export function workDir(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'loraserve-engine-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export function engineOptions(work: string, overrides: Partial<EngineOptions> = {}): EngineOptions {
  return {
    modelDir: MODEL, quantization: 'fp32', threads: 2, cacheRoot: join(work, 'cache'), maxBatch: 16, contextLength: 128,
    prefillChunk: 64, maxLoras: 4, maxLoraRank: 8, maxCpuLoraBytes: 64 * 2 ** 20, maxWaiting: 64, adapterWaitTimeoutMs: 60_000,
    // CI runs these tests once per runtime.
    runtime: (process.env.LORASERVE_RUNTIME as RuntimeChoice | undefined) ?? 'auto', ...overrides,
  };
}

let nextId = 0;
/** A greedy request (ignore_eos, 16 tokens) for the adapter, with the fixture prompt unless another is given. */
export function request(adapter: string | null, sampling: Partial<SamplingParams> = {}, promptIds = PROMPT): GenerationRequest {
  return { id: `r${nextId++}`, promptIds, adapter, sampling: { ...DEFAULT_SAMPLING, temperature: 0, maxTokens: 16, ignoreEos: true, ...sampling } };
}

export interface Collected { tokens: number[]; done: GenerationEvent | undefined; error: GenerationEvent | undefined }

export async function collect(events: AsyncIterable<GenerationEvent>): Promise<Collected> {
  const tokens: number[] = [];
  let done;
  let error;
  for await (const e of events) {
    if (e.type === 'token') tokens.push(e.tokenId);
    else if (e.type === 'done') done = e;
    else error = e;
  }
  return { tokens, done, error };
}

export async function registerAll(engine: Engine, names: string[]): Promise<void> {
  for (const name of names) await engine.adapters.register(name, join(ADAPTERS, name));
}

/** Waits until the engine holds no request (aborts land between steps), then asserts its bookkeeping is sound. */
export async function expectSoundWhenIdle(engine: Engine): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { running, waiting } = await engine.stats();
    if (running === 0 && waiting === 0) break;
    if (Date.now() > deadline) throw new Error(`engine still holds ${running} running and ${waiting} waiting requests`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  expect(await engine.invariantViolations()).toEqual([]);
}

/** Starts an engine, runs `body`, checks the engine's invariants once idle, and shuts it down. */
export async function withEngine(options: EngineOptions, body: (engine: Engine) => Promise<void>): Promise<void> {
  const engine = await Engine.start(options);
  try {
    await body(engine);
    await expectSoundWhenIdle(engine);
  } finally {
    await engine.shutdown(0);
  }
}
