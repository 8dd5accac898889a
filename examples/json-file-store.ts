/**
 * A checkpoint store written outside the library, as a user would: every
 * checkpoint, task write and execution record of the store in ONE JSON file,
 * rewritten (to a temp file, then renamed) after every change. One process
 * at a time; fine for a CLI tool or a single-node app that wants its runs to
 * survive a restart without a database.
 *
 * It imports only the public entry point: it implements the primitives of
 * `CheckpointBackend.Backend`, and `CheckpointBackend.make` adds the rest
 * (id and value checks, encoding, paging, telemetry). It passes the
 * conformance suite of `effect-checkpoint/testing` (test/ThirdPartyStore.test.ts).
 *
 *   import * as JsonFileStore from "./json-file-store.js"
 *   program.pipe(Effect.provide(JsonFileStore.layer({ file: "./checkpoints.json" })))
 */
import { Effect, Either, Layer } from "effect"
import { type Checkpoint, CheckpointBackend, CheckpointError, CheckpointStore } from "effect-checkpoint"
import * as fs from "node:fs"

/** An execution record as this store keeps it (times in epoch ms). */
interface StoredRecord {
  latestVersion: number
  latestCheckpointId: string
  updatedAt: number
  status: CheckpointStore.ExecutionStatus
  wakeAt?: number | undefined
  failure?: CheckpointStore.Failure | undefined
  attempts: number
  lease?: { readonly owner: string; readonly expiresAt: number } | undefined
}

/** What the file holds, in memory. Maps, not objects: ids are user data. */
export interface Data {
  /** checkpoint id → its execution, version and JSON document (`Encoded.document`) */
  readonly checkpoints: Map<string, { readonly executionId: string; readonly version: number; document: string }>
  /** execution id → version → checkpoint id (rebuilt from `checkpoints` on load) */
  readonly versions: Map<string, Map<number, string>>
  readonly records: Map<string, StoredRecord>
  /** checkpoint id → task id → key → JSON text, in the order saved */
  readonly writes: Map<string, Map<string, Map<string, string>>>
}

const NAME = "json-file"

const storeError = (operation: string, cause: unknown) =>
  new CheckpointError.CheckpointStoreError({
    backend: NAME,
    operation,
    message: cause instanceof Error ? cause.message : String(cause)
  })

const emptyData = (): Data => ({ checkpoints: new Map(), versions: new Map(), records: new Map(), writes: new Map() })

const serialize = (data: Data): string =>
  JSON.stringify({
    format: 1,
    checkpoints: [...data.checkpoints],
    records: [...data.records],
    writes: [...data.writes].map(([id, tasks]) => [id, [...tasks].map(([task, keys]) => [task, [...keys]])])
  })

/** Fills `data` from the file's text (throws on text that is not this store's). */
const fill = (data: Data, text: string): void => {
  const parsed = JSON.parse(text) as {
    format: number
    checkpoints: Array<[string, { executionId: string; version: number; document: string }]>
    records: Array<[string, StoredRecord]>
    writes: Array<[string, Array<[string, Array<[string, string]>]>]>
  }
  if (parsed.format !== 1) throw new Error(`not a checkpoint file of format 1`)
  data.checkpoints.clear()
  data.versions.clear()
  data.records.clear()
  data.writes.clear()
  for (const [id, c] of parsed.checkpoints) {
    data.checkpoints.set(id, c)
    indexOf(data, c.executionId).set(c.version, id)
  }
  for (const [id, r] of parsed.records) data.records.set(id, r)
  for (const [id, tasks] of parsed.writes) data.writes.set(id, new Map(tasks.map(([t, keys]) => [t, new Map(keys)])))
}

const indexOf = (data: Data, executionId: string): Map<number, string> => {
  let index = data.versions.get(executionId)
  if (index === undefined) data.versions.set(executionId, index = new Map())
  return index
}

const ascending = (index: Map<number, string> | undefined): Array<number> =>
  index === undefined ? [] : [...index.keys()].sort((a, b) => a - b)

const toRecord = (executionId: string, r: StoredRecord) =>
  CheckpointBackend.decodeRecord({
    executionId,
    latestVersion: r.latestVersion,
    latestCheckpointId: r.latestCheckpointId,
    updatedAt: r.updatedAt,
    status: r.status,
    wakeAt: r.wakeAt,
    failureTag: r.failure?.tag,
    failureMessage: r.failure?.message,
    attempts: r.attempts,
    leaseOwner: r.lease?.owner,
    leaseExpiresAt: r.lease?.expiresAt
  })

