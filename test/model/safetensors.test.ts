import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../src/model/checkpoint-error.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { writeSafetensors } from '../../src/synth/safetensors-writer.js';

const dir = mkdtempSync(join(tmpdir(), 'loraserve-safetensors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileCount = 0;
const freshPath = () => join(dir, `t${fileCount++}.safetensors`);

/** Writes a file with a hand-made header (object or raw text) followed by `dataBytes` zero bytes. */
function rawFile(header: object | string, dataBytes: number, declaredLength?: number): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(declaredLength ?? json.length));
  const path = freshPath();
  writeFileSync(path, Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]));
  return path;
}

function openError(path: string): CheckpointError {
  try {
    SafetensorsFile.open(path).close();
  } catch (err) {
    expect(err).toBeInstanceOf(CheckpointError);
    return err as CheckpointError;
  }
  throw new Error(`expected ${path} to be refused`);
}

function roundTrip(dtype: 'F32' | 'F16' | 'BF16', values: number[]): Float32Array {
  const path = freshPath();
  writeSafetensors(path, [{ name: 'x', dtype, shape: [values.length], data: Float32Array.from(values) }]);
  const file = SafetensorsFile.open(path);
  try {
    return file.read('x');
  } finally {
    file.close();
  }
}

describe('writeSafetensors + SafetensorsFile round trip', () => {
  it('writes the standard layout: u64 header length, space-padded JSON aligned to 8, data in order', () => {
    const path = freshPath();
    writeSafetensors(
      path,
      [
        { name: 'a', dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
        { name: 'b', dtype: 'F16', shape: [3], data: Float32Array.from([1, -2, 0.5]) },
        { name: 'c', dtype: 'BF16', shape: [], data: Float32Array.from([1]) },
      ],
      { format: 'pt' },
    );
    const bytes = readFileSync(path);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect(headerLength % 8).toBe(0);
    const headerText = bytes.subarray(8, 8 + headerLength).toString('utf8');
    expect(headerText).toMatch(/^\{.*\} *$/);
    expect(JSON.parse(headerText)).toEqual({
      __metadata__: { format: 'pt' },
      a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] },
      b: { dtype: 'F16', shape: [3], data_offsets: [24, 30] },
      c: { dtype: 'BF16', shape: [], data_offsets: [30, 32] },
    });
    const data = bytes.subarray(8 + headerLength);
    expect(data.length).toBe(32);
    expect(data.readFloatLE(20)).toBe(6);
    expect([data.readUInt16LE(24), data.readUInt16LE(26), data.readUInt16LE(28)]).toEqual([0x3c00, 0xc000, 0x3800]);
    expect(data.readUInt16LE(30)).toBe(0x3f80);

    const file = SafetensorsFile.open(path);
    expect(file.names()).toEqual(['a', 'b', 'c']);
    expect(file.has('a')).toBe(true);
    expect(file.has('__metadata__')).toBe(false);
    expect(file.info('a')).toEqual({ dtype: 'F32', shape: [2, 3] });
    expect(file.info('c')).toEqual({ dtype: 'BF16', shape: [] });
    expect(file.metadata).toEqual({ format: 'pt' });
    expect([...file.read('a')]).toEqual([1, 2, 3, 4, 5, 6]);
    expect([...file.read('b')]).toEqual([1, -2, 0.5]);
    expect([...file.read('c')]).toEqual([1]);
    file.close();
  });

  it('keeps F32 bit-exact', () => {
    const values = [0, -0, 1e-40, Math.fround(Math.PI), -3.4028234663852886e38, Infinity, -Infinity];
    expect([...roundTrip('F32', values)]).toEqual(values.map(Math.fround));
    expect(Number.isNaN(roundTrip('F32', [NaN])[0])).toBe(true);
  });

  it('rounds F16 to nearest even, with subnormals, overflow and NaN', () => {
    const cases: [number, number][] = [
      [1, 1],
      [0.1, 0.0999755859375],
      [-2.5, -2.5],
      [65504, 65504],
      [65519.99, 65504],
      [65520, Infinity],
      [1e6, Infinity],
      [-1e6, -Infinity],
      [1 + 2 ** -11, 1], // tie between 1 and 1 + 2^-10: mantissa 0 is even
      [1 + 3 * 2 ** -11, 1 + 2 ** -9], // tie between mantissa 1 and 2: rounds up to even
      [1 + 2 ** -11 + 2 ** -20, 1 + 2 ** -10], // just above the tie
      [2 ** -14, 2 ** -14], // smallest normal
      [2 ** -24, 2 ** -24], // smallest subnormal
      [3 * 2 ** -25, 2 ** -23], // subnormal tie 1.5 units: rounds to 2
      [2 ** -25, 0], // tie between 0 and the smallest subnormal
      [2 ** -25 * 1.0001, 2 ** -24],
      [1e-9, 0],
    ];
    const got = roundTrip('F16', cases.map(([x]) => x));
    expect([...got]).toEqual(cases.map(([, y]) => y));
    const signed = roundTrip('F16', [-0, NaN, -1e-9]);
    expect(Object.is(signed[0], -0)).toBe(true);
    expect(Number.isNaN(signed[1])).toBe(true);
    expect(Object.is(signed[2], -0)).toBe(true);
  });

  it('rounds BF16 to nearest even, keeping the fp32 range', () => {
    const cases: [number, number][] = [
      [1, 1],
      [0.1, 0.10009765625],
      [Math.PI, 3.140625],
      [-2.5, -2.5],
      [1 + 2 ** -8, 1], // tie: even mantissa stays
      [1 + 3 * 2 ** -8, 1 + 2 ** -6], // tie: odd mantissa rounds up
      [1 + 2 ** -8 + 2 ** -20, 1 + 2 ** -7],
      [1e30, 1.0002555517425873e30], // 0x7149f2ca → 0x714a
      [3.4028234663852886e38, Infinity], // rounds past the largest bf16
      [-Infinity, -Infinity],
      [1e-40, 9.183549615799121e-41], // fp32 subnormal 0x000116c2 → 0x0001
    ];
    const got = roundTrip('BF16', cases.map(([x]) => x));
    expect([...got]).toEqual(cases.map(([, y]) => y));
    expect(Number.isNaN(roundTrip('BF16', [NaN])[0])).toBe(true);
  });

  it('widens many 16-bit elements correctly', () => {
    // Values exactly representable in both fp16 and bf16, so the expected result is the input.
    const values = Array.from({ length: 5000 }, (_, i) => ((i * 37) % 201 - 100) * 0.5);
    expect([...roundTrip('F16', values)]).toEqual(values);
    expect([...roundTrip('BF16', values)]).toEqual(values);
  });

  it('reads zero-element tensors', () => {
    const path = freshPath();
    writeSafetensors(path, [
      { name: 'empty', dtype: 'F16', shape: [0, 4], data: new Float32Array(0) },
      { name: 'x', dtype: 'F32', shape: [1], data: Float32Array.from([7]) },
    ]);
    const file = SafetensorsFile.open(path);
    expect(file.read('empty').length).toBe(0);
    expect([...file.read('x')]).toEqual([7]);
    file.close();
  });

  it('refuses data that does not match the shape, and duplicate or reserved names', () => {
    expect(() => writeSafetensors(freshPath(), [{ name: 'x', dtype: 'F32', shape: [2, 2], data: new Float32Array(3) }])).toThrow(
      /tensor x has shape \[2, 2\] but 3 elements/,
    );
    const t = { name: 'x', dtype: 'F32' as const, shape: [1], data: new Float32Array(1) };
    expect(() => writeSafetensors(freshPath(), [t, t])).toThrow(/duplicate or reserved tensor name x/);
    expect(() => writeSafetensors(freshPath(), [{ ...t, name: '__metadata__' }])).toThrow(/duplicate or reserved tensor name __metadata__/);
  });

  it('names the file and tensor for unknown names and reads after close', () => {
    const path = freshPath();
    writeSafetensors(path, [{ name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }]);
    const file = SafetensorsFile.open(path);
    expect(() => file.info('y')).toThrow(`${path}: no tensor named y`);
    file.close();
    expect(() => file.read('x')).toThrow(`${path}: cannot read tensor x: file is closed`);
  });
});

