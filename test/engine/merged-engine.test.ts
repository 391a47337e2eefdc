import { afterAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/engine.js';
import { cases, collect, engineOptions, registerAll, request, withEngine, workDir } from './support.js';

const work = workDir();
afterAll(() => work.remove());

async function waitMerged(engine: Engine, name: string, state: boolean): Promise<void> {
  const deadline = Date.now() + 120_000;
  while ((await engine.adapters.list()).find((a) => a.name === name)?.merged !== state) {
    if (Date.now() > deadline) throw new Error(`${name} never became merged=${String(state)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('merged mode in the engine', () => {
  it('serves a merged adapter next to unmerged ones and the base model, each request getting the PEFT tokens (fp32)', async () => {
    await withEngine(engineOptions(work.dir, { maxMerged: 1, prefixCacheBytes: 8 * 2 ** 20 }), async (engine) => {
      await registerAll(engine, ['adapter-a', 'adapter-b', 'adapter-c', 'adapter-d']);
      const info = await engine.adapters.merge('adapter-a', true);
      expect(info.merged === 'building' || info.merged === true).toBe(true);
      await waitMerged(engine, 'adapter-a', true);
      // Two of each, all at once: the merged session's rows and the base session's rows decode side by side.
      const batch = await Promise.all([...cases, ...cases].map((c) => collect(engine.submit(request(c.adapter, { maxTokens: c.greedy_ids.length }, c.prompt_ids)))));
      batch.forEach((r, i) => expect(r.tokens).toEqual([...cases, ...cases][i].greedy_ids));
      const stats = await engine.stats();
      expect(stats.mergedRuns).toBeGreaterThan(0);
      expect(stats.loraRuns).toBeGreaterThan(0);
      // A second merge is refused while one is held; unmerging serves the adapter through its slot again.
      await expect(engine.adapters.merge('adapter-b', true)).rejects.toThrow(/--max-merged/);
      await engine.adapters.merge('adapter-a', false);
      await waitMerged(engine, 'adapter-a', false);
      const runsBefore = (await engine.stats()).mergedRuns;
      const a = cases.find((c) => c.adapter === 'adapter-a');
      if (!a) throw new Error('no adapter-a case');
      expect((await collect(engine.submit(request('adapter-a', { maxTokens: a.greedy_ids.length }, a.prompt_ids)))).tokens).toEqual(a.greedy_ids);
      expect((await engine.stats()).mergedRuns).toBe(runsBefore);
    });
  });
});
