import type { RouteHandlers } from './api-context.js';

/** GET /health: answering at all means serving (a shutting-down server answers 503 before any route runs). */
export function healthRoutes(): RouteHandlers {
  return {
    health: async () => ({ status: 'ok' }),
  };
}
