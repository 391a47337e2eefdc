// Runs in the engine worker: the counters the engine keeps, and its stats snapshot.
import type { AdapterManager } from '../adapters/adapter-manager.js';
import type { EngineStats } from './engine-types.js';
import type { MergedSessions } from './merged-sessions.js';
import type { PrefixCache } from './prefix-cache.js';
import type { Sequence } from './sequence.js';

/** Totals since start, advanced by the engine loop. */
export class EngineCounters {
  /** Sequences in the last step's runs. */
  lastBatchSize = 0;
  steps = 0;
  /** Model runs in which some row used an adapter through the LoRA slots. */
  loraRuns = 0;
  /** Model runs on a merged session. */
  mergedRuns = 0;
  generated = 0;
  prompted = 0;
  prefillComputed = 0;
  decodeComputed = 0;
}

export interface StatsSources {
  counters: EngineCounters;
  running: readonly Sequence[];
  waiting: readonly Sequence[];
  maxBatch: number;
  contextLength: number;
  maxLoras: number;
  adapters: AdapterManager | null;
  prefixCache: PrefixCache | null;
  merged: MergedSessions | null;
}

export function engineStats(s: StatsSources): EngineStats {
  const adapterNames = (seqs: readonly Sequence[]) => [...new Set(seqs.flatMap((q) => (q.adapter ? [q.adapter.name] : [])))];
  const kvPositions = s.running.reduce((sum, q) => sum + q.computed, 0);
  const c = s.counters;
  return {
    running: s.running.length,
    waiting: s.waiting.length,
    kvUsage: kvPositions / (s.maxBatch * s.contextLength),
    batchSize: c.lastBatchSize,
    maxLoras: s.maxLoras,
    runningAdapters: adapterNames(s.running),
    waitingAdapters: adapterNames(s.waiting),
    adapterLoads: { host: s.adapters?.hostLoads ?? 0, slot: s.adapters?.slots.loads ?? 0 },
    adapterEvictions: { host: s.adapters?.hostEvictions ?? 0, slot: s.adapters?.slots.evictions ?? 0 },
    loraRuns: c.loraRuns,
    mergedRuns: c.mergedRuns,
    merged: { sessions: s.merged?.ready ?? 0, merges: s.merged?.merges ?? 0, unmerges: s.merged?.unmerges ?? 0, lastBuildMs: s.merged?.lastBuildMs ?? null },
    stepsTotal: c.steps,
    tokensGenerated: c.generated,
    promptTokens: c.prompted,
    prefillTokensComputed: c.prefillComputed,
    decodeTokensComputed: c.decodeComputed,
    prefixCache: s.prefixCache?.stats() ?? null,
  };
}
