// One streamed completion against the server through the official OpenAI client, timestamped per chunk.
import OpenAI from 'openai';
import type { BenchRequest } from './workload.js';

/** What one request measured. Times are ms; a failed request has only `error` and its timing up to the failure. */
export interface RequestRecord {
  /** The request's `model`: an adapter name or the base model's name. */
  model: string;
  /** Null when the request completed; else its error code (the server's `error.code`, or `http_STATUS`, `timeout`…). */
  error: string | null;
  /** When it was sent, ms after the load point started. */
  sentMs: number;
  /** Time to the first chunk with text. */
  ttftMs: number | null;
  /**
   * Time to the first chunk with a choice, text or not (the finish): the server sends one only once a token is
   * sampled, so with max_tokens 1 it is the time to the one token even when that token's text is empty.
   */
  firstChunkMs: number | null;
  /** Gaps between consecutive chunks with text. */
  itlMs: number[];
  /** Send to the end of the stream. */
  e2eMs: number;
  promptTokens: number;
  outputTokens: number;
  /** `usage.prompt_tokens_details.cached_tokens`, 0 when the server does not report it. */
  cachedTokens: number;
}

export interface ServedModels {
  base: string;
  /** Registered adapters, in the server's order. */
  adapters: string[];
}

/** Error code of a failed request: the server's, else a name for how it failed. */
function errorCode(err: unknown): string {
  if (err instanceof OpenAI.APIConnectionTimeoutError) return 'timeout';
  if (err instanceof OpenAI.APIConnectionError) return 'connection_error';
  if (err instanceof OpenAI.APIError) return err.code ?? (err.status === undefined ? 'stream_error' : `http_${err.status}`);
  return 'stream_error';
}

export class BenchClient {
  readonly #client: OpenAI;

  /** `url` is the server's origin (`http://host:port`). */
  constructor(url: string, apiKey: string | null, timeoutMs: number) {
    // No retries: a failure is a measurement, counted with its code.
    this.#client = new OpenAI({ baseURL: `${url}/v1`, apiKey: apiKey ?? 'none', maxRetries: 0, timeout: timeoutMs });
  }

  /** GET /v1/models: the base model (no parent) and the registered adapters. */
  async models(): Promise<ServedModels> {
    const page = await this.#client.models.list();
    const cards = page.data as (OpenAI.Models.Model & { parent?: string | null })[];
    const base = cards.find((m) => !m.parent);
    if (!base) throw new Error('GET /v1/models lists no base model');
    return { base: base.id, adapters: cards.filter((m) => m.parent).map((m) => m.id) };
  }

  /**
   * Sends `request` as a streamed completion (`ignore_eos`, greedy, `cache_prompt` as given) at `origin` ms and
   * records its timing.
   */
  async send(request: BenchRequest, origin: number, cachePrompt: boolean): Promise<RequestRecord> {
    const start = performance.now();
    const record: RequestRecord = {
      model: request.model, error: null, sentMs: start - origin, ttftMs: null, firstChunkMs: null, itlMs: [], e2eMs: 0, promptTokens: request.promptIds.length,
      outputTokens: 0, cachedTokens: 0,
    };
    try {
      const body = {
        model: request.model, prompt: request.promptIds, max_tokens: request.maxTokens, temperature: 0, stream: true as const,
        stream_options: { include_usage: true }, ignore_eos: true, cache_prompt: cachePrompt,
      };
      const stream = await this.#client.completions.create(body as OpenAI.CompletionCreateParamsStreaming);
      let last = 0;
      let usage: OpenAI.CompletionUsage | null = null;
      for await (const chunk of stream) {
        const now = performance.now();
        if (chunk.usage) usage = chunk.usage;
        if (chunk.choices.length > 0) record.firstChunkMs ??= now - start;
        if (!chunk.choices.some((c) => c.text !== '')) continue;
        if (record.ttftMs === null) record.ttftMs = now - start;
        else record.itlMs.push(now - last);
        last = now;
      }
      record.e2eMs = performance.now() - start;
      if (usage === null) {
        record.error = 'incomplete_stream';
      } else {
        record.promptTokens = usage.prompt_tokens;
        record.outputTokens = usage.completion_tokens;
        record.cachedTokens = usage.prompt_tokens_details?.cached_tokens ?? 0;
      }
    } catch (err) {
      record.e2eMs = performance.now() - start;
      record.error = errorCode(err);
    }
    return record;
  }
}
