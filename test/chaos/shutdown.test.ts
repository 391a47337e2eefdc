import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Fixture } from '../api/support.js';
import { makeFixture } from '../api/support.js';
import type { ChildServer, Exit } from './support/child-server.js';
import { baseFlags, startChild, waitForLog } from './support/child-server.js';
import { call, expectApiError, greedyIds, openStream, post } from './support/http.js';

// SIGTERM with requests in flight: while the server drains, /health and new requests answer 503; the requests in
// flight finish (or are ended at --shutdown-timeout); the process exits 0 within the timeout and the close grace.

/** main.ts gives responses this long after the deadline before it cuts connections. */
const CLOSE_GRACE_S = 2;
/** Room for the engine and the process to stop on a loaded 2-core machine. */
const EXIT_SLACK_S = 5;
const STREAMS = 16;

let fixture: Fixture;
let server: ChildServer | undefined;

beforeAll(() => {
  fixture = makeFixture();
});
afterEach(async () => {
  await server?.stop(5000);
  server = undefined;
});
afterAll(() => fixture?.cleanup());

async function serve(shutdownTimeoutS: number): Promise<ChildServer> {
  const started = await startChild([
    ...baseFlags(fixture.modelDir, fixture.cacheDir), '--quant', 'fp32', '--context-length', '512', '--adapter-dir', fixture.root,
    '--max-batch', String(STREAMS), '--shutdown-timeout', String(shutdownTimeoutS),
  ]);
  await greedyIds(started.url, 'alpha', 'warm up', 4);
  return started;
}

/** Streams that are generating (each has sent its first event) when this resolves. */
async function inFlight(url: string, maxTokens: number) {
  const streams = Array.from({ length: STREAMS }, (_, i) => openStream(url, '/v1/completions', {
    model: i % 2 ? 'alpha' : 'beta', prompt: 'Hello', max_tokens: maxTokens, ignore_eos: true, stream: true, stream_options: { include_usage: true },
  }));
  await Promise.all(streams.map((s) => s.started));
  return streams;
}

/** Sends SIGTERM; `exit` is how the process ended, `seconds` how long that took. */
function terminate(target: ChildServer): { exit: Promise<Exit>; seconds: Promise<number> } {
  const sent = performance.now();
  target.child.kill('SIGTERM');
  const exit = target.exited;
  return { exit, seconds: exit.then(() => (performance.now() - sent) / 1000) };
}

describe('SIGTERM with requests in flight', () => {
  it('answers 503 on /health and to new requests while the requests in flight finish, then exits 0', async () => {
    const shutdownTimeoutS = 30;
    server = await serve(shutdownTimeoutS);
    const streams = await inFlight(server.url, 400);
    const { exit, seconds } = terminate(server);
    await waitForLog(server, 'shutting down');

    const health = await call(server.url, 'GET', '/health', { timeoutMs: 5000 });
    expect(health.status, `/health during the drain: ${health.text}`).toBe(503);
    expectApiError(health);
    const late = await post(server.url, '/v1/completions', { model: 'tiny', prompt: 'late', max_tokens: 2 }, { timeoutMs: 5000 });
    expect(late.status, late.text).toBe(503);
    expect(expectApiError(late)).toBe('shutting_down');

    for (const stream of streams) {
      const { status, text } = await stream.done;
      expect(status).toBe(200);
      expect(text).toContain('"completion_tokens":400');
      expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    }
    expect(await exit).toEqual({ code: 0, signal: null });
    expect(await seconds).toBeLessThan(shutdownTimeoutS + CLOSE_GRACE_S + EXIT_SLACK_S);
    expect(server.records.filter((r) => (r.level as number) >= 50), 'errors logged during the drain').toEqual([]);
  });

  it('ends requests that outlive --shutdown-timeout and still exits 0 in time, without an engine failure', async () => {
    const shutdownTimeoutS = 0.25;
    server = await serve(shutdownTimeoutS);
    // Sixteen 480-token streams take seconds here: most of each is still to come at the deadline.
    const streams = await inFlight(server.url, 480);
    const { exit, seconds } = terminate(server);

    const ends = await Promise.all(streams.map((s) => s.done.then(({ text }) => text, (err: unknown) => `cut: ${String(err)}`)));
    const ended = (text: string) => text.startsWith('cut:') || /"finish_reason":"abort"|"code":"shutting_down"/.test(text);
    for (const text of ends) {
      // Ended by the server (an abort finish, a shutting_down event, or a closed connection), or finished in time;
      // never a server failure. A usage event counts the tokens that were streamed, at least the first one.
      if (!ended(text)) expect(text).toMatch(/"finish_reason":"length"/);
      expect(text).not.toMatch(/"code":"(engine_error|internal_error)"/);
      for (const usage of text.matchAll(/"completion_tokens":(\d+)/g)) expect(Number(usage[1]), 'usage after streamed tokens').toBeGreaterThan(0);
    }
    expect(ends.some(ended), 'no request outlived the deadline').toBe(true);
    expect(await exit).toEqual({ code: 0, signal: null });
    expect(await seconds).toBeLessThan(shutdownTimeoutS + CLOSE_GRACE_S + EXIT_SLACK_S);
    expect(server.records.filter((r) => (r.level as number) >= 50), 'errors logged during the drain').toEqual([]);
    expect(server.stderr()).toBe('');
  });
});
