// One BatchedLora call: random data for a shape, bound to a session, and the TypeScript reference to check it by.
import { loraReference, type LoraSlotWeights } from '../../kernels/lora-reference.js';
import type { NativeSession } from '../../src/model/native-runtime.js';
import { Random } from '../../src/synth/random.js';
import { encodeWeights, type WeightType } from './native-fixtures.js';

export interface LoraCase {
  rows: number;
  seq: number;
  inFeatures: number;
  /** out_p per projection (1 to 3 projections). */
  outs: number[];
  slots: number;
  maxRank: number;
  /** Each slot's rank, within [0, maxRank]; slot 0 never contributes. */
  ranks: number[];
  rowSlots: number[];
  seed: number;
}

export interface BoundCase {
  y: Float32Array[];
  out: Float32Array[];
  expected: Float32Array[];
}

/** Absolute and relative tolerance of the kernel against the float64 reference (fp32 accumulation). */
export const TOLERANCE = 1e-4;

function normal(rng: Random, n: number, std: number): Float32Array {
  const a = new Float32Array(n);
  rng.fillNormal(a, std);
  return a;
}

/** Binds fresh data for `c` (outputs prefilled with NaN, so every element must be written) and computes the reference. */
export function bindCase(session: NativeSession, c: LoraCase, weight: WeightType): BoundCase {
  const rng = new Random(Math.abs(c.seed), 'lora-case');
  const tokens = c.rows * c.seq;
  const x = normal(rng, tokens * c.inFeatures, 1);
  session.bindInput('x', x, [c.rows, c.seq, c.inFeatures]);
  session.bindInput('row_slots', Int32Array.from(c.rowSlots), [c.rows]);
  session.bindInput('slot_ranks', Int32Array.from(c.ranks), [c.slots]);
  const tokenSlots = Array.from({ length: tokens }, (_, t) => c.rowSlots[Math.floor(t / c.seq)]);
  const bound: BoundCase = { y: [], out: [], expected: [] };
  c.outs.forEach((outFeatures, p) => {
    const y = normal(rng, tokens * outFeatures, 1);
    const a = encodeWeights(normal(rng, c.slots * c.inFeatures * c.maxRank, 1 / Math.sqrt(c.inFeatures)), weight);
    const b = encodeWeights(normal(rng, c.slots * c.maxRank * outFeatures, 1 / Math.sqrt(c.maxRank)), weight);
    const out = new Float32Array(tokens * outFeatures).fill(NaN);
    session.bindInput(`y_${p}`, y, [c.rows, c.seq, outFeatures]);
    session.bindInput(`a_${p}`, a.data, [c.slots, c.inFeatures, c.maxRank], weight);
    session.bindInput(`b_${p}`, b.data, [c.slots, c.maxRank, outFeatures], weight);
    session.bindOutput(`out_${p}`, out, [c.rows, c.seq, outFeatures]);
    const expected = y.slice();
    loraReference(x, expected, tokens, c.inFeatures, outFeatures, tokenSlots, slotWeights(c, a.exact, b.exact, outFeatures));
    bound.y.push(y);
    bound.out.push(out);
    bound.expected.push(expected);
  });
  return bound;
}

/** Each slot's A [in, rank] and B [rank, out], cut from the padded stacks; null where a slot adds nothing. */
function slotWeights(c: LoraCase, a: Float32Array, b: Float32Array, outFeatures: number): (LoraSlotWeights | null)[] {
  return c.ranks.map((rank, s) => {
    if (s === 0 || rank === 0) return null;
    const sa = new Float32Array(c.inFeatures * rank);
    for (let k = 0; k < c.inFeatures; k++)
      for (let r = 0; r < rank; r++) sa[k * rank + r] = a[(s * c.inFeatures + k) * c.maxRank + r];
    const sb = b.slice(s * c.maxRank * outFeatures, (s * c.maxRank + rank) * outFeatures);
    return { a: sa, b: sb, rank, scale: 1 };
  });
}

/**
 * Problems with the run's outputs, empty when right: rows without an adapter must hold y bit for bit, the others
 * the reference within TOLERANCE.
 */
export function mismatches(c: LoraCase, bound: BoundCase): string[] {
  const problems: string[] = [];
  c.outs.forEach((outFeatures, p) => {
    const got = bound.out[p];
    const gotBits = new Uint32Array(got.buffer);
    const yBits = new Uint32Array(bound.y[p].buffer);
    for (let i = 0; i < got.length && problems.length < 5; i++) {
      const row = Math.floor(i / (c.seq * outFeatures));
      const slot = c.rowSlots[row];
      if (slot === 0 || c.ranks[slot] === 0) {
        if (gotBits[i] !== yBits[i]) problems.push(`out_${p}[${i}] (row ${row}, no adapter): ${got[i]} is not y = ${bound.y[p][i]}`);
      } else if (!(Math.abs(got[i] - bound.expected[p][i]) <= TOLERANCE * (1 + Math.abs(bound.expected[p][i])))) {
        problems.push(`out_${p}[${i}] (row ${row}, slot ${slot}): ${got[i]}, reference ${bound.expected[p][i]}`);
      }
    }
  });
  return problems;
}
