// Runs in the engine worker: one model run over a session's rows, and sampling a sequence's next token from it.
import type { AdapterManager } from '../adapters/adapter-manager.js';
import type { ModelRunner } from '../model/decoder.js';
import type { KvCache } from '../model/kv-cache.js';
import type { EngineCounters } from './engine-stats.js';
import { Sampler } from './sampler.js';
import type { Sequence } from './sequence.js';
import type { Outcome, StepOutbox } from './step-outbox.js';
import { stopAfterToken } from './stop-criteria.js';

export interface ModelRunsParts {
  /** The base session. */
  decoder: ModelRunner;
  kv: KvCache;
  adapters: AdapterManager | null;
  counters: EngineCounters;
  outbox: StepOutbox;
  contextLength: number;
}

/** Runs the model and samples; what a failure or a stop means for a sequence is returned, for the engine to end it. */
export class ModelRuns {
  readonly #p: ModelRunsParts;
  readonly #sampler: Sampler;
  readonly #eos: ReadonlySet<number>;

  constructor(parts: ModelRunsParts) {
    this.#p = parts;
    this.#sampler = new Sampler(parts.decoder.config.vocabSize);
    this.#eos = new Set(parts.decoder.config.eosTokenIds);
  }

  /**
   * One graph run over the sequences' contiguous rows, all on one session (a merged one, or the base with each row's
   * LoRA slot): the logits, or why the run failed.
   */
  async forward(seqs: Sequence[], tokens: number[][]): Promise<Float32Array | { error: string }> {
    const { adapters, counters } = this.#p;
    const session = seqs[0].session;
    if (session) counters.mergedRuns++;
    else if (seqs.some((s) => s.slot > 0)) counters.loraRuns++;
    // The native graph reads its slot stacks every run, so the base session gets them whenever adapters are served.
    const lora = session || !adapters ? undefined : adapters.slots.batch(seqs[0].row, seqs.map((s) => s.slot));
    try {
      const runner = session?.runner ?? this.#p.decoder;
      return await runner.forward({ firstRow: seqs[0].row, tokens, pastLengths: seqs.map((s) => s.computed) }, this.#p.kv, lora);
    } catch (err) {
      return { error: `model run failed: ${err instanceof Error ? err.message : String(err)}` };
    }
  }

  /** Samples the sequence's next token from row `row` of the logits and reports it; the outcome when it ends the sequence. */
  sample(seq: Sequence, logits: Float32Array, row: number): Outcome | null {
    const V = this.#p.decoder.config.vocabSize;
    const params = seq.request.sampling;
    let result;
    try {
      result = this.#sampler.sample(logits.subarray(row * V, (row + 1) * V), params, seq.sampling);
    } catch (err) {
      // A sampling failure is this request's, not the batch's.
      return { code: 'engine_error', message: `sampling failed: ${err instanceof Error ? err.message : String(err)}` };
    }
    const token = result.tokenId;
    seq.sampling.append(token);
    seq.tokens.push(token);
    this.#p.counters.generated++;
    const stop = stopAfterToken(token, params, this.#eos, { output: seq.outputLength, total: seq.tokens.length, context: this.#p.contextLength });
    this.#p.outbox.token({ id: seq.id, tokenId: token, logprob: result.logprob, topLogprobs: result.topLogprobs, stopToken: stop?.reason === 'stop' });
    return stop ? { reason: stop.reason, stopReason: stop.reason === 'stop' ? stop.tokenId : null } : null;
  }
}
