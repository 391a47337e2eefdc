import { describe, expect, it } from 'vitest';
import { StopStringMatcher, stopAfterToken } from '../../src/engine/stop-criteria.js';

const EOS = new Set([2]);

/** Feeds token texts and returns what was emitted per token and the stop string that ended them. */
function feed(m: StopStringMatcher, texts: string[]): { emits: string[]; stop: string | null } {
  const emits: string[] = [];
  for (const text of texts) {
    const r = m.check(text);
    emits.push(r.emit);
    if (r.stop !== null) return { emits, stop: r.stop };
  }
  return { emits, stop: null };
}

describe('StopStringMatcher', () => {
  it('finds a stop string spread over three tokens and emits only the text before it', () => {
    const m = new StopStringMatcher(['END']);
    expect(feed(m, ['hello E', 'N', 'D and more'])).toEqual({ emits: ['hello ', '', ''], stop: 'END' });
    expect(m.flush()).toBe('');
  });

  it('holds back only a tail that can still become a stop string, and releases it when it cannot', () => {
    const m = new StopStringMatcher(['###']);
    expect(feed(m, ['a#', '#', 'b', 'c##'])).toEqual({ emits: ['a', '', '##b', 'c'], stop: null });
    expect(m.flush()).toBe('##');
    expect(m.flush()).toBe('');
  });

  it('handles a match that starts inside an earlier partial match', () => {
    expect(feed(new StopStringMatcher(['ab']), ['a', 'a', 'b'])).toEqual({ emits: ['', 'a', ''], stop: 'ab' });
    expect(feed(new StopStringMatcher(['ab']), ['xaab'])).toEqual({ emits: ['xa'], stop: 'ab' });
    expect(feed(new StopStringMatcher(['aab']), ['a', 'a', 'a', 'b!'])).toEqual({ emits: ['', '', 'a', ''], stop: 'aab' });
  });

  it('stops at the earliest stop string in the text', () => {
    expect(feed(new StopStringMatcher(['world', 'lo']), ['hello world'])).toEqual({ emits: ['hel'], stop: 'lo' });
  });

  it('passes empty text (an incomplete character) through without stopping', () => {
    expect(feed(new StopStringMatcher(['é!']), ['', 'é', '', '!'])).toEqual({ emits: ['', '', '', ''], stop: 'é!' });
  });

  it('emits everything at once without stop strings', () => {
    expect(feed(new StopStringMatcher([]), ['a', 'b#', 'c'])).toEqual({ emits: ['a', 'b#', 'c'], stop: null });
  });
});

describe('stopAfterToken', () => {
  const params = { ignoreEos: false, stopTokenIds: [], maxTokens: 10 };
  const lengths = { output: 3, total: 8, context: 64 };

  it('goes on with an ordinary token', () => {
    expect(stopAfterToken(5, params, EOS, lengths)).toBeNull();
  });

  it('stops on EOS unless ignore_eos', () => {
    expect(stopAfterToken(2, params, EOS, lengths)).toEqual({ reason: 'stop', tokenId: 2 });
    expect(stopAfterToken(2, { ...params, ignoreEos: true }, EOS, lengths)).toBeNull();
  });

  it('stops on stop token ids, even with ignore_eos, before checking the length', () => {
    expect(stopAfterToken(8, { ...params, stopTokenIds: [7, 8], ignoreEos: true }, EOS, { ...lengths, output: 10 })).toEqual({ reason: 'stop', tokenId: 8 });
  });

  it("stops with 'length' at exactly max_tokens output tokens", () => {
    expect(stopAfterToken(5, params, EOS, { ...lengths, output: 9 })).toBeNull();
    expect(stopAfterToken(5, params, EOS, { ...lengths, output: 10 })).toEqual({ reason: 'length' });
  });

  it("stops with 'length' when the sequence has reached the context length, and not one token earlier", () => {
    expect(stopAfterToken(5, params, EOS, { output: 3, total: 63, context: 64 })).toBeNull();
    expect(stopAfterToken(5, params, EOS, { output: 3, total: 64, context: 64 })).toEqual({ reason: 'length' });
  });
});
