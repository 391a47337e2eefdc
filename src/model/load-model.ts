import { basename } from 'node:path';
import type { BuildOptions } from './graph-builder.js';
import { DEFAULT_BUILD_OPTIONS } from './graph-builder.js';
import { buildOrReuse, defaultCacheRoot } from './build-cache.js';
import { Checkpoint } from './checkpoint.js';
import type { ModelRunner } from './decoder.js';
import { Decoder } from './decoder.js';
import type { ModelConfig } from './model-config.js';
import { NativeDecoder } from './native-decoder.js';
import { loadNativeRuntime } from './native-runtime.js';
import type { Quantization } from './quantizer.js';

/** Which runtime runs the model: the project's native binding, onnxruntime-node, or native where it can be loaded. */
export type RuntimeChoice = 'native' | 'stock' | 'auto';
export const RUNTIME_CHOICES: readonly RuntimeChoice[] = ['auto', 'native', 'stock'];

export interface LoadModelOptions {
  modelDir: string;
  quantization?: Quantization;
  threads: number;
  cacheRoot?: string;
  /** Rank of the batched LoRA slot inputs; 0 (default) builds without LoRA. */
  loraRank?: number;
  /** Build a graph that returns every position's logits (evaluation); default false. */
  allLogits?: boolean;
  /** Default 'stock'. 'native' fails when the native runtime cannot be loaded; 'auto' falls back to stock. */
  runtime?: RuntimeChoice;
}

export interface LoadedModel {
  config: ModelConfig;
  decoder: ModelRunner;
  /** The runtime serving the model. */
  runtime: 'native' | 'stock';
  /** Why the native runtime is not serving when it was asked for with 'auto'; null otherwise. */
  runtimeNote: string | null;
  /** Milliseconds spent opening, building (or reusing) and creating the session. */
  loadMs: number;
  /** Identity of the build (checkpoint digest, build options, builder version): its build cache key. */
  buildDigest: string;
  cached: boolean;
  /** Set when the cached build failed verification and was rebuilt: why, for the caller to log. */
  rebuildReason?: string;
}

/** Opens an HF checkpoint, builds its graph (or reuses the cached build) and starts a session on it. */
export async function loadModel(options: LoadModelOptions): Promise<LoadedModel> {
  const start = performance.now();
  const choice = options.runtime ?? 'stock';
  const native = choice === 'stock' ? null : loadNativeRuntime();
  if (native && 'unavailable' in native && choice === 'native') throw new Error(`--runtime native: ${native.unavailable}`);
  const runtime = native && 'runtime' in native ? native.runtime : null;
  const checkpoint = Checkpoint.open(options.modelDir);
  const buildOptions: BuildOptions = {
    ...DEFAULT_BUILD_OPTIONS,
    quantization: options.quantization ?? DEFAULT_BUILD_OPTIONS.quantization,
    loraRank: options.loraRank ?? 0,
    allLogits: options.allLogits ?? false,
    runtime: runtime ? 'native' : 'stock',
  };
  let built;
  try {
    built = buildOrReuse(checkpoint, buildOptions, options.cacheRoot ?? defaultCacheRoot());
  } finally {
    checkpoint.close();
  }
  const decoder = runtime
    ? await NativeDecoder.load(runtime, built.dir, checkpoint.config, options.threads, buildOptions.loraRank, buildOptions.allLogits)
    : await Decoder.load(built.dir, checkpoint.config, options.threads, buildOptions.loraRank);
  return {
    config: checkpoint.config,
    decoder,
    runtime: runtime ? 'native' : 'stock',
    runtimeNote: native && 'unavailable' in native ? native.unavailable : null,
    loadMs: performance.now() - start,
    buildDigest: basename(built.dir),
    cached: built.cached,
    rebuildReason: built.rebuildReason,
  };
}
