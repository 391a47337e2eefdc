import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/main.js';
import type { Fixture } from './support.js';
import { makeFixture, startTestServer } from './support.js';

let fixture: Fixture;
let server: RunningServer;

beforeAll(async () => {
  fixture = makeFixture();
  server = await startTestServer(fixture, ['--request-timeout', '1', '--keep-alive-timeout', '1']);
});
afterAll(async () => {
  await server?.close(0);
  fixture?.cleanup();
});

interface Outcome {
  /** What the server wrote before it closed the connection. */
  received: string;
  /** Bytes the client had sent by then. */
  sent: number;
}

/** The test gives up on a server that holds a slow connection this long (it held them for minutes before). */
const GIVE_UP_MS = 20_000;

/**
 * Opens a raw connection, writes `head` at once and then `trickled` one byte every 100 ms, and resolves when the
 * server closes the connection.
 */
function trickle(head: string, trickled: string): Promise<Outcome> {
  const url = new URL(server.url);
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(Number(url.port), url.hostname);
    let received = '';
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    const giveUp = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server still held the connection after ${GIVE_UP_MS} ms (${sent} bytes trickled)`));
    }, GIVE_UP_MS);
    socket.on('data', (d: Buffer) => { received += d.toString('utf8'); });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearInterval(timer);
      clearTimeout(giveUp);
      resolve({ received, sent });
    });
    socket.on('connect', () => {
      socket.write(head);
      timer = setInterval(() => {
        if (sent < trickled.length && !socket.destroyed) socket.write(trickled[sent++]);
      }, 100);
    });
  });
}

const body = JSON.stringify({ prompt: 'x'.repeat(400), max_tokens: 1 });

describe('slow clients (--request-timeout 1, --keep-alive-timeout 1)', () => {
  it('answers 408 with the catalog body to a body that trickles in, and serves others meanwhile', async () => {
    const slow = trickle(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`, body);
    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(200);
    const { received, sent } = await slow;
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(received.slice(received.indexOf('\r\n\r\n') + 4))).toEqual({
      error: { message: expect.stringContaining('request timeout'), type: 'invalid_request_error', param: null, code: 'request_timeout' },
    });
    // Cut within the timeout plus one check interval, long before the body was complete.
    expect(sent).toBeLessThan(body.length);
  });

  it('answers 408 to headers that trickle in', async () => {
    const headers = 'GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: ' + 'y'.repeat(200) + '\r\n\r\n';
    const { received, sent } = await trickle('', headers);
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    expect(sent).toBeLessThan(headers.length);
  });

  it('closes a keep-alive connection left idle', async () => {
    const { received } = await trickle('GET /health HTTP/1.1\r\nHost: x\r\n\r\n', '');
    expect(received).toMatch(/^HTTP\/1\.1 200 /);
    expect(received).toContain('{"status":"ok",');
  });
});
