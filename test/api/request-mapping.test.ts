import { describe, expect, it } from 'vitest';
import { checkContextLength, checkPromptIds, checkSampling, openAiSampling, tgiSampling } from '../../src/api/request-mapping.js';
import { DEFAULT_SAMPLING } from '../../src/engine/sampling-params.js';
import { refusal } from './refusal.js';

describe('openAiSampling', () => {
  it('uses the engine defaults for absent and null fields', () => {
    expect(openAiSampling({ temperature: null, stop: null }, 16, null)).toEqual({ ...DEFAULT_SAMPLING, maxTokens: 16 });
  });

  it('maps every OpenAI and vLLM field', () => {
    const p = openAiSampling({
      temperature: 0.5, top_p: 0.9, top_k: 40, min_p: 0.05, repetition_penalty: 1.1, presence_penalty: 0.5, frequency_penalty: -0.5,
      logit_bias: { '7': 5, '11': -100 }, seed: 42, stop: 'END', stop_token_ids: [3], ignore_eos: true,
    }, 32, 2);
    expect(p).toEqual({
      temperature: 0.5, topP: 0.9, topK: 40, minP: 0.05, repetitionPenalty: 1.1, presencePenalty: 0.5, frequencyPenalty: -0.5,
      logitBias: new Map([[7, 5], [11, -100]]), seed: 42, logprobs: 2, maxTokens: 32, stop: ['END'], stopTokenIds: [3], ignoreEos: true,
    });
  });

  it('refuses logit_bias keys that are not token ids', () => {
    const err = refusal(() => openAiSampling({ logit_bias: { hello: 1 } }, 16, null));
    expect(err).toMatchObject({ code: 'invalid_request', param: 'logit_bias' });
  });
});

describe('tgiSampling', () => {
  it('is greedy with TGI defaults unless sampling is asked for', () => {
    expect(tgiSampling({})).toEqual({ ...DEFAULT_SAMPLING, temperature: 0, maxTokens: 100 });
    expect(tgiSampling({ do_sample: true }).temperature).toBe(1);
    expect(tgiSampling({ top_k: 5 })).toMatchObject({ temperature: 1, topK: 5 });
    expect(tgiSampling({ temperature: 0.7, max_new_tokens: 8, stop: ['\n'], seed: 3 })).toMatchObject({ temperature: 0.7, maxTokens: 8, stop: ['\n'], seed: 3 });
  });

  it('asks for logprobs only with details', () => {
    expect(tgiSampling({ top_n_tokens: 3 }).logprobs).toBeNull();
    expect(tgiSampling({ details: true }).logprobs).toBe(0);
    expect(tgiSampling({ details: true, top_n_tokens: 3 }).logprobs).toBe(3);
  });
});

describe('checks', () => {
  it('names the field the engine would refuse, under the given prefix', () => {
    const params = { ...DEFAULT_SAMPLING, stopTokenIds: [999] };
    expect(refusal(() => checkSampling(params, 300))).toMatchObject({ code: 'invalid_request', param: 'stop_token_ids' });
    expect(refusal(() => checkSampling({ ...DEFAULT_SAMPLING, logitBias: new Map([[400, 1]]) }, 300, 'parameters.'))).toMatchObject({ param: 'parameters.logit_bias' });
    expect(() => checkSampling(DEFAULT_SAMPLING, 300)).not.toThrow();
  });

  it('refuses prompts that do not fit the context, naming the field to change', () => {
    expect(() => checkContextLength(10, 22, 32, 'prompt', 'max_tokens')).not.toThrow();
    const tooLong = refusal(() => checkContextLength(32, 1, 32, 'prompt', 'max_tokens'));
    expect(tooLong).toMatchObject({ code: 'context_length_exceeded', param: 'prompt', status: 400 });
    expect(tooLong.message).toContain('maximum context length is 32 tokens');
    const tooMuch = refusal(() => checkContextLength(10, 23, 32, 'messages', 'max_completion_tokens'));
    expect(tooMuch).toMatchObject({ code: 'context_length_exceeded', param: 'max_completion_tokens' });
    expect(tooMuch.message).toContain('reduce max_completion_tokens to at most 22');
  });

  it('refuses empty prompts and token ids outside the vocabulary', () => {
    expect(refusal(() => checkPromptIds([], 10, 'prompt'))).toMatchObject({ code: 'invalid_request', param: 'prompt' });
    expect(refusal(() => checkPromptIds([1, 10], 10, 'prompt[1]')).message).toContain('token id 10 is outside the vocabulary [0, 10)');
  });
});
