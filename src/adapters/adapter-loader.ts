import type { Worker } from 'node:worker_threads';
import type { ModelConfig } from '../model/model-config.js';
import { spawnWorker } from '../spawn-worker.js';
import type { AdapterErrorCode } from './adapter-error.js';
import { AdapterError } from './adapter-error.js';
import type { LoraWeights } from './peft-loader.js';

export interface LoadRequest {
  id: number;
  dir: string;
}

export type LoadReply =
  | { id: number; ok: true; digest: string; weights: LoraWeights }
  | { id: number; ok: false; code: AdapterErrorCode; path: string; problem: string };

export interface LoadedAdapter {
  digest: string;
  weights: LoraWeights;
}

/** Loads PEFT adapters in a worker thread of its own, so reading and validating files never stalls the engine loop. */
export class AdapterLoader {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve: (a: LoadedAdapter) => void; reject: (e: Error) => void }>();
  #nextId = 0;

  constructor(config: ModelConfig, maxRank: number) {
    this.#worker = spawnWorker(new URL('./adapter-loader-worker.js', import.meta.url), { config, maxRank });
    this.#worker.on('message', (reply: LoadReply) => {
      const pending = this.#pending.get(reply.id);
      if (!pending) return;
      this.#pending.delete(reply.id);
      if (reply.ok) pending.resolve({ digest: reply.digest, weights: reply.weights });
      else pending.reject(new AdapterError(reply.code, reply.path, reply.problem));
    });
    this.#worker.on('error', (err) => {
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    });
    // Idle between loads: do not keep the process alive for it.
    this.#worker.unref();
  }

  load(dir: string): Promise<LoadedAdapter> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ id, dir } satisfies LoadRequest);
    });
  }

  async close(): Promise<void> {
    await this.#worker.terminate();
  }
}
