import { join } from 'node:path';
import OpenAI from 'openai';
import type { CompletionCreateParamsNonStreaming } from 'openai/resources/completions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/main.js';
import type { Fixture } from './support.js';
import { LogSink, makeFixture, metricValue, openAiClient, startTestServer, waitFor } from './support.js';

const API_KEY = 'api-secret';
const ADMIN_KEY = 'admin-secret';

let fixture: Fixture;
let server: RunningServer;
let client: OpenAI;
const logs = new LogSink();

beforeAll(async () => {
  fixture = makeFixture();
  server = await startTestServer(fixture, [
    '--adapter', `alpha=${join(fixture.root, 'alpha')}`, '--api-key', API_KEY, '--admin-key', ADMIN_KEY,
    '--max-batch', '1', '--max-waiting', '1', '--context-length', '512', '--body-limit', '2K',
  ], logs);
  client = openAiClient(server, API_KEY);
});
afterAll(async () => {
  await server?.close(0);
  fixture?.cleanup();
});

type Params = CompletionCreateParamsNonStreaming & { ignore_eos?: boolean };
const short: Params = { model: 'tiny', prompt: 'Hi', max_tokens: 4, temperature: 0, ignore_eos: true };
/** About half a second of decoding on its own: long enough to hold the only batch slot while the test acts. */
const long: Params = { ...short, max_tokens: 500 };

const scrape = async () => (await fetch(`${server.url}/metrics`)).text();

describe('keys', () => {
  it('refuses inference without the API key and accepts the API key or the admin key', async () => {
    const anonymous = await openAiClient(server, 'wrong').completions.create(short).catch((e: unknown) => e);
    expect(anonymous).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(anonymous).toMatchObject({ status: 401, code: 'invalid_api_key' });
    expect((await client.completions.create(short)).usage?.completion_tokens).toBe(4);
    expect((await openAiClient(server, ADMIN_KEY).models.list()).data[0].id).toBe('tiny');
  });

  it('keeps adapter management for the admin key', async () => {
    const get = (key?: string) => fetch(`${server.url}/v1/adapters`, key ? { headers: { authorization: `Bearer ${key}` } } : {});
    expect((await get()).status).toBe(401);
    expect((await get(API_KEY)).status).toBe(401);
    const ok = await get(ADMIN_KEY);
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { data: { name: string }[] }).data.map((a) => a.name)).toEqual(['alpha']);
  });

  it('shows the directories in /v1/models to the admin key only', async () => {
    const withApiKey = JSON.stringify(await client.models.list());
    expect(withApiKey).not.toContain(fixture.dir);
    expect((await client.models.list()).data.map((m) => [m.id, (m as { root?: string }).root])).toEqual([['tiny', 'tiny'], ['alpha', 'alpha']]);
    const withAdminKey = (await openAiClient(server, ADMIN_KEY).models.list()).data.map((m) => (m as { root?: string }).root);
    expect(withAdminKey).toEqual([fixture.modelDir, join(fixture.root, 'alpha')]);
  });

  it('leaves health and metrics open', async () => {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    expect((await fetch(`${server.url}/metrics`)).status).toBe(200);
  });
});

