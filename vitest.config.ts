import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests that start servers or child processes are heavy on 2 cores; keep workers few.
    maxWorkers: 2,
    minWorkers: 1,
  },
})
