import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Fixture } from '../api/support.js';
import { makeFixture } from '../api/support.js';
import { CONFIG, WEIGHTS, copyAdapter, fifoFile, linkFile, releaseFifo, writeConfig, writeHugeHeader } from './support/adapter-files.js';
import type { ChildServer } from './support/child-server.js';
import { baseFlags, startChild } from './support/child-server.js';
import type { Answer } from './support/http.js';
import { call, expectApiError, expectClientError, greedyIds, post } from './support/http.js';
import { expectSettled, rssBytes } from './support/settle.js';

// Adapter files as an attacker with write access to an adapter root (or a careless operator) leaves them: links out
// of the roots, devices, pipes, lying headers, hostile regexes, huge configs, files changed after registration.

/** Every refusal here must come well within this; a wedged loader never answers at all. */
const ANSWER_MS = 10_000;
const SECRET = 'TOPSECRET-9f27c1';

let fixture: Fixture;
let server: ChildServer;
let baselineRss: number;
const fifos: string[] = [];
const at = (name: string) => join(fixture.root, name);

beforeAll(async () => {
  fixture = makeFixture();
  writeFileSync(join(fixture.outside, 'secret.txt'), `${SECRET}\n`);
  server = await startChild([
    ...baseFlags(fixture.modelDir, fixture.cacheDir), '--quant', 'fp32', '--context-length', '128', '--adapter-dir', fixture.root,
    // One slot and a host tier too small for any adapter: every switch of adapter reloads from disk.
    '--max-loras', '1', '--max-cpu-lora-bytes', '1KiB', '--adapter-load-timeout', '3',
  ]);
  for (const model of ['alpha', 'beta', null]) await greedyIds(server.url, model, 'warm up', 4);
  baselineRss = rssBytes(server.pid);
});
afterAll(async () => {
  for (const fifo of fifos) releaseFifo(fifo);
  await server?.stop();
  fixture?.cleanup();
});

const register = (name: string, path = name): Promise<Answer> => post(server.url, '/v1/adapters', { name, path }, { timeoutMs: ANSWER_MS });
const complete = (model: string): Promise<Answer> =>
  post(server.url, '/v1/completions', { model, prompt: 'Hello', max_tokens: 4, temperature: 0, ignore_eos: true }, { timeoutMs: ANSWER_MS });

/** After an attack the loader still works: a fresh copy of a good adapter registers and serves. */
async function expectLoaderWorks(name: string): Promise<void> {
  copyAdapter(at('gamma'), at(name));
  const registered = await register(name);
  expect(registered.status, registered.text).toBe(200);
  const served = await complete(name);
  expect(served.status, served.text).toBe(200);
}

describe('files that lead out of the adapter roots', () => {
  it('a config linked to a file outside the roots is refused with 403, its content never shown', async () => {
    copyAdapter(at('gamma'), at('link-config'));
    linkFile(at('link-config'), CONFIG, join(fixture.outside, 'secret.txt'));
    const answer = await register('link-config');
    expect(expectApiError(answer, [SECRET])).toBe('adapter_path_not_allowed');
  });

  it('a config linked to a valid adapter config outside the roots is refused with 403 too', async () => {
    copyAdapter(at('gamma'), at('link-valid-config'));
    linkFile(at('link-valid-config'), CONFIG, join(fixture.outside, 'delta', CONFIG));
    const answer = await register('link-valid-config');
    expect(expectApiError(answer)).toBe('adapter_path_not_allowed');
  });

  it('weights linked to a file outside the roots are refused with 403', async () => {
    copyAdapter(at('gamma'), at('link-weights'));
    linkFile(at('link-weights'), WEIGHTS, join(fixture.outside, 'delta', WEIGHTS));
    const answer = await register('link-weights');
    expect(expectApiError(answer)).toBe('adapter_path_not_allowed');
  });
});

