import { spawn } from 'node:child_process';
import type { Worker } from 'node:worker_threads';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/main.js';
import type { Fixture } from './support.js';
import { makeFixture, startTestServer, waitFor } from './support.js';

let fixture: Fixture;
beforeAll(() => {
  fixture = makeFixture();
});
afterAll(() => fixture?.cleanup());

describe('a server whose engine worker died', () => {
  let server: RunningServer;
  const workers: Worker[] = [];
  const onWorker = (worker: Worker) => workers.push(worker);

  beforeAll(async () => {
    process.on('worker', onWorker);
    server = await startTestServer(fixture);
    process.off('worker', onWorker);
  });
  afterAll(async () => {
    await server?.close(0);
  });

  it('answers 503 engine_unavailable on /health and to new requests, without the reason or any path', async () => {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    // The engine worker is the first thread the server starts.
    await workers[0].terminate();
    await waitFor(async () => server.engine.failure !== null);
    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(503);
    const body = await health.text();
    expect(JSON.parse(body)).toEqual({
      error: { message: 'the engine stopped serving (the server log says why)', type: 'service_unavailable_error', param: null, code: 'engine_unavailable' },
    });
    const completion = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x' }) });
    expect(completion.status).toBe(503);
    expect(await completion.text()).not.toContain(fixture.dir);
  });
});

describe('loraserve serve whose engine worker dies', () => {
  it('logs why and exits with status 1', async () => {
    const child = spawn(process.execPath, [
      '--import', 'tsx', '--import', './test/api/engine-killer.mjs', 'src/cli/main.ts', 'serve',
      '--model', fixture.modelDir, '--quant', 'fp32', '--port', '0', '--threads', '1', '--cache-dir', fixture.cacheDir,
    ]);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const records: Record<string, unknown>[] = [];
    const listening = new Promise<string>((resolve) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        const record = JSON.parse(line) as Record<string, unknown>;
        records.push(record);
        if (record.msg === 'listening') resolve(record.url as string);
      });
    });
    try {
      const url = await Promise.race([listening, exited.then((code) => { throw new Error(`serve exited (${code}) before listening`); })]);
      expect((await fetch(`${url}/health`)).status).toBe(200);
      child.kill('SIGUSR2');
      expect(await exited).toBe(1);
      expect(records.find((r) => r.msg === 'the engine stopped serving; exiting')).toMatchObject({ level: 60, reason: expect.stringContaining('engine worker exited') });
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
