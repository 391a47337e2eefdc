// Reads, validates and transposes PEFT adapters off the engine loop; weights come back as transferred buffers.
import { parentPort, workerData } from 'node:worker_threads';
import type { ModelConfig } from '../model/model-config.js';
import { adapterDigest } from './adapter-digest.js';
import { AdapterError } from './adapter-error.js';
import { loadPeftAdapter } from './peft-loader.js';
import type { LoadReply, LoadRequest } from './adapter-loader.js';

const { config, maxRank } = workerData as { config: ModelConfig; maxRank: number };
const port = parentPort;
if (!port) throw new Error('adapter-loader-worker must run in a worker thread');

port.on('message', ({ id, dir }: LoadRequest) => {
  let reply: LoadReply;
  const transfer: ArrayBuffer[] = [];
  try {
    // Digest first: if the files change while loading, the weights are at worst newer than the digest, never older.
    const digest = adapterDigest(dir);
    const weights = loadPeftAdapter(dir, config, { maxRank });
    for (const m of weights.modules.values()) transfer.push(m.a.buffer as ArrayBuffer, m.b.buffer as ArrayBuffer);
    reply = { id, ok: true, digest, weights };
  } catch (err) {
    reply = err instanceof AdapterError
      ? { id, ok: false, code: err.code, path: err.path, problem: err.problem }
      : { id, ok: false, code: 'adapter_invalid', path: dir, problem: err instanceof Error ? err.message : String(err) };
  }
  port.postMessage(reply, transfer);
});
