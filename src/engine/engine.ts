import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import type { AdapterErrorCode } from '../adapters/adapter-error.js';
import { AdapterError } from '../adapters/adapter-error.js';
import type { ModelConfig } from '../model/model-config.js';
import { Tokenizer } from '../model/tokenizer.js';
import { spawnWorker } from '../spawn-worker.js';
import type { EngineOptions } from './engine-options.js';
import type { AdapterInfo, EngineStats, GenerationEvent, GenerationRequest } from './engine-types.js';
import { RequestStream } from './request-stream.js';
import type { CallResult, EngineCall, FromWorker, PrefixCacheInfo, StepTokensOut, ToWorker } from './worker-protocol.js';

/** An engine call that failed in the worker; adapter refusals arrive as AdapterError. */
export class EngineError extends Error {
  override readonly name = 'EngineError';
}

/**
 * The engine as the HTTP layer sees it. The model, KV cache and adapter tiers live in a worker thread (a model run
 * blocks its thread); this side owns tokenization, detokenization and stop strings, and routes the worker's per-step
 * messages to each request's event stream.
 */
export class Engine {
  readonly tokenizer: Tokenizer;
  readonly #worker: Worker;
  readonly #streams = new Map<string, RequestStream>();
  readonly #calls = new Map<number, { resolve: (v: CallResult) => void; reject: (e: Error) => void }>();
  readonly #ready: Promise<void>;
  #resolveReady: () => void = () => undefined;
  #model: Omit<Extract<FromWorker, { type: 'ready' }>, 'type'> | null = null;
  readonly #adapterLoadListeners: ((tier: 'host' | 'slot', seconds: number) => void)[] = [];
  readonly #stepListeners: ((tokens: StepTokensOut) => void)[] = [];
  readonly #logListeners: ((line: Extract<FromWorker, { type: 'log' }>) => void)[] = [];
  readonly #failureListeners: ((reason: string) => void)[] = [];
  #nextCall = 0;
  #dead: string | null = null;
  /** Set by `shutdown`: a worker that exits afterwards is not a failure. */
  #shuttingDown = false;
  readonly #maxWaiting: number;

