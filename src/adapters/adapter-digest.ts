import { closeSync, openSync, readSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { AdapterError } from './adapter-error.js';
import { adapterFiles, CONFIG_FILE, WEIGHTS_FILE } from './adapter-files.js';

const CHUNK_BYTES = 1 << 20;

/**
 * A digest of an adapter directory's files: sha256 (hex) over the sha256 digests of adapter_config.json and
 * adapter_model.safetensors, in that order. Hashing each file on its own keeps the two byte streams from running
 * into each other. Files are read in 1 MiB chunks, so a large adapter is never held in memory.
 */
export function adapterDigest(dir: string): string {
  const files = adapterFiles(dir, []);
  const outer = createHash('sha256');
  for (const name of [CONFIG_FILE, WEIGHTS_FILE]) outer.update(fileDigest(join(files.dir, name), name));
  return outer.digest('hex');
}

function fileDigest(path: string, name: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new AdapterError('adapter_not_found', name, `cannot open (${(err as NodeJS.ErrnoException).code})`);
  }
  try {
    const hash = createHash('sha256');
    const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    for (let n = readSync(fd, chunk); n > 0; n = readSync(fd, chunk)) hash.update(chunk.subarray(0, n));
    return hash.digest();
  } finally {
    closeSync(fd);
  }
}
