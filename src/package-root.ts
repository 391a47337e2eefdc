import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

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
