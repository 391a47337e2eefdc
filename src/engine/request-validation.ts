// Runs in the engine worker: the engine's own check of a request before it is queued (the API checks first, for its
// clients; the engine checks again, as it also serves the CLI and benchmarks).
import type { GenerationRequest } from './engine-types.js';
import { validateSamplingParams } from './sampling-params.js';

/** Why the engine refuses the request (empty or too long a prompt, an id outside the vocabulary, bad sampling); null when fine. */
export function requestProblem(request: GenerationRequest, vocabSize: number, contextLength: number): string | null {
  const n = request.promptIds.length;
  if (n === 0) return 'the prompt is empty';
  if (n >= contextLength) return `the prompt has ${n} tokens but the context length is ${contextLength}: at most ${contextLength - 1} prompt tokens fit`;
  const bad = request.promptIds.find((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
  if (bad !== undefined) return `prompt token id ${bad} is outside the vocabulary [0, ${vocabSize})`;
  return validateSamplingParams(request.sampling, vocabSize);
}
