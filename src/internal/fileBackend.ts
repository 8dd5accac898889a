/**
 * The File store's backend (see `layers/File.ts` for the layout and the
 * guarantees). Every change to an execution — its checkpoints, its task
 * writes, its record — happens under that execution's lock (`fileLock.ts`),
 * so a record's read-modify-write, a conditional save and a claim are atomic
 * between the fibers of a process and between processes sharing the
 * directory. Reads take no lock: documents, slots and writes are published
 * whole (`link(2)`, `symlink(2)`) and never change, records are replaced whole
 * (`rename(2)`).
 *
 * @internal
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import type { PlatformError } from "@effect/platform/Error"
import { Effect, Either, Option, type Scope } from "effect"
import { randomUUID } from "node:crypto"
import type * as Checkpoint from "../Checkpoint.js"
import type { Backend, Encoded, EncodedWrite, InsertOptions, RecordPatch } from "../CheckpointBackend.js"
import {
  BlobsMissing,
  conflict,
  decodeDocument,
  decodeRecord,
  expectationMet,
  isDue,
  leaseProblem,
  parseJson,
  sweepable
} from "../CheckpointBackend.js"
import {
  type CheckpointConflict,
  CheckpointDecodeError,
  CheckpointNotFound,
  type CheckpointStoreError,
  ExecutionNotFound
} from "../CheckpointError.js"
import {
  claimedRecord,
  firstRecord,
  matches,
  newestFirst,
  oldestFirst,
  patchRecord,
  recordAfterInsert,
  type StoredRecord,
  toRecord,
  toStored
} from "./storedRecord.js"
import type { ExecutionRecord, TaskWrite } from "../CheckpointStore.js"
import type { Locker, LockTimeout } from "./fileLock.js"
import { isPlainObject } from "./json.js"
import { isValidId } from "./identifier.js"
import { storeError } from "./storeError.js"

/** The directories of a store. */
export interface FileLayout {
  readonly checkpoints: string
  readonly executions: string
  readonly writes: string
  readonly locks: string
  readonly tmp: string
}

export const BACKEND = "file"
/** How many files are read or removed at once. */
const CONCURRENCY = 16
/** How long an operation waits for an execution's lock before it fails. */
const LOCK_WAIT_MS = 60_000
/** How long `claim` and `sweep` wait for one execution's lock before they pass it by. */
const SCAN_LOCK_WAIT_MS = 1_000

const RECORD = "record.json"
/** An execution's large values: `executions/<executionId>/blobs/<hash>.json`. */
const BLOBS = "blobs"
const HASH = /^[A-Za-z0-9_-]{22}$/
const BLOB = /^([A-Za-z0-9_-]{22})\.json$/
/** The field of a stored document that lists the blobs it references (decoding ignores it). */
const REFS = "$refs"
const SLOT = /^\d{10}$/
const WRITE = /^(\d{10})-(.+)\.json$/
const pad = (n: number): string => String(n).padStart(10, "0")
const encoder = new TextEncoder()

type Infra = PlatformError | LockTimeout
const isReason = (reason: string) => (e: PlatformError): boolean => e._tag === "SystemError" && e.reason === reason
const isNotFound = isReason("NotFound")
const isAlreadyExists = isReason("AlreadyExists")
const isInfra = (e: unknown): e is Infra =>
  typeof e === "object" && e !== null && "_tag" in e &&
  (e._tag === "SystemError" || e._tag === "BadArgument" || e._tag === "LockTimeout")

/** Maps the file-system and lock failures of an operation to `CheckpointStoreError`, keeping the others. */
const onDisk = (operation: string) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, Exclude<E, Infra> | CheckpointStoreError, R> =>
  Effect.catchIf(effect, isInfra, (e) => Effect.fail(storeError(BACKEND, operation, e))) as Effect.Effect<
    A,
    Exclude<E, Infra> | CheckpointStoreError,
    R
  >

/** A document with the blobs it references (`$refs`, which decoding ignores). */
const withRefs = (document: string, refs: ReadonlyArray<string>): string =>
  refs.length === 0 ? document : `${document.slice(0, -1)},${JSON.stringify(REFS)}:${JSON.stringify(refs)}}`

/** The blobs a stored document references (`[]`: none), or `undefined` when it cannot be read. */
const refsIn = (document: string): ReadonlyArray<string> | undefined => {
  try {
    const parsed = JSON.parse(document) as unknown
    if (!isPlainObject(parsed)) return undefined
    const refs = parsed[REFS]
    return refs === undefined ? [] : Array.isArray(refs) ? refs.filter((h): h is string => typeof h === "string") : undefined
  } catch {
    return undefined
  }
}


/** ISO text when the time is a date, else the number (a lease past year 275760 still round-trips). */
const time = (ms: number): string | number => Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : ms

