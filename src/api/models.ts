import type { ApiContext, RouteHandlers } from './api-context.js';

/** GET /v1/models: the base model, then every registered adapter with `parent` = the base model (as vLLM lists them). */
export function modelRoutes(ctx: ApiContext): RouteHandlers {
  return {
    listModels: async () => {
      const card = (id: string, root: string, parent: string | null) => ({
        id, object: 'model', created: Math.floor(Date.now() / 1000), owned_by: 'loraserve', root, parent, max_model_len: ctx.engine.contextLength,
      });
      const base = ctx.models.baseName;
      const adapters = await ctx.engine.adapters.list();
      return {
        object: 'list',
        data: [card(base, ctx.modelDir, null), ...adapters.map((a) => ({ ...card(a.name, a.path, base), tier: a.tier, pinned: a.pinned }))],
      };
    },
  };
}
