import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/model/checkpoint.js';
import { projectionShape, projectionWeightName, PROJECTIONS } from '../../src/model/model-config.js';
import type { ModelConfig, Projection } from '../../src/model/model-config.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { referenceGreedy, referenceLogits } from './reference-model.js';
import type { LoraDelta, LoraLookup, WeightSource } from './reference-model.js';

function config(overrides: Partial<ModelConfig>): ModelConfig {
  return {
    architecture: 'llama',
    hiddenSize: 2,
    intermediateSize: 1,
    numLayers: 1,
    numHeads: 1,
    numKvHeads: 1,
    headDim: 2,
    vocabSize: 2,
    rmsNormEps: 0,
    ropeTheta: 10000,
    ropeScaling: null,
    maxPositionEmbeddings: 64,
    tieWordEmbeddings: false,
    attentionBias: false,
    qkNorm: false,
    bosTokenId: null,
    eosTokenIds: [],
    ...overrides,
  };
}

function source(tensors: Record<string, number[] | Float32Array>): WeightSource {
  return {
    has: (name) => Object.hasOwn(tensors, name),
    read: (name) => {
      if (!Object.hasOwn(tensors, name)) throw new Error(`no tensor ${name}`);
      return Float32Array.from(tensors[name]);
    },
  };
}

/** Seeded uniform values in [center - 0.5, center + 0.5). */
function uniform(seed: number): (n: number, center?: number) => Float32Array {
  let state = seed >>> 0;
  return (n, center = 0) =>
    Float32Array.from({ length: n }, () => {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
      return center + state / 2 ** 32 - 0.5;
    });
}

/** Every tensor of `cfg`, random (norm weights around 1). */
function randomTensors(cfg: ModelConfig, seed: number): Record<string, Float32Array> {
  const random = uniform(seed);
  const { hiddenSize: h, vocabSize: v, headDim: d } = cfg;
  const tensors: Record<string, Float32Array> = {
    'model.embed_tokens.weight': random(v * h),
    'model.norm.weight': random(h, 1),
    'lm_head.weight': random(v * h),
  };
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    const prefix = `model.layers.${layer}`;
    tensors[`${prefix}.input_layernorm.weight`] = random(h, 1);
    tensors[`${prefix}.post_attention_layernorm.weight`] = random(h, 1);
    tensors[`${prefix}.self_attn.q_norm.weight`] = random(d, 1);
    tensors[`${prefix}.self_attn.k_norm.weight`] = random(d, 1);
    for (const projection of PROJECTIONS) {
      const [inFeatures, outFeatures] = projectionShape(cfg, projection);
      tensors[projectionWeightName(layer, projection)] = random(outFeatures * inFeatures);
      tensors[`${prefix}.self_attn.${projection}.bias`] = random(outFeatures);
    }
  }
  return tensors;
}

const randomConfig = config({
  hiddenSize: 16,
  intermediateSize: 24,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 4,
  vocabSize: 11,
  rmsNormEps: 1e-6,
});

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) expect(Math.abs(actual[i] - expected[i])).toBeLessThan(tolerance);
}

