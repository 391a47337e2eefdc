import { MAX_LOGPROBS } from './sampling-params.js';
import type { SamplingParams } from './sampling-params.js';

export interface TopLogprob {
  tokenId: number;
  logprob: number;
}

export interface SampleResult {
  tokenId: number;
  /** null unless params.logprobs is set. */
  logprob: number | null;
  /** Sorted by logprob, best first; null unless params.logprobs is set. */
  topLogprobs: TopLogprob[] | null;
}

/** Below this the temperature is treated as 0 (greedy), as vLLM does: dividing by it would overflow. */
const GREEDY_TEMPERATURE = 1e-5;

/** Tokens per chunk for the per-chunk maxima and sums that let most passes skip most of the vocabulary. */
const CHUNK = 256;

/** Nats below the best token (weight ~1e-4) within which top_p first looks for its nucleus. */
const NUCLEUS_FIRST_TRY = 9.2;

// top_p finds its boundary through a histogram of the candidate weights (in [0, 1]) binned by the high bits of their
// float64 representation, which order non-negative doubles as their values do: exponent and 5 mantissa bits give 32
// bins per octave (2% wide), 64 octaves in all (EXP_CUTOFF needs 58; smaller weights, 0 included, share the last bin).
// HIGH_WORD is where a double's high 32 bits sit in a Uint32Array view of it (1 on little-endian machines).
const BIN_SHIFT = 15;
const BIN_OF_ONE = 0x3ff00000 >>> BIN_SHIFT;
const BINS = 2048;
const HIGH_WORD = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;

/**
 * Tokens more than this many nats below the best one are left out of softmax sums: together they hold at most
 * 1e6 tokens × e^-40 ≈ 4e-12 of the mass, and skipping them saves an exp each.
 */
const EXP_CUTOFF = 40;

// e^-x for x in [0, EXP_CUTOFF] costs a quarter to a third of Math.exp (~1.2 ms per 150k-token row here). The argument
// comes pre-scaled as t = x·64/ln2 so that t = k + f with 2^(-k/64) from a table and e^(-f·ln2/64), |f| <= 1/2, from a
// 2nd-order Taylor polynomial: relative error < 3e-8, below float32 precision.
const EXP_STEPS = 64 * Math.LOG2E;
const EXP_STEPS_CUTOFF = EXP_CUTOFF * EXP_STEPS;
const EXP_TABLE = Float64Array.from({ length: Math.ceil(EXP_STEPS_CUTOFF) + 2 }, (_, i) => 2 ** (-i / 64));

/** e^(-t / EXP_STEPS) for t in [0, EXP_STEPS_CUTOFF]. */
function expSteps(t: number): number {
  const k = Math.floor(t + 0.5);
  const r = (k - t) / EXP_STEPS;
  return EXP_TABLE[k] * (1 + r * (1 + r * 0.5));
}

/**
 * Per-sequence sampling state: its own seeded PRNG (so a seeded request gets the same tokens whatever it is batched
 * with) and the token counts its penalties need. Counts are sparse (a map to slots in small growable arrays) because a
 * dense vocab-sized array per sequence would cost ~600 KB per running sequence for what is usually a few hundred tokens.
 */
export class SequenceSamplingState {
  // xoshiro128** state. src/synth/random.ts has the same generator but only fills normal samples for fixtures; the
  // engine needs single uniform draws and must not depend on the fixture generator.
  #a: number;
  #b: number;
  #c: number;
  #d: number;
  readonly #tracking: boolean;
  readonly #slotOf = new Map<number, number>();
  #tokens: Int32Array = new Int32Array(64);
  /** Occurrences in the output; prompt-only tokens (tracked for the repetition penalty) have 0. */
  #counts: Int32Array = new Int32Array(64);
  #size = 0;

