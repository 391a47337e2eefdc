import type { LoraBatch } from '../model/decoder.js';
import type { LoraWeightType } from '../model/graph-builder.js';
import type { ModelConfig, Projection } from '../model/model-config.js';
import { PROJECTIONS, projectionShape } from '../model/model-config.js';
import type { LoraTensor } from './lora-convert.js';
import type { LoraWeights } from './peft-loader.js';
import { loraModuleKey } from './peft-loader.js';

interface SlotEntry {
  digest: string;
  /** Distinguishes successive adapters written into the same slot. */
  generation: number;
  /** Running sequences using the slot; a referenced slot is never overwritten. */
  refs: number;
  pinned: boolean;
  lastUsed: number;
  /** Indexed like PROJECTIONS. */
  targets: boolean[];
}

/**
 * The device tier: `maxLoras` adapter slots in the stacked tensors the graph reads (`[1 + maxLoras, in, rank]` and
 * `[1 + maxLoras, rank, out]` per layer and projection, of element type `type`). Slot 0 stays all zeros for rows
 * without an adapter. An adapter is written into the lowest free slot, ranks below `rank` zero-padded; its weights
 * come converted to `type`, scale folded into B (peft-loader.ts), so a module of full rank is one copy per tensor.
 * When no slot is free the least recently used unreferenced, unpinned slot is overwritten.
 *
 * For the stock runtime it also holds each KV row's own copy of its adapter (`[rows, in, rank]`, `[rows, rank, out]`,
 * fp32), which the stock graph reads: copied from the slot when a row's adapter changes, moved with the row when rows
 * are compacted. The native runtime reads the slot stacks directly (`rows` 0: no copies).
 */
export class SlotManager {
  readonly maxLoras: number;
  readonly rank: number;
  readonly type: LoraWeightType;
  readonly #config: ModelConfig;
  readonly #a: LoraTensor[];
  readonly #b: LoraTensor[];
  readonly #slots: (SlotEntry | null)[];
  readonly #rowA: Float32Array[];
  readonly #rowB: Float32Array[];
  /** Per row, the generation of the slot content it holds (0: zeros). */
  readonly #rowContent: number[];
  /** Each slot's rank (the largest of its modules'; 0 while empty), as the native operator reads it. */
  readonly #slotRanks: Int32Array;
  #clock = 0;
  #generations = 0;
  evictions = 0;
  loads = 0;

