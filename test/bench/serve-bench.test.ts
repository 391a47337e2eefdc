import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { percentile } from '../../bench/stats.js';
import type { LatencySummary, LoadResult } from '../../bench/serve/summary.js';
import { Workload, poissonArrivals, zipfWeights } from '../../bench/serve/workload.js';
import type { WorkloadOptions } from '../../bench/serve/workload.js';

const work = mkdtempSync(join(tmpdir(), 'loraserve-bench-serve-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface BenchOutput {
  config: Record<string, unknown>;
  results: LoadResult[];
}

/** Runs `tsx bench/serve.ts` with `args`; its own cache root, so adapters it synthesizes stay in the test's folder. */
async function bench(args: string[]): Promise<BenchOutput> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bench/serve.ts', ...args], {
    env: { ...process.env, LORASERVE_CACHE_DIR: join(work, 'cache') }, maxBuffer: 16 * 2 ** 20,
  });
  return JSON.parse(stdout) as BenchOutput;
}

function expectOrdered(s: LatencySummary): void {
  for (const x of [s.mean, s.p50, s.p90, s.p99]) expect(x).toBeGreaterThan(0);
  expect(s.p50).toBeLessThanOrEqual(s.p90 as number);
  expect(s.p90).toBeLessThanOrEqual(s.p99 as number);
}

const options: WorkloadOptions = {
  baseModel: 'base', adapters: ['a', 'b', 'c', 'd'], popularity: 'zipf', zipfS: 1, sharedPrefixFraction: 0.3, sharedPrefixTokens: 12,
  promptTokens: 5, outputTokens: 4, seed: 7, vocabSize: 1000,
};

describe('the serving workload', () => {
  const requests = (w: Workload, n: number) => Array.from({ length: n }, (_, i) => w.request(0, i));

  it('picks adapters by zipf popularity: rank 1 most often, in proportion 1/k^s', () => {
    const counts = new Map<string, number>();
    for (const r of requests(new Workload(options), 4000)) counts.set(r.model, (counts.get(r.model) ?? 0) + 1);
    const shares = options.adapters.map((a) => (counts.get(a) ?? 0) / 4000);
    const expected = zipfWeights(4, 1); // 1, 1/2, 1/3, 1/4 over H4 = 2.083
    expect(expected[0]).toBeCloseTo(0.48, 2);
    shares.forEach((s, k) => expect(Math.abs(s - expected[k])).toBeLessThan(0.03));
    expect(shares[0]).toBeGreaterThan(shares[1]);
    expect(shares[1]).toBeGreaterThan(shares[3]);
    const uniform = new Map<string, number>();
    for (const r of requests(new Workload({ ...options, popularity: 'uniform' }), 4000)) uniform.set(r.model, (uniform.get(r.model) ?? 0) + 1);
    for (const a of options.adapters) expect(Math.abs((uniform.get(a) ?? 0) / 4000 - 0.25)).toBeLessThan(0.03);
  });

  it('names the base model when there are no adapters', () => {
    const r = new Workload({ ...options, adapters: [] }).request(0, 0);
    expect(r).toMatchObject({ model: 'base', adapter: null });
  });

  it('starts the given fraction of prompts with one shared prefix, the rest of each prompt its own', () => {
    const w = new Workload(options);
    const all = requests(w, 1000);
    const prefixed = all.filter((r) => r.sharedPrefix);
    expect(Math.abs(prefixed.length - 300)).toBeLessThanOrEqual(1);
    // Spread evenly: every 10 consecutive requests hold 3 prefixed ones, give or take one.
    for (let i = 0; i + 10 <= 1000; i += 10) expect(Math.abs(all.slice(i, i + 10).filter((r) => r.sharedPrefix).length - 3)).toBeLessThanOrEqual(1);
    for (const r of prefixed) {
      expect(r.promptIds).toHaveLength(17);
      expect(r.promptIds.slice(0, 12)).toEqual(w.sharedPrefix);
    }
    for (const r of all.filter((x) => !x.sharedPrefix)) expect(r.promptIds).toHaveLength(5);
    const tails = new Set(all.map((r) => r.promptIds.slice(-5).join(',')));
    expect(tails.size).toBe(1000);
    for (const id of all.flatMap((r) => r.promptIds)) expect(id >= 0 && id < 1000 && Number.isInteger(id)).toBe(true);
    expect(requests(new Workload({ ...options, sharedPrefixFraction: 0 }), 100).some((r) => r.sharedPrefix)).toBe(false);
  });

  it('is a function of the seed, and each load point gets prompts of its own', () => {
    expect(requests(new Workload(options), 50)).toEqual(requests(new Workload(options), 50));
    const other = requests(new Workload({ ...options, seed: 8 }), 50);
    expect(other.map((r) => r.promptIds)).not.toEqual(requests(new Workload(options), 50).map((r) => r.promptIds));
    const w = new Workload(options);
    expect(w.request(1, 0).promptIds.slice(-5)).not.toEqual(w.request(0, 0).promptIds.slice(-5));
  });

  it('spaces Poisson arrivals by exponential gaps of mean 1/rate', () => {
    const next = poissonArrivals(4, 3, 'x');
    const times = Array.from({ length: 20000 }, next);
    const gaps = times.map((t, i) => t - (i === 0 ? 0 : times[i - 1]));
    const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
    expect(Math.abs(mean - 250) / 250).toBeLessThan(0.03);
    const sd = Math.sqrt(gaps.reduce((a, g) => a + (g - mean) ** 2, 0) / gaps.length);
    expect(Math.abs(sd / mean - 1)).toBeLessThan(0.05); // exponential: standard deviation = mean
    expect(gaps.every((g) => g > 0)).toBe(true);
    const again = poissonArrivals(4, 3, 'x');
    expect(Array.from({ length: 5 }, again)).toEqual(times.slice(0, 5));
  });

  it('interpolates percentiles between ranks, the 50th being the median', () => {
    expect(percentile([4, 1, 3, 2], 50)).toBe(2.5);
    expect(percentile([1, 2, 3, 4, 5], 90)).toBeCloseTo(4.6);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });
});

