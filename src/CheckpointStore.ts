/**
 * The `CheckpointStore` service: where checkpoints are saved, listed, loaded
 * and removed. One interface, one Tag, one `make`, and one Layer per backend
 * (`MemoryStore`, `FileStore`, `SqliteStore`, `PostgresStore`, `RedisStore`).
 *
 * @since 0.1.0
 */
import { Context, Effect, Option } from "effect"
import * as Checkpoint from "./Checkpoint.js"
import {
  CheckpointConflict,
  type CheckpointDecodeError,
  CheckpointEncodeError,
  CheckpointNotFound,
  type CheckpointStoreError,
  type InvalidIdentifier
} from "./CheckpointError.js"
import { checkId } from "./internal/identifier.js"


/**
 * The backend's own failures: it failed, or an identifier was refused.
 *
 * @since 0.1.0
 * @category models
 */
export type StoreError = CheckpointStoreError | InvalidIdentifier

/**
 * The failures of a save.
 *
 * @since 0.1.0
 * @category models
 */
export type SaveError = CheckpointConflict | CheckpointEncodeError | StoreError

/**
 * One execution as {@link CheckpointStore} `listExecutions` reports it.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExecutionSummary {
  readonly executionId: Checkpoint.ExecutionId
  /** The version of the execution's newest checkpoint. */
  readonly latestVersion: number
  /** The id of the execution's newest checkpoint. */
  readonly latestCheckpointId: Checkpoint.CheckpointId
  /** The newest checkpoint's timestamp. */
  readonly updatedAt: Date
  /** `true` when the newest checkpoint names nodes still to run (`next` is not empty). */
  readonly pending: boolean
}

/**
 * Options of {@link CheckpointStore} `list`: it pages forward through an
 * execution, returning the first `limit` checkpoints with
 * `version > afterVersion`. A `limit` of 0 or less returns nothing; a missing
 * `limit` returns all.
 *
 * @since 0.1.0
 * @category models
 */
export interface ListOptions {
  readonly afterVersion?: number | undefined
  readonly limit?: number | undefined
}

/**
 * The condition of a conditional save (optimistic concurrency): the newest
 * checkpoint of `executionId` in the store must have version `latestVersion`
 * (`0`: the execution has no checkpoints).
 *
 * @since 0.1.0
 * @category models
 */
export interface Expectation {
  readonly executionId: Checkpoint.ExecutionId
  readonly latestVersion: number
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
   * otherwise fail with `CheckpointConflict` and write nothing. The check and
   * the write are one atomic step (on every store but File, where another
   * process may write in between — its slots still never let two checkpoints
   * take one version). This is how a run appends to an execution without
   * reading it first.
   */
  readonly expect?: Expectation | undefined
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
  /** Saves one checkpoint. */
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
  /** Every execution with at least one checkpoint, most recently updated first; `pendingOnly` keeps the unfinished ones. */
  readonly listExecutions: (
    options?: { readonly pendingOnly?: boolean | undefined }
  ) => Effect.Effect<ReadonlyArray<ExecutionSummary>, CheckpointDecodeError | StoreError>
  /** Removes one checkpoint; removing a missing one is not an error. */
  readonly delete: (id: Checkpoint.CheckpointId) => Effect.Effect<void, StoreError>
  /** Removes every checkpoint of one execution and of no other; idempotent. */
  readonly clear: (executionId: Checkpoint.ExecutionId) => Effect.Effect<void, StoreError>
  /** Keeps the newest `keep` checkpoints of an execution (0 removes all) and returns how many were removed. */
  readonly prune: (executionId: Checkpoint.ExecutionId, keep: number) => Effect.Effect<number, StoreError>
}

