import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { emitBatchedLora } from '../../kernels/batched-lora.js';
import type { LoraSlotWeights } from '../../kernels/lora-reference.js';
import { loraReference } from '../../kernels/lora-reference.js';
import { OnnxGraph } from '../../src/model/onnx-graph.js';
import { OrtSession } from '../../src/model/onnx-runtime.js';
import { Random } from '../../src/synth/random.js';

const IN = 48;
const OUT = 40;
const RANK = 16;
const dir = mkdtempSync(join(tmpdir(), 'loraserve-kernel-'));
let session: OrtSession;
const rng = new Random(7);
const weight = randomArray(IN * OUT, 0.2);

function randomArray(n: number, std: number): Float32Array {
  const a = new Float32Array(n);
  rng.fillNormal(a, std);
  return a;
}

beforeAll(async () => {
  const g = new OnnxGraph(join(dir, 'model.onnx.data'));
  const x = g.input('x', 'float32', ['batch', 'seq', IN]);
  const p = {
    rowA: g.input('rowA', 'float32', ['batch', IN, RANK]),
    rowB: g.input('rowB', 'float32', ['batch', RANK, OUT]),
  };
  const y = g.op('MatMul', [x, g.initializer('w', 'float32', [IN, OUT], weight)]);
  const [out] = emitBatchedLora(g, x, [y], [p], g.input('active', 'bool', []));
  g.node('Identity', [out], {}, { outputs: ['out'] });
  g.output('out', 'float32', ['batch', 'seq', OUT]);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(join(dir, 'model.onnx'), g.finish('lora-kernel'));
  session = await OrtSession.create(join(dir, 'model.onnx'), { threads: 1 });
});

afterAll(async () => {
  await session?.release();
  rmSync(dir, { recursive: true, force: true });
});

/** Slot stacks with slot 0 all zeros and each adapter's rank padded to RANK with zeros, scale folded into B. */
function stacks(adapters: LoraSlotWeights[]): { a: Float32Array; b: Float32Array } {
  const slots = adapters.length + 1;
  const a = new Float32Array(slots * IN * RANK);
  const b = new Float32Array(slots * RANK * OUT);
  adapters.forEach((w, i) => {
    const s = i + 1;
    for (let k = 0; k < IN; k++) for (let r = 0; r < w.rank; r++) a[(s * IN + k) * RANK + r] = w.a[k * w.rank + r];
    for (let r = 0; r < w.rank; r++) for (let o = 0; o < OUT; o++) b[(s * RANK + r) * OUT + o] = w.scale * w.b[r * OUT + o];
  });
  return { a, b };
}

async function run(x: Float32Array, batch: number, seq: number, slots: number[], adapters: LoraSlotWeights[], active = true) {
  const { a, b } = stacks(adapters);
  // The rows' own copies of their slot's weights, as the engine keeps them.
  const rowA = new Float32Array(batch * IN * RANK);
  const rowB = new Float32Array(batch * RANK * OUT);
  slots.forEach((s, i) => {
    rowA.set(a.subarray(s * IN * RANK, (s + 1) * IN * RANK), i * IN * RANK);
    rowB.set(b.subarray(s * RANK * OUT, (s + 1) * RANK * OUT), i * RANK * OUT);
  });
  const out = await session.run({
    x: { type: 'float32', data: x, dims: [batch, seq, IN] },
    rowA: { type: 'float32', data: rowA, dims: [batch, IN, RANK] },
    rowB: { type: 'float32', data: rowB, dims: [batch, RANK, OUT] },
    active: { type: 'bool', data: Uint8Array.of(active ? 1 : 0), dims: [] },
  }, ['out']);
  return out.out.data;
}

function base(x: Float32Array, rows: number): Float32Array {
  const y = new Float32Array(rows * OUT);
  for (let i = 0; i < rows; i++) for (let o = 0; o < OUT; o++) {
    let s = 0;
    for (let k = 0; k < IN; k++) s += x[i * IN + k] * weight[k * OUT + o];
    y[i * OUT + o] = s;
  }
  return y;
}

function adapter(rank: number, scale: number): LoraSlotWeights {
  return { a: randomArray(IN * rank, 0.3), b: randomArray(rank * OUT, 0.3), rank, scale };
}

describe('batched LoRA kernel', () => {
  it.each([
    { batch: 1, seq: 1, adapters: 1, slots: [1] },
    { batch: 4, seq: 1, adapters: 3, slots: [0, 1, 2, 3] },
    { batch: 9, seq: 1, adapters: 8, slots: [0, 1, 2, 3, 4, 5, 6, 7, 8] },
    { batch: 3, seq: 5, adapters: 2, slots: [0, 1, 2] },
    // Many rows on one slot (and a few on another): the shape of one hot adapter.
    { batch: 12, seq: 1, adapters: 2, slots: [1, 1, 1, 2, 1, 1, 0, 1, 1, 1, 2, 1] },
  ])('matches the reference loop: batch $batch, seq $seq, $adapters adapters, mixed ranks', async ({ batch, seq, adapters: count, slots }) => {
    const ranks = [RANK, 8, 4, 1, 16, 2, 12, 7];
    const adapters = Array.from({ length: count }, (_, i) => adapter(ranks[i % ranks.length], 0.5 + i));
    const x = randomArray(batch * seq * IN, 1);
    const got = await run(x, batch, seq, slots, adapters);
    const want = base(x, batch * seq);
    const tokenSlots = slots.flatMap((s) => Array<number>(seq).fill(s));
    loraReference(x, want, batch * seq, IN, OUT, tokenSlots, [null, ...adapters]);
    const scaleOf = Math.max(...want.map(Math.abs));
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThan(1e-5 * scaleOf);
  });

  it('leaves rows without an adapter bit-identical to the base output', async () => {
    const adapters = [adapter(8, 2), adapter(16, 1)];
    const slots = [0, 1, 0, 2, 0];
    const x = randomArray(slots.length * IN, 1);
    const withLora = await run(x, slots.length, 1, slots, adapters);
    const without = await run(x, slots.length, 1, slots, adapters, false);
    slots.forEach((s, i) => {
      const rowA = withLora.subarray(i * OUT, (i + 1) * OUT);
      const rowB = without.subarray(i * OUT, (i + 1) * OUT);
      if (s === 0) expect(Array.from(rowA)).toEqual(Array.from(rowB));
      else expect(Array.from(rowA)).not.toEqual(Array.from(rowB));
    });
  });

  it("gives each row bit-identical output alone and in any batch: a row's result does not depend on its neighbours", async () => {
    const adapters = [adapter(16, 1.5), adapter(4, 0.7), adapter(8, 1)];
    const slots = [1, 2, 0, 3, 1, 1, 2, 3, 1, 0, 1, 2, 3, 1, 1, 1];
    const x = randomArray(slots.length * IN, 1);
    const batched = await run(x, slots.length, 1, slots, adapters);
    for (let i = 0; i < slots.length; i++) {
      const alone = await run(x.slice(i * IN, (i + 1) * IN), 1, 1, [slots[i]], adapters);
      expect(Array.from(batched.subarray(i * OUT, (i + 1) * OUT)), `row ${i}`).toEqual(Array.from(alone));
    }
  });
});
