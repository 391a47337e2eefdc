export interface StopParams {
  stop: readonly string[];
  stopTokenIds: readonly number[];
  eosTokenIds: readonly number[];
  ignoreEos: boolean;
  maxTokens: number;
}

export interface StopReason {
  reason: 'stop' | 'length';
  /** The stop string or stop/EOS token id that ended the sequence; absent for 'length'. */
  matched?: string | number;
}

export interface StopCheck {
  stop: StopReason | null;
  /** Text safe to emit now. */
  emit: string;
}

/**
 * Decides when a sequence stops and which of its text may be streamed. Text that could still turn out to be the start
 * of a stop string is held back (at most the longest stop string's length − 1 characters) until it either completes
 * the stop string, which is then cut with everything after it (as OpenAI does), or stops matching.
 *
 * When check() reports a stop, its `emit` already holds all the remaining text: nothing is held back any more, and a
 * flush() after it returns ''. flush() is for a sequence the caller ends itself (abort, context full).
 */
export class StopChecker {
  readonly #stop: readonly string[];
  readonly #stopIds: ReadonlySet<number>;
  readonly #maxTokens: number;
  readonly #maxHold: number;
  #held = '';

  constructor(params: StopParams) {
    this.#stop = params.stop;
    this.#stopIds = new Set(params.ignoreEos ? params.stopTokenIds : [...params.stopTokenIds, ...params.eosTokenIds]);
    this.#maxTokens = params.maxTokens;
    this.#maxHold = Math.max(0, ...params.stop.map((s) => s.length - 1));
  }

  /**
   * `newText` is the text the token added (may be '' while a multi-byte character is incomplete); `generatedCount` is
   * the number of tokens generated so far, this one included. Stop token ids (and EOS unless ignoreEos) stop before
   * their text; a stop string stops before itself; reaching maxTokens stops after this token's text.
   */
  check(tokenId: number, newText: string, generatedCount: number): StopCheck {
    if (this.#stopIds.has(tokenId)) return { stop: { reason: 'stop', matched: tokenId }, emit: this.flush() };
    const text = this.#held + newText;
    const match = this.#findStop(text, this.#held.length);
    if (match !== null) {
      this.#held = '';
      return { stop: { reason: 'stop', matched: match.stop }, emit: text.slice(0, match.at) };
    }
    if (generatedCount >= this.#maxTokens) {
      this.#held = '';
      return { stop: { reason: 'length' }, emit: text };
    }
    const hold = this.#holdLength(text);
    this.#held = text.slice(text.length - hold);
    return { stop: null, emit: text.slice(0, text.length - hold) };
  }

  /** Releases the held-back text. */
  flush(): string {
    const held = this.#held;
    this.#held = '';
    return held;
  }

  /** The earliest stop string in `text` (the first listed on a tie); `held` chars at the start were already searched. */
  #findStop(text: string, held: number): { stop: string; at: number } | null {
    let best: { stop: string; at: number } | null = null;
    for (const stop of this.#stop) {
      const at = text.indexOf(stop, Math.max(0, held - stop.length + 1));
      if (at >= 0 && (best === null || at < best.at)) best = { stop, at };
    }
    return best;
  }

  /** Length of the longest tail of `text` that is a proper prefix of some stop string. */
  #holdLength(text: string): number {
    for (let len = Math.min(this.#maxHold, text.length); len > 0; len--) {
      for (const stop of this.#stop) {
        if (stop.length > len && tailIsPrefixOf(text, len, stop)) return len;
      }
    }
    return 0;
  }
}

function tailIsPrefixOf(text: string, len: number, stop: string): boolean {
  const from = text.length - len;
  for (let i = 0; i < len; i++) if (text.charCodeAt(from + i) !== stop.charCodeAt(i)) return false;
  return true;
}
