import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { expect } from 'vitest';
import type { ServingEngine } from '../../src/api/api-context.js';
import type { OpenApiDocument } from '../../src/api/openapi.js';
import { componentSchema, loadOpenApi, responseSchema } from '../../src/api/openapi.js';
import type { AppDeps } from '../../src/app.js';
import { parseServeConfig } from '../../src/config.js';
import type { RunningServer } from '../../src/main.js';
import { startServer } from '../../src/main.js';
import { PROJECTIONS } from '../../src/model/model-config.js';
import { createLogger } from '../../src/observability/logger.js';
import { synthAdapter } from '../../src/synth/adapter-synth.js';
import { synthCheckpoint } from '../../src/synth/checkpoint-synth.js';

/** A tiny checkpoint and PEFT adapters on disk: `root` holds alpha, beta and gamma; `outside` is not an adapter root. */
export interface Fixture {
  dir: string;
  modelDir: string;
  root: string;
  outside: string;
  cacheDir: string;
  cleanup(): void;
}

export function makeFixture(): Fixture {
  const dir = mkdtempSync(join(tmpdir(), 'loraserve-api-'));
  const modelDir = join(dir, 'tiny');
  synthCheckpoint(modelDir, { architecture: 'llama', preset: 'tiny', seed: 0, dtype: 'F32' });
  const root = join(dir, 'adapters');
  const outside = join(dir, 'elsewhere');
  const adapter = (path: string, seed: number) => synthAdapter(path, modelDir, { rank: 8, alpha: 16, targetModules: [...PROJECTIONS], seed });
  adapter(join(root, 'alpha'), 1);
  adapter(join(root, 'beta'), 2);
  adapter(join(root, 'gamma'), 3);
  adapter(join(outside, 'delta'), 4);
  const cacheDir = join(dir, 'cache');
  mkdirSync(cacheDir);
  return { dir, modelDir, root, outside, cacheDir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Log records the server wrote, parsed. */
export class LogSink extends Writable {
  readonly records: Record<string, unknown>[] = [];

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) this.records.push(JSON.parse(line) as Record<string, unknown>);
    done();
  }
}

/**
 * Starts the real server (engine worker, HTTP listener on a free port) on the fixture, configured as `loraserve serve`
 * would be with these extra flags.
 */
export async function startTestServer(fixture: Fixture, flags: string[] = [], logs?: LogSink): Promise<RunningServer> {
  const config = parseServeConfig([
    '--model', fixture.modelDir, '--quant', 'fp32', '--port', '0', '--threads', '1', '--cache-dir', fixture.cacheDir,
    '--adapter-dir', fixture.root, '--context-length', '256', '--shutdown-timeout', '2', ...flags,
  ], { LORASERVE_RUNTIME: process.env.LORASERVE_RUNTIME });
  return startServer(config, createLogger(logs ? 'info' : 'silent', logs));
}

/** buildApp's dependencies for an app on `engine` over the fixture, with the server's default limits and no keys. */
export function appDeps(fixture: Fixture, engine: ServingEngine, logger = createLogger('silent')): AppDeps {
  return {
    engine, modelName: 'tiny', modelDir: fixture.modelDir, adapterDirs: [fixture.root], keys: { apiKey: null, adminKey: null },
    bodyLimit: 4 * 1024 ** 2, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5_000, logger,
  };
}

export function openAiClient(server: RunningServer, apiKey = 'unused'): OpenAI {
  return new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0 });
}

const spec: OpenApiDocument = loadOpenApi();

/** Asserts `data` matches a schema of openapi.yaml, with the app's own validator. */
export function expectSchema(app: FastifyInstance, schema: object | undefined, data: unknown): void {
  expect(schema).toBeDefined();
  const validate = app.validatorCompiler?.({ schema: schema as object, method: 'POST', url: '/', httpPart: 'body' });
  if (!validate) throw new Error('the app has no validator compiler (is it ready?)');
  const valid = validate(structuredClone(data));
  expect(valid, JSON.stringify((validate as { errors?: unknown }).errors)).toBe(true);
}

/** Asserts a response body matches what openapi.yaml promises for this operation and status. */
export function expectResponse(app: FastifyInstance, operationId: string, status: number, body: unknown): void {
  expectSchema(app, responseSchema(spec, operationId, status), body);
}

/** Asserts a streamed event matches a component schema of openapi.yaml (CompletionChunk, ChatCompletionChunk, ...). */
export function expectComponent(app: FastifyInstance, name: string, data: unknown): void {
  expectSchema(app, componentSchema(spec, name), data);
}

/** The `data:` payloads of an SSE body. */
export function sseData(body: string): string[] {
  return body.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice('data: '.length));
}

/** The value of one sample in a Prometheus exposition (`name` or `name{labels}` exactly as written), or null. */
export function metricValue(exposition: string, sample: string): number | null {
  const line = exposition.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? null : Number(line.slice(sample.length + 1));
}

/** Polls until `check` holds (or fails after `timeoutMs`). */
export async function waitFor(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
