import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AdapterError } from '../../src/adapters/adapter-error.js';
import { AdapterLoader } from '../../src/adapters/adapter-loader.js';
import { loadPeftAdapter } from '../../src/adapters/peft-loader.js';
import type { LoraWeightType } from '../../src/model/graph-builder.js';
import { parseModelConfig } from '../../src/model/hf-config.js';
import { synthAdapter } from '../../src/synth/adapter-synth.js';
import { synthCheckpoint } from '../../src/synth/checkpoint-synth.js';

const root = realpathSync(mkdtempSync(join(tmpdir(), 'loraserve-adapter-loader-')));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const baseDir = join(root, 'base');
synthCheckpoint(baseDir, { architecture: 'llama', preset: 'tiny', seed: 0, dtype: 'F32' });
const base = parseModelConfig(JSON.parse(readFileSync(join(baseDir, 'config.json'), 'utf8')), undefined, join(baseDir, 'config.json'));
const adapters = join(root, 'adapters');
const good = join(adapters, 'good');
synthAdapter(good, baseDir, { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj'], seed: 1 });

let copies = 0;
/** A copy of the good adapter under the root, changed by `edit`. */
function variant(edit: (dir: string) => void): string {
  const dir = join(adapters, `v${copies++}`);
  cpSync(good, dir, { recursive: true });
  edit(dir);
  return dir;
}

/** Backtracks exponentially on any module name: no end in practice. */
const REDOS = '(.*.*.*.*.*.*.*.*.*.*.*.*)*X';
const redos = variant((dir) => writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 4, target_modules: REDOS })));
const fifoWeights = variant((dir) => {
  rmSync(join(dir, 'adapter_model.safetensors'));
  execFileSync('mkfifo', [join(dir, 'adapter_model.safetensors')]);
});
const fifoConfig = variant((dir) => {
  rmSync(join(dir, 'adapter_config.json'));
  execFileSync('mkfifo', [join(dir, 'adapter_config.json')]);
});

const open: AdapterLoader[] = [];
function loader(timeoutMs = 30_000, weightType: LoraWeightType = 'float32'): AdapterLoader {
  const created = new AdapterLoader(base, { maxRank: 8, roots: [adapters], timeoutMs, weightType });
  open.push(created);
  return created;
}
afterEach(async () => {
  await Promise.all(open.splice(0).map((l) => l.close()));
});

async function refusal(load: Promise<unknown>): Promise<AdapterError> {
  const err = await load.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(AdapterError);
  return err as AdapterError;
}

describe('AdapterLoader', () => {
  it('answers with the weights it loaded, converted to the slots\' type, in one transferred buffer', async () => {
    const loaded = await loader().load(good);
    expect(loaded).toMatchObject({ digest: loadPeftAdapter(good, base, { maxRank: 8 }).digest, type: 'float32' });
    expect(loaded.modules.size).toBe(2 * base.numLayers);
    const half = await loader(30_000, 'float16').load(good);
    expect(half).toMatchObject({ digest: loaded.digest, type: 'float16', bytes: loaded.bytes / 2 });
    const buffers = new Set([...half.modules.values()].flatMap((m) => [m.a.buffer, m.b.buffer]));
    expect(buffers.size).toBe(1);
    expect([...buffers][0].byteLength).toBe(half.bytes);
  });

  it('fails a load past its deadline, replaces the stuck worker, and still completes the loads queued behind it', async () => {
    const l = loader(1500);
    const started = performance.now();
    const [stuck, queued] = [l.load(redos), l.load(good)];
    const err = await refusal(stuck);
    expect(err).toMatchObject({ code: 'adapter_invalid', message: 'loading did not finish within 1.5 s (--adapter-load-timeout)' });
    expect(performance.now() - started).toBeLessThan(10_000);
    expect((await queued).modules.size).toBe(2 * base.numLayers);
    expect((await l.load(good)).modules.size).toBe(2 * base.numLayers);
  });

  it('loads into the buffer of recycled weights as into a new one, and detaches what it was given', async () => {
    const l = loader(30_000, 'float16');
    const other = variant((dir) => synthAdapter(dir, baseDir, { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj'], seed: 2 }));
    const first = await l.load(good);
    l.recycle(first);
    expect([...first.modules.values()].every((m) => m.a.length === 0 && m.b.length === 0)).toBe(true);
    const second = await l.load(other);
    const expected = loadPeftAdapter(other, base, { maxRank: 8, weightType: 'float16' });
    expect(second.digest).toBe(expected.digest);
    for (const [key, m] of expected.modules) expect([second.modules.get(key)!.a, second.modules.get(key)!.b]).toEqual([m.a, m.b]);
  });

  it('refuses a FIFO as weights or config without blocking, then loads the next adapter', async () => {
    const l = loader(5000);
    for (const [dir, file] of [[fifoWeights, 'adapter_model.safetensors'], [fifoConfig, 'adapter_config.json']]) {
      const err = await refusal(l.load(dir));
      expect(err).toMatchObject({ code: 'adapter_invalid', path: file, message: `${file}: not a regular file` });
    }
    expect((await l.load(good)).modules.size).toBe(2 * base.numLayers);
  });

  it('closes promptly while a load is stuck, failing it and refusing later loads', async () => {
    const l = loader();
    const stuck = refusal(l.load(redos));
    await new Promise((resolve) => setTimeout(resolve, 500));
    const started = performance.now();
    await l.close();
    expect(performance.now() - started).toBeLessThan(2000);
    expect((await stuck).message).toBe('the server is shutting down');
    expect((await refusal(l.load(good))).message).toBe('the server is shutting down');
  });
});
