// Runs in the engine worker: which waiting sequences start this step, which keep waiting, and which give up.
import type { SlotAcquisition } from '../adapters/adapter-manager.js';
import type { EngineErrorCode } from './engine-types.js';
import type { Sequence } from './sequence.js';

export interface AdmissionPolicy {
  /**
   * A request that has waited this long for its adapter's slot holds back every later request that needs a slot,
   * so the slots drain and it gets one: without this, hot adapters that always have a running request keep every
   * slot referenced and a cold adapter's request waits forever.
   */
  agingMs: number;
  /** A request still waiting for its adapter's slot after this long (from its arrival) gives up: `adapter_unavailable`. */
  adapterWaitTimeoutMs: number;
}

export type Admission =
  | { type: 'admit'; seq: Sequence; slot: number }
  | { type: 'fail'; seq: Sequence; code: EngineErrorCode; message: string };

/** What a step may still start: free KV rows, and tokens left in its budget (`--max-batched-tokens`). */
export interface StepRoom {
  rows: number;
  tokens: number;
}

/**
 * One admission pass over the waiting sequences in arrival order. Sequences are admitted while a row is free and the
 * step has tokens left; each admitted one takes `cost(seq)` tokens of the budget (its first chunk: the last one may
 * get less than its cost and continue next step). Each gets the slot `acquire` gave it, 0 for the base model. A
 * sequence whose adapter failed to load, or that waited past the timeout, fails. `ready(seq)` false keeps a sequence
 * waiting without asking for a slot (a choice waiting for its prompt to be computed once). The caller applies the
 * result: it neither changes `waiting` nor any sequence.
 *
 * `acquire` takes a slot reference when it answers `{ slot }`; it is only asked for sequences that could start now.
 */
export function admissionPass(
  waiting: readonly Sequence[],
  room: StepRoom,
  hooks: { acquire: (seq: Sequence) => SlotAcquisition; cost: (seq: Sequence) => number; ready: (seq: Sequence) => boolean },
  now: number,
  policy: AdmissionPolicy,
): Admission[] {
  const out: Admission[] = [];
  let { rows, tokens } = room;
  let holdBackSlots = false;
  const admit = (seq: Sequence, slot: number) => {
    out.push({ type: 'admit', seq, slot });
    rows--;
    tokens -= hooks.cost(seq);
  };
  for (const seq of waiting) {
    if (rows === 0 || tokens <= 0) break;
    if (!hooks.ready(seq)) continue;
    if (seq.adapter === null) {
      admit(seq, 0);
      continue;
    }
    if (holdBackSlots) continue;
    const waited = now - seq.arrivedAt;
    const got = hooks.acquire(seq);
    if ('slot' in got) {
      admit(seq, got.slot);
    } else if ('error' in got) {
      // A reload refused because a file now resolves outside the roots keeps its 403; any other load failure is the adapter's.
      const code = got.error.code === 'adapter_path_not_allowed' ? 'adapter_path_not_allowed' : 'adapter_invalid';
      out.push({ type: 'fail', seq, code, message: got.error.message });
    } else if (waited >= policy.adapterWaitTimeoutMs) {
      out.push({ type: 'fail', seq, code: 'adapter_unavailable', message: `adapter '${seq.adapter.name}' got no slot within ${policy.adapterWaitTimeoutMs / 1000} s (--adapter-wait-timeout): every slot is in use` });
    } else if (waited >= policy.agingMs) {
      holdBackSlots = true;
    }
  }
  return out;
}

/**
 * Prompt tokens each prefilling sequence computes this step, in arrival order: each gets at most `maxChunk`
 * (`--prefill-chunk`) of what is left of `budget` (the step's tokens after one per decoding sequence).
 *
 * With `maxChunk` 3 or more, no prompt token is computed in a one-token run: a chunk never leaves exactly one token,
 * and a budget remainder of one token waits for the next step. One-token runs take other kernels, whose results
 * differ in the last bits from the same token in a longer chunk, and a request must get the same output however the
 * budget happened to split its prompt (chunks of two or more tokens give bit-identical results).
 */
export function prefillChunks(prefilling: readonly Sequence[], budget: number, maxChunk: number): Map<Sequence, number> {
  const chunks = new Map<Sequence, number>();
  for (const seq of [...prefilling].sort((x, y) => x.arrivedAt - y.arrivedAt)) {
    if (budget <= 0) break;
    const left = seq.tokens.length - seq.computed;
    let chunk = Math.min(left, maxChunk, budget);
    if (maxChunk >= 3) {
      if (left - chunk === 1) chunk--;
      if (chunk < 2) continue;
    }
    chunks.set(seq, chunk);
    budget -= chunk;
  }
  return chunks;
}
