/**
 * For store authors: the few primitives a store implements
 * ({@link Backend}), and {@link make}, which builds the whole
 * `CheckpointStore` service on top of them — checking every id and value,
 * encoding each checkpoint once, normalising options, paging, and reading
 * the clock. Every store of this package is built this way; a store of your
 * own is too, and proves itself with the conformance suite published as
 * `effect-checkpoint/testing`.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { CheckpointBackend, CheckpointStore } from "effect-checkpoint"
 *
 * const MyStoreLive = Layer.effect(
 *   CheckpointStore.CheckpointStore,
 *   Effect.map(connectMyDatabase, (db) => CheckpointBackend.make(myBackend(db)))
 * )
 * ```
 *
 * @since 0.2.0
 */
import { Cause, Clock, Duration, Effect, Either, FiberRef, LogLevel, Metric, Option, Schema } from "effect"
import * as Checkpoint from "./Checkpoint.js"
import {
  CheckpointConflict,
  CheckpointDecodeError,
  CheckpointEncodeError,
  CheckpointNotFound,
  CheckpointStoreError,
  CheckpointStoreError as CheckpointStoreErrorClass,
  type ExecutionNotFound,
  InvalidIdentifier,
  InvalidOption,
  LeaseLost
} from "./CheckpointError.js"
import type * as CheckpointStore from "./CheckpointStore.js"
import { statuses, unfinished } from "./internal/records.js"
import { forBackend, span } from "./internal/telemetry.js"
import * as Telemetry from "./Telemetry.js"
import { checkId, idProblem, isValidId } from "./internal/identifier.js"
import { checkpointProblem, type Encoded, encodeChecked, toEncoded } from "./internal/codec.js"
import { DEFAULT_THRESHOLD, makePacker, refsOf, unpack } from "./internal/packing.js"
import { isPlainObject, jsonProblem } from "./internal/json.js"

export {
  /**
   * Checks a checkpoint and encodes it once: the JSON text of each part and
   * of the whole document (what `make` hands to `Backend.insert`).
   *
   * @since 0.2.0
   * @category encoding
   */
  toEncoded as encode,
  /**
   * Decodes a checkpoint from the fields a backend read (values of JSON
   * columns already parsed with `JSON.parse`): ids, dates (text, `Date` or
   * epoch ms), version and shape are checked; anything wrong fails with
   * `CheckpointDecodeError` naming the checkpoint.
   *
   * @since 0.2.0
   * @category decoding
   */
  decodeFields,
  /**
   * Decodes a checkpoint from its JSON document (see `encode`'s `document`).
   *
   * @since 0.2.0
   * @category decoding
   */
  decodeDocument,
  /**
   * Parses JSON text read from storage, or the `CheckpointDecodeError` naming
   * the checkpoint and what was read (a column, say).
   *
   * @since 0.2.0
   * @category decoding
   */
  parseJson,
  /**
   * A checkpoint in its stored form (the JSON text of each part, and the whole
   * document).
   *
   * @since 0.2.0
   * @category encoding
   */
  type Encoded
} from "./internal/codec.js"

// -----------------------------------------------------------------------------
// What a backend implements
// -----------------------------------------------------------------------------

/**
 * A change to an execution record, as `make` hands it to a backend: every
 * value checked, the lease's ttl in milliseconds. Absent fields are left as
 * they are; `null` removes a field.
 *
 * @since 0.2.0
 * @category models
 */
export interface RecordPatch {
  readonly status?: CheckpointStore.ExecutionStatus | undefined
  /** Epoch ms, or `null` to remove. */
  readonly wakeAt?: number | null | undefined
  readonly failure?: CheckpointStore.Failure | null | undefined
  /** Take or renew the lease for `owner` until the backend's now + `ttlMs`; `null` removes it. */
  readonly lease?: { readonly owner: string; readonly ttlMs: number } | null | undefined
}

/**
 * Options of {@link Backend} `insert`.
 *
 * The record rules, for each execution of the batch, after the checks pass
 * (lease, then expectation, then taken ids and versions; any failure writes
 * nothing):
 *
 * - no record yet: one is made from the batch's newest checkpoint of that
 *   execution (`latest*`, `updatedAt` = its timestamp, `attempts` 0), with
 *   `status` = `patch.status`, or `"pending"` when that checkpoint's `next` is
 *   not empty and `"done"` when it is;
 * - a record whose `latestVersion` is lower than the batch's newest: `latest*`
 *   and `updatedAt` follow that checkpoint, and `status` too (as above);
 * - otherwise `latest*` and `updatedAt` stay, `status` becomes `patch.status`
 *   if given;
 * - then `wakeAt`, `failure` and `lease` follow the patch ({@link RecordPatch}).
 *   (`make` always sets `wakeAt` on a save: a save clears it unless it gives one.)
 *
 * @since 0.2.0
 * @category models
 */
export interface InsertOptions {
  /** Only if the expected execution's newest checkpoint has this version (and id, when given); atomically with the write. */
  readonly expect: CheckpointStore.Expectation | undefined
  /** Fencing: refuse with `LeaseLost` if another owner holds a live lease on an execution of the batch. */
  readonly owner: string | undefined
  readonly patch: RecordPatch
  /** `Clock` time (epoch ms) of the call. */
  readonly now: number
  /**
   * Large values to store with the batch (only for a backend with `blobs`):
   * stored once per execution (insert if absent), in the same atomic write.
   */
  readonly blobs: ReadonlyArray<BlobWrite>
}

/**
 * A large value a save stores once for its execution (see `Backend.blobs`).
 *
 * @since 0.2.0
 * @category models
 */
export interface BlobWrite {
  readonly executionId: string
  /** Content hash (22 characters of base64url). */
  readonly hash: string
  readonly json: string
}

/**
 * A backend with `blobs` refuses a save whose checkpoints reference a blob
 * that is neither stored for their execution nor in the batch (`make` then
 * sends every blob and saves again). Users never see it.
 *
 * @since 0.2.0
 * @category errors
 */
export class BlobsMissing extends Schema.TaggedError<BlobsMissing>()("BlobsMissing", {
  executionId: Schema.String,
  hashes: Schema.Array(Schema.String)
}) {}

/**
 * One task write as `make` hands it to a backend: checked, and its JSON text
 * computed once.
 *
 * @since 0.2.0
 * @category models
 */
export interface EncodedWrite {
  readonly key: string
  readonly value: Checkpoint.Json
  /** `JSON.stringify(value)`. */
  readonly json: string
}

/**
 * A query of {@link Backend} `listExecutions`: at most `limit` records, newest
 * first by `(updatedAt, executionId)` (both descending), strictly after the
 * position `after` in that order, and only those in `statuses` (when given)
 * with `updatedAfter < updatedAt < updatedBefore` (when given). A backend must
 * answer it from an index: O(`limit`), not O(executions).
 *
 * @since 0.2.0
 * @category models
 */
