import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = (file: string) => fileURLToPath(new URL(`./src/${file}`, import.meta.url))

export default defineConfig({
  // A test written as a user would ("effect-checkpoint", "effect-checkpoint/testing") runs against src/, like
  // every other test, so it needs no build and shares its modules with tests importing src/ directly.
  // Only the package's public entry points are mapped: a deep import still fails.
  resolve: {
    alias: [
      { find: /^effect-checkpoint$/, replacement: src("index.ts") },
      { find: /^effect-checkpoint\/testing$/, replacement: src("testing.ts") },
      { find: /^effect-checkpoint\/file$/, replacement: src("file.ts") }
    ]
  },
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
