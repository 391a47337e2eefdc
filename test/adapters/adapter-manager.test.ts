import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AdapterManager } from '../../src/adapters/adapter-manager.js';
import type { AdapterEntry } from '../../src/adapters/adapter-manager.js';
import { loadPeftAdapter } from '../../src/adapters/peft-loader.js';
import { parseModelConfig } from '../../src/model/hf-config.js';
import { PROJECTIONS, projectionShape } from '../../src/model/model-config.js';
import { synthAdapter } from '../../src/synth/adapter-synth.js';
import { synthCheckpoint } from '../../src/synth/checkpoint-synth.js';

const root = realpathSync(mkdtempSync(join(tmpdir(), 'loraserve-adapter-manager-')));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const baseDir = join(root, 'base');
synthCheckpoint(baseDir, { architecture: 'llama', preset: 'tiny', seed: 0, dtype: 'F32' });
const config = parseModelConfig(JSON.parse(readFileSync(join(baseDir, 'config.json'), 'utf8')), undefined, join(baseDir, 'config.json'));
const adapters = join(root, 'adapters');
const dirs = [1, 2, 3].map((seed) => {
  const dir = join(adapters, `s${seed}`);
  synthAdapter(dir, baseDir, { rank: 8, alpha: 16, targetModules: [...PROJECTIONS], seed, dtype: 'BF16' });
  return dir;
});
const RANK = 8;

describe('AdapterManager', () => {
  it('reloads adapters pushed out of host memory into the memory of those evicted, with the slots matching a fresh load', async () => {
    const expected = dirs.map((dir) => loadPeftAdapter(dir, config, { maxRank: RANK, weightType: 'float16' }));
    let changed = () => {};
    // Host memory for one adapter, one slot: every adapter but the last registered is on disk only.
    const manager = new AdapterManager(config, {
      maxLoras: 1, maxRank: RANK, hostBytes: expected[0].bytes, rows: 0, weightType: 'float16', roots: [adapters],
    }, () => changed());
    try {
      const entries: AdapterEntry[] = [];
      for (const [i, dir] of dirs.entries()) entries.push(await manager.register(`a${i}`, dir));
      expect(manager.hostEvictions).toBe(2);
      for (const round of [0, 1]) {
        for (const [i, entry] of entries.entries()) {
          let got = manager.acquireSlot(entry, performance.now());
          if ('wait' in got) {
            await new Promise<void>((resolve) => { changed = resolve; });
            got = manager.acquireSlot(entry, performance.now());
          }
          if (!('slot' in got)) throw new Error(`round ${round}, adapter ${i}: ${JSON.stringify(got)}`);
          const batch = manager.slots.batch(0, [got.slot]);
          for (const [key, m] of expected[i].modules) {
            const [k, n] = projectionShape(config, m.projection);
            expect(batch.a(m.layer, m.projection).subarray(got.slot * k * RANK, (got.slot + 1) * k * RANK), key).toEqual(m.a);
            expect(batch.b(m.layer, m.projection).subarray(got.slot * RANK * n, (got.slot + 1) * RANK * n), key).toEqual(m.b);
          }
          manager.slots.release(got.slot);
        }
      }
      // Each acquire read its adapter from disk again: 3 registrations, 6 reloads, each evicting the one before.
      expect([manager.hostLoads, manager.hostEvictions]).toEqual([9, 8]);
    } finally {
      await manager.close();
    }
  });
});
