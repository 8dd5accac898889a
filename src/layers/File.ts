/**
 * The file-system checkpoint store: one JSON file per checkpoint under a
 * directory, written atomically, readable by any tool.
 *
 * Layout under `directory`:
 *
 * | path | what |
 * |---|---|
 * | `checkpoints/<id>.json` | the checkpoint document, published with `link(2)` from a fsync'ed temp file: it appears whole or not at all, and never replaces another |
 * | `executions/<executionId>/<version>` | a symbolic link to `../../checkpoints/<id>.json`, created with `symlink(2)` (which fails if it exists): the atomic `(executionId, version)` slot |
 * | `tmp/` | temp files of saves in progress (stale ones are removed when the layer is built) |
 *
 * `load(id)` reads one file; `list` reads one directory and the files it
 * names. Ids can never leave `directory`: they are checked (no `/`, no leading
 * `.`) before any path is built.
 *
 * @since 0.1.0
 */
import { FileSystem, Path } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { Config, Effect, Layer, Option } from "effect"
import * as Checkpoint from "../Checkpoint.js"
import { CheckpointConflict, CheckpointDecodeError, type CheckpointStoreError } from "../CheckpointError.js"
import * as CheckpointStore from "../CheckpointStore.js"
import { isValidId } from "../internal/identifier.js"
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

const BACKEND = "file"
/** Temp files older than this are left-overs of a crashed save. */
const STALE_TEMP_MS = 10 * 60 * 1000
/** How many files `list` reads at once. */
const READ_CONCURRENCY = 16

const encoder = new TextEncoder()
const slotName = (version: number): string => String(version).padStart(10, "0")
const SLOT = /^\d{10}$/

const isNotFound = (e: PlatformError): boolean => e._tag === "SystemError" && e.reason === "NotFound"
const isAlreadyExists = (e: PlatformError): boolean => e._tag === "SystemError" && e.reason === "AlreadyExists"

