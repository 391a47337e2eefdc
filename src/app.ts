import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify';
import { adapterRoutes } from './api/adapters.js';
import { prefixCacheRoutes } from './api/prefix-cache.js';
import type { ApiContext, RouteHandlers, ServingEngine } from './api/api-context.js';
import { AdapterRoots } from './api/adapter-roots.js';
import type { Keys } from './api/auth.js';
import { checkAccess } from './api/auth.js';
import { chatRoutes } from './api/chat.js';
import { completionRoutes } from './api/completions.js';
import { clientErrorResponse, toApiError } from './api/error-handler.js';
import { generateRoutes } from './api/generate.js';
import { healthRoutes } from './api/health.js';
import { metricsRoutes } from './api/metrics.js';
import { ModelResolver } from './api/model-resolver.js';
import { modelRoutes } from './api/models.js';
import type { OpenApiDocument } from './api/openapi.js';
import { loadOpenApi, operations } from './api/openapi.js';
import { PromptTokenizer } from './api/prompt-tokenizer.js';
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
  /** Most time a client may take to send one request (headers and body), in milliseconds. */
  requestTimeoutMs: number;
  /** How long an idle keep-alive connection stays open, in milliseconds. */
  keepAliveTimeoutMs: number;
  /** True once the server drains before it closes (main.ts decides): every new request answers 503 shutting_down. */
  draining?: () => boolean;
  logger: FastifyBaseLogger;
  /** Default: openapi.yaml of the package. */
  spec?: OpenApiDocument;
}

/** Operations polled by monitoring: their requests are not logged at info level. */
const QUIET_OPERATIONS = new Set(['health', 'metrics']);

/** How often Node checks the request timeouts: at its default, 30 s, a slow client held a request up to 30 s past them. */
const TIMEOUT_CHECK_MS = 1000;

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
    // Slow clients: the whole request (headers and body) within requestTimeout, else 408 and the connection closes.
    requestTimeout: deps.requestTimeoutMs,
    keepAliveTimeout: deps.keepAliveTimeoutMs,
    http: { headersTimeout: deps.requestTimeoutMs, connectionsCheckingInterval: TIMEOUT_CHECK_MS },
    clientErrorHandler: (err, socket) => {
      // A reset connection has nobody to answer.
      if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET' && socket.writable) socket.write(clientErrorResponse(err));
      socket.destroy(err);
    },
    genReqId: () => randomUUID().replaceAll('-', ''),
    // Requests arriving while closing get the catalog's shutting_down instead of fastify's bare 503.
    return503OnClosing: false,
    // Unknown fields are refused by name (removeAdditional off): a field the server does not implement is never ignored.
    ajv: { customOptions: { coerceTypes: false, allowUnionTypes: true, removeAdditional: false } },
  });

  // Node's request and header timeouts start with a request's first byte: a connection that never sends one is cut
  // after the same time by the socket's idle timer, which is off again once a request arrives (a generation may be long).
  app.server.on('connection', (socket: Socket) => socket.setTimeout(deps.requestTimeoutMs));
  app.server.on('request', (request: IncomingMessage) => request.socket.setTimeout(0));

  const roots = new AdapterRoots(deps.adapterDirs);
  const metrics = new ServerMetrics(deps.engine, deps.modelName);
  const prompts = new PromptTokenizer(deps.engine.tokenizer, deps.modelDir, deps.engine.contextLength);
  const models = new ModelResolver(deps.modelName, deps.engine, roots);
  const ctx: ApiContext = { engine: deps.engine, models, roots, metrics, prompts, modelDir: deps.modelDir, keys: deps.keys };

  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onClose', async () => prompts.close());
  // Every route, /health included, answers 503 while the server drains or after its engine stopped.
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    if (closing || deps.draining?.()) throw new ApiError('shutting_down', 'the server is shutting down');
    if (deps.engine.failure !== null) throw new ApiError('engine_unavailable', 'the engine stopped serving (the server log says why)');
  });
  acceptBodilessJson(app);
  app.addHook('onResponse', async (request, reply) => {
    request.log.info({ method: request.method, url: request.url, statusCode: reply.statusCode, responseTimeMs: Math.round(reply.elapsedTime * 100) / 100 }, 'request completed');
  });
  app.setErrorHandler(async (err, request, reply) => {
    const apiError = toApiError(err, request.id);
    // 503s (draining, engine stopped, no adapter slot) are the server's state, not a failure of this request.
    if (apiError.status >= 500 && apiError.status !== 503) request.log.error({ err, code: apiError.code }, 'request failed');
    else request.log.info({ code: apiError.code, error: apiError.message, param: apiError.param }, 'request refused');
    metrics.countError(apiError.code);
    return reply.code(apiError.status).type('application/json; charset=utf-8').send(apiError.toBody());
  });
  app.setNotFoundHandler(async (request) => {
    throw new ApiError('not_found', `no route ${request.method} ${request.url.split('?')[0]} (see /docs)`);
  });

  try {
    await app.register(swagger, { mode: 'static', specification: { document: spec as never } });
    await app.register(swaggerUi, { routePrefix: '/docs' });
    registerOperations(app, spec, deps.keys, {
      ...completionRoutes(ctx),
      ...chatRoutes(ctx),
      ...modelRoutes(ctx),
      ...adapterRoutes(ctx),
      ...prefixCacheRoutes(ctx),
      ...generateRoutes(ctx),
      ...tokenizeRoutes(ctx),
      ...healthRoutes(ctx),
      ...metricsRoutes(ctx),
    });
  } catch (err) {
    await prompts.close();
    throw err;
  }
  return app;
}

/**
 * JSON is the only body media type (a text/plain body gets 415). Clients send `Content-Type: application/json` on every
 * call, bodiless ones such as DELETE included, so an empty JSON body is no body rather than a 400.
 */
function acceptBodilessJson(app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') done(null, undefined);
    else parseJson(request, body as string, done);
  });
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
