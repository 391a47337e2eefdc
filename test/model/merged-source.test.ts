import { describe, expect, it } from 'vitest';
import { f32BitsToF16 } from '../../src/adapters/lora-convert.js';
import type { LoraModule, LoraWeights } from '../../src/adapters/peft-loader.js';
import { loraModuleKey } from '../../src/adapters/peft-loader.js';
import type { BuildSource } from '../../src/model/build-cache.js';
import { foldLora, MergedSource } from '../../src/model/merged-source.js';
import type { ModelConfig, Projection } from '../../src/model/model-config.js';
import { PROJECTIONS, projectionShape, projectionWeightName } from '../../src/model/model-config.js';
import { Random } from '../../src/synth/random.js';

const CONFIG: ModelConfig = {
  architecture: 'llama', hiddenSize: 8, intermediateSize: 12, numLayers: 2, numHeads: 2, numKvHeads: 1, headDim: 4, vocabSize: 16,
  rmsNormEps: 1e-5, ropeTheta: 1e4, ropeScaling: null, maxPositionEmbeddings: 32, tieWordEmbeddings: false, attentionBias: false,
  qkNorm: false, bosTokenId: null, eosTokenIds: [],
};

const random = new Random(7);
function values(n: number): Float32Array {
  const out = new Float32Array(n);
  random.fillNormal(out, 1);
  return out;
}

/** The projections of both layers and one norm, random; each read returns a fresh copy, as a checkpoint does. */
function baseSource(digest = 'base-digest'): BuildSource {
  const stored = new Map<string, Float32Array>([['model.norm.weight', values(CONFIG.hiddenSize)]]);
  for (let layer = 0; layer < CONFIG.numLayers; layer++) {
    for (const p of PROJECTIONS) stored.set(projectionWeightName(layer, p), values(projectionShape(CONFIG, p).reduce((x, y) => x * y)));
  }
  return {
    config: CONFIG,
    digest: () => digest,
    has: (name) => stored.has(name),
    read: (name) => (stored.get(name) as Float32Array).slice(),
  };
}

function module(layer: number, projection: Projection, rank: number): LoraModule {
  const [k, n] = projectionShape(CONFIG, projection);
  return { layer, projection, rank, scale: 2, a: values(k * rank), b: values(rank * n) };
}

function adapter(modules: LoraModule[], digest = 'adapter-digest'): LoraWeights {
  return { rank: Math.max(...modules.map((m) => m.rank)), modules: new Map(modules.map((m) => [loraModuleKey(m.layer, m.projection), m])), bytes: 0, type: 'float32', digest };
}

/** `W + (a·b)ᵀ` written out as the definition, in float64. */
function naiveMerge(w: Float32Array, m: LoraModule): number[] {
  const [k, n] = projectionShape(CONFIG, m.projection);
  const out: number[] = [];
  for (let o = 0; o < n; o++) {
    for (let i = 0; i < k; i++) {
      let d = 0;
      for (let r = 0; r < m.rank; r++) d += Number(m.a[i * m.rank + r]) * Number(m.b[r * n + o]);
      out.push(w[o * k + i] + d);
    }
  }
  return out;
}

describe('MergedSource', () => {
  const q = module(0, 'q_proj', 3);
  const down = module(1, 'down_proj', 2);
  const base = baseSource();
  const merged = new MergedSource(base, adapter([q, down]));

  it('folds the adapter into each projection it targets, rounded once to fp32', () => {
    for (const m of [q, down]) {
      const name = projectionWeightName(m.layer, m.projection);
      expect(Array.from(merged.read(name))).toEqual(Array.from(Float32Array.from(naiveMerge(base.read(name), m))));
    }
  });

  it('passes every other tensor through unchanged', () => {
    for (const name of [projectionWeightName(1, 'q_proj'), projectionWeightName(0, 'down_proj'), 'model.norm.weight']) {
      expect(merged.read(name)).toEqual(base.read(name));
    }
    expect(merged.has('model.norm.weight')).toBe(true);
    expect(merged.has('lm_head.weight')).toBe(false);
  });

  it('leaves the base tensor it read untouched', () => {
    const name = projectionWeightName(0, 'q_proj');
    const weight = base.read(name);
    const before = weight.slice();
    foldLora(weight, q, projectionShape(CONFIG, 'q_proj'));
    expect(weight).toEqual(before);
  });

  it('reads fp16 weights as the fp32 values they stand for', () => {
    // Multiples of 1/64 below 4 are exact in fp16, so the widened values are known without a converter.
    const exact = (n: number) => values(n).map((x) => Math.round(x * 64) / 64);
    const [k, n] = projectionShape(CONFIG, 'q_proj');
    const wide = { rank: 3, a: exact(k * 3), b: exact(3 * n) };
    const bits = (t: Float32Array) => Uint16Array.from(new Int32Array(t.buffer), f32BitsToF16);
    const w = base.read(projectionWeightName(0, 'q_proj'));
    expect(foldLora(w, { rank: 3, a: bits(wide.a), b: bits(wide.b) }, [k, n])).toEqual(foldLora(w, wide, [k, n]));
  });

  it('has a digest of its own per base and adapter content', () => {
    const digests = [
      merged.digest(),
      new MergedSource(baseSource('other-base'), adapter([q, down])).digest(),
      new MergedSource(base, adapter([q, down], 'other-adapter')).digest(),
      base.digest(),
    ];
    expect(new Set(digests).size).toBe(4);
    expect(new MergedSource(baseSource(), adapter([q], 'adapter-digest')).digest()).toBe(merged.digest());
  });

  it('refuses an adapter that does not fit the model', () => {
    const wide = { ...q, a: values(9 * q.rank) };
    expect(() => new MergedSource(base, adapter([wide]))).toThrow(/0\.q_proj \(rank 3\) does not fit this model's 8x8 projection/);
    expect(() => new MergedSource(base, adapter([module(2, 'o_proj', 1)]))).toThrow(/2\.o_proj/);
  });
});
