/**
 * The file-system checkpoint store: one JSON file per checkpoint under a
 * directory, written atomically, readable by any tool, and safe to share
 * between processes. It lives at its own entry point,
 * `effect-checkpoint/file`, so a Memory user never loads `@effect/platform`.
 *
 * Layout under `directory`:
 *
 * | path | what |
 * |---|---|
 * | `checkpoints/<id>.json` | the checkpoint document, published with `link(2)` from a fsync'ed temp file: it appears whole or not at all, and never replaces another |
 * | `executions/<executionId>/<version>` | a symbolic link to `../../checkpoints/<id>.json`, created with `symlink(2)` (which fails if it exists): the atomic `(executionId, version)` slot |
 * | `executions/<executionId>/record.json` | the execution record (status, latest version, lease, failure, attempts), replaced atomically (fsync'ed temp file + `rename(2)`) |
 * | `executions/<executionId>/blobs/<hash>.json` | a large value of the execution (a state field over 4096 characters of JSON, or a chunk of an array that only grew), stored once and published like documents; the documents that reference it list it in `$refs` |
 * | `writes/<checkpointId>/<taskId>/<seq>-<key>.json` | the task writes of a checkpoint, published like documents |
 * | `locks/<executionId>.lock` | the lock of an execution while a process changes it (`O_EXCL`, with owner pid, host and expiry) |
 * | `tmp/` | temp files of writes in progress, and executions being removed |
 *
 * Every change to an execution (a save, task writes, a record update, a
 * claim, a removal) holds the execution's lock, so conditional saves, leases
 * and claims are atomic between processes too. A lock whose holder died
 * (same machine) or that expired (30 s; another machine) is broken. Reads
 * take no lock.
 *
 * `load(id)` reads one file; `list` reads one directory and the files it
 * names. `listExecutions`, `claim` and `sweep` read the record of every
 * execution: O(executions) per call (the other stores answer from an index).
 * Ids can never leave `directory`: they are checked before any path is built.
 *
 * Large values: a blob is written before the checkpoints that reference it,
 * under the execution's lock, and only if the execution does not have it; a
 * save referencing a blob that is not there is refused and made again with
 * it. A blob goes when the last checkpoint that references it goes (delete,
 * prune, clear, sweep). A crash between a blob and its checkpoint leaves a
 * blob nothing references (never a reference to a missing blob): the next
 * delete or prune of that execution removes it, and so do clear and sweep.
 *
 * A directory written by 0.1.0 (no records, no writes, no locks) keeps
 * working: an execution without a record gets one on first access, from its
 * newest checkpoint — `interrupted` when that has nodes to run (so no worker
 * picks it up by surprise: `resume` it), `done` when it has none.
 *
 * @since 0.1.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { Config, type ConfigError, Effect, Layer } from "effect"
import * as CheckpointBackend from "../CheckpointBackend.js"
import { type CheckpointStoreError, InvalidOption } from "../CheckpointError.js"
import * as CheckpointStore from "../CheckpointStore.js"
import { nonEmptyString } from "../internal/config.js"
import { BACKEND, fileBackend, type FileLayout, removeLeftovers } from "../internal/fileBackend.js"
import { hostIdentity, makeLocker } from "../internal/fileLock.js"
import { storeError } from "../internal/storeError.js"

/**
 * Options of {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The directory that holds the store (trusted configuration). Created if missing. */
  readonly directory: string
}

/** How long a lock lives before another process may break it (its holder hung or died on another machine). */
const LOCK_TTL_MS = 30_000
/** Temp files older than this are left-overs of a crashed write. */
const STALE_TEMP_MS = 10 * 60 * 1000

/**
 * Builds a file store in `directory` on the `FileSystem` and `Path` services.
 * An empty `directory` fails with `InvalidOption`; a directory that cannot be
 * created or used with `CheckpointStoreError` (operation `"open"`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidOption, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    if (typeof options.directory !== "string" || options.directory.length === 0) {
      return yield* new InvalidOption({ option: "directory", message: "directory must be a non-empty path" })
    }
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const root = path.resolve(options.directory)
    const layout: FileLayout = {
      checkpoints: path.join(root, "checkpoints"),
      executions: path.join(root, "executions"),
      writes: path.join(root, "writes"),
      locks: path.join(root, "locks"),
      tmp: path.join(root, "tmp")
    }
    yield* Effect.forEach(
      [layout.checkpoints, layout.executions, layout.writes, layout.locks, layout.tmp],
      (dir) => fs.makeDirectory(dir, { recursive: true }),
      { discard: true }
    ).pipe(Effect.mapError((e) => storeError(BACKEND, "open", e)))
    const locker = makeLocker({ fs, dir: layout.locks, join: path.join, ttlMs: LOCK_TTL_MS, host: yield* hostIdentity(fs) })
    yield* removeLeftovers(fs, path, layout, STALE_TEMP_MS)
    yield* locker.collectGarbage
    return CheckpointBackend.make(fileBackend({ fs, path, layout, locker }))
  })

/**
 * A file store in `options.directory`, on the `FileSystem` and `Path` services
 * you provide (for another platform, or an in-memory file system in tests).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFileSystem = (
  options: Options
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidOption, FileSystem.FileSystem | Path.Path> =>
  Layer.effect(CheckpointStore.CheckpointStore, make(options))

/**
 * A file store in `options.directory`, on Node's file system (the reference's
 * `NewFileCheckpointStore`). The directory is created if missing.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { FileStore } from "effect-checkpoint/file"
 *
 * program.pipe(Effect.provide(FileStore.layer({ directory: "./checkpoints" })))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidOption> =>
  layerFileSystem(options).pipe(Layer.provide(Layer.merge(NodeFileSystem.layer, NodePath.layer)))

/**
 * {@link layer} with its options read from a `Config`: a missing or malformed
 * value fails the layer with the `ConfigError` itself.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { FileStore } from "effect-checkpoint/file"
 *
 * const StoreLive = FileStore.layerConfigWith(Config.all({ directory: Config.string("MY_APP_CHECKPOINTS") }))
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfigWith = (
  config: Config.Config<Options>
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidOption | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(config, layer))

/**
 * {@link layer} with its directory read from `Config`: `CHECKPOINT_DIR`
 * (default `./checkpoints`; an empty value is a `ConfigError`). A config error
 * fails the layer with the `ConfigError` itself. For other names, see
 * {@link layerConfigWith}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<
  CheckpointStore.CheckpointStore,
  CheckpointStoreError | InvalidOption | ConfigError.ConfigError
> = layerConfigWith(
  Config.all({
    directory: nonEmptyString("CHECKPOINT_DIR", "./checkpoints")
  })
)
