// Runs in the engine worker.
import type { AdapterManager } from '../adapters/adapter-manager.js';
import type { ModelRunner } from '../model/decoder.js';
import { KvCache } from '../model/kv-cache.js';
import type { EngineOptions } from './engine-options.js';
import { adapterCall, adapterCallHooks } from './adapter-calls.js';
import type { EngineStats, GenerationRequest } from './engine-types.js';
import { EngineCounters, engineStats } from './engine-stats.js';
import { checkEngineInvariants } from './invariants.js';
import { KvRows, rowMoves } from './kv-rows.js';
import { ModelRuns } from './model-runs.js';
import type { MergedSession, MergedSessions } from './merged-sessions.js';
import { prefixCall } from './prefix-calls.js';
import { PrefixReuse } from './prefix-reuse.js';
import { acceptRequest } from './request-validation.js';
import { admissionPass, prefillChunks } from './scheduler.js';
import { Sequence } from './sequence.js';
import { forkSource, keepForSiblings, siblingComputing } from './sibling-forks.js';
import type { Outcome } from './step-outbox.js';
import { StepOutbox } from './step-outbox.js';
import type { CallResult, EngineCall, FromWorker } from './worker-protocol.js';

/** A request blocked on its adapter's slot this long holds back later requests that need a slot (see AdmissionPolicy). */
const ADAPTER_AGING_MS = 1000;

/** What an engine core runs on and reports to. */
export interface EngineParts {
  /** The base session. */
  decoder: ModelRunner;
  adapters: AdapterManager | null;
  /** Sessions with an adapter merged in; null when merging is off. */
  merged: MergedSessions | null;
  options: EngineOptions;
  /** Identity of the base model build, which keys the prefix cache. */
  modelDigest: string;
  post: (message: FromWorker) => void;
}

/**
 * The engine loop inside the worker: admit → run → sample → emit → release, one step at a time, over the running
 * sequences in their dense KV rows (KvRows).
 *
 * A sequence ends (done, error, abort) at any time, but its row, slot and adapter reference are released only by
 * `#releaseEnded`, between steps: onnxruntime-node yields to the event loop once before each run, so messages arrive
 * while a step's feeds already point into the rows.
 */
export class EngineCore {
  readonly #decoder: ModelRunner;
  readonly #merged: MergedSessions | null;
  readonly #adapters: AdapterManager | null;
  readonly #options: EngineOptions;
  readonly #outbox: StepOutbox;
  readonly #kv: KvCache;
  readonly #prefix: PrefixReuse;
  readonly #runs: ModelRuns;
  readonly #waiting: Sequence[] = [];
  readonly #running: KvRows;
  /** Ended, not yet released. */
  readonly #ended: Sequence[] = [];
  #wake: (() => void) | null = null;
  #inStep = false;
  #accepting = true;
  #closed = false;
  readonly #counters = new EngineCounters();

