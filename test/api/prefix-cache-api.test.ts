import { join } from 'node:path';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/main.js';
import type { Fixture } from './support.js';
import { expectResponse, makeFixture, metricValue, openAiClient, startTestServer } from './support.js';

let fixture: Fixture;
let server: RunningServer;
let client: OpenAI;
const ADMIN = { authorization: 'Bearer admin', 'content-type': 'application/json' };

beforeAll(async () => {
  fixture = makeFixture();
  server = await startTestServer(fixture, ['--admin-key', 'admin', '--adapter', `alpha=${join(fixture.root, 'alpha')}`]);
  client = openAiClient(server);
});
afterAll(async () => {
  await server.close();
  fixture.cleanup();
});

/** 40 token ids: two full blocks can be restored from it (the last two prompt tokens are always computed). */
const SYSTEM = Array.from({ length: 40 }, (_, i) => 10 + i);

async function call(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(`${server.url}${path}`, { method, headers: ADMIN, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

const cachedTokens = async (model: string, prompt: number[], extra: Record<string, unknown> = {}) => {
  const r = await client.completions.create({ model, prompt, max_tokens: 2, temperature: 0, ...extra } as OpenAI.CompletionCreateParamsNonStreaming);
  return r.usage?.prompt_tokens_details?.cached_tokens;
};

describe('/v1/prefix-cache', () => {
  it('warms and pins a prompt for an adapter, which later requests for that adapter alone reuse', async () => {
    const warmed = await call('POST', '/v1/prefix-cache', { model: 'alpha', prompt: SYSTEM });
    expect(warmed.status).toBe(200);
    expectResponse(server.app, 'warmPrefixCache', 200, warmed.json);
    expect(warmed.json).toMatchObject({ model: 'alpha', prompt_tokens: 40, cached_tokens: 32, pinned: true });

    expect(await cachedTokens('alpha', [...SYSTEM, 7, 8, 9])).toBe(32);
    expect(await cachedTokens('tiny', [...SYSTEM, 7, 8, 9])).toBe(0);
    expect(await cachedTokens('alpha', [...SYSTEM, 7, 8, 9], { cache_salt: 'tenant' })).toBe(0);
    expect(await cachedTokens('alpha', [...SYSTEM, 7, 8, 9], { cache_prompt: false })).toBe(0);

    const listed = await call('GET', '/v1/prefix-cache');
    expectResponse(server.app, 'getPrefixCache', 200, listed.json);
    expect(listed.json).toMatchObject({ enabled: true, block_tokens: 16, hit_tokens: 32 });
    const entries = listed.json.data as { models: string[]; pinned_blocks: number; blocks: number }[];
    expect(entries.find((e) => e.models.includes('alpha'))).toMatchObject({ pinned_blocks: 2 });
    expect(entries.find((e) => e.models.includes('tiny'))).toMatchObject({ pinned_blocks: 0 });

    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metricValue(metrics, 'vllm:prefix_cache_hits_total')).toBe(32);
    expect(metricValue(metrics, 'loraserve_prefix_cache_hit_tokens_total')).toBe(32);
    expect(metricValue(metrics, 'vllm:prefix_cache_queries_total')).toBeGreaterThanOrEqual(4 * 43);
    expect(metricValue(metrics, 'loraserve_prefix_cache_bytes')).toBeGreaterThan(0);
    expect(metrics).toContain('loraserve_step_tokens_bucket{le="64",kind="prefill"}');
  });

  it('warms a conversation start rendered without the assistant turn', async () => {
    const messages = [{ role: 'system' as const, content: 'You answer in one word, always, whatever the question is.' }];
    const warmed = await call('POST', '/v1/prefix-cache', { messages, pin: false });
    expect(warmed.status).toBe(200);
    expect(warmed.json).toMatchObject({ model: 'tiny', pinned: false });
    const chat = await client.chat.completions.create({ model: 'tiny', messages: [...messages, { role: 'user', content: 'Why?' }], max_tokens: 2 });
    expect(chat.usage?.prompt_tokens_details?.cached_tokens).toBe(warmed.json.cached_tokens);
    expect(warmed.json.cached_tokens).toBeGreaterThan(0);
  });

  it('drops one model\'s blocks, or all, with the admin key only', async () => {
    expect((await fetch(`${server.url}/v1/prefix-cache`, { method: 'DELETE' })).status).toBe(401);
    expect((await call('DELETE', '/v1/prefix-cache?model=nope')).status).toBe(404);
    const dropped = await call('DELETE', '/v1/prefix-cache?model=alpha');
    expectResponse(server.app, 'clearPrefixCache', 200, dropped.json);
    // Its pinned blocks and those stored under the salt.
    expect(dropped.json).toMatchObject({ model: 'alpha', dropped_blocks: 4 });
    expect(await cachedTokens('alpha', [...SYSTEM, 7, 8, 9])).toBe(0);
    const all = await call('DELETE', '/v1/prefix-cache');
    expect(all.json.dropped_blocks).toBeGreaterThan(0);
    expect((await call('GET', '/v1/prefix-cache')).json).toMatchObject({ blocks: 0, bytes: 0 });
  });

  it('refuses a warm request without exactly one of prompt and messages', async () => {
    for (const body of [{}, { prompt: [1, 2], messages: [{ role: 'user', content: 'x' }] }]) {
      const r = await call('POST', '/v1/prefix-cache', body);
      expect(r.status).toBe(400);
      expect(r.json.error).toMatchObject({ code: 'invalid_request' });
    }
  });
});
