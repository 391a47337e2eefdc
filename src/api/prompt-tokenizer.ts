import type { Worker } from 'node:worker_threads';
import type { ChatMessage, Tokenizer } from '../model/tokenizer.js';
import { ChatTemplateError } from '../model/tokenizer.js';
import { spawnWorker } from '../spawn-worker.js';
import { ApiError } from '../errors.js';

/** What the worker is asked: a text to tokenize, or a conversation to render with the chat template and tokenize. */
export type TokenizeJob =
  | { kind: 'text'; text: string; addSpecialTokens: boolean }
  | { kind: 'chat'; messages: ChatMessage[]; addGenerationPrompt: boolean; addSpecialTokens: boolean; maxChars: number };

export type TokenizeResult =
  | { outcome: 'ids'; ids: Uint32Array<ArrayBuffer> }
  | { outcome: 'too_long'; chars: number }
  | { outcome: 'template_error'; message: string }
  | { outcome: 'failed'; message: string };

/** Messages to and from the worker carry the call's id. */
export interface TokenizeCall { id: number; job: TokenizeJob }
export interface TokenizeReply { id: number; result: TokenizeResult }

/** A worker thread and the calls it has not answered yet. */
interface RunningWorker {
  thread: Worker;
  pending: Map<number, { resolve: (result: TokenizeResult) => void; reject: (err: Error) => void }>;
}

/**
 * Texts up to this many characters are tokenized on the HTTP thread; longer ones in the worker. Measured with the Qwen3
 * tokenizer, 256 characters cost 0.15 ms of prose and 0.8 ms of the slowest text found (one CJK character repeated,
 * which byte-level BPE merges quadratically: 1 KiB of it takes 5 ms, 64 KiB 1.2 s); a round trip to the worker 0.06 ms.
 */
const INLINE_MAX_CHARS = 256;

/**
 * Turns prompt text into token ids without stalling the event loop. A text longer than any prompt that fits the context
 * could be is refused at once, by its length: no token stands for more characters than the longest vocabulary entry
 * (a byte-level entry has one character per byte, and every input character is at least one byte), so `maxChars` =
 * (context − 1) × that length is the most a prompt of fewer than `contextLength` tokens can hold. Longer texts and
 * every chat template (its cost grows with the number of messages and is up to the template) go to a worker thread
 * with its own copy of the tokenizer.
 */
export class PromptTokenizer {
  /** Characters above which a prompt cannot fit the context. */
  readonly maxChars: number;
  readonly #tokenizer: Tokenizer;
  readonly #modelDir: string;
  readonly #contextLength: number;
  #worker: RunningWorker | null = null;
  #nextId = 0;

  constructor(tokenizer: Tokenizer, modelDir: string, contextLength: number) {
    this.#tokenizer = tokenizer;
    this.#modelDir = modelDir;
    this.#contextLength = contextLength;
    let longest = 1;
    for (let id = 0; id < tokenizer.vocabSize; id++) longest = Math.max(longest, tokenizer.idToToken(id)?.length ?? 0);
    this.maxChars = (contextLength - 1) * longest;
    // Started now, so the first chat request does not wait for the worker to load the tokenizer.
    this.#worker = this.#start();
  }

  /** Token ids of a text prompt (`param` names it in refusals). */
  async encode(text: string, param: string, addSpecialTokens = true): Promise<number[]> {
    if (text.length > this.maxChars) throw this.#tooLong(text.length, param);
    if (text.length <= INLINE_MAX_CHARS) return this.#tokenizer.encode(text, { addSpecialTokens });
    return this.#ids(await this.#run({ kind: 'text', text, addSpecialTokens }), param);
  }

  /** Token ids of a conversation rendered with the chat template; throws ChatTemplateError when the template refuses it. */
  async encodeChat(messages: ChatMessage[], param: string, opts: { addGenerationPrompt: boolean; addSpecialTokens: boolean }): Promise<number[]> {
    return this.#ids(await this.#run({ kind: 'chat', messages, ...opts, maxChars: this.maxChars }), param);
  }

  /** Stops the worker; pending calls fail. */
  async close(): Promise<void> {
    const worker = this.#worker;
    this.#worker = null;
    await worker?.thread.terminate();
  }

  #ids(result: TokenizeResult, param: string): number[] {
    switch (result.outcome) {
      case 'ids': return Array.from(result.ids);
      case 'too_long': throw this.#tooLong(result.chars, param);
      case 'template_error': throw new ChatTemplateError(result.message);
      case 'failed': throw new Error(`prompt tokenizer: ${result.message}`);
    }
  }

  #tooLong(chars: number, param: string): ApiError {
    const context = this.#contextLength;
    return new ApiError(
      'context_length_exceeded',
      `This model's maximum context length is ${context} tokens, but the prompt has ${chars} characters: more than ${context - 1} tokens ` +
        `can hold (at most ${this.maxChars}); shorten it.`,
      param,
    );
  }

  #run(job: TokenizeJob): Promise<TokenizeResult> {
    this.#worker ??= this.#start();
    const worker = this.#worker;
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      worker.pending.set(id, { resolve, reject });
      worker.thread.postMessage({ id, job } satisfies TokenizeCall);
    });
  }

  #start(): RunningWorker {
    const thread = spawnWorker(new URL('./prompt-tokenizer-worker.js', import.meta.url), { modelDir: this.#modelDir });
    // The HTTP server keeps the process alive while there is work; this thread must not keep it alive after.
    thread.unref();
    const worker: RunningWorker = { thread, pending: new Map() };
    thread.on('message', ({ id, result }: TokenizeReply) => {
      worker.pending.get(id)?.resolve(result);
      worker.pending.delete(id);
    });
    // A worker that died fails its calls; the next call starts a new one.
    const fail = (reason: string) => {
      if (this.#worker === worker) this.#worker = null;
      for (const { reject } of worker.pending.values()) reject(new Error(`prompt tokenizer worker ${reason}`));
      worker.pending.clear();
    };
    thread.on('error', (err) => fail(`failed: ${err.message}`));
    thread.on('exit', (code) => fail(`exited (code ${code})`));
    return worker;
  }
}
