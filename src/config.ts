import { existsSync, readFileSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Quantization } from './model/quantizer.js';
import { QUANTIZATIONS } from './model/quantizer.js';

/** HTTP listener, keys and limits. */
export interface HttpConfig {
  /** Interface to listen on. */
  host: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Bearer key for the inference routes; null leaves them open. */
  apiKey: string | null;
  /** Bearer key for adapter management; null falls back to `apiKey`. */
  adminKey: string | null;
  /** Largest request body, in bytes. */
  bodyLimit: number;
  /** On SIGTERM/SIGINT, how long in-flight requests may run before they are ended, in milliseconds. */
  shutdownTimeoutMs: number;
  /** pino level: fatal, error, warn, info, debug, trace or silent. */
  logLevel: string;
}

/** The base model and how it is built. */
export interface ModelSettings {
  /** Hugging Face checkpoint directory; null serves the default model (models/demo, else a synthesized tiny one). */
  modelDir: string | null;
  /** Name clients use for the base model; null: the checkpoint directory's name. */
  servedModelName: string | null;
  quantization: Quantization;
  /** ONNX Runtime intra-op threads. */
  threads: number;
  /** Tokens per sequence (prompt + output); null: the model's context, at most DEFAULT_CONTEXT_LENGTH. */
  contextLength: number | null;
  /** Build cache root; null: `defaultCacheRoot()`. */
  cacheDir: string | null;
}

/** Batching and admission. */
export interface SchedulerConfig {
  /** Most sequences running at once. */
  maxBatch: number;
  /** Most requests waiting to start; beyond it requests get 429. */
  maxWaiting: number;
  /** Most prompt tokens prefilled per step. */
  prefillChunk: number;
}

export interface AdapterPreload {
  name: string;
  path: string;
}

/** Adapter roots, preloads and tiers. */
export interface AdapterConfig {
  /** Roots that registration paths must resolve inside, and where unknown model names are looked up. */
  dirs: string[];
  /** Adapters registered at startup. */
  preload: AdapterPreload[];
  /** Adapter slots in the graph (distinct adapters per batch); 0 disables LoRA. */
  maxLoras: number;
  /** Largest adapter rank accepted. */
  maxLoraRank: number;
  /** Host-memory budget for loaded adapters, in bytes. */
  maxCpuLoraBytes: number;
}

/** Everything `loraserve serve` is configured with; validated once, then frozen. */
export interface ServeConfig {
  http: HttpConfig;
  model: ModelSettings;
  scheduler: SchedulerConfig;
  adapters: AdapterConfig;
}

/** Cap on the default context length, so a long-context model does not reserve KV rows for 128k tokens. */
export const DEFAULT_CONTEXT_LENGTH = 4096;

/** A bad flag or environment value: the message names it and says what is expected. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

type Raw = string | string[] | boolean | undefined;

interface OptionSpec {
  flag: string;
  /** Environment variable (LORASERVE_…). */
  env: string;
  /** VALUE placeholder in --help; absent for a switch. */
  arg?: string;
  multiple?: boolean;
  /** Shown in --help. */
  default?: string;
  help: string;
}

