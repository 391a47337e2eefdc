// Cost of verifying a cached build at start (size + SHA-256 of every file) against the cached and the cold load,
// on a synthetic checkpoint of a real model's shape. Prints one JSON object.
// Usage: npm run bench:build-cache [-- --preset qwen2.5-0.5b --quant int4 --runs N]
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { verifyManifest } from '../src/model/build-manifest.js';
import { Checkpoint } from '../src/model/checkpoint.js';
import { loadModel } from '../src/model/load-model.js';
import type { Quantization } from '../src/model/quantizer.js';
import { benchCheckpoint } from './bench-checkpoint.js';
import { median } from './stats.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: String(availableParallelism()) },
    quant: { type: 'string', default: 'int4' },
    preset: { type: 'string', default: 'qwen2.5-0.5b' },
    runs: { type: 'string', default: '5' },
  },
});
const runs = Number(values.runs);
const modelDir = benchCheckpoint(values.preset);
const cacheRoot = mkdtempSync(join(tmpdir(), 'loraserve-bench-'));
const load = async (): Promise<number> => {
  const model = await loadModel({ modelDir, quantization: values.quant as Quantization, threads: Number(values.threads), cacheRoot });
  await model.decoder.release();
  return model.loadMs;
};
const timed = (fn: () => unknown): number => {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
};

try {
  const coldLoadMs = await load();
  const [key] = readdirSync(join(cacheRoot, 'models'));
  const dir = join(cacheRoot, 'models', key);
  const cachedLoadMs: number[] = [];
  const verifyMs: number[] = [];
  const digestMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    cachedLoadMs.push(await load());
    verifyMs.push(timed(() => {
      const problem = verifyManifest(dir, []);
      if (problem !== null) throw new Error(`cached build failed verification: ${problem}`);
    }));
    const checkpoint = Checkpoint.open(modelDir);
    digestMs.push(timed(() => checkpoint.digest()));
    checkpoint.close();
  }
  const files = Object.fromEntries(readdirSync(dir).map((name) => [name, statSync(join(dir, name)).size]));
  const buildBytes = Object.values(files).reduce((a, b) => a + b, 0);
  const verify = median(verifyMs);
  const cached = median(cachedLoadMs);
  console.log(JSON.stringify({
    preset: values.preset,
    quant: values.quant,
    threads: Number(values.threads),
    runs,
    build_files_bytes: files,
    // Files are in the page cache here (just built or just read), as at a restart of a running host.
    verify_ms: Math.round(verify * 10) / 10,
    verify_gib_per_s: Math.round((buildBytes / 2 ** 30 / (verify / 1000)) * 100) / 100,
    // The checkpoint digest that keys the cache, computed at every start before the verification.
    checkpoint_digest_ms: Math.round(median(digestMs)),
    cached_load_ms: Math.round(cached),
    verify_share_of_cached_load: Math.round((verify / cached) * 1000) / 1000,
    cold_load_ms: Math.round(coldLoadMs),
  }, null, 2));
} finally {
  rmSync(cacheRoot, { recursive: true, force: true });
}
