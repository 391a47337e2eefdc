import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The attack suite runs on its own (`npm run test:chaos`, vitest.chaos.config.ts).
    exclude: [...configDefaults.exclude, 'test/chaos/**'],
    // Every engine started by a test checks its bookkeeping (rows, slots, references) whenever it goes idle.
    env: { LORASERVE_CHECK_INVARIANTS: '1' },
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // ONNX Runtime sessions use both cores; running test files one at a time keeps them from starving each other.
    fileParallelism: false,
  },
});
