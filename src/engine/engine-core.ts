import { randomInt } from 'node:crypto';
import { preferredKernel } from '../../kernels/batched-lora.js';
import type { AdapterManager } from '../adapters/adapter-manager.js';
import { AdapterError } from '../adapters/adapter-error.js';
import type { Decoder, LoraBatch } from '../model/decoder.js';
import { KvCache } from '../model/kv-cache.js';
import type { EngineOptions } from './engine-options.js';
import type { AdapterInfo, EngineErrorCode, EngineStats, FinishReason, GenerationRequest } from './engine-types.js';
import { Sampler } from './sampler.js';
import { validateSamplingParams } from './sampling-params.js';
import { Sequence } from './sequence.js';
import type { CallResult, DoneOut, EngineCall, FromWorker, TokenOut } from './worker-protocol.js';

type Post = (message: FromWorker) => void;

/**
 * The engine loop inside the worker: admit → schedule → run → sample → emit → free, one step at a time.
 *
 * KV rows are kept dense: rows 0..d-1 hold decoding sequences, and row d at most one sequence in prefill, so the
 * decode batch is always one contiguous range of rows that the graph reads in place. When a sequence finishes, the
 * last decoding row moves into its place (and the prefill row down by one): a copy of only the computed positions.
 */
export class EngineCore {
  readonly #decoder: Decoder;
  readonly #adapters: AdapterManager | null;
  readonly #options: EngineOptions;
  readonly #post: Post;
  readonly #kv: KvCache;
  readonly #sampler: Sampler;
  readonly #eos: ReadonlySet<number>;
  readonly #waiting: Sequence[] = [];
  readonly #running: Sequence[] = [];
  #tokensOut: TokenOut[] = [];
  #doneOut: DoneOut[] = [];
  #errorsOut: { id: string; code: EngineErrorCode; message: string }[] = [];
  #wake: (() => void) | null = null;
  #inStep = false;
  #pendingAborts: string[] = [];
  #accepting = true;
  #closed = false;
  #lastBatchSize = 0;
  #steps = 0;
  readonly #kernelRuns = { gather: 0, dense: 0 };
  #generated = 0;
  #prompted = 0;

  constructor(decoder: Decoder, adapters: AdapterManager | null, options: EngineOptions, post: Post) {
    this.#decoder = decoder;
    this.#adapters = adapters;
    this.#options = options;
    this.#post = post;
    this.#kv = new KvCache(decoder.config, options.maxBatch, options.contextLength);
    this.#sampler = new Sampler(decoder.config.vocabSize);
    this.#eos = new Set(decoder.config.eosTokenIds);
  }

  /** Wakes an idle loop (new work, or an adapter finished loading). */
  wake(): void {
    this.#wake?.();
    this.#wake = null;
  }