describe('bench:serve against a server it starts', () => {
  it('runs a closed-loop sweep on the tiny model with adapters, and writes the JSON and the HTML report', async () => {
    const out = join(work, 'serve.json');
    const report = join(work, 'serve.html');
    const result = await bench([
      '--from-source', '--model', 'test/fixtures/hf/tiny-qwen2', '--server-args', '--quant fp32 --threads 1',
      '--mode', 'closed', '--concurrency', '1,3', '--requests', '6', '--adapters', '2', '--popularity', 'zipf',
      '--shared-prefix-fraction', '0.5', '--shared-prefix-tokens', '16', '--prompt-tokens', '8', '--output-tokens', '6',
      '--out', out, '--report', report,
    ]);
    expect(result.config).toMatchObject({ started_server: true, served_model: 'tiny-qwen2', adapters: ['a0', 'a1'], vocab_size: 258 });
    expect(result.results.map((r) => r.concurrency)).toEqual([1, 3]);
    for (const r of result.results) {
      expect(r).toMatchObject({ mode: 'closed', completed: 6, failed: 0, total_output_tokens: 36 });
      expect(r.errors).toEqual({});
      // Three of six prompts carry the 16-token prefix: 3 × 24 + 3 × 8 prompt tokens.
      expect(r.total_prompt_tokens).toBe(96);
      expect(r.total_cached_tokens).toBeGreaterThanOrEqual(0);
      expect(r.request_throughput).toBeGreaterThan(0);
      expect(r.output_throughput).toBeCloseTo(r.request_throughput * 6, 0);
      expectOrdered(r.ttft_ms);
      expectOrdered(r.e2e_ms);
      expect(r.itl_ms.p50).toBeLessThanOrEqual(r.itl_ms.p99 as number);
      expect(r.ttft_ms.p99).toBeLessThanOrEqual(r.e2e_ms.p99 as number);
      const adapters = Object.keys(r.per_adapter);
      expect(adapters.length).toBeGreaterThan(0);
      for (const a of adapters) {
        expect(['a0', 'a1']).toContain(a);
        expectOrdered(r.per_adapter[a].e2e_ms);
      }
      expect(adapters.reduce((n, a) => n + r.per_adapter[a].completed, 0)).toBe(6);
    }
    expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual(result);
    const html = readFileSync(report, 'utf8');
    expect(html).toContain('<svg');
    expect(html).toContain('TTFT p99');
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
  });
});

