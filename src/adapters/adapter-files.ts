import { closeSync, constants, existsSync, fstatSync, openSync, readSync, realpathSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, sep } from 'node:path';
import { CheckpointError } from '../model/checkpoint-error.js';
import { SafetensorsFile } from '../model/safetensors.js';
import { AdapterError } from './adapter-error.js';

export const CONFIG_FILE = 'adapter_config.json';
export const WEIGHTS_FILE = 'adapter_model.safetensors';
const PICKLED_WEIGHTS_FILE = 'adapter_model.bin';
/** Largest adapter_config.json read: real ones are a few KiB. */
export const MAX_CONFIG_BYTES = 1 << 20;

/**
 * A PEFT adapter directory and where its files may resolve (symlinks followed): inside the adapter roots when the
 * directory is under one, else (an adapter the operator named outside the roots) inside the directory itself.
 */
export interface AdapterFiles {
  /** Real path of the directory. */
  dir: string;
  /** Real paths of the directories the files must resolve inside. */
  allowed: readonly string[];
}

/**
 * Checks that `dir` is a PEFT adapter directory. Pickled `adapter_model.bin` weights are refused: loading them would
 * mean unpickling, and safetensors is what PEFT writes by default. `roots` are real paths.
 */
export function adapterFiles(dir: string, roots: readonly string[]): AdapterFiles {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new AdapterError('adapter_not_found', '', 'the adapter directory is missing or is not a directory');
  const real = realpathSync(dir);
  if (!existsSync(join(real, CONFIG_FILE))) throw new AdapterError('adapter_not_found', '', `no ${CONFIG_FILE}: not a PEFT adapter directory`);
  if (!existsSync(join(real, WEIGHTS_FILE))) {
    if (existsSync(join(real, PICKLED_WEIGHTS_FILE))) {
      throw new AdapterError(
        'adapter_unsupported',
        PICKLED_WEIGHTS_FILE,
        `only ${WEIGHTS_FILE} weights are supported, not pickled .bin files; convert with PEFT: ` +
          'PeftModel.from_pretrained(base, dir).save_pretrained(out, safe_serialization=True)',
      );
    }
    throw new AdapterError('adapter_not_found', '', `no ${WEIGHTS_FILE}`);
  }
  const underRoot = roots.some((root) => isInside(root, real));
  return { dir: real, allowed: underRoot ? roots : [real] };
}

/** adapter_config.json, parsed; at most MAX_CONFIG_BYTES. */
export function readAdapterConfig(files: AdapterFiles): unknown {
  const fd = openRegular(files, CONFIG_FILE);
  try {
    // Reading one byte more than allowed tells a file over the limit (or one that grew after it was opened).
    const bytes = Buffer.allocUnsafe(MAX_CONFIG_BYTES + 1);
    let length = 0;
    while (length < bytes.length) {
      const n = readOrFail(fd, bytes, length, CONFIG_FILE);
      if (n === 0) break;
      length += n;
    }
    if (length > MAX_CONFIG_BYTES) throw new AdapterError('adapter_invalid', CONFIG_FILE, `larger than ${MAX_CONFIG_BYTES} bytes: not a PEFT adapter config`);
    try {
      return JSON.parse(bytes.toString('utf8', 0, length));
    } catch (err) {
      throw new AdapterError('adapter_invalid', CONFIG_FILE, `not valid JSON: ${(err as Error).message}`);
    }
  } finally {
    closeSync(fd);
  }
}

/** adapter_model.safetensors with its header validated against the file's real size (SafetensorsFile.open). */
export function openAdapterWeights(files: AdapterFiles): SafetensorsFile {
  const fd = openRegular(files, WEIGHTS_FILE);
  try {
    // SafetensorsFile opens by path. /dev/fd/N opens the very file checked here, so a FIFO or device swapped in
    // since cannot block the open or stream without end.
    return SafetensorsFile.open(`/dev/fd/${fd}`);
  } catch (err) {
    if (err instanceof CheckpointError) throw new AdapterError('adapter_invalid', WEIGHTS_FILE, err.problem);
    throw err;
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens a file of the adapter that resolves inside the allowed directories and is a regular file. O_NONBLOCK: opening
 * a FIFO would otherwise block in the system call, where not even terminating the thread can reach it.
 */
function openRegular(files: AdapterFiles, name: string): number {
  let real: string;
  try {
    real = realpathSync(join(files.dir, name));
  } catch (err) {
    throw new AdapterError('adapter_not_found', name, `cannot resolve (${errorCode(err)})`);
  }
  if (!files.allowed.some((dir) => isInside(dir, real))) {
    throw new AdapterError('adapter_path_not_allowed', name, 'resolves outside the adapter roots (--adapter-dir)');
  }
  let fd: number;
  try {
    fd = openSync(real, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  } catch (err) {
    throw new AdapterError('adapter_not_found', name, `cannot open (${errorCode(err)})`);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new AdapterError('adapter_invalid', name, 'not a regular file');
  }
  return fd;
}

function readOrFail(fd: number, into: Buffer, offset: number, name: string): number {
  try {
    return readSync(fd, into, offset, into.length - offset, offset);
  } catch (err) {
    throw new AdapterError('adapter_invalid', name, `cannot read (${errorCode(err)})`);
  }
}

/** The error's code (ENOENT, EACCES, ...): Node's own messages carry the absolute path. */
function errorCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'unknown error';
}

/** Whether the path `real` is `dir` or lies under it (both real paths: symlinks resolved). */
export function isInside(dir: string, real: string): boolean {
  const rel = relative(dir, real);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}
