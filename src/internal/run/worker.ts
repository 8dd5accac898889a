/**
 * The worker: claims due executions of a runnable and runs them to their end,
 * renewing its leases while they run, retrying failures with a schedule, and
 * giving its leases back when it is interrupted.
 *
 * @internal
 */
import { Cause, Clock, Duration, Effect, Exit, Fiber, Layer, Option, Queue, type Schedule } from "effect"
import type * as Checkpoint from "../../Checkpoint.js"
import type { ExecutionNotFound, StoreError } from "../../CheckpointError.js"
import * as CheckpointStore from "../../CheckpointStore.js"
import type { CheckpointableRunnable, RunError } from "../../CheckpointedRunnable.js"
import { GraphInterrupted, GraphSuspended } from "../graph.js"
import { idProblem, invalid, isValidId } from "../identifier.js"
import { uuidv7 } from "../uuid.js"

/** What the worker needs of a runnable. */
export interface Claimable<E, R> {
  readonly runClaimed: (
    executionId: Checkpoint.ExecutionId,
    owner: string,
    leaseTtl: Duration.Duration
  ) => Effect.Effect<unknown, E | RunError | ExecutionNotFound, R>
  readonly markFailed: (
    executionId: Checkpoint.ExecutionId,
    owner: string,
    error: unknown
  ) => Effect.Effect<void>
}

export const ClaimableTypeId: unique symbol = Symbol.for("effect-checkpoint/CheckpointedRunnable/Claimable")

const claimable = <S, E, R>(runnable: CheckpointableRunnable<S, E, R>): Claimable<E, R> =>
  (runnable as unknown as { readonly [ClaimableTypeId]: Claimable<E, R> })[ClaimableTypeId]


/**
 * Options of {@link worker}.
 *
 * @since 0.2.0
 * @category models
 */
export interface WorkerOptions {
  /** The worker's name in leases (`[A-Za-z0-9._:-]`, 1–128); default a fresh `worker-<uuid>`. */
  readonly owner?: string | undefined
  /** How many executions it runs at once (default 10). */
  readonly concurrency?: number | undefined
  /** How long its leases last; it renews them at a third of that while running (default 30 seconds). */
  readonly leaseTtl?: Duration.DurationInput | undefined
  /** How often it looks for due executions when it has room (default 1 second). */
  readonly pollInterval?: Duration.DurationInput | undefined
  /**
   * How a failing run is retried (default: no retry). When the schedule gives
   * up, the execution is `failed` (with the error) until `runnable.retry`.
   */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
}

/**
 * Runs due executions of `runnable` until interrupted: claims them (pending
 * ones, sleeping ones whose time came, running ones whose lease expired —
 * never interrupted, done or failed ones), resumes each, renews its lease
 * while it runs, retries failures with `retry`, and marks the execution
 * `failed` when that gives up. Interrupting the worker lets in-flight saves
 * land and releases its leases (the executions go back to `pending`), so
 * another worker takes over at once.
 *
 * @example
 * ```ts
 * const program = Effect.gen(function*() {
 *   const runnable = yield* Graph.compileCheckpointable(graph)
 *   yield* Graph.worker(runnable, { concurrency: 4, retry: Schedule.recurs(3) })
 * })
 * ```
 *
 * @since 0.2.0
 * @category worker
 */
export const worker = <S, E, R>(
  runnable: CheckpointableRunnable<S, E, R>,
  options: WorkerOptions = {}
): Effect.Effect<never, StoreError, R | CheckpointStore.CheckpointStore> =>
  Effect.gen(function*() {
    const store = yield* CheckpointStore.CheckpointStore
    const engine = claimable(runnable)
    const owner = options.owner ?? `worker-${uuidv7(yield* Clock.currentTimeMillis)}`
    if (!isValidId(owner)) return yield* Effect.fail(invalid("owner", owner, idProblem(owner) ?? "is not a valid identifier"))
    const concurrency = Math.max(1, Math.floor(options.concurrency ?? 10))
    const leaseTtl = Duration.decode(options.leaseTtl ?? "30 seconds")
    const pollInterval = Duration.decode(options.pollInterval ?? "1 second")
    const renewEvery = Duration.millis(Math.max(1, Duration.toMillis(leaseTtl) / 3))
    const running = new Set<string>()
    const scope = yield* Effect.scope
    const wake = yield* Queue.sliding<void>(1)

    /** Runs one claimed execution to its end: retries, renewals, the record at the end. */
    const process = (executionId: Checkpoint.ExecutionId) =>
      Effect.gen(function*() {
        const renewer = yield* Effect.fork(
          Effect.forever(Effect.zipRight(Effect.sleep(renewEvery), store.renew(executionId, { owner, ttl: leaseTtl })))
        )
        const attempt = engine.runClaimed(executionId, owner, leaseTtl)
        const retried = options.retry === undefined
          ? attempt
          : Effect.retry(attempt, {
            schedule: options.retry,
            while: (e) => !(e instanceof GraphInterrupted || e instanceof GraphSuspended || isOwnershipError(e))
          })
        // The renewer stops the run when it loses the lease (fencing): the run's next save would fail anyway.
        const outcome = yield* Effect.exit(Effect.raceFirst(
          retried,
          Effect.flatMap(Fiber.join(renewer), () => Effect.never)
        ))
        yield* Fiber.interrupt(renewer)
        if (Exit.isSuccess(outcome)) return
        const cause = outcome.cause
        if (Cause.isInterruptedOnly(cause)) {
          yield* Effect.ignore(store.release(executionId, { owner, status: "pending" }))
          return
        }
        const error = Option.getOrUndefined(Cause.failureOption(cause))
        if (error instanceof GraphInterrupted || error instanceof GraphSuspended || isOwnershipError(error)) return
        yield* engine.markFailed(executionId, owner, error ?? Cause.squash(cause))
      }).pipe(
        Effect.ensuring(Effect.sync(() => {
          running.delete(executionId)
          Effect.runFork(Queue.offer(wake, undefined))
        }))
      )

    const poll: Effect.Effect<void, StoreError, R> = Effect.gen(function*() {
      const room = concurrency - running.size
      if (room <= 0) return
      const claimed = yield* store.claim({ owner, ttl: leaseTtl, limit: room })
      for (const record of claimed) {
        running.add(record.executionId)
        yield* Effect.forkIn(process(record.executionId), scope)
      }
    })

    return yield* Effect.forever(Effect.zipRight(
      poll,
      Effect.race(Effect.sleep(pollInterval), Queue.take(wake))
    ))
  }).pipe(Effect.scoped) as Effect.Effect<never, StoreError, R | CheckpointStore.CheckpointStore>

const isOwnershipError = (e: unknown): boolean =>
  typeof e === "object" && e !== null && "_tag" in e &&
  (e._tag === "LeaseLost" || (e._tag === "CheckpointConflict" && (e as { reason?: unknown }).reason === "ExpectationFailed"))

/**
 * {@link worker} as a Layer: the worker runs in the layer's scope, in the
 * background, until the scope closes (which interrupts it: in-flight saves
 * land and leases are released).
 *
 * @since 0.2.0
 * @category worker
 */
export const workerLayer = <S, E, R>(
  runnable: CheckpointableRunnable<S, E, R>,
  options: WorkerOptions = {}
): Layer.Layer<never, never, R | CheckpointStore.CheckpointStore> =>
  Layer.scopedDiscard(Effect.forkScoped(Effect.ignoreLogged(worker(runnable, options))))

