import { AdapterError } from '../adapters/adapter-error.js';
import { fromAdapterLoadError } from '../errors.js';
import type { AdapterRoots } from './adapter-roots.js';
import type { ServingEngine } from './api-context.js';

/**
 * Turns the model a request names into the adapter the engine runs: the base model's name (or none) means no adapter;
 * any other name is an adapter, registered already or, when a directory under an adapter root has that name, on
 * first use (as vLLM's filesystem resolver does), unless an operator retired the name.
 */
export class ModelResolver {
  readonly baseName: string;
  readonly #engine: ServingEngine;
  readonly #roots: AdapterRoots;
  /** Loads in flight, so concurrent first requests for one adapter load it once. */
  readonly #loading = new Map<string, Promise<boolean>>();
  /** Names never loaded on demand until registered again explicitly. */
  readonly #retired = new Set<string>();

  constructor(baseName: string, engine: ServingEngine, roots: AdapterRoots) {
    this.baseName = baseName;
    this.#engine = engine;
    this.#roots = roots;
  }

  /** The adapter a model name selects; null for the base model. */
  adapterOf(model: string | null | undefined): string | null {
    return model === undefined || model === null || model === '' || model === this.baseName ? null : model;
  }

  /**
   * Keeps `name` from being loaded on demand (`DELETE /v1/adapters/{name}?retire=true`). Resolves once a load on demand
   * already in flight for it has ended, so that the caller can unregister what that load registered.
   */
  async retire(name: string): Promise<void> {
    this.#retired.add(name);
    // Its outcome belongs to the request that started it.
    await this.#loading.get(name)?.catch(() => false);
  }

  /** Lets `name` be loaded on demand again: it was registered explicitly. */
  reinstate(name: string): void {
    this.#retired.delete(name);
  }

  /**
   * Registers the adapter directory `name` names under an adapter root. Resolves false when there is none or the name
   * is retired; rejects with the adapter's refusal (param `param`) when it does not load.
   */
  loadOnDemand(name: string, param: string): Promise<boolean> {
    const pending = this.#loading.get(name);
    if (pending) return pending;
    const load = this.#load(name, param).finally(() => this.#loading.delete(name));
    this.#loading.set(name, load);
    return load;
  }

  async #load(name: string, param: string): Promise<boolean> {
    const dir = this.#retired.has(name) ? null : this.#roots.find(name);
    if (dir === null) return false;
    try {
      await this.#engine.adapters.register(name, dir);
    } catch (err) {
      if (err instanceof AdapterError) throw fromAdapterLoadError(err.code, err.forAdapter(name).message, param);
      throw err;
    }
    return true;
  }
}
