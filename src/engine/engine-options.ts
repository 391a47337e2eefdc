import type { LoraKernel } from '../../kernels/batched-lora.js';
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
  /** Most prompt tokens prefilled in one step, so a long prompt cannot stall running decodes for long. */
  prefillChunk: number;
  /** Adapter slots in the graph: the most distinct adapters one batch can use. 0 disables LoRA. */
  maxLoras: number;
  /** Largest adapter rank accepted; slots are padded to it. */
  maxLoraRank: number;
  /** Host-memory budget for loaded adapters, in bytes (the LRU tier between disk and slots). */
  maxCpuLoraBytes: number;
  /** Most requests waiting to start; beyond it `submit` answers `queue_full`. */
  maxWaiting: number;
  /** LoRA kernel for every step, or (default) chosen per step from the batch shape; forcing one is for benchmarks. */
  loraKernel?: 'auto' | LoraKernel;
}
