import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { defaultCacheRoot } from '../src/model/build-cache.js';
import { synthCheckpoint } from '../src/synth/checkpoint-synth.js';

/** The synthetic Qwen2 checkpoint (BF16, seed 0) of a preset's shape, written once under the cache root's bench/. */
export function benchCheckpoint(preset: string): string {
  const dir = join(defaultCacheRoot(), 'bench', `${preset}-qwen2-seed0`);
  if (!existsSync(join(dir, 'config.json'))) {
    rmSync(dir, { recursive: true, force: true });
    synthCheckpoint(dir, { architecture: 'qwen2', preset, seed: 0, dtype: 'BF16' });
  }
  return dir;
}
