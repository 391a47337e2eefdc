import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AdapterRoots } from '../../src/api/adapter-roots.js';
import { refusal } from './refusal.js';

const dir = realpathSync(mkdtempSync(join(tmpdir(), 'loraserve-roots-')));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const rootA = join(dir, 'root-a');
const rootB = join(dir, 'root-b');
const outside = join(dir, 'outside');
const adapter = (path: string) => {
  mkdirSync(path, { recursive: true });
  writeFileSync(join(path, 'adapter_config.json'), '{}');
};
adapter(join(rootA, 'sql'));
adapter(join(rootB, 'org', 'chat'));
adapter(join(rootB, 'sql'));
adapter(join(outside, 'evil'));
symlinkSync(join(outside, 'evil'), join(rootA, 'escape'));
symlinkSync(join(rootA, 'sql'), join(rootB, 'alias'));
writeFileSync(join(rootA, 'file.txt'), 'not a directory');

const roots = new AdapterRoots([rootA, rootB]);

describe('AdapterRoots.resolve', () => {
  it('accepts absolute paths inside a root and relative paths under the first root holding them', () => {
    expect(roots.resolve(join(rootB, 'org', 'chat'), 'path')).toBe(join(rootB, 'org', 'chat'));
    expect(roots.resolve('sql', 'path')).toBe(join(rootA, 'sql'));
    expect(roots.resolve('org/chat', 'path')).toBe(join(rootB, 'org', 'chat'));
  });

  it('follows symlinks that stay inside the roots', () => {
    expect(roots.resolve('alias', 'path')).toBe(join(rootA, 'sql'));
  });

  it.each([
    ['a path outside the roots', () => join(outside, 'evil'), 'adapter_path_not_allowed', 'outside the adapter roots'],
    ['a symlink that leads outside', () => join(rootA, 'escape'), 'adapter_path_not_allowed', 'outside the adapter roots'],
    ['a relative symlink escape', () => 'escape', 'adapter_path_not_allowed', 'outside the adapter roots'],
    ['.. segments', () => `${rootA}/../root-b/sql`, 'adapter_path_not_allowed', "must not contain '..'"],
    ['relative .. segments', () => '../outside/evil', 'adapter_path_not_allowed', "must not contain '..'"],
    ['a missing path', () => 'nope', 'adapter_path_not_found', 'does not exist under any adapter root'],
    ['a file', () => 'file.txt', 'adapter_path_not_found', 'is not a directory'],
  ])('refuses %s', (_, path, code, message) => {
    const err = refusal(() => roots.resolve(path(), 'lora_path'));
    expect(err.code).toBe(code);
    expect(err.param).toBe('lora_path');
    expect(err.message).toContain(message);
  });

  it('refuses every path when no roots are configured', () => {
    const err = refusal(() => new AdapterRoots([]).resolve(join(rootA, 'sql'), 'path'));
    expect(err.code).toBe('adapter_path_not_allowed');
    expect(err.message).toContain('--adapter-dir');
  });
});

describe('AdapterRoots.find', () => {
  it('finds an adapter directory by name, nested names included, first root first', () => {
    expect(roots.find('sql')).toBe(join(rootA, 'sql'));
    expect(roots.find('org/chat')).toBe(join(rootB, 'org', 'chat'));
  });

  it('finds nothing for unknown names, names that are not adapter names, and symlinks leading outside', () => {
    expect(roots.find('nope')).toBeNull();
    expect(roots.find('org')).toBeNull();
    expect(roots.find('../outside/evil')).toBeNull();
    expect(roots.find('escape')).toBeNull();
  });
});