describe('SafetensorsFile validation', () => {
  const entry = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });

  it('refuses a missing file', () => {
    expect(openError(join(dir, 'absent.safetensors')).message).toMatch(/absent\.safetensors: cannot open/);
  });

  it('refuses a file shorter than 8 bytes', () => {
    const path = freshPath();
    writeFileSync(path, Buffer.from([1, 2, 3]));
    expect(openError(path).message).toBe(`${path}: not a safetensors file: 3 bytes, shorter than the 8-byte header length`);
  });

  it('refuses a header length past the end of the file', () => {
    const path = rawFile('{}', 0, 1000);
    expect(openError(path).message).toBe(`${path}: header length 1000 runs past the end of the file (10 bytes)`);
  });

  it('refuses a header length of 100 MB or more', () => {
    const path = rawFile('{}', 0, 100_000_000);
    truncateSync(path, 100_000_100); // sparse: no real 100 MB written
    expect(openError(path).message).toBe(`${path}: header length 100000000 exceeds the 100000000-byte limit`);
  });

  it('refuses a header that is not JSON or not UTF-8', () => {
    const path = rawFile('{"x": ', 0);
    expect(openError(path).message).toMatch(new RegExp(`^${path}: header is not valid UTF-8 JSON: `));
    const bad = freshPath();
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(2n);
    writeFileSync(bad, Buffer.concat([prefix, Buffer.from([0xff, 0xfe])]));
    expect(openError(bad).message).toMatch(/header is not valid UTF-8 JSON/);
  });

  it('refuses a header that is not a JSON object', () => {
    expect(openError(rawFile('[1, 2]', 0)).message).toMatch(/header is not a JSON object \(found an array\)$/);
    expect(openError(rawFile('null', 0)).message).toMatch(/header is not a JSON object \(found null\)$/);
    expect(openError(rawFile({ x: 5 }, 0)).message).toMatch(/tensor x: header entry is not an object$/);
  });

  it('refuses unsupported dtypes, naming dtype and tensor', () => {
    const path = rawFile({ ids: entry('I64', [2], [0, 16]) }, 16);
    expect(openError(path).message).toBe(`${path}: unsupported dtype I64 for tensor ids (supported: F32, F16, BF16)`);
    expect(openError(rawFile({ w: entry('F64', [1], [0, 8]) }, 8)).message).toMatch(/unsupported dtype F64 for tensor w/);
    expect(openError(rawFile({ w: { shape: [1], data_offsets: [0, 4] } }, 4)).message).toMatch(/tensor w: dtype is missing or not a string/);
  });

  it('refuses negative or non-integer shapes', () => {
    expect(openError(rawFile({ w: entry('F32', [2, -1], [0, 0]) }, 0)).message).toMatch(
      /tensor w: shape must be an array of non-negative integers \(found \[2,-1\]\)/,
    );
    expect(openError(rawFile({ w: entry('F32', [1.5], [0, 4]) }, 4)).message).toMatch(/tensor w: shape must be an array of non-negative integers \(found \[1\.5\]\)/);
    expect(openError(rawFile({ w: entry('F32', '3', [0, 12]) }, 12)).message).toMatch(/tensor w: shape must be an array/);
  });

  it('refuses malformed data_offsets', () => {
    expect(openError(rawFile({ w: entry('F32', [1], [8, 4]) }, 8)).message).toMatch(/tensor w: data_offsets must be two non-negative integers \[begin, end\] with begin <= end \(found \[8,4\]\)/);
    expect(openError(rawFile({ w: entry('F32', [1], [0]) }, 8)).message).toMatch(/tensor w: data_offsets must be/);
    expect(openError(rawFile({ w: entry('F32', [1], [-4, 0]) }, 8)).message).toMatch(/tensor w: data_offsets must be/);
  });

  it('refuses offsets whose size does not match the shape', () => {
    const path = rawFile({ w: entry('F16', [2, 3], [0, 24]) }, 24);
    expect(openError(path).message).toBe(`${path}: tensor w: data_offsets [0, 24] span 24 bytes, but F16 shape [2, 3] needs 12`);
  });

  it('refuses a truncated file, saying how many bytes it needs', () => {
    const path = freshPath();
    writeSafetensors(path, [
      { name: 'a', dtype: 'F32', shape: [4], data: new Float32Array(4) },
      { name: 'b', dtype: 'BF16', shape: [8], data: new Float32Array(8) },
    ]);
    const full = readFileSync(path).length;
    truncateSync(path, full - 3);
    expect(openError(path).message).toBe(`${path}: file is truncated: expected ${full} bytes, found ${full - 3}`);
  });

  it('refuses overlapping tensors', () => {
    const path = rawFile({ a: entry('F32', [4], [0, 16]), b: entry('F32', [2], [12, 20]) }, 20);
    expect(openError(path).message).toBe(`${path}: tensors a and b overlap`);
    const same = rawFile({ a: entry('F32', [2], [0, 8]), b: entry('F16', [4], [0, 8]) }, 8);
    expect(openError(same).message).toMatch(/tensors a and b overlap/);
  });

  it('accepts __metadata__ of strings and refuses other metadata', () => {
    const ok = SafetensorsFile.open(rawFile({ __metadata__: { format: 'pt' }, w: entry('F32', [1], [0, 4]) }, 4));
    expect(ok.metadata).toEqual({ format: 'pt' });
    expect(ok.names()).toEqual(['w']);
    ok.close();
    expect(openError(rawFile({ __metadata__: { n: 1 } }, 0)).message).toMatch(/__metadata__\.n is not a string$/);
    expect(openError(rawFile({ __metadata__: 'pt' }, 0)).message).toMatch(/__metadata__ is not an object$/);
  });
});
