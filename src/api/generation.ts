import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import type { GenerationEvent, GenerationRequest, Usage } from '../engine/engine-types.js';
import type { SamplingParams } from '../engine/sampling-params.js';
import { ApiError, fromEngineError } from '../errors.js';
import type { ApiContext } from './api-context.js';

export type TokenEvent = Extract<GenerationEvent, { type: 'token' }>;
export type DoneEvent = Extract<GenerationEvent, { type: 'done' }>;

/** One engine request of an HTTP request (an HTTP request has one per prompt and choice). */
export interface GenerationJob {
  promptIds: number[];
  sampling: SamplingParams;
  /** Prefix cache use (opt-out, salt, pin). */
  prefix?: GenerationRequest['prefix'];
  /** Index of the job with the same prompt whose computed prompt KV this one copies (a sibling choice of `n` > 1). */
  forkOfJob?: number;
  /** The engine request id of that job (set by startGenerations). */
  forkOf?: string;
}

/**
 * One engine request as the API drives it: submitted, started once its first event arrived (refusals become
 * ApiErrors before any response is written), then iterated. Records its metrics and its log line when it ends.
 */
export class Generation implements AsyncIterable<GenerationEvent> {
  readonly id: string;
  /** null: the base model. */
  readonly adapter: string | null;
  readonly #ctx: ApiContext;
  readonly #job: GenerationJob;
  readonly #log: FastifyBaseLogger;
  /** The request field that named the model, for errors. */
  readonly #modelParam: string;
  #events: AsyncIterator<GenerationEvent> | null = null;
  #first: GenerationEvent | null = null;
  #aborted = false;
  /** The engine refused it (its first event was an error): the error answer accounts for it, not its metrics. */
  #refused = false;
  /** Metrics and log recorded: the generation is over for the API. */
  #finished = false;
  #submittedAt = 0;
  #firstTokenAt: number | null = null;
  #lastTokenAt: number | null = null;
  #completionTokens = 0;

  constructor(ctx: ApiContext, id: string, adapter: string | null, job: GenerationJob, modelParam: string, log: FastifyBaseLogger) {
    this.#ctx = ctx;
    this.id = id;
    this.adapter = adapter;
    this.#job = job;
    this.#modelParam = modelParam;
    this.#log = log;
  }

