import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServingEngine } from '../../src/api/api-context.js';
import { loadOpenApi, operations } from '../../src/api/openapi.js';
import { buildApp } from '../../src/app.js';
import type { GenerationEvent } from '../../src/engine/engine-types.js';
import type { RunningServer } from '../../src/main.js';
import { synthAdapter } from '../../src/synth/adapter-synth.js';
import type { Fixture } from './support.js';
import { appDeps, expectComponent, expectResponse, makeFixture, sseData, startTestServer } from './support.js';

let fixture: Fixture;
let server: RunningServer;

beforeAll(async () => {
  fixture = makeFixture();
  synthAdapter(join(fixture.root, 'wide'), fixture.modelDir, { rank: 32, alpha: 32, targetModules: ['q_proj'], seed: 5 });
  mkdirSync(join(fixture.root, 'broken'));
  copyFileSync(join(fixture.root, 'alpha', 'adapter_config.json'), join(fixture.root, 'broken', 'adapter_config.json'));
  writeFileSync(join(fixture.root, 'broken', 'adapter_model.safetensors'), 'truncated');
  symlinkSync(join(fixture.outside, 'delta'), join(fixture.root, 'escape'));
  // A template that refuses some conversations, as many real ones do.
  const tokenizerConfig = join(fixture.modelDir, 'tokenizer_config.json');
  const config = JSON.parse(readFileSync(tokenizerConfig, 'utf8')) as { chat_template: string };
  config.chat_template = `{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('Conversations must start with a user or system message') }}{% endif %}${config.chat_template}`;
  writeFileSync(tokenizerConfig, JSON.stringify(config));
  server = await startTestServer(fixture);
});
afterAll(async () => {
  await server?.close(0);
  fixture?.cleanup();
});

const post = (url: string, payload: object) => server.app.inject({ method: 'POST', url, payload });

describe('routes ⇄ openapi.yaml', () => {
  const spec = loadOpenApi();

  it('serves every operation of the spec', () => {
    for (const op of operations(spec)) expect(server.app.hasRoute({ method: op.method, url: op.url }), `${op.method} ${op.url}`).toBe(true);
  });

  it('refuses to build an app whose spec lacks an operation it has a handler for, or has one without a handler', async () => {
    const deps = appDeps(fixture, server.engine);
    const paths = Object.fromEntries(Object.entries(spec.paths).filter(([path]) => path !== '/tokenize'));
    await expect(buildApp({ ...deps, spec: { ...spec, paths } })).rejects.toThrow('handlers without an operation in openapi.yaml: tokenize');
    const extra = { ...spec.paths, '/v1/extra': { get: { operationId: 'extra', responses: {} } } };
    await expect(buildApp({ ...deps, spec: { ...spec, paths: extra } })).rejects.toThrow('operation extra (GET /v1/extra) has no handler');
  });

  it('serves the spec at /docs', async () => {
    const page = await server.app.inject('/docs/');
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toContain('text/html');
    const served = (await server.app.inject('/docs/json')).json();
    expect(served.openapi).toBe('3.1.0');
    expect(Object.keys(served.paths)).toEqual(Object.keys(spec.paths));
  });
});

