import type { FastifyError, FastifySchemaValidationError } from 'fastify';
import { EngineError } from '../engine/engine.js';
import { ApiError } from '../errors.js';

/** OpenAI-style field path of a validation error: `messages[0].role`, `temperature`; null for the body itself. */
function fieldPath(v: FastifySchemaValidationError): string | null {
  const parts = v.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const { missingProperty, additionalProperty } = v.params as { missingProperty?: string; additionalProperty?: string };
  if (v.keyword === 'required' && missingProperty) parts.push(missingProperty);
  if (v.keyword === 'additionalProperties' && additionalProperty) parts.push(additionalProperty);
  if (parts.length === 0) return null;
  return parts.reduce((path, part) => (/^\d+$/.test(part) ? `${path}[${part}]` : path ? `${path}.${part}` : part), '');
}

function validationError(errors: FastifySchemaValidationError[], context: string | undefined): ApiError {
  // With anyOf, ajv reports each branch's failure and then the anyOf itself, which is the one that names the field.
  const v = errors.find((e) => e.keyword === 'anyOf') ?? errors[0];
  const param = fieldPath(v);
  const subject = param ?? context ?? 'body';
  const problem = v.keyword === 'required' ? 'is required'
    : v.keyword === 'anyOf' ? 'has none of the accepted forms (see /docs)'
      : v.keyword === 'additionalProperties' ? 'is not supported by this server (see /docs for the fields it implements)'
        : v.keyword === 'enum' ? `must be one of ${JSON.stringify((v.params as { allowedValues?: unknown[] }).allowedValues ?? [])}`
          : v.message;
  return new ApiError('invalid_request', `${subject} ${problem}`, param);
}

/** The API error to answer for anything a route or fastify threw; an unexpected one is internal_error naming the request. */
export function toApiError(err: unknown, requestId: string): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof EngineError) return new ApiError('engine_error', `${err.message} (request id ${requestId})`);
  const e = err as Partial<FastifyError>;
  if (e.validation) return validationError(e.validation, e.validationContext);
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new ApiError('request_too_large', e.message ?? 'the request body is too large');
  if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new ApiError('unsupported_media_type', 'the request body must be application/json');
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500 && e.message) return new ApiError('invalid_request', e.message);
  return new ApiError('internal_error', `internal error (request id ${requestId})`);
}

/**
 * The raw response for a connection Node refuses before any route runs: 408 when the client did not send the headers
 * and body within --request-timeout, 400 for anything else (malformed HTTP, headers above Node's 16 KiB).
 */
export function clientErrorResponse(err: NodeJS.ErrnoException): string {
  const apiError = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
    ? new ApiError('request_timeout', 'the request was not received within the request timeout; the connection is closed')
    : new ApiError('invalid_request', 'the request is not valid HTTP/1.1 (malformed, or headers larger than 16 KiB)');
  const body = JSON.stringify(apiError.toBody());
  const reason = apiError.status === 408 ? 'Request Timeout' : 'Bad Request';
  return `HTTP/1.1 ${apiError.status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}
