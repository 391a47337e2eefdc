import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseModelConfig } from '../model/hf-config.js';
import { PROJECTIONS, projectionShape, projectionWeightName } from '../model/model-config.js';
import type { ModelConfig, Projection } from '../model/model-config.js';
import { Random } from './random.js';
import { writeSafetensors } from './safetensors-writer.js';
import type { SafetensorsDtype, TensorToWrite } from './safetensors-writer.js';

export interface SynthAdapterOptions {
  rank: number;
  alpha: number;
  /** Projection names, e.g. `['q_proj', 'v_proj']` or all of PROJECTIONS. */
  targetModules: string[];
  seed: number;
  /** Scale α/√r instead of α/r. */
  useRslora?: boolean;
  /** Layers that get LoRA weights; default all. */
  layersToTransform?: number[];
  /** PEFT patterns: a key matches a module whose name is the key or ends with `.` + key (the key is a regex). */
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  /** Default F32. */
  dtype?: SafetensorsDtype;
  /** Written to the config only: PEFT ignores it for nn.Linear targets, which every supported architecture has. */
  fanInFanOut?: boolean;
}

/**
 * Writes a PEFT LoRA adapter for the checkpoint in `baseModelDir`: adapter_config.json and adapter_model.safetensors.
 * A and B are both random, B scaled so that `scale · B·A` has the spread of the base weights (std 1/√in): the
 * adapter changes a tiny model's greedy output. The same options give byte-identical files.
 */
export function synthAdapter(dir: string, baseModelDir: string, opts: SynthAdapterOptions): void {
  const configPath = join(baseModelDir, 'config.json');
  const config = parseModelConfig(JSON.parse(readFileSync(configPath, 'utf8')), undefined, configPath);
  const fail = (problem: string): never => {
    throw new Error(`adapter for ${baseModelDir}: ${problem}`);
  };

  if (!Number.isSafeInteger(opts.rank) || opts.rank <= 0) fail(`rank must be a positive integer (found ${opts.rank})`);
  if (!(opts.alpha > 0)) fail(`alpha must be positive (found ${opts.alpha})`);
  if (opts.targetModules.length === 0) fail('targetModules is empty');
  for (const target of opts.targetModules) {
    if (!(PROJECTIONS as readonly string[]).includes(target)) fail(`unknown target module ${JSON.stringify(target)} (known: ${PROJECTIONS.join(', ')})`);
  }
  const layers = opts.layersToTransform ?? Array.from({ length: config.numLayers }, (_, i) => i);
  for (const layer of layers) {
    if (!Number.isSafeInteger(layer) || layer < 0 || layer >= config.numLayers) {
      fail(`layer ${layer} in layersToTransform is outside the base model's ${config.numLayers} layers`);
    }
  }
  for (const [key, rank] of Object.entries(opts.rankPattern ?? {})) {
    if (!Number.isSafeInteger(rank) || rank <= 0) fail(`rankPattern[${JSON.stringify(key)}] must be a positive integer (found ${rank})`);
  }
  for (const [key, alpha] of Object.entries(opts.alphaPattern ?? {})) {
    if (!(alpha > 0)) fail(`alphaPattern[${JSON.stringify(key)}] must be positive (found ${alpha})`);
  }

  const dtype = opts.dtype ?? 'F32';
  const tensors: TensorToWrite[] = [];
  for (const layer of [...new Set(layers)].sort((a, b) => a - b)) {
    for (const projection of PROJECTIONS.filter((p) => opts.targetModules.includes(p))) {
      const module = projectionWeightName(layer, projection).slice(0, -'.weight'.length);
      const rank = patternValue(opts.rankPattern, module) ?? opts.rank;
      const alpha = patternValue(opts.alphaPattern, module) ?? opts.alpha;
      const scale = opts.useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
      tensors.push(...loraPair(module, projection, rank, scale, config, opts.seed, dtype));
    }
  }

  mkdirSync(dir, { recursive: true });
  // Keys sorted, as PEFT writes them.
  const adapterConfig = {
    alpha_pattern: opts.alphaPattern ?? {},
    base_model_name_or_path: baseModelDir,
    bias: 'none',
    fan_in_fan_out: opts.fanInFanOut ?? false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: opts.layersToTransform ?? null,
    lora_alpha: opts.alpha,
    lora_dropout: 0,
    modules_to_save: null,
    peft_type: 'LORA',
    r: opts.rank,
    rank_pattern: opts.rankPattern ?? {},
    target_modules: opts.targetModules,
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: opts.useRslora ?? false,
  };
  writeFileSync(join(dir, 'adapter_config.json'), `${JSON.stringify(adapterConfig, null, 2)}\n`);
  writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
}

/**
 * lora_A `[r, in]` with std 1/√in and lora_B `[out, r]` with std 1/(scale·√r), so each entry of `scale · B·A`
 * has std 1/√in, like the base weight it is added to.
 */
function loraPair(module: string, projection: Projection, rank: number, scale: number, config: ModelConfig, seed: number, dtype: SafetensorsDtype): TensorToWrite[] {
  const [inFeatures, outFeatures] = projectionShape(config, projection);
  const tensor = (name: string, shape: number[], std: number): TensorToWrite => {
    const data = new Float32Array(shape[0] * shape[1]);
    new Random(seed, name).fillNormal(data, std);
    return { name, dtype, shape, data };
  };
  return [
    tensor(`base_model.model.${module}.lora_A.weight`, [rank, inFeatures], 1 / Math.sqrt(inFeatures)),
    tensor(`base_model.model.${module}.lora_B.weight`, [outFeatures, rank], 1 / (scale * Math.sqrt(rank))),
  ];
}

/** PEFT's rank_pattern / alpha_pattern lookup: the first key, as a regex, matching the module name or its tail after a dot. */
function patternValue(pattern: Record<string, number> | undefined, module: string): number | undefined {
  if (!pattern) return undefined;
  const key = Object.keys(pattern).find((k) => new RegExp(`^(.*\\.)?(${k})$`).test(module));
  return key === undefined ? undefined : pattern[key];
}
