import type { GenerationRequest } from '../engine/engine-types.js';
import type { SamplingParams } from '../engine/sampling-params.js';
import { DEFAULT_SAMPLING, validateSamplingParams } from '../engine/sampling-params.js';
import { ApiError } from '../errors.js';

/** Sampling fields shared by /v1/completions and /v1/chat/completions (OpenAI names, plus vLLM's extensions). */
export interface OpenAiSamplingFields {
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  repetition_penalty?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  logit_bias?: Record<string, number> | null;
  seed?: number | null;
  stop?: string | string[] | null;
  stop_token_ids?: number[] | null;
  ignore_eos?: boolean | null;
}

/** Prefix cache fields of /v1/completions and /v1/chat/completions: vLLM's `cache_salt`, llama.cpp's `cache_prompt`. */
export interface PrefixCacheFields {
  cache_salt?: string | null;
  cache_prompt?: boolean | null;
}

/** The engine's prefix options for a request: `cache_prompt` false opts out, `cache_salt` keys its blocks apart. */
export function prefixUse(body: PrefixCacheFields): GenerationRequest['prefix'] {
  return { ...(body.cache_prompt === false ? { use: false } : {}), ...(body.cache_salt != null ? { salt: body.cache_salt } : {}) };
}

/** TGI/LoRAX `parameters` of /generate. */
export interface TgiParameters {
  adapter_id?: string | null;
  max_new_tokens?: number | null;
  do_sample?: boolean | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  repetition_penalty?: number | null;
  frequency_penalty?: number | null;
  seed?: number | null;
  stop?: string[] | null;
  details?: boolean | null;
  top_n_tokens?: number | null;
  return_full_text?: boolean | null;
}

/** TGI's documented default for `max_new_tokens`. */
export const TGI_DEFAULT_MAX_NEW_TOKENS = 100;

/** SamplingParams for an OpenAI request; `maxTokens` and `logprobs` are decided by the route (they differ per API). */
export function openAiSampling(body: OpenAiSamplingFields, maxTokens: number, logprobs: number | null): SamplingParams {
  const d = DEFAULT_SAMPLING;
  return {
    temperature: body.temperature ?? d.temperature,
    topP: body.top_p ?? d.topP,
    topK: body.top_k ?? d.topK,
    minP: body.min_p ?? d.minP,
    repetitionPenalty: body.repetition_penalty ?? d.repetitionPenalty,
    presencePenalty: body.presence_penalty ?? d.presencePenalty,
    frequencyPenalty: body.frequency_penalty ?? d.frequencyPenalty,
    logitBias: logitBias(body.logit_bias ?? null),
    seed: body.seed ?? d.seed,
    logprobs,
    maxTokens,
    stop: typeof body.stop === 'string' ? [body.stop] : (body.stop ?? d.stop),
    stopTokenIds: body.stop_token_ids ?? d.stopTokenIds,
    ignoreEos: body.ignore_eos ?? d.ignoreEos,
  };
}

/** SamplingParams for a TGI request: greedy unless `do_sample`, or a temperature, top_p or top_k, asks for sampling. */
export function tgiSampling(p: TgiParameters): SamplingParams {
  const d = DEFAULT_SAMPLING;
  const sample = p.do_sample === true || p.temperature != null || p.top_p != null || p.top_k != null;
  return {
    ...d,
    temperature: sample ? (p.temperature ?? d.temperature) : 0,
    topP: p.top_p ?? d.topP,
    topK: p.top_k ?? d.topK,
    repetitionPenalty: p.repetition_penalty ?? d.repetitionPenalty,
    frequencyPenalty: p.frequency_penalty ?? d.frequencyPenalty,
    seed: p.seed ?? d.seed,
    logprobs: p.details ? (p.top_n_tokens ?? 0) : null,
    maxTokens: p.max_new_tokens ?? TGI_DEFAULT_MAX_NEW_TOKENS,
    stop: p.stop ?? d.stop,
  };
}

function logitBias(bias: Record<string, number> | null): ReadonlyMap<number, number> | null {
  if (bias === null) return null;
  const map = new Map<number, number>();
  for (const [key, value] of Object.entries(bias)) {
    if (!/^\d+$/.test(key)) throw new ApiError('invalid_request', `logit_bias keys must be token ids (found ${JSON.stringify(key)})`, 'logit_bias');
    map.set(Number(key), value);
  }
  return map;
}

/**
 * Throws invalid_request when the engine would refuse the parameters (vocabulary-dependent checks included). The
 * message names the OpenAI field; `paramPrefix` places it in the request (`parameters.` for TGI).
 */
export function checkSampling(params: SamplingParams, vocabSize: number, paramPrefix = ''): void {
  const problem = validateSamplingParams(params, vocabSize);
  if (problem === null) return;
  const field = /^[a-z_]+/.exec(problem)?.[0] ?? null;
  throw new ApiError('invalid_request', problem, field === null ? null : `${paramPrefix}${field}`);
}

/** Throws context_length_exceeded unless the prompt plus `maxTokens` fit the context. */
export function checkContextLength(promptTokens: number, maxTokens: number, contextLength: number, promptParam: string, maxTokensParam: string): void {
  if (promptTokens >= contextLength) {
    throw new ApiError(
      'context_length_exceeded',
      `This model's maximum context length is ${contextLength} tokens, but the prompt has ${promptTokens} tokens; shorten it to at most ${contextLength - 1}.`,
      promptParam,
    );
  }
  if (promptTokens + maxTokens > contextLength) {
    throw new ApiError(
      'context_length_exceeded',
      `This model's maximum context length is ${contextLength} tokens, but ${promptTokens + maxTokens} were requested ` +
        `(${promptTokens} in the prompt, ${maxTokens} for the completion); reduce ${maxTokensParam} to at most ${contextLength - promptTokens}.`,
      maxTokensParam,
    );
  }
}

/**
 * Throws invalid_request when one request needs more generations (prompts × n) than the engine queues (--max-waiting).
 * All of them wait together, so such a request could only get in while rows happen to be free: a bound of the
 * request, always refused, rather than a 429 on a busy server that no retry can get past.
 */
export function checkGenerationCount(prompts: number, n: number, maxWaiting: number, promptParam: string): void {
  if (prompts * n <= maxWaiting) return;
  throw new ApiError(
    'invalid_request',
    `this request needs ${prompts * n} generations (${prompts} prompt(s) × n ${n}), more than the server queues at once (${maxWaiting}); split it`,
    prompts > maxWaiting ? promptParam : 'n',
  );
}

/** Throws invalid_request when the prompt is empty or names a token outside the vocabulary. */
export function checkPromptIds(ids: readonly number[], vocabSize: number, param: string): void {
  if (ids.length === 0) throw new ApiError('invalid_request', 'the prompt is empty', param);
  const bad = ids.find((id) => id >= vocabSize);
  if (bad !== undefined) throw new ApiError('invalid_request', `token id ${bad} is outside the vocabulary [0, ${vocabSize})`, param);
}
