/**
 * The Memory store's backend, apart from its layer so tests can reach the raw
 * documents (to corrupt one on purpose). It is also the reference for the
 * record, write and lease rules of `CheckpointBackend.Backend`: every
 * primitive runs synchronously inside one `Effect.suspend`, so it is atomic
 * with respect to other fibers.
 *
 * @internal
 */
import { Effect, Option } from "effect"
import type { CheckpointConflict, LeaseLost } from "../CheckpointError.js"
import type * as Checkpoint from "../Checkpoint.js"
import { CheckpointNotFound, ExecutionNotFound } from "../CheckpointError.js"
import type { Backend, Encoded, EncodedWrite, InsertOptions, RecordPatch } from "../CheckpointBackend.js"
import { BlobsMissing, conflict, decodeDocument, expectationMet, isDue, leaseProblem, sweepable } from "../CheckpointBackend.js"
import type { ExecutionRecord, TaskWrite } from "../CheckpointStore.js"
import {
  claimedRecord,
  matches,
  newestFirst,
  oldestFirst,
  patchRecord,
  recordAfterInsert,
  type StoredRecord,
  toRecord
} from "./storedRecord.js"

interface Execution {
  /** version → checkpoint id */
  readonly byVersion: Map<number, string>
  /** the versions, ascending */
  readonly versions: Array<number>
}

/** The Memory store's state: encoded documents only, so nothing stored is ever shared with a caller. */
export interface MemoryState {
  /** checkpoint id → JSON document */
  readonly documents: Map<string, string>
  /** checkpoint id → where it is indexed */
  readonly locations: Map<string, { readonly executionId: string; readonly version: number }>
  readonly executions: Map<string, Execution>
  readonly records: Map<string, StoredRecord>
  /** checkpoint id → task id → key → JSON text, in the order saved */
  readonly writes: Map<string, Map<string, Map<string, string>>>
  /** execution id → hash → the blob and how many checkpoints reference it */
  readonly blobs: Map<string, Map<string, { readonly json: string; refs: number }>>
  /** checkpoint id → the blobs it references */
  readonly refs: Map<string, ReadonlyArray<string>>
}

export const makeState = (): MemoryState => ({
  documents: new Map(),
  locations: new Map(),
  executions: new Map(),
  records: new Map(),
  writes: new Map(),
  blobs: new Map(),
  refs: new Map()
})

/** Index of the first version greater than `v` (binary search). */
const upperBound = (versions: ReadonlyArray<number>, v: number): number => {
  let lo = 0
  let hi = versions.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (versions[mid]! <= v) lo = mid + 1
    else hi = mid
  }
  return lo
}

