import { createHash } from 'node:crypto';
import { f16Value } from '../adapters/lora-convert.js';
import type { LoraTensor } from '../adapters/lora-convert.js';
import type { LoraModule, LoraWeights } from '../adapters/peft-loader.js';
import type { BuildSource } from './build-cache.js';
import type { ModelConfig } from './model-config.js';
import { projectionShape, projectionWeightName } from './model-config.js';

/**
 * The base weights with one adapter folded in, for the graph builder: `read` of a projection the adapter targets
 * returns `W + (a·b)ᵀ` in the HF layout `[out, in]` (PEFT's scale is already in `b`); every other tensor is the base's
 * own. The builder quantizes what it reads, so an int4/int8 merged build is rounded once, from the checkpoint's
 * original weights plus the delta, never requantized from already-quantized weights.
 *
 * Its digest combines the base's and the adapter's content digest, so `buildOrReuse` caches a merged build next to the
 * base build, under a key of its own per adapter content and build options.
 */
export class MergedSource implements BuildSource {
  readonly config: ModelConfig;
  readonly #base: BuildSource;
  readonly #adapterDigest: string;
  /** Targeted modules by the HF name of the weight they change. */
  readonly #modules = new Map<string, LoraModule>();

  constructor(base: BuildSource, adapter: LoraWeights) {
    this.config = base.config;
    this.#base = base;
    this.#adapterDigest = adapter.digest;
    for (const module of adapter.modules.values()) {
      const [k, n] = projectionShape(base.config, module.projection);
      // An adapter loaded for another base would otherwise be folded in partly, or not at all, without a word.
      if (module.layer >= base.config.numLayers || module.a.length !== k * module.rank || module.b.length !== module.rank * n) {
        throw new Error(`the adapter's ${module.layer}.${module.projection} (rank ${module.rank}) does not fit this model's ${k}x${n} projection`);
      }
      this.#modules.set(projectionWeightName(module.layer, module.projection), module);
    }
  }

  has(name: string): boolean {
    return this.#base.has(name);
  }

  read(name: string): Float32Array {
    const weight = this.#base.read(name);
    const module = this.#modules.get(name);
    return module ? foldLora(weight, module, projectionShape(this.config, module.projection)) : weight;
  }

  digest(): string {
    return createHash('sha256').update(`merged\0${this.#base.digest()}\0${this.#adapterDigest}`).digest('hex');
  }
}

/**
 * `W + (a·b)ᵀ` as a new array, for `W` `[n, k]` (`[out, in]`), `a` `[k, r]`, `b` `[r, n]`: per element
 * `W[o, i] + Σ_r a[i, r] · b[r, o]`. The sum and the addition run in float64, which is what JS arithmetic is anyway,
 * and each merged weight is rounded to fp32 once, when stored: the nearest fp32 to the exact merged value.
 */
export function foldLora(weight: Float32Array, module: Pick<LoraModule, 'rank' | 'a' | 'b'>, [k, n]: [number, number]): Float32Array {
  const { rank } = module;
  const a = widen(module.a);
  const b = widen(module.b);
  const out = new Float32Array(n * k);
  const column = new Float64Array(rank);
  for (let o = 0; o < n; o++) {
    for (let r = 0; r < rank; r++) column[r] = b[r * n + o];
    const row = o * k;
    for (let i = 0; i < k; i++) {
      let delta = 0;
      for (let r = 0, at = i * rank; r < rank; r++, at++) delta += a[at] * column[r];
      out[row + i] = weight[row + i] + delta;
    }
  }
  return out;
}

/** fp32 values of an adapter tensor held as fp32 or as fp16 bit patterns. */
function widen(t: LoraTensor): Float32Array {
  return t instanceof Float32Array ? t : Float32Array.from(t, f16Value);
}
