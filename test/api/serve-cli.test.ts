import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVE_OPTIONS } from '../../src/config.js';

const cacheDir = mkdtempSync(join(tmpdir(), 'loraserve-serve-'));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));
const CLI = ['--import', 'tsx', 'src/cli/main.ts', 'serve'];
const env = { ...process.env, LORASERVE_CACHE_DIR: cacheDir };

interface Served {
  url: string;
  child: ChildProcessWithoutNullStreams;
  records: Record<string, unknown>[];
  exited: Promise<number | null>;
}

/** Runs `loraserve serve` from source in a child process, until its 'listening' log record names the URL. */
function serve(args: string[]): Promise<Served> {
  const child = spawn(process.execPath, [...CLI, ...args], { env });
  const records: Record<string, unknown>[] = [];
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolveServed, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const record = JSON.parse(line) as Record<string, unknown>;
      records.push(record);
      if (record.msg === 'listening') resolveServed({ url: record.url as string, child, records, exited });
    });
    void exited.then((code) => reject(new Error(`loraserve serve exited (${code}) before listening: ${stderr}`)));
  });
}

interface ExpectedCase { model: string; adapter: string | null; prompt_ids: number[]; greedy_ids: number[] }
const expected = (JSON.parse(readFileSync('test/fixtures/hf/expected.json', 'utf8')) as { cases: ExpectedCase[] }).cases.filter((c) => c.model === 'tiny-llama');
const root = realpathSync('test/fixtures/hf/adapters');
const json = (url: string, body?: object, method = 'POST') =>
  fetch(url, body ? { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) } : { method });

describe('loraserve serve on a checkpoint and adapters written by another tool', () => {
  let server: Served;

  beforeAll(async () => {
    server = await serve([
      '--model', 'test/fixtures/hf/tiny-llama', '--quant', 'fp32', '--port', '0', '--adapter-dir', root,
      '--adapter', `adapter-a=${join(root, 'adapter-a')}`, '--threads', '1',
    ]);
  });
  afterAll(() => {
    if (server?.child.exitCode === null) server.child.kill('SIGKILL');
  });

  /** Greedy token ids (via /generate details) and the completion text, for the base model or an adapter. */
  const greedy = async (model: string, promptIds: number[]) => {
    const completion = await (await json(`${server.url}/v1/completions`, { model, prompt: promptIds, max_tokens: 16, temperature: 0, ignore_eos: true })).json();
    return completion as { choices: { text: string }[]; error?: { code: string } };
  };

  it.each(expected)('gives the independent reference\'s greedy tokens for adapter $adapter', async (c) => {
    const model = c.adapter ?? 'tiny-llama';
    const native = (await (await json(`${server.url}/generate`, { inputs: 'Tiny lm', parameters: { adapter_id: c.adapter, max_new_tokens: 16, details: true } })).json()) as {
      details: { tokens: { id: number }[] };
    };
    expect(native.details.tokens.map((t) => t.id)).toEqual(c.greedy_ids);
    const completion = await greedy(model, c.prompt_ids);
    expect(completion.choices[0].text).toBe(Buffer.from(c.greedy_ids).toString('utf8'));
  });

  it('registers an adapter by path, serves it, deletes it, and refuses paths outside the roots', async () => {
    const b = expected.find((c) => c.adapter === 'adapter-b') as ExpectedCase;
    const registered = await json(`${server.url}/v1/adapters`, { name: 'b-copy', path: join(root, 'adapter-b') });
    expect(registered.status).toBe(200);
    expect((await greedy('b-copy', b.prompt_ids)).choices[0].text).toBe(Buffer.from(b.greedy_ids).toString('utf8'));
    expect((await json(`${server.url}/v1/adapters/b-copy`, undefined, 'DELETE')).status).toBe(200);
    expect((await greedy('b-copy', b.prompt_ids)).error?.code).toBe('model_not_found');

    const outside = await json(`${server.url}/v1/adapters`, { name: 'x', path: resolve('test/fixtures/hf/tiny-llama') });
    expect(outside.status).toBe(403);
    expect(await outside.json()).toMatchObject({ error: { code: 'adapter_path_not_allowed' } });
  });

  it('shuts down gracefully on SIGTERM: the request in flight finishes, then the process exits 0', async () => {
    const response = await json(`${server.url}/v1/completions`, { model: 'adapter-a', prompt: 'x', max_tokens: 150, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } });
    server.child.kill('SIGTERM');
    const body = await response.text();
    expect(body).toContain('"completion_tokens":150');
    expect(body.trimEnd().endsWith('data: [DONE]')).toBe(true);
    expect(await server.exited).toBe(0);
    expect(server.records.map((r) => r.msg)).toEqual(expect.arrayContaining(['shutting down', 'stopped']));
  });
});

describe('loraserve serve, default run and arguments', () => {
  it('serves the embedded demo model and its adapters when no --model is given', async () => {
    const server = await serve(['--port', '0', '--threads', '1']);
    try {
      const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] };
      expect(models.data[0]).toMatchObject({ id: 'demo', parent: null });
      expect(models.data.map((m) => m.id)).toEqual(expect.arrayContaining(['python-code', 'legal', 'verse']));
      const completion = (await (await json(`${server.url}/v1/completions`, { model: 'demo', prompt: 'Hello', max_tokens: 4 })).json()) as { usage: { completion_tokens: number } };
      expect(completion.usage.completion_tokens).toBeGreaterThan(0);
    } finally {
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
    }
  });

  it('documents every flag in --help', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [...CLI, '--help'], { env });
    for (const o of SERVE_OPTIONS) expect(stdout).toContain(`--${o.flag}`);
  });

  it('refuses a bad configuration before starting, with exit code 2 and the reason', async () => {
    const failed = await promisify(execFile)(process.execPath, [...CLI, '--port', 'eighty'], { env }).catch((e: unknown) => e as { code: number; stderr: string });
    expect(failed).toMatchObject({ code: 2 });
    expect((failed as { stderr: string }).stderr).toContain('loraserve serve: --port must be an integer in [0, 65535] (found "eighty")');
  });
});
