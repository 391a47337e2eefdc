// Vocabulary-wide scans of one row of logits for the sampler: chunk maxima and sums, partial selection, weight
// histograms and a fast e^-x. Nothing here sorts the vocabulary.

/** Tokens per chunk for the per-chunk maxima and sums that let most passes skip most of the vocabulary. */
export const CHUNK = 256;

// top_p finds its boundary through a histogram of the candidate weights (in [0, 1]) binned by the high bits of their
// float64 representation, which order non-negative doubles as their values do: exponent and 5 mantissa bits give 32
// bins per octave (2% wide), 64 octaves in all (EXP_CUTOFF needs 58; smaller weights, 0 included, share the last bin).
// HIGH_WORD is where a double's high 32 bits sit in a Uint32Array view of it (1 on little-endian machines).
const BIN_SHIFT = 15;
const BIN_OF_ONE = 0x3ff00000 >>> BIN_SHIFT;
export const BINS = 2048;
const HIGH_WORD = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;

/**
 * Tokens more than this many nats below the best one are left out of softmax sums: together they hold at most
 * 1e6 tokens × e^-40 ≈ 4e-12 of the mass, and skipping them saves an exp each.
 */
export const EXP_CUTOFF = 40;

// e^-x for x in [0, EXP_CUTOFF] costs a quarter to a third of Math.exp (~1.2 ms per 150k-token row here). The argument
// comes pre-scaled as t = x·64/ln2 so that t = k + f with 2^(-k/64) from a table and e^(-f·ln2/64), |f| <= 1/2, from a
// 2nd-order Taylor polynomial: relative error < 3e-8, below float32 precision.
export const EXP_STEPS = 64 * Math.LOG2E;
export const EXP_STEPS_CUTOFF = EXP_CUTOFF * EXP_STEPS;
const EXP_TABLE = Float64Array.from({ length: Math.ceil(EXP_STEPS_CUTOFF) + 2 }, (_, i) => 2 ** (-i / 64));

/** e^(-t / EXP_STEPS) for t in [0, EXP_STEPS_CUTOFF]. */
export function expSteps(t: number): number {
  const k = Math.floor(t + 0.5);
  const r = (k - t) / EXP_STEPS;
  return EXP_TABLE[k] * (1 + r * (1 + r * 0.5));
}

/** Index of the largest value; the first one on ties. */
export function argmax(z: Float32Array): number {
  let best = 0;
  let max = -Infinity;
  for (let i = 0; i < z.length; i++) {
    const v = z[i];
    if (v > max) {
      max = v;
      best = i;
    }
  }
  return best;
}

/** Writes each chunk's maximum to `out`; returns the row's maximum. */
export function chunkMaxima(z: Float32Array, out: Float64Array): number {
  let max = -Infinity;
  for (let c = 0, lo = 0; lo < z.length; c++, lo += CHUNK) {
    const hi = lo + CHUNK < z.length ? lo + CHUNK : z.length;
    let m = -Infinity;
    for (let i = lo; i < hi; i++) {
      const v = z[i];
      if (v > m) m = v;
    }
    out[c] = m;
    if (m > max) max = m;
  }
  return max;
}

/** argmax(z) given the row's maximum and chunk maxima. */
export function firstIndexOfMax(z: Float32Array, max: number, chunkMax: Float64Array): number {
  const c = chunkMax.indexOf(max);
  if (c < 0) return 0;
  const i = z.indexOf(max, c * CHUNK);
  return i < 0 ? 0 : i;
}

/** Writes each chunk's Σ e^((z - max)/T) (scale = EXP_STEPS / T) to `out`; returns the total. */
export function chunkSums(z: Float32Array, max: number, scale: number, chunkMax: Float64Array, out: Float64Array): number {
  let total = 0;
  for (let c = 0, lo = 0; lo < z.length; c++, lo += CHUNK) {
    let sum = 0;
    if ((max - chunkMax[c]) * scale <= EXP_STEPS_CUTOFF) {
      const hi = lo + CHUNK < z.length ? lo + CHUNK : z.length;
      for (let i = lo; i < hi; i++) {
        const t = (max - z[i]) * scale;
        if (t <= EXP_STEPS_CUTOFF) sum += expSteps(t);
      }
    }
    out[c] = sum;
    total += sum;
  }
  return total;
}

