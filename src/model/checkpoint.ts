import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { isAbsolute, join, normalize, sep } from 'node:path';
import { CheckpointError } from './checkpoint-error.js';
import { parseModelConfig } from './hf-config.js';
import { PROJECTIONS, projectionShape, projectionWeightName } from './model-config.js';
import type { ModelConfig } from './model-config.js';
import { SafetensorsFile } from './safetensors.js';

const CONFIG = 'config.json';
const GENERATION_CONFIG = 'generation_config.json';
const SINGLE_FILE = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';
const DIGEST_CHUNK_BYTES = 8 << 20;

/**
 * A Hugging Face checkpoint directory: `config.json` (+ `generation_config.json`) and `model.safetensors` or shards
 * named by `model.safetensors.index.json`. Opening checks that every tensor the architecture needs is present with
 * the shape the config implies, so later reads cannot hit a missing or misshapen weight.
 */
export class Checkpoint {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly #files: SafetensorsFile[];
  /** Tensor name → the file that holds it. */
  readonly #tensors: Map<string, SafetensorsFile>;
  /** Files hashed by digest(), relative to dir, in hashing order. */
  readonly #digestFiles: string[];
  #digest: string | null = null;

  private constructor(dir: string, config: ModelConfig, files: SafetensorsFile[], tensors: Map<string, SafetensorsFile>, digestFiles: string[]) {
    this.dir = dir;
    this.config = config;
    this.#files = files;
    this.#tensors = tensors;
    this.#digestFiles = digestFiles;
  }

  static open(dir: string): Checkpoint {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new CheckpointError(dir, 'not a checkpoint directory');
    const configPath = join(dir, CONFIG);
    if (!existsSync(configPath)) throw new CheckpointError(dir, `no ${CONFIG}`);
    const generationPath = join(dir, GENERATION_CONFIG);
    const hasGeneration = existsSync(generationPath);
    const config = parseModelConfig(readJson(configPath), hasGeneration ? readJson(generationPath) : undefined, configPath);

    const files: SafetensorsFile[] = [];
    try {
      const { tensors, weightFiles } = existsSync(join(dir, SINGLE_FILE)) ? openSingle(dir, files) : openSharded(dir, files);
      validateTensors(dir, config, tensors);
      const digestFiles = [CONFIG, ...(hasGeneration ? [GENERATION_CONFIG] : []), ...weightFiles];
      return new Checkpoint(dir, config, files, tensors, digestFiles);
    } catch (err) {
      for (const f of files) f.close();
      throw err;
    }
  }

