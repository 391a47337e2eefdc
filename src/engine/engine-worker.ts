// The engine worker: owns the model session, KV cache, adapter tiers and the step loop, off the HTTP thread.
import { parentPort, workerData } from 'node:worker_threads';
import { AdapterError } from '../adapters/adapter-error.js';
import { AdapterManager } from '../adapters/adapter-manager.js';
import { LORA_WEIGHT_TYPE } from '../model/graph-builder.js';
import { loadModel } from '../model/load-model.js';
import { EngineCore } from './engine-core.js';
import { mergedSessions } from './merge-builds.js';
import type { EngineOptions } from './engine-options.js';
import type { FromWorker, ToWorker } from './worker-protocol.js';

const port = parentPort;
if (!port) throw new Error('engine-worker must run in a worker thread');
const options = workerData as EngineOptions;
const post = (message: FromWorker) => port.postMessage(message);

try {
  const model = await loadModel({
    modelDir: options.modelDir,
    quantization: options.quantization,
    threads: options.threads,
    cacheRoot: options.cacheRoot,
    loraRank: options.maxLoras > 0 ? options.maxLoraRank : 0,
    runtime: options.runtime,
  });
  const contextLength = Math.min(options.contextLength, model.config.maxPositionEmbeddings);
  let core: EngineCore | null = null;
  const adapters = options.maxLoras > 0
    ? new AdapterManager(model.config, {
      maxLoras: options.maxLoras, maxRank: options.maxLoraRank, hostBytes: options.maxCpuLoraBytes,
      // The native graph reads the slot stacks; only the stock one needs a copy of each row's adapter.
      rows: model.runtime === 'native' ? 0 : options.maxBatch,
      weightType: LORA_WEIGHT_TYPE[model.runtime],
      roots: options.adapterRoots, loadTimeoutMs: options.adapterLoadTimeoutMs,
    }, () => core?.wake())
    : null;
  // LORASERVE_CHECK_INVARIANTS=1 (set by the test configuration) checks the engine's bookkeeping each time it goes idle.
  const checkInvariants = options.checkInvariants ?? process.env.LORASERVE_CHECK_INVARIANTS === '1';
  const merged = adapters ? mergedSessions(model, options, post, () => core?.wake()) : null;
  core = new EngineCore({ decoder: model.decoder, adapters, merged, options: { ...options, contextLength, checkInvariants }, modelDigest: model.buildDigest, post });
  const engine = core;
  port.on('message', (message: ToWorker) => {
    switch (message.type) {
      case 'submit': return engine.submit(message.request);
      case 'abort': return engine.abort(message.id);
      case 'close': return engine.close();
      case 'call':
        engine.call(message.call).then(
          (value) => post({ type: 'reply', callId: message.callId, ok: true, value }),
          (err: unknown) => post({
            type: 'reply',
            callId: message.callId,
            ok: false,
            code: err instanceof AdapterError ? err.code : 'engine_error',
            path: err instanceof AdapterError ? err.path : null,
            message: err instanceof AdapterError ? err.problem : err instanceof Error ? err.message : String(err),
          }),
        );
    }
  });
  post({ type: 'ready', config: model.config, contextLength, rebuildReason: model.rebuildReason ?? null, runtime: model.runtime, runtimeNote: model.runtimeNote });
  await engine.run();
  await adapters?.close();
  await merged?.close();
  await model.decoder.release();
  port.close();
} catch (err) {
  post({ type: 'fatal', message: err instanceof Error ? err.message : String(err) });
}
