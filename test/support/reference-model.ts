import { projectionShape, projectionWeightName, PROJECTIONS } from '../../src/model/model-config.js';
import type { ModelConfig, Projection } from '../../src/model/model-config.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';

/**
 * The test oracle: a plain forward pass of the decoder with Hugging Face semantics, token by token with a KV cache.
 * Weights are fp32; every activation and dot product is float64, so the oracle's own rounding stays far below
 * the error of the fp32 graph it checks.
 */

/** Tensors by their HF name, fp32, row-major as stored (projection weights `[out, in]`). */
export interface WeightSource {
  read(name: string): Float32Array;
  has(name: string): boolean;
}

/** One projection's LoRA: `y += scale * (x · Aᵀ) · Bᵀ`. */
export interface LoraDelta {
  /** `[rank, in]`, as PEFT's `lora_A`. */
  a: Float32Array;
  /** `[out, rank]`, as PEFT's `lora_B`. */
  b: Float32Array;
  rank: number;
  scale: number;
}

/** The delta for one projection of one layer, or null where the adapter does not target it. */
export type LoraLookup = (layer: number, projection: Projection) => LoraDelta | null;

/** Logits `[vocab]` for every position of `tokenIds`. */
export function referenceLogits(config: ModelConfig, weights: WeightSource, tokenIds: number[], lora?: LoraLookup): Float32Array[] {
  const decoder = new ReferenceDecoder(config, weights, lora);
  return tokenIds.map((id) => Float32Array.from(decoder.step(id, true)));
}

/** `maxTokens` greedily generated ids (argmax, first index on ties), without the prompt; EOS does not stop it. */
export function referenceGreedy(config: ModelConfig, weights: WeightSource, promptIds: number[], maxTokens: number, lora?: LoraLookup): number[] {
  if (promptIds.length === 0) throw new Error('reference model: the prompt is empty');
  const decoder = new ReferenceDecoder(config, weights, lora);
  promptIds.slice(0, -1).forEach((id) => decoder.step(id, false));
  let logits = decoder.step(promptIds[promptIds.length - 1], true);
  const generated: number[] = [];
  while (generated.length < maxTokens) {
    const next = argmax(logits);
    generated.push(next);
    if (generated.length < maxTokens) logits = decoder.step(next, true);
  }
  return generated;
}

interface Linear {
  in: number;
  out: number;
  /** `[out, in]`. */
  weight: Float32Array;
  bias: Float32Array | null;
  lora: LoraDelta | null;
}

interface Layer {
  inputNorm: Float32Array;
  projections: Record<Projection, Linear>;
  qNorm: Float32Array | null;
  kNorm: Float32Array | null;
  postAttentionNorm: Float32Array;
}

class ReferenceDecoder {
  readonly #config: ModelConfig;
  readonly #embedding: Float32Array;
  readonly #layers: Layer[];
  readonly #finalNorm: Float32Array;
  readonly #lmHead: Float32Array;
  readonly #inverseFrequencies: Float64Array;
  /** Per layer, the rotated keys and the values of every position so far (`[numKvHeads * headDim]` each). */
  readonly #keys: Float64Array[][];
  readonly #values: Float64Array[][];
  #position = 0;

