import { describe, expect, it } from 'vitest';
import { CheckpointError } from '../../src/model/checkpoint-error.js';
import { parseModelConfig } from '../../src/model/hf-config.js';

// Published config.json files, trimmed of fields the parser does not read.
const llama32 = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: 128001,
  head_dim: 64,
  hidden_act: 'silu',
  hidden_size: 2048,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  vocab_size: 128256,
};
const mistral7b = {
  architectures: ['MistralForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: 'mistral',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  vocab_size: 32000,
};
const qwen25 = {
  architectures: ['Qwen2ForCausalLM'],
  bos_token_id: 151643,
  eos_token_id: 151645,
  hidden_act: 'silu',
  hidden_size: 896,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 21,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  use_sliding_window: false,
  vocab_size: 151936,
};
const qwen3 = {
  architectures: ['Qwen3ForCausalLM'],
  attention_bias: false,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 1024,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: 'qwen3',
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

function without(config: Record<string, unknown>, ...fields: string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(config).filter(([key]) => !fields.includes(key)));
}

function parseError(config: unknown, generation?: unknown, source?: string): string {
  try {
    parseModelConfig(config, generation, source);
  } catch (err) {
    expect(err).toBeInstanceOf(CheckpointError);
    return (err as Error).message;
  }
  throw new Error('expected the config to be refused');
}

describe('parseModelConfig', () => {
  it('maps Llama 3.2 with llama3 rope scaling, explicit head_dim and tied embeddings', () => {
    expect(parseModelConfig(llama32)).toEqual({
      architecture: 'llama',
      hiddenSize: 2048,
      intermediateSize: 8192,
      numLayers: 16,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 64,
      vocabSize: 128256,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      ropeScaling: { factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
      maxPositionEmbeddings: 131072,
      tieWordEmbeddings: true,
      attentionBias: false,
      qkNorm: false,
      bosTokenId: 128000,
      eosTokenIds: [128001],
    });
  });

  it('lets generation_config.json override bos/eos, with eos as a list', () => {
    const config = parseModelConfig(llama32, { bos_token_id: 128000, eos_token_id: [128001, 128008, 128009], temperature: 0.6 });
    expect(config.eosTokenIds).toEqual([128001, 128008, 128009]);
    expect(config.bosTokenId).toBe(128000);
    // Fields the generation config leaves out keep the config.json value.
    expect(parseModelConfig(llama32, { do_sample: true }).eosTokenIds).toEqual([128001]);
  });

  it('applies defaults: kv heads = heads, head_dim = hidden / heads, rope_theta 10000, untied, no bias', () => {
    const minimal = {
      model_type: 'llama',
      hidden_size: 8,
      intermediate_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      vocab_size: 32,
      rms_norm_eps: 1e-6,
      max_position_embeddings: 64,
    };
    expect(parseModelConfig(minimal)).toMatchObject({
      architecture: 'llama',
      numKvHeads: 2,
      headDim: 4,
      ropeTheta: 10000,
      ropeScaling: null,
      tieWordEmbeddings: false,
      attentionBias: false,
      qkNorm: false,
      bosTokenId: null,
      eosTokenIds: [],
    });
    expect(parseModelConfig({ ...minimal, attention_bias: true }).attentionBias).toBe(true);
    expect(parseModelConfig({ ...minimal, rope_scaling: { rope_type: 'default' } }).ropeScaling).toBeNull();
  });

  it('maps Mistral and caps the context at an active sliding window', () => {
    const config = parseModelConfig(mistral7b);
    expect(config).toMatchObject({ architecture: 'mistral', headDim: 128, tieWordEmbeddings: false, attentionBias: false, qkNorm: false });
    expect(config.maxPositionEmbeddings).toBe(4096);
    expect(parseModelConfig({ ...mistral7b, sliding_window: null }).maxPositionEmbeddings).toBe(32768);
    // Mistral NeMo style: head_dim given and not hidden / heads.
    expect(parseModelConfig({ ...mistral7b, hidden_size: 5120, head_dim: 128 }).headDim).toBe(128);
    expect(parseModelConfig({ ...mistral7b, head_dim: null }).headDim).toBe(128);
  });

  it('maps Qwen2 with q/k/v biases and tied embeddings; the window only caps when use_sliding_window is on', () => {
    const config = parseModelConfig(qwen25, { bos_token_id: 151643, eos_token_id: [151645, 151643] });
    expect(config).toMatchObject({
      architecture: 'qwen2',
      headDim: 64,
      numKvHeads: 2,
      attentionBias: true,
      tieWordEmbeddings: true,
      qkNorm: false,
      ropeTheta: 1000000,
      maxPositionEmbeddings: 32768,
      eosTokenIds: [151645, 151643],
    });
    expect(parseModelConfig({ ...qwen25, sliding_window: 4096 }).maxPositionEmbeddings).toBe(32768);
    expect(parseModelConfig({ ...qwen25, sliding_window: 4096, use_sliding_window: true }).maxPositionEmbeddings).toBe(4096);
  });

  it('maps Qwen3 with explicit head_dim and q/k norm', () => {
    expect(parseModelConfig(qwen3)).toMatchObject({
      architecture: 'qwen3',
      hiddenSize: 1024,
      numHeads: 16,
      headDim: 128,
      qkNorm: true,
      attentionBias: false,
      tieWordEmbeddings: true,
      ropeScaling: null,
      maxPositionEmbeddings: 40960,
    });
    expect(parseModelConfig({ ...qwen3, attention_bias: true }).attentionBias).toBe(true);
    expect(parseModelConfig({ ...qwen3, tie_word_embeddings: false }).tieWordEmbeddings).toBe(false);
  });

  it('falls back to model_type when architectures is absent', () => {
    const rest = without(qwen3, 'architectures');
    expect(parseModelConfig(rest).architecture).toBe('qwen3');
    expect(parseError({ ...rest, model_type: 'gemma' })).toMatch(/unsupported architecture gemma/);
  });

  it('reads rope settings from Transformers 5 rope_parameters', () => {
    const rest = without(llama32, 'rope_scaling', 'rope_theta');
    const config = parseModelConfig({ ...rest, rope_parameters: { ...llama32.rope_scaling, rope_theta: 500000 } });
    expect(config.ropeTheta).toBe(500000);
    expect(config.ropeScaling).toEqual({ factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    expect(parseModelConfig({ ...rest, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } })).toMatchObject({ ropeTheta: 1e6, ropeScaling: null });
  });

  it('refuses unsupported architectures, naming them and the supported ones', () => {
    expect(parseError({ ...llama32, architectures: ['GPT2LMHeadModel'] }, undefined, '/m/config.json')).toBe(
      '/m/config.json: unsupported architecture GPT2LMHeadModel (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)',
    );
    expect(parseError({ ...llama32, architectures: [] })).toMatch(/^config\.json: architectures must be a non-empty list of strings/);
    expect(parseError([])).toBe('config.json: not a JSON object');
  });

  it('refuses rope scaling other than llama3, naming the type', () => {
    expect(parseError({ ...llama32, rope_scaling: { rope_type: 'yarn', factor: 4 } })).toBe(
      'config.json: unsupported rope_scaling type "yarn" (supported: "default", "llama3")',
    );
    expect(parseError({ ...qwen25, rope_scaling: { type: 'linear', factor: 2 } })).toMatch(/unsupported rope_scaling type "linear"/);
    expect(parseError({ ...llama32, rope_scaling: { ...llama32.rope_scaling, low_freq_factor: undefined } })).toMatch(/missing rope_scaling\.low_freq_factor/);
  });

  it('refuses missing or invalid numeric fields, naming the field', () => {
    expect(parseError(without(qwen25, 'hidden_size'))).toBe('config.json: missing hidden_size');
    expect(parseError({ ...qwen25, num_attention_heads: '14' })).toBe('config.json: num_attention_heads must be a positive integer (found "14")');
    expect(parseError({ ...qwen25, vocab_size: 0 })).toMatch(/vocab_size must be a positive integer \(found 0\)/);
    expect(parseError({ ...qwen25, rms_norm_eps: -1 })).toMatch(/rms_norm_eps must be a positive number/);
    expect(parseError({ ...qwen25, num_key_value_heads: 3 })).toMatch(/num_attention_heads \(14\) is not a multiple of num_key_value_heads \(3\)/);
    expect(parseError({ ...qwen25, hidden_size: 900 })).toMatch(/hidden_size \(900\) is not a multiple of num_attention_heads \(14\)/);
    expect(parseError({ ...qwen25, tie_word_embeddings: 'yes' })).toMatch(/tie_word_embeddings must be a boolean/);
    expect(parseError({ ...qwen25, eos_token_id: [1, -2] })).toMatch(/eos_token_id must be a non-negative integer or a list of them/);
  });

  it('names generation_config.json for its own errors', () => {
    expect(parseError(qwen25, { eos_token_id: 'x' }, '/m/config.json')).toMatch(/^\/m\/generation_config\.json: eos_token_id must be/);
  });

  it('refuses math the decoder does not do', () => {
    expect(parseError({ ...llama32, hidden_act: 'gelu' })).toBe('config.json: unsupported hidden_act "gelu" (supported: "silu")');
    expect(parseError({ ...llama32, mlp_bias: true })).toMatch(/unsupported mlp_bias = true/);
    expect(parseError({ ...qwen25, quantization_config: { quant_method: 'gptq', bits: 4 } })).toMatch(
      /quantized checkpoints are not supported \(quantization_config\.quant_method = "gptq"\)/,
    );
  });
});
