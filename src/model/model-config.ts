/** Architecture families the graph builder can emit. */
export type Architecture = 'llama' | 'mistral' | 'qwen2' | 'qwen3';

/** Llama 3 style frequency-dependent RoPE scaling (`rope_scaling.rope_type = "llama3"`). */
export interface Llama3RopeScaling {
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/**
 * The decoder's shape and math, normalized from a Hugging Face `config.json`.
 * Every field the graph builder and the reference forward pass read is here, so neither looks at raw JSON.
 */
export interface ModelConfig {
  architecture: Architecture;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: Llama3RopeScaling | null;
  maxPositionEmbeddings: number;
  /** lm_head shares the embedding matrix (no `lm_head.weight` tensor). */
  tieWordEmbeddings: boolean;
  /** q/k/v projections have biases (Qwen2). */
  attentionBias: boolean;
  /** RMSNorm over each head of q and k before RoPE (Qwen3). */
  qkNorm: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

/** The seven LoRA-targetable projections of a decoder layer, in HF module names. */
export const PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];

/** [in, out] features of a projection. */
export function projectionShape(config: ModelConfig, projection: Projection): [number, number] {
  const h = config.hiddenSize;
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  switch (projection) {
    case 'q_proj': return [h, q];
    case 'k_proj': return [h, kv];
    case 'v_proj': return [h, kv];
    case 'o_proj': return [q, h];
    case 'gate_proj': return [h, config.intermediateSize];
    case 'up_proj': return [h, config.intermediateSize];
    case 'down_proj': return [config.intermediateSize, h];
  }
}

/** HF tensor name of a projection's weight (stored [out, in]). */
export function projectionWeightName(layer: number, projection: Projection): string {
  const block = projection === 'gate_proj' || projection === 'up_proj' || projection === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${block}.${projection}.weight`;
}
