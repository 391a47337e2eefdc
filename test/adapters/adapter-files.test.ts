import { cpSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AdapterError } from '../../src/adapters/adapter-error.js';
import type { AdapterErrorCode } from '../../src/adapters/adapter-error.js';
import { MAX_CONFIG_BYTES } from '../../src/adapters/adapter-files.js';
import { loadPeftAdapter } from '../../src/adapters/peft-loader.js';
import type { LoraWeights } from '../../src/adapters/peft-loader.js';
import { parseModelConfig } from '../../src/model/hf-config.js';
import { synthAdapter } from '../../src/synth/adapter-synth.js';
import { synthCheckpoint } from '../../src/synth/checkpoint-synth.js';

const dir = realpathSync(mkdtempSync(join(tmpdir(), 'loraserve-adapter-files-')));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const baseDir = join(dir, 'base');
synthCheckpoint(baseDir, { architecture: 'llama', preset: 'tiny', seed: 0, dtype: 'F32' });
const base = parseModelConfig(JSON.parse(readFileSync(join(baseDir, 'config.json'), 'utf8')), undefined, join(baseDir, 'config.json'));
const rootA = join(dir, 'root-a');
const rootB = join(dir, 'root-b');
const outside = join(dir, 'outside');
const good = join(rootA, 'good');
synthAdapter(good, baseDir, { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj'], seed: 1 });
mkdirSync(rootB);
mkdirSync(outside);
/** A file outside the roots whose content must never reach a message. */
const SECRET = 'TOP-SECRET-CONTENT-1234';
const secret = join(outside, 'secret.json');
writeFileSync(secret, `{"peft_type": "${SECRET}"}`);
cpSync(join(good, 'adapter_model.safetensors'), join(outside, 'weights.safetensors'));

let copies = 0;
/** A copy of the good adapter in `parent`, changed by `edit`. */
function variant(parent: string, edit: (adapter: string) => void = () => undefined): string {
  const adapter = join(parent, `v${copies++}`);
  cpSync(good, adapter, { recursive: true });
  edit(adapter);
  return adapter;
}

function relink(adapter: string, file: string, target: string): void {
  rmSync(join(adapter, file));
  symlinkSync(target, join(adapter, file));
}

function load(adapter: string, roots = [rootA, rootB]): LoraWeights {
  return loadPeftAdapter(adapter, base, { maxRank: 8, roots });
}

function refusal(adapter: string, code: AdapterErrorCode, roots?: string[]): AdapterError {
  try {
    load(adapter, roots);
  } catch (err) {
    expect(err).toBeInstanceOf(AdapterError);
    expect((err as AdapterError).code).toBe(code);
    return err as AdapterError;
  }
  throw new Error(`expected ${adapter} to be refused with ${code}`);
}

/** Neither a server path nor the outside file's content. */
function expectNothingLeaked(message: string): void {
  expect(message).not.toContain(dir);
  expect(message).not.toContain(SECRET);
}

describe('adapter files and the adapter roots', () => {
  it('refuses a config or weights file linked out of the roots, showing neither its path nor its content', () => {
    const config = variant(rootA, (a) => relink(a, 'adapter_config.json', secret));
    const configErr = refusal(config, 'adapter_path_not_allowed');
    expect(configErr.message).toBe('adapter_config.json: resolves outside the adapter roots (--adapter-dir)');
    const weights = variant(rootA, (a) => relink(a, 'adapter_model.safetensors', join(outside, 'weights.safetensors')));
    expectNothingLeaked(refusal(weights, 'adapter_path_not_allowed').message);
  });

  it('follows links that stay inside the roots, from one root to another', () => {
    const shared = variant(rootB);
    const linked = variant(rootA, (a) => relink(a, 'adapter_model.safetensors', join(shared, 'adapter_model.safetensors')));
    expect(load(linked).modules.size).toBe(2 * base.numLayers);
    symlinkSync(good, join(rootB, 'alias'));
    expect(load(join(rootB, 'alias')).modules.size).toBe(2 * base.numLayers);
  });

  it('keeps an adapter outside the roots (named by the operator) to its own directory', () => {
    const own = variant(outside, (a) => {
      writeFileSync(join(a, 'config.real.json'), readFileSync(join(a, 'adapter_config.json')));
      relink(a, 'adapter_config.json', join(a, 'config.real.json'));
    });
    expect(load(own).modules.size).toBe(2 * base.numLayers);
    const escaping = variant(outside, (a) => relink(a, 'adapter_model.safetensors', join(good, 'adapter_model.safetensors')));
    expect(refusal(escaping, 'adapter_path_not_allowed').path).toBe('adapter_model.safetensors');
  });

  it('refuses a device as a file of the adapter before reading it', () => {
    const zero = variant(rootA, (a) => relink(a, 'adapter_model.safetensors', '/dev/zero'));
    expect(refusal(zero, 'adapter_path_not_allowed').path).toBe('adapter_model.safetensors');
    // Even where /dev is allowed, a device is not a regular file.
    expect(refusal(zero, 'adapter_invalid', [rootA, '/dev']).message).toBe('adapter_model.safetensors: not a regular file');
    const zeroConfig = variant(rootA, (a) => relink(a, 'adapter_config.json', '/dev/zero'));
    expect(refusal(zeroConfig, 'adapter_invalid', [rootA, '/dev']).message).toBe('adapter_config.json: not a regular file');
  });
});

describe('adapter error messages', () => {
  const withConfig = (config: object) => variant(rootA, (a) => writeFileSync(join(a, 'adapter_config.json'), JSON.stringify(config)));

  it(`refuses a config over ${MAX_CONFIG_BYTES} bytes without quoting it`, () => {
    const huge = withConfig({ peft_type: 'LORA', r: 4, target_modules: ['q_proj', 'x'.repeat(6 * 2 ** 20)] });
    const err = refusal(huge, 'adapter_invalid');
    expect(err.message).toBe(`adapter_config.json: larger than ${MAX_CONFIG_BYTES} bytes: not a PEFT adapter config`);
  });

  it('cuts long values from the files', () => {
    const entry = withConfig({ peft_type: 'LORA', r: 4, target_modules: ['q_proj', 'y'.repeat(900_000)] });
    const entryErr = refusal(entry, 'adapter_unsupported');
    expect(entryErr.message.length).toBeLessThan(400);
    expect(entryErr.message).toContain(`target_modules entry "${'y'.repeat(99)}…`);
    const regex = withConfig({ peft_type: 'LORA', r: 4, target_modules: `(${'z'.repeat(900_000)}` });
    expect(refusal(regex, 'adapter_invalid').message).toBe('adapter_config.json: target_modules is not a valid regular expression: Unterminated group');
    const field = withConfig({ peft_type: 'LORA', r: 'w'.repeat(900_000) });
    expect(refusal(field, 'adapter_invalid').message.length).toBeLessThan(200);
  });

  it('names the adapter once it is known', () => {
    const err = new AdapterError('adapter_invalid', 'adapter_config.json', 'r must be a positive integer (found 0)');
    expect(err.forAdapter('sql').message).toBe("adapter 'sql': adapter_config.json: r must be a positive integer (found 0)");
    expect(new AdapterError('adapter_not_found', '', 'the adapter directory is missing or is not a directory', 'sql').message)
      .toBe("adapter 'sql': the adapter directory is missing or is not a directory");
  });
});
