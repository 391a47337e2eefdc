// Runs in the engine worker: the engine's own check of a request before it is queued (the API checks first, for its
// clients; the engine checks again, as it also serves the CLI and benchmarks).
import { randomInt } from 'node:crypto';
import type { AdapterManager } from '../adapters/adapter-manager.js';
import type { EngineErrorCode, GenerationRequest } from './engine-types.js';
import { validateSamplingParams } from './sampling-params.js';
import { Sequence } from './sequence.js';

export interface Acceptance {
  /** False once the engine drains. */
  accepting: boolean;
  vocabSize: number;
  contextLength: number;
  /** Requests waiting now, and the most that may. */
  waiting: number;
  maxWaiting: number;
  adapters: AdapterManager | null;
}

/**
 * The waiting sequence for a submitted request, its adapter bound; or why the engine refuses it (draining, invalid,
 * queue full, unknown adapter), with nothing bound.
 */
export function acceptRequest(request: GenerationRequest, at: Acceptance): Sequence | { code: EngineErrorCode; message: string } {
  if (!at.accepting) return { code: 'shutting_down', message: 'the server is shutting down' };
  const problem = requestProblem(request, at.vocabSize, at.contextLength);
  if (problem) return { code: 'invalid_request', message: problem };
  if (at.waiting >= at.maxWaiting) return { code: 'queue_full', message: `the waiting queue is full (${at.maxWaiting} requests)` };
  let adapter = null;
  if (request.adapter !== null) {
    adapter = at.adapters?.bind(request.adapter);
    if (!adapter) return { code: 'adapter_not_found', message: `no adapter named '${request.adapter}' is registered` };
  }
  try {
    return new Sequence(request, adapter, randomInt(2 ** 47));
  } catch (err) {
    if (adapter) at.adapters?.unbind(adapter.digest);
    return { code: 'invalid_request', message: err instanceof Error ? err.message : String(err) };
  }
}

/** Why the engine refuses the request (empty or too long a prompt, an id outside the vocabulary, bad sampling); null when fine. */
export function requestProblem(request: GenerationRequest, vocabSize: number, contextLength: number): string | null {
  const n = request.promptIds.length;
  if (n === 0) return 'the prompt is empty';
  if (n >= contextLength) return `the prompt has ${n} tokens but the context length is ${contextLength}: at most ${contextLength - 1} prompt tokens fit`;
  const bad = request.promptIds.find((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
  if (bad !== undefined) return `prompt token id ${bad} is outside the vocabulary [0, ${vocabSize})`;
  return validateSamplingParams(request.sampling, vocabSize);
}
