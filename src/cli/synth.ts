import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { PROJECTIONS } from '../model/model-config.js';
import type { Architecture } from '../model/model-config.js';
import { synthAdapter } from '../synth/adapter-synth.js';
import { synthCheckpoint } from '../synth/checkpoint-synth.js';
import { PRESETS } from '../synth/presets.js';
import type { TokenizerKind } from '../synth/presets.js';
import type { SafetensorsDtype } from '../synth/safetensors-writer.js';

const ARCHITECTURES = Object.keys(PRESETS) as Architecture[];
const TOKENIZERS: TokenizerKind[] = ['byte', 'qwen', 'llama3'];
const DTYPES: Readonly<Record<string, SafetensorsDtype>> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

const presetList = ARCHITECTURES.map((arch) => `${arch}: ${Object.keys(PRESETS[arch]).join(', ')}`).join('; ');

const HELP = `usage: loraserve synth model --out DIR --arch ARCH [options]
       loraserve synth adapter --out DIR --base DIR [options]

Writes deterministic random fixtures: a Hugging Face checkpoint directory, or a PEFT LoRA adapter for one.
The same options always give byte-identical files.

synth model:
  --out DIR            directory to write (created if missing)
  --arch ARCH          ${ARCHITECTURES.join(' | ')}
  --preset NAME        model shape (default tiny); ${presetList}
  --seed N             random seed (default 0)
  --dtype D            f32 | f16 | bf16 (default f32)
  --tokenizer T        byte | qwen | llama3 (default: the preset's)
  --shard-mb N         split the weights into shards of at most N MiB, with model.safetensors.index.json

synth adapter:
  --out DIR            directory to write (created if missing)
  --base DIR           checkpoint directory the adapter is for (its config.json gives the shapes)
  --rank N             LoRA rank r (default 8)
  --alpha N            lora_alpha (default 16)
  --targets LIST       comma-separated projections or "all" (default q_proj,v_proj); all = ${PROJECTIONS.join(',')}
  --seed N             random seed (default 0)
  --dtype D            f32 | f16 | bf16 (default f32)
  --rslora             use_rslora: scale alpha/sqrt(r) instead of alpha/r
  --layers LIST        comma-separated layer indices (layers_to_transform; default all)
`;

const MODEL_OPTIONS = {
  out: { type: 'string' },
  arch: { type: 'string' },
  preset: { type: 'string', default: 'tiny' },
  seed: { type: 'string', default: '0' },
  dtype: { type: 'string', default: 'f32' },
  tokenizer: { type: 'string' },
  'shard-mb': { type: 'string' },
  help: { type: 'boolean', default: false },
} as const satisfies ParseArgsConfig['options'];

const ADAPTER_OPTIONS = {
  out: { type: 'string' },
  base: { type: 'string' },
  rank: { type: 'string', default: '8' },
  alpha: { type: 'string', default: '16' },
  targets: { type: 'string', default: 'q_proj,v_proj' },
  seed: { type: 'string', default: '0' },
  dtype: { type: 'string', default: 'f32' },
  rslora: { type: 'boolean', default: false },
  layers: { type: 'string' },
  help: { type: 'boolean', default: false },
} as const satisfies ParseArgsConfig['options'];

/** A usage error: printed with the help text, exit status 2. */
class UsageError extends Error {}

/** `loraserve synth …`; `argv` is what follows `synth`. Returns the exit status. */
export async function synthCommand(argv: string[]): Promise<number> {
  const [kind, ...rest] = argv;
  try {
    if (kind === 'model') return synthModel(rest);
    if (kind === 'adapter') return synthAdapterCommand(rest);
    if (kind === '--help' || kind === '-h') {
      process.stdout.write(HELP);
      return 0;
    }
    throw new UsageError(kind === undefined ? 'say what to write: model or adapter' : `unknown fixture kind ${JSON.stringify(kind)} (expected model or adapter)`);
  } catch (err) {
    // parseArgs reports unknown or malformed flags with ERR_PARSE_ARGS_* codes.
    const code = (err as { code?: unknown }).code;
    if (err instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`loraserve synth: ${(err as Error).message}\n\n${HELP}`);
      return 2;
    }
    throw err;
  }
}

function synthModel(argv: string[]): number {
  const { values } = parseArgs({ args: argv, options: MODEL_OPTIONS, strict: true });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const out = required(values.out, '--out');
  const arch = oneOf(required(values.arch, '--arch'), ARCHITECTURES, '--arch');
  if (!Object.hasOwn(PRESETS[arch], values.preset)) {
    throw new UsageError(`--preset: ${arch} has no preset ${JSON.stringify(values.preset)} (presets: ${Object.keys(PRESETS[arch]).join(', ')})`);
  }
  const shardMb = values['shard-mb'] === undefined ? undefined : positiveNumber(values['shard-mb'], '--shard-mb');
  synthCheckpoint(out, {
    architecture: arch,
    preset: values.preset,
    seed: seed(values.seed),
    dtype: dtype(values.dtype),
    tokenizer: values.tokenizer === undefined ? undefined : oneOf(values.tokenizer, TOKENIZERS, '--tokenizer'),
    shardBytes: shardMb === undefined ? undefined : Math.floor(shardMb * 1024 * 1024),
  });
  process.stdout.write(`wrote ${arch} ${values.preset} checkpoint to ${out}\n`);
  return 0;
}

function synthAdapterCommand(argv: string[]): number {
  const { values } = parseArgs({ args: argv, options: ADAPTER_OPTIONS, strict: true });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const out = required(values.out, '--out');
  const base = required(values.base, '--base');
  const rank = positiveNumber(values.rank, '--rank');
  if (!Number.isInteger(rank)) throw new UsageError(`--rank must be a positive integer (found ${values.rank})`);
  const targets = values.targets === 'all' ? [...PROJECTIONS] : list(values.targets).map((t) => oneOf(t, PROJECTIONS, '--targets'));
  const layers = values.layers === undefined ? undefined : list(values.layers).map((l) => {
    const layer = Number(l);
    if (!Number.isSafeInteger(layer) || layer < 0) throw new UsageError(`--layers must be comma-separated non-negative integers (found ${JSON.stringify(l)})`);
    return layer;
  });
  synthAdapter(out, base, {
    rank,
    alpha: positiveNumber(values.alpha, '--alpha'),
    targetModules: targets,
    seed: seed(values.seed),
    dtype: dtype(values.dtype),
    useRslora: values.rslora,
    layersToTransform: layers,
  });
  process.stdout.write(`wrote rank-${rank} adapter for ${base} to ${out}\n`);
  return 0;
}

function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`${flag} is required`);
  return value;
}

function oneOf<T extends string>(value: string, allowed: readonly T[], flag: string): T {
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`${flag} must be one of ${allowed.join(', ')} (found ${JSON.stringify(value)})`);
  return value as T;
}

function positiveNumber(value: string, flag: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} must be a positive number (found ${JSON.stringify(value)})`);
  return n;
}

function seed(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isSafeInteger(n) || n < 0) throw new UsageError(`--seed must be a non-negative integer (found ${JSON.stringify(value)})`);
  return n;
}

function dtype(value: string): SafetensorsDtype {
  return DTYPES[oneOf(value.toLowerCase(), Object.keys(DTYPES), '--dtype')];
}

function list(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter((s) => s !== '');
}
