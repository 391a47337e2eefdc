import { basename, dirname, join } from 'node:path';
import { CheckpointError } from './checkpoint-error.js';
import type { Architecture, Llama3RopeScaling, ModelConfig } from './model-config.js';

const ARCHITECTURES: Readonly<Record<string, Architecture>> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
};
const MODEL_TYPES: Readonly<Record<string, Architecture>> = { llama: 'llama', mistral: 'mistral', qwen2: 'qwen2', qwen3: 'qwen3' };

type Json = Record<string, unknown>;

/**
 * Normalizes a Hugging Face `config.json` (and optionally `generation_config.json`, whose bos/eos ids win) into a
 * ModelConfig, refusing anything the decoder does not compute exactly. `source` is the config.json path for errors.
 */
export function parseModelConfig(configJson: unknown, generationConfigJson?: unknown, source = 'config.json'): ModelConfig {
  const fail = (problem: string): never => {
    throw new CheckpointError(source, problem);
  };
  const raw = asObject(configJson) ?? fail('not a JSON object');
  const architecture = parseArchitecture(raw, fail);

  if (raw.quantization_config !== undefined && raw.quantization_config !== null) {
    const method = asObject(raw.quantization_config)?.quant_method;
    fail(`quantized checkpoints are not supported (quantization_config.quant_method = ${JSON.stringify(method)}); use an F32, F16 or BF16 checkpoint`);
  }
  const hiddenAct = raw.hidden_act ?? 'silu';
  if (hiddenAct !== 'silu') fail(`unsupported hidden_act ${JSON.stringify(hiddenAct)} (supported: "silu")`);
  if (raw.mlp_bias === true) fail('unsupported mlp_bias = true (MLP projections without bias only)');

  const hiddenSize = positiveInt(raw, 'hidden_size', fail);
  const numHeads = positiveInt(raw, 'num_attention_heads', fail);
  const numKvHeads = raw.num_key_value_heads == null ? numHeads : positiveInt(raw, 'num_key_value_heads', fail);
  if (numHeads % numKvHeads !== 0) fail(`num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKvHeads})`);
  let headDim: number;
  if (raw.head_dim != null) {
    headDim = positiveInt(raw, 'head_dim', fail);
  } else {
    if (hiddenSize % numHeads !== 0) fail(`hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads}) and head_dim is not given`);
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) fail(`head_dim ${headDim} is odd; rotary embeddings need an even head_dim`);

  // Transformers 5 moves rope_theta and rope_scaling into rope_parameters.
  const ropeParameters = asObject(raw.rope_parameters);
  const ropeTheta = raw.rope_theta != null ? positiveNumber(raw, 'rope_theta', fail)
    : ropeParameters?.rope_theta != null ? positiveNumber(ropeParameters, 'rope_theta', fail, 'rope_parameters.')
      : 10000;
  const ropeScaling = parseRopeScaling(raw.rope_scaling ?? ropeParameters ?? null, raw.rope_scaling != null ? 'rope_scaling' : 'rope_parameters', fail);

  let maxPositionEmbeddings = positiveInt(raw, 'max_position_embeddings', fail);
  // The decoder attends over the whole context, which matches a sliding-window model only while the context fits in
  // the window; capping the context at the window makes longer prompts get refused instead of computed wrongly.
  const slidingWindow = raw.sliding_window == null ? null : positiveInt(raw, 'sliding_window', fail);
  const windowUsed = architecture === 'mistral' || (architecture !== 'llama' && raw.use_sliding_window === true);
  if (slidingWindow !== null && windowUsed) maxPositionEmbeddings = Math.min(maxPositionEmbeddings, slidingWindow);

  let bosTokenId = optionalTokenId(raw, 'bos_token_id', fail);
  let eosTokenIds = tokenIds(raw, 'eos_token_id', fail);
  if (generationConfigJson !== undefined) {
    const generationSource = basename(source) === 'config.json' ? join(dirname(source), 'generation_config.json') : `${source} (generation config)`;
    const failGeneration = (problem: string): never => {
      throw new CheckpointError(generationSource, problem);
    };
    const generation = asObject(generationConfigJson) ?? failGeneration('not a JSON object');
    if (generation.bos_token_id !== undefined) bosTokenId = optionalTokenId(generation, 'bos_token_id', failGeneration);
    if (generation.eos_token_id !== undefined) eosTokenIds = tokenIds(generation, 'eos_token_id', failGeneration);
  }

  return {
    architecture,
    hiddenSize,
    intermediateSize: positiveInt(raw, 'intermediate_size', fail),
    numLayers: positiveInt(raw, 'num_hidden_layers', fail),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: positiveInt(raw, 'vocab_size', fail),
    rmsNormEps: positiveNumber(raw, 'rms_norm_eps', fail),
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings,
    tieWordEmbeddings: optionalBoolean(raw, 'tie_word_embeddings', false, fail),
    // Qwen2 always has q/k/v biases; Mistral never does; Llama and Qwen3 say so in attention_bias.
    attentionBias: architecture === 'qwen2' || (architecture !== 'mistral' && optionalBoolean(raw, 'attention_bias', false, fail)),
    qkNorm: architecture === 'qwen3',
    bosTokenId,
    eosTokenIds,
  };
}

