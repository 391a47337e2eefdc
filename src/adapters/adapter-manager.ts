import { realpathSync } from 'node:fs';
import type { LoraWeightType } from '../model/graph-builder.js';
import type { ModelConfig } from '../model/model-config.js';
import { AdapterError, excerpt } from './adapter-error.js';
import { AdapterLoader } from './adapter-loader.js';
import { HostAdapterCache } from './host-cache.js';
import type { LoraWeights } from './peft-loader.js';
import { SlotManager } from './slot-manager.js';

export interface AdapterEntry {
  name: string;
  path: string;
  /** Content digest: the adapter's identity for caching. */
  digest: string;
  rank: number;
  pinned: boolean;
}

export interface AdapterTierOptions {
  maxLoras: number;
  maxRank: number;
  hostBytes: number;
  /** KV rows: each keeps its own copy of its adapter for the gather kernel. */
  rows: number;
  /** The slot stacks' element type (LORA_WEIGHT_TYPE of the runtime); loads convert to it. */
  weightType: LoraWeightType;
  /** Adapter roots (`--adapter-dir`): the files of an adapter under a root must resolve inside the roots. */
  roots?: readonly string[];
  /** Longest one load from disk may take, in milliseconds (default: DEFAULT_LOAD_TIMEOUT_MS). */
  loadTimeoutMs?: number;
}

/** What admission gets for a sequence's adapter: a slot, a wait (loading or no free slot), or a refusal. */
export type SlotAcquisition = { slot: number } | { wait: true } | { error: AdapterError };

/**
 * The adapter tiers of the engine worker: names bound to content (registry), host memory (LRU by bytes), and the
 * graph's slots. Requests reference an adapter by digest from admission to finish, so unregistering or re-registering
 * a name never changes what a running request computes, and unregistration waits until those requests are done.
 */
export class AdapterManager {
  readonly slots: SlotManager;
  readonly #host: HostAdapterCache;
  readonly #loader: AdapterLoader;
  readonly #byName = new Map<string, AdapterEntry>();
  /** Requests (waiting or running) per digest. */
  readonly #inUse = new Map<string, number>();
  /** Reloads from disk in flight, by reloadKey. */
  readonly #loading = new Set<string>();
  /** Loaded weights that did not fit the host tier: kept until they are written into a slot. */
  readonly #staged = new Map<string, LoraWeights>();
  /** The last failed reload per reloadKey, and when it failed (`performance.now()`). */
  readonly #failed = new Map<string, { digest: string; error: AdapterError; at: number }>();
  readonly #idleWaiters = new Map<string, (() => void)[]>();
  readonly #onChange: () => void;
  hostLoads = 0;
  hostEvictions = 0;
  #loadTimes: { tier: 'host' | 'slot'; ms: number }[] = [];

