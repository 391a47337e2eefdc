import { describe, expect, it } from 'vitest';
import { Sampler } from '../../src/engine/sampler.js';
import { SequenceSamplingState } from '../../src/engine/sequence-sampling-state.js';
import { DEFAULT_SAMPLING, validateSamplingParams } from '../../src/engine/sampling-params.js';
import type { SamplingParams } from '../../src/engine/sampling-params.js';
import { Random } from '../../src/synth/random.js';

function params(overrides: Partial<SamplingParams> = {}): SamplingParams {
  return { ...DEFAULT_SAMPLING, ...overrides };
}

function normalLogits(vocab: number, seed: number, std = 1): Float32Array {
  const z = new Float32Array(vocab);
  new Random(seed, 'sampler-test').fillNormal(z, std);
  return z;
}

/** Logits whose softmax is exactly `probs`. */
function logitsOf(probs: number[]): Float32Array {
  return Float32Array.from(probs, Math.log);
}

function logSoftmax(z: ArrayLike<number>): number[] {
  const values = Array.from(z);
  const max = values.reduce((a, b) => Math.max(a, b));
  const lse = max + Math.log(values.reduce((s, v) => s + Math.exp(v - max), 0));
  return Array.from(z, (v) => v - lse);
}

function sampleCounts(z: Float32Array, p: SamplingParams, draws: number, seed = 1): number[] {
  const sampler = new Sampler(z.length);
  const state = new SequenceSamplingState(p, [], seed);
  const counts = new Array<number>(z.length).fill(0);
  for (let i = 0; i < draws; i++) counts[sampler.sample(z, p, state).tokenId]++;
  return counts;
}

function sampledSet(counts: number[]): number[] {
  return counts.flatMap((c, id) => (c > 0 ? [id] : []));
}

/** Pearson's chi-square statistic of observed counts against probabilities (tokens with probability 0 must not occur). */
function chiSquare(counts: number[], probs: number[]): number {
  const total = counts.reduce((a, b) => a + b, 0);
  let chi = 0;
  for (let i = 0; i < counts.length; i++) {
    if (probs[i] === 0) {
      expect(counts[i], `token ${i} has probability 0`).toBe(0);
      continue;
    }
    const expected = total * probs[i];
    chi += (counts[i] - expected) ** 2 / expected;
  }
  return chi;
}

function renormalized(probs: number[], keep: number[]): number[] {
  const mass = keep.reduce((s, id) => s + probs[id], 0);
  return probs.map((p, id) => (keep.includes(id) ? p / mass : 0));
}

/** The smallest set of most likely tokens whose mass reaches p, computed by sorting. */
function expectedNucleus(probs: number[], p: number): number[] {
  const order = probs.map((_, id) => id).sort((a, b) => probs[b] - probs[a]);
  let mass = 0;
  const kept: number[] = [];
  for (const id of order) {
    kept.push(id);
    mass += probs[id];
    if (mass >= p) break;
  }
  return kept.sort((a, b) => a - b);
}

// Chi-square critical values at p = 0.001, by degrees of freedom.
const CHI2_CRITICAL = { 2: 13.82, 7: 24.32, 8: 26.12 } as const;

