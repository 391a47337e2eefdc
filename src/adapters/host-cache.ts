import { LRUCache } from 'lru-cache';
import type { LoraWeights } from './peft-loader.js';

/**
 * The host-memory tier of adapter weights, keyed by adapter digest and bounded in bytes (LoraWeights.bytes).
 *
 * Unpinned entries live in an `lru-cache` LRU. Pinned entries are moved out of it into a plain map, so the LRU can
 * never pick them; their bytes still count against the budget, which the LRU is kept under by evicting its least
 * recently used entries. Pins can exceed the budget on their own: then nothing unpinned is cached. A pin is a mark on
 * the digest, idempotent (pinning twice then unpinning once unpins), and may come before the weights are set.
 *
 * `onEvict` is called for entries pushed out to make room, not for delete() or for replacing an entry; their weights
 * are no longer held here.
 */
export class HostAdapterCache {
  readonly #maxBytes: number;
  readonly #onEvict: ((digest: string, weights: LoraWeights) => void) | undefined;
  readonly #lru: LRUCache<string, LoraWeights>;
  readonly #pins = new Set<string>();
  readonly #pinned = new Map<string, LoraWeights>();
  #pinnedBytes = 0;

  constructor(maxBytes: number, onEvict?: (digest: string, weights: LoraWeights) => void) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) throw new RangeError(`host adapter cache size must be a positive integer of bytes (found ${maxBytes})`);
    this.#maxBytes = maxBytes;
    this.#onEvict = onEvict;
    this.#lru = new LRUCache<string, LoraWeights>({
      maxSize: maxBytes,
      sizeCalculation: (weights) => weights.bytes,
      dispose: (weights, digest, reason) => {
        if (reason === 'evict') this.#onEvict?.(digest, weights);
      },
    });
  }

  /** Bytes held, pinned entries included. */
  get bytes(): number {
    return this.#lru.calculatedSize + this.#pinnedBytes;
  }

  /** Entries held, pinned entries included. */
  get size(): number {
    return this.#lru.size + this.#pinned.size;
  }

  /** The weights, marked most recently used. */
  get(digest: string): LoraWeights | undefined {
    return this.#pinned.get(digest) ?? this.#lru.get(digest);
  }

  has(digest: string): boolean {
    return this.#pinned.has(digest) || this.#lru.has(digest);
  }

  /**
   * Stores the weights, evicting least recently used unpinned entries as needed. Returns false, evicting nothing,
   * when unpinned weights cannot fit beside the pinned ones; pinned weights are always stored.
   */
  set(digest: string, weights: LoraWeights): boolean {
    if (this.#pins.has(digest)) {
      this.#pinnedBytes += weights.bytes - (this.#pinned.get(digest)?.bytes ?? 0);
      this.#pinned.set(digest, weights);
      this.#trim();
      return true;
    }
    return this.#admit(digest, weights);
  }

  /** Marks the digest pinned: its weights, now or once set, are never evicted. */
  pin(digest: string): void {
    this.#pins.add(digest);
    const weights = this.#lru.peek(digest);
    if (weights === undefined) return;
    this.#lru.delete(digest);
    this.#pinned.set(digest, weights);
    this.#pinnedBytes += weights.bytes;
  }

  /** Returns the weights to the LRU as most recently used; they are evicted at once if they no longer fit. */
  unpin(digest: string): void {
    this.#pins.delete(digest);
    const weights = this.#pinned.get(digest);
    if (weights === undefined) return;
    this.#pinned.delete(digest);
    this.#pinnedBytes -= weights.bytes;
    if (!this.#admit(digest, weights)) this.#onEvict?.(digest, weights);
  }

  /** Drops the weights and the pin. */
  delete(digest: string): boolean {
    this.#pins.delete(digest);
    const weights = this.#pinned.get(digest);
    if (weights !== undefined) {
      this.#pinned.delete(digest);
      this.#pinnedBytes -= weights.bytes;
      return true;
    }
    return this.#lru.delete(digest);
  }

  #admit(digest: string, weights: LoraWeights): boolean {
    if (weights.bytes > this.#maxBytes - this.#pinnedBytes) return false;
    this.#lru.set(digest, weights);
    this.#trim();
    return true;
  }

  /** Evicts least recently used entries until the LRU fits in what the pinned entries leave. */
  #trim(): void {
    while (this.#lru.size > 0 && this.#lru.calculatedSize + this.#pinnedBytes > this.#maxBytes) this.#lru.pop();
  }
}
