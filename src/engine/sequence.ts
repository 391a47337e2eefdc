import type { AdapterEntry } from '../adapters/adapter-manager.js';
import type { GenerationRequest } from './engine-types.js';
import { SequenceSamplingState } from './sampler.js';

/**
 * One request inside the engine worker. Scheduling is in tokens (vLLM style): `tokens` is prompt + output so far,
 * `computed` how many of them are in the KV row; a step advances `computed` by a prefill chunk or by one decode token.
 */
export class Sequence {
  readonly request: GenerationRequest;
  readonly tokens: number[];
  readonly promptLength: number;
  readonly sampling: SequenceSamplingState;
  /** Content the request is bound to; null for the base model. */
  readonly adapter: AdapterEntry | null;
  /** Graph slot of the adapter while running (0 = no adapter). */
  slot = 0;
  /** KV row while running; -1 while waiting. */
  row = -1;
  computed = 0;
  readonly arrivedAt = performance.now();
  admittedAt = 0;

  constructor(request: GenerationRequest, adapter: AdapterEntry | null, seed: number) {
    this.request = request;
    this.tokens = [...request.promptIds];
    this.promptLength = request.promptIds.length;
    this.adapter = adapter;
    this.sampling = new SequenceSamplingState(request.sampling, request.promptIds, seed);
  }

  get id(): string {
    return this.request.id;
  }

  get outputLength(): number {
    return this.tokens.length - this.promptLength;
  }

  /** More than the last token is uncomputed: the prompt (or part of it) still needs a prefill. */
  get prefilling(): boolean {
    return this.tokens.length - this.computed > 1;
  }
}
