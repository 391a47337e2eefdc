// Shared by the native runtime tests: the runtime (or why it is unavailable), models built with OnnxGraph, and
// the 16-bit float encodings the kernels read.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { OnnxGraph } from '../../src/model/onnx-graph.js';
import { loadNativeRuntime, type NativeRuntime } from '../../src/model/native-runtime.js';

const { onnx } = onnxProto;

const loadResult = loadNativeRuntime();
export const runtime: NativeRuntime | undefined = 'runtime' in loadResult ? loadResult.runtime : undefined;
export const unavailable = 'unavailable' in loadResult ? loadResult.unavailable : '';
if (!runtime) console.warn(`native runtime tests skipped: ${unavailable}`);

export type WeightType = 'float32' | 'float16' | 'bfloat16';
const ONNX_TYPE: Record<WeightType, number> = { float32: 1, float16: 10, bfloat16: 16 };

/**
 * Writes the graph `build` emits to `<dir>/<name>.onnx` and returns its path. OnnxGraph declares float32 at most,
 * so the inputs named in `retype` get their 16-bit type here; the model imports the project's op domain.
 */
export function writeModel(dir: string, name: string, build: (g: OnnxGraph) => void, retype: Record<string, WeightType> = {}): string {
  const graph = new OnnxGraph(join(dir, `${name}.weights`));
  build(graph);
  const model = onnx.ModelProto.decode(graph.finish(name));
  for (const input of model.graph?.input ?? []) {
    const type = retype[input.name ?? ''];
    if (type && input.type?.tensorType) input.type.tensorType.elemType = ONNX_TYPE[type];
  }
  model.opsetImport.push({ domain: runtime?.opDomain ?? 'com.loraserve', version: 1 });
  const path = join(dir, `${name}.onnx`);
  writeFileSync(path, onnx.ModelProto.encode(model).finish());
  return path;
}

/** A BatchedLora node over graph inputs x, row_slots, slot_ranks and (y_p, a_p, b_p) per projection. */
export function loraModel(dir: string, projections: number, weight: WeightType): string {
  const retype: Record<string, WeightType> = {};
  return writeModel(dir, `lora-${projections}-${weight}`, (g) => {
    const inputs = [g.input('x', 'float32', ['rows', 'seq', 'in']), g.input('row_slots', 'int32', ['rows']), g.input('slot_ranks', 'int32', ['slots'])];
    const outputs: string[] = [];
    for (let p = 0; p < projections; p++) {
      inputs.push(g.input(`y_${p}`, 'float32', ['rows', 'seq', `out_${p}`]));
      inputs.push(g.input(`a_${p}`, 'float32', ['slots', 'in', `r_${p}`]));
      inputs.push(g.input(`b_${p}`, 'float32', ['slots', `r_${p}`, `out_${p}`]));
      retype[`a_${p}`] = weight;
      retype[`b_${p}`] = weight;
      outputs.push(`out_${p}`);
      g.output(`out_${p}`, 'float32', ['rows', 'seq', `out_${p}`]);
    }
    g.node('BatchedLora', inputs, {}, { domain: runtime?.opDomain ?? 'com.loraserve', outputs });
  }, retype);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half bits of a number, rounded to nearest even. */
export function halfBits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = ((x >>> 23) & 0xff) - 112;
  const mantissa = x & 0x7fffff;
  if (exponent >= 31) return sign | 0x7c00;
  const shift = exponent <= 0 ? 14 - exponent : 13;
  if (shift > 24) return sign;
  const full = exponent <= 0 ? mantissa | 0x800000 : mantissa;
  let half = (exponent <= 0 ? 0 : exponent << 10) | (full >>> shift);
  const rest = full & ((1 << shift) - 1);
  const middle = 1 << (shift - 1);
  if (rest > middle || (rest === middle && half & 1)) half++;
  return sign | half;
}

export function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** bfloat16 bits of a number, rounded to nearest even. */
export function bfloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bfloat16Value(bits: number): number {
  u32[0] = bits << 16;
  return f32[0];
}

/** The weights as the kernel receives them (bits for 16-bit types) and the exact values they encode. */
export function encodeWeights(values: Float32Array, type: WeightType): { data: Float32Array | Uint16Array; exact: Float32Array } {
  if (type === 'float32') return { data: values, exact: values };
  const bits = Uint16Array.from(values, type === 'float16' ? halfBits : bfloat16Bits);
  return { data: bits, exact: Float32Array.from(bits, type === 'float16' ? halfValue : bfloat16Value) };
}
