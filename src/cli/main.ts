import { evalCommand } from './eval.js';
import { generateCommand } from './generate.js';
import { serveCommand } from './serve.js';
import { synthCommand } from './synth.js';

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; summary: string }> = {
  eval: { run: evalCommand, summary: 'mean per-token loss of a text under the model (and an adapter)' },
  generate: { run: generateCommand, summary: 'generate tokens from a checkpoint (greedy)' },
  serve: { run: serveCommand, summary: 'serve the model and its LoRA adapters over HTTP (OpenAI-compatible)' },
  synth: { run: synthCommand, summary: 'write deterministic synthetic checkpoints and PEFT adapters' },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `usage: loraserve <command> [options]\n\ncommands:\n${lines.join('\n')}\n\nRun 'loraserve <command> --help' for a command's options.`;
}

const [name, ...rest] = process.argv.slice(2);
const command = name ? COMMANDS[name] : undefined;
if (!command) {
  console.error(name && name !== '--help' ? `unknown command: ${name}\n\n${usage()}` : usage());
  process.exitCode = name === '--help' ? 0 : 2;
} else {
  try {
    process.exitCode = await command.run(rest);
  } catch (err) {
    console.error(`loraserve ${name}: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}
