import { describe, expect, it } from 'vitest';
import { StopChecker } from '../../src/engine/stop-criteria.js';
import type { StopParams, StopReason } from '../../src/engine/stop-criteria.js';

const EOS = 2;

function checker(overrides: Partial<StopParams> = {}): StopChecker {
  return new StopChecker({ stop: [], stopTokenIds: [], eosTokenIds: [EOS], ignoreEos: false, maxTokens: 100, ...overrides });
}

/** Feeds token texts (token id 10 + index) and returns what was emitted per token and how it stopped. */
function feed(c: StopChecker, texts: string[]): { emits: string[]; stop: StopReason | null } {
  const emits: string[] = [];
  for (let i = 0; i < texts.length; i++) {
    const r = c.check(10 + i, texts[i], i + 1);
    emits.push(r.emit);
    if (r.stop) return { emits, stop: r.stop };
  }
  return { emits, stop: null };
}

describe('StopChecker', () => {
  it('finds a stop string spread over three tokens and emits only the text before it', () => {
    const c = checker({ stop: ['END'] });
    expect(feed(c, ['hello E', 'N', 'D and more'])).toEqual({ emits: ['hello ', '', ''], stop: { reason: 'stop', matched: 'END' } });
    expect(c.flush()).toBe('');
  });

  it('holds back only a tail that can still become a stop string, and releases it when it cannot', () => {
    const c = checker({ stop: ['###'] });
    expect(feed(c, ['a#', '#', 'b', 'c##'])).toEqual({ emits: ['a', '', '##b', 'c'], stop: null });
    expect(c.flush()).toBe('##');
    expect(c.flush()).toBe('');
  });

  it('handles a match that starts inside an earlier partial match', () => {
    expect(feed(checker({ stop: ['ab'] }), ['a', 'a', 'b'])).toEqual({ emits: ['', 'a', ''], stop: { reason: 'stop', matched: 'ab' } });
    expect(feed(checker({ stop: ['ab'] }), ['xaab'])).toEqual({ emits: ['xa'], stop: { reason: 'stop', matched: 'ab' } });
    expect(feed(checker({ stop: ['aab'] }), ['a', 'a', 'a', 'b!'])).toEqual({
      emits: ['', '', 'a', ''],
      stop: { reason: 'stop', matched: 'aab' },
    });
  });

  it('stops at the earliest stop string in the text', () => {
    expect(feed(checker({ stop: ['world', 'lo'] }), ['hello world'])).toEqual({ emits: ['hel'], stop: { reason: 'stop', matched: 'lo' } });
  });

  it('passes empty text (an incomplete character) through without stopping', () => {
    expect(feed(checker({ stop: ['é!'] }), ['', 'é', '', '!'])).toEqual({ emits: ['', '', '', ''], stop: { reason: 'stop', matched: 'é!' } });
  });

  it('stops on EOS without emitting its text, unless ignore_eos', () => {
    const c = checker({ stop: ['##'] });
    expect(c.check(5, 'x#', 1)).toEqual({ stop: null, emit: 'x' });
    // The held '#' can no longer become a stop string: it is released, the EOS text is not.
    expect(c.check(EOS, '</s>', 2)).toEqual({ stop: { reason: 'stop', matched: EOS }, emit: '#' });
    expect(c.flush()).toBe('');
    expect(checker({ ignoreEos: true }).check(EOS, '</s>', 1)).toEqual({ stop: null, emit: '</s>' });
  });

  it('stops on stop token ids, even with ignore_eos', () => {
    const c = checker({ stopTokenIds: [7, 8], ignoreEos: true });
    expect(c.check(3, 'a', 1)).toEqual({ stop: null, emit: 'a' });
    expect(c.check(8, '<|im_end|>', 2)).toEqual({ stop: { reason: 'stop', matched: 8 }, emit: '' });
  });

  it("stops with 'length' at max_tokens, emitting everything including held-back text", () => {
    const c = checker({ stop: ['STOP'], maxTokens: 3 });
    expect(feed(c, ['a', 'b', 'cST', 'never'])).toEqual({ emits: ['a', 'b', 'cST'], stop: { reason: 'length' } });
    expect(c.flush()).toBe('');
  });

  it('prefers a stop string completed by the last allowed token over length', () => {
    expect(feed(checker({ stop: ['STOP'], maxTokens: 2 }), ['xST', 'OP'])).toEqual({
      emits: ['x', ''],
      stop: { reason: 'stop', matched: 'STOP' },
    });
  });
});
