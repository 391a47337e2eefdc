import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Fixture } from '../api/support.js';
import { makeFixture } from '../api/support.js';
import type { ChildServer } from './support/child-server.js';
import { baseFlags, startChild } from './support/child-server.js';
import type { Answer } from './support/http.js';
import { call, expectApiError, greedyIds, post } from './support/http.js';
import { expectSettled, rssBytes } from './support/settle.js';

// Many concurrent requests, streamed and not, over several adapters (one of them loaded on demand, one registered
// and removed over and over), with clients hanging up at random points. Afterwards the server must serve exactly as
// before: nothing leaked, nothing stuck, the same greedy tokens.

const REQUESTS = 300;
const REQUEST_TIMEOUT_MS = 60_000;
/** Two slots for four adapters: requests wait for slots, adapters are bound and evicted all the time. */
const MAX_LORAS = 2;
const CHECKED = ['tiny', 'alpha', 'beta', 'gamma'] as const;
const PROMPT = 'Hello, adapters';

let fixture: Fixture;
let server: ChildServer;
let baselineRss: number;
const before = new Map<string, number[]>();

beforeAll(async () => {
  fixture = makeFixture();
  server = await startChild([
    ...baseFlags(fixture.modelDir, fixture.cacheDir), '--quant', 'fp32', '--context-length', '128', '--adapter-dir', fixture.root,
    '--adapter', `alpha=${join(fixture.root, 'alpha')}`, '--adapter', `beta=${join(fixture.root, 'beta')}`,
    '--max-loras', String(MAX_LORAS), '--max-batch', '8', '--max-waiting', '1024',
  ]);
  for (const model of CHECKED) before.set(model, await greedyIds(server.url, model === 'tiny' ? null : model, PROMPT));
  baselineRss = rssBytes(server.pid);
});
afterAll(async () => {
  await server?.stop();
  fixture?.cleanup();
});

interface Planned {
  model: string;
  chat: boolean;
  stream: boolean;
  n: number;
  maxTokens: number;
  /** When the client hangs up, from sending; null: it reads the answer to the end. */
  hangUpAfterMs: number | null;
}

const plan = fc.record<Planned>({
  model: fc.constantFrom('tiny', 'alpha', 'beta', 'gamma', 'churn'),
  chat: fc.boolean(),
  stream: fc.boolean(),
  n: fc.integer({ min: 1, max: 2 }),
  maxTokens: fc.integer({ min: 2, max: 80 }),
  hangUpAfterMs: fc.option(fc.integer({ min: 0, max: 1500 }), { freq: 2 }),
});

type Outcome = 'completed' | 'hung up' | 'refused';

/** Sends one planned request; checks what came back unless the client hung up first. */
async function run(p: Planned): Promise<Outcome> {
  const common = { model: p.model, n: p.n, max_tokens: p.maxTokens, temperature: 0.7, ignore_eos: true, stream: p.stream };
  const [path, body] = p.chat ? ['/v1/chat/completions', { ...common, messages: [{ role: 'user', content: PROMPT }] }] : ['/v1/completions', { ...common, prompt: PROMPT }];
  const hangUp = new AbortController();
  const timer = p.hangUpAfterMs === null ? null : setTimeout(() => hangUp.abort(), p.hangUpAfterMs);
  let answer: Answer;
  try {
    answer = await post(server.url, path, body, { signal: hangUp.signal, timeoutMs: REQUEST_TIMEOUT_MS });
  } catch (err) {
    if (hangUp.signal.aborted) return 'hung up';
    throw err;
  } finally {
    if (timer) clearTimeout(timer);
  }
  if (answer.status !== 200) {
    // Only the adapter being removed and registered again may be missing.
    expect({ model: p.model, status: answer.status, text: answer.text.slice(0, 200) }).toMatchObject({ model: 'churn', status: 404 });
    expect(expectApiError(answer)).toBe('model_not_found');
    return 'refused';
  }
  if (p.stream) {
    expect(answer.text.trimEnd().endsWith('data: [DONE]'), answer.text.slice(-300)).toBe(true);
    expect(answer.text).not.toMatch(/"error"/);
  } else {
    const usage = (JSON.parse(answer.text) as { usage: { completion_tokens: number } }).usage;
    expect(usage.completion_tokens).toBe(p.n * p.maxTokens);
  }
  return 'completed';
}

/** Registers and removes `churn` (beta's files), and removes the on-demand `gamma`, until `stop` is set. */
async function churn(stop: { done: boolean }): Promise<number> {
  let rounds = 0;
  while (!stop.done) {
    const registered = await post(server.url, '/v1/adapters', { name: 'churn', path: 'beta' });
    expect(registered.status, registered.text).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 20 + (rounds % 5) * 20));
    for (const name of rounds % 3 === 0 ? ['churn', 'gamma'] : ['churn']) {
      const removed = await call(server.url, 'DELETE', `/v1/adapters/${name}`);
      expect([200, 404], removed.text).toContain(removed.status);
    }
    rounds++;
  }
  return rounds;
}

describe('a disconnect storm with adapter churn', () => {
  it(`${REQUESTS} concurrent requests, many hanging up midway, while adapters come and go`, async () => {
    const requests = fc.sample(plan, REQUESTS);
    const stop = { done: false };
    const churning = churn(stop);
    const outcomes = await Promise.all(requests.map(run)).finally(() => { stop.done = true; });
    expect(await churning).toBeGreaterThan(0);
    const count = (o: Outcome) => outcomes.filter((x) => x === o).length;
    // The storm really mixed finished and abandoned requests.
    expect(count('completed'), JSON.stringify(outcomes)).toBeGreaterThan(REQUESTS / 10);
    expect(count('hung up'), JSON.stringify(outcomes)).toBeGreaterThan(REQUESTS / 10);
  });

  it('afterwards every adapter answers exactly as before, and none is held by a request', async () => {
    for (const model of CHECKED) expect(await greedyIds(server.url, model === 'tiny' ? null : model, PROMPT), model).toEqual(before.get(model));
    const adapters = JSON.parse((await call(server.url, 'GET', '/v1/adapters')).text) as { data: { name: string; active_requests: number }[] };
    expect(adapters.data.filter((a) => a.active_requests !== 0)).toEqual([]);
  });

  it('nothing is left running or waiting, and memory is back', async () => {
    await expectSettled(server, baselineRss);
  });
});