  /** `params` must be the ones later passed to Sampler.sample with this state. */
  constructor(params: SamplingParams, promptIds: readonly number[], requestSeed: number) {
    const seed = params.seed ?? requestSeed;
    if (!Number.isSafeInteger(seed)) throw new RangeError(`sampling seed must be a safe integer (found ${seed})`);
    // splitmix32 over the low word fills a and b, over the high word c and d: distinct seeds give distinct states.
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 0x1_0000_0000) >>> 0;
    this.#a = splitmix32(lo, 1);
    this.#b = splitmix32(lo, 2);
    this.#c = splitmix32(hi ^ 0x5bd1e995, 1);
    this.#d = splitmix32(hi ^ 0x5bd1e995, 2);
    if ((this.#a | this.#b | this.#c | this.#d) === 0) this.#a = 1;
    this.#tracking = params.repetitionPenalty !== 1 || params.presencePenalty !== 0 || params.frequencyPenalty !== 0;
    if (params.repetitionPenalty !== 1) for (const id of promptIds) this.#slot(id);
  }

  /** Records a generated token. */
  append(tokenId: number): void {
    if (this.#tracking) this.#counts[this.#slot(tokenId)]++;
  }

  /** Whether applyPenalties can change anything. */
  get hasPenalties(): boolean {
    return this.#size > 0;
  }

  /** Applies, in vLLM's order, the repetition penalty (prompt and output tokens), then frequency and presence (output). */
  applyPenalties(z: Float32Array, params: SamplingParams): void {
    const { repetitionPenalty: rep, presencePenalty: presence, frequencyPenalty: frequency } = params;
    const tokens = this.#tokens;
    const counts = this.#counts;
    for (let s = 0; s < this.#size; s++) {
      const id = tokens[s];
      let v = z[id];
      if (rep !== 1) v = v > 0 ? v / rep : v * rep;
      const count = counts[s];
      if (count > 0) v -= frequency * count + presence;
      z[id] = v;
    }
  }

  /** Uniform in [0, 1) with 53 random bits. */
  nextUniform(): number {
    const hi = this.#next32() >>> 5;
    const lo = this.#next32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  #next32(): number {
    let a = this.#a, b = this.#b, c = this.#c, d = this.#d;
    const b5 = Math.imul(b, 5);
    const r = Math.imul((b5 << 7) | (b5 >>> 25), 9);
    const t = b << 9;
    c ^= a; d ^= b; b ^= c; a ^= d; c ^= t; d = (d << 11) | (d >>> 21);
    this.#a = a; this.#b = b; this.#c = c; this.#d = d;
    return r >>> 0;
  }

  #slot(tokenId: number): number {
    let s = this.#slotOf.get(tokenId);
    if (s !== undefined) return s;
    s = this.#size++;
    if (s === this.#tokens.length) {
      this.#tokens = grow(this.#tokens);
      this.#counts = grow(this.#counts);
    }
    this.#tokens[s] = tokenId;
    this.#slotOf.set(tokenId, s);
    return s;
  }
}

function splitmix32(seed: number, step: number): number {
  let t = (seed + Math.imul(step, 0x9e3779b9)) | 0;
  t = Math.imul(t ^ (t >>> 16), 0x21f0aaad);
  t = Math.imul(t ^ (t >>> 15), 0x735a2d97);
  return t ^ (t >>> 15);
}

function grow(a: Int32Array): Int32Array {
  const b = new Int32Array(a.length * 2);
  b.set(a);
  return b;
}

/**
 * Samples one token from a row of logits. Order as in vLLM: logit_bias, penalties (repetition, presence, frequency),
 * temperature, top_k, top_p (over the top-k renormalized distribution), min_p, then a draw from what is left.
 *
 * Logprobs are log-softmax of the logits after bias and penalties but before temperature and filtering: what the
 * model, as steered by the request, thinks of each token. (vLLM's default returns the raw model logprobs instead.)
 *
 * Nothing sorts the vocabulary. Greedy is one argmax pass. Otherwise a first pass records each chunk's maximum, so
 * that top_k and top_logprobs (bounded min-heaps) and the top_p/min_p candidates only visit the few chunks that can
 * hold them. top_p finds its boundary among the candidates with a histogram of their weights and a weighted
 * quickselect inside the boundary bin; a plain temperature draw picks a chunk by its sum of weights, then a token in
 * it. Only top_p, a plain temperature draw and logprobs need a full pass of exponentials. All scratch memory is
 * allocated here, once; a Sampler serves one row at a time.
 */
export class Sampler {
  readonly vocabSize: number;
  /** Logits after bias and penalties (the caller's logits are never written). */
  readonly #adjusted: Float32Array;
  readonly #chunkMax: Float64Array;
  readonly #chunkSum: Float64Array;
  /** Heap scratch for picking the k-th largest chunk maximum. */
  readonly #chunkHeap: Float64Array;
  /** Candidate token ids and their weights (logits while selecting top-k, then unnormalized probabilities). */
  readonly #ids: Int32Array;
  readonly #weights: Float64Array;
  readonly #topIds: Int32Array;
  readonly #topValues: Float64Array;
  /** The high/low 32-bit words of #weights, for binning them. */
  readonly #weightBits: Uint32Array;
  readonly #bins = new Float64Array(BINS);
  readonly #binValues: Float64Array;
  /** The top-p nucleus is every candidate weight > #cut and the first #ties weights equal to it. */
  #cut = 0;
  #ties = 0;
  #nucleusMass = 0;
  /** Σ e^(z - max) over the vocabulary if this row's draw computed it (at temperature 1), else NaN. */
  #unitTemperatureSum = NaN;

