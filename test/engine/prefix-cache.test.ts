import { describe, expect, it } from 'vitest';
import type { PrefixScope } from '../../src/engine/prefix-cache.js';
import { PrefixCache } from '../../src/engine/prefix-cache.js';

const T = 4;
/** Two floats per position: a block is 8 floats, 32 bytes. */
const cacheOf = (blocks: number) => new PrefixCache(T, 2, blocks * T * 2 * 4);
const base: PrefixScope = { model: 'build-1', adapter: null, salt: null };
const tokens = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

/** Inserts every block of the chain, each filled with its index + `mark`. */
function insertAll(cache: PrefixCache, hashes: string[], adapter: string | null = null, mark = 0): boolean[] {
  return hashes.map((_, b) => cache.insert(hashes, b, adapter, (data) => data.fill(b + mark)));
}

describe('PrefixCache', () => {
  it('keys blocks by a typed chain: model, adapter content, salt and every earlier token', () => {
    const cache = cacheOf(8);
    const chain = (scope: Partial<PrefixScope>, ids = tokens(8)) => cache.chain({ ...base, ...scope }, ids);
    const reference = chain({});
    expect(reference).toHaveLength(2);
    expect(chain({})).toEqual(reference);
    // Partial blocks have no hash; a longer prompt extends the same chain.
    expect(chain({}, tokens(11))).toEqual(reference);
    for (const other of [chain({ model: 'build-2' }), chain({ adapter: 'digest-a' }), chain({ salt: 'tenant' }), chain({ salt: 'null' }), chain({ adapter: 'null' })]) {
      expect(other[0]).not.toBe(reference[0]);
      expect(other[1]).not.toBe(reference[1]);
    }
    // A different first block changes every later hash, though the later tokens are equal.
    const changed = tokens(8);
    changed[0] = 99;
    expect(chain({}, changed)[1]).not.toBe(reference[1]);
  });

  it('finds the longest cached start of a chain, and counts queried and hit tokens', () => {
    const cache = cacheOf(8);
    const hashes = cache.chain(base, tokens(12));
    expect(insertAll(cache, hashes.slice(0, 2))).toEqual([true, true]);
    const found = cache.lookup(hashes, 3, 13);
    expect(found.map((d) => d[0])).toEqual([0, 1]);
    expect(cache.lookup(hashes, 1, 13)).toHaveLength(1);
    expect(cache.stats()).toMatchObject({ blocks: 2, queryTokens: 26, hitTokens: 12, bytes: 64 });
    expect(cache.leadingBlocks(hashes)).toBe(2);
    // A block whose parent is not cached is refused: it could never be reached.
    const other = cache.chain(base, tokens(12, 50));
    expect(cache.insert(other, 1, null, () => undefined)).toBe(false);
    expect(cache.violations()).toEqual([]);
  });

  it('evicts the least recently used block that has no cached children and is not pinned', () => {
    const cache = cacheOf(4);
    const a = cache.chain(base, tokens(8));
    const b = cache.chain(base, tokens(8, 100));
    insertAll(cache, a);
    insertAll(cache, b);
    // a is used again: b's leaf is now the least recently used leaf; a's root is older but has a child.
    cache.lookup(a, 2, 8);
    const c = cache.chain(base, tokens(4, 200));
    expect(insertAll(cache, c)).toEqual([true]);
    expect(cache.leadingBlocks(b)).toBe(1);
    expect(cache.leadingBlocks(a)).toBe(2);
    // Next go b's root (now a leaf) and then a's leaf, never a's root while its child is cached.
    insertAll(cache, cache.chain(base, tokens(4, 300)));
    expect(cache.leadingBlocks(b)).toBe(0);
    insertAll(cache, cache.chain(base, tokens(4, 400)));
    expect(cache.leadingBlocks(a)).toBe(1);
    expect(cache.stats().evictions).toBe(3);
    expect(cache.violations()).toEqual([]);
  });

  it('never evicts pinned blocks, and refuses a block when everything is pinned', () => {
    const cache = cacheOf(2);
    const a = cache.chain(base, tokens(8));
    insertAll(cache, a);
    expect(cache.pin(a, true)).toBe(2);
    expect(cache.insert(cache.chain(base, tokens(4, 100)), 0, null, () => undefined)).toBe(false);
    expect(cache.stats()).toMatchObject({ blocks: 2, pinnedBlocks: 2, evictions: 0 });
    cache.pin(a, false);
    expect(cache.insert(cache.chain(base, tokens(4, 100)), 0, null, () => undefined)).toBe(true);
    expect(cache.violations()).toEqual([]);
  });

  it('drops one adapter content, pinned blocks too, with the blocks that extend them', () => {
    const cache = cacheOf(8);
    const adapterChain = cache.chain({ ...base, adapter: 'digest-a' }, tokens(8));
    insertAll(cache, adapterChain, 'digest-a');
    insertAll(cache, cache.chain(base, tokens(8)));
    cache.pin(adapterChain, true);
    expect(cache.stats().byAdapter).toEqual({ 'digest-a': { blocks: 2, pinnedBlocks: 2 }, '': { blocks: 2, pinnedBlocks: 0 } });
    expect(cache.drop((d) => d === 'digest-a')).toBe(2);
    expect(cache.stats().byAdapter).toEqual({ '': { blocks: 2, pinnedBlocks: 0 } });
    expect(cache.drop(() => true)).toBe(2);
    expect(cache.stats()).toMatchObject({ blocks: 0, bytes: 0 });
    expect(cache.violations()).toEqual([]);
  });
});
