import { expect } from 'vitest';
import type { ErrorCode } from '../../../src/errors.js';
import { ERRORS } from '../../../src/errors.js';

/** A whole answer, read to the end. */
export interface Answer {
  status: number;
  contentType: string;
  text: string;
}

export interface CallOptions {
  /** A string or bytes are sent as-is; anything else as JSON. */
  body?: unknown;
  headers?: Record<string, string>;
  /** The whole exchange, body included; past it the call rejects. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** One HTTP exchange with the server; a JSON body gets `content-type: application/json` unless headers say otherwise. */
export async function call(base: string, method: string, path: string, options: CallOptions = {}): Promise<Answer> {
  const { body, timeoutMs = 30_000 } = options;
  const headers: Record<string, string> = { ...options.headers };
  let payload: string | Uint8Array | undefined;
  if (typeof body === 'string' || body instanceof Uint8Array) payload = body;
  else if (body !== undefined) {
    payload = JSON.stringify(body);
    if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
  }
  const signal = options.signal ? AbortSignal.any([options.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
  const response = await fetch(`${base}${path}`, { method, headers, body: payload, signal });
  const text = await response.text();
  return { status: response.status, contentType: response.headers.get('content-type') ?? '', text };
}

/** POST with a JSON body. */
export function post(base: string, path: string, body: unknown, options: Omit<CallOptions, 'body'> = {}): Promise<Answer> {
  return call(base, 'POST', path, { ...options, body });
}

/**
 * Absolute paths of the machine the server runs on: the temp dir, the checkout, home directories. None may reach a
 * client (client-supplied text is never built from these prefixes in this suite).
 */
const SERVER_PATH = /(?:^|[^\w.~-])\/(?:tmp|home|root|work|usr|var|opt|srv|proc|run|mnt)\//;
/** A JavaScript stack frame. */
const STACK_FRAME = /\n\s+at [^\n]+\(/;

/** Asserts the text shows no server path, no stack trace and none of `secrets`. */
export function expectNoLeak(text: string, secrets: readonly string[] = []): void {
  expect(text, 'an absolute server path reached the client').not.toMatch(SERVER_PATH);
  expect(text, 'a stack trace reached the client').not.toMatch(STACK_FRAME);
  for (const secret of secrets) expect(text, 'file content reached the client').not.toContain(secret);
}

/**
 * Asserts an OpenAI-style error answer: `{"error": {message, type, param, code}}` with a catalog code whose status and
 * type it carries, and no leak. Returns the code.
 */
export function expectApiError(answer: Answer, secrets: readonly string[] = []): ErrorCode {
  const context = `HTTP ${answer.status}: ${answer.text.slice(0, 300)}`;
  expect(answer.contentType, context).toMatch(/^application\/json/);
  const body = JSON.parse(answer.text) as { error?: Record<string, unknown> };
  expect(Object.keys(body), context).toEqual(['error']);
  const { message, type, param, code } = body.error ?? {};
  expect(typeof message, context).toBe('string');
  expect(param === null || typeof param === 'string', context).toBe(true);
  expect(Object.keys(ERRORS), context).toContain(code);
  const spec = ERRORS[code as ErrorCode];
  expect({ status: answer.status, type }, context).toEqual({ status: spec.status, type: spec.type });
  expectNoLeak(answer.text, secrets);
  return code as ErrorCode;
}

/** Asserts a 4xx catalog error (a client mistake, never a server failure); returns the code. */
export function expectClientError(answer: Answer, secrets: readonly string[] = []): ErrorCode {
  expect(answer.status, `expected a 4xx, got HTTP ${answer.status}: ${answer.text.slice(0, 300)}`).toBeGreaterThanOrEqual(400);
  expect(answer.status, `expected a 4xx, got HTTP ${answer.status}: ${answer.text.slice(0, 300)}`).toBeLessThan(500);
  return expectApiError(answer, secrets);
}

/** Greedy completion token ids for `model` (via /generate details, which names every token's id). */
export async function greedyIds(base: string, model: string | null, inputs: string, maxNewTokens = 12): Promise<number[]> {
  const answer = await post(base, '/generate', { inputs, parameters: { adapter_id: model, max_new_tokens: maxNewTokens, details: true } });
  expect(answer.status, answer.text.slice(0, 300)).toBe(200);
  return (JSON.parse(answer.text) as { details: { tokens: { id: number }[] } }).details.tokens.map((t) => t.id);
}

/** A streamed answer being read: `started` once its first bytes arrive, `done` with the status and whole text. */
export interface OpenStream {
  started: Promise<void>;
  done: Promise<{ status: number; text: string }>;
}

/** POSTs a JSON body and reads the (SSE) answer as it comes; a cut connection rejects `done`. */
export function openStream(base: string, path: string, body: unknown, timeoutMs = 60_000): OpenStream {
  let markStarted: () => void = () => undefined;
  const started = new Promise<void>((resolve) => { markStarted = resolve; });
  const done = (async () => {
    const response = await fetch(`${base}${path}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs),
    });
    const decoder = new TextDecoder();
    let text = '';
    for await (const chunk of response.body ?? []) {
      text += decoder.decode(chunk as Uint8Array, { stream: true });
      markStarted();
    }
    markStarted();
    return { status: response.status, text };
  })();
  done.catch(() => markStarted());
  return { started, done };
}
