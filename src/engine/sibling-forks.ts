// Runs in the engine worker: choices of one prompt (`n` > 1) computing the prompt once (GenerationRequest.forkOf).
import type { Sequence } from './sequence.js';

/**
 * The sibling a sequence forks from now: running, with the logits of its computed prompt kept. The fork copies its
 * prompt KV and samples its first token from those logits, which is exactly what computing the prompt alone gives.
 */
export function forkSource(seq: Sequence, running: readonly Sequence[]): Sequence | undefined {
  if (seq.request.forkOf === undefined) return undefined;
  const source = running.find((s) => s.id === seq.request.forkOf);
  return source && !source.ended && source.promptLogits ? source : undefined;
}

/** Its sibling is waiting or still computing the prompt: the sequence waits for it rather than compute the same prompt. */
export function siblingComputing(seq: Sequence, waiting: readonly Sequence[], running: readonly Sequence[]): boolean {
  const id = seq.request.forkOf;
  if (id === undefined) return false;
  return [...waiting, ...running].some((s) => s.id === id && !s.ended && s.computed < s.promptLength);
}

/** Keeps the logits (row `row` of a run's) of a just-computed prompt while sibling choices wait to fork from it. */
export function keepForSiblings(seq: Sequence, waiting: readonly Sequence[], logits: Float32Array, row: number, vocabSize: number): void {
  if (waiting.some((s) => s.request.forkOf === seq.id)) seq.promptLogits = logits.slice(row * vocabSize, (row + 1) * vocabSize);
}