  constructor({ decoder, adapters, merged, options, modelDigest, post }: EngineParts) {
    this.#decoder = decoder;
    this.#adapters = adapters;
    this.#merged = merged;
    this.#options = options;
    this.#outbox = new StepOutbox(post);
    this.#kv = new KvCache(decoder.config, options.maxBatch, options.contextLength);
    this.#running = new KvRows(rowMoves(this.#kv, adapters?.slots ?? null), (seq) => seq.session?.adapter ?? '');
    // An admitted sequence keeps the session it started on; a waiting one would start on its adapter's merged session.
    const sessionOf = (seq: Sequence) => (seq.admittedAt > 0 ? seq.session : this.#mergedSessionOf(seq));
    this.#prefix = new PrefixReuse(options.prefixCacheBytes ?? 0, this.#kv, (seq) => sessionOf(seq)?.buildDigest ?? modelDigest);
    this.#runs = new ModelRuns({ decoder, kv: this.#kv, adapters, counters: this.#counters, outbox: this.#outbox, contextLength: options.contextLength });
  }

  /** Wakes an idle loop (new work, or an adapter finished loading). */
  wake(): void {
    this.#wake?.();
    this.#wake = null;
  }

  submit(request: GenerationRequest): void {
    const seq = acceptRequest(request, {
      accepting: this.#accepting, vocabSize: this.#decoder.config.vocabSize, contextLength: this.#options.contextLength,
      waiting: this.#waiting.length, maxWaiting: this.#options.maxWaiting, adapters: this.#adapters,
    });
    if (!(seq instanceof Sequence)) {
      this.#outbox.error(request.id, seq.code, seq.message);
      this.#flush();
      return;
    }
    this.#waiting.push(seq);
    this.#counters.prompted += request.promptIds.length;
    this.wake();
  }

  /** Ends the request (the main thread already told its client) and frees what it holds, now or after the step in flight. */
  abort(id: string): void {
    const seq = this.#waiting.find((s) => s.id === id) ?? this.#running.all.find((s) => s.id === id);
    if (!seq) return;
    this.#end(seq, null);
    if (!this.#inStep) this.#releaseEnded();
  }

  async call(call: EngineCall): Promise<CallResult> {
    switch (call.op) {
      case 'adapter.register':
      case 'adapter.unregister':
      case 'adapter.pin':
      case 'adapter.merge':
      case 'adapter.list': return adapterCall(this.#adapters, call, adapterCallHooks(this.#prefix.cache, this.#merged));
      case 'stats': return this.stats();
      case 'prefix.stats':
      case 'prefix.clear': return prefixCall(this.#prefix.cache, this.#adapters, call);
      case 'check': return this.#inStep ? [] : this.invariantViolations();
      case 'drain': return this.#drain(call.deadlineMs);
    }
  }

  stats(): EngineStats {
    const { maxBatch, contextLength, maxLoras } = this.#options;
    return engineStats({
      counters: this.#counters, running: this.#running.all, waiting: this.#waiting, maxBatch, contextLength, maxLoras,
      adapters: this.#adapters, prefixCache: this.#prefix.cache, merged: this.#merged,
    });
  }

  /** The engine's bookkeeping rules that the current state breaks (see checkEngineInvariants); call between steps. */
  invariantViolations(): string[] {
    return checkEngineInvariants({
      running: this.#running.all,
      waiting: this.#waiting,
      ended: this.#ended,
      contextLength: this.#options.contextLength,
      slotReferences: this.#adapters?.slots.references() ?? null,
      adapterBindings: this.#adapters?.bindings() ?? null,
      prefixCache: this.#prefix.cache,
    });
  }

  async run(): Promise<void> {
    while (!this.#closed) {
      this.#admit();
      if (this.#running.length === 0) {
        // Admission may have failed requests (an adapter that did not load): tell them before sleeping.
        this.#flush();
        if (this.#options.checkInvariants) this.#assertInvariants();
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

  get #maxBatchedTokens(): number {
    return this.#options.maxBatchedTokens ?? this.#options.prefillChunk + this.#options.maxBatch;
  }

  /**
   * One decode run over each session's decoding rows (the base session's, then each merged one's), then each prefill
   * chunk the token budget allows, each in a run of its own.
   */
  async #step(): Promise<void> {
    const decoding = this.#running.decoding();
    const chunks = prefillChunks(this.#running.prefilling(), this.#maxBatchedTokens - decoding.length, this.#options.prefillChunk);
    let prefilled = 0;
    this.#inStep = true;
    try {
      for (const rows of this.#running.decodingBySession()) await this.#decode(rows);
      for (const [seq, chunk] of chunks) {
        if (seq.ended) continue;
        await this.#prefill(seq, chunk);
        prefilled += chunk;
      }
    } finally {
      this.#inStep = false;
    }
    this.#running.arrange();
    this.#releaseEnded();
    const counters = this.#counters;
    counters.lastBatchSize = decoding.length + chunks.size;
    counters.steps++;
    counters.prefillComputed += prefilled;
    counters.decodeComputed += decoding.length;
    this.#outbox.step({ prefill: prefilled, decode: decoding.length });
    this.#flush();
  }

  /**
   * Starts waiting sequences while a row is free and the step's token budget has room (what running prefills and
   * decodes take comes first), restoring what the prefix cache holds of their prompts; fails those that cannot start.
   */
  #admit(): void {
    const decoding = this.#running.decodingCount;
    const planned = [...prefillChunks(this.#running.prefilling(), this.#maxBatchedTokens - decoding, this.#options.prefillChunk).values()];
    const room = { rows: this.#options.maxBatch - this.#running.length, tokens: this.#maxBatchedTokens - decoding - planned.reduce((a, b) => a + b, 0) };
    const hooks = {
      acquire: (seq: Sequence) => (this.#adapters && seq.adapter && !this.#mergedSessionOf(seq) ? this.#adapters.acquireSlot(seq.adapter, seq.arrivedAt) : { slot: 0 }),
      cost: (seq: Sequence) => (forkSource(seq, this.#running.all) ? 0 : Math.min(this.#prefix.uncached(seq), this.#options.prefillChunk)),
      ready: (seq: Sequence) => forkSource(seq, this.#running.all) !== undefined || !siblingComputing(seq, this.#waiting, this.#running.all),
    };
    const policy = { agingMs: ADAPTER_AGING_MS, adapterWaitTimeoutMs: this.#options.adapterWaitTimeoutMs };
    for (const decision of admissionPass(this.#waiting, room, hooks, performance.now(), policy)) {
      const { seq } = decision;
      if (decision.type === 'fail') {
        this.#end(seq, { code: decision.code, message: decision.message });
        continue;
      }
      this.#waiting.splice(this.#waiting.indexOf(seq), 1);
      seq.slot = decision.slot;
      seq.session = this.#mergedSessionOf(seq);
      if (seq.session) seq.session.users++;
      seq.admittedAt = performance.now();
      const source = forkSource(seq, this.#running.all);
      const place = () => {
        this.#running.add(seq);
        this.#adapters?.slots.bindRow(seq.row, seq.slot);
      };
      if (source?.promptLogits) {
        // Its first token comes from the sibling's prompt logits: exactly what computing the prompt alone gives.
        this.#prefix.fork(seq, source, place);
        this.#sample(seq, source.promptLogits, 0);
      } else {
        this.#prefix.restore(seq, place);
      }
    }
    this.#releaseEnded();
  }

  /** The merged session that serves the sequence's adapter now, if any. */
  #mergedSessionOf(seq: Sequence): MergedSession | null {
    return seq.adapter ? (this.#merged?.sessionFor(seq.adapter.digest) ?? null) : null;
  }

  async #prefill(seq: Sequence, length: number): Promise<void> {
    const chunk = seq.tokens.slice(seq.computed, seq.computed + length);
    const logits = await this.#forward([seq], [chunk]);
    if (!logits) return;
    seq.computed += chunk.length;
    this.#prefix.store(seq);
    // A chunk that stops short of the last prompt token leaves the sequence to a later run: nothing to sample yet.
    if (!seq.allComputed) return;
    keepForSiblings(seq, this.#waiting, logits, 0, this.#decoder.config.vocabSize);
    this.#sample(seq, logits, 0);
  }

  async #decode(seqs: Sequence[]): Promise<void> {
    const logits = await this.#forward(seqs, seqs.map((s) => [s.tokens[s.tokens.length - 1]]));
    if (!logits) return;
    seqs.forEach((seq, i) => {
      seq.computed += 1;
      // The last prompt token of a restored prompt is computed here: a warm request's report is due now.
      if (seq.computed === seq.promptLength) {
        this.#prefix.store(seq);
        keepForSiblings(seq, this.#waiting, logits, i, this.#decoder.config.vocabSize);
      }
      this.#sample(seq, logits, i);
    });
  }

  /** One model run (see ModelRuns.forward); on failure every sequence in it ends with the error. */
  async #forward(seqs: Sequence[], tokens: number[][]): Promise<Float32Array | null> {
    const out = await this.#runs.forward(seqs, tokens);
    if (out instanceof Float32Array) return out;
    for (const seq of seqs) this.#end(seq, { code: 'engine_error', message: out.error });
    return null;
  }

  #sample(seq: Sequence, logits: Float32Array, row: number): void {
    // Aborted while its run was in flight: its client is gone.
    if (seq.ended) return;
    const outcome = this.#runs.sample(seq, logits, row);
    if (outcome) this.#end(seq, outcome);
  }

  /**
   * Decides the sequence's outcome and reports it (`null`: aborted, already reported by the main thread); what it holds
   * is released by `#releaseEnded`.
   */
  #end(seq: Sequence, outcome: Outcome | null): void {
    if (seq.ended) return;
    seq.ended = true;
    this.#ended.push(seq);
    if (outcome !== null) this.#outbox.outcome(seq, outcome);
  }

  /**
   * The one path that frees rows, slots and adapter references, only between steps. Rows are freed from the highest
   * down, so a row about to be freed is never copied into another.
   */
  #releaseEnded(): void {
    if (this.#inStep) throw new Error('engine: resources released while a step is in flight');
    const ended = this.#ended.splice(0).sort((x, y) => y.row - x.row);
    for (const seq of ended) {
      if (seq.row >= 0) this.#running.remove(seq);
      else this.#waiting.splice(this.#waiting.indexOf(seq), 1);
      if (seq.slot > 0) this.#adapters?.slots.release(seq.slot);
      seq.slot = 0;
      if (seq.session) this.#merged?.release(seq.session);
      seq.session = null;
      if (seq.adapter) this.#adapters?.unbind(seq.adapter.digest);
    }
  }

  #flush(): void {
    this.#outbox.flush(this.#adapters?.takeLoadTimes() ?? []);
  }

  #assertInvariants(): void {
    const problems = this.invariantViolations();
    if (problems.length > 0) throw new Error(`engine invariants broken: ${problems.join('; ')}`);
  }

  /** Stops accepting; after the deadline every request still in the engine ends with `shutting_down`, released between steps. */
  async #drain(deadlineMs: number): Promise<null> {
    this.#accepting = false;
    const deadline = performance.now() + deadlineMs;
    const pause = () => new Promise((resolve) => setTimeout(resolve, 20));
    while ((this.#running.length > 0 || this.#waiting.length > 0) && performance.now() < deadline) await pause();
    for (const seq of [...this.#waiting, ...this.#running.all]) this.#end(seq, { code: 'shutting_down', message: 'the server shut down before the request finished' });
    if (!this.#inStep) this.#releaseEnded();
    // A step in flight releases them when its runs finish.
    while (this.#running.length > 0 || this.#waiting.length > 0) await pause();
    this.#flush();
    return null;
  }
}
