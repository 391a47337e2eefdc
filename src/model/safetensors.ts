import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { CheckpointError } from './checkpoint-error.js';

/** Tensor dtypes the reader converts to fp32. */
export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';

/** Bytes per element of each supported dtype. */
export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = { F32: 4, F16: 2, BF16: 2 };

/** Headers beyond this are refused before they are read (the reference implementation's limit). */
const MAX_HEADER_BYTES = 100_000_000;
/** Largest single readSync; bigger reads are split so no call nears the 2 GiB limit. */
const MAX_READ_BYTES = 1 << 30;

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
}

interface TensorEntry extends TensorInfo {
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

/**
 * A `.safetensors` file whose header has been fully validated (dtypes, shapes, offsets inside the file, no overlaps)
 * before any tensor is read. Tensors are read by byte range and converted to fp32 on demand.
 */
export class SafetensorsFile {
  readonly path: string;
  /** The header's `__metadata__` (string to string), empty when absent. */
  readonly metadata: Readonly<Record<string, string>>;
  #fd: number | null;
  readonly #entries: Map<string, TensorEntry>;

  private constructor(path: string, fd: number, entries: Map<string, TensorEntry>, metadata: Record<string, string>) {
    this.path = path;
    this.#fd = fd;
    this.#entries = entries;
    this.metadata = Object.freeze(metadata);
  }

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      throw new CheckpointError(path, `cannot open: ${(err as Error).message}`);
    }
    try {
      const { entries, metadata } = readHeader(path, fd);
      return new SafetensorsFile(path, fd, entries, metadata);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.#entries.keys()];
  }

  has(name: string): boolean {
    return this.#entries.has(name);
  }

  info(name: string): TensorInfo {
    const { dtype, shape } = this.#entry(name);
    return { dtype, shape: [...shape] };
  }

