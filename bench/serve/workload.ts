// The serving benchmark's requests: which model each names, its prompt as token ids, and when it arrives. Everything
// is a pure function of the seed, so two runs with the same flags send the same requests.

export type Popularity = 'uniform' | 'zipf';

export interface WorkloadOptions {
  /** Served name of the base model: every request's `model` when there are no adapters. */
  baseModel: string;
  /** Adapter names in popularity order (the first is zipf rank 1); empty for the base model only. */
  adapters: string[];
  popularity: Popularity;
  /** Zipf exponent: adapter of rank k is picked with weight 1/k^s. */
  zipfS: number;
  /** Fraction of requests, in [0, 1], whose prompt starts with the shared prefix. */
  sharedPrefixFraction: number;
  sharedPrefixTokens: number;
  /** Tokens of each prompt after the shared prefix (if any), distinct per request. */
  promptTokens: number;
  outputTokens: number;
  /** Load points: request streams 0..loadPoints-1, each with prompts of its own; stream -1 is the warm-up. */
  loadPoints: number;
  seed: number;
  /** Prompt token ids are drawn uniformly from [0, vocabSize). */
  vocabSize: number;
}

export interface BenchRequest {
  /** Position in its load point's sequence. */
  index: number;
  /** The request's `model`: an adapter name or the base model's name. */
  model: string;
  /** The adapter it names, null for the base model. */
  adapter: string | null;
  promptIds: number[];
  sharedPrefix: boolean;
  maxTokens: number;
}

/**
 * Seeded pseudo-random numbers in [0, 1): a Weyl sequence through a 32-bit avalanche mix. One stream per (seed, key),
 * so each request's draws do not depend on how many other requests were drawn before it.
 */
export class SeededRandom {
  #state: number;

