import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/main.js';
import type { Fixture } from './support.js';
import { expectResponse, makeFixture, metricValue, startTestServer, waitFor } from './support.js';

let fixture: Fixture;
let server: RunningServer;

beforeAll(async () => {
  fixture = makeFixture();
  server = await startTestServer(fixture, ['--adapter', `alpha=${join(fixture.root, 'alpha')}`, '--merge', 'alpha', '--max-merged', '1']);
});
afterAll(async () => {
  await server.close();
  fixture.cleanup();
});

const get = async (path: string) => (await fetch(`${server.url}${path}`)).json() as Promise<Record<string, unknown>>;
const post = async (path: string, body: unknown) => {
  const r = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
};

describe('merged adapters over HTTP', () => {
  it('serves an adapter merged with --merge once its session is built, and says so in /v1/adapters, /v1/models and /metrics', async () => {
    await waitFor(async () => (await get('/v1/adapters/alpha')).merged === true, 60_000);
    expectResponse(server.app, 'getAdapter', 200, await get('/v1/adapters/alpha'));
    const models = (await get('/v1/models')).data as { id: string; merged?: unknown }[];
    expect(models.find((m) => m.id === 'alpha')?.merged).toBe(true);
    const r = await post('/v1/completions', { model: 'alpha', prompt: 'hello', max_tokens: 4, temperature: 0 });
    expect(r.status).toBe(200);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metricValue(metrics, 'loraserve_model_runs_total{kind="merged"}')).toBeGreaterThan(0);
    expect(metricValue(metrics, 'loraserve_merged_sessions')).toBe(1);
    expect(metricValue(metrics, 'loraserve_adapter_merges_total{change="merge"}')).toBe(1);
  });

  it('refuses a merge beyond --max-merged by name, and registers the adapter unmerged', async () => {
    const r = await post('/v1/adapters', { name: 'beta', path: 'beta', merged: true });
    expect(r.status).toBe(400);
    expect(r.json.error).toMatchObject({ code: 'adapter_unsupported', param: 'merged' });
    expect(((await get('/v1/adapters/beta')) as { merged?: unknown }).merged).toBe(false);
  });
});
