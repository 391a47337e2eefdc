import { request } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ServingEngine } from '../../src/api/api-context.js';
import { buildApp } from '../../src/app.js';
import type { GenerationEvent, GenerationRequest } from '../../src/engine/engine-types.js';
import type { RunningServer } from '../../src/main.js';
import { createLogger } from '../../src/observability/logger.js';
import type { Fixture } from './support.js';
import { LogSink, appDeps, makeFixture, metricValue, startTestServer, waitFor } from './support.js';

let fixture: Fixture;
let server: RunningServer;
let app: FastifyInstance | null = null;

beforeAll(async () => {
  fixture = makeFixture();
  server = await startTestServer(fixture);
});
afterEach(async () => {
  await app?.close();
  app = null;
});
afterAll(async () => {
  await server?.close(0);
  fixture?.cleanup();
});

/**
 * The real engine seen through a ServingEngine that records submissions, holds on-demand adapter registrations until
 * `release` (so a test can act while one is in flight), and may replace the events of chosen requests.
 */
function observedEngine(replace: (request: GenerationRequest) => AsyncIterable<GenerationEvent> | null = () => null) {
  const engine = server.engine;
  const submitted: string[] = [];
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => { release = resolve; });
  let registering: () => void = () => undefined;
  const registerStarted = new Promise<void>((resolve) => { registering = resolve; });
  const serving: ServingEngine = {
    config: engine.config, tokenizer: engine.tokenizer, contextLength: engine.contextLength, maxWaiting: engine.maxWaiting, runtime: engine.runtime,
    get failure() { return engine.failure; },
    submit: (request) => {
      submitted.push(request.id);
      return replace(request) ?? engine.submit(request);
    },
    abort: (id) => engine.abort(id),
    adapters: {
      ...engine.adapters,
      register: async (name, path) => {
        registering();
        await released;
        return engine.adapters.register(name, path);
      },
    },
    stats: () => engine.stats(),
    prefixCache: engine.prefixCache,
    onAdapterLoad: (listener) => engine.onAdapterLoad(listener),
    onStep: (listener) => engine.onStep(listener),
  };
  return { serving, submitted, release, registerStarted };
}

async function listen(serving: ServingEngine, logs: LogSink): Promise<string> {
  app = await buildApp(appDeps(fixture, serving, createLogger('info', logs)));
  return app.listen({ host: '127.0.0.1', port: 0 });
}

const post = (url: string, body: object) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

/** The log record that ended generation `id` ('generation finished' or 'generation aborted'). */
async function ending(logs: LogSink, id: string): Promise<Record<string, unknown>> {
  const find = () => logs.records.find((r) => r.generationId === id && typeof r.msg === 'string' && r.msg.startsWith('generation '));
  await waitFor(async () => find() !== undefined, 20_000);
  return find() as Record<string, unknown>;
}

describe('aborts', () => {
  it('does not generate for a client that left while its adapter loaded on demand', async () => {
    const logs = new LogSink();
    const { serving, submitted, release, registerStarted } = observedEngine();
    const url = await listen(serving, logs);
    // A client that sends its request and then hangs up.
    const client = request(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, agent: false });
    client.on('error', () => undefined);
    client.end(JSON.stringify({ model: 'beta', prompt: 'x', max_tokens: 100, temperature: 0, ignore_eos: true }));
    await registerStarted;
    client.destroy();
    await waitFor(async () => (await new Promise<number>((resolve) => app?.server.getConnections((_, n) => resolve(n)))) === 0);
    release();
    const id = submitted[0];
    const end = await ending(logs, id);
    expect(end).toMatchObject({ msg: 'generation aborted', adapter: 'beta', completionTokens: 0 });
    // Only the first submission, which the engine refused (unknown adapter), ever reached it.
    expect(submitted).toEqual([id]);
  });

  it('aborts the other choices of a non-streaming request when one fails', async () => {
    const logs = new LogSink();
    const failing = async function* (): AsyncGenerator<GenerationEvent> {
      yield { type: 'token', tokenId: 104, text: 'h', logprob: null, topLogprobs: null };
      yield { type: 'error', code: 'engine_error', message: 'model run failed: boom' };
    };
    const { serving } = observedEngine((request) => (request.id.endsWith('-1') ? failing() : null));
    const url = await listen(serving, logs);
    const r = await post(`${url}/v1/completions`, { prompt: 'x', n: 2, max_tokens: 200, temperature: 0, ignore_eos: true });
    expect(r.status).toBe(500);
    const sibling = await ending(logs, `${r.headers.get('x-request-id')}-0`);
    expect(sibling.msg).toBe('generation aborted');
    expect(sibling.completionTokens).toBeLessThan(200);
  });
});

describe('latency metrics', () => {
  it('count an on-demand adapter load in time to first token and end-to-end latency', async () => {
    const logs = new LogSink();
    const { serving, release, registerStarted } = observedEngine();
    const url = await listen(serving, logs);
    const loadMs = 400;
    void registerStarted.then(() => setTimeout(release, loadMs));
    const r = await post(`${url}/v1/completions`, { model: 'gamma', prompt: 'x', max_tokens: 2 });
    expect(r.status).toBe(200);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metricValue(metrics, 'loraserve_time_to_first_token_seconds_count')).toBe(1);
    expect(metricValue(metrics, 'loraserve_time_to_first_token_seconds_sum')).toBeGreaterThanOrEqual(loadMs / 1000);
    expect(metricValue(metrics, 'loraserve_e2e_request_latency_seconds_sum')).toBeGreaterThanOrEqual(loadMs / 1000);
  });
});
