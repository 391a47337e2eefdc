import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { evalCommand } from '../../src/cli/eval.js';
import { Checkpoint } from '../../src/model/checkpoint.js';
import type { ModelRunner } from '../../src/model/decoder.js';
import { evaluateLoss } from '../../src/model/evaluate.js';
import { loadModel } from '../../src/model/load-model.js';
import { PROJECTIONS, projectionWeightName } from '../../src/model/model-config.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { referenceLogits } from '../support/reference-model.js';
import type { LoraDelta, LoraLookup } from '../support/reference-model.js';

const MODEL = 'test/fixtures/hf/tiny-llama';
const ADAPTER = 'test/fixtures/hf/adapters/adapter-a';
const TEXT = 'Once upon a time, a tiny model read its own weights and found them wanting.';

const cacheDir = mkdtempSync(join(tmpdir(), 'loraserve-eval-'));
const textFile = join(cacheDir, 'text.txt');
const savedCacheEnv = process.env.LORASERVE_CACHE_DIR;
let checkpoint: Checkpoint;
let ids: number[];

beforeAll(() => {
  process.env.LORASERVE_CACHE_DIR = cacheDir;
  writeFileSync(textFile, TEXT);
  checkpoint = Checkpoint.open(MODEL);
  ids = Tokenizer.fromDir(MODEL).encode(TEXT);
});
afterAll(() => {
  checkpoint.close();
  if (savedCacheEnv === undefined) delete process.env.LORASERVE_CACHE_DIR;
  else process.env.LORASERVE_CACHE_DIR = savedCacheEnv;
  rmSync(cacheDir, { recursive: true, force: true });
});

/** Mean −log p(next token) over windows of `context` tokens, each run from scratch by the float64 reference. */
function referenceLoss(tokens: number[], context: number, lora?: LoraLookup): number {
  let sum = 0;
  let count = 0;
  for (let start = 0; start < tokens.length; start += context) {
    const window = tokens.slice(start, start + context);
    const logits = referenceLogits(checkpoint.config, checkpoint, window, lora);
    for (let t = 0; t + 1 < window.length; t++) {
      const row = Array.from(logits[t]);
      const max = Math.max(...row);
      sum += max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0)) - row[window[t + 1]];
      count++;
    }
  }
  return sum / count;
}

/** adapter-a as PEFT defines it: every projection, `lora_A` `[r, in]`, `lora_B` `[out, r]`, scale lora_alpha / r. */
function adapterA(): LoraLookup {
  const config = JSON.parse(readFileSync(join(ADAPTER, 'adapter_config.json'), 'utf8')) as { r: number; lora_alpha: number };
  const file = SafetensorsFile.open(join(ADAPTER, 'adapter_model.safetensors'));
  const deltas = new Map<string, LoraDelta>();
  try {
    for (let layer = 0; layer < checkpoint.config.numLayers; layer++) {
      for (const p of PROJECTIONS) {
        const module = `base_model.model.${projectionWeightName(layer, p).replace(/\.weight$/, '')}`;
        deltas.set(`${layer}.${p}`, {
          a: file.read(`${module}.lora_A.weight`),
          b: file.read(`${module}.lora_B.weight`),
          rank: config.r,
          scale: config.lora_alpha / config.r,
        });
      }
    }
  } finally {
    file.close();
  }
  return (layer, p) => deltas.get(`${layer}.${p}`) ?? null;
}