  private constructor(worker: Worker, tokenizer: Tokenizer, maxWaiting: number) {
    this.#worker = worker;
    this.tokenizer = tokenizer;
    this.#maxWaiting = maxWaiting;
    this.#ready = new Promise((resolve) => { this.#resolveReady = resolve; });
    worker.on('message', (message: FromWorker) => this.#onMessage(message));
    worker.on('error', (err) => this.#die(`engine worker failed: ${err.message}`));
    worker.on('exit', (code) => this.#die(`engine worker exited (code ${code})`));
  }

  /** Starts the worker and waits until the model is loaded; rejects with the worker's reason when it cannot start. */
  static async start(options: EngineOptions): Promise<Engine> {
    if (!existsSync(join(options.modelDir, 'tokenizer.json'))) throw new Error(`${options.modelDir}: no tokenizer.json`);
    const engine = new Engine(spawnWorker(new URL('./engine-worker.js', import.meta.url), options), Tokenizer.fromDir(options.modelDir), options.maxWaiting);
    await engine.#ready;
    if (engine.#dead) {
      await engine.#worker.terminate();
      throw new Error(engine.#dead);
    }
    return engine;
  }

  get config(): ModelConfig {
    return (this.#model as { config: ModelConfig }).config;
  }

  /** Most requests that may wait to start (--max-waiting): one HTTP request can never need more. */
  get maxWaiting(): number {
    return this.#maxWaiting;
  }

  /** Why the engine stopped serving (its worker died or failed); null while it serves, and after a clean shutdown. */
  get failure(): string | null {
    return this.#shuttingDown ? null : this.#dead;
  }

  /** Called once if the engine stops serving other than by `shutdown` (the worker died or failed). */
  onFailure(listener: (reason: string) => void): void {
    this.#failureListeners.push(listener);
  }

  /** Why the cached model build was rejected and built again at start (corrupt, truncated, incomplete); null when it was sound or new. */
  get rebuildReason(): string | null {
    return this.#model?.rebuildReason ?? null;
  }

  /** The runtime serving the model: the project's native binding or onnxruntime-node. */
  get runtime(): 'native' | 'stock' {
    return this.#model?.runtime ?? 'stock';
  }

  /** Why the native runtime is not serving though it was preferred; null when it serves or was not asked for. */
  get runtimeNote(): string | null {
    return this.#model?.runtimeNote ?? null;
  }

  /** Tokens per sequence, prompt and output together. */
  get contextLength(): number {
    return (this.#model as { contextLength: number }).contextLength;
  }

  /**
   * Events for one request: tokens, then exactly one `done` or `error`. Stopping the iteration early (or `abort`)
   * aborts the request and frees everything it holds in the engine.
   */
  submit(request: GenerationRequest): AsyncIterable<GenerationEvent> {
    const stream = new RequestStream(request, this.tokenizer, () => this.#post({ type: 'abort', id: request.id }));
    if (this.#dead) stream.onError('engine_error', this.#dead);
    else if (this.#streams.has(request.id)) stream.onError('invalid_request', `request id ${request.id} is already in use`);
    else {
      this.#streams.set(request.id, stream);
      this.#post({ type: 'submit', request });
    }
    return stream;
  }

  abort(id: string): void {
    this.#streams.get(id)?.abort();
    this.#streams.delete(id);
  }

  readonly adapters = {
    register: async (name: string, path: string): Promise<AdapterInfo> => (await this.#call({ op: 'adapter.register', name, path })) as AdapterInfo,
    unregister: async (name: string): Promise<void> => {
      await this.#call({ op: 'adapter.unregister', name });
    },
    pin: async (name: string, pinned: boolean): Promise<AdapterInfo> => (await this.#call({ op: 'adapter.pin', name, pinned })) as AdapterInfo,
    /** Starts merging the adapter into a session of its own (answers while it builds: `merged: 'building'`), or unmerges it. */
    merge: async (name: string, merged: boolean): Promise<AdapterInfo> => (await this.#call({ op: 'adapter.merge', name, merged })) as AdapterInfo,
    list: async (): Promise<AdapterInfo[]> => (await this.#call({ op: 'adapter.list' })) as AdapterInfo[],
  };

  readonly prefixCache = {
    /** The prefix cache's blocks, bytes and hit counts; null when it is off. */
    stats: async (): Promise<PrefixCacheInfo | null> => (await this.#call({ op: 'prefix.stats' })) as PrefixCacheInfo | null,
    /** Drops blocks, pinned ones too: all (`adapter` undefined), the base model's (null), or one adapter's (by name). */
    clear: async (adapter?: string | null): Promise<number> => ((await this.#call({ op: 'prefix.clear', adapter })) as { droppedBlocks: number }).droppedBlocks,
  };

  /** Called with each line the engine worker has for the server's log. */
  onLog(listener: (line: Extract<FromWorker, { type: 'log' }>) => void): void {
    this.#logListeners.push(listener);
  }

  /** Called after each engine step with the tokens it computed. */
  onStep(listener: (tokens: StepTokensOut) => void): void {
    this.#stepListeners.push(listener);
  }

  /** Called for each adapter moved into a tier (host: read from disk; slot: written into the graph's slots). */
  onAdapterLoad(listener: (tier: 'host' | 'slot', seconds: number) => void): void {
    this.#adapterLoadListeners.push(listener);
  }

  async stats(): Promise<EngineStats> {
    return (await this.#call({ op: 'stats' })) as EngineStats;
  }

  /** The engine's bookkeeping rules the worker's state breaks right now (rows, slots, references); empty when sound. */
  async invariantViolations(): Promise<string[]> {
    return (await this.#call({ op: 'check' })) as string[];
  }

  /** Stops accepting requests, lets in-flight ones finish for up to `deadlineMs` (then ends them), and stops the worker. */
  async shutdown(deadlineMs: number): Promise<void> {
    this.#shuttingDown = true;
    if (!this.#dead) {
      await this.#call({ op: 'drain', deadlineMs });
      const exited = new Promise((resolve) => this.#worker.once('exit', resolve));
      this.#post({ type: 'close' });
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
    }
    this.#dead ??= 'the engine is shut down';
    await this.#worker.terminate();
  }

  #onMessage(message: FromWorker): void {
    switch (message.type) {
      case 'step':
        for (const t of message.tokens) this.#streams.get(t.id)?.onToken(t);
        for (const d of message.done) {
          this.#streams.get(d.id)?.onDone(d);
          this.#streams.delete(d.id);
        }
        for (const e of message.errors) {
          this.#streams.get(e.id)?.onError(e.code, e.message);
          this.#streams.delete(e.id);
        }
        for (const [id, stream] of this.#streams) if (stream.ended) this.#streams.delete(id);
        for (const load of message.adapterLoads) for (const listener of this.#adapterLoadListeners) listener(load.tier, load.ms / 1000);
        for (const step of message.steps) for (const listener of this.#stepListeners) listener(step);
        return;
      case 'reply': {
        const call = this.#calls.get(message.callId);
        this.#calls.delete(message.callId);
        if (!call) return;
        if (message.ok) call.resolve(message.value);
        else if (message.code.startsWith('adapter_')) call.reject(new AdapterError(message.code as AdapterErrorCode, message.path ?? '', message.message));
        else call.reject(new EngineError(message.message));
        return;
      }
      case 'fatal':
        this.#die(message.message);
        return;
      case 'log':
        for (const listener of this.#logListeners) listener(message);
        return;
      case 'ready':
        this.#model = message;
        this.#resolveReady();
        return;
    }
  }

  #call(call: EngineCall): Promise<CallResult> {
    if (this.#dead) return Promise.reject(new EngineError(this.#dead));
    const callId = this.#nextCall++;
    return new Promise((resolve, reject) => {
      this.#calls.set(callId, { resolve, reject });
      this.#post({ type: 'call', callId, call });
    });
  }

  #post(message: ToWorker): void {
    if (!this.#dead) this.#worker.postMessage(message);
  }

  /** The worker is gone: every open request and call fails, and later ones fail at once. */
  #die(reason: string): void {
    if (this.#dead) return;
    this.#dead = reason;
    for (const stream of this.#streams.values()) stream.onError('engine_error', reason);
    this.#streams.clear();
    for (const call of this.#calls.values()) call.reject(new EngineError(reason));
    this.#calls.clear();
    this.#resolveReady();
    if (!this.#shuttingDown) for (const listener of this.#failureListeners) listener(reason);
  }
}
