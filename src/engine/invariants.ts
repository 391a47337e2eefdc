// Runs in the engine worker: the bookkeeping rules every state between steps must satisfy.
import type { MergedSession } from './merged-sessions.js';
import type { PrefixCache } from './prefix-cache.js';
import type { Sequence } from './sequence.js';

/** A decoding row's session: '' for the base, else the merged adapter's digest; the base session's rows come first. */
function sessionKey(seq: Sequence): string {
  return seq.session?.adapter ?? '';
}

export interface EngineState {
  running: readonly Sequence[];
  waiting: readonly Sequence[];
  /** Sequences ended but not yet released (must be none between steps). */
  ended: readonly Sequence[];
  contextLength: number;
  /** References per adapter slot, as the slot manager counts them (null without adapters). */
  slotReferences: readonly number[] | null;
  /** Requests bound per adapter digest, as the adapter manager counts them (null without adapters). */
  adapterBindings: ReadonlyMap<string, number> | null;
  /** Its own rules: chains whole, child counts right, within capacity (null when off). */
  prefixCache: PrefixCache | null;
}

/**
 * The violated rules, each named; empty when the state is sound:
 * rows dense (running[i] holds row i), prefilling sequences after every decoding one, waiting sequences hold no row
 * or slot, computed positions fit the row, nothing ended is left unreleased, each slot's references equal the running
 * rows bound to it, each adapter's bindings equal the waiting and running requests for it, and the prefix cache's
 * blocks are sound.
 */
export function checkEngineInvariants(state: EngineState): string[] {
  const problems: string[] = [];
  const { running, waiting } = state;
  running.forEach((seq, i) => {
    if (seq.row !== i) problems.push(`rows not dense: running[${i}] (${seq.id}) holds row ${seq.row}`);
    if (!seq.prefilling && i > 0 && running[i - 1].prefilling) problems.push(`decoding sequence ${seq.id} in row ${i} follows a prefilling one`);
    if (!seq.prefilling && i > 0 && !running[i - 1].prefilling && sessionKey(running[i - 1]) > sessionKey(seq)) problems.push(`decoding sequence ${seq.id} in row ${i} is out of its session's rows`);
    if (seq.computed > state.contextLength || seq.computed > seq.tokens.length) problems.push(`sequence ${seq.id} has ${seq.computed} computed positions of ${seq.tokens.length} tokens`);
  });
  for (const seq of waiting) {
    if (seq.row !== -1 || seq.slot !== 0) problems.push(`waiting sequence ${seq.id} holds row ${seq.row} and slot ${seq.slot}`);
  }
  for (const seq of [...running, ...waiting]) if (seq.ended) problems.push(`ended sequence ${seq.id} is still queued`);
  if (state.ended.length > 0) problems.push(`${state.ended.length} ended sequences are not released`);
  if (state.slotReferences) {
    state.slotReferences.forEach((refs, slot) => {
      const rows = running.filter((s) => s.slot === slot).length;
      if (slot > 0 && refs !== rows) problems.push(`slot ${slot} has ${refs} references but ${rows} running rows`);
    });
  }
  if (state.adapterBindings) {
    const expected = new Map<string, number>();
    for (const seq of [...running, ...waiting]) if (seq.adapter) expected.set(seq.adapter.digest, (expected.get(seq.adapter.digest) ?? 0) + 1);
    for (const digest of new Set([...expected.keys(), ...state.adapterBindings.keys()])) {
      const bound = state.adapterBindings.get(digest) ?? 0;
      const requests = expected.get(digest) ?? 0;
      if (bound !== requests) problems.push(`adapter ${digest.slice(0, 12)} has ${bound} bindings but ${requests} requests`);
    }
  }
  const users = new Map<MergedSession, number>();
  for (const seq of running) if (seq.session) users.set(seq.session, (users.get(seq.session) ?? 0) + 1);
  for (const [session, n] of users) if (session.users !== n) problems.push(`merged session ${session.adapter.slice(0, 12)} counts ${session.users} users but ${n} rows run on it`);
  for (const seq of running) if (seq.session && seq.slot !== 0) problems.push(`sequence ${seq.id} on a merged session holds slot ${seq.slot}`);
  if (state.prefixCache) problems.push(...state.prefixCache.violations());
  return problems;
}
