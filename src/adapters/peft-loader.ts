import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { CheckpointError } from '../model/checkpoint-error.js';
import type { LoraWeightType } from '../model/graph-builder.js';
import { PROJECTIONS, projectionShape, projectionWeightName } from '../model/model-config.js';
import type { ModelConfig, Projection } from '../model/model-config.js';
import type { SafetensorsFile } from '../model/safetensors.js';
import { AdapterError, excerpt } from './adapter-error.js';
import { adapterFiles, CONFIG_FILE, openAdapterWeights, readAdapterConfig, WEIGHTS_FILE } from './adapter-files.js';
import { convertTransposed, FP16_MAX, refusedElement } from './lora-convert.js';
import type { LoraTensor } from './lora-convert.js';
import { isTargeted, moduleLoraParams, parsePeftConfig } from './peft-config.js';
import type { PeftConfig } from './peft-config.js';

/** One projection's LoRA, laid out for the kernel: `y += (x · a) · b`, its values fp16's (lora-convert.ts). */
export interface LoraModule {
  layer: number;
  projection: Projection;
  rank: number;
  /** PEFT's scale (lora_alpha / r, or / √r with use_rslora), already folded into `b`. */
  scale: number;
  /** `[in, rank]` row-major: PEFT's lora_A `[rank, in]` transposed. */
  a: LoraTensor;
  /** `[rank, out]` row-major: PEFT's lora_B `[out, rank]` transposed, times `scale`. */
  b: LoraTensor;
}

export interface LoraWeights {
  /** The largest rank over the modules. */
  rank: number;
  /** Keyed by loraModuleKey(layer, projection). */
  modules: Map<string, LoraModule>;
  /** Bytes of all `a` and `b` arrays, which share one ArrayBuffer. */
  bytes: number;
  /** The element type of every `a` and `b`. */
  type: LoraWeightType;
  /**
   * The server's identity of the adapter's content: sha256 (hex) over, per module in order, its layer, projection,
   * rank, scale, and the dtype and bytes of its lora_A and lora_B exactly as read and converted. It is hashed from
   * the very bytes the weights were made of, so it can never name other content than what is served, even if the
   * files change during the load; how the config is written (other than the scale) does not change it.
   */
  digest: string;
}

export interface LoadPeftAdapterOptions {
  /** The largest rank the server accepts (`--max-lora-rank`). */
  maxRank: number;
  /** Real paths of the adapter roots, which the files of an adapter under a root must resolve inside (default: none). */
  roots?: readonly string[];
  /** The slots' element type, converted to once, here (default float32); the values are fp16's either way. */
  weightType?: LoraWeightType;
  /** Where the weights' one buffer comes from (default: a new ArrayBuffer); every byte of it is written. */
  allocate?: (bytes: number) => ArrayBuffer;
}

export function loraModuleKey(layer: number, projection: Projection): string {
  return `${layer}.${projection}`;
}

/**
 * Reads and validates a PEFT LoRA adapter for `base`. PEFT saves each weight as
 * `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`, with the adapter name (`default`) stripped; a
 * `.lora_A.default.weight` name is not something PEFT writes or loads, so it is refused like any unexplained tensor.
 * Every module the config targets in the base must have both tensors (PEFT would only warn and leave it at its
 * no-op initial value), and every tensor must belong to a targeted module.
 */
export function loadPeftAdapter(dir: string, base: ModelConfig, options: LoadPeftAdapterOptions): LoraWeights {
  const files = adapterFiles(dir, options.roots ?? []);
  const config = parsePeftConfig(readAdapterConfig(files), CONFIG_FILE);
  const targets = resolveTargets(config, base);

  for (const target of targets.values()) {
    if (target.rank > options.maxRank) {
      throw new AdapterError(
        'adapter_rank_too_large',
        CONFIG_FILE,
        `module ${target.module} has rank ${target.rank}, above this server's maximum LoRA rank ${options.maxRank} (--max-lora-rank)`,
      );
    }
  }

  const file = openAdapterWeights(files);
  try {
    checkTensorNames(file, targets, base, config);
    return readModules(file, [...targets.values()], base, options.weightType ?? 'float32', options.allocate ?? ((bytes) => new ArrayBuffer(bytes)));
  } catch (err) {
    if (err instanceof CheckpointError) throw new AdapterError('adapter_invalid', WEIGHTS_FILE, err.problem);
    throw err;
  } finally {
    file.close();
  }
}

/** A projection of the base that the config targets. */
interface Target {
  module: string;
  layer: number;
  projection: Projection;
  rank: number;
  scale: number;
}

