// Runs in the engine worker.
import type { SlotManager } from '../adapters/slot-manager.js';
import type { KvCache } from '../model/kv-cache.js';
import type { Sequence } from './sequence.js';

/** How rows change places: `move` copies a sequence's row state (computed KV, adapter copy) to a free row, `swap` exchanges two. */
export interface RowMoves {
  move(seq: Sequence, to: number): void;
  swap(a: Sequence, b: Sequence): void;
}

/** Row moves over the engine's KV cache and, on the stock runtime, the rows' adapter copies. */
export function rowMoves(kv: KvCache, slots: SlotManager | null): RowMoves {
  return {
    move: (seq, to) => {
      kv.copyRow(seq.row, to, seq.computed);
      slots?.moveRow(seq.row, to);
    },
    swap: (a, b) => {
      kv.swapRows(a.row, b.row, a.computed, b.computed);
      // Each row gets the other's adapter copy from its slot.
      slots?.bindRow(a.row, b.slot);
      slots?.bindRow(b.row, a.slot);
    },
  };
}

/** Sorts after every session key: prefilling rows come last. */
const PREFILL_KEY = '\uffff';

/**
 * The running sequences in their KV rows, kept dense and ordered: decoding sequences first, grouped by the session
 * that runs them (`session(seq)`: '' for the base session, which comes first), then the sequences in prefill. So each
 * session's decode batch is one contiguous range of rows that the graph reads in place. Each prefilling sequence runs
 * on its own row (the attention operator takes one multi-token row per run when it has past context), in any order:
 * the scheduler orders their chunks by arrival, not by row.
 */
export class KvRows {
  readonly #rows: Sequence[] = [];
  readonly #moves: RowMoves;
  readonly #session: (seq: Sequence) => string;

  constructor(moves: RowMoves, session: (seq: Sequence) => string = () => '') {
    this.#moves = moves;
    this.#session = session;
  }

  /** Running sequences by row: `all[i].row === i`. */
  get all(): readonly Sequence[] {
    return this.#rows;
  }

  get length(): number {
    return this.#rows.length;
  }

  /** Rows holding decoding sequences: the first `decodingCount` rows. */
  get decodingCount(): number {
    const first = this.#rows.findIndex((s) => s.prefilling);
    return first === -1 ? this.#rows.length : first;
  }

  decoding(): Sequence[] {
    return this.#rows.slice(0, this.decodingCount);
  }

  /** The decoding rows as one contiguous run per session, in row order. */
  decodingBySession(): Sequence[][] {
    const groups: Sequence[][] = [];
    for (const seq of this.decoding()) {
      const last = groups.at(-1);
      if (last && this.#session(last[0]) === this.#session(seq)) last.push(seq);
      else groups.push([seq]);
    }
    return groups;
  }

  prefilling(): Sequence[] {
    return this.#rows.slice(this.decodingCount);
  }

  /** Where a sequence belongs in the order: its session's key while decoding, after all of them while prefilling. */
  key(seq: Sequence): string {
    return seq.prefilling ? PREFILL_KEY : this.#session(seq);
  }

  /**
   * Gives the sequence a row at the end of its part; the first row of each later part moves to that part's end, so
   * one move per later part.
   */
  add(seq: Sequence): void {
    const rows = this.#rows;
    const key = this.key(seq);
    let at = rows.findIndex((s) => this.key(s) > key);
    if (at === -1) at = rows.length;
    let hole = rows.length;
    // From the last part back: its first row moves into the hole after it, and the hole moves to where that row was.
    for (const first of this.#partStarts(at).reverse()) {
      this.#put(rows[first], hole);
      hole = first;
    }
    seq.row = hole;
    rows[hole] = seq;
  }

  /**
   * Takes the sequence out of its row, keeping the rows dense and ordered: the last row of its part takes its place,
   * then the last row of each later part fills the gap the previous move left. Call only between runs.
   */
  remove(seq: Sequence): void {
    const rows = this.#rows;
    let gap = seq.row;
    const end = this.#partEnd(gap);
    if (end !== gap) {
      this.#put(rows[end], gap);
      gap = end;
    }
    while (gap < rows.length - 1) {
      const last = this.#partEnd(gap + 1);
      this.#put(rows[last], gap);
      gap = last;
    }
    rows.pop();
    seq.row = -1;
  }

  /** After runs: sequences whose prefill finished join their session's rows, by exchanging rows. */
  arrange(): void {
    const rows = this.#rows;
    const target = rows.map((seq, i) => ({ seq, i, key: this.key(seq) }))
      .sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : x.i - y.i))
      .map((t) => t.seq);
    target.forEach((want, i) => {
      const here = rows[i];
      if (here === want) return;
      this.#moves.swap(here, want);
      [here.row, want.row] = [want.row, i];
      rows[here.row] = here;
      rows[i] = want;
    });
  }

  /** The last row of the part (same key) that row `i` is in. */
  #partEnd(i: number): number {
    const key = this.key(this.#rows[i]);
    let end = i;
    while (end + 1 < this.#rows.length && this.key(this.#rows[end + 1]) === key) end++;
    return end;
  }

  /** The first rows of the parts that start at or after row `from`. */
  #partStarts(from: number): number[] {
    const starts: number[] = [];
    for (let i = from; i < this.#rows.length; i++) if (i === from || this.key(this.#rows[i]) !== this.key(this.#rows[i - 1])) starts.push(i);
    return starts;
  }

  #put(seq: Sequence, to: number): void {
    this.#moves.move(seq, to);
    seq.row = to;
    this.#rows[to] = seq;
  }
}
