// Runs in the engine worker: prompt KV reused between requests, from the prefix cache or from a sibling choice's row.
import type { KvCache } from '../model/kv-cache.js';
import { PrefixCache } from './prefix-cache.js';
import type { Sequence } from './sequence.js';

/** Tokens per block: small enough that most of a shared prompt is reused, large enough that hashing is cheap. */
const PREFIX_BLOCK_TOKENS = 16;

/**
 * Moves prompt KV between the rows and the prefix cache, only between runs. A sequence restores the longest cached
 * chain of its prompt's blocks when admitted, and stores each full prompt block once computed. At least the last
 * two prompt tokens are always computed, so the prompt's last logits are the sequence's own.
 */
export class PrefixReuse {
  readonly cache: PrefixCache | null;
  readonly #kv: KvCache;
  readonly #modelOf: (seq: Sequence) => string;

  /**
   * `cacheBytes`: the pool's size (0: no cache); `modelOf`: the digest of the build that computes (or would compute)
   * the sequence's KV, the first field of its blocks' keys: a merged session's KV is not the base session's.
   */
  constructor(cacheBytes: number, kv: KvCache, modelOf: (seq: Sequence) => string) {
    this.cache = cacheBytes > 0 ? new PrefixCache(PREFIX_BLOCK_TOKENS, kv.positionFloats, cacheBytes) : null;
    this.#kv = kv;
    this.#modelOf = modelOf;
  }

  /**
   * The hash chain of the sequence's full prompt blocks, computed once per build digest; empty when it opted out or
   * the cache is off.
   */
  hashes(seq: Sequence): readonly string[] {
    const model = this.#modelOf(seq);
    if (seq.prefixHashes?.model !== model) {
      const { prefix } = seq.request;
      const chain = this.cache && prefix?.use !== false
        ? this.cache.chain({ model, adapter: seq.adapter?.digest ?? null, salt: prefix?.salt ?? null }, seq.request.promptIds)
        : [];
      seq.prefixHashes = { model, chain };
    }
    return seq.prefixHashes.chain;
  }

  /**
   * Blocks that a restore may take: at least the last two prompt tokens are left to a prefill chunk, so the prompt's
   * last logits come from the same kernels as without the cache (see prefillChunks).
   */
  #restorable(seq: Sequence): number {
    return this.cache ? Math.floor(Math.max(0, seq.promptLength - 2) / this.cache.blockTokens) : 0;
  }

  /** Prompt tokens the sequence would still compute if admitted now (the scheduler's cost); changes nothing. */
  uncached(seq: Sequence): number {
    const cache = this.cache;
    if (!cache) return seq.promptLength;
    return seq.promptLength - cache.leadingBlocks(this.hashes(seq).slice(0, this.#restorable(seq))) * cache.blockTokens;
  }

  /**
   * On admission: counts the cached start of the prompt computed, has `place` give the sequence its row (which depends
   * on whether a prefill is left), and copies the blocks into the row.
   */
  restore(seq: Sequence, place: () => void): void {
    const cache = this.cache;
    const blocks = cache ? cache.lookup(this.hashes(seq), this.#restorable(seq), seq.promptLength) : [];
    const T = cache?.blockTokens ?? 0;
    seq.computed = seq.cachedTokens = blocks.length * T;
    seq.storedBlocks = blocks.length;
    place();
    blocks.forEach((data, b) => this.#kv.writePositions(seq.row, b * T, T, data));
  }

  /** On admission of a choice forked from its sibling: the sibling's whole prompt KV, copied row to row. */
  fork(seq: Sequence, from: Sequence, place: () => void): void {
    seq.computed = seq.promptLength;
    place();
    this.#kv.copyRow(from.row, seq.row, seq.computed);
  }

  /** After a run: puts the prompt blocks the sequence has now computed into the cache; a warm request's report once all are. */
  store(seq: Sequence): void {
    const cache = this.cache;
    if (!cache) return;
    const hashes = this.hashes(seq);
    const complete = Math.min(hashes.length, Math.floor(Math.min(seq.computed, seq.promptLength) / cache.blockTokens));
    const T = cache.blockTokens;
    while (seq.storedBlocks < complete) {
      const b = seq.storedBlocks;
      if (!cache.insert(hashes, b, seq.adapter?.digest ?? null, (data) => this.#kv.readPositions(seq.row, b * T, T, data))) break;
      seq.storedBlocks++;
    }
    const warm = seq.request.prefix?.warm;
    if (warm && seq.computed >= seq.promptLength) seq.prefixTokens = (warm.pin ? cache.pin(hashes, true) : cache.leadingBlocks(hashes)) * T;
  }
}
