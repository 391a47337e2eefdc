// Runs in the engine worker: merged sessions built in a worker thread of their own, with their progress in the log.
import type { AdapterEntry } from '../adapters/adapter-manager.js';
import type { LoadedModel } from '../model/load-model.js';
import { openBuiltModel } from '../model/load-model.js';
import { startMergedBuild } from '../model/merged-build.js';
import type { EngineOptions } from './engine-options.js';
import type { BuiltSession } from './merged-sessions.js';
import { MergedSessions } from './merged-sessions.js';
import type { FromWorker } from './worker-protocol.js';

/** Progress is logged at these fractions of the base weights read. */
const PROGRESS_MARKS = [0.25, 0.5, 0.75];

/**
 * The engine's merged sessions (null with `maxMerged` 0): each merge builds the base checkpoint with the adapter's
 * delta folded in (cached like base builds) off the engine loop, then opens a session on it for the engine's runtime.
 */
export function mergedSessions(model: LoadedModel, options: EngineOptions, post: (message: FromWorker) => void, wake: () => void): MergedSessions | null {
  const max = options.maxMerged ?? 0;
  if (max === 0) return null;
  const log = (level: 'info' | 'warn', message: string, fields: Record<string, unknown>) => post({ type: 'log', level, message, fields });
  const buildOptions = { ...model.buildOptions, loraRank: 0 };
  const build = async (entry: AdapterEntry): Promise<BuiltSession> => {
    log('info', 'merging an adapter into the base weights', { adapter: entry.name });
    let mark = 0;
    const built = await startMergedBuild(
      { modelDir: options.modelDir, adapter: { dir: entry.path, maxRank: options.maxLoraRank, roots: options.adapterRoots }, options: buildOptions, cacheRoot: options.cacheRoot },
      {
        onProgress: ({ done, total }) => {
          while (mark < PROGRESS_MARKS.length && done / total >= PROGRESS_MARKS[mark]) log('info', 'merged build progress', { adapter: entry.name, percent: PROGRESS_MARKS[mark++] * 100 });
        },
      },
    );
    // A name serves only the content it was registered with (as reloads from disk do).
    if (built.adapterDigest !== entry.digest) throw new Error('its files changed since it was registered; register it again');
    const runner = await openBuiltModel(built.dir, model.config, buildOptions, options.threads);
    return { buildDigest: built.buildDigest, runner, buildMs: built.buildMs, weightsBytes: built.weightsBytes };
  };
  return new MergedSessions(max, build, {
    ready: (entry, built) => {
      log('info', 'merged session ready', { adapter: entry.name, buildMs: Math.round(built.buildMs), weightsBytes: built.weightsBytes });
      wake();
    },
    failed: (entry, message) => log('warn', 'merging failed: the adapter keeps serving unmerged', { adapter: entry.name, reason: message }),
  });
}
