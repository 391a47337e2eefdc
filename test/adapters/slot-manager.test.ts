import { describe, expect, it } from 'vitest';
import { SlotManager } from '../../src/adapters/slot-manager.js';
import type { LoraWeights } from '../../src/adapters/peft-loader.js';
import type { LoraWeightType } from '../../src/model/graph-builder.js';
import type { ModelConfig } from '../../src/model/model-config.js';
import type { Projection } from '../../src/model/model-config.js';
import { PROJECTIONS, projectionShape } from '../../src/model/model-config.js';

const config: ModelConfig = {
  architecture: 'llama', hiddenSize: 8, intermediateSize: 12, numLayers: 2, numHeads: 2, numKvHeads: 1, headDim: 4, vocabSize: 16,
  rmsNormEps: 1e-6, ropeTheta: 10000, ropeScaling: null, maxPositionEmbeddings: 32, tieWordEmbeddings: false, attentionBias: false,
  qkNorm: false, bosTokenId: null, eosTokenIds: [],
};

/**
 * An adapter of rank `rank` on the given projections of every layer, with A = value and B = value, scale 2, as the
 * loader delivers it: B times the scale. In float16, `value` is a bit pattern and B holds it unscaled.
 */
function weights(value: number, rank = 2, projections: readonly Projection[] = PROJECTIONS, type: LoraWeightType = 'float32'): LoraWeights {
  const tensor = (n: number, v: number) => (type === 'float32' ? new Float32Array(n) : new Uint16Array(n)).fill(v);
  const modules = new Map();
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const p of projections) {
      const [k, n] = projectionShape(config, p);
      modules.set(`${layer}.${p}`, { layer, projection: p, rank, scale: 2, a: tensor(k * rank, value), b: tensor(rank * n, type === 'float32' ? 2 * value : value) });
    }
  }
  return { rank, modules, bytes: 0, type, digest: '' };
}

describe('SlotManager', () => {
  it('writes adapters into the lowest free slots with rank padding, B scaled as loaded', () => {
    const slots = new SlotManager(config, 3, 4, 3);
    expect(slots.acquire('a', weights(1))).toBe(1);
    expect(slots.acquire('b', weights(3, 2, ['q_proj']))).toBe(2);
    const batch = slots.batch(0, [0, 2, 1]);
    expect(batch.activeProjections).toEqual(PROJECTIONS.map(() => true));
    const [k, n] = projectionShape(config, 'q_proj');
    // Rows get their own copies: slot 0 (no adapter) is zeros, rank 2 is padded to 4, B carries the scale (2 × 3).
    slots.bindRow(0, 0);
    slots.bindRow(1, 2);
    slots.bindRow(2, 1);
    const rowA = batch.rowA(0, 'q_proj');
    const rowB = batch.rowB(0, 'q_proj');
    expect(rowA.length).toBe(3 * k * 4);
    expect(Array.from(rowA.subarray(0, k * 4)).every((v) => v === 0)).toBe(true);
    expect(Array.from(rowA.subarray(k * 4, k * 4 + 4))).toEqual([3, 3, 0, 0]);
    expect(rowB[4 * n]).toBe(6);
    expect(Array.from(rowB.subarray(4 * n + 2 * n, 2 * 4 * n)).every((v) => v === 0)).toBe(true);
    expect(Array.from(rowA.subarray(2 * k * 4, 2 * k * 4 + 2))).toEqual([1, 1]);
    slots.moveRow(1, 0);
    expect(Array.from(batch.rowA(0, 'q_proj').subarray(0, 2))).toEqual([3, 3]);
    expect(batch.rowB(0, 'q_proj')[0]).toBe(6);
    // Only b targets q_proj: a batch of b alone leaves the other projections inactive.
    expect(slots.batch(0, [2]).activeProjections).toEqual(PROJECTIONS.map((p) => p === 'q_proj'));
  });

  it('evicts the least recently used unreferenced slot, never a referenced or pinned one', () => {
    const slots = new SlotManager(config, 2, 2, 1);
    const a = slots.acquire('a', weights(1)) as number;
    const b = slots.acquire('b', weights(2)) as number;
    expect(slots.acquire('c', weights(3))).toBeNull(); // both referenced
    slots.release(a);
    slots.release(b);
    expect(slots.acquire('a', undefined)).toBe(a); // resident: no weights needed, now most recently used
    slots.release(a);
    expect(slots.acquire('c', weights(3))).toBe(b); // b was least recently used
    slots.release(b);
    slots.setPinned('c', true);
    expect(slots.acquire('d', weights(4))).toBe(a); // c is pinned
    expect(slots.residentDigests().sort()).toEqual(['c', 'd']);
    expect(slots.evictions).toBe(2);
    expect(slots.acquire('e', weights(5))).toBeNull(); // d referenced, c pinned
  });

  it('keeps one slot unpinned so unpinned adapters are still served', () => {
    const slots = new SlotManager(config, 2, 2, 1);
    for (const d of ['a', 'b']) {
      slots.release(slots.acquire(d, weights(1)) as number);
      slots.setPinned(d, true);
    }
    const c = slots.acquire('c', weights(3));
    expect(c).not.toBeNull();
    expect(slots.residentDigests()).toContain('a');
    expect(slots.residentDigests()).not.toContain('b');
  });

  it('refuses to drop or release what is in use or absent', () => {
    const slots = new SlotManager(config, 1, 2, 1);
    const a = slots.acquire('a', weights(1)) as number;
    expect(() => slots.drop('a')).toThrow(/in use/);
    slots.release(a);
    expect(() => slots.release(a)).toThrow(/holds no reference/);
    slots.drop('a');
    expect(slots.slotOf('a')).toBeNull();
  });

  it('holds float16 stacks without row copies, and clears what an earlier adapter left in a slot', () => {
    expect(() => new SlotManager(config, 1, 4, 1, 'float16')).toThrow(/stock graph/);
    const slots = new SlotManager(config, 1, 4, 0, 'float16');
    expect(slots.bytes).toBe(new SlotManager(config, 1, 4, 0).bytes / 2);
    expect(() => slots.acquire('x', weights(1))).toThrow('adapter weights of type float32 cannot go into float16 LoRA slots');
    const one = 0x3c00;
    slots.release(slots.acquire('a', weights(one, 4, PROJECTIONS, 'float16')) as number);
    slots.drop('a');
    const b = slots.acquire('b', weights(0x4200, 2, ['q_proj'], 'float16')) as number;
    expect(b).toBe(1);
    const [k, n] = projectionShape(config, 'q_proj');
    const a = slots.batch(0, [b]).a(0, 'q_proj');
    expect(a).toBeInstanceOf(Uint16Array);
    // Slot 0 stays zero; slot 1 rows are rank 2 padded to 4, B's rows past rank 2 and other projections zero again.
    expect(Array.from(a.subarray(0, k * 4)).every((v) => v === 0)).toBe(true);
    expect(Array.from(a.subarray(k * 4, k * 4 + 8))).toEqual([0x4200, 0x4200, 0, 0, 0x4200, 0x4200, 0, 0]);
    const bStack = slots.batch(0, [b]).b(0, 'q_proj').subarray(4 * n);
    expect(Array.from(bStack.subarray(0, 2 * n)).every((v) => v === 0x4200)).toBe(true);
    expect(Array.from(bStack.subarray(2 * n)).every((v) => v === 0)).toBe(true);
    expect(Array.from(slots.batch(0, [b]).a(0, 'v_proj')).every((v) => v === 0)).toBe(true);
  });
});
