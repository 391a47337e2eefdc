import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { baseFlags, startChild } from './support/child-server.js';
import { greedyIds } from './support/http.js';
import { expectSettled, rssBytes } from './support/settle.js';

// Determinism under load: greedy tokens for a request depend on its prompt and adapter only, not on what it is
// batched with or how its prompt is split into prefill chunks. The embedded demo model and its adapters, served as
// shipped (int4): alone with whole-prompt prefill (--max-batch 1), and all at once in one batch of mixed adapters
// with 3-token prefill chunks (--max-batch 32 --prefill-chunk 3).

const MODELS = [null, 'legal', 'python-code', 'verse'] as const;
const PROMPTS = [
  'The court held that', 'def parse(path):', 'Roses are red,', 'Hello', 'In the matter of the estate of the late',
  'import os\nimport sys\n\n', 'Once upon a time there was', 'Q',
];
const MAX_NEW_TOKENS = 24;

const cacheDir = mkdtempSync(join(tmpdir(), 'loraserve-chaos-batch-'));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

const cases = MODELS.flatMap((model) => PROMPTS.map((prompt) => ({ model, prompt })));
const key = (c: { model: string | null; prompt: string }) => `${c.model ?? 'base'}: ${JSON.stringify(c.prompt)}`;

/**
 * Greedy tokens for every case from a server with these flags: sent one after another, or all at once. Two
 * rounds: the first warms the server up (memory for its batch shape), the second must repeat it exactly.
 */
async function greedyAll(flags: string[], concurrent: boolean): Promise<Map<string, number[]>> {
  const server = await startChild([...baseFlags(resolve('models/demo'), cacheDir), '--adapter-dir', resolve('adapters'), ...flags]);
  const round = async (): Promise<Map<string, number[]>> => {
    const ids = (c: (typeof cases)[number]) => greedyIds(server.url, c.model, c.prompt, MAX_NEW_TOKENS);
    if (concurrent) return new Map(await Promise.all(cases.map(async (c) => [key(c), await ids(c)] as const)));
    const got = new Map<string, number[]>();
    for (const c of cases) got.set(key(c), await ids(c));
    return got;
  };
  try {
    const first = await round();
    const baselineRss = rssBytes(server.pid);
    expect(await round(), 'a second round differs from the first').toEqual(first);
    await expectSettled(server, baselineRss);
    return first;
  } finally {
    await server.stop();
  }
}

describe('batch invariance', () => {
  it(`greedy tokens of ${cases.length} (adapter, prompt) pairs are the same alone and in one chunked batch of all of them`, async () => {
    const alone = await greedyAll(['--max-batch', '1'], false);
    const batched = await greedyAll(['--max-batch', '32', '--prefill-chunk', '3'], true);
    const differing = cases.map(key).filter((k) => JSON.stringify(alone.get(k)) !== JSON.stringify(batched.get(k)));
    expect(differing, 'pairs whose tokens change with batching or chunking').toEqual([]);
    // The cases are not trivial: each adapter changes some of the base model's text.
    const base = (prompt: string) => JSON.stringify(alone.get(key({ model: null, prompt })));
    for (const model of MODELS.slice(1)) {
      expect(PROMPTS.some((prompt) => JSON.stringify(alone.get(key({ model, prompt }))) !== base(prompt)), `${model} changes nothing`).toBe(true);
    }
  });
});
