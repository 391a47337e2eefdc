// Runs in the engine worker: a natively built decoder graph on the project's binding (src/model/native-runtime.ts).
import { join } from 'node:path';
import type { ForwardBatch, LoraBatch, ModelRunner } from './decoder.js';
import { stepInputs } from './decoder.js';
import { GraphNames, LORA_GROUPS, LORA_WEIGHT_TYPE } from './graph-builder.js';
import type { KvCache } from './kv-cache.js';
import type { ModelConfig } from './model-config.js';
import { PROJECTIONS, projectionShape } from './model-config.js';
import type { NativeData, NativeRuntime, NativeSession } from './native-runtime.js';

/**
 * Runs batches with every tensor bound in place: the ids and positions, the KV rows as both GroupQueryAttention's past
 * input and its present output (the cache is updated where it lies, nothing is copied back), the adapter slot stacks,
 * and the logits into a buffer of its own that is reused from run to run.
 */
export class NativeDecoder implements ModelRunner {
  readonly config: ModelConfig;
  readonly loraRank: number;
  readonly #session: NativeSession;
  readonly #allLogits: boolean;
  #logits = new Float32Array(0);
  /** What each name is bound to, so persistent arrays (the slot stacks) are bound once, not every run. */
  readonly #bound = new Map<string, NativeData>();
  /** Slot stacks of one empty slot, bound for runs without adapters. */
  readonly #noAdapter: LoraBatch | null;

  private constructor(config: ModelConfig, session: NativeSession, loraRank: number, allLogits: boolean) {
    this.config = config;
    this.loraRank = loraRank;
    this.#session = session;
    this.#allLogits = allLogits;
    this.#noAdapter = loraRank > 0 ? emptyLoraBatch(config, loraRank) : null;
  }

  static async load(runtime: NativeRuntime, modelDir: string, config: ModelConfig, threads: number, loraRank: number, allLogits: boolean): Promise<NativeDecoder> {
    return new NativeDecoder(config, await runtime.createSession(join(modelDir, 'model.onnx'), { threads }), loraRank, allLogits);
  }

  async forward(batch: ForwardBatch, kv: KvCache, lora?: LoraBatch): Promise<Float32Array> {
    const { rows, seq, inputIds, positionIds, seqlensK, total } = stepInputs(batch, kv.capacity);
    const s = this.#session;
    s.bindInput(GraphNames.inputIds, inputIds, [rows, seq]);
    s.bindInput(GraphNames.positionIds, positionIds, [rows, seq]);
    s.bindInput(GraphNames.seqlensK, seqlensK, [rows]);
    s.bindInput(GraphNames.totalSequenceLength, Int32Array.of(total), []);
    const kvDims = kv.dims(rows);
    for (let l = 0; l < this.config.numLayers; l++) {
      const keys = kv.keyView(l, batch.firstRow, rows);
      const values = kv.valueView(l, batch.firstRow, rows);
      s.bindInput(GraphNames.pastKey(l), keys, kvDims);
      s.bindOutput(GraphNames.presentKey(l), keys, kvDims);
      s.bindInput(GraphNames.pastValue(l), values, kvDims);
      s.bindOutput(GraphNames.presentValue(l), values, kvDims);
    }
    if (this.#noAdapter) this.#bindLora(lora ?? this.#noAdapter, rows);
    const positions = this.#allLogits ? rows * seq : rows;
    const size = positions * this.config.vocabSize;
    if (this.#logits.length < size) this.#logits = new Float32Array(size);
    const logits = this.#logits.subarray(0, size);
    s.bindOutput(GraphNames.logits, logits, [rows, this.#allLogits ? seq : 1, this.config.vocabSize]);
    await s.run();
    return logits;
  }

  async release(): Promise<void> {
    this.#session.release();
  }

  #bindLora(lora: LoraBatch, rows: number): void {
    const s = this.#session;
    const rowSlots = lora.rowSlots.length === rows ? lora.rowSlots : new Int32Array(rows);
    s.bindInput(GraphNames.loraRowSlots, rowSlots, [rows]);
    s.bindInput(GraphNames.loraSlotRanks, lora.slotRanks, [lora.slotRanks.length]);
    const slots = lora.slotRanks.length;
    const R = this.loraRank;
    for (const p of LORA_GROUPS.flat()) {
      const [k, n] = projectionShape(this.config, p);
      for (let l = 0; l < this.config.numLayers; l++) {
        this.#bindOnce(GraphNames.loraA(l, p), lora.a(l, p), [slots, k, R]);
        this.#bindOnce(GraphNames.loraB(l, p), lora.b(l, p), [slots, R, n]);
      }
    }
  }

  /** Binds a slot stack, as the graph's LoRA weight type: its fp16 bits travel in a Uint16Array. */
  #bindOnce(name: string, data: NativeData, dims: number[]): void {
    if (this.#bound.get(name) === data) return;
    this.#session.bindInput(name, data, dims, LORA_WEIGHT_TYPE.native);
    this.#bound.set(name, data);
  }
}

/** One all-zero slot per stack (IEEE half zero is all zero bits). */
function emptyLoraBatch(config: ModelConfig, rank: number): LoraBatch {
  const stacks = new Map(PROJECTIONS.map((p) => {
    const [k, n] = projectionShape(config, p);
    return [p, { a: new Uint16Array(k * rank), b: new Uint16Array(rank * n) }];
  }));
  const none = () => new Float32Array(0);
  return {
    activeProjections: PROJECTIONS.map(() => false),
    rowSlots: new Int32Array(0),
    slotRanks: new Int32Array(1),
    a: (_, p) => stacks.get(p)?.a ?? none(),
    b: (_, p) => stacks.get(p)?.b ?? none(),
    rowA: none,
    rowB: none,
  };
}
