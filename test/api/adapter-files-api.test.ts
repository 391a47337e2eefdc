import { execFileSync } from 'node:child_process';
import { cpSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/main.js';
import type { Fixture } from './support.js';
import { expectResponse, makeFixture, startTestServer } from './support.js';

let fixture: Fixture;
let server: RunningServer;
/** Content of a file outside the roots, which must never reach a response. */
const SECRET = 'TOP-SECRET-CONTENT-1234';

/** A copy of the fixture's alpha adapter under the root as `name`, changed by `edit`. */
function rootAdapter(name: string, edit: (dir: string) => void): void {
  const dir = join(fixture.root, name);
  cpSync(join(fixture.root, 'alpha'), dir, { recursive: true });
  edit(dir);
}

function relink(dir: string, file: string, target: string): void {
  rmSync(join(dir, file));
  symlinkSync(target, join(dir, file));
}

beforeAll(async () => {
  fixture = makeFixture();
  writeFileSync(join(fixture.outside, 'secret.json'), `{"peft_type": "${SECRET}"}`);
  rootAdapter('leaky-config', (dir) => relink(dir, 'adapter_config.json', join(fixture.outside, 'secret.json')));
  rootAdapter('leaky-weights', (dir) => relink(dir, 'adapter_model.safetensors', join(fixture.outside, 'delta', 'adapter_model.safetensors')));
  rootAdapter('fifo', (dir) => {
    rmSync(join(dir, 'adapter_model.safetensors'));
    execFileSync('mkfifo', [join(dir, 'adapter_model.safetensors')]);
  });
  const config = (dir: string, fields: object) => writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 8, ...fields }));
  rootAdapter('redos', (dir) => config(dir, { target_modules: '(.*.*.*.*.*.*.*.*.*.*.*.*)*X' }));
  rootAdapter('huge', (dir) => config(dir, { target_modules: ['q_proj', 'x'.repeat(6 * 2 ** 20)] }));
  rootAdapter('long', (dir) => config(dir, { target_modules: ['q_proj', 'y'.repeat(900_000)] }));
  rootAdapter('gamma2', () => undefined);
  server = await startTestServer(fixture, ['--adapter-load-timeout', '2']);
});
afterAll(async () => {
  await server?.close(0);
  fixture?.cleanup();
});

const inject = (method: 'POST' | 'DELETE' | 'GET', url: string, payload?: object) => server.app.inject({ method, url, ...(payload ? { payload } : {}) });
const complete = (model: string) => inject('POST', '/v1/completions', { model, prompt: 'hi', max_tokens: 2 });

/** The error of a response, checked to hold no server path, no content from outside the roots, and to be small. */
function safeError(response: { statusCode: number; body: string; json(): { error: Record<string, unknown> } }, status: number) {
  expect(response.statusCode).toBe(status);
  expect(response.body).not.toContain(fixture.dir);
  expect(response.body).not.toContain(SECRET);
  expect(response.body.length).toBeLessThan(1000);
  return response.json().error;
}

