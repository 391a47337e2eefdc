import { join } from 'node:path';
import { GraphNames, LORA_GROUPS } from './graph-builder.js';
import type { KvCache } from './kv-cache.js';
import type { ModelConfig, Projection } from './model-config.js';
import { PROJECTIONS, projectionShape } from './model-config.js';
import type { Feed } from './onnx-runtime.js';
import { OrtSession } from './onnx-runtime.js';

/** One forward run over a contiguous range of KV rows, each advancing by the same number of tokens. */
export interface ForwardBatch {
  firstRow: number;
  /** Per row, the new tokens (all rows the same length). */
  tokens: readonly (readonly number[])[];
  /** Per row, how many tokens the cache already holds. */
  pastLengths: readonly number[];
}

/**
 * The adapters of one forward run, for a graph built with `loraRank > 0`. The stock graph reads the rows' own copies
 * of their adapter; the native one reads each row's slot and the slot stacks themselves.
 */
export interface LoraBatch {
  /** Indexed like PROJECTIONS: whether any row's adapter targets that projection. */
  activeProjections: readonly boolean[];
  /** Each row's slot (0 = no adapter). */
  rowSlots: Int32Array;
  /** Each slot's rank (0 for slot 0 and empty slots). */
  slotRanks: Int32Array;
  /** `[slots, in, rank]`: a projection's A stack (all slots); fp32, or fp16 bit patterns for the native graph. */
  a(layer: number, projection: Projection): Float32Array | Uint16Array;
  /** `[slots, rank, out]`: a projection's B stack, scale folded in; fp32, or fp16 bit patterns for the native graph. */
  b(layer: number, projection: Projection): Float32Array | Uint16Array;
  /** `[rows, in, rank]`: the batch rows' copies of their adapter's A (zeros for a row without adapter); stock runtime. */
  rowA(layer: number, projection: Projection): Float32Array;
  /** `[rows, rank, out]`: the batch rows' copies of their adapter's B; stock runtime. */
  rowB(layer: number, projection: Projection): Float32Array;
}

/** What the engine runs a model through: the stock Decoder or the NativeDecoder. */
export interface ModelRunner {
  readonly config: ModelConfig;
  /** Rank of the graph's LoRA inputs; 0 when built without LoRA. */
  readonly loraRank: number;
  /**
   * Runs the batch, appends its K/V to the cache rows, and returns the last position's logits `[rows, vocab]`, or
   * every position's `[rows * seq, vocab]` (row-major by row, then position) from a graph built with `allLogits`.
   * The returned array may be reused by the next run.
   */
  forward(batch: ForwardBatch, kv: KvCache, lora?: LoraBatch): Promise<Float32Array>;
  release(): Promise<void>;
}

/** The per-run inputs every decoder graph takes, from a batch: ids and positions `[rows, seq]`, seqlens_k, total length. */
export function stepInputs(batch: ForwardBatch, capacity: number): { rows: number; seq: number; inputIds: BigInt64Array; positionIds: BigInt64Array; seqlensK: Int32Array; total: number } {
  const rows = batch.tokens.length;
  const seq = rows === 0 ? 0 : batch.tokens[0].length;
  if (rows === 0 || seq === 0) throw new Error('empty forward batch');
  const inputIds = new BigInt64Array(rows * seq);
  const positionIds = new BigInt64Array(rows * seq);
  const seqlensK = new Int32Array(rows);
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const tokens = batch.tokens[r];
    const past = batch.pastLengths[r];
    if (tokens.length !== seq) throw new Error('forward batch rows must advance by the same number of tokens');
    if (past + seq > capacity) throw new Error(`row ${batch.firstRow + r} would exceed the KV capacity ${capacity}`);
    for (let t = 0; t < seq; t++) {
      inputIds[r * seq + t] = BigInt(tokens[t]);
      positionIds[r * seq + t] = BigInt(past + t);
    }
    seqlensK[r] = past + seq - 1;
    total = Math.max(total, past + seq);
  }
  return { rows, seq, inputIds, positionIds, seqlensK, total };
}

