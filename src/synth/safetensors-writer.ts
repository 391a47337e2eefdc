import { closeSync, openSync, writeSync } from 'node:fs';
import { DTYPE_BYTES } from '../model/safetensors.js';
import type { SafetensorsDtype } from '../model/safetensors.js';

export type { SafetensorsDtype } from '../model/safetensors.js';

export interface TensorToWrite {
  name: string;
  /** Stored dtype; fp32 `data` is rounded to nearest even for F16 and BF16. */
  dtype: SafetensorsDtype;
  shape: number[];
  /** The values, or a function that makes them when the tensor is written, so a file never holds them all at once. */
  data: Float32Array | (() => Float32Array);
}

/** Elements converted per write for 16-bit dtypes, so a large tensor never needs a second full-size copy. */
const CHUNK_ELEMENTS = 1 << 20;
/** Largest single writeSync of fp32 bytes. */
const MAX_WRITE_BYTES = 1 << 28;

/**
 * Writes a `.safetensors` file: 8-byte little-endian header length, JSON header (space-padded to 8-byte alignment),
 * then each tensor's bytes in the order given. Tensors are written one at a time.
 */
export function writeSafetensors(path: string, tensors: TensorToWrite[], metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.hasOwn(header, t.name)) throw new Error(`${path}: duplicate or reserved tensor name ${t.name}`);
    const count = t.shape.reduce((n, d) => n * d, 1);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new Error(`${path}: tensor ${t.name} has an invalid shape [${t.shape.join(', ')}]`);
    if (typeof t.data !== 'function' && count !== t.data.length) {
      throw new Error(`${path}: tensor ${t.name} has shape [${t.shape.join(', ')}] but ${t.data.length} elements`);
    }
    const size = count * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }

  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20);
  json.copy(padded);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(padded.length));

  const fd = openSync(path, 'w');
  try {
    writeAll(fd, prefix);
    writeAll(fd, padded);
    for (const t of tensors) {
      const data = typeof t.data === 'function' ? t.data() : t.data;
      const count = t.shape.reduce((n, d) => n * d, 1);
      if (data.length !== count) throw new Error(`${path}: tensor ${t.name} has shape [${t.shape.join(', ')}] but ${data.length} elements`);
      writeTensor(fd, t.dtype, data);
    }
  } finally {
    closeSync(fd);
  }
}

function writeTensor(fd: number, dtype: SafetensorsDtype, data: Float32Array): void {
  if (dtype === 'F32') {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    for (let at = 0; at < bytes.length; at += MAX_WRITE_BYTES) writeAll(fd, bytes.subarray(at, at + MAX_WRITE_BYTES));
    return;
  }
  const convert = dtype === 'F16' ? f32BitsToF16 : f32BitsToBf16;
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const chunk = new Uint16Array(Math.min(CHUNK_ELEMENTS, bits.length));
  for (let start = 0; start < bits.length; start += chunk.length) {
    const n = Math.min(chunk.length, bits.length - start);
    for (let i = 0; i < n; i++) chunk[i] = convert(bits[start + i]);
    writeAll(fd, new Uint8Array(chunk.buffer, 0, n * 2));
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
}

/** fp32 bits → bf16 bits, round to nearest even; NaN stays a (quiet) NaN. */
function f32BitsToBf16(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) & 0x8000) | 0x7fc0;
  // No carry past bit 31 for non-NaN inputs, so plain number arithmetic is exact here.
  return ((x >>> 0) + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

/** fp32 bits → fp16 bits, round to nearest even, with subnormals, overflow to infinity, and NaN kept. */
function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const abs = x & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00;
  // 65520 and above round to infinity.
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs >= 0x38800000) {
    // Normal: rebias the exponent (127 → 15) and keep the top 10 mantissa bits; a carry may bump the exponent.
    const h = (abs >>> 13) - 0x1c000;
    const rest = abs & 0x1fff;
    return sign | (rest > 0x1000 || (rest === 0x1000 && h & 1) ? h + 1 : h);
  }
  // Subnormal or zero: the value in units of 2^-24 is mantissa · 2^(exponent - 126).
  const shift = 126 - (abs >>> 23);
  if (shift > 25) return sign;
  const mantissa = (abs & 0x7fffff) | 0x800000;
  const h = mantissa >>> shift;
  const rest = mantissa & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return sign | (rest > half || (rest === half && h & 1) ? h + 1 : h);
}
