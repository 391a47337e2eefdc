import { describe, expect, it } from 'vitest';
import type { AdapterEntry, SlotAcquisition } from '../../src/adapters/adapter-manager.js';
import { AdapterError } from '../../src/adapters/adapter-error.js';
import { DEFAULT_SAMPLING } from '../../src/engine/sampling-params.js';
import type { Admission } from '../../src/engine/scheduler.js';
import { admissionPass, prefillChunks } from '../../src/engine/scheduler.js';
import { Sequence } from '../../src/engine/sequence.js';

const policy = { agingMs: 1000, adapterWaitTimeoutMs: 5000 };

function entry(name: string): AdapterEntry {
  return { name, path: `/adapters/${name}`, digest: `digest-${name}`, rank: 8, pinned: false };
}

function seq(id: string, adapter: string | null): Sequence {
  return new Sequence({ id, promptIds: [1, 2, 3], adapter, sampling: DEFAULT_SAMPLING }, adapter === null ? null : entry(adapter), 1);
}

/** Slots by adapter name: a number is the slot it gets, 'wait' that it has none now, 'error' that its load failed. */
function acquirer(slots: Record<string, number | 'wait' | 'error'>) {
  const asked: string[] = [];
  const acquire = (s: Sequence): SlotAcquisition => {
    const name = s.adapter?.name ?? '';
    asked.push(s.id);
    const got = slots[name];
    if (got === 'wait') return { wait: true };
    if (got === 'error') return { error: new AdapterError('adapter_invalid', 'adapter_model.safetensors', 'load failed', name) };
    return { slot: got };
  };
  return { acquire, asked };
}

/** Hooks with `acquire`, a cost of the whole prompt, and every sequence ready. */
const hooksOf = (acquire: (s: Sequence) => SlotAcquisition) => ({ acquire, cost: (s: Sequence) => s.promptLength, ready: () => true });
const rows = (n: number) => ({ rows: n, tokens: 1000 });

// Arrival times are fractional milliseconds, so (t + d) - t can fall just short of d: each `now` keeps 1 ms from a boundary.
const ids = (admissions: Admission[]) => admissions.map((a) => `${a.type}:${a.seq.id}`);

describe('admissionPass', () => {
  it('admits in arrival order up to the free rows, base requests with slot 0', () => {
    const waiting = [seq('a', 'x'), seq('b', null), seq('c', 'x')];
    const { acquire } = acquirer({ x: 1 });
    const out = admissionPass(waiting, rows(2), hooksOf(acquire), waiting[0].arrivedAt, policy);
    expect(out).toEqual([{ type: 'admit', seq: waiting[0], slot: 1 }, { type: 'admit', seq: waiting[1], slot: 0 }]);
  });

  it('asks for no slot when no row is free, so no reference is taken for a request that cannot start', () => {
    const waiting = [seq('a', 'x'), seq('b', null)];
    const { acquire, asked } = acquirer({ x: 1 });
    expect(admissionPass(waiting, rows(0), hooksOf(acquire), waiting[0].arrivedAt, policy)).toEqual([]);
    expect(asked).toEqual([]);
  });

  it('passes a request waiting for its slot while it is young, admitting later ones', () => {
    const waiting = [seq('cold', 'y'), seq('hot', 'x'), seq('base', null)];
    const { acquire } = acquirer({ x: 1, y: 'wait' });
    const out = admissionPass(waiting, rows(2), hooksOf(acquire), waiting[0].arrivedAt + policy.agingMs - 1, policy);
    expect(ids(out)).toEqual(['admit:hot', 'admit:base']);
  });

  it('holds back later requests that need a slot once a blocked request has aged, but still admits base requests', () => {
    const waiting = [seq('hot0', 'x'), seq('cold', 'y'), seq('hot1', 'x'), seq('base', null)];
    const { acquire, asked } = acquirer({ x: 1, y: 'wait' });
    const out = admissionPass(waiting, rows(3), hooksOf(acquire), waiting[1].arrivedAt + policy.agingMs + 1, policy);
    expect(ids(out)).toEqual(['admit:hot0', 'admit:base']);
    expect(asked).toEqual(['hot0', 'cold']);
  });

  it('fails a request whose adapter load failed, and one still without a slot after the wait timeout', () => {
    const waiting = [seq('broken', 'z'), seq('late', 'y'), seq('next', 'x')];
    const { acquire } = acquirer({ x: 2, y: 'wait', z: 'error' });
    const out = admissionPass(waiting, rows(1), hooksOf(acquire), waiting[1].arrivedAt + policy.adapterWaitTimeoutMs + 1, policy);
    expect(out).toMatchObject([
      { type: 'fail', seq: waiting[0], code: 'adapter_invalid', message: "adapter 'z': adapter_model.safetensors: load failed" },
      { type: 'fail', seq: waiting[1], code: 'adapter_unavailable' },
      { type: 'admit', seq: waiting[2], slot: 2 },
    ]);
  });
});

