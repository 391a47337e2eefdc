import { describe, expect, it } from 'vitest';
import type { AdapterEntry } from '../../src/adapters/adapter-manager.js';
import type { EngineState } from '../../src/engine/invariants.js';
import { checkEngineInvariants } from '../../src/engine/invariants.js';
import { DEFAULT_SAMPLING } from '../../src/engine/sampling-params.js';
import { Sequence } from '../../src/engine/sequence.js';

const adapter: AdapterEntry = { name: 'x', path: '/x', digest: 'dx', rank: 8, pinned: false };

/** A running decode sequence in `row` (one uncomputed token), with adapter x on `slot` when slot > 0. */
function running(row: number, slot = 0): Sequence {
  const s = new Sequence({ id: `s${row}`, promptIds: [1, 2, 3], adapter: slot > 0 ? 'x' : null, sampling: DEFAULT_SAMPLING }, slot > 0 ? adapter : null, 1);
  s.row = row;
  s.slot = slot;
  s.computed = 3;
  s.tokens.push(4);
  return s;
}

function state(overrides: Partial<EngineState>): EngineState {
  const rows = overrides.running ?? [running(0, 1), running(1), running(2, 1)];
  return { running: rows, waiting: [], ended: [], contextLength: 64, slotReferences: [0, 2, 0], adapterBindings: new Map([['dx', 2]]), prefixCache: null, ...overrides };
}

describe('checkEngineInvariants', () => {
  it('accepts a sound state', () => {
    expect(checkEngineInvariants(state({}))).toEqual([]);
  });

  it('names each broken rule', () => {
    const gap = [running(0), running(2)];
    expect(checkEngineInvariants(state({ running: gap, slotReferences: null, adapterBindings: null }))).toEqual(['rows not dense: running[1] (s2) holds row 2']);

    const prefill = running(0);
    prefill.computed = 0;
    expect(checkEngineInvariants(state({ running: [prefill, running(1)], slotReferences: null, adapterBindings: null })))
      .toEqual(['decoding sequence s1 in row 1 follows a prefilling one']);

    expect(checkEngineInvariants(state({ slotReferences: [0, 1, 0] }))).toEqual(['slot 1 has 1 references but 2 running rows']);
    expect(checkEngineInvariants(state({ adapterBindings: new Map([['dx', 3]]) }))).toEqual(['adapter dx has 3 bindings but 2 requests']);

    const ended = running(1);
    ended.ended = true;
    expect(checkEngineInvariants(state({ running: [running(0), ended], ended: [ended], slotReferences: null, adapterBindings: null })))
      .toEqual(['ended sequence s1 is still queued', '1 ended sequences are not released']);

    const waiting = running(5);
    expect(checkEngineInvariants(state({ waiting: [waiting], slotReferences: null, adapterBindings: null }))).toEqual(['waiting sequence s5 holds row 5 and slot 0']);
  });
});
