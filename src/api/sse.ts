import { Readable } from 'node:stream';
import type { FastifyReply } from 'fastify';

/** One server-sent event carrying a JSON payload. */
export function sseEvent(payload: unknown): string {
  return `data: ${JSON.stringify(payload)}\n\n`;
}

/** The OpenAI end-of-stream marker. */
export const SSE_DONE = 'data: [DONE]\n\n';

/**
 * Answers with an event stream. When the client goes away, the stream is destroyed, which ends `events` (its
 * `finally` blocks run), so a generator that iterates engine events aborts them.
 */
export function sendEventStream(reply: FastifyReply, events: AsyncIterable<string>): FastifyReply {
  reply.headers({
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    // Proxies such as nginx would otherwise hold the events back.
    'x-accel-buffering': 'no',
  });
  return reply.send(Readable.from(events, { objectMode: false }));
}
