import type { GraphOps } from './graph-ops.js';

/**
 * One projection's adapter weights as the graph reads them: each batch row's own copy of its adapter, `rowA`
 * `[batch, in, rank]` and `rowB` `[batch, rank, out]` (scale folded into B; zeros for a row without adapter).
 */
export interface LoraProjectionInputs {
  rowA: string;
  rowB: string;
}

/**
 * `y + Δ`, `Δ[i] = (x[i] · A[s[i]]) · B[s[i]]` for `x` `[batch, seq, in]`, `y` `[batch, seq, out]` (see lora-reference.ts),
 * for a group of projections that read the same `x` (q, k, v; gate, up). One `If` on `active` (some adapter in this
 * step targets a projection of the group) serves the whole group: each If costs ~50 µs to run, even empty, which at
 * one per projection was 16% of a 16-row decode step.
 *
 * Two batched MatMuls over the rows' own copies of their adapter's A and B. The engine gathers those copies once,
 * when a row's adapter changes, not in the graph every step: an in-graph Gather would copy 35 MB per row per step at
 * rank 16 on the 0.5B shape, which costs more than the LoRA arithmetic itself.
 *
 * Batch invariance: each row is its own GEMM over its own copy, so a row's delta is bit-identical whatever its
 * neighbours are. (A dense formulation, one GEMM per slot over all tokens with a one-hot mask, summed the products in
 * an order that depended on the batch, and changed greedy tokens at small top-1/top-2 gaps; it was removed.)
 */
/** One projection's adapter slot stacks as the native operator reads them: `a` `[slots, in, R]`, `b` `[slots, R, out]`. */
export interface NativeLoraProjectionInputs {
  a: string;
  b: string;
}

/**
 * The same delta through the native `com.loraserve.BatchedLora` operator (kernels/native/lora-op.h): one call per group
 * over the slot stacks themselves (no per-row copies), segmented by slot, each slot at its own rank (`slotRanks`), rows
 * on slot 0 passed through bit for bit. `rowSlots` `[batch]` int32 is each row's slot.
 */
export function emitNativeBatchedLora(g: GraphOps, x: string, ys: string[], ps: NativeLoraProjectionInputs[], rowSlots: string, slotRanks: string): string[] {
  return g.node('BatchedLora', [x, rowSlots, slotRanks, ...ps.flatMap((p, i) => [ys[i], p.a, p.b])], {}, { domain: 'com.loraserve', outputs: ps.length });
}

export function emitBatchedLora(g: GraphOps, x: string, ys: string[], ps: LoraProjectionInputs[], active: string): string[] {
  const gather = () => ps.map((p, i) => g.op('Add', [ys[i], g.op('MatMul', [g.op('MatMul', [x, p.rowA]), p.rowB])]));
  return g.ifElse(active, gather, () => ys);
}