const TENSOR_PREFIX = 'base_model.model.';
const LORA_TENSOR = /^base_model\.model\.(.+)\.lora_[AB]\.weight$/;
const PROJECTION_MODULE = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.([a-z_]+)$/;

/** Targeted projections keyed by module name, in layer then PROJECTIONS order. */
function resolveTargets(config: PeftConfig, base: ModelConfig): Map<string, Target> {
  const fail = (code: 'adapter_unsupported' | 'adapter_shape_mismatch', problem: string): never => {
    throw new AdapterError(code, config.source, problem);
  };
  for (const layer of config.layersToTransform ?? []) {
    if (layer >= base.numLayers) fail('adapter_shape_mismatch', `layers_to_transform names layer ${layer}, but the base model has ${base.numLayers} layers`);
  }
  for (const module of otherModuleNames(base)) {
    if (!isTargeted(config, module)) continue;
    if (module === 'model.embed_tokens' || module === 'lm_head') {
      fail('adapter_unsupported', `target_modules selects ${module}: LoRA on the token embedding or lm_head is not supported`);
    }
    fail('adapter_unsupported', `target_modules selects ${module}, which is not one of the decoder projections (${PROJECTIONS.join(', ')})`);
  }
  const targets = new Map<string, Target>();
  for (let layer = 0; layer < base.numLayers; layer++) {
    for (const projection of PROJECTIONS) {
      const module = projectionModuleName(layer, projection);
      if (isTargeted(config, module)) targets.set(module, { module, layer, projection, ...moduleLoraParams(config, module) });
    }
  }
  if (targets.size === 0) fail('adapter_shape_mismatch', 'target_modules selects none of the base model\'s projections');
  return targets;
}

function projectionModuleName(layer: number, projection: Projection): string {
  return projectionWeightName(layer, projection).slice(0, -'.weight'.length);
}

/** The base model's modules other than the projections, as transformers names them, so a regex can be checked against them. */
function otherModuleNames(base: ModelConfig): string[] {
  const names = ['model', 'model.embed_tokens', 'model.layers', 'model.norm', 'model.rotary_emb', 'lm_head'];
  for (let layer = 0; layer < base.numLayers; layer++) {
    const prefix = `model.layers.${layer}`;
    names.push(prefix, `${prefix}.self_attn`, `${prefix}.mlp`, `${prefix}.mlp.act_fn`, `${prefix}.input_layernorm`, `${prefix}.post_attention_layernorm`);
    if (base.qkNorm) names.push(`${prefix}.self_attn.q_norm`, `${prefix}.self_attn.k_norm`);
  }
  return names;
}

/** Every tensor must be a lora_A / lora_B of a targeted module. */
function checkTensorNames(file: SafetensorsFile, targets: Map<string, Target>, base: ModelConfig, config: PeftConfig): void {
  for (const name of file.names()) {
    const match = LORA_TENSOR.exec(name);
    if (match && targets.has(match[1])) continue;
    const projection = match ? PROJECTION_MODULE.exec(match[1]) : null;
    if (projection && (PROJECTIONS as readonly string[]).includes(projection[2]) && Number(projection[1]) >= base.numLayers) {
      throw new AdapterError(
        'adapter_shape_mismatch',
        WEIGHTS_FILE,
        `tensor ${excerpt(name)} is for layer ${excerpt(projection[1])}, but the base model has ${base.numLayers} layers`,
      );
    }
    throw new AdapterError('adapter_unexpected_tensor', WEIGHTS_FILE, `tensor ${excerpt(name)} is not explained by ${config.source}: ${unexpectedReason(name, match)}`);
  }
}

function unexpectedReason(name: string, match: RegExpExecArray | null): string {
  if (name.includes('lora_embedding_')) return 'LoRA on the token embedding is not supported';
  if (match) return `module ${excerpt(match[1])} is not a projection that target_modules, layers_to_transform and exclude_modules select`;
  if (/\.lora_[AB]\.[^.]+\.weight$/.test(name)) {
    return 'PEFT saves LoRA weights as <module>.lora_A.weight / .lora_B.weight, without an adapter name';
  }
  if (!name.startsWith(TENSOR_PREFIX)) return `PEFT LoRA tensor names start with ${TENSOR_PREFIX}`;
  return 'only lora_A / lora_B weights of the targeted projections are supported';
}

const ELEMENT_BYTES: Readonly<Record<LoraWeightType, number>> = { float32: 4, float16: 2 };

/**
 * Reads every target's tensors into one buffer, already in the kernel's layout and the slots' type, hashing each
 * tensor's bytes while they are fresh in cache; one read buffer serves every tensor.
 */