describe('referenceLogits, by hand', () => {
  // One layer, one head of dim 2, identity q/k/v/o, zero MLP, eps 0: every step below is plain arithmetic.
  // Token 0 embeds to [1, 1], token 1 to [1, -1]; both already have unit RMS, so q = k = v = the embedding.
  const identity = [1, 0, 0, 1];
  const handTensors: Record<string, number[]> = {
    'model.embed_tokens.weight': [1, 1, 1, -1],
    'model.layers.0.input_layernorm.weight': [1, 1],
    'model.layers.0.self_attn.q_proj.weight': identity,
    'model.layers.0.self_attn.k_proj.weight': identity,
    'model.layers.0.self_attn.v_proj.weight': identity,
    'model.layers.0.self_attn.o_proj.weight': identity,
    'model.layers.0.post_attention_layernorm.weight': [1, 1],
    'model.layers.0.mlp.gate_proj.weight': [0, 0],
    'model.layers.0.mlp.up_proj.weight': [0, 0],
    'model.layers.0.mlp.down_proj.weight': [0, 0],
    'model.norm.weight': [1, 2],
    'lm_head.weight': identity,
  };
  const handWeights = source(handTensors);

  it('attends causally with rotate_half RoPE, softmax and RMSNorm', () => {
    const [first, second] = referenceLogits(config({}), handWeights, [0, 1]);

    // Position 0 sees only itself: h = [1, 1] + v0 = [2, 2]; RMS 2 → [1, 1]; norm weight [1, 2].
    expectClose(first, [1, 2], 1e-6);

    // Position 1: headDim 2 has one frequency, 1, so q1 and k1 are [1, -1] rotated by 1 radian
    // ([cos 1 + sin 1, sin 1 - cos 1]) and k0 = [1, 1] is unrotated.
    // Scores (scale 1/√2): q1·k0 = 2 sin 1 → √2 sin 1; q1·k1 = |q1|² = 2 → √2.
    const p0 = 1 / (1 + Math.exp(Math.SQRT2 * (1 - Math.sin(1))));
    // Attention output p0·[1, 1] + (1 − p0)·[1, −1] = [1, 2p0 − 1]; plus the residual [1, −1]:
    const h = [2, 2 * p0 - 2];
    const rms = Math.sqrt((h[0] ** 2 + h[1] ** 2) / 2);
    expectClose(second, [h[0] / rms, (2 * h[1]) / rms], 1e-6);
  });

  it('adds q/k/v biases and applies the per-head q/k RMSNorm before RoPE', () => {
    const weights = source({
      ...handTensors,
      'model.layers.0.self_attn.q_proj.weight': [3, 0, 0, 3],
      'model.layers.0.self_attn.k_proj.weight': [5, 0, 0, 5],
      'model.layers.0.self_attn.q_proj.bias': [0, 0],
      'model.layers.0.self_attn.k_proj.bias': [0, 0],
      'model.layers.0.self_attn.v_proj.bias': [0.5, 0],
      'model.layers.0.self_attn.q_norm.weight': [2, 1],
      'model.layers.0.self_attn.k_norm.weight': [1, 1],
    });
    const [first, second] = referenceLogits(config({ attentionBias: true, qkNorm: true }), weights, [0, 1]);

    // The norms undo the 3× and 5×, then q is scaled by [2, 1]; v gains [0.5, 0].
    // Position 0: h = [1, 1] + [1.5, 1] = [2.5, 2].
    const h0 = [2.5, 2];
    const rms0 = Math.sqrt((h0[0] ** 2 + h0[1] ** 2) / 2);
    expectClose(first, [h0[0] / rms0, (2 * h0[1]) / rms0], 1e-6);

    // Position 1: q1 = [2, −1] rotated by 1 radian = [2 cos 1 + sin 1, 2 sin 1 − cos 1]; k0 = [1, 1]; k1 = [1, −1] rotated.
    // q1·k0 = cos 1 + 3 sin 1; q1·k1 = [2, −1]·[1, −1] = 3 (the same rotation on both). Scale 1/√2.
    const p0 = 1 / (1 + Math.exp((3 - Math.cos(1) - 3 * Math.sin(1)) / Math.SQRT2));
    // Attention output p0·[1.5, 1] + (1 − p0)·[1.5, −1]; plus the residual [1, −1]:
    const h1 = [2.5, 2 * p0 - 2];
    const rms1 = Math.sqrt((h1[0] ** 2 + h1[1] ** 2) / 2);
    expectClose(second, [h1[0] / rms1, (2 * h1[1]) / rms1], 1e-6);
  });

  it('adds scale · (x·Aᵀ)·Bᵀ to the projection the lookup targets', () => {
    // Rank 1 on o_proj at layer 0: A = [1, 0] picks x[0], B = [[0], [1]] writes it to y[1].
    const delta: LoraDelta = { a: Float32Array.from([1, 0]), b: Float32Array.from([0, 1]), rank: 1, scale: 0.5 };
    const [logits] = referenceLogits(config({}), handWeights, [0], (layer, projection) =>
      layer === 0 && projection === 'o_proj' ? delta : null,
    );
    // o_proj output [1, 1] + 0.5·[0, 1] = [1, 1.5]; h = [2, 2.5]; RMS √((4 + 6.25) / 2).
    const rms = Math.sqrt((4 + 6.25) / 2);
    expectClose(logits, [2 / rms, (2 * 2.5) / rms], 1e-6);
  });

  it('runs the SwiGLU MLP as down(silu(gate(x)) · up(x))', () => {
    const weights = source({
      ...handTensors,
      'model.layers.0.self_attn.v_proj.weight': [0, 0, 0, 0],
      'model.layers.0.mlp.gate_proj.weight': [2, 0],
      'model.layers.0.mlp.up_proj.weight': [0, 3],
      'model.layers.0.mlp.down_proj.weight': [1, 0],
      'model.norm.weight': [1, 1],
    });
    // Token 0: attention adds 0, so h = [1, 1] and its norm is [1, 1]; gate 2, up 3 → silu(2)·3 to y[0].
    const [logits] = referenceLogits(config({}), weights, [0]);
    const h = [1 + (2 / (1 + Math.exp(-2))) * 3, 1];
    const rms = Math.sqrt((h[0] ** 2 + h[1] ** 2) / 2);
    expectClose(logits, [h[0] / rms, h[1] / rms], 1e-6);
  });
});

