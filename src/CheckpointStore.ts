/**
 * The `CheckpointStore` service: where checkpoints, task writes and execution
 * records are saved, listed, loaded and removed. Provide it with one store
 * layer (`MemoryStore.layer`, `FileStore.layer`, `SqliteStore.layer`,
 * `PostgresStore.layer`, `RedisStore.layer`) and swap the layer to change
 * stores: the program stays the same.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CheckpointStore, MemoryStore } from "effect-checkpoint"
 *
 * const program = Effect.gen(function*() {
 *   const store = yield* CheckpointStore.CheckpointStore
 *   const { executions } = yield* store.listExecutions({ status: "interrupted" })
 *   return executions.map((e) => e.executionId)
 * })
 * Effect.runPromise(program.pipe(Effect.provide(MemoryStore.layer)))
 * ```
 *
 * To write a store of your own, see the `CheckpointBackend` module.
 *
 * @since 0.1.0
 */
import { Context, type Duration, Effect, Either, Layer, Option, type Redacted } from "effect"
import type * as Checkpoint from "./Checkpoint.js"
import type {
  CheckpointConflict,
  CheckpointDecodeError,
  CheckpointEncodeError,
  CheckpointNotFound,
  ExecutionNotFound,
  LeaseLost,
  StoreError
} from "./CheckpointError.js"
import { InvalidOption } from "./CheckpointError.js"
import * as CheckpointBackend from "./CheckpointBackend.js"
import { checkKeys, sealedBackend } from "./internal/encryption.js"

export type {
  /**
   * The store's own failures: the backend failed, or an identifier was refused.
   *
   * @since 0.1.0
   * @category models
   */
  StoreError
} from "./CheckpointError.js"

/**
 * The failures of a write: a conflict, a value that cannot be stored, a lease
 * held by another owner, or the store's own failure.
 *
 * @since 0.1.0
 * @category models
 */
export type SaveError = CheckpointConflict | CheckpointEncodeError | LeaseLost | StoreError

// -----------------------------------------------------------------------------
// Execution records
// -----------------------------------------------------------------------------

/**
 * Where an execution stands:
 *
 * | status | meaning | a worker claims it |
 * |---|---|---|
 * | `pending` | waiting to run (started with `start`, or left by a save with nodes still to run) | yes |
 * | `running` | a run holds it (its lease says until when) | once the lease expired |
 * | `interrupted` | paused for a human (`interrupt`, `interruptBefore/After`) | never: `resume` it |
 * | `sleeping` | waiting for `wakeAt` (`Graph.sleep`) | once `wakeAt` passed |
 * | `done` | finished (its newest checkpoint has nothing to run next) | never |
 * | `failed` | a run failed and gave up (see `failure`) | never: `retry` re-arms it |
 *
 * @since 0.2.0
 * @category models
 */
export type ExecutionStatus = "pending" | "running" | "interrupted" | "sleeping" | "done" | "failed"

export {
  /**
   * Every {@link ExecutionStatus}, in a fixed order.
   *
   * @since 0.2.0
   * @category models
   */
  statuses,
  /**
   * The statuses `pendingOnly` stands for: every one but `done`.
   *
   * @since 0.2.0
   * @category models
   */
  unfinished
} from "./internal/records.js"

/**
 * A lease on an execution: `owner` may run it until `expiresAt`.
 *
 * @since 0.2.0
 * @category models
 */
export interface Lease {
  readonly owner: string
  readonly expiresAt: Date
}

/**
 * The last failure of an execution: the error's tag and message.
 *
 * @since 0.2.0
 * @category models
 */
export interface Failure {
  readonly tag: string
  readonly message: string
}

/**
 * The record a store keeps of each execution that has checkpoints, updated
 * atomically with the writes that change it.
 *
 * @since 0.2.0
 * @category models
 */
export interface ExecutionRecord {
  readonly executionId: Checkpoint.ExecutionId
  /** The version of the execution's newest checkpoint. */
  readonly latestVersion: number
  /** The id of the execution's newest checkpoint. */
  readonly latestCheckpointId: Checkpoint.CheckpointId
  /** When the record last changed: the newest checkpoint's timestamp, or the time of the last status change. */
  readonly updatedAt: Date
  /** `true` unless the execution is `done`. */
  readonly pending: boolean
  readonly status: ExecutionStatus
  /** When a `sleeping` execution is due. */
  readonly wakeAt?: Date | undefined
  /** The last failure (kept after a later success, until the next failure replaces it). */
  readonly failure?: Failure | undefined
  /** How many times a worker claimed the execution. */
  readonly attempts: number
  /** Who runs it now, until when. */
  readonly lease?: Lease | undefined
}

/**
 * The name 0.1.0 gave the summary `listExecutions` returned; it is the
 * {@link ExecutionRecord} now.
 *
 * @since 0.1.0
 * @category models
 */
