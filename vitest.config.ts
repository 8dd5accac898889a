import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Store tests talk to real servers and disks on a shared, noisy 2-core machine.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each test file owns its tables, key prefixes and temp dirs, so files may run side by side.
    pool: "forks",
    maxWorkers: 2,
    minWorkers: 1,
    sequence: { concurrent: false }
  }
})
