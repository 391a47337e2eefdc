import type { GraphOps } from './graph-ops.js';

/** Which in-graph formulation a step uses; the engine picks one per step from the batch shape. */
export type LoraKernel = 'gather' | 'dense';

/**
 * Graph values shared by every LoRA'd projection. The slot stacks fed each step are a prefix of the
 * engine's slot tensors: slot 0 is all zeros (rows without an adapter), the active adapters sit in the
 * lowest slots, and the scale is folded into B when an adapter is written into its slot.
 */
export interface LoraStepInputs {
  /** `[batch]` int64: each row's slot. */
  slot: string;
  /** `[batch, slots, 1, 1]` float: one-hot of `slot` over the fed slots (dense kernel). */
  mask: string;
  /** bool scalar: true → dense kernel this step, false → gather. */
  dense: string;
}

/** One projection's slot stacks: `a` `[slots, in, rank]`, `b` `[slots, rank, out]`. */
export interface LoraProjectionInputs {
  a: string;
  b: string;
  /** bool scalar: some adapter in this step targets this projection; when false the branch costs nothing. */
  active: string;
}

/**
 * `y + Δ`, `Δ[i] = (x[i] · A[s[i]]) · B[s[i]]` for `x` `[batch, seq, in]`, `y` `[batch, seq, out]` (see lora-reference.ts).
 *
 * gather: copies each row's A and B out of the stacks, then two batched MatMuls; cost grows with the batch.
 * dense: multiplies every row by every fed slot's A, masks, and expands once through the stacked B
 * (`[batch, seq, slots·rank] · [slots·rank, out]`); no copies, cost grows with batch × fed slots.
 */
export function emitBatchedLora(g: GraphOps, x: string, y: string, step: LoraStepInputs, p: LoraProjectionInputs): string {
  const gather = () => {
    const xa = g.op('MatMul', [x, g.op('Gather', [p.a, step.slot], { axis: 0 })]);
    return g.op('Add', [y, g.op('MatMul', [xa, g.op('Gather', [p.b, step.slot], { axis: 0 })])]);
  };
  const dense = () => {
    const xa = g.op('MatMul', [g.op('Unsqueeze', [x, g.int64s(`${p.a}.axis1`, [1])]), p.a]); // [batch, slots, seq, rank]
    const perRow = g.op('Transpose', [g.op('Mul', [xa, step.mask])], { perm: [0, 2, 1, 3] }); // [batch, seq, slots, rank]
    const flat = g.op('Reshape', [perRow, g.int64s(`${p.a}.flat`, [0, 0, -1])]);
    const stackedB = g.op('Flatten', [p.b], { axis: 2 }); // [slots · rank, out]
    return g.op('Add', [y, g.op('MatMul', [flat, stackedB])]);
  };
  return g.ifElse(p.active, () => g.ifElse(step.dense, dense, gather), () => y);
}

/**
 * The kernel for a step. Measured on the 0.5B shape (rank 16, all 7 projections): dense over S slots costs about
 * what gather costs when the batch has at least 4 rows per fed slot, and less beyond; gather's cost does not grow with
 * the slot count, so it is the choice for small batches and for adapters spread over many slots.
 */
export function preferredKernel(rows: number, fedSlots: number): LoraKernel {
  return fedSlots > 1 && fedSlots * 4 <= rows ? 'dense' : 'gather';
}