export type ExecutionSummary = ExecutionRecord

/**
 * A change to an execution record. Absent fields are left as they are; `null`
 * removes a field.
 *
 * @since 0.2.0
 * @category models
 */
export interface ExecutionPatch {
  readonly status?: ExecutionStatus | undefined
  readonly wakeAt?: Date | null | undefined
  readonly failure?: Failure | null | undefined
  /**
   * Takes or renews the lease for `owner` until the store's now + `ttl`, or
   * (`null`) removes it.
   */
  readonly lease?: { readonly owner: string; readonly ttl: Duration.DurationInput } | null | undefined
}

/**
 * Options of {@link Service} `listExecutions`. Results are newest first (by
 * `updatedAt`, then by execution id, both descending); a page costs the store
 * O(`limit`), whatever the number of executions.
 *
 * @since 0.2.0
 * @category models
 */
export interface ListExecutionsOptions {
  /** Only executions in this status (or in one of these). */
  readonly status?: ExecutionStatus | ReadonlyArray<ExecutionStatus> | undefined
  /** Shorthand for every status but `done` (0.1.0's meaning: the newest checkpoint has nodes to run). */
  readonly pendingOnly?: boolean | undefined
  /** At most this many (default 100; at most 10 000). */
  readonly limit?: number | undefined
  /** The `cursor` of the previous page. */
  readonly cursor?: string | undefined
  /** Only executions updated strictly before this time. */
  readonly updatedBefore?: Date | undefined
  /** Only executions updated strictly after this time. */
  readonly updatedAfter?: Date | undefined
}

/**
 * One page of {@link Service} `listExecutions`.
 *
 * @since 0.2.0
 * @category models
 */
export interface ExecutionPage {
  readonly executions: ReadonlyArray<ExecutionRecord>
  /** Pass it as `cursor` to get the next page; absent on the last page. */
  readonly cursor?: string | undefined
}

/**
 * Options of {@link Service} `claim`.
 *
 * @since 0.2.0
 * @category models
 */
export interface ClaimOptions {
  /** Who takes the leases (a worker's name; `[A-Za-z0-9._:-]`, 1–128 characters). */
  readonly owner: string
  /** How long the leases last (renew them while running). */
  readonly ttl: Duration.DurationInput
  /** At most this many executions. */
  readonly limit: number
}

/**
 * Options of {@link Service} `sweep`.
 *
 * @since 0.2.0
 * @category models
 */
export interface SweepOptions {
  /** Removes executions whose record was not updated since this time. */
  readonly before: Date
  /** Also remove leased, interrupted and sleeping executions. Default `false`. */
  readonly force?: boolean | undefined
}

// -----------------------------------------------------------------------------
// Checkpoints
// -----------------------------------------------------------------------------

/**
 * Options of {@link Service} `list`: it pages forward through an execution,
 * returning the first `limit` checkpoints with `version > afterVersion`. A
 * `limit` of 0 or less returns nothing; a missing `limit` returns all.
 *
 * @since 0.1.0
 * @category models
 */
export interface ListOptions {
  readonly afterVersion?: number | undefined
  readonly limit?: number | undefined
}

/**
 * The condition of a conditional write (optimistic concurrency): the newest
 * checkpoint of `executionId` in the store must have version `latestVersion`
 * (`0`: the execution has no checkpoints) and, when given, the id
 * `latestCheckpointId`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Expectation {
  readonly executionId: Checkpoint.ExecutionId
  readonly latestVersion: number
  readonly latestCheckpointId?: Checkpoint.CheckpointId | undefined
}

/**
 * Options of {@link Service} `save` and `saveMany`.
 *
 * @since 0.1.0
 * @category models
 */
export interface SaveOptions {
  /**
   * Save only if the execution's newest checkpoint is the expected one;
   * otherwise fail with `CheckpointConflict` (`"ExpectationFailed"`) and write
   * nothing. The check and the write are one atomic step on every store but
   * File (where another process may write in between; its slots still never
   * let two checkpoints take one version).
   */
  readonly expect?: Expectation | undefined
  /**
   * Fencing: write only if no other owner holds a live (unexpired) lease on
   * the execution, else fail with `LeaseLost` and write nothing.
   */
  readonly owner?: string | undefined
  /**
   * The change to the execution record that goes with the save (atomically).
   * Without a `status`, a save sets `pending` when the newest checkpoint has
   * nodes to run and `done` when it has none; it clears `wakeAt`.
   */
  readonly execution?: ExecutionPatch | undefined
}

/**
 * One write of a task, as {@link Service} `listWrites` returns it.
 *
 * @since 0.2.0
 * @category models
 */
export interface TaskWrite {
  readonly taskId: string
  readonly key: string
  readonly value: Checkpoint.Json
}

