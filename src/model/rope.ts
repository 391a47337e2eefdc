import type { ModelConfig } from './model-config.js';

/**
 * RoPE inverse frequencies (HF `rotate_half` convention, headDim / 2 of them), with Llama 3 scaling:
 * low frequencies are divided by `factor`, high ones kept, and the band between is interpolated.
 */
export function ropeInverseFrequencies(config: ModelConfig): Float64Array {
  const half = config.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(config.ropeTheta, (2 * i) / config.headDim);
  const s = config.ropeScaling;
  if (!s) return inv;
  const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const wavelen = (2 * Math.PI) / inv[i];
    if (wavelen > lowFreqWavelen) {
      inv[i] /= s.factor;
    } else if (wavelen >= highFreqWavelen) {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      inv[i] = (1 - smooth) * (inv[i] / s.factor) + smooth * inv[i];
    }
  }
  return inv;
}

/** cos and sin tables `[maxPositions, headDim / 2]`, the layout ONNX Runtime's RotaryEmbedding reads. */
export function ropeCache(config: ModelConfig, maxPositions: number): { cos: Float32Array; sin: Float32Array } {
  const inv = ropeInverseFrequencies(config);
  const half = inv.length;
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      // HF computes the angle in fp32 (position * inv_freq); fp64 here differs by < 1 ulp of the result.
      const angle = p * inv[i];
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}
