import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildOrReuse } from '../../src/model/build-cache.js';
import { Checkpoint } from '../../src/model/checkpoint.js';
import { Decoder } from '../../src/model/decoder.js';
import type { BuildOptions, WeightSource } from '../../src/model/graph-builder.js';
import { buildDecoderGraph, DEFAULT_BUILD_OPTIONS } from '../../src/model/graph-builder.js';
import { KvCache } from '../../src/model/kv-cache.js';
import type { ModelConfig } from '../../src/model/model-config.js';
import { dequantizeBlockwise, quantizeBlockwise } from '../../src/model/quantizer.js';
import { synthCheckpoint } from '../../src/synth/checkpoint-synth.js';
import { referenceLogits } from '../support/reference-model.js';

const work = mkdtempSync(join(tmpdir(), 'loraserve-decoder-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Llama (llama3 RoPE scaling, BF16) and Qwen2 (biases, tied) written by an independent tool; Mistral and Qwen3 synthesized. */
function checkpoints(): [string, string][] {
  const out: [string, string][] = [['llama', 'test/fixtures/hf/tiny-llama'], ['qwen2', 'test/fixtures/hf/tiny-qwen2']];
  for (const arch of ['mistral', 'qwen3'] as const) {
    const dir = join(work, `synth-${arch}`);
    synthCheckpoint(dir, { architecture: arch, preset: 'tiny', seed: 3, dtype: 'F32' });
    out.push([arch, dir]);
  }
  return out;
}
const CHECKPOINTS = checkpoints();
const PROMPT = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114];
const CONTINUATION = [108, 100, 33, 10, 65, 66, 67];

async function build(config: ModelConfig, weights: WeightSource, options: BuildOptions): Promise<Decoder> {
  const dir = mkdtempSync(join(work, 'build-'));
  buildDecoderGraph(config, weights, options, dir);
  return Decoder.load(dir, config, 2);
}

/** Max |a − b| over max |b|: logit error relative to the logits' scale. */
function relativeError(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

/** Prefill, single-token decode steps, then a multi-token chunk on top of the cache: the logits after each run. */
async function runSchedule(decoder: Decoder, config: ModelConfig): Promise<{ logits: Float32Array; position: number }[]> {
  const kv = new KvCache(config, 2, 64);
  const results = [{ logits: await decoder.forward({ firstRow: 1, tokens: [PROMPT], pastLengths: [0] }, kv), position: PROMPT.length - 1 }];
  let cached = PROMPT.length;
  for (const id of CONTINUATION.slice(0, 3)) {
    results.push({ logits: await decoder.forward({ firstRow: 1, tokens: [[id]], pastLengths: [cached] }, kv), position: cached });
    cached++;
  }
  const chunk = CONTINUATION.slice(3);
  results.push({ logits: await decoder.forward({ firstRow: 1, tokens: [chunk], pastLengths: [cached] }, kv), position: cached + chunk.length - 1 });
  return results;
}

describe.each(CHECKPOINTS)('%s decoder graph', (_arch, dir) => {
  const checkpoint = Checkpoint.open(dir);
  const config = checkpoint.config;
  const reference = referenceLogits(config, checkpoint, [...PROMPT, ...CONTINUATION]);

  it('fp32 logits equal the reference within 1e-4 relative over prefill, cached decode and a chunk', async () => {
    const decoder = await build(config, checkpoint, { ...DEFAULT_BUILD_OPTIONS, quantization: 'fp32' });
    for (const { logits, position } of await runSchedule(decoder, config)) {
      expect(relativeError(logits, reference[position])).toBeLessThan(1e-4);
    }
    await decoder.release();
  });

  it('decodes rows of different lengths in one batch as it does each alone', async () => {
    const decoder = await build(config, checkpoint, { ...DEFAULT_BUILD_OPTIONS, quantization: 'fp32' });
    const kv = new KvCache(config, 2, 64);
    await decoder.forward({ firstRow: 0, tokens: [PROMPT], pastLengths: [0] }, kv);
    await decoder.forward({ firstRow: 1, tokens: [PROMPT.slice(0, 4)], pastLengths: [0] }, kv);
    const batched = await decoder.forward({ firstRow: 0, tokens: [[CONTINUATION[0]], [CONTINUATION[1]]], pastLengths: [PROMPT.length, 4] }, kv);
    const V = config.vocabSize;
    expect(relativeError(batched.subarray(0, V), reference[PROMPT.length])).toBeLessThan(1e-4);
    const second = referenceLogits(config, checkpoint, [...PROMPT.slice(0, 4), CONTINUATION[1]]);
    expect(relativeError(batched.subarray(V), second[4])).toBeLessThan(1e-4);
    await decoder.release();
  });

  // MatMulNBits at accuracy_level 0 computes with exactly the dequantized weights, so the packing is checked to
  // fp32 precision. accuracy_level 4 (the default) also quantizes activations to int8 per block; on these random
  // tiny models that moves logits by up to a few percent of their range, so it is held to 8%.
  describe.each([['int4', 4], ['int8', 8]] as const)('%s', (quantization, bits) => {
    const dequantized = dequantizedSource(checkpoint, config, bits);
    const untied = { ...config, tieWordEmbeddings: false };
    const quantReference = referenceLogits(untied, dequantized, [...PROMPT, ...CONTINUATION]);
    it.each([[0, 1e-4], [4, 8e-2]])('accuracy_level %i is within %f of the dequantized-weight reference', async (accuracyLevel, tolerance) => {
      const decoder = await build(config, checkpoint, { ...DEFAULT_BUILD_OPTIONS, quantization, accuracyLevel });
      for (const { logits, position } of await runSchedule(decoder, config)) {
        expect(relativeError(logits, quantReference[position])).toBeLessThan(tolerance);
      }
      await decoder.release();
    });
  });
});

/** The checkpoint as MatMulNBits sees it: projections and lm_head quantized and dequantized; embedding and norms as stored. */
function dequantizedSource(checkpoint: Checkpoint, config: ModelConfig, bits: 4 | 8): WeightSource {
  const quantized = (name: string) => {
    const [n, k] = checkpoint.shape(name);
    return dequantizeBlockwise(quantizeBlockwise(checkpoint.read(name), n, k, bits, 32));
  };
  return {
    has: (name) => name === 'lm_head.weight' || checkpoint.has(name),
    read: (name) => {
      if (name === 'lm_head.weight') return quantized(config.tieWordEmbeddings ? 'model.embed_tokens.weight' : name);
      return name.endsWith('_proj.weight') ? quantized(name) : checkpoint.read(name);
    },
  };
}

describe('build cache', () => {
  it('reuses a build for the same checkpoint and options, and builds anew when either changes', () => {
    const checkpoint = Checkpoint.open(CHECKPOINTS[0][1]);
    const root = join(work, 'cache');
    const options: BuildOptions = { ...DEFAULT_BUILD_OPTIONS };
    const first = buildOrReuse(checkpoint, options, root);
    const second = buildOrReuse(checkpoint, options, root);
    const other = buildOrReuse(checkpoint, { ...options, quantization: 'int8' }, root);
    expect(first.cached).toBe(false);
    expect(second).toEqual({ dir: first.dir, cached: true });
    expect(other.dir).not.toBe(first.dir);
    expect(other.cached).toBe(false);
  });
});
