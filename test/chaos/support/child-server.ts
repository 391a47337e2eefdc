import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { waitFor } from '../../api/support.js';

/** How a child server ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** `loraserve serve` in a child process, listening on 127.0.0.1. */
export interface ChildServer {
  url: string;
  host: string;
  port: number;
  pid: number;
  child: ChildProcessWithoutNullStreams;
  /** Its log records (pino JSON on stdout), parsed, in order. */
  records: Record<string, unknown>[];
  stderr(): string;
  exited: Promise<Exit>;
  /** SIGTERM, then the exit (SIGKILL after `killAfterMs`). */
  stop(killAfterMs?: number): Promise<Exit>;
}

const CLI = ['--import', 'tsx', 'src/cli/main.ts', 'serve'];
const START_TIMEOUT_MS = 120_000;

/** Flags every chaos server shares: a free port on loopback, one ONNX Runtime thread, info logs (the 'listening' record). */
export function baseFlags(model: string, cacheDir: string): string[] {
  return ['--model', model, '--cache-dir', cacheDir, '--host', '127.0.0.1', '--port', '0', '--threads', '1', '--log-level', 'info'];
}

/**
 * Runs `loraserve serve` from source (as test/api/serve-cli.test.ts does) with `args`, until its 'listening' record
 * names the URL. Rejects with the server's stderr when it exits first or does not start in time.
 */
export function startChild(args: string[]): Promise<ChildServer> {
  const child = spawn(process.execPath, [...CLI, ...args]);
  const records: Record<string, unknown>[] = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<Exit>((done) => child.once('exit', (code, signal) => done({ code, signal })));
  const stop = async (killAfterMs = 30_000): Promise<Exit> => {
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
      child.kill('SIGKILL');
      reject(new Error(`loraserve serve did not start in ${START_TIMEOUT_MS} ms: ${stderr}`));
    }, START_TIMEOUT_MS);
    createInterface({ input: child.stdout }).on('line', (line) => {
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(line) as Record<string, unknown>;
      } catch {
        record = { msg: line };
      }
      records.push(record);
      if (record.msg !== 'listening') return;
      clearTimeout(timer);
      const url = new URL(record.url as string);
      resolve({ url: url.origin, host: url.hostname, port: Number(url.port), pid: child.pid as number, child, records, stderr: () => stderr, exited, stop });
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`loraserve serve exited (${code ?? signal}) before listening: ${stderr}`));
    });
  });
}

/** Resolves once the server has logged a record with this message (rejects after `timeoutMs`). */
export async function waitForLog(server: ChildServer, msg: string, timeoutMs = 10_000): Promise<void> {
  await waitFor(async () => server.records.some((r) => r.msg === msg), timeoutMs).catch(() => {
    throw new Error(`the server did not log '${msg}' within ${timeoutMs} ms`);
  });
}
