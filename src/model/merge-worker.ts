// One merged build per worker thread (startMergedBuild): progress and the outcome go back as messages; nothing is
// logged here, the caller decides what to log.
import { parentPort, workerData } from 'node:worker_threads';
import { AdapterError } from '../adapters/adapter-error.js';
import { CheckpointError } from './checkpoint-error.js';
import { buildMerged } from './merged-build.js';
import type { FromMergeWorker, MergedBuildRequest } from './merged-build.js';

const port = parentPort;
if (!port) throw new Error('merge-worker must run in a worker thread');
const post = (message: FromMergeWorker): void => port.postMessage(message);

try {
  post({ ok: true, build: buildMerged(workerData as MergedBuildRequest, (progress) => post({ progress })) });
} catch (err) {
  if (err instanceof AdapterError) post({ ok: false, adapter: { code: err.code, path: err.path, problem: err.problem } });
  else if (err instanceof CheckpointError) post({ ok: false, checkpoint: { file: err.file, problem: err.problem } });
  else post({ ok: false, message: err instanceof Error ? err.message : String(err) });
}
