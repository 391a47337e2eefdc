// Runs in the engine worker: sessions whose weights have one adapter folded in (merged mode).
import { AdapterError } from '../adapters/adapter-error.js';
import type { AdapterEntry } from '../adapters/adapter-manager.js';
import type { ModelRunner } from '../model/decoder.js';

/** A ready merged session: the base weights with one adapter's delta folded in, requantized. */
export interface MergedSession {
  /** Content digest of the adapter folded in: the session's key in the rows' order. */
  readonly adapter: string;
  /** Digest of its build, which keys its prefix-cache blocks apart from every other session's. */
  readonly buildDigest: string;
  readonly runner: ModelRunner;
  /** Running sequences on it: it is released only when none is left. */
  users: number;
}

/** What building a merged session gives; the engine worker supplies the builder (a worker thread builds the graph). */
export interface BuiltSession {
  buildDigest: string;
  runner: ModelRunner;
  buildMs: number;
  /** Bytes of the build's weights: about what the session holds in memory. */
  weightsBytes: number;
}

export type MergeState = 'building' | 'ready';

/** What the engine hears of merges: a session ready to serve, or a build that failed (the adapter serves unmerged). */
export interface MergeEvents {
  ready(entry: AdapterEntry, built: BuiltSession): void;
  failed(entry: AdapterEntry, message: string): void;
}

type Slot =
  | { state: 'building'; unmergeWhenBuilt: boolean }
  | { state: 'ready'; session: MergedSession; unmerging: boolean };

/**
 * The merged sessions, at most `max` of them, keyed by adapter content. A merge builds off the engine loop and then
 * serves new requests for that content; requests already running stay on the session they started on, so an unmerge
 * releases a session only once its last sequence is released.
 */
export class MergedSessions {
  readonly #slots = new Map<string, Slot>();
  readonly #max: number;
  readonly #build: (entry: AdapterEntry) => Promise<BuiltSession>;
  readonly #events: MergeEvents;
  merges = 0;
  unmerges = 0;
  lastBuildMs: number | null = null;

  constructor(max: number, build: (entry: AdapterEntry) => Promise<BuiltSession>, events: MergeEvents) {
    this.#max = max;
    this.#build = build;
    this.#events = events;
  }

  get max(): number {
    return this.#max;
  }

  /** Ready sessions (those still serving running sequences after an unmerge included). */
  get ready(): number {
    return [...this.#slots.values()].filter((s) => s.state === 'ready').length;
  }

  state(adapter: string): MergeState | null {
    return this.#slots.get(adapter)?.state ?? null;
  }

  /** The session new requests for this content run on; null while it builds, or when it is not merged. */
  sessionFor(adapter: string): MergedSession | null {
    const slot = this.#slots.get(adapter);
    return slot?.state === 'ready' && !slot.unmerging ? slot.session : null;
  }

  /** Starts merging the adapter (nothing to do when merged or building); refuses beyond `max` sessions. */
  merge(entry: AdapterEntry): MergeState {
    const slot = this.#slots.get(entry.digest);
    if (slot?.state === 'building') {
      slot.unmergeWhenBuilt = false;
      return 'building';
    }
    if (slot?.state === 'ready') {
      slot.unmerging = false;
      return 'ready';
    }
    if (this.#slots.size >= this.#max) throw new AdapterError('adapter_unsupported', '', `at most ${this.#max} adapters can be merged at once (--max-merged); unmerge one first`);
    this.#slots.set(entry.digest, { state: 'building', unmergeWhenBuilt: false });
    this.#build(entry).then(
      (built) => {
        const building = this.#slots.get(entry.digest);
        const session: MergedSession = { adapter: entry.digest, buildDigest: built.buildDigest, runner: built.runner, users: 0 };
        this.#slots.set(entry.digest, { state: 'ready', session, unmerging: building?.state === 'building' && building.unmergeWhenBuilt });
        this.merges++;
        this.lastBuildMs = built.buildMs;
        this.#releaseIfIdle(entry.digest);
        this.#events.ready(entry, built);
      },
      (err: unknown) => {
        this.#slots.delete(entry.digest);
        this.#events.failed(entry, err instanceof Error ? err.message : String(err));
      },
    );
    return 'building';
  }

  /** New requests for this content run unmerged again; the session goes once its running sequences are released. */
  unmerge(adapter: string): void {
    const slot = this.#slots.get(adapter);
    if (slot?.state === 'building') slot.unmergeWhenBuilt = true;
    if (slot?.state !== 'ready' || slot.unmerging) return;
    slot.unmerging = true;
    this.unmerges++;
    this.#releaseIfIdle(adapter);
  }

  /** A sequence on the session was released (the one path between steps that frees what sequences hold). */
  release(session: MergedSession): void {
    session.users--;
    this.#releaseIfIdle(session.adapter);
  }

  /** Releases every session (the engine is stopping). */
  async close(): Promise<void> {
    const ready = [...this.#slots.values()].flatMap((s) => (s.state === 'ready' ? [s.session] : []));
    this.#slots.clear();
    await Promise.all(ready.map((s) => s.runner.release()));
  }

  #releaseIfIdle(adapter: string): void {
    const slot = this.#slots.get(adapter);
    if (slot?.state !== 'ready' || !slot.unmerging || slot.session.users > 0) return;
    this.#slots.delete(adapter);
    void slot.session.runner.release();
  }
}
