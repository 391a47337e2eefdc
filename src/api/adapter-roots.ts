import { existsSync, realpathSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { quote } from '../adapters/adapter-error.js';
import { isInside } from '../adapters/adapter-files.js';
import { ADAPTER_NAME } from '../config.js';
import { ApiError } from '../errors.js';

/**
 * The directories adapters may be loaded from (`--adapter-dir`). A path given by a client must resolve, symlinks
 * followed, inside one of them; an unknown model name may name an adapter directory under one of them.
 */
export class AdapterRoots {
  /** Real paths of the roots. */
  readonly dirs: readonly string[];

  constructor(dirs: readonly string[]) {
    this.dirs = dirs.map((dir) => realpathSync(dir));
  }

  /**
   * The real directory a client-given adapter path names: an absolute path, or a path relative to a root (the first
   * root holding it). Throws adapter_path_not_allowed outside the roots and adapter_path_not_found when it is missing.
   */
  resolve(path: string, param: string): string {
    if (this.dirs.length === 0) {
      throw new ApiError('adapter_path_not_allowed', 'no adapter roots are configured: start the server with --adapter-dir to allow loading adapters by path', param);
    }
    if (path.split(/[\\/]/).includes('..')) throw new ApiError('adapter_path_not_allowed', `adapter path ${quote(path)} must not contain '..'`, param);
    // Refuse an absolute path outside the roots before touching the file system, so its existence does not leak.
    if (isAbsolute(path) && !this.#contains(resolve(path))) throw this.#outside(path, param);
    const candidates = isAbsolute(path) ? [path] : this.dirs.map((root) => join(root, path));
    const found = candidates.find((candidate) => existsSync(candidate));
    if (found === undefined) throw new ApiError('adapter_path_not_found', `adapter path ${quote(path)} does not exist${isAbsolute(path) ? '' : ' under any adapter root'}`, param);
    const real = realpathSync(found);
    if (!this.#contains(real)) throw this.#outside(path, param);
    if (!statSync(real).isDirectory()) throw new ApiError('adapter_path_not_found', `adapter path ${quote(path)} is not a directory`, param);
    return real;
  }

  /** The adapter directory (holding adapter_config.json) that `name` names under a root, or null. */
  find(name: string): string | null {
    if (!ADAPTER_NAME.test(name)) return null;
    for (const root of this.dirs) {
      const dir = join(root, name);
      if (!existsSync(join(dir, 'adapter_config.json'))) continue;
      const real = realpathSync(dir);
      if (this.#contains(real)) return real;
    }
    return null;
  }

  #outside(path: string, param: string): ApiError {
    return new ApiError('adapter_path_not_allowed', `adapter path ${quote(path)} is outside the adapter roots (--adapter-dir)`, param);
  }

  #contains(real: string): boolean {
    return this.dirs.some((root) => isInside(root, real));
  }
}
