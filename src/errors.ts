import type { AdapterErrorCode } from './adapters/adapter-error.js';
import type { EngineErrorCode } from './engine/engine-types.js';

/** OpenAI's `error.type` values; clients branch on the HTTP status, humans read the type. */
export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error'
  | 'service_unavailable_error';

export interface ErrorSpec {
  status: number;
  type: ErrorType;
}

/**
 * Every error the API answers, by stable code. openapi.yaml lists the same codes (`ErrorCode`); a test keeps the two in
 * step both ways.
 */
export const ERRORS = {
  /** A parameter is missing, malformed or out of range; `param` names it. */
  invalid_request: { status: 400, type: 'invalid_request_error' },
  /** Prompt tokens + max tokens exceed the context length. */
  context_length_exceeded: { status: 400, type: 'invalid_request_error' },
  /** The chat template refused the messages (e.g. roles that do not alternate) or failed. */
  chat_template_error: { status: 400, type: 'invalid_request_error' },
  /** A key is required and the request has none, or a wrong one. */
  invalid_api_key: { status: 401, type: 'authentication_error' },
  /** An adapter path, or a file of the adapter, resolves outside the adapter roots (or there are none). */
  adapter_path_not_allowed: { status: 403, type: 'permission_error' },
  /** No such route. */
  not_found: { status: 404, type: 'not_found_error' },
  /** `model` names neither the base model, a registered adapter, nor an adapter under a root. */
  model_not_found: { status: 404, type: 'invalid_request_error' },
  /** No adapter is registered under the name. */
  adapter_not_found: { status: 404, type: 'not_found_error' },
  request_too_large: { status: 413, type: 'invalid_request_error' },
  /** The client took longer than --request-timeout to send the request's headers and body; the connection is closed. */
  request_timeout: { status: 408, type: 'invalid_request_error' },
  unsupported_media_type: { status: 415, type: 'invalid_request_error' },
  /** The adapter path does not exist, or holds no PEFT adapter. */
  adapter_path_not_found: { status: 400, type: 'invalid_request_error' },
  // The adapter refusals of src/adapters/adapter-error.ts, one code each.
  adapter_invalid: { status: 400, type: 'invalid_request_error' },
  adapter_unsupported: { status: 400, type: 'invalid_request_error' },
  adapter_rank_too_large: { status: 400, type: 'invalid_request_error' },
  adapter_shape_mismatch: { status: 400, type: 'invalid_request_error' },
  adapter_missing_tensor: { status: 400, type: 'invalid_request_error' },
  adapter_unexpected_tensor: { status: 400, type: 'invalid_request_error' },
  adapter_nonfinite: { status: 400, type: 'invalid_request_error' },
  /** The adapter cannot be given a slot right now. */
  adapter_unavailable: { status: 503, type: 'service_unavailable_error' },
  /** The waiting queue is full (--max-waiting). */
  queue_full: { status: 429, type: 'rate_limit_error' },
  /** The engine failed while running the request; the message names the request id. */
  engine_error: { status: 500, type: 'server_error' },
  /** An unexpected failure in the server; the message names the request id, the log has the details. */
  internal_error: { status: 500, type: 'server_error' },
  /** The server is draining before it stops: requests in flight finish, new ones are refused. */
  shutting_down: { status: 503, type: 'service_unavailable_error' },
  /** The engine stopped serving (its worker died); the server exits so that a supervisor restarts it. */
  engine_unavailable: { status: 503, type: 'service_unavailable_error' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** An error answered to the client as `{"error": {message, type, param, code}}` with the catalog's status. */
export class ApiError extends Error {
  override readonly name = 'ApiError';

  constructor(
    readonly code: ErrorCode,
    message: string,
    /** The request field at fault (OpenAI's `param`), e.g. `temperature` or `messages[0].role`. */
    readonly param: string | null = null,
  ) {
    super(message);
  }

  get status(): number {
    return ERRORS[this.code].status;
  }

  toBody(): ErrorBody {
    return { error: { message: this.message, type: ERRORS[this.code].type, param: this.param, code: this.code } };
  }
}

export interface ErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: ErrorCode };
}

const FROM_ENGINE: Readonly<Record<EngineErrorCode, ErrorCode>> = {
  adapter_not_found: 'model_not_found',
  adapter_invalid: 'adapter_invalid',
  adapter_path_not_allowed: 'adapter_path_not_allowed',
  adapter_unavailable: 'adapter_unavailable',
  invalid_request: 'invalid_request',
  queue_full: 'queue_full',
  engine_error: 'engine_error',
  shutting_down: 'shutting_down',
};

/** The API error for a request the engine refused or failed; an engine failure names the request id. */
export function fromEngineError(code: EngineErrorCode, message: string, requestId: string): ApiError {
  const apiCode = FROM_ENGINE[code];
  return new ApiError(apiCode, apiCode === 'engine_error' ? `${message} (request id ${requestId})` : message);
}

const FROM_ADAPTER: Readonly<Record<AdapterErrorCode, ErrorCode>> = {
  adapter_not_found: 'adapter_path_not_found',
  adapter_path_not_allowed: 'adapter_path_not_allowed',
  adapter_invalid: 'adapter_invalid',
  adapter_unsupported: 'adapter_unsupported',
  adapter_rank_too_large: 'adapter_rank_too_large',
  adapter_shape_mismatch: 'adapter_shape_mismatch',
  adapter_missing_tensor: 'adapter_missing_tensor',
  adapter_unexpected_tensor: 'adapter_unexpected_tensor',
  adapter_nonfinite: 'adapter_nonfinite',
};

/** The API error for an adapter that could not be loaded from its directory; `param` is the field that named it. */
export function fromAdapterLoadError(code: AdapterErrorCode, message: string, param: string): ApiError {
  return new ApiError(FROM_ADAPTER[code], message, param);
}
