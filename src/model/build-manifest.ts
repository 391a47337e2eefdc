import { createHash } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The manifest's file name inside a build directory; written last, so a build without it never completed. */
export const MANIFEST = 'manifest.json';

const CHUNK_BYTES = 8 << 20;
/** A plain file name: a manifest can never point outside its own directory. */
const FILE_NAME = /^(?!\.\.?$)[\w.-]+$/;

interface ManifestEntry {
  bytes: number;
  sha256: string;
}

/** Records the size and SHA-256 of every file in `dir` in its manifest. Call after the last other file is written. */
export function writeManifest(dir: string): void {
  const files: Record<string, ManifestEntry> = {};
  const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  for (const name of readdirSync(dir).filter((n) => n !== MANIFEST).sort()) {
    const path = join(dir, name);
    files[name] = { bytes: statSync(path).size, sha256: sha256File(path, chunk) };
  }
  writeFileSync(join(dir, MANIFEST), JSON.stringify({ files }, null, 2));
}

/**
 * Checks every file the manifest lists against its recorded size and SHA-256, and that `required` files are listed.
 * Returns null when all match, else why not, in one line naming only file names (never the directory).
 */
export function verifyManifest(dir: string, required: readonly string[]): string | null {
  const files = readManifest(dir);
  if (typeof files === 'string') return files;
  const missing = required.find((name) => !(name in files));
  if (missing) return `${MANIFEST} does not list ${missing}`;
  // Sizes first: a missing or truncated file is found without hashing the others.
  for (const [name, entry] of Object.entries(files)) {
    const problem = sizeProblem(dir, name, entry.bytes);
    if (problem) return problem;
  }
  const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  for (const [name, entry] of Object.entries(files)) {
    let digest: string;
    try {
      digest = sha256File(join(dir, name), chunk);
    } catch (err) {
      return `${name} cannot be read (${errorCode(err)})`;
    }
    if (digest !== entry.sha256) return `${name} does not match its SHA-256 in ${MANIFEST}`;
  }
  return null;
}

/** The manifest's file table, or why it cannot be used. */
function readManifest(dir: string): Record<string, ManifestEntry> | string {
  let text: string;
  try {
    text = readFileSync(join(dir, MANIFEST), 'utf8');
  } catch (err) {
    return errorCode(err) === 'ENOENT' ? `no ${MANIFEST}` : `${MANIFEST} cannot be read (${errorCode(err)})`;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return `${MANIFEST} is not valid JSON`;
  }
  const files = (parsed as { files?: unknown } | null)?.files;
  if (typeof files !== 'object' || files === null) return `${MANIFEST} has no file table`;
  for (const [name, entry] of Object.entries(files)) {
    const { bytes, sha256 } = (entry ?? {}) as Partial<ManifestEntry>;
    if (!FILE_NAME.test(name) || name === MANIFEST || !Number.isSafeInteger(bytes) || typeof sha256 !== 'string') {
      return `${MANIFEST} has a malformed entry`;
    }
  }
  return files as Record<string, ManifestEntry>;
}

function sha256File(path: string, chunk: Buffer): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    for (let n; (n = readSync(fd, chunk, 0, chunk.length, null)) > 0;) hash.update(chunk.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/** Why `name` in `dir` is not a regular file of `bytes` bytes; null when it is. */
function sizeProblem(dir: string, name: string, bytes: number): string | null {
  let stat;
  try {
    stat = statSync(join(dir, name));
  } catch (err) {
    return errorCode(err) === 'ENOENT' ? `${name} is missing` : `${name} cannot be read (${errorCode(err)})`;
  }
  if (!stat.isFile()) return `${name} is not a file`;
  return stat.size === bytes ? null : `${name} is ${stat.size} bytes, ${bytes} expected`;
}

function errorCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'error';
}