/** Every setting of `loraserve serve`: the parser, --help and the README table are all read from this list. */
export const SERVE_OPTIONS: readonly OptionSpec[] = [
  { flag: 'model', env: 'LORASERVE_MODEL', arg: 'DIR', help: 'Hugging Face checkpoint directory (default: models/demo, else a synthesized tiny model)' },
  { flag: 'served-model-name', env: 'LORASERVE_SERVED_MODEL_NAME', arg: 'NAME', help: "the base model's name in requests and /v1/models (default: the checkpoint directory's name)" },
  { flag: 'quant', env: 'LORASERVE_QUANT', arg: 'Q', default: 'int4', help: `weight quantization: ${QUANTIZATIONS.join(' | ')}` },
  { flag: 'host', env: 'LORASERVE_HOST', arg: 'HOST', default: '127.0.0.1', help: 'interface to listen on (0.0.0.0 for all)' },
  { flag: 'port', env: 'LORASERVE_PORT', arg: 'PORT', default: '8000', help: 'TCP port (0 picks a free one)' },
  {
    flag: 'adapter-dir', env: 'LORASERVE_ADAPTER_DIR', arg: 'DIR', multiple: true,
    help: `adapter root, repeatable (env: separated by "${delimiter}"): registration paths must lie inside a root, and a model name that is a directory under a root is loaded on first use (default without --model: adapters/)`,
  },
  {
    flag: 'adapter', env: 'LORASERVE_ADAPTER', arg: 'NAME=DIR', multiple: true,
    help: 'register an adapter at startup, repeatable (env: comma-separated) (default without --model: every adapter under adapters/)',
  },
  { flag: 'max-loras', env: 'LORASERVE_MAX_LORAS', arg: 'N', default: '8', help: 'adapter slots: the most distinct adapters in one batch (0 disables adapters)' },
  { flag: 'max-lora-rank', env: 'LORASERVE_MAX_LORA_RANK', arg: 'R', default: '16', help: 'largest adapter rank accepted' },
  { flag: 'max-cpu-lora-bytes', env: 'LORASERVE_MAX_CPU_LORA_BYTES', arg: 'SIZE', default: '1GiB', help: 'host-memory budget for loaded adapters (bytes, or with K/M/G/KiB/MiB/GiB, all ×1024)' },
  { flag: 'context-length', env: 'LORASERVE_CONTEXT_LENGTH', arg: 'N', help: `tokens per sequence, prompt and output (default: the model's, at most ${DEFAULT_CONTEXT_LENGTH})` },
  { flag: 'max-batch', env: 'LORASERVE_MAX_BATCH', arg: 'N', default: '16', help: 'most sequences running at once' },
  { flag: 'max-waiting', env: 'LORASERVE_MAX_WAITING', arg: 'N', default: '256', help: 'most requests waiting to start; more get 429' },
  { flag: 'prefill-chunk', env: 'LORASERVE_PREFILL_CHUNK', arg: 'N', default: '512', help: 'most prompt tokens prefilled per step' },
  { flag: 'threads', env: 'LORASERVE_THREADS', arg: 'N', default: 'all cores', help: 'ONNX Runtime threads' },
  { flag: 'api-key', env: 'LORASERVE_API_KEY', arg: 'KEY', help: 'require "Authorization: Bearer KEY" on inference routes' },
  { flag: 'admin-key', env: 'LORASERVE_ADMIN_KEY', arg: 'KEY', help: 'require this key for adapter management (default: the API key)' },
  { flag: 'body-limit', env: 'LORASERVE_BODY_LIMIT', arg: 'SIZE', default: '4MiB', help: 'largest request body' },
  { flag: 'shutdown-timeout', env: 'LORASERVE_SHUTDOWN_TIMEOUT', arg: 'SECONDS', default: '30', help: 'on SIGTERM/SIGINT, how long in-flight requests may finish before they are ended' },
  { flag: 'cache-dir', env: 'LORASERVE_CACHE_DIR', arg: 'DIR', default: '~/.cache/loraserve', help: 'where built models are cached' },
  { flag: 'log-level', env: 'LORASERVE_LOG_LEVEL', arg: 'LEVEL', default: 'info', help: 'fatal | error | warn | info | debug | trace | silent' },
];

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, K: 1024, KIB: 1024, M: 1024 ** 2, MIB: 1024 ** 2, G: 1024 ** 3, GIB: 1024 ** 3 };
/** As AdapterName in openapi.yaml. */
export const ADAPTER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;

/** The help text of `loraserve serve`, generated from SERVE_OPTIONS. */
export function serveHelp(): string {
  const rows = SERVE_OPTIONS.map((o) => {
    const left = `  --${o.flag}${o.arg ? ` ${o.arg}` : ''}`;
    const tail = `${o.default ? ` (default: ${o.default})` : ''} [${o.env}]`;
    return `${left.padEnd(30)} ${o.help}${tail}`;
  });
  return [
    'usage: loraserve serve [options]',
    '',
    'Serves one base model and its LoRA adapters over HTTP (OpenAI-compatible, TGI-style, adapter management, /metrics, /docs).',
    'Every option can also be set by the environment variable in brackets; a flag wins over the environment.',
    '',
    'options:',
    ...rows,
    `  ${'--help'.padEnd(28)} show this help`,
    '',
  ].join('\n');
}