describe('admissionPass with a token budget', () => {
  it('admits while the step has tokens left, the last admitted taking what remains', () => {
    const waiting = [seq('a', null), seq('b', 'x'), seq('c', null)];
    const { acquire } = acquirer({ x: 1 });
    // Each prompt costs 3 tokens: 4 tokens admit two, the second getting one token this step.
    const out = admissionPass(waiting, { rows: 8, tokens: 4 }, hooksOf(acquire), waiting[0].arrivedAt, policy);
    expect(ids(out)).toEqual(['admit:a', 'admit:b']);
    expect(admissionPass(waiting, { rows: 8, tokens: 0 }, hooksOf(acquire), waiting[0].arrivedAt, policy)).toEqual([]);
  });

  it('keeps a sequence that is not ready waiting without asking for its slot', () => {
    const waiting = [seq('sibling', 'x'), seq('b', null)];
    const { acquire, asked } = acquirer({ x: 1 });
    const out = admissionPass(waiting, rows(4), { ...hooksOf(acquire), ready: (s: Sequence) => s.id !== 'sibling' }, waiting[0].arrivedAt, policy);
    expect(ids(out)).toEqual(['admit:b']);
    expect(asked).toEqual([]);
  });
});

describe('prefillChunks', () => {
  /** A prefilling sequence with `prompt` tokens of which `computed` are in its row (sequences arrive in creation order). */
  function prefilling(id: string, prompt: number, computed: number): Sequence {
    const s = new Sequence({ id, promptIds: Array.from({ length: prompt }, (_, i) => i + 1), adapter: null, sampling: DEFAULT_SAMPLING }, null, 1);
    s.computed = computed;
    return s;
  }
  const lengths = (chunks: Map<Sequence, number>) => [...chunks].map(([s, n]) => `${s.id}:${n}`);

  it('gives the budget out in arrival order, each at most one chunk', () => {
    const [a, b, c] = [prefilling('a', 100, 0), prefilling('b', 10, 0), prefilling('c', 50, 20)];
    expect(lengths(prefillChunks([c, b, a], 200, 64))).toEqual(['a:64', 'b:10', 'c:30']);
    expect(lengths(prefillChunks([c, b, a], 70, 64))).toEqual(['a:64', 'b:6']);
  });

  it('never computes a prompt token in a one-token run when chunks may be three or more', () => {
    // 11 left with a budget of 10 would leave one token: 9 now, 2 next step.
    expect(lengths(prefillChunks([prefilling('a', 11, 0)], 10, 64))).toEqual(['a:9']);
    // A budget remainder of one token goes to nobody.
    expect(lengths(prefillChunks([prefilling('a', 8, 0), prefilling('b', 8, 0)], 9, 64))).toEqual(['a:8']);
    // With chunks of one token, every token is computed alone anyway.
    expect(lengths(prefillChunks([prefilling('a', 2, 0)], 10, 1))).toEqual(['a:1']);
  });
});
