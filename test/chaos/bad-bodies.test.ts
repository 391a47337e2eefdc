import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Operation } from '../../src/api/openapi.js';
import { loadOpenApi, operations } from '../../src/api/openapi.js';
import type { Fixture } from '../api/support.js';
import { makeFixture } from '../api/support.js';
import type { ChildServer } from './support/child-server.js';
import { baseFlags, startChild } from './support/child-server.js';
import type { Answer } from './support/http.js';
import { call, expectApiError, expectNoLeak, greedyIds } from './support/http.js';
import { rawExchange } from './support/raw-socket.js';
import type { Domains } from './support/schema-arbitrary.js';
import { malformedJson, requestBodies, toJsonText } from './support/schema-arbitrary.js';
import { expectSettled, rssBytes } from './support/settle.js';

// Property-based bad input over the request schemas of openapi.yaml: every answer is a 2xx or a catalog 4xx error,
// in bounded time, never a 5xx, never a server path or a stack trace.

const REQUEST_TIMEOUT_MS = 15_000;
const BODY_LIMIT = '1MiB';
const BODY_LIMIT_BYTES = 1024 ** 2;

let fixture: Fixture;
let server: ChildServer;
let baselineRss: number;
let baseIds: number[];

beforeAll(async () => {
  fixture = makeFixture();
  server = await startChild([
    ...baseFlags(fixture.modelDir, fixture.cacheDir), '--quant', 'fp32', '--context-length', '256', '--adapter-dir', fixture.root,
    '--adapter', `alpha=${join(fixture.root, 'alpha')}`, '--body-limit', BODY_LIMIT,
  ]);
  for (const model of ['alpha', 'beta']) await greedyIds(server.url, model, 'warm up');
  baseIds = await greedyIds(server.url, null, 'warm up');
  baselineRss = rssBytes(server.pid);
});
afterAll(async () => {
  await server?.stop();
  fixture?.cleanup();
});

const names = fc.oneof(fc.constantFrom('alpha', 'beta', 'gamma', 'fuzzed', 'fuzzed/x', 'tiny'), fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,12}$/));
const models = fc.oneof(fc.constantFrom('tiny', 'alpha', 'beta', 'gamma', '', 'no-such-model', 'elsewhere/delta', '../elsewhere/delta', '.', '..', 'alpha/'), fc.string());
// Relative to the adapter root, or outside it; never a path of this machine's temp dir, which must not come back.
const paths = fc.oneof(
  fc.constantFrom('alpha', 'beta', './gamma', 'alpha/', 'alpha/../beta', '../elsewhere/delta', '..', '.', '', '/', '/etc', '/etc/passwd', 'missing', 'alpha/adapter_config.json', '/dev/zero', 'alpha\u0000'),
  fc.string(),
);
const DOMAINS: Domains = { model: models, adapter_id: models, name: names, lora_name: names, path: paths, lora_path: paths };

const spec = loadOpenApi();
const withBody = operations(spec).filter((op): op is Operation & { schema: { body: Record<string, unknown> } } => op.schema.body !== undefined);
/** Generation routes cost more per valid request. */
const RUNS: Readonly<Record<string, number>> = { createCompletion: 200, createChatCompletion: 200, generate: 120, generateStream: 80 };

/** The URL of an operation, with path parameters filled. */
const urlOf = (op: Operation, name = 'alpha') => op.path.replace('{name}', encodeURIComponent(name));

/** Sends a body as the bytes given, with the content type given (none when null). */
function send(op: Operation, body: string | Uint8Array, contentType: string | null, name?: string): Promise<Answer> {
  const headers: Record<string, string> = contentType === null ? {} : { 'content-type': contentType };
  const bytes = typeof body === 'string' ? new TextEncoder().encode(body) : body;
  return call(server.url, op.method, urlOf(op, name), { body: bytes, headers, timeoutMs: REQUEST_TIMEOUT_MS });
}

/**
 * Every answer: a 2xx, or a catalog 4xx error; never a 5xx; no leak. Adapter management shows adapter paths to the
 * admin on success by design, so only its errors are checked for paths.
 */
function expectHandled(answer: Answer, op: Operation): void {
  expect(answer.status, `HTTP ${answer.status}: ${answer.text.slice(0, 300)}`).toBeLessThan(500);
  if (answer.status >= 400) expectApiError(answer);
  else {
    if (op.access !== 'admin') expectNoLeak(answer.text);
    expect(answer.text, 'a 2xx carried a server error').not.toMatch(/"code":\s*"(internal_error|engine_error)"/);
  }
}

