// The BatchedLora custom operator against the TypeScript reference (kernels/lora-reference.ts), on every
// instruction-set path this CPU can run, for float32, float16 and bfloat16 weights.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { LoraIsa, NativeSession } from '../../src/model/native-runtime.js';
import { loraModel, runtime, writeModel, type WeightType } from './native-fixtures.js';
import { bindCase, mismatches, type LoraCase } from './native-lora-case.js';

const dir = mkdtempSync(join(tmpdir(), 'loraserve-native-lora-'));
const sessions = new Map<string, NativeSession>();
const WEIGHTS: WeightType[] = ['float32', 'float16', 'bfloat16'];
const isas: LoraIsa[] = runtime?.loraIsas().supported ?? [];

async function session(projections: number, weight: WeightType): Promise<NativeSession> {
  const key = `${projections}-${weight}`;
  let s = sessions.get(key);
  if (!s) {
    s = await runtime!.createSession(loraModel(dir, projections, weight), { threads: 2 });
    sessions.set(key, s);
  }
  return s;
}

async function check(c: LoraCase, weight: WeightType): Promise<string[]> {
  const s = await session(c.outs.length, weight);
  const bound = bindCase(s, c, weight);
  await s.run();
  return mismatches(c, bound);
}

const cases = (projections: number): fc.Arbitrary<LoraCase> =>
  fc
    .record({
      rows: fc.integer({ min: 1, max: 12 }),
      seq: fc.integer({ min: 1, max: 3 }),
      inFeatures: fc.integer({ min: 1, max: 80 }),
      outs: fc.array(fc.integer({ min: 1, max: 72 }), { minLength: projections, maxLength: projections }),
      slots: fc.integer({ min: 1, max: 6 }),
      maxRank: fc.integer({ min: 1, max: 64 }),
      seed: fc.nat(),
    })
    .chain((c) =>
      fc.record({
        ranks: fc.array(fc.integer({ min: 0, max: c.maxRank }), { minLength: c.slots, maxLength: c.slots }),
        rowSlots: fc.array(fc.integer({ min: 0, max: c.slots - 1 }), { minLength: c.rows, maxLength: c.rows }),
      }).map((r) => ({ ...c, ...r })),
    );

