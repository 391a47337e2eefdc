import { Worker } from 'node:worker_threads';

/**
 * Starts a worker thread on a sibling module given as a URL ending in `.js`. Built code runs the compiled `.js`;
 * when running from TypeScript sources (tests, `tsx`), the worker first registers tsx and then imports the `.ts` file.
 */
export function spawnWorker(moduleUrl: URL, workerData: unknown): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(moduleUrl, { workerData });
  const source = moduleUrl.href.replace(/\.js$/, '.ts');
  const tsx = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import { register } from ${JSON.stringify(tsx)}; register(); await import(${JSON.stringify(source)});`;
  return new Worker(new URL(`data:text/javascript,${encodeURIComponent(bootstrap)}`), { workerData });
}