describe('errors', () => {
  it('answers unknown routes with the catalog shape and a request id', async () => {
    const r = await server.app.inject('/v2/nothing');
    expect(r.statusCode).toBe(404);
    expect(r.json()).toEqual({ error: { message: 'no route GET /v2/nothing (see /docs)', type: 'not_found_error', param: null, code: 'not_found' } });
    expect(r.headers['x-request-id']).toMatch(/^[0-9a-f]{32}$/);
  });

  it('names the invalid field, however deep', async () => {
    const r = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }, { role: 'user', content: 5 }] });
    expect(r.statusCode).toBe(400);
    expect(r.json().error).toMatchObject({ code: 'invalid_request', param: 'messages[1].content' });
    const missing = await post('/v1/completions', { model: 'tiny' });
    expect(missing.json().error).toMatchObject({ message: 'prompt is required', param: 'prompt' });
    const range = await post('/v1/completions', { prompt: 'x', top_p: 2 });
    expect(range.json().error).toMatchObject({ message: 'top_p must be <= 1', param: 'top_p' });
    expectResponse(server.app, 'createCompletion', 400, range.json());
  });

  it.each([
    ['/v1/completions', { prompt: 'x', response_format: { type: 'json_object' } }, 'response_format'],
    ['/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], tools: [] }, 'tools'],
    ['/v1/chat/completions', { messages: [{ role: 'assistant', content: 'x', tool_calls: [] }] }, 'messages[0].tool_calls'],
    ['/v1/completions', { prompt: 'x', stream: true, stream_options: { continuous_usage_stats: true } }, 'stream_options.continuous_usage_stats'],
    ['/v1/adapters', { name: 'n', path: 'alpha', rank: 4 }, 'rank'],
  ])('refuses a field it does not implement by name (%s %j)', async (url, payload, param) => {
    const r = await post(url, payload);
    expect(r.statusCode).toBe(400);
    expect(r.json().error).toMatchObject({ code: 'invalid_request', param, message: `${param} is not supported by this server (see /docs for the fields it implements)` });
  });

  it('accepts the unimplemented TGI and LoRAX parameters their clients send unset, and refuses them set', async () => {
    const r = await post('/generate', { inputs: 'x', parameters: { max_new_tokens: 1, watermark: false, truncate: null, typical_p: null, best_of: null, decoder_input_details: false } });
    expect(r.statusCode).toBe(200);
    const set = await post('/generate', { inputs: 'x', parameters: { watermark: true } });
    expect(set.json().error).toMatchObject({ code: 'invalid_request', param: 'parameters.watermark', message: 'parameters.watermark must be one of [false,null]' });
  });

  it('answers malformed JSON with 400 and other media types with 415', async () => {
    const bad = await server.app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/json' }, payload: '{"prompt":' });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.code).toBe('invalid_request');
    const text = await server.app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/xml' }, payload: '<prompt/>' });
    expect(text.statusCode).toBe(415);
    expect(text.json().error.code).toBe('unsupported_media_type');
  });

  it("answers the chat template's refusal as the client's error", async () => {
    const r = await post('/v1/chat/completions', { messages: [{ role: 'assistant', content: 'x' }] });
    expect(r.statusCode).toBe(400);
    expect(r.json().error).toMatchObject({ code: 'chat_template_error', param: 'messages' });
    expect(r.json().error.message).toContain('Conversations must start with a user or system message');
  });

  it('answers an engine failure with 500 naming the request id, without a stack, before and during a stream', async () => {
    const e = server.engine;
    const failing = (events: GenerationEvent[]): ServingEngine => ({
      config: e.config, tokenizer: e.tokenizer, contextLength: e.contextLength, maxWaiting: e.maxWaiting, failure: null, runtime: e.runtime, adapters: e.adapters,
      prefixCache: e.prefixCache, stats: () => e.stats(), abort: (id) => e.abort(id), onAdapterLoad: () => undefined, onStep: () => undefined,
      submit: () => (async function* () { yield* events; })(),
    });
    const boom: GenerationEvent = { type: 'error', code: 'engine_error', message: 'model run failed: boom' };
    const app = await buildApp(appDeps(fixture, failing([boom])));
    const r = await app.inject({ method: 'POST', url: '/v1/completions', payload: { prompt: 'x' } });
    expect(r.statusCode).toBe(500);
    const id = r.headers['x-request-id'] as string;
    expect(r.json()).toEqual({ error: { message: `model run failed: boom (request id ${id})`, type: 'server_error', param: null, code: 'engine_error' } });

    const token: GenerationEvent = { type: 'token', tokenId: 104, text: 'h', logprob: null, topLogprobs: null };
    const streaming = await buildApp(appDeps(fixture, failing([token, boom])));
    const s = await streaming.inject({ method: 'POST', url: '/v1/completions', payload: { prompt: 'x', stream: true } });
    expect(s.statusCode).toBe(200);
    const events = sseData(s.body);
    expect(JSON.parse(events[0]).choices[0].text).toBe('h');
    expect(JSON.parse(events[1]).error).toMatchObject({ code: 'engine_error', type: 'server_error' });
    expect(events.at(-1)).toBe('[DONE]');
    expect(s.body).not.toMatch(/at .*\.ts:\d+/);
    await Promise.all([app.close(), streaming.close()]);
  });
});

