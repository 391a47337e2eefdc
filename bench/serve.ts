// Serving benchmark: drives a loraserve server over HTTP as users do (streamed /v1/completions through the OpenAI
// client) under closed-loop, Poisson or burst load, and reports throughput and TTFT / ITL / E2E percentiles per load
// point and per adapter. Prints one JSON object. `--help` lists the flags.
// Usage: npm run bench:serve [-- --mode poisson --rate 0.5,1,2 --adapters 8 --popularity zipf --report serve.html]
//        npm run bench:serve [-- --mode burst --requests 16 --adapters 0 --serial-baseline --cache-prompt both]
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defaultCacheRoot } from '../src/model/build-cache.js';
import { benchAdapters, defaultAdapterRoot } from './bench-adapters.js';
import { benchCheckpoint } from './bench-checkpoint.js';
import type { RequestRecord } from './serve/client.js';
import { BenchClient } from './serve/client.js';
import { runLoad } from './serve/load.js';
import type { BenchOptions } from './serve/options.js';
import { USAGE, UsageError, parseBenchArgs } from './serve/options.js';
import { reportHtml } from './serve/report-html.js';
import type { ServerProcess } from './serve/server-process.js';
import { serverCommand, splitArgs, startServer } from './serve/server-process.js';
import type { LoadResult } from './serve/summary.js';
import { summarize } from './serve/summary.js';
import { Workload } from './serve/workload.js';