  constructor(config: ModelConfig, weights: WeightSource, lora?: LoraLookup) {
    if (config.numHeads % config.numKvHeads !== 0) {
      throw new Error(`reference model: numHeads ${config.numHeads} is not a multiple of numKvHeads ${config.numKvHeads}`);
    }
    this.#config = config;
    const { hiddenSize, headDim, vocabSize } = config;
    const tensor = (name: string, length: number): Float32Array => readTensor(weights, name, length);
    this.#embedding = tensor('model.embed_tokens.weight', vocabSize * hiddenSize);
    this.#layers = Array.from({ length: config.numLayers }, (_, layer): Layer => {
      const prefix = `model.layers.${layer}`;
      const projections = Object.fromEntries(PROJECTIONS.map((projection) => {
        const [inFeatures, outFeatures] = projectionShape(config, projection);
        const hasBias = config.attentionBias && (projection === 'q_proj' || projection === 'k_proj' || projection === 'v_proj');
        const linear: Linear = {
          in: inFeatures,
          out: outFeatures,
          weight: tensor(projectionWeightName(layer, projection), outFeatures * inFeatures),
          bias: hasBias ? tensor(`${prefix}.self_attn.${projection}.bias`, outFeatures) : null,
          lora: checkedLora(lora?.(layer, projection) ?? null, layer, projection, inFeatures, outFeatures),
        };
        return [projection, linear];
      })) as Record<Projection, Linear>;
      return {
        inputNorm: tensor(`${prefix}.input_layernorm.weight`, hiddenSize),
        projections,
        qNorm: config.qkNorm ? tensor(`${prefix}.self_attn.q_norm.weight`, headDim) : null,
        kNorm: config.qkNorm ? tensor(`${prefix}.self_attn.k_norm.weight`, headDim) : null,
        postAttentionNorm: tensor(`${prefix}.post_attention_layernorm.weight`, hiddenSize),
      };
    });
    this.#finalNorm = tensor('model.norm.weight', hiddenSize);
    this.#lmHead = config.tieWordEmbeddings ? this.#embedding : tensor('lm_head.weight', vocabSize * hiddenSize);
    this.#inverseFrequencies = ropeInverseFrequencies(config);
    this.#keys = this.#layers.map(() => []);
    this.#values = this.#layers.map(() => []);
  }

  /** Runs the next position; returns its logits when asked (the prompt's inner positions skip the lm_head). */
  step(tokenId: number, withLogits: true): Float64Array;
  step(tokenId: number, withLogits: false): null;
  step(tokenId: number, withLogits: boolean): Float64Array | null {
    const { hiddenSize, vocabSize, rmsNormEps } = this.#config;
    if (!Number.isInteger(tokenId) || tokenId < 0 || tokenId >= vocabSize) {
      throw new Error(`reference model: token id ${tokenId} is outside the vocabulary [0, ${vocabSize})`);
    }
    let hidden: Float64Array = Float64Array.from(this.#embedding.subarray(tokenId * hiddenSize, (tokenId + 1) * hiddenSize));
    this.#layers.forEach((layer, index) => {
      hidden = add(hidden, this.#attention(layer, index, rmsNorm(hidden, layer.inputNorm, rmsNormEps)));
      hidden = add(hidden, mlp(layer, rmsNorm(hidden, layer.postAttentionNorm, rmsNormEps)));
    });
    this.#position++;
    if (!withLogits) return null;
    return matVec(this.#lmHead, vocabSize, hiddenSize, rmsNorm(hidden, this.#finalNorm, rmsNormEps));
  }

  #attention(layer: Layer, index: number, x: Float64Array): Float64Array {
    const { numHeads, numKvHeads, headDim, rmsNormEps } = this.#config;
    const { q_proj, k_proj, v_proj, o_proj } = layer.projections;
    const q = linear(q_proj, x);
    const k = linear(k_proj, x);
    // Qwen3 normalizes each head of q and k before RoPE.
    if (layer.qNorm) normalizeHeads(q, numHeads, headDim, layer.qNorm, rmsNormEps);
    if (layer.kNorm) normalizeHeads(k, numKvHeads, headDim, layer.kNorm, rmsNormEps);
    this.#rotate(q, numHeads);
    this.#rotate(k, numKvHeads);
    const keys = this.#keys[index];
    const values = this.#values[index];
    keys.push(k);
    values.push(linear(v_proj, x));

    const group = numHeads / numKvHeads;
    const scale = 1 / Math.sqrt(headDim);
    const out = new Float64Array(numHeads * headDim);
    const scores = new Float64Array(keys.length);
    for (let head = 0; head < numHeads; head++) {
      const qOffset = head * headDim;
      const kvOffset = Math.floor(head / group) * headDim;
      // Causal by construction: the cache holds this position and the ones before it, nothing later.
      for (let t = 0; t < keys.length; t++) {
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[qOffset + d] * keys[t][kvOffset + d];
        scores[t] = dot * scale;
      }
      softmaxInPlace(scores);
      for (let t = 0; t < values.length; t++) {
        for (let d = 0; d < headDim; d++) out[qOffset + d] += scores[t] * values[t][kvOffset + d];
      }
    }
    return linear(o_proj, out);
  }

  /** HF `rotate_half` RoPE at this position: element i pairs with i + headDim/2. */
  #rotate(x: Float64Array, heads: number): void {
    const half = this.#config.headDim / 2;
    for (let i = 0; i < half; i++) {
      const angle = this.#position * this.#inverseFrequencies[i];
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      for (let head = 0; head < heads; head++) {
        const lo = head * 2 * half + i;
        const hi = lo + half;
        const x1 = x[lo];
        const x2 = x[hi];
        x[lo] = x1 * cos - x2 * sin;
        x[hi] = x2 * cos + x1 * sin;
      }
    }
  }
}

