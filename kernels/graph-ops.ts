/** The graph-building operations the LoRA emitters need; the model's ONNX graph writer provides them. */
export interface GraphOps {
  op(opType: string, inputs: string[], attributes?: Record<string, number | number[]>, domain?: string): string;
  /** A node with `outputs` outputs; returns their names. */
  node(opType: string, inputs: string[], attributes: Record<string, number | number[]>, options: { domain: string; outputs: number }): string[];
  int64s(name: string, values: number[]): string;
  /** `If(cond)` whose branches emit nodes and return the values they yield (as many from each). */
  ifElse(cond: string, thenBranch: () => string[], elseBranch: () => string[]): string[];
}
