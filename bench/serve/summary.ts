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

export interface GroupSummary {
  completed: number;
  failed: number;
  /** Failed requests by error code. */
  errors: Record<string, number>;
  ttft_ms: LatencySummary;
  itl_ms: LatencySummary;
  e2e_ms: LatencySummary;
}

export interface LoadResult extends GroupSummary {
  mode: LoadPoint['mode'];
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
  /** The same summary for each `model` the requests named (adapter, or the base model). */
  per_adapter: Record<string, GroupSummary>;
}

const round = (x: number) => Math.round(x * 100) / 100;

export function latency(samples: number[]): LatencySummary {
  if (samples.length === 0) return { mean: null, p50: null, p90: null, p99: null };
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  return { mean: round(mean), p50: round(percentile(samples, 50)), p90: round(percentile(samples, 90)), p99: round(percentile(samples, 99)) };
}

function group(records: RequestRecord[]): GroupSummary {
  const ok = records.filter((r) => r.error === null);
  const errors: Record<string, number> = {};
  for (const r of records) if (r.error !== null) errors[r.error] = (errors[r.error] ?? 0) + 1;
  return {
    completed: ok.length,
    failed: records.length - ok.length,
    errors,
    ttft_ms: latency(ok.flatMap((r) => (r.ttftMs === null ? [] : [r.ttftMs]))),
    itl_ms: latency(ok.flatMap((r) => r.itlMs)),
    e2e_ms: latency(ok.map((r) => r.e2eMs)),
  };
}

export function summarize(point: LoadPoint, records: RequestRecord[], elapsedMs: number): LoadResult {
  const ok = records.filter((r) => r.error === null);
  const seconds = elapsedMs / 1000;
  const sum = (f: (r: RequestRecord) => number) => ok.reduce((a, r) => a + f(r), 0);
  const models = [...new Set(records.map((r) => r.model))].sort();
  return {
    mode: point.mode,
    concurrency: point.concurrency ?? null,
    rate: point.rate ?? null,
    duration_s: round(seconds),
    request_throughput: round(ok.length / seconds),
    output_throughput: round(sum((r) => r.outputTokens) / seconds),
    total_prompt_tokens: sum((r) => r.promptTokens),
    total_output_tokens: sum((r) => r.outputTokens),
    total_cached_tokens: sum((r) => r.cachedTokens),
    ...group(records),
    per_adapter: Object.fromEntries(models.map((m) => [m, group(records.filter((r) => r.model === m))])),
  };
}
