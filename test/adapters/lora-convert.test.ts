import { describe, expect, it } from 'vitest';
import { convertTransposed, f16Value, f32BitsToF16, refusedElement } from '../../src/adapters/lora-convert.js';

const f32 = new Float32Array(1);
const f32Bits = new Int32Array(f32.buffer);
/** f32BitsToF16 of a number, rounded to fp32 first. */
const toF16 = (v: number): number => {
  f32[0] = v;
  return f32BitsToF16(f32Bits[0]);
};
/** The fp32 values just below and above `v` (an fp32 value). */
const neighbours = (v: number): [number, number] => {
  f32[0] = v;
  const bits = f32Bits[0];
  f32Bits[0] = bits - 1;
  const below = f32[0];
  f32Bits[0] = bits + 1;
  return [below, f32[0]];
};

describe('f32BitsToF16', () => {
  it('keeps every fp16 value, zeros and subnormals included, and its sign', () => {
    for (let h = 0; h < 0x7c00; h++) {
      expect(toF16(f16Value(h))).toBe(h);
      expect(toF16(-f16Value(h))).toBe(h | 0x8000);
    }
  });

  it('rounds to nearest, ties to even, between every two neighbouring finite fp16 values', () => {
    for (let h = 0; h < 0x7bff; h++) {
      // Midpoints need 12 significant bits: exact in fp32.
      const mid = (f16Value(h) + f16Value(h + 1)) / 2;
      const [below, above] = neighbours(mid);
      expect(toF16(mid)).toBe(h % 2 === 0 ? h : h + 1);
      expect(toF16(below)).toBe(h);
      expect(toF16(above)).toBe(h + 1);
    }
  });

  it('rounds below the smallest subnormal to zero or to it, ties to even', () => {
    const smallest = 2 ** -24;
    expect(toF16(smallest / 2)).toBe(0);
    expect(toF16(neighbours(smallest / 2)[1])).toBe(1);
    expect(toF16(-smallest / 2)).toBe(0x8000);
    expect(toF16(1e-30)).toBe(0);
    expect(toF16(1.5 * smallest)).toBe(2);
    // The largest subnormal rounds up into the smallest normal.
    expect(toF16(neighbours(2 ** -14)[0])).toBe(0x0400);
  });

  it('overflows to Infinity from 65520 up, keeps NaN a NaN', () => {
    expect(toF16(65504)).toBe(0x7bff);
    expect(toF16(neighbours(65520)[0])).toBe(0x7bff);
    expect(toF16(65520)).toBe(0x7c00);
    expect(toF16(-1e6)).toBe(0xfc00);
    expect(toF16(Infinity)).toBe(0x7c00);
    expect(toF16(-Infinity)).toBe(0xfc00);
    expect(toF16(Number.NaN) & 0x7c00).toBe(0x7c00);
    expect(toF16(Number.NaN) & 0x3ff).not.toBe(0);
  });
});

/** `values` `[rows, cols]` stored as `dtype`. */
function stored(values: number[], dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(Float32Array.from(values).buffer);
  const bits = Uint16Array.from(values, (v) => (dtype === 'F16' ? toF16(v) : new Uint32Array(Float32Array.of(v).buffer)[0] >>> 16));
  return new Uint8Array(bits.buffer);
}

/** The values `stored` holds, exactly. */
function storedValues(bytes: Uint8Array, dtype: 'F32' | 'F16' | 'BF16'): Float32Array {
  if (dtype === 'F32') return new Float32Array(bytes.buffer);
  const bits = new Uint16Array(bytes.buffer);
  return dtype === 'F16' ? Float32Array.from(bits, f16Value) : new Float32Array(Uint32Array.from(bits, (h) => h << 16).buffer);
}

describe('convertTransposed', () => {
  // [2, 3]: exact in bf16 and fp16.
  const values = [1, -2, 0.5, 3, 0.25, -8];
  const transposedScaled = [3, 9, -6, 0.75, 1.5, -24];

  it.each(['F32', 'F16', 'BF16'] as const)('transposes and scales %s into fp32 and fp16', (dtype) => {
    const out = new Float32Array(6);
    expect(convertTransposed(stored(values, dtype), dtype, 2, 3, 3, out)).toBe(true);
    expect(Array.from(out)).toEqual(transposedScaled);
    const half = new Uint16Array(6);
    expect(convertTransposed(stored(values, dtype), dtype, 2, 3, 3, half)).toBe(true);
    expect(Array.from(half, f16Value)).toEqual(transposedScaled);
    // [2, 4]: two by two.
    const wider = [...values.slice(0, 3), 7, ...values.slice(3), 9];
    const pairs = new Uint16Array(8);
    expect(convertTransposed(stored(wider, dtype), dtype, 2, 4, 3, pairs)).toBe(true);
    expect(Array.from(pairs, f16Value)).toEqual([3, 9, -6, 0.75, 1.5, -24, 21, 27]);
  });

  it('rounds fp32(value × scale) to fp16 by f32BitsToF16, into fp16 bits or their fp32 value', () => {
    const many = Array.from({ length: 64 }, (_, i) => Math.sin(i) * 10 ** ((i % 9) - 6));
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const bytes = stored(many, dtype);
      const wide = new Float32Array(64);
      const half = new Uint16Array(64);
      expect(convertTransposed(bytes, dtype, 8, 8, 1.7, wide)).toBe(true);
      expect(convertTransposed(bytes, dtype, 8, 8, 1.7, half)).toBe(true);
      const values = storedValues(bytes, dtype);
      expect(Array.from(half)).toEqual(Array.from(half, (_, k) => toF16(values[(k % 8) * 8 + Math.floor(k / 8)] * 1.7)));
      expect(Array.from(wide)).toEqual(Array.from(half, f16Value));
    }
  });

  // [2, 3] goes value by value; [2, 4] (even sides) two by two.
  it.each(['F32', 'F16', 'BF16'] as const)('refuses a non-finite %s value and says where it is stored', (dtype) => {
    for (const cols of [3, 4]) {
      const bad = Array.from({ length: 2 * cols }, (_, i) => (i === cols + 1 ? Number.NaN : i));
      const out = new Uint16Array(2 * cols);
      expect(convertTransposed(stored(bad, dtype), dtype, 2, cols, 1, out)).toBe(false);
      expect(refusedElement(stored(bad, dtype), dtype, 2, cols, out)).toEqual({ index: cols + 1, value: Number.NaN });
    }
  });

  it('refuses a value that the scale pushes past fp16, into fp32 as into fp16', () => {
    for (const [dtype, cols] of [['F32', 3], ['BF16', 3], ['BF16', 4]] as const) {
      const big = Array.from({ length: 2 * cols }, (_, i) => (i === 3 ? 40960 : i));
      for (const out of [new Uint16Array(2 * cols), new Float32Array(2 * cols)]) {
        expect(convertTransposed(stored(big, dtype), dtype, 2, cols, 1, out)).toBe(true);
        expect(convertTransposed(stored(big, dtype), dtype, 2, cols, 2, out)).toBe(false);
        expect(refusedElement(stored(big, dtype), dtype, 2, cols, out)).toEqual({ index: 3, value: 40960 });
      }
    }
  });
});