afterEach(() => runtime?.setLoraIsa('auto'));
afterAll(() => {
  for (const s of sessions.values()) s.release();
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!runtime)('BatchedLora custom operator', () => {
  it('runs on every instruction set this CPU supports, and can be forced to each', () => {
    expect(isas.at(-1)).toBe('portable');
    for (const isa of isas) {
      runtime!.setLoraIsa(isa);
      expect(runtime!.loraIsas().active).toBe(isa);
    }
    expect(() => runtime!.setLoraIsa('sse9' as LoraIsa)).toThrow(/cannot run/);
  });

  for (const isa of isas) {
    for (const weight of WEIGHTS) {
      it(`matches the reference on random shapes (${isa}, ${weight} weights, 1 to 3 projections)`, async () => {
        runtime!.setLoraIsa(isa);
        for (const projections of [1, 2, 3]) {
          await fc.assert(
            fc.asyncProperty(cases(projections), async (c) => {
              expect(await check(c, weight)).toEqual([]);
            }),
            { numRuns: 12 },
          );
        }
      });
    }

    it(`matches the reference at 0.5B shapes: 16 rows, 8 slots, rank 16 (${isa})`, async () => {
      runtime!.setLoraIsa(isa);
      const rowSlots = Array.from({ length: 16 }, (_, i) => i % 9 === 8 ? 0 : (i % 8) + 1);
      const base = { rows: 16, seq: 1, slots: 9, maxRank: 16, ranks: [0, ...Array(8).fill(16)], rowSlots, seed: 5 };
      for (const weight of ['float32', 'float16'] as const) {
        expect(await check({ ...base, inFeatures: 896, outs: [896, 128, 128] }, weight)).toEqual([]);
        expect(await check({ ...base, inFeatures: 896, outs: [4864, 4864] }, weight)).toEqual([]);
        expect(await check({ ...base, inFeatures: 4864, outs: [896] }, weight)).toEqual([]);
      }
    });

    it(`handles batch 1, many rows per slot, prefill chunks and mixed ranks 1 to 64 (${isa})`, async () => {
      runtime!.setLoraIsa(isa);
      const one = { rows: 1, seq: 1, inFeatures: 64, outs: [48], slots: 2, maxRank: 8, ranks: [0, 8], rowSlots: [1], seed: 1 };
      expect(await check(one, 'float32')).toEqual([]);
      const crowded = { rows: 40, seq: 3, inFeatures: 40, outs: [24, 36], slots: 3, maxRank: 32, ranks: [0, 32, 5], seed: 2, rowSlots: Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? 2 : 1)) };
      expect(await check(crowded, 'float16')).toEqual([]);
      const prefill = { rows: 2, seq: 70, inFeatures: 96, outs: [40], slots: 2, maxRank: 16, ranks: [0, 16], rowSlots: [1, 0], seed: 3 };
      expect(await check(prefill, 'bfloat16')).toEqual([]);
      const ranks = [0, 1, 7, 16, 33, 48, 63, 64];
      const mixed = { rows: 24, seq: 1, inFeatures: 72, outs: [40, 24, 8], slots: 8, maxRank: 64, ranks, seed: 4, rowSlots: Array.from({ length: 24 }, (_, i) => i % 8) };
      expect(await check(mixed, 'float32')).toEqual([]);
    });
  }

  it('leaves rows on slot 0 or a rank-0 slot exactly as y, bit for bit (-0, NaN payloads, subnormals)', async () => {
    const c = { rows: 3, seq: 2, inFeatures: 8, outs: [4], slots: 3, maxRank: 4, ranks: [4, 4, 0], rowSlots: [0, 1, 2], seed: 9 };
    const s = await session(1, 'float32');
    const bound = bindCase(s, c, 'float32');
    const special = new Uint32Array(bound.y[0].buffer);
    special.set([0x80000000, 0x7fc01234, 0x00000001, 0xff800000, 0x7f800001, 0x80000001, 0x3f800000, 0x00400000]);
    special.set([0x80000000, 0x7fc0abcd, 0x00000003, 0x7f800000, 0xffc00001, 0x807fffff, 0x12345678, 0x00000000], 16);
    await s.run();
    const out = new Uint32Array(bound.out[0].buffer);
    expect(Array.from(out.subarray(0, 8))).toEqual(Array.from(special.subarray(0, 8)));
    expect(Array.from(out.subarray(16, 24))).toEqual(Array.from(special.subarray(16, 24)));
    expect(mismatches(c, bound)).toEqual([]);
  });

  it('accepts an empty batch, empty rows and a rank-0 stack', async () => {
    const base = { inFeatures: 8, outs: [4], slots: 2, maxRank: 4, ranks: [0, 4], seed: 1 };
    expect(await check({ ...base, rows: 0, seq: 1, rowSlots: [] }, 'float32')).toEqual([]);
    expect(await check({ ...base, rows: 2, seq: 0, rowSlots: [1, 1] }, 'float32')).toEqual([]);
    expect(await check({ ...base, rows: 2, seq: 1, maxRank: 0, ranks: [0, 0], rowSlots: [1, 1] }, 'float16')).toEqual([]);
  });

  it('updates y in place when the same array is bound as y and as the output', async () => {
    const c = { rows: 4, seq: 1, inFeatures: 16, outs: [12], slots: 2, maxRank: 4, ranks: [0, 4], rowSlots: [1, 0, 1, 1], seed: 11 };
    const s = await session(1, 'float32');
    const bound = bindCase(s, c, 'float32');
    const y = bound.y[0];
    const delta = bound.expected[0].map((v, i) => v - y[i]);
    const start = y.slice();
    s.bindOutput('out_0', y, [c.rows, c.seq, 12]);
    await s.run();
    await s.run();
    y.forEach((v, i) => expect(v).toBeCloseTo(start[i] + 2 * delta[i], 4));
    expect(Array.from(y.subarray(12, 24))).toEqual(Array.from(start.subarray(12, 24)));
  });

  it('rejects bad slot indices, ranks, shapes and types with an error naming the input, and keeps working', async () => {
    const good = { rows: 2, seq: 1, inFeatures: 8, outs: [8], slots: 3, maxRank: 4, ranks: [0, 4, 2], rowSlots: [1, 2], seed: 6 };
    const s = await session(1, 'float32');
    const failure = async (bind: () => void): Promise<string> => {
      bindCase(s, good, 'float32');
      bind();
      return s.run().then(() => 'no error', (err: Error) => err.message);
    };
    expect(await failure(() => s.bindInput('row_slots', Int32Array.from([1, 3]), [2]))).toMatch(/row_slots\[1\] = 3 is outside \[0, 3\)/);
    expect(await failure(() => s.bindInput('row_slots', Int32Array.from([-1, 0]), [2]))).toMatch(/row_slots\[0\] = -1/);
    expect(await failure(() => s.bindInput('slot_ranks', Int32Array.from([0, 5, 1]), [3]))).toMatch(/slot_ranks\[1\] = 5 is outside \[0, 4\]/);
    expect(await failure(() => s.bindInput('slot_ranks', Int32Array.from([0, -2, 1]), [3]))).toMatch(/slot_ranks\[1\] = -2/);
    expect(await failure(() => s.bindInput('y_0', new Float32Array(3 * 8), [3, 1, 8]))).toMatch(/y_0 has shape \[3, 1, 8\], expected \[2, 1, \?\]/);
    expect(await failure(() => s.bindInput('b_0', new Float32Array(3 * 4 * 7), [3, 4, 7]))).toMatch(/b_0 has shape/);
    expect(await failure(() => s.bindInput('a_0', new Float32Array(2 * 8 * 4), [2, 8, 4]))).toMatch(/a_0 has shape/);
    expect(await check(good, 'float32')).toEqual([]);
  });

  it('rejects mixed weight types and a wrong number of inputs', async () => {
    // One node over x, s, r, y, a, b and `extra` more inputs; b declared as `bType`.
    const failure = async (name: string, extra: number, bType: WeightType): Promise<string> => {
      const model = writeModel(dir, name, (g) => {
        const ins = [g.input('x', 'float32', [1, 1, 4]), g.input('s', 'int32', [1]), g.input('r', 'int32', [1])];
        ins.push(g.input('y', 'float32', [1, 1, 4]), g.input('a', 'float32', [1, 4, 2]), g.input('b', 'float32', [1, 2, 4]));
        for (let i = 0; i < extra; i++) ins.push(g.input(`extra_${i}`, 'float32', [1]));
        g.node('BatchedLora', ins, {}, { domain: runtime!.opDomain, outputs: ['o'] });
        g.output('o', 'float32', [1, 1, 4]);
      }, { b: bType });
      const s = await runtime!.createSession(model, { threads: 1 });
      s.bindInput('x', new Float32Array(4), [1, 1, 4]);
      s.bindInput('s', new Int32Array(1), [1]);
      s.bindInput('r', new Int32Array(1), [1]);
      s.bindInput('y', new Float32Array(4), [1, 1, 4]);
      s.bindInput('a', new Float32Array(8), [1, 4, 2]);
      s.bindInput('b', bType === 'float32' ? new Float32Array(8) : new Uint16Array(8), [1, 2, 4], bType);
      for (let i = 0; i < extra; i++) s.bindInput(`extra_${i}`, new Float32Array(1), [1]);
      s.bindOutput('o', new Float32Array(4), [1, 1, 4]);
      const message = await s.run().then(() => 'no error', (err: Error) => err.message);
      s.release();
      return message;
    };
    expect(await failure('mixed', 0, 'float16')).toMatch(/BatchedLora: b_0 must be float32, got float16/);
    expect(await failure('arity', 1, 'float32')).toMatch(/BatchedLora: takes x, row_slots, slot_ranks and 1 to 3 triples \(y, a, b\); got 7 inputs/);
    expect(await failure('fine', 0, 'float32')).toBe('no error');
  });
});