function parseArchitecture(raw: Json, fail: (problem: string) => never): Architecture {
  const supported = Object.keys(ARCHITECTURES).join(', ');
  if (raw.architectures !== undefined) {
    const list = raw.architectures;
    if (!Array.isArray(list) || list.length === 0 || typeof list[0] !== 'string') {
      fail(`architectures must be a non-empty list of strings (found ${JSON.stringify(list)})`);
    }
    const name = (list as string[])[0];
    return ARCHITECTURES[name] ?? fail(`unsupported architecture ${name} (supported: ${supported})`);
  }
  if (typeof raw.model_type !== 'string') fail(`neither architectures nor model_type is given (supported: ${supported})`);
  const modelType = raw.model_type as string;
  return MODEL_TYPES[modelType] ?? fail(`unsupported architecture ${modelType} (supported: ${supported})`);
}

function parseRopeScaling(value: unknown, field: string, fail: (problem: string) => never): Llama3RopeScaling | null {
  if (value === null) return null;
  const scaling = asObject(value) ?? fail(`${field} must be an object or null`);
  const type = scaling.rope_type ?? scaling.type ?? 'default';
  if (type === 'default') return null;
  if (type !== 'llama3') fail(`unsupported ${field} type ${JSON.stringify(type)} (supported: "default", "llama3")`);
  const prefix = `${field}.`;
  return {
    factor: positiveNumber(scaling, 'factor', fail, prefix),
    lowFreqFactor: positiveNumber(scaling, 'low_freq_factor', fail, prefix),
    highFreqFactor: positiveNumber(scaling, 'high_freq_factor', fail, prefix),
    originalMaxPositionEmbeddings: positiveInt(scaling, 'original_max_position_embeddings', fail, prefix),
  };
}

function asObject(value: unknown): Json | null {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : null;
}

function positiveInt(raw: Json, field: string, fail: (problem: string) => never, prefix = ''): number {
  const value = raw[field];
  if (value === undefined) fail(`missing ${prefix}${field}`);
  if (!Number.isSafeInteger(value) || (value as number) <= 0) fail(`${prefix}${field} must be a positive integer (found ${JSON.stringify(value)})`);
  return value as number;
}

function positiveNumber(raw: Json, field: string, fail: (problem: string) => never, prefix = ''): number {
  const value = raw[field];
  if (value === undefined) fail(`missing ${prefix}${field}`);
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) fail(`${prefix}${field} must be a positive number (found ${JSON.stringify(value)})`);
  return value as number;
}

function optionalBoolean(raw: Json, field: string, fallback: boolean, fail: (problem: string) => never): boolean {
  const value = raw[field];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'boolean') fail(`${field} must be a boolean (found ${JSON.stringify(value)})`);
  return value as boolean;
}

function isTokenId(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function optionalTokenId(raw: Json, field: string, fail: (problem: string) => never): number | null {
  const value = raw[field];
  if (value === undefined || value === null) return null;
  if (!isTokenId(value)) fail(`${field} must be a non-negative integer or null (found ${JSON.stringify(value)})`);
  return value as number;
}

function tokenIds(raw: Json, field: string, fail: (problem: string) => never): number[] {
  const value = raw[field];
  if (value === undefined || value === null) return [];
  const list = Array.isArray(value) ? value : [value];
  if (!list.every(isTokenId)) fail(`${field} must be a non-negative integer or a list of them (found ${JSON.stringify(value)})`);
  return [...new Set(list as number[])];
}