  /** The tensor's elements, row-major, converted to fp32. */
  read(name: string): Float32Array<ArrayBuffer> {
    const entry = this.#entry(name);
    if (this.#fd === null) throw new CheckpointError(this.path, `cannot read tensor ${name}: file is closed`);
    const count = (entry.end - entry.begin) / DTYPE_BYTES[entry.dtype];
    const out = new Float32Array(count);
    const bytes = new Uint8Array(out.buffer);
    if (entry.dtype === 'F32') {
      readExactly(this.path, this.#fd, bytes, 0, entry.begin, entry.end - entry.begin);
      return out;
    }
    // 16-bit data goes into the upper half of the output and widens in place, front to back: writing element i
    // (bytes 4i..4i+3) never reaches a 16-bit element not yet read (at byte 2·count + 2j, j > i).
    readExactly(this.path, this.#fd, bytes, 2 * count, entry.begin, entry.end - entry.begin);
    const halves = new Uint16Array(out.buffer, 2 * count, count);
    const words = new Uint32Array(out.buffer);
    if (entry.dtype === 'BF16') {
      for (let i = 0; i < count; i++) words[i] = halves[i] << 16;
    } else {
      const table = f16Table();
      for (let i = 0; i < count; i++) words[i] = table[halves[i]];
    }
    return out;
  }

  /**
   * The tensor's bytes as stored (its dtype, little-endian), read into the start of `into` when given (it must hold
   * them; a caller reusing one buffer saves an allocation per tensor), else into a new array.
   */
  readBytes(name: string, into?: Uint8Array): Uint8Array {
    const entry = this.#entry(name);
    if (this.#fd === null) throw new CheckpointError(this.path, `cannot read tensor ${name}: file is closed`);
    const length = entry.end - entry.begin;
    if (into && into.length < length) throw new RangeError(`tensor ${name} needs ${length} bytes, the buffer holds ${into.length}`);
    const bytes = into ? into.subarray(0, length) : new Uint8Array(length);
    readExactly(this.path, this.#fd, bytes, 0, entry.begin, length);
    return bytes;
  }

  close(): void {
    if (this.#fd === null) return;
    closeSync(this.#fd);
    this.#fd = null;
  }

  #entry(name: string): TensorEntry {
    const entry = this.#entries.get(name);
    if (!entry) throw new CheckpointError(this.path, `no tensor named ${name}`);
    return entry;
  }
}

function readHeader(path: string, fd: number): { entries: Map<string, TensorEntry>; metadata: Record<string, string> } {
  const fail = (problem: string): never => {
    throw new CheckpointError(path, problem);
  };
  const fileSize = fstatSync(fd).size;
  if (fileSize < 8) fail(`not a safetensors file: ${fileSize} bytes, shorter than the 8-byte header length`);

  const lengthBytes = new Uint8Array(8);
  readExactly(path, fd, lengthBytes, 0, 0, 8);
  const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
  if (headerLength > BigInt(fileSize - 8)) {
    fail(`header length ${headerLength} runs past the end of the file (${fileSize} bytes)`);
  }
  if (headerLength >= BigInt(MAX_HEADER_BYTES)) fail(`header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const headerBytes = new Uint8Array(Number(headerLength));
  readExactly(path, fd, headerBytes, 0, 8, headerBytes.length);

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (err) {
    fail(`header is not valid UTF-8 JSON: ${(err as Error).message}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    fail(`header is not a JSON object (found ${describe(header)})`);
  }

  const dataStart = 8 + headerBytes.length;
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(value, fail);
    } else {
      entries.set(name, parseEntry(name, value, dataStart, fail));
    }
  }

  let needed = dataStart;
  for (const entry of entries.values()) needed = Math.max(needed, entry.end);
  if (needed > fileSize) fail(`file is truncated: expected ${needed} bytes, found ${fileSize}`);

  // Empty tensors occupy no bytes, so they cannot overlap anything.
  const ordered = [...entries].filter(([, e]) => e.end > e.begin).sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  for (let i = 1; i < ordered.length; i++) {
    const [prevName, prev] = ordered[i - 1];
    const [name, entry] = ordered[i];
    if (entry.begin < prev.end) fail(`tensors ${prevName} and ${name} overlap`);
  }
  return { entries, metadata };
}

function parseEntry(name: string, value: unknown, dataStart: number, fail: (problem: string) => never): TensorEntry {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail(`tensor ${name}: header entry is not an object`);
  }
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== 'string') fail(`tensor ${name}: dtype is missing or not a string`);
  if (!isSupportedDtype(dtype as string)) {
    fail(`unsupported dtype ${String(dtype)} for tensor ${name} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(`tensor ${name}: shape must be an array of non-negative integers (found ${JSON.stringify(shape)})`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[0] > offsets[1]
  ) {
    fail(`tensor ${name}: data_offsets must be two non-negative integers [begin, end] with begin <= end (found ${JSON.stringify(offsets)})`);
  }
  const dims = shape as number[];
  const [begin, end] = offsets as [number, number];
  const expected = dims.reduce((n, d) => n * d, 1) * DTYPE_BYTES[dtype as SafetensorsDtype];
  if (end - begin !== expected) {
    fail(`tensor ${name}: data_offsets [${begin}, ${end}] span ${end - begin} bytes, but ${dtype} shape [${dims.join(', ')}] needs ${expected}`);
  }
  return { dtype: dtype as SafetensorsDtype, shape: dims, begin: dataStart + begin, end: dataStart + end };
}

function parseMetadata(value: unknown, fail: (problem: string) => never): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('__metadata__ is not an object');
  const metadata: Record<string, string> = {};
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string') fail(`__metadata__.${key} is not a string`);
    metadata[key] = v as string;
  }
  return metadata;
}

function isSupportedDtype(dtype: string): dtype is SafetensorsDtype {
  return Object.hasOwn(DTYPE_BYTES, dtype);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

function readExactly(path: string, fd: number, into: Uint8Array, offset: number, position: number, length: number): void {
  let done = 0;
  while (done < length) {
    const n = readSync(fd, into, offset + done, Math.min(length - done, MAX_READ_BYTES), position + done);
    if (n === 0) throw new CheckpointError(path, `file is truncated: read ended at byte ${position + done}, expected ${position + length}`);
    done += n;
  }
}

let f16Bits: Uint32Array | null = null;

/** fp32 bit patterns of all 65536 fp16 values, built once. */
function f16Table(): Uint32Array {
  if (f16Bits) return f16Bits;
  const values = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    let magnitude: number;
    if (exponent === 0) magnitude = mantissa * 2 ** -24;
    else if (exponent === 31) magnitude = mantissa === 0 ? Infinity : NaN;
    else magnitude = (1 + mantissa / 1024) * 2 ** (exponent - 15);
    values[h] = h & 0x8000 ? -magnitude : magnitude;
  }
  f16Bits = new Uint32Array(values.buffer);
  return f16Bits;
}