describe('Sampler', () => {
  it('is greedy at temperature 0: the argmax, first index on ties, whatever the filters', () => {
    const sampler = new Sampler(5000);
    for (let seed = 0; seed < 5; seed++) {
      const z = normalLogits(5000, seed);
      const argmax = z.indexOf(Math.max(...z));
      const p = params({ temperature: 0, topK: 3, topP: 0.5 });
      expect(sampler.sample(z, p, new SequenceSamplingState(p, [], seed)).tokenId).toBe(argmax);
    }
    const ties = Float32Array.from([0, 3, 1, 3]);
    const p = params({ temperature: 0 });
    expect(new Sampler(4).sample(ties, p, new SequenceSamplingState(p, [], 0))).toEqual({ tokenId: 1, logprob: null, topLogprobs: null });
    // Asking for logprobs takes another path to the same token.
    const withLogprobs = params({ temperature: 0, logprobs: 0 });
    expect(new Sampler(4).sample(ties, withLogprobs, new SequenceSamplingState(withLogprobs, [], 0)).tokenId).toBe(1);
  });

  it('samples from softmax(logits / T)', () => {
    const z = Float32Array.from([0, 0.5, 1, 1.5, -1, 2, 0.2, -0.5]);
    for (const temperature of [0.7, 1.5]) {
      const counts = sampleCounts(z, params({ temperature }), 40_000);
      const probs = logSoftmax(z.map((v) => v / temperature)).map(Math.exp);
      expect(chiSquare(counts, probs)).toBeLessThan(CHI2_CRITICAL[7]);
    }
  });

  it('samples from softmax(logits / T) across a vocabulary of many chunks', () => {
    // Eight likely tokens spread over the row and 4088 others: each likely token and "any other" is one bin.
    const z = new Float32Array(4096);
    const hot = [3, 700, 701, 1500, 2300, 3100, 3900, 4095];
    hot.forEach((id, j) => { z[id] = 5 + j * 0.4; });
    const counts = sampleCounts(z, params({ temperature: 0.8 }), 20_000);
    const probs = logSoftmax(z.map((v) => v / 0.8)).map(Math.exp);
    const bin = (values: number[]) => [...hot.map((id) => values[id]), values.reduce((a, b) => a + b, 0) - hot.reduce((a, id) => a + values[id], 0)];
    expect(chiSquare(bin(counts), bin(probs))).toBeLessThan(CHI2_CRITICAL[8]);
  });

  it('top_k keeps exactly the k most likely tokens, renormalized', () => {
    const z = Float32Array.from([0.1, 0.9, 0.3, 0.7, 0.5, 0.2, 0.8, 0.4, 0.6, 0]);
    const counts = sampleCounts(z, params({ topK: 3 }), 20_000);
    expect(sampledSet(counts)).toEqual([1, 3, 6]);
    expect(chiSquare(counts, renormalized(logSoftmax(z).map(Math.exp), [1, 3, 6]))).toBeLessThan(CHI2_CRITICAL[2]);

    // Fewer than one token per chunk: only the chunks whose maximum can reach the top k are searched.
    const big = normalLogits(20_000, 4);
    const top = Array.from(big.keys()).sort((a, b) => big[b] - big[a]).slice(0, 10).sort((a, b) => a - b);
    expect(sampledSet(sampleCounts(big, params({ topK: 10 }), 3000))).toEqual(top);
  });

  it('top_p keeps the smallest set of most likely tokens with mass >= p', () => {
    const probs = [0.15, 0.5, 0.05, 0.3];
    const z = logitsOf(probs);
    expect(sampledSet(sampleCounts(z, params({ topP: 0.75 }), 5000))).toEqual([1, 3]);
    const counts = sampleCounts(z, params({ topP: 0.85 }), 20_000);
    expect(sampledSet(counts)).toEqual([0, 1, 3]);
    expect(chiSquare(counts, renormalized(probs, [0, 1, 3]))).toBeLessThan(CHI2_CRITICAL[2]);
    expect(sampledSet(sampleCounts(z, params({ topP: 0.4 }), 2000))).toEqual([1]);
    // Ten equal tokens: 0.35 needs exactly four of them.
    expect(sampledSet(sampleCounts(new Float32Array(10), params({ topP: 0.35 }), 2000))).toEqual([0, 1, 2, 3]);
  });

  it('top_p selects the nucleus among thousands of candidates', () => {
    const z = normalLogits(4000, 11, 1.5);
    const probs = logSoftmax(z).map(Math.exp);
    const nucleus = expectedNucleus(probs, 0.3);
    expect(nucleus.length).toBeGreaterThan(20);
    expect(sampledSet(sampleCounts(z, params({ topP: 0.3 }), 30_000))).toEqual(nucleus);
  });

  it('top_p widens its search when the likeliest tokens do not reach the mass', () => {
    // One token at 0 and 100k tokens just over 10 nats below it, which together hold 4.5 times its mass.
    const vocab = 100_001;
    const z = new Float32Array(vocab);
    const tail = new Float32Array(vocab - 1);
    new Random(6, 'tail').fillNormal(tail, 0.1, -10.2);
    z.set(tail, 1);
    const probs = logSoftmax(z).map(Math.exp);
    const nucleus = new Set(expectedNucleus(probs, 0.5));
    const counts = sampleCounts(z, params({ topP: 0.5 }), 500);
    expect(sampledSet(counts).every((id) => nucleus.has(id))).toBe(true);
    // Token 0 keeps its share of the renormalized nucleus (0.42), not all of it.
    expect(Math.abs(counts[0] / 500 - probs[0] / 0.5)).toBeLessThan(0.1);
  });

  it('top_p applies to the top_k distribution, renormalized', () => {
    const z = logitsOf([0.4, 0.3, 0.2, 0.1]);
    // Over the whole vocabulary p = 0.5 would need tokens 0 and 1; over the top 2 renormalized, token 0 has 4/7.
    expect(sampledSet(sampleCounts(z, params({ topK: 2, topP: 0.5 }), 2000))).toEqual([0]);
    expect(sampledSet(sampleCounts(z, params({ topP: 0.5 }), 2000))).toEqual([0, 1]);

    const big = normalLogits(4000, 12, 1.5);
    const top = Array.from(big.keys()).sort((a, b) => big[b] - big[a]).slice(0, 100);
    const topProbs = logSoftmax(top.map((id) => big[id])).map(Math.exp);
    const nucleus = expectedNucleus(topProbs, 0.5).map((j) => top[j]).sort((a, b) => a - b);
    expect(sampledSet(sampleCounts(big, params({ topK: 100, topP: 0.5 }), 20_000))).toEqual(nucleus);
  });

  it('min_p drops tokens below min_p times the best probability, with and without top_k', () => {
    const probs = [0.04, 0.5, 0.15, 0.3, 0.01];
    const z = logitsOf(probs);
    const counts = sampleCounts(z, params({ minP: 0.2 }), 20_000);
    expect(sampledSet(counts)).toEqual([1, 2, 3]);
    expect(chiSquare(counts, renormalized(probs, [1, 2, 3]))).toBeLessThan(CHI2_CRITICAL[2]);
    expect(sampledSet(sampleCounts(z, params({ minP: 0.2, topK: 4 }), 5000))).toEqual([1, 2, 3]);
    expect(sampledSet(sampleCounts(z, params({ minP: 0.7, topP: 0.99 }), 2000))).toEqual([1]);
    // top_k 4 drops token 4, top_p 0.9 token 0, then min_p 0.35 (probability >= 0.175) token 2.
    expect(sampledSet(sampleCounts(z, params({ topK: 4, topP: 0.9, minP: 0.35 }), 2000))).toEqual([1, 3]);
  });

  describe('penalties and logit_bias (seen through logprobs, which come after them)', () => {
    const z = Float32Array.from([2, -1, 0.5, 3, -2, 1]);
    const prompt = [0, 1, 1];
    const output = [3, 3, 4];

    function adjustedLogprobs(p: SamplingParams): number[] {
      const state = new SequenceSamplingState(p, prompt, 0);
      for (const id of output) state.append(id);
      const { topLogprobs } = new Sampler(z.length).sample(z, p, state);
      const byId = new Array<number>(z.length).fill(NaN);
      for (const t of topLogprobs ?? []) byId[t.tokenId] = t.logprob;
      return byId;
    }

    const cases: [string, Partial<SamplingParams>, number[]][] = [
      // Prompt and output tokens: positive logits divided, negative multiplied.
      ['repetition', { repetitionPenalty: 1.5 }, [2 / 1.5, -1 * 1.5, 0.5, 3 / 1.5, -2 * 1.5, 1]],
      // Output tokens only, once each.
      ['presence', { presencePenalty: 0.4 }, [2, -1, 0.5, 3 - 0.4, -2 - 0.4, 1]],
      // Output tokens only, once per occurrence.
      ['frequency', { frequencyPenalty: 0.3 }, [2, -1, 0.5, 3 - 0.6, -2 - 0.3, 1]],
      [
        'bias, then repetition, then frequency and presence',
        { logitBias: new Map([[2, 1], [3, -4]]), repetitionPenalty: 2, presencePenalty: 0.5, frequencyPenalty: -0.25 },
        [2 / 2, -1 * 2, 0.5 + 1, (3 - 4) * 2 + 0.5 - 0.5, -2 * 2 + 0.25 - 0.5, 1],
      ],
    ];
    for (const [name, overrides, expected] of cases) {
      it(name, () => {
        const got = adjustedLogprobs(params({ temperature: 0, logprobs: z.length, ...overrides }));
        const want = logSoftmax(expected);
        for (let i = 0; i < z.length; i++) expect(got[i]).toBeCloseTo(want[i], 6);
      });
    }

    it('a penalty changes the greedy choice', () => {
      const p = params({ temperature: 0, frequencyPenalty: 2 });
      const state = new SequenceSamplingState(p, prompt, 0);
      expect(new Sampler(z.length).sample(z, p, state).tokenId).toBe(3);
      state.append(3);
      expect(new Sampler(z.length).sample(z, p, state).tokenId).toBe(0);
    });
  });

  it('logit_bias +100 forces a token and -100 forbids one', () => {
    const z = normalLogits(1000, 3);
    const worst = z.indexOf(Math.min(...z));
    const best = z.indexOf(Math.max(...z));
    expect(sampledSet(sampleCounts(z, params({ logitBias: new Map([[worst, 100]]) }), 500))).toEqual([worst]);
    const forbid = params({ temperature: 0, logitBias: new Map([[best, -100]]) });
    const second = Array.from(z.keys()).filter((i) => i !== best).reduce((a, b) => (z[b] > z[a] ? b : a));
    expect(new Sampler(1000).sample(z, forbid, new SequenceSamplingState(forbid, [], 0)).tokenId).toBe(second);
  });

  it('a seed fixes the tokens, whatever other sequences are sampled in between', () => {
    const vocab = 200;
    const rows = Array.from({ length: 40 }, (_, i) => normalLogits(vocab, 100 + i, 2));
    const p = params({ temperature: 0.9, topP: 0.95, seed: 42 });
    const sampler = new Sampler(vocab);
    const run = (state: SequenceSamplingState, interleave?: SequenceSamplingState): number[] =>
      rows.map((z, i) => {
        if (interleave) sampler.sample(rows[(i * 7) % rows.length], params({ temperature: 1.3 }), interleave);
        return sampler.sample(z, p, state).tokenId;
      });
    const alone = run(new SequenceSamplingState(p, [], 0));
    expect(run(new SequenceSamplingState(p, [], 1))).toEqual(alone);
    expect(run(new SequenceSamplingState(p, [], 2), new SequenceSamplingState(params({ temperature: 1.3 }), [], 9))).toEqual(alone);
    // Without params.seed the request seed is used.
    const unseeded = params({ temperature: 0.9, topP: 0.95 });
    const fromRequest = new SequenceSamplingState(unseeded, [], 42);
    expect(rows.map((z) => sampler.sample(z, unseeded, fromRequest).tokenId)).toEqual(alone);
    expect(run(new SequenceSamplingState(params({ ...p, seed: 43 }), [], 0))).not.toEqual(alone);
  });

  it('logprobs are log-softmax of the logits before temperature and filtering; top_logprobs are sorted', () => {
    const vocab = 151_936;
    const z = normalLogits(vocab, 5, 3);
    const want = logSoftmax(z);
    const sampler = new Sampler(vocab);
    const settings = [{ temperature: 0 }, { temperature: 0.5, topK: 1 }, { temperature: 0.7, topP: 0.9 }, { temperature: 1 }, { topP: 0.9 }];
    for (const overrides of settings) {
      const p = params({ ...overrides, logprobs: 5 });
      const r = sampler.sample(z, p, new SequenceSamplingState(p, [], 0));
      expect(r.logprob).toBeCloseTo(want[r.tokenId], 6);
      const top = r.topLogprobs ?? [];
      const wantTop = Array.from(z.keys()).sort((a, b) => z[b] - z[a]).slice(0, 5);
      expect(top.map((t) => t.tokenId)).toEqual(wantTop);
      for (const t of top) expect(t.logprob).toBeCloseTo(want[t.tokenId], 6);
    }
    const onlyChosen = params({ logprobs: 0 });
    expect(sampler.sample(z, onlyChosen, new SequenceSamplingState(onlyChosen, [], 0)).topLogprobs).toEqual([]);
  });

  it('does not modify the logits it reads, even as a view into a batch buffer', () => {
    const vocab = 3000;
    const batch = new Float32Array(3 * vocab);
    new Random(8, 'batch').fillNormal(batch, 2);
    const before = batch.slice();
    const sampler = new Sampler(vocab);
    const p = params({
      temperature: 0.8, topK: 40, topP: 0.9, minP: 0.01, repetitionPenalty: 1.3, presencePenalty: 0.5, frequencyPenalty: 0.5,
      logitBias: new Map([[5, 10]]), logprobs: 5,
    });
    const state = new SequenceSamplingState(p, [1, 2, 3, 5], 0);
    for (let i = 0; i < 20; i++) {
      const row = batch.subarray(vocab, 2 * vocab);
      state.append(sampler.sample(row, p, state).tokenId);
      state.append(sampler.sample(row, { ...p, topK: 0 }, state).tokenId);
      state.append(sampler.sample(row, { ...p, temperature: 0 }, state).tokenId);
    }
    expect(batch).toEqual(before);
  });

  it('samples only among finite logits and survives a flat 150k vocabulary', () => {
    const z = new Float32Array(151_936).fill(-Infinity);
    z[7] = 1;
    z[150_000] = 1.5;
    expect(sampledSet(sampleCounts(z, params(), 200))).toEqual([7, 150_000]);
    const flat = new Float32Array(151_936);
    const counts = sampleCounts(flat, params({ temperature: 0.7, topP: 0.9 }), 20);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(20);
  });

  it('rejects a logits row of the wrong size', () => {
    const p = params();
    expect(() => new Sampler(10).sample(new Float32Array(9), p, new SequenceSamplingState(p, [], 0))).toThrow(
      'logits row has 9 values; the vocabulary has 10 tokens',
    );
  });
});

