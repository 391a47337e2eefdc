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

/**
 * One admission pass over the waiting sequences in arrival order. `freeRows` sequences at most are admitted (each with
 * the slot `acquire` gave it, 0 for the base model); a sequence whose adapter failed to load, or that waited past the
 * timeout, fails. The caller applies the result: it neither changes `waiting` nor any sequence.
 *
 * `acquire` takes a slot reference when it answers `{ slot }`; it is only asked for sequences that could start now.
 */
export function admissionPass(
  waiting: readonly Sequence[],
  freeRows: number,
  acquire: (seq: Sequence) => SlotAcquisition,
  now: number,
  policy: AdmissionPolicy,
): Admission[] {
  const out: Admission[] = [];
  let holdBackSlots = false;
  for (const seq of waiting) {
    const waited = now - seq.arrivedAt;
    if (freeRows === 0 || seq.adapter === null) {
      if (freeRows > 0) {
        out.push({ type: 'admit', seq, slot: 0 });
        freeRows--;
      }
      continue;
    }
    if (holdBackSlots) continue;
    const got = acquire(seq);
    if ('slot' in got) {
      out.push({ type: 'admit', seq, slot: got.slot });
      freeRows--;
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