/**
 * Options of {@link Service} `saveWrites` and `updateExecution`.
 *
 * @since 0.2.0
 * @category models
 */
export interface WriteOptions {
  /** Fencing, as for `save`. */
  readonly owner?: string | undefined
  /** The change to the execution record that goes with the write (atomically). */
  readonly execution?: ExecutionPatch | undefined
}

/**
 * Options of {@link Service} `updateExecution`.
 *
 * @since 0.2.0
 * @category models
 */
export interface UpdateOptions {
  /**
   * Fencing, as for `save`: refused with `LeaseLost` if another owner holds a
   * live lease (an expired one may be taken over by a `lease` in the patch).
   */
  readonly owner?: string | undefined
  /** Update only if the execution's newest checkpoint is this version (and id, when given). */
  readonly expect?: { readonly latestVersion: number; readonly latestCheckpointId?: Checkpoint.CheckpointId | undefined } | undefined
}

/**
 * The store interface. Every store keeps `(executionId, version)` unique and
 * `id` unique: a second save of either fails with `CheckpointConflict` and
 * changes nothing. No store hands out an object that a caller could mutate
 * into the store.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** Saves one checkpoint (and updates its execution's record). */
  readonly save: (checkpoint: Checkpoint.Checkpoint, options?: SaveOptions) => Effect.Effect<void, SaveError>
  /** Saves many checkpoints (possibly of several executions) all or nothing, in one round trip where the backend allows. */
  readonly saveMany: (
    checkpoints: ReadonlyArray<Checkpoint.Checkpoint>,
    options?: SaveOptions
  ) => Effect.Effect<void, SaveError>
  /** Loads a checkpoint by id; `CheckpointNotFound` if there is none. */
  readonly load: (
    id: Checkpoint.CheckpointId
  ) => Effect.Effect<Checkpoint.Checkpoint, CheckpointNotFound | CheckpointDecodeError | StoreError>
  /** The checkpoints of an execution, ascending by version (oldest first). An unknown execution has none. */
  readonly list: (
    executionId: Checkpoint.ExecutionId,
    options?: ListOptions
  ) => Effect.Effect<ReadonlyArray<Checkpoint.Checkpoint>, CheckpointDecodeError | StoreError>
  /** The newest checkpoint of an execution, if any. */
  readonly latest: (
    executionId: Checkpoint.ExecutionId
  ) => Effect.Effect<Option.Option<Checkpoint.Checkpoint>, CheckpointDecodeError | StoreError>
  /** Removes one checkpoint and its task writes; removing a missing one is not an error. */
  readonly delete: (id: Checkpoint.CheckpointId) => Effect.Effect<void, StoreError>
  /** Removes every checkpoint, task write and the record of one execution, and of no other; idempotent. */
  readonly clear: (executionId: Checkpoint.ExecutionId) => Effect.Effect<void, StoreError>
  /**
   * Keeps the newest `keep` checkpoints of an execution (0 removes all, the
   * record too) with their task writes, and returns how many were removed.
   */
  readonly prune: (executionId: Checkpoint.ExecutionId, keep: number) => Effect.Effect<number, StoreError>

  /**
   * Saves writes of one task of the checkpoint `checkpointId` (the checkpoint
   * whose `next` scheduled the task), all or nothing. A key the task already
   * saved → `CheckpointConflict` (`"WriteTaken"`); a checkpoint that does not
   * exist → `CheckpointNotFound`.
   */
  readonly saveWrites: (
    checkpointId: Checkpoint.CheckpointId,
    taskId: string,
    writes: ReadonlyArray<{ readonly key: string; readonly value: Checkpoint.Json }>,
    options?: WriteOptions
  ) => Effect.Effect<void, CheckpointNotFound | SaveError>
  /** The task writes of a checkpoint, by `taskId`, then in the order they were saved; none for a missing checkpoint. */
  readonly listWrites: (
    checkpointId: Checkpoint.CheckpointId
  ) => Effect.Effect<ReadonlyArray<TaskWrite>, CheckpointDecodeError | StoreError>

  /** The record of one execution, if it has checkpoints. */
  readonly getExecution: (
    executionId: Checkpoint.ExecutionId
  ) => Effect.Effect<Option.Option<ExecutionRecord>, CheckpointDecodeError | StoreError>
  /** A page of execution records, most recently updated first. */
  readonly listExecutions: (
    options?: ListExecutionsOptions
  ) => Effect.Effect<ExecutionPage, CheckpointDecodeError | StoreError>
  /** Changes an execution record (status, wake-up time, failure, lease) and returns it. */
  readonly updateExecution: (
    executionId: Checkpoint.ExecutionId,
    patch: ExecutionPatch,
    options?: UpdateOptions
  ) => Effect.Effect<ExecutionRecord, ExecutionNotFound | CheckpointConflict | LeaseLost | StoreError>
  /**
   * Renews `owner`'s lease on the execution until the store's now + `ttl`.
   * Refused with `LeaseLost` (nothing changed) unless `owner` holds the lease.
   */
  readonly renew: (
    executionId: Checkpoint.ExecutionId,
    options: { readonly owner: string; readonly ttl: Duration.DurationInput }
  ) => Effect.Effect<ExecutionRecord, ExecutionNotFound | LeaseLost | StoreError>
  /**
   * Removes `owner`'s lease (and sets `status`, when given). Refused with
   * `LeaseLost` (nothing changed) unless `owner` holds the lease.
   */
  readonly release: (
    executionId: Checkpoint.ExecutionId,
    options: { readonly owner: string; readonly status?: ExecutionStatus | undefined }
  ) => Effect.Effect<ExecutionRecord, ExecutionNotFound | LeaseLost | StoreError>
  /**
   * Takes leases on up to `limit` executions that are due — `pending`;
   * `sleeping` with `wakeAt` passed; `running` with an expired lease — and
   * not leased by anyone else: marks them `running`, adds one to `attempts`,
   * and returns them. Atomic: two owners claiming at once never get the same
   * execution.
   */
  readonly claim: (options: ClaimOptions) => Effect.Effect<ReadonlyArray<ExecutionRecord>, StoreError>
  /** Removes executions not updated since `before` (see {@link SweepOptions}) and returns how many. */
  readonly sweep: (options: SweepOptions) => Effect.Effect<number, StoreError>
  /** The store's `ttl` option (what `Retention.sweep` uses when given none), if it has one. */
  readonly ttl: Option.Option<Duration.Duration>
}