export interface ExecutionQuery {
  readonly statuses: ReadonlyArray<CheckpointStore.ExecutionStatus> | undefined
  readonly limit: number
  readonly after: { readonly updatedAt: number; readonly executionId: string } | undefined
  readonly updatedBefore: number | undefined
  readonly updatedAfter: number | undefined
}

/**
 * What a store implements: only the primitives that differ between stores.
 * {@link make} checks every id, value and option first, so a backend gets
 * valid ids, JSON values and normalised numbers, and never needs to throw.
 *
 * Leases: a write with an `owner` is refused (`LeaseLost`, nothing written)
 * when another owner holds a lease that has not expired; `holds: true`
 * (renew, release) refuses unless `owner` holds the lease, expired or not.
 * Lease times use the store's own clock where it has one (database time),
 * else the `now` given.
 *
 * @since 0.2.0
 * @category models
 */
export interface Backend {
  /** A short name for errors and telemetry: `"memory"`, `"postgres"`, … */
  readonly name: string
  /**
   * Writes checkpoints all or nothing and updates their executions' records
   * (see {@link InsertOptions}). Failures: `CheckpointConflict` with reason
   * `"IdTaken"`, `"VersionTaken"` or `"ExpectationFailed"`; `LeaseLost`; a
   * value the backend cannot store → `CheckpointEncodeError`.
   */
  readonly insert: (
    checkpoints: ReadonlyArray<Encoded>,
    options: InsertOptions
  ) => Effect.Effect<void, CheckpointConflict | CheckpointEncodeError | LeaseLost | BlobsMissing | CheckpointStoreError>
  /** Writes one checkpoint (a faster path than `insert([one])`, when the backend has one). */
  readonly insertOne?: (
    checkpoint: Encoded,
    options: InsertOptions
  ) => Effect.Effect<void, CheckpointConflict | CheckpointEncodeError | LeaseLost | BlobsMissing | CheckpointStoreError>
  readonly load: (
    id: Checkpoint.CheckpointId
  ) => Effect.Effect<Option.Option<Checkpoint.Checkpoint>, CheckpointDecodeError | CheckpointStoreError>
  /** Ascending by version; `afterVersion` is a number (maybe fractional or negative), `limit` a positive integer or undefined. */
  readonly list: (
    executionId: Checkpoint.ExecutionId,
    afterVersion: number,
    limit: number | undefined
  ) => Effect.Effect<ReadonlyArray<Checkpoint.Checkpoint>, CheckpointDecodeError | CheckpointStoreError>
  readonly latest: (
    executionId: Checkpoint.ExecutionId
  ) => Effect.Effect<Option.Option<Checkpoint.Checkpoint>, CheckpointDecodeError | CheckpointStoreError>
  /**
   * Removes a checkpoint and its writes. If it was the newest of its
   * execution, the record follows the newest one left; if it was the last,
   * the record goes too.
   */
  readonly delete: (id: Checkpoint.CheckpointId) => Effect.Effect<void, CheckpointStoreError>
  /** Removes an execution's checkpoints, writes and record. */
  readonly clear: (executionId: Checkpoint.ExecutionId) => Effect.Effect<void, CheckpointStoreError>
  /** Keeps the newest `keep` (a non-negative integer) with their writes; 0 removes the record too. Returns how many checkpoints went. */
  readonly prune: (executionId: Checkpoint.ExecutionId, keep: number) => Effect.Effect<number, CheckpointStoreError>
  /**
   * Writes a task's writes all or nothing, and applies `patch` (when given)
   * to the checkpoint's execution record, atomically. A missing checkpoint →
   * `CheckpointNotFound`; a key the task has → `CheckpointConflict`
   * (`"WriteTaken"`, with the checkpoint's execution and version).
   */
  readonly saveWrites: (
    checkpointId: Checkpoint.CheckpointId,
    taskId: string,
    writes: ReadonlyArray<EncodedWrite>,
    options: { readonly owner: string | undefined; readonly patch: RecordPatch | undefined; readonly now: number }
  ) => Effect.Effect<void, CheckpointNotFound | CheckpointConflict | CheckpointEncodeError | LeaseLost | CheckpointStoreError>
  /** By `taskId` (string order), then in the order saved. */
  readonly listWrites: (
    checkpointId: Checkpoint.CheckpointId
  ) => Effect.Effect<ReadonlyArray<CheckpointStore.TaskWrite>, CheckpointDecodeError | CheckpointStoreError>
  readonly getExecution: (
    executionId: Checkpoint.ExecutionId
  ) => Effect.Effect<Option.Option<CheckpointStore.ExecutionRecord>, CheckpointDecodeError | CheckpointStoreError>
  readonly listExecutions: (
    query: ExecutionQuery
  ) => Effect.Effect<ReadonlyArray<CheckpointStore.ExecutionRecord>, CheckpointDecodeError | CheckpointStoreError>
  /**
   * Applies `patch` and returns the record. `updatedAt` becomes `now` when
   * the patch has a `status`, `wakeAt` or `failure`; a lease alone leaves it.
   * No record → `ExecutionNotFound`; `expect` not met → `CheckpointConflict`
   * (`"ExpectationFailed"`); lease (see {@link Backend}) → `LeaseLost`.
   */
  readonly updateExecution: (
    executionId: Checkpoint.ExecutionId,
    patch: RecordPatch,
    options: {
      readonly owner: string | undefined
      readonly holds: boolean
      readonly expect: { readonly latestVersion: number; readonly latestCheckpointId?: string | undefined } | undefined
      readonly now: number
    }
  ) => Effect.Effect<CheckpointStore.ExecutionRecord, ExecutionNotFound | CheckpointConflict | LeaseLost | CheckpointStoreError>
  /**
   * Atomically leases up to `limit` due executions to `owner` (see
   * `CheckpointStore.Service.claim`): status `running`, `attempts` + 1,
   * `updatedAt` = `now`, lease until now + `ttlMs`.
   */
  readonly claim: (
    options: { readonly owner: string; readonly ttlMs: number; readonly limit: number; readonly now: number }
  ) => Effect.Effect<ReadonlyArray<CheckpointStore.ExecutionRecord>, CheckpointStoreError>
  /**
   * Removes every execution (record, checkpoints, writes) with
   * `updatedAt < before`; unless `force`, not one that is `interrupted`,
   * `sleeping` or holds a live lease. Returns how many executions went.
   */
  readonly sweep: (
    options: { readonly before: number; readonly force: boolean; readonly now: number }
  ) => Effect.Effect<number, CheckpointStoreError>
  /**
   * Optional: large values stored once per execution. A backend that has it
   * stores `InsertOptions.blobs` with each batch (insert if absent, atomic with
   * the checkpoints), keeps each checkpoint's `Encoded.refs`, refuses a batch
   * that references a blob its execution does not have (`BlobsMissing`), and
   * removes a blob when no checkpoint of its execution references it any more
   * (delete, prune, clear, sweep). Without it, every checkpoint holds its whole
   * state.
   */
  readonly blobs?: {
    /**
     * The JSON text of each stored blob of the execution among `hashes`
     * (missing ones left out). `CheckpointDecodeError` for a blob that is
     * there but cannot be read (a wrapper such as encryption that cannot
     * open it).
     */
    readonly load: (
      executionId: Checkpoint.ExecutionId,
      hashes: ReadonlyArray<string>
    ) => Effect.Effect<ReadonlyMap<string, string>, CheckpointDecodeError | CheckpointStoreError>
  } | undefined
}

