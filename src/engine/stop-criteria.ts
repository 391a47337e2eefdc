// Pure functions and state of the stop rules: token stops run in the engine worker, stop strings on the main thread.
import type { SamplingParams } from './sampling-params.js';

/** Why generation ends with the token just sampled: EOS or a stop token id ('stop'), or no room left ('length'). */
export type TokenStop = { reason: 'stop'; tokenId: number } | { reason: 'length' } | null;

/**
 * The engine's stop rule after each sampled token. EOS (unless ignore_eos) and stop token ids stop with the token;
 * otherwise max_tokens output tokens, or a sequence that has reached the context length (prompt + output: the token just
 * sampled is the last one that fits, and it is never computed), stop with 'length'.
 */
export function stopAfterToken(
  tokenId: number,
  params: Pick<SamplingParams, 'ignoreEos' | 'stopTokenIds' | 'maxTokens'>,
  eosTokenIds: ReadonlySet<number>,
  lengths: { output: number; total: number; context: number },
): TokenStop {
  if ((!params.ignoreEos && eosTokenIds.has(tokenId)) || params.stopTokenIds.includes(tokenId)) return { reason: 'stop', tokenId };
  if (lengths.output >= params.maxTokens || lengths.total >= lengths.context) return { reason: 'length' };
  return null;
}

export interface StopCheck {
  /** The stop string that ended the text, or null. */
  stop: string | null;
  /** Text safe to emit now. */
  emit: string;
}

/**
 * Stop strings over streamed text, on the main thread (the worker sees only token ids). Text that could still turn out
 * to be the start of a stop string is held back (at most the longest stop string's length − 1 characters) until it
 * either completes the stop string, which is then cut with everything after it (as OpenAI does), or stops matching.
 *
 * When check() reports a stop, its `emit` already holds all the remaining text: nothing is held back any more, and a
 * flush() after it returns ''. flush() is for a sequence that ends otherwise (EOS, length, abort).
 */
export class StopStringMatcher {
  readonly #stop: readonly string[];
  readonly #maxHold: number;
  #held = '';

  constructor(stop: readonly string[]) {
    this.#stop = stop;
    this.#maxHold = Math.max(0, ...stop.map((s) => s.length - 1));
  }

  /** `newText` is the text a token added (may be '' while a multi-byte character is incomplete). */
  check(newText: string): StopCheck {
    const text = this.#held + newText;
    const match = this.#findStop(text, this.#held.length);
    if (match !== null) {
      this.#held = '';
      return { stop: match.stop, emit: text.slice(0, match.at) };
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
