import type { Usage } from '../engine/engine-types.js';
import type { Tokenizer } from '../model/tokenizer.js';
import type { DoneEvent, TokenEvent } from './generation.js';

/** Response pieces shared by /v1/completions and /v1/chat/completions. */

export interface OpenAiUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

/**
 * Usage of a request whose choices are prompt-major with `n` choices per prompt: each prompt counts once (as
 * OpenAI and vLLM count it), every choice's completion counts.
 */
export function openAiUsage(usages: readonly (Usage | undefined)[], n: number): OpenAiUsage {
  let prompt = 0;
  let completion = 0;
  let cached = 0;
  usages.forEach((u, index) => {
    if (!u) return;
    completion += u.completionTokens;
    if (index % n === 0) {
      prompt += u.promptTokens;
      cached += u.cachedTokens;
    }
  });
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } };
}

/** The choice fields that end a choice: OpenAI's `finish_reason` and vLLM's `stop_reason`. */
export function finishFields(done: DoneEvent): { finish_reason: DoneEvent['finishReason']; stop_reason: string | number | null } {
  return { finish_reason: done.finishReason, stop_reason: done.stopReason };
}

/** A token's own text, as logprobs show it. */
function tokenString(tokenizer: Tokenizer, id: number): string {
  return tokenizer.decode([id]);
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/** Legacy completions logprobs of `tokens`, whose text starts at `offset` in the completion. */
export function completionLogprobs(tokenizer: Tokenizer, tokens: readonly TokenEvent[], offset = 0): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = offset;
  for (const t of tokens) {
    const text = tokenString(tokenizer, t.tokenId);
    out.tokens.push(text);
    out.token_logprobs.push(t.logprob ?? 0);
    const top: Record<string, number> = {};
    for (const alt of t.topLogprobs ?? []) {
      // Tokens that print alike (partial UTF-8 bytes all print as U+FFFD) share a key: keep the likeliest.
      const key = tokenString(tokenizer, alt.tokenId);
      top[key] = Math.max(top[key] ?? -Infinity, alt.logprob);
    }
    out.top_logprobs.push(top);
    out.text_offset.push(at);
    at += text.length;
  }
  return out;
}

interface ChatTopLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface ChatLogprobs {
  content: (ChatTopLogprob & { top_logprobs: ChatTopLogprob[] })[];
}

/** Chat logprobs (`choices[].logprobs.content`) of `tokens`. */
export function chatLogprobs(tokenizer: Tokenizer, tokens: readonly TokenEvent[]): ChatLogprobs {
  const entry = (id: number, logprob: number): ChatTopLogprob => {
    const token = tokenString(tokenizer, id);
    return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
  };
  return {
    content: tokens.map((t) => ({
      ...entry(t.tokenId, t.logprob ?? 0),
      top_logprobs: (t.topLogprobs ?? []).map((top) => entry(top.tokenId, top.logprob)),
    })),
  };
}
