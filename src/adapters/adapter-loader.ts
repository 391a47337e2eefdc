import { setTimeout as sleep } from 'node:timers/promises';
import type { Worker } from 'node:worker_threads';
import type { LoraWeightType } from '../model/graph-builder.js';
import type { ModelConfig } from '../model/model-config.js';
import { spawnWorker } from '../spawn-worker.js';
import type { AdapterErrorCode } from './adapter-error.js';
import { AdapterError, excerpt } from './adapter-error.js';
import type { LoraWeights } from './peft-loader.js';

/** As `--adapter-load-timeout`'s default. */
export const DEFAULT_LOAD_TIMEOUT_MS = 30_000;
/** How long close() waits for the worker to stop. */
const CLOSE_WAIT_MS = 1000;

export interface LoaderWorkerData {
  maxRank: number;
  /** Real paths of the adapter roots. */
  roots: readonly string[];
  /** The slots' element type, which the worker converts the weights to. */
  weightType: LoraWeightType;
}

export interface LoadRequest {
  id: number;
  dir: string;
}

/** What the worker is sent: a load, or the buffer of weights that left memory, for a later load to fill. */
export type ToLoaderWorker = LoadRequest | { recycle: ArrayBuffer };

export type LoadReply =
  | { id: number; ok: true; weights: LoraWeights }
  | { id: number; ok: false; code: AdapterErrorCode; path: string; problem: string };

/** What the worker posts: once `ready` when it listens, then one reply per load. */
export type FromLoaderWorker = { ready: true } | LoadReply;

interface Job {
  id: number;
  dir: string;
  resolve: (weights: LoraWeights) => void;
  reject: (e: Error) => void;
}

interface LoaderThread {
  worker: Worker;
  ready: boolean;
  /** The load in flight: one at a time, so its deadline measures that load alone. */
  job: Job | null;
  deadline: NodeJS.Timeout | undefined;
}

/**
 * Loads PEFT adapters in a worker thread of its own, so reading and validating files never stalls the engine loop.
 * Loads run one at a time, each under a deadline. A worker that misses it (a regex that backtracks without end, a
 * file system that hangs) or dies is dropped: the load in flight fails, a fresh worker takes the queued ones.
 */
export class AdapterLoader {
  readonly #data: LoaderWorkerData & { config: ModelConfig };
  readonly #timeoutMs: number;
  readonly #queue: Job[] = [];
  #thread: LoaderThread | null = null;
  #nextId = 0;
  #closed = false;

  constructor(config: ModelConfig, options: LoaderWorkerData & { timeoutMs?: number }) {
    this.#data = { config, maxRank: options.maxRank, roots: options.roots, weightType: options.weightType };
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS;
    this.#thread = this.#spawn();
  }

  load(dir: string): Promise<LoraWeights> {
    if (this.#closed) return Promise.reject(new AdapterError('adapter_invalid', '', 'the server is shutting down'));
    return new Promise((resolve, reject) => {
      this.#queue.push({ id: this.#nextId++, dir, resolve, reject });
      this.#next();
    });
  }

  /**
   * Hands the buffer of weights that no tier holds any more to the worker, which loads a later adapter of that size
   * into it: memory touched for the first time cost ~4 ms per MiB on the machines measured (a page fault per 4 KiB),
   * more than reading, hashing and converting an adapter. The weights' arrays are detached: they must not be used.
   */
  recycle(weights: LoraWeights): void {
    const buffer = weights.modules.values().next().value?.a.buffer;
    const thread = this.#thread;
    if (!thread?.ready || !(buffer instanceof ArrayBuffer)) return;
    thread.worker.postMessage({ recycle: buffer } satisfies ToLoaderWorker, [buffer]);
  }

  /** Fails every load not yet answered and stops the worker, waiting at most CLOSE_WAIT_MS for it. */
  async close(): Promise<void> {
    this.#closed = true;
    const thread = this.#thread;
    this.#thread = null;
    const jobs = [...(thread?.job ? [thread.job] : []), ...this.#queue.splice(0)];
    for (const job of jobs) job.reject(new AdapterError('adapter_invalid', '', 'the server is shutting down'));
    if (!thread) return;
    clearTimeout(thread.deadline);
    // A thread inside a system call cannot be stopped until the call returns; the process must exit regardless.
    await Promise.race([thread.worker.terminate(), sleep(CLOSE_WAIT_MS, undefined, { ref: false })]);
  }

  #next(): void {
    if (this.#closed || this.#queue.length === 0) return;
    this.#thread ??= this.#spawn();
    const thread = this.#thread;
    if (!thread.ready || thread.job) return;
    const job = this.#queue.shift() as Job;
    thread.job = job;
    const seconds = this.#timeoutMs / 1000;
    thread.deadline = setTimeout(() => this.#drop(thread, `loading did not finish within ${seconds} s (--adapter-load-timeout)`), this.#timeoutMs);
    thread.worker.postMessage({ id: job.id, dir: job.dir } satisfies ToLoaderWorker);
  }

  #spawn(): LoaderThread {
    const worker = spawnWorker(new URL('./adapter-loader-worker.js', import.meta.url), this.#data);
    const thread: LoaderThread = { worker, ready: false, job: null, deadline: undefined };
    worker.on('message', (message: FromLoaderWorker) => {
      if (this.#thread !== thread) return;
      if ('ready' in message) {
        thread.ready = true;
      } else if (thread.job?.id === message.id) {
        const job = thread.job;
        clearTimeout(thread.deadline);
        thread.job = null;
        if (message.ok) job.resolve(message.weights);
        else job.reject(new AdapterError(message.code, message.path, message.problem));
      }
      this.#next();
    });
    worker.on('error', (err) => this.#drop(thread, `the adapter loader failed: ${excerpt(err.message)}`));
    worker.on('exit', () => this.#drop(thread, 'the adapter loader stopped'));
    // Idle between loads: do not keep the process alive for it.
    worker.unref();
    return thread;
  }

  /**
   * Replaces the thread: fails its load in flight (every queued load when it never got ready, so a worker that cannot
   * start does not respawn forever) and terminates it without waiting, as a stuck thread may never stop.
   */
  #drop(thread: LoaderThread, problem: string): void {
    if (this.#thread !== thread) return;
    this.#thread = null;
    clearTimeout(thread.deadline);
    void thread.worker.terminate();
    const failed = thread.job ? [thread.job] : thread.ready ? [] : this.#queue.splice(0);
    for (const job of failed) job.reject(new AdapterError('adapter_invalid', '', problem));
    this.#next();
  }
}
