import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Engine } from '../engine/engine.js';
import type { ServerMetrics } from '../observability/metrics.js';
import type { AdapterRoots } from './adapter-roots.js';
import type { Keys } from './auth.js';
import type { ModelResolver } from './model-resolver.js';
import type { PromptTokenizer } from './prompt-tokenizer.js';

/** The part of the engine the HTTP layer uses. */
export type ServingEngine = Pick<Engine, 'config' | 'tokenizer' | 'contextLength' | 'maxWaiting' | 'failure' | 'runtime' | 'submit' | 'abort' | 'adapters' | 'prefixCache' | 'stats' | 'onAdapterLoad' | 'onStep'>;

/** What route handlers share: built once per app by buildApp. */
export interface ApiContext {
  engine: ServingEngine;
  models: ModelResolver;
  roots: AdapterRoots;
  metrics: ServerMetrics;
  /** Prompt text and conversations to token ids, off the event loop when large. */
  prompts: PromptTokenizer;
  /** The base model's checkpoint directory (shown as its `root` in /v1/models to callers with admin access). */
  modelDir: string;
  keys: Keys;
}

export type RouteHandler = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

/** A route group's handlers, by the operationId openapi.yaml gives them. */
export type RouteHandlers = Record<string, RouteHandler>;
