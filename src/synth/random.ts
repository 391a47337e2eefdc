/**
 * Seeded xoshiro128** generator. Each stream is keyed by (seed, key), e.g. a tensor name, so a tensor's values do not
 * depend on which other tensors were generated before it or on how the file is sharded.
 */
export class Random {
  // Four words of state kept as plain numbers: the hot loops copy them into locals.
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number, key = '') {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative safe integer (found ${seed})`);
    // FNV-1a of the key, then splitmix32 absorbing both words of the seed, spreads every input bit into all four words.
    let x = 0x811c9dc5;
    for (let i = 0; i < key.length; i++) x = Math.imul(x ^ key.charCodeAt(i), 0x01000193);
    const next = (): number => {
      x = (x + 0x9e3779b9) | 0;
      let t = Math.imul(x ^ (x >>> 16), 0x21f0aaad);
      t = Math.imul(t ^ (t >>> 15), 0x735a2d97);
      return t ^ (t >>> 15);
    };
    x ^= seed >>> 0;
    x = next() ^ (Math.floor(seed / 0x1_0000_0000) >>> 0);
    x = next();
    this.#a = next();
    this.#b = next();
    this.#c = next();
    this.#d = next();
    if ((this.#a | this.#b | this.#c | this.#d) === 0) this.#a = 1;
  }

  /** Fills `out` with normal samples of the given mean and standard deviation (Marsaglia's polar method). */
  fillNormal(out: Float32Array, std: number, mean = 0): void {
    let a = this.#a, b = this.#b, c = this.#c, d = this.#d;
    const n = out.length;
    let i = 0;
    while (i < n) {
      // Two inlined xoshiro128** steps, mapped to [-1, 1).
      let b5 = Math.imul(b, 5);
      let r = Math.imul((b5 << 7) | (b5 >>> 25), 9);
      let t = b << 9;
      c ^= a; d ^= b; b ^= c; a ^= d; c ^= t; d = (d << 11) | (d >>> 21);
      const u = (r >>> 0) * 4.656612873077393e-10 - 1;
      b5 = Math.imul(b, 5);
      r = Math.imul((b5 << 7) | (b5 >>> 25), 9);
      t = b << 9;
      c ^= a; d ^= b; b ^= c; a ^= d; c ^= t; d = (d << 11) | (d >>> 21);
      const v = (r >>> 0) * 4.656612873077393e-10 - 1;
      const s = u * u + v * v;
      if (s >= 1 || s === 0) continue;
      const f = std * Math.sqrt((-2 * Math.log(s)) / s);
      out[i++] = mean + u * f;
      if (i < n) out[i++] = mean + v * f;
    }
    this.#a = a; this.#b = b; this.#c = c; this.#d = d;
  }
}