// -----------------------------------------------------------------------------
// Helpers for backends
// -----------------------------------------------------------------------------

/**
 * The conflicts a backend reports.
 *
 * @since 0.2.0
 * @category errors
 */
export const conflict = {
  idTaken: (cp: Checkpoint.Checkpoint): CheckpointConflict =>
    new CheckpointConflict({ reason: "IdTaken", executionId: cp.executionId, version: cp.version, id: cp.id }),
  versionTaken: (cp: Checkpoint.Checkpoint): CheckpointConflict =>
    new CheckpointConflict({ reason: "VersionTaken", executionId: cp.executionId, version: cp.version, id: cp.id }),
  /** `actualLatestVersion`: what the store found, when it knows (0: nothing). */
  expectationFailed: (
    expect: { readonly executionId: string; readonly latestVersion: number },
    actualLatestVersion?: number
  ): CheckpointConflict =>
    new CheckpointConflict({
      reason: "ExpectationFailed",
      executionId: expect.executionId,
      version: expect.latestVersion + 1,
      expectedLatestVersion: expect.latestVersion,
      ...(actualLatestVersion === undefined ? {} : { actualLatestVersion })
    }),
  writeTaken: (
    at: { readonly checkpointId: string; readonly executionId: string; readonly version: number },
    taskId: string,
    key: string
  ): CheckpointConflict =>
    new CheckpointConflict({
      reason: "WriteTaken",
      executionId: at.executionId,
      version: at.version,
      id: at.checkpointId,
      taskId,
      key
    })
}

/**
 * The `LeaseLost` a backend reports when `owner` may not write.
 *
 * @since 0.2.0
 * @category errors
 */
export const leaseLost = (executionId: string, owner: string, holder?: string): LeaseLost =>
  new LeaseLost({ executionId, owner, ...(holder === undefined ? {} : { holder }) })

/**
 * Whether `owner` may write to an execution whose lease is `lease` at `now`
 * (see {@link Backend}): `undefined` when it may, else the `LeaseLost`.
 *
 * @since 0.2.0
 * @category helpers
 */
export const leaseProblem = (
  executionId: string,
  lease: { readonly owner: string; readonly expiresAt: number } | undefined,
  owner: string | undefined,
  holds: boolean,
  now: number
): LeaseLost | undefined => {
  if (owner === undefined) return undefined
  if (holds) return lease?.owner === owner ? undefined : leaseLost(executionId, owner, lease?.owner)
  return lease === undefined || lease.owner === owner || lease.expiresAt <= now
    ? undefined
    : leaseLost(executionId, owner, lease.owner)
}

/**
 * The status a save gives an execution when its patch names none: `pending`
 * when the newest checkpoint has nodes to run, `done` when it has none.
 *
 * @since 0.2.0
 * @category helpers
 */
export const derivedStatus = (cp: { readonly next: ReadonlyArray<string> }): CheckpointStore.ExecutionStatus =>
  cp.next.length > 0 ? "pending" : "done"

/**
 * The fields of a stored execution record that the record rules read, as a
 * backend keeps them in memory (times in epoch ms; absent: `undefined`).
 *
 * @since 0.2.0
 * @category models
 */
export interface RecordState {
  readonly latestVersion: number
  readonly latestCheckpointId: string
  readonly updatedAt: number
  readonly status: CheckpointStore.ExecutionStatus
  readonly wakeAt: number | undefined
  readonly lease: { readonly owner: string; readonly expiresAt: number } | undefined
}

/**
 * Whether an execution's record (`undefined`: none) meets an expectation:
 * no record meets `latestVersion` 0 only; a record meets its own
 * `latestVersion` (and `latestCheckpointId`, when the expectation names one).
 *
 * @since 0.2.0
 * @category helpers
 */
export const expectationMet = (
  record: Pick<RecordState, "latestVersion" | "latestCheckpointId"> | undefined,
  expect: { readonly latestVersion: number; readonly latestCheckpointId?: string | undefined }
): boolean =>
  record === undefined
    ? expect.latestVersion === 0
    : record.latestVersion === expect.latestVersion &&
      (expect.latestCheckpointId === undefined || record.latestCheckpointId === expect.latestCheckpointId)

/**
 * Whether `claim` may take an execution at `now`: no live lease, and
 * `pending`, `sleeping` with `wakeAt` passed (or none), or `running` (its
 * lease expired or was released without a status: nobody runs it).
 *
 * @since 0.2.0
 * @category helpers
 */
export const isDue = (record: Pick<RecordState, "status" | "wakeAt" | "lease">, now: number): boolean => {
  if (record.lease !== undefined && record.lease.expiresAt > now) return false
  switch (record.status) {
    case "pending":
    case "running":
      return true
    case "sleeping":
      return record.wakeAt === undefined || record.wakeAt <= now
    default:
      return false
  }
}

/**
 * Whether `sweep` removes an execution: not updated since `before`, and,
 * unless `force`, neither `interrupted` nor `sleeping` nor holding a live
 * lease at `now`.
 *
 * @since 0.2.0
 * @category helpers
 */
export const sweepable = (
  record: Pick<RecordState, "updatedAt" | "status" | "lease">,
  options: { readonly before: number; readonly force: boolean; readonly now: number }
): boolean =>
  record.updatedAt < options.before &&
  (options.force ||
    (record.status !== "interrupted" && record.status !== "sleeping" &&
      (record.lease === undefined || record.lease.expiresAt <= options.now)))

/**
 * The raw fields of an execution record, as a backend read them (times as
 * epoch ms, `Date` or ISO text; absent fields as `null` or `undefined`).
 *
 * @since 0.2.0
 * @category decoding
 */
