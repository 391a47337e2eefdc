import { afterAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/engine.js';
import type { Collected } from './support.js';
import { PROMPT, cases, collect, engineOptions, registerAll, request, withEngine, workDir } from './support.js';

const work = workDir();
afterAll(work.remove);
const options = (overrides: Parameters<typeof engineOptions>[1] = {}) => engineOptions(work.dir, overrides);

/** Keeps `width` requests for `adapter` in flight until `stop()` is called; resolves with their results. */
function keepBusy(engine: Engine, adapter: string, width: number): { stop: () => Promise<Collected[]> } {
  let running = true;
  const results: Collected[] = [];
  const lane = async () => {
    while (running) results.push(await collect(engine.submit(request(adapter, { maxTokens: 24 }))));
  };
  const lanes = Array.from({ length: width }, lane);
  return { stop: async () => { running = false; await Promise.all(lanes); return results; } };
}

describe('engine scheduling', () => {
  it('frees the row and the adapter slot of an aborted request so the next one runs', () => withEngine(options({ maxBatch: 1, maxLoras: 1 }), async (engine) => {
    await registerAll(engine, ['adapter-a', 'adapter-b']);
    let seen = 0;
    for await (const e of engine.submit(request('adapter-a', { maxTokens: 100 }))) {
      if (e.type === 'token' && ++seen === 3) break;
    }
    // One row and one slot: this can only run if the aborted request gave both back.
    expect((await collect(engine.submit(request('adapter-b')))).tokens).toEqual(cases[2].greedy_ids);
  }));

  it('serves more distinct adapters than slots by turns, and prefills in chunks, with unchanged tokens', () => withEngine(options({ maxLoras: 1, prefillChunk: 3 }), async (engine) => {
    await registerAll(engine, ['adapter-a', 'adapter-b', 'adapter-c', 'adapter-d']);
    const results = await Promise.all(cases.map((c) => collect(engine.submit(request(c.adapter)))));
    results.forEach((r, i) => expect(r.tokens).toEqual(cases[i].greedy_ids));
    expect((await engine.stats()).adapterEvictions.slot).toBeGreaterThanOrEqual(3);
  }));

  it.each([PROMPT.length - 1, 1, Math.ceil(PROMPT.length / 2)])(
    'samples the first token only once every prompt token is computed (prefill chunk %i)',
    (chunk) => withEngine(options({ prefillChunk: chunk }), async (engine) => {
      await registerAll(engine, ['adapter-a']);
      for (const c of cases.slice(0, 2)) expect((await collect(engine.submit(request(c.adapter)))).tokens).toEqual(c.greedy_ids);
    }),
  );

  it('answers queue_full beyond the waiting bound', () => withEngine(options({ maxBatch: 1, maxWaiting: 1, maxLoras: 0 }), async (engine) => {
    const results = await Promise.all(Array.from({ length: 4 }, () => collect(engine.submit(request(null, { maxTokens: 8 })))));
    const full = results.filter((r) => r.error);
    expect(full.length).toBeGreaterThan(0);
    for (const r of full) expect(r.error).toMatchObject({ code: 'queue_full' });
    expect(results[0].tokens).toEqual(cases[0].greedy_ids.slice(0, 8));
  }));

  it('gives the same tokens alone and batched with the int4 graph', () => withEngine(options({ quantization: 'int4' }), async (engine) => {
    await registerAll(engine, ['adapter-a', 'adapter-b']);
    const alone: number[][] = [];
    for (const c of cases.slice(0, 3)) alone.push((await collect(engine.submit(request(c.adapter)))).tokens);
    const batch = [...cases.slice(0, 3), ...cases.slice(0, 3), ...cases.slice(0, 3)];
    const together = await Promise.all(batch.map((c) => collect(engine.submit(request(c.adapter)))));
    together.forEach((r, i) => expect(r.tokens).toEqual(alone[i % 3]));
  }));

  it('gets a cold adapter a slot behind a hot adapter that always has a request running', () => withEngine(options({ maxBatch: 2, maxLoras: 1 }), async (engine) => {
    await registerAll(engine, ['adapter-a', 'adapter-b']);
    const hot = keepBusy(engine, 'adapter-a', 3);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const cold = await collect(engine.submit(request('adapter-b')));
    const hotResults = await hot.stop();
    expect(cold.tokens).toEqual(cases[2].greedy_ids);
    for (const r of hotResults) expect(r.tokens).toEqual(cases[1].greedy_ids.concat(r.tokens.slice(16)));
  }));

  it('answers adapter_unavailable when no slot frees up within --adapter-wait-timeout, and keeps serving', () => withEngine(options({ maxBatch: 2, maxLoras: 1, contextLength: 256, adapterWaitTimeoutMs: 20 }), async (engine) => {
    await registerAll(engine, ['adapter-a', 'adapter-b']);
    // One long request holds the only slot for some 240 steps; the second row is free, so the cold request waits for the slot alone.
    const hot = engine.submit(request('adapter-a', { maxTokens: 240 }))[Symbol.asyncIterator]();
    await hot.next();
    const cold = await collect(engine.submit(request('adapter-b')));
    expect(cold.error).toMatchObject({ code: 'adapter_unavailable', message: expect.stringContaining('adapter-b') });
    let rest = 1;
    for (let e = await hot.next(); !e.done && e.value.type === 'token'; e = await hot.next()) rest++;
    // The hot request was still running when the cold one gave up, and ran to its end.
    expect(rest).toBe(240);
    expect((await collect(engine.submit(request('adapter-b')))).tokens).toEqual(cases[2].greedy_ids);
  }));
});

describe('engine shutdown', () => {
  it.each([0, 5, 30])('drains mid-traffic (deadline %i ms): every request ends done or shutting_down, none with an engine error', async (deadline) => {
    const engine = await (await import('../../src/engine/engine.js')).Engine.start(options({ maxBatch: 4, maxLoras: 2 }));
    await registerAll(engine, ['adapter-a', 'adapter-b']);
    const streams = Array.from({ length: 12 }, (_, i) => collect(engine.submit(request(cases[i % 3].adapter, { maxTokens: 60 }))));
    await new Promise((resolve) => setTimeout(resolve, 20));
    await engine.shutdown(deadline);
    expect(engine.failure).toBeNull();
    for (const r of await Promise.all(streams)) {
      if (r.error) expect(r.error).toMatchObject({ code: 'shutting_down' });
      else expect(r.done).toMatchObject({ type: 'done' });
    }
  });
});
