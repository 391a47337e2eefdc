import { randomUUID } from 'node:crypto';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify';
import { adapterRoutes } from './api/adapters.js';
import type { ApiContext, RouteHandlers, ServingEngine } from './api/api-context.js';
import { AdapterRoots } from './api/adapter-roots.js';
import type { Keys } from './api/auth.js';
import { checkAccess } from './api/auth.js';
import { chatRoutes } from './api/chat.js';
import { completionRoutes } from './api/completions.js';
import { toApiError } from './api/error-handler.js';
import { generateRoutes } from './api/generate.js';
import { healthRoutes } from './api/health.js';
import { metricsRoutes } from './api/metrics.js';
import { ModelResolver } from './api/model-resolver.js';
import { modelRoutes } from './api/models.js';
import type { OpenApiDocument } from './api/openapi.js';
import { loadOpenApi, operations } from './api/openapi.js';
import { tokenizeRoutes } from './api/tokenize.js';
import { ApiError } from './errors.js';
import { ServerMetrics } from './observability/metrics.js';

export interface AppDeps {
  engine: ServingEngine;
  /** The base model's name in requests (`model`) and /v1/models. */
  modelName: string;
  /** The base model's checkpoint directory. */
  modelDir: string;
  /** Adapter roots (--adapter-dir). */
  adapterDirs: readonly string[];
  keys: Keys;
  /** Largest request body, in bytes. */
  bodyLimit: number;
  logger: FastifyBaseLogger;
  /** Default: openapi.yaml of the package. */
  spec?: OpenApiDocument;
}

/** Operations polled by monitoring: their requests are not logged at info level. */
const QUIET_OPERATIONS = new Set(['health', 'metrics']);

/**
 * The HTTP app: every route and request schema comes from openapi.yaml (each operationId has exactly one handler),
 * errors take the catalog's shape, `/docs` serves the spec. It never listens: main.ts does, tests use inject.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const spec = deps.spec ?? loadOpenApi();
  const app = Fastify({
    loggerInstance: deps.logger,
    // One record per request, written in onResponse with the fields we want.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.bodyLimit,
    genReqId: () => randomUUID().replaceAll('-', ''),
    // Requests arriving while closing get the catalog's shutting_down instead of fastify's bare 503.
    return503OnClosing: false,
    ajv: { customOptions: { coerceTypes: false, allowUnionTypes: true } },
  });

  const roots = new AdapterRoots(deps.adapterDirs);
  const metrics = new ServerMetrics(deps.engine, deps.modelName);
  const ctx: ApiContext = { engine: deps.engine, models: new ModelResolver(deps.modelName, deps.engine, roots), roots, metrics, modelDir: deps.modelDir };

  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    if (closing) throw new ApiError('shutting_down', 'the server is shutting down');
  });
  app.addHook('onResponse', async (request, reply) => {
    request.log.info({ method: request.method, url: request.url, statusCode: reply.statusCode, responseTimeMs: Math.round(reply.elapsedTime * 100) / 100 }, 'request completed');
  });
  app.setErrorHandler(async (err, request, reply) => {
    const apiError = toApiError(err, request.id);
    if (apiError.status >= 500) request.log.error({ err, code: apiError.code }, 'request failed');
    else request.log.info({ code: apiError.code, error: apiError.message, param: apiError.param }, 'request refused');
    metrics.countError(apiError.code);
    return reply.code(apiError.status).type('application/json; charset=utf-8').send(apiError.toBody());
  });
  app.setNotFoundHandler(async (request) => {
    throw new ApiError('not_found', `no route ${request.method} ${request.url.split('?')[0]} (see /docs)`);
  });

  await app.register(swagger, { mode: 'static', specification: { document: spec as never } });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  registerOperations(app, spec, deps.keys, {
    ...completionRoutes(ctx),
    ...chatRoutes(ctx),
    ...modelRoutes(ctx),
    ...adapterRoutes(ctx),
    ...generateRoutes(ctx),
    ...tokenizeRoutes(ctx),
    ...healthRoutes(),
    ...metricsRoutes(ctx),
  });
  return app;
}

function registerOperations(app: FastifyInstance, spec: OpenApiDocument, keys: Keys, handlers: RouteHandlers): void {
  const ops = operations(spec);
  for (const op of ops) {
    const handler = handlers[op.operationId];
    if (!handler) throw new Error(`openapi.yaml: operation ${op.operationId} (${op.method} ${op.path}) has no handler`);
    app.route({
      method: op.method,
      url: op.url,
      schema: op.schema,
      ...(QUIET_OPERATIONS.has(op.operationId) ? { logLevel: 'warn' } : {}),
      onRequest: async (request) => checkAccess(op.access, request.headers.authorization, keys),
      // An optional body that was left out validates as an empty object, so its defaults apply.
      ...(op.schema.body && !op.bodyRequired ? { preValidation: async (request: FastifyRequest) => { request.body ??= {}; } } : {}),
      handler,
    });
  }
  const unused = Object.keys(handlers).filter((id) => !ops.some((op) => op.operationId === id));
  if (unused.length > 0) throw new Error(`handlers without an operation in openapi.yaml: ${unused.join(', ')}`);
}
