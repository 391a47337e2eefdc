import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdapterError } from '../../src/adapters/adapter-error.js';
import { Engine } from '../../src/engine/engine.js';
import type { EngineOptions } from '../../src/engine/engine-options.js';
import type { GenerationEvent, GenerationRequest } from '../../src/engine/engine-types.js';
import type { SamplingParams } from '../../src/engine/sampling-params.js';
import { DEFAULT_SAMPLING } from '../../src/engine/sampling-params.js';

const MODEL = 'test/fixtures/hf/tiny-llama';
const ADAPTERS = 'test/fixtures/hf/adapters';
interface ExpectedCase { model: string; adapter: string | null; prompt_ids: number[]; greedy_ids: number[] }
const cases = (JSON.parse(readFileSync('test/fixtures/hf/expected.json', 'utf8')) as { cases: ExpectedCase[] }).cases
  .filter((c) => c.model === 'tiny-llama');
const PROMPT = cases[0].prompt_ids;
const work = mkdtempSync(join(tmpdir(), 'loraserve-engine-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function options(overrides: Partial<EngineOptions> = {}): EngineOptions {
  return {
    modelDir: MODEL, quantization: 'fp32', threads: 2, cacheRoot: join(work, 'cache'), maxBatch: 16, contextLength: 128,
    prefillChunk: 64, maxLoras: 4, maxLoraRank: 8, maxCpuLoraBytes: 64 * 2 ** 20, maxWaiting: 64, ...overrides,
  };
}

let nextId = 0;
function request(adapter: string | null, sampling: Partial<SamplingParams> = {}, promptIds = PROMPT): GenerationRequest {
  return { id: `r${nextId++}`, promptIds, adapter, sampling: { ...DEFAULT_SAMPLING, temperature: 0, maxTokens: 16, ignoreEos: true, ...sampling } };
}

async function collect(events: AsyncIterable<GenerationEvent>): Promise<{ tokens: number[]; done: GenerationEvent | undefined; error: GenerationEvent | undefined }> {
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

async function registerAll(engine: Engine, names: string[]): Promise<void> {
  for (const name of names) await engine.adapters.register(name, join(ADAPTERS, name));
}

describe('engine with the independent-tool adapters', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.start(options({ maxBatch: 24 }));
    await registerAll(engine, ['adapter-a', 'adapter-b', 'adapter-c', 'adapter-d']);
  });
  afterAll(() => engine.shutdown(0));

  it('gives every request in a mixed batch the PEFT tokens of its adapter, with both LoRA kernels', async () => {
    const run = async (batch: ExpectedCase[], maxTokens = 16) => {
      const results = await Promise.all(batch.map((c) => collect(engine.submit(request(c.adapter, { maxTokens })))));
      results.forEach((r, i) => expect(r.tokens.slice(0, 16), `${batch[i].adapter}`).toEqual(batch[i].greedy_ids));
      return (await engine.stats()).loraKernelRuns;
    };
    const start = (await engine.stats()).loraKernelRuns;
    // Four adapters spread over the slots: gather.
    const spread = await run([...cases, ...cases, ...cases]);
    expect(spread.gather).toBeGreaterThan(start.gather);
    // One adapter (fed slots 0 and 1) and 20 rows, long enough that all decode together: > 8 rows per fed slot, so dense.
    const few = cases.slice(0, 2);
    const dense = await run(Array.from({ length: 10 }, () => few).flat(), 32);
    expect(dense.dense).toBeGreaterThan(spread.dense);
  });

  it('gives a seeded request the same tokens alone and inside a busy batch', async () => {
    const seeded = { temperature: 0.9, topP: 0.95, seed: 1234, maxTokens: 24 };
    const alone = await collect(engine.submit(request('adapter-a', seeded)));
    const crowd = Array.from({ length: 6 }, (_, i) => collect(engine.submit(request(i % 2 ? 'adapter-b' : null, { temperature: 1, maxTokens: 30 }))));
    const inBatch = await collect(engine.submit(request('adapter-a', seeded)));
    await Promise.all(crowd);
    expect(inBatch.tokens).toEqual(alone.tokens);
    expect(alone.tokens).toHaveLength(24);
  });

  it('stops at a stop string across tokens and reports it', async () => {
    const expected = cases[0];
    const full = Buffer.from(expected.greedy_ids.filter((id) => id < 128)).toString('latin1');
    const stop = full.slice(3, 5);
    let text = '';
    let done: GenerationEvent | undefined;
    for await (const e of engine.submit(request(null, { stop: [stop] }))) {
      if (e.type !== 'error') text += e.text;
      if (e.type === 'done') done = e;
    }
    expect(done).toMatchObject({ finishReason: 'stop', stopReason: stop });
    expect(text).not.toContain(stop);
  });

  it('refuses unknown adapters, bad prompts and bad sampling with their own errors, and keeps serving', async () => {
    const unknown = await collect(engine.submit(request('nope')));
    expect(unknown.error).toMatchObject({ type: 'error', code: 'adapter_not_found' });
    const tooLong = await collect(engine.submit(request(null, {}, Array.from({ length: 200 }, () => 65))));
    expect(tooLong.error).toMatchObject({ code: 'invalid_request', message: expect.stringContaining('context length is 128') });
    const badTopP = await collect(engine.submit(request(null, { topP: 2 })));
    expect(badTopP.error).toMatchObject({ code: 'invalid_request', message: expect.stringContaining('top_p') });
    expect((await collect(engine.submit(request(null)))).tokens).toEqual(cases[0].greedy_ids);
  });

  it('refuses each broken adapter with its own message and still serves the good ones', async () => {
    const broken = (name: string, edit: (dir: string) => void) => {
      const dir = join(work, name);
      cpSync(join(ADAPTERS, 'adapter-a'), dir, { recursive: true });
      edit(dir);
      return dir;
    };
    const config = (dir: string) => JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    const setConfig = (dir: string, patch: Record<string, unknown>) => writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...config(dir), ...patch }));
    const refusals: [string, string, RegExp][] = [
      [broken('dora', (d) => setConfig(d, { use_dora: true })), 'adapter_unsupported', /DoRA/i],
      [broken('rank', (d) => setConfig(d, { r: 64, lora_alpha: 128 })), 'adapter_rank_too_large', /64/],
      [broken('truncated', (d) => {
        const file = join(d, 'adapter_model.safetensors');
        writeFileSync(file, readFileSync(file).subarray(0, 2000));
      }), 'adapter_invalid', /truncated/i],
      [join(work, 'missing'), 'adapter_not_found', /missing/],
    ];
    for (const [dir, code, message] of refusals) {
      const err = await engine.adapters.register('broken', dir).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(AdapterError);
      expect(err).toMatchObject({ code, message: expect.stringMatching(message) });
    }
    expect((await engine.adapters.list()).map((a) => a.name)).not.toContain('broken');
    expect((await collect(engine.submit(request('adapter-c')))).tokens).toEqual(cases[3].greedy_ids);
  });

  it('unregisters an adapter only after its in-flight request finishes, then refuses it', async () => {
    await engine.adapters.register('temp', join(ADAPTERS, 'adapter-d'));
    const events = engine.submit(request('temp', { maxTokens: 16 }));
    const iterator = events[Symbol.asyncIterator]();
    await iterator.next();
    let unregistered = false;
    const unregistering = engine.adapters.unregister('temp').then(() => { unregistered = true; });
    const tokens: number[] = [];
    let last = await iterator.next();
    for (; !last.done && last.value.type === 'token'; last = await iterator.next()) tokens.push(last.value.tokenId);
    expect(last.value).toMatchObject({ type: 'done', finishReason: 'length' });
    expect(tokens).toEqual(cases[4].greedy_ids.slice(1));
    await unregistering;
    expect(unregistered).toBe(true);
    expect((await collect(engine.submit(request('temp')))).error).toMatchObject({ code: 'adapter_not_found' });
  });
});

