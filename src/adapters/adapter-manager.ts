import type { ModelConfig } from '../model/model-config.js';
import { AdapterError } from './adapter-error.js';
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
  readonly #loading = new Map<string, Promise<void>>();
  /** Loaded weights that did not fit the host tier: kept until they are written into a slot. */
  readonly #staged = new Map<string, LoraWeights>();
  /** Digests whose reload failed (files changed or vanished since registration). */
  readonly #failed = new Map<string, AdapterError>();
  readonly #idleWaiters = new Map<string, (() => void)[]>();
  readonly #onChange: () => void;
  hostLoads = 0;
  hostEvictions = 0;
  #loadTimes: { tier: 'host' | 'slot'; ms: number }[] = [];

  /** `onChange` is called when a background load finishes, so an idle engine loop wakes up to admit its requests. */
  constructor(config: ModelConfig, options: AdapterTierOptions, onChange: () => void) {
    this.slots = new SlotManager(config, options.maxLoras, options.maxRank, options.rows);
    this.#host = new HostAdapterCache(options.hostBytes, () => this.hostEvictions++);
    this.#loader = new AdapterLoader(config, options.maxRank);
    this.#onChange = onChange;
  }

  /** Load durations since the last call, per tier, for metrics. */
  takeLoadTimes(): { tier: 'host' | 'slot'; ms: number }[] {
    return this.#loadTimes.splice(0);
  }

  /** Loads and validates the adapter, then binds the name to its content. */
  async register(name: string, path: string): Promise<AdapterEntry> {
    const start = performance.now();
    const { digest, weights } = await this.#loader.load(path);
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
    if (!entry) throw new AdapterError('adapter_not_found', name, `no adapter named '${name}' is registered`);
    this.#byName.delete(name);
    if (entry.pinned) this.#pin(entry.digest, false);
    await this.#forgetWhenIdle(entry.digest);
  }

  setPinned(name: string, pinned: boolean): AdapterEntry {
    const entry = this.#byName.get(name);
    if (!entry) throw new AdapterError('adapter_not_found', name, `no adapter named '${name}' is registered`);
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

  /** A slot reference for a bound adapter, starting a load from disk when it is in no faster tier. */
  acquireSlot(entry: AdapterEntry): SlotAcquisition {
    const failed = this.#failed.get(entry.digest);
    if (failed) return { error: failed };
    const resident = this.slots.acquire(entry.digest, undefined);
    if (resident !== null) return { slot: resident };
    const weights = this.#host.get(entry.digest) ?? this.#staged.get(entry.digest);
    if (!weights) {
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
      this.#failed.delete(digest);
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

  #reload(entry: { digest: string; path: string }): void {
    if (this.#loading.has(entry.digest)) return;
    const start = performance.now();
    const load = this.#loader.load(entry.path).then(
      ({ digest, weights }) => {
        this.#loadTimes.push({ tier: 'host', ms: performance.now() - start });
        this.hostLoads++;
        if (digest === entry.digest) this.#store(digest, weights);
        else this.#failed.set(entry.digest, new AdapterError('adapter_invalid', entry.path, 'the adapter files changed since it was registered; register it again'));
      },
      (err: unknown) => {
        this.#failed.set(entry.digest, err instanceof AdapterError ? err : new AdapterError('adapter_invalid', entry.path, String(err)));
      },
    ).finally(() => {
      this.#loading.delete(entry.digest);
      this.#onChange();
    });
    this.#loading.set(entry.digest, load);
  }
}
