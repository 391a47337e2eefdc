import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { ServeConfig } from '../config.js';
import { parseServeConfig, serveHelp } from '../config.js';
import { packageRoot } from '../package-root.js';
import { ConfigError } from '../setting-reader.js';
import { runServer } from '../main.js';
import { defaultCacheRoot } from '../model/build-cache.js';
import { createLogger } from '../observability/logger.js';
import { synthCheckpoint } from '../synth/checkpoint-synth.js';

/** `loraserve serve`: exit code 2 for a bad configuration, 0 after a graceful shutdown, 1 when the engine stopped serving. */
export async function serveCommand(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(serveHelp());
    return 0;
  }
  let config: ServeConfig;
  try {
    config = parseServeConfig(argv, process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`loraserve serve: ${err.message}\n\nRun 'loraserve serve --help' for the options.\n`);
    return 2;
  }
  const logger = createLogger(config.http.logLevel);
  return runServer(withDefaultModel(config, logger), logger);
}

/**
 * The default run (no --model): the embedded demo model in models/demo when it is there, else a tiny synthetic
 * checkpoint generated once into the cache; adapters/ (created if missing) as the adapter root unless --adapter-dir is
 * given, with every adapter in it registered unless --adapter is given.
 */
export function withDefaultModel(config: ServeConfig, logger: Logger, root = packageRoot()): ServeConfig {
  if (config.model.modelDir !== null) return config;
  const demo = join(root, 'models', 'demo');
  const modelDir = existsSync(join(demo, 'config.json')) ? demo : synthesizedDemo(config.model.cacheDir ?? defaultCacheRoot(), logger);
  const adaptersDir = join(root, 'adapters');
  const useDefaultAdapters = config.adapters.dirs.length === 0 && ensureDirectory(adaptersDir, logger);
  const found = useDefaultAdapters && config.adapters.maxLoras > 0
    ? readdirSync(adaptersDir, { withFileTypes: true })
      .filter((e) => e.isDirectory() && existsSync(join(adaptersDir, e.name, 'adapter_config.json')))
      .map((e) => ({ name: e.name, path: join(adaptersDir, e.name) }))
    : [];
  return Object.freeze({
    ...config,
    model: Object.freeze({ ...config.model, modelDir }),
    adapters: Object.freeze({
      ...config.adapters,
      dirs: useDefaultAdapters ? [adaptersDir] : config.adapters.dirs,
      preload: config.adapters.preload.length > 0 ? config.adapters.preload : found,
    }),
  });
}

/** Creates the default adapter root if it is missing, so adapters written there later load on demand; false when it cannot. */
function ensureDirectory(dir: string, logger: Logger): boolean {
  try {
    mkdirSync(dir, { recursive: true });
    return true;
  } catch (err) {
    logger.warn({ dir, err: err instanceof Error ? err.message : String(err) }, 'cannot create the default adapter root; serving without it');
    return false;
  }
}

/** A tiny Llama checkpoint named `demo`, written once into the cache (atomically, so a crash leaves none half-written). */
function synthesizedDemo(cacheRoot: string, logger: Logger): string {
  const dir = join(cacheRoot, 'default-model', 'demo');
  if (existsSync(join(dir, 'config.json'))) return dir;
  logger.info({ dir }, 'no models/demo: synthesizing a tiny demo checkpoint');
  const tmp = `${dir}.tmp-${process.pid}`;
  synthCheckpoint(tmp, { architecture: 'llama', preset: 'tiny', seed: 0, dtype: 'F32' });
  try {
    renameSync(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    // Another process wrote it first.
    if (!existsSync(join(dir, 'config.json'))) throw err;
  }
  return dir;
}
