/** Weight formats the graph builder can emit for the projections and lm_head. */
export type Quantization = 'int4' | 'int8' | 'fp32';

export const QUANTIZATIONS: readonly Quantization[] = ['int4', 'int8', 'fp32'];

/** A weight `[N, K]` quantized blockwise along K in ONNX Runtime's `MatMulNBits` layout. */
export interface BlockQuantized {
  bits: 4 | 8;
  blockSize: number;
  n: number;
  k: number;
  /** `[N, ceil(K / blockSize), blockSize * bits / 8]`: low nibble first for 4 bits. */
  data: Uint8Array;
  /** `[N * blocks]`, signed. */
  scales: Float32Array;
}

/**
 * Symmetric blockwise quantization of `weight` (`[N, K]`, row-major, the HF `[out, in]` layout) with MatMulNBits'
 * default zero point `2^(bits-1)`, so no zero-point tensor is needed (ONNX Runtime's fastest int4 path at batch 1).
 * Per block the signed scale maps the value of largest magnitude exactly onto the most negative code, using the
 * full range of codes: `scale = -m / 2^(bits-1)`, `q = clamp(round(w / scale) + 2^(bits-1), 0, 2^bits - 1)`.
 */
export function quantizeBlockwise(weight: Float32Array, n: number, k: number, bits: 4 | 8, blockSize: number): BlockQuantized {
  const blocks = Math.ceil(k / blockSize);
  const blobSize = (blockSize * bits) / 8;
  const maxQ = (1 << bits) - 1;
  const zero = 1 << (bits - 1);
  const data = new Uint8Array(n * blocks * blobSize);
  const scales = new Float32Array(n * blocks);
  for (let row = 0; row < n; row++) {
    const rowBase = row * k;
    for (let b = 0; b < blocks; b++) {
      const start = b * blockSize;
      const end = Math.min(start + blockSize, k);
      let extreme = 0;
      for (let i = start; i < end; i++) {
        const v = weight[rowBase + i];
        if (Math.abs(v) > Math.abs(extreme)) extreme = v;
      }
      const scale = Math.fround(-extreme / zero);
      const inv = scale === 0 ? 0 : 1 / scale;
      scales[row * blocks + b] = scale;
      const blob = (row * blocks + b) * blobSize;
      for (let i = start; i < start + blockSize; i++) {
        const v = i < end ? weight[rowBase + i] : 0;
        const q = Math.min(maxQ, Math.max(0, Math.round(v * inv) + zero));
        const j = i - start;
        if (bits === 4) data[blob + (j >> 1)] |= q << ((j & 1) * 4);
        else data[blob + j] = q;
      }
    }
  }
  return { bits, blockSize, n, k, data, scales };
}

/** The weight that `MatMulNBits` computes with: `(q - 2^(bits-1)) * scale`, `[N, K]`. */
export function dequantizeBlockwise(qw: BlockQuantized): Float32Array {
  const { bits, blockSize, n, k } = qw;
  const blocks = Math.ceil(k / blockSize);
  const blobSize = (blockSize * bits) / 8;
  const zero = 1 << (bits - 1);
  const out = new Float32Array(n * k);
  for (let row = 0; row < n; row++) {
    for (let b = 0; b < blocks; b++) {
      const scale = qw.scales[row * blocks + b];
      const blob = (row * blocks + b) * blobSize;
      for (let j = 0; j < blockSize && b * blockSize + j < k; j++) {
        const q = bits === 4 ? (qw.data[blob + (j >> 1)] >> ((j & 1) * 4)) & 15 : qw.data[blob + j];
        out[row * k + b * blockSize + j] = (q - zero) * scale;
      }
    }
  }
  return out;
}