describe('native routes', () => {
  it('generates with parameters.adapter_id, with details', async () => {
    const r = await post('/generate', { inputs: 'Hello', parameters: { adapter_id: 'alpha', max_new_tokens: 5, details: true, top_n_tokens: 2 } });
    expect(r.statusCode).toBe(200);
    const body = r.json();
    expectResponse(server.app, 'generate', 200, body);
    expect(body.details).toMatchObject({ finish_reason: expect.any(String), generated_tokens: body.details.tokens.length, seed: null, prefill: [] });
    expect(body.details.tokens.map((t: { text: string }) => t.text).join('')).toBe(body.generated_text);
    expect(body.details.top_tokens[0]).toHaveLength(2);
    const base = await post('/generate', { inputs: 'Hello', parameters: { max_new_tokens: 5 } });
    expect(base.json()).toEqual({ generated_text: expect.any(String) });
  });

  it('streams TGI events whose last one carries the whole text and the details', async () => {
    const whole = (await post('/generate', { inputs: 'Hello', parameters: { adapter_id: 'alpha', max_new_tokens: 6 } })).json();
    const r = await post('/generate_stream', { inputs: 'Hello', parameters: { adapter_id: 'alpha', max_new_tokens: 6, return_full_text: true } });
    expect(r.headers['content-type']).toContain('text/event-stream');
    const events = sseData(r.body).map((e) => JSON.parse(e));
    for (const e of events) expectComponent(server.app, 'GenerateStreamEvent', e);
    expect(events.map((e) => e.index)).toEqual(events.map((_, i) => i));
    expect(events.slice(0, -1).every((e) => e.generated_text === null && e.details === null)).toBe(true);
    const last = events.at(-1);
    expect(last.generated_text).toBe(`Hello${whole.generated_text}`);
    expect(events.map((e) => e.token.text).join('')).toBe(whole.generated_text);
    expect(last.details).toMatchObject({ generated_tokens: events.length });
  });

  it('answers an unknown adapter_id with 404', async () => {
    const r = await post('/generate', { inputs: 'Hello', parameters: { adapter_id: 'nope' } });
    expect(r.statusCode).toBe(404);
    expect(r.json().error).toMatchObject({ code: 'model_not_found', param: 'parameters.adapter_id' });
  });

  it('tokenizes prompts and conversations and detokenizes ids', async () => {
    const both = await post('/tokenize', { prompt: 'a', messages: [{ role: 'user', content: 'b' }] });
    expect(both.json().error).toMatchObject({ code: 'invalid_request', message: 'give exactly one of prompt and messages' });
    const t = (await post('/tokenize', { prompt: 'héllo' })).json();
    expectResponse(server.app, 'tokenize', 200, t);
    expect(t).toEqual({ count: 6, max_model_len: 256, tokens: [...Buffer.from('héllo')] });
    const chat = (await post('/tokenize', { messages: [{ role: 'user', content: 'hi' }] })).json();
    expect((await post('/detokenize', { tokens: chat.tokens })).json()).toEqual({ prompt: '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n' });
    const bad = await post('/detokenize', { tokens: [1, 99999] });
    expect(bad.json().error).toMatchObject({ code: 'invalid_request', param: 'tokens[1]' });
  });

  it('reports health', async () => {
    const r = await server.app.inject('/health');
    expect(r.json()).toEqual({ status: 'ok', runtime: server.engine.runtime });
  });
});

