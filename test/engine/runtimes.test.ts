import { afterAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import type { GenerationEvent } from '../../src/engine/engine-types.js';
import { loadNativeRuntime } from '../../src/model/native-runtime.js';
import { cases, engineOptions, expectSoundWhenIdle, registerAll, request, workDir } from './support.js';

const work = workDir();
afterAll(work.remove);
const native = loadNativeRuntime();

/** Tokens and logprobs of every fixture case, three times over, all in one mixed batch. */
async function mixedBatch(engine: Engine): Promise<{ tokens: number[]; logprobs: number[] }[]> {
  const run = async (events: AsyncIterable<GenerationEvent>) => {
    const out = { tokens: [] as number[], logprobs: [] as number[] };
    for await (const e of events) {
      if (e.type === 'error') throw new Error(e.message);
      if (e.type === 'token') {
        out.tokens.push(e.tokenId);
        out.logprobs.push(e.logprob ?? Number.NaN);
      }
    }
    return out;
  };
  return Promise.all([...cases, ...cases, ...cases].map((c) => run(engine.submit(request(c.adapter, { logprobs: 0 })))));
}

describe.runIf('runtime' in native)('native and stock runtimes', () => {
  it.each(['fp32', 'int4'] as const)('give the same greedy tokens for one mixed-adapter batch (%s), the PEFT tokens at fp32', async (quantization) => {
    const results: Record<string, { tokens: number[]; logprobs: number[] }[]> = {};
    for (const runtime of ['stock', 'native'] as const) {
      const engine = await Engine.start(engineOptions(work.dir, { runtime, quantization, maxBatch: 16 }));
      try {
        expect(engine.runtime).toBe(runtime);
        await registerAll(engine, ['adapter-a', 'adapter-b', 'adapter-c', 'adapter-d']);
        results[runtime] = await mixedBatch(engine);
        await expectSoundWhenIdle(engine);
      } finally {
        await engine.shutdown(0);
      }
    }
    results.native.forEach((r, i) => {
      expect(r.tokens, `case ${i}`).toEqual(results.stock[i].tokens);
      if (quantization === 'fp32') expect(r.tokens).toEqual(cases[i % cases.length].greedy_ids);
      // Same math, different kernels (LoRA sums in another order): logprobs agree to float32 rounding at fp32. At int4,
      // accuracy level 4 requantizes activations to int8 per block, where such a difference can flip a rounding step.
      const tolerance = quantization === 'fp32' ? 1e-4 : 5e-2;
      r.logprobs.forEach((lp, t) => expect(Math.abs(lp - results.stock[i].logprobs[t])).toBeLessThan(tolerance));
    });
  });
});
