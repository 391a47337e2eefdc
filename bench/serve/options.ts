// Command-line flags of `npm run bench:serve`, parsed and checked into one frozen object.
import { parseArgs } from 'node:util';
import type { LoadMode, LoadPoint } from './load.js';
import type { Popularity } from './workload.js';

export const USAGE = `Usage: npm run bench:serve -- [flags]
Target (one of):
  --url URL                    a running server (http://host:port)
  (no --url)                   start \`loraserve serve\` on a free port, stop it (SIGTERM) at the end:
    --model DIR                checkpoint to serve (default: the synthetic qwen2.5-0.5b-shaped checkpoint)
    --runtime R                passed to the server: auto | native | stock
    --server-args "..."        more server flags, e.g. "--max-batch 32 --threads 2"
    --from-source              run src/cli/main.ts through tsx instead of bin/loraserve.js
    --start-timeout S          seconds to wait for 'listening' (default 1200: a first start quantizes)
  --api-key KEY                sent as Authorization: Bearer KEY
Load:
  --mode closed|poisson|burst  (default closed)
  --concurrency C[,C...]       closed mode: clients, one result per value (default 1)
  --rate R[,R...]              poisson mode: arrivals per second, one result per value (default 1)
  --requests N                 requests per load point (default 64 unless --duration is given)
  --duration S                 send no request after S seconds of a load point
  --cache-prompt true|false|both
                               sent as cache_prompt on every request (false: it neither reuses nor stores cached
                               prompt blocks); both: each load point runs twice, false then true, with the same
                               prompts (default true)
  --serial-baseline            burst mode: before each burst, send its prompts one at a time (cache_prompt false,
                               max_tokens 1) and compare the burst's last first token with the sum of their TTFTs
  --warmup N                   requests sent one at a time before the first load point, not counted, with
                               cache_prompt false so they leave nothing in the prefix cache (default 1)
  --timeout S                  per-request timeout in seconds (default 600)
Workload:
  --adapters N                 adapters the requests spread over (0: base model only; default 8). A started server
                               gets N rank-16 adapters on all projections; with --url, the first N it lists
                               (default: up to 8 of them)
  --adapter-names a,b,...      with --url: the adapters to use
  --popularity uniform|zipf    (default uniform)
  --zipf-s S                   zipf exponent (default 1.0)
  --shared-prefix-fraction F   fraction of requests starting with one shared prefix (default 0)
  --shared-prefix-tokens T     (default 128)
  --prompt-tokens P            distinct tokens per prompt after the prefix (default 128); they start with the
                               request's number, so no two requests of a run share them
  --output-tokens O            generated tokens per request, ignore_eos (default 32)
  --vocab-size V               prompt ids are drawn from [0, V) (default: the model's, or 256 with --url)
  --seed N                     (default 0)
Output: one JSON object on stdout;
  --out FILE.json              also write it to FILE
  --report FILE.html           a standalone page with the latency-versus-load chart and a table`;

export interface BenchOptions {
  url: string | null;
  apiKey: string | null;
  model: string | null;
  runtime: string | null;
  serverArgs: string;
  fromSource: boolean;
  startTimeoutS: number;
  points: LoadPoint[];
  requests: number;
  durationS: number;
  /** The `cache_prompt` values each load point runs with, in order: [true], [false] or [false, true] (both). */
  cachePrompt: readonly boolean[];
  /** Burst mode: time the burst's prompts one at a time before it. */
  serialBaseline: boolean;
  warmup: number;
  timeoutS: number;
  /** Adapters to spread requests over; null: the default (8, or with --url up to 8 of those the server lists). */
  adapters: number | null;
  adapterNames: string[] | null;
  popularity: Popularity;
  zipfS: number;
  sharedPrefixFraction: number;
  sharedPrefixTokens: number;
  promptTokens: number;
  outputTokens: number;
  vocabSize: number | null;
  seed: number;
  out: string | null;
  report: string | null;
}

export class UsageError extends Error {}

function number(flag: string, text: string, check: (x: number) => boolean, what: string): number {
  const x = Number(text);
  if (text.trim() === '' || !check(x)) throw new UsageError(`--${flag} must be ${what} (found ${JSON.stringify(text)})`);
  return x;
}
const count = (flag: string, text: string, min = 0) => number(flag, text, (x) => Number.isSafeInteger(x) && x >= min, `an integer >= ${min}`);
const positive = (flag: string, text: string) => number(flag, text, (x) => Number.isFinite(x) && x > 0, 'a positive number');
const list = (flag: string, text: string, parse: (flag: string, s: string) => number) => text.split(',').map((s) => parse(flag, s));

