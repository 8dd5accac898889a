/**
 * An execution record as a backend that keeps it as plain values handles it
 * (File, SQL): its shape, and the record rules of `CheckpointBackend` applied
 * to it — a save (`InsertOptions`) and `updateExecution` (`RecordPatch`).
 *
 * @internal
 */
import type * as Checkpoint from "../Checkpoint.js"
import type { RecordPatch } from "../CheckpointBackend.js"
import { derivedStatus } from "../CheckpointBackend.js"
import type { ExecutionStatus, Failure } from "../CheckpointStore.js"

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

/** Applies the `wakeAt`, `failure` and `lease` fields of a patch (as Memory does). */
export const applyFields = (r: StoredRecord, patch: RecordPatch, now: number): StoredRecord => ({
  ...r,
  ...(patch.wakeAt === undefined ? {} : { wakeAt: patch.wakeAt ?? undefined }),
  ...(patch.failure === undefined ? {} : { failure: patch.failure ?? undefined }),
  ...(patch.lease === undefined
    ? {}
    : { lease: patch.lease === null ? undefined : { owner: patch.lease.owner, expiresAt: now + patch.lease.ttlMs } })
})

/** `updateExecution`'s changes: the status and its time, then the other fields. */
export const patchRecord = (r: StoredRecord, patch: RecordPatch, now: number): StoredRecord =>
  applyFields(
    {
      ...r,
      ...(patch.status === undefined ? {} : { status: patch.status }),
      ...(patch.status !== undefined || patch.wakeAt !== undefined || patch.failure !== undefined ? { updatedAt: now } : {})
    },
    patch,
    now
  )

/** The record after a save whose newest checkpoint of the execution is `cp` (the rules of `InsertOptions`). */
export const recordAfterInsert = (
  record: StoredRecord | undefined,
  cp: Checkpoint.Checkpoint,
  patch: RecordPatch,
  now: number
): StoredRecord => {
  const status = patch.status
  const next: StoredRecord = record === undefined
    ? {
      latestVersion: cp.version,
      latestCheckpointId: cp.id,
      updatedAt: cp.timestamp.getTime(),
      status: status ?? derivedStatus(cp),
      wakeAt: undefined,
      failure: undefined,
      attempts: 0,
      lease: undefined
    }
    : record.latestVersion < cp.version
    ? {
      ...record,
      latestVersion: cp.version,
      latestCheckpointId: cp.id,
      updatedAt: cp.timestamp.getTime(),
      status: status ?? derivedStatus(cp)
    }
    : status !== undefined
    ? { ...record, status }
    : record
  return applyFields(next, patch, now)
}