/**
 * A stand-in server that speaks the OpenAI streaming protocol: adapter `ok` streams 3 chunks 10 ms apart, `busy` answers 503
 * adapter_unavailable, `broken` fails in the middle of its stream.
 */
function fakeServer(): Promise<{ url: string; close(): void }> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.on('data', (d: Buffer) => { body += d.toString(); });
    req.on('end', () => {
      if (req.method === 'GET' && req.url !== '/v1/models') {
        res.writeHead(404).end();
        return;
      }
      if (req.url === '/v1/models') {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ object: 'list', data: ['fake', 'ok', 'busy', 'broken'].map((id, i) => ({ id, object: 'model', created: 0, owned_by: 'x', parent: i ? 'fake' : null })) }));
        return;
      }
      const request = JSON.parse(body) as { model: string; prompt: number[] };
      if (request.model === 'busy') {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'no slot', type: 'server_error', param: null, code: 'adapter_unavailable' } }));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const event = (x: unknown) => res.write(`data: ${JSON.stringify(x)}\n\n`);
      const chunk = (text: string) => event({ id: 'c', object: 'text_completion', created: 0, model: request.model, choices: [{ index: 0, text, finish_reason: null }] });
      const steps = request.model === 'broken'
        ? [() => chunk('x'), () => { event({ error: { message: 'boom', type: 'server_error', param: null, code: 'engine_error' } }); res.end(); }]
        : [() => chunk('a'), () => chunk('b'), () => chunk('c'), () => {
          event({ id: 'c', object: 'text_completion', created: 0, model: request.model, choices: [], usage: { prompt_tokens: request.prompt.length, completion_tokens: 3, total_tokens: request.prompt.length + 3, prompt_tokens_details: { cached_tokens: 2 } } });
          res.end('data: [DONE]\n\n');
        }];
      steps.forEach((step, i) => setTimeout(step, 2 + 10 * i));
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() });
  }));
}

describe('bench:serve against a running server (--url)', () => {
  it('counts failed requests by code, per adapter, without stopping; sweeps Poisson rates and burst', async () => {
    const fake = await fakeServer();
    try {
      const common = ['--url', fake.url, '--adapter-names', 'ok,busy,broken', '--prompt-tokens', '4', '--output-tokens', '3', '--warmup', '0'];
      const poisson = await bench([...common, '--mode', 'poisson', '--rate', '100,200', '--requests', '30']);
      const burst = await bench([...common, '--mode', 'burst', '--requests', '30', '--seed', '1']);
      expect(poisson.results.map((r) => r.rate)).toEqual([100, 200]);
      expect(burst.results).toHaveLength(1);
      for (const r of [...poisson.results, ...burst.results]) {
        const { ok, busy, broken } = r.per_adapter;
        expect(ok.completed + busy.failed + broken.failed).toBe(30);
        expect(r).toMatchObject({ completed: ok.completed, failed: busy.failed + broken.failed, total_output_tokens: 3 * ok.completed, total_cached_tokens: 2 * ok.completed });
        expect(r.errors).toEqual({ adapter_unavailable: busy.failed, engine_error: broken.failed });
        expect(busy).toMatchObject({ completed: 0, errors: { adapter_unavailable: busy.failed } });
        expect(broken).toMatchObject({ completed: 0, errors: { engine_error: broken.failed } });
        expect(Math.min(ok.completed, busy.failed, broken.failed)).toBeGreaterThan(0);
        expectOrdered(ok.ttft_ms);
        expectOrdered(ok.itl_ms);
        expect(ok.itl_ms.mean).toBeGreaterThan(1); // the stand-in spaces its chunks by 10 ms
        expect(busy.e2e_ms.p50).toBeNull();
      }
    } finally {
      fake.close();
    }
  });
});
