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
  /** The options it was built with: a merged build for this model takes them with loraRank 0. */
  buildOptions: BuildOptions;
  cached: boolean;
  /** Set when the cached build failed verification and was rebuilt: why, for the caller to log. */
  rebuildReason?: string;
}

/** Opens an HF checkpoint, builds its graph (or reuses the cached build) and starts a session on it. */
export async function loadModel(options: LoadModelOptions): Promise<LoadedModel> {
  const start = performance.now();
  const { runtime, runtimeNote } = resolveRuntime(options.runtime ?? 'stock');
  const checkpoint = Checkpoint.open(options.modelDir);
  const buildOptions: BuildOptions = {
    ...DEFAULT_BUILD_OPTIONS,
    quantization: options.quantization ?? DEFAULT_BUILD_OPTIONS.quantization,
    loraRank: options.loraRank ?? 0,
    allLogits: options.allLogits ?? false,
    runtime,
  };
  let built;
  try {
    built = buildOrReuse(checkpoint, buildOptions, options.cacheRoot ?? defaultCacheRoot());
  } finally {
    checkpoint.close();
  }
  const decoder = await openBuiltModel(built.dir, checkpoint.config, buildOptions, options.threads);
  return {
    config: checkpoint.config,
    decoder,
    runtime,
    runtimeNote,
    loadMs: performance.now() - start,
    buildDigest: basename(built.dir),
    buildOptions,
    cached: built.cached,
    rebuildReason: built.rebuildReason,
  };
}

/**
 * The runtime a choice runs on: 'native' fails when the native runtime cannot be loaded, 'auto' falls back to stock
 * and says why in `runtimeNote`.
 */
export function resolveRuntime(choice: RuntimeChoice): { runtime: 'native' | 'stock'; runtimeNote: string | null } {
  if (choice === 'stock') return { runtime: 'stock', runtimeNote: null };
  const native = loadNativeRuntime();
  if ('runtime' in native) return { runtime: 'native', runtimeNote: null };
  if (choice === 'native') throw new Error(`--runtime native: ${native.unavailable}`);
  return { runtime: 'stock', runtimeNote: native.unavailable };
}

/**
 * Starts a session on a graph already built into `dir` (by buildOrReuse or buildMerged) with `options`, on the
 * runtime those options were built for.
 */
export async function openBuiltModel(dir: string, config: ModelConfig, options: BuildOptions, threads: number): Promise<ModelRunner> {
  if (options.runtime === 'stock') return Decoder.load(dir, config, threads, options.loraRank);
  const native = loadNativeRuntime();
  if ('unavailable' in native) throw new Error(`a native build needs the native runtime: ${native.unavailable}`);
  return NativeDecoder.load(native.runtime, dir, config, threads, options.loraRank, options.allLogits);
}
