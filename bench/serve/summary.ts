// Turns one load point's request records into its result: counts, throughput and latency percentiles.
import { percentile } from '../stats.js';
import type { RequestRecord } from './client.js';
import type { LoadPoint } from './load.js';

/** Mean and percentiles of one latency, ms; null when no request gave a sample. */
export interface LatencySummary {
  mean: number | null;
  p50: number | null;
  p90: number | null;
  p99: number | null;
}

/** A latency over a subset of the requests: how many gave a sample, and their summary. */
export interface CountedLatency extends LatencySummary {
  count: number;
}

export interface GroupSummary {
  completed: number;
  failed: number;
  /** Failed requests by error code. */
  errors: Record<string, number>;
  /** Completed requests that the server served partly from its prefix cache (cached_tokens > 0). */
  hit_requests: number;
  ttft_ms: LatencySummary;
  /** TTFT of the completed requests with cached_tokens > 0. */
  ttft_hit_ms: CountedLatency;
  /** TTFT of the completed requests with cached_tokens = 0. */
  ttft_miss_ms: CountedLatency;
  itl_ms: LatencySummary;
  e2e_ms: LatencySummary;
}

/**
 * The burst's prompts sent one at a time before it, with cache_prompt false and max_tokens 1: each time is one prefill
 * and one sampled token (to the first chunk with a choice).
 */
export interface SerialBaseline {
  requests: number;
  failed: number;
  /** Sum over the completed requests. */
  total_ttft_ms: number;
  mean_ttft_ms: number | null;
}

export interface LoadResult extends GroupSummary {
  mode: LoadPoint['mode'];
  /** The `cache_prompt` every request of the load point sent. */
  cache_prompt: boolean;
  concurrency: number | null;
  rate: number | null;
  duration_s: number;
  /** Completed requests per second over the load point. */
  request_throughput: number;
  /** Generated tokens of completed requests per second. */
  output_throughput: number;
  total_prompt_tokens: number;
  total_output_tokens: number;
  /** Prompt tokens the server reported as served from its prefix cache. */
  total_cached_tokens: number;
  /**
   * Burst mode: when the last first token arrived, ms from the burst's start: the latest sent time + time to the first
   * chunk with a choice (the TTFT; for a request that streamed no text, its finish). Null when no request completed.
   */
  last_first_token_ms?: number | null;
  /** Burst mode with --serial-baseline. */
  serial_baseline?: SerialBaseline;
  /** last_first_token_ms / serial_baseline.total_ttft_ms; null when a request of either failed or gave no time. */
  ratio_last_first_token_to_serial?: number | null;
  /** The same summary for each `model` the requests named (adapter, or the base model). */
  per_adapter: Record<string, GroupSummary>;
}

const round = (x: number) => Math.round(x * 100) / 100;

export function latency(samples: number[]): LatencySummary {
  if (samples.length === 0) return { mean: null, p50: null, p90: null, p99: null };
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  return { mean: round(mean), p50: round(percentile(samples, 50)), p90: round(percentile(samples, 90)), p99: round(percentile(samples, 99)) };
}

export function countedLatency(samples: number[]): CountedLatency {
  return { count: samples.length, ...latency(samples) };
}

const ttfts = (records: RequestRecord[]) => records.flatMap((r) => (r.ttftMs === null ? [] : [r.ttftMs]));

function group(records: RequestRecord[]): GroupSummary {
  const ok = records.filter((r) => r.error === null);
  const errors: Record<string, number> = {};
  for (const r of records) if (r.error !== null) errors[r.error] = (errors[r.error] ?? 0) + 1;
  const hits = ok.filter((r) => r.cachedTokens > 0);
  return {
    completed: ok.length,
    failed: records.length - ok.length,
    errors,
    hit_requests: hits.length,
    ttft_ms: latency(ttfts(ok)),
    ttft_hit_ms: countedLatency(ttfts(hits)),
    ttft_miss_ms: countedLatency(ttfts(ok.filter((r) => r.cachedTokens === 0))),
    itl_ms: latency(ok.flatMap((r) => r.itlMs)),
    e2e_ms: latency(ok.map((r) => r.e2eMs)),
  };
}

/** The serial baseline's records (firstChunkMs is each one's prefill and sampled token). */
export function serialBaseline(records: RequestRecord[]): SerialBaseline {
  const times = records.flatMap((r) => (r.error === null && r.firstChunkMs !== null ? [r.firstChunkMs] : []));
  const total = times.reduce((a, b) => a + b, 0);
  return { requests: records.length, failed: records.length - times.length, total_ttft_ms: round(total), mean_ttft_ms: times.length ? round(total / times.length) : null };
}

/**
 * One load point's result. `baseline`: the serial baseline's records, for a burst run with --serial-baseline.
 */
export function summarize(point: LoadPoint, records: RequestRecord[], elapsedMs: number, cachePrompt: boolean, baseline: RequestRecord[] | null = null): LoadResult {
  const ok = records.filter((r) => r.error === null);
  const seconds = elapsedMs / 1000;
  const sum = (f: (r: RequestRecord) => number) => ok.reduce((a, r) => a + f(r), 0);
  const models = [...new Set(records.map((r) => r.model))].sort();
  const firstTokens = ok.flatMap((r) => (r.firstChunkMs === null ? [] : [r.sentMs + r.firstChunkMs]));
  const last = point.mode === 'burst' && firstTokens.length > 0 ? Math.max(...firstTokens) : null;
  const serial = baseline === null ? null : serialBaseline(baseline);
  const complete = last !== null && serial !== null && serial.failed === 0 && ok.length === records.length && firstTokens.length === ok.length && serial.total_ttft_ms > 0;
  return {
    mode: point.mode,
    cache_prompt: cachePrompt,
    concurrency: point.concurrency ?? null,
    rate: point.rate ?? null,
    duration_s: round(seconds),
    request_throughput: round(ok.length / seconds),
    output_throughput: round(sum((r) => r.outputTokens) / seconds),
    total_prompt_tokens: sum((r) => r.promptTokens),
    total_output_tokens: sum((r) => r.outputTokens),
    total_cached_tokens: sum((r) => r.cachedTokens),
    ...group(records),
    ...(point.mode === 'burst' ? { last_first_token_ms: last === null ? null : round(last) } : {}),
    ...(serial === null ? {} : { serial_baseline: serial, ratio_last_first_token_to_serial: complete ? Math.round((last / serial.total_ttft_ms) * 1000) / 1000 : null }),
    per_adapter: Object.fromEntries(models.map((m) => [m, group(records.filter((r) => r.model === m))])),
  };
}