  /**
   * Submits the request and waits for its first event. An unknown adapter is looked up under the adapter roots and
   * loaded once; other refusals (queue full, invalid, shutting down) throw the matching ApiError.
   */
  async start(): Promise<void> {
    // Latencies count from the first submission: an on-demand adapter load is part of what the client waits for.
    this.#submittedAt = performance.now();
    for (let attempt = 0; ; attempt++) {
      const { promptIds, sampling, prefix, forkOf } = this.#job;
      this.#events = this.#ctx.engine.submit({ id: this.id, promptIds, adapter: this.adapter, sampling, prefix, forkOf })[Symbol.asyncIterator]();
      const first = await this.#events.next();
      if (first.done) throw new Error(`engine request ${this.id} ended without an event`);
      const event = first.value;
      if (event.type !== 'error') {
        this.#first = event;
        return;
      }
      this.#refused = true;
      if (event.code === 'adapter_not_found' && this.adapter !== null) {
        if (attempt === 0 && !this.#aborted && (await this.#ctx.models.loadOnDemand(this.adapter, this.#modelParam))) {
          this.#refused = false;
          // The client went away while the adapter loaded: end here rather than generate for nobody.
          if (this.#aborted) {
            this.#first = abortedBeforeStart(this.#job.promptIds.length);
            this.abort();
            return;
          }
          continue;
        }
        throw new ApiError('model_not_found', `The model '${this.adapter}' does not exist: it is not the base model (${this.#ctx.models.baseName}), a registered adapter, or an adapter directory under an adapter root.`, this.#modelParam);
      }
      throw fromEngineError(event.code, event.message, this.id);
    }
  }

  /** The prompt and the tokens delivered so far: the usage of a generation that ended in an error after streaming. */
  get usageSoFar(): Usage {
    return { promptTokens: this.#job.promptIds.length, completionTokens: this.#completionTokens, cachedTokens: 0 };
  }

  /**
   * Ends the request in the engine (client gone, a sibling failed); idempotent. While an on-demand adapter load is in
   * flight the engine holds nothing of it: `start` ends it when the load returns.
   */
  abort(): void {
    this.#aborted = true;
    if (this.#finished || this.#refused) return;
    this.#finish('abort', null, 'generation aborted');
    this.#ctx.engine.abort(this.id);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<GenerationEvent> {
    const events = this.#events;
    if (events === null) throw new Error(`generation ${this.id} was not started`);
    try {
      let event = this.#first;
      this.#first = null;
      while (event !== null) {
        this.#observe(event);
        yield event;
        if (event.type !== 'token') return;
        const next = await events.next();
        event = next.done ? null : next.value;
      }
    } finally {
      this.abort();
      await events.return?.();
    }
  }

  #observe(event: GenerationEvent): void {
    const now = performance.now();
    if (event.type === 'token') {
      this.#completionTokens++;
      if (this.#lastTokenAt === null) {
        this.#firstTokenAt = now;
        this.#ctx.metrics.observeFirstToken((now - this.#submittedAt) / 1000);
      } else {
        this.#ctx.metrics.observeInterToken((now - this.#lastTokenAt) / 1000);
      }
      this.#lastTokenAt = now;
    } else if (event.type === 'done') {
      this.#completionTokens = event.usage.completionTokens;
      this.#finish(event.finishReason, event.usage.cachedTokens, 'generation finished', {}, event.queueMs);
    } else {
      this.#finish('error', null, 'generation failed', { code: event.code, error: event.message });
    }
  }

  #finish(outcome: 'stop' | 'length' | 'abort' | 'error', cachedTokens: number | null, message: string, extra: object = {}, queueMs: number | null = null): void {
    if (this.#finished) return;
    this.#finished = true;
    const seconds = (performance.now() - this.#submittedAt) / 1000;
    const promptTokens = this.#job.promptIds.length;
    this.#ctx.metrics.observeFinished({ outcome, promptTokens, completionTokens: this.#completionTokens, seconds, queueSeconds: queueMs === null ? null : queueMs / 1000 });
    const ttftMs = this.#firstTokenAt === null ? null : round(this.#firstTokenAt - this.#submittedAt);
    const record = {
      generationId: this.id,
      adapter: this.adapter,
      outcome,
      promptTokens,
      completionTokens: this.#completionTokens,
      cachedTokens,
      ttftMs,
      durationMs: round(seconds * 1000),
      ...extra,
    };
    if (outcome === 'error') this.#log.warn(record, message);
    else this.#log.info(record, message);
  }
}

/** The only event of a generation aborted before the engine ever ran it. */
function abortedBeforeStart(promptTokens: number): DoneEvent {
  return { type: 'done', finishReason: 'abort', text: '', stopReason: null, usage: { promptTokens, completionTokens: 0, cachedTokens: 0 }, queueMs: null };
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** Levels at which prompt token ids are logged (never at info). */
const DEBUG_LEVELS = new Set(['debug', 'trace']);

/**
 * Jobs for `n` choices of each prompt, prompt-major (choice index = prompt × n + i); choice i samples with seed + i.
 * Choices after a prompt's first copy its computed prompt rather than compute it again.
 */
export function choiceJobs(prompts: number[][], sampling: SamplingParams, n: number, prefix?: GenerationRequest['prefix']): GenerationJob[] {
  return prompts.flatMap((promptIds, p) =>
    Array.from({ length: n }, (_, i) => ({
      promptIds,
      sampling: sampling.seed === null ? sampling : { ...sampling, seed: sampling.seed + i },
      ...(prefix ? { prefix } : {}),
      ...(i > 0 ? { forkOfJob: p * n } : {}),
    })),
  );
}

/**
 * Starts one generation per job for the adapter that `model` selects, and aborts them all when the client goes away.
 * When any is refused, the others are aborted and the refusal is thrown.
 */
export async function startGenerations(
  ctx: ApiContext,
  request: FastifyRequest,
  reply: FastifyReply,
  model: string | null | undefined,
  modelParam: string,
  jobs: GenerationJob[],
): Promise<Generation[]> {
  const adapter = ctx.models.adapterOf(model);
  const ids = jobs.map((_, i) => (jobs.length === 1 ? request.id : `${request.id}-${i}`));
  const generations = jobs.map((job, i) => {
    const forkOf = job.forkOfJob === undefined ? {} : { forkOf: ids[job.forkOfJob] };
    return new Generation(ctx, ids[i], adapter, { ...job, ...forkOf }, modelParam, request.log);
  });
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) for (const g of generations) g.abort();
  });
  if (DEBUG_LEVELS.has(request.log.level)) request.log.debug({ adapter, prompts: jobs.map((j) => j.promptIds) }, 'generation prompts');
  const started = await Promise.allSettled(generations.map((g) => g.start()));
  const refused = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (refused) {
    for (const g of generations) g.abort();
    throw refused.reason;
  }
  return generations;
}

export interface Collected {
  tokens: TokenEvent[];
  text: string;
  done: DoneEvent;
}

/** Runs a started generation to its end; an engine error becomes the matching ApiError. */
export async function collect(generation: Generation): Promise<Collected> {
  const tokens: TokenEvent[] = [];
  let text = '';
  for await (const event of generation) {
    if (event.type === 'token') {
      tokens.push(event);
      text += event.text;
    } else if (event.type === 'done') {
      return { tokens, text: text + event.text, done: event };
    } else {
      throw fromEngineError(event.code, event.message, generation.id);
    }
  }
  throw new Error(`generation ${generation.id} ended without a done event`);
}

/** Runs started generations to their ends; when one fails, the others are aborted (nobody will read them) and its error is thrown. */
export async function collectAll(generations: Generation[]): Promise<Collected[]> {
  try {
    return await Promise.all(generations.map(collect));
  } catch (err) {
    for (const g of generations) g.abort();
    throw err;
  }
}

/** The events of several generations as they arrive, tagged with the generation's index; ending early aborts them all. */
export async function* merge(generations: Generation[]): AsyncGenerator<{ index: number; event: GenerationEvent }> {
  const iterators = generations.map((g) => g[Symbol.asyncIterator]());
  const next = (index: number) => iterators[index].next().then((result) => ({ index, result }));
  const pending = new Map(iterators.map((_, index) => [index, next(index)]));
  try {
    while (pending.size > 0) {
      const { index, result } = await Promise.race(pending.values());
      if (result.done) {
        pending.delete(index);
        continue;
      }
      pending.set(index, next(index));
      yield { index, event: result.value };
    }
  } finally {
    for (const g of generations) g.abort();
  }
}
