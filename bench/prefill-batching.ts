// Prefill of several fresh prompts of equal length: one run over all their rows vs one run per prompt, on the
// qwen2.5-0.5b-shaped int4 checkpoint. Decides how the scheduler runs the prefills of one step. Prints one JSON object.
// Usage: npm run bench:prefill-batching [-- --prompts 4 --prompt-tokens 128 --reps 5 --runtime native]
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { KvCache } from '../src/model/kv-cache.js';
import type { RuntimeChoice } from '../src/model/load-model.js';
import { loadModel } from '../src/model/load-model.js';
import { benchCheckpoint } from './bench-checkpoint.js';
import { median } from './stats.js';

const { values } = parseArgs({
  options: {
    prompts: { type: 'string', default: '4' },
    'prompt-tokens': { type: 'string', default: '128' },
    reps: { type: 'string', default: '5' },
    threads: { type: 'string', default: String(availableParallelism()) },
    runtime: { type: 'string', default: 'native' },
  },
});
const prompts = Number(values.prompts);
const length = Number(values['prompt-tokens']);
const model = await loadModel({ modelDir: benchCheckpoint('qwen2.5-0.5b'), quantization: 'int4', threads: Number(values.threads), runtime: values.runtime as RuntimeChoice });
const kv = new KvCache(model.config, prompts, length);
const ids = Array.from({ length: prompts }, (_, r) => Array.from({ length }, (_, i) => 100 + r * 7 + i));
const batched: number[] = [];
const oneByOne: number[] = [];
// The variants take turns, so drift on a shared machine hits both alike.
for (let rep = 0; rep < Number(values.reps); rep++) {
  let start = performance.now();
  await model.decoder.forward({ firstRow: 0, tokens: ids, pastLengths: ids.map(() => 0) }, kv);
  batched.push(performance.now() - start);
  start = performance.now();
  for (let r = 0; r < prompts; r++) await model.decoder.forward({ firstRow: r, tokens: [ids[r]], pastLengths: [0] }, kv);
  oneByOne.push(performance.now() - start);
}
await model.decoder.release();
const round = (x: number) => Math.round(x * 10) / 10;
console.log(JSON.stringify({
  benchmark: 'prefill-batching', runtime: model.runtime, prompts, prompt_tokens: length, threads: Number(values.threads),
  one_run_ms: round(median(batched)), one_run_per_prompt_ms: round(median(oneByOne)),
  samples: { one_run_ms: batched.map(round), one_run_per_prompt_ms: oneByOne.map(round) },
}));
