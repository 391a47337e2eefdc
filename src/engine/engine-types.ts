import type { PrefixCacheStats } from './prefix-cache.js';
import type { SamplingParams } from './sampling-params.js';

/** A validated generation request: the engine never sees JSON. */
export interface GenerationRequest {
  /** Unique per request; used in logs, aborts and error bodies. */
  id: string;
  promptIds: readonly number[];
  /** Registered adapter name, or null for the base model. */
  adapter: string | null;
  sampling: SamplingParams;
  /**
   * Prefix cache use: `use` false opts out, `salt` isolates tenants (vLLM's cache_salt), `warm` asks for the prompt's
   * blocks to be reported in `usage.prefixTokens` (and pinned, with `pin`) once it is computed.
   */
  prefix?: { use?: boolean; salt?: string; warm?: { pin: boolean } };
  /**
   * Another request (a sibling choice of `n > 1`) with the same prompt and adapter: this one waits until that one has
   * computed the prompt, then copies its KV instead of computing it again.
   */
  forkOf?: string;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface TokenLogprob {
  tokenId: number;
  logprob: number;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens restored from the prefix cache instead of being computed. */
  cachedTokens: number;
  /** Leading prompt tokens in the prefix cache once the prompt was computed (and pinned, if asked): warm requests only. */
  prefixTokens?: number;
}

/** Error kinds an engine can report for one request; the API maps them to HTTP statuses. */
export type EngineErrorCode =
  | 'adapter_not_found'
  | 'adapter_invalid'
  | 'adapter_path_not_allowed'
  | 'adapter_unavailable'
  | 'invalid_request'
  | 'queue_full'
  | 'engine_error'
  | 'shutting_down';

/** What one request yields, in order: tokens, then exactly one `done` or `error`. */
export type GenerationEvent =
  | {
    type: 'token';
    tokenId: number;
    /** Text that became final with this token (may be '' while a character or a possible stop string is incomplete). */
    text: string;
    logprob: number | null;
    topLogprobs: TokenLogprob[] | null;
  }
  | {
    type: 'done';
    finishReason: FinishReason;
    /** Held-back text released at the end (never includes a matched stop string). */
    text: string;
    /** The stop string or stop token id that ended generation, when one did. */
    stopReason: string | number | null;
    usage: Usage;
    /** Time waiting for a KV row and adapter slot; null when the request ended before the engine reported it. */
    queueMs: number | null;
  }
  | { type: 'error'; code: EngineErrorCode; message: string };

export interface AdapterInfo {
  name: string;
  /** Directory the adapter was registered from. */
  path: string;
  /** Content digest of the adapter files: its identity for caching. */
  digest: string;
  rank: number;
  pinned: boolean;
  /** Where its weights are now: 'disk' (registered only), 'host' (in memory), 'slot' (usable by the graph this step). */
  tier: 'disk' | 'host' | 'slot';
  /** Requests waiting for or running with it. */
  activeRequests: number;
  /** Whether new requests run on a session with its weights merged in; 'building' while that session is built. */
  merged: boolean | 'building';
}

export interface EngineStats {
  running: number;
  waiting: number;
  /** KV positions holding a running sequence's computed tokens / all KV positions (rows × context length). */
  kvUsage: number;
  batchSize: number;
  maxLoras: number;
  runningAdapters: string[];
  waitingAdapters: string[];
  adapterLoads: { host: number; slot: number };
  adapterEvictions: { host: number; slot: number };
  /** Model runs in which some row used an adapter through the LoRA slots. */
  loraRuns: number;
  /** Model runs on a merged session. */
  mergedRuns: number;
  /** Merged sessions held, merges and unmerges since start, and the last merged build's time (null before any). */
  merged: { sessions: number; merges: number; unmerges: number; lastBuildMs: number | null };
  stepsTotal: number;
  tokensGenerated: number;
  promptTokens: number;
  /** Tokens computed by prefill runs and by decode runs, since start. */
  prefillTokensComputed: number;
  decodeTokensComputed: number;
  /** Null when the prefix cache is off (`--prefix-cache-bytes 0`). */
  prefixCache: PrefixCacheStats | null;
}