/**
 * The checkpoint store service. Provide it with one of the store layers:
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CheckpointStore, MemoryStore } from "effect-checkpoint"
 *
 * const program = Effect.gen(function*() {
 *   const store = yield* CheckpointStore.CheckpointStore
 *   return yield* store.listExecutions()
 * })
 * Effect.runPromise(program.pipe(Effect.provide(MemoryStore.layer)))
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class CheckpointStore extends Context.Tag("effect-checkpoint/CheckpointStore")<CheckpointStore, Service>() {}

/**
 * What a backend implements: only the primitives that differ between stores.
 * {@link make} checks every id and checkpoint, encodes once, normalises
 * options, and derives the rest.
 *
 * Every effect here gets ids that are already valid and options that are
 * already normalised.
 *
 * @since 0.1.0
 * @category constructors
 */
export interface Backend {
  /**
   * Writes checkpoints all or nothing. A taken `id` or `(executionId, version)` → `CheckpointConflict`,
   * nothing written. With `expect`, also `CheckpointConflict` (nothing written) unless the newest version of
   * `expect.executionId` is `expect.latestVersion` (0 = none) — checked atomically with the write.
   */
  readonly insert: (
    checkpoints: ReadonlyArray<Checkpoint.Encoded>,
    expect: Expectation | undefined
  ) => Effect.Effect<void, CheckpointConflict | CheckpointEncodeError | CheckpointStoreError>
  /** Writes one checkpoint (a faster path than `insert([one])`, when the backend has one). */
  readonly insertOne?: (
    checkpoint: Checkpoint.Encoded,
    expect: Expectation | undefined
  ) => Effect.Effect<void, CheckpointConflict | CheckpointEncodeError | CheckpointStoreError>
  readonly load: (
    id: Checkpoint.CheckpointId
  ) => Effect.Effect<Option.Option<Checkpoint.Checkpoint>, CheckpointDecodeError | CheckpointStoreError>
  /** Ascending by version; `afterVersion` is a number (maybe fractional), `limit` a positive integer or undefined. */
  readonly list: (
    executionId: Checkpoint.ExecutionId,
    afterVersion: number,
    limit: number | undefined
  ) => Effect.Effect<ReadonlyArray<Checkpoint.Checkpoint>, CheckpointDecodeError | CheckpointStoreError>
  readonly latest: (
    executionId: Checkpoint.ExecutionId
  ) => Effect.Effect<Option.Option<Checkpoint.Checkpoint>, CheckpointDecodeError | CheckpointStoreError>
  /** One summary per execution, in any order. */
  readonly listExecutions: Effect.Effect<ReadonlyArray<ExecutionSummary>, CheckpointDecodeError | CheckpointStoreError>
  readonly delete: (id: Checkpoint.CheckpointId) => Effect.Effect<void, CheckpointStoreError>
  readonly clear: (executionId: Checkpoint.ExecutionId) => Effect.Effect<void, CheckpointStoreError>
  /** `keep` is a non-negative integer. */
  readonly prune: (executionId: Checkpoint.ExecutionId, keep: number) => Effect.Effect<number, CheckpointStoreError>
}

const guard = <A, E>(
  kind: "CheckpointId" | "ExecutionId",
  value: string,
  then: Effect.Effect<A, E>
): Effect.Effect<A, E | InvalidIdentifier> => {
  const error = checkId(kind, value)
  return error === undefined ? then : Effect.fail(error)
}

/** Two checkpoints of one batch that collide with each other. */
const batchConflict = (encoded: ReadonlyArray<Checkpoint.Encoded>): CheckpointConflict | undefined => {
  const ids = new Set<string>()
  const slots = new Set<string>()
  for (const { checkpoint: cp } of encoded) {
    const slot = `${cp.executionId}\u0000${cp.version}`
    if (ids.has(cp.id) || slots.has(slot)) {
      return new CheckpointConflict({ executionId: cp.executionId, version: cp.version, id: cp.id })
    }
    ids.add(cp.id)
    slots.add(slot)
  }
  return undefined
}

