import { availableParallelism } from 'node:os';
import { delimiter } from 'node:path';
import { parseArgs } from 'node:util';
import type { RuntimeChoice } from './model/load-model.js';
import { RUNTIME_CHOICES } from './model/load-model.js';
import type { Quantization } from './model/quantizer.js';
import { QUANTIZATIONS } from './model/quantizer.js';
import type { OptionSpec, Raw } from './setting-reader.js';
import { ConfigError, SettingReader, deepFreeze } from './setting-reader.js';

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
  /** Most time a client may take to send one request, headers and body, in milliseconds; slower ones get 408. */
  requestTimeoutMs: number;
  /** How long a keep-alive connection may stay idle between requests before it is closed, in milliseconds. */
  keepAliveTimeoutMs: number;
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
  /** 'auto': the native runtime where it can be loaded, else stock (with a log line saying why); or forced. */
  runtime: RuntimeChoice;
}

/** Batching and admission. */
export interface SchedulerConfig {
  /** Most sequences running at once. */
  maxBatch: number;
  /** Most requests waiting to start; beyond it requests get 429. */
  maxWaiting: number;
  /** Most prompt tokens of one sequence computed per step. */
  prefillChunk: number;
  /** Most tokens computed per step: one per decoding sequence, the rest for prompt chunks; null: prefillChunk + maxBatch. */
  maxBatchedTokens: number | null;
  /** Host memory for the prefix cache's KV blocks; 0 turns it off. */
  prefixCacheBytes: number;
  /** A request whose adapter gets no slot this long after arrival fails with adapter_unavailable (503), in milliseconds. */
  adapterWaitTimeoutMs: number;
}

export interface AdapterPreload {
  name: string;
  path: string;
}

/** Adapter roots, preloads and tiers. */
export interface AdapterConfig {
  /** Preloaded adapters to merge into sessions of their own at startup (`--merge`). */
  merge: string[];
  /** Most adapters merged at once (`--max-merged`); 0 turns merging off. */
  maxMerged: number;
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
  /** Longest one adapter load from disk may take before it fails, in milliseconds. */
  loadTimeoutMs: number;
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
  {
    flag: 'merge', env: 'LORASERVE_MERGE', arg: 'NAME', multiple: true,
    help: 'serve this --adapter from a session with its weights merged in (built in the background; it serves unmerged until then), repeatable (env: comma-separated)',
  },
  { flag: 'max-merged', env: 'LORASERVE_MAX_MERGED', arg: 'N', default: '1', help: 'most adapters merged at once, each a full copy of the quantized weights in memory (0 turns merging off)' },
  { flag: 'max-cpu-lora-bytes', env: 'LORASERVE_MAX_CPU_LORA_BYTES', arg: 'SIZE', default: '1GiB', help: 'host-memory budget for loaded adapters (bytes, or with K/M/G/KiB/MiB/GiB, all ×1024)' },
  { flag: 'adapter-load-timeout', env: 'LORASERVE_ADAPTER_LOAD_TIMEOUT', arg: 'SECONDS', default: '30', help: 'longest one adapter load from disk may take; then it fails with adapter_invalid' },
  { flag: 'context-length', env: 'LORASERVE_CONTEXT_LENGTH', arg: 'N', help: `tokens per sequence, prompt and output (default: the model's, at most ${DEFAULT_CONTEXT_LENGTH})` },
  { flag: 'max-batch', env: 'LORASERVE_MAX_BATCH', arg: 'N', default: '16', help: 'most sequences running at once' },
  { flag: 'max-waiting', env: 'LORASERVE_MAX_WAITING', arg: 'N', default: '256', help: 'most requests waiting to start (more get 429), and so the most generations (prompts × n) one request may ask for' },
  { flag: 'prefill-chunk', env: 'LORASERVE_PREFILL_CHUNK', arg: 'N', default: '512', help: 'most prompt tokens of one request computed per step (chunked prefill)' },
  {
    flag: 'max-batched-tokens', env: 'LORASERVE_MAX_BATCHED_TOKENS', arg: 'N', default: '--prefill-chunk + --max-batch',
    help: 'token budget of one step: every decoding request takes one, waiting and prefilling prompts share the rest in arrival order (bounds how long a step stalls running streams); must be above --max-batch',
  },
  {
    flag: 'prefix-cache-bytes', env: 'LORASERVE_PREFIX_CACHE_BYTES', arg: 'SIZE', default: '1GiB',
    help: 'host memory for cached prompt-prefix KV blocks (16 tokens each, keyed by model build, adapter content, cache_salt and tokens); 0 turns the prefix cache off',
  },
  {
    flag: 'adapter-wait-timeout', env: 'LORASERVE_ADAPTER_WAIT_TIMEOUT', arg: 'SECONDS', default: '60',
    help: "how long a request may wait for its adapter's slot before it fails with 503 adapter_unavailable",
  },
  { flag: 'threads', env: 'LORASERVE_THREADS', arg: 'N', default: 'all cores', help: 'ONNX Runtime threads' },
  {
    flag: 'runtime', env: 'LORASERVE_RUNTIME', arg: 'R', default: 'auto',
    help: "auto | native | stock: native is the project's binding (LoRA kernels, KV cache in place); auto falls back to stock (onnxruntime-node) where native cannot load",
  },
  { flag: 'api-key', env: 'LORASERVE_API_KEY', arg: 'KEY', help: 'require "Authorization: Bearer KEY" on inference routes' },
  { flag: 'admin-key', env: 'LORASERVE_ADMIN_KEY', arg: 'KEY', help: 'require this key for adapter management (default: the API key)' },
  { flag: 'body-limit', env: 'LORASERVE_BODY_LIMIT', arg: 'SIZE', default: '4MiB', help: 'largest request body' },
  {
    flag: 'request-timeout', env: 'LORASERVE_REQUEST_TIMEOUT', arg: 'SECONDS', default: '30',
    help: 'most time a client may take to send a request, headers and body; a slower one gets 408 and its connection is closed (checked every second)',
  },
  {
    flag: 'keep-alive-timeout', env: 'LORASERVE_KEEP_ALIVE_TIMEOUT', arg: 'SECONDS', default: '5',
    help: "how long an idle keep-alive connection stays open (behind a load balancer, set it above the balancer's idle timeout)",
  },
  { flag: 'shutdown-timeout', env: 'LORASERVE_SHUTDOWN_TIMEOUT', arg: 'SECONDS', default: '30', help: 'on SIGTERM/SIGINT, how long in-flight requests may finish before they are ended' },
  { flag: 'cache-dir', env: 'LORASERVE_CACHE_DIR', arg: 'DIR', default: '~/.cache/loraserve', help: 'where built models are cached' },
  { flag: 'log-level', env: 'LORASERVE_LOG_LEVEL', arg: 'LEVEL', default: 'info', help: 'fatal | error | warn | info | debug | trace | silent' },
];

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
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
  const read = new SettingReader(values, env, SERVE_OPTIONS);

  const modelDir = read.string('model');
  const config: ServeConfig = {
    http: {
      host: read.string('host') ?? '127.0.0.1',
      port: read.integer('port', 0, 65535) ?? 8000,
      apiKey: read.secret('api-key'),
      adminKey: read.secret('admin-key'),
      bodyLimit: read.size('body-limit', 1024) ?? 4 * 1024 ** 2,
      requestTimeoutMs: (read.number('request-timeout', 1) ?? 30) * 1000,
      keepAliveTimeoutMs: (read.number('keep-alive-timeout', 1) ?? 5) * 1000,
      shutdownTimeoutMs: (read.number('shutdown-timeout', 0) ?? 30) * 1000,
      logLevel: read.choice('log-level', LOG_LEVELS) ?? 'info',
    },
    model: {
      modelDir: modelDir === null ? null : read.directory('model', modelDir, 'config.json'),
      servedModelName: read.string('served-model-name'),
      quantization: (read.choice('quant', QUANTIZATIONS) ?? 'int4') as Quantization,
      threads: read.integer('threads', 1) ?? availableParallelism(),
      runtime: (read.choice('runtime', RUNTIME_CHOICES) ?? 'auto') as RuntimeChoice,
      contextLength: read.integer('context-length', 2),
      cacheDir: read.string('cache-dir'),
    },
    scheduler: {
      maxBatch: read.integer('max-batch', 1) ?? 16,
      maxWaiting: read.integer('max-waiting', 1) ?? 256,
      prefillChunk: read.integer('prefill-chunk', 1) ?? 512,
      maxBatchedTokens: read.integer('max-batched-tokens', 2),
      prefixCacheBytes: read.size('prefix-cache-bytes', 0) ?? 1024 ** 3,
      adapterWaitTimeoutMs: (read.number('adapter-wait-timeout', 0) ?? 60) * 1000,
    },
    adapters: {
      dirs: read.list('adapter-dir', delimiter).map((dir) => read.directory('adapter-dir', dir)),
      preload: read.list('adapter', ',').map((spec) => preload(read, spec)),
      maxLoras: read.integer('max-loras', 0) ?? 8,
      maxLoraRank: read.integer('max-lora-rank', 1) ?? 16,
      maxCpuLoraBytes: read.size('max-cpu-lora-bytes', 0) ?? 1024 ** 3,
      merge: read.list('merge', ','),
      maxMerged: read.integer('max-merged', 0) ?? 1,
      loadTimeoutMs: (read.number('adapter-load-timeout', 0.01) ?? 30) * 1000,
    },
  };
  checkCrossFields(config);
  return deepFreeze(config);
}

