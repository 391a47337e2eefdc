import { AdapterError } from '../adapters/adapter-error.js';
import { DEFAULT_SAMPLING } from '../engine/sampling-params.js';
import { ApiError } from '../errors.js';
import type { ApiContext, RouteHandlers } from './api-context.js';
import type { ChatMessageBody } from './chat-prompt.js';
import { chatPromptIds } from './chat-prompt.js';
import { collect, startGenerations } from './generation.js';
import { checkContextLength, checkPromptIds } from './request-mapping.js';

interface WarmBody {
  model?: string | null;
  prompt?: string | number[];
  messages?: ChatMessageBody[];
  cache_salt?: string | null;
  pin?: boolean | null;
}

/**
 * The prefix cache (admin key): POST warms it with a prompt (and pins it, by default), GET shows it per model, DELETE
 * empties it or drops one model's blocks. Blocks are keyed by content: an entry lists every adapter name that has it.
 */
export function prefixCacheRoutes(ctx: ApiContext): RouteHandlers {
  const { engine, models } = ctx;

  const enabledStats = async () => {
    const stats = await engine.prefixCache.stats();
    if (!stats) throw new ApiError('invalid_request', 'the prefix cache is off (--prefix-cache-bytes 0)', null);
    return stats;
  };

  return {
    warmPrefixCache: async (request, reply) => {
      const body = request.body as WarmBody;
      await enabledStats();
      if ((body.prompt === undefined) === (body.messages === undefined)) throw new ApiError('invalid_request', 'give exactly one of prompt and messages', 'prompt');
      const param = body.prompt !== undefined ? 'prompt' : 'messages';
      // A conversation is rendered without the assistant's turn, so it is a prefix of later requests that extend it.
      const promptIds = typeof body.prompt === 'string' ? await ctx.prompts.encode(body.prompt, param)
        : body.prompt ?? await chatPromptIds(ctx.prompts, body.messages ?? [], false);
      checkPromptIds(promptIds, engine.config.vocabSize, param);
      checkContextLength(promptIds.length, 1, engine.contextLength, param, 'prompt');
      const pin = body.pin ?? true;
      const sampling = { ...DEFAULT_SAMPLING, temperature: 0, maxTokens: 1 };
      const prefix = { warm: { pin }, ...(body.cache_salt != null ? { salt: body.cache_salt } : {}) };
      const [generation] = await startGenerations(ctx, request, reply, body.model, 'model', [{ promptIds, sampling, prefix }]);
      const { done } = await collect(generation);
      return {
        object: 'prefix_cache.warm',
        model: body.model || models.baseName,
        prompt_tokens: promptIds.length,
        cached_tokens: done.usage.prefixTokens ?? 0,
        pinned: pin,
      };
    },

    getPrefixCache: async () => {
      const stats = await engine.prefixCache.stats();
      if (!stats) return { object: 'prefix_cache', enabled: false, data: [] };
      const bytesPerBlock = stats.blocks === 0 ? 0 : stats.bytes / stats.blocks;
      return {
        object: 'prefix_cache',
        enabled: true,
        block_tokens: stats.blockTokens,
        capacity_bytes: stats.capacityBytes,
        bytes: stats.bytes,
        blocks: stats.blocks,
        pinned_blocks: stats.pinnedBlocks,
        query_tokens: stats.queryTokens,
        hit_tokens: stats.hitTokens,
        hit_rate: stats.queryTokens === 0 ? 0 : stats.hitTokens / stats.queryTokens,
        evictions: stats.evictions,
        data: Object.entries(stats.byAdapter).map(([digest, entry]) => ({
          models: digest === '' ? [models.baseName] : (stats.adapterNames[digest] ?? []),
          adapter_digest: digest === '' ? null : digest,
          blocks: entry.blocks,
          tokens: entry.blocks * stats.blockTokens,
          bytes: entry.blocks * bytesPerBlock,
          pinned_blocks: entry.pinnedBlocks,
        })),
      };
    },

    clearPrefixCache: async (request) => {
      const { model } = request.query as { model?: string };
      let dropped;
      try {
        dropped = await engine.prefixCache.clear(model === undefined ? undefined : models.adapterOf(model));
      } catch (err) {
        if (!(err instanceof AdapterError) || err.code !== 'adapter_not_found') throw err;
        throw new ApiError('model_not_found', `The model '${model}' does not exist: it is neither the base model (${models.baseName}) nor a registered adapter.`, 'model');
      }
      return { object: 'prefix_cache.cleared', model: model ?? null, dropped_blocks: dropped };
    },
  };
}
