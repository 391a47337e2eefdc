// Runs in the engine worker: KV blocks of prompt prefixes in host memory, found again by a typed hash chain.
import { createHash } from 'node:crypto';

/**
 * What a prefix's KV depends on besides its tokens. Each field is typed in the hash (JSON: null is not "null"), so a
 * base request never meets an adapter's blocks, nor one salt another's. Adapters count by content digest, never by
 * name or slot: an adapter registered again with other weights starts from nothing.
 */
export interface PrefixScope {
  /** Digest of the model build (checkpoint, quantization, graph). */
  model: string;
  /** Content digest of the adapter; null for the base model. */
  adapter: string | null;
  /** The request's `cache_salt`; null without one. */
  salt: string | null;
}

interface Block {
  hash: string;
  parent: Block | null;
  adapter: string | null;
  /** `KvCache.readPositions` layout of the block's positions. */
  data: Float32Array;
  /** Cached blocks that extend this one: a block with children is never evicted, so a chain never loses its start. */
  children: number;
  pinned: boolean;
}

export interface PrefixCacheStats {
  blockTokens: number;
  capacityBytes: number;
  bytes: number;
  blocks: number;
  pinnedBlocks: number;
  /** Prompt tokens looked up, and those found (vLLM's prefix_cache_queries / prefix_cache_hits). */
  queryTokens: number;
  hitTokens: number;
  evictions: number;
  /** Blocks by adapter content digest ('' for the base model). */
  byAdapter: Record<string, { blocks: number; pinnedBlocks: number }>;
}

/**
 * A host pool of fixed-size KV blocks bounded in bytes. Lookups return the longest cached chain of a prompt's blocks;
 * inserts evict the least recently used block that is unpinned and has no cached children. Map order is recency
 * order: a touched block is moved to the end.
 */
export class PrefixCache {
  readonly blockTokens: number;
  readonly #blockFloats: number;
  readonly #capacityBlocks: number;
  readonly #blocks = new Map<string, Block>();
  #queryTokens = 0;
  #hitTokens = 0;
  #evictions = 0;

  /** `positionFloats`: floats per KV position of one row (KvCache.positionFloats). */
  constructor(blockTokens: number, positionFloats: number, capacityBytes: number) {
    this.blockTokens = blockTokens;
    this.#blockFloats = blockTokens * positionFloats;
    this.#capacityBlocks = Math.floor(capacityBytes / (this.#blockFloats * 4));
  }

  /** Hash chain of the full blocks among `tokens`: entry i names blocks 0..i under the scope. */
  chain(scope: PrefixScope, tokens: readonly number[]): string[] {
    const hashes: string[] = [];
    let previous = createHash('sha256').update(JSON.stringify(['loraserve-prefix-v1', scope.model, scope.adapter, scope.salt])).digest();
    for (let b = 0; (b + 1) * this.blockTokens <= tokens.length; b++) {
      const ids = Uint32Array.from(tokens.slice(b * this.blockTokens, (b + 1) * this.blockTokens));
      previous = createHash('sha256').update(previous).update(new Uint8Array(ids.buffer)).digest();
      hashes.push(previous.toString('base64'));
    }
    return hashes;
  }

  /**
   * The cached blocks that start the chain, at most `maxBlocks` of them, as most recently used; counts the prompt's
   * `promptTokens` as queried and the blocks' tokens as hits.
   */
  lookup(hashes: readonly string[], maxBlocks: number, promptTokens: number): Float32Array[] {
    const found: Float32Array[] = [];
    for (const hash of hashes.slice(0, maxBlocks)) {
      const block = this.#blocks.get(hash);
      if (!block) break;
      this.#touch(block);
      found.push(block.data);
    }
    this.#queryTokens += promptTokens;
    this.#hitTokens += found.length * this.blockTokens;
    return found;
  }

