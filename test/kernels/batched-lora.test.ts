import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LoraKernel } from '../../kernels/batched-lora.js';
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
  const step = { dense: g.input('dense', 'bool', []), mask: '' };
  step.mask = g.op('Unsqueeze', [g.input('mask', 'float32', ['slots', 'tokens']), g.int64s('mask.axes', [2])]);
  const p = {
    a: g.input('a', 'float32', ['slots', IN, RANK]),
    b: g.input('b', 'float32', ['slots', RANK, OUT]),
    rowA: g.input('rowA', 'float32', ['batch', IN, RANK]),
    rowB: g.input('rowB', 'float32', ['batch', RANK, OUT]),
  };
  const y = g.op('MatMul', [x, g.initializer('w', 'float32', [IN, OUT], weight)]);
  const [out] = emitBatchedLora(g, x, [y], step, [p], g.input('active', 'bool', []));
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

async function run(x: Float32Array, batch: number, seq: number, slots: number[], adapters: LoraSlotWeights[], kernel: LoraKernel, active = true) {
  const { a, b } = stacks(adapters);
  const n = adapters.length + 1;
  const mask = new Float32Array(n * batch * seq);
  slots.forEach((s, i) => mask.fill(1, s * batch * seq + i * seq, s * batch * seq + (i + 1) * seq));
  // The rows' own copies of their slot's weights, as the engine keeps them for the gather kernel.
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
    mask: { type: 'float32', data: mask, dims: [n, batch * seq] },
    dense: { type: 'bool', data: Uint8Array.of(kernel === 'dense' ? 1 : 0), dims: [] },
    active: { type: 'bool', data: Uint8Array.of(active ? 1 : 0), dims: [] },
    a: { type: 'float32', data: a, dims: [n, IN, RANK] },
    b: { type: 'float32', data: b, dims: [n, RANK, OUT] },
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

describe.each<LoraKernel>(['gather', 'dense'])('%s kernel', (kernel) => {
  it.each([
    { batch: 1, seq: 1, adapters: 1 },
    { batch: 4, seq: 1, adapters: 3 },
    { batch: 9, seq: 1, adapters: 8 },
    { batch: 3, seq: 5, adapters: 2 },
  ])('matches the reference loop: batch $batch, seq $seq, $adapters slots, mixed ranks', async ({ batch, seq, adapters: count }) => {
    const ranks = [RANK, 8, 4, 1, 16, 2, 12, 7];
    const adapters = Array.from({ length: count }, (_, i) => adapter(ranks[i % ranks.length], 0.5 + i));
    const slots = Array.from({ length: batch }, (_, i) => i % (count + 1));
    const x = randomArray(batch * seq * IN, 1);
    const got = await run(x, batch, seq, slots, adapters, kernel);
    const want = base(x, batch * seq);
    const tokenSlots = slots.flatMap((s) => Array(seq).fill(s));
    loraReference(x, want, batch * seq, IN, OUT, tokenSlots, [null, ...adapters]);
    const scaleOf = Math.max(...want.map(Math.abs));
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThan(1e-5 * scaleOf);
  });

  it('leaves rows without an adapter bit-identical to the base output', async () => {
    const adapters = [adapter(8, 2), adapter(16, 1)];
    const slots = [0, 1, 0, 2, 0];
    const x = randomArray(slots.length * IN, 1);
    const withLora = await run(x, slots.length, 1, slots, adapters, kernel);
    const without = await run(x, slots.length, 1, slots, adapters, kernel, false);
    slots.forEach((s, i) => {
      const rowA = withLora.subarray(i * OUT, (i + 1) * OUT);
      const rowB = without.subarray(i * OUT, (i + 1) * OUT);
      if (s === 0) expect(Array.from(rowA)).toEqual(Array.from(rowB));
      else expect(Array.from(rowA)).not.toEqual(Array.from(rowB));
    });
  });
});
