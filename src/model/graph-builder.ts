import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { emitBatchedLora, emitNativeBatchedLora } from '../../kernels/batched-lora.js';
import type { ModelConfig, Projection } from './model-config.js';
import { projectionShape, projectionWeightName } from './model-config.js';
import { OnnxGraph } from './onnx-graph.js';
import type { Quantization } from './quantizer.js';
import { quantizeBlockwise } from './quantizer.js';
import { ropeCache } from './rope.js';

/** Options that change the built graph; all of them are part of the build cache key. */
export interface BuildOptions {
  quantization: Quantization;
  /** MatMulNBits block size along K. */
  blockSize: number;
  /** MatMulNBits `accuracy_level`: 4 computes in int8 on the CPU (VNNI), 0 in fp32. */
  accuracyLevel: number;
  /** Rank of the batched LoRA slot inputs on every projection; 0 builds a graph without LoRA. */
  loraRank: number;
  /** Logits for every position (`[batch, seq, vocab]`, for evaluation) instead of the last position's only. */
  allLogits: boolean;
  /**
   * 'stock': runs on onnxruntime-node (new K/V returned as outputs, LoRA as standard ops). 'native': runs on the
   * project's binding (src/model/native-runtime.ts): GroupQueryAttention updates the KV cache in place (its `present`
   * outputs are bound to the `past` buffers) and LoRA is the native BatchedLora operator over the slot stacks.
   */
  runtime: 'stock' | 'native';
}

/** How adapter weights are held in memory: fp32, or IEEE half bit patterns in a Uint16Array. */
export type LoraWeightType = 'float32' | 'float16';

/**
 * The adapter slot stacks' element type per runtime. The native BatchedLora operator widens fp16 as it reads, so half
 * the bytes cross memory per step; the stock graph's MatMul takes fp32 only, and gets the same values widened
 * (src/adapters/lora-convert.ts).
 */
export const LORA_WEIGHT_TYPE: Readonly<Record<BuildOptions['runtime'], LoraWeightType>> = Object.freeze({ stock: 'float32', native: 'float16' });

export const DEFAULT_BUILD_OPTIONS: Readonly<BuildOptions> = Object.freeze({ quantization: 'int4', blockSize: 32, accuracyLevel: 4, loraRank: 0, allLogits: false, runtime: 'stock' });

/** Where the builder reads HF tensors from (fp32, as stored: projections `[out, in]`). */
export interface WeightSource {
  read(name: string): Float32Array;
  has(name: string): boolean;
}

/** Projections that read the same input share one LoRA branch (and one `lora_active` flag). */
export const LORA_GROUPS: readonly (readonly Projection[])[] = [['q_proj', 'k_proj', 'v_proj'], ['o_proj'], ['gate_proj', 'up_proj'], ['down_proj']];

/** Graph I/O names shared by the builder and the runner. */
export const GraphNames = {
  inputIds: 'input_ids',
  positionIds: 'position_ids',
  seqlensK: 'seqlens_k',
  totalSequenceLength: 'total_sequence_length',
  logits: 'logits',
  pastKey: (layer: number) => `past_key.${layer}`,
  pastValue: (layer: number) => `past_value.${layer}`,
  newKey: (layer: number) => `new_key.${layer}`,
  newValue: (layer: number) => `new_value.${layer}`,
  presentKey: (layer: number) => `present_key.${layer}`,
  presentValue: (layer: number) => `present_value.${layer}`,
  loraRowSlots: 'lora_row_slots',
  loraSlotRanks: 'lora_slot_ranks',
  loraA: (layer: number, projection: Projection) => `lora_a.${layer}.${projection}`,
  loraB: (layer: number, projection: Projection) => `lora_b.${layer}.${projection}`,
  loraActive: (group: number) => `lora_active.${LORA_GROUPS[group].join('+')}`,
  loraRowA: (layer: number, projection: Projection) => `lora_row_a.${layer}.${projection}`,
  loraRowB: (layer: number, projection: Projection) => `lora_row_b.${layer}.${projection}`,
} as const;

const EPS_ATTR = (eps: number) => ({ float: eps });

/**
 * Emits the decoder as one ONNX graph with ONNX Runtime contrib ops and writes `model.onnx` and its
 * external weights into `dir`.
 *
 * Inputs: `input_ids`, `position_ids` `[batch, seq]` int64; `seqlens_k` `[batch]` int32 (each row's total length − 1);
 * `total_sequence_length` int32 scalar; per layer `past_key.L` / `past_value.L` `[batch, kv_heads, capacity, head_dim]`,
 * read in place from the engine's cache. Outputs: `logits` `[batch, 1, vocab]` (last position only; every position's
 * `[batch, seq, vocab]` with `allLogits`) and per layer the new tokens' rotated keys and values `new_key.L` /
 * `new_value.L` `[batch, seq, kv_heads * head_dim]`, which the engine writes into its cache. GQA's `present` outputs
 * stay internal: onnxruntime-node copies every graph output.
 *
 * With `loraRank > 0` every projection also adds the batched LoRA delta (kernels/batched-lora.ts) from inputs:
 * `lora_active.G` per group of LORA_GROUPS (bool scalars) and per layer and projection the rows' copies of their
 * adapter `lora_row_a.L.P` `[batch, in, rank]`, `lora_row_b.L.P` `[batch, rank, out]`.
 *
 * The native build differs in two places: per layer GQA's `present_key.L` / `present_value.L`
 * `[batch, kv_heads, capacity, head_dim]` are outputs, which the runner binds to the same memory as `past_*` so the
 * cache is updated in place (no new K/V outputs); and LoRA reads `lora_row_slots` `[batch]`, `lora_slot_ranks`
 * `[slots]` int32 and per layer and projection the slot stacks `lora_a.L.P` `[slots, in, rank]`, `lora_b.L.P`
 * `[slots, rank, out]` (float16, LORA_WEIGHT_TYPE) through the BatchedLora operator.
 */