/** Why an expectation cannot be checked, as the typed error, or `undefined`. */
const expectationProblem = (expect: Expectation | undefined): InvalidIdentifier | CheckpointEncodeError | undefined => {
  if (expect === undefined) return undefined
  const idError = checkId("ExecutionId", expect.executionId)
  if (idError !== undefined) return idError
  const v = expect.latestVersion
  return Number.isInteger(v) && v >= 0 && v <= Checkpoint.MAX_VERSION
    ? undefined
    : new CheckpointEncodeError({
      message: `expect.latestVersion must be an integer from 0 to ${Checkpoint.MAX_VERSION}, got ${String(v)}`
    })
}

/**
 * The conflict a backend reports when an expectation does not hold.
 *
 * @since 0.1.0
 * @category constructors
 */
export const expectationFailed = (
  expect: Expectation,
  actualLatestVersion?: number
): CheckpointConflict =>
  new CheckpointConflict({
    executionId: expect.executionId,
    version: expect.latestVersion + 1,
    expectedLatestVersion: expect.latestVersion,
    ...(actualLatestVersion === undefined ? {} : { actualLatestVersion })
  })

/** Newest first, then by execution id, so every store lists executions in the same order. */
const byRecency = (a: ExecutionSummary, b: ExecutionSummary): number =>
  b.updatedAt.getTime() - a.updatedAt.getTime() || (a.executionId < b.executionId ? -1 : a.executionId > b.executionId ? 1 : 0)

/**
 * Builds the full store from a backend's primitives. It refuses bad ids and
 * checkpoints before the backend sees them (so a checkpoint built with
 * validation off or an id cast from a raw string still gets
 * `InvalidIdentifier`), encodes each checkpoint once, turns a missing
 * checkpoint into `CheckpointNotFound`, normalises `list`/`prune` options and
 * orders `listExecutions`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (backend: Backend): Service => {
  const insertOne = backend.insertOne ??
    ((e: Checkpoint.Encoded, expect: Expectation | undefined) => backend.insert([e], expect))
  return {
    save: (cp, options) =>
      Effect.suspend(() => {
        const problem = expectationProblem(options?.expect)
        return problem !== undefined
          ? Effect.fail(problem)
          : Effect.flatMap(Checkpoint.toEncoded(cp), (e) => insertOne(e, options?.expect))
      }),
    saveMany: (cps, options) =>
      Effect.suspend(() => {
        const problem = expectationProblem(options?.expect)
        if (problem !== undefined) return Effect.fail(problem)
        if (cps.length === 0) return Effect.void
        return Effect.flatMap(Effect.forEach(cps, Checkpoint.toEncoded), (encoded) => {
          const conflict = batchConflict(encoded)
          return conflict === undefined ? backend.insert(encoded, options?.expect) : Effect.fail(conflict)
        })
      }),
    load: (id) =>
      guard(
        "CheckpointId",
        id,
        Effect.flatMap(backend.load(id), Option.match({
          onNone: () => Effect.fail(new CheckpointNotFound({ id })),
          onSome: Effect.succeed
        }))
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
          : backend.list(executionId, afterVersion, limit === undefined || limit === Infinity ? undefined : limit)
      )
    },
    latest: (executionId) => guard("ExecutionId", executionId, backend.latest(executionId)),
    listExecutions: (options) =>
      Effect.map(backend.listExecutions, (all) =>
        (options?.pendingOnly === true ? all.filter((s) => s.pending) : [...all]).sort(byRecency)),
    delete: (id) => guard("CheckpointId", id, backend.delete(id)),
    clear: (executionId) => guard("ExecutionId", executionId, backend.clear(executionId)),
    prune: (executionId, keep) =>
      guard(
        "ExecutionId",
        executionId,
        backend.prune(executionId, Number.isNaN(keep) ? 0 : Math.min(Checkpoint.MAX_VERSION, Math.max(0, Math.floor(keep))))
      )
  }
}

/**
 * The summary of an execution from its newest checkpoint.
 *
 * @since 0.1.0
 * @category constructors
 */
export const summarize = (latest: Checkpoint.Checkpoint): ExecutionSummary => ({
  executionId: latest.executionId,
  latestVersion: latest.version,
  latestCheckpointId: latest.id,
  updatedAt: latest.timestamp,
  pending: latest.next.length > 0
})
