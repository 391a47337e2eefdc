import type { ApiContext, RouteHandlers } from './api-context.js';

/** GET /metrics: Prometheus text exposition. */
export function metricsRoutes(ctx: ApiContext): RouteHandlers {
  return {
    metrics: async (_request, reply) => reply.type(ctx.metrics.contentType).send(await ctx.metrics.exposition()),
  };
}
