// Runs in the engine worker: the adapter management calls (register, unregister, pin, list).
import type { AdapterManager } from '../adapters/adapter-manager.js';
import { AdapterError } from '../adapters/adapter-error.js';
import type { AdapterInfo } from './engine-types.js';
import type { CallResult, EngineCall } from './worker-protocol.js';

export type AdapterCall = Extract<EngineCall, { op: `adapter.${string}` }>;

/**
 * Runs an adapter call; with adapters disabled (`--max-loras 0`) the list is empty and every other call is refused.
 * `contentGone` hears of a content digest that no registered name has any more, after a name was registered again
 * with other weights or unregistered.
 */
export async function adapterCall(adapters: AdapterManager | null, call: AdapterCall, contentGone: (digest: string) => void): Promise<CallResult> {
  if (!adapters && call.op === 'adapter.list') return [];
  if (!adapters) throw new AdapterError('adapter_unsupported', '', 'this server was started with --max-loras 0: adapters are disabled');
  const before = adapters.get(call.op === 'adapter.list' ? '' : call.name)?.digest;
  const reportGone = () => {
    if (before && !adapters.entries().some((e) => e.digest === before)) contentGone(before);
  };
  switch (call.op) {
    case 'adapter.register': {
      const info = adapterInfo(adapters, (await adapters.register(call.name, call.path)).name);
      reportGone();
      return info;
    }
    case 'adapter.unregister':
      await adapters.unregister(call.name);
      reportGone();
      return null;
    case 'adapter.pin': return adapterInfo(adapters, adapters.setPinned(call.name, call.pinned).name);
    case 'adapter.list': return adapters.entries().map((e) => adapterInfo(adapters, e.name));
  }
}

function adapterInfo(adapters: AdapterManager, name: string): AdapterInfo {
  const e = adapters.get(name);
  if (!e) throw new AdapterError('adapter_not_found', '', `no adapter named '${name}' is registered`);
  return { name: e.name, path: e.path, digest: e.digest, rank: e.rank, pinned: e.pinned, tier: adapters.tier(e.digest), activeRequests: adapters.inUse(e.digest) };
}
