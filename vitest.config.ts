import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // ONNX Runtime sessions use both cores; running test files one at a time keeps them from starving each other.
    fileParallelism: false,
  },
});
