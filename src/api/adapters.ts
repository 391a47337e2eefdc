import { AdapterError } from '../adapters/adapter-error.js';
import type { AdapterInfo } from '../engine/engine-types.js';
import { ApiError, fromAdapterLoadError } from '../errors.js';
import type { ApiContext, RouteHandlers } from './api-context.js';

interface RegisterBody {
  name: string;
  path: string;
  pinned?: boolean;
  merged?: boolean;
}

/** An adapter as the API shows it. */
function adapterBody(a: AdapterInfo) {
  return { object: 'adapter', name: a.name, path: a.path, digest: a.digest, rank: a.rank, pinned: a.pinned, merged: a.merged, tier: a.tier, active_requests: a.activeRequests };
}

/**
 * Adapter management: /v1/adapters (list, register, get, delete, pin) and vLLM's /v1/load_lora_adapter and
 * /v1/unload_lora_adapter. Paths from clients must lie inside the adapter roots. Refusals name the adapter and its
 * file inside the adapter directory, never a path on the server.
 */
export function adapterRoutes(ctx: ApiContext): RouteHandlers {
  const { engine, roots, models } = ctx;

  /** Loads the adapter at `path` under `name`; refusals name the request fields `nameParam` and `pathParam`. */
  const register = async (name: string, path: string, nameParam: string, pathParam: string): Promise<AdapterInfo> => {
    if (name === models.baseName) throw new ApiError('invalid_request', `${name} is the base model's name`, nameParam);
    const dir = roots.resolve(path, pathParam);
    try {
      const info = await engine.adapters.register(name, dir);
      models.reinstate(name);
      return info;
    } catch (err) {
      if (err instanceof AdapterError) throw fromAdapterLoadError(err.code, err.forAdapter(name).message, pathParam);
      throw err;
    }
  };

  /** Runs an operation on a registered adapter; an unknown name is adapter_not_found. */
  const onRegistered = async <T>(name: string, nameParam: string, op: () => Promise<T>): Promise<T> => {
    try {
      return await op();
    } catch (err) {
      if (err instanceof AdapterError && err.code === 'adapter_not_found') throw new ApiError('adapter_not_found', `no adapter named '${name}' is registered`, nameParam);
      if (err instanceof AdapterError) throw fromAdapterLoadError(err.code, err.forAdapter(name).message, nameParam);
      throw err;
    }
  };

  return {
    listAdapters: async () => ({ object: 'list', data: (await engine.adapters.list()).map(adapterBody) }),
    registerAdapter: async (request) => {
      const body = request.body as RegisterBody;
      const info = await register(body.name, body.path, 'name', 'path');
      const pinned = body.pinned ? await engine.adapters.pin(info.name, true) : info;
      return adapterBody(body.merged ? await onRegistered(info.name, 'merged', () => engine.adapters.merge(info.name, true)) : pinned);
    },
    getAdapter: async (request) => {
      const { name } = request.params as { name: string };
      const info = (await engine.adapters.list()).find((a) => a.name === name);
      if (!info) throw new ApiError('adapter_not_found', `no adapter named '${name}' is registered`, 'name');
      return adapterBody(info);
    },
    deleteAdapter: async (request) => {
      const { name } = request.params as { name: string };
      if ((request.query as { retire?: 'true' | 'false' }).retire !== 'true') {
        await onRegistered(name, 'name', () => engine.adapters.unregister(name));
        return { object: 'adapter', name, deleted: true };
      }
      const registered = async () => (await engine.adapters.list()).some((a) => a.name === name);
      if (roots.find(name) === null && !(await registered())) {
        throw new ApiError('adapter_not_found', `no adapter named '${name}' is registered or under an adapter root`, 'name');
      }
      // Retired before it is unregistered, and after any load on demand in flight: nothing registers it again.
      await models.retire(name);
      if (await registered()) await onRegistered(name, 'name', () => engine.adapters.unregister(name));
      return { object: 'adapter', name, deleted: true, retired: true };
    },
    pinAdapter: async (request) => {
      const { name } = request.params as { name: string };
      const { pinned } = request.body as { pinned: boolean };
      return adapterBody(await onRegistered(name, 'name', () => engine.adapters.pin(name, pinned)));
    },
    loadLoraAdapter: async (request, reply) => {
      const body = request.body as { lora_name: string; lora_path: string };
      await register(body.lora_name, body.lora_path, 'lora_name', 'lora_path');
      return reply.type('text/plain; charset=utf-8').send(`Success: LoRA adapter '${body.lora_name}' added successfully.`);
    },
    unloadLoraAdapter: async (request, reply) => {
      const { lora_name: name } = request.body as { lora_name: string };
      await onRegistered(name, 'lora_name', () => engine.adapters.unregister(name));
      return reply.type('text/plain; charset=utf-8').send(`Success: LoRA adapter '${name}' removed successfully.`);
    },
  };
}
