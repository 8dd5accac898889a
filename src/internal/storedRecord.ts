/**
 * An execution record as a backend that keeps it as plain values handles it
 * (Memory, File, SQL): its shape, the record rules of `CheckpointBackend`
 * applied to it — a save (`InsertOptions`), `updateExecution` (`RecordPatch`),
 * a claim — and, for the stores that scan their records (Memory, File), the
 * `listExecutions` filter and the orders of `listExecutions` and `claim`.
 *
 * @internal
 */
import type * as Checkpoint from "../Checkpoint.js"
import type { ExecutionQuery, RecordPatch } from "../CheckpointBackend.js"
import { derivedStatus } from "../CheckpointBackend.js"
import type { ExecutionRecord, ExecutionStatus, Failure } from "../CheckpointStore.js"

/** An execution record, times in epoch ms. */
export interface StoredRecord {
  readonly latestVersion: number
  readonly latestCheckpointId: string
  readonly updatedAt: number
  readonly status: ExecutionStatus
  readonly wakeAt: number | undefined
  readonly failure: Failure | undefined
  readonly attempts: number
  readonly lease: { readonly owner: string; readonly expiresAt: number } | undefined
}

/** The record as `CheckpointStore` returns it (a stored record is valid: nothing to check). */
export const toRecord = (executionId: string, r: StoredRecord): ExecutionRecord => ({
  executionId: executionId as Checkpoint.ExecutionId,
  latestVersion: r.latestVersion,
  latestCheckpointId: r.latestCheckpointId as Checkpoint.CheckpointId,
  updatedAt: new Date(r.updatedAt),
  pending: r.status !== "done",
  status: r.status,
  ...(r.wakeAt === undefined ? {} : { wakeAt: new Date(r.wakeAt) }),
  ...(r.failure === undefined ? {} : { failure: { tag: r.failure.tag, message: r.failure.message } }),
  attempts: r.attempts,
  ...(r.lease === undefined ? {} : { lease: { owner: r.lease.owner, expiresAt: new Date(r.lease.expiresAt) } })
})

/** A record as `CheckpointStore` returns it (or `decodeRecord` reads it), as stored. */
export const toStored = (r: ExecutionRecord): StoredRecord => ({
  latestVersion: r.latestVersion,
  latestCheckpointId: r.latestCheckpointId,
  updatedAt: r.updatedAt.getTime(),
  status: r.status,
  wakeAt: r.wakeAt?.getTime(),
  failure: r.failure,
  attempts: r.attempts,
  lease: r.lease === undefined ? undefined : { owner: r.lease.owner, expiresAt: r.lease.expiresAt.getTime() }
})

/**
 * Applies the `wakeAt`, `failure` and `lease` fields of a patch. Records are
 * never changed in place (a patch without those fields returns `r` itself):
 * these rules run on every save, so they allocate one object at most.
 */
export const applyFields = (r: StoredRecord, patch: RecordPatch, now: number): StoredRecord =>
  patch.wakeAt === undefined && patch.failure === undefined && patch.lease === undefined
    ? r
    : {
      ...r,
      wakeAt: patch.wakeAt === undefined ? r.wakeAt : patch.wakeAt ?? undefined,
      failure: patch.failure === undefined ? r.failure : patch.failure ?? undefined,
      lease: patch.lease === undefined
        ? r.lease
        : patch.lease === null
        ? undefined
        : { owner: patch.lease.owner, expiresAt: now + patch.lease.ttlMs }
    }

/** `updateExecution`'s changes: the status and its time, then the other fields. */
export const patchRecord = (r: StoredRecord, patch: RecordPatch, now: number): StoredRecord =>
  applyFields(
    patch.status !== undefined || patch.wakeAt !== undefined || patch.failure !== undefined
      ? { ...r, status: patch.status ?? r.status, updatedAt: now }
      : r,
    patch,
    now
  )

/** The first record of an execution whose newest checkpoint is `cp`. */
export const firstRecord = (cp: Checkpoint.Checkpoint, status: ExecutionStatus): StoredRecord => ({
  latestVersion: cp.version,
  latestCheckpointId: cp.id,
  updatedAt: cp.timestamp.getTime(),
  status,
  wakeAt: undefined,
  failure: undefined,
  attempts: 0,
  lease: undefined
})

/** The record after a save whose newest checkpoint of the execution is `cp` (the rules of `InsertOptions`). */
export const recordAfterInsert = (
  record: StoredRecord | undefined,
  cp: Checkpoint.Checkpoint,
  patch: RecordPatch,
  now: number
): StoredRecord => {
  const status = patch.status
  const next: StoredRecord = record === undefined
    ? firstRecord(cp, status ?? derivedStatus(cp))
    : record.latestVersion < cp.version
    ? {
      latestVersion: cp.version,
      latestCheckpointId: cp.id,
      updatedAt: cp.timestamp.getTime(),
      status: status ?? derivedStatus(cp),
      wakeAt: record.wakeAt,
      failure: record.failure,
      attempts: record.attempts,
      lease: record.lease
    }
    : status !== undefined
    ? { ...record, status }
    : record
  return applyFields(next, patch, now)
}

/** The record of a due execution once `owner` claims it at `now`. */
export const claimedRecord = (r: StoredRecord, owner: string, now: number, ttlMs: number): StoredRecord => ({
  ...r,
  status: "running",
  attempts: r.attempts + 1,
  updatedAt: now,
  lease: { owner, expiresAt: now + ttlMs }
})

/** An execution id with its record, as the scanning stores hold them. */
export type Entry = readonly [executionId: string, record: StoredRecord]

/** Whether a record is on the page `query` asks for (its statuses, times and cursor). */
export const matches = (query: ExecutionQuery) => ([executionId, r]: Entry): boolean =>
  (query.statuses === undefined || query.statuses.includes(r.status)) &&
  (query.updatedBefore === undefined || r.updatedAt < query.updatedBefore) &&
  (query.updatedAfter === undefined || r.updatedAt > query.updatedAfter) &&
  (query.after === undefined || r.updatedAt < query.after.updatedAt ||
    (r.updatedAt === query.after.updatedAt && executionId < query.after.executionId))

/** `(updatedAt, executionId)` descending: the order of `listExecutions`. */
export const newestFirst = (a: Entry, b: Entry): number =>
  b[1].updatedAt - a[1].updatedAt || (a[0] < b[0] ? 1 : a[0] > b[0] ? -1 : 0)

/** `(updatedAt, executionId)` ascending: the order `claim` takes due executions in. */
export const oldestFirst = (a: Entry, b: Entry): number =>
  a[1].updatedAt - b[1].updatedAt || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