  /** `onChange` is called when a background load finishes, so an idle engine loop wakes up to admit its requests. */
  constructor(config: ModelConfig, options: AdapterTierOptions, onChange: () => void) {
    this.slots = new SlotManager(config, options.maxLoras, options.maxRank, options.rows, options.weightType);
    this.#host = new HostAdapterCache(options.hostBytes, (_digest, weights) => {
      this.hostEvictions++;
      // Nothing else holds evicted weights: their memory can take the next load.
      this.#loader.recycle(weights);
    });
    this.#loader = new AdapterLoader(config, {
      maxRank: options.maxRank,
      roots: (options.roots ?? []).map((root) => realpathSync(root)),
      timeoutMs: options.loadTimeoutMs,
      weightType: options.weightType,
    });
    this.#onChange = onChange;
  }

  /** Load durations since the last call, per tier, for metrics. */
  takeLoadTimes(): { tier: 'host' | 'slot'; ms: number }[] {
    return this.#loadTimes.splice(0);
  }

  /** Loads and validates the adapter, then binds the name to its content. */
  async register(name: string, path: string): Promise<AdapterEntry> {
    const start = performance.now();
    const weights = await this.#loader.load(path);
    const { digest } = weights;
    this.#loadTimes.push({ tier: 'host', ms: performance.now() - start });
    this.hostLoads++;
    this.#store(digest, weights);
    const previous = this.#byName.get(name);
    const entry: AdapterEntry = { name, path, digest, rank: weights.rank, pinned: previous?.pinned ?? false };
    this.#byName.set(name, entry);
    if (entry.pinned) this.#pin(digest, true);
    if (previous && previous.digest !== digest) this.#forgetWhenIdle(previous.digest);
    return entry;
  }

  /** Removes the name at once (new requests no longer find it), then waits for the requests already using it. */
  async unregister(name: string): Promise<void> {
    const entry = this.#byName.get(name);
    if (!entry) throw new AdapterError('adapter_not_found', '', `no adapter named '${name}' is registered`);
    this.#byName.delete(name);
    if (entry.pinned) this.#pin(entry.digest, false);
    await this.#forgetWhenIdle(entry.digest);
  }

  setPinned(name: string, pinned: boolean): AdapterEntry {
    const entry = this.#byName.get(name);
    if (!entry) throw new AdapterError('adapter_not_found', '', `no adapter named '${name}' is registered`);
    entry.pinned = pinned;
    this.#pin(entry.digest, pinned);
    return entry;
  }

  get(name: string): AdapterEntry | undefined {
    return this.#byName.get(name);
  }

  entries(): AdapterEntry[] {
    return [...this.#byName.values()];
  }

  tier(digest: string): 'disk' | 'host' | 'slot' {
    if (this.slots.slotOf(digest) !== null) return 'slot';
    return this.#host.has(digest) || this.#staged.has(digest) ? 'host' : 'disk';
  }

  inUse(digest: string): number {
    return this.#inUse.get(digest) ?? 0;
  }

  /** Requests bound per digest (see `bind`), for the engine's invariant check. */
  bindings(): ReadonlyMap<string, number> {
    return this.#inUse;
  }

  /** A request bound to the adapter's current content; pair with `unbind` when the request ends. */
  bind(name: string): AdapterEntry | undefined {
    const entry = this.#byName.get(name);
    if (entry) this.#inUse.set(entry.digest, this.inUse(entry.digest) + 1);
    return entry;
  }

  unbind(digest: string): void {
    const n = this.inUse(digest) - 1;
    if (n > 0) {
      this.#inUse.set(digest, n);
      return;
    }
    this.#inUse.delete(digest);
    for (const resolve of this.#idleWaiters.get(digest) ?? []) resolve();
    this.#idleWaiters.delete(digest);
  }

  /**
   * A slot reference for a bound adapter, starting a load from disk when it is in no faster tier. `arrivedAt`
   * (`performance.now()` when the request arrived) says what a failed load means for the request: one that failed
   * after the request arrived is the load it was waiting for, so it gets that error; a request that arrives after the
   * failure starts a fresh load (the files may have been fixed since), so a failure is never remembered for good.
   */
  acquireSlot(entry: AdapterEntry, arrivedAt: number): SlotAcquisition {
    const resident = this.slots.acquire(entry.digest, undefined);
    if (resident !== null) return { slot: resident };
    const weights = this.#host.get(entry.digest) ?? this.#staged.get(entry.digest);
    if (!weights) {
      const failed = this.#failed.get(reloadKey(entry));
      if (failed && failed.at >= arrivedAt) return { error: failed.error };
      this.#reload(entry);
      return { wait: true };
    }
    const start = performance.now();
    const slot = this.slots.acquire(entry.digest, weights);
    if (slot === null) return { wait: true };
    this.#loadTimes.push({ tier: 'slot', ms: performance.now() - start });
    this.#staged.delete(entry.digest);
    if (entry.pinned) this.slots.setPinned(entry.digest, true);
    return { slot };
  }

  async close(): Promise<void> {
    await this.#loader.close();
  }

  #store(digest: string, weights: LoraWeights): void {
    if (!this.#host.set(digest, weights)) this.#staged.set(digest, weights);
  }

  #pin(digest: string, pinned: boolean): void {
    if (pinned) this.#host.pin(digest);
    else this.#host.unpin(digest);
    this.slots.setPinned(digest, pinned);
  }

  /** Drops the digest's weights from every tier once no request uses it (unless another name is bound to it). */
  #forgetWhenIdle(digest: string): Promise<void> {
    const forget = () => {
      if ([...this.#byName.values()].some((e) => e.digest === digest)) return;
      this.#host.delete(digest);
      this.#staged.delete(digest);
      for (const [key, failed] of this.#failed) if (failed.digest === digest) this.#failed.delete(key);
      this.slots.drop(digest);
    };
    if (this.inUse(digest) === 0) {
      forget();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const waiters = this.#idleWaiters.get(digest) ?? [];
      waiters.push(() => {
        forget();
        resolve();
      });
      this.#idleWaiters.set(digest, waiters);
    });
  }

  /**
   * Loads the entry's files again into the host tier. The content must still be the one registered: a load whose
   * digest differs fails instead, so a name never serves other weights than those it was bound to.
   */
  #reload(entry: AdapterEntry): void {
    const key = reloadKey(entry);
    if (this.#loading.has(key)) return;
    this.#loading.add(key);
    const start = performance.now();
    this.#loader.load(entry.path).then((weights) => {
      this.#loadTimes.push({ tier: 'host', ms: performance.now() - start });
      this.hostLoads++;
      const { digest } = weights;
      if (digest !== entry.digest) throw new AdapterError('adapter_invalid', '', 'its files changed since it was registered; register it again');
      this.#failed.delete(key);
      this.#store(digest, weights);
    }).catch((err: unknown) => {
      const error = err instanceof AdapterError ? err : new AdapterError('adapter_invalid', '', excerpt(String(err)));
      this.#failed.set(key, { digest: entry.digest, error: error.forAdapter(entry.name), at: performance.now() });
    }).finally(() => {
      this.#loading.delete(key);
      this.#onChange();
    });
  }
}

/** Reloads are per content and directory: another name bound to the same content elsewhere reloads on its own. */
function reloadKey(entry: AdapterEntry): string {
  return `${entry.digest}\0${entry.path}`;
}