  /** `rows`: KV rows that get their own copy of their adapter (the engine's batch size; 0 for none, as with float16). */
  constructor(config: ModelConfig, maxLoras: number, rank: number, rows: number, type: LoraWeightType = 'float32') {
    if (rows > 0 && type !== 'float32') throw new Error('per-row adapter copies are for the stock graph, which reads float32');
    this.#config = config;
    this.maxLoras = maxLoras;
    this.rank = rank;
    this.type = type;
    const stack = (n: number): LoraTensor => (type === 'float32' ? new Float32Array(n) : new Uint16Array(n));
    this.#slots = new Array<SlotEntry | null>(maxLoras + 1).fill(null);
    this.#rowContent = new Array<number>(rows).fill(0);
    this.#slotRanks = new Int32Array(maxLoras + 1);
    this.#a = [];
    this.#b = [];
    this.#rowA = [];
    this.#rowB = [];
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const p of PROJECTIONS) {
        const [k, n] = projectionShape(config, p);
        this.#a.push(stack((maxLoras + 1) * k * rank));
        this.#b.push(stack((maxLoras + 1) * rank * n));
        this.#rowA.push(new Float32Array(rows * k * rank));
        this.#rowB.push(new Float32Array(rows * rank * n));
      }
    }
  }

  /** Bytes held by the slot stacks and the rows' copies. */
  get bytes(): number {
    return [this.#a, this.#b, this.#rowA, this.#rowB].reduce((sum, stacks) => sum + stacks.reduce((s, a) => s + a.byteLength, 0), 0);
  }

  /** Gives `row` a copy of the adapter in `slot` (zeros for slot 0); nothing to do when it already holds it. */
  bindRow(row: number, slot: number): void {
    const generation = this.#slots[slot]?.generation ?? 0;
    if (this.#rowContent.length === 0 || this.#rowContent[row] === generation) return;
    this.#copyRegions(this.#a, this.#rowA, slot, row);
    this.#copyRegions(this.#b, this.#rowB, slot, row);
    this.#rowContent[row] = generation;
  }

  /** Moves row `from`'s copy into row `to` (row compaction). */
  moveRow(from: number, to: number): void {
    if (this.#rowContent.length === 0 || this.#rowContent[to] === this.#rowContent[from]) return;
    this.#copyRegions(this.#rowA, this.#rowA, from, to);
    this.#copyRegions(this.#rowB, this.#rowB, from, to);
    this.#rowContent[to] = this.#rowContent[from];
  }

  /**
   * Copies region `from` of each source buffer into region `to` of the matching target buffer (regions of equal size).
   * Row copies exist only beside float32 stacks.
   */
  #copyRegions(sources: LoraTensor[], targets: Float32Array[], from: number, to: number): void {
    sources.forEach((source, i) => {
      const size = targets[i].length / this.#rowContent.length;
      if (source === targets[i]) source.copyWithin(to * size, from * size, (from + 1) * size);
      else targets[i].set((source as Float32Array).subarray(from * size, (from + 1) * size), to * size);
    });
  }

  slotOf(digest: string): number | null {
    const i = this.#slots.findIndex((s) => s?.digest === digest);
    return i > 0 ? i : null;
  }

  /** Running sequences referencing each slot (index 0: slot 0, never referenced), for the engine's invariant check. */
  references(): number[] {
    return this.#slots.map((s) => s?.refs ?? 0);
  }

  residentDigests(): string[] {
    return this.#slots.flatMap((s) => (s ? [s.digest] : []));
  }

  /**
   * A reference to the adapter's slot, writing it into one first when it is not resident (`weights` then required).
   * Null when every slot is referenced or pinned: the caller waits for a slot to free up.
   */
  acquire(digest: string, weights: LoraWeights | undefined): number | null {
    let slot = this.slotOf(digest);
    if (slot === null) {
      if (!weights) return null;
      slot = this.#freeSlot();
      if (slot === null) return null;
      this.#write(slot, digest, weights);
    }
    const entry = this.#slots[slot] as SlotEntry;
    entry.refs++;
    entry.lastUsed = ++this.#clock;
    return slot;
  }

  release(slot: number): void {
    const entry = this.#slots[slot];
    if (!entry || entry.refs === 0) throw new Error(`release of LoRA slot ${slot}, which holds no reference`);
    entry.refs--;
  }

  /**
   * Pins (or unpins) the adapter's slot if it is resident. One slot always stays unpinned, so that adapters that are
   * not pinned can still be served; a pin beyond that keeps the adapter in host memory only.
   */
  setPinned(digest: string, pinned: boolean): void {
    const slot = this.slotOf(digest);
    if (slot === null) return;
    const entry = this.#slots[slot] as SlotEntry;
    const pinnedSlots = this.#slots.filter((s) => s?.pinned).length;
    entry.pinned = pinned && (entry.pinned || pinnedSlots < this.maxLoras - 1);
  }

  /** Drops an unreferenced adapter from its slot (unregistration). */
  drop(digest: string): void {
    const slot = this.slotOf(digest);
    if (slot === null) return;
    if ((this.#slots[slot] as SlotEntry).refs > 0) throw new Error(`LoRA slot ${slot} is still in use`);
    this.#slots[slot] = null;
    this.#slotRanks[slot] = 0;
  }

  /** The LoRA inputs for a run over rows `firstRow..` whose adapters are in `rowSlots` (0 = no adapter). */
  batch(firstRow: number, rowSlots: readonly number[]): LoraBatch {
    const activeProjections = PROJECTIONS.map((_, i) => rowSlots.some((s) => s > 0 && (this.#slots[s] as SlotEntry).targets[i]));
    const stack = (stacks: LoraTensor[], layer: number, p: Projection) => stacks[layer * PROJECTIONS.length + PROJECTIONS.indexOf(p)];
    return {
      activeProjections,
      rowSlots: Int32Array.from(rowSlots),
      slotRanks: this.#slotRanks,
      a: (layer, p) => stack(this.#a, layer, p),
      b: (layer, p) => stack(this.#b, layer, p),
      rowA: (layer, p) => this.#rows(this.#rowA, layer, p, firstRow, rowSlots.length),
      rowB: (layer, p) => this.#rows(this.#rowB, layer, p, firstRow, rowSlots.length),
    };
  }

  #rows(buffers: Float32Array[], layer: number, p: Projection, firstRow: number, count: number): Float32Array {
    const buffer = buffers[layer * PROJECTIONS.length + PROJECTIONS.indexOf(p)];
    const size = buffer.length / this.#rowContent.length;
    return buffer.subarray(firstRow * size, (firstRow + count) * size);
  }

  #freeSlot(): number | null {
    let best: number | null = null;
    for (let i = 1; i < this.#slots.length; i++) {
      const s = this.#slots[i];
      if (!s) return i;
      if (s.refs === 0 && !s.pinned && (best === null || s.lastUsed < (this.#slots[best] as SlotEntry).lastUsed)) best = i;
    }
    if (best !== null) this.evictions++;
    return best;
  }

  #write(slot: number, digest: string, weights: LoraWeights): void {
    if (weights.type !== this.type) throw new Error(`adapter weights of type ${weights.type} cannot go into ${this.type} LoRA slots`);
    const R = this.rank;
    const targets = PROJECTIONS.map(() => false);
    let slotRank = 0;
    for (let layer = 0; layer < this.#config.numLayers; layer++) {
      PROJECTIONS.forEach((p, pi) => {
        const [k, n] = projectionShape(this.#config, p);
        const a = this.#a[layer * PROJECTIONS.length + pi].subarray(slot * k * R, (slot + 1) * k * R);
        const b = this.#b[layer * PROJECTIONS.length + pi].subarray(slot * R * n, (slot + 1) * R * n);
        const m = weights.modules.get(loraModuleKey(layer, p));
        if (!m) {
          a.fill(0);
          b.fill(0);
          return;
        }
        if (m.rank > R) throw new Error(`adapter rank ${m.rank} exceeds the slot rank ${R}`);
        // Weights whose buffer went back to the loader (AdapterLoader.recycle) read as empty.
        if (m.a.length !== k * m.rank || m.b.length !== m.rank * n) throw new Error(`LoRA weights of ${layer}.${p} are not [${k}, ${m.rank}] and [${m.rank}, ${n}]`);
        targets[pi] = true;
        slotRank = Math.max(slotRank, m.rank);
        if (m.rank === R) a.set(m.a);
        else padRows(m.a, m.rank, a, R);
        // Rows of B past the module's rank are zeroed: another adapter may have filled them.
        b.set(m.b);
        b.fill(0, m.rank * n);
      });
    }
    this.#slots[slot] = { digest, generation: ++this.#generations, refs: 0, pinned: false, lastUsed: ++this.#clock, targets };
    this.#slotRanks[slot] = slotRank;
    this.loads++;
  }
}

/**
 * `[k, r]` rows into `[k, R]` rows, zero-padded. An element loop: one `set` of a subarray per row took 4× as long at
 * the 0.5B shape (245,760 rows per adapter).
 */
function padRows(from: LoraTensor, r: number, to: LoraTensor, R: number): void {
  for (let s = 0, d = 0; s < from.length; d += R) {
    for (let j = 0; j < r; j++) to[d + j] = from[s++];
    for (let j = r; j < R; j++) to[d + j] = 0;
  }
}