describe('engine scheduling', () => {
  it('frees the row and the adapter slot of an aborted request so the next one runs', async () => {
    const engine = await Engine.start(options({ maxBatch: 1, maxLoras: 1 }));
    try {
      await registerAll(engine, ['adapter-a', 'adapter-b']);
      let seen = 0;
      for await (const e of engine.submit(request('adapter-a', { maxTokens: 100 }))) {
        if (e.type === 'token' && ++seen === 3) break;
      }
      // One row and one slot: this can only run if the aborted request gave both back.
      expect((await collect(engine.submit(request('adapter-b')))).tokens).toEqual(cases[2].greedy_ids);
      const stats = await engine.stats();
      expect(stats).toMatchObject({ running: 0, waiting: 0 });
    } finally {
      await engine.shutdown(0);
    }
  });

  it('serves more distinct adapters than slots by turns, and prefills in chunks, with unchanged tokens', async () => {
    const engine = await Engine.start(options({ maxLoras: 1, prefillChunk: 3 }));
    try {
      await registerAll(engine, ['adapter-a', 'adapter-b', 'adapter-c', 'adapter-d']);
      const results = await Promise.all(cases.map((c) => collect(engine.submit(request(c.adapter)))));
      results.forEach((r, i) => expect(r.tokens).toEqual(cases[i].greedy_ids));
      const stats = await engine.stats();
      expect(stats.adapterEvictions.slot).toBeGreaterThanOrEqual(3);
    } finally {
      await engine.shutdown(0);
    }
  });

  it('answers queue_full beyond the waiting bound', async () => {
    const engine = await Engine.start(options({ maxBatch: 1, maxWaiting: 1, maxLoras: 0 }));
    try {
      const streams = Array.from({ length: 4 }, () => collect(engine.submit(request(null, { maxTokens: 8 }))));
      const results = await Promise.all(streams);
      const full = results.filter((r) => r.error);
      expect(full.length).toBeGreaterThan(0);
      for (const r of full) expect(r.error).toMatchObject({ code: 'queue_full' });
      expect(results[0].tokens).toEqual(cases[0].greedy_ids.slice(0, 8));
    } finally {
      await engine.shutdown(0);
    }
  });

  it('gives the same tokens alone and batched with the int4 graph', async () => {
    const engine = await Engine.start(options({ quantization: 'int4' }));
    try {
      await registerAll(engine, ['adapter-a', 'adapter-b']);
      const alone: number[][] = [];
      for (const c of cases.slice(0, 3)) alone.push((await collect(engine.submit(request(c.adapter)))).tokens);
      const batch = [...cases.slice(0, 3), ...cases.slice(0, 3), ...cases.slice(0, 3)];
      const together = await Promise.all(batch.map((c) => collect(engine.submit(request(c.adapter)))));
      together.forEach((r, i) => expect(r.tokens).toEqual(alone[i % 3]));
    } finally {
      await engine.shutdown(0);
    }
  });
});