  submit(request: GenerationRequest): void {
    const refuse = (code: EngineErrorCode, message: string) => {
      this.#errorsOut.push({ id: request.id, code, message });
      this.#flush();
    };
    if (!this.#accepting) return refuse('shutting_down', 'the server is shutting down');
    const problem = this.#validate(request);
    if (problem) return refuse('invalid_request', problem);
    if (this.#waiting.length >= this.#options.maxWaiting) return refuse('queue_full', `the waiting queue is full (${this.#options.maxWaiting} requests)`);
    let adapter = null;
    if (request.adapter !== null) {
      adapter = this.#adapters?.bind(request.adapter);
      if (!adapter) return refuse('adapter_not_found', `no adapter named '${request.adapter}' is registered`);
    }
    let seq;
    try {
      seq = new Sequence(request, adapter, randomInt(2 ** 47));
    } catch (err) {
      if (adapter) this.#adapters?.unbind(adapter.digest);
      return refuse('invalid_request', err instanceof Error ? err.message : String(err));
    }
    this.#waiting.push(seq);
    this.#prompted += request.promptIds.length;
    this.wake();
  }

  /** Frees everything the request holds; the main thread reports the abort to its client. */
  abort(id: string): void {
    // A step in flight still writes the rows it was given: apply aborts between steps.
    if (this.#inStep) {
      this.#pendingAborts.push(id);
      return;
    }
    const waiting = this.#waiting.findIndex((s) => s.id === id);
    if (waiting >= 0) {
      this.#release(this.#waiting.splice(waiting, 1)[0]);
      return;
    }
    const running = this.#running.find((s) => s.id === id);
    if (running) this.#free(running);
  }

  async call(call: EngineCall): Promise<CallResult> {
    switch (call.op) {
      case 'adapter.register': return this.#info((await this.#requireAdapters().register(call.name, call.path)).name);
      case 'adapter.unregister':
        await this.#requireAdapters().unregister(call.name);
        return null;
      case 'adapter.pin': return this.#info(this.#requireAdapters().setPinned(call.name, call.pinned).name);
      case 'adapter.list': return (this.#adapters?.entries() ?? []).map((e) => this.#info(e.name));
      case 'stats': return this.stats();
      case 'drain': return this.#drain(call.deadlineMs);
    }
  }

  stats(): EngineStats {
    const adapterNames = (seqs: Sequence[]) => [...new Set(seqs.flatMap((s) => (s.adapter ? [s.adapter.name] : [])))];
    return {
      running: this.#running.length,
      waiting: this.#waiting.length,
      kvUsage: this.#running.length / this.#options.maxBatch,
      batchSize: this.#lastBatchSize,
      maxLoras: this.#options.maxLoras,
      runningAdapters: adapterNames(this.#running),
      waitingAdapters: adapterNames(this.#waiting),
      adapterLoads: { host: this.#adapters?.hostLoads ?? 0, slot: this.#adapters?.slots.loads ?? 0 },
      adapterEvictions: { host: this.#adapters?.hostEvictions ?? 0, slot: this.#adapters?.slots.evictions ?? 0 },
      loraKernelRuns: { ...this.#kernelRuns },
      stepsTotal: this.#steps,
      tokensGenerated: this.#generated,
      promptTokens: this.#prompted,
    };
  }

  async run(): Promise<void> {
    while (!this.#closed) {
      if (this.#running.length === 0 && !this.#admit()) {
        await new Promise<void>((resolve) => { this.#wake = resolve; });
        continue;
      }
      await this.#step();
      // Let queued messages (submits, aborts, calls) in between steps.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  close(): void {
    this.#closed = true;
    this.wake();
  }

  async #step(): Promise<void> {
    this.#admit();
    const last = this.#running.at(-1);
    const prefilling = last?.prefilling ? last : null;
    const decoding = prefilling ? this.#running.slice(0, -1) : [...this.#running];
    this.#inStep = true;
    try {
      if (decoding.length > 0) await this.#decode(decoding);
      if (prefilling) await this.#prefill(prefilling);
    } finally {
      this.#inStep = false;
    }
    for (const id of this.#pendingAborts.splice(0)) this.abort(id);
    this.#lastBatchSize = decoding.length + (prefilling ? 1 : 0);
    this.#steps++;
    this.#flush();
  }

  /** Moves the first admissible waiting sequence into the prefill row; true when there is work to do. */
  #admit(): boolean {
    if (this.#running.at(-1)?.prefilling || this.#running.length >= this.#options.maxBatch) return this.#running.length > 0;
    for (let i = 0; i < this.#waiting.length; i++) {
      const seq = this.#waiting[i];
      if (seq.adapter && this.#adapters) {
        const got = this.#adapters.acquireSlot(seq.adapter);
        if ('wait' in got) continue;
        if ('error' in got) {
          this.#waiting.splice(i--, 1);
          this.#fail(seq, 'adapter_invalid', got.error.message);
          continue;
        }
        seq.slot = got.slot;
      }
      this.#waiting.splice(i, 1);
      seq.admittedAt = performance.now();
      seq.row = this.#running.length;
      this.#adapters?.slots.bindRow(seq.row, seq.slot);
      this.#running.push(seq);
      return true;
    }
    return this.#running.length > 0;
  }

  async #prefill(seq: Sequence): Promise<void> {
    const chunk = seq.tokens.slice(seq.computed, seq.computed + this.#options.prefillChunk);
    const logits = await this.#forward([seq], [chunk]);
    if (!logits) return;
    seq.computed += chunk.length;
    if (!seq.prefilling) this.#sample(seq, logits, 0);
  }

  async #decode(seqs: Sequence[]): Promise<void> {
    const logits = await this.#forward(seqs, seqs.map((s) => [s.tokens[s.tokens.length - 1]]));
    if (!logits) return;
    // Count every row's new position before any finish moves rows: a move copies only computed positions.
    for (const seq of seqs) seq.computed += 1;
    seqs.forEach((seq, i) => this.#sample(seq, logits, i));
  }

  /** One graph run over the sequences' contiguous rows; on failure every sequence in it gets an error and is freed. */
  async #forward(seqs: Sequence[], tokens: number[][]): Promise<Float32Array | null> {
    const lora = this.#loraBatch(seqs);
    try {
      return await this.#decoder.forward({ firstRow: seqs[0].row, tokens, pastLengths: seqs.map((s) => s.computed) }, this.#kv, lora);
    } catch (err) {
      const message = `model run failed: ${err instanceof Error ? err.message : String(err)}`;
      for (const seq of seqs) this.#fail(seq, 'engine_error', message);
      return null;
    }
  }

  #loraBatch(seqs: Sequence[]): LoraBatch | undefined {
    if (!this.#adapters || seqs.every((s) => s.slot === 0)) return undefined;
    const slots = seqs.map((s) => s.slot);
    const forced = this.#options.loraKernel;
    const kernel = forced && forced !== 'auto' ? forced : preferredKernel(seqs.length, Math.max(...slots) + 1);
    this.#kernelRuns[kernel]++;
    return this.#adapters.slots.batch(seqs[0].row, slots, kernel);
  }

  #sample(seq: Sequence, logits: Float32Array, row: number): void {
    const V = this.#decoder.config.vocabSize;
    const params = seq.request.sampling;
    let result;
    try {
      result = this.#sampler.sample(logits.subarray(row * V, (row + 1) * V), params, seq.sampling);
    } catch (err) {
      // A sampling failure is this request's, not the batch's.
      this.#fail(seq, 'engine_error', `sampling failed: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    const token = result.tokenId;
    seq.sampling.append(token);
    seq.tokens.push(token);
    this.#generated++;
    const stopToken = (!params.ignoreEos && this.#eos.has(token)) || params.stopTokenIds.includes(token);
    this.#tokensOut.push({ id: seq.id, tokenId: token, logprob: result.logprob, topLogprobs: result.topLogprobs, stopToken });
    if (stopToken) this.#finish(seq, 'stop', token);
    else if (seq.outputLength >= params.maxTokens || seq.tokens.length > this.#options.contextLength) this.#finish(seq, 'length', null);
  }

  #finish(seq: Sequence, reason: FinishReason, stopReason: number | null): void {
    this.#doneOut.push({
      id: seq.id,
      finishReason: reason,
      stopReason,
      usage: { promptTokens: seq.promptLength, completionTokens: seq.outputLength, cachedTokens: 0 },
      queueMs: seq.admittedAt - seq.arrivedAt,
    });
    this.#free(seq);
  }

  #fail(seq: Sequence, code: EngineErrorCode, message: string): void {
    this.#errorsOut.push({ id: seq.id, code, message });
    if (seq.row >= 0) this.#free(seq);
    else this.#release(seq);
  }

  /** Gives up the sequence's KV row, keeping the rows dense, then its adapter references. */
  #free(seq: Sequence): void {
    const rows = this.#running;
    const last = rows.at(-1);
    const prefilling = last?.prefilling && last !== seq ? rows.pop() : undefined;
    const moved = rows.pop() as Sequence;
    if (moved !== seq) {
      this.#moveRow(moved, seq.row);
      rows[seq.row] = moved;
    }
    if (prefilling) {
      this.#moveRow(prefilling, rows.length);
      rows.push(prefilling);
    }
    seq.row = -1;
    this.#release(seq);
  }

  /** Moves a running sequence's KV (its computed positions) and its adapter copy to another row. */
  #moveRow(seq: Sequence, to: number): void {
    this.#kv.copyRow(seq.row, to, seq.computed);
    this.#adapters?.slots.moveRow(seq.row, to);
    seq.row = to;
  }

  #release(seq: Sequence): void {
    if (seq.slot > 0) this.#adapters?.slots.release(seq.slot);
    seq.slot = 0;
    if (seq.adapter) this.#adapters?.unbind(seq.adapter.digest);
  }

  #flush(): void {
    const adapterLoads = this.#adapters?.takeLoadTimes() ?? [];
    if (this.#tokensOut.length === 0 && this.#doneOut.length === 0 && this.#errorsOut.length === 0 && adapterLoads.length === 0) return;
    this.#post({ type: 'step', tokens: this.#tokensOut, done: this.#doneOut, errors: this.#errorsOut, adapterLoads });
    this.#tokensOut = [];
    this.#doneOut = [];
    this.#errorsOut = [];
  }

  #validate(request: GenerationRequest): string | null {
    const { vocabSize } = this.#decoder.config;
    const n = request.promptIds.length;
    if (n === 0) return 'the prompt is empty';
    if (n >= this.#options.contextLength) {
      return `the prompt has ${n} tokens but the context length is ${this.#options.contextLength}: at most ${this.#options.contextLength - 1} prompt tokens fit`;
    }
    const bad = request.promptIds.find((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
    if (bad !== undefined) return `prompt token id ${bad} is outside the vocabulary [0, ${vocabSize})`;
    return validateSamplingParams(request.sampling, vocabSize);
  }

  #requireAdapters(): AdapterManager {
    if (!this.#adapters) throw new AdapterError('adapter_unsupported', 'adapters', 'this server was started with --max-loras 0: adapters are disabled');
    return this.#adapters;
  }

  #info(name: string): AdapterInfo {
    const adapters = this.#requireAdapters();
    const e = adapters.get(name);
    if (!e) throw new AdapterError('adapter_not_found', name, `no adapter named '${name}' is registered`);
    return { name: e.name, path: e.path, digest: e.digest, rank: e.rank, pinned: e.pinned, tier: adapters.tier(e.digest), activeRequests: adapters.inUse(e.digest) };
  }

  async #drain(deadlineMs: number): Promise<null> {
    this.#accepting = false;
    const deadline = performance.now() + deadlineMs;
    while ((this.#running.length > 0 || this.#waiting.length > 0) && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const seq of [...this.#waiting, ...this.#running]) this.#fail(seq, 'shutting_down', 'the server shut down before the request finished');
    this.#waiting.length = 0;
    this.#flush();
    return null;
  }
}
