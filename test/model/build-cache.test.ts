import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import type { BuiltModel } from '../../src/model/build-cache.js';
import { buildOrReuse, tempBuildDir } from '../../src/model/build-cache.js';
import { Checkpoint } from '../../src/model/checkpoint.js';
import { Decoder } from '../../src/model/decoder.js';
import { DEFAULT_BUILD_OPTIONS } from '../../src/model/graph-builder.js';
import { KvCache } from '../../src/model/kv-cache.js';
import { synthCheckpoint } from '../../src/synth/checkpoint-synth.js';

const work = mkdtempSync(join(tmpdir(), 'loraserve-build-cache-'));
const modelDir = join(work, 'model');
synthCheckpoint(modelDir, { architecture: 'qwen2', preset: 'tiny', seed: 5, dtype: 'F32' });
const checkpoint = Checkpoint.open(modelDir);
afterAll(() => {
  checkpoint.close();
  rmSync(work, { recursive: true, force: true });
});

const PROMPT = [72, 101, 108, 108, 111, 44, 32, 119];

async function logits(dir: string): Promise<Float32Array> {
  const decoder = await Decoder.load(dir, checkpoint.config, 1);
  try {
    return await decoder.forward({ firstRow: 0, tokens: [PROMPT], pastLengths: [0] }, new KvCache(checkpoint.config, 1, 16));
  } finally {
    await decoder.release();
  }
}

const FRESH = await logits(buildOrReuse(checkpoint, DEFAULT_BUILD_OPTIONS, join(work, 'fresh')).dir);

let cacheRoot: string;
let entry: BuiltModel;
beforeEach(() => {
  cacheRoot = mkdtempSync(join(work, 'cache-'));
  entry = buildOrReuse(checkpoint, DEFAULT_BUILD_OPTIONS, cacheRoot);
});

/** The next start's build: it must be a rebuild for `reason`, in the same place, serving what a fresh build serves. */
async function expectRebuilt(reason: RegExp): Promise<void> {
  const next = buildOrReuse(checkpoint, DEFAULT_BUILD_OPTIONS, cacheRoot);
  expect(next).toEqual({ dir: entry.dir, cached: false, rebuildReason: expect.stringMatching(reason) });
  expect(next.rebuildReason).not.toContain(work);
  expect(next.rebuildReason).not.toContain('\n');
  expect(await logits(next.dir)).toEqual(FRESH);
  expect(buildOrReuse(checkpoint, DEFAULT_BUILD_OPTIONS, cacheRoot)).toEqual({ dir: entry.dir, cached: true });
}

describe('build cache verification', () => {
  it('reuses an intact entry without rebuilding it', async () => {
    expect(entry.cached).toBe(false);
    const before = statSync(join(entry.dir, 'model.onnx.data'));
    expect(buildOrReuse(checkpoint, DEFAULT_BUILD_OPTIONS, cacheRoot)).toEqual({ dir: entry.dir, cached: true });
    const after = statSync(join(entry.dir, 'model.onnx.data'));
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(await logits(entry.dir)).toEqual(FRESH);
  });

  it('rebuilds an entry with one bit flipped in its weights', async () => {
    const data = join(entry.dir, 'model.onnx.data');
    const bytes = readFileSync(data);
    bytes[bytes.length >> 1] ^= 0x10;
    writeFileSync(data, bytes);
    await expectRebuilt(/^model\.onnx\.data does not match its SHA-256/);
  });

  it('rebuilds an entry whose weights file was truncated', async () => {
    const data = join(entry.dir, 'model.onnx.data');
    truncateSync(data, statSync(data).size >> 1);
    await expectRebuilt(/^model\.onnx\.data is \d+ bytes, \d+ expected$/);
  });

  it('rebuilds an entry whose model.onnx is missing', async () => {
    rmSync(join(entry.dir, 'model.onnx'));
    await expectRebuilt(/^model\.onnx is missing$/);
  });

  it('rebuilds an entry without a manifest (written by a builder that kept none)', async () => {
    rmSync(join(entry.dir, 'manifest.json'));
    await expectRebuilt(/^no manifest\.json$/);
  });

  it('rebuilds an entry whose manifest is unreadable or points outside its directory', async () => {
    writeFileSync(join(entry.dir, 'manifest.json'), '{"files": {"model.onnx": ');
    await expectRebuilt(/^manifest\.json is not valid JSON$/);
    writeFileSync(join(entry.dir, 'manifest.json'), JSON.stringify({ files: { '../../model/config.json': { bytes: 1, sha256: 'x' } } }));
    await expectRebuilt(/^manifest\.json has a malformed entry$/);
  });
});

describe('build cache temporary directories', () => {
  /** A process id that was alive a moment ago and is not any more. */
  function deadPid(): number {
    const { pid } = spawnSync(process.execPath, ['-e', '']);
    if (pid === undefined) throw new Error('could not spawn a child process');
    return pid;
  }

  function tempDir(name: string, idleMs = 0): string {
    const dir = join(dirname(entry.dir), name);
    mkdirSync(dir);
    writeFileSync(join(dir, 'model.onnx.data'), 'partial');
    const at = new Date(Date.now() - idleMs);
    utimesSync(join(dir, 'model.onnx.data'), at, at);
    utimesSync(dir, at, at);
    return dir;
  }

  it('removes builds of dead or earlier processes and long-idle ones, and keeps live builds', () => {
    const key = basename(entry.dir);
    const now = Date.now();
    const dead = tempDir(basename(tempBuildDir(entry.dir, deadPid())));
    const earlierHolderOfOurPid = tempDir(basename(tempBuildDir(entry.dir, process.pid, now - 3600_000 * 24)));
    const live = tempDir(basename(tempBuildDir(entry.dir, process.pid)));
    const liveParent = tempDir(basename(tempBuildDir(entry.dir, process.ppid)));
    const otherHost = tempDir(`${key}.tmp-other-host-${deadPid()}-${now}`);
    const idleOtherHost = tempDir(`${key}.tmp-other-host-${deadPid()}-${now}`.replace('other', 'idle'), 2 * 3600_000);
    const idleOldFormat = tempDir(`${key}.tmp-${deadPid()}-${now - 2 * 3600_000}`, 2 * 3600_000);
    const unrelated = tempDir('notes.tmp-1-2', 48 * 3600_000);

    expect(buildOrReuse(checkpoint, DEFAULT_BUILD_OPTIONS, cacheRoot).cached).toBe(true);
    const kept = (dirs: string[]) => dirs.filter((dir) => existsSync(dir));
    expect(kept([dead, earlierHolderOfOurPid, idleOtherHost, idleOldFormat])).toEqual([]);
    expect(kept([live, liveParent, otherHost, unrelated])).toEqual([live, liveParent, otherHost, unrelated]);
  });
});
