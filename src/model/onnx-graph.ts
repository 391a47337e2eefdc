import { closeSync, openSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export const DataType = onnx.TensorProto.DataType;
/** float16 data is IEEE half bit patterns in a Uint16Array. */
export type ElementType = 'float32' | 'float16' | 'int64' | 'int32' | 'uint8' | 'bool';

const ELEMENT: Record<ElementType, { type: number; bytes: number }> = {
  float32: { type: DataType.FLOAT, bytes: 4 },
  float16: { type: DataType.FLOAT16, bytes: 2 },
  int64: { type: DataType.INT64, bytes: 8 },
  int32: { type: DataType.INT32, bytes: 4 },
  uint8: { type: DataType.UINT8, bytes: 1 },
  bool: { type: DataType.BOOL, bytes: 1 },
};

type GraphProto = InstanceType<typeof onnx.GraphProto>;
export type AttributeValue = number | string | number[] | { float: number } | { graph: GraphProto };
type TypedData = Float32Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;

/** Initializers at least this large go to the external weights file; smaller ones stay inline. */
const EXTERNAL_MIN_BYTES = 1024;
const EXTERNAL_ALIGN = 4096;

/**
 * Builds one ONNX graph. Large initializers are streamed to an external-data file as they are added,
 * so a model is never held twice in memory and the protobuf stays far below its 2 GiB limit.
 */
export class OnnxGraph {
  /** Node lists of the graph being emitted: the main graph at the bottom, open `If` branches above it. */
  readonly #scopes: InstanceType<typeof onnx.NodeProto>[][] = [[]];
  readonly #initializers: InstanceType<typeof onnx.TensorProto>[] = [];
  readonly #inputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  readonly #outputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  readonly #weightsFd: number;
  readonly #weightsName: string;
  #weightsOffset = 0;
  #counter = 0;

  constructor(weightsPath: string) {
    this.#weightsFd = openSync(weightsPath, 'w');
    this.#weightsName = basename(weightsPath);
  }

  input(name: string, type: ElementType, dims: (number | string)[]): string {
    this.#inputs.push(valueInfo(name, type, dims));
    return name;
  }

  output(name: string, type: ElementType, dims: (number | string)[]): void {
    this.#outputs.push(valueInfo(name, type, dims));
  }

  /** Adds a node; returns its output names (generated unless given). */
  node(opType: string, inputs: string[], attributes: Record<string, AttributeValue> = {}, options: { domain?: string; outputs?: number | string[] } = {}): string[] {
    const outs = Array.isArray(options.outputs)
      ? options.outputs
      : Array.from({ length: options.outputs ?? 1 }, (_, i) => `${opType}_${this.#counter}_${i}`);
    this.#scopes[this.#scopes.length - 1].push(onnx.NodeProto.create({
      opType,
      domain: options.domain ?? '',
      name: `${opType}_${this.#counter++}`,
      input: inputs,
      output: outs,
      attribute: Object.entries(attributes).map(([name, value]) => attribute(name, value)),
    }));
    return outs;
  }

  /** Single-output shorthand for `node`. */
  op(opType: string, inputs: string[], attributes: Record<string, AttributeValue> = {}, domain = ''): string {
    return this.node(opType, inputs, attributes, { domain })[0];
  }

  /**
   * `If(cond)`: each branch builder emits nodes into its own subgraph (reading outer values by name) and returns
   * the float values the branch yields, as many from each; the results are the If's outputs.
   */
  ifElse(cond: string, thenBranch: () => string[], elseBranch: () => string[]): string[] {
    const branch = (build: () => string[], label: string): GraphProto => {
      this.#scopes.push([]);
      const outs = build().map((value) => this.op('Identity', [value]));
      const nodes = this.#scopes.pop() ?? [];
      return onnx.GraphProto.create({ name: `${label}_${this.#counter}`, node: nodes, output: outs.map((out) => valueInfo(out, 'float32', null)) });
    };
    const then = branch(thenBranch, 'then');
    const otherwise = branch(elseBranch, 'else');
    return this.node('If', [cond], { then_branch: { graph: then }, else_branch: { graph: otherwise } }, { outputs: then.output.length });
  }

  initializer(name: string, type: ElementType, dims: number[], data: TypedData): string {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const expected = dims.reduce((a, b) => a * b, 1) * ELEMENT[type].bytes;
    if (bytes.byteLength !== expected) throw new Error(`initializer ${name}: ${bytes.byteLength} bytes for dims [${dims}]`);
    const tensor = onnx.TensorProto.create({ name, dataType: ELEMENT[type].type, dims });
    if (bytes.byteLength < EXTERNAL_MIN_BYTES) {
      tensor.rawData = bytes.slice();
    } else {
      const pad = (EXTERNAL_ALIGN - (this.#weightsOffset % EXTERNAL_ALIGN)) % EXTERNAL_ALIGN;
      if (pad) writeSync(this.#weightsFd, new Uint8Array(pad));
      this.#weightsOffset += pad;
      writeSync(this.#weightsFd, bytes);
      tensor.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      tensor.externalData = [
        { key: 'location', value: this.#weightsName },
        { key: 'offset', value: String(this.#weightsOffset) },
        { key: 'length', value: String(bytes.byteLength) },
      ];
      this.#weightsOffset += bytes.byteLength;
    }
    this.#initializers.push(tensor);
    return name;
  }

  /** Small constant helpers for shapes and axes. */
  int64s(name: string, values: number[]): string {
    return this.initializer(name, 'int64', [values.length], BigInt64Array.from(values.map(BigInt)));
  }

  /** Finishes the weights file and returns the serialized model. */
  finish(graphName: string): Uint8Array {
    closeSync(this.#weightsFd);
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'loraserve',
      opsetImport: [{ domain: '', version: 17 }, { domain: 'com.microsoft', version: 1 }],
      graph: onnx.GraphProto.create({
        name: graphName,
        node: this.#scopes[0],
        initializer: this.#initializers,
        input: this.#inputs,
        output: this.#outputs,
      }),
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

/** `dims` null: rank and shape unknown (If branch outputs, whose shapes ONNX Runtime infers). */
function valueInfo(name: string, type: ElementType, dims: (number | string)[] | null): InstanceType<typeof onnx.ValueInfoProto> {
  const shape = dims ? { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } : undefined;
  return onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType: ELEMENT[type].type, shape } } });
}

function attribute(name: string, value: AttributeValue): InstanceType<typeof onnx.AttributeProto> {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === 'string') return onnx.AttributeProto.create({ name, type: T.STRING, s: new TextEncoder().encode(value) });
  if (Array.isArray(value)) return onnx.AttributeProto.create({ name, type: T.INTS, ints: value });
  if (typeof value === 'number') return onnx.AttributeProto.create({ name, type: T.INT, i: value });
  if ('graph' in value) return onnx.AttributeProto.create({ name, type: T.GRAPH, g: value.graph });
  return onnx.AttributeProto.create({ name, type: T.FLOAT, f: value.float });
}
