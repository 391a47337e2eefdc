import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { verifyManifest, writeManifest } from './build-manifest.js';
import type { BuildOptions, WeightSource } from './graph-builder.js';
import { buildDecoderGraph } from './graph-builder.js';
import type { ModelConfig } from './model-config.js';

/** Bump when the emitted graph changes, so caches built by an older builder are not reused. */
const BUILDER_VERSION = 8;
/** Files every complete build holds; its manifest must list them. */
const REQUIRED_FILES = ['model.onnx', 'model.onnx.data', 'build.json'];
/**
 * A temporary build directory with no write for this long is abandoned, whoever made it: a live build writes
 * weights continuously. This is what removes leftovers of builds on another host sharing the cache.
 */
const ABANDONED_AFTER_MS = 60 * 60 * 1000;
/** Host part of temporary build names: process ids are only comparable between processes on one host. */
const HOST = hostname().replace(/[^\w.-]/g, '_');
/** `<key>.tmp-<host>-<pid>-<started ms>`; earlier versions wrote no host. */
const TEMP_DIR = /^[0-9a-f]{32}\.tmp-(?:(.+)-)?(\d+)-(\d+)$/;
const PROCESS_STARTED_MS = Date.now() - process.uptime() * 1000;

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
  /** Set when an earlier build of the same key failed verification and was rebuilt: why (one line, file names only). */
  rebuildReason?: string;
}

export interface BuildSource extends WeightSource {
  readonly config: ModelConfig;
  /** Content digest of the checkpoint. */
  digest(): string;
}

/**
 * Returns the built graph for the checkpoint and options, building it only when no earlier build with the
 * same checkpoint content, options and builder version exists. Builds go to a temporary directory and are
 * renamed into place, so a crash mid-build never leaves a half-written cache entry. An entry is reused only when
 * every file matches the size and SHA-256 its manifest recorded; otherwise it is removed and built again.
 */
export function buildOrReuse(source: BuildSource, options: BuildOptions, cacheRoot = defaultCacheRoot()): BuiltModel {
  const key = createHash('sha256')
    .update(JSON.stringify({ builder: BUILDER_VERSION, checkpoint: source.digest(), options }))
    .digest('hex')
    .slice(0, 32);
  const models = join(cacheRoot, 'models');
  removeAbandonedBuilds(models);
  const dir = join(models, key);
  let rebuildReason: string | undefined;
  if (existsSync(dir)) {
    const problem = verifyManifest(dir, REQUIRED_FILES);
    if (problem === null) return { dir, cached: true };
    rebuildReason = problem;
    rmSync(dir, { recursive: true, force: true });
  }
  const tmp = tempBuildDir(dir);
  mkdirSync(tmp, { recursive: true });
  try {
    buildDecoderGraph(source.config, source, options, tmp);
    writeFileSync(join(tmp, 'build.json'), JSON.stringify({ builder: BUILDER_VERSION, options, config: source.config }, null, 2));
    writeManifest(tmp);
    renameSync(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    // Another process finished the same build first: its result is as good as ours.
    if (existsSync(dir) && verifyManifest(dir, REQUIRED_FILES) === null) return { dir, cached: true, rebuildReason };
    throw err;
  }
  return { dir, cached: false, rebuildReason };
}

/** Where a build of the entry `entryDir` by process `pid` is written before it is renamed into place. */
export function tempBuildDir(entryDir: string, pid = process.pid, startedAt = Date.now()): string {
  return `${entryDir}.tmp-${HOST}-${pid}-${startedAt}`;
}

/**
 * Removes temporary build directories of killed builds: those of a process on this host that is gone, and any
 * with no write for ABANDONED_AFTER_MS. A build still running in a live process is never touched.
 */
function removeAbandonedBuilds(models: string): void {
  if (!existsSync(models)) return;
  for (const name of readdirSync(models)) {
    const match = TEMP_DIR.exec(name);
    if (!match) continue;
    const path = join(models, name);
    try {
      const [, host, pid, startedAt] = match;
      if ((host === HOST && !isBuilding(Number(pid), Number(startedAt))) || Date.now() - lastWriteMs(path) > ABANDONED_AFTER_MS) {
        rmSync(path, { recursive: true, force: true });
      }
    } catch {
      // Best effort: another process may be removing it too, and a leftover must never stop a start.
    }
  }
}

/** Whether process `pid` of this host, which started a build at `startedAt`, may still be running it. */
function isBuilding(pid: number, startedAt: number): boolean {
  // Our own pid from before we started: an earlier process had it (a restarted container's node is pid 1 again).
  if (pid === process.pid) return startedAt >= PROCESS_STARTED_MS;
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The latest modification time of the directory and the files in it. */
function lastWriteMs(dir: string): number {
  return Math.max(statSync(dir).mtimeMs, ...readdirSync(dir).map((name) => statSync(join(dir, name)).mtimeMs));
}
