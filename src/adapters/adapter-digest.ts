import { closeSync, openSync, readSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { AdapterError } from './adapter-error.js';
import { adapterFiles } from './peft-loader.js';

const CHUNK_BYTES = 1 << 20;

/**
 * The adapter's content identity: sha256 (hex) over the sha256 digests of adapter_config.json and
 * adapter_model.safetensors, in that order. Hashing each file on its own keeps the two byte streams from running
 * into each other. Files are read in 1 MiB chunks, so a large adapter is never held in memory.
 */
export function adapterDigest(dir: string): string {
  const { config, weights } = adapterFiles(dir);
  const outer = createHash('sha256');
  for (const path of [config, weights]) outer.update(fileDigest(path));
  return outer.digest('hex');
}

function fileDigest(path: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new AdapterError('adapter_not_found', path, `cannot open: ${(err as Error).message}`);
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
