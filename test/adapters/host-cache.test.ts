import { describe, expect, it } from 'vitest';
import { HostAdapterCache } from '../../src/adapters/host-cache.js';
import type { LoraWeights } from '../../src/adapters/peft-loader.js';

function weights(bytes: number): LoraWeights {
  return { rank: 1, modules: new Map(), bytes, type: 'float32', digest: '' };
}

/** A 100-byte cache and the digests it evicted, in order. */
function cache(maxBytes = 100): { cache: HostAdapterCache; evicted: string[] } {
  const evicted: string[] = [];
  return { cache: new HostAdapterCache(maxBytes, (digest) => evicted.push(digest)), evicted };
}

function contents(c: HostAdapterCache, digests: string[]): string[] {
  return digests.filter((d) => c.has(d));
}

describe('HostAdapterCache', () => {
  it('evicts the least recently used entries by bytes, reporting each eviction', () => {
    const { cache: c, evicted } = cache();
    const a = weights(40);
    expect(c.set('a', a)).toBe(true);
    expect(c.set('b', weights(30))).toBe(true);
    expect(c.set('c', weights(20))).toBe(true);
    expect([c.bytes, c.size]).toEqual([90, 3]);
    expect(c.get('a')).toBe(a); // a is now the most recently used
    expect(c.set('d', weights(45))).toBe(true);
    // Evicting b (30) alone leaves 105 bytes: b, then c go.
    expect(evicted).toEqual(['b', 'c']);
    expect(contents(c, ['a', 'b', 'c', 'd'])).toEqual(['a', 'd']);
    expect([c.bytes, c.size]).toEqual([85, 2]);
  });

  it('hands over the weights it evicts, for their memory to be reused', () => {
    const given: LoraWeights[] = [];
    const c = new HostAdapterCache(100, (_digest, w) => given.push(w));
    const a = weights(60);
    c.set('a', a);
    c.set('b', weights(60));
    expect(given).toEqual([a]);
    expect(given[0]).toBe(a);
  });

  it('does not count has() as a use', () => {
    const { cache: c, evicted } = cache();
    c.set('a', weights(50));
    c.set('b', weights(50));
    expect(c.has('a')).toBe(true);
    c.set('c', weights(50));
    expect(evicted).toEqual(['a']);
  });

  it('refuses weights larger than the budget without evicting anything', () => {
    const { cache: c, evicted } = cache();
    c.set('a', weights(60));
    expect(c.set('big', weights(101))).toBe(false);
    expect(contents(c, ['a', 'big'])).toEqual(['a']);
    expect(evicted).toEqual([]);
  });

  it('never evicts pinned entries, and counts their bytes against the budget', () => {
    const { cache: c, evicted } = cache();
    c.set('p', weights(50));
    c.pin('p');
    c.set('a', weights(30));
    c.set('b', weights(30));
    expect(evicted).toEqual(['a']);
    expect([c.bytes, c.size]).toEqual([80, 2]);
    // 60 cannot fit beside the 50 pinned bytes.
    expect(c.set('c', weights(60))).toBe(false);
    expect(contents(c, ['p', 'b', 'c'])).toEqual(['p', 'b']);
    for (let i = 0; i < 5; i++) c.set(`x${i}`, weights(45));
    expect(c.has('p')).toBe(true);
  });

  it('honours a pin set before the weights, even past the budget', () => {
    const { cache: c, evicted } = cache();
    c.set('a', weights(40));
    c.pin('p');
    c.pin('q');
    expect(c.set('p', weights(70))).toBe(true);
    expect(evicted).toEqual(['a']);
    expect(c.set('q', weights(70))).toBe(true);
    expect([c.bytes, c.size]).toEqual([140, 2]);
    expect(c.set('b', weights(1))).toBe(false);
  });

  it('returns an unpinned entry to the LRU as most recently used', () => {
    const { cache: c, evicted } = cache();
    c.set('p', weights(40));
    c.pin('p');
    c.pin('p');
    c.set('a', weights(30));
    c.unpin('p'); // one unpin is enough: pins are marks, not counts
    c.set('b', weights(31));
    expect(evicted).toEqual(['a']);
    expect(contents(c, ['p', 'a', 'b'])).toEqual(['p', 'b']);
  });

  it('evicts an unpinned entry that no longer fits beside the remaining pins', () => {
    const { cache: c, evicted } = cache();
    c.pin('p');
    c.pin('q');
    c.set('p', weights(60));
    c.set('q', weights(60));
    c.unpin('p');
    expect(evicted).toEqual(['p']);
    expect(contents(c, ['p', 'q'])).toEqual(['q']);
    expect(c.bytes).toBe(60);
  });

  it('deletes entries and their pins without reporting an eviction', () => {
    const { cache: c, evicted } = cache();
    c.set('a', weights(40));
    c.set('p', weights(40));
    c.pin('p');
    expect(c.delete('a')).toBe(true);
    expect(c.delete('p')).toBe(true);
    expect(c.delete('p')).toBe(false);
    expect([c.bytes, c.size]).toEqual([0, 0]);
    // The pin went with the entry: p is evictable once set again.
    c.set('p', weights(60));
    c.set('b', weights(60));
    expect(evicted).toEqual(['p']);
  });

  it('replaces an entry in place without reporting an eviction', () => {
    const { cache: c, evicted } = cache();
    c.set('a', weights(40));
    const replacement = weights(50);
    c.set('a', replacement);
    expect(c.get('a')).toBe(replacement);
    expect([c.bytes, c.size]).toEqual([50, 1]);
    c.pin('a');
    c.set('a', weights(20));
    expect(c.bytes).toBe(20);
    expect(evicted).toEqual([]);
  });

  it('needs a positive integer budget', () => {
    expect(() => new HostAdapterCache(0)).toThrow(RangeError);
    expect(() => new HostAdapterCache(1.5)).toThrow('positive integer of bytes (found 1.5)');
  });
});
