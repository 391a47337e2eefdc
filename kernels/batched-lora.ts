import type { GraphOps } from './graph-ops.js';

/** Which in-graph formulation a step uses; the engine picks one per step from the batch shape. */
export type LoraKernel = 'gather' | 'dense';

/**
 * Graph values shared by every LoRA'd projection. The slot stacks fed each step are a prefix of the
 * engine's slot tensors: slot 0 is all zeros (rows without an adapter), the active adapters sit in the
 * lowest slots, and the scale is folded into B when an adapter is written into its slot.
 */
export interface LoraStepInputs {
  /** `[slots, tokens, 1]` float, tokens = batch × seq in row-major order: one-hot of each token's slot (dense kernel). */
  mask: string;
  /** bool scalar: true → dense kernel this step, false → gather. */
  dense: string;
}

/**
 * One projection's adapter weights: the slot stacks `a` `[slots, in, rank]`, `b` `[slots, rank, out]`, and each
 * batch row's own copy `rowA` `[batch, in, rank]`, `rowB` `[batch, rank, out]` (zeros for a row without adapter).
 */
export interface LoraProjectionInputs {
  a: string;
  b: string;
  rowA: string;
  rowB: string;
}

/**
 * `y + Δ`, `Δ[i] = (x[i] · A[s[i]]) · B[s[i]]` for `x` `[batch, seq, in]`, `y` `[batch, seq, out]` (see lora-reference.ts),
 * for a group of projections that read the same `x` (q, k, v; gate, up). One `If` on `active` (some adapter in this
 * step targets a projection of the group) and one on the kernel serve the whole group: each If costs ~50 µs to run,
 * even empty, which at one per projection was 16% of a 16-row decode step.
 *
 * gather: two batched MatMuls over the rows' own copies of their adapter's A and B. The engine gathers those copies
 * once, when a row's adapter changes, not in the graph every step: an in-graph Gather would copy 35 MB per row per
 * step at rank 16 on the 0.5B shape, which costs more than the LoRA arithmetic itself.
 * dense: one GEMM per fed slot over all tokens (`[tokens, in] · A[s]`, each A read once), the one-hot mask zeroes the
 * products of other slots, and one GEMM expands through the stacked B (`[tokens, slots·rank] · [slots·rank, out]`).
 * No copies; its arithmetic grows with tokens × fed slots.
 */
export function emitBatchedLora(g: GraphOps, x: string, ys: string[], step: LoraStepInputs, ps: LoraProjectionInputs[], active: string): string[] {
  const gather = () => ps.map((p, i) => g.op('Add', [ys[i], g.op('MatMul', [g.op('MatMul', [x, p.rowA]), p.rowB])]));
  const dense = () => {
    const tokens = g.op('Reshape', [x, g.int64s(`${ps[0].a}.tokens`, [1, -1, 0])]); // [1, tokens, in]
    return ps.map((p, i) => {
      const xa = g.op('Mul', [g.op('MatMul', [tokens, p.a]), step.mask]); // [slots, tokens, rank]
      const perToken = g.op('Reshape', [g.op('Transpose', [xa], { perm: [1, 0, 2] }), g.int64s(`${p.a}.flat`, [0, -1])]); // [tokens, slots · rank]
      const delta = g.op('MatMul', [perToken, g.op('Flatten', [p.b], { axis: 2 })]); // [tokens, out]
      return g.op('Add', [ys[i], g.op('Reshape', [delta, g.op('Shape', [ys[i]])])]);
    });
  };
  return g.ifElse(active, () => g.ifElse(step.dense, dense, gather), () => ys);
}

/**
 * The kernel for a step. Measured on the 0.5B shape (rank 16, all 7 projections, bench:lora, same run): with 8
 * adapters, gather 131 / 146 tok/s at 16 / 32 rows against dense 115 / 145; with one adapter at 16 rows, gather
 * ~131 against dense 127. Dense only pays off with many rows per fed slot, where its one GEMM per slot is shared.
 */
export function preferredKernel(rows: number, fedSlots: number): LoraKernel {
  return fedSlots > 1 && fedSlots * 8 < rows ? 'dense' : 'gather';
}
