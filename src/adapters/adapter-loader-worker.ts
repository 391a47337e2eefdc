// Reads, validates and transposes PEFT adapters off the engine loop; weights come back as transferred buffers.
import { parentPort, workerData } from 'node:worker_threads';
import type { ModelConfig } from '../model/model-config.js';
import { weightsDigest } from './adapter-digest.js';
import { AdapterError, excerpt } from './adapter-error.js';
import { loadPeftAdapter } from './peft-loader.js';
import type { FromLoaderWorker, LoadReply, LoadRequest, LoaderWorkerData } from './adapter-loader.js';

const { config, maxRank, roots } = workerData as LoaderWorkerData & { config: ModelConfig };
const port = parentPort;
if (!port) throw new Error('adapter-loader-worker must run in a worker thread');

port.on('message', ({ id, dir }: LoadRequest) => {
  let reply: LoadReply;
  const transfer: ArrayBuffer[] = [];
  try {
    const weights = loadPeftAdapter(dir, config, { maxRank, roots });
    // The digest of the loaded values, not of the files: it names exactly what is served.
    const digest = weightsDigest(weights);
    for (const m of weights.modules.values()) transfer.push(m.a.buffer as ArrayBuffer, m.b.buffer as ArrayBuffer);
    reply = { id, ok: true, digest, weights };
  } catch (err) {
    reply = err instanceof AdapterError
      ? { id, ok: false, code: err.code, path: err.path, problem: err.problem }
      : { id, ok: false, code: 'adapter_invalid', path: '', problem: `cannot load: ${unexpected(err)}` };
  }
  port.postMessage(reply satisfies FromLoaderWorker, transfer);
});
port.postMessage({ ready: true } satisfies FromLoaderWorker);

/** What went wrong, without the absolute paths Node's file system errors carry in their messages. */
function unexpected(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (typeof code === 'string') return code;
  return excerpt(err instanceof Error ? err.message : String(err));
}