/** The `wakeAt`, `failure` and `lease` fields of a patch. */
const applyFields = (r: StoredRecord, patch: CheckpointBackend.RecordPatch, now: number): void => {
  if (patch.wakeAt !== undefined) r.wakeAt = patch.wakeAt ?? undefined
  if (patch.failure !== undefined) r.failure = patch.failure ?? undefined
  if (patch.lease !== undefined) {
    r.lease = patch.lease === null ? undefined : { owner: patch.lease.owner, expiresAt: now + patch.lease.ttlMs }
  }
}

/** `updateExecution`'s rule: a status, wakeAt or failure change moves `updatedAt`; a lease alone does not. */
const patchRecord = (r: StoredRecord, patch: CheckpointBackend.RecordPatch, now: number): void => {
  if (patch.status !== undefined) r.status = patch.status
  if (patch.status !== undefined || patch.wakeAt !== undefined || patch.failure !== undefined) r.updatedAt = now
  applyFields(r, patch, now)
}

/**
 * The backend over `data`, saved to `file` after every change. Each
 * primitive checks everything first, then changes memory, then writes the
 * file; if the write fails, memory goes back to the file's last content, so
 * a primitive is all or nothing. Synchronous JavaScript: atomic against
 * other fibers of the process.
 */
export const backend = (file: string, data: Data): CheckpointBackend.Backend => {
  let saved = serialize(data)

  /** Runs `change` (which checks before it mutates), then writes the file. */
  const commit = <A, E>(operation: string, change: () => Either.Either<A, E>) =>
    Effect.suspend((): Effect.Effect<A, E | CheckpointError.CheckpointStoreError> => {
      const result = change()
      if (Either.isLeft(result)) return Effect.fail(result.left)
      const text = serialize(data)
      if (text === saved) return Effect.succeed(result.right)
      try {
        fs.writeFileSync(`${file}.tmp`, text)
        fs.renameSync(`${file}.tmp`, file)
        saved = text
        return Effect.succeed(result.right)
      } catch (e) {
        fill(data, saved)
        return Effect.fail(storeError(operation, e))
      }
    })

  const decodeAt = (id: string) => CheckpointBackend.decodeDocument(data.checkpoints.get(id)!.document, id)

  const expectationMet = (executionId: string, expect: { readonly latestVersion: number; readonly latestCheckpointId?: string | undefined }) => {
    const r = data.records.get(executionId)
    return r === undefined
      ? expect.latestVersion === 0
      : r.latestVersion === expect.latestVersion && (expect.latestCheckpointId === undefined || r.latestCheckpointId === expect.latestCheckpointId)
  }

  /** Removes checkpoints of one execution with their writes; the record follows the newest left, or goes. */
  const remove = (executionId: string, versions: ReadonlyArray<number>): void => {
    const index = data.versions.get(executionId)
    if (index === undefined) return
    for (const v of versions) {
      const id = index.get(v)!
      data.checkpoints.delete(id)
      data.writes.delete(id)
      index.delete(v)
    }
    if (index.size === 0) {
      data.versions.delete(executionId)
      data.records.delete(executionId)
      return
    }
    const newest = Math.max(...index.keys())
    const r = data.records.get(executionId)
    if (r !== undefined && r.latestVersion !== newest) {
      r.latestVersion = newest
      r.latestCheckpointId = index.get(newest)!
    }
  }

  const clear = (executionId: string) => {
    remove(executionId, ascending(data.versions.get(executionId)))
    data.records.delete(executionId)
  }

  return {
    name: NAME,

    insert: (batch, options) =>
      commit("insert", (): Either.Either<void, CheckpointError.CheckpointConflict | CheckpointError.LeaseLost> => {
        const newest = new Map<string, Checkpoint.Checkpoint>()
        for (const { checkpoint: cp } of batch) {
          const current = newest.get(cp.executionId)
          if (current === undefined || current.version < cp.version) newest.set(cp.executionId, cp)
        }
        for (const executionId of newest.keys()) {
          const lost = CheckpointBackend.leaseProblem(executionId, data.records.get(executionId)?.lease, options.owner, false, options.now)
          if (lost !== undefined) return Either.left(lost)
        }
        const expect = options.expect
        if (expect !== undefined && !expectationMet(expect.executionId, expect)) {
          return Either.left(CheckpointBackend.conflict.expectationFailed(expect, data.records.get(expect.executionId)?.latestVersion ?? 0))
        }
        for (const { checkpoint: cp } of batch) {
          if (data.checkpoints.has(cp.id)) return Either.left(CheckpointBackend.conflict.idTaken(cp))
          if (data.versions.get(cp.executionId)?.has(cp.version)) return Either.left(CheckpointBackend.conflict.versionTaken(cp))
        }
        for (const { checkpoint: cp, document } of batch) {
          data.checkpoints.set(cp.id, { executionId: cp.executionId, version: cp.version, document })
          indexOf(data, cp.executionId).set(cp.version, cp.id)
        }
        for (const [executionId, cp] of newest) {
          let r = data.records.get(executionId)
          if (r === undefined) {
            r = {
              latestVersion: cp.version,
              latestCheckpointId: cp.id,
              updatedAt: cp.timestamp.getTime(),
              status: options.patch.status ?? CheckpointBackend.derivedStatus(cp),
              attempts: 0
            }
            data.records.set(executionId, r)
          } else if (r.latestVersion < cp.version) {
            r.latestVersion = cp.version
            r.latestCheckpointId = cp.id
            r.updatedAt = cp.timestamp.getTime()
            r.status = options.patch.status ?? CheckpointBackend.derivedStatus(cp)
          } else if (options.patch.status !== undefined) {
            r.status = options.patch.status
          }
          applyFields(r, options.patch, options.now)
        }
        return Either.void
      }),

    load: (id) => Effect.suspend(() => data.checkpoints.has(id) ? Effect.asSome(decodeAt(id)) : Effect.succeedNone),

    list: (executionId, afterVersion, limit) =>
      Effect.suspend(() => {
        const index = data.versions.get(executionId)
        const versions = ascending(index).filter((v) => v > afterVersion)
        return Effect.forEach(limit === undefined ? versions : versions.slice(0, limit), (v) => decodeAt(index!.get(v)!))
      }),

    latest: (executionId) =>
      Effect.suspend(() => {
        const index = data.versions.get(executionId)
        const newest = ascending(index).at(-1)
        return newest === undefined ? Effect.succeedNone : Effect.asSome(decodeAt(index!.get(newest)!))
      }),

    delete: (id) =>
      commit("delete", () => {
        const c = data.checkpoints.get(id)
        if (c !== undefined) remove(c.executionId, [c.version])
        return Either.void
      }),

    clear: (executionId) => commit("clear", () => Either.right(clear(executionId))),

    prune: (executionId, keep) =>
      commit("prune", () => {
        const versions = ascending(data.versions.get(executionId))
        const gone = versions.slice(0, Math.max(0, versions.length - keep))
        remove(executionId, gone)
        return Either.right(gone.length)
      }),

    saveWrites: (checkpointId, taskId, writes, options) =>
      commit("saveWrites", (): Either.Either<
        void,
        CheckpointError.CheckpointNotFound | CheckpointError.CheckpointConflict | CheckpointError.LeaseLost
      > => {
        const c = data.checkpoints.get(checkpointId)
        if (c === undefined) return Either.left(new CheckpointError.CheckpointNotFound({ id: checkpointId }))
        const r = data.records.get(c.executionId)
        const lost = CheckpointBackend.leaseProblem(c.executionId, r?.lease, options.owner, false, options.now)
        if (lost !== undefined) return Either.left(lost)
        const keys = data.writes.get(checkpointId)?.get(taskId)
        for (const w of writes) {
          if (keys?.has(w.key)) return Either.left(CheckpointBackend.conflict.writeTaken({ checkpointId, ...c }, taskId, w.key))
        }
        let byTask = data.writes.get(checkpointId)
        if (byTask === undefined) data.writes.set(checkpointId, byTask = new Map())
        let task = byTask.get(taskId)
        if (task === undefined) byTask.set(taskId, task = new Map())
        for (const w of writes) task.set(w.key, w.json)
        if (options.patch !== undefined && r !== undefined) patchRecord(r, options.patch, options.now)
        return Either.void
      }),

    listWrites: (checkpointId) =>
      Effect.sync(() => {
        const byTask = data.writes.get(checkpointId)
        if (byTask === undefined) return []
        return [...byTask.keys()].sort().flatMap((taskId) =>
          [...byTask.get(taskId)!].map(([key, json]) => ({ taskId, key, value: JSON.parse(json) as Checkpoint.Json }))
        )
      }),

    getExecution: (executionId) =>
      Effect.suspend(() => {
        const r = data.records.get(executionId)
        return r === undefined ? Effect.succeedNone : Effect.asSome(toRecord(executionId, r))
      }),

    // A scan: fine for a file that fits in memory (a database store answers from an index).
    listExecutions: (query) =>
      Effect.forEach(
        [...data.records]
          .filter(([id, r]) =>
            (query.statuses === undefined || query.statuses.includes(r.status)) &&
            (query.updatedBefore === undefined || r.updatedAt < query.updatedBefore) &&
            (query.updatedAfter === undefined || r.updatedAt > query.updatedAfter) &&
            (query.after === undefined || r.updatedAt < query.after.updatedAt ||
              (r.updatedAt === query.after.updatedAt && id < query.after.executionId))
          )
          .sort(([a, x], [b, y]) => y.updatedAt - x.updatedAt || (a < b ? 1 : a > b ? -1 : 0))
          .slice(0, query.limit),
        ([id, r]) => toRecord(id, r)
      ),

    updateExecution: (executionId, patch, options) =>
      commit("updateExecution", (): Either.Either<
        StoredRecord,
        CheckpointError.ExecutionNotFound | CheckpointError.CheckpointConflict | CheckpointError.LeaseLost
      > => {
        const r = data.records.get(executionId)
        if (r === undefined) return Either.left(new CheckpointError.ExecutionNotFound({ executionId }))
        const lost = CheckpointBackend.leaseProblem(executionId, r.lease, options.owner, options.holds, options.now)
        if (lost !== undefined) return Either.left(lost)
        if (options.expect !== undefined && !expectationMet(executionId, options.expect)) {
          return Either.left(CheckpointBackend.conflict.expectationFailed({ executionId, ...options.expect }, r.latestVersion))
        }
        patchRecord(r, patch, options.now)
        return Either.right(r)
      }).pipe(Effect.flatMap((r) => Effect.orDie(toRecord(executionId, r)))),

    claim: ({ limit, now, owner, ttlMs }) =>
      commit("claim", () => {
        const due = [...data.records].filter(([, r]) => {
          if (r.lease !== undefined && r.lease.expiresAt > now) return false
          return r.status === "pending" || r.status === "running" || (r.status === "sleeping" && (r.wakeAt ?? 0) <= now)
        })
          .sort(([a, x], [b, y]) => x.updatedAt - y.updatedAt || (a < b ? -1 : 1))
          .slice(0, limit)
        for (const [, r] of due) {
          r.status = "running"
          r.attempts++
          r.updatedAt = now
          r.lease = { owner, expiresAt: now + ttlMs }
        }
        return Either.right(due)
      }).pipe(Effect.flatMap((due) => Effect.forEach(due, ([id, r]) => Effect.orDie(toRecord(id, r))))),

    sweep: ({ before, force, now }) =>
      commit("sweep", () => {
        const gone = [...data.records].filter(([, r]) =>
          r.updatedAt < before &&
          (force || (r.status !== "interrupted" && r.status !== "sleeping" && (r.lease === undefined || r.lease.expiresAt <= now)))
        )
        for (const [executionId] of gone) clear(executionId)
        return Either.right(gone.length)
      })
  }
}

/**
 * Opens the store's file (a missing file is an empty store) and returns its
 * data and backend.
 */
export const open = (file: string) =>
  Effect.try({
    try: () => {
      const data = emptyData()
      if (fs.existsSync(file)) fill(data, fs.readFileSync(file, "utf8"))
      return { data, backend: backend(file, data) }
    },
    catch: (e) => storeError("open", e)
  })

/**
 * The store as a layer: `CheckpointBackend.make` builds the whole service
 * over the backend.
 */
export const layer = (options: { readonly file: string }): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointError.CheckpointStoreError> =>
  Layer.effect(CheckpointStore.CheckpointStore, Effect.map(open(options.file), ({ backend }) => CheckpointBackend.make(backend)))

