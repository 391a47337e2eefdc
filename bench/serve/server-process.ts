// A `loraserve serve` child process for the benchmark: started on a free port, ready once it logs 'listening',
// stopped with SIGTERM.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export interface ServerProcess {
  /** `http://host:port` from its 'listening' record. */
  url: string;
  /** The 'listening' record (runtime, context length, adapters…). */
  listening: Record<string, unknown>;
  /** SIGTERM, then SIGKILL after `killAfterMs`; resolves with the exit code (null when killed by a signal). */
  stop(killAfterMs?: number): Promise<number | null>;
}

/**
 * How the server is run, by absolute paths (so the working directory and relative paths in the arguments stay the
 * caller's): the built CLI, as installed, or the TypeScript source through tsx.
 */
export function serverCommand(fromSource: boolean): string[] {
  const inRepo = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));
  return fromSource ? ['--import', import.meta.resolve('tsx'), inRepo('src/cli/main.ts')] : [inRepo('bin/loraserve.js')];
}

/**
 * Splits `--server-args` into arguments at whitespace; single or double quotes keep whitespace inside an argument.
 */
export function splitArgs(text: string): string[] {
  const args: string[] = [];
  for (const m of text.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)) args.push(m[1] ?? m[2] ?? m[3]);
  return args;
}

/**
 * Runs `node <command> serve <args>` and resolves once its pino log on stdout has the 'listening' record. Rejects
 * with the end of its stderr when it exits first, or after `startTimeoutMs`. Its log is read to the end (a full pipe
 * would stall the server) and dropped.
 */
export function startServer(command: string[], args: string[], startTimeoutMs: number): Promise<ServerProcess> {
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, [...command, 'serve', ...args], { stdio: 'pipe' });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const stop = async (killAfterMs = 30_000): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop(0);
      reject(new Error(`loraserve serve did not start within ${startTimeoutMs / 1000} s: ${stderr}`));
    }, startTimeoutMs);
    createInterface({ input: child.stdout }).on('line', (line) => {
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (record.msg !== 'listening' || typeof record.url !== 'string') return;
      clearTimeout(timer);
      resolve({ url: record.url, listening: record, stop });
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`loraserve serve exited (${code}) before listening: ${stderr}`));
    });
  });
}
