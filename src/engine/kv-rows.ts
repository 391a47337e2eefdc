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

/**
 * The running sequences in their KV rows, kept dense and ordered: decoding sequences in rows 0..d-1, then the
 * sequences in prefill, so a decode batch is always one contiguous range of rows that the graph reads in place. Each
 * prefilling sequence runs on its own row (the attention operator takes one multi-token row per run when it has past
 * context), in any order: the scheduler orders their chunks by arrival, not by row.
 */
export class KvRows {
  readonly #rows: Sequence[] = [];
  readonly #moves: RowMoves;

  constructor(moves: RowMoves) {
    this.#moves = moves;
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

  prefilling(): Sequence[] {
    return this.#rows.slice(this.decodingCount);
  }

  /** Gives the sequence a row: the next one, or for a decoding sequence the first prefill row (whose sequence moves to the next). */
  add(seq: Sequence): void {
    const d = this.decodingCount;
    const at = !seq.prefilling && d < this.#rows.length ? d : this.#rows.length;
    if (at < this.#rows.length) {
      const displaced = this.#rows[at];
      this.#moveTo(displaced, this.#rows.length);
      this.#rows.push(displaced);
    }
    seq.row = at;
    this.#rows[at] = seq;
  }

  /**
   * Takes the sequence out of its row, keeping the rows dense and ordered: the last row of its part takes its place,
   * and a decoding gap is filled from the prefill part's last row. Call only between runs.
   */
  remove(seq: Sequence): void {
    const rows = this.#rows;
    const d = this.decodingCount;
    let gap = seq.row;
    if (gap < d && gap !== d - 1) {
      this.#put(rows[d - 1], gap);
      gap = d - 1;
    }
    const last = rows.length - 1;
    if (gap !== last) this.#put(rows[last], gap);
    rows.pop();
    seq.row = -1;
  }

  /** After runs: sequences whose prefill finished move in front of those still in prefill. */
  arrange(): void {
    const rows = this.#rows;
    let firstPrefill = rows.findIndex((s) => s.prefilling);
    if (firstPrefill === -1) return;
    for (let i = firstPrefill + 1; i < rows.length; i++) {
      if (rows[i].prefilling) continue;
      const [a, b] = [rows[firstPrefill], rows[i]];
      this.#moves.swap(a, b);
      [a.row, b.row] = [b.row, a.row];
      rows[a.row] = a;
      rows[b.row] = b;
      firstPrefill++;
    }
  }

  #put(seq: Sequence, to: number): void {
    this.#moveTo(seq, to);
    this.#rows[to] = seq;
  }

  #moveTo(seq: Sequence, to: number): void {
    this.#moves.move(seq, to);
    seq.row = to;
  }
}