export const memoryBackend = (state: MemoryState): Backend => {
  const { blobs, documents, executions, locations, records, refs, writes } = state

  /** Drops the blob references of a removed checkpoint; a blob nobody references goes. */
  const unref = (executionId: string, id: string) => {
    const held = refs.get(id)
    if (held === undefined) return
    refs.delete(id)
    const stored = blobs.get(executionId)
    if (stored === undefined) return
    for (const hash of held) {
      const blob = stored.get(hash)
      if (blob !== undefined && --blob.refs <= 0) stored.delete(hash)
    }
    if (stored.size === 0) blobs.delete(executionId)
  }
  const decodeId = (id: string) => decodeDocument(documents.get(id)!, id)

  const takenBy = (cp: Checkpoint.Checkpoint) =>
    documents.has(cp.id)
      ? conflict.idTaken(cp)
      : executions.get(cp.executionId)?.byVersion.has(cp.version)
      ? conflict.versionTaken(cp)
      : undefined

  const put = ({ checkpoint: cp, document }: Encoded): void => {
    documents.set(cp.id, document)
    locations.set(cp.id, { executionId: cp.executionId, version: cp.version })
    let execution = executions.get(cp.executionId)
    if (execution === undefined) {
      execution = { byVersion: new Map(), versions: [] }
      executions.set(cp.executionId, execution)
    }
    execution.byVersion.set(cp.version, cp.id)
    const last = execution.versions[execution.versions.length - 1]
    if (last === undefined || last < cp.version) execution.versions.push(cp.version)
    else execution.versions.splice(upperBound(execution.versions, cp.version), 0, cp.version)
  }

  /** Removes the listed versions (already taken out of `execution.versions`) and their writes. */
  const removeVersions = (executionId: string, execution: Execution, versions: ReadonlyArray<number>): void => {
    for (const v of versions) {
      const id = execution.byVersion.get(v)!
      unref(executionId, id)
      documents.delete(id)
      locations.delete(id)
      writes.delete(id)
      execution.byVersion.delete(v)
    }
    if (execution.byVersion.size === 0) {
      executions.delete(executionId)
      records.delete(executionId)
      return
    }
    // The record follows the newest checkpoint left.
    const record = records.get(executionId)
    const newest = execution.versions[execution.versions.length - 1]!
    if (record !== undefined && record.latestVersion !== newest) {
      records.set(executionId, { ...record, latestVersion: newest, latestCheckpointId: execution.byVersion.get(newest)! })
    }
  }

  const clearExecution = (executionId: string): void => {
    const execution = executions.get(executionId)
    if (execution !== undefined) removeVersions(executionId, execution, execution.versions.splice(0))
    records.delete(executionId)
    blobs.delete(executionId)
  }

  const insert = (batch: ReadonlyArray<Encoded>, options: InsertOptions) =>
    Effect.suspend((): Effect.Effect<void, CheckpointConflict | LeaseLost | BlobsMissing> => {
      const newest = new Map<string, Encoded>()
      for (const e of batch) {
        const current = newest.get(e.checkpoint.executionId)
        if (current === undefined || current.checkpoint.version < e.checkpoint.version) newest.set(e.checkpoint.executionId, e)
      }
      for (const executionId of newest.keys()) {
        const lost = leaseProblem(executionId, records.get(executionId)?.lease, options.owner, false, options.now)
        if (lost !== undefined) return Effect.fail(lost)
      }
      const expect = options.expect
      if (expect !== undefined && !expectationMet(records.get(expect.executionId), expect)) {
        return Effect.fail(conflict.expectationFailed(expect, records.get(expect.executionId)?.latestVersion ?? 0))
      }
      for (const e of batch) {
        const taken = takenBy(e.checkpoint)
        if (taken !== undefined) return Effect.fail(taken)
      }
      for (const e of batch) {
        if (e.refs.length === 0) continue
        const executionId = e.checkpoint.executionId
        const stored = blobs.get(executionId)
        const missing = e.refs.filter((h) =>
          stored?.has(h) !== true && !options.blobs.some((b) => b.executionId === executionId && b.hash === h)
        )
        if (missing.length > 0) return Effect.fail(new BlobsMissing({ executionId, hashes: missing }))
      }
      for (const b of options.blobs) {
        let stored = blobs.get(b.executionId)
        if (stored === undefined) blobs.set(b.executionId, stored = new Map())
        if (!stored.has(b.hash)) stored.set(b.hash, { json: b.json, refs: 0 })
      }
      for (const e of batch) {
        if (e.refs.length === 0) continue
        refs.set(e.checkpoint.id, e.refs)
        const stored = blobs.get(e.checkpoint.executionId)!
        for (const h of e.refs) stored.get(h)!.refs++
      }
      batch.forEach(put)
      for (const [executionId, { checkpoint: cp }] of newest) {
        records.set(executionId, recordAfterInsert(records.get(executionId), cp, options.patch, options.now))
      }
      return Effect.void
    })

  const saveWrites = (
    checkpointId: string,
    taskId: string,
    batch: ReadonlyArray<EncodedWrite>,
    options: { readonly owner: string | undefined; readonly patch: RecordPatch | undefined; readonly now: number }
  ) =>
    Effect.suspend((): Effect.Effect<void, CheckpointNotFound | CheckpointConflict | LeaseLost> => {
      const location = locations.get(checkpointId)
      if (location === undefined) return Effect.fail(new CheckpointNotFound({ id: checkpointId }))
      const record = records.get(location.executionId)
      const lost = leaseProblem(location.executionId, record?.lease, options.owner, false, options.now)
      if (lost !== undefined) return Effect.fail(lost)
      const task = writes.get(checkpointId)?.get(taskId)
      for (const w of batch) {
        if (task?.has(w.key)) {
          return Effect.fail(conflict.writeTaken({ checkpointId, ...location }, taskId, w.key))
        }
      }
      let byTask = writes.get(checkpointId)
      if (byTask === undefined) {
        byTask = new Map()
        writes.set(checkpointId, byTask)
      }
      let keys = byTask.get(taskId)
      if (keys === undefined) {
        keys = new Map()
        byTask.set(taskId, keys)
      }
      for (const w of batch) keys.set(w.key, w.json)
      if (options.patch !== undefined && record !== undefined) {
        records.set(location.executionId, patchRecord(record, options.patch, options.now))
      }
      return Effect.void
    })

  return {
    name: "memory",
    blobs: {
      load: (executionId, hashes) =>
        Effect.sync(() => {
          const stored = blobs.get(executionId)
          const out = new Map<string, string>()
          if (stored !== undefined) {
            for (const h of hashes) {
              const blob = stored.get(h)
              if (blob !== undefined) out.set(h, blob.json)
            }
          }
          return out
        })
    },
    insert,
    insertOne: (e, options) => insert([e], options),
    load: (id) => Effect.suspend(() => documents.has(id) ? Effect.asSome(decodeId(id)) : Effect.succeedNone),
    list: (executionId, afterVersion, limit) =>
      Effect.suspend(() => {
        const execution = executions.get(executionId)
        if (execution === undefined) return Effect.succeed([])
        const start = upperBound(execution.versions, afterVersion)
        const end = limit === undefined ? execution.versions.length : start + limit
        const ids = execution.versions.slice(start, end).map((v) => execution.byVersion.get(v)!)
        return Effect.forEach(ids, decodeId)
      }),
    latest: (executionId) =>
      Effect.suspend(() => {
        const execution = executions.get(executionId)
        const version = execution?.versions[execution.versions.length - 1]
        return version === undefined ? Effect.succeedNone : Effect.asSome(decodeId(execution!.byVersion.get(version)!))
      }),
    delete: (id) =>
      Effect.sync(() => {
        const location = locations.get(id)
        if (location === undefined) return
        const execution = executions.get(location.executionId)!
        execution.versions.splice(upperBound(execution.versions, location.version) - 1, 1)
        removeVersions(location.executionId, execution, [location.version])
      }),
    clear: (executionId) => Effect.sync(() => clearExecution(executionId)),
    prune: (executionId, keep) =>
      Effect.sync(() => {
        const execution = executions.get(executionId)
        if (execution === undefined || execution.versions.length <= keep) return 0
        const removed = execution.versions.splice(0, execution.versions.length - keep)
        removeVersions(executionId, execution, removed)
        return removed.length
      }),
    saveWrites,
    listWrites: (checkpointId) =>
      Effect.sync(() => {
        const byTask = writes.get(checkpointId)
        if (byTask === undefined) return []
        const out: Array<TaskWrite> = []
        for (const taskId of [...byTask.keys()].sort()) {
          for (const [key, json] of byTask.get(taskId)!) {
            out.push({ taskId, key, value: JSON.parse(json) as Checkpoint.Json })
          }
        }
        return out
      }),
    getExecution: (executionId) =>
      Effect.sync(() => {
        const record = records.get(executionId)
        return record === undefined ? Option.none() : Option.some(toRecord(executionId, record))
      }),
    // A scan here: the Memory store is for tests and demos; the other stores answer from an index.
    listExecutions: (query) =>
      Effect.sync(() =>
        [...records].filter(matches(query)).sort(newestFirst).slice(0, query.limit)
          .map(([executionId, r]) => toRecord(executionId, r))
      ),
    updateExecution: (executionId, patch, options) =>
      Effect.suspend((): Effect.Effect<ExecutionRecord, ExecutionNotFound | CheckpointConflict | LeaseLost> => {
        const record = records.get(executionId)
        if (record === undefined) return Effect.fail(new ExecutionNotFound({ executionId }))
        const lost = leaseProblem(executionId, record.lease, options.owner, options.holds, options.now)
        if (lost !== undefined) return Effect.fail(lost)
        if (options.expect !== undefined && !expectationMet(record, options.expect)) {
          return Effect.fail(conflict.expectationFailed({ executionId, ...options.expect }, record.latestVersion))
        }
        const patched = patchRecord(record, patch, options.now)
        records.set(executionId, patched)
        return Effect.succeed(toRecord(executionId, patched))
      }),
    claim: ({ limit, now, owner, ttlMs }) =>
      Effect.sync(() => {
        // The `limit` oldest due ones, in one pass (a sorted buffer of at most `limit`): no sort of every record.
        if (limit <= 0) return []
        const due: Array<[string, StoredRecord]> = []
        for (const entry of records) {
          if (!isDue(entry[1], now)) continue
          if (due.length === limit) {
            if (oldestFirst(entry, due[limit - 1]!) >= 0) continue
            due.pop()
          }
          let i = due.length
          due.push(entry)
          for (; i > 0 && oldestFirst(entry, due[i - 1]!) < 0; i--) due[i] = due[i - 1]!
          due[i] = entry
        }
        return due.map(([executionId, r]) => {
          const claimed = claimedRecord(r, owner, now, ttlMs)
          records.set(executionId, claimed)
          return toRecord(executionId, claimed)
        })
      }),
    sweep: ({ before, force, now }) =>
      Effect.sync(() => {
        const gone = [...records].filter(([, r]) => sweepable(r, { before, force, now }))
        for (const [executionId] of gone) clearExecution(executionId)
        return gone.length
      })
  }
}
