import { ApiError } from '../errors.js';
import type { ApiContext, RouteHandlers } from './api-context.js';
import type { ChatMessageBody } from './chat-prompt.js';
import { chatPromptIds } from './chat-prompt.js';

interface TokenizeBody {
  model?: string;
  prompt?: string;
  messages?: ChatMessageBody[];
  add_special_tokens?: boolean;
  add_generation_prompt?: boolean;
}

/** POST /tokenize and /detokenize (vLLM shapes). The base model and its adapters share one tokenizer. */
export function tokenizeRoutes(ctx: ApiContext): RouteHandlers {
  const { engine } = ctx;
  return {
    tokenize: async (request) => {
      const body = request.body as TokenizeBody;
      if ((body.prompt === undefined) === (body.messages === undefined)) {
        throw new ApiError('invalid_request', 'give exactly one of prompt and messages', body.prompt === undefined ? 'prompt' : 'messages');
      }
      const tokens = body.messages !== undefined
        ? await chatPromptIds(ctx.prompts, body.messages, body.add_generation_prompt ?? true, body.add_special_tokens ?? false)
        : await ctx.prompts.encode(body.prompt ?? '', 'prompt', body.add_special_tokens ?? true);
      return { count: tokens.length, max_model_len: engine.contextLength, tokens };
    },
    detokenize: async (request) => {
      const { tokens } = request.body as { tokens: number[] };
      const bad = tokens.findIndex((id) => id >= engine.config.vocabSize);
      if (bad >= 0) throw new ApiError('invalid_request', `token id ${tokens[bad]} is outside the vocabulary [0, ${engine.config.vocabSize})`, `tokens[${bad}]`);
      return { prompt: engine.tokenizer.decode(tokens) };
    },
  };
}