const recordText = (executionId: string, r: StoredRecord): string =>
  JSON.stringify({
    executionId,
    latestVersion: r.latestVersion,
    latestCheckpointId: r.latestCheckpointId,
    updatedAt: time(r.updatedAt),
    status: r.status,
    ...(r.wakeAt === undefined ? {} : { wakeAt: time(r.wakeAt) }),
    ...(r.failure === undefined ? {} : { failure: { tag: r.failure.tag, message: r.failure.message } }),
    attempts: r.attempts,
    ...(r.lease === undefined ? {} : { lease: { owner: r.lease.owner, expiresAt: time(r.lease.expiresAt) } })
  })

const badRecord = (executionId: string, problem: string) =>
  new CheckpointDecodeError({ message: `Stored execution record ${JSON.stringify(executionId)} is not valid: ${problem}` })

/** Decodes a `record.json`; anything wrong → `CheckpointDecodeError` naming the execution. */
const parseRecord = (executionId: string, text: string): Either.Either<StoredRecord, CheckpointDecodeError> => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (e) {
    return Either.left(badRecord(executionId, `not JSON (${e instanceof Error ? e.message : String(e)})`))
  }
  if (!isPlainObject(value)) return Either.left(badRecord(executionId, "not a JSON object"))
  if (value.executionId !== executionId) {
    return Either.left(badRecord(executionId, `it is the record of ${JSON.stringify(value.executionId)}`))
  }
  const failure = value.failure
  const lease = value.lease
  if (failure !== undefined && !isPlainObject(failure)) return Either.left(badRecord(executionId, "the failure is not an object"))
  if (lease !== undefined && !isPlainObject(lease)) return Either.left(badRecord(executionId, "the lease is not an object"))
  return Either.map(
    decodeRecord({
      executionId: value.executionId,
      latestVersion: value.latestVersion,
      latestCheckpointId: value.latestCheckpointId,
      updatedAt: value.updatedAt,
      status: value.status,
      wakeAt: value.wakeAt,
      failureTag: failure?.tag,
      failureMessage: failure?.message,
      attempts: value.attempts,
      leaseOwner: lease?.owner,
      leaseExpiresAt: lease?.expiresAt
    }),
    toStored
  )
}


export interface FileBackendOptions {
  readonly fs: FileSystem.FileSystem
  readonly path: Path.Path
  readonly layout: FileLayout
  readonly locker: Locker
}