export interface RecordFields {
  readonly executionId: unknown
  readonly latestVersion: unknown
  readonly latestCheckpointId: unknown
  readonly updatedAt: unknown
  readonly status: unknown
  readonly wakeAt?: unknown
  readonly failureTag?: unknown
  readonly failureMessage?: unknown
  readonly attempts?: unknown
  readonly leaseOwner?: unknown
  readonly leaseExpiresAt?: unknown
}

const timeOf = (value: unknown): number | undefined => {
  if (typeof value === "number") return Number.isFinite(value) ? value : undefined
  if (typeof value === "bigint") return Number(value)
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? undefined : value.getTime()
  if (typeof value === "string") {
    const ms = /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : Date.parse(value)
    return Number.isFinite(ms) ? ms : undefined
  }
  return undefined
}
const absent = (value: unknown) => value === null || value === undefined
const statusSet = new Set<unknown>(statuses)

/**
 * Checks and builds an execution record from what a backend read; anything
 * wrong → `CheckpointDecodeError` naming the execution.
 *
 * @since 0.2.0
 * @category decoding
 */
export const decodeRecord = (
  fields: RecordFields
): Either.Either<CheckpointStore.ExecutionRecord, CheckpointDecodeError> => {
  const version = typeof fields.latestVersion === "bigint" ? Number(fields.latestVersion) : fields.latestVersion
  const attempts = typeof fields.attempts === "bigint"
    ? Number(fields.attempts)
    : absent(fields.attempts)
    ? 0
    : typeof fields.attempts === "string"
    ? Number(fields.attempts)
    : fields.attempts
  const numericVersion = typeof version === "string" ? Number(version) : version
  const updatedAt = timeOf(fields.updatedAt)
  const wakeAt = absent(fields.wakeAt) ? undefined : timeOf(fields.wakeAt)
  const expiresAt = absent(fields.leaseExpiresAt) ? undefined : timeOf(fields.leaseExpiresAt)
  const problems = [
    isValidId(fields.executionId) ? undefined : "the execution id is not valid",
    isValidId(fields.latestCheckpointId) ? undefined : "the latest checkpoint id is not valid",
    typeof numericVersion === "number" && Number.isInteger(numericVersion) && numericVersion >= 1
      ? undefined
      : `the latest version ${String(version)} is not valid`,
    updatedAt === undefined ? "updatedAt is not a time" : undefined,
    statusSet.has(fields.status) ? undefined : `the status ${JSON.stringify(fields.status)} is not a status`,
    !absent(fields.wakeAt) && wakeAt === undefined ? "wakeAt is not a time" : undefined,
    typeof attempts === "number" && Number.isInteger(attempts) && attempts >= 0 ? undefined : "attempts is not a count",
    absent(fields.leaseOwner) === absent(fields.leaseExpiresAt) && (absent(fields.leaseOwner) || (isValidId(fields.leaseOwner) && expiresAt !== undefined))
      ? undefined
      : "the lease is not valid",
    absent(fields.failureTag) === absent(fields.failureMessage) &&
      (absent(fields.failureTag) || (typeof fields.failureTag === "string" && typeof fields.failureMessage === "string"))
      ? undefined
      : "the failure is not valid"
  ].filter((p) => p !== undefined)
  if (problems.length > 0) {
    const id = typeof fields.executionId === "string" ? fields.executionId : undefined
    return Either.left(
      new CheckpointDecodeError({
        message: `Stored execution record${id === undefined ? "" : ` ${JSON.stringify(id)}`} is not valid: ${problems.join("; ")}`
      })
    )
  }
  const status = fields.status as CheckpointStore.ExecutionStatus
  return Either.right({
    executionId: fields.executionId as Checkpoint.ExecutionId,
    latestVersion: numericVersion as number,
    latestCheckpointId: fields.latestCheckpointId as Checkpoint.CheckpointId,
    updatedAt: new Date(updatedAt!),
    pending: status !== "done",
    status,
    ...(wakeAt === undefined ? {} : { wakeAt: new Date(wakeAt) }),
    ...(absent(fields.failureTag)
      ? {}
      : { failure: { tag: fields.failureTag as string, message: fields.failureMessage as string } }),
    attempts: attempts as number,
    ...(absent(fields.leaseOwner) ? {} : { lease: { owner: fields.leaseOwner as string, expiresAt: new Date(expiresAt!) } })
  })
}

// -----------------------------------------------------------------------------
// make
// -----------------------------------------------------------------------------

const guard = <A, E>(
  kind: "CheckpointId" | "ExecutionId",
  value: string,
  then: Effect.Effect<A, E>
): Effect.Effect<A, E | InvalidIdentifier> => {
  const error = checkId(kind, value)
  return error === undefined ? then : Effect.fail(error)
}

/** Two checkpoints of one batch that collide with each other. */
const batchConflict = (encoded: ReadonlyArray<Encoded>): CheckpointConflict | undefined => {
  const ids = new Set<string>()
  const slots = new Set<string>()
  for (const { checkpoint: cp } of encoded) {
    const slot = `${cp.executionId}\u0000${cp.version}`
    if (ids.has(cp.id)) return conflict.idTaken(cp)
    if (slots.has(slot)) return conflict.versionTaken(cp)
    ids.add(cp.id)
    slots.add(slot)
  }
  return undefined
}

const idError = (kind: "TaskId" | "WriteKey" | "owner", value: unknown): InvalidIdentifier | undefined =>
  isValidId(value) ? undefined : new InvalidIdentifier({
    kind,
    value: typeof value === "string" ? value.slice(0, 200) : String(value),
    reason: idProblem(value) ?? "is not a valid identifier"
  })

const expectationProblem = (
  expect: CheckpointStore.Expectation | undefined
): InvalidIdentifier | InvalidOption | undefined => {
  if (expect === undefined) return undefined
  const error = checkId("ExecutionId", expect.executionId) ??
    (expect.latestCheckpointId === undefined ? undefined : checkId("CheckpointId", expect.latestCheckpointId))
  if (error !== undefined) return error
  const v = expect.latestVersion
  return Number.isInteger(v) && v >= 0 && v <= Checkpoint.MAX_VERSION
    ? undefined
    : new InvalidOption({
      option: "expect.latestVersion",
      message: `expect.latestVersion must be an integer from 0 to ${Checkpoint.MAX_VERSION}, got ${String(v)}`
    })
}

const durationMs = (option: string, value: Duration.DurationInput): Either.Either<number, InvalidOption> => {
  const decoded = Duration.decodeUnknown(value)
  const ms = Option.isSome(decoded) ? Duration.toMillis(decoded.value) : Number.NaN
  return Number.isFinite(ms) && ms > 0
    ? Either.right(Math.ceil(ms))
    : Either.left(new InvalidOption({ option, message: `${option} must be a positive, finite duration, got ${String(value)}` }))
}

