// Runs in the engine worker.
import type { Sequence } from './sequence.js';

/**
 * The running sequences in their KV rows, kept dense: rows 0..d-1 hold decoding sequences and row d at most one
 * sequence in prefill, so a decode batch is always one contiguous range of rows that the graph reads in place. When a
 * sequence leaves, the last decoding row moves into its place (and the prefill row down by one); `move` copies a
 * sequence's row state (its computed KV positions, its adapter copy) to another row.
 */
export class KvRows {
  readonly #rows: Sequence[] = [];
  readonly #move: (seq: Sequence, to: number) => void;

  constructor(move: (seq: Sequence, to: number) => void) {
    this.#move = move;
  }

  /** Running sequences by row: `all[i].row === i`. */
  get all(): readonly Sequence[] {
    return this.#rows;
  }

  get length(): number {
    return this.#rows.length;
  }

  /** The sequence in the prefill row (always the last), or null. */
  get prefilling(): Sequence | null {
    const last = this.#rows.at(-1);
    return last?.prefilling ? last : null;
  }

  /** The decoding sequences: every row but the prefill row. */
  decoding(): Sequence[] {
    return this.prefilling ? this.#rows.slice(0, -1) : [...this.#rows];
  }

  /** Puts the sequence in the next row. */
  add(seq: Sequence): void {
    seq.row = this.#rows.length;
    this.#rows.push(seq);
  }

  /** Takes the sequence out of its row, keeping the rows dense; call only between runs. */
  remove(seq: Sequence): void {
    const rows = this.#rows;
    const last = rows.at(-1);
    const prefilling = last?.prefilling && last !== seq ? rows.pop() : undefined;
    const moved = rows.pop() as Sequence;
    if (moved !== seq) {
      this.#moveTo(moved, seq.row);
      rows[seq.row] = moved;
    }
    if (prefilling) {
      this.#moveTo(prefilling, rows.length);
      rows.push(prefilling);
    }
    seq.row = -1;
  }

  #moveTo(seq: Sequence, to: number): void {
    this.#move(seq, to);
    seq.row = to;
  }
}
