import { cpSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import type { GenerationEvent } from '../../src/engine/engine-types.js';
import { DEFAULT_SAMPLING } from '../../src/engine/sampling-params.js';

const MODEL = 'test/fixtures/hf/tiny-llama';
const ADAPTERS = 'test/fixtures/hf/adapters';
interface ExpectedCase { model: string; adapter: string | null; prompt_ids: number[]; greedy_ids: number[] }
const cases = (JSON.parse(readFileSync('test/fixtures/hf/expected.json', 'utf8')) as { cases: ExpectedCase[] }).cases.filter((c) => c.model === 'tiny-llama');
const greedy = (adapter: string) => (cases.find((c) => c.adapter === adapter) as ExpectedCase).greedy_ids;
const PROMPT = cases[0].prompt_ids;

const work = realpathSync(mkdtempSync(join(tmpdir(), 'loraserve-adapter-reload-')));
const root = join(work, 'adapters');
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Writes the fixture adapter `source`'s files into `dir` (replacing what is there). */
function put(dir: string, source: string): void {
  cpSync(join(ADAPTERS, source), dir, { recursive: true, force: true });
}

let nextId = 0;
async function run(engine: Engine, adapter: string): Promise<{ tokens: number[]; error: Extract<GenerationEvent, { type: 'error' }> | undefined }> {
  const request = { id: `r${nextId++}`, promptIds: PROMPT, adapter, sampling: { ...DEFAULT_SAMPLING, temperature: 0, maxTokens: 16, ignoreEos: true } };
  const tokens: number[] = [];
  let error;
  for await (const e of engine.submit(request)) {
    if (e.type === 'token') tokens.push(e.tokenId);
    else if (e.type === 'error') error = e;
  }
  return { tokens, error };
}

describe('an adapter whose files change after registration', () => {
  let engine: Engine;
  const x = join(root, 'x');
  const y = join(root, 'y');
  const z = join(root, 'z');
  beforeAll(async () => {
    put(x, 'adapter-a');
    put(y, 'adapter-a');
    put(z, 'adapter-b');
    // One slot and no room in host memory: an adapter that leaves its slot is read from disk again when next used.
    engine = await Engine.start({
      modelDir: MODEL, quantization: 'fp32', threads: 2, cacheRoot: join(work, 'cache'), maxBatch: 2, contextLength: 64, prefillChunk: 64,
      maxLoras: 1, maxLoraRank: 8, maxCpuLoraBytes: 1, maxWaiting: 16, adapterWaitTimeoutMs: 60_000, adapterRoots: [root],
    });
    for (const [name, dir] of [['x', x], ['y', y], ['z', z]]) await engine.adapters.register(name, dir);
  });
  afterAll(() => engine.shutdown(0));

  it('fails the requests waiting for a reload of changed files, keeps other names of that content, and retries later', async () => {
    expect((await run(engine, 'x')).tokens).toEqual(greedy('adapter-a'));
    // z takes the only slot: x is now on disk only.
    expect((await run(engine, 'z')).tokens).toEqual(greedy('adapter-b'));
    put(x, 'adapter-c');
    const started = performance.now();
    const changed = await run(engine, 'x');
    expect(changed.error).toMatchObject({ code: 'adapter_invalid', message: "adapter 'x': its files changed since it was registered; register it again" });
    expect(changed.tokens).toEqual([]);
    expect(performance.now() - started).toBeLessThan(10_000);

    // y is bound to the same content in its own, unchanged directory.
    expect((await run(engine, 'y')).tokens).toEqual(greedy('adapter-a'));
    expect((await run(engine, 'z')).tokens).toEqual(greedy('adapter-b'));
    // The failure is not remembered: with its files back, x loads again.
    put(x, 'adapter-a');
    expect((await run(engine, 'x')).tokens).toEqual(greedy('adapter-a'));
  });

  it('serves the new files once the name is registered again', async () => {
    put(x, 'adapter-c');
    expect((await run(engine, 'z')).tokens).toEqual(greedy('adapter-b'));
    expect((await run(engine, 'x')).error).toMatchObject({ code: 'adapter_invalid' });
    await engine.adapters.register('x', x);
    expect((await run(engine, 'x')).tokens).toEqual(greedy('adapter-c'));
    expect((await run(engine, 'y')).tokens).toEqual(greedy('adapter-a'));
  });
});