function readModules(file: SafetensorsFile, targets: readonly Target[], base: ModelConfig, type: LoraWeightType, allocate: (bytes: number) => ArrayBuffer): LoraWeights {
  const shapes = targets.map((t) => projectionShape(base, t.projection));
  const elements = targets.reduce((sum, t, i) => sum + t.rank * (shapes[i][0] + shapes[i][1]), 0);
  const buffer = allocate(elements * ELEMENT_BYTES[type]);
  // Shapes are checked against these sizes before a read, so the largest tensor, at 4 bytes a value, bounds them all.
  const scratch = new Uint8Array(4 * Math.max(...targets.map((t, i) => t.rank * Math.max(...shapes[i]))));
  const hash = createHash('sha256');
  const scalars = new DataView(new ArrayBuffer(12));
  const modules = new Map<string, LoraModule>();
  let offset = 0;
  const take = (n: number): LoraTensor => {
    const view = type === 'float32' ? new Float32Array(buffer, offset * 4, n) : new Uint16Array(buffer, offset * 2, n);
    offset += n;
    return view;
  };
  targets.forEach((target, i) => {
    const [inFeatures, outFeatures] = shapes[i];
    const aName = `${TENSOR_PREFIX}${target.module}.lora_A.weight`;
    const bName = `${TENSOR_PREFIX}${target.module}.lora_B.weight`;
    const hasA = file.has(aName);
    const hasB = file.has(bName);
    if (!hasA || !hasB) {
      const missing = !hasA && !hasB ? `${aName} and ${bName}` : hasA ? bName : aName;
      throw new AdapterError('adapter_missing_tensor', WEIGHTS_FILE, `the config targets ${target.module}, but ${missing} is missing`);
    }
    hash.update(`${target.layer}.${target.projection}\0`);
    scalars.setUint32(0, target.rank, true);
    scalars.setFloat64(4, target.scale, true);
    hash.update(new Uint8Array(scalars.buffer));
    const source = { file, hash, scratch, module: target.module };
    const rankSource = `rank ${target.rank} from the config`;
    const a = readConverted(source, aName, [target.rank, inFeatures], `${rankSource}, ${inFeatures} input features of the base ${target.projection}`, 1, take(inFeatures * target.rank));
    const b = readConverted(source, bName, [outFeatures, target.rank], `${outFeatures} output features of the base ${target.projection}, ${rankSource}`, target.scale, take(target.rank * outFeatures));
    modules.set(loraModuleKey(target.layer, target.projection), { layer: target.layer, projection: target.projection, rank: target.rank, scale: target.scale, a, b });
  });
  const rank = Math.max(...targets.map((t) => t.rank));
  return { rank, modules, bytes: buffer.byteLength, type, digest: hash.digest('hex') };
}

interface TensorSource {
  file: SafetensorsFile;
  hash: Hash;
  scratch: Uint8Array;
  module: string;
}

/** Reads the `[rows, cols]` tensor, hashes its dtype and bytes, and converts it into `out` transposed and scaled. */
function readConverted(source: TensorSource, name: string, expected: [number, number], why: string, scale: number, out: LoraTensor): LoraTensor {
  const { shape, dtype } = source.file.info(name);
  if (shape.length !== 2 || shape[0] !== expected[0] || shape[1] !== expected[1]) {
    throw new AdapterError('adapter_shape_mismatch', WEIGHTS_FILE, `tensor ${name} has shape [${excerpt(shape.join(', '))}], expected [${expected.join(', ')}] (${why})`);
  }
  const bytes = source.file.readBytes(name, source.scratch);
  source.hash.update(`${dtype}\0`);
  source.hash.update(bytes);
  if (convertTransposed(bytes, dtype, expected[0], expected[1], scale, out)) return out;
  const { index, value } = refusedElement(bytes, dtype, expected[0], expected[1], out);
  if (!Number.isFinite(value)) throw new AdapterError('adapter_nonfinite', WEIGHTS_FILE, `tensor ${name} has a non-finite value (${value}) at element ${index}`);
  const scaled = scale === 1 ? '' : ` (${value * scale} with the scale ${scale} folded in)`;
  throw new AdapterError(
    'adapter_invalid',
    WEIGHTS_FILE,
    `module ${source.module}: element ${index} of ${name.endsWith('lora_A.weight') ? 'lora_A' : 'lora_B'} is ${value}${scaled}, beyond ±${FP16_MAX}, ` +
      'the float16 range in which this server serves adapter weights',
  );
}
