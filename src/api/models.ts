import type { ApiContext, RouteHandlers } from './api-context.js';
import { hasAccess } from './auth.js';

/**
 * GET /v1/models: the base model, then every registered adapter with `parent` = the base model (as vLLM lists them).
 * `root` is the checkpoint or adapter directory only for callers the adapter-management routes accept (they can read
 * the paths there anyway); for others it is the model's id, so an API key does not reveal the server's file layout.
 */
export function modelRoutes(ctx: ApiContext): RouteHandlers {
  return {
    listModels: async (request) => {
      const showPaths = hasAccess('admin', request.headers.authorization, ctx.keys);
      const card = (id: string, root: string, parent: string | null) => ({
        id, object: 'model', created: Math.floor(Date.now() / 1000), owned_by: 'loraserve', root: showPaths ? root : id, parent, max_model_len: ctx.engine.contextLength,
      });
      const base = ctx.models.baseName;
      const adapters = await ctx.engine.adapters.list();
      return {
        object: 'list',
        data: [card(base, ctx.modelDir, null), ...adapters.map((a) => ({ ...card(a.name, a.path, base), tier: a.tier, pinned: a.pinned, merged: a.merged }))],
      };
    },
  };
}