  constructor(vocabSize: number) {
    if (!Number.isSafeInteger(vocabSize) || vocabSize < 1) throw new RangeError(`vocabSize must be a positive integer (found ${vocabSize})`);
    this.vocabSize = vocabSize;
    this.#adjusted = new Float32Array(vocabSize);
    const chunks = Math.ceil(vocabSize / CHUNK);
    this.#chunkMax = new Float64Array(chunks);
    this.#chunkSum = new Float64Array(chunks);
    this.#chunkHeap = new Float64Array(chunks);
    this.#ids = new Int32Array(vocabSize);
    this.#weights = new Float64Array(vocabSize);
    this.#weightBits = new Uint32Array(this.#weights.buffer);
    this.#binValues = new Float64Array(vocabSize);
    this.#topIds = new Int32Array(MAX_LOGPROBS);
    this.#topValues = new Float64Array(MAX_LOGPROBS);
  }

  /** `logits` may be a view into a [rows, vocab] buffer; it is not modified. */
  sample(logits: Float32Array, params: SamplingParams, state: SequenceSamplingState): SampleResult {
    if (logits.length !== this.vocabSize) {
      throw new RangeError(`logits row has ${logits.length} values; the vocabulary has ${this.vocabSize} tokens`);
    }
    if (params.logprobs !== null && params.logprobs > MAX_LOGPROBS) {
      throw new RangeError(`logprobs must be at most ${MAX_LOGPROBS} (found ${params.logprobs})`);
    }
    const z = this.#adjust(logits, params, state);
    const greedy = params.temperature < GREEDY_TEMPERATURE;
    if (greedy && params.logprobs === null) return { tokenId: argmax(z), logprob: null, topLogprobs: null };
    const max = chunkMaxima(z, this.#chunkMax);
    this.#unitTemperatureSum = NaN;
    const tokenId = greedy ? firstIndexOfMax(z, max, this.#chunkMax) : this.#draw(z, max, params, state);
    if (params.logprobs === null) return { tokenId, logprob: null, topLogprobs: null };
    return this.#logprobs(z, max, tokenId, params.logprobs);
  }

  #adjust(logits: Float32Array, params: SamplingParams, state: SequenceSamplingState): Float32Array {
    const bias = params.logitBias;
    const biased = bias !== null && bias.size > 0;
    if (!biased && !state.hasPenalties) return logits;
    const z = this.#adjusted;
    z.set(logits);
    if (biased) bias.forEach((b, id) => { z[id] += b; });
    state.applyPenalties(z, params);
    return z;
  }

  #draw(z: Float32Array, max: number, params: SamplingParams, state: SequenceSamplingState): number {
    const ids = this.#ids;
    const w = this.#weights;
    const scale = EXP_STEPS / params.temperature;
    const topK = params.topK > 0 && params.topK < this.vocabSize ? params.topK : 0;
    let n: number;
    let norm = 0;
    if (topK > 0) {
      n = this.#selectTop(z, topK, ids, w);
      for (let j = 0; j < n; j++) {
        const t = (max - w[j]) * scale;
        w[j] = t <= EXP_STEPS_CUTOFF ? expSteps(t) : 0;
        norm += w[j];
      }
    } else {
      // Candidates are the tokens that can survive the filters, in nats below the best token (at this temperature).
      // A token in the top-p nucleus has probability >= (1 - p) / V (the tokens below that hold < 1 - p together),
      // and its weight e^((z - max)/T) >= its probability since the normalizer is >= 1; min_p keeps weights >= minP.
      let keep = EXP_CUTOFF;
      if (params.topP < 1) keep = Math.min(keep, -Math.log((1 - params.topP) / this.vocabSize));
      if (params.minP > 0) keep = Math.min(keep, -Math.log(params.minP));
      if (params.topP < 1 || keep === EXP_CUTOFF) {
        norm = chunkSums(z, max, scale, this.#chunkMax, this.#chunkSum);
        if (scale === EXP_STEPS) this.#unitTemperatureSum = norm;
      }
      if (keep === EXP_CUTOFF) return this.#drawByChunk(z, max, scale, state.nextUniform() * norm);
      // That bound is loose: first try the tokens within NUCLEUS_FIRST_TRY nats, which usually hold the nucleus and
      // sit in a few chunks; they are the most likely tokens, so if they reach the mass they contain the nucleus.
      const first = Math.min(keep, NUCLEUS_FIRST_TRY);
      n = gather(z, max, scale, first * EXP_STEPS, this.#chunkMax, ids, w);
      if (first < keep && sumRange(w, 0, n) < params.topP * norm) n = gather(z, max, scale, keep * EXP_STEPS, this.#chunkMax, ids, w);
    }
    let cut = 0;
    let ties = 0;
    if (params.topP < 1) {
      this.#nucleus(n, params.topP * norm);
      cut = this.#cut;
      ties = this.#ties;
    }
    // Candidates from the heap were not filtered by min_p yet.
    const floor = topK > 0 ? params.minP : 0;
    const total = params.topP < 1 && floor === 0 ? this.#nucleusMass : keptMass(w, n, cut, ties, floor);
    if (total === 0) return firstIndexOfMax(z, max, this.#chunkMax);
    return ids[pickKept(w, n, cut, ties, floor, state.nextUniform() * total)];
  }

  /**
   * Finds the top-p nucleus among the candidate weights w[0, n) without moving them: the smallest set of largest
   * weights whose sum reaches `need` is every weight > #cut plus the first #ties weights equal to it. The histogram
   * gives the bin holding the boundary; a weighted quickselect over that bin's weights gives the cut.
   */
  #nucleus(n: number, need: number): void {
    const bins = this.#bins;
    binMasses(this.#weightBits, this.#weights, n, bins);
    let b = 0;
    let above = 0;
    while (b < BINS - 1 && above + bins[b] < need) above += bins[b++];
    const values = this.#binValues;
    const m = collectBin(this.#weightBits, this.#weights, n, b, values);
    const count = largestReaching(values, m, need - above);
    let cut = count > 0 ? values[0] : 0;
    for (let j = 1; j < count; j++) if (values[j] < cut) cut = values[j];
    let ties = 0;
    for (let j = 0; j < count; j++) if (values[j] === cut) ties++;
    this.#cut = cut;
    this.#ties = ties;
    this.#nucleusMass = above + sumRange(values, 0, count);
  }

  /** The token where the running sum of weights e^((z - max)/T) passes u, found through the chunk sums. */
  #drawByChunk(z: Float32Array, max: number, scale: number, u: number): number {
    const sums = this.#chunkSum;
    let last = 0;
    for (let c = 0; c < sums.length; c++) {
      if (sums[c] === 0) continue;
      if (u < sums[c]) return drawInChunk(z, max, scale, c, u);
      u -= sums[c];
      last = c;
    }
    // Rounding left u at or above the total: take the last token with any weight.
    return drawInChunk(z, max, scale, last, Infinity);
  }

  /** The k largest logits (ids and values, as a min-heap) from the chunks whose maximum can place them there. */
  #selectTop(z: Float32Array, k: number, ids: Int32Array, values: Float64Array): number {
    const chunkMax = this.#chunkMax;
    // The k-th largest chunk maximum is <= the k-th largest logit: only chunks reaching it can hold the top k.
    const floor = k < chunkMax.length ? kthLargest(chunkMax, k, this.#chunkHeap) : -Infinity;
    return selectTopInChunks(z, k, chunkMax, floor, ids, values);
  }

  #logprobs(z: Float32Array, max: number, tokenId: number, topN: number): SampleResult {
    const unitSum = Number.isNaN(this.#unitTemperatureSum)
      ? chunkSums(z, max, EXP_STEPS, this.#chunkMax, this.#chunkSum)
      : this.#unitTemperatureSum;
    const logNorm = max + Math.log(unitSum);
    const logprob = z[tokenId] - logNorm;
    if (topN === 0) return { tokenId, logprob, topLogprobs: [] };
    const topIds = this.#topIds;
    const topValues = this.#topValues;
    const n = this.#selectTop(z, topN, topIds, topValues);
    const topLogprobs: TopLogprob[] = [];
    for (let j = 0; j < n; j++) topLogprobs.push({ tokenId: topIds[j], logprob: topValues[j] - logNorm });
    topLogprobs.sort((x, y) => y.logprob - x.logprob || x.tokenId - y.tokenId);
    return { tokenId, logprob, topLogprobs };
  }
}

// The hot loops below are small functions with one loop nest each over plain arguments: V8 compiled a loop markedly
// slower when it shared its function with another loop over the vocabulary.

/** Index of the largest value; the first one on ties. */
function argmax(z: Float32Array): number {
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
function chunkMaxima(z: Float32Array, out: Float64Array): number {
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
function firstIndexOfMax(z: Float32Array, max: number, chunkMax: Float64Array): number {
  const c = chunkMax.indexOf(max);
  if (c < 0) return 0;
  const i = z.indexOf(max, c * CHUNK);
  return i < 0 ? 0 : i;
}

/** Writes each chunk's Σ e^((z - max)/T) (scale = EXP_STEPS / T) to `out`; returns the total. */
function chunkSums(z: Float32Array, max: number, scale: number, chunkMax: Float64Array, out: Float64Array): number {
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
function drawInChunk(z: Float32Array, max: number, scale: number, c: number, u: number): number {
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
function gather(z: Float32Array, max: number, scale: number, keep: number, chunkMax: Float64Array, ids: Int32Array, w: Float64Array): number {
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
function kthLargest(values: Float64Array, k: number, heap: Float64Array): number {
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
function selectTopInChunks(z: Float32Array, k: number, chunkMax: Float64Array, floor: number, ids: Int32Array, vals: Float64Array): number {
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
function binMasses(bits: Uint32Array, w: Float64Array, n: number, bins: Float64Array): void {
  bins.fill(0);
  for (let j = 0; j < n; j++) {
    const b = BIN_OF_ONE - (bits[2 * j + HIGH_WORD] >>> BIN_SHIFT);
    bins[b < 0 ? 0 : b < BINS ? b : BINS - 1] += w[j];
  }
}

/** Copies the weights of w[0, n) that fall in bin b to `out`; returns how many. */
function collectBin(bits: Uint32Array, w: Float64Array, n: number, b: number, out: Float64Array): number {
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
function largestReaching(values: Float64Array, n: number, need: number): number {
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

function sumRange(w: Float64Array, from: number, to: number): number {
  let sum = 0;
  for (let j = from; j < to; j++) sum += w[j];
  return sum;
}

// keptMass and pickKept are written without data-dependent branches (a kept flag as 0/1 multiplies the weight):
// when the kept candidates are mixed in at random, branches on them mispredict so often that the loops ran 4x slower.

/** Total weight of the kept candidates: weight >= floor, and > cut or among the first `ties` equal to it. */
function keptMass(w: Float64Array, n: number, cut: number, ties: number, floor: number): number {
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
function pickKept(w: Float64Array, n: number, cut: number, ties: number, floor: number, u: number): number {
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