describe('names and paths that lead out of the adapter roots', () => {
  it.each(['../elsewhere/delta', 'alpha/../../elsewhere/delta', '/etc', 'alpha/..'])('model %j is not found, and nothing is loaded from outside', async (model) => {
    expect(expectClientError(await complete(model))).toBe('model_not_found');
  });

  it.each(['../elsewhere/delta', 'alpha/../../elsewhere/delta', '/etc', '/dev/zero'])('registering path %j is refused with 403', async (path) => {
    expect(expectClientError(await register('escape', path))).toBe('adapter_path_not_allowed');
  });
});

describe('files that never end, never open, or lie about their size', () => {
  it.each([
    ['/dev/zero as the weights', (dir: string) => { copyAdapter(at('gamma'), dir); linkFile(dir, WEIGHTS, '/dev/zero'); }],
    ['/dev/zero as the config', (dir: string) => { copyAdapter(at('gamma'), dir); linkFile(dir, CONFIG, '/dev/zero'); }],
    ['a pipe as the weights', (dir: string) => { copyAdapter(at('gamma'), dir); fifos.push(fifoFile(dir, WEIGHTS)); }],
    ['a pipe as the config', (dir: string) => { copyAdapter(at('gamma'), dir); fifos.push(fifoFile(dir, CONFIG)); }],
    ['a safetensors header claiming 2^60 bytes', (dir: string) => { copyAdapter(at('gamma'), dir); writeHugeHeader(join(dir, WEIGHTS)); }],
  ])('%s: a clear 4xx in bounded time, and the next load works', async (label, make) => {
    const name = `odd-${label.replace(/[^a-z0-9]+/gi, '-').replace(/-$/, '')}`;
    make(at(name));
    const answer = await register(name);
    expectClientError(answer);
    await expectLoaderWorks(`${name}-after`);
  });
});

describe('hostile adapter configs', () => {
  const config = () => JSON.parse(readFileSync(at('gamma/adapter_config.json'), 'utf8')) as Record<string, unknown>;

  it('a catastrophic-backtracking target_modules regex: a 4xx in bounded time, and the next load works', async () => {
    copyAdapter(at('gamma'), at('redos'));
    writeConfig(at('redos'), { ...config(), target_modules: '(.*.*.*.*.*.*.*.*.*.*.*.*)*X' });
    expectClientError(await register('redos'));
    await expectLoaderWorks('redos-after');
  });

  it('a 6 MB target_modules is refused with a small error body', async () => {
    copyAdapter(at('gamma'), at('huge-config'));
    writeConfig(at('huge-config'), { ...config(), target_modules: ['q_proj', 'x'.repeat(6 * 1024 ** 2)] });
    const answer = await register('huge-config');
    expectClientError(answer);
    expect(answer.text.length).toBeLessThan(2048);
  });
});

describe('adapter files changed after registration', () => {
  it('a reload from changed files fails that request promptly; the same content under another name still serves', async () => {
    copyAdapter(at('alpha'), at('mutable'));
    copyAdapter(at('alpha'), at('twin'));
    for (const name of ['mutable', 'twin']) expect((await register(name)).status).toBe(200);
    const before = await greedyIds(server.url, 'mutable', 'Hello', 6);
    // beta takes the only slot; the 1 KiB host tier keeps nothing, so mutable's next use reads its files again.
    await greedyIds(server.url, 'beta', 'Hello', 2);
    copyFileSync(at('gamma/adapter_model.safetensors'), at('mutable/adapter_model.safetensors'));

    const changed = await complete('mutable');
    expect(expectClientError(changed)).toBe('adapter_invalid');
    expect(changed.text).toMatch(/changed/);
    expect(await greedyIds(server.url, 'twin', 'Hello', 6)).toEqual(before);
    expect((await complete('beta')).status).toBe(200);

    // Registering again binds the name to the new content.
    expect((await register('mutable')).status).toBe(200);
    expect(await greedyIds(server.url, 'mutable', 'Hello', 6)).toEqual(await greedyIds(server.url, 'gamma', 'Hello', 6));
  });
});

describe('after the attacks', () => {
  it('the server serves, nothing is left running, memory is back, and it still lists its adapters', async () => {
    const listed = await call(server.url, 'GET', '/v1/adapters', { timeoutMs: ANSWER_MS });
    expect(listed.status).toBe(200);
    await expectSettled(server, baselineRss);
  });
});