  constructor(seed: number, key: string) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative integer (found ${seed})`);
    let h = 0x811c9dc5 ^ (seed >>> 0) ^ Math.imul(Math.floor(seed / 0x1_0000_0000), 0x27d4eb2d);
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
    this.#state = SeededRandom.#mix(h);
  }

  static #mix(x: number): number {
    let z = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }

  next(): number {
    this.#state = (this.#state + 0x9e3779b9) | 0;
    return SeededRandom.#mix(this.#state) / 0x1_0000_0000;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/** Probabilities of ranks 1..n under Zipf's law with exponent `s` (s = 0 is uniform). */
export function zipfWeights(n: number, s: number): number[] {
  const raw = Array.from({ length: n }, (_, k) => 1 / (k + 1) ** s);
  const total = raw.reduce((a, b) => a + b, 0);
  return raw.map((w) => w / total);
}

/** Index drawn from the distribution `weights` (summing to 1) by the uniform sample `u` in [0, 1). */
function pick(weights: number[], u: number): number {
  let acc = 0;
  for (let i = 0; i < weights.length; i++) {
    acc += weights[i];
    if (u < acc) return i;
  }
  return weights.length - 1;
}

export class Workload {
  readonly options: Readonly<WorkloadOptions>;
  /** Probability of each adapter, in the order of `options.adapters`. */
  readonly adapterWeights: readonly number[];
  readonly sharedPrefix: readonly number[];
  /**
   * Leading tokens of each distinct part that number the request (base-vocabSize digits of `serial`, least significant
   * first, each shifted by a fixed offset); the rest of the part is random. So no two requests of a run share a
   * distinct part, however small the vocabulary (the serial baseline and --cache-prompt both resend a load point's
   * prompts on purpose).
   */
  readonly numberTokens: number;
  /** Requests whose distinct parts the numbering keeps apart: vocabSize ** numberTokens (at most 2^53; 1 without a distinct part). */
  readonly distinctParts: number;
  readonly #phase: number;
  readonly #numberOffsets: readonly number[];

  constructor(options: WorkloadOptions) {
    if (!(options.sharedPrefixFraction >= 0 && options.sharedPrefixFraction <= 1)) {
      throw new RangeError(`the shared-prefix fraction must lie in [0, 1] (found ${options.sharedPrefixFraction})`);
    }
    this.options = Object.freeze({ ...options, adapters: [...options.adapters] });
    const n = options.adapters.length;
    this.adapterWeights = options.popularity === 'zipf' ? zipfWeights(n, options.zipfS) : zipfWeights(n, 0);
    const prefixRandom = new SeededRandom(options.seed, 'shared-prefix');
    this.sharedPrefix = Array.from({ length: options.sharedPrefixTokens }, () => prefixRandom.int(options.vocabSize));
    this.#phase = new SeededRandom(options.seed, 'prefix-phase').next();
    const { promptTokens: d, vocabSize: v } = options;
    // Enough base-v digits for any safe integer (all d tokens when v = 1), but no more than the distinct part holds.
    this.numberTokens = Math.min(d, Math.ceil(53 / Math.log2(v)));
    this.distinctParts = d === 0 ? 1 : Math.min(v ** this.numberTokens, 2 ** 53);
    const offsetRandom = new SeededRandom(options.seed, 'number-offsets');
    this.#numberOffsets = Array.from({ length: this.numberTokens }, () => offsetRandom.int(v));
  }

  /**
   * The number that request `index` of `stream` writes at the start of its distinct part: streams interleaved,
   * warm-up (-1) first, so every (stream, index) of the run has a number of its own.
   */
  serial(stream: number, index: number): number {
    const { loadPoints } = this.options;
    if (!(Number.isInteger(stream) && stream >= -1 && stream < loadPoints)) throw new RangeError(`stream must be -1 or a load point below ${loadPoints} (found ${stream})`);
    if (!(Number.isSafeInteger(index) && index >= 0)) throw new RangeError(`index must be a non-negative integer (found ${index})`);
    return index * (loadPoints + 1) + stream + 1;
  }

  /** Whether streams -1..loadPoints-1 of `requests` requests each fit in `distinctParts`. */
  fits(requests: number): boolean {
    return this.options.promptTokens === 0 || requests === 0 || this.serial(this.options.loadPoints - 1, requests - 1) < this.distinctParts;
  }

  /**
   * Whether request `index` starts with the shared prefix. The prefixed requests are spread evenly: among any run of
   * consecutive requests, the count differs from fraction × length by less than one.
   */
  hasSharedPrefix(index: number): boolean {
    const f = this.options.sharedPrefixFraction;
    if (this.options.sharedPrefixTokens === 0 || f === 0) return false;
    return Math.floor((index + 1) * f + this.#phase) > Math.floor(index * f + this.#phase);
  }

  /**
   * Request `index` of the sequence `stream` (one per load point, so no two load points repeat a prompt; -1 for the
   * warm-up). Throws a RangeError when its number does not fit in the distinct part (see `fits`).
   */
  request(stream: number, index: number): BenchRequest {
    const { adapters, baseModel, promptTokens, vocabSize, outputTokens, seed } = this.options;
    let serial = this.serial(stream, index);
    if (promptTokens > 0 && serial >= this.distinctParts) {
      throw new RangeError(`request ${index} of load point ${stream} needs distinct part number ${serial}, but ${promptTokens} tokens of a ${vocabSize}-token vocabulary tell only ${this.distinctParts} apart (raise --prompt-tokens)`);
    }
    const random = new SeededRandom(seed, `request:${stream}:${index}`);
    const adapter = adapters.length === 0 ? null : adapters[pick(this.adapterWeights as number[], random.next())];
    const sharedPrefix = this.hasSharedPrefix(index);
    const own = Array.from({ length: promptTokens }, (_, j) => {
      if (j >= this.numberTokens) return random.int(vocabSize);
      const digit = serial % vocabSize;
      serial = Math.floor(serial / vocabSize);
      return (digit + this.#numberOffsets[j]) % vocabSize;
    });
    return { index, model: adapter ?? baseModel, adapter, promptIds: sharedPrefix ? [...this.sharedPrefix, ...own] : own, sharedPrefix, maxTokens: outputTokens };
  }
}

/**
 * Arrival times, in ms from the start, of a Poisson process at `rate` requests per second: exponential gaps with
 * mean 1000 / rate ms. Each call returns the next arrival.
 */
export function poissonArrivals(rate: number, seed: number, key: string): () => number {
  if (!(rate > 0)) throw new RangeError(`the rate must be positive (found ${rate})`);
  const random = new SeededRandom(seed, `arrivals:${key}`);
  let t = 0;
  return () => {
    t += (-Math.log(1 - random.next()) * 1000) / rate;
    return t;
  };
}
