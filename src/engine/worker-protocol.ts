import type { AdapterErrorCode } from '../adapters/adapter-error.js';
import type { PrefixCacheStats } from './prefix-cache.js';
import type { ModelConfig } from '../model/model-config.js';
import type { AdapterInfo, EngineErrorCode, EngineStats, FinishReason, GenerationRequest, TokenLogprob, Usage } from './engine-types.js';

/** Calls that expect one reply, matched by `callId`. */
export type EngineCall =
  | { op: 'adapter.register'; name: string; path: string }
  | { op: 'adapter.unregister'; name: string }
  | { op: 'adapter.pin'; name: string; pinned: boolean }
  /** Merge the adapter into a session of its own (built off the loop), or unmerge it. */
  | { op: 'adapter.merge'; name: string; merged: boolean }
  | { op: 'adapter.list' }
  | { op: 'stats' }
  /** The prefix cache's state (null when it is off). */
  | { op: 'prefix.stats' }
  /** Drops prefix-cache blocks, pinned ones too: all of them, the base model's (`adapter` null), or one adapter's. */
  | { op: 'prefix.clear'; adapter?: string | null }
  /** The engine's invariant violations (see src/engine/invariants.ts); none while a step is in flight. */
  | { op: 'check' }
  | { op: 'drain'; deadlineMs: number };

export type CallResult = AdapterInfo | AdapterInfo[] | EngineStats | PrefixCacheInfo | { droppedBlocks: number } | string[] | null;

/** The prefix cache's state, with each adapter digest's registered names (a block is keyed by content, not name). */
export interface PrefixCacheInfo extends PrefixCacheStats {
  adapterNames: Record<string, string[]>;
}

/** Tokens one engine step computed: prompt tokens in prefill runs, and one per sequence in the decode run. */
export interface StepTokensOut {
  prefill: number;
  decode: number;
}

/** Main thread → engine worker. */
export type ToWorker =
  | { type: 'submit'; request: GenerationRequest }
  | { type: 'abort'; id: string }
  | { type: 'call'; callId: number; call: EngineCall }
  /** After a drain: stop the loop, release the session, exit. */
  | { type: 'close' };

export interface TokenOut {
  id: string;
  tokenId: number;
  logprob: number | null;
  topLogprobs: TokenLogprob[] | null;
  /** The token ended generation (EOS or a stop token id): its text is not part of the output. */
  stopToken: boolean;
}

export interface DoneOut {
  id: string;
  finishReason: FinishReason;
  stopReason: number | null;
  usage: Usage;
  /** From arrival in the engine to admission into a KV row. */
  queueMs: number;
}

/** An adapter moved into a tier: host (read from disk) or slot (written into the graph's slot tensors). */
export interface AdapterLoadOut {
  tier: 'host' | 'slot';
  ms: number;
}

/** Engine worker → main thread. One `step` message per engine step carries every request's news. */
export type FromWorker =
  /** `rebuildReason`: the cached model build failed verification and was built again (see build-cache.ts). */
  /** `runtimeNote`: why the native runtime is not serving though it was preferred (see RuntimeChoice 'auto'). */
  | { type: 'ready'; config: ModelConfig; contextLength: number; rebuildReason: string | null; runtime: 'native' | 'stock'; runtimeNote: string | null }
  | { type: 'fatal'; message: string }
  /** A line for the server's log (merged builds: progress, ready, failed). */
  | { type: 'log'; level: 'info' | 'warn'; message: string; fields: Record<string, unknown> }
  | { type: 'step'; tokens: TokenOut[]; done: DoneOut[]; errors: { id: string; code: EngineErrorCode; message: string }[]; adapterLoads: AdapterLoadOut[]; steps: StepTokensOut[] }
  | { type: 'reply'; callId: number; ok: true; value: CallResult }
  | { type: 'reply'; callId: number; ok: false; code: AdapterErrorCode | EngineErrorCode; path: string | null; message: string };