export const fileBackend = ({ fs, layout, locker, path }: FileBackendOptions): Backend => {
  const orNone = <A>(effect: Effect.Effect<A, PlatformError>): Effect.Effect<Option.Option<A>, PlatformError> =>
    effect.pipe(Effect.asSome, Effect.catchIf(isNotFound, () => Effect.succeedNone))

  // ---------------------------------------------------------------------------
  // Paths
  // ---------------------------------------------------------------------------

  const documentPath = (id: string) => path.join(layout.checkpoints, `${id}.json`)
  const executionPath = (executionId: string) => path.join(layout.executions, executionId)
  const recordPath = (executionId: string) => path.join(layout.executions, executionId, RECORD)
  const slotPath = (executionId: string, version: number) => path.join(layout.executions, executionId, pad(version))
  const slotTarget = (id: string) => `../../checkpoints/${id}.json`
  const writesPath = (checkpointId: string) => path.join(layout.writes, checkpointId)
  const blobsPath = (executionId: string) => path.join(layout.executions, executionId, BLOBS)
  const blobPath = (executionId: string, hash: string) => path.join(layout.executions, executionId, BLOBS, `${hash}.json`)
  const tempPath = (suffix: string) => path.join(layout.tmp, `${randomUUID()}${suffix}`)
  /** The checkpoint id a slot link points to, if it is one of ours. */
  const idOfTarget = (target: string): string | undefined => {
    const match = /^\.\.\/\.\.\/checkpoints\/(.+)\.json$/.exec(target)
    return match !== null && isValidId(match[1]) ? match[1] : undefined
  }

  // ---------------------------------------------------------------------------
  // Files
  // ---------------------------------------------------------------------------

  /** Writes `text` to a fsync'ed temp file and links it to `target`; fails with `AlreadyExists` if `target` exists. */
  const publish = (text: string, target: string): Effect.Effect<void, PlatformError> =>
    Effect.suspend(() => {
      const temp = tempPath(".tmp")
      const write = Effect.scoped(Effect.flatMap(fs.open(temp, { flag: "wx" }), (file) =>
        Effect.zipRight(file.writeAll(encoder.encode(text)), file.sync)))
      // The temp name goes away in every case: after the link, or after a failed write (a full disk).
      return Effect.zipRight(write, fs.link(temp, target)).pipe(
        Effect.ensuring(Effect.ignore(fs.remove(temp, { force: true })))
      )
    })

  /** Replaces `target` with `text` atomically (fsync'ed temp file, then `rename(2)`). */
  const replace = (text: string, target: string): Effect.Effect<void, PlatformError> =>
    Effect.suspend(() => {
      const temp = tempPath(".tmp")
      const write = Effect.scoped(Effect.flatMap(fs.open(temp, { flag: "wx" }), (file) =>
        Effect.zipRight(file.writeAll(encoder.encode(text)), file.sync)))
      return Effect.zipRight(write, fs.rename(temp, target)).pipe(
        Effect.onError(() => Effect.ignore(fs.remove(temp, { force: true })))
      )
    })

  /** `locker.lock`, then `body` uninterruptibly: an operation that holds its locks always finishes. */
  const locked = <A, E>(
    keys: ReadonlyArray<string>,
    body: Effect.Effect<A, E>,
    waitMs = LOCK_WAIT_MS
  ): Effect.Effect<A, E | Infra> =>
    Effect.scoped(Effect.zipRight(locker.lock(keys, waitMs), Effect.uninterruptible(body)) as Effect.Effect<
      A,
      E | Infra,
      Scope.Scope
    >)

  // ---------------------------------------------------------------------------
  // Slots and documents
  // ---------------------------------------------------------------------------

  /** The versions of an execution's slots, ascending. */
  const versionsOf = (executionId: string): Effect.Effect<Array<number>, PlatformError> =>
    fs.readDirectory(executionPath(executionId)).pipe(
      Effect.map((names) => names.filter((n) => SLOT.test(n)).map(Number).sort((a, b) => a - b)),
      Effect.catchIf((e) => isNotFound(e) || (e._tag === "SystemError" && e.reason === "BadResource"), () =>
        Effect.succeed([] as Array<number>))
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
      if (Option.isNone(text)) return Option.none<Checkpoint.Checkpoint>()
      const id = idOfTarget(yield* fs.readLink(slot).pipe(Effect.orElseSucceed(() => "")))
      const cp = yield* decodeDocument(text.value, id)
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
        const read = yield* Effect.forEach(batch, (v) => readSlot(executionId, v), { concurrency: CONCURRENCY })
        for (const cp of read) if (Option.isSome(cp)) out.push(cp.value)
      }
      return out.slice(0, limit)
    })

  /** The newest checkpoint of an execution whose document exists. */
  const newestLive = (executionId: string) =>
    Effect.map(
      Effect.flatMap(versionsOf(executionId), (versions) => readSlots(executionId, [...versions].reverse(), 1)),
      (found) => Option.fromNullable(found[0])
    )

  /** Publishes a checkpoint's document, then claims its slot; on a failure nothing of it is left. */
  const insertCheckpoint = ({ checkpoint: cp, document, refs }: Encoded) => {
    const text = withRefs(document, refs)
    const slot = slotPath(cp.executionId, cp.version)
    const link = fs.symlink(slotTarget(cp.id), slot)
    return Effect.gen(function*() {
      yield* publish(text, documentPath(cp.id)).pipe(
        Effect.catchIf(isAlreadyExists, () => Effect.fail(conflict.idTaken(cp)))
      )
      yield* link.pipe(
        Effect.catchIf(isNotFound, () =>
          Effect.zipRight(fs.makeDirectory(executionPath(cp.executionId), { recursive: true }), link)),
        Effect.catchIf(isAlreadyExists, () => Effect.fail(conflict.versionTaken(cp))),
        // The slot is taken (or could not be made): take the document back.
        Effect.tapError(() => Effect.ignore(fs.remove(documentPath(cp.id), { force: true })))
      )
    })
  }

  /** Removes a checkpoint that `insertCheckpoint` wrote (rollback of a batch). */
  const uninsert = (cp: Checkpoint.Checkpoint) =>
    Effect.ignore(Effect.zipRight(
      fs.remove(slotPath(cp.executionId, cp.version), { force: true }),
      fs.remove(documentPath(cp.id), { force: true })
    ))

  /** Removes a checkpoint's document and its task writes. */
  const removeCheckpointFiles = (id: string) =>
    Effect.zipRight(
      fs.remove(documentPath(id), { force: true }),
      fs.remove(writesPath(id), { recursive: true, force: true })
    )

  // ---------------------------------------------------------------------------
  // Blobs
  // ---------------------------------------------------------------------------

  /**
   * Refuses a batch that references a blob its execution does not have on
   * disk and the batch does not bring (under the execution's lock).
   */
  const checkBlobs = (batch: ReadonlyArray<Encoded>, options: InsertOptions) =>
    Effect.gen(function*() {
      for (const e of batch) {
        if (e.refs.length === 0) continue
        const executionId = e.checkpoint.executionId
        const missing: Array<string> = []
        for (const hash of new Set(e.refs)) {
          if (options.blobs.some((b) => b.executionId === executionId && b.hash === hash && HASH.test(b.hash))) continue
          if (!HASH.test(hash) || !(yield* fs.exists(blobPath(executionId, hash)))) missing.push(hash)
        }
        if (missing.length > 0) return yield* new BlobsMissing({ executionId, hashes: missing })
      }
    })

  /**
   * Stores the blobs of a batch, each unless its execution has it (a file is
   * published whole, so one that exists is whole); returns the files it made,
   * for a rollback.
   */
  const storeBlobs = (blobs: InsertOptions["blobs"], made: Array<string>) =>
    Effect.forEach(blobs, (b) => {
      if (!HASH.test(b.hash)) return Effect.die(new Error(`a blob hash ${JSON.stringify(b.hash)} is not one the store kit makes`))
      const file = blobPath(b.executionId, b.hash)
      const publishIt = Effect.tap(publish(b.json, file), () => made.push(file))
      return publishIt.pipe(
        Effect.catchIf(isNotFound, () => Effect.zipRight(fs.makeDirectory(blobsPath(b.executionId), { recursive: true }), publishIt)),
        Effect.catchIf(isAlreadyExists, () => Effect.void)
      )
    }, { discard: true })

  /**
   * Removes the blobs of an execution that no checkpoint of it references any
   * more (under the execution's lock): after a delete or a prune, and the
   * blobs a crash left between their write and their checkpoint's. When a
   * document left cannot be read, nothing goes.
   */
  const collectBlobs = (executionId: string) =>
    Effect.gen(function*() {
      const names = yield* fs.readDirectory(blobsPath(executionId)).pipe(
        Effect.catchIf(isNotFound, () => Effect.succeed([] as Array<string>))
      )
      const stored = names.flatMap((n) => {
        const match = BLOB.exec(n)
        return match === null ? [] : [match[1]!]
      })
      if (stored.length === 0) return
      const live = new Set<string>()
      const readable = yield* Effect.forEach(yield* versionsOf(executionId), (version) =>
        Effect.map(orNone(fs.readFileString(slotPath(executionId, version))), (text) => {
          if (Option.isNone(text)) return true
          const refs = refsIn(text.value)
          if (refs === undefined) return false
          for (const h of refs) live.add(h)
          return true
        }), { concurrency: CONCURRENCY })
      if (readable.includes(false)) return
      yield* Effect.forEach(stored.filter((h) => !live.has(h)), (h) => fs.remove(blobPath(executionId, h), { force: true }), {
        concurrency: CONCURRENCY,
        discard: true
      })
    })

  /**
   * Removes the slots of `versions` (each before its document and writes, so
   * a crash leaves an unlisted document, never a listed hole); returns how
   * many slots there were.
   */
  const removeSlots = (dir: string, versions: ReadonlyArray<number>) =>
    Effect.map(
      Effect.forEach(versions, (version) => {
        const slot = path.join(dir, pad(version))
        return fs.readLink(slot).pipe(
          Effect.flatMap((target) =>
            Effect.zipRight(fs.remove(slot), Effect.suspend(() => {
              const id = idOfTarget(target)
              return id === undefined ? Effect.void : removeCheckpointFiles(id)
            }))
          ),
          Effect.as(1),
          Effect.catchIf(isNotFound, () => Effect.succeed(0))
        )
      }, { concurrency: CONCURRENCY }),
      (removed) => removed.reduce((a, b) => a + b, 0)
    )

  /**
   * Removes a whole execution: its directory is renamed into `tmp/` first
   * (record and slots vanish at once), then the documents and writes its
   * slots name go, then the directory.
   */
  const removeExecution = (executionId: string): Effect.Effect<void, PlatformError> =>
    Effect.suspend(() => {
      const trash = tempPath(".trash")
      return fs.rename(executionPath(executionId), trash).pipe(
        Effect.zipRight(emptyTrash(trash)),
        Effect.catchIf(isNotFound, () => Effect.void)
      )
    })

  const emptyTrash = (trash: string) =>
    fs.readDirectory(trash).pipe(
      Effect.flatMap((names) => removeSlots(trash, names.filter((n) => SLOT.test(n)).map(Number))),
      Effect.zipRight(fs.remove(trash, { recursive: true, force: true }))
    )

  // ---------------------------------------------------------------------------
  // Records
  // ---------------------------------------------------------------------------

  const readRecord = (executionId: string): Effect.Effect<Option.Option<StoredRecord>, CheckpointDecodeError | PlatformError> =>
    Effect.flatMap(
      orNone(fs.readFileString(recordPath(executionId))),
      (text) => Option.isNone(text) ? Effect.succeedNone : Effect.asSome(parseRecord(executionId, text.value))
    )

  const writeRecord = (executionId: string, r: StoredRecord) => replace(recordText(executionId, r), recordPath(executionId))

  /**
   * The record of a 0.1.0 execution (slots, no record), made from its newest
   * checkpoint: `interrupted` when it has nodes to run — so no worker picks
   * it up by surprise; `resume` it — and `done` when it has none.
   */
  const backfilled = (executionId: string) =>
    Effect.map(newestLive(executionId), Option.map((cp) => firstRecord(cp, cp.next.length > 0 ? "interrupted" : "done")))

  /** The record of an execution, under its lock: the stored one, or one backfilled (and stored) from its slots. */
  const lockedRecord = (executionId: string) =>
    Effect.flatMap(readRecord(executionId), (stored) =>
      Option.isSome(stored)
        ? Effect.succeed(stored)
        : Effect.tap(backfilled(executionId), (made) =>
          Option.isSome(made) ? writeRecord(executionId, made.value) : Effect.void))

  /** The record of an execution without a lock; a 0.1.0 execution gets its record first. */
  const currentRecord = (executionId: string) =>
    Effect.flatMap(readRecord(executionId), (stored) =>
      Option.isSome(stored)
        ? Effect.succeed(stored)
        : Effect.flatMap(versionsOf(executionId), (versions) =>
          versions.length === 0
            ? Effect.succeedNone
            : locked([executionId], Effect.map(lockedRecord(executionId), Option.map((r) => r)))))

  /** Every execution's record (O(executions) reads), 0.1.0 ones backfilled. */
  const allRecords = <E>(
    read: (
      executionId: string
    ) => Effect.Effect<Option.Option<StoredRecord>, E>
  ) =>
    fs.readDirectory(layout.executions).pipe(
      Effect.catchIf(isNotFound, () => Effect.succeed([] as Array<string>)),
      Effect.flatMap((names) =>
        Effect.forEach(
          names.filter(isValidId),
          (executionId) => Effect.map(read(executionId), Option.map((r) => [executionId, r] as const)),
          { concurrency: CONCURRENCY }
        )
      ),
      Effect.map((found) => found.flatMap((r) => Option.isSome(r) ? [r.value] : []))
    )

  /** `claim` and `sweep` pass by a record they cannot read rather than stop every worker. */
  const leniently = (executionId: string) =>
    Effect.catchTag(currentRecord(executionId), "CheckpointDecodeError", (e) =>
      Effect.as(Effect.logWarning(`File store: ${e.message}; left alone`), Option.none<StoredRecord>()))

  /**
   * Brings a record in line with the slots (after a crash between a slot and
   * its record, a hand-removed file, or a document deleted while corrupt):
   * it follows the newest checkpoint whose document exists; `undefined` when
   * none is left.
   */
  const reconcile = (executionId: string, record: StoredRecord) =>
    Effect.map(newestLive(executionId), Option.match({
      onNone: (): StoredRecord | undefined => undefined,
      onSome: (cp): StoredRecord => {
        if (cp.version === record.latestVersion && cp.id === record.latestCheckpointId) return record
        if (cp.version < record.latestVersion) return { ...record, latestVersion: cp.version, latestCheckpointId: cp.id }
        return {
          ...record,
          latestVersion: cp.version,
          latestCheckpointId: cp.id,
          updatedAt: cp.timestamp.getTime(),
          status: cp.next.length === 0 ? "done" : record.status === "done" ? "interrupted" : record.status
        }
      }
    }))

  /** Stores a record that `reconcile` changed (or removes the execution it found empty). */
  const storeReconciled = (executionId: string, before: StoredRecord, after: StoredRecord | undefined) =>
    after === before ? Effect.void : after === undefined ? removeExecution(executionId) : writeRecord(executionId, after)

  /**
   * Checks an expectation against the record, under the execution's lock. A
   * record that does not meet it is first reconciled with the slots (so a
   * record left behind by a crash never blocks the execution).
   */
  const checkExpectation = (
    executionId: string,
    record: StoredRecord | undefined,
    expect: { readonly latestVersion: number; readonly latestCheckpointId?: string | undefined }
  ): Effect.Effect<StoredRecord | undefined, CheckpointConflict | CheckpointDecodeError | PlatformError> => {
    if (expectationMet(record, expect)) return Effect.succeed(record)
    const failed = (actual: StoredRecord | undefined) =>
      Effect.fail(conflict.expectationFailed({ executionId, ...expect }, actual?.latestVersion ?? 0))
    if (record === undefined) return failed(record)
    return Effect.flatMap(reconcile(executionId, record), (healed) =>
      Effect.zipRight(
        storeReconciled(executionId, record, healed),
        expectationMet(healed, expect) ? Effect.succeed(healed) : failed(healed)
      ))
  }

  // ---------------------------------------------------------------------------
  // Primitives
  // ---------------------------------------------------------------------------

  const insert = (batch: ReadonlyArray<Encoded>, options: InsertOptions) =>
    Effect.suspend(() => {
      const newest = new Map<string, Encoded>()
      for (const e of batch) {
        const current = newest.get(e.checkpoint.executionId)
        if (current === undefined || current.checkpoint.version < e.checkpoint.version) newest.set(e.checkpoint.executionId, e)
      }
      const expect = options.expect
      const keys = expect === undefined ? [...newest.keys()] : [...newest.keys(), expect.executionId]
      return locked(
        keys,
        Effect.gen(function*() {
          const records = new Map<string, StoredRecord | undefined>()
          for (const executionId of new Set(keys)) {
            records.set(executionId, Option.getOrUndefined(yield* lockedRecord(executionId)))
          }
          for (const executionId of newest.keys()) {
            const lost = leaseProblem(executionId, records.get(executionId)?.lease, options.owner, false, options.now)
            if (lost !== undefined) return yield* lost
          }
          if (expect !== undefined) {
            records.set(expect.executionId, yield* checkExpectation(expect.executionId, records.get(expect.executionId), expect))
          }
          // Blobs before the checkpoints that reference them: a crash in between leaves unreferenced blobs, never a dangling reference.
          yield* checkBlobs(batch, options)
          const blobsMade: Array<string> = []
          const written: Array<Checkpoint.Checkpoint> = []
          // Blobs this batch made are referenced by nothing else (they were absent, under the lock): they go too.
          const rollback = Effect.zipRight(
            Effect.forEach(written, uninsert, { discard: true }),
            Effect.forEach(blobsMade, (file) => Effect.ignore(fs.remove(file, { force: true })), { discard: true })
          )
          yield* storeBlobs(options.blobs, blobsMade).pipe(Effect.onError(() => rollback))
          yield* Effect.forEach(batch, (e) => Effect.tap(insertCheckpoint(e), () => written.push(e.checkpoint)), {
            discard: true
          }).pipe(Effect.onError(() => rollback))
          // The records, by the rules of `InsertOptions`.
          const stored: Array<readonly [string, StoredRecord | undefined]> = []
          yield* Effect.forEach(newest, ([executionId, { checkpoint: cp }]) => {
            const record = records.get(executionId)
            return Effect.tap(writeRecord(executionId, recordAfterInsert(record, cp, options.patch, options.now)), () => {
              stored.push([executionId, record])
            })
          }, { discard: true }).pipe(
            // All or nothing: put back the records already replaced, and take the checkpoints back.
            Effect.onError(() =>
              Effect.zipRight(
                Effect.forEach(stored, ([executionId, before]) =>
                  Effect.ignore(
                    before === undefined
                      ? fs.remove(recordPath(executionId), { force: true })
                      : writeRecord(executionId, before)
                  ), { discard: true }),
                rollback
              )
            )
          )
        })
      )
    }).pipe(onDisk("save"), Effect.catchTag("CheckpointDecodeError", (e) => Effect.fail(storeError(BACKEND, "save", e))))

  /** Where a checkpoint is indexed, from its document (none when it does not exist). */
  const locate = (checkpointId: string) =>
    Effect.flatMap(orNone(fs.readFileString(documentPath(checkpointId))), (text) =>
      Option.isNone(text) ? Effect.succeedNone : Effect.asSome(decodeDocument(text.value, checkpointId)))

  const saveWrites = (
    checkpointId: string,
    taskId: string,
    batch: ReadonlyArray<EncodedWrite>,
    options: { readonly owner: string | undefined; readonly patch: RecordPatch | undefined; readonly now: number }
  ) =>
    Effect.flatMap(locate(checkpointId), (found) => {
      if (Option.isNone(found)) return Effect.fail(new CheckpointNotFound({ id: checkpointId }))
      const { executionId, version } = found.value
      const taskDir = path.join(writesPath(checkpointId), taskId)
      return locked(
        [executionId],
        Effect.gen(function*() {
          // Deleted while this waited for the lock?
          if (!(yield* fs.exists(documentPath(checkpointId)))) return yield* new CheckpointNotFound({ id: checkpointId })
          const record = Option.getOrUndefined(yield* lockedRecord(executionId))
          const lost = leaseProblem(executionId, record?.lease, options.owner, false, options.now)
          if (lost !== undefined) return yield* lost
          const names = yield* fs.readDirectory(taskDir).pipe(
            Effect.catchIf(isNotFound, () => Effect.succeed([] as Array<string>))
          )
          const taken = new Set<string>()
          let seq = 0
          for (const name of names) {
            const match = WRITE.exec(name)
            if (match === null) continue
            taken.add(match[2]!)
            seq = Math.max(seq, Number(match[1]))
          }
          for (const w of batch) {
            if (taken.has(w.key)) return yield* conflict.writeTaken({ checkpointId, executionId, version }, taskId, w.key)
          }
          const written: Array<string> = []
          const rollback = Effect.forEach(written, (file) => Effect.ignore(fs.remove(file, { force: true })), {
            discard: true
          })
          if (batch.length > 0) yield* fs.makeDirectory(taskDir, { recursive: true })
          yield* Effect.forEach(batch, (w, i) => {
            const file = path.join(taskDir, `${pad(seq + 1 + i)}-${w.key}.json`)
            return Effect.tap(publish(w.json, file), () => written.push(file))
          }, { discard: true }).pipe(Effect.onError(() => rollback))
          if (options.patch !== undefined && record !== undefined) {
            yield* writeRecord(executionId, patchRecord(record, options.patch, options.now)).pipe(
              Effect.onError(() => rollback)
            )
          }
        })
      )
    }).pipe(
      onDisk("saveWrites"),
      Effect.catchTag("CheckpointDecodeError", (e) => Effect.fail(storeError(BACKEND, "saveWrites", e)))
    )

  const listWrites = (checkpointId: string) =>
    Effect.gen(function*() {
      const dir = writesPath(checkpointId)
      const tasks = yield* fs.readDirectory(dir).pipe(Effect.catchIf(isNotFound, () => Effect.succeed([] as Array<string>)))
      const out: Array<TaskWrite> = []
      for (const taskId of tasks.filter(isValidId).sort()) {
        const names = yield* fs.readDirectory(path.join(dir, taskId)).pipe(
          Effect.catchIf(isNotFound, () => Effect.succeed([] as Array<string>))
        )
        const files = names.flatMap((name) => {
          const match = WRITE.exec(name)
          return match === null ? [] : [{ name, seq: Number(match[1]), key: match[2]! }]
        }).sort((a, b) => a.seq - b.seq)
        const values = yield* Effect.forEach(files, (f) =>
          Effect.flatMap(fs.readFileString(path.join(dir, taskId, f.name)), (text) =>
            parseJson(text, checkpointId, `the write ${JSON.stringify(f.key)} of task ${JSON.stringify(taskId)}`)), {
          concurrency: CONCURRENCY
        })
        files.forEach((f, i) => out.push({ taskId, key: f.key, value: values[i] as Checkpoint.Json }))
      }
      return out
    }).pipe(onDisk("listWrites"))

  const updateExecution: Backend["updateExecution"] = (executionId, patch, options) =>
    locked(
      [executionId],
      Effect.gen(function*() {
        const found = yield* lockedRecord(executionId)
        if (Option.isNone(found)) return yield* new ExecutionNotFound({ executionId })
        let record = found.value
        const lost = leaseProblem(executionId, record.lease, options.owner, options.holds, options.now)
        if (lost !== undefined) return yield* lost
        if (options.expect !== undefined) {
          const healed = yield* checkExpectation(executionId, record, options.expect)
          if (healed === undefined) return yield* new ExecutionNotFound({ executionId })
          record = healed
        }
        const next = patchRecord(record, patch, options.now)
        yield* writeRecord(executionId, next)
        return toRecord(executionId, next)
      })
    ).pipe(
      onDisk("updateExecution"),
      Effect.catchTag("CheckpointDecodeError", (e) => Effect.fail(storeError(BACKEND, "updateExecution", e)))
    )

  /** Runs `body` under one execution's lock, or passes it by (none) when the lock stays busy or its record is unreadable. */
  const ifLockable = <A>(executionId: string, body: Effect.Effect<Option.Option<A>, CheckpointDecodeError | PlatformError>) =>
    locked([executionId], body, SCAN_LOCK_WAIT_MS).pipe(
      Effect.catchTag("LockTimeout", () => Effect.succeedNone),
      Effect.catchTag("CheckpointDecodeError", (e) =>
        Effect.as(Effect.logWarning(`File store: ${e.message}; left alone`), Option.none<A>()))
    )

  const claim: Backend["claim"] = ({ limit, now, owner, ttlMs }) =>
    Effect.gen(function*() {
      const due = (yield* allRecords(leniently)).filter(([, r]) => isDue(r, now)).sort(oldestFirst)
      const out: Array<ExecutionRecord> = []
      for (const [executionId] of due) {
        if (out.length >= limit) break
        // Due when read: check again under the lock (another process may have claimed it since).
        const taken = yield* ifLockable(
          executionId,
          Effect.flatMap(readRecord(executionId), (stored) => {
            if (Option.isNone(stored) || !isDue(stored.value, now)) return Effect.succeedNone
            const next = claimedRecord(stored.value, owner, now, ttlMs)
            return Effect.as(writeRecord(executionId, next), Option.some(toRecord(executionId, next)))
          })
        )
        if (Option.isSome(taken)) out.push(taken.value)
      }
      return out
    }).pipe(onDisk("claim"))

  const sweep: Backend["sweep"] = ({ before, force, now }) =>
    Effect.gen(function*() {
      const candidates = (yield* allRecords(leniently)).filter(([, r]) => sweepable(r, { before, force, now }))
      let removed = 0
      for (const [executionId] of candidates) {
        const gone = yield* ifLockable(
          executionId,
          Effect.flatMap(readRecord(executionId), (stored) =>
            Option.isSome(stored) && sweepable(stored.value, { before, force, now })
              ? Effect.as(removeExecution(executionId), Option.some(true))
              : Effect.succeedNone)
        )
        if (Option.isSome(gone)) removed++
      }
      return removed
    }).pipe(onDisk("sweep"))

  return {
    name: BACKEND,
    blobs: {
      load: (executionId, hashes) =>
        Effect.map(
          Effect.forEach(
            hashes.filter((h) => HASH.test(h)),
            (hash) => Effect.map(orNone(fs.readFileString(blobPath(executionId, hash))), Option.map((json) => [hash, json] as const)),
            { concurrency: CONCURRENCY }
          ),
          (found) => new Map(found.flatMap((f) => Option.isSome(f) ? [f.value] : []))
        ).pipe(onDisk("load"))
    },
    insert,
    insertOne: (e, options) => insert([e], options),
    load: (id) =>
      Effect.flatMap(
        orNone(fs.readFileString(documentPath(id))),
        (text) => Option.isNone(text) ? Effect.succeedNone : Effect.asSome(decodeDocument(text.value, id))
      ).pipe(onDisk("load")),
    list: (executionId, afterVersion, limit) =>
      Effect.flatMap(versionsOf(executionId), (versions) => {
        const after = versions.filter((v) => v > afterVersion)
        return readSlots(executionId, after, limit ?? after.length)
      }).pipe(onDisk("list")),
    latest: (executionId) => newestLive(executionId).pipe(onDisk("latest")),
    delete: (id) =>
      Effect.gen(function*() {
        const text = yield* orNone(fs.readFileString(documentPath(id)))
        if (Option.isNone(text)) return
        const decoded = yield* Effect.either(decodeDocument(text.value, id))
        // A document that does not decode does not say where its slot is: remove it (its slot reads as a hole).
        if (Either.isLeft(decoded)) return yield* removeCheckpointFiles(id)
        const cp = decoded.right
        yield* locked(
          [cp.executionId],
          Effect.gen(function*() {
            const slot = slotPath(cp.executionId, cp.version)
            const ours = yield* fs.readLink(slot).pipe(
              Effect.map((target) => idOfTarget(target) === id),
              Effect.catchIf(isNotFound, () => Effect.succeed(false))
            )
            // The slot first, so a crash in between leaves an unlisted document, never a listed hole.
            if (ours) yield* fs.remove(slot)
            yield* removeCheckpointFiles(id)
            if (ours) {
              const record = yield* readRecord(cp.executionId).pipe(
                Effect.catchTag("CheckpointDecodeError", () => Effect.succeedNone)
              )
              // The record follows the newest checkpoint left; with none left, the execution goes.
              if (Option.isSome(record) && cp.version >= record.value.latestVersion) {
                yield* storeReconciled(cp.executionId, record.value, yield* reconcile(cp.executionId, record.value))
              } else if (Option.isNone(record) && (yield* versionsOf(cp.executionId)).length === 0) {
                yield* removeExecution(cp.executionId)
              }
            }
            // Its blobs go with it, unless a checkpoint left references them.
            if ((refsIn(text.value)?.length ?? 1) > 0) yield* collectBlobs(cp.executionId)
          })
        )
      }).pipe(
        onDisk("delete"),
        Effect.catchTag("CheckpointDecodeError", (e) => Effect.fail(storeError(BACKEND, "delete", e)))
      ),
    clear: (executionId) => locked([executionId], removeExecution(executionId)).pipe(onDisk("clear")),
    prune: (executionId, keep) =>
      locked(
        [executionId],
        Effect.gen(function*() {
          const versions = yield* versionsOf(executionId)
          const drop = versions.slice(0, Math.max(0, versions.length - keep))
          const removed = yield* removeSlots(executionPath(executionId), drop)
          if (drop.length === versions.length) yield* removeExecution(executionId)
          else if (drop.length > 0) yield* collectBlobs(executionId)
          return removed
        })
      ).pipe(onDisk("prune")),
    saveWrites,
    listWrites,
    getExecution: (executionId) =>
      Effect.map(currentRecord(executionId), Option.map((r) => toRecord(executionId, r))).pipe(onDisk("getExecution")),
    listExecutions: (query) =>
      Effect.map(
        allRecords(currentRecord),
        (all) => all.filter(matches(query)).sort(newestFirst).slice(0, query.limit).map(([id, r]) => toRecord(id, r))
      ).pipe(onDisk("listExecutions")),
    updateExecution,
    claim,
    sweep
  }
}

