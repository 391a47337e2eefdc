import { statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { AdapterError } from '../adapters/adapter-error.js';
import type { AdapterErrorCode } from '../adapters/adapter-error.js';
import { loadPeftAdapter } from '../adapters/peft-loader.js';
import type { LoraWeights } from '../adapters/peft-loader.js';
import { spawnWorker } from '../spawn-worker.js';
import { buildOrReuse, defaultCacheRoot } from './build-cache.js';
import type { BuildSource } from './build-cache.js';
import { Checkpoint } from './checkpoint.js';
import { CheckpointError } from './checkpoint-error.js';
import type { BuildOptions } from './graph-builder.js';
import { MergedSource } from './merged-source.js';
import type { ModelConfig } from './model-config.js';
import { PROJECTIONS, projectionWeightName } from './model-config.js';

/** The adapter to fold in: a PEFT directory, loaded here as serving loads it, or weights already loaded. */
export type MergeAdapter = { dir: string; maxRank: number; roots?: readonly string[] } | { weights: LoraWeights };

export interface MergedBuildRequest {
  /** The base checkpoint directory. */
  modelDir: string;
  adapter: MergeAdapter;
  /** The base build's options (quantization, runtime, allLogits) with loraRank 0: a merged graph has no LoRA inputs. */
  options: BuildOptions;
  /** Default: defaultCacheRoot(). */
  cacheRoot?: string;
}

export interface MergedBuild {
  /** Directory holding `model.onnx` and its weights, for openBuiltModel (load-model.ts) with the request's options. */
  dir: string;
  /** The build cache key, as LoadedModel.buildDigest: it differs from the base build's and per adapter content. */
  buildDigest: string;
  /** The folded adapter's content digest (LoraWeights.digest). */
  adapterDigest: string;
  config: ModelConfig;
  /** True when an earlier merged build of the same base, adapter content and options was reused. */
  cached: boolean;
  /** Set when the cached build failed verification and was rebuilt: why, for the caller to log. */
  rebuildReason?: string;
  /** Milliseconds from the request to the built (or reused) directory, adapter load and checkpoint digest included. */
  buildMs: number;
  /** Bytes of the build's weights file (`model.onnx.data`): what a session on it holds, about. */
  weightsBytes: number;
}

/**
 * Projection weights of the base read (merged or passed through) so far, out of all of them; lm_head and the write of
 * the files follow the last one. A reused build reports none.
 */
export interface MergeProgress {
  done: number;
  total: number;
}

/**
 * Builds (or reuses) the base model with the adapter folded into its weights, through the same graph builder and
 * build cache as the base model. Runs on the calling thread for seconds on real model sizes: the engine calls
 * startMergedBuild instead.
 */
export function buildMerged(request: MergedBuildRequest, onProgress?: (progress: MergeProgress) => void): MergedBuild {
  const start = performance.now();
  if (request.options.loraRank !== 0) throw new Error(`a merged build has no LoRA inputs: build it with loraRank 0, not ${request.options.loraRank}`);
  const checkpoint = Checkpoint.open(request.modelDir);
  try {
    const { config } = checkpoint;
    const { adapter } = request;
    const weights = 'weights' in adapter
      ? adapter.weights
      : loadPeftAdapter(adapter.dir, config, { maxRank: adapter.maxRank, roots: adapter.roots, weightType: 'float32' });
    const built = buildOrReuse(counted(new MergedSource(checkpoint, weights), onProgress), request.options, request.cacheRoot ?? defaultCacheRoot());
    return {
      dir: built.dir,
      buildDigest: basename(built.dir),
      adapterDigest: weights.digest,
      config,
      cached: built.cached,
      rebuildReason: built.rebuildReason,
      buildMs: performance.now() - start,
      weightsBytes: statSync(join(built.dir, 'model.onnx.data')).size,
    };
  } finally {
    checkpoint.close();
  }
}

/** `source`, calling `onProgress` after each projection weight is read. */
function counted(source: BuildSource, onProgress: ((progress: MergeProgress) => void) | undefined): BuildSource {
  if (!onProgress) return source;
  const { config } = source;
  const projections = new Set<string>();
  for (let layer = 0; layer < config.numLayers; layer++) for (const p of PROJECTIONS) projections.add(projectionWeightName(layer, p));
  const total = projections.size;
  let done = 0;
  return {
    config,
    digest: () => source.digest(),
    has: (name) => source.has(name),
    read: (name) => {
      const weight = source.read(name);
      if (projections.delete(name)) onProgress({ done: ++done, total });
      return weight;
    },
  };
}

/** What the merge worker posts: progress any number of times, then one outcome. */
export type FromMergeWorker =
  | { progress: MergeProgress }
  | { ok: true; build: MergedBuild }
  | { ok: false; adapter: { code: AdapterErrorCode; path: string; problem: string } }
  | { ok: false; checkpoint: { file: string; problem: string } }
  | { ok: false; message: string };

export interface StartMergedBuildOptions {
  /** Called on the calling thread as the build reads the base's projection weights. */
  onProgress?: (progress: MergeProgress) => void;
  /** Stops the build (its worker is terminated) and rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * buildMerged in a worker thread of its own, so the caller's event loop (the engine's) stays free for the seconds a
 * build takes. Weights given as loaded are copied to the worker, not moved: the caller keeps serving them unmerged.
 * Refusals keep their type: AdapterError for the adapter, CheckpointError for the checkpoint. An aborted build may
 * leave its temporary directory, which the build cache removes once it is abandoned.
 */
export function startMergedBuild(request: MergedBuildRequest, options: StartMergedBuildOptions = {}): Promise<MergedBuild> {
  const { signal, onProgress } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const worker = spawnWorker(new URL('./merge-worker.js', import.meta.url), request);
    let settled = false;
    const settle = (fail: Error | null, build?: MergedBuild): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', abort);
      if (fail) reject(fail);
      else resolve(build as MergedBuild);
    };
    const abort = (): void => {
      settle(signal?.reason instanceof Error ? signal.reason : new Error('the merged build was aborted'));
      void worker.terminate();
    };
    signal?.addEventListener('abort', abort, { once: true });
    worker.on('message', (message: FromMergeWorker) => {
      if ('progress' in message) {
        if (!settled) onProgress?.(message.progress);
      } else if (message.ok) {
        settle(null, message.build);
      } else if ('adapter' in message) {
        settle(new AdapterError(message.adapter.code, message.adapter.path, message.adapter.problem));
      } else if ('checkpoint' in message) {
        settle(new CheckpointError(message.checkpoint.file, message.checkpoint.problem));
      } else {
        settle(new Error(`merged build failed: ${message.message}`));
      }
    });
    worker.on('error', (err) => settle(new Error(`merged build failed: ${err.message}`)));
    worker.on('exit', (code) => settle(new Error(`the merged build's worker stopped (exit code ${code}) before it finished`)));
  });
}
