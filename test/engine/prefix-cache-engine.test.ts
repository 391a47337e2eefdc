import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/engine.js';
import type { GenerationEvent, GenerationRequest } from '../../src/engine/engine-types.js';
import { ADAPTERS, engineOptions, registerAll, request, withEngine, workDir } from './support.js';

const work = workDir();
afterAll(() => work.remove());

/** A 60-token prompt: 3 full blocks of 16 can be restored (the last prompt token is always computed). */
const SHARED = Array.from({ length: 48 }, (_, i) => 3 + ((i * 7) % 250));
const prompt = (suffix: number[]) => [...SHARED, ...suffix];

interface Run { tokens: number[]; logprobs: number[]; cached: number }

async function run(engine: Engine, req: GenerationRequest): Promise<Run> {
  const out: Run = { tokens: [], logprobs: [], cached: -1 };
  for await (const e of engine.submit(req) as AsyncIterable<GenerationEvent>) {
    if (e.type === 'error') throw new Error(e.message);
    if (e.type === 'token') {
      out.tokens.push(e.tokenId);
      out.logprobs.push(e.logprob ?? NaN);
    }
    if (e.type === 'done') out.cached = e.usage.cachedTokens;
  }
  return out;
}

const withCache = (overrides = {}) => engineOptions(work.dir, { prefixCacheBytes: 64 * 2 ** 20, ...overrides });

