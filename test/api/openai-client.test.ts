import { join } from 'node:path';
import OpenAI from 'openai';
import type { CompletionCreateParamsNonStreaming } from 'openai/resources/completions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/main.js';
import type { Fixture } from './support.js';
import { expectComponent, expectResponse, makeFixture, openAiClient, startTestServer } from './support.js';

let fixture: Fixture;
let server: RunningServer;
let client: OpenAI;

beforeAll(async () => {
  fixture = makeFixture();
  server = await startTestServer(fixture, ['--adapter', `alpha=${join(fixture.root, 'alpha')}`]);
  client = openAiClient(server);
});
afterAll(async () => {
  await server?.close(0);
  fixture?.cleanup();
});

/** vLLM's extension: generate all max_tokens, so lengths are known. */
type Params = CompletionCreateParamsNonStreaming & { ignore_eos?: boolean };
const greedy = (model: string, extra: Partial<Params> = {}): Params => ({ model, prompt: 'Hello, adapters', max_tokens: 8, temperature: 0, ignore_eos: true, ...extra });

describe('completions with the official OpenAI client', () => {
  it('completes greedily per adapter: the base, a preloaded adapter and one loaded on demand differ', async () => {
    const base = await client.completions.create(greedy('tiny'));
    const alpha = await client.completions.create(greedy('alpha'));
    const beta = await client.completions.create(greedy('beta'));
    for (const r of [base, alpha, beta]) {
      expectResponse(server.app, 'createCompletion', 200, r);
      expect(r.choices[0].finish_reason).toBe('length');
      expect(r.usage).toMatchObject({ completion_tokens: 8, prompt_tokens: 15, total_tokens: 23 });
    }
    expect(base.model).toBe('tiny');
    expect(alpha.model).toBe('alpha');
    expect(new Set([base.choices[0].text, alpha.choices[0].text, beta.choices[0].text]).size).toBe(3);
    // Greedy is deterministic.
    expect((await client.completions.create(greedy('alpha'))).choices[0].text).toBe(alpha.choices[0].text);
  });

  it('accepts the prompt as token ids', async () => {
    const ids = [...Buffer.from('Hello, adapters')];
    const byIds = await client.completions.create(greedy('alpha', { prompt: ids }));
    const byText = await client.completions.create(greedy('alpha'));
    expect(byIds.choices[0].text).toBe(byText.choices[0].text);
  });

  it('streams the same text, chunk by chunk, ending with usage when asked', async () => {
    const whole = await client.completions.create(greedy('alpha'));
    const chunks = [];
    const stream = await client.completions.create({ ...greedy('alpha'), stream: true, stream_options: { include_usage: true } });
    for await (const chunk of stream) chunks.push(chunk);
    for (const c of chunks) expectComponent(server.app, 'CompletionChunk', c);
    const last = chunks.at(-1);
    expect(last?.choices).toEqual([]);
    expect(last?.usage).toEqual(whole.usage);
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    expect(chunks.map((c) => c.choices[0]?.text ?? '').join('')).toBe(whole.choices[0].text);
    expect(chunks.at(-2)?.choices[0].finish_reason).toBe('length');
  });

  it('returns n choices per prompt and reproduces seeded sampling', async () => {
    const params = { model: 'tiny', prompt: 'Once', max_tokens: 6, n: 2, temperature: 1, seed: 7, ignore_eos: true } as Params;
    const first = await client.completions.create(params);
    const again = await client.completions.create(params);
    expect(first.choices.map((c) => c.index)).toEqual([0, 1]);
    expect(again.choices.map((c) => c.text)).toEqual(first.choices.map((c) => c.text));
    expect(first.usage).toMatchObject({ prompt_tokens: 4, completion_tokens: 12 });
  });

  it('answers several prompts in one request', async () => {
    const r = await client.completions.create(greedy('tiny', { prompt: ['A', 'B'], n: 1 }));
    expect(r.choices).toHaveLength(2);
    expect(r.usage).toMatchObject({ prompt_tokens: 2, completion_tokens: 16 });
  });

  it('returns logprobs with alternatives; greedy picks the most likely token', async () => {
    const r = await client.completions.create(greedy('alpha', { logprobs: 3, max_tokens: 4 }));
    expectResponse(server.app, 'createCompletion', 200, r);
    const lp = r.choices[0].logprobs;
    expect(lp?.tokens).toHaveLength(4);
    expect(lp?.text_offset?.[0]).toBe(0);
    lp?.top_logprobs?.forEach((top, i) => {
      const values = Object.values(top ?? {});
      expect(values.length).toBeGreaterThan(0);
      expect(lp.token_logprobs?.[i]).toBeCloseTo(Math.max(...values), 5);
    });
  });

  it('stops at a stop string and reports it', async () => {
    const full = (await client.completions.create(greedy('tiny', { max_tokens: 12 }))).choices[0].text;
    const stop = full.slice(5, 7);
    const cut = full.indexOf(stop);
    const r = await client.completions.create(greedy('tiny', { max_tokens: 12, stop }));
    expect(r.choices[0].text).toBe(full.slice(0, cut));
    expect(r.choices[0].finish_reason).toBe('stop');
    expect((r.choices[0] as { stop_reason?: unknown }).stop_reason).toBe(stop);
  });

  it('answers an unknown model with 404 model_not_found', async () => {
    const err = await client.completions.create(greedy('no-such-adapter')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect((err as InstanceType<typeof OpenAI.NotFoundError>).code).toBe('model_not_found');
    expect((err as InstanceType<typeof OpenAI.NotFoundError>).param).toBe('model');
  });

  it.each([
    [{ temperature: -1 }, 'temperature', 'invalid_request'],
    [{ max_tokens: 1000 }, 'max_tokens', 'context_length_exceeded'],
    [{ logit_bias: { '99999': 1 } }, 'logit_bias', 'invalid_request'],
    [{ prompt: [] as number[] }, 'prompt', 'invalid_request'],
  ])('answers bad parameters %j with 400 naming the parameter', async (extra, param, code) => {
    const err = await client.completions.create(greedy('tiny', extra as Partial<Params>)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err).toMatchObject({ status: 400, param, code });
  });
});

describe('chat completions with the official OpenAI client', () => {
  const messages = [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Hi!' }];

  it('answers through the chat template, streamed and not, with the adapter named by model', async () => {
    const whole = await client.chat.completions.create({ model: 'alpha', messages, max_tokens: 6, temperature: 0 });
    expectResponse(server.app, 'createChatCompletion', 200, whole);
    expect(whole.choices[0].message.role).toBe('assistant');
    expect(whole.usage?.completion_tokens).toBeGreaterThan(0);
    const base = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 6, temperature: 0 });
    expect(base.choices[0].message.content).not.toBe(whole.choices[0].message.content);

    const stream = await client.chat.completions.create({ model: 'alpha', messages, max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    for (const c of chunks) expectComponent(server.app, 'ChatCompletionChunk', c);
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe(whole.choices[0].message.content);
    // The second request for the same adapter and prompt restores the full 16-token blocks that leave two tokens.
    const prompt = whole.usage?.prompt_tokens ?? 0;
    expect(whole.usage?.prompt_tokens_details?.cached_tokens).toBe(0);
    expect(chunks.at(-1)?.usage).toEqual({ ...whole.usage, prompt_tokens_details: { cached_tokens: Math.floor((prompt - 2) / 16) * 16 } });
  });

  it('returns chat logprobs', async () => {
    const r = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2 });
    expectResponse(server.app, 'createChatCompletion', 200, r);
    const content = r.choices[0].logprobs?.content ?? [];
    expect(content).toHaveLength(r.usage?.completion_tokens ?? -1);
    expect(content.every((t) => t.top_logprobs.length === 2)).toBe(true);
  });

  it('names the bad field of a bad message', async () => {
    const err = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'wizard', content: 'x' }] } as never).catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 400, code: 'invalid_request', param: 'messages[0].role' });
  });
});

