import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { loadNativeRuntime } from '../../src/model/native-runtime.js';

const run = promisify(execFile);
const cacheDir = mkdtempSync(join(tmpdir(), 'loraserve-cli-'));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

/** Runs the real CLI from source in a child process. */
export async function loraserve(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      env: { ...process.env, LORASERVE_CACHE_DIR: cacheDir },
    });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

interface ExpectedCase { model: string; adapter: string | null; prompt: string; prompt_ids: number[]; greedy_ids: number[] }
const expected = JSON.parse(readFileSync('test/fixtures/hf/expected.json', 'utf8')) as { cases: ExpectedCase[] };
/** Both runtimes where the native addon loads (CI requires it); the stock one alone elsewhere. */
const RUNTIMES = 'runtime' in loadNativeRuntime() ? ['stock', 'native'] : ['stock'];

describe('loraserve generate', () => {
  it.each(expected.cases.filter((c) => c.adapter === null))('gives the greedy tokens of the independent reference for $model', async (c) => {
    const model = join('test/fixtures/hf', c.model);
    const { stdout, code } = await loraserve(['generate', '--model', model, '--prompt-ids', c.prompt_ids.join(','), '--max-tokens', '16', '--quant', 'fp32', '--json']);
    expect(code).toBe(0);
    const out = JSON.parse(stdout) as { token_ids: number[]; text: string };
    expect(out.token_ids).toEqual(c.greedy_ids);
    expect(out.text).toBe(Buffer.from(c.greedy_ids.filter((id) => id < 256)).toString('utf8'));
  });

  it.each(RUNTIMES)('runs --requests concurrently on the %s runtime with PEFT adapters written by another tool: each gets its adapter\'s PEFT tokens', async (runtime) => {
    const cases = expected.cases.filter((c) => c.model === 'tiny-llama');
    const file = join(cacheDir, 'requests.jsonl');
    const lines = cases.map((c) => JSON.stringify({ prompt_ids: c.prompt_ids, adapter: c.adapter, max_tokens: 16, ignore_eos: true }));
    writeFileSync(file, [...lines, JSON.stringify({ prompt: 'x', adapter: 'broken' })].join('\n'));
    const adapters = ['adapter-a', 'adapter-b', 'adapter-c', 'adapter-d'].flatMap((n) => ['--adapter', `${n}=test/fixtures/hf/adapters/${n}`]);
    const { stdout, code } = await loraserve(['generate', '--model', 'test/fixtures/hf/tiny-llama', '--quant', 'fp32', '--runtime', runtime, '--requests', file,
      ...adapters, '--adapter', `broken=${join(cacheDir, 'no-such-adapter')}`]);
    expect(code).toBe(0);
    const out = stdout.trim().split('\n').map((l) => JSON.parse(l) as { index: number; token_ids?: number[]; error?: string });
    expect(out.map((o) => o.index)).toEqual([0, 1, 2, 3, 4, 5]);
    cases.forEach((c, i) => expect(out[i].token_ids).toEqual(c.greedy_ids));
    expect(out[5].error).toMatch(/adapter 'broken' was refused: .*no-such-adapter/);
  });

  it('encodes a text prompt with the checkpoint tokenizer', async () => {
    const c = expected.cases.find((x) => x.model === 'tiny-llama' && x.adapter === null) as ExpectedCase;
    const { stdout, code } = await loraserve(['generate', '--model', 'test/fixtures/hf/tiny-llama', '--prompt', c.prompt, '--max-tokens', '16', '--quant', 'fp32', '--json']);
    expect(code).toBe(0);
    expect((JSON.parse(stdout) as { token_ids: number[] }).token_ids).toEqual(c.greedy_ids);
  });

  it.each([
    [['--prompt-ids', '1,2'], '--model is required'],
    [['--model', 'test/fixtures/hf/tiny-llama'], 'exactly one of --prompt, --prompt-ids and --requests'],
    [['--model', 'test/fixtures/hf/tiny-llama', '--prompt-ids', '1,x'], '--prompt-ids'],
    [['--model', 'test/fixtures/hf/tiny-llama', '--prompt-ids', '1', '--quant', 'int3'], '--quant must be one of'],
  ])('refuses bad arguments %j with a clear message', async (args, message) => {
    const { stderr, code } = await loraserve(['generate', ...args]);
    expect(code).toBe(2);
    expect(stderr).toContain(message);
  });

  it('reports a prompt the engine refuses', async () => {
    const { stderr, code } = await loraserve(['generate', '--model', 'test/fixtures/hf/tiny-llama', '--prompt-ids', '99999']);
    expect(code).toBe(1);
    expect(stderr).toContain('prompt token id 99999 is outside the vocabulary');
  });

  it('reports a missing checkpoint without a stack trace', async () => {
    const { stderr, code } = await loraserve(['generate', '--model', join(cacheDir, 'nope'), '--prompt-ids', '1']);
    expect(code).toBe(1);
    expect(stderr).toMatch(/^loraserve generate: .*nope/);
    expect(stderr).not.toContain('    at ');
  });
});
