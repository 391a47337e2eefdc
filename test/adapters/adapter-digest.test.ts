import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { adapterDigest } from '../../src/adapters/adapter-digest.js';
import { AdapterError } from '../../src/adapters/adapter-error.js';
import { loadPeftAdapter } from '../../src/adapters/peft-loader.js';
import type { LoraWeightType } from '../../src/model/graph-builder.js';
import { parseModelConfig } from '../../src/model/hf-config.js';
import { synthAdapter } from '../../src/synth/adapter-synth.js';
import { synthCheckpoint } from '../../src/synth/checkpoint-synth.js';

const root = mkdtempSync(join(tmpdir(), 'loraserve-adapter-digest-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const baseDir = join(root, 'base');
synthCheckpoint(baseDir, { architecture: 'llama', preset: 'tiny', seed: 0, dtype: 'F32' });
const original = join(root, 'original');
synthAdapter(original, baseDir, { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj'], seed: 0 });

let copies = 0;
function copy(): string {
  const dir = join(root, `copy${copies++}`);
  cpSync(original, dir, { recursive: true });
  return dir;
}

const sha256 = (bytes: Buffer): Buffer => createHash('sha256').update(bytes).digest();

describe('adapterDigest', () => {
  it('is sha256 over the sha256 of adapter_config.json and of adapter_model.safetensors', () => {
    const config = readFileSync(join(original, 'adapter_config.json'));
    const weights = readFileSync(join(original, 'adapter_model.safetensors'));
    const expected = createHash('sha256').update(sha256(config)).update(sha256(weights)).digest('hex');
    expect(adapterDigest(original)).toBe(expected);
  });

  it('depends on content only, not on where the files are', () => {
    expect(adapterDigest(copy())).toBe(adapterDigest(original));
  });

  it('changes when one byte of either file changes', () => {
    const weights = copy();
    const bytes = readFileSync(join(weights, 'adapter_model.safetensors'));
    bytes[bytes.length - 1] ^= 1;
    writeFileSync(join(weights, 'adapter_model.safetensors'), bytes);
    expect(adapterDigest(weights)).not.toBe(adapterDigest(original));

    const config = copy();
    const text = readFileSync(join(config, 'adapter_config.json'), 'utf8');
    writeFileSync(join(config, 'adapter_config.json'), text.replace('"lora_alpha": 8', '"lora_alpha": 9'));
    expect(adapterDigest(config)).not.toBe(adapterDigest(original));
  });

  it('keeps the two files apart: moving bytes from one file to the other changes it', () => {
    const a = join(root, 'split-a');
    const b = join(root, 'split-b');
    for (const [dir, config, weights] of [[a, 'xy', 'z'], [b, 'x', 'yz']]) {
      cpSync(original, dir, { recursive: true });
      writeFileSync(join(dir, 'adapter_config.json'), config);
      writeFileSync(join(dir, 'adapter_model.safetensors'), weights);
    }
    expect(adapterDigest(a)).not.toBe(adapterDigest(b));
  });

  it('reads files larger than one chunk', () => {
    const dir = copy();
    const big = Buffer.alloc(3 * (1 << 20) + 5, 7);
    writeFileSync(join(dir, 'adapter_model.safetensors'), big);
    const expected = createHash('sha256').update(sha256(readFileSync(join(dir, 'adapter_config.json')))).update(sha256(big)).digest('hex');
    expect(adapterDigest(dir)).toBe(expected);
  });

  it('refuses a directory without the files, like the loader', () => {
    const bin = copy();
    renameSync(join(bin, 'adapter_model.safetensors'), join(bin, 'adapter_model.bin'));
    expect(() => adapterDigest(bin)).toThrow(AdapterError);
    expect(() => adapterDigest(bin)).toThrow('only adapter_model.safetensors');
    expect(() => adapterDigest(join(root, 'missing'))).toThrow('the adapter directory is missing');
  });
});

describe('the digest of loaded weights', () => {
  const base = parseModelConfig(JSON.parse(readFileSync(join(baseDir, 'config.json'), 'utf8')), undefined, join(baseDir, 'config.json'));
  const digest = (dir: string, weightType: LoraWeightType = 'float32') => loadPeftAdapter(dir, base, { maxRank: 8, weightType }).digest;

  it('names the bytes read, whatever type they are converted to', () => {
    expect(digest(original, 'float16')).toBe(digest(original));
  });

  it('is the same for the same weights, wherever they are and however the config is written', () => {
    expect(digest(copy())).toBe(digest(original));
    const reformatted = copy();
    const config = JSON.parse(readFileSync(join(reformatted, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(reformatted, 'adapter_config.json'), JSON.stringify({ ...config, revision: 'other' }, null, 4));
    expect(digest(reformatted)).toBe(digest(original));
  });

  it('changes with the scale or any weight', () => {
    const alpha = copy();
    const text = readFileSync(join(alpha, 'adapter_config.json'), 'utf8');
    writeFileSync(join(alpha, 'adapter_config.json'), text.replace('"lora_alpha": 8', '"lora_alpha": 9'));
    expect(digest(alpha)).not.toBe(digest(original));
    const weight = copy();
    const bytes = readFileSync(join(weight, 'adapter_model.safetensors'));
    bytes[bytes.length - 2] ^= 1;
    writeFileSync(join(weight, 'adapter_model.safetensors'), bytes);
    expect(digest(weight)).not.toBe(digest(original));
    // The flipped bit is below fp16 precision: the values served may be equal, the content is not.
    expect(digest(weight, 'float16')).not.toBe(digest(original, 'float16'));
  });
});
