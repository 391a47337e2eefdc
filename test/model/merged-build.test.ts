import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AdapterError } from '../../src/adapters/adapter-error.js';
import { loadPeftAdapter } from '../../src/adapters/peft-loader.js';
import { SlotManager } from '../../src/adapters/slot-manager.js';
import { buildOrReuse } from '../../src/model/build-cache.js';
import { Checkpoint } from '../../src/model/checkpoint.js';
import { CheckpointError } from '../../src/model/checkpoint-error.js';
import type { ModelRunner } from '../../src/model/decoder.js';
import type { BuildOptions } from '../../src/model/graph-builder.js';
import { DEFAULT_BUILD_OPTIONS, LORA_WEIGHT_TYPE } from '../../src/model/graph-builder.js';
import { KvCache } from '../../src/model/kv-cache.js';
import { loadModel, openBuiltModel } from '../../src/model/load-model.js';
import type { MergeProgress } from '../../src/model/merged-build.js';
import { buildMerged, startMergedBuild } from '../../src/model/merged-build.js';
import { loadNativeRuntime } from '../../src/model/native-runtime.js';
import { synthAdapter } from '../../src/synth/adapter-synth.js';

const MODEL = 'test/fixtures/hf/tiny-llama';
const ADAPTERS = 'test/fixtures/hf/adapters';
interface ExpectedCase { model: string; adapter: string | null; prompt_ids: number[]; greedy_ids: number[] }
const CASES = (JSON.parse(readFileSync('test/fixtures/hf/expected.json', 'utf8')) as { cases: ExpectedCase[] }).cases
  .filter((c) => c.model === MODEL.split('/').pop() && c.adapter !== null);
/** Both runtimes where the native addon loads (CI requires it); the stock one alone elsewhere. */
const RUNTIMES = 'runtime' in loadNativeRuntime() ? (['stock', 'native'] as const) : (['stock'] as const);

const work = mkdtempSync(join(tmpdir(), 'loraserve-merged-'));
const cacheRoot = join(work, 'cache');
afterAll(() => rmSync(work, { recursive: true, force: true }));

const fp32 = (runtime: BuildOptions['runtime'], allLogits = false): BuildOptions => ({ ...DEFAULT_BUILD_OPTIONS, quantization: 'fp32', runtime, allLogits });
const merged = (adapter: string, options: BuildOptions) => buildMerged({ modelDir: MODEL, adapter: { dir: join(ADAPTERS, adapter), maxRank: 8 }, options, cacheRoot });

/** Prefill, then greedy decode one token per run: the tokens chosen. */
async function greedy(decoder: ModelRunner, prompt: readonly number[], count: number): Promise<number[]> {
  const kv = new KvCache(decoder.config, 1, prompt.length + count);
  let logits = await decoder.forward({ firstRow: 0, tokens: [prompt], pastLengths: [0] }, kv);
  const out: number[] = [];
  while (out.length < count) {
    out.push(logits.indexOf(Math.max(...logits)));
    if (out.length < count) logits = await decoder.forward({ firstRow: 0, tokens: [[out[out.length - 1]]], pastLengths: [prompt.length + out.length - 1] }, kv);
  }
  return out;
}

/** Every position's logits of `tokens` in one run, through a merged decoder or LoRA slots on an unmerged one. */
async function allLogits(decoder: ModelRunner, runtime: BuildOptions['runtime'], tokens: readonly number[], adapter?: string): Promise<Float32Array> {
  let lora;
  if (adapter !== undefined) {
    const weightType = LORA_WEIGHT_TYPE[runtime];
    // As serving holds them: the native graph reads the slot stacks, the stock one a copy per row.
    const slots = new SlotManager(decoder.config, 1, decoder.loraRank, runtime === 'native' ? 0 : 1, weightType);
    const slot = slots.acquire(adapter, loadPeftAdapter(join(ADAPTERS, adapter), decoder.config, { maxRank: 8, weightType })) as number;
    slots.bindRow(0, slot);
    lora = slots.batch(0, [slot]);
  }
  return (await decoder.forward({ firstRow: 0, tokens: [tokens], pastLengths: [0] }, new KvCache(decoder.config, 1, tokens.length), lora)).slice();
}