/**
 * Builds a file store in `directory` on the `FileSystem` and `Path` services.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const root = path.resolve(options.directory)
    const checkpointsDir = path.join(root, "checkpoints")
    const executionsDir = path.join(root, "executions")
    const tmpDir = path.join(root, "tmp")

    const fail = (operation: string) => (e: unknown) => Effect.fail(storeError(BACKEND, operation, e))
    /** Maps the platform errors of an operation to `CheckpointStoreError`, keeping the others. */
    const failPlatform = (operation: string) => ({ SystemError: fail(operation), BadArgument: fail(operation) })
    const orNone = <A>(effect: Effect.Effect<A, PlatformError>): Effect.Effect<Option.Option<A>, PlatformError> =>
      effect.pipe(Effect.asSome, Effect.catchIf(isNotFound, () => Effect.succeedNone))

    yield* Effect.forEach(
      [checkpointsDir, executionsDir, tmpDir],
      (dir) => fs.makeDirectory(dir, { recursive: true }),
      { discard: true }
    ).pipe(Effect.catchAll(fail("open")))
    yield* removeStaleTemps(fs, path, tmpDir)

    const documentPath = (id: string) => path.join(checkpointsDir, `${id}.json`)
    const executionPath = (executionId: string) => path.join(executionsDir, executionId)
    const slotPath = (executionId: string, version: number) => path.join(executionsDir, executionId, slotName(version))
    const slotTarget = (id: string) => `../../checkpoints/${id}.json`
    /** The checkpoint id a slot link points to, if it is one of ours. */
    const idOfTarget = (target: string): string | undefined => {
      const match = /^\.\.\/\.\.\/checkpoints\/(.+)\.json$/.exec(target)
      return match !== null && isValidId(match[1]) ? match[1] : undefined
    }

    /** Writes `text` to a fsync'ed temp file and links it to `target`; fails with `AlreadyExists` if `target` exists. */
    const publish = (text: string, target: string) =>
      Effect.gen(function*() {
        const temp = path.join(tmpDir, `${yield* Checkpoint.generateCheckpointId}.tmp`)
        const write = Effect.scoped(Effect.flatMap(fs.open(temp, { flag: "wx" }), (file) =>
          Effect.zipRight(file.writeAll(encoder.encode(text)), file.sync)))
        // The temp name goes away in every case: after the link, or after a failed write (a full disk).
        yield* Effect.zipRight(write, fs.link(temp, target)).pipe(
          Effect.ensuring(Effect.ignore(fs.remove(temp, { force: true })))
        )
      })

    /** Removes a document and ignores a missing one. */
    const removeDocument = (id: string) => fs.remove(documentPath(id), { force: true })

    /** Creates the `(executionId, version)` slot, creating the execution directory if it is missing. */
    const createSlot = (cp: Checkpoint.Checkpoint) => {
      const link = fs.symlink(slotTarget(cp.id), slotPath(cp.executionId, cp.version))
      return link.pipe(Effect.catchIf(isNotFound, () =>
        Effect.zipRight(fs.makeDirectory(executionPath(cp.executionId), { recursive: true }), link)))
    }

    const insertOne = ({ checkpoint: cp, document }: Checkpoint.Encoded) => {
      const conflict = new CheckpointConflict({ executionId: cp.executionId, version: cp.version, id: cp.id })
      return Effect.gen(function*() {
        yield* publish(document, documentPath(cp.id)).pipe(Effect.catchIf(isAlreadyExists, () => Effect.fail(conflict)))
        yield* createSlot(cp).pipe(
          Effect.catchIf(isAlreadyExists, () => Effect.fail(conflict)),
          // The slot is taken (or could not be made): take the document back.
          Effect.tapError(() => Effect.ignore(removeDocument(cp.id)))
        )
      }).pipe(Effect.catchTags(failPlatform("save")))
    }

    /** Removes a checkpoint that `insertOne` wrote (rollback of a batch). */
    const uninsert = (cp: Checkpoint.Checkpoint) =>
      Effect.ignore(Effect.zipRight(fs.remove(slotPath(cp.executionId, cp.version), { force: true }), removeDocument(cp.id)))

    /** The versions of an execution's slots, ascending. */
    const versionsOf = (executionId: string) =>
      fs.readDirectory(executionPath(executionId)).pipe(
        Effect.map((names) => names.filter((n) => SLOT.test(n)).map(Number).sort((a, b) => a - b)),
        Effect.catchIf(isNotFound, () => Effect.succeed([] as Array<number>))
      )

    /**
     * Reads the checkpoint in a slot. A slot whose document is gone (deleted
     * concurrently, or left by a crash) reads as none; a document that does
     * not decode, or does not belong to this slot, fails naming its id.
     */
    const readSlot = (executionId: string, version: number) =>
      Effect.gen(function*() {
        const slot = slotPath(executionId, version)
        const text = yield* orNone(fs.readFileString(slot))
        if (Option.isNone(text)) return Option.none()
        const id = idOfTarget(yield* fs.readLink(slot).pipe(Effect.orElseSucceed(() => "")))
        const cp = yield* Checkpoint.decode(text.value, id)
        if (cp.executionId !== executionId || cp.version !== version) {
          return yield* new CheckpointDecodeError({
            id: cp.id,
            message: `Stored checkpoint ${JSON.stringify(cp.id)} is in the slot of ${executionId} version ${version} ` +
              `but says it is ${cp.executionId} version ${cp.version}`
          })
        }
        return Option.some(cp)
      })

    /** Reads slots in order until `limit` checkpoints were found (missing documents are skipped). */
    const readSlots = (executionId: string, versions: ReadonlyArray<number>, limit: number) =>
      Effect.gen(function*() {
        const out: Array<Checkpoint.Checkpoint> = []
        let at = 0
        while (out.length < limit && at < versions.length) {
          const batch = versions.slice(at, at + Math.max(limit - out.length, 1))
          at += batch.length
          const read = yield* Effect.forEach(batch, (v) => readSlot(executionId, v), { concurrency: READ_CONCURRENCY })
          for (const cp of read) if (Option.isSome(cp)) out.push(cp.value)
        }
        return out.slice(0, limit)
      })

    const latest = (executionId: string) =>
      Effect.map(
        Effect.flatMap(versionsOf(executionId), (versions) => readSlots(executionId, [...versions].reverse(), 1)),
        (found) => Option.fromNullable(found[0])
      )

    /** Removes the slots of `versions` and the documents they point to; returns how many slots were removed. */
    const removeSlots = (executionId: string, versions: ReadonlyArray<number>) =>
      Effect.map(
        Effect.forEach(versions, (version) => {
          const slot = slotPath(executionId, version)
          return fs.readLink(slot).pipe(
            Effect.flatMap((target) => {
              const id = idOfTarget(target)
              return id === undefined ? Effect.void : removeDocument(id)
            }),
            Effect.zipRight(fs.remove(slot)),
            Effect.as(1),
            Effect.catchIf(isNotFound, () => Effect.succeed(0))
          )
        }, { concurrency: READ_CONCURRENCY }),
        (removed) => removed.reduce((a, b) => a + b, 0)
      )

    /**
     * Fails unless the newest version of `expect.executionId` is the expected one.
     * Not atomic with the write that follows (another process may write in
     * between); the exclusive slots still never let two checkpoints take one version.
     */
    const checkExpectation = (expect: CheckpointStore.Expectation | undefined) =>
      expect === undefined
        ? Effect.void
        : Effect.flatMap(versionsOf(expect.executionId), (versions) => {
          const actual = versions.length === 0 ? 0 : versions[versions.length - 1]!
          return actual === expect.latestVersion
            ? Effect.void
            : Effect.fail(CheckpointStore.expectationFailed(expect, actual))
        }).pipe(Effect.catchTags(failPlatform("save")))

    return CheckpointStore.make({
      insertOne: (e, expect) => Effect.zipRight(checkExpectation(expect), insertOne(e)),
      insert: (batch, expect) =>
        Effect.zipRight(checkExpectation(expect), Effect.suspend(() => {
          const written: Array<Checkpoint.Checkpoint> = []
          return Effect.forEach(batch, (e) => Effect.tap(insertOne(e), () => written.push(e.checkpoint)), {
            discard: true
          }).pipe(
            // All or nothing: on a failure or an interruption, take back what this batch wrote.
            Effect.onError(() => Effect.forEach(written, uninsert, { discard: true }))
          )
        })),
      load: (id) =>
        orNone(fs.readFileString(documentPath(id))).pipe(
          Effect.catchAll(fail("load")),
          Effect.flatMap(Option.match({
            onNone: () => Effect.succeedNone,
            onSome: (text) => Effect.asSome(Checkpoint.decode(text, id))
          }))
        ),
      list: (executionId, afterVersion, limit) =>
        Effect.flatMap(versionsOf(executionId), (versions) => {
          const after = versions.filter((v) => v > afterVersion)
          return readSlots(executionId, after, limit ?? after.length)
        }).pipe(Effect.catchTags(failPlatform("list"))),
      latest: (executionId) => latest(executionId).pipe(Effect.catchTags(failPlatform("latest"))),
      listExecutions: fs.readDirectory(executionsDir).pipe(
        Effect.flatMap((names) =>
          Effect.forEach(names.filter(isValidId), (executionId) => latest(executionId), { concurrency: READ_CONCURRENCY })
        ),
        Effect.map((found) => found.flatMap((cp) => Option.isSome(cp) ? [CheckpointStore.summarize(cp.value)] : [])),
        Effect.catchTags(failPlatform("listExecutions"))
      ),
      delete: (id) =>
        orNone(fs.readFileString(documentPath(id))).pipe(
          Effect.flatMap(Option.match({
            onNone: () => Effect.void,
            onSome: (text) =>
              Checkpoint.decode(text, id).pipe(
                // Free the slot first, so a crash in between leaves an unlisted document, never a listed hole.
                Effect.flatMap((cp) => removeSlotIfOurs(cp)),
                Effect.catchTag("CheckpointDecodeError", () => Effect.void),
                Effect.zipRight(removeDocument(id))
              )
          })),
          Effect.catchAll(fail("delete"))
        ),
      clear: (executionId) =>
        Effect.flatMap(versionsOf(executionId), (versions) => removeSlots(executionId, versions)).pipe(
          Effect.zipRight(fs.remove(executionPath(executionId), { recursive: true, force: true })),
          Effect.catchAll(fail("clear"))
        ),
      prune: (executionId, keep) =>
        Effect.flatMap(
          versionsOf(executionId),
          (versions) => removeSlots(executionId, versions.slice(0, Math.max(0, versions.length - keep)))
        ).pipe(Effect.catchAll(fail("prune")))
    })

    /** Removes the slot of `cp` if it points to `cp` (never another checkpoint's slot). */
    function removeSlotIfOurs(cp: Checkpoint.Checkpoint) {
      const slot = slotPath(cp.executionId, cp.version)
      return fs.readLink(slot).pipe(
        Effect.flatMap((target) => idOfTarget(target) === cp.id ? fs.remove(slot) : Effect.void),
        Effect.catchIf(isNotFound, () => Effect.void)
      )
    }

  })

