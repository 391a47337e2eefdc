import { defineConfig } from 'vitest/config';

/** The attack suite (`npm run test:chaos`): real servers in child processes, attacked from outside over 127.0.0.1. */
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: 'forks',
    // Every file starts its own server; one file at a time keeps them from starving each other on 2 cores.
    fileParallelism: false,
    // The servers the suite starts inherit it: each engine checks its bookkeeping (rows, slots, references) when idle.
    env: { LORASERVE_CHECK_INVARIANTS: '1' },
  },
});
