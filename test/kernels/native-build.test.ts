// The install-time build of the native addon never fails the install: without a compiler it says why.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const tree = mkdtempSync(join(tmpdir(), 'loraserve-native-build-'));
afterAll(() => rmSync(tree, { recursive: true, force: true }));

describe('kernels/native/build.mjs', () => {
  it.runIf(process.platform === 'linux')('succeeds without a C++ compiler, printing one line and leaving the reason for the runtime', () => {
    // A copy of the build inputs, so the real build/ is left alone.
    cpSync('kernels/native', join(tree, 'kernels/native'), { recursive: true });
    cpSync('binding.gyp', join(tree, 'binding.gyp'));
    const result = spawnSync(process.execPath, [join(tree, 'kernels/native/build.mjs')], {
      encoding: 'utf8',
      env: { ...process.env, CXX: join(tree, 'no-such-compiler') },
    });
    expect(result.status).toBe(0);
    expect(result.stdout.trim().split('\n')).toEqual([
      `loraserve: native runtime not built: no C++ compiler (${join(tree, 'no-such-compiler')}) was found; the server will use the stock ONNX Runtime path`,
    ]);
    expect(readFileSync(join(tree, 'build/native-unavailable.txt'), 'utf8')).toMatch(/^no C\+\+ compiler/);
    expect(existsSync(join(tree, 'build/Release/loraserve_native.node'))).toBe(false);
  });
});
