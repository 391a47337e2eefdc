// Converts PEFT tensors, as stored, into the kernel's layout and the slots' element type in one pass per tensor.
// Every weight is served at fp16 precision, whatever the runtime: the native slots hold fp16, the stock graph's MatMul
// reads fp32 copies of the very same values. So a request gets the same weights on either runtime, and an adapter
// is accepted or refused alike.
import type { SafetensorsDtype } from '../model/safetensors.js';

/** Adapter weights in memory (LoraWeightType): fp32 values, or IEEE half bit patterns. */
export type LoraTensor = Float32Array | Uint16Array;

/** The largest finite fp16 value: weights beyond it, once scaled, are refused. */
export const FP16_MAX = 65504;

/**
 * The IEEE half bit pattern nearest the fp32 value whose bits are `x`, ties to even, as hardware converts: values from
 * 65520 up overflow to ±Infinity, NaN stays NaN, values below 2^-14 become subnormals, and those at or below 2^-25
 * (half the smallest subnormal) become ±0.
 */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const abs = x & 0x7fffffff;
  if (abs >= 0x47800000) return sign | (abs > 0x7f800000 ? 0x7e00 : 0x7c00);
  if (abs <= 0x33000000) return sign;
  // Subnormal: the significand, implicit bit included, in units of 2^-24.
  if (abs < 0x38800000) return sign | roundShift((abs & 0x7fffff) | 0x800000, 126 - (abs >>> 23));
  // Normal: the exponent rebased from 127 to 15; a carry out of the significand rounds up into the exponent, to
  // Infinity at the top, as it should.
  return sign | roundShift(abs - 0x38000000, 13);
}

/** `v >>> shift`, rounded to nearest, ties to even. */
function roundShift(v: number, shift: number): number {
  const kept = v >>> shift;
  const rest = v & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rest > half || (rest === half && (kept & 1) === 1) ? kept + 1 : kept;
}

/** The value of an IEEE half bit pattern. */
export function f16Value(h: number): number {
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  const magnitude = exponent === 0 ? mantissa * 2 ** -24 : exponent === 31 ? (mantissa ? Number.NaN : Infinity) : (1024 + mantissa) * 2 ** (exponent - 25);
  return h & 0x8000 ? -magnitude : magnitude;
}

/**
 * `bytes`, a PEFT tensor `[rows, cols]` of `dtype`, into `out` `[cols, rows]` (transposed: the kernel's layout), each
 * value `fp32(value × scale)` rounded to fp16 by f32BitsToF16, as fp16 bits into a Uint16Array or widened back into a
 * Float32Array. Returns false when a value is not finite or, scaled, beyond ±FP16_MAX (refusedElement then says which).
 */
export function convertTransposed(bytes: Uint8Array, dtype: SafetensorsDtype, rows: number, cols: number, scale: number, out: LoraTensor): boolean {
  const n = rows * cols;
  const wide = out instanceof Float32Array;
  const target = wide ? new Int32Array(out.buffer, out.byteOffset, n) : out;
  if (dtype === 'F32') return roundTransposed(new Float32Array(bytes.buffer, bytes.byteOffset, n), scale, target, wide ? lookupTable('F16', 1, true) : null, cols);
  const table = lookupTable(dtype, scale, wide);
  if (wide) return lookupTransposed(new Uint16Array(bytes.buffer, bytes.byteOffset, n), table, target, cols, 23, 0xff);
  if (rows % 2 === 0 && cols % 2 === 0 && bytes.byteOffset % 4 === 0 && out.byteOffset % 4 === 0) {
    return lookupPairsTransposed(new Uint32Array(bytes.buffer, bytes.byteOffset, n / 2), table, new Uint32Array(out.buffer, out.byteOffset, n / 2), rows, cols);
  }
  return lookupTransposed(new Uint16Array(bytes.buffer, bytes.byteOffset, n), table, target, cols, 10, 0x1f);
}

/**
 * The element convertTransposed refused: the first, in `out`'s order, that came out infinite or NaN. Its index in the
 * tensor as stored (row-major `[rows, cols]`) and its value there, before the scale: a value that is finite overflowed
 * the type once scaled.
 */
