import type { ModelConfig } from './model-config.js';

/**
 * The engine-owned KV cache: per layer one key and one value buffer `[rows, kvHeads, capacity, headDim]`.
 * A running sequence owns one row; the graph reads a contiguous range of rows in place (no copy)
 * and returns only the new tokens' K/V, which `write` scatters into the row.
 */
export class KvCache {
  readonly rows: number;
  readonly capacity: number;
  readonly #kvHeads: number;
  readonly #headDim: number;
  readonly #keys: Float32Array[];
  readonly #values: Float32Array[];
  /** One head's positions of one row, for swapRows. */
  #scratch = new Float32Array(0);

  constructor(config: ModelConfig, rows: number, capacity: number) {
    this.rows = rows;
    this.capacity = capacity;
    this.#kvHeads = config.numKvHeads;
    this.#headDim = config.headDim;
    const size = rows * config.numKvHeads * capacity * config.headDim;
    this.#keys = Array.from({ length: config.numLayers }, () => new Float32Array(size));
    this.#values = Array.from({ length: config.numLayers }, () => new Float32Array(size));
  }

  get bytes(): number {
    return 2 * this.#keys.length * this.#keys[0].byteLength;
  }

  /** Floats that one position of one row takes over all layers, keys and values. */
  get positionFloats(): number {
    return 2 * this.#keys.length * this.#kvHeads * this.#headDim;
  }

  /** Dims of a view over `count` rows. */
  dims(count: number): number[] {
    return [count, this.#kvHeads, this.capacity, this.#headDim];
  }

  keyView(layer: number, firstRow: number, count: number): Float32Array {
    const rowSize = this.#kvHeads * this.capacity * this.#headDim;
    return this.#keys[layer].subarray(firstRow * rowSize, (firstRow + count) * rowSize);
  }

  valueView(layer: number, firstRow: number, count: number): Float32Array {
    const rowSize = this.#kvHeads * this.capacity * this.#headDim;
    return this.#values[layer].subarray(firstRow * rowSize, (firstRow + count) * rowSize);
  }

  /**
   * Copies new K/V laid out `[batch, seq, kvHeads * headDim]` (batch entry `b`, tokens `0..count)`)
   * into `row` at positions `start..start+count)`.
   */
  write(layer: number, row: number, start: number, newKeys: Float32Array, newValues: Float32Array, b: number, seq: number, count: number): void {
    const heads = this.#kvHeads;
    const hd = this.#headDim;
    const keys = this.#keys[layer];
    const values = this.#values[layer];
    for (let t = 0; t < count; t++) {
      const src = (b * seq + t) * heads * hd;
      for (let h = 0; h < heads; h++) {
        const dst = ((row * heads + h) * this.capacity + start + t) * hd;
        const s = src + h * hd;
        for (let i = 0; i < hd; i++) {
          keys[dst + i] = newKeys[s + i];
          values[dst + i] = newValues[s + i];
        }
      }
    }
  }

  /**
   * Copies positions `start..start+count)` of `row` into `into`, laid out `[layer][key, value][kvHead][count][headDim]`
   * (`count * positionFloats` floats): a prefix-cache block.
   */
  readPositions(row: number, start: number, count: number, into: Float32Array): void {
    this.#positions(row, start, count, (buffer, at, offset, span) => into.set(buffer.subarray(at, at + span), offset));
  }

  /** The inverse of `readPositions`: writes a block into positions `start..start+count)` of `row`. */
  writePositions(row: number, start: number, count: number, from: Float32Array): void {
    this.#positions(row, start, count, (buffer, at, offset, span) => buffer.set(from.subarray(offset, offset + span), at));
  }

  /** Exchanges the first `lengthA` positions of row `a` with the first `lengthB` of row `b` (rows reordered between runs). */
  swapRows(a: number, b: number, lengthA: number, lengthB: number): void {
    if (this.#scratch.length === 0) this.#scratch = new Float32Array(this.capacity * this.#headDim);
    const scratch = this.#scratch;
    for (const buffers of [this.#keys, this.#values]) {
      for (const buffer of buffers) {
        for (let h = 0; h < this.#kvHeads; h++) {
          const atA = (a * this.#kvHeads + h) * this.capacity * this.#headDim;
          const atB = (b * this.#kvHeads + h) * this.capacity * this.#headDim;
          scratch.set(buffer.subarray(atA, atA + lengthA * this.#headDim));
          buffer.copyWithin(atA, atB, atB + lengthB * this.#headDim);
          buffer.set(scratch.subarray(0, lengthA * this.#headDim), atB);
        }
      }
    }
  }

  #positions(row: number, start: number, count: number, copy: (buffer: Float32Array, at: number, offset: number, span: number) => void): void {
    if (start < 0 || start + count > this.capacity) throw new Error(`positions ${start}..${start + count} are outside the KV capacity ${this.capacity}`);
    const hd = this.#headDim;
    const span = count * hd;
    let offset = 0;
    for (let layer = 0; layer < this.#keys.length; layer++) {
      for (const buffer of [this.#keys[layer], this.#values[layer]]) {
        for (let h = 0; h < this.#kvHeads; h++) {
          copy(buffer, ((row * this.#kvHeads + h) * this.capacity + start) * hd, offset, span);
          offset += span;
        }
      }
    }
  }

  /** Moves the first `length` positions of row `from` into row `to` (compaction when a row frees up). */
  copyRow(from: number, to: number, length: number): void {
    const hd = this.#headDim;
    for (const buffers of [this.#keys, this.#values]) {
      for (const buffer of buffers) {
        for (let h = 0; h < this.#kvHeads; h++) {
          const src = (from * this.#kvHeads + h) * this.capacity * hd;
          const dst = (to * this.#kvHeads + h) * this.capacity * hd;
          buffer.copyWithin(dst, src, src + length * hd);
        }
      }
    }
  }
}
