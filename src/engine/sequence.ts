// Runs in the engine worker.
import type { AdapterEntry } from '../adapters/adapter-manager.js';
import type { MergedSession } from './merged-sessions.js';
import type { GenerationRequest } from './engine-types.js';
import { SequenceSamplingState } from './sequence-sampling-state.js';

/**
 * One request inside the engine worker. Scheduling is in tokens (vLLM style): `tokens` is prompt + output so far,
 * `computed` how many of them are in the KV row; a step advances `computed` by a prefill chunk or by one decode token.
 * A token is sampled only when every token is computed: the last run's logits are then the last token's.
 */
export class Sequence {
  readonly request: GenerationRequest;
  readonly tokens: number[];
  readonly promptLength: number;
  readonly sampling: SequenceSamplingState;
  /** Content the request is bound to; null for the base model. */
  readonly adapter: AdapterEntry | null;
  /** Graph slot of the adapter while running (0 = no adapter, or its adapter is merged into `session`). */
  slot = 0;
  /** The merged session it runs on, chosen at admission; null: the base session (with its adapter in `slot`). */
  session: MergedSession | null = null;
  /** KV row while running; -1 while waiting. */
  row = -1;
  computed = 0;
  /** Prompt tokens restored from the prefix cache instead of computed. */
  cachedTokens = 0;
  /** Hash chain of its full prompt blocks under a build's digest (PrefixReuse.hashes); null until computed. */
  prefixHashes: { model: string; chain: readonly string[] } | null = null;
  /** Leading prompt blocks known to be in the prefix cache (restored from it or stored into it). */
  storedBlocks = 0;
  /** The logits after its last prompt token, kept while sibling choices wait to fork from it (GenerationRequest.forkOf). */
  promptLogits: Float32Array | null = null;
  /** Leading prompt tokens in the prefix cache once the prompt was computed; reported to warm requests. */
  prefixTokens = 0;
  readonly arrivedAt = performance.now();
  admittedAt = 0;
  /**
   * Its outcome (done, error or abort) is decided. It still holds its row, slot and adapter reference until the engine
   * releases them between steps: a run in flight may still write its row.
   */
  ended = false;

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

  /**
   * More than one token is uncomputed, so its next run is a prefill chunk. A decode run computes exactly one token per
   * row: a sequence with one uncomputed token (its last sampled one, or the last prompt token after a chunk that
   * stopped one short) decodes.
   */
  get prefilling(): boolean {
    return this.tokens.length - this.computed > 1;
  }

  /** Every token is in the KV row: the last run's logits are those of the last token, so the next token can be sampled. */
  get allComputed(): boolean {
    return this.computed === this.tokens.length;
  }
}
