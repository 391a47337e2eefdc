import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AdapterError } from '../../src/adapters/adapter-error.js';
import { Engine } from '../../src/engine/engine.js';
import { loadNativeRuntime } from '../../src/model/native-runtime.js';
import type { GenerationEvent } from '../../src/engine/engine-types.js';
import { ADAPTERS, cases, collect, engineOptions, expectSoundWhenIdle, registerAll, request, workDir } from './support.js';

const work = workDir();
afterAll(work.remove);

describe('engine with the independent-tool adapters', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.start(engineOptions(work.dir, { maxBatch: 24 }));
    await registerAll(engine, ['adapter-a', 'adapter-b', 'adapter-c', 'adapter-d']);
  });
  afterEach(() => expectSoundWhenIdle(engine));
  afterAll(() => engine.shutdown(0));

  it('runs on the runtime asked for: stock when forced, else native wherever the addon loads', () => {
    const native = 'runtime' in loadNativeRuntime();
    expect(engine.runtime).toBe(process.env.LORASERVE_RUNTIME === 'stock' || !native ? 'stock' : 'native');
    if (process.env.LORASERVE_REQUIRE_NATIVE === '1') expect(native).toBe(true);
  });

  it('gives every request in a mixed batch the PEFT tokens of its adapter, and runs LoRA only where rows use it', async () => {
    const start = (await engine.stats()).loraRuns;
    const results = await Promise.all([...cases, ...cases, ...cases].map((c) => collect(engine.submit(request(c.adapter)))));
    results.forEach((r, i) => expect(r.tokens, `${cases[i % cases.length].adapter}`).toEqual(cases[i % cases.length].greedy_ids));
    expect((await engine.stats()).loraRuns).toBeGreaterThan(start);
    const base = (await engine.stats()).loraRuns;
    await collect(engine.submit(request(null)));
    expect((await engine.stats()).loraRuns).toBe(base);
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

  it('gives greedy requests bit-identical logprobs alone and in a batch of 20 mixed-adapter rows', async () => {
    for (const c of cases) {
      const logprobs = async (events: AsyncIterable<GenerationEvent>) => {
        const out: (number | null)[] = [];
        for await (const e of events) if (e.type === 'token') out.push(e.logprob);
        return out;
      };
      const alone = await logprobs(engine.submit(request(c.adapter, { logprobs: 0 })));
      const crowd = Array.from({ length: 19 }, (_, i) => collect(engine.submit(request(cases[i % cases.length].adapter, { maxTokens: 24 }))));
      const inBatch = await logprobs(engine.submit(request(c.adapter, { logprobs: 0 })));
      await Promise.all(crowd);
      expect(inBatch, `${c.adapter}`).toEqual(alone);
    }
  });

  it('stops at a stop string across tokens and reports it', async () => {
    const full = Buffer.from(cases[0].greedy_ids.filter((id) => id < 128)).toString('latin1');
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
      const dir = join(work.dir, name);
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
      }), 'adapter_invalid', /runs past the end/],
      [join(work.dir, 'missing'), 'adapter_not_found', /missing/],
    ];
    for (const [dir, code, message] of refusals) {
      const err = await engine.adapters.register('broken', dir).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(AdapterError);
      expect(err).toMatchObject({ code, message: expect.stringMatching(message) });
    }
    expect((await engine.adapters.list()).map((a) => a.name)).not.toContain('broken');
    expect((await collect(engine.submit(request('adapter-c')))).tokens).toEqual(cases[3].greedy_ids);
  });

  it('unregisters an adapter only after its in-flight request finishes, refusing new requests at once', async () => {
    await engine.adapters.register('temp', join(ADAPTERS, 'adapter-d'));
    const iterator = engine.submit(request('temp', { maxTokens: 100 }))[Symbol.asyncIterator]();
    const first = await iterator.next();
    let unregistered = false;
    const unregistering = engine.adapters.unregister('temp').then(() => { unregistered = true; });
    // The worker answers in order: when it reports the request still running, it has not finished the unregistration.
    const [refused, stats] = await Promise.all([collect(engine.submit(request('temp'))), engine.stats()]);
    expect(refused.error).toMatchObject({ code: 'adapter_not_found' });
    expect(stats.running).toBe(1);
    expect(unregistered).toBe(false);
    const tokens = first.done || first.value.type !== 'token' ? [] : [first.value.tokenId];
    let last = await iterator.next();
    for (; !last.done && last.value.type === 'token'; last = await iterator.next()) tokens.push(last.value.tokenId);
    expect(last.value).toMatchObject({ type: 'done', finishReason: 'length' });
    expect(tokens.slice(0, 16)).toEqual(cases[4].greedy_ids);
    await unregistering;
    expect(unregistered).toBe(true);
  });
});
