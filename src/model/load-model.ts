import type { BuildOptions } from './graph-builder.js';
import { DEFAULT_BUILD_OPTIONS } from './graph-builder.js';
import { buildOrReuse, defaultCacheRoot } from './build-cache.js';
import { Checkpoint } from './checkpoint.js';
import { Decoder } from './decoder.js';
import type { ModelConfig } from './model-config.js';
import type { Quantization } from './quantizer.js';

export interface LoadModelOptions {
  modelDir: string;
  quantization?: Quantization;
  threads: number;
  cacheRoot?: string;
  /** Rank of the batched LoRA slot inputs; 0 (default) builds without LoRA. */
  loraRank?: number;
  /** Build a graph that returns every position's logits (evaluation); default false. */
  allLogits?: boolean;
}

export interface LoadedModel {
  config: ModelConfig;
  decoder: Decoder;
  /** Milliseconds spent opening, building (or reusing) and creating the session. */
  loadMs: number;
  cached: boolean;
  /** Set when the cached build failed verification and was rebuilt: why, for the caller to log. */
  rebuildReason?: string;
}

/** Opens an HF checkpoint, builds its graph (or reuses the cached build) and starts a session on it. */
export async function loadModel(options: LoadModelOptions): Promise<LoadedModel> {
  const start = performance.now();
  const checkpoint = Checkpoint.open(options.modelDir);
  const buildOptions: BuildOptions = {
    ...DEFAULT_BUILD_OPTIONS,
    quantization: options.quantization ?? DEFAULT_BUILD_OPTIONS.quantization,
    loraRank: options.loraRank ?? 0,
    allLogits: options.allLogits ?? false,
  };
  let built;
  try {
    built = buildOrReuse(checkpoint, buildOptions, options.cacheRoot ?? defaultCacheRoot());
  } finally {
    checkpoint.close();
  }
  const decoder = await Decoder.load(built.dir, checkpoint.config, options.threads, buildOptions.loraRank);
  return { config: checkpoint.config, decoder, loadMs: performance.now() - start, cached: built.cached, rebuildReason: built.rebuildReason };
}