describe('models and adapters at runtime', () => {
  it('lists the base model and the registered adapters with their parent and load state', async () => {
    const models = await client.models.list();
    const byId = Object.fromEntries(models.data.map((m) => [m.id, m as unknown as Record<string, unknown>]));
    expect(models.data[0].id).toBe('tiny');
    expect(byId.tiny).toMatchObject({ parent: null, root: fixture.modelDir, max_model_len: 256 });
    expect(byId.alpha).toMatchObject({ parent: 'tiny', pinned: false });
    expect(['disk', 'host', 'slot']).toContain(byId.alpha.tier);
  });

  it('registers an adapter, serves it, unloads it, and then answers 404', async () => {
    const admin = (method: string, path: string, body?: object) =>
      fetch(`${server.url}${path}`, body ? { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) } : { method });
    const registered = await admin('POST', '/v1/adapters', { name: 'custom', path: 'gamma' });
    expect(registered.status).toBe(200);
    const info = await registered.json();
    expectResponse(server.app, 'registerAdapter', 200, info);
    expect(info).toMatchObject({ name: 'custom', path: join(fixture.root, 'gamma'), rank: 8, pinned: false });

    const custom = await client.completions.create(greedy('custom'));
    const gamma = await client.completions.create(greedy('gamma'));
    expect(custom.choices[0].text).toBe(gamma.choices[0].text);
    expect((await client.models.list()).data.map((m) => m.id)).toContain('custom');

    const deleted = await admin('DELETE', '/v1/adapters/custom');
    expect(await deleted.json()).toEqual({ object: 'adapter', name: 'custom', deleted: true });
    const err = await client.completions.create(greedy('custom')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
  });
});
