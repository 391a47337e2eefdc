import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { percentile } from '../../bench/stats.js';
import { UsageError, parseBenchArgs } from '../../bench/serve/options.js';
import type { ServerProcess } from '../../bench/serve/server-process.js';
import { serverCommand, startServer } from '../../bench/serve/server-process.js';
import type { CountedLatency, LatencySummary, LoadResult } from '../../bench/serve/summary.js';
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

const none: CountedLatency = { count: 0, mean: null, p50: null, p90: null, p99: null };

const options: WorkloadOptions = {
  baseModel: 'base', adapters: ['a', 'b', 'c', 'd'], popularity: 'zipf', zipfS: 1, sharedPrefixFraction: 0.3, sharedPrefixTokens: 12,
  promptTokens: 5, outputTokens: 4, seed: 7, vocabSize: 1000, loadPoints: 2,
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

  it('numbers every distinct part, so no two requests of a run share one; every load point gets the same shared prefix', () => {
    const w = new Workload({ ...options, vocabSize: 258, promptTokens: 128, sharedPrefixFraction: 0.5, sharedPrefixTokens: 40, loadPoints: 3 });
    const all = [-1, 0, 1, 2].flatMap((stream) => Array.from({ length: 300 }, (_, i) => w.request(stream, i)));
    expect(new Set(all.map((r) => r.promptIds.slice(-128).join(','))).size).toBe(all.length);
    for (const r of all.filter((x) => x.sharedPrefix)) expect(r.promptIds.slice(0, 40)).toEqual(w.sharedPrefix);
    expect(all.filter((r) => r.sharedPrefix).length).toBe(600);
    // Past the number, the distinct part is random: not the same tokens in every request.
    expect(new Set(all.map((r) => r.promptIds.at(-1))).size).toBeGreaterThan(100);
    // Three tokens of a three-token vocabulary tell 27 requests apart: 9 per stream of -1, 0, 1.
    const small = new Workload({ ...options, vocabSize: 3, promptTokens: 3, sharedPrefixFraction: 0, loadPoints: 2 });
    expect(small).toMatchObject({ numberTokens: 3, distinctParts: 27 });
    expect(small.fits(9)).toBe(true);
    expect(small.fits(10)).toBe(false);
    const parts = [-1, 0, 1].flatMap((stream) => Array.from({ length: 9 }, (_, i) => small.request(stream, i).promptIds.join(',')));
    expect(new Set(parts).size).toBe(27);
    expect(() => small.request(1, 9)).toThrow(/raise --prompt-tokens/);
    expect(() => small.request(2, 0)).toThrow(RangeError);
    // Without a distinct part every prompt is the prefix alone.
    expect(new Workload({ ...options, promptTokens: 0, sharedPrefixFraction: 1 }).fits(1000)).toBe(true);
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

  it('parses --cache-prompt into the runs of each load point, and allows --serial-baseline in burst mode only', () => {
    expect(parseBenchArgs([])).toMatchObject({ cachePrompt: [true], serialBaseline: false });
    expect(parseBenchArgs(['--cache-prompt', 'false'])?.cachePrompt).toEqual([false]);
    expect(parseBenchArgs(['--cache-prompt', 'both'])?.cachePrompt).toEqual([false, true]);
    expect(parseBenchArgs(['--mode', 'burst', '--requests', '4', '--serial-baseline'])?.serialBaseline).toBe(true);
    expect(() => parseBenchArgs(['--cache-prompt', 'yes'])).toThrow(UsageError);
    expect(() => parseBenchArgs(['--serial-baseline'])).toThrow(/--mode burst/);
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

describe('bench:serve against one tiny-model server (--url), no adapters', () => {
  let server: ServerProcess;
  let tiny: string[];
  beforeAll(async () => {
    server = await startServer(serverCommand(true), [
      '--model', 'test/fixtures/hf/tiny-qwen2', '--host', '127.0.0.1', '--port', '0', '--quant', 'fp32', '--threads', '1', '--cache-dir', join(work, 'cache'),
    ], 120_000);
    tiny = ['--url', server.url, '--adapters', '0', '--vocab-size', '258'];
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('with --cache-prompt both runs each load point without then with the prefix cache, on the same prompts', async () => {
    const report = join(work, 'both.html');
    const result = await bench([
      ...tiny, '--mode', 'closed', '--concurrency', '1', '--requests', '4', '--shared-prefix-fraction', '1', '--shared-prefix-tokens', '40',
      '--prompt-tokens', '8', '--output-tokens', '4', '--cache-prompt', 'both', '--report', report,
    ]);
    expect(result.config).toMatchObject({ cache_prompt: 'both', serial_baseline: false });
    const [off, on] = result.results;
    expect(result.results.map((r) => [r.concurrency, r.cache_prompt])).toEqual([[1, false], [1, true]]);
    for (const r of [off, on]) {
      expect(r).toMatchObject({ completed: 4, failed: 0, total_prompt_tokens: 4 * 48 });
      // TTFT counts only requests that streamed text (a byte-level vocabulary's token may have none).
      expect(r.ttft_hit_ms.count).toBeLessThanOrEqual(r.hit_requests);
      expect(r.ttft_miss_ms.count).toBeLessThanOrEqual(r.completed - r.hit_requests);
      expect(r.per_adapter['tiny-qwen2'].hit_requests).toBe(r.hit_requests);
    }
    expect(off).toMatchObject({ total_cached_tokens: 0, hit_requests: 0, ttft_hit_ms: none });
    expect(off.per_adapter['tiny-qwen2'].ttft_hit_ms).toEqual(none);
    // The first request stores the 40-token prefix's whole blocks; the next three restore them.
    expect(on.hit_requests).toBeGreaterThan(0);
    expect(on.total_cached_tokens).toBeGreaterThan(0);
    expect(on.total_cached_tokens % on.hit_requests).toBe(0);
    expect(on.total_cached_tokens / on.hit_requests).toBeLessThanOrEqual(40);
    const html = readFileSync(report, 'utf8');
    for (const text of ['TTFT hit p50', 'TTFT miss p50', 'TTFT p50, cache off', 'stroke-dasharray']) expect(html).toContain(text);
  });

  it('with --serial-baseline times the burst\'s prompts one at a time first, and compares its last first token', async () => {
    const result = await bench([
      ...tiny, '--mode', 'burst', '--requests', '6', '--prompt-tokens', '32', '--output-tokens', '4', '--serial-baseline',
    ]);
    expect(result.config).toMatchObject({ cache_prompt: 'true', serial_baseline: true });
    const [r] = result.results;
    expect(r).toMatchObject({ mode: 'burst', cache_prompt: true, completed: 6, failed: 0, total_cached_tokens: 0, hit_requests: 0 });
    const baseline = r.serial_baseline as NonNullable<LoadResult['serial_baseline']>;
    expect(baseline).toMatchObject({ requests: 6, failed: 0 });
    expect(baseline.total_ttft_ms).toBeGreaterThan(0);
    expect(baseline.mean_ttft_ms).toBeCloseTo(baseline.total_ttft_ms / 6, 1);
    expect(r.last_first_token_ms).toBeGreaterThan(0);
    expect(r.ratio_last_first_token_to_serial).toBeGreaterThan(0);
    expect(r.ratio_last_first_token_to_serial).toBeCloseTo((r.last_first_token_ms as number) / baseline.total_ttft_ms, 2);
  });
});

interface FakeBody {
  model: string;
  prompt: number[];
  max_tokens: number;
  cache_prompt?: boolean;
}

/**
 * A stand-in server that speaks the OpenAI streaming protocol: adapter `ok` streams 3 chunks 25 ms apart (and reports 2
 * cached tokens unless cache_prompt is false), `busy` answers 503 adapter_unavailable, `broken` fails in the middle of
 * its stream. `bodies` holds the completion requests in arrival order.
 */
function fakeServer(): Promise<{ url: string; bodies: FakeBody[]; close(): void }> {
  const bodies: FakeBody[] = [];
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
      const request = JSON.parse(body) as FakeBody;
      bodies.push(request);
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
          event({ id: 'c', object: 'text_completion', created: 0, model: request.model, choices: [], usage: { prompt_tokens: request.prompt.length, completion_tokens: 3, total_tokens: request.prompt.length + 3, prompt_tokens_details: { cached_tokens: request.cache_prompt === false ? 0 : 2 } } });
          res.end('data: [DONE]\n\n');
        }];
      // Each step schedules the next, so a late timer (a busy machine) never sends two chunks in one go.
      const run = (i: number) => {
        steps[i]();
        if (i + 1 < steps.length) setTimeout(() => run(i + 1), 25);
      };
      setTimeout(() => run(0), 2);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, bodies, close: () => server.close() });
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
        expect(ok.itl_ms.mean).toBeGreaterThan(1); // the stand-in spaces its chunks by 25 ms
        expect(busy.e2e_ms.p50).toBeNull();
      }
    } finally {
      fake.close();
    }
  });

  it('sends cache_prompt as asked; the serial baseline sends the burst\'s own prompts one at a time, max_tokens 1, cache off', async () => {
    const fake = await fakeServer();
    try {
      const result = await bench([
        '--url', fake.url, '--adapter-names', 'ok', '--prompt-tokens', '4', '--output-tokens', '3', '--mode', 'burst', '--requests', '5',
        '--cache-prompt', 'both', '--serial-baseline', '--shared-prefix-fraction', '0.4', '--shared-prefix-tokens', '6',
      ]);
      const prompts = (bodies: FakeBody[]) => bodies.map((b) => b.prompt.join(',')).sort();
      const [warmup, ...rest] = fake.bodies;
      expect(warmup).toMatchObject({ cache_prompt: false, max_tokens: 3 });
      expect(rest).toHaveLength(20);
      const [baselineOff, burstOff, baselineOn, burstOn] = [0, 5, 10, 15].map((i) => rest.slice(i, i + 5));
      for (const b of [...baselineOff, ...baselineOn]) expect(b).toMatchObject({ cache_prompt: false, max_tokens: 1 });
      for (const b of burstOff) expect(b).toMatchObject({ cache_prompt: false, max_tokens: 3 });
      for (const b of burstOn) expect(b).toMatchObject({ cache_prompt: true, max_tokens: 3 });
      // One load point's prompts, four times over; five distinct ones, none the warm-up's.
      for (const bodies of [baselineOn, burstOff, burstOn]) expect(prompts(bodies)).toEqual(prompts(baselineOff));
      expect(new Set(prompts(baselineOff)).size).toBe(5);
      expect(prompts(baselineOff)).not.toContain(warmup.prompt.join(','));
      expect(result.results.map((r) => r.cache_prompt)).toEqual([false, true]);
      const [off, on] = result.results;
      expect(off).toMatchObject({ completed: 5, hit_requests: 0, total_cached_tokens: 0, ttft_hit_ms: none, ttft_miss_ms: { count: 5 } });
      expect(on).toMatchObject({ completed: 5, hit_requests: 5, total_cached_tokens: 10, ttft_hit_ms: { count: 5 }, ttft_miss_ms: none });
      expect(on.per_adapter.ok).toMatchObject({ hit_requests: 5, ttft_miss_ms: none });
      expectOrdered(on.ttft_hit_ms);
      for (const r of result.results) {
        expect(r.serial_baseline).toMatchObject({ requests: 5, failed: 0 });
        expect(r.serial_baseline?.total_ttft_ms).toBeGreaterThan(0);
        expect(r.last_first_token_ms).toBeGreaterThan(0);
        expect(r.ratio_last_first_token_to_serial).toBeGreaterThan(0);
      }
    } finally {
      fake.close();
    }
  });
});