/** The token of chunk c where the running sum of weights passes u; its last token with any weight if none does. */
export function drawInChunk(z: Float32Array, max: number, scale: number, c: number, u: number): number {
  const lo = c * CHUNK;
  const hi = lo + CHUNK < z.length ? lo + CHUNK : z.length;
  let last = lo;
  for (let i = lo; i < hi; i++) {
    const t = (max - z[i]) * scale;
    if (!(t <= EXP_STEPS_CUTOFF)) continue;
    u -= expSteps(t);
    if (u < 0) return i;
    last = i;
  }
  return last;
}

/** Tokens with t = (max - z)·scale <= keep, weighted e^-t/EXP_STEPS, into ids/w; returns how many. */
export function gather(z: Float32Array, max: number, scale: number, keep: number, chunkMax: Float64Array, ids: Int32Array, w: Float64Array): number {
  let n = 0;
  for (let c = 0, lo = 0; lo < z.length; c++, lo += CHUNK) {
    if (!((max - chunkMax[c]) * scale <= keep)) continue;
    const hi = lo + CHUNK < z.length ? lo + CHUNK : z.length;
    for (let i = lo; i < hi; i++) {
      const t = (max - z[i]) * scale;
      if (t <= keep) {
        ids[n] = i;
        w[n++] = expSteps(t);
      }
    }
  }
  return n;
}

/** The k-th largest of `values` (k <= values.length), using `heap` as scratch. */
export function kthLargest(values: Float64Array, k: number, heap: Float64Array): number {
  for (let i = 0; i < k; i++) heap[i] = values[i];
  for (let i = (k >> 1) - 1; i >= 0; i--) siftDownValues(heap, k, i);
  for (let i = k; i < values.length; i++) {
    if (values[i] > heap[0]) {
      heap[0] = values[i];
      siftDownValues(heap, k, 0);
    }
  }
  return heap[0];
}

function siftDownValues(heap: Float64Array, n: number, i: number): void {
  const v = heap[i];
  for (;;) {
    let child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && heap[child + 1] < heap[child]) child++;
    if (heap[child] >= v) break;
    heap[i] = heap[child];
    i = child;
  }
  heap[i] = v;
}

/**
 * Puts the k largest values of z (and their indices) into vals/ids as a min-heap, visiting only chunks whose maximum
 * is >= floor; returns how many it found (k when at least k tokens are visited).
 */
export function selectTopInChunks(z: Float32Array, k: number, chunkMax: Float64Array, floor: number, ids: Int32Array, vals: Float64Array): number {
  let n = 0;
  let root = -Infinity;
  for (let c = 0, lo = 0; lo < z.length; c++, lo += CHUNK) {
    if (!(chunkMax[c] >= floor)) continue;
    const hi = lo + CHUNK < z.length ? lo + CHUNK : z.length;
    for (let i = lo; i < hi; i++) {
      const v = z[i];
      if (n < k) {
        siftUp(ids, vals, n++, i, v);
        if (n === k) root = vals[0];
      } else if (v > root) {
        vals[0] = v;
        ids[0] = i;
        siftDown(ids, vals, k, 0);
        root = vals[0];
      }
    }
  }
  return n;
}

function siftUp(ids: Int32Array, vals: Float64Array, i: number, id: number, v: number): void {
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (vals[parent] <= v) break;
    vals[i] = vals[parent];
    ids[i] = ids[parent];
    i = parent;
  }
  vals[i] = v;
  ids[i] = id;
}

function siftDown(ids: Int32Array, vals: Float64Array, n: number, i: number): void {
  const v = vals[i];
  const id = ids[i];
  for (;;) {
    let child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && vals[child + 1] < vals[child]) child++;
    if (vals[child] >= v) break;
    vals[i] = vals[child];
    ids[i] = ids[child];
    i = child;
  }
  vals[i] = v;
  ids[i] = id;
}

