// Sampler cost per row at a real vocabulary size. Prints one JSON object: µs per row (median of runs) per setting.
// Usage: npx tsx bench/sampler.ts [--vocab 151936 --rows 16 --runs 15]
//
// Logits imitate a language model's last position: N(0, 2) over the vocabulary plus a head of 20 likely tokens
// 8–14 above it (top token ~0.4 probability at T = 1). Rows are distinct and together larger than the L2 cache, as
// a fresh [rows, vocab] output of the model would be. The `flat` rows (N(0, 1), no head) are the worst case for
// top_p: its nucleus then holds most of the vocabulary.
import { parseArgs } from 'node:util';
import { Sampler } from '../src/engine/sampler.js';
import { SequenceSamplingState } from '../src/engine/sequence-sampling-state.js';
import { DEFAULT_SAMPLING } from '../src/engine/sampling-params.js';
import type { SamplingParams } from '../src/engine/sampling-params.js';
import { Random } from '../src/synth/random.js';
import { median } from './stats.js';

const { values } = parseArgs({
  options: {
    vocab: { type: 'string', default: '151936' },
    rows: { type: 'string', default: '16' },
    runs: { type: 'string', default: '15' },
  },
});
const vocab = Number(values.vocab);
const rows = Number(values.rows);
const runs = Number(values.runs);

const logits = new Float32Array(rows * vocab);
const random = new Random(0, 'bench-sampler');
random.fillNormal(logits, 2);
const head = new Float32Array(rows * 20);
random.fillNormal(head, 1.5, 11);
for (let r = 0; r < rows; r++) {
  for (let j = 0; j < 20; j++) logits[r * vocab + ((r * 7919 + j * 104729) % vocab)] = head[r * 20 + j];
}
const flat = new Float32Array(rows * vocab);
random.fillNormal(flat, 1);

const prompt = Array.from({ length: 512 }, (_, i) => (i * 2654435761) % vocab);
const history = Array.from({ length: 256 }, (_, i) => (i * 40503 + 17) % vocab);
const typical = { temperature: 0.7, topP: 0.9 };
const cases: Record<string, Partial<SamplingParams> & { flat?: true }> = {
  greedy: { temperature: 0 },
  temperature: { temperature: 0.7 },
  topK: { temperature: 0.7, topK: 50 },
  topP: typical,
  topKTopP: { ...typical, topK: 50 },
  topPPenalties: { ...typical, repetitionPenalty: 1.1, presencePenalty: 0.5, frequencyPenalty: 0.5 },
  logprobs5: { ...typical, logprobs: 5 },
  topPFlat: { temperature: 1, topP: 0.9, flat: true },
};

const sampler = new Sampler(vocab);
const result: Record<string, unknown> = { vocab, rows, runs, unit: 'µs per row, median of runs' };
for (const [name, { flat: isFlat, ...overrides }] of Object.entries(cases)) {
  const params: SamplingParams = { ...DEFAULT_SAMPLING, ...overrides };
  const state = new SequenceSamplingState(params, prompt, 1);
  for (const id of history) state.append(id);
  const buffer = isFlat ? flat : logits;
  const pass = () => {
    for (let r = 0; r < rows; r++) sampler.sample(buffer.subarray(r * vocab, (r + 1) * vocab), params, state);
  };
  for (let i = 0; i < Math.ceil(200 / rows); i++) pass();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    pass();
    samples.push(((performance.now() - t0) * 1000) / rows);
  }
  result[name] = Math.round(median(samples));
}
console.log(JSON.stringify(result, null, 2));
