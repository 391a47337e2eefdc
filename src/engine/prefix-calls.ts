// Runs in the engine worker: the prefix-cache calls (stats, clear).
import type { AdapterManager } from '../adapters/adapter-manager.js';
import { AdapterError } from '../adapters/adapter-error.js';
import type { PrefixCache } from './prefix-cache.js';
import type { CallResult, EngineCall } from './worker-protocol.js';

export type PrefixCall = Extract<EngineCall, { op: `prefix.${string}` }>;

/** Runs a prefix-cache call; with the cache off, stats are null and a clear drops nothing. */
export function prefixCall(cache: PrefixCache | null, adapters: AdapterManager | null, call: PrefixCall): CallResult {
  switch (call.op) {
    case 'prefix.stats': {
      if (!cache) return null;
      const adapterNames: Record<string, string[]> = {};
      for (const e of adapters?.entries() ?? []) (adapterNames[e.digest] ??= []).push(e.name);
      return { ...cache.stats(), adapterNames };
    }
    case 'prefix.clear': {
      if (call.adapter === undefined) return { droppedBlocks: cache?.drop(() => true) ?? 0 };
      if (call.adapter === null) return { droppedBlocks: cache?.drop((d) => d === '') ?? 0 };
      const digest = adapters?.get(call.adapter)?.digest;
      if (!digest) throw new AdapterError('adapter_not_found', '', `no adapter named '${call.adapter}' is registered`);
      return { droppedBlocks: cache?.drop((d) => d === digest) ?? 0 };
    }
  }
}