describe('bodies generated from the request schemas', () => {
  it.each(withBody.map((op) => [op.operationId, op] as const))('%s: every generated body gets a 2xx or a catalog 4xx', async (_, op) => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(requestBodies(op.schema.body, DOMAINS), names, async (body, name) => {
        const text = toJsonText(body);
        // Bodies over the limit are refused before they are read; that path has its own test below.
        fc.pre(Buffer.byteLength(text) < BODY_LIMIT_BYTES);
        const answer = await send(op, text, 'application/json', name);
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        expectHandled(answer, op);
      }),
      { numRuns: RUNS[op.operationId] ?? 80 },
    );
    // The generator reaches both sides of the schema: some bodies are accepted, some refused.
    expect([...statuses.keys()].some((s) => s >= 400), JSON.stringify([...statuses])).toBe(true);
    expect([...statuses.keys()].some((s) => s < 300), JSON.stringify([...statuses])).toBe(true);
  });
});

describe('bodies that are not JSON, or not sent as JSON', () => {
  const op = (id: string) => withBody.find((o) => o.operationId === id) as Operation;

  it('malformed JSON gets 400 on every route with a body', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...withBody), malformedJson, async (target, text) => {
        const answer = await send(target, text, 'application/json');
        // An empty body is no body, which a route with an optional body accepts.
        if (text !== '' || target.bodyRequired) expect(answer.status, answer.text.slice(0, 300)).toBeGreaterThanOrEqual(400);
        expectHandled(answer, target);
      }),
      { numRuns: 60 },
    );
  });

  it.each([
    ['text/plain', 415], ['application/x-www-form-urlencoded', 415], ['multipart/form-data; boundary=x', 415], ['application/xml', 415],
    [null, 415],
  ] as const)('a JSON body sent as %s is refused with %i', async (contentType, status) => {
    const answer = await send(op('createCompletion'), JSON.stringify({ model: 'tiny', prompt: 'x', max_tokens: 1 }), contentType);
    expect(answer.status, answer.text).toBe(status);
    expectApiError(answer);
  });

  it('a body announced over --body-limit gets 413 before it is sent, also when the content type is not JSON', async () => {
    for (const contentType of ['application/json', 'text/plain']) {
      const head = `POST /v1/completions HTTP/1.1\r\nhost: ${server.host}\r\ncontent-type: ${contentType}\r\ncontent-length: ${2 * BODY_LIMIT_BYTES}\r\n\r\n`;
      const response = await rawExchange(server.host, server.port, `${head}{"prompt": "${'x'.repeat(1000)}`, REQUEST_TIMEOUT_MS);
      expect([413, 415], response.body).toContain(response.status);
      expectApiError({ status: response.status, contentType: response.headers['content-type'] ?? '', text: response.body });
    }
  });

  it('invalid UTF-8 in a JSON body is answered, not a server error', async () => {
    const bytes = Uint8Array.from([...Buffer.from('{"model":"tiny","prompt":"'), 0xff, 0xfe, 0xc0, 0x80, ...Buffer.from('","max_tokens":1}')]);
    const answer = await send(op('createCompletion'), bytes, 'application/json');
    expectHandled(answer, op('createCompletion'));
  });

  it('wrong methods, unknown routes and bad path parameters get a catalog 404 or 400', async () => {
    const cases = [['GET', '/v1/completions'], ['PUT', '/v1/adapters'], ['POST', '/nope'], ['GET', '/v1/adapters/%00'], ['GET', '/v1/adapters/%2e%2e%2f%2e%2e'], ['GET', `/${'a/'.repeat(2000)}`]];
    for (const [method, path] of cases) {
      const answer = await call(server.url, method, path, { timeoutMs: REQUEST_TIMEOUT_MS });
      expect([400, 404], `${method} ${path}: ${answer.text.slice(0, 200)}`).toContain(answer.status);
      expectApiError(answer);
    }
  });

  it('afterwards the server still serves, nothing is left running, and memory is back', async () => {
    // The fuzzer may re-register adapter names; the base model's tokens are fixed.
    expect(await greedyIds(server.url, null, 'warm up')).toEqual(baseIds);
    await expectSettled(server, baselineRss);
  });
});
