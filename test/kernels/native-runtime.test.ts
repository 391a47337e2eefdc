// The native runtime's session: same results as onnxruntime-node, in-place binding, runs off the JS thread,
// one run at a time, clear errors for bad bindings.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { OrtSession } from '../../src/model/onnx-runtime.js';
import { Random } from '../../src/synth/random.js';
import { runtime, unavailable, writeModel } from './native-fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'loraserve-native-runtime-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function normal(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  new Random(seed).fillNormal(a, 1);
  return a;
}

/** out = Relu(x · W + bias) + x, x [rows, 64], with its weights as initializers. */
function denseModel(): string {
  return writeModel(dir, 'dense', (g) => {
    const x = g.input('x', 'float32', ['rows', 64]);
    const h = g.op('MatMul', [x, g.initializer('w', 'float32', [64, 64], normal(64 * 64, 1))]);
    const r = g.op('Relu', [g.op('Add', [h, g.initializer('bias', 'float32', [64], normal(64, 2))])]);
    g.node('Add', [r, x], {}, { outputs: ['out'] });
    g.output('out', 'float32', ['rows', 64]);
  });
}

/** next = state + delta: with `state` and `next` bound to one array, each run adds delta in place. */
function accumulateModel(): string {
  return writeModel(dir, 'accumulate', (g) => {
    g.node('Add', [g.input('state', 'float32', ['n']), g.input('delta', 'float32', ['n'])], {}, { outputs: ['next'] });
    g.output('next', 'float32', ['n']);
  });
}

/** Four chained 1024 x 1024 MatMuls on one thread: a run long enough to watch the event loop during it. */
function slowModel(): string {
  return writeModel(dir, 'slow', (g) => {
    let h = g.input('x', 'float32', [1024, 1024]);
    const w = g.initializer('w', 'float32', [1024, 1024], normal(1024 * 1024, 3).map((v) => v / 32));
    for (let i = 0; i < 4; i++) h = g.op('MatMul', [h, w]);
    g.node('Identity', [h], {}, { outputs: ['out'] });
    g.output('out', 'float32', [1024, 1024]);
  });
}

describe('native runtime availability', () => {
  it.runIf(process.env.LORASERVE_REQUIRE_NATIVE === '1')('is available where it must be (LORASERVE_REQUIRE_NATIVE=1)', () => {
    expect(unavailable).toBe('');
    expect(runtime).toBeDefined();
  });
});

describe.skipIf(!runtime)('native runtime session', () => {
  it('loads the library bundled in onnxruntime-node at the fixed C API version', () => {
    const ortNode = JSON.parse(readFileSync('node_modules/onnxruntime-node/package.json', 'utf8')) as { version: string };
    expect(runtime!.ortVersion).toBe(ortNode.version);
    expect(runtime!.apiVersion).toBe(17);
    expect(runtime!.opDomain).toBe('com.loraserve');
  });

  it('rejects a missing or corrupt model file with an error', async () => {
    await expect(runtime!.createSession(join(dir, 'missing.onnx'), { threads: 1 })).rejects.toThrow(/missing\.onnx/);
    writeFileSync(join(dir, 'corrupt.onnx'), Uint8Array.from({ length: 512 }, (_, i) => (i * 131) & 0xff));
    await expect(runtime!.createSession(join(dir, 'corrupt.onnx'), { threads: 1 })).rejects.toThrow(/protobuf|parse|load/i);
  });

  it('gives the same result as onnxruntime-node for a standard-op graph, written into the bound array', async () => {
    const model = denseModel();
    const x = normal(5 * 64, 4);
    const stock = await OrtSession.create(model, { threads: 1 });
    const expected = (await stock.run({ x: { type: 'float32', data: x, dims: [5, 64] } }, ['out'])).out.data;
    await stock.release();
    const session = await runtime!.createSession(model, { threads: 1 });
    const out = new Float32Array(5 * 64).fill(NaN);
    session.bindInput('x', x, [5, 64]);
    session.bindOutput('out', out, [5, 64]);
    await session.run();
    expect(Array.from(out)).toEqual(Array.from(expected));
    session.release();
  });

  it('updates an array bound as both input and output in place across runs', async () => {
    const session = await runtime!.createSession(accumulateModel(), { threads: 1 });
    const state = Float32Array.from([1, 2, 3, 4]);
    session.bindInput('state', state, [4]);
    session.bindOutput('next', state, [4]);
    session.bindInput('delta', Float32Array.from([0.5, -1, 2, 0]), [4]);
    for (let i = 0; i < 3; i++) await session.run();
    expect(Array.from(state)).toEqual([2.5, -1, 9, 4]);
    // A view at an offset is bound where it lies.
    const backing = new Float32Array(8);
    const view = backing.subarray(4);
    session.bindInput('state', view, [4]);
    session.bindOutput('next', view, [4]);
    await session.run();
    expect(Array.from(backing)).toEqual([0, 0, 0, 0, 0.5, -1, 2, 0]);
    session.release();
  });

  it('runs off the JS thread: timers keep firing during a long run', async () => {
    const session = await runtime!.createSession(slowModel(), { threads: 1 });
    session.bindInput('x', normal(1024 * 1024, 5), [1024, 1024]);
    session.bindOutput('out', new Float32Array(1024 * 1024), [1024, 1024]);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 2);
    await session.run();
    clearInterval(timer);
    // A run that blocked the loop would let at most one tick through (before it starts).
    expect(ticks).toBeGreaterThanOrEqual(5);
    session.release();
  });

  it('refuses a second run, a rebind or a release while a run is in flight, then works again', async () => {
    const session = await runtime!.createSession(slowModel(), { threads: 1 });
    const x = normal(1024 * 1024, 6);
    session.bindInput('x', x, [1024, 1024]);
    session.bindOutput('out', new Float32Array(1024 * 1024), [1024, 1024]);
    const first = session.run();
    expect(() => session.run()).toThrow(/a run is in progress/);
    expect(() => session.bindInput('x', x, [1024, 1024])).toThrow(/a run is in progress/);
    expect(() => session.release()).toThrow(/a run is in progress/);
    await first;
    await session.run();
    session.release();
    session.release();
    expect(() => session.run()).toThrow(/released/);
  });

  it('rejects bad bindings with a clear error and refuses a run over a detached array', async () => {
    const session = await runtime!.createSession(accumulateModel(), { threads: 1 });
    const state = new Float32Array(4);
    expect(() => session.bindInput('state', state, [5])).toThrow(/dims do not match/);
    expect(() => session.bindInput('state', state, [2, -2])).toThrow(/non-negative integers/);
    expect(() => session.bindInput('state', new Int32Array(4), [4], 'float32')).toThrow(/typed array of its own kind/);
    expect(() => session.bindInput('nope', state, [4])).toThrow(/the model has no input named nope/);
    expect(() => session.bindOutput('state', state, [4])).toThrow(/the model has no output named state/);
    expect(session.inputNames).toEqual(['state', 'delta']);
    expect(session.outputNames).toEqual(['next']);
    const delta = new Float32Array(4);
    session.bindInput('state', state, [4]);
    session.bindInput('delta', delta, [4]);
    session.bindOutput('next', new Float32Array(4), [4]);
    await session.run();
    structuredClone(delta.buffer, { transfer: [delta.buffer] });
    expect(() => session.run()).toThrow(/delta: the bound array was detached or resized/);
    session.bindInput('delta', new Float32Array(4), [4]);
    await session.run();
    session.release();
  });
});