describe.each(RUNTIMES)('merged fp32 build on the %s runtime', (runtime) => {
  it.each(CASES)('gives the independent PyTorch/PEFT greedy tokens for $adapter', async (c) => {
    const built = merged(c.adapter as string, fp32(runtime));
    const decoder = await openBuiltModel(built.dir, built.config, fp32(runtime), 1);
    try {
      expect(await greedy(decoder, c.prompt_ids, c.greedy_ids.length)).toEqual(c.greedy_ids);
    } finally {
      await decoder.release();
    }
  });
});

// Both compute the same real-valued function with the same fp16-precision adapter values; they differ only in the
// order of fp32 sums (x·(W + ΔW) against x·W + (x·A)·B) and in one rounding of each merged weight, relative errors of
// order 1e-7 per operation: measured up to 1.4e-6 of the logits' scale on these fixtures, on both runtimes. 2e-5
// leaves room for other CPUs' kernels and is still far below what a dropped or misplaced delta does (over 1e-2).
const LOGIT_TOLERANCE = 2e-5;

describe.each(RUNTIMES)('merged against unmerged (base + LoRA slot), fp32, %s runtime', (runtime) => {
  it.each(CASES)('every position\'s logits agree within 2e-5 of the logits\' scale for $adapter', async (c) => {
    const tokens = [...c.prompt_ids, ...c.greedy_ids];
    const built = merged(c.adapter as string, fp32(runtime, true));
    const mergedDecoder = await openBuiltModel(built.dir, built.config, fp32(runtime, true), 1);
    const unmerged = await loadModel({ modelDir: MODEL, quantization: 'fp32', threads: 1, cacheRoot, loraRank: 8, allLogits: true, runtime });
    try {
      const expected = await allLogits(unmerged.decoder, runtime, tokens, c.adapter as string);
      const actual = await allLogits(mergedDecoder, runtime, tokens);
      const base = await allLogits(unmerged.decoder, runtime, tokens);
      const scale = Math.max(...expected.map(Math.abs));
      const error = (x: Float32Array) => Math.max(...x.map((v, i) => Math.abs(v - expected[i]))) / scale;
      expect(error(actual)).toBeLessThan(LOGIT_TOLERANCE);
      expect(error(base)).toBeGreaterThan(1e-2);
    } finally {
      await mergedDecoder.release();
      await unmerged.decoder.release();
    }
  });
});