export function buildDecoderGraph(config: ModelConfig, weights: WeightSource, options: BuildOptions, dir: string): void {
  const g = new OnnxGraph(join(dir, 'model.onnx.data'));
  const { hiddenSize: H, numHeads: NH, numKvHeads: KVH, headDim: HD, vocabSize: V, rmsNormEps: eps } = config;

  const inputIds = g.input(GraphNames.inputIds, 'int64', ['batch', 'seq']);
  const positionIds = g.input(GraphNames.positionIds, 'int64', ['batch', 'seq']);
  const seqlensK = g.input(GraphNames.seqlensK, 'int32', ['batch']);
  const totalLength = g.input(GraphNames.totalSequenceLength, 'int32', []);
  g.output(GraphNames.logits, 'float32', ['batch', options.allLogits ? 'seq' : 1, V]);

  const native = options.runtime === 'native';
  const loraActive = options.loraRank > 0 && !native ? LORA_GROUPS.map((_, i) => g.input(GraphNames.loraActive(i), 'bool', [])) : null;
  const nativeLora = options.loraRank > 0 && native
    ? { rowSlots: g.input(GraphNames.loraRowSlots, 'int32', ['batch']), slotRanks: g.input(GraphNames.loraSlotRanks, 'int32', ['lora_slots']) }
    : null;
  const rope = ropeCache(config, config.maxPositionEmbeddings);
  const cos = g.initializer('rope.cos', 'float32', [config.maxPositionEmbeddings, HD / 2], rope.cos);
  const sin = g.initializer('rope.sin', 'float32', [config.maxPositionEmbeddings, HD / 2], rope.sin);
  const weight = (name: string, dims: number[]) => g.initializer(name, 'float32', dims, weights.read(name));
  const linear = (x: string, name: string, n: number, k: number) => emitLinear(g, x, name, weights.read(name), n, k, options);
  const rmsNorm = (x: string, w: string) => g.op('SimplifiedLayerNormalization', [x, w], { axis: -1, epsilon: EPS_ATTR(eps), stash_type: 1 });
  /** The projections of one LoRA group over the same input `x`, with their LoRA deltas and biases. */
  const projections = (x: string, layer: number, group: number): string[] => {
    const ps = LORA_GROUPS[group];
    let ys = ps.map((p) => {
      const [k, n] = projectionShape(config, p);
      return linear(x, projectionWeightName(layer, p), n, k);
    });
    if (loraActive) {
      const inputs = ps.map((p) => {
        const [k, n] = projectionShape(config, p);
        return {
          rowA: g.input(GraphNames.loraRowA(layer, p), 'float32', ['lora_rows', k, options.loraRank]),
          rowB: g.input(GraphNames.loraRowB(layer, p), 'float32', ['lora_rows', options.loraRank, n]),
        };
      });
      ys = emitBatchedLora(g, x, ys, inputs, loraActive[group]);
    } else if (nativeLora) {
      const stacks = ps.map((p) => {
        const [k, n] = projectionShape(config, p);
        return {
          a: g.input(GraphNames.loraA(layer, p), LORA_WEIGHT_TYPE.native, ['lora_slots', k, options.loraRank]),
          b: g.input(GraphNames.loraB(layer, p), LORA_WEIGHT_TYPE.native, ['lora_slots', options.loraRank, n]),
        };
      });
      ys = emitNativeBatchedLora(g, x, ys, stacks, nativeLora.rowSlots, nativeLora.slotRanks);
    }
    return ys.map((y, i) => {
      const p = ps[i];
      const biased = config.attentionBias && (p === 'q_proj' || p === 'k_proj' || p === 'v_proj');
      return biased ? g.op('Add', [y, weight(projectionWeightName(layer, p).replace(/\.weight$/, '.bias'), [projectionShape(config, p)[1]])]) : y;
    });
  };
  const headNorm = (x: string, w: string, heads: number) => {
    const perHead = g.op('Reshape', [x, g.int64s(`${w}.shape`, [0, 0, heads, HD])]);
    return g.op('Reshape', [rmsNorm(perHead, weight(w, [HD])), g.int64s(`${w}.back`, [0, 0, heads * HD])]);
  };

  const embeddings = g.op('Gather', [weight('model.embed_tokens.weight', [V, H]), inputIds], { axis: 0 });
  let residual = embeddings;
  let hidden = rmsNorm(embeddings, weight('model.layers.0.input_layernorm.weight', [H]));
  let mlpOut = '';
  for (let layer = 0; layer < config.numLayers; layer++) {
    const prefix = `model.layers.${layer}`;
    if (layer > 0) {
      const outs = g.node('SkipSimplifiedLayerNormalization', [mlpOut, residual, weight(`${prefix}.input_layernorm.weight`, [H])],
        { epsilon: EPS_ATTR(eps) }, { domain: 'com.microsoft', outputs: 4 });
      hidden = outs[0];
      residual = outs[3];
    }
    const [qProj, kProj, v] = projections(hidden, layer, 0);
    let q = qProj;
    let k = kProj;
    if (config.qkNorm) {
      q = headNorm(q, `${prefix}.self_attn.q_norm.weight`, NH);
      k = headNorm(k, `${prefix}.self_attn.k_norm.weight`, KVH);
    }
    const qRot = g.op('RotaryEmbedding', [q, positionIds, cos, sin], { interleaved: 0, num_heads: NH }, 'com.microsoft');
    const kvDims = ['batch', KVH, 'capacity', HD];
    const newKey = g.node('RotaryEmbedding', [k, positionIds, cos, sin], { interleaved: 0, num_heads: KVH },
      { domain: 'com.microsoft', outputs: native ? 1 : [GraphNames.newKey(layer)] })[0];
    const newValue = native ? v : g.node('Identity', [v], {}, { outputs: [GraphNames.newValue(layer)] })[0];
    if (!native) {
      g.output(newKey, 'float32', ['batch', 'seq', KVH * HD]);
      g.output(newValue, 'float32', ['batch', 'seq', KVH * HD]);
    }
    const pastKey = g.input(GraphNames.pastKey(layer), 'float32', kvDims);
    const pastValue = g.input(GraphNames.pastValue(layer), 'float32', kvDims);
    const [attention] = g.node('GroupQueryAttention', [qRot, newKey, newValue, pastKey, pastValue, seqlensK, totalLength],
      { num_heads: NH, kv_num_heads: KVH, do_rotary: 0, local_window_size: -1, scale: { float: 1 / Math.sqrt(HD) } },
      { domain: 'com.microsoft', outputs: native ? [`attention.${layer}`, GraphNames.presentKey(layer), GraphNames.presentValue(layer)] : 3 });
    if (native) {
      g.output(GraphNames.presentKey(layer), 'float32', kvDims);
      g.output(GraphNames.presentValue(layer), 'float32', kvDims);
    }
    const [attnOut] = projections(attention, layer, 1);
    const post = g.node('SkipSimplifiedLayerNormalization', [attnOut, residual, weight(`${prefix}.post_attention_layernorm.weight`, [H])],
      { epsilon: EPS_ATTR(eps) }, { domain: 'com.microsoft', outputs: 4 });
    residual = post[3];
    const [gate, up] = projections(post[0], layer, 2);
    const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
    [mlpOut] = projections(act, layer, 3);
  }
  const final = g.op('Add', [mlpOut, residual]);
  const last = options.allLogits
    ? final
    : g.op('Slice', [final, g.int64s('last.start', [-1]), g.int64s('last.end', [Number.MAX_SAFE_INTEGER]), g.int64s('last.axes', [1])]);
  const normed = rmsNorm(last, weight('model.norm.weight', [H]));
  const lmHeadName = config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  const logits = emitLinear(g, normed, lmHeadName, weights.read(lmHeadName), V, H, options, 'lm_head');
  g.node('Identity', [logits], {}, { outputs: [GraphNames.logits] });
  writeFileSync(join(dir, 'model.onnx'), g.finish(`loraserve-${config.architecture}`));
}