/** A stock-built decoder graph in an onnxruntime-node session: runs batches against an engine-owned KV cache. */
export class Decoder implements ModelRunner {
  readonly config: ModelConfig;
  /** Rank of the graph's LoRA slot inputs; 0 when built without LoRA. */
  readonly loraRank: number;
  readonly #session: OrtSession;
  readonly #fetches: string[];
  /** One all-zero slot per projection, fed when a run has no adapter. */
  readonly #noAdapter: Map<Projection, { a: Float32Array; b: Float32Array }>;

  private constructor(config: ModelConfig, session: OrtSession, loraRank: number) {
    this.config = config;
    this.loraRank = loraRank;
    this.#session = session;
    this.#fetches = [GraphNames.logits];
    for (let l = 0; l < config.numLayers; l++) this.#fetches.push(GraphNames.newKey(l), GraphNames.newValue(l));
    this.#noAdapter = new Map(PROJECTIONS.map((p) => {
      const [k, n] = projectionShape(config, p);
      return [p, { a: new Float32Array(k * loraRank), b: new Float32Array(loraRank * n) }];
    }));
  }

  static async load(modelDir: string, config: ModelConfig, threads: number, loraRank = 0): Promise<Decoder> {
    return new Decoder(config, await OrtSession.create(join(modelDir, 'model.onnx'), { threads }), loraRank);
  }

  async forward(batch: ForwardBatch, kv: KvCache, lora?: LoraBatch): Promise<Float32Array> {
    const { rows, seq, inputIds, positionIds, seqlensK, total } = stepInputs(batch, kv.capacity);
    const feeds: Record<string, Feed> = {
      [GraphNames.inputIds]: { type: 'int64', data: inputIds, dims: [rows, seq] },
      [GraphNames.positionIds]: { type: 'int64', data: positionIds, dims: [rows, seq] },
      [GraphNames.seqlensK]: { type: 'int32', data: seqlensK, dims: [rows] },
      [GraphNames.totalSequenceLength]: { type: 'int32', data: Int32Array.of(total), dims: [] },
    };
    const kvDims = kv.dims(rows);
    for (let l = 0; l < this.config.numLayers; l++) {
      feeds[GraphNames.pastKey(l)] = { type: 'float32', data: kv.keyView(l, batch.firstRow, rows), dims: kvDims };
      feeds[GraphNames.pastValue(l)] = { type: 'float32', data: kv.valueView(l, batch.firstRow, rows), dims: kvDims };
    }
    if (this.loraRank > 0) this.#loraFeeds(feeds, rows, lora);
    const out = await this.#session.run(feeds, this.#fetches);
    for (let l = 0; l < this.config.numLayers; l++) {
      const keys = out[GraphNames.newKey(l)].data;
      const values = out[GraphNames.newValue(l)].data;
      for (let r = 0; r < rows; r++) kv.write(l, batch.firstRow + r, batch.pastLengths[r], keys, values, r, seq, seq);
    }
    return out[GraphNames.logits].data;
  }

  #loraFeeds(feeds: Record<string, Feed>, rows: number, lora: LoraBatch | undefined): void {
    const R = this.loraRank;
    LORA_GROUPS.forEach((group, i) => {
      const active = group.some((p) => lora?.activeProjections[PROJECTIONS.indexOf(p)]);
      feeds[GraphNames.loraActive(i)] = { type: 'bool', data: Uint8Array.of(active ? 1 : 0), dims: [] };
    });
    PROJECTIONS.forEach((p) => {
      const [k, n] = projectionShape(this.config, p);
      const none = this.#noAdapter.get(p) as { a: Float32Array; b: Float32Array };
      for (let l = 0; l < this.config.numLayers; l++) {
        feeds[GraphNames.loraRowA(l, p)] = lora ? { type: 'float32', data: lora.rowA(l, p), dims: [rows, k, R] } : { type: 'float32', data: none.a, dims: [1, k, R] };
        feeds[GraphNames.loraRowB(l, p)] = lora ? { type: 'float32', data: lora.rowB(l, p), dims: [rows, R, n] } : { type: 'float32', data: none.b, dims: [1, R, n] };
      }
    });
  }

  async release(): Promise<void> {
    await this.#session.release();
  }
}
