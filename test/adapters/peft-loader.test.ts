import { mkdtempSync, readFileSync, renameSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AdapterError } from '../../src/adapters/adapter-error.js';
import type { AdapterErrorCode } from '../../src/adapters/adapter-error.js';
import { f16Value, f32BitsToF16 } from '../../src/adapters/lora-convert.js';
import { loadPeftAdapter, loraModuleKey } from '../../src/adapters/peft-loader.js';
import type { LoraWeights } from '../../src/adapters/peft-loader.js';
import { parseModelConfig } from '../../src/model/hf-config.js';
import { PROJECTIONS } from '../../src/model/model-config.js';
import type { ModelConfig, Projection } from '../../src/model/model-config.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { synthAdapter } from '../../src/synth/adapter-synth.js';
import type { SynthAdapterOptions } from '../../src/synth/adapter-synth.js';
import { synthCheckpoint } from '../../src/synth/checkpoint-synth.js';
import { writeSafetensors } from '../../src/synth/safetensors-writer.js';
import type { TensorToWrite } from '../../src/synth/safetensors-writer.js';

const root = mkdtempSync(join(tmpdir(), 'loraserve-peft-loader-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

// Tiny llama: hidden 64, q/o 64 wide, k/v 32 wide (GQA), MLP 128 wide, 2 layers.
const baseDir = join(root, 'base');
synthCheckpoint(baseDir, { architecture: 'llama', preset: 'tiny', seed: 0, dtype: 'F32' });
const base = readBaseConfig(baseDir);
const MAX_RANK = 64;

const f32 = new Float32Array(1);
const toF16 = (v: number): number => {
  f32[0] = v;
  return f32BitsToF16(new Int32Array(f32.buffer)[0]);
};

function readBaseConfig(dir: string): ModelConfig {
  const path = join(dir, 'config.json');
  return parseModelConfig(JSON.parse(readFileSync(path, 'utf8')), undefined, path);
}

let dirCount = 0;
function synth(opts: Partial<SynthAdapterOptions> = {}): string {
  const dir = join(root, `a${dirCount++}`);
  synthAdapter(dir, baseDir, { rank: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'], seed: 1, ...opts });
  return dir;
}

function editConfig(dir: string, fields: Record<string, unknown>): void {
  const path = join(dir, 'adapter_config.json');
  writeFileSync(path, JSON.stringify({ ...(JSON.parse(readFileSync(path, 'utf8')) as object), ...fields }));
}

function weightsPath(dir: string): string {
  return join(dir, 'adapter_model.safetensors');
}

type StoredTensor = TensorToWrite & { data: Float32Array };

/** The file's tensors as fp32, by name, in file order. */
function storedTensors(dir: string): Map<string, StoredTensor> {
  const file = SafetensorsFile.open(weightsPath(dir));
  try {
    return new Map(file.names().map((name) => [name, { name, dtype: 'F32' as const, shape: file.info(name).shape, data: file.read(name) }]));
  } finally {
    file.close();
  }
}

function editTensors(dir: string, edit: (tensors: Map<string, StoredTensor>) => void): void {
  const tensors = storedTensors(dir);
  edit(tensors);
  writeSafetensors(weightsPath(dir), [...tensors.values()], { format: 'pt' });
}

function tensorName(layer: number, projection: Projection, which: 'A' | 'B'): string {
  const block = ['gate_proj', 'up_proj', 'down_proj'].includes(projection) ? 'mlp' : 'self_attn';
  return `base_model.model.model.layers.${layer}.${block}.${projection}.lora_${which}.weight`;
}

function load(dir: string, maxRank = MAX_RANK): LoraWeights {
  return loadPeftAdapter(dir, base, { maxRank });
}

function refusal(dir: string, code: AdapterErrorCode, maxRank = MAX_RANK): AdapterError {
  try {
    load(dir, maxRank);
  } catch (err) {
    expect(err).toBeInstanceOf(AdapterError);
    expect((err as AdapterError).code).toBe(code);
    return err as AdapterError;
  }
  throw new Error(`expected ${dir} to be refused with ${code}`);
}

/** `[rows, cols]` → `[cols, rows]`, times `scale` in fp32 and rounded to fp16, as the loader serves weights. */
function transposed(m: Float32Array, rows: number, cols: number, scale = 1): Float32Array {
  const out = new Float32Array(m.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = f16Value(toF16(m[i * cols + j] * scale));
  return out;
}

/** Module key → [rank, scale]. */
function summary(weights: LoraWeights): Record<string, [number, number]> {
  return Object.fromEntries([...weights.modules].map(([key, m]) => [key, [m.rank, m.scale]]));
}

describe('loadPeftAdapter', () => {
  it('loads listed targets with A and B transposed for the kernel, the scale folded into B', () => {
    const dir = synth();
    const weights = load(dir);
    expect(summary(weights)).toEqual({ '0.q_proj': [8, 2], '0.v_proj': [8, 2], '1.q_proj': [8, 2], '1.v_proj': [8, 2] });
    expect(weights.rank).toBe(8);
    const stored = storedTensors(dir);
    const v1 = weights.modules.get(loraModuleKey(1, 'v_proj'))!;
    expect(v1).toMatchObject({ layer: 1, projection: 'v_proj' });
    // lora_A [8, 64] → a [64, 8]; lora_B [32, 8] → b [8, 32].
    expect(v1.a).toEqual(transposed(stored.get(tensorName(1, 'v_proj', 'A'))!.data, 8, 64));
    expect(v1.b).toEqual(transposed(stored.get(tensorName(1, 'v_proj', 'B'))!.data, 32, 8, 2));
    // 4 bytes × 2 layers × (q: a + b, v: a + b).
    expect(weights.bytes).toBe(4 * 2 * (64 * 8 + 8 * 64 + 64 * 8 + 8 * 32));
  });

  it('loads all seven projections of every layer, with in/out of each', () => {
    const weights = load(synth({ targetModules: [...PROJECTIONS], rank: 4, alpha: 4 }));
    expect(weights.modules.size).toBe(14);
    const inOut: Record<Projection, [number, number]> = {
      q_proj: [64, 64], k_proj: [64, 32], v_proj: [64, 32], o_proj: [64, 64], gate_proj: [64, 128], up_proj: [64, 128], down_proj: [128, 64],
    };
    for (const m of weights.modules.values()) {
      const [inFeatures, outFeatures] = inOut[m.projection];
      expect([m.a.length, m.b.length, m.scale]).toEqual([inFeatures * 4, 4 * outFeatures, 1]);
    }
  });

  it('reads "all-linear" and the PEFT default targets', () => {
    const all = synth({ targetModules: [...PROJECTIONS] });
    editConfig(all, { target_modules: 'all-linear' });
    expect(load(all).modules.size).toBe(14);
    const defaults = synth();
    editConfig(defaults, { target_modules: null });
    expect(Object.keys(summary(load(defaults)))).toEqual(['0.q_proj', '0.v_proj', '1.q_proj', '1.v_proj']);
  });

  it('full-matches a regex target against module names', () => {
    const dir = synth({ targetModules: ['q_proj', 'k_proj'], layersToTransform: [1] });
    editConfig(dir, { target_modules: '.*\\.1\\.self_attn\\.(q_proj|k_proj)', layers_to_transform: null });
    expect(Object.keys(summary(load(dir)))).toEqual(['1.q_proj', '1.k_proj']);
  });

  it('takes per-module rank and alpha from rank_pattern and alpha_pattern', () => {
    const dir = synth({
      targetModules: ['q_proj', 'v_proj', 'down_proj'],
      rankPattern: { 'layers.0.self_attn.q_proj': 4, v_proj: 2 },
      alphaPattern: { 'mlp\\.down_proj': 4 },
    });
    expect(summary(load(dir))).toEqual({
      '0.q_proj': [4, 4], '0.v_proj': [2, 8], '0.down_proj': [8, 0.5],
      '1.q_proj': [8, 2], '1.v_proj': [2, 8], '1.down_proj': [8, 0.5],
    });
  });

  it('scales by alpha/sqrt(r) with use_rslora', () => {
    const weights = load(synth({ rank: 4, alpha: 8, useRslora: true, rankPattern: { v_proj: 16 } }));
    expect(summary(weights)).toMatchObject({ '0.q_proj': [4, 4], '0.v_proj': [16, 2] });
    expect(weights.rank).toBe(16);
  });

  it('keeps only the layers in layers_to_transform, given as a list or an int', () => {
    const dir = synth({ layersToTransform: [1] });
    expect(Object.keys(summary(load(dir)))).toEqual(['1.q_proj', '1.v_proj']);
    editConfig(dir, { layers_to_transform: 1 });
    expect(Object.keys(summary(load(dir)))).toEqual(['1.q_proj', '1.v_proj']);
  });

  it('honours exclude_modules', () => {
    const dir = synth({ layersToTransform: [1] });
    editConfig(dir, { layers_to_transform: null, exclude_modules: ['layers.0.self_attn.q_proj', 'layers.0.self_attn.v_proj'] });
    expect(Object.keys(summary(load(dir)))).toEqual(['1.q_proj', '1.v_proj']);
  });

  it('reads the same weights with fan_in_fan_out: lora_A/B layouts do not depend on it for nn.Linear', () => {
    const dir = synth({ fanInFanOut: true });
    const flagged = load(dir);
    editConfig(dir, { fan_in_fan_out: false });
    const plain = load(dir);
    const stored = storedTensors(dir);
    const q0 = flagged.modules.get('0.q_proj')!;
    expect(q0.a).toEqual(transposed(stored.get(tensorName(0, 'q_proj', 'A'))!.data, 8, 64));
    expect(q0.b).toEqual(transposed(stored.get(tensorName(0, 'q_proj', 'B'))!.data, 64, 8, 2));
    for (const [key, m] of plain.modules) {
      expect(flagged.modules.get(key)!.a).toEqual(m.a);
      expect(flagged.modules.get(key)!.b).toEqual(m.b);
    }
  });

  it('serves the same fp16 values in fp16 and fp32 slots', () => {
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const dir = synth({ seed: 3, dtype, targetModules: [...PROJECTIONS] });
      const wide = load(dir);
      const half = loadPeftAdapter(dir, base, { maxRank: MAX_RANK, weightType: 'float16' });
      expect(half).toMatchObject({ type: 'float16', bytes: wide.bytes / 2, digest: wide.digest });
      for (const [key, m] of half.modules) {
        const w = wide.modules.get(key)!;
        expect(m.a).toEqual(Uint16Array.from(w.a, toF16));
        expect(m.b).toEqual(Uint16Array.from(w.b, toF16));
      }
    }
  });

  it('widens F16 and BF16 weights to fp32', () => {
    const f32 = load(synth({ seed: 7 })).modules.get('0.q_proj')!;
    for (const dtype of ['F16', 'BF16'] as const) {
      const half = load(synth({ seed: 7, dtype })).modules.get('0.q_proj')!;
      const tolerance = dtype === 'F16' ? 1e-3 : 1e-2;
      half.a.forEach((v, i) => expect(Math.abs(v - f32.a[i])).toBeLessThanOrEqual(tolerance * Math.abs(f32.a[i]) + 1e-6));
    }
  });
});

describe('loadPeftAdapter refusals', () => {
  it('refuses a missing directory, config or weights file', () => {
    expect(refusal(join(root, 'nope'), 'adapter_not_found').message).toBe('the adapter directory is missing or is not a directory');
    const noConfig = synth();
    rmSync(join(noConfig, 'adapter_config.json'));
    expect(refusal(noConfig, 'adapter_not_found').message).toContain('no adapter_config.json');
    const noWeights = synth();
    rmSync(weightsPath(noWeights));
    expect(refusal(noWeights, 'adapter_not_found').message).toContain('no adapter_model.safetensors');
  });

  it('refuses pickled .bin weights, saying how to convert', () => {
    const dir = synth();
    renameSync(weightsPath(dir), join(dir, 'adapter_model.bin'));
    const err = refusal(dir, 'adapter_unsupported');
    expect(err.path).toBe('adapter_model.bin');
    expect(err.message).toContain('only adapter_model.safetensors');
    expect(err.message).toContain('safe_serialization=True');
  });

  it('refuses a config that is not JSON, naming the file', () => {
    const dir = synth();
    writeFileSync(join(dir, 'adapter_config.json'), '{"r": 8,');
    const err = refusal(dir, 'adapter_invalid');
    expect(err.message).toMatch(/^adapter_config\.json: not valid JSON/);
  });

  it('refuses DoRA, modules_to_save, LoRA biases and a missing r from the config', () => {
    const cases: [Record<string, unknown>, AdapterErrorCode, string][] = [
      [{ use_dora: true }, 'adapter_unsupported', 'use_dora'],
      [{ modules_to_save: ['lm_head', 'embed_tokens'] }, 'adapter_unsupported', 'modules_to_save'],
      [{ bias: 'all' }, 'adapter_unsupported', 'bias "all"'],
      [{ r: null }, 'adapter_invalid', 'r (the LoRA rank) is missing'],
    ];
    for (const [fields, code, fragment] of cases) {
      const dir = synth();
      editConfig(dir, fields);
      const err = refusal(dir, code);
      expect(err.path).toBe('adapter_config.json');
      expect(err.message).toContain(fragment);
    }
  });

  it('refuses embedding and lm_head targets, listed or matched by a regex', () => {
    const listed = synth();
    editConfig(listed, { target_modules: ['q_proj', 'v_proj', 'embed_tokens'] });
    expect(refusal(listed, 'adapter_unsupported').message).toContain('"embed_tokens"');
    const regex = synth();
    editConfig(regex, { target_modules: '.*(q_proj|v_proj|lm_head)' });
    expect(refusal(regex, 'adapter_unsupported').message).toContain('selects lm_head: LoRA on the token embedding or lm_head is not supported');
  });

  it('refuses targets that are not projections', () => {
    const listed = synth();
    editConfig(listed, { target_modules: ['q_proj', 'v_proj', 'c_attn'] });
    expect(refusal(listed, 'adapter_unsupported').message).toContain('"c_attn" is not one of the decoder projections');
    const regex = synth();
    editConfig(regex, { target_modules: '.*\\.(q_proj|v_proj|input_layernorm)' });
    expect(refusal(regex, 'adapter_unsupported').message).toContain('selects model.layers.0.input_layernorm, which is not one of the decoder projections');
  });

  it('refuses a rank above the maximum, naming the module, the rank and the limit', () => {
    expect(refusal(synth({ rank: 16 }), 'adapter_rank_too_large', 8).message).toContain(
      'module model.layers.0.self_attn.q_proj has rank 16, above this server\'s maximum LoRA rank 8',
    );
    const patterned = synth({ rank: 4, targetModules: ['q_proj', 'down_proj'], rankPattern: { down_proj: 32 } });
    expect(refusal(patterned, 'adapter_rank_too_large', 16).message).toContain('model.layers.0.mlp.down_proj has rank 32');
    expect(load(patterned, 32).rank).toBe(32);
  });

  it('refuses tensors whose shapes do not match the base or the configured rank', () => {
    const wrongIn = synth();
    editTensors(wrongIn, (t) => {
      t.set(tensorName(0, 'q_proj', 'A'), { ...t.get(tensorName(0, 'q_proj', 'A'))!, shape: [8, 32], data: new Float32Array(8 * 32) });
    });
    expect(refusal(wrongIn, 'adapter_shape_mismatch').message).toContain(
      `tensor ${tensorName(0, 'q_proj', 'A')} has shape [8, 32], expected [8, 64] (rank 8 from the config, 64 input features of the base q_proj)`,
    );
    const wrongRank = synth();
    editConfig(wrongRank, { r: 4 });
    expect(refusal(wrongRank, 'adapter_shape_mismatch').message).toContain('has shape [8, 64], expected [4, 64]');
    const otherBase = synth();
    const wide = { ...base, hiddenSize: 128 };
    expect(() => loadPeftAdapter(otherBase, wide, { maxRank: MAX_RANK })).toThrow(/expected \[8, 128\]/);
  });

  it('refuses a targeted module without its lora_B, or without any tensor', () => {
    const noB = synth();
    editTensors(noB, (t) => t.delete(tensorName(1, 'v_proj', 'B')));
    expect(refusal(noB, 'adapter_missing_tensor').message).toContain(
      `the config targets model.layers.1.self_attn.v_proj, but ${tensorName(1, 'v_proj', 'B')} is missing`,
    );
    const untrained = synth();
    editConfig(untrained, { target_modules: ['q_proj', 'v_proj', 'k_proj'] });
    expect(refusal(untrained, 'adapter_missing_tensor').message).toContain(
      `${tensorName(0, 'k_proj', 'A')} and ${tensorName(0, 'k_proj', 'B')} is missing`,
    );
  });

  it('refuses NaN and infinite weights, naming the tensor', () => {
    for (const bad of [NaN, -Infinity]) {
      const dir = synth();
      editTensors(dir, (t) => {
        t.get(tensorName(1, 'q_proj', 'B'))!.data[5] = bad;
      });
      expect(refusal(dir, 'adapter_nonfinite').message).toContain(`tensor ${tensorName(1, 'q_proj', 'B')} has a non-finite value (${bad}) at element 5`);
    }
  });

  it('refuses a weight the scale pushes past the fp16 range, naming the module, whatever type the slots hold', () => {
    const dir = synth();
    editTensors(dir, (t) => {
      t.get(tensorName(0, 'v_proj', 'B'))!.data[3] = 40000;
    });
    for (const weightType of ['float32', 'float16'] as const) {
      expect(() => loadPeftAdapter(dir, base, { maxRank: MAX_RANK, weightType })).toThrow(expect.objectContaining({
        code: 'adapter_invalid',
        message: 'adapter_model.safetensors: module model.layers.0.self_attn.v_proj: element 3 of lora_B is 40000 (80000 with the scale 2 ' +
          'folded in), beyond ±65504, the float16 range in which this server serves adapter weights',
      }));
    }
    editTensors(dir, (t) => {
      t.get(tensorName(0, 'v_proj', 'B'))!.data[3] = 30000;
    });
    expect(load(dir).modules.get('0.v_proj')!.b).toContain(60000);
  });

  it('wraps a corrupt or truncated weights file in adapter_invalid', () => {
    const truncated = synth();
    truncateSync(weightsPath(truncated), statSync(weightsPath(truncated)).size - 4);
    const err = refusal(truncated, 'adapter_invalid');
    expect(err.path).toBe('adapter_model.safetensors');
    expect(err.message).toContain('file is truncated');
    const garbage = synth();
    writeFileSync(weightsPath(garbage), Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3]));
    expect(refusal(garbage, 'adapter_invalid').message).toContain('runs past the end of the file');
  });

  it('refuses tensors the config does not explain', () => {
    const embedding = synth();
    editTensors(embedding, (t) => {
      const name = 'base_model.model.model.embed_tokens.lora_embedding_A';
      t.set(name, { name, dtype: 'F32', shape: [8, 4], data: new Float32Array(32) });
    });
    expect(refusal(embedding, 'adapter_unexpected_tensor').message).toContain('lora_embedding_A is not explained by');

    const untargeted = synth();
    editConfig(untargeted, { layers_to_transform: [0] });
    expect(refusal(untargeted, 'adapter_unexpected_tensor').message).toContain(
      `adapter_model.safetensors: tensor ${tensorName(1, 'q_proj', 'A')} is not explained by adapter_config.json: module model.layers.1.self_attn.q_proj is not`,
    );

    const named = synth();
    editTensors(named, (t) => {
      const entry = t.get(tensorName(0, 'q_proj', 'A'))!;
      t.delete(entry.name);
      const name = entry.name.replace('.lora_A.weight', '.lora_A.default.weight');
      t.set(name, { ...entry, name });
    });
    expect(refusal(named, 'adapter_unexpected_tensor').message).toContain('without an adapter name');

    const bias = synth();
    editTensors(bias, (t) => {
      const name = 'base_model.model.model.layers.0.self_attn.q_proj.bias';
      t.set(name, { name, dtype: 'F32', shape: [64], data: new Float32Array(64) });
    });
    expect(refusal(bias, 'adapter_unexpected_tensor').message).toContain('q_proj.bias is not explained');
  });

  it('refuses layer indices beyond the base model', () => {
    const extraLayer = synth();
    editTensors(extraLayer, (t) => {
      for (const which of ['A', 'B'] as const) {
        const entry = t.get(tensorName(1, 'q_proj', which))!;
        const name = tensorName(5, 'q_proj', which);
        t.set(name, { ...entry, name });
      }
    });
    expect(refusal(extraLayer, 'adapter_shape_mismatch').message).toContain(`tensor ${tensorName(5, 'q_proj', 'A')} is for layer 5, but the base model has 2 layers`);
    const configured = synth();
    editConfig(configured, { layers_to_transform: [0, 1, 7] });
    expect(refusal(configured, 'adapter_shape_mismatch').message).toContain('layers_to_transform names layer 7, but the base model has 2 layers');
  });

  it('refuses a config that selects none of the base projections', () => {
    const dir = synth();
    editConfig(dir, { target_modules: '.*\\.9\\.self_attn\\.q_proj' });
    expect(refusal(dir, 'adapter_shape_mismatch').message).toContain('selects none of the base model\'s projections');
  });
});

/**
 * Adapters written by an independent tool (tools/hf-reference/make_fixtures.py) for tiny-llama; its README gives each
 * one's targets, ranks and scales.
 */
describe('hf-reference fixtures', () => {
  const fixtures = 'test/fixtures/hf';
  const tinyLlama = readBaseConfig(join(fixtures, 'tiny-llama'));
  const loadFixture = (name: string): LoraWeights => loadPeftAdapter(join(fixtures, 'adapters', name), tinyLlama, { maxRank: 16 });
  const every = (layers: number[], projections: readonly Projection[], value: [number, number]): Record<string, [number, number]> =>
    Object.fromEntries(layers.flatMap((l) => projections.map((p) => [loraModuleKey(l, p), value])));

  it('adapter-a: r 8, alpha 16 (scale 2) on all seven projections', () => {
    expect(summary(loadFixture('adapter-a'))).toEqual(every([0, 1], PROJECTIONS, [8, 2]));
  });

  it('adapter-b: r 4, alpha 8 with use_rslora (scale 4) on q_proj and v_proj', () => {
    expect(summary(loadFixture('adapter-b'))).toEqual(every([0, 1], ['q_proj', 'v_proj'], [4, 4]));
  });

  it('adapter-c: a regex on layer 1 MLP with rank_pattern and alpha_pattern', () => {
    expect(summary(loadFixture('adapter-c'))).toEqual({ '1.gate_proj': [8, 4], '1.up_proj': [8, 1], '1.down_proj': [2, 4] });
  });

  it('adapter-d: layers_to_transform [0], F16 weights, scale 2', () => {
    const weights = loadFixture('adapter-d');
    expect(summary(weights)).toEqual(every([0], ['k_proj', 'o_proj', 'up_proj'], [4, 2]));
    const stored = storedTensors(join(fixtures, 'adapters', 'adapter-d'));
    // o_proj: lora_A [4, 64], lora_B [64, 4].
    const o = weights.modules.get('0.o_proj')!;
    expect(o.a).toEqual(transposed(stored.get(tensorName(0, 'o_proj', 'A'))!.data, 4, 64));
    expect(o.b).toEqual(transposed(stored.get(tensorName(0, 'o_proj', 'B'))!.data, 64, 4, 2));
  });
});
