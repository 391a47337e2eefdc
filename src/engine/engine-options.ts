import type { RuntimeChoice } from '../model/load-model.js';
import type { Quantization } from '../model/quantizer.js';

/** Everything the engine worker needs to start; validated by the caller (src/config.ts), plain data (crosses the worker boundary). */
export interface EngineOptions {
  /** Hugging Face checkpoint directory. */
  modelDir: string;
  quantization: Quantization;
  /** ONNX Runtime intra-op threads. */
  threads: number;
  /** Build cache root (default: `defaultCacheRoot()`). */
  cacheRoot?: string;
  /** Most sequences running at once (KV rows). */
  maxBatch: number;
  /** Tokens per sequence, prompt and output together (KV capacity per row); at most the model's context. */
  contextLength: number;
  /** Most prompt tokens of one sequence computed in one step (the chunk of chunked prefill). */
  prefillChunk: number;
  /**
   * Most tokens one step computes: one per decoding sequence plus the prompt chunks, so prefills never stall running
   * decodes for longer than this many tokens take. Default: `prefillChunk + maxBatch`, so a whole chunk fits while
   * every row decodes.
   */
  maxBatchedTokens?: number;
  /** Most adapters merged into sessions of their own at once (each a full copy of the weights); 0 (default) turns merging off. */
  maxMerged?: number;
  /** Host memory for the prefix cache's KV blocks, in bytes; 0 turns it off. Default 0. */
  prefixCacheBytes?: number;
  /** Adapter slots in the graph: the most distinct adapters one batch can use. 0 disables LoRA. */
  maxLoras: number;
  /** Largest adapter rank accepted; slots are padded to it. */
  maxLoraRank: number;
  /** Host-memory budget for loaded adapters, in bytes (the LRU tier between disk and slots). */
  maxCpuLoraBytes: number;
  /** Adapter roots (`--adapter-dir`): the files of an adapter under a root must resolve inside the roots. Default: none. */
  adapterRoots?: readonly string[];
  /** Longest one adapter load from disk may take before it fails and its loader is replaced, in ms (default 30 s). */
  adapterLoadTimeoutMs?: number;
  /** Most requests waiting to start; beyond it `submit` answers `queue_full`. */
  maxWaiting: number;
  /** A request still waiting for its adapter's slot this long after arrival ends with `adapter_unavailable`. */
  adapterWaitTimeoutMs: number;
  /** Which runtime runs the model (see RuntimeChoice); default 'stock'. */
  runtime?: RuntimeChoice;
  /** Check the engine's bookkeeping invariants whenever the loop goes idle, and die loudly on a violation (tests, debugging). */
  checkInvariants?: boolean;
}
