import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SERVE_OPTIONS, parseServeConfig, serveHelp } from '../../src/config.js';
import { ConfigError } from '../../src/setting-reader.js';

const dir = mkdtempSync(join(tmpdir(), 'loraserve-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const model = join(dir, 'model');
const rootA = join(dir, 'root-a');
const rootB = join(dir, 'root-b');
const adapter = join(rootA, 'sql');
for (const d of [model, rootB, adapter]) mkdirSync(d, { recursive: true });
writeFileSync(join(model, 'config.json'), '{}');
writeFileSync(join(adapter, 'adapter_config.json'), '{}');

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseServeConfig(argv, env);
const failure = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
  try {
    parse(argv, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
};

describe('parseServeConfig', () => {
  it('has documented defaults and no model (the default run)', () => {
    const c = parse([]);
    expect(c.http).toMatchObject({ host: '127.0.0.1', port: 8000, apiKey: null, adminKey: null, bodyLimit: 4 * 1024 ** 2, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5_000, shutdownTimeoutMs: 30_000, logLevel: 'info' });
    expect(c.model).toMatchObject({ modelDir: null, servedModelName: null, quantization: 'int4', contextLength: null, cacheDir: null, runtime: 'auto' });
    expect(c.model.threads).toBeGreaterThan(0);
    expect(c.scheduler).toEqual({ maxBatch: 16, maxWaiting: 256, prefillChunk: 512, maxBatchedTokens: null, prefixCacheBytes: 1024 ** 3, adapterWaitTimeoutMs: 60_000 });
    expect(c.adapters).toEqual({ dirs: [], preload: [], merge: [], maxMerged: 1, maxLoras: 8, maxLoraRank: 16, maxCpuLoraBytes: 1024 ** 3, loadTimeoutMs: 30_000 });
  });

  it('reads every flag', () => {
    const c = parse([
      '--model', model, '--served-model-name', 'base', '--quant', 'fp32', '--host', '0.0.0.0', '--port', '9000',
      '--adapter-dir', rootA, '--adapter-dir', rootB, '--adapter', `sql=${adapter}`, '--max-loras', '2', '--max-lora-rank', '64',
      '--max-cpu-lora-bytes', '512MiB', '--merge', 'sql', '--max-merged', '2', '--adapter-load-timeout', '12', '--context-length', '256', '--max-batch', '4', '--max-waiting', '3', '--prefill-chunk', '64', '--max-batched-tokens', '80', '--prefix-cache-bytes', '64MiB', '--adapter-wait-timeout', '2.5',
      '--threads', '2', '--runtime', 'stock', '--api-key', 'k1', '--admin-key', 'k2', '--body-limit', '64K', '--request-timeout', '10', '--keep-alive-timeout', '75', '--shutdown-timeout', '1.5',
      '--cache-dir', dir, '--log-level', 'warn',
    ]);
    expect(c).toEqual({
      http: { host: '0.0.0.0', port: 9000, apiKey: 'k1', adminKey: 'k2', bodyLimit: 65536, requestTimeoutMs: 10_000, keepAliveTimeoutMs: 75_000, shutdownTimeoutMs: 1500, logLevel: 'warn' },
      model: { modelDir: model, servedModelName: 'base', quantization: 'fp32', threads: 2, contextLength: 256, cacheDir: dir, runtime: 'stock' },
      scheduler: { maxBatch: 4, maxWaiting: 3, prefillChunk: 64, maxBatchedTokens: 80, prefixCacheBytes: 64 * 1024 ** 2, adapterWaitTimeoutMs: 2500 },
      adapters: { dirs: [rootA, rootB], preload: [{ name: 'sql', path: adapter }], merge: ['sql'], maxMerged: 2, maxLoras: 2, maxLoraRank: 64, maxCpuLoraBytes: 512 * 1024 ** 2, loadTimeoutMs: 12_000 },
    });
  });

  it('takes LORASERVE_* variables for what the flags leave unset, flags winning', () => {
    const env = {
      LORASERVE_MODEL: model, LORASERVE_PORT: '7000', LORASERVE_API_KEY: 'env-key', LORASERVE_ADAPTER_DIR: [rootA, rootB].join(delimiter),
      LORASERVE_ADAPTER: `sql=${adapter}`, LORASERVE_MAX_CPU_LORA_BYTES: '2G', LORASERVE_QUANT: 'int8',
    };
    const c = parse(['--port', '7001'], env);
    expect(c.http.port).toBe(7001);
    expect(c.http.apiKey).toBe('env-key');
    expect(c.model).toMatchObject({ modelDir: model, quantization: 'int8' });
    expect(c.adapters.dirs).toEqual([rootA, rootB]);
    expect(c.adapters.preload).toEqual([{ name: 'sql', path: adapter }]);
    expect(c.adapters.maxCpuLoraBytes).toBe(2 * 1024 ** 3);
  });

  it('is frozen', () => {
    const c = parse([]);
    expect(Object.isFrozen(c.http)).toBe(true);
    expect(Object.isFrozen(c.adapters.dirs)).toBe(true);
  });

  it.each([
    [['--port', '70000'], '--port must be an integer in [0, 65535] (found "70000")'],
    [['--max-batch', '0'], '--max-batch must be an integer in [1, ∞]'],
    [['--threads', '2.5'], '--threads must be an integer'],
    [['--quant', 'int3'], '--quant must be one of int4, int8, fp32'],
    [['--max-cpu-lora-bytes', 'lots'], '--max-cpu-lora-bytes must be a size like'],
    [['--model', join(dir, 'missing')], `--model ${join(dir, 'missing')} is not a directory`],
    [['--model', rootB], `--model ${rootB} has no config.json`],
    [['--adapter', 'sql'], '--adapter must be NAME=DIR'],
    [['--adapter', `../x=${adapter}`], '--adapter name "../x" must be'],
    [['--adapter', `a=${rootB}`], 'has no adapter_config.json'],
    [['--log-level', 'loud'], '--log-level must be one of'],
    [['--unknown'], "Unknown option '--unknown'"],
    [['--max-loras', '2', '--max-cpu-lora-bytes', '0'], '--max-cpu-lora-bytes must be above 0 while adapters are enabled'],
    [['--max-loras', '0', '--adapter', `sql=${adapter}`], 'needs adapters enabled'],
    [['--adapter', `sql=${adapter}`, '--adapter', `sql=${adapter}`], '--adapter sql is given twice'],
    [['--api-key', 'same', '--admin-key', 'same'], '--admin-key must differ from --api-key'],
    [['--max-batch', '32', '--max-batched-tokens', '32'], '--max-batched-tokens (32) must be above --max-batch (32)'],
    [['--merge', 'sql'], '--merge sql: no --adapter sql=DIR is given'],
    [['--adapter', `sql=${adapter}`, '--merge', 'sql', '--max-merged', '0'], '--merge names 1 adapters but --max-merged is 0'],
  ])('refuses %j with a clear message', (argv, message) => {
    expect(failure(argv)).toContain(message);
  });

  it('names the environment variable when the bad value came from there', () => {
    expect(failure([], { LORASERVE_MAX_WAITING: '-1' })).toMatch(/^LORASERVE_MAX_WAITING must be an integer/);
  });
});

describe('serveHelp', () => {
  it('documents every flag with its environment variable', () => {
    const help = serveHelp();
    for (const o of SERVE_OPTIONS) {
      expect(help).toContain(`--${o.flag}`);
      expect(help).toContain(`[${o.env}]`);
    }
  });
});

describe('README.md', () => {
  it('has a Server flags table row for every flag, with its environment variable and default', () => {
    const readme = readFileSync('README.md', 'utf8');
    const section = readme.slice(readme.indexOf('## Server flags'), readme.indexOf('\n## ', readme.indexOf('## Server flags') + 1));
    for (const o of SERVE_OPTIONS) {
      const row = section.split('\n').find((line) => line.startsWith(`| \`--${o.flag}${o.arg ? ' ' : '\`'}`));
      expect(row, o.flag).toBeDefined();
      expect(row).toContain(`\`${o.env}\``);
      if (o.default) expect(row).toContain(`| ${o.default} |`);
    }
  });
});