describe('validateSamplingParams', () => {
  it('accepts the defaults and typical settings', () => {
    expect(validateSamplingParams(DEFAULT_SAMPLING, 100)).toBeNull();
    const typical = params({ temperature: 0.7, topP: 0.9, topK: 50, minP: 0.05, logitBias: new Map([[3, -100]]), logprobs: 20, seed: -5 });
    expect(validateSamplingParams(typical, 100)).toBeNull();
  });

  const bad: [Partial<SamplingParams>, string][] = [
    [{ temperature: -0.1 }, 'temperature must be in [0, 100] (found -0.1)'],
    [{ temperature: NaN }, 'temperature must be in [0, 100] (found NaN)'],
    [{ topP: 0 }, 'top_p must be in (0, 1] (found 0)'],
    [{ topP: 1.5 }, 'top_p must be in (0, 1] (found 1.5)'],
    [{ topK: -2 }, 'top_k must be an integer >= -1; 0 or -1 disables it (found -2)'],
    [{ topK: 2.5 }, 'top_k must be an integer >= -1; 0 or -1 disables it (found 2.5)'],
    [{ minP: 1.1 }, 'min_p must be in [0, 1] (found 1.1)'],
    [{ repetitionPenalty: 0 }, 'repetition_penalty must be a number > 0; 1 disables it (found 0)'],
    [{ presencePenalty: 2.5 }, 'presence_penalty must be in [-2, 2] (found 2.5)'],
    [{ frequencyPenalty: -3 }, 'frequency_penalty must be in [-2, 2] (found -3)'],
    [{ logitBias: new Map([[100, 1]]) }, 'logit_bias has token id 100, outside the vocabulary [0, 100)'],
    [{ logitBias: new Map([[4, 101]]) }, 'logit_bias for token 4 must be in [-100, 100] (found 101)'],
    [{ seed: 1.5 }, 'seed must be an integer (found 1.5)'],
    [{ logprobs: 21 }, 'logprobs must be an integer in [0, 20] (found 21)'],
    [{ maxTokens: 0 }, 'max_tokens must be an integer >= 1 (found 0)'],
    [{ stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }, 'stop has 17 strings; at most 16 are allowed'],
    [{ stop: ['x', ''] }, 'stop strings must not be empty'],
    [{ stopTokenIds: [-1] }, 'stop_token_ids has token id -1, outside the vocabulary [0, 100)'],
  ];
  for (const [overrides, message] of bad) {
    it(`rejects ${JSON.stringify(overrides, (_, v: unknown) => (v instanceof Map ? [...v] : v))}`, () => {
      expect(validateSamplingParams(params(overrides), 100)).toBe(message);
    });
  }
});