describe('referenceLogits, by equivalence', () => {
  const weights = randomTensors(randomConfig, 7);
  const tokens = [3, 1, 4, 1, 5, 9, 2, 6];

  it('maps query head h to kv head h / (numHeads / numKvHeads), as GQA with duplicated kv heads', () => {
    // The same model with every kv head stored twice (kv head j of the MHA copy is j / 2 of the GQA one).
    const mha = { ...randomConfig, numKvHeads: randomConfig.numHeads };
    const duplicated = { ...weights };
    const d = randomConfig.headDim;
    const h = randomConfig.hiddenSize;
    for (let layer = 0; layer < randomConfig.numLayers; layer++) {
      for (const projection of ['k_proj', 'v_proj'] as const) {
        const rows = (tensor: Float32Array, width: number): Float32Array =>
          Float32Array.from({ length: mha.numKvHeads * d * width }, (_, i) => {
            const row = Math.floor(i / width);
            const sourceRow = Math.floor(row / d / 2) * d + (row % d);
            return tensor[sourceRow * width + (i % width)];
          });
        const weightName = projectionWeightName(layer, projection);
        const biasName = `model.layers.${layer}.self_attn.${projection}.bias`;
        duplicated[weightName] = rows(weights[weightName], h);
        duplicated[biasName] = rows(weights[biasName], 1);
      }
    }
    for (const flags of [{}, { attentionBias: true, qkNorm: true }]) {
      const gqaLogits = referenceLogits({ ...randomConfig, ...flags }, source(weights), tokens);
      const mhaLogits = referenceLogits({ ...mha, ...flags }, source(duplicated), tokens);
      gqaLogits.forEach((row, i) => expectClose(row, mhaLogits[i], 1e-12));
    }
  });

  it('gives the same logits with a LoRA delta as with W + scale·B·A merged into the base', () => {
    const rank = 3;
    const scale = 0.75;
    const targets: Projection[] = ['q_proj', 'v_proj', 'down_proj'];
    const deltas = new Map<string, LoraDelta>();
    const merged = { ...weights };
    const random = uniform(11);
    for (let layer = 0; layer < randomConfig.numLayers; layer++) {
      for (const projection of targets) {
        const [inFeatures, outFeatures] = projectionShape(randomConfig, projection);
        const a = random(rank * inFeatures);
        const b = random(outFeatures * rank);
        deltas.set(`${layer}.${projection}`, { a, b, rank, scale });
        const name = projectionWeightName(layer, projection);
        merged[name] = weights[name].map((w, i) => {
          const o = Math.floor(i / inFeatures);
          const c = i % inFeatures;
          let ba = 0;
          for (let j = 0; j < rank; j++) ba += b[o * rank + j] * a[j * inFeatures + c];
          return w + scale * ba;
        });
      }
    }
    const withLora = referenceLogits(randomConfig, source(weights), tokens, (layer, projection) => deltas.get(`${layer}.${projection}`) ?? null);
    const withMerged = referenceLogits(randomConfig, source(merged), tokens);
    const base = referenceLogits(randomConfig, source(weights), tokens);
    withLora.forEach((row, i) => expectClose(row, withMerged[i], 1e-5));
    expect(Math.max(...withLora[tokens.length - 1].map((v, i) => Math.abs(v - base[tokens.length - 1][i])))).toBeGreaterThan(1e-2);
  });

  it('uses the embedding as lm_head when the embeddings are tied', () => {
    const tied = { ...weights, 'lm_head.weight': weights['model.embed_tokens.weight'] };
    const withoutHead = { ...weights };
    delete withoutHead['lm_head.weight'];
    const expected = referenceLogits(randomConfig, source(tied), tokens);
    const actual = referenceLogits({ ...randomConfig, tieWordEmbeddings: true }, source(withoutHead), tokens);
    expect(actual).toEqual(expected);
  });
});

describe('referenceGreedy', () => {
  const weights = source(randomTensors(randomConfig, 5));

  it('returns the argmax of the full-sequence logits at every generated position', () => {
    const prompt = [1, 2, 3];
    const generated = referenceGreedy(randomConfig, weights, prompt, 6);
    expect(generated).toHaveLength(6);
    const logits = referenceLogits(randomConfig, weights, [...prompt, ...generated.slice(0, -1)]);
    const argmaxes = logits.slice(prompt.length - 1).map((row) => row.indexOf(Math.max(...row)));
    expect(generated).toEqual(argmaxes);
  });

  it('refuses an empty prompt and token ids outside the vocabulary', () => {
    expect(() => referenceGreedy(randomConfig, weights, [], 1)).toThrow(/prompt is empty/);
    expect(() => referenceGreedy(randomConfig, weights, [0, 11], 1)).toThrow(/token id 11 is outside the vocabulary \[0, 11\)/);
  });
});

