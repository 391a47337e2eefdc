import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { withDefaultModel } from '../../src/cli/serve.js';
import { parseServeConfig } from '../../src/config.js';
import { Engine } from '../../src/engine/engine.js';
import { DEFAULT_SAMPLING } from '../../src/engine/sampling-params.js';
import { createLogger } from '../../src/observability/logger.js';

const work = mkdtempSync(join(tmpdir(), 'loraserve-default-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the default run without models/demo', () => {
  it('synthesizes a tiny demo checkpoint into the cache, serves it, and uses adapters/ as the root', async () => {
    // A package root without the embedded model: the fallback a trimmed install takes.
    const root = join(work, 'package');
    mkdirSync(root);
    const cacheDir = join(work, 'cache');
    const config = withDefaultModel(parseServeConfig(['--cache-dir', cacheDir], {}), createLogger('silent'), root);
    const modelDir = join(cacheDir, 'default-model', 'demo');
    expect(config.model.modelDir).toBe(modelDir);
    expect(existsSync(join(modelDir, 'config.json'))).toBe(true);
    expect(config.adapters.dirs).toEqual([join(root, 'adapters')]);
    expect(existsSync(join(root, 'adapters'))).toBe(true);
    expect(config.adapters.preload).toEqual([]);

    const engine = await Engine.start({
      modelDir, quantization: 'fp32', threads: 1, cacheRoot: cacheDir, maxBatch: 1, contextLength: 64, prefillChunk: 64, maxLoras: 0,
      maxLoraRank: 8, maxCpuLoraBytes: 1, maxWaiting: 1, adapterWaitTimeoutMs: 1000,
    });
    try {
      const request = { id: 'r', promptIds: engine.tokenizer.encode('Hello'), adapter: null, sampling: { ...DEFAULT_SAMPLING, maxTokens: 4, ignoreEos: true } };
      let tokens = 0;
      for await (const e of engine.submit(request)) {
        if (e.type === 'error') throw new Error(e.message);
        if (e.type === 'token') tokens++;
      }
      expect(tokens).toBe(4);
    } finally {
      await engine.shutdown(0);
    }
  });
});
