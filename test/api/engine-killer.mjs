// Preloaded into a `loraserve serve` child by test/api/engine-failure.test.ts (node --import; plain JavaScript, as
// worker threads inherit the flag before they can load TypeScript): SIGUSR2 terminates the engine worker, the first
// worker thread the process starts, as a crash in it would end it.
import { isMainThread } from 'node:worker_threads';

if (isMainThread) {
  const workers = [];
  process.on('worker', (worker) => workers.push(worker));
  process.on('SIGUSR2', () => void workers[0]?.terminate());
}