  /** How many blocks at the start of the chain are cached; changes nothing. */
  leadingBlocks(hashes: readonly string[]): number {
    const missing = hashes.findIndex((h) => !this.#blocks.has(h));
    return missing === -1 ? hashes.length : missing;
  }

  /**
   * Adds block `index` of the chain, `fill` writing its KV, when its parent is cached (or it is the first) and room can
   * be made. Returns whether the block is now cached.
   */
  insert(hashes: readonly string[], index: number, adapter: string | null, fill: (data: Float32Array) => void): boolean {
    const hash = hashes[index];
    const existing = this.#blocks.get(hash);
    if (existing) {
      this.#touch(existing);
      return true;
    }
    const parent = index === 0 ? null : this.#blocks.get(hashes[index - 1]);
    if (parent === undefined) return false;
    const data = this.#room();
    if (!data) return false;
    fill(data);
    if (parent) parent.children++;
    this.#blocks.set(hash, { hash, parent, adapter, data, children: 0, pinned: false });
    return true;
  }

  /** Pins (or unpins) the cached blocks among `hashes`; returns how many are cached. */
  pin(hashes: readonly string[], pinned: boolean): number {
    let cached = 0;
    for (const hash of hashes) {
      const block = this.#blocks.get(hash);
      if (!block) break;
      block.pinned = pinned;
      cached++;
    }
    return cached;
  }

  /** Drops every block (pinned too) whose adapter digest `matches` ('' stands for the base model); returns how many. */
  drop(matches: (adapter: string) => boolean): number {
    let dropped = 0;
    for (const block of [...this.#blocks.values()].reverse()) {
      if (!matches(block.adapter ?? '')) continue;
      this.#remove(block);
      dropped++;
    }
    return dropped;
  }

  stats(): PrefixCacheStats {
    const byAdapter: PrefixCacheStats['byAdapter'] = {};
    let pinnedBlocks = 0;
    for (const block of this.#blocks.values()) {
      const entry = (byAdapter[block.adapter ?? ''] ??= { blocks: 0, pinnedBlocks: 0 });
      entry.blocks++;
      if (block.pinned) {
        entry.pinnedBlocks++;
        pinnedBlocks++;
      }
    }
    return {
      blockTokens: this.blockTokens,
      capacityBytes: this.#capacityBlocks * this.#blockFloats * 4,
      bytes: this.#blocks.size * this.#blockFloats * 4,
      blocks: this.#blocks.size,
      pinnedBlocks,
      queryTokens: this.#queryTokens,
      hitTokens: this.#hitTokens,
      evictions: this.#evictions,
      byAdapter,
    };
  }

  /** The blocks whose parent is not cached, or whose children count is wrong (see invariants.ts); empty when sound. */
  violations(): string[] {
    const children = new Map<Block, number>();
    const problems: string[] = [];
    for (const block of this.#blocks.values()) {
      if (block.parent) {
        if (this.#blocks.get(block.parent.hash) !== block.parent) problems.push(`prefix block ${block.hash} outlived its parent`);
        children.set(block.parent, (children.get(block.parent) ?? 0) + 1);
      }
    }
    for (const block of this.#blocks.values()) {
      if (block.children !== (children.get(block) ?? 0)) problems.push(`prefix block ${block.hash} counts ${block.children} children, has ${children.get(block) ?? 0}`);
    }
    if (this.#blocks.size > this.#capacityBlocks) problems.push(`prefix cache holds ${this.#blocks.size} blocks, capacity ${this.#capacityBlocks}`);
    return problems;
  }

  #touch(block: Block): void {
    this.#blocks.delete(block.hash);
    this.#blocks.set(block.hash, block);
  }

  /** Memory for one more block: new while under capacity, else the least recently used evictable block's; null when none can go. */
  #room(): Float32Array | null {
    if (this.#blocks.size < this.#capacityBlocks) return new Float32Array(this.#blockFloats);
    for (const block of this.#blocks.values()) {
      if (block.pinned || block.children > 0) continue;
      this.#remove(block);
      this.#evictions++;
      return block.data;
    }
    return null;
  }

  /** Removes a block and, first, the blocks that extend it (they could never be reached again). */
  #remove(block: Block): void {
    if (!this.#blocks.has(block.hash)) return;
    if (block.children > 0) for (const child of [...this.#blocks.values()].filter((b) => b.parent === block)) this.#remove(child);
    this.#blocks.delete(block.hash);
    if (block.parent) block.parent.children--;
  }
}