  names(): string[] {
    return [...this.#tensors.keys()];
  }

  has(name: string): boolean {
    return this.#tensors.has(name);
  }

  shape(name: string): number[] {
    return this.#file(name).info(name).shape;
  }

  /** The tensor converted to fp32, row-major in its stored shape. */
  read(name: string): Float32Array<ArrayBuffer> {
    return this.#file(name).read(name);
  }

  /**
   * Hex SHA-256 over the config files and every weight file (each prefixed by its name and size), read in chunks.
   * Computed once, on first call.
   */
  digest(): string {
    if (this.#digest !== null) return this.#digest;
    const hash = createHash('sha256');
    const chunk = Buffer.allocUnsafe(DIGEST_CHUNK_BYTES);
    for (const name of this.#digestFiles) {
      const path = join(this.dir, name);
      const fd = openSync(path, 'r');
      try {
        const size = statSync(path).size;
        hash.update(`${name}\0${size}\0`);
        for (let at = 0; at < size;) {
          const n = readSync(fd, chunk, 0, Math.min(chunk.length, size - at), at);
          if (n === 0) throw new CheckpointError(path, `file shrank while hashing: ended at byte ${at} of ${size}`);
          hash.update(chunk.subarray(0, n));
          at += n;
        }
      } finally {
        closeSync(fd);
      }
    }
    this.#digest = hash.digest('hex');
    return this.#digest;
  }

  close(): void {
    for (const f of this.#files) f.close();
  }

  #file(name: string): SafetensorsFile {
    const file = this.#tensors.get(name);
    if (!file) throw new CheckpointError(this.dir, `no tensor named ${name}`);
    return file;
  }
}

/** The opened weights: tensor name → file, and the weight files (relative to dir) in digest order. */
interface Weights {
  tensors: Map<string, SafetensorsFile>;
  weightFiles: string[];
}

/** Opens model.safetensors, appending it to `files` so the caller can close it on failure. */
function openSingle(dir: string, files: SafetensorsFile[]): Weights {
  const file = SafetensorsFile.open(join(dir, SINGLE_FILE));
  files.push(file);
  return { tensors: new Map(file.names().map((name) => [name, file])), weightFiles: [SINGLE_FILE] };
}

/** Opens every shard named by the index, appending each to `files` as it opens. */
function openSharded(dir: string, files: SafetensorsFile[]): Weights {
  const indexPath = join(dir, INDEX);
  if (!existsSync(indexPath)) {
    const hint = existsSync(join(dir, 'pytorch_model.bin')) || existsSync(join(dir, 'pytorch_model.bin.index.json'))
      ? ' (PyTorch .bin weights are not supported; convert them to safetensors)'
      : '';
    throw new CheckpointError(dir, `no ${SINGLE_FILE} or ${INDEX}${hint}`);
  }
  const index = readJson(indexPath);
  const weightMap = typeof index === 'object' && index !== null ? (index as Record<string, unknown>).weight_map : undefined;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new CheckpointError(indexPath, 'weight_map is missing or not an object');
  }

  const shards = new Map<string, SafetensorsFile>();
  const tensors = new Map<string, SafetensorsFile>();
  for (const [name, shardName] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shardName !== 'string' || !isInside(shardName)) {
      throw new CheckpointError(indexPath, `weight_map entry for ${name} must be a file name inside the checkpoint directory (found ${JSON.stringify(shardName)})`);
    }
    let shard = shards.get(shardName);
    if (!shard) {
      const shardPath = join(dir, shardName);
      if (!existsSync(shardPath) || !statSync(shardPath).isFile()) throw new CheckpointError(indexPath, `shard ${shardName} is listed but missing`);
      shard = SafetensorsFile.open(shardPath);
      files.push(shard);
      shards.set(shardName, shard);
    }
    if (!shard.has(name)) throw new CheckpointError(indexPath, `tensor ${name} is mapped to shard ${shardName}, which does not contain it`);
    tensors.set(name, shard);
  }
  return { tensors, weightFiles: [INDEX, ...[...shards.keys()].sort()] };
}

/** Every tensor the decoder reads, with the shape the config implies (HF layout: projections stored [out, in]). */
function expectedShapes(config: ModelConfig): Map<string, number[]> {
  const { hiddenSize: h, vocabSize: v, headDim } = config;
  const shapes = new Map<string, number[]>([['model.embed_tokens.weight', [v, h]], ['model.norm.weight', [h]]]);
  if (!config.tieWordEmbeddings) shapes.set('lm_head.weight', [v, h]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `model.layers.${i}`;
    shapes.set(`${layer}.input_layernorm.weight`, [h]);
    shapes.set(`${layer}.post_attention_layernorm.weight`, [h]);
    for (const projection of PROJECTIONS) {
      const [inFeatures, outFeatures] = projectionShape(config, projection);
      shapes.set(projectionWeightName(i, projection), [outFeatures, inFeatures]);
    }
    if (config.attentionBias) {
      for (const projection of ['q_proj', 'k_proj', 'v_proj'] as const) {
        shapes.set(`${layer}.self_attn.${projection}.bias`, [projectionShape(config, projection)[1]]);
      }
    }
    if (config.qkNorm) {
      shapes.set(`${layer}.self_attn.q_norm.weight`, [headDim]);
      shapes.set(`${layer}.self_attn.k_norm.weight`, [headDim]);
    }
  }
  return shapes;
}

function validateTensors(dir: string, config: ModelConfig, tensors: Map<string, SafetensorsFile>): void {
  const expected = expectedShapes(config);
  const missing = [...expected.keys()].filter((name) => !tensors.has(name));
  if (missing.length > 0) {
    const more = missing.length > 1 ? ` (and ${missing.length - 1} more)` : '';
    throw new CheckpointError(dir, `missing tensor ${missing[0]}${more} required by the ${config.architecture} config`);
  }
  for (const [name, shape] of expected) {
    const file = tensors.get(name) as SafetensorsFile;
    const found = file.info(name).shape;
    if (found.length !== shape.length || found.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(file.path, `tensor ${name}: expected shape [${shape.join(', ')}], found [${found.join(', ')}]`);
    }
  }
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new CheckpointError(path, `cannot read JSON: ${(err as Error).message}`);
  }
}

/** A relative path that stays inside the directory it is resolved against. */
function isInside(name: string): boolean {
  const normal = normalize(name);
  return name.length > 0 && !isAbsolute(name) && normal !== '..' && !normal.startsWith(`..${sep}`);
}
