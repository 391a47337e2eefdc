import { existsSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Fixture } from '../api/support.js';
import { makeFixture } from '../api/support.js';
import { baseFlags, startChild } from './support/child-server.js';
import { greedyIds } from './support/http.js';
import { expectSettled, rssBytes } from './support/settle.js';

// A damaged build cache (--cache-dir): bytes flipped in the cached weights, a truncated or missing file. The server
// must notice, rebuild, and answer exactly what it answers from a clean cache; never serve the damage, never
// refuse to start.

const MODELS = [null, 'alpha'] as const;
const PROMPT = 'Hello, adapters';

let fixture: Fixture;
let clean: number[][];

/** Starts a server on the fixture's cache (the default int4 build), reads greedy tokens, checks it settles, stops it. */
async function tokensFromCache(): Promise<{ tokens: number[][]; warnings: string[] }> {
  const server = await startChild([...baseFlags(fixture.modelDir, fixture.cacheDir), '--context-length', '128', '--adapter-dir', fixture.root]);
  try {
    const tokens: number[][] = [];
    for (const model of MODELS) tokens.push(await greedyIds(server.url, model, PROMPT, 16));
    await expectSettled(server, rssBytes(server.pid));
    return { tokens, warnings: server.records.filter((r) => r.level === 40).map((r) => String(r.msg)) };
  } finally {
    const exit = await server.stop();
    expect(exit).toEqual({ code: 0, signal: null });
  }
}

/** The one built model directory in the cache. */
function cachedBuild(): string {
  const models = join(fixture.cacheDir, 'models');
  const builds = readdirSync(models).filter((d) => existsSync(join(models, d, 'model.onnx')));
  expect(builds).toHaveLength(1);
  return join(models, builds[0]);
}

beforeAll(async () => {
  fixture = makeFixture();
  clean = (await tokensFromCache()).tokens;
});
afterAll(() => fixture?.cleanup());

describe('a damaged build cache is rebuilt, never served', () => {
  it.each([
    ['bytes flipped all through model.onnx.data', (dir: string) => {
      const data = readFileSync(join(dir, 'model.onnx.data'));
      for (let i = 0; i < data.length; i += 61) data[i] ^= 0xff;
      writeFileSync(join(dir, 'model.onnx.data'), data);
    }],
    ['model.onnx.data cut to half its size', (dir: string) => {
      const path = join(dir, 'model.onnx.data');
      truncateSync(path, Math.floor(readFileSync(path).length / 2));
    }],
    ['model.onnx missing', (dir: string) => rmSync(join(dir, 'model.onnx'))],
  ])('%s: the server starts, rebuilds, says why, and answers the clean tokens', async (_, damage) => {
    damage(cachedBuild());
    const { tokens, warnings } = await tokensFromCache();
    expect(tokens).toEqual(clean);
    expect(warnings.length, 'one warning names the rebuild').toBe(1);
    // The rebuilt entry is whole again: the next start reuses it quietly.
    expect(await tokensFromCache()).toEqual({ tokens: clean, warnings: [] });
  });
});