describe('prefix cache in the engine', () => {
  it.each([
    ['fp32, whole prompt in one chunk', { quantization: 'fp32' as const, prefillChunk: 64 }],
    ['int4, 5-token chunks', { quantization: 'int4' as const, prefillChunk: 5 }],
  ])('gives a hit exactly the tokens and logprobs of a miss (%s)', async (_, overrides) => {
    await withEngine(withCache(overrides), async (engine) => {
      await registerAll(engine, ['adapter-a']);
      for (const adapter of [null, 'adapter-a']) {
        const suffix = [200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211];
        const miss = await run(engine, request(adapter, { logprobs: 0 }, prompt(suffix)));
        const hit = await run(engine, request(adapter, { logprobs: 0 }, prompt(suffix)));
        // The same prompt again, but with caching off for the request: computed from scratch.
        const optOut = await run(engine, { ...request(adapter, { logprobs: 0 }, prompt(suffix)), prefix: { use: false } });
        expect(miss.cached).toBe(0);
        expect(hit.cached).toBe(48);
        expect(optOut.cached).toBe(0);
        expect(hit.tokens).toEqual(miss.tokens);
        expect(hit.logprobs).toEqual(miss.logprobs);
        expect(optOut.logprobs).toEqual(miss.logprobs);
      }
      const stats = await engine.stats();
      expect(stats.prefixCache?.hitTokens).toBe(96);
    });
  });

  it('never shares blocks across adapters, the base model, or cache salts', async () => {
    await withEngine(withCache(), async (engine) => {
      await registerAll(engine, ['adapter-a', 'adapter-b']);
      const cachedFor = async (adapter: string | null, salt?: string) =>
        (await run(engine, { ...request(adapter, { maxTokens: 2 }, prompt([9, 10])), ...(salt ? { prefix: { salt } } : {}) })).cached;
      expect(await cachedFor('adapter-a')).toBe(0);
      expect(await cachedFor('adapter-b')).toBe(0);
      expect(await cachedFor(null)).toBe(0);
      expect(await cachedFor(null, 'tenant-1')).toBe(0);
      expect(await cachedFor(null, 'tenant-2')).toBe(0);
      // Each scope now finds its own blocks.
      for (const [adapter, salt] of [['adapter-a'], ['adapter-b'], [null], [null, 'tenant-1'], [null, 'tenant-2']] as [string | null, string?][]) {
        expect(await cachedFor(adapter, salt)).toBe(48);
      }
      expect((await engine.stats()).prefixCache?.blocks).toBe(5 * 3);
    });
  });

  it('never reuses KV after an adapter name is registered again with other weights, and drops the old blocks', async () => {
    const dir = join(work.dir, 'swapped');
    cpSync(join(ADAPTERS, 'adapter-a'), dir, { recursive: true });
    await withEngine(withCache(), async (engine) => {
      await engine.adapters.register('x', dir);
      const first = await run(engine, request('x', {}, prompt([1, 2])));
      expect((await run(engine, request('x', {}, prompt([1, 2])))).cached).toBe(48);
      await engine.adapters.register('x', join(ADAPTERS, 'adapter-b'));
      expect((await engine.stats()).prefixCache?.blocks).toBe(0);
      const swapped = await run(engine, request('x', {}, prompt([1, 2])));
      const reference = await run(engine, { ...request('x', {}, prompt([1, 2])), prefix: { use: false } });
      expect(swapped.cached).toBe(0);
      expect(swapped.tokens).toEqual(reference.tokens);
      expect(swapped.tokens).not.toEqual(first.tokens);
      await engine.adapters.unregister('x');
      expect((await engine.stats()).prefixCache?.blocks).toBe(0);
    });
  });

  it('serves concurrent mixed-adapter traffic with shared prefixes exactly as each request alone', async () => {
    // Both engines prefill in 7-token chunks: the chunk length picks the kernels, so it must match for bit-equality.
    await withEngine(withCache({ prefixCacheBytes: 0, prefillChunk: 7 }), async (engine) => {
      await registerAll(engine, ['adapter-a', 'adapter-b', 'adapter-c']);
      const adapters = [null, 'adapter-a', 'adapter-b', 'adapter-c'];
      const reqs = Array.from({ length: 12 }, (_, i) => request(adapters[i % 4], { logprobs: 0 }, prompt([100 + i, 7, 8])));
      const alone: Run[] = [];
      for (const r of reqs) alone.push(await run(engine, { ...r, id: `${r.id}-alone` }));
      await withEngine(withCache({ prefillChunk: 7 }), async (cached) => {
        await registerAll(cached, ['adapter-a', 'adapter-b', 'adapter-c']);
        for (let round = 0; round < 2; round++) {
          const together = await Promise.all(reqs.map((r) => run(cached, { ...r, id: `${r.id}-${round}` })));
          together.forEach((t, i) => {
            expect(t.tokens).toEqual(alone[i].tokens);
            expect(t.logprobs).toEqual(alone[i].logprobs);
          });
          if (round === 1) expect(together.every((t) => t.cached === 48)).toBe(true);
        }
      });
    });
  });

  it('forks sibling choices from one computed prompt, each getting what it gets alone', async () => {
    await withEngine(withCache({ prefixCacheBytes: 0 }), async (engine) => {
      const seeded = (seed: number) => request(null, { temperature: 0.8, seed, logprobs: 0 }, prompt([5]));
      const alone = [await run(engine, seeded(1)), await run(engine, seeded(2)), await run(engine, seeded(3))];
      const leader = seeded(1);
      const before = (await engine.stats()).prefillTokensComputed;
      const forked = await Promise.all([run(engine, leader), run(engine, { ...seeded(2), forkOf: leader.id }), run(engine, { ...seeded(3), forkOf: leader.id })]);
      expect(forked.map((f) => f.tokens)).toEqual(alone.map((a) => a.tokens));
      expect(forked.map((f) => f.logprobs)).toEqual(alone.map((a) => a.logprobs));
      // The prompt was prefilled once: the siblings copied its KV and sampled from its logits.
      expect((await engine.stats()).prefillTokensComputed - before).toBe(SHARED.length + 1);
      expect(forked.every((f) => f.cached === 0)).toBe(true);
    });
  });

  it('starts a burst of prompts within the token budget in one step, decoding rows still running', async () => {
    await withEngine(engineOptions(work.dir, { prefillChunk: 64, maxBatchedTokens: 4 * 49 + 1 }), async (engine) => {
      const steps: { prefill: number; decode: number }[] = [];
      engine.onStep((s) => steps.push(s));
      const long = engine.submit(request(null, { maxTokens: 40 }))[Symbol.asyncIterator]();
      expect((await long.next()).value?.type).toBe('token');
      const burst = await Promise.all(Array.from({ length: 4 }, (_, i) => run(engine, request(null, { maxTokens: 1 }, prompt([i])))));
      expect(burst.every((b) => b.tokens.length === 1)).toBe(true);
      // One step prefills all four (49 tokens each) next to the decoding row; one prefill per step would take four.
      expect(steps.filter((s) => s.prefill > 0).slice(1)).toEqual([{ prefill: 4 * 49, decode: 1 }]);
      for (let e = await long.next(); !e.done; e = await long.next()) if (e.value.type === 'error') throw new Error(e.value.message);
    });
  });
});
