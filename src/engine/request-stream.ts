import { StreamingDetokenizer } from '../model/detokenizer.js';
import type { Tokenizer } from '../model/tokenizer.js';
import type { EngineErrorCode, FinishReason, GenerationEvent, GenerationRequest } from './engine-types.js';
import { StopStringMatcher } from './stop-criteria.js';
import type { DoneOut, TokenOut } from './worker-protocol.js';

/**
 * One request's events on the main thread: turns the worker's token ids into text (never splitting a character),
 * applies stop strings (ending the request early through `onStop`), and queues events for the consumer's iterator.
 */
export class RequestStream implements AsyncIterable<GenerationEvent> {
  readonly request: GenerationRequest;
  readonly #detokenizer: StreamingDetokenizer;
  readonly #stop: StopStringMatcher;
  readonly #onStop: () => void;
  readonly #queue: GenerationEvent[] = [];
  #notify: (() => void) | null = null;
  #ended = false;
  #completionTokens = 0;

  /** `onStop` tells the engine to free the request: it ended here (stop string, consumer gone), not in the worker. */
  constructor(request: GenerationRequest, tokenizer: Tokenizer, onStop: () => void) {
    this.request = request;
    this.#detokenizer = new StreamingDetokenizer(tokenizer, { skipSpecialTokens: true, promptIds: [...request.promptIds] });
    this.#stop = new StopStringMatcher(request.sampling.stop);
    this.#onStop = onStop;
  }

  get ended(): boolean {
    return this.#ended;
  }

  onToken(t: TokenOut): void {
    if (this.#ended) return;
    this.#completionTokens++;
    const text = t.stopToken ? '' : this.#detokenizer.push(t.tokenId);
    const check = this.#stop.check(text);
    this.#push({ type: 'token', tokenId: t.tokenId, text: check.emit, logprob: t.logprob, topLogprobs: t.topLogprobs });
    if (check.stop !== null) {
      this.#end('stop', '', check.stop);
      this.#onStop();
    }
  }

  onDone(d: DoneOut): void {
    if (this.#ended) return;
    const check = this.#stop.check(this.#detokenizer.flush());
    this.#end(check.stop !== null ? 'stop' : d.finishReason, check.emit + this.#stop.flush(), check.stop ?? d.stopReason, d);
  }

  onError(code: EngineErrorCode, message: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#push({ type: 'error', code, message });
  }

  /** Ends the request from the main thread (abort, shutdown): the consumer sees `done` with `abort`. */
  abort(): void {
    if (this.#ended) return;
    this.#end('abort', '', null);
    this.#onStop();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<GenerationEvent> {
    try {
      for (;;) {
        const event = this.#queue.shift();
        if (event) {
          yield event;
          if (event.type !== 'token') return;
          continue;
        }
        await new Promise<void>((resolve) => { this.#notify = resolve; });
      }
    } finally {
      // The consumer stopped listening (client gone, break): free what the request holds.
      this.abort();
    }
  }

  /** `reported`: what the engine said when it finished the request; null when the main thread ends it. */
  #end(finishReason: FinishReason, text: string, stopReason: string | number | null, reported: DoneOut | null = null): void {
    this.#ended = true;
    const prefixTokens = reported?.usage.prefixTokens;
    this.#push({
      type: 'done',
      finishReason,
      text,
      stopReason,
      usage: {
        promptTokens: this.request.promptIds.length,
        completionTokens: this.#completionTokens,
        cachedTokens: reported?.usage.cachedTokens ?? 0,
        ...(prefixTokens === undefined ? {} : { prefixTokens }),
      },
      queueMs: reported?.queueMs ?? null,
    });
  }

  #push(event: GenerationEvent): void {
    this.#queue.push(event);
    this.#notify?.();
    this.#notify = null;
  }
}