function checkCrossFields(config: ServeConfig): void {
  const { adapters, http, scheduler } = config;
  if (scheduler.maxBatchedTokens !== null && scheduler.maxBatchedTokens <= scheduler.maxBatch) {
    throw new ConfigError(`--max-batched-tokens (${scheduler.maxBatchedTokens}) must be above --max-batch (${scheduler.maxBatch}), so prompts get tokens while every row decodes`);
  }
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
  for (const name of adapters.merge) if (!names.has(name)) throw new ConfigError(`--merge ${name}: no --adapter ${name}=DIR is given`);
  if (adapters.merge.length > adapters.maxMerged) throw new ConfigError(`--merge names ${adapters.merge.length} adapters but --max-merged is ${adapters.maxMerged}`);
  if (config.model.servedModelName !== null && names.has(config.model.servedModelName)) {
    throw new ConfigError(`--adapter ${config.model.servedModelName} has the base model's name (--served-model-name)`);
  }
  if (http.apiKey !== null && http.adminKey !== null && http.apiKey === http.adminKey) {
    throw new ConfigError('--admin-key must differ from --api-key (or be left unset to share it)');
  }
}

/** `NAME=DIR` of --adapter: a valid adapter name and an existing adapter directory. */
function preload(read: SettingReader, spec: string): AdapterPreload {
  const eq = spec.indexOf('=');
  const name = spec.slice(0, eq);
  if (eq <= 0 || eq === spec.length - 1) read.fail('adapter', `must be NAME=DIR (found ${JSON.stringify(spec)})`);
  if (!ADAPTER_NAME.test(name)) read.fail('adapter', `name ${JSON.stringify(name)} must be letters, digits, '.', '_', '-' and '/' between segments`);
  return { name, path: read.directory('adapter', spec.slice(eq + 1), 'adapter_config.json') };
}