/**
 * Cleans what crashes left in `tmp/` (best effort): temp files, and the
 * directories of removed executions with the documents their slots name.
 */
export const removeLeftovers = (
  fs: FileSystem.FileSystem,
  path: Path.Path,
  layout: FileLayout,
  olderThanMs: number
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const names = yield* fs.readDirectory(layout.tmp)
    const now = Date.now()
    yield* Effect.forEach(names, (name) => {
      const file = path.join(layout.tmp, name)
      return Effect.flatMap(fs.stat(file), (info) => {
        const mtime = Option.getOrElse(Option.map(info.mtime, (d) => d.getTime()), () => now)
        if (now - mtime <= olderThanMs) return Effect.void
        const documents = name.endsWith(".trash")
          ? fs.readDirectory(file).pipe(
            Effect.flatMap((slots) =>
              Effect.forEach(slots.filter((n) => SLOT.test(n)), (slot) =>
                Effect.flatMap(fs.readLink(path.join(file, slot)), (target) => {
                  const match = /^\.\.\/\.\.\/checkpoints\/(.+)\.json$/.exec(target)
                  return match === null || !isValidId(match[1])
                    ? Effect.void
                    : Effect.zipRight(
                      fs.remove(path.join(layout.checkpoints, `${match[1]}.json`), { force: true }),
                      fs.remove(path.join(layout.writes, match[1]), { recursive: true, force: true })
                    )
                }).pipe(Effect.ignore), { discard: true })
            ),
            Effect.ignore
          )
          : Effect.void
        return Effect.zipRight(documents, fs.remove(file, { recursive: true, force: true }))
      }).pipe(Effect.ignore)
    }, { discard: true })
  }).pipe(Effect.ignore)
