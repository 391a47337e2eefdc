import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/model/checkpoint.js';
import { CheckpointError } from '../../src/model/checkpoint-error.js';
import { writeSafetensors } from '../../src/synth/safetensors-writer.js';
import type { SafetensorsDtype, TensorToWrite } from '../../src/synth/safetensors-writer.js';

const root = mkdtempSync(join(tmpdir(), 'loraserve-checkpoint-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;

// hidden 8, 2 query heads and 1 kv head of 4, MLP 16, vocab 32.
const tiny = {
  hidden_size: 8,
  intermediate_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 32,
  rms_norm_eps: 1e-6,
  max_position_embeddings: 64,
  bos_token_id: 1,
  eos_token_id: 2,
};
const llamaConfig = { ...tiny, architectures: ['LlamaForCausalLM'], tie_word_embeddings: false };
const qwen2Config = { ...tiny, architectures: ['Qwen2ForCausalLM'], tie_word_embeddings: true };
const qwen3Config = { ...tiny, architectures: ['Qwen3ForCausalLM'], head_dim: 6, tie_word_embeddings: true };

/** HF tensor names and shapes for the tiny configs above, written out by hand. */
function tinyTensorShapes(arch: 'llama' | 'qwen2' | 'qwen3'): [string, number[]][] {
  const headDim = arch === 'qwen3' ? 6 : 4;
  const q = 2 * headDim;
  const kv = headDim;
  const shapes: [string, number[]][] = [['model.embed_tokens.weight', [32, 8]]];
  for (let i = 0; i < 2; i++) {
    const p = `model.layers.${i}`;
    shapes.push(
      [`${p}.input_layernorm.weight`, [8]],
      [`${p}.self_attn.q_proj.weight`, [q, 8]],
      [`${p}.self_attn.k_proj.weight`, [kv, 8]],
      [`${p}.self_attn.v_proj.weight`, [kv, 8]],
      [`${p}.self_attn.o_proj.weight`, [8, q]],
      [`${p}.post_attention_layernorm.weight`, [8]],
      [`${p}.mlp.gate_proj.weight`, [16, 8]],
      [`${p}.mlp.up_proj.weight`, [16, 8]],
      [`${p}.mlp.down_proj.weight`, [8, 16]],
    );
    if (arch === 'qwen2') shapes.push([`${p}.self_attn.q_proj.bias`, [q]], [`${p}.self_attn.k_proj.bias`, [kv]], [`${p}.self_attn.v_proj.bias`, [kv]]);
    if (arch === 'qwen3') shapes.push([`${p}.self_attn.q_norm.weight`, [headDim]], [`${p}.self_attn.k_norm.weight`, [headDim]]);
  }
  shapes.push(['model.norm.weight', [8]]);
  if (arch === 'llama') shapes.push(['lm_head.weight', [32, 8]]);
  return shapes;
}

/** Deterministic values exact in fp16 and bf16 (multiples of 1/64 below 1), distinct per tensor. */
function values(seed: number, count: number): Float32Array {
  return Float32Array.from({ length: count }, (_, i) => (((i + 1) * 37 + seed * 11) % 97 - 48) / 64);
}

function tensors(shapes: [string, number[]][], dtype: SafetensorsDtype): TensorToWrite[] {
  return shapes.map(([name, shape], k) => ({ name, dtype, shape, data: values(k, shape.reduce((a, b) => a * b, 1)) }));
}

function newDir(config: object, generation?: object): string {
  const dir = join(root, `ckpt${dirCount++}`);
  mkdirSync(dir);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  if (generation) writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(generation));
  return dir;
}

/** Splits the tensors over `shardCount` files and writes model.safetensors.index.json for them. */
function writeSharded(dir: string, all: TensorToWrite[], shardCount: number): string[] {
  const names = Array.from({ length: shardCount }, (_, s) => `model-${String(s + 1).padStart(5, '0')}-of-${String(shardCount).padStart(5, '0')}.safetensors`);
  const weightMap: Record<string, string> = {};
  names.forEach((file, s) => {
    const part = all.filter((_, k) => k % shardCount === s);
    writeSafetensors(join(dir, file), part, { format: 'pt' });
    for (const t of part) weightMap[t.name] = file;
  });
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  return names;
}

function openError(dir: string): string {
  try {
    Checkpoint.open(dir).close();
  } catch (err) {
    expect(err).toBeInstanceOf(CheckpointError);
    return (err as Error).message;
  }
  throw new Error(`expected ${dir} to be refused`);
}

describe('Checkpoint', () => {
  it('opens a single-file Llama checkpoint and reads every tensor back', () => {
    const dir = newDir(llamaConfig);
    const written = tensors(tinyTensorShapes('llama'), 'F32');
    writeSafetensors(join(dir, 'model.safetensors'), written);
    const ckpt = Checkpoint.open(dir);
    expect(ckpt.dir).toBe(dir);
    expect(ckpt.config).toMatchObject({ architecture: 'llama', headDim: 4, numKvHeads: 1, tieWordEmbeddings: false, eosTokenIds: [2] });
    expect(ckpt.names().sort()).toEqual(written.map((t) => t.name).sort());
    expect(ckpt.shape('model.layers.1.self_attn.k_proj.weight')).toEqual([4, 8]);
    for (const t of written) expect(ckpt.read(t.name)).toEqual(t.data);
    expect(ckpt.has('lm_head.weight')).toBe(true);
    expect(() => ckpt.read('model.layers.9.mlp.up_proj.weight')).toThrow(`${dir}: no tensor named model.layers.9.mlp.up_proj.weight`);
    ckpt.close();
  });

  it('opens a sharded BF16 Qwen2 checkpoint with biases and tied embeddings', () => {
    const dir = newDir(qwen2Config, { eos_token_id: [2, 3] });
    const written = tensors(tinyTensorShapes('qwen2'), 'BF16');
    writeSharded(dir, written, 3);
    const ckpt = Checkpoint.open(dir);
    expect(ckpt.config).toMatchObject({ architecture: 'qwen2', attentionBias: true, tieWordEmbeddings: true, eosTokenIds: [2, 3] });
    expect(ckpt.has('lm_head.weight')).toBe(false);
    expect(ckpt.shape('model.layers.0.self_attn.q_proj.bias')).toEqual([8]);
    for (const t of written) expect(ckpt.read(t.name)).toEqual(t.data);
    ckpt.close();
  });

  it('opens an F16 Qwen3 checkpoint with q/k norms and head_dim from the config', () => {
    const dir = newDir(qwen3Config);
    const written = tensors(tinyTensorShapes('qwen3'), 'F16');
    writeSafetensors(join(dir, 'model.safetensors'), written);
    const ckpt = Checkpoint.open(dir);
    expect(ckpt.config).toMatchObject({ architecture: 'qwen3', headDim: 6, qkNorm: true });
    expect(ckpt.shape('model.layers.0.self_attn.q_proj.weight')).toEqual([12, 8]);
    expect(ckpt.read('model.layers.1.self_attn.k_norm.weight')).toEqual(written.find((t) => t.name === 'model.layers.1.self_attn.k_norm.weight')?.data);
    ckpt.close();
  });

  it('refuses a checkpoint missing a required tensor, naming it', () => {
    const dir = newDir(llamaConfig);
    const written = tensors(tinyTensorShapes('llama'), 'F32').filter((t) => t.name !== 'lm_head.weight');
    writeSafetensors(join(dir, 'model.safetensors'), written);
    expect(openError(dir)).toBe(`${dir}: missing tensor lm_head.weight required by the llama config`);

    const qwen3Dir = newDir(qwen3Config);
    const noNorms = tensors(tinyTensorShapes('qwen3'), 'F32').filter((t) => !t.name.includes('_norm.'));
    writeSafetensors(join(qwen3Dir, 'model.safetensors'), noNorms);
    expect(openError(qwen3Dir)).toBe(`${qwen3Dir}: missing tensor model.layers.0.self_attn.q_norm.weight (and 3 more) required by the qwen3 config`);
  });

  it('refuses a tensor of the wrong shape, with expected and found shapes', () => {
    const dir = newDir(llamaConfig);
    const written = tensors(tinyTensorShapes('llama'), 'F32').map((t) =>
      t.name === 'model.layers.1.self_attn.v_proj.weight' ? { ...t, shape: [8, 8], data: values(0, 64) } : t,
    );
    writeSafetensors(join(dir, 'model.safetensors'), written);
    expect(openError(dir)).toBe(`${join(dir, 'model.safetensors')}: tensor model.layers.1.self_attn.v_proj.weight: expected shape [4, 8], found [8, 8]`);
  });

  it('refuses an index that lists a missing shard', () => {
    const dir = newDir(qwen2Config);
    const [, second] = writeSharded(dir, tensors(tinyTensorShapes('qwen2'), 'F32'), 2);
    rmSync(join(dir, second));
    expect(openError(dir)).toBe(`${join(dir, 'model.safetensors.index.json')}: shard ${second} is listed but missing`);
  });

  it('refuses an index that maps a tensor to a shard without it', () => {
    const dir = newDir(qwen2Config);
    const [first, second] = writeSharded(dir, tensors(tinyTensorShapes('qwen2'), 'F32'), 2);
    const indexPath = join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(indexPath, 'utf8'));
    expect(index.weight_map['model.norm.weight']).toBe(second);
    index.weight_map['model.norm.weight'] = first;
    writeFileSync(indexPath, JSON.stringify(index));
    expect(openError(dir)).toBe(`${indexPath}: tensor model.norm.weight is mapped to shard ${first}, which does not contain it`);
  });

  it('refuses shard paths outside the checkpoint and an index without weight_map', () => {
    const dir = newDir(qwen2Config);
    writeSharded(dir, tensors(tinyTensorShapes('qwen2'), 'F32'), 1);
    const indexPath = join(dir, 'model.safetensors.index.json');
    writeFileSync(indexPath, JSON.stringify({ weight_map: { 'model.norm.weight': '../elsewhere.safetensors' } }));
    expect(openError(dir)).toMatch(/weight_map entry for model\.norm\.weight must be a file name inside the checkpoint directory/);
    writeFileSync(indexPath, JSON.stringify({ metadata: {} }));
    expect(openError(dir)).toBe(`${indexPath}: weight_map is missing or not an object`);
  });

  it('refuses directories without config or weights, pointing out .bin weights', () => {
    const empty = join(root, `empty${dirCount++}`);
    mkdirSync(empty);
    expect(openError(empty)).toBe(`${empty}: no config.json`);
    expect(openError(join(root, 'nowhere'))).toBe(`${join(root, 'nowhere')}: not a checkpoint directory`);
    const noWeights = newDir(llamaConfig);
    expect(openError(noWeights)).toBe(`${noWeights}: no model.safetensors or model.safetensors.index.json`);
    writeFileSync(join(noWeights, 'pytorch_model.bin'), 'x');
    expect(openError(noWeights)).toMatch(/PyTorch \.bin weights are not supported; convert them to safetensors/);
  });

  it('surfaces config and safetensors errors with their file', () => {
    const badJson = newDir(llamaConfig);
    writeFileSync(join(badJson, 'config.json'), '{');
    expect(openError(badJson)).toMatch(new RegExp(`^${join(badJson, 'config.json')}: cannot read JSON`));

    const gpt2 = newDir({ ...llamaConfig, architectures: ['GPT2LMHeadModel'] });
    expect(openError(gpt2)).toMatch(new RegExp(`^${join(gpt2, 'config.json')}: unsupported architecture GPT2LMHeadModel`));

    const badDtype = newDir(llamaConfig);
    const header = Buffer.from(JSON.stringify({ w: { dtype: 'I8', shape: [1], data_offsets: [0, 1] } }));
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(header.length));
    writeFileSync(join(badDtype, 'model.safetensors'), Buffer.concat([prefix, header, Buffer.alloc(1)]));
    expect(openError(badDtype)).toBe(`${join(badDtype, 'model.safetensors')}: unsupported dtype I8 for tensor w (supported: F32, F16, BF16)`);
  });

  it('digests config, generation config and weights; stable across opens, sensitive to any byte', () => {
    const dir = newDir(qwen2Config, { eos_token_id: 2 });
    const written = tensors(tinyTensorShapes('qwen2'), 'F16');
    const [, second] = writeSharded(dir, written, 2);
    const first = Checkpoint.open(dir);
    const digest = first.digest();
    expect(digest).toMatch(/^[0-9a-f]{64}$/);
    expect(first.digest()).toBe(digest);
    first.close();

    const again = Checkpoint.open(dir);
    expect(again.digest()).toBe(digest);
    again.close();

    const shardPath = join(dir, second);
    const bytes = readFileSync(shardPath);
    bytes[bytes.length - 1] ^= 1;
    writeFileSync(shardPath, bytes);
    const changedWeight = Checkpoint.open(dir);
    expect(changedWeight.digest()).not.toBe(digest);
    changedWeight.close();
    bytes[bytes.length - 1] ^= 1;
    writeFileSync(shardPath, bytes);

    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: 3 }));
    const changedGeneration = Checkpoint.open(dir);
    expect(changedGeneration.digest()).not.toBe(digest);
    changedGeneration.close();
  });
});
