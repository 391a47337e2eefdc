import { existsSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultCacheRoot } from '../src/model/build-cache.js';
import { PROJECTIONS } from '../src/model/model-config.js';
import { synthAdapter } from '../src/synth/adapter-synth.js';

/** Where the benchmarks keep their rank-16 adapters for the preset checkpoints (the cache root's bench/). */
export function defaultAdapterRoot(): string {
  return join(defaultCacheRoot(), 'bench', 'adapters-r16');
}

/**
 * Rank-16 adapters on all 7 projections of the checkpoint in `modelDir`, under `root`: one synthesized source (BF16,
 * seed 1), written once, and a function giving adapter `i`'s directory. Adapter `i` is the source's weights
 * (hard-linked, so 1,000 adapters take one file's disk space) under a config with its own alpha: its content digest
 * and its weights in memory (scale folded in) are its own, so every tier treats it as a distinct adapter and loads it
 * from disk in full. A root last filled for another checkpoint is emptied and filled again.
 */
export function benchAdapters(modelDir: string, root = defaultAdapterRoot()): (i: number) => string {
  const source = join(root, 'source');
  const configPath = join(source, 'adapter_config.json');
  const base = existsSync(configPath) ? (JSON.parse(readFileSync(configPath, 'utf8')) as { base_model_name_or_path?: unknown }).base_model_name_or_path : null;
  if (base !== modelDir) {
    rmSync(root, { recursive: true, force: true });
    synthAdapter(source, modelDir, { rank: 16, alpha: 32, targetModules: [...PROJECTIONS], seed: 1, dtype: 'BF16' });
  }
  return (i: number): string => {
    const dir = join(root, `a${i}`);
    if (!existsSync(join(dir, 'adapter_config.json'))) {
      mkdirSync(dir, { recursive: true });
      linkSync(join(source, 'adapter_model.safetensors'), join(dir, 'adapter_model.safetensors'));
      const config = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
      writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...config, lora_alpha: 32 + i / 1000 }));
    }
    return dir;
  };
}
