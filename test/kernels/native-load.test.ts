// The native runtime in a process of its own (the library loads once per process): a clear error for a library it
// cannot use, one shared state for the main thread and a worker thread (where the engine runs), and bound arrays
// kept alive by the binding under a garbage collector driven by hand.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runtime, writeModel } from './native-fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'loraserve-native-load-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ADDON = resolve('build/Release/loraserve_native.node');
const LIBRARY = resolve('node_modules/onnxruntime-node/bin/napi-v6', process.platform, process.arch, 'libonnxruntime.so.1');

/** Runs `body` (CommonJS, with `addon` loaded) in a fresh node process; returns what it printed. */
function child(body: string, flags: string[] = []): { stdout: string; stderr: string } {
  const script = `const addon = require(${JSON.stringify(ADDON)});\n${body}`;
  const result = spawnSync(process.execPath, [...flags, '-e', script], { encoding: 'utf8' });
  return { stdout: result.stdout.trim(), stderr: result.stderr };
}

const tryLoad = (path: string): string => `try { addon.load(${JSON.stringify(path)}); console.log('loaded'); } catch (e) { console.log(e.message); }`;

function accumulateModel(): string {
  return writeModel(dir, 'accumulate', (g) => {
    g.node('Add', [g.input('state', 'float32', ['n']), g.input('delta', 'float32', ['n'])], {}, { outputs: ['next'] });
    g.output('next', 'float32', ['n']);
  });
}

describe.skipIf(!runtime)('the native runtime in a process of its own', () => {
  it('says why a library cannot be used: missing file, or a runtime without the C API version asked for', () => {
    // A stand-in library whose OrtGetApiBase serves no API version, like an ONNX Runtime older than 1.17.
    const source = join(dir, 'old-ort.cc');
    writeFileSync(source, `
      #include <cstdint>
      struct Base { const void* (*GetApi)(uint32_t); const char* (*GetVersionString)(); };
      static const void* NoApi(uint32_t) { return nullptr; }
      static const char* Version() { return "1.16.3"; }
      static const Base base{NoApi, Version};
      extern "C" const Base* OrtGetApiBase() { return &base; }
    `);
    const library = join(dir, 'libold-ort.so');
    const compiled = spawnSync(process.env.CXX || 'g++', ['-shared', '-fPIC', '-o', library, source], { encoding: 'utf8' });
    expect(compiled.stderr).toBe('');
    const { stdout } = child([tryLoad(join(dir, 'missing.so')), tryLoad(library), tryLoad(LIBRARY)].join('\n'));
    expect(stdout.split('\n')).toEqual([
      expect.stringMatching(/^cannot open the ONNX Runtime library: .*missing\.so/),
      'ONNX Runtime 1.16.3 does not serve C API version 17 (ONNX Runtime 1.17 or newer is needed)',
      'loaded',
    ]);
  });

  it('runs sessions from the main thread and a worker thread on one shared runtime', () => {
    const model = accumulateModel();
    const run = `
      async function twice(addon) {
        addon.load(${JSON.stringify(LIBRARY)});
        const s = await addon.createSession(${JSON.stringify(model)}, 1);
        const state = Float32Array.of(1, 2);
        s.bindInput('state', state, [2], 'float32');
        s.bindOutput('next', state, [2], 'float32');
        s.bindInput('delta', Float32Array.of(1, 1), [2], 'float32');
        await s.run();
        await s.run();
        s.release();
        return Array.from(state);
      }`;
    const { stdout, stderr } = child(`
      const { Worker } = require('node:worker_threads');
      ${run}
      const worker = new Worker(${JSON.stringify(`const { parentPort } = require('node:worker_threads');
        const addon = require(${JSON.stringify(ADDON)});`)} + ${JSON.stringify(run)} + 'twice(addon).then((r) => parentPort.postMessage(r));', { eval: true });
      Promise.all([twice(addon), new Promise((r) => worker.once('message', r))])
        .then(([main, inWorker]) => { console.log(JSON.stringify({ main, inWorker })); return worker.terminate(); });
    `);
    expect(stderr).toBe('');
    expect(JSON.parse(stdout)).toEqual({ main: [3, 4], inWorker: [3, 4] });
  });

  it('keeps bound arrays alive while bound, even with no other reference, and lets them go on release', () => {
    const { stdout, stderr } = child(`
      addon.load(${JSON.stringify(LIBRARY)});
      const collect = async () => { for (let i = 0; i < 4; i++) { await new Promise((r) => setTimeout(r, 5)); gc(); } };
      (async () => {
        const s = await addon.createSession(${JSON.stringify(accumulateModel())}, 1);
        let probe;
        (() => {
          const state = new Float32Array(1 << 16).fill(1);
          s.bindInput('state', state, [1 << 16], 'float32');
          s.bindOutput('next', state, [1 << 16], 'float32');
          s.bindInput('delta', new Float32Array(1 << 16).fill(1), [1 << 16], 'float32');
          probe = new WeakRef(state);
        })();
        for (let i = 0; i < 3; i++) { const run = s.run(); gc(); await run; await collect(); }
        const kept = probe.deref() !== undefined && probe.deref()[0] === 4;
        s.release();
        await collect();
        console.log(JSON.stringify({ kept, released: probe.deref() === undefined }));
      })();
    `, ['--expose-gc']);
    expect(stderr).toBe('');
    expect(JSON.parse(stdout)).toEqual({ kept: true, released: true });
  });
});