async function runEval(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    stdout += String(chunk);
    return true;
  });
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
    stderr += String(chunk);
    return true;
  });
  try {
    return { code: await evalCommand(argv), stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

function expectClose(actual: number, expected: number): void {
  expect(Math.abs(actual - expected)).toBeLessThanOrEqual(1e-4 * Math.abs(expected));
}

describe('evaluateLoss (fp32 graph against the float64 reference)', () => {
  let decoder: ModelRunner;
  beforeAll(async () => {
    ({ decoder } = await loadModel({ modelDir: MODEL, quantization: 'fp32', threads: 1, cacheRoot: cacheDir, allLogits: true }));
  });
  afterAll(async () => {
    await decoder.release();
  });

  it('scores the whole text in one window by default', async () => {
    const result = await evaluateLoss(decoder, ids);
    expect(result.tokens).toBe(ids.length - 1);
    expectClose(result.meanLoss, referenceLoss(ids, ids.length));
    expect(result.perplexity).toBeCloseTo(Math.exp(result.meanLoss), 10);
  });

  it('cuts the text into windows scored from an empty cache, each fed in chunks through the KV cache', async () => {
    const context = 20;
    const result = await evaluateLoss(decoder, ids, { context, chunk: 7 });
    const windows = Math.ceil(ids.length / context);
    expect(result.tokens).toBe(ids.length - windows);
    expectClose(result.meanLoss, referenceLoss(ids, context));
    // The same windows in one run each give the same loss: chunking changes nothing but the runs.
    expectClose((await evaluateLoss(decoder, ids, { context, chunk: context })).meanLoss, result.meanLoss);
  });

  it('refuses what it cannot score', async () => {
    await expect(evaluateLoss(decoder, [ids[0]])).rejects.toThrow(/at least 2/);
    await expect(evaluateLoss(decoder, ids, { context: checkpoint.config.maxPositionEmbeddings + 1 })).rejects.toThrow(/max_position_embeddings/);
    const slotless = { rowSlots: Int32Array.of(1), slotRanks: Int32Array.of(0, 8), activeProjections: [], a: () => new Float32Array(), b: () => new Float32Array(), rowA: () => new Float32Array(), rowB: () => new Float32Array() };
    await expect(evaluateLoss(decoder, ids, { lora: slotless })).rejects.toThrow(/loraRank/);
  });

  it('refuses a decoder that returns only the last position', async () => {
    const { decoder: lastOnly } = await loadModel({ modelDir: MODEL, quantization: 'fp32', threads: 1, cacheRoot: cacheDir });
    try {
      await expect(evaluateLoss(lastOnly, ids)).rejects.toThrow(/allLogits/);
    } finally {
      await lastOnly.release();
    }
  });
});

describe('loraserve eval', () => {
  it('prints the base model\'s loss as JSON', async () => {
    const { code, stdout } = await runEval(['--model', MODEL, '--text-file', textFile, '--quant', 'fp32', '--threads', '1', '--json']);
    expect(code).toBe(0);
    const out = JSON.parse(stdout) as { tokens: number; mean_loss: number; perplexity: number };
    expect(out.tokens).toBe(ids.length - 1);
    expectClose(out.mean_loss, referenceLoss(ids, ids.length));
    expect(out.perplexity).toBeCloseTo(Math.exp(out.mean_loss), 10);
  });

  it('applies a PEFT adapter through a LoRA slot', async () => {
    const { code, stdout } = await runEval(['--model', MODEL, '--adapter', ADAPTER, '--text-file', textFile, '--quant', 'fp32', '--threads', '1', '--json', '--chunk', '9']);
    expect(code).toBe(0);
    const out = JSON.parse(stdout) as { mean_loss: number };
    const lora = adapterA();
    expectClose(out.mean_loss, referenceLoss(ids, ids.length, lora));
    // The adapter moves the loss by several times the tolerance above, so that check would see it missing.
    expect(Math.abs(out.mean_loss - referenceLoss(ids, ids.length))).toBeGreaterThan(5e-3);
  });

  it('scores the merged build with --merge: the adapter\'s loss, as through a LoRA slot', async () => {
    const { code, stdout } = await runEval(['--model', MODEL, '--adapter', ADAPTER, '--merge', '--text-file', textFile, '--quant', 'fp32', '--threads', '1', '--json']);
    expect(code).toBe(0);
    expectClose((JSON.parse(stdout) as { mean_loss: number }).mean_loss, referenceLoss(ids, ids.length, adapterA()));
  });

  it('prints a readable line without --json', async () => {
    const { code, stdout } = await runEval(['--model', MODEL, '--text-file', textFile, '--quant', 'fp32', '--threads', '1', '--context', '30']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^\d+ tokens, mean loss \d+\.\d{4} nats\/token, perplexity \d+\.\d{3}\n$/);
  });

  it('answers a usage error with status 2', async () => {
    const { code, stderr } = await runEval(['--model', MODEL]);
    expect(code).toBe(2);
    expect(stderr).toContain('--text-file is required');
  });

  it('refuses --merge without an adapter', async () => {
    const { code, stderr } = await runEval(['--model', MODEL, '--text-file', textFile, '--merge']);
    expect(code).toBe(2);
    expect(stderr).toContain('--merge needs --adapter');
  });
});
