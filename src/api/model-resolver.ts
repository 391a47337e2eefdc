import { AdapterError } from '../adapters/adapter-error.js';
import { fromAdapterLoadError } from '../errors.js';
import type { AdapterRoots } from './adapter-roots.js';
import type { ServingEngine } from './api-context.js';

/**
 * Turns the model a request names into the adapter the engine runs: the base model's name (or none) means no adapter;
 * any other name is an adapter, registered already or, when a directory under an adapter root has that name, on
 * first use (as vLLM's filesystem resolver does).
 */
export class ModelResolver {
  readonly baseName: string;
  readonly #engine: ServingEngine;
  readonly #roots: AdapterRoots;
  /** Loads in flight, so concurrent first requests for one adapter load it once. */
  readonly #loading = new Map<string, Promise<boolean>>();

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
   * Registers the adapter directory `name` names under an adapter root. Resolves false when there is none; rejects with
   * the adapter's refusal (param `param`) when it does not load.
   */
  loadOnDemand(name: string, param: string): Promise<boolean> {
    const pending = this.#loading.get(name);
    if (pending) return pending;
    const load = this.#load(name, param).finally(() => this.#loading.delete(name));
    this.#loading.set(name, load);
    return load;
  }

  async #load(name: string, param: string): Promise<boolean> {
    const dir = this.#roots.find(name);
    if (dir === null) return false;
    try {
      await this.#engine.adapters.register(name, dir);
    } catch (err) {
      if (err instanceof AdapterError) throw fromAdapterLoadError(err.code, `adapter ${name}: ${err.problem}`, param);
      throw err;
    }
    return true;
  }
}
