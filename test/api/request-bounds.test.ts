import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/main.js';
import type { Fixture } from './support.js';
import { expectResponse, makeFixture, startTestServer } from './support.js';

let fixture: Fixture;
let server: RunningServer;
/** The longest vocabulary entry of the fixture's byte-level tokenizer (`<|im_start|>`), in characters. */
const LONGEST_TOKEN = 12;
/** Context 256: a prompt of fewer than 256 tokens holds at most 255 × 12 characters. */
const MAX_CHARS = 255 * LONGEST_TOKEN;

beforeAll(async () => {
  fixture = makeFixture();
  server = await startTestServer(fixture, ['--max-waiting', '3']);
});
afterAll(async () => {
  await server?.close(0);
  fixture?.cleanup();
});

const send = (method: string, path: string, body?: string, contentType = 'application/json') =>
  fetch(`${server.url}${path}`, { method, headers: { 'content-type': contentType }, ...(body === undefined ? {} : { body }) });
const post = (path: string, body: object) => send('POST', path, JSON.stringify(body));

/** The fields of response bodies these tests read. */
interface Answer {
  error: { code: string; message: string; param: string | null };
  choices: unknown[];
  count: number;
  pinned: boolean;
}
const answer = async (r: Response) => (await r.json()) as Answer;

describe('generations per request (--max-waiting 3)', () => {
  it.each([
    ['more prompts than the queue holds', { prompt: ['a', 'b', 'c', 'd'] }, 'prompt'],
    ['prompts × n above it', { prompt: ['a', 'b'], n: 2 }, 'n'],
  ])('refuses %s with 400 naming the field, not 429', async (_, fields, param) => {
    const r = await post('/v1/completions', { ...fields, max_tokens: 1 });
    expect(r.status).toBe(400);
    const body = await answer(r);
    expect(body.error).toMatchObject({ code: 'invalid_request', param });
    expect(body.error.message).toContain('more than the server queues at once (3)');
    expectResponse(server.app, 'createCompletion', 400, body);
  });

  it('refuses a chat n above it, and serves one at the bound', async () => {
    const messages = [{ role: 'user', content: 'hi' }];
    const refused = await post('/v1/chat/completions', { messages, n: 4, max_tokens: 1 });
    expect((await answer(refused)).error).toMatchObject({ code: 'invalid_request', param: 'n' });
    const served = await post('/v1/completions', { prompt: ['a', 'b', 'c'], max_tokens: 1 });
    expect(served.status).toBe(200);
    expect((await answer(served)).choices).toHaveLength(3);
  });
});

describe('prompt length', () => {
  it.each([
    { path: '/v1/completions', param: 'prompt', body: (text: string) => ({ prompt: text, max_tokens: 1 }) },
    { path: '/v1/completions', param: 'prompt[1]', body: (text: string) => ({ prompt: ['ok', text], max_tokens: 1 }) },
    { path: '/generate', param: 'inputs', body: (text: string) => ({ inputs: text }) },
    { path: '/tokenize', param: 'prompt', body: (text: string) => ({ prompt: text }) },
    { path: '/v1/chat/completions', param: 'messages', body: (text: string) => ({ messages: [{ role: 'user', content: text }] }) },
  ])('$path refuses a text in $param that no prompt within the context can hold, by its length', async ({ path, body, param }) => {
    const r = await post(path, body('é'.repeat(MAX_CHARS + 1)));
    expect(r.status).toBe(400);
    const { error } = await answer(r);
    expect(error).toMatchObject({ code: 'context_length_exceeded', param });
    expect(error.message).toMatch(/maximum context length is 256 tokens, but the prompt has \d+ characters: more than 255 tokens can hold \(at most 3060\)/);
  });

  it('still tokenizes a text at the bound, and counts its tokens', async () => {
    const r = await post('/tokenize', { prompt: 'é'.repeat(MAX_CHARS / 2) });
    expect(r.status).toBe(200);
    expect((await answer(r)).count).toBe(MAX_CHARS);
    const long = await post('/v1/completions', { prompt: 'x'.repeat(300), max_tokens: 1 });
    expect((await answer(long)).error.message).toContain('the prompt has 300 tokens');
  });

  it('renders a large conversation off the event loop: /health answers while it is prepared', async () => {
    // Rendering 40,000 messages with the chat template takes about a second; the rendered text is then too long.
    const messages = Array.from({ length: 40_000 }, (_, i) => ({ role: i % 2 === 0 ? 'user' : 'assistant', content: '' }));
    const order: string[] = [];
    const chat = post('/v1/chat/completions', { messages }).then(async (r) => {
      order.push('chat');
      return answer(r);
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const health = await fetch(`${server.url}/health`);
    order.push('health');
    expect(health.status).toBe(200);
    expect((await chat).error).toMatchObject({ code: 'context_length_exceeded', param: 'messages' });
    expect(order).toEqual(['health', 'chat']);
  });
});

describe('bodies', () => {
  it('accepts bodiless requests sent with Content-Type: application/json, as SDKs send them', async () => {
    expect((await post('/v1/adapters', { name: 'bodiless', path: join(fixture.root, 'alpha') })).status).toBe(200);
    const pin = await send('POST', '/v1/adapters/bodiless/pin');
    expect(pin.status).toBe(200);
    expect((await answer(pin)).pinned).toBe(true);
    const deleted = await send('DELETE', '/v1/adapters/bodiless');
    expect(deleted.status).toBe(200);
    expect(await answer(deleted)).toEqual({ object: 'adapter', name: 'bodiless', deleted: true });
  });

  it('refuses an empty body where one is required, and a text/plain body with 415', async () => {
    const empty = await send('POST', '/v1/completions');
    expect(empty.status).toBe(400);
    expect((await answer(empty)).error.code).toBe('invalid_request');
    const text = await send('POST', '/v1/completions', '{"prompt": "x"}', 'text/plain');
    expect(text.status).toBe(415);
    expect((await answer(text)).error.code).toBe('unsupported_media_type');
  });
});