/** `y = x · Wᵀ` for an HF weight `[n, k]`: MatMulNBits for int4/int8, MatMul on the transposed weight for fp32. */
function emitLinear(g: OnnxGraph, x: string, name: string, w: Float32Array, n: number, k: number, options: BuildOptions, prefix = name): string {
  if (w.length !== n * k) throw new Error(`${name}: expected ${n}x${k} values, found ${w.length}`);
  if (options.quantization === 'fp32') {
    const t = new Float32Array(k * n);
    for (let row = 0; row < n; row++) for (let col = 0; col < k; col++) t[col * n + row] = w[row * k + col];
    return g.op('MatMul', [x, g.initializer(`${prefix}.T`, 'float32', [k, n], t)]);
  }
  const bits = options.quantization === 'int4' ? 4 : 8;
  const q = quantizeBlockwise(w, n, k, bits, options.blockSize);
  const blocks = Math.ceil(k / options.blockSize);
  return g.op('MatMulNBits', [
    x,
    g.initializer(`${prefix}.q`, 'uint8', [n, blocks, (options.blockSize * bits) / 8], q.data),
    g.initializer(`${prefix}.scales`, 'float32', [n * blocks], q.scales),
  ], { K: k, N: n, bits, block_size: options.blockSize, accuracy_level: options.accuracyLevel }, 'com.microsoft');
}
