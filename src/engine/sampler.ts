// Runs in the engine worker.
import { MAX_LOGPROBS } from './sampling-params.js';
import type { SamplingParams } from './sampling-params.js';
import type { SequenceSamplingState } from './sequence-sampling-state.js';
import { BINS, CHUNK, EXP_CUTOFF, EXP_STEPS, EXP_STEPS_CUTOFF, argmax, binMasses, chunkMaxima, chunkSums, collectBin, drawInChunk, expSteps, firstIndexOfMax, gather, keptMass, kthLargest, largestReaching, pickKept, selectTopInChunks, sumRange } from './vocab-scan.js';

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

/** Nats below the best token (weight ~1e-4) within which top_p first looks for its nucleus. */
const NUCLEUS_FIRST_TRY = 9.2;

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