describe('adapter files over HTTP', () => {
  it('refuses files linked out of the roots, on registration and on demand, without leaking them', async () => {
    const config = await inject('POST', '/v1/adapters', { name: 'leaky', path: 'leaky-config' });
    expect(safeError(config, 403)).toMatchObject({
      code: 'adapter_path_not_allowed',
      param: 'path',
      message: "adapter 'leaky': adapter_config.json: resolves outside the adapter roots (--adapter-dir)",
    });
    expectResponse(server.app, 'registerAdapter', 403, config.json());
    const weights = await inject('POST', '/v1/load_lora_adapter', { lora_name: 'leaky', lora_path: 'leaky-weights' });
    expect(safeError(weights, 403)).toMatchObject({ code: 'adapter_path_not_allowed', message: expect.stringContaining('adapter_model.safetensors') });
    const onDemand = await complete('leaky-config');
    expect(safeError(onDemand, 403)).toMatchObject({ code: 'adapter_path_not_allowed', param: 'model' });
    expectResponse(server.app, 'createCompletion', 403, onDemand.json());
  });

  it('refuses a FIFO and a runaway regex in bounded time, then loads the next adapter', async () => {
    const fifo = await inject('POST', '/v1/adapters', { name: 'fifo', path: 'fifo' });
    expect(safeError(fifo, 400)).toMatchObject({ code: 'adapter_invalid', message: "adapter 'fifo': adapter_model.safetensors: not a regular file" });
    const started = performance.now();
    const redos = await inject('POST', '/v1/adapters', { name: 'redos', path: 'redos' });
    expect(safeError(redos, 400)).toMatchObject({ code: 'adapter_invalid', message: "adapter 'redos': loading did not finish within 2 s (--adapter-load-timeout)" });
    expect(performance.now() - started).toBeLessThan(15_000);
    expect((await inject('POST', '/v1/adapters', { name: 'after', path: 'beta' })).statusCode).toBe(200);
    expect((await complete('after')).statusCode).toBe(200);
  });

  it('keeps error bodies small whatever the config holds', async () => {
    expect(safeError(await inject('POST', '/v1/adapters', { name: 'huge', path: 'huge' }), 400)).toMatchObject({ code: 'adapter_invalid' });
    expect(safeError(await complete('long'), 400)).toMatchObject({ code: 'adapter_unsupported', message: expect.stringContaining('…') });
  });
});

describe('DELETE /v1/adapters/{name}', () => {
  it('leaves an adapter under a root to be loaded on demand again', async () => {
    expect((await complete('gamma')).statusCode).toBe(200);
    const deleted = await inject('DELETE', '/v1/adapters/gamma');
    expect(deleted.json()).toEqual({ object: 'adapter', name: 'gamma', deleted: true });
    expect((await complete('gamma')).statusCode).toBe(200);
    expect((await inject('GET', '/v1/adapters/gamma')).statusCode).toBe(200);
  });

  it('with retire=true keeps the name from loading on demand until it is registered again', async () => {
    expect((await complete('alpha')).statusCode).toBe(200);
    const retired = await inject('DELETE', '/v1/adapters/alpha?retire=true');
    expect(retired.json()).toEqual({ object: 'adapter', name: 'alpha', deleted: true, retired: true });
    expectResponse(server.app, 'deleteAdapter', 200, retired.json());
    expect(safeError(await complete('alpha'), 404)).toMatchObject({ code: 'model_not_found' });
    expect((await inject('GET', '/v1/adapters/alpha')).statusCode).toBe(404);

    // A root adapter never loaded can be retired too; a name that is nowhere cannot.
    expect((await inject('DELETE', '/v1/adapters/beta?retire=true')).statusCode).toBe(200);
    expect((await complete('beta')).statusCode).toBe(404);
    expect((await inject('DELETE', '/v1/adapters/nowhere?retire=true')).json().error).toMatchObject({ code: 'adapter_not_found' });

    expect((await inject('POST', '/v1/adapters', { name: 'alpha', path: 'alpha' })).statusCode).toBe(200);
    expect((await complete('alpha')).statusCode).toBe(200);
  });

  it('retires a name whose load on demand is in flight', async () => {
    // A load that runs into --adapter-load-timeout keeps the loader busy, so the load on demand queues behind it.
    const stuck = inject('POST', '/v1/adapters', { name: 'redos2', path: 'redos' });
    const first = complete('gamma2');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const retired = await inject('DELETE', '/v1/adapters/gamma2?retire=true');
    expect(retired.json()).toEqual({ object: 'adapter', name: 'gamma2', deleted: true, retired: true });
    // Served if its load was already under way (the usual case), refused if the retirement came first.
    expect([200, 404]).toContain((await first).statusCode);
    expect((await stuck).statusCode).toBe(400);
    expect((await inject('GET', '/v1/adapters/gamma2')).statusCode).toBe(404);
    expect((await complete('gamma2')).statusCode).toBe(404);
  });
});
