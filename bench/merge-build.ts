// Cost of one merged build (an adapter folded into the base weights and requantized) on a synthetic checkpoint of a
// real model's shape with a rank-16 adapter on all 7 projections: build time in its worker against a cold base build
// of the same options, the longest stall of the calling thread meanwhile, the fold alone, the weights' bytes and the
// session start on the build. Prints one JSON object.
// Usage: npm run bench:merge-build [-- --preset qwen2.5-0.5b --quant int4 --threads N]
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadPeftAdapter } from '../src/adapters/peft-loader.js';
import { buildOrReuse } from '../src/model/build-cache.js';
import { Checkpoint } from '../src/model/checkpoint.js';
import type { BuildOptions } from '../src/model/graph-builder.js';
import { DEFAULT_BUILD_OPTIONS } from '../src/model/graph-builder.js';
import { openBuiltModel, resolveRuntime } from '../src/model/load-model.js';
import { startMergedBuild } from '../src/model/merged-build.js';
import { foldLora } from '../src/model/merged-source.js';
import { projectionShape, projectionWeightName } from '../src/model/model-config.js';
import type { Quantization } from '../src/model/quantizer.js';
import { benchAdapters } from './bench-adapters.js';
import { benchCheckpoint } from './bench-checkpoint.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: String(availableParallelism()) },
    quant: { type: 'string', default: 'int4' },
    preset: { type: 'string', default: 'qwen2.5-0.5b' },
  },
});
const modelDir = benchCheckpoint(values.preset);
const adapterDir = benchAdapters(modelDir)(0);
const cacheRoot = mkdtempSync(join(tmpdir(), 'loraserve-bench-merge-'));
const { runtime } = resolveRuntime('auto');
const options: BuildOptions = { ...DEFAULT_BUILD_OPTIONS, quantization: values.quant as Quantization, runtime };
const ms = (t0: number) => Math.round(performance.now() - t0);

try {
  const checkpoint = Checkpoint.open(modelDir);
  let t0 = performance.now();
  buildOrReuse(checkpoint, options, cacheRoot);
  const baseBuildMs = ms(t0);

  // The fold alone, on this thread: what a merged build adds to a base build, besides loading the adapter.
  const adapter = loadPeftAdapter(adapterDir, checkpoint.config, { maxRank: 16 });
  let foldMs = 0;
  for (const module of adapter.modules.values()) {
    const weight = checkpoint.read(projectionWeightName(module.layer, module.projection));
    t0 = performance.now();
    foldLora(weight, module, projectionShape(checkpoint.config, module.projection));
    foldMs += performance.now() - t0;
  }
  checkpoint.close();

  let longestStallMs = 0;
  let last = performance.now();
  const monitor = setInterval(() => {
    longestStallMs = Math.max(longestStallMs, performance.now() - last);
    last = performance.now();
  }, 5);
  let progressReports = 0;
  const request = { modelDir, adapter: { dir: adapterDir, maxRank: 16 }, options, cacheRoot };
  t0 = performance.now();
  const built = await startMergedBuild(request, { onProgress: () => progressReports++ }).finally(() => clearInterval(monitor));
  const mergedWallMs = ms(t0);
  const reused = await startMergedBuild(request);

  t0 = performance.now();
  const decoder = await openBuiltModel(built.dir, built.config, options, Number(values.threads));
  const sessionMs = ms(t0);
  await decoder.release();

  console.log(JSON.stringify({
    preset: values.preset,
    quant: values.quant,
    runtime,
    adapter: { rank: adapter.rank, modules: adapter.modules.size },
    // Cold builds: checkpoint digest, (merged: adapter load and fold,) quantization and writing the files.
    base_build_ms: baseBuildMs,
    merged_build_ms: Math.round(built.buildMs),
    // Including the worker's start.
    merged_build_wall_ms: mergedWallMs,
    fold_ms: Math.round(foldMs),
    longest_calling_thread_stall_ms: Math.round(longestStallMs),
    progress_reports: progressReports,
    cached_merged_build_ms: Math.round(reused.buildMs),
    merged_weights_bytes: built.weightsBytes,
    session_start_ms: sessionMs,
  }, null, 2));
} finally {
  rmSync(cacheRoot, { recursive: true, force: true });
}
