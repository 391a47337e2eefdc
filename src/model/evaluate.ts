import type { LoraBatch, ModelRunner } from './decoder.js';
import { KvCache } from './kv-cache.js';

export interface EvaluateOptions {
  /**
   * Tokens per window (default: the model's `max_position_embeddings`). The text is cut into consecutive windows,
   * each scored from an empty cache, so no position is past what the model was trained on.
   */
  context?: number;
  /** Tokens per forward run inside a window, the rest read from the KV cache (default 256). */
  chunk?: number;
  /** The adapter's slot inputs, for a decoder built with `loraRank > 0`; none scores the base model. */
  lora?: LoraBatch;
}

export interface EvaluateResult {
  /** Tokens predicted: every token of a window but its first. */
  tokens: number;
  /** Mean of −log p(token | the tokens before it in its window), in nats. */
  meanLoss: number;
  perplexity: number;
}

export const DEFAULT_EVAL_CHUNK = 256;

/**
 * Teacher-forced loss of `tokenIds` under the decoder, which must be built with `allLogits`: the tokens go through the
 * same graph, KV cache and LoRA slot inputs as serving, and each position's logits score the token after it.
 */
export async function evaluateLoss(decoder: ModelRunner, tokenIds: readonly number[], options: EvaluateOptions = {}): Promise<EvaluateResult> {
  const { config } = decoder;
  const context = options.context ?? config.maxPositionEmbeddings;
  const chunk = options.chunk ?? DEFAULT_EVAL_CHUNK;
  if (!Number.isInteger(context) || context < 2 || context > config.maxPositionEmbeddings) {
    throw new Error(`evaluation context ${context} must be an integer from 2 to the model's max_position_embeddings (${config.maxPositionEmbeddings})`);
  }
  if (!Number.isInteger(chunk) || chunk < 1) throw new Error(`evaluation chunk ${chunk} must be a positive integer`);
  if (options.lora && decoder.loraRank === 0) throw new Error('an adapter needs a decoder built with LoRA slot inputs (loraRank > 0)');
  if (tokenIds.length < 2) throw new Error(`the text has ${tokenIds.length} token(s); at least 2 are needed to predict one`);

  const vocab = config.vocabSize;
  const kv = new KvCache(config, 1, Math.min(context, tokenIds.length));
  let sum = 0;
  let count = 0;
  for (let start = 0; start < tokenIds.length; start += context) {
    const window = tokenIds.slice(start, start + context);
    for (let past = 0; past < window.length; past += chunk) {
      const tokens = window.slice(past, past + chunk);
      const logits = await decoder.forward({ firstRow: 0, tokens: [tokens], pastLengths: [past] }, kv, options.lora);
      if (logits.length !== tokens.length * vocab) {
        throw new Error(`the decoder returned ${logits.length / vocab} rows of logits for ${tokens.length} tokens: build it with allLogits`);
      }
      for (let t = 0; t < tokens.length && past + t + 1 < window.length; t++) {
        sum += negativeLogLikelihood(logits.subarray(t * vocab, (t + 1) * vocab), window[past + t + 1]);
        count++;
      }
    }
  }
  const meanLoss = sum / count;
  return { tokens: count, meanLoss, perplexity: Math.exp(meanLoss) };
}

/** −log softmax(logits)[target], in float64. */
function negativeLogLikelihood(logits: Float32Array, target: number): number {
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  let sum = 0;
  for (const x of logits) sum += Math.exp(x - max);
  return max + Math.log(sum) - logits[target];
}