/** Removes temp files that a crashed save left behind (best effort). */
const removeStaleTemps = (fs: FileSystem.FileSystem, path: Path.Path, tmpDir: string) =>
  Effect.gen(function*() {
    const names = yield* fs.readDirectory(tmpDir)
    const now = Date.now()
    yield* Effect.forEach(names, (name) => {
      const file = path.join(tmpDir, name)
      return Effect.flatMap(fs.stat(file), (info) =>
        Option.match(info.mtime, {
          onNone: () => Effect.void,
          onSome: (mtime) => now - mtime.getTime() > STALE_TEMP_MS ? fs.remove(file, { force: true }) : Effect.void
        }))
    }, { discard: true })
  }).pipe(Effect.ignore)

/**
 * A file store in `options.directory`, on the `FileSystem` and `Path` services
 * you provide (for another platform, or an in-memory file system in tests).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFileSystem = (
  options: Options
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError, FileSystem.FileSystem | Path.Path> =>
  Layer.effect(CheckpointStore.CheckpointStore, make(options))

/**
 * A file store in `options.directory`, on Node's file system (the reference's
 * `NewFileCheckpointStore`). The directory is created if missing.
 *
 * @example
 * ```ts
 * import { FileStore } from "effect-checkpoint"
 * program.pipe(Effect.provide(FileStore.layer({ directory: "./checkpoints" })))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError> =>
  layerFileSystem(options).pipe(Layer.provide(Layer.merge(NodeFileSystem.layer, NodePath.layer)))

/**
 * {@link layer} with its directory read from `Config`: `CHECKPOINT_DIR`
 * (default `./checkpoints`). A config error fails the layer with
 * `CheckpointStoreError` (operation `"config"`).
 *
 * To read other names, map your own `Config` into {@link layer}:
 * `Layer.unwrapEffect(Effect.map(Config.string("MY_DIR"), (directory) => FileStore.layer({ directory })))`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError> = Layer.unwrapEffect(
  Effect.map(
    Config.string("CHECKPOINT_DIR").pipe(
      Config.withDefault("./checkpoints"),
      Effect.mapError((e) => storeError(BACKEND, "config", e))
    ),
    (directory) => layer({ directory })
  )
)
