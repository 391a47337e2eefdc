// Load shapes: how requests are released over time. Each driver sends requests 0, 1, 2… through `send` until the
// request count or the duration is reached, waits for every request it sent, and returns their records.
import { setTimeout as sleep } from 'node:timers/promises';
import type { RequestRecord } from './client.js';
import { poissonArrivals } from './workload.js';

export type LoadMode = 'closed' | 'poisson' | 'burst';

/** One point of the latency-versus-load curve. */
export interface LoadPoint {
  mode: LoadMode;
  /** Clients, each sending its next request when its previous one finished (closed mode). */
  concurrency?: number;
  /** Poisson arrivals per second (poisson mode). */
  rate?: number;
}

export interface LoadLimits {
  /** Requests to send; Infinity when only the duration bounds the run. */
  requests: number;
  /** No request is sent after this many ms from the start; Infinity when only the count bounds the run. */
  durationMs: number;
  seed: number;
}

export interface LoadRun {
  records: RequestRecord[];
  /** From the load point's start to the last request's end. */
  elapsedMs: number;
}

/** Sends request `index`, with `origin` the load point's start (performance.now()). */
export type Send = (index: number, origin: number) => Promise<RequestRecord>;

export async function runLoad(point: LoadPoint, limits: LoadLimits, send: Send): Promise<LoadRun> {
  const origin = performance.now();
  const records: RequestRecord[] = [];
  const open = () => performance.now() - origin < limits.durationMs;
  if (point.mode === 'closed') {
    let next = 0;
    const client = async () => {
      while (next < limits.requests && open()) records.push(await send(next++, origin));
    };
    await Promise.all(Array.from({ length: point.concurrency ?? 1 }, client));
  } else if (point.mode === 'poisson') {
    const arrival = poissonArrivals(point.rate ?? 1, limits.seed, String(point.rate));
    const inFlight: Promise<void>[] = [];
    for (let i = 0; i < limits.requests; i++) {
      const at = arrival();
      if (at >= limits.durationMs) break;
      const wait = at - (performance.now() - origin);
      if (wait > 0) await sleep(wait);
      inFlight.push(send(i, origin).then((r) => void records.push(r)));
    }
    await Promise.all(inFlight);
  } else {
    if (!Number.isFinite(limits.requests)) throw new RangeError('burst mode needs --requests');
    await Promise.all(Array.from({ length: limits.requests }, (_, i) => send(i, origin).then((r) => void records.push(r))));
  }
  return { records, elapsedMs: performance.now() - origin };
}
