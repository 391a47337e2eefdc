import { pino } from 'pino';
import type { DestinationStream, Logger } from 'pino';

/**
 * The server's JSON logger. Request records carry `reqId` (fastify binds it); generation records add the adapter,
 * token counts and timings. Prompt text is logged only at debug level, and keys never.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: 'loraserve' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['req.headers.authorization', 'headers.authorization'], censor: '[redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
}
