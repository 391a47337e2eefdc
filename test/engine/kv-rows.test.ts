import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { KvRows } from '../../src/engine/kv-rows.js';
import { DEFAULT_SAMPLING } from '../../src/engine/sampling-params.js';
import { Sequence } from '../../src/engine/sequence.js';

/** KvRows over a model of the rows' contents: each row holds the id of the sequence whose KV it has. */
function modelRows(sessions = 1) {
  const contents: (string | null)[] = new Array<string | null>(64).fill(null);
  const session = new Map<Sequence, string>();
  const rows = new KvRows({
    move: (seq, to) => {
      expect(contents[seq.row]).toBe(seq.id);
      contents[to] = seq.id;
    },
    swap: (a, b) => {
      expect([contents[a.row], contents[b.row]]).toEqual([a.id, b.id]);
      [contents[a.row], contents[b.row]] = [b.id, a.id];
    },
  }, (seq) => session.get(seq) ?? '');
  let next = 0;
  const sequence = (decoding: boolean) => {
    const s = new Sequence({ id: `s${next++}`, promptIds: [1, 2, 3, 4], adapter: null, sampling: DEFAULT_SAMPLING }, null, 1);
    if (decoding) s.computed = 3;
    // Session '' (the base) and, with more sessions, merged ones.
    session.set(s, next % sessions === 0 ? '' : `merged-${next % sessions}`);
    return s;
  };
  const add = (seq: Sequence) => {
    rows.add(seq);
    contents[seq.row] = seq.id;
  };
  const check = () => {
    rows.all.forEach((s, i) => {
      expect(s.row).toBe(i);
      expect(contents[i]).toBe(s.id);
    });
    const d = rows.decodingCount;
    expect(rows.all.slice(0, d).every((s) => !s.prefilling)).toBe(true);
    expect(rows.all.slice(d).every((s) => s.prefilling)).toBe(true);
    // Each session's decoding rows are one contiguous run.
    const runs = rows.decodingBySession().map((run) => session.get(run[0]));
    expect(new Set(runs).size).toBe(runs.length);
    expect(rows.decodingBySession().flat()).toEqual(rows.decoding());
  };
  return { rows, sequence, add, check };
}

type Op = { kind: 'add'; decoding: boolean } | { kind: 'remove'; at: number } | { kind: 'finishPrefill'; at: number };

describe('KvRows', () => {
  it.each([1, 3])('keeps rows dense, decoding rows first by session, and every row holding its own sequence, through any adds, removals and finished prefills (%i sessions)', (sessions) => {
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ kind: fc.constant('add' as const), decoding: fc.boolean() }),
      fc.record({ kind: fc.constant('remove' as const), at: fc.nat(40) }),
      fc.record({ kind: fc.constant('finishPrefill' as const), at: fc.nat(40) }),
    );
    fc.assert(fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const { rows, sequence, add, check } = modelRows(sessions);
      for (const o of ops) {
        if (o.kind === 'add' && rows.length < 32) add(sequence(o.decoding));
        if (o.kind === 'remove' && rows.length > 0) rows.remove(rows.all[o.at % rows.length]);
        if (o.kind === 'finishPrefill' && rows.length > 0) {
          // A run computed some prefilling sequences' prompts: the rows are arranged after it.
          const prefilling = rows.prefilling();
          if (prefilling.length > 0) prefilling[o.at % prefilling.length].computed = 4;
          rows.arrange();
        }
        check();
      }
    }));
  });

  it('places a decoding sequence before the prefilling ones, moving the first of them to the end', () => {
    const { rows, sequence, add, check } = modelRows();
    const [p1, p2, d] = [sequence(false), sequence(false), sequence(true)];
    add(p1);
    add(p2);
    add(d);
    check();
    expect(rows.all.map((s) => s.id)).toEqual([d.id, p2.id, p1.id]);
  });
});