describe('reference model errors', () => {
  it('names a missing tensor, a wrong-sized tensor and a wrong-sized LoRA factor', () => {
    const tensors = randomTensors(randomConfig, 3);
    const missing = { ...tensors };
    delete missing['model.layers.1.post_attention_layernorm.weight'];
    expect(() => referenceLogits(randomConfig, source(missing), [0])).toThrow(
      'reference model: tensor model.layers.1.post_attention_layernorm.weight is missing',
    );
    const short = { ...tensors, 'model.norm.weight': new Float32Array(15) };
    expect(() => referenceLogits(randomConfig, source(short), [0])).toThrow('tensor model.norm.weight has 15 elements, expected 16');
    const delta: LoraDelta = { a: new Float32Array(2 * 16), b: new Float32Array(2 * 15), rank: 2, scale: 1 };
    expect(() => referenceLogits(randomConfig, source(tensors), [0], () => delta)).toThrow(
      'LoRA for layer 0 q_proj: B has 30 elements, expected [16, 2]',
    );
  });
});

const FIXTURES = fileURLToPath(new URL('../fixtures/hf/', import.meta.url));

interface ExpectedCase {
  model: string;
  adapter: string | null;
  prompt_ids: number[];
  greedy_ids: number[];
  /** [token id, logit] of the first generated position, best first. */
  first_logits_top5: [number, number][];
  min_margin: number;
}

/**
 * PEFT LoRA for the fixture adapters, read just far enough for this test: the modules targeted are those with
 * tensors, the rank is A's row count (so rank_pattern is already applied), and the scale is
 * alpha / r (alpha / √r with use_rslora), alpha taken from the first alpha_pattern key K matching `(.*\.)?K$`.
 */
function fixtureLora(dir: string, numLayers: number): LoraLookup {
  const adapterConfig = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as {
    lora_alpha: number;
    use_rslora?: boolean;
    alpha_pattern?: Record<string, number>;
    fan_in_fan_out?: boolean;
  };
  if (adapterConfig.fan_in_fan_out) throw new Error(`${dir}: fan_in_fan_out adapters are not read by this test`);
  const file = SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  const deltas = new Map<string, LoraDelta>();
  try {
    for (let layer = 0; layer < numLayers; layer++) {
      for (const projection of PROJECTIONS) {
        const module = projectionWeightName(layer, projection).replace(/\.weight$/, '');
        const aName = `base_model.model.${module}.lora_A.weight`;
        if (!file.has(aName)) continue;
        const rank = file.info(aName).shape[0];
        const patternKey = Object.keys(adapterConfig.alpha_pattern ?? {}).find((key) => new RegExp(`^(.*\\.)?${key}$`).test(module));
        const alpha = patternKey === undefined ? adapterConfig.lora_alpha : (adapterConfig.alpha_pattern ?? {})[patternKey];
        deltas.set(`${layer}.${projection}`, {
          a: file.read(aName),
          b: file.read(`base_model.model.${module}.lora_B.weight`),
          rank,
          scale: alpha / (adapterConfig.use_rslora ? Math.sqrt(rank) : rank),
        });
      }
    }
  } finally {
    file.close();
  }
  if (deltas.size === 0) throw new Error(`${dir}: no LoRA tensors for any decoder projection`);
  return (layer, projection) => deltas.get(`${layer}.${projection}`) ?? null;
}

describe('reference model against the PyTorch fixtures (test/fixtures/hf)', () => {
  const expected = JSON.parse(readFileSync(join(FIXTURES, 'expected.json'), 'utf8')) as { cases: ExpectedCase[] };

  it.each(expected.cases.map((c) => [`${c.model} ${c.adapter ?? 'base'}`, c] as const))('%s', (_, c) => {
    const checkpoint = Checkpoint.open(join(FIXTURES, c.model));
    try {
      const lora = c.adapter === null ? undefined : fixtureLora(join(FIXTURES, 'adapters', c.adapter), checkpoint.config.numLayers);
      expect(referenceGreedy(checkpoint.config, checkpoint, c.prompt_ids, c.greedy_ids.length, lora)).toEqual(c.greedy_ids);

      const first = referenceLogits(checkpoint.config, checkpoint, c.prompt_ids, lora)[c.prompt_ids.length - 1];
      const top5 = [...first.keys()].sort((x, y) => first[y] - first[x]).slice(0, 5);
      expect(top5).toEqual(c.first_logits_top5.map(([id]) => id));
      for (const [id, logit] of c.first_logits_top5) {
        // Relative 1e-4, floored at magnitude 1 so a logit near zero is not held to a vanishing absolute error.
        expect(Math.abs(first[id] - logit)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(logit)));
      }
    } finally {
      checkpoint.close();
    }
  });
});
