import type { ApiContext, RouteHandlers } from './api-context.js';

/**
 * GET /health: answering at all means serving. While the server drains, or once its engine stopped, every request,
 * this one included, answers 503 before any route runs (app.ts).
 */
export function healthRoutes(ctx: ApiContext): RouteHandlers {
  return {
    health: async () => ({ status: 'ok', runtime: ctx.engine.runtime }),
  };
}