/** SwiGLU: `down(silu(gate(x)) * up(x))`. */
function mlp(layer: Layer, x: Float64Array): Float64Array {
  const { gate_proj, up_proj, down_proj } = layer.projections;
  const gate = linear(gate_proj, x);
  const up = linear(up_proj, x);
  const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
  return linear(down_proj, act);
}

/** `x · Wᵀ + b`, plus the LoRA delta `scale * (x · Aᵀ) · Bᵀ` when there is one. */
function linear(p: Linear, x: Float64Array): Float64Array {
  const y = matVec(p.weight, p.out, p.in, x);
  if (p.bias) for (let o = 0; o < p.out; o++) y[o] += p.bias[o];
  if (p.lora) {
    const { a, b, rank, scale } = p.lora;
    const shrunk = matVec(a, rank, p.in, x);
    const expanded = matVec(b, p.out, rank, shrunk);
    for (let o = 0; o < p.out; o++) y[o] += scale * expanded[o];
  }
  return y;
}

/** `W · x` for a row-major `W: [rows, cols]`. */
function matVec(w: Float32Array, rows: number, cols: number, x: Float64Array): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += w[base + c] * x[c];
    y[r] = acc;
  }
  return y;
}

/** `x / sqrt(mean(x²) + eps) * w`. */
function rmsNorm(x: Float64Array, weight: Float32Array, eps: number): Float64Array {
  let sumSquares = 0;
  for (const v of x) sumSquares += v * v;
  const inv = 1 / Math.sqrt(sumSquares / x.length + eps);
  return x.map((v, i) => v * inv * weight[i]);
}

function normalizeHeads(x: Float64Array, heads: number, headDim: number, weight: Float32Array, eps: number): void {
  for (let head = 0; head < heads; head++) {
    const offset = head * headDim;
    x.set(rmsNorm(x.subarray(offset, offset + headDim), weight, eps), offset);
  }
}

function softmaxInPlace(x: Float64Array): void {
  const max = Math.max(...x);
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    x[i] = Math.exp(x[i] - max);
    sum += x[i];
  }
  for (let i = 0; i < x.length; i++) x[i] /= sum;
}

function add(x: Float64Array, y: Float64Array): Float64Array {
  return x.map((v, i) => v + y[i]);
}

function argmax(x: Float64Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

function readTensor(weights: WeightSource, name: string, length: number): Float32Array {
  if (!weights.has(name)) throw new Error(`reference model: tensor ${name} is missing`);
  const data = weights.read(name);
  if (data.length !== length) throw new Error(`reference model: tensor ${name} has ${data.length} elements, expected ${length}`);
  return data;
}

function checkedLora(delta: LoraDelta | null, layer: number, projection: Projection, inFeatures: number, outFeatures: number): LoraDelta | null {
  if (!delta) return null;
  const where = `reference model: LoRA for layer ${layer} ${projection}`;
  if (!Number.isInteger(delta.rank) || delta.rank < 1) throw new Error(`${where}: rank ${delta.rank} is not a positive integer`);
  if (delta.a.length !== delta.rank * inFeatures) {
    throw new Error(`${where}: A has ${delta.a.length} elements, expected [${delta.rank}, ${inFeatures}]`);
  }
  if (delta.b.length !== outFeatures * delta.rank) {
    throw new Error(`${where}: B has ${delta.b.length} elements, expected [${outFeatures}, ${delta.rank}]`);
  }
  return delta;
}