/**
 * Reads `loraserve serve` flags, then LORASERVE_* variables for what the flags leave unset, and validates the result
 * (paths exist, numbers are in range, cross-field rules). Throws ConfigError naming the first bad setting.
 */
export function parseServeConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ServeConfig {
  let values: Record<string, Raw>;
  try {
    values = parseArgs({
      args: [...argv],
      options: Object.fromEntries(SERVE_OPTIONS.map((o) => [o.flag, { type: 'string' as const, multiple: o.multiple ?? false }])),
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    throw new ConfigError(err instanceof Error ? err.message : String(err));
  }
  const read = new SettingReader(values, env);

  const modelDir = read.string('model');
  const config: ServeConfig = {
    http: {
      host: read.string('host') ?? '127.0.0.1',
      port: read.integer('port', 0, 65535) ?? 8000,
      apiKey: read.secret('api-key'),
      adminKey: read.secret('admin-key'),
      bodyLimit: read.size('body-limit', 1024) ?? 4 * 1024 ** 2,
      shutdownTimeoutMs: (read.number('shutdown-timeout', 0) ?? 30) * 1000,
      logLevel: read.choice('log-level', LOG_LEVELS) ?? 'info',
    },
    model: {
      modelDir: modelDir === null ? null : read.directory('model', modelDir, 'config.json'),
      servedModelName: read.string('served-model-name'),
      quantization: (read.choice('quant', QUANTIZATIONS) ?? 'int4') as Quantization,
      threads: read.integer('threads', 1) ?? availableParallelism(),
      contextLength: read.integer('context-length', 2),
      cacheDir: read.string('cache-dir'),
    },
    scheduler: {
      maxBatch: read.integer('max-batch', 1) ?? 16,
      maxWaiting: read.integer('max-waiting', 1) ?? 256,
      prefillChunk: read.integer('prefill-chunk', 1) ?? 512,
    },
    adapters: {
      dirs: read.list('adapter-dir', delimiter).map((dir) => read.directory('adapter-dir', dir)),
      preload: read.list('adapter', ',').map((spec) => read.preload(spec)),
      maxLoras: read.integer('max-loras', 0) ?? 8,
      maxLoraRank: read.integer('max-lora-rank', 1) ?? 16,
      maxCpuLoraBytes: read.size('max-cpu-lora-bytes', 0) ?? 1024 ** 3,
    },
  };
  checkCrossFields(config);
  return deepFreeze(config);
}

function checkCrossFields(config: ServeConfig): void {
  const { adapters, http } = config;
  if (adapters.maxLoras > 0 && adapters.maxCpuLoraBytes === 0) {
    throw new ConfigError('--max-cpu-lora-bytes must be above 0 while adapters are enabled (--max-loras > 0)');
  }
  if (adapters.maxLoras === 0 && adapters.preload.length > 0) {
    throw new ConfigError(`--adapter ${adapters.preload[0].name}=… needs adapters enabled, but --max-loras is 0`);
  }
  const names = new Set<string>();
  for (const { name } of adapters.preload) {
    if (names.has(name)) throw new ConfigError(`--adapter ${name} is given twice`);
    names.add(name);
  }
  if (config.model.servedModelName !== null && names.has(config.model.servedModelName)) {
    throw new ConfigError(`--adapter ${config.model.servedModelName} has the base model's name (--served-model-name)`);
  }
  if (http.apiKey !== null && http.adminKey !== null && http.apiKey === http.adminKey) {
    throw new ConfigError('--admin-key must differ from --api-key (or be left unset to share it)');
  }
}

/** Reads one setting from the flags, else from the environment, and names both in errors. */
class SettingReader {
  readonly #values: Record<string, Raw>;
  readonly #env: NodeJS.ProcessEnv;

  constructor(values: Record<string, Raw>, env: NodeJS.ProcessEnv) {
    this.#values = values;
    this.#env = env;
  }

  string(flag: string): string | null {
    const value = this.#values[flag];
    if (typeof value === 'string') return value;
    const fromEnv = this.#env[optionSpec(flag).env];
    return fromEnv === undefined || fromEnv === '' ? null : fromEnv;
  }

  list(flag: string, envSeparator: string): string[] {
    const value = this.#values[flag];
    if (Array.isArray(value)) return value;
    const fromEnv = this.#env[optionSpec(flag).env];
    return fromEnv ? fromEnv.split(envSeparator).map((s) => s.trim()).filter((s) => s.length > 0) : [];
  }

  secret(flag: string): string | null {
    const value = this.string(flag);
    if (value !== null && value.trim() !== value) this.#fail(flag, 'must not start or end with whitespace');
    return value;
  }

  number(flag: string, min: number): number | null {
    const text = this.string(flag);
    if (text === null) return null;
    const value = Number(text);
    if (text.trim() === '' || !Number.isFinite(value) || value < min) this.#fail(flag, `must be a number >= ${min} (found ${JSON.stringify(text)})`);
    return value;
  }

  integer(flag: string, min: number, max = Number.MAX_SAFE_INTEGER): number | null {
    const text = this.string(flag);
    if (text === null) return null;
    const value = Number(text);
    if (!/^\d+$/.test(text.trim()) || value < min || value > max) {
      this.#fail(flag, `must be an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? '∞' : max}] (found ${JSON.stringify(text)})`);
    }
    return value;
  }

  size(flag: string, min: number): number | null {
    const text = this.string(flag);
    if (text === null) return null;
    const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
    const unit = match ? SIZE_UNITS[match[2].toUpperCase()] : undefined;
    if (!match || unit === undefined) this.#fail(flag, `must be a size like 1073741824, 512M or 1GiB (found ${JSON.stringify(text)})`);
    const bytes = Math.floor(Number(match?.[1]) * (unit ?? 1));
    if (bytes < min) this.#fail(flag, `must be at least ${min} bytes (found ${JSON.stringify(text)})`);
    return bytes;
  }

  choice(flag: string, choices: readonly string[]): string | null {
    const value = this.string(flag);
    if (value !== null && !choices.includes(value)) this.#fail(flag, `must be one of ${choices.join(', ')} (found ${JSON.stringify(value)})`);
    return value;
  }

  /** An existing directory (holding `marker` when given), as an absolute path. */
  directory(flag: string, dir: string, marker?: string): string {
    const path = resolve(dir);
    if (!existsSync(path) || !statSync(path).isDirectory()) this.#fail(flag, `${path} is not a directory`);
    if (marker && !existsSync(join(path, marker))) this.#fail(flag, `${path} has no ${marker}`);
    return path;
  }

  preload(spec: string): AdapterPreload {
    const eq = spec.indexOf('=');
    const name = spec.slice(0, eq);
    if (eq <= 0 || eq === spec.length - 1) this.#fail('adapter', `must be NAME=DIR (found ${JSON.stringify(spec)})`);
    if (!ADAPTER_NAME.test(name)) this.#fail('adapter', `name ${JSON.stringify(name)} must be letters, digits, '.', '_', '-' and '/' between segments`);
    return { name, path: this.directory('adapter', spec.slice(eq + 1), 'adapter_config.json') };
  }

  #fail(flag: string, problem: string): never {
    const spec = optionSpec(flag);
    const source = this.#values[flag] !== undefined ? `--${flag}` : spec.env;
    throw new ConfigError(`${source} ${problem}`);
  }
}

function optionSpec(flag: string): OptionSpec {
  const spec = SERVE_OPTIONS.find((o) => o.flag === flag);
  if (!spec) throw new Error(`no option --${flag}`);
  return spec;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/** The directory holding loraserve's package.json (for openapi.yaml, models/ and adapters/), from sources or dist/. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'loraserve') return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no loraserve package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}
