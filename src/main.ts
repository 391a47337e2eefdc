import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { basename, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { AdapterError } from './adapters/adapter-error.js';
import { buildApp } from './app.js';
import type { ServeConfig } from './config.js';
import { DEFAULT_CONTEXT_LENGTH } from './config.js';
import { ConfigError } from './setting-reader.js';
import { Engine } from './engine/engine.js';
import type { EngineOptions } from './engine/engine-options.js';
import { parseModelConfig } from './model/hf-config.js';

export interface RunningServer {
  app: FastifyInstance;
  engine: Engine;
  /** `http://host:port` it listens on. */
  url: string;
  /** Stops accepting, lets in-flight requests finish for up to `deadlineMs` (default: the config's), stops the engine; idempotent. */
  close(deadlineMs?: number): Promise<void>;
}

/** Extra time after the deadline for responses to flush before connections are cut. */
const CLOSE_GRACE_MS = 2000;

/** Starts the engine (model loaded, adapters preloaded), builds the app and listens. */
export async function startServer(config: ServeConfig, logger: Logger): Promise<RunningServer> {
  const modelDir = config.model.modelDir;
  if (modelDir === null) throw new ConfigError('--model is required');
  const modelName = config.model.servedModelName ?? basename(modelDir);
  const engine = await Engine.start(engineOptions(config, modelDir));
  if (engine.runtimeNote !== null) logger.warn({ reason: engine.runtimeNote }, 'the native runtime is not available: serving on the stock onnxruntime-node path');
  engine.onLog(({ level, message, fields }) => logger[level](fields, message));
  if (engine.rebuildReason !== null) logger.warn({ reason: engine.rebuildReason }, 'the cached model build failed verification and was built again');
  let app: FastifyInstance | null = null;
  let draining = false;
  try {
    for (const { name, path } of config.adapters.preload) {
      await engine.adapters.register(name, path).catch((err: unknown) => {
        throw new ConfigError(`--adapter ${name}=${path}: ${err instanceof AdapterError ? err.problem : String(err)}`);
      });
    }
    for (const name of config.adapters.merge) await engine.adapters.merge(name, true);
    app = await buildApp({
      engine,
      modelName,
      modelDir,
      adapterDirs: config.adapters.dirs,
      keys: { apiKey: config.http.apiKey, adminKey: config.http.adminKey },
      bodyLimit: config.http.bodyLimit,
      requestTimeoutMs: config.http.requestTimeoutMs,
      keepAliveTimeoutMs: config.http.keepAliveTimeoutMs,
      draining: () => draining,
      logger,
    });
    await app.listen({ host: config.http.host, port: config.http.port });
  } catch (err) {
    await app?.close();
    await engine.shutdown(0);
    throw err;
  }
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const running = app;
  let closing: Promise<void> | null = null;
  const drainAndClose = async (deadlineMs: number) => {
    draining = true;
    await close(running, engine, deadlineMs);
  };
  logger.info({ url: `http://${host}:${address.port}`, model: modelName, runtime: engine.runtime, contextLength: engine.contextLength, adapters: config.adapters.preload.map((a) => a.name) }, 'listening');
  return {
    app: running,
    engine,
    url: `http://${host}:${address.port}`,
    close: (deadlineMs = config.http.shutdownTimeoutMs) => (closing ??= drainAndClose(deadlineMs)),
  };
}

/**
 * Runs the server until SIGTERM or SIGINT, then shuts it down gracefully (a second signal kills the process) and
 * resolves 0. When the engine stops serving, it logs why, closes the server and resolves 1, so that a supervisor
 * restarts the process instead of routing to a server that cannot generate.
 */
export async function runServer(config: ServeConfig, logger: Logger): Promise<number> {
  const server = await startServer(config, logger);
  const stop = await new Promise<{ signal: NodeJS.Signals } | { failure: string }>((resolve) => {
    const done = (reason: { signal: NodeJS.Signals } | { failure: string }) => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve(reason);
    };
    const onSignal = (signal: NodeJS.Signals) => done({ signal });
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    server.engine.onFailure((failure) => done({ failure }));
    if (server.engine.failure !== null) done({ failure: server.engine.failure });
  });
  if ('failure' in stop) {
    logger.fatal({ reason: stop.failure }, 'the engine stopped serving; exiting');
    await server.close(0);
    return 1;
  }
  logger.info({ signal: stop.signal, deadlineMs: config.http.shutdownTimeoutMs }, 'shutting down');
  await server.close();
  logger.info('stopped');
  return 0;
}

/**
 * The listener stays open while the engine drains, so /health and new requests answer 503 (the app's `draining`)
 * until the requests in flight have finished or the deadline has ended them; then the app closes.
 */
async function close(app: FastifyInstance, engine: Engine, deadlineMs: number): Promise<void> {
  await engine.shutdown(deadlineMs);
  const closed = app.close();
  // Connections that served the last responses are idle now; keep-alive would hold the close until they time out.
  app.server.closeIdleConnections();
  const cut = setTimeout(() => app.server.closeAllConnections(), CLOSE_GRACE_MS);
  try {
    await closed;
  } finally {
    clearTimeout(cut);
  }
}

function engineOptions(config: ServeConfig, modelDir: string): EngineOptions {
  const configPath = join(modelDir, 'config.json');
  const { maxPositionEmbeddings } = parseModelConfig(JSON.parse(readFileSync(configPath, 'utf8')), undefined, configPath);
  const asked = config.model.contextLength;
  if (asked !== null && asked > maxPositionEmbeddings) {
    throw new ConfigError(`--context-length ${asked} is above the model's context (${configPath}: max_position_embeddings ${maxPositionEmbeddings})`);
  }
  return {
    modelDir,
    quantization: config.model.quantization,
    threads: config.model.threads,
    runtime: config.model.runtime,
    ...(config.model.cacheDir === null ? {} : { cacheRoot: config.model.cacheDir }),
    maxBatch: config.scheduler.maxBatch,
    contextLength: asked ?? Math.min(maxPositionEmbeddings, DEFAULT_CONTEXT_LENGTH),
    prefillChunk: config.scheduler.prefillChunk,
    ...(config.scheduler.maxBatchedTokens === null ? {} : { maxBatchedTokens: config.scheduler.maxBatchedTokens }),
    prefixCacheBytes: config.scheduler.prefixCacheBytes,
    maxLoras: config.adapters.maxLoras,
    maxLoraRank: config.adapters.maxLoraRank,
    maxCpuLoraBytes: config.adapters.maxCpuLoraBytes,
    maxMerged: config.adapters.maxMerged,
    adapterRoots: config.adapters.dirs,
    adapterLoadTimeoutMs: config.adapters.loadTimeoutMs,
    maxWaiting: config.scheduler.maxWaiting,
    adapterWaitTimeoutMs: config.scheduler.adapterWaitTimeoutMs,
  };
}