/** The longest failure message kept in a record. */
const MAX_FAILURE_MESSAGE = 2000

/** Checks a patch and resolves it for a backend. */
const resolvePatch = (
  patch: CheckpointStore.ExecutionPatch | undefined
): Either.Either<RecordPatch, InvalidOption | InvalidIdentifier> => {
  if (patch === undefined) return Either.right({})
  const out: {
    status?: CheckpointStore.ExecutionStatus
    wakeAt?: number | null
    failure?: CheckpointStore.Failure | null
    lease?: { owner: string; ttlMs: number } | null
  } = {}
  if (patch.status !== undefined) {
    if (!statusSet.has(patch.status)) {
      return Either.left(new InvalidOption({ option: "status", message: `${JSON.stringify(patch.status)} is not a status` }))
    }
    out.status = patch.status
  }
  if (patch.wakeAt !== undefined) {
    if (patch.wakeAt !== null && !(patch.wakeAt instanceof Date && Number.isFinite(patch.wakeAt.getTime()))) {
      return Either.left(new InvalidOption({ option: "wakeAt", message: "wakeAt must be a valid Date" }))
    }
    out.wakeAt = patch.wakeAt === null ? null : patch.wakeAt.getTime()
  }
  if (patch.failure !== undefined) {
    if (patch.failure !== null && !(typeof patch.failure.tag === "string" && typeof patch.failure.message === "string")) {
      return Either.left(new InvalidOption({ option: "failure", message: "failure must have a string tag and message" }))
    }
    out.failure = patch.failure === null
      ? null
      : { tag: patch.failure.tag.slice(0, 200), message: patch.failure.message.slice(0, MAX_FAILURE_MESSAGE) }
  }
  if (patch.lease !== undefined) {
    if (patch.lease === null) out.lease = null
    else {
      const ownerError = idError("owner", patch.lease.owner)
      if (ownerError !== undefined) return Either.left(ownerError)
      const ttl = durationMs("lease.ttl", patch.lease.ttl)
      if (Either.isLeft(ttl)) return Either.left(ttl.left)
      out.lease = { owner: patch.lease.owner, ttlMs: ttl.right }
    }
  }
  return Either.right(out)
}

/** The default and the largest `limit` of `listExecutions`. */
const DEFAULT_PAGE = 100
const MAX_PAGE = 10_000

const encodeCursor = (record: CheckpointStore.ExecutionRecord): string =>
  Buffer.from(JSON.stringify([record.updatedAt.getTime(), record.executionId])).toString("base64url")

const decodeCursor = (cursor: string): Either.Either<{ updatedAt: number; executionId: string }, InvalidIdentifier> => {
  const bad = Either.left(new InvalidIdentifier({ kind: "cursor", value: cursor.slice(0, 200), reason: "is not a cursor of this store" }))
  try {
    const parsed = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")) as unknown
    return Array.isArray(parsed) && parsed.length === 2 && typeof parsed[0] === "number" && Number.isFinite(parsed[0]) &&
        isValidId(parsed[1])
      ? Either.right({ updatedAt: parsed[0], executionId: parsed[1] })
      : bad
  } catch {
    return bad
  }
}

const checkWrites = (
  checkpointId: string,
  taskId: string,
  writes: ReadonlyArray<{ readonly key: string; readonly value: Checkpoint.Json }>
): Either.Either<ReadonlyArray<EncodedWrite>, InvalidIdentifier | CheckpointEncodeError> => {
  const taskError = idError("TaskId", taskId)
  if (taskError !== undefined) return Either.left(taskError)
  const keys = new Set<string>()
  const out: Array<EncodedWrite> = []
  for (const write of writes) {
    const keyError = idError("WriteKey", write.key)
    if (keyError !== undefined) return Either.left(keyError)
    if (keys.has(write.key)) return Either.left(encodeError(checkpointId, `the key ${JSON.stringify(write.key)} is written twice`))
    keys.add(write.key)
    const problem = jsonProblem(write.value, `writes[${JSON.stringify(write.key)}]`)
    if (problem !== undefined) return Either.left(encodeError(checkpointId, problem))
    out.push({ key: write.key, value: write.value, json: JSON.stringify(write.value) })
  }
  return Either.right(out)
}

const encodeError = (id: string, message: string): CheckpointEncodeError => new CheckpointEncodeError({ id, message })

