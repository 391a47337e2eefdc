import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { BuildOptions, WeightSource } from './graph-builder.js';
import { buildDecoderGraph } from './graph-builder.js';
import type { ModelConfig } from './model-config.js';

/** Bump when the emitted graph changes, so caches built by an older builder are not reused. */
const BUILDER_VERSION = 6;

/** `LORASERVE_CACHE_DIR`, else `$XDG_CACHE_HOME/loraserve`, else `~/.cache/loraserve`. */
export function defaultCacheRoot(): string {
  if (process.env.LORASERVE_CACHE_DIR) return process.env.LORASERVE_CACHE_DIR;
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'loraserve');
}

export interface BuiltModel {
  /** Directory holding `model.onnx` and its external weights. */
  dir: string;
  /** True when an earlier build was reused. */
  cached: boolean;
}

export interface BuildSource extends WeightSource {
  readonly config: ModelConfig;
  /** Content digest of the checkpoint. */
  digest(): string;
}

/**
 * Returns the built graph for the checkpoint and options, building it only when no earlier build with the
 * same checkpoint content, options and builder version exists. Builds go to a temporary directory and are
 * renamed into place, so a crash mid-build never leaves a half-written cache entry.
 */
export function buildOrReuse(source: BuildSource, options: BuildOptions, cacheRoot = defaultCacheRoot()): BuiltModel {
  const key = createHash('sha256')
    .update(JSON.stringify({ builder: BUILDER_VERSION, checkpoint: source.digest(), options }))
    .digest('hex')
    .slice(0, 32);
  const dir = join(cacheRoot, 'models', key);
  if (existsSync(join(dir, 'model.onnx'))) return { dir, cached: true };
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  mkdirSync(tmp, { recursive: true });
  try {
    buildDecoderGraph(source.config, source, options, tmp);
    writeFileSync(join(tmp, 'build.json'), JSON.stringify({ builder: BUILDER_VERSION, options, config: source.config }, null, 2));
    renameSync(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    // Another process finished the same build first: its result is as good as ours.
    if (existsSync(join(dir, 'model.onnx'))) return { dir, cached: true };
    throw err;
  }
  return { dir, cached: false };
}
