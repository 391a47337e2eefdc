// The native runtime: ONNX Runtime driven through this project's own addon (kernels/native), which registers the
// batched LoRA operators, binds engine memory in place (IoBinding, no copies) and runs off the JS thread.
// Besides onnx-runtime.ts, the only module that touches ONNX Runtime; it uses the very library onnxruntime-node
// bundles, so both paths run the same ONNX Runtime.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { packageRoot } from '../package-root.js';
import type { SessionOptions } from './onnx-runtime.js';

/** Element types a tensor can be bound as; float16 and bfloat16 are their bit patterns in a Uint16Array. */
export type NativeElementType = 'float32' | 'float16' | 'bfloat16' | 'int32' | 'int64' | 'uint8' | 'bool';
export type NativeData = Float32Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array;
/** Implementations of the batched LoRA kernel, by instruction set. */
export type LoraIsa = 'avx512' | 'avx2' | 'portable';

interface AddonSession {
  readonly inputNames: string[];
  readonly outputNames: string[];
  bindInput(name: string, data: NativeData, dims: readonly number[], type: NativeElementType): void;
  bindOutput(name: string, data: NativeData, dims: readonly number[], type: NativeElementType): void;
  run(): Promise<void>;
  release(): void;
}

interface Addon {
  load(libraryPath: string): { ortVersion: string; apiVersion: number; opDomain: string };
  createSession(modelPath: string, intraOpThreads: number): Promise<AddonSession>;
  loraIsas(): { supported: LoraIsa[]; active: LoraIsa };
  setLoraIsa(isa: LoraIsa | 'auto'): void;
}

/**
 * A session whose inputs and outputs are typed arrays bound in place: a run reads and writes their memory directly,
 * and one array may be bound as both an input and an output (updated in place). Bindings persist across runs.
 * One run at a time: `run` while a run is in flight, or binding or releasing during one, throws. The bound arrays
 * must not be transferred or resized while bound; a run refuses to start if one was.
 */
export class NativeSession {
  readonly #session: AddonSession;

  constructor(session: AddonSession) {
    this.#session = session;
  }

  get inputNames(): readonly string[] {
    return this.#session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.#session.outputNames;
  }

  /** `type` defaults from the array: float32, float16 (Uint16Array), int32, int64, uint8 (Uint8Array). */
  bindInput(name: string, data: NativeData, dims: readonly number[], type: NativeElementType = defaultType(data)): void {
    this.#session.bindInput(name, data, dims, type);
  }

  bindOutput(name: string, data: NativeData, dims: readonly number[], type: NativeElementType = defaultType(data)): void {
    this.#session.bindOutput(name, data, dims, type);
  }

  /** Runs the graph on a worker thread; the JS thread stays free until the promise settles. */
  run(): Promise<void> {
    return this.#session.run();
  }

  /** Frees the session and drops the bound arrays; idempotent. */
  release(): void {
    this.#session.release();
  }
}

export interface NativeRuntime {
  /** The ONNX Runtime library's version, e.g. "1.30.0". */
  readonly ortVersion: string;
  /** The C API version the addon asks for. */
  readonly apiVersion: number;
  /** The op domain of the batched LoRA operators (`BatchedLora`). */
  readonly opDomain: string;
  /** Loads a model file off the JS thread; the batched LoRA operators are registered. */
  createSession(modelPath: string, options: SessionOptions): Promise<NativeSession>;
  /** The LoRA kernel implementations this CPU runs, best first, and the one in use. */
  loraIsas(): { supported: LoraIsa[]; active: LoraIsa };
  /** Forces a LoRA kernel implementation process-wide ('auto': the best supported); throws if unsupported. */
  setLoraIsa(isa: LoraIsa | 'auto'): void;
}

export type NativeLoad = { runtime: NativeRuntime } | { unavailable: string };

const ADDON = 'build/Release/loraserve_native.node';
const UNAVAILABLE_NOTE = 'build/native-unavailable.txt';

let loaded: NativeLoad | undefined;

/** Loads the addon and the ONNX Runtime library once per process; says why when the native path cannot run. */
export function loadNativeRuntime(): NativeLoad {
  loaded ??= tryLoad();
  return loaded;
}

function tryLoad(): NativeLoad {
  if (process.platform !== 'linux') return { unavailable: `the native runtime runs on Linux only (this is ${process.platform})` };
  const root = packageRoot();
  const addonPath = join(root, ADDON);
  if (!existsSync(addonPath)) {
    const note = join(root, UNAVAILABLE_NOTE);
    const why = existsSync(note) ? readFileSync(note, 'utf8').trim() : 'it was not built (npm run build:native builds it)';
    return { unavailable: `the native addon is not available: ${why}` };
  }
  const require = createRequire(import.meta.url);
  let library: string;
  try {
    library = bundledLibrary(require);
  } catch (err) {
    return { unavailable: `cannot find the ONNX Runtime library of onnxruntime-node: ${(err as Error).message}` };
  }
  try {
    const addon = require(addonPath) as Addon;
    const info = addon.load(library);
    return { runtime: runtimeOf(addon, info) };
  } catch (err) {
    return { unavailable: `cannot load the native runtime: ${(err as Error).message}` };
  }
}

function runtimeOf(addon: Addon, info: ReturnType<Addon['load']>): NativeRuntime {
  return {
    ...info,
    createSession: async (modelPath, options) => new NativeSession(await addon.createSession(modelPath, options.threads)),
    loraIsas: () => addon.loraIsas(),
    setLoraIsa: (isa) => addon.setLoraIsa(isa),
  };
}

/** The shared library inside the installed onnxruntime-node: bin/napi-v<N>/<platform>/<arch>/libonnxruntime.so.1. */
function bundledLibrary(require: NodeRequire): string {
  const manifest = require.resolve('onnxruntime-node/package.json');
  const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { binary?: { napi_versions?: number[] } };
  const napi = Math.max(...(pkg.binary?.napi_versions ?? [6]));
  const path = join(dirname(manifest), 'bin', `napi-v${napi}`, process.platform, process.arch, 'libonnxruntime.so.1');
  if (!existsSync(path)) throw new Error(`onnxruntime-node ships no libonnxruntime.so.1 for ${process.platform}/${process.arch}`);
  return path;
}

function defaultType(data: NativeData): NativeElementType {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Uint16Array) return 'float16';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  return 'uint8';
}
