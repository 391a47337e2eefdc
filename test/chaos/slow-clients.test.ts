import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Fixture } from '../api/support.js';
import { makeFixture } from '../api/support.js';
import type { ChildServer } from './support/child-server.js';
import { baseFlags, startChild } from './support/child-server.js';
import { call, greedyIds, post } from './support/http.js';
import { trickle } from './support/raw-socket.js';
import { expectSettled, rssBytes } from './support/settle.js';

// Slow clients (slowloris): headers or a body trickled a byte at a time, idle connections. Each must be cut with a 408
// or a close within the configured timeouts, while the server keeps serving everyone else.

const REQUEST_TIMEOUT_S = 2;
const KEEP_ALIVE_TIMEOUT_S = 1;
/** The request timeout is checked once a second; past this a slow client has been held too long. */
const CUT_BOUND_MS = (REQUEST_TIMEOUT_S + 1 + 3) * 1000;
/** A trickle that would take minutes to finish: only the server can end it in time. */
const BYTE_EVERY_MS = 100;
const GIVE_UP_MS = 12_000;
const SLOW_CLIENTS = 24;

let fixture: Fixture;
let server: ChildServer;
let baselineRss: number;

beforeAll(async () => {
  fixture = makeFixture();
  server = await startChild([
    ...baseFlags(fixture.modelDir, fixture.cacheDir), '--quant', 'fp32', '--context-length', '128', '--adapter-dir', fixture.root,
    '--request-timeout', String(REQUEST_TIMEOUT_S), '--keep-alive-timeout', String(KEEP_ALIVE_TIMEOUT_S),
  ]);
  await greedyIds(server.url, 'alpha', 'warm up', 4);
  baselineRss = rssBytes(server.pid);
});
afterAll(async () => {
  await server?.stop();
  fixture?.cleanup();
});

const slowHeaders = () => `GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ${'a'.repeat(5000)}`;
const slowBody = () => {
  const body = JSON.stringify({ model: 'alpha', prompt: 'x'.repeat(5000), max_tokens: 1 });
  return `POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
};

/** The cut came in time, as a 408 or a bare close (never a normal answer to the unfinished request). */
function expectCut(result: Awaited<ReturnType<typeof trickle>>, what: string): void {
  expect(result.cutAfterMs, `${what}: still open after ${GIVE_UP_MS} ms (${result.written} bytes written)`).not.toBeNull();
  expect(result.cutAfterMs, `${what}: held for ${Math.round(result.cutAfterMs ?? 0)} ms`).toBeLessThan(CUT_BOUND_MS);
  if (result.received !== '') expect(result.received, what).toMatch(/^HTTP\/1\.1 408 /);
}

describe('slow clients are cut in bounded time while others are served', () => {
  it.each([
    ['headers trickled a byte at a time', slowHeaders],
    ['a body trickled a byte at a time', slowBody],
  ])('%s', async (what, text) => {
    const slow = Array.from({ length: SLOW_CLIENTS }, () => trickle(server.host, server.port, text(), BYTE_EVERY_MS, GIVE_UP_MS));
    // While they hold their connections, a normal client gets its answers.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const health = await call(server.url, 'GET', '/health', { timeoutMs: 5000 });
    expect(health.status).toBe(200);
    const served = await post(server.url, '/v1/completions', { model: 'alpha', prompt: 'Hello', max_tokens: 4 }, { timeoutMs: 10_000 });
    expect(served.status, served.text).toBe(200);
    for (const result of await Promise.all(slow)) expectCut(result, what);
  });

  it('a connection that never sends a byte is closed', async () => {
    const started = performance.now();
    const closedAfterMs = await new Promise<number | null>((resolve) => {
      const socket = connect({ host: server.host, port: server.port });
      const giveUp = setTimeout(() => {
        socket.destroy();
        resolve(null);
      }, GIVE_UP_MS);
      socket.on('error', () => undefined);
      socket.on('close', () => {
        clearTimeout(giveUp);
        resolve(performance.now() - started);
      });
    });
    expect(closedAfterMs, 'an idle connection was held open').not.toBeNull();
    expect(closedAfterMs).toBeLessThan(CUT_BOUND_MS);
  });

  it('an idle keep-alive connection is closed after --keep-alive-timeout', async () => {
    const result = await trickle(server.host, server.port, 'GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n', 0, GIVE_UP_MS);
    expect(result.received).toMatch(/^HTTP\/1\.1 200 /);
    expect(result.cutAfterMs, 'the keep-alive connection was held open').not.toBeNull();
    expect(result.cutAfterMs).toBeLessThan((KEEP_ALIVE_TIMEOUT_S + 3) * 1000);
  });

  it('afterwards nothing is left running and memory is back', async () => {
    await expectSettled(server, baselineRss);
  });
});
