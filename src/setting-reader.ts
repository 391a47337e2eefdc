import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** A bad flag or environment value: the message names it and says what is expected. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export type Raw = string | string[] | boolean | undefined;

/** One setting: its flag, environment variable and --help text. */
export interface OptionSpec {
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

const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, K: 1024, KIB: 1024, M: 1024 ** 2, MIB: 1024 ** 2, G: 1024 ** 3, GIB: 1024 ** 3 };

/** Reads one setting from the flags, else from the environment, and names both in errors. */
export class SettingReader {
  readonly #values: Record<string, Raw>;
  readonly #env: NodeJS.ProcessEnv;
  readonly #specs: readonly OptionSpec[];

  constructor(values: Record<string, Raw>, env: NodeJS.ProcessEnv, specs: readonly OptionSpec[]) {
    this.#values = values;
    this.#env = env;
    this.#specs = specs;
  }

  string(flag: string): string | null {
    const value = this.#values[flag];
    if (typeof value === 'string') return value;
    const fromEnv = this.#env[this.#spec(flag).env];
    return fromEnv === undefined || fromEnv === '' ? null : fromEnv;
  }

  list(flag: string, envSeparator: string): string[] {
    const value = this.#values[flag];
    if (Array.isArray(value)) return value;
    const fromEnv = this.#env[this.#spec(flag).env];
    return fromEnv ? fromEnv.split(envSeparator).map((s) => s.trim()).filter((s) => s.length > 0) : [];
  }

  secret(flag: string): string | null {
    const value = this.string(flag);
    if (value !== null && value.trim() !== value) this.fail(flag, 'must not start or end with whitespace');
    return value;
  }

  number(flag: string, min: number): number | null {
    const text = this.string(flag);
    if (text === null) return null;
    const value = Number(text);
    if (text.trim() === '' || !Number.isFinite(value) || value < min) this.fail(flag, `must be a number >= ${min} (found ${JSON.stringify(text)})`);
    return value;
  }

  integer(flag: string, min: number, max = Number.MAX_SAFE_INTEGER): number | null {
    const text = this.string(flag);
    if (text === null) return null;
    const value = Number(text);
    if (!/^\d+$/.test(text.trim()) || value < min || value > max) {
      this.fail(flag, `must be an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? '∞' : max}] (found ${JSON.stringify(text)})`);
    }
    return value;
  }

  size(flag: string, min: number): number | null {
    const text = this.string(flag);
    if (text === null) return null;
    const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
    const unit = match ? SIZE_UNITS[match[2].toUpperCase()] : undefined;
    if (!match || unit === undefined) this.fail(flag, `must be a size like 1073741824, 512M or 1GiB (found ${JSON.stringify(text)})`);
    const bytes = Math.floor(Number(match?.[1]) * (unit ?? 1));
    if (bytes < min) this.fail(flag, `must be at least ${min} bytes (found ${JSON.stringify(text)})`);
    return bytes;
  }

  choice(flag: string, choices: readonly string[]): string | null {
    const value = this.string(flag);
    if (value !== null && !choices.includes(value)) this.fail(flag, `must be one of ${choices.join(', ')} (found ${JSON.stringify(value)})`);
    return value;
  }

  /** An existing directory (holding `marker` when given), as an absolute path. */
  directory(flag: string, dir: string, marker?: string): string {
    const path = resolve(dir);
    if (!existsSync(path) || !statSync(path).isDirectory()) this.fail(flag, `${path} is not a directory`);
    if (marker && !existsSync(join(path, marker))) this.fail(flag, `${path} has no ${marker}`);
    return path;
  }

  /** Throws ConfigError naming the flag, or its environment variable when that is where the value came from. */
  fail(flag: string, problem: string): never {
    const spec = this.#spec(flag);
    const source = this.#values[flag] !== undefined ? `--${flag}` : spec.env;
    throw new ConfigError(`${source} ${problem}`);
  }

  #spec(flag: string): OptionSpec {
    const spec = this.#specs.find((o) => o.flag === flag);
    if (!spec) throw new Error(`no option --${flag}`);
    return spec;
  }
}

/** Freezes the value and everything in it. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
