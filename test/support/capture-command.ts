import { vi } from 'vitest';

/** Runs a CLI command function in-process, silencing its output and capturing stderr. */
export function captureCommand(command: (argv: string[]) => Promise<number>, argv: string[]): { status: Promise<number>; stderr: () => string } {
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
    stderr += String(chunk);
    return true;
  });
  const status = command(argv).finally(() => {
    out.mockRestore();
    err.mockRestore();
  });
  return { status, stderr: () => stderr };
}
