import type { Tokenizer } from './tokenizer.js';

export interface StreamingDetokenizerOptions {
  /** As in Tokenizer.decode (default false). */
  skipSpecialTokens?: boolean;
  /** The prompt, so that the first generated token decodes in context (e.g. keeps its leading space). */
  promptIds?: number[];
}

/** Prompt tokens kept as context for the first generated token (vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET). */
const PROMPT_CONTEXT_TOKENS = 5;

/**
 * Pending tokens after which the held-back text is emitted anyway, so a pathological stream (an endless run of
 * truncated UTF-8 sequences or of clean-up-sensitive spaces) cannot grow the window without bound. Below this,
 * the output is exact.
 */
const MAX_PENDING_TOKENS = 16;

/** Proper prefixes of the patterns `clean_up_tokenization_spaces` rewrites (" .", " n't", " 's", " ' ", ...), longest first. */
const CLEAN_UP_PREFIXES = [" n'", " 'v", " 'r", " '", ' n', ' '];

/**
 * Turns generated token ids into text chunks as they arrive. The chunks concatenated equal
 * `tokenizer.decode(ids)` (or, with `promptIds`, the continuation of the prompt's text), and no chunk ever
 * ends inside a UTF-8 character.
 *
 * Like HF's TextStreamer and vLLM's incremental detokenizer, it decodes a short window (a few tokens already
 * emitted, for context, plus the pending ones) and emits what the pending tokens add. Text that a later token
 * can still change is held back: a trailing U+FFFD (a byte-level token that ends mid-character; an incomplete
 * sequence always decodes to a single U+FFFD at the very end) and, when the tokenizer cleans up spaces, a
 * suffix that could start one of its patterns. Each push costs one or two decodes of the window, not of the
 * whole text.
 */
export class StreamingDetokenizer {
  readonly #tokenizer: Tokenizer;
  readonly #skipSpecialTokens: boolean;
  /** The window: context tokens, then pending tokens from #readOffset. */
  #ids: number[];
  #readOffset: number;
  /** decode() of the context tokens, already emitted. */
  #prefixText: string;
  /** Characters of the pending tokens' text already emitted. */
  #emitted = 0;

  constructor(tokenizer: Tokenizer, opts: StreamingDetokenizerOptions = {}) {
    this.#tokenizer = tokenizer;
    this.#skipSpecialTokens = opts.skipSpecialTokens ?? false;
    const promptIds = opts.promptIds ?? [];
    this.#ids = promptIds.slice(Math.max(0, promptIds.length - PROMPT_CONTEXT_TOKENS));
    this.#readOffset = this.#ids.length;
    this.#prefixText = this.#decode(this.#ids);
  }

  /** Adds one generated token; returns the text that became final. */
  push(id: number): string {
    this.#ids.push(id);
    const pendingText = this.#decode(this.#ids).slice(this.#prefixText.length);
    const forced = this.#ids.length - this.#readOffset >= MAX_PENDING_TOKENS;
    const end = forced ? pendingText.length : pendingText.length - this.#heldBackLength(pendingText);
    const chunk = end > this.#emitted ? pendingText.slice(this.#emitted, end) : '';
    this.#emitted = Math.max(this.#emitted, end);
    // A token that added no text (yet) stays pending, so the next one still decodes after real context.
    if (end === pendingText.length && (pendingText.length > 0 || forced)) {
      this.#ids = this.#ids.slice(this.#readOffset);
      this.#readOffset = this.#ids.length;
      this.#prefixText = this.#decode(this.#ids);
      this.#emitted = 0;
    }
    return chunk;
  }

  /** Returns the held-back text at the end of the stream. */
  flush(): string {
    const pendingText = this.#decode(this.#ids).slice(this.#prefixText.length);
    const chunk = pendingText.slice(this.#emitted);
    this.#emitted = pendingText.length;
    return chunk;
  }

  #decode(ids: number[]): string {
    return this.#tokenizer.decode(ids, { skipSpecialTokens: this.#skipSpecialTokens });
  }

  #heldBackLength(text: string): number {
    if (text.endsWith('\uFFFD')) return 1;
    if (!this.#tokenizer.cleanUpTokenizationSpaces) return 0;
    return CLEAN_UP_PREFIXES.find((prefix) => text.endsWith(prefix))?.length ?? 0;
  }
}
