// Builds the native runtime addon (build/Release/loraserve_native.node) at `npm install`/`npm ci`.
// It never fails the install: where the addon cannot be built, it says why in one line and writes the reason to
// build/native-unavailable.txt, and the server runs on the stock onnxruntime-node path.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const buildDir = join(root, 'build');
const reasonFile = join(buildDir, 'native-unavailable.txt');
const logFile = join(buildDir, 'native-build.log');
const addon = join(buildDir, 'Release/loraserve_native.node');

function runs(command, args) {
  const result = spawnSync(command, args, { stdio: 'ignore' });
  return !result.error && result.status === 0;
}

/** node-gyp as npm bundles it: npm names it in the environment of install scripts. */
function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
  ];
  return candidates.find((path) => path && existsSync(path));
}

/** Node's own headers next to this node binary, when they are of this exact version: no download needed. */
function findNodeHeaders() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = resolve(dirname(process.execPath), '..');
  const versionHeader = join(prefix, 'include/node/node_version.h');
  if (!existsSync(versionHeader)) return undefined;
  const text = readFileSync(versionHeader, 'utf8');
  const part = (name) => text.match(new RegExp(`#define NODE_${name}_VERSION (\\d+)`))?.[1];
  return `v${part('MAJOR')}.${part('MINOR')}.${part('PATCH')}` === process.version ? prefix : undefined;
}

function whyNot() {
  if (process.platform !== 'linux') return `the native runtime is built on Linux only (this is ${process.platform})`;
  const cxx = process.env.CXX || 'g++';
  if (!runs(cxx, ['--version'])) return `no C++ compiler (${cxx}) was found`;
  if (!runs('make', ['--version'])) return 'make was not found';
  if (!runs('python3', ['--version'])) return 'python3 (needed by node-gyp) was not found';
  if (!findNodeGyp()) return 'node-gyp (bundled with npm) was not found';
  return undefined;
}

/** configure + build rather than rebuild: a rebuild starts by deleting build/, log included. */
function build() {
  const headers = findNodeHeaders();
  const log = openSync(logFile, 'w');
  for (const step of ['configure', 'build']) {
    const args = [findNodeGyp(), step, '--release', ...(headers ? [`--nodedir=${headers}`] : [])];
    const result = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', log, log] });
    if (result.error || result.status !== 0) return `node-gyp ${step} failed (see build/native-build.log)`;
  }
  return existsSync(addon) ? undefined : 'node-gyp built no addon';
}

mkdirSync(buildDir, { recursive: true });
rmSync(reasonFile, { force: true });
const reason = whyNot() ?? build();
if (reason) {
  rmSync(addon, { force: true });
  writeFileSync(reasonFile, `${reason}\n`);
  console.log(`loraserve: native runtime not built: ${reason}; the server will use the stock ONNX Runtime path`);
} else {
  console.log('loraserve: native runtime built (build/Release/loraserve_native.node)');
}
