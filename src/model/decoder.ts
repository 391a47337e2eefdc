import { join } from 'node:path';
import { GraphNames } from './graph-builder.js';
import type { KvCache } from './kv-cache.js';
import type { ModelConfig } from './model-config.js';
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

/** A built decoder graph in an ONNX Runtime session: runs batches against an engine-owned KV cache. */
export class Decoder {
  readonly config: ModelConfig;
  readonly #session: OrtSession;
  readonly #fetches: string[];

  private constructor(config: ModelConfig, session: OrtSession) {
    this.config = config;
    this.#session = session;
    this.#fetches = [GraphNames.logits];
    for (let l = 0; l < config.numLayers; l++) this.#fetches.push(GraphNames.newKey(l), GraphNames.newValue(l));
  }

  static async load(modelDir: string, config: ModelConfig, threads: number): Promise<Decoder> {
    return new Decoder(config, await OrtSession.create(join(modelDir, 'model.onnx'), { threads }));
  }

  /** Runs the batch, appends its K/V to the cache rows, and returns the last position's logits `[rows, vocab]`. */
  async forward(batch: ForwardBatch, kv: KvCache): Promise<Float32Array> {
    const rows = batch.tokens.length;
    const seq = batch.tokens[0].length;
    if (rows === 0 || seq === 0) throw new Error('empty forward batch');
    const inputIds = new BigInt64Array(rows * seq);
    const positionIds = new BigInt64Array(rows * seq);
    const seqlensK = new Int32Array(rows);
    let total = 0;
    for (let r = 0; r < rows; r++) {
      const tokens = batch.tokens[r];
      const past = batch.pastLengths[r];
      if (tokens.length !== seq) throw new Error('forward batch rows must advance by the same number of tokens');
      if (past + seq > kv.capacity) throw new Error(`row ${batch.firstRow + r} would exceed the KV capacity ${kv.capacity}`);
      for (let t = 0; t < seq; t++) {
        inputIds[r * seq + t] = BigInt(tokens[t]);
        positionIds[r * seq + t] = BigInt(past + t);
      }
      seqlensK[r] = past + seq - 1;
      total = Math.max(total, past + seq);
    }
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
    const out = await this.#session.run(feeds, this.#fetches);
    for (let l = 0; l < this.config.numLayers; l++) {
      const keys = out[GraphNames.newKey(l)].data;
      const values = out[GraphNames.newValue(l)].data;
      for (let r = 0; r < rows; r++) kv.write(l, batch.firstRow + r, batch.pastLengths[r], keys, values, r, seq, seq);
    }
    return out[GraphNames.logits].data;
  }

  async release(): Promise<void> {
    await this.#session.release();
  }
}
