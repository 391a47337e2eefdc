import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { waitFor } from '../../api/support.js';
import type { ChildServer } from './child-server.js';
import { call } from './http.js';

/**
 * How far a server's RSS may stay above its post-warm-up value once an attack is over. Generous on purpose: the
 * allocator and ONNX Runtime's arena keep pages after a burst; what it catches is growth per request (a leak of rows,
 * adapter copies or buffers), which a few hundred requests push well past it.
 */
export const RSS_BOUND_BYTES = 128 * 1024 ** 2;

/** Resident set size of a process, from /proc/<pid>/status (VmRSS). */
export function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** The sum of a metric's samples over all label sets, or null when it is absent. */
export function metricSum(exposition: string, name: string): number | null {
  const samples = exposition.split('\n').filter((line) => line.startsWith(`${name} `) || line.startsWith(`${name}{`));
  return samples.length === 0 ? null : samples.reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}

/** vLLM's running and waiting gauges, as a router reads them from /metrics. */
export async function requestGauges(base: string): Promise<{ running: number | null; waiting: number | null }> {
  const { text } = await call(base, 'GET', '/metrics', { timeoutMs: 10_000 });
  return { running: metricSum(text, 'vllm:num_requests_running'), waiting: metricSum(text, 'vllm:num_requests_waiting') };
}

/**
 * The end of every attack: /health answers 200, the running and waiting gauges settle to 0, and RSS comes back within
 * `boundBytes` of `baselineRss` (the value after warm-up).
 */
export async function expectSettled(server: ChildServer, baselineRss: number, boundBytes = RSS_BOUND_BYTES): Promise<void> {
  const health = await call(server.url, 'GET', '/health', { timeoutMs: 10_000 });
  expect(health.status, `/health: ${health.text}`).toBe(200);
  let gauges = await requestGauges(server.url);
  await waitFor(async () => {
    gauges = await requestGauges(server.url);
    return gauges.running === 0 && gauges.waiting === 0;
  }, 15_000).catch(() => undefined);
  expect(gauges, 'requests still counted as running or waiting').toEqual({ running: 0, waiting: 0 });
  let rss = rssBytes(server.pid);
  await waitFor(async () => (rss = rssBytes(server.pid)) <= baselineRss + boundBytes, 10_000).catch(() => undefined);
  const mib = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(0)} MiB`;
  expect(rss, `RSS ${mib(rss)} after the attack, ${mib(baselineRss)} after warm-up (bound +${mib(boundBytes)})`).toBeLessThanOrEqual(baselineRss + boundBytes);
}