describe('merged build cache', () => {
  const options = { ...DEFAULT_BUILD_OPTIONS, quantization: 'int8' as const };

  it('reuses a merged build, keyed by base, adapter content and options, apart from the base build', () => {
    const first = merged('adapter-a', options);
    const again = merged('adapter-a', options);
    expect(again).toMatchObject({ dir: first.dir, buildDigest: first.buildDigest, adapterDigest: first.adapterDigest, cached: true });
    expect(first.buildDigest).toBe(basename(first.dir));
    expect(first.weightsBytes).toBeGreaterThan(0);

    // The same content under another directory is the same build; other content (alpha alone) is not.
    const copy = join(work, 'copy-of-a');
    cpSync(join(ADAPTERS, 'adapter-a'), copy, { recursive: true });
    expect(buildMerged({ modelDir: MODEL, adapter: { dir: copy, maxRank: 8 }, options, cacheRoot })).toMatchObject({ dir: first.dir, cached: true });
    const config = JSON.parse(readFileSync(join(copy, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(copy, 'adapter_config.json'), JSON.stringify({ ...config, lora_alpha: 17 }));
    const realpha = buildMerged({ modelDir: MODEL, adapter: { dir: copy, maxRank: 8 }, options, cacheRoot });

    const checkpoint = Checkpoint.open(MODEL);
    const baseKey = basename(buildOrReuse(checkpoint, options, cacheRoot).dir);
    checkpoint.close();
    const keys = [first.buildDigest, realpha.buildDigest, merged('adapter-b', options).buildDigest, merged('adapter-a', fp32('stock')).buildDigest, baseKey];
    expect(new Set(keys).size).toBe(keys.length);
  });

  it('takes weights already loaded, as the engine holds them', () => {
    const { config, dir } = merged('adapter-a', options);
    const weights = loadPeftAdapter(join(ADAPTERS, 'adapter-a'), config, { maxRank: 8 });
    expect(buildMerged({ modelDir: MODEL, adapter: { weights }, options, cacheRoot })).toMatchObject({ dir, cached: true });
  });

  it('refuses options with LoRA inputs', () => {
    expect(() => merged('adapter-a', { ...options, loraRank: 8 })).toThrow(/loraRank 0/);
  });
});

describe('startMergedBuild', () => {
  // The demo model: big enough (4 layers, 256 wide, 3M parameters) that a build spans many turns of the event loop.
  const demo = { modelDir: 'models/demo', adapter: { dir: 'adapters/verse', maxRank: 16 }, options: DEFAULT_BUILD_OPTIONS };

  it('builds in a worker thread, reporting progress, while the calling thread stays free', async () => {
    const progress: MergeProgress[] = [];
    let turns = 0;
    let longestGapMs = 0;
    let last = performance.now();
    const ticker = setInterval(() => {
      const now = performance.now();
      longestGapMs = Math.max(longestGapMs, now - last);
      last = now;
      turns++;
    }, 1);
    const built = await startMergedBuild({ ...demo, cacheRoot: join(work, 'worker-cache') }, { onProgress: (p) => progress.push(p) })
      .finally(() => clearInterval(ticker));
    expect(built.cached).toBe(false);
    expect(progress.map((p) => p.done)).toEqual(Array.from({ length: 28 }, (_, i) => i + 1));
    expect(progress.every((p) => p.total === 28)).toBe(true);
    // A build on this thread would have stalled it for the build's whole duration (about 0.3 s here).
    expect(turns).toBeGreaterThan(10);
    expect(longestGapMs).toBeLessThan(built.buildMs / 2);

    const again = await startMergedBuild({ ...demo, cacheRoot: join(work, 'worker-cache') });
    expect(again).toMatchObject({ dir: built.dir, cached: true });
  });

  it('fails with the adapter\'s refusal for a bad adapter directory', async () => {
    const missing = startMergedBuild({ ...demo, adapter: { dir: join(work, 'no-such-adapter'), maxRank: 16 }, cacheRoot });
    await expect(missing).rejects.toBeInstanceOf(AdapterError);
    await expect(missing).rejects.toMatchObject({ code: 'adapter_not_found' });
    // An adapter trained for another base: its shapes do not fit.
    const foreign = join(work, 'foreign');
    synthAdapter(foreign, MODEL, { rank: 4, alpha: 8, targetModules: ['q_proj'], seed: 1 });
    await expect(startMergedBuild({ ...demo, adapter: { dir: foreign, maxRank: 16 }, cacheRoot })).rejects.toMatchObject({
      code: 'adapter_shape_mismatch', message: expect.stringMatching(/q_proj.*shape/),
    });
  });

  it('fails with the checkpoint\'s refusal for a bad model directory', async () => {
    await expect(startMergedBuild({ ...demo, modelDir: join(work, 'no-such-model'), cacheRoot })).rejects.toBeInstanceOf(CheckpointError);
  });

  it('stops when aborted', async () => {
    const controller = new AbortController();
    const build = startMergedBuild({ ...demo, cacheRoot: join(work, 'aborted') }, { signal: controller.signal, onProgress: () => controller.abort(new Error('shutting down')) });
    await expect(build).rejects.toThrow('shutting down');
  });
});
