import type { Usage } from '../engine/engine-types.js';
import { DEFAULT_SAMPLING } from '../engine/sampling-params.js';
import { fromEngineError } from '../errors.js';
import type { ApiContext, RouteHandlers } from './api-context.js';
import type { Generation } from './generation.js';
import { choiceJobs, collectAll, merge, startGenerations } from './generation.js';
import { completionLogprobs, finishFields, openAiUsage } from './openai-format.js';
import type { OpenAiSamplingFields, PrefixCacheFields } from './request-mapping.js';
import { checkContextLength, checkGenerationCount, checkPromptIds, checkSampling, openAiSampling, prefixUse } from './request-mapping.js';
import { SSE_DONE, sendEventStream, sseEvent } from './sse.js';

interface CompletionBody extends OpenAiSamplingFields, PrefixCacheFields {
  model?: string | null;
  prompt: string | string[] | number[] | number[][];
  max_tokens?: number | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
  logprobs?: number | null;
}

/** The fields every completion object and chunk starts with. */
interface Head {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
}

/** A prompt is text, token ids, or a list of either. */
function prompts(prompt: CompletionBody['prompt']): (string | number[])[] {
  if (typeof prompt === 'string') return [prompt];
  if (prompt.every((p) => typeof p === 'number')) return [prompt as number[]];
  return prompt as (string | number[])[];
}

/** POST /v1/completions. */
export function completionRoutes(ctx: ApiContext): RouteHandlers {
  const { engine } = ctx;
  return {
    createCompletion: async (request, reply) => {
      const body = request.body as CompletionBody;
      const maxTokens = body.max_tokens ?? DEFAULT_SAMPLING.maxTokens;
      const list = prompts(body.prompt);
      const n = body.n ?? 1;
      checkGenerationCount(list.length, n, engine.maxWaiting, 'prompt');
      const sampling = openAiSampling(body, maxTokens, body.logprobs ?? null);
      checkSampling(sampling, engine.config.vocabSize);
      const promptIds: number[][] = [];
      for (const [i, p] of list.entries()) {
        const param = list.length === 1 ? 'prompt' : `prompt[${i}]`;
        const ids = typeof p === 'string' ? await ctx.prompts.encode(p, param) : p;
        checkPromptIds(ids, engine.config.vocabSize, param);
        checkContextLength(ids.length, maxTokens, engine.contextLength, param, 'max_tokens');
        promptIds.push(ids);
      }
      const generations = await startGenerations(ctx, request, reply, body.model, 'model', choiceJobs(promptIds, sampling, n, prefixUse(body)));
      const head: Head = { id: `cmpl-${request.id}`, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: body.model || ctx.models.baseName };
      if (body.stream) return sendEventStream(reply, stream(ctx, head, generations, n, body.logprobs != null, body.stream_options?.include_usage === true));

      const results = await collectAll(generations);
      return {
        ...head,
        choices: results.map((r, index) => ({
          index,
          text: r.text,
          logprobs: body.logprobs != null ? completionLogprobs(engine.tokenizer, r.tokens) : null,
          ...finishFields(r.done),
        })),
        usage: openAiUsage(results.map((r) => r.done.usage), n),
      };
    },
  };
}

async function* stream(ctx: ApiContext, head: Head, generations: Generation[], n: number, logprobs: boolean, includeUsage: boolean): AsyncGenerator<string> {
  const chunk = (choice: object) => sseEvent({ ...head, choices: [choice], ...(includeUsage ? { usage: null } : {}) });
  const usages: (Usage | undefined)[] = [];
  const offsets = generations.map(() => 0);
  for await (const { index, event } of merge(generations)) {
    if (event.type === 'token') {
      if (event.text === '' && !logprobs) continue;
      const lp = logprobs ? completionLogprobs(ctx.engine.tokenizer, [event], offsets[index]) : null;
      offsets[index] += lp?.tokens[0].length ?? 0;
      yield chunk({ index, text: event.text, logprobs: lp, finish_reason: null });
    } else if (event.type === 'done') {
      usages[index] = event.usage;
      yield chunk({ index, text: event.text, logprobs: null, ...finishFields(event) });
    } else {
      usages[index] = generations[index].usageSoFar;
      yield sseEvent(fromEngineError(event.code, event.message, generations[index].id).toBody());
      break;
    }
  }
  if (includeUsage) yield sseEvent({ ...head, choices: [], usage: openAiUsage(usages, n) });
  yield SSE_DONE;
}
