// The only module that imports onnxruntime-node: everything else speaks typed arrays.
import ort from 'onnxruntime-node';

export interface SessionOptions {
  /** Intra-op threads; the engine worker gives ONNX Runtime all cores. */
  threads: number;
}

/** A graph input: a typed array (read in place: a subarray's byteOffset is honoured) and its dims. */
export type Feed =
  | { type: 'float32'; data: Float32Array; dims: readonly number[] }
  | { type: 'int64'; data: BigInt64Array; dims: readonly number[] }
  | { type: 'int32'; data: Int32Array; dims: readonly number[] }
  /** One byte per element, 0 or 1. */
  | { type: 'bool'; data: Uint8Array; dims: readonly number[] };

export interface Output {
  data: Float32Array;
  dims: readonly number[];
}

export class OrtSession {
  readonly #session: ort.InferenceSession;

  private constructor(session: ort.InferenceSession) {
    this.#session = session;
  }

  static async create(modelPath: string, options: SessionOptions): Promise<OrtSession> {
    const session = await ort.InferenceSession.create(modelPath, {
      intraOpNumThreads: options.threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
    });
    return new OrtSession(session);
  }

  get inputNames(): readonly string[] {
    return this.#session.inputNames;
  }

  /**
   * Runs the graph and returns the named float outputs. onnxruntime-node first yields to the event loop once
   * (setImmediate), then blocks the calling thread for the whole run: messages and timers run in that window, while
   * the feeds already point into engine memory, so nothing may free or move what a run reads until it resolves.
   */
  async run(feeds: Record<string, Feed>, fetches: readonly string[]): Promise<Record<string, Output>> {
    const tensors: Record<string, ort.Tensor> = {};
    for (const [name, feed] of Object.entries(feeds)) tensors[name] = new ort.Tensor(feed.type, feed.data, feed.dims);
    const results = await this.#session.run(tensors, fetches);
    const outputs: Record<string, Output> = {};
    for (const name of fetches) {
      const t = results[name] as ort.Tensor;
      outputs[name] = { data: t.data as Float32Array, dims: t.dims };
    }
    return outputs;
  }

  async release(): Promise<void> {
    await this.#session.release();
  }
}
