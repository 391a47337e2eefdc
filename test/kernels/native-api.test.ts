// kernels/native/ort-api.h declares the ONNX Runtime C API from its layout; this compiles it next to the official
// onnxruntime_c_api.h, where one can be found, and checks every function index, signature, struct offset and enum.
// The official header comes from $ORT_INCLUDE_DIR or a system install (Debian's libonnxruntime-dev puts it in
// /usr/include/onnxruntime; Debian 12 has no such package, so on CI this is skipped and says so).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const CANDIDATES = [process.env.ORT_INCLUDE_DIR, '/usr/include/onnxruntime', '/usr/local/include/onnxruntime'];
const includeDir = CANDIDATES.find((dir) => dir && existsSync(join(dir, 'onnxruntime_c_api.h')));
const cxx = process.env.CXX || 'g++';
const hasCompiler = !spawnSync(cxx, ['--version']).error;
const skipped = !includeDir
  ? 'no official onnxruntime_c_api.h (set ORT_INCLUDE_DIR, or install libonnxruntime-dev)'
  : !hasCompiler ? `no C++ compiler (${cxx})` : '';
if (skipped) console.warn(`C API declaration check skipped: ${skipped}`);

const CHECK = resolve('test/kernels/native-api-check.cc');
const OURS = resolve('kernels/native/ort-api.h');
const scratch = mkdtempSync(join(tmpdir(), 'loraserve-ort-api-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Compiles the check against the official header and the given copy of ours; returns the compiler's errors. */
function compile(oursDir: string): { ok: boolean; errors: string } {
  const result = spawnSync(cxx, ['-std=c++17', '-fsyntax-only', '-Wno-ignored-attributes', `-I${includeDir}`, `-I${oursDir}`, CHECK], { encoding: 'utf8' });
  return { ok: result.status === 0, errors: result.stderr };
}

describe.skipIf(skipped !== '')('ONNX Runtime C API declarations', () => {
  it('match the official header: indices, signatures, OrtCustomOp layout and enum values', () => {
    copyFileSync(OURS, join(scratch, 'ort-api.h'));
    const { ok, errors } = compile(scratch);
    expect(errors).toBe('');
    expect(ok).toBe(true);
  });

  it('would catch a wrong index or a wrong signature', () => {
    const wrong = readFileSync(OURS, 'utf8')
      .replace('X(RunWithBinding, 133,', 'X(RunWithBinding, 132,')
      .replace('X(GetDimensions, 62, Status*, const TensorTypeAndShapeInfo*, int64_t*, size_t)', 'X(GetDimensions, 62, Status*, const TensorTypeAndShapeInfo*, int64_t*, int)');
    writeFileSync(join(scratch, 'ort-api.h'), wrong);
    const { ok, errors } = compile(scratch);
    expect(ok).toBe(false);
    expect(errors).toMatch(/RunWithBinding: index/);
    expect(errors).toMatch(/GetDimensions: signature/);
  });
});
