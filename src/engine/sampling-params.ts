/** How one sequence picks its tokens and when it stops; built by the API layer, read by the engine's sampler and stop checker. */
export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number;
  /** Nucleus mass; 1 = off. */
  topP: number;
  /** 0 or -1 = off. */
  topK: number;
  /** Drop tokens whose probability is below minP × the best token's; 0 = off. */
  minP: number;
  /** 1 = off. HF/vLLM semantics: positive logits are divided by it, negative ones multiplied, for tokens in the prompt and the output. */
  repetitionPenalty: number;
  /** OpenAI semantics: subtracted once from every token that occurs in the output so far. */
  presencePenalty: number;
  /** OpenAI semantics: subtracted once per occurrence of the token in the output so far. */
  frequencyPenalty: number;
  /** Added to the logits of the given token ids before anything else. */
  logitBias: ReadonlyMap<number, number> | null;
  /** null = the engine's per-request seed. */
  seed: number | null;
  /** null = none; n = also return the top-n alternatives (0 = only the chosen token's logprob). */
  logprobs: number | null;
  maxTokens: number;
  stop: readonly string[];
  stopTokenIds: readonly number[];
  ignoreEos: boolean;
}

/** vLLM's defaults (maxTokens 16 as in OpenAI's and vLLM's completions). */
export const DEFAULT_SAMPLING: Readonly<SamplingParams> = Object.freeze({
  temperature: 1,
  topP: 1,
  topK: 0,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  logitBias: null,
  seed: null,
  logprobs: null,
  maxTokens: 16,
  stop: Object.freeze([]),
  stopTokenIds: Object.freeze([]),
  ignoreEos: false,
});

const MAX_TEMPERATURE = 100;
/** The most top_logprobs alternatives a request may ask for (OpenAI's limit). */
export const MAX_LOGPROBS = 20;
const MAX_STOP_STRINGS = 16;
const MAX_LOGIT_BIAS = 100;
const MAX_PRESENCE_FREQUENCY_PENALTY = 2;

const isInt = Number.isSafeInteger;

function inRange(value: number, lo: number, hi: number): boolean {
  return Number.isFinite(value) && value >= lo && value <= hi;
}

/**
 * Returns null when `p` is usable with a vocabulary of `vocabSize` tokens, else a message naming the first bad field by
 * its OpenAI/vLLM request name (top_p, max_tokens, …), which is what a client sees.
 */
export function validateSamplingParams(p: SamplingParams, vocabSize: number): string | null {
  if (!inRange(p.temperature, 0, MAX_TEMPERATURE)) return `temperature must be in [0, ${MAX_TEMPERATURE}] (found ${p.temperature})`;
  if (!(Number.isFinite(p.topP) && p.topP > 0 && p.topP <= 1)) return `top_p must be in (0, 1] (found ${p.topP})`;
  if (!isInt(p.topK) || p.topK < -1) return `top_k must be an integer >= -1; 0 or -1 disables it (found ${p.topK})`;
  if (!inRange(p.minP, 0, 1)) return `min_p must be in [0, 1] (found ${p.minP})`;
  if (!(Number.isFinite(p.repetitionPenalty) && p.repetitionPenalty > 0)) {
    return `repetition_penalty must be a number > 0; 1 disables it (found ${p.repetitionPenalty})`;
  }
  const penaltyRange = `[-${MAX_PRESENCE_FREQUENCY_PENALTY}, ${MAX_PRESENCE_FREQUENCY_PENALTY}]`;
  if (!inRange(p.presencePenalty, -MAX_PRESENCE_FREQUENCY_PENALTY, MAX_PRESENCE_FREQUENCY_PENALTY)) {
    return `presence_penalty must be in ${penaltyRange} (found ${p.presencePenalty})`;
  }
  if (!inRange(p.frequencyPenalty, -MAX_PRESENCE_FREQUENCY_PENALTY, MAX_PRESENCE_FREQUENCY_PENALTY)) {
    return `frequency_penalty must be in ${penaltyRange} (found ${p.frequencyPenalty})`;
  }
  if (p.logitBias !== null) {
    for (const [id, bias] of p.logitBias) {
      if (!isInt(id) || id < 0 || id >= vocabSize) return `logit_bias has token id ${id}, outside the vocabulary [0, ${vocabSize})`;
      if (!inRange(bias, -MAX_LOGIT_BIAS, MAX_LOGIT_BIAS)) {
        return `logit_bias for token ${id} must be in [-${MAX_LOGIT_BIAS}, ${MAX_LOGIT_BIAS}] (found ${bias})`;
      }
    }
  }
  if (p.seed !== null && !isInt(p.seed)) return `seed must be an integer (found ${p.seed})`;
  if (p.logprobs !== null && (!isInt(p.logprobs) || p.logprobs < 0 || p.logprobs > MAX_LOGPROBS)) {
    return `logprobs must be an integer in [0, ${MAX_LOGPROBS}] (found ${p.logprobs})`;
  }
  if (!isInt(p.maxTokens) || p.maxTokens < 1) return `max_tokens must be an integer >= 1 (found ${p.maxTokens})`;
  if (p.stop.length > MAX_STOP_STRINGS) return `stop has ${p.stop.length} strings; at most ${MAX_STOP_STRINGS} are allowed`;
  if (p.stop.some((s) => s.length === 0)) return 'stop strings must not be empty';
  for (const id of p.stopTokenIds) {
    if (!isInt(id) || id < 0 || id >= vocabSize) return `stop_token_ids has token id ${id}, outside the vocabulary [0, ${vocabSize})`;
  }
  return null;
}