/** Adds each weight of w[0, n) (all in [0, 1]) to its bin; bin 0 holds the largest. */
export function binMasses(bits: Uint32Array, w: Float64Array, n: number, bins: Float64Array): void {
  bins.fill(0);
  for (let j = 0; j < n; j++) {
    const b = BIN_OF_ONE - (bits[2 * j + HIGH_WORD] >>> BIN_SHIFT);
    bins[b < 0 ? 0 : b < BINS ? b : BINS - 1] += w[j];
  }
}

/** Copies the weights of w[0, n) that fall in bin b to `out`; returns how many. */
export function collectBin(bits: Uint32Array, w: Float64Array, n: number, b: number, out: Float64Array): number {
  let m = 0;
  for (let j = 0; j < n; j++) {
    const bin = BIN_OF_ONE - (bits[2 * j + HIGH_WORD] >>> BIN_SHIFT);
    if ((bin < 0 ? 0 : bin < BINS ? bin : BINS - 1) === b) out[m++] = w[j];
  }
  return m;
}

/**
 * Reorders values[0, n) so that the fewest largest values whose sum reaches `need` come first, and returns how many
 * (n if rounding leaves `need` out of reach). Weighted quickselect with a 3-way partition: expected O(n).
 */
export function largestReaching(values: Float64Array, n: number, need: number): number {
  let lo = 0;
  let hi = n;
  while (hi - lo > 16) {
    const pivot = median3(values[lo], values[(lo + hi) >> 1], values[hi - 1]);
    // [lo, gt) > pivot, [gt, lt) == pivot, [lt, hi) < pivot.
    let gt = lo;
    let lt = hi;
    let i = lo;
    while (i < lt) {
      const v = values[i];
      if (v > pivot) swap(values, i++, gt++);
      else if (v < pivot) swap(values, i, --lt);
      else i++;
    }
    const above = sumRange(values, lo, gt);
    if (above >= need) {
      hi = gt;
      continue;
    }
    const equal = lt - gt;
    if (above + equal * pivot >= need) {
      const take = Math.ceil((need - above) / pivot);
      return gt + (take < 1 ? 1 : take > equal ? equal : take);
    }
    need -= above + equal * pivot;
    lo = lt;
  }
  // Few left: insertion sort, largest first, and take until the need is met.
  for (let i = lo + 1; i < hi; i++) {
    for (let j = i; j > lo && values[j] > values[j - 1]; j--) swap(values, j, j - 1);
  }
  for (let j = lo; j < hi; j++) {
    need -= values[j];
    if (need <= 0) return j + 1;
  }
  return hi;
}

export function sumRange(w: Float64Array, from: number, to: number): number {
  let sum = 0;
  for (let j = from; j < to; j++) sum += w[j];
  return sum;
}

// keptMass and pickKept are written without data-dependent branches (a kept flag as 0/1 multiplies the weight):
// when the kept candidates are mixed in at random, branches on them mispredict so often that the loops ran 4x slower.

/** Total weight of the kept candidates: weight >= floor, and > cut or among the first `ties` equal to it. */
export function keptMass(w: Float64Array, n: number, cut: number, ties: number, floor: number): number {
  let sum = 0;
  for (let j = 0; j < n; j++) {
    const v = w[j];
    let kept = +(v > cut) * +(v >= floor);
    if (v === cut && ties > 0 && v >= floor) {
      ties--;
      kept = 1;
    }
    sum += v * kept;
  }
  return sum;
}

/** Index of the kept candidate (as in keptMass) where the running sum of weights passes u; the last kept one if none. */
export function pickKept(w: Float64Array, n: number, cut: number, ties: number, floor: number, u: number): number {
  let last = 0;
  for (let j = 0; j < n; j++) {
    const v = w[j];
    let kept = +(v > cut) * +(v >= floor);
    if (v === cut && ties > 0 && v >= floor) {
      ties--;
      kept = 1;
    }
    u -= v * kept;
    if (u < 0) return j;
    last += (j - last) * kept;
  }
  return last;
}

function median3(a: number, b: number, c: number): number {
  return a < b ? (b < c ? b : a < c ? c : a) : a < c ? a : b < c ? c : b;
}

function swap(values: Float64Array, i: number, j: number): void {
  const v = values[i];
  values[i] = values[j];
  values[j] = v;
}
