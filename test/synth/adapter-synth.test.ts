import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { captureCommand } from '../support/capture-command.js';
import { synthCommand } from '../../src/cli/synth.js';
import { Checkpoint } from '../../src/model/checkpoint.js';
import { PROJECTIONS } from '../../src/model/model-config.js';
import type { Projection } from '../../src/model/model-config.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { synthAdapter } from '../../src/synth/adapter-synth.js';
import type { SynthAdapterOptions } from '../../src/synth/adapter-synth.js';
import { synthCheckpoint } from '../../src/synth/checkpoint-synth.js';
import { referenceGreedy } from '../support/reference-model.js';
import type { LoraLookup } from '../support/reference-model.js';

const root = mkdtempSync(join(tmpdir(), 'loraserve-synth-adapter-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

// Qwen3 tiny: q_proj is [128, 64] and o_proj [64, 128], so in/out mix-ups show in the shapes.
const base = join(root, 'base');
synthCheckpoint(base, { architecture: 'qwen3', preset: 'tiny', seed: 0, dtype: 'F32' });
/** [in, out] of each projection of the base. */
const SHAPES: Record<Projection, [number, number]> = {
  q_proj: [64, 128], k_proj: [64, 64], v_proj: [64, 64], o_proj: [128, 64], gate_proj: [64, 128], up_proj: [64, 128], down_proj: [128, 64],
};

let dirCount = 0;
function synth(opts: Partial<SynthAdapterOptions>): string {
  const dir = join(root, `a${dirCount++}`);
  synthAdapter(dir, base, { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj'], seed: 0, ...opts });
  return dir;
}

function adapterConfig(dir: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
}

/** Tensor name → shape, through the reader the server loads adapters with. */
function shapes(dir: string): Record<string, number[]> {
  const file = SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  try {
    return Object.fromEntries(file.names().map((name) => [name, file.info(name).shape]));
  } finally {
    file.close();
  }
}

function moduleName(layer: number, projection: Projection): string {
  const block = ['gate_proj', 'up_proj', 'down_proj'].includes(projection) ? 'mlp' : 'self_attn';
  return `base_model.model.model.layers.${layer}.${block}.${projection}`;
}

function expectedShapes(layers: number[], projections: readonly Projection[], rankOf: (layer: number, p: Projection) => number): Record<string, number[]> {
  const expected: Record<string, number[]> = {};
  for (const layer of layers) {
    for (const p of projections) {
      const [inFeatures, outFeatures] = SHAPES[p];
      const r = rankOf(layer, p);
      expected[`${moduleName(layer, p)}.lora_A.weight`] = [r, inFeatures];
      expected[`${moduleName(layer, p)}.lora_B.weight`] = [outFeatures, r];
    }
  }
  return expected;
}

describe('synthAdapter', () => {
  it('writes a PEFT LoRA config and lora_A [r, in] / lora_B [out, r] for every targeted projection of every layer', () => {
    const dir = synth({ targetModules: [...PROJECTIONS], rank: 4, alpha: 8 });
    expect(readdirSync(dir).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    expect(adapterConfig(dir)).toEqual({
      alpha_pattern: {},
      base_model_name_or_path: base,
      bias: 'none',
      fan_in_fan_out: false,
      inference_mode: true,
      init_lora_weights: true,
      layers_pattern: null,
      layers_to_transform: null,
      lora_alpha: 8,
      lora_dropout: 0,
      modules_to_save: null,
      peft_type: 'LORA',
      r: 4,
      rank_pattern: {},
      target_modules: [...PROJECTIONS],
      task_type: 'CAUSAL_LM',
      use_dora: false,
      use_rslora: false,
    });
    expect(shapes(dir)).toEqual(expectedShapes([0, 1], PROJECTIONS, () => 4));
  });

  it('limits tensors to layers_to_transform and the target modules', () => {
    const dir = synth({ targetModules: ['v_proj', 'down_proj'], layersToTransform: [1] });
    expect(adapterConfig(dir)).toMatchObject({ layers_to_transform: [1], target_modules: ['v_proj', 'down_proj'] });
    expect(shapes(dir)).toEqual(expectedShapes([1], ['v_proj', 'down_proj'], () => 4));
  });

  it('applies rank_pattern with PEFT matching (bare module name, or a full path) and records both patterns', () => {
    const rankPattern = { 'model.layers.0.self_attn.q_proj': 6, k_proj: 2 };
    const alphaPattern = { k_proj: 4 };
    const dir = synth({ targetModules: ['q_proj', 'k_proj', 'v_proj'], rankPattern, alphaPattern });
    expect(adapterConfig(dir)).toMatchObject({ r: 4, rank_pattern: rankPattern, alpha_pattern: alphaPattern });
    const rankOf = (layer: number, p: Projection) => (p === 'k_proj' ? 2 : p === 'q_proj' && layer === 0 ? 6 : 4);
    expect(shapes(dir)).toEqual(expectedShapes([0, 1], ['q_proj', 'k_proj', 'v_proj'], rankOf));
  });

  it.each([
    ['α/r', false, 16 / 8],
    ['rsLoRA α/√r', true, 16 / Math.sqrt(8)],
  ])('scales B so that the %s-scaled delta has the spread of the base weights', (_label, useRslora, scale) => {
    const dir = synth({ rank: 8, alpha: 16, useRslora, targetModules: ['o_proj'], layersToTransform: [0] });
    expect(adapterConfig(dir).use_rslora).toBe(useRslora);
    const file = SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
    const a = file.read(`${moduleName(0, 'o_proj')}.lora_A.weight`);
    const b = file.read(`${moduleName(0, 'o_proj')}.lora_B.weight`);
    file.close();
    const [inFeatures, outFeatures] = SHAPES.o_proj;
    let sumSquares = 0;
    for (let o = 0; o < outFeatures; o++) {
      for (let i = 0; i < inFeatures; i++) {
        let d = 0;
        for (let k = 0; k < 8; k++) d += b[o * 8 + k] * a[k * inFeatures + i];
        sumSquares += (scale * d) ** 2;
      }
    }
    const deltaStd = Math.sqrt(sumSquares / (inFeatures * outFeatures));
    expect(deltaStd * Math.sqrt(inFeatures)).toBeGreaterThan(0.7);
    expect(deltaStd * Math.sqrt(inFeatures)).toBeLessThan(1.4);
  });

  it('changes the tiny model\'s greedy output', () => {
    const dir = synth({ targetModules: [...PROJECTIONS], seed: 1 });
    const checkpoint = Checkpoint.open(base);
    const weights = { read: (name: string) => checkpoint.read(name), has: (name: string) => checkpoint.has(name) };
    const file = SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
    const lora: LoraLookup = (layer, projection) => ({
      a: file.read(`${moduleName(layer, projection)}.lora_A.weight`),
      b: file.read(`${moduleName(layer, projection)}.lora_B.weight`),
      rank: 4,
      scale: 8 / 4,
    });
    const prompt = [...Buffer.from('Once upon a time')];
    const plain = referenceGreedy(checkpoint.config, weights, prompt, 8);
    const adapted = referenceGreedy(checkpoint.config, weights, prompt, 8, lora);
    file.close();
    checkpoint.close();
    expect(adapted.filter((id, i) => id !== plain[i]).length).toBeGreaterThanOrEqual(4);
  });

  it('is deterministic: the same options give identical bytes, another seed other weights', () => {
    const read = (dir: string) => readFileSync(join(dir, 'adapter_model.safetensors'));
    const options = { targetModules: [...PROJECTIONS], seed: 5, dtype: 'BF16' as const };
    const first = synth(options);
    const second = synth(options);
    expect(read(first).equals(read(second))).toBe(true);
    expect(readFileSync(join(first, 'adapter_config.json')).equals(readFileSync(join(second, 'adapter_config.json')))).toBe(true);
    expect(read(first).equals(read(synth({ ...options, seed: 6 })))).toBe(false);
    const file = SafetensorsFile.open(join(first, 'adapter_model.safetensors'));
    expect(new Set(file.names().map((name) => file.info(name).dtype))).toEqual(new Set(['BF16']));
    file.close();
  });

  it('records fan_in_fan_out without changing the [r, in] / [out, r] layout of nn.Linear targets', () => {
    const dir = synth({ fanInFanOut: true });
    expect(adapterConfig(dir).fan_in_fan_out).toBe(true);
    expect(shapes(dir)).toEqual(expectedShapes([0, 1], ['q_proj', 'v_proj'], () => 4));
  });

  it.each([
    [{ targetModules: ['q_proj', 'lm_head'] }, 'unknown target module "lm_head"'],
    [{ targetModules: [] }, 'targetModules is empty'],
    [{ layersToTransform: [2] }, 'layer 2 in layersToTransform is outside the base model\'s 2 layers'],
    [{ rank: 0 }, 'rank must be a positive integer (found 0)'],
    [{ rankPattern: { q_proj: 1.5 } }, 'rankPattern["q_proj"] must be a positive integer (found 1.5)'],
  ])('refuses %j', (opts, message) => {
    expect(() => synth(opts)).toThrow(message);
  });
});

describe('loraserve synth adapter', () => {
  const run = (argv: string[]) => captureCommand(synthCommand, argv);

  it('writes what synthAdapter writes for the same options', async () => {
    const dir = join(root, 'cli-adapter');
    const argv = ['adapter', '--out', dir, '--base', base, '--rank', '2', '--alpha', '4', '--targets', 'all', '--seed', '9', '--rslora', '--layers', '1'];
    expect(await run(argv).status).toBe(0);
    const api = synth({ rank: 2, alpha: 4, targetModules: [...PROJECTIONS], seed: 9, useRslora: true, layersToTransform: [1] });
    expect(readFileSync(join(dir, 'adapter_model.safetensors')).equals(readFileSync(join(api, 'adapter_model.safetensors')))).toBe(true);
    expect(adapterConfig(dir)).toEqual(adapterConfig(api));
  });

  it.each([
    [['adapter', '--out', 'x'], '--base is required'],
    [['adapter', '--out', 'x', '--base', 'y', '--rank', '2.5'], '--rank must be a positive integer (found 2.5)'],
    [['adapter', '--out', 'x', '--base', 'y', '--targets', 'q_proj,embed_tokens'], '--targets must be one of q_proj, k_proj'],
    [['adapter', '--out', 'x', '--base', 'y', '--layers', '0,one'], '--layers must be comma-separated non-negative integers (found "one")'],
  ])('exits 2 with a clear error for %j', async (argv, message) => {
    const result = run(argv);
    expect(await result.status).toBe(2);
    expect(result.stderr()).toContain(message);
  });
});
