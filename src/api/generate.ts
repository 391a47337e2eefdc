import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Tokenizer } from '../model/tokenizer.js';
import { fromEngineError } from '../errors.js';
import type { ApiContext, RouteHandlers } from './api-context.js';
import type { DoneEvent, Generation, TokenEvent } from './generation.js';
import { collect, startGenerations } from './generation.js';
import type { TgiParameters } from './request-mapping.js';
import { checkContextLength, checkPromptIds, checkSampling, tgiSampling } from './request-mapping.js';
import { sendEventStream, sseEvent } from './sse.js';

interface GenerateBody {
  inputs: string;
  parameters?: TgiParameters | null;
}

interface TgiToken {
  id: number;
  text: string;
  logprob: number | null;
  special: boolean;
}

interface TgiDetails {
  finish_reason: 'length' | 'eos_token' | 'stop_sequence';
  generated_tokens: number;
  seed: number | null;
}

/** POST /generate and /generate_stream (TGI/LoRAX shapes; the adapter is `parameters.adapter_id`). */
export function generateRoutes(ctx: ApiContext): RouteHandlers {
  const { tokenizer } = ctx.engine;
  return {
    generate: async (request, reply) => {
      const { generation, params, body } = await start(ctx, request, reply);
      const { tokens, text, done } = await collect(generation);
      const tgiTokens = tokens.map((t) => tgiToken(tokenizer, t));
      // The text held back until the end belongs to the last token, so the tokens' texts add up to the whole.
      if (tgiTokens.length > 0) tgiTokens[tgiTokens.length - 1].text += done.text;
      const generatedText = (params.return_full_text ? body.inputs : '') + text;
      if (!params.details) return { generated_text: generatedText };
      const topTokens = params.top_n_tokens ? { top_tokens: tokens.map((t) => topTokensOf(tokenizer, t)) } : {};
      return { generated_text: generatedText, details: { ...details(ctx, done, params), prefill: [], tokens: tgiTokens, ...topTokens } };
    },
    generateStream: async (request, reply) => {
      const { generation, params, body } = await start(ctx, request, reply);
      return sendEventStream(reply, stream(ctx, generation, params, params.return_full_text ? body.inputs : ''));
    },
  };
}

async function start(ctx: ApiContext, request: FastifyRequest, reply: FastifyReply): Promise<{ generation: Generation; params: TgiParameters; body: GenerateBody }> {
  const { engine } = ctx;
  const body = request.body as GenerateBody;
  const params = body.parameters ?? {};
  const sampling = tgiSampling(params);
  checkSampling(sampling, engine.config.vocabSize, 'parameters.');
  const promptIds = await ctx.prompts.encode(body.inputs, 'inputs');
  checkPromptIds(promptIds, engine.config.vocabSize, 'inputs');
  checkContextLength(promptIds.length, sampling.maxTokens, engine.contextLength, 'inputs', 'parameters.max_new_tokens');
  const [generation] = await startGenerations(ctx, request, reply, params.adapter_id, 'parameters.adapter_id', [{ promptIds, sampling }]);
  return { generation, params, body };
}

/** Events lag one token behind the engine, so the last one can carry the final text, `generated_text` and `details`. */
async function* stream(ctx: ApiContext, generation: Generation, params: TgiParameters, prefix: string): AsyncGenerator<string> {
  const { tokenizer } = ctx.engine;
  let held: TgiToken | null = null;
  let index = 0;
  let text = prefix;
  const event = (token: TgiToken, done: DoneEvent | null) => sseEvent({
    index: index++,
    token,
    generated_text: done ? text : null,
    details: done ? details(ctx, done, params) : null,
  });
  for await (const e of generation) {
    if (e.type === 'token') {
      if (held) yield event(held, null);
      held = tgiToken(tokenizer, e);
      text += e.text;
    } else if (e.type === 'done') {
      text += e.text;
      if (held) yield event({ ...held, text: held.text + e.text }, e);
      return;
    } else {
      yield sseEvent(fromEngineError(e.code, e.message, generation.id).toBody());
      return;
    }
  }
}

function details(ctx: ApiContext, done: DoneEvent, params: TgiParameters): TgiDetails {
  return { finish_reason: finishReason(ctx, done), generated_tokens: done.usage.completionTokens, seed: params.seed ?? null };
}

function finishReason(ctx: ApiContext, done: DoneEvent): TgiDetails['finish_reason'] {
  if (done.finishReason !== 'stop') return 'length';
  return typeof done.stopReason === 'number' && ctx.engine.config.eosTokenIds.includes(done.stopReason) ? 'eos_token' : 'stop_sequence';
}

function tgiToken(tokenizer: Tokenizer, t: TokenEvent): TgiToken {
  return { id: t.tokenId, text: t.text, logprob: t.logprob, special: isSpecial(tokenizer, t.tokenId) };
}

function topTokensOf(tokenizer: Tokenizer, t: TokenEvent): TgiToken[] {
  return (t.topLogprobs ?? []).map((top) => ({ id: top.tokenId, text: tokenizer.decode([top.tokenId]), logprob: top.logprob, special: isSpecial(tokenizer, top.tokenId) }));
}

/** A special token is one that decoding with special tokens skipped drops. */
function isSpecial(tokenizer: Tokenizer, id: number): boolean {
  return tokenizer.decode([id], { skipSpecialTokens: true }) === '' && tokenizer.decode([id]) !== '';
}
