// Runs in the engine worker: what one step tells the main thread, sent as one message.
import type { EngineErrorCode } from './engine-types.js';
import type { Sequence } from './sequence.js';
import type { AdapterLoadOut, DoneOut, FromWorker, StepTokensOut, TokenOut } from './worker-protocol.js';

/** How a sequence ended, when the engine decided it: finished (stop or length) or failed. */
export type Outcome = { reason: 'stop' | 'length'; stopReason: number | null } | { code: EngineErrorCode; message: string };

/** Collects a step's tokens, finished requests, errors, adapter loads and token counts, and posts them together. */
export class StepOutbox {
  readonly #post: (message: FromWorker) => void;
  #tokens: TokenOut[] = [];
  #done: DoneOut[] = [];
  #errors: { id: string; code: EngineErrorCode; message: string }[] = [];
  #steps: StepTokensOut[] = [];

  constructor(post: (message: FromWorker) => void) {
    this.#post = post;
  }

  token(out: TokenOut): void {
    this.#tokens.push(out);
  }

  done(out: DoneOut): void {
    this.#done.push(out);
  }

  error(id: string, code: EngineErrorCode, message: string): void {
    this.#errors.push({ id, code, message });
  }

  /** Reports how the sequence ended: its error, or its done message with usage and queue time. */
  outcome(seq: Sequence, outcome: Outcome): void {
    if ('code' in outcome) {
      this.error(seq.id, outcome.code, outcome.message);
      return;
    }
    const { cachedTokens, prefixTokens } = seq;
    this.done({
      id: seq.id,
      finishReason: outcome.reason,
      stopReason: outcome.stopReason,
      usage: { promptTokens: seq.promptLength, completionTokens: seq.outputLength, cachedTokens, ...(seq.request.prefix?.warm ? { prefixTokens } : {}) },
      queueMs: seq.admittedAt - seq.arrivedAt,
    });
  }

  step(tokens: StepTokensOut): void {
    this.#steps.push(tokens);
  }

  /** Posts what was collected (nothing when there is nothing to say). */
  flush(adapterLoads: AdapterLoadOut[]): void {
    if (this.#tokens.length === 0 && this.#done.length === 0 && this.#errors.length === 0 && adapterLoads.length === 0 && this.#steps.length === 0) return;
    this.#post({ type: 'step', tokens: this.#tokens, done: this.#done, errors: this.#errors, adapterLoads, steps: this.#steps });
    this.#steps = [];
    this.#tokens = [];
    this.#done = [];
    this.#errors = [];
  }
}
