// Runs in the engine worker: the adapter management calls (register, unregister, pin, merge, list).
import type { AdapterEntry, AdapterManager } from '../adapters/adapter-manager.js';
import { AdapterError } from '../adapters/adapter-error.js';
import type { AdapterInfo } from './engine-types.js';
import type { MergedSessions, MergeState } from './merged-sessions.js';
import type { PrefixCache } from './prefix-cache.js';
import type { CallResult, EngineCall } from './worker-protocol.js';

export type AdapterCall = Extract<EngineCall, { op: `adapter.${string}` }>;

/** What adapter calls reach beyond the adapter tiers: merged sessions, and what a content's last name leaving drops. */
export interface AdapterCallHooks {
  /** A content digest that no registered name has any more, after a name was registered again or unregistered. */
  contentGone(digest: string): void;
  mergeState(digest: string): MergeState | null;
  /** Starts merging (or unmerges) the adapter; throws when merging is off or full. */
  setMerged(entry: AdapterEntry, merged: boolean): void;
}

/** The hooks over the engine's prefix cache and merged sessions: content that loses its last name loses its blocks and its merge. */
export function adapterCallHooks(prefixCache: PrefixCache | null, merged: MergedSessions | null): AdapterCallHooks {
  return {
    contentGone: (digest) => {
      prefixCache?.drop((d) => d === digest);
      merged?.unmerge(digest);
    },
    mergeState: (digest) => merged?.state(digest) ?? null,
    setMerged: (entry, on) => {
      if (!merged) throw new AdapterError('adapter_unsupported', '', 'this server was started with --max-merged 0: merging is off');
      if (on) merged.merge(entry);
      else merged.unmerge(entry.digest);
    },
  };
}

/** Runs an adapter call; with adapters disabled (`--max-loras 0`) the list is empty and every other call is refused. */
export async function adapterCall(adapters: AdapterManager | null, call: AdapterCall, hooks: AdapterCallHooks): Promise<CallResult> {
  if (!adapters && call.op === 'adapter.list') return [];
  if (!adapters) throw new AdapterError('adapter_unsupported', '', 'this server was started with --max-loras 0: adapters are disabled');
  const before = adapters.get(call.op === 'adapter.list' ? '' : call.name)?.digest;
  const reportGone = () => {
    if (before && !adapters.entries().some((e) => e.digest === before)) hooks.contentGone(before);
  };
  switch (call.op) {
    case 'adapter.register': {
      const entry = await adapters.register(call.name, call.path);
      reportGone();
      return adapterInfo(adapters, entry.name, hooks);
    }
    case 'adapter.unregister':
      await adapters.unregister(call.name);
      reportGone();
      return null;
    case 'adapter.pin': return adapterInfo(adapters, adapters.setPinned(call.name, call.pinned).name, hooks);
    case 'adapter.merge': {
      const entry = adapters.get(call.name);
      if (!entry) throw new AdapterError('adapter_not_found', '', `no adapter named '${call.name}' is registered`);
      hooks.setMerged(entry, call.merged);
      return adapterInfo(adapters, entry.name, hooks);
    }
    case 'adapter.list': return adapters.entries().map((e) => adapterInfo(adapters, e.name, hooks));
  }
}

function adapterInfo(adapters: AdapterManager, name: string, hooks: AdapterCallHooks): AdapterInfo {
  const e = adapters.get(name);
  if (!e) throw new AdapterError('adapter_not_found', '', `no adapter named '${name}' is registered`);
  const state = hooks.mergeState(e.digest);
  return {
    name: e.name, path: e.path, digest: e.digest, rank: e.rank, pinned: e.pinned, tier: adapters.tier(e.digest), activeRequests: adapters.inUse(e.digest),
    merged: state === 'building' ? 'building' : state === 'ready',
  };
}