let options: BenchOptions | null;
try {
  options = parseBenchArgs(process.argv.slice(2));
} catch (err) {
  if (!(err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS'))) throw err;
  console.error(`bench:serve: ${(err as Error).message}\n\n${USAGE}`);
  process.exit(2);
}
if (options === null) {
  console.log(USAGE);
  process.exit(0);
}
const opts = options;
const log = (message: string) => process.stderr.write(`bench:serve: ${message}\n`);
const ms = (x: number | null | undefined) => (x == null ? 'n/a' : `${x} ms`);

/** Starts `loraserve serve` on the model with `opts.adapters` bench adapters registered at startup. */
async function startOwnServer(): Promise<{ server: ServerProcess; modelDir: string; adapterNames: string[] }> {
  const modelDir = opts.model === null ? benchCheckpoint('qwen2.5-0.5b') : resolve(opts.model);
  // The preset checkpoint shares bench:lora's adapters; any other gets a root of its own, keyed by its path.
  const root = opts.model === null ? defaultAdapterRoot() : join(defaultCacheRoot(), 'bench', `adapters-r16-${createHash('sha256').update(modelDir).digest('hex').slice(0, 12)}`);
  const adapterNames = Array.from({ length: opts.adapters ?? 8 }, (_, i) => `a${i}`);
  const adapterDir = adapterNames.length > 0 ? benchAdapters(modelDir, root) : null;
  const args = [
    '--model', modelDir, '--host', '127.0.0.1', '--port', '0',
    ...(opts.runtime === null ? [] : ['--runtime', opts.runtime]),
    ...adapterNames.flatMap((name, i) => ['--adapter', `${name}=${adapterDir?.(i)}`]),
    ...splitArgs(opts.serverArgs),
  ];
  log(`starting loraserve serve ${args.join(' ')}`);
  const server = await startServer(serverCommand(opts.fromSource), args, opts.startTimeoutS * 1000);
  log(`listening at ${server.url} (runtime ${String(server.listening.runtime)})`);
  return { server, modelDir, adapterNames };
}

/** The model's vocabulary size from its config.json, for drawing prompt ids; 256 (valid in any vocabulary) if unknown. */
function vocabSize(modelDir: string | null): number {
  if (opts.vocabSize !== null) return opts.vocabSize;
  if (modelDir === null) return 256;
  const config = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as { vocab_size?: number; text_config?: { vocab_size?: number } };
  return config.vocab_size ?? config.text_config?.vocab_size ?? 256;
}

let own: Awaited<ReturnType<typeof startOwnServer>> | null = null;
const stopOwn = async () => {
  if (own === null) return;
  const code = await own.server.stop();
  own = null;
  if (code !== 0) log(`the server exited with code ${code}`);
};
process.once('SIGINT', () => void stopOwn().finally(() => process.exit(130)));

try {
  own = opts.url === null ? await startOwnServer() : null;
  const url = own?.server.url ?? (opts.url as string).replace(/\/+$/, '');
  const client = new BenchClient(url, opts.apiKey, opts.timeoutS * 1000);
  const served = await client.models();
  const adapters = opts.adapterNames ?? (own ? own.adapterNames : served.adapters.slice(0, opts.adapters ?? 8));
  if (own === null && opts.adapters !== null && adapters.length < opts.adapters) {
    throw new UsageError(`--adapters ${opts.adapters}: the server lists only ${served.adapters.length} adapters (name others with --adapter-names)`);
  }
  const health = (await fetch(`${url}/health`).then((r) => r.json()).catch(() => null)) as { runtime?: string } | null;
  const workload = new Workload({
    baseModel: served.base, adapters, popularity: opts.popularity, zipfS: opts.zipfS, sharedPrefixFraction: opts.sharedPrefixFraction,
    sharedPrefixTokens: opts.sharedPrefixTokens, promptTokens: opts.promptTokens, outputTokens: opts.outputTokens, seed: opts.seed,
    vocabSize: vocabSize(own?.modelDir ?? null), loadPoints: opts.points.length,
  });
  if (Number.isFinite(opts.requests) && !workload.fits(Math.max(opts.requests, opts.warmup))) {
    throw new UsageError(`--prompt-tokens ${opts.promptTokens}: too few tokens to tell ${opts.points.length + 1} streams of ${Math.max(opts.requests, opts.warmup)} requests apart (${workload.distinctParts} distinct parts at vocabulary ${workload.options.vocabSize})`);
  }
  const config = {
    benchmark: 'serve', url: opts.url, started_server: own !== null, model: own?.modelDir ?? served.base, served_model: served.base,
    runtime: health?.runtime ?? null, server_args: opts.serverArgs, mode: opts.points[0].mode, requests: Number.isFinite(opts.requests) ? opts.requests : null,
    duration_s: Number.isFinite(opts.durationS) ? opts.durationS : null, cache_prompt: opts.cachePrompt.length > 1 ? 'both' : String(opts.cachePrompt[0]),
    serial_baseline: opts.serialBaseline, adapters, popularity: opts.popularity, zipf_s: opts.zipfS,
    shared_prefix_fraction: opts.sharedPrefixFraction, shared_prefix_tokens: opts.sharedPrefixTokens, prompt_tokens: opts.promptTokens,
    output_tokens: opts.outputTokens, vocab_size: workload.options.vocabSize, seed: opts.seed, warmup: opts.warmup,
  };

  // Warm-up requests store nothing in the prefix cache, so the first load point starts as cold as the warm-up found it.
  for (let i = 0; i < opts.warmup; i++) {
    const r = await client.send(workload.request(-1, i), performance.now(), false);
    if (r.error !== null) log(`warm-up request ${i} failed: ${r.error}`);
  }
  const results: LoadResult[] = [];
  for (const [p, point] of opts.points.entries()) {
    // With --cache-prompt both, the same stream p twice: the same prompts (and Poisson arrivals), cache off then on.
    for (const cachePrompt of opts.cachePrompt) {
      const label = `${point.mode === 'closed' ? `concurrency ${point.concurrency}` : point.mode === 'poisson' ? `rate ${point.rate}/s` : 'burst'}, cache_prompt ${cachePrompt}`;
      let baseline: RequestRecord[] | null = null;
      if (opts.serialBaseline) {
        // The burst's own prompts, one at a time; cache_prompt false, so the burst finds none of them cached.
        log(`${label}: serial baseline, ${opts.requests} requests one at a time`);
        baseline = [];
        for (let i = 0; i < opts.requests; i++) baseline.push(await client.send({ ...workload.request(p, i), maxTokens: 1 }, performance.now(), false));
      }
      log(`${label}: running`);
      const run = await runLoad(point, { requests: opts.requests, durationMs: opts.durationS * 1000, seed: opts.seed }, (i, origin) => client.send(workload.request(p, i), origin, cachePrompt));
      const result = summarize(point, run.records, run.elapsedMs, cachePrompt, baseline);
      log(`${label}: ${result.completed} completed, ${result.failed} failed, ${result.request_throughput} req/s, TTFT p50 ${ms(result.ttft_ms.p50)} `
        + `(${result.hit_requests} prefix-cache hits: p50 ${ms(result.ttft_hit_ms.p50)}; misses ${ms(result.ttft_miss_ms.p50)}), ITL p50 ${ms(result.itl_ms.p50)}`);
      if (result.serial_baseline) {
        log(`${label}: last first token at ${ms(result.last_first_token_ms)}; the same ${result.serial_baseline.requests} prompts one at a time `
          + `(${result.serial_baseline.failed} failed) ${ms(result.serial_baseline.total_ttft_ms)}; ratio ${result.ratio_last_first_token_to_serial ?? 'n/a'}`);
      }
      results.push(result);
    }
  }
  const output = { config, results };
  const text = JSON.stringify(output);
  console.log(text);
  if (opts.out !== null) writeFileSync(opts.out, `${text}\n`);
  if (opts.report !== null) writeFileSync(opts.report, reportHtml(config, results));
} catch (err) {
  log(err instanceof Error ? err.message : String(err));
  process.exitCode = err instanceof UsageError ? 2 : 1;
} finally {
  await stopOwn();
}
