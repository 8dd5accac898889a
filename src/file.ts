/**
 * The file-system checkpoint store, on `@effect/platform` and
 * `@effect/platform-node` (optional peer dependencies: install them to use
 * this entry point).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { FileStore } from "effect-checkpoint/file"
 *
 * program.pipe(Effect.provide(FileStore.layer({ directory: "./checkpoints" })))
 * ```
 *
 * @since 0.2.0
 */

/**
 * `FileStore.layer({ directory })`, `FileStore.layerConfig`
 * (`CHECKPOINT_DIR`), `FileStore.layerConfigWith(config)` and
 * `FileStore.layerFileSystem` on a `FileSystem` you provide.
 *
 * @since 0.2.0
 */
export * as FileStore from "./layers/File.js"