/** Parses `argv` (flags only); throws UsageError naming the flag at fault. Returns null for --help. */
export function parseBenchArgs(argv: string[]): BenchOptions | null {
  // The server's flags start with '-', which parseArgs takes for a missing value unless joined with '='.
  const args = argv.flatMap((a, i) => (argv[i - 1] === '--server-args' ? [] : a === '--server-args' && i + 1 < argv.length ? [`${a}=${argv[i + 1]}`] : [a]));
  const { values: v } = parseArgs({
    args,
    strict: true,
    options: {
      help: { type: 'boolean', default: false },
      url: { type: 'string' }, 'api-key': { type: 'string' }, model: { type: 'string' }, runtime: { type: 'string' },
      'server-args': { type: 'string', default: '' }, 'from-source': { type: 'boolean', default: false }, 'start-timeout': { type: 'string', default: '1200' },
      mode: { type: 'string', default: 'closed' }, concurrency: { type: 'string', default: '1' }, rate: { type: 'string', default: '1' },
      requests: { type: 'string' }, duration: { type: 'string' }, 'cache-prompt': { type: 'string', default: 'true' },
      'serial-baseline': { type: 'boolean', default: false }, warmup: { type: 'string', default: '1' }, timeout: { type: 'string', default: '600' },
      adapters: { type: 'string' }, 'adapter-names': { type: 'string' }, popularity: { type: 'string', default: 'uniform' },
      'zipf-s': { type: 'string', default: '1.0' }, 'shared-prefix-fraction': { type: 'string', default: '0' }, 'shared-prefix-tokens': { type: 'string', default: '128' },
      'prompt-tokens': { type: 'string', default: '128' }, 'output-tokens': { type: 'string', default: '32' }, 'vocab-size': { type: 'string' },
      seed: { type: 'string', default: '0' }, out: { type: 'string' }, report: { type: 'string' },
    },
  });
  if (v.help) return null;
  const mode = v.mode as LoadMode;
  if (!['closed', 'poisson', 'burst'].includes(mode)) throw new UsageError(`--mode must be closed, poisson or burst (found ${JSON.stringify(v.mode)})`);
  if (v.popularity !== 'uniform' && v.popularity !== 'zipf') throw new UsageError(`--popularity must be uniform or zipf (found ${JSON.stringify(v.popularity)})`);
  const url = v.url ?? null;
  if (url !== null) {
    for (const flag of ['model', 'runtime', 'server-args', 'from-source'] as const) {
      if (v[flag]) throw new UsageError(`--${flag} applies only when the bench starts the server (without --url)`);
    }
  }
  if (url === null && v['adapter-names'] !== undefined) throw new UsageError('--adapter-names applies only with --url (a started server serves a0, a1, ...)');
  const durationS = v.duration === undefined ? Number.POSITIVE_INFINITY : positive('duration', v.duration);
  const requests = v.requests === undefined ? (v.duration === undefined ? 64 : Number.POSITIVE_INFINITY) : count('requests', v.requests, 1);
  if (mode === 'burst' && !Number.isFinite(requests)) throw new UsageError('--mode burst needs --requests');
  const cachePrompt = new Map([['true', [true]], ['false', [false]], ['both', [false, true]]]).get(v['cache-prompt']);
  if (cachePrompt === undefined) throw new UsageError(`--cache-prompt must be true, false or both (found ${JSON.stringify(v['cache-prompt'])})`);
  if (v['serial-baseline'] && mode !== 'burst') throw new UsageError('--serial-baseline applies only to --mode burst');
  const points: LoadPoint[] = mode === 'closed' ? list('concurrency', v.concurrency, (f, s) => count(f, s, 1)).map((concurrency) => ({ mode, concurrency }))
    : mode === 'poisson' ? list('rate', v.rate, positive).map((rate) => ({ mode, rate }))
      : [{ mode }];
  const adapterNames = v['adapter-names'] === undefined ? null : v['adapter-names'].split(',').filter((s) => s !== '');
  const sharedPrefixFraction = number('shared-prefix-fraction', v['shared-prefix-fraction'], (x) => x >= 0 && x <= 1, 'a number in [0, 1]');
  const sharedPrefixTokens = count('shared-prefix-tokens', v['shared-prefix-tokens']);
  const promptTokens = count('prompt-tokens', v['prompt-tokens'], sharedPrefixFraction === 1 && sharedPrefixTokens > 0 ? 0 : 1);
  return Object.freeze({
    url, apiKey: v['api-key'] ?? null, model: v.model ?? null, runtime: v.runtime ?? null, serverArgs: v['server-args'], fromSource: v['from-source'],
    startTimeoutS: positive('start-timeout', v['start-timeout']),
    points, requests, durationS, cachePrompt: Object.freeze(cachePrompt), serialBaseline: v['serial-baseline'], warmup: count('warmup', v.warmup), timeoutS: positive('timeout', v.timeout),
    adapters: adapterNames?.length ?? (v.adapters === undefined ? null : count('adapters', v.adapters)), adapterNames, popularity: v.popularity, zipfS: number('zipf-s', v['zipf-s'], (x) => Number.isFinite(x) && x >= 0, 'a number >= 0'),
    sharedPrefixFraction, sharedPrefixTokens, promptTokens, outputTokens: count('output-tokens', v['output-tokens'], 1),
    vocabSize: v['vocab-size'] === undefined ? null : count('vocab-size', v['vocab-size'], 1), seed: count('seed', v.seed),
    out: v.out ?? null, report: v.report ?? null,
  });
}
