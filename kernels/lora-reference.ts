/** One adapter slot of a projection: `a` `[in, rank]`, `b` `[rank, out]`, row-major. */
export interface LoraSlotWeights {
  a: Float32Array;
  b: Float32Array;
  rank: number;
  scale: number;
}

/**
 * The batched LoRA semantics every kernel must reproduce, as a plain loop:
 *
 *   for each row i:  y[i] += scale[s[i]] * (x[i] · A[s[i]]) · B[s[i]]
 *
 * `x` is `[rows, in]`, `y` `[rows, out]`, `slots[i]` the row's slot, and a null slot (slot 0 in the graph) adds nothing.
 */
export function loraReference(
  x: Float32Array, y: Float32Array, rows: number, inFeatures: number, outFeatures: number,
  slots: readonly number[], weights: readonly (LoraSlotWeights | null)[],
): void {
  for (let i = 0; i < rows; i++) {
    const w = weights[slots[i]];
    if (!w) continue;
    const xa = new Float64Array(w.rank);
    for (let r = 0; r < w.rank; r++) {
      let sum = 0;
      for (let k = 0; k < inFeatures; k++) sum += x[i * inFeatures + k] * w.a[k * w.rank + r];
      xa[r] = sum;
    }
    for (let o = 0; o < outFeatures; o++) {
      let sum = 0;
      for (let r = 0; r < w.rank; r++) sum += xa[r] * w.b[r * outFeatures + o];
      y[i * outFeatures + o] += w.scale * sum;
    }
  }
}
