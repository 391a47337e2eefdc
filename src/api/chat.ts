import type { Usage } from '../engine/engine-types.js';
import { fromEngineError } from '../errors.js';
import type { ApiContext, RouteHandlers } from './api-context.js';
import type { ChatMessageBody } from './chat-prompt.js';
import { chatPromptIds } from './chat-prompt.js';
import type { Generation } from './generation.js';
import { choiceJobs, collectAll, merge, startGenerations } from './generation.js';
import { chatLogprobs, finishFields, openAiUsage } from './openai-format.js';
import type { OpenAiSamplingFields, PrefixCacheFields } from './request-mapping.js';
import { checkContextLength, checkGenerationCount, checkPromptIds, checkSampling, openAiSampling, prefixUse } from './request-mapping.js';
import { SSE_DONE, sendEventStream, sseEvent } from './sse.js';

interface ChatBody extends OpenAiSamplingFields, PrefixCacheFields {
  model?: string | null;
  messages: ChatMessageBody[];
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
}

interface Head {
  id: string;
  created: number;
  model: string;
}

/** POST /v1/chat/completions. */
export function chatRoutes(ctx: ApiContext): RouteHandlers {
  const { engine } = ctx;
  return {
    createChatCompletion: async (request, reply) => {
      const body = request.body as ChatBody;
      const n = body.n ?? 1;
      checkGenerationCount(1, n, engine.maxWaiting, 'messages');
      const promptIds = await chatPromptIds(ctx.prompts, body.messages, true);
      checkPromptIds(promptIds, engine.config.vocabSize, 'messages');
      const maxTokensParam = body.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
      // Without a limit, the completion may use the rest of the context (vLLM's default).
      const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? Math.max(1, engine.contextLength - promptIds.length);
      checkContextLength(promptIds.length, maxTokens, engine.contextLength, 'messages', maxTokensParam);
      const logprobs = body.logprobs === true;
      const sampling = openAiSampling(body, maxTokens, logprobs ? (body.top_logprobs ?? 0) : null);
      checkSampling(sampling, engine.config.vocabSize);
      const generations = await startGenerations(ctx, request, reply, body.model, 'model', choiceJobs([promptIds], sampling, n, prefixUse(body)));
      const head: Head = { id: `chatcmpl-${request.id}`, created: Math.floor(Date.now() / 1000), model: body.model || ctx.models.baseName };
      if (body.stream) return sendEventStream(reply, stream(ctx, head, generations, n, logprobs, body.stream_options?.include_usage === true));

      const results = await collectAll(generations);
      return {
        ...head,
        object: 'chat.completion',
        choices: results.map((r, index) => ({
          index,
          message: { role: 'assistant', content: r.text },
          logprobs: logprobs ? chatLogprobs(engine.tokenizer, r.tokens) : null,
          ...finishFields(r.done),
        })),
        usage: openAiUsage(results.map((r) => r.done.usage), n),
      };
    },
  };
}

async function* stream(ctx: ApiContext, head: Head, generations: Generation[], n: number, logprobs: boolean, includeUsage: boolean): AsyncGenerator<string> {
  const chunk = (choice: object) => sseEvent({ ...head, object: 'chat.completion.chunk', choices: [choice], ...(includeUsage ? { usage: null } : {}) });
  for (let index = 0; index < generations.length; index++) {
    yield chunk({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
  }
  const usages: (Usage | undefined)[] = [];
  for await (const { index, event } of merge(generations)) {
    if (event.type === 'token') {
      if (event.text === '' && !logprobs) continue;
      yield chunk({ index, delta: { content: event.text }, logprobs: logprobs ? chatLogprobs(ctx.engine.tokenizer, [event]) : null, finish_reason: null });
    } else if (event.type === 'done') {
      usages[index] = event.usage;
      yield chunk({ index, delta: event.text === '' ? {} : { content: event.text }, logprobs: null, ...finishFields(event) });
    } else {
      usages[index] = generations[index].usageSoFar;
      yield sseEvent(fromEngineError(event.code, event.message, generations[index].id).toBody());
      break;
    }
  }
  if (includeUsage) yield sseEvent({ ...head, object: 'chat.completion.chunk', choices: [], usage: openAiUsage(usages, n) });
  yield SSE_DONE;
}
