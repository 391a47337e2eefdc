// Reads, validates and converts PEFT adapters off the engine loop; weights come back as one transferred buffer.
import { parentPort, workerData } from 'node:worker_threads';
import type { ModelConfig } from '../model/model-config.js';
import { AdapterError, excerpt } from './adapter-error.js';
import { loadPeftAdapter } from './peft-loader.js';
import type { FromLoaderWorker, LoadReply, LoaderWorkerData, ToLoaderWorker } from './adapter-loader.js';

const { config, maxRank, roots, weightType } = workerData as LoaderWorkerData & { config: ModelConfig };
const port = parentPort;
if (!port) throw new Error('adapter-loader-worker must run in a worker thread');

/** Buffers of weights that left memory (AdapterLoader.recycle), for loads of their size; the latest few. */
const recycled: ArrayBuffer[] = [];
const MAX_RECYCLED = 4;

function keep(buffer: ArrayBuffer): void {
  if (recycled.push(buffer) > MAX_RECYCLED) recycled.shift();
}

port.on('message', (message: ToLoaderWorker) => {
  if ('recycle' in message) {
    keep(message.recycle);
    return;
  }
  const { id, dir } = message;
  let buffer: ArrayBuffer | undefined;
  const allocate = (bytes: number): ArrayBuffer => {
    const i = recycled.findIndex((b) => b.byteLength === bytes);
    buffer = i >= 0 ? recycled.splice(i, 1)[0] : new ArrayBuffer(bytes);
    return buffer;
  };
  let reply: LoadReply;
  try {
    reply = { id, ok: true, weights: loadPeftAdapter(dir, config, { maxRank, roots, weightType, allocate }) };
  } catch (err) {
    reply = err instanceof AdapterError
      ? { id, ok: false, code: err.code, path: err.path, problem: err.problem }
      : { id, ok: false, code: 'adapter_invalid', path: '', problem: `cannot load: ${unexpected(err)}` };
  }
  // Moved, not copied: a structured clone of a 0.5B-shape adapter took longer than the whole load.
  port.postMessage(reply satisfies FromLoaderWorker, reply.ok && buffer ? [buffer] : []);
  if (!reply.ok && buffer) keep(buffer);
});
port.postMessage({ ready: true } satisfies FromLoaderWorker);

/** What went wrong, without the absolute paths Node's file system errors carry in their messages. */
function unexpected(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (typeof code === 'string') return code;
  return excerpt(err instanceof Error ? err.message : String(err));
}