/**
 * The checkpoint store service.
 *
 * @since 0.1.0
 * @category tags
 */
export class CheckpointStore extends Context.Tag("effect-checkpoint/CheckpointStore")<CheckpointStore, Service>() {}

// -----------------------------------------------------------------------------
// Encryption at rest
// -----------------------------------------------------------------------------

/**
 * Options of {@link encrypted}.
 *
 * @since 0.2.0
 * @category models
 */
export interface EncryptionOptions {
  /** The key new values are sealed with: 32 bytes. */
  readonly key: Redacted.Redacted<Uint8Array>
  /** Keys of earlier rotations: values sealed with them still open. */
  readonly previousKeys?: ReadonlyArray<Redacted.Redacted<Uint8Array>> | undefined
}

/**
 * Encryption at rest for any store built with `CheckpointBackend.make` (all
 * of this package's stores are): AES-256-GCM over each checkpoint's `state`,
 * `metadata` and `runtime` and over every task write, bound to the execution
 * id, version, checkpoint id and field, so a sealed value copied into another
 * checkpoint does not open, and to the checkpoint's unsealed header (node
 * name, `next`, parent id, timestamp), so an edited header does not open
 * either. A flipped byte or a plaintext value where a sealed one belongs →
 * `CheckpointDecodeError`. Rotate by passing the new key as
 * `key` and the old ones as `previousKeys`: old checkpoints stay readable, new
 * ones are sealed with the new key. Execution records (status, lease,
 * failure) and ids, versions, node names and timestamps are not sealed (see
 * SECURITY.md).
 *
 * @example
 * ```ts
 * import { Redacted } from "effect"
 * import { CheckpointStore } from "effect-checkpoint"
 * import { SqliteStore } from "effect-checkpoint/sqlite"
 *
 * // 32 random bytes, kept in your secret store (shown here as a literal of base64 text).
 * const key = Redacted.make(Buffer.from("q3X4…base64…=", "base64"))
 * const Store = SqliteStore.layer({ filename: "./app.db" }).pipe(CheckpointStore.encrypted({ key }))
 * ```
 *
 * @since 0.2.0
 * @category encryption
 */
export const encrypted = (options: EncryptionOptions) =>
<E, R>(store: Layer.Layer<CheckpointStore, E, R>): Layer.Layer<CheckpointStore, E | InvalidOption, R> =>
  Layer.effect(
    CheckpointStore,
    Effect.gen(function*() {
      const keys = yield* Either.match(checkKeys(options.key, options.previousKeys ?? []), {
        onLeft: Effect.fail,
        onRight: Effect.succeed
      })
      const inner = yield* CheckpointStore
      const built = CheckpointBackend.backendOf(inner)
      if (Option.isNone(built)) {
        return yield* new InvalidOption({
          option: "store",
          message: "encrypted needs a store built with CheckpointBackend.make"
        })
      }
      return CheckpointBackend.make(sealedBackend(built.value.backend, keys), built.value.options)
    })
  ).pipe(Layer.provide(store))