/** Spans, metrics and logs around a store's operations. */
const instrument = (name: string) => {
  const metrics = forBackend(name)
  const counted = (operation: string) => (cause: Cause.Cause<unknown>) => {
    const error = Option.getOrUndefined(Cause.failureOption(cause))
    if (error instanceof CheckpointConflict) {
      return Metric.update(Telemetry.conflicts.pipe(Metric.tagged("backend", name), Metric.tagged("reason", error.reason)), 1)
    }
    if (error === undefined) return Effect.void
    const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : "Unknown"
    return Metric.update(
      Telemetry.errors.pipe(Metric.tagged("backend", name), Metric.tagged("operation", operation), Metric.tagged("tag", tag)),
      1
    )
  }
  /** A span (when a tracer is provided: see `span`) and, on failure, a counted error. */
  const op = <A, E, R>(
    operation: string,
    attributes: Record<string, unknown>,
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E, R> =>
    span(
      Effect.tapErrorCause(effect, counted(operation)),
      `checkpoint.${operation}`,
      () => ({ "checkpoint.backend": name, ...attributes }),
      "client"
    )
  /** A read: counted, then as {@link op}. */
  const read = <A, E, R>(operation: string, attributes: Record<string, unknown>, effect: Effect.Effect<A, E, R>) =>
    op(operation, attributes, Effect.tap(effect, () => Effect.sync(() => metrics.loads.unsafeUpdate(1, []))))
  /** A checkpoint save: its latency, the checkpoints and their bytes counted, a debug log. */
  const saved = <A, E, R>(
    operation: string,
    encoded: ReadonlyArray<Encoded>,
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E, R> => {
    const first = encoded[0]?.checkpoint
    let bytes = 0
    for (const e of encoded) bytes += e.document.length
    const attributes = first === undefined ? {} : {
      "checkpoint.execution_id": first.executionId,
      "checkpoint.id": first.id,
      "checkpoint.version": encoded[encoded.length - 1]!.checkpoint.version,
      "checkpoint.node": first.nodeName,
      "checkpoint.bytes": bytes,
      "checkpoint.count": encoded.length
    }
    return op(
      operation,
      attributes,
      Effect.suspend(() => {
        const start = performance.now()
        return Effect.tap(effect, () =>
          Effect.withFiberRuntime((fiber) => {
            metrics.saveLatency.unsafeUpdate(performance.now() - start, [])
            metrics.saves.unsafeUpdate(encoded.length, [])
            metrics.checkpointBytes.unsafeUpdate(bytes, [])
            return LogLevel.greaterThan(fiber.getFiberRef(FiberRef.currentMinimumLogLevel), LogLevel.Debug)
              ? Effect.void
              : Effect.annotateLogs(Effect.logDebug(`saved ${encoded.length} checkpoint(s)`), { "checkpoint.backend": name, ...attributes })
          }))
      })
    )
  }
  return { op, read, saved }
}

const BackendTypeId: unique symbol = Symbol.for("effect-checkpoint/CheckpointBackend/Backend")

/**
 * The backend (and options) a service was built from with {@link make}, so a
 * wrapper (such as `CheckpointStore.encrypted`) can build the service again
 * over a wrapped backend; `None` for a service built by hand.
 *
 * @since 0.2.0
 * @category constructors
 */
export const backendOf = (
  service: CheckpointStore.Service
): Option.Option<{ readonly backend: Backend; readonly options: MakeOptions }> => {
  const found = (service as { readonly [BackendTypeId]?: { readonly backend: Backend; readonly options: MakeOptions } })[
    BackendTypeId
  ]
  return Option.fromNullable(found)
}

/**
 * Options of {@link make}.
 *
 * @since 0.2.0
 * @category models
 */
export interface MakeOptions {
  /** The store's retention `ttl` option (see `Retention`); zero, infinite or absent: none. */
  readonly ttl?: Duration.DurationInput | undefined
  /**
   * Large values (for a backend with `blobs`): a state field whose JSON is
   * longer than `threshold` characters (default 4096) is stored once per
   * execution, and an array field that only grew stores what was appended.
   * `false` stores whole states.
   */
  readonly largeValues?: false | { readonly threshold?: number | undefined } | undefined
}

/**
 * Builds the whole `CheckpointStore` service from a backend's primitives.
 * It refuses bad ids, values and options before the backend sees them (so a
 * checkpoint built with validation off, or an id cast from a raw string,
 * still gets `InvalidIdentifier`), encodes each checkpoint once, turns a
 * missing checkpoint into `CheckpointNotFound`, normalises `list`, `prune`
 * and `listExecutions` options (pages and cursors included), reads `Clock`
 * for the record times, and derives `renew` and `release`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (backend: Backend, options: MakeOptions = {}): CheckpointStore.Service => {
  const ttl = options.ttl === undefined ? Option.none() : Option.filter(
    Duration.decodeUnknown(options.ttl),
    (d) => Duration.toMillis(d) > 0 && Duration.isFinite(d)
  )
  const makeOptions = options
  const insertOne = backend.insertOne ?? ((e: Encoded, options: InsertOptions) => backend.insert([e], options))
  const now = Clock.currentTimeMillis
  const { op, read, saved } = instrument(backend.name)
  const blobStore = backend.blobs
  const packer = blobStore === undefined || options.largeValues === false
    ? undefined
    : makePacker(options.largeValues?.threshold ?? DEFAULT_THRESHOLD)

  /**
   * Encodes and writes checkpoints: with large values out of them when the
   * backend keeps blobs; when the packer's memory was stale (a blob it thought
   * stored is gone), it forgets and sends every blob once more.
   */
  const write = (
    cps: ReadonlyArray<Checkpoint.Checkpoint>,
    options: InsertOptions,
    one: boolean
  ): Effect.Effect<void, CheckpointConflict | CheckpointEncodeError | LeaseLost | CheckpointStoreError | InvalidIdentifier> => {
    type WriteError = CheckpointConflict | CheckpointEncodeError | LeaseLost | CheckpointStoreError | InvalidIdentifier
    const attempt = (retry: boolean): Effect.Effect<void, WriteError> =>
      Effect.suspend((): Effect.Effect<void, WriteError> => {
        const problems = cps.map((cp) => checkpointProblem(cp)).find((p) => p !== undefined)
        if (problems !== undefined) return Effect.fail(problems)
        const plain: Array<Encoded> = []
        for (const cp of cps) {
          const e = encodeChecked(cp)
          if (Either.isLeft(e)) return Effect.fail(e.left)
          plain.push(e.right)
        }
        const packed = packer === undefined || !cps.some((cp, i) => packer.worth(cp, plain[i]!.state.length))
          ? undefined
          : cps.map((cp) => packer.pack(cp))
        const blobs = packed === undefined ? noBlobs : packed.flatMap((p) => p?.blobs ?? noBlobs)
        const stored = packed === undefined
          ? Effect.succeed(plain)
          : Effect.forEach(packed, (p, i) => p === undefined ? Effect.succeed(plain[i]!) : toEncoded(p.checkpoint))
        return Effect.flatMap(stored, (encoded) => {
          const collision = one ? undefined : batchConflict(encoded)
          if (collision !== undefined) return Effect.fail(collision)
          const withBlobs = blobs.length === 0 ? options : { ...options, blobs }
          const inserted = one && encoded.length === 1 ? insertOne(encoded[0]!, withBlobs) : backend.insert(encoded, withBlobs)
          const written = saved(one ? "save" : "saveMany", encoded, inserted)
          // Without packed checkpoints nothing references a blob: BlobsMissing cannot happen.
          if (packed === undefined) return written as Effect.Effect<void, WriteError>
          return written.pipe(
            // What the packer remembered of a save that failed may be wrong: it forgets those executions.
            Effect.tapError(() => Effect.sync(() => packed.forEach((p, i) => p === undefined ? undefined : packer!.forget(cps[i]!.executionId)))),
            Effect.catchTag("BlobsMissing", (missing) =>
              retry ? attempt(false) : Effect.fail(storeFailure("save", `blobs ${missing.hashes.join(", ")} are missing`)))
          )
        })
      })
    return attempt(true)
  }
  const storeFailure = (operation: string, message: string) =>
    new CheckpointStoreErrorClass({ backend: backend.name, operation, message })

  /** Puts large values back into checkpoints read from the backend. */
  const unpacked = (
    cps: ReadonlyArray<Checkpoint.Checkpoint>
  ): Effect.Effect<ReadonlyArray<Checkpoint.Checkpoint>, CheckpointDecodeError | CheckpointStoreError> => {
    if (blobStore === undefined || cps.every((cp) => cp.runtime?.$pack === undefined)) return Effect.succeed(cps)
    const wanted = new Map<Checkpoint.ExecutionId, Set<string>>()
    for (const cp of cps) {
      const refs = refsOf(cp)
      if (refs.length === 0) continue
      let set = wanted.get(cp.executionId)
      if (set === undefined) wanted.set(cp.executionId, set = new Set())
      for (const h of refs) set.add(h)
    }
    return Effect.flatMap(
      Effect.forEach([...wanted], ([executionId, hashes]) =>
        blobStore.load(executionId, [...hashes]).pipe(
          Effect.map((found) => [executionId, found] as const),
          // A blob that does not open (encryption): name the checkpoint read (in a list, the first of its execution).
          Effect.mapError((e) =>
            e._tag === "CheckpointDecodeError" && e.id === undefined
              ? new CheckpointDecodeError({ id: cps.find((cp) => cp.executionId === executionId)!.id, message: e.message })
              : e
          )
        )),
      (loaded): Effect.Effect<ReadonlyArray<Checkpoint.Checkpoint>, CheckpointDecodeError | CheckpointStoreError> => {
        const byExecution = new Map(loaded)
        const out: Array<Checkpoint.Checkpoint | undefined> = []
        const problems: Array<readonly [number, CheckpointDecodeError]> = []
        for (const cp of cps) {
          const found = byExecution.get(cp.executionId) ?? new Map<string, string>()
          const result = unpack(cp, found)
          if ("problem" in result) {
            problems.push([out.length, new CheckpointDecodeError({
              id: cp.id,
              message: `Stored checkpoint ${JSON.stringify(cp.id)} cannot be read whole: ${result.problem}`
            })])
            out.push(undefined)
            continue
          }
          packer?.know(cp.executionId, [...found.keys()])
          out.push(result.checkpoint)
        }
        if (problems.length === 0) return Effect.succeed(out as Array<Checkpoint.Checkpoint>)
        // A checkpoint removed (with its blobs) between its read and its blobs' is left out, as if read
        // after; one that is still there is damaged.
        return Effect.flatMap(
          Effect.forEach(problems, ([i, error]) =>
            Effect.flatMap(backend.load(cps[i]!.id), (still) => Option.isSome(still) ? Effect.fail(error) : Effect.void)),
          () => Effect.succeed(out.filter((cp) => cp !== undefined))
        )
      }
    )
  }
  /** `latest`, whole; read again when the newest went (with its blobs) while it was being read. */
  const latestWhole = (
    executionId: Checkpoint.ExecutionId,
    attempts = 3
  ): Effect.Effect<Option.Option<Checkpoint.Checkpoint>, CheckpointDecodeError | CheckpointStoreError> =>
    Effect.flatMap(backend.latest(executionId), (cp) =>
      Option.isNone(cp) ? Effect.succeed(cp) : Effect.flatMap(unpacked([cp.value]), (all) =>
        all.length === 1 ? Effect.succeed(Option.some(all[0]!)) : attempts > 1 ? latestWhole(executionId, attempts - 1) : Effect.succeedNone))

  /** The insert options of a save, checked. */
  const insertOptions = (
    options: CheckpointStore.SaveOptions | undefined
  ): Effect.Effect<InsertOptions, InvalidIdentifier | InvalidOption> => {
    const problem = expectationProblem(options?.expect) ??
      (options?.owner === undefined ? undefined : idError("owner", options.owner))
    if (problem !== undefined) return Effect.fail(problem)
    const patch = resolvePatch(options?.execution)
    if (Either.isLeft(patch)) return Effect.fail(patch.left)
    const resolved = patch.right.wakeAt === undefined ? { ...patch.right, wakeAt: null } : patch.right
    return Effect.map(now, (ms) => ({ expect: options?.expect, owner: options?.owner, patch: resolved, now: ms, blobs: noBlobs }))
  }

  const updateOptions = (
    owner: string | undefined,
    holds: boolean,
    expect: CheckpointStore.UpdateOptions["expect"]
  ) => {
    const problem = (owner === undefined ? undefined : idError("owner", owner)) ??
      (expect === undefined
        ? undefined
        : expectationProblem({ executionId: "x" as Checkpoint.ExecutionId, ...expect }))
    if (problem !== undefined) return Effect.fail(problem)
    return Effect.map(now, (ms) => ({ owner, holds, expect, now: ms }))
  }

  const update = (
    executionId: Checkpoint.ExecutionId,
    patch: CheckpointStore.ExecutionPatch,
    owner: string | undefined,
    holds: boolean,
    expect: CheckpointStore.UpdateOptions["expect"]
  ): Effect.Effect<
    CheckpointStore.ExecutionRecord,
    ExecutionNotFound | CheckpointConflict | LeaseLost | CheckpointStore.StoreError
  > =>
    guard(
      "ExecutionId",
      executionId,
      Effect.suspend(() => {
        const resolved = resolvePatch(patch)
        if (Either.isLeft(resolved)) return Effect.fail(resolved.left)
        return Effect.flatMap(
          updateOptions(owner, holds, expect),
          (options) => op("updateExecution", { "checkpoint.execution_id": executionId }, backend.updateExecution(executionId, resolved.right, options))
        )
      })
    )

  const service: CheckpointStore.Service = {
    save: (cp, options) => Effect.flatMap(insertOptions(options), (resolved) => write([cp], resolved, true)),
    saveMany: (cps, options) =>
      Effect.flatMap(insertOptions(options), (resolved) => cps.length === 0 ? Effect.void : write(cps, resolved, false)),
    load: (id) =>
      guard(
        "CheckpointId",
        id,
        read(
          "load",
          { "checkpoint.id": id },
          Effect.flatMap(
            backend.load(id),
            (found): Effect.Effect<Checkpoint.Checkpoint, CheckpointNotFound | CheckpointDecodeError | CheckpointStoreError> =>
              Option.isNone(found)
                ? Effect.fail(new CheckpointNotFound({ id }))
                : Effect.flatMap(unpacked([found.value]), (all) =>
                  // Removed while it was being read.
                  all.length === 1 ? Effect.succeed(all[0]!) : Effect.fail(new CheckpointNotFound({ id })))
          )
        )
      ),
    list: (executionId, options) => {
      const limit = options?.limit === undefined ? undefined : Math.floor(options.limit)
      const after = options?.afterVersion
      const afterVersion = typeof after === "number" && !Number.isNaN(after) ? after : 0
      return guard(
        "ExecutionId",
        executionId,
        limit !== undefined && !(limit > 0) || afterVersion >= Checkpoint.MAX_VERSION
          ? Effect.succeed([])
          : read(
            "list",
            { "checkpoint.execution_id": executionId },
            Effect.flatMap(
              backend.list(executionId, afterVersion, limit === undefined || limit === Infinity ? undefined : limit),
              unpacked
            )
          )
      )
    },
    latest: (executionId) =>
      guard(
        "ExecutionId",
        executionId,
        read("latest", { "checkpoint.execution_id": executionId }, latestWhole(executionId))
      ),
    delete: (id) => guard("CheckpointId", id, op("delete", { "checkpoint.id": id }, backend.delete(id))),
    clear: (executionId) =>
      guard("ExecutionId", executionId, op("clear", { "checkpoint.execution_id": executionId }, backend.clear(executionId))),
    prune: (executionId, keep) =>
      guard(
        "ExecutionId",
        executionId,
        op(
          "prune",
          { "checkpoint.execution_id": executionId },
          backend.prune(executionId, Number.isNaN(keep) ? 0 : Math.min(Checkpoint.MAX_VERSION, Math.max(0, Math.floor(keep))))
        )
      ),

    saveWrites: (checkpointId, taskId, writes, options) =>
      guard(
        "CheckpointId",
        checkpointId,
        Effect.suspend((): Effect.Effect<void, CheckpointNotFound | CheckpointStore.SaveError> => {
          const checked = checkWrites(checkpointId, taskId, writes)
          if (Either.isLeft(checked)) return Effect.fail(checked.left)
          const ownerError = options?.owner === undefined ? undefined : idError("owner", options.owner)
          if (ownerError !== undefined) return Effect.fail(ownerError)
          const patch = options?.execution === undefined ? undefined : resolvePatch(options.execution)
          if (patch !== undefined && Either.isLeft(patch)) return Effect.fail(patch.left)
          if (checked.right.length === 0 && patch === undefined) return Effect.void
          return Effect.flatMap(now, (ms) =>
            op(
              "saveWrites",
              { "checkpoint.id": checkpointId, "checkpoint.task_id": taskId, "checkpoint.count": checked.right.length },
              backend.saveWrites(checkpointId, taskId, checked.right, {
                owner: options?.owner,
                patch: patch === undefined ? undefined : patch.right,
                now: ms
              })
            ))
        })
      ),
    listWrites: (checkpointId) =>
      guard("CheckpointId", checkpointId, read("listWrites", { "checkpoint.id": checkpointId }, backend.listWrites(checkpointId))),

    getExecution: (executionId) =>
      guard(
        "ExecutionId",
        executionId,
        read("getExecution", { "checkpoint.execution_id": executionId }, backend.getExecution(executionId))
      ),
    listExecutions: (options) =>
      Effect.suspend((): Effect.Effect<CheckpointStore.ExecutionPage, CheckpointDecodeError | CheckpointStore.StoreError> => {
        const requested = options?.limit === undefined ? DEFAULT_PAGE : Math.floor(options.limit)
        if (!(requested > 0)) return Effect.succeed({ executions: [] })
        const limit = Math.min(requested, MAX_PAGE)
        const status = options?.status
        const wanted = status === undefined ? undefined : typeof status === "string" ? [status] : status
        if (wanted !== undefined && wanted.some((s) => !statusSet.has(s))) {
          return Effect.fail(new InvalidOption({ option: "status", message: `unknown status in ${JSON.stringify(wanted)}` }))
        }
        const statusesWanted = options?.pendingOnly === true
          ? (wanted === undefined ? unfinished : wanted.filter((s) => s !== "done"))
          : wanted
        if (statusesWanted !== undefined && statusesWanted.length === 0) return Effect.succeed({ executions: [] })
        const cursor = options?.cursor === undefined ? undefined : decodeCursor(options.cursor)
        if (cursor !== undefined && Either.isLeft(cursor)) return Effect.fail(cursor.left)
        const time = (d: Date | undefined, option: string) =>
          d === undefined ? Either.right(undefined) : d instanceof Date && Number.isFinite(d.getTime())
          ? Either.right(d.getTime())
          : Either.left(new InvalidOption({ option, message: `${option} must be a valid Date` }))
        const before = time(options?.updatedBefore, "updatedBefore")
        if (Either.isLeft(before)) return Effect.fail(before.left)
        const after = time(options?.updatedAfter, "updatedAfter")
        if (Either.isLeft(after)) return Effect.fail(after.left)
        return Effect.map(
          read("listExecutions", {}, backend.listExecutions({
            statuses: statusesWanted === undefined ? undefined : [...new Set(statusesWanted)],
            limit: limit + 1,
            after: cursor === undefined ? undefined : cursor.right,
            updatedBefore: before.right,
            updatedAfter: after.right
          })),
          (rows): CheckpointStore.ExecutionPage =>
            rows.length > limit
              ? { executions: rows.slice(0, limit), cursor: encodeCursor(rows[limit - 1]!) }
              : { executions: rows }
        )
      }),
    updateExecution: (executionId, patch, options) => update(executionId, patch, options?.owner, false, options?.expect),
    // Without an expectation, an update cannot fail with CheckpointConflict.
    renew: (executionId, options) =>
      update(executionId, { lease: { owner: options.owner, ttl: options.ttl } }, options.owner, true, undefined) as Effect.Effect<
        CheckpointStore.ExecutionRecord,
        ExecutionNotFound | LeaseLost | CheckpointStore.StoreError
      >,
    release: (executionId, options) =>
      update(
        executionId,
        options.status === undefined ? { lease: null } : { lease: null, status: options.status },
        options.owner,
        true,
        undefined
      ) as Effect.Effect<CheckpointStore.ExecutionRecord, ExecutionNotFound | LeaseLost | CheckpointStore.StoreError>,
    claim: (options) =>
      Effect.suspend((): Effect.Effect<ReadonlyArray<CheckpointStore.ExecutionRecord>, CheckpointStore.StoreError> => {
        const ownerError = idError("owner", options.owner)
        if (ownerError !== undefined) return Effect.fail(ownerError)
        const ttl = durationMs("ttl", options.ttl)
        if (Either.isLeft(ttl)) return Effect.fail(ttl.left)
        const limit = Math.floor(options.limit)
        if (!(limit > 0)) return Effect.succeed([])
        return Effect.flatMap(now, (ms) =>
          op("claim", { "checkpoint.owner": options.owner }, backend.claim({ owner: options.owner, ttlMs: ttl.right, limit: Math.min(limit, MAX_PAGE), now: ms })))
      }),
    sweep: (options) =>
      Effect.suspend((): Effect.Effect<number, CheckpointStore.StoreError> => {
        const before = options.before
        if (!(before instanceof Date) || !Number.isFinite(before.getTime())) {
          return Effect.fail(new InvalidOption({ option: "before", message: "before must be a valid Date" }))
        }
        return Effect.flatMap(now, (ms) => op("sweep", {}, backend.sweep({ before: before.getTime(), force: options.force === true, now: ms })))
      }),
    ttl
  }
  return Object.assign(service, { [BackendTypeId]: { backend, options: makeOptions } })
}

const noBlobs: ReadonlyArray<BlobWrite> = []

/** Values a backend may need, re-exported for convenience. */
export { isPlainObject, jsonProblem }