describe('limits', () => {
  it('answers 429 when the waiting queue is full, and serves the waiting request once the slot frees', async () => {
    const abortsBefore = metricValue(await scrape(), 'loraserve_requests_total{outcome="abort"}') ?? 0;
    const running = await client.completions.create({ ...long, stream: true });
    const tokens = running[Symbol.asyncIterator]();
    await tokens.next();
    const waiting = client.completions.create(short);
    await waitFor(async () => metricValue(await scrape(), 'vllm:num_requests_waiting{model_name="tiny"}') === 1);
    const refused = await client.completions.create(short).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
    expect(refused).toMatchObject({ status: 429, code: 'queue_full' });
    running.controller.abort();
    expect((await waiting).choices[0].finish_reason).toBe('length');
    // The stream the client dropped counts as aborted; the refused request counts only as an error.
    const after = await scrape();
    expect(metricValue(after, 'loraserve_requests_total{outcome="abort"}')).toBe(abortsBefore + 1);
    expect(metricValue(after, 'loraserve_request_errors_total{code="queue_full"}')).toBe(1);
  });

  it('aborts a request whose client disconnects mid-stream, freeing its slot for the next one', async () => {
    const before = metricValue(await scrape(), 'loraserve_requests_total{outcome="abort"}') ?? 0;
    const stream = await client.completions.create({ ...long, model: 'alpha', stream: true });
    const chunks = stream[Symbol.asyncIterator]();
    await chunks.next();
    // While it runs, the gateway metric names the adapter in use.
    expect(await scrape()).toMatch(/vllm:lora_requests_info\{max_lora="8",running_lora_adapters="alpha",waiting_lora_adapters=""\} \d/);
    stream.controller.abort();
    const next = await client.completions.create(short);
    expect(next.choices[0].finish_reason).toBe('length');
    expect(metricValue(await scrape(), 'loraserve_requests_total{outcome="abort"}')).toBe(before + 1);
    const aborted = logs.records.find((r) => r.msg === 'generation aborted' && r.adapter === 'alpha');
    expect(aborted?.completionTokens).toBeLessThan(500);
  });

  it('answers 413 for a body above --body-limit', async () => {
    const err = await client.completions.create({ ...short, prompt: 'x'.repeat(4096) }).catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 413, code: 'request_too_large' });
  });
});

describe('observability', () => {
  it('exposes loraserve_* and the vllm:* gauges, and the counters move with requests', async () => {
    const before = await scrape();
    await client.completions.create(short);
    const after = await scrape();
    for (const name of ['vllm:num_requests_running{model_name="tiny"}', 'vllm:num_requests_waiting{model_name="tiny"}', 'vllm:kv_cache_usage_perc{model_name="tiny"}']) {
      expect(metricValue(after, name), name).toBe(0);
    }
    expect(after).toMatch(/vllm:lora_requests_info\{max_lora="8",running_lora_adapters="",waiting_lora_adapters=""\} \d+(\.\d+)?/);
    const delta = (sample: string) => (metricValue(after, sample) ?? 0) - (metricValue(before, sample) ?? 0);
    expect(delta('loraserve_generation_tokens_total')).toBe(4);
    expect(delta('loraserve_prompt_tokens_total')).toBe(2);
    expect(delta('loraserve_requests_total{outcome="length"}')).toBe(1);
    expect(delta('loraserve_time_to_first_token_seconds_count')).toBe(1);
    expect(delta('loraserve_inter_token_latency_seconds_count')).toBe(3);
    expect(delta('loraserve_engine_steps_total')).toBeGreaterThanOrEqual(4);
    expect(delta('loraserve_request_queue_seconds_count')).toBe(1);
    expect(metricValue(after, 'loraserve_adapters_registered')).toBe(1);
    // The preloaded adapter was read from disk at startup and written into a slot when first used.
    expect(metricValue(after, 'loraserve_adapter_load_seconds_count{tier="host"}')).toBeGreaterThanOrEqual(1);
    expect(metricValue(after, 'loraserve_request_errors_total{code="queue_full"}')).toBe(1);
  });

  it('logs JSON records with request id, adapter, token counts and timings, never the prompt at info level', async () => {
    const prompt = 'confidential prompt text';
    const r = await client.completions.create({ ...short, model: 'alpha', prompt });
    const id = r.id.replace(/^cmpl-/, '');
    const generation = logs.records.find((rec) => rec.reqId === id && rec.msg === 'generation finished');
    expect(generation).toMatchObject({ level: 30, adapter: 'alpha', outcome: 'length', promptTokens: prompt.length, completionTokens: 4 });
    expect(generation?.ttftMs).toEqual(expect.any(Number));
    expect(generation?.durationMs).toEqual(expect.any(Number));
    const request = logs.records.find((rec) => rec.reqId === id && rec.msg === 'request completed');
    expect(request).toMatchObject({ method: 'POST', url: '/v1/completions', statusCode: 200 });
    const text = JSON.stringify(logs.records);
    expect(text).not.toContain(prompt);
    expect(text).not.toContain(API_KEY);
  });
});