export function refusedElement(bytes: Uint8Array, dtype: SafetensorsDtype, rows: number, cols: number, out: LoraTensor): { index: number; value: number } {
  let k = 0;
  while (k < out.length && (out instanceof Float32Array ? Number.isFinite(out[k]) : (out[k] & 0x7c00) !== 0x7c00)) k++;
  const index = (k % rows) * cols + Math.floor(k / rows);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === 'F32') return { index, value: view.getFloat32(4 * index, true) };
  const h = view.getUint16(2 * index, true);
  return { index, value: dtype === 'F16' ? f16Value(h) : new Float32Array(new Int32Array([h << 16]).buffer)[0] };
}

/**
 * `out[j·rows + i] = table[src[i·cols + j]]`. The exponent field (`shift`, `mask`) of every output is or-ed, plus
 * one, into `flags`, whose bit `mask + 1` then tells an all-ones exponent (Infinity or NaN) without a branch per value.
 */
function lookupTransposed(src: Uint16Array, table: Int32Array, out: Uint16Array | Int32Array, cols: number, shift: number, mask: number): boolean {
  let flags = 0;
  let k = 0;
  const n = src.length;
  for (let j = 0; j < cols; j++) {
    for (let s = j; s < n; s += cols) {
      const v = table[src[s]];
      out[k++] = v;
      flags |= ((v >> shift) & mask) + 1;
    }
  }
  return (flags & (mask + 1)) === 0;
}

/**
 * lookupTransposed from 16 to 16 bits with even `rows` and `cols`, a 2×2 block at a time in 32-bit accesses: two reads
 * and two writes for four values, half the time of one access per value, which is what V8 spends its time on. The
 * table's bit 16 marks an Infinity or NaN result.
 */
function lookupPairsTransposed(src: Uint32Array, table: Int32Array, out: Uint32Array, rows: number, cols: number): boolean {
  const halfRows = rows / 2;
  const halfCols = cols / 2;
  let flags = 0;
  for (let j = 0; j < halfCols; j++) {
    // Source columns 2j, 2j + 1 become output rows 2j (from index d) and 2j + 1 (from d + halfRows).
    for (let s = j, d = j * rows, end = d + halfRows; d < end; s += cols, d++) {
      const upper = src[s];
      const lower = src[s + halfCols];
      const a = table[upper & 0xffff];
      const b = table[upper >>> 16];
      const c = table[lower & 0xffff];
      const e = table[lower >>> 16];
      out[d] = (a & 0xffff) | (c << 16);
      out[d + halfRows] = (b & 0xffff) | (e << 16);
      flags |= a | b | c | e;
    }
  }
  return (flags & 0x10000) === 0;
}

/** fp32 values scaled, rounded to fp16 and, with `widen` (lookupTable('F16', 1, true)), widened back, transposed. */
function roundTransposed(src: Float32Array, scale: number, out: Uint16Array | Int32Array, widen: Int32Array | null, cols: number): boolean {
  const scaled = new Float32Array(1);
  const bits = new Int32Array(scaled.buffer);
  let flags = 0;
  let k = 0;
  for (let j = 0; j < cols; j++) {
    for (let s = j; s < src.length; s += cols) {
      scaled[0] = src[s] * scale;
      const h = f32BitsToF16(bits[0]);
      out[k++] = widen ? widen[h] : h;
      flags |= ((h >> 10) & 0x1f) + 1;
    }
  }
  return (flags & 0x20) === 0;
}

/** Tables by dtype, scale and width; an adapter has one scale or a few, so a handful covers every load. */
const tables = new Map<string, Int32Array>();
const MAX_TABLES = 8;

/**
 * Per 16-bit pattern of `dtype`, `fp32(value × scale)` rounded to fp16: its bits with bit 16 set where they are
 * Infinity or NaN, or (`wide`) the fp32 bits of its value.
 */
function lookupTable(dtype: 'F16' | 'BF16', scale: number, wide: boolean): Int32Array {
  const key = `${dtype}:${scale}:${wide}`;
  const cached = tables.get(key);
  if (cached) return cached;
  const values = new Float32Array(65536);
  const bits = new Int32Array(values.buffer);
  for (let h = 0; h < 65536; h++) {
    if (dtype === 'BF16') bits[h] = h << 16;
    else values[h] = f16Value(h);
    values[h] *= scale;
    const half = f32BitsToF16(bits[h]);
    if (wide) values[h] = f16Value(half);
    else bits[h] = (half & 0x7c00) === 0x7c00 ? half | 0x10000 : half;
  }
  if (tables.size >= MAX_TABLES) tables.clear();
  tables.set(key, bits);
  return bits;
}
