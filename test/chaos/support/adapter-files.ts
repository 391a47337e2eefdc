import { execFileSync } from 'node:child_process';
import { closeSync, constants, copyFileSync, mkdirSync, openSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const CONFIG = 'adapter_config.json';
export const WEIGHTS = 'adapter_model.safetensors';

/** A copy of the PEFT adapter in `from` at `to` (real files, no links). */
export function copyAdapter(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const file of [CONFIG, WEIGHTS]) copyFileSync(join(from, file), join(to, file));
}

/** Writes `file` of an adapter directory as a symbolic link to `target`, replacing what was there. */
export function linkFile(dir: string, file: string, target: string): void {
  mkdirSync(dir, { recursive: true });
  rmSync(join(dir, file), { force: true });
  symlinkSync(target, join(dir, file));
}

/** Makes `file` of an adapter directory a named pipe that nobody writes to: opening or reading it blocks. */
export function fifoFile(dir: string, file: string): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, file);
  rmSync(path, { force: true });
  execFileSync('mkfifo', [path]);
  return path;
}

/** Gives any reader blocked on the pipe an end of file, so a wedged server can still shut down. */
export function releaseFifo(path: string): void {
  try {
    closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK));
  } catch {
    // ENXIO: nobody is reading it.
  }
}

/** A safetensors file whose 8-byte header length claims far more than the file holds (2^60 bytes). */
export function writeHugeHeader(path: string): void {
  const bytes = Buffer.alloc(64);
  bytes.writeBigUInt64LE(1n << 60n, 0);
  bytes.write('{"__metadata__":{}}', 8);
  writeFileSync(path, bytes);
}

/** Writes `config` as the directory's adapter_config.json (replacing a link or pipe there). */
export function writeConfig(dir: string, config: Record<string, unknown>): void {
  mkdirSync(dir, { recursive: true });
  rmSync(join(dir, CONFIG), { force: true });
  writeFileSync(join(dir, CONFIG), JSON.stringify(config));
}
