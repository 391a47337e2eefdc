// Runs in the engine worker.
import type { SamplingParams } from './sampling-params.js';

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