describe('adapter management', () => {
  it('registers, gets, pins, unpins and deletes an adapter', async () => {
    const registered = await post('/v1/adapters', { name: 'org/g', path: join(fixture.root, 'gamma'), pinned: true });
    expect(registered.statusCode).toBe(200);
    expect(registered.json()).toMatchObject({ object: 'adapter', name: 'org/g', pinned: true, rank: 8, digest: expect.any(String) });
    const got = await server.app.inject('/v1/adapters/org%2Fg');
    expectResponse(server.app, 'getAdapter', 200, got.json());
    const unpinned = await post('/v1/adapters/org%2Fg/pin', { pinned: false });
    expect(unpinned.json().pinned).toBe(false);
    expect((await server.app.inject({ method: 'POST', url: '/v1/adapters/org%2Fg/pin' })).json().pinned).toBe(true);
    const list = (await server.app.inject('/v1/adapters')).json();
    expectResponse(server.app, 'listAdapters', 200, list);
    expect(list.data.map((a: { name: string }) => a.name)).toContain('org/g');
    expect((await server.app.inject({ method: 'DELETE', url: '/v1/adapters/org%2Fg' })).json()).toEqual({ object: 'adapter', name: 'org/g', deleted: true });
    const gone = await server.app.inject('/v1/adapters/org%2Fg');
    expect(gone.statusCode).toBe(404);
    expect(gone.json().error.code).toBe('adapter_not_found');
    expect((await server.app.inject({ method: 'DELETE', url: '/v1/adapters/org%2Fg' })).statusCode).toBe(404);
  });

  it('supports the vLLM aliases', async () => {
    const loaded = await post('/v1/load_lora_adapter', { lora_name: 'sql', lora_path: 'beta' });
    expect(loaded.statusCode).toBe(200);
    expect(loaded.headers['content-type']).toContain('text/plain');
    expect(loaded.body).toBe("Success: LoRA adapter 'sql' added successfully.");
    expect((await post('/v1/unload_lora_adapter', { lora_name: 'sql' })).body).toBe("Success: LoRA adapter 'sql' removed successfully.");
    expect((await post('/v1/unload_lora_adapter', { lora_name: 'sql' })).json().error).toMatchObject({ code: 'adapter_not_found', param: 'lora_name' });
  });

  it.each([
    ['a path outside the roots', () => ({ name: 'x', path: join(fixture.outside, 'delta') }), 403, 'adapter_path_not_allowed', 'path'],
    ['a missing path outside the roots', () => ({ name: 'x', path: '/no/such/dir' }), 403, 'adapter_path_not_allowed', 'path'],
    ['a symlink out of the roots', () => ({ name: 'x', path: 'escape' }), 403, 'adapter_path_not_allowed', 'path'],
    ['.. in the path', () => ({ name: 'x', path: 'alpha/../../elsewhere/delta' }), 403, 'adapter_path_not_allowed', 'path'],
    ['a missing directory', () => ({ name: 'x', path: 'nope' }), 400, 'adapter_path_not_found', 'path'],
    ['an invalid adapter', () => ({ name: 'x', path: 'broken' }), 400, 'adapter_invalid', 'path'],
    ['a rank above --max-lora-rank', () => ({ name: 'x', path: 'wide' }), 400, 'adapter_rank_too_large', 'path'],
    ["the base model's name", () => ({ name: 'tiny', path: 'alpha' }), 400, 'invalid_request', 'name'],
    ['a name that is not an adapter name', () => ({ name: '../x', path: 'alpha' }), 400, 'invalid_request', 'name'],
  ])('refuses %s', async (_, body, status, code, param) => {
    const r = await post('/v1/adapters', body());
    expect(r.statusCode).toBe(status);
    expect(r.json().error).toMatchObject({ code, param });
    expectResponse(server.app, 'registerAdapter', status, r.json());
  });
});

describe('shutdown', () => {
  it('finishes in-flight requests and refuses new ones', async () => {
    const inFlight = fetch(`${server.url}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'x', max_tokens: 200, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } }),
    });
    const response = await inFlight;
    const closing = server.close(10_000);
    // The listener stays open while the request in flight finishes: health and new requests answer 503.
    const late = await fetch(`${server.url}/health`);
    expect(late.status).toBe(503);
    expect(await late.json()).toMatchObject({ error: { code: 'shutting_down', type: 'service_unavailable_error' } });
    const refused = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x' }) });
    expect(refused.status).toBe(503);
    const events = sseData(await response.text());
    expect(events.at(-1)).toBe('[DONE]');
    expect(JSON.parse(events.at(-2) as string).usage.completion_tokens).toBe(200);
    expect(JSON.parse(events.at(-3) as string).choices[0].finish_reason).toBe('length');
    await closing;
  });
});
