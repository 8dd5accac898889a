/**
 * Checkpointed runs of a graph. `compileCheckpointable` compiles a graph
 * into a runnable that saves a checkpoint after every superstep to the
 * `CheckpointStore` service, keeps an execution record (status, lease) up to
 * date, and resumes from any checkpoint: after a crash, a failed node, a
 * pause for a human or a timer. `worker` runs executions that are due, so
 * runs finish by themselves after any crash.
 *
 * `Graph` re-exports everything here: `Graph.compileCheckpointable(graph)`
 * and `Graph.worker(runnable)` are the usual way in.
 *
 * @since 0.2.0
 */
import { Cause, Clock, Duration, Effect, Either, Exit, Option, Queue, Stream } from "effect"
import * as Checkpoint from "./Checkpoint.js"
import { type CheckpointConflict, type CheckpointNotFound, ExecutionNotFound, type LeaseLost, type StoreError } from "./CheckpointError.js"
import * as CheckpointStore from "./CheckpointStore.js"
import {
  type CompileOptions,
  DEFAULT_RECURSION_LIMIT,
  type ExecutionFinished,
  type Graph,
  GraphInterrupted,
  GraphSuspended,
  GraphValidationError,
  type InvalidResume,
  type InvalidStep,
  type InvalidUpdate,
  type RecursionLimitExceeded,
  type Update,
  validate
} from "./internal/graph.js"
import type { NodeContext } from "./internal/run/context.js"
import { failureOf, makeEngine, newOwner } from "./internal/run/engine.js"
import { makeResumer } from "./internal/run/resume.js"
import { makeRunner } from "./internal/run/runner.js"
import type { Item, ReadError } from "./internal/run/saver.js"
import { type Claimable, ClaimableTypeId } from "./internal/run/worker.js"

export type { ReadError } from "./internal/run/saver.js"
export { worker, workerLayer, type WorkerOptions } from "./internal/run/worker.js"

// -----------------------------------------------------------------------------
// Configuration
// -----------------------------------------------------------------------------

/**
 * When checkpoints and task writes are saved.
 *
 * - `"async"` (default): the checkpoint of a superstep goes to the run's save
 *   fiber and the next superstep starts at once. Saves land in order, a failed
 *   save stops the run at the next superstep, `invoke` returns only once
 *   every save landed, and before a superstep starts, every checkpoint made
 *   more than `maxSaveLag` earlier has landed (the bound on what a crash can
 *   lose).
 * - `"sync"`: each checkpoint and task write is awaited before the run goes on.
 * - `"exit"`: one save when the run ends — the final state; or, when it stops
 *   early (a failure, a pause, an interrupt), the last good state with `next`
 *   = the tasks to rerun, and the task writes made so far.
 *
 * @since 0.1.0
 * @category models
 */
export type Durability = "async" | "sync" | "exit"

/**
 * Configuration of {@link compileCheckpointable}. The store is not here: it is
 * the `CheckpointStore` service, provided by a layer.
 *
 * @since 0.1.0
 * @category models
 */
export interface CheckpointConfig extends CompileOptions {
  /** Save a checkpoint after every superstep (default `true`). When `false`, the current state is saved every `saveInterval` while a run is going, and `saveCheckpoint` still works. */
  readonly autoSave: boolean
  /** How often a run with `autoSave: false` saves its current state (default 30 seconds). */
  readonly saveInterval: Duration.DurationInput
  /** Keep at most this many checkpoints per execution, pruning the oldest after each run (default 10; 0 keeps all). */
  readonly maxCheckpoints: number
  /** See {@link Durability} (default `"async"`). */
  readonly durability: Durability
  /**
   * `"async"` only: a superstep does not start while a checkpoint made more
   * than this long ago has not landed (default 50 ms). So a crash loses at
   * most the checkpoints of the last `maxSaveLag` before the superstep that
   * was running — fast runs never wait, slow ones rarely do.
   */
  readonly maxSaveLag: Duration.DurationInput
  /**
   * How long a run's lease on its execution lasts (default 30 seconds); every
   * checkpoint saved renews it, and so does every superstep that starts after
   * half of it passed. A run that crashed leaves its execution to a worker
   * (or a `resume`) once the lease expired; `resume(id, { takeOver: true })`
   * does not wait. A node that runs longer than this without saving may have
   * its execution taken over by a worker: its next save then fails with
   * `LeaseLost` and the run stops.
   */
  readonly leaseTtl: Duration.DurationInput
  /** A `Graph.sleep` up to this long waits in process; a longer one suspends the run (default 1 second). */
  readonly sleepInProcess: Duration.DurationInput
}

/**
 * The defaults (langgraphgo's `DefaultCheckpointConfig()` for the first
 * four): autoSave on, saveInterval 30 seconds, maxCheckpoints 10, durability
 * `"async"`, recursionLimit 25, maxSaveLag 50 ms, leaseTtl 30 seconds,
 * sleepInProcess 1 second.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultCheckpointConfig: CheckpointConfig & { readonly recursionLimit: number } = {
  autoSave: true,
  saveInterval: "30 seconds",
  maxCheckpoints: 10,
  durability: "async",
  recursionLimit: DEFAULT_RECURSION_LIMIT,
  maxSaveLag: "50 millis",
  leaseTtl: "30 seconds",
  sleepInProcess: "1 second"
}

// -----------------------------------------------------------------------------
// Models
// -----------------------------------------------------------------------------

/**
 * A checkpoint whose `state` is decoded with the graph's Schema.
 *
 * @since 0.1.0
 * @category models
 */
export interface TypedCheckpoint<S> {
  readonly id: Checkpoint.CheckpointId
  readonly executionId: Checkpoint.ExecutionId
  readonly nodeName: string
  readonly state: S
  readonly metadata: Checkpoint.JsonObject
  readonly timestamp: Date
  readonly version: number
  readonly next: ReadonlyArray<string>
  readonly parentId?: Checkpoint.CheckpointId
}

/**
 * Options of `invoke`, `start` and `resumeFromCheckpoint`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /** The execution to run in (default: the runnable's `executionId`; for a fork, a new one). */
  readonly executionId?: string | undefined
  /** Merged into the metadata of every checkpoint the run saves. */
  readonly metadata?: Checkpoint.JsonObject | undefined
}

/**
 * Options of `resume`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResumeOptions<S> {
  /** Edits the state before the run goes on; the edit is saved as its own checkpoint (`nodeName` `"__update__"`). */
  readonly update?: ((state: S) => S) | undefined
  /** Updating a finished execution: without it, `update` of a finished execution fails with `ExecutionFinished`. */
  readonly allowFinished?: boolean | undefined
  /** The answer to the one pending `Graph.interrupt` (the encoded side of its Schema, as a JSON API would send). */
  readonly value?: unknown
  /** Answers by interrupt id, when several are pending (parallel tasks). */
  readonly values?: { readonly [interruptId: string]: unknown } | undefined
  /**
   * Resume even if another run holds a live lease on the execution (its
   * process died and you do not want to wait for the lease to expire). The
   * other run, if it is in fact alive, gets `LeaseLost` on its next save and
   * stops.
   */
  readonly takeOver?: boolean | undefined
  /** Merged into the metadata of every checkpoint the run saves. */
  readonly metadata?: Checkpoint.JsonObject | undefined
}

/**
 * What a run streams (`stream`, `streamResume`), in causal order.
 *
 * @since 0.2.0
 * @category models
 */
export type RunEvent<S> =
  | { readonly _tag: "TaskStarted"; readonly executionId: string; readonly superstep: number; readonly node: string; readonly taskId: string }
  | {
    readonly _tag: "TaskFinished"
    readonly executionId: string
    readonly superstep: number
    readonly node: string
    readonly taskId: string
    readonly update: Update<S>
    /** `true` when the task's saved update was applied instead of running it again (a resume). */
    readonly replayed: boolean
  }
  | { readonly _tag: "CheckpointSaved"; readonly checkpoint: Checkpoint.Checkpoint }
  | { readonly _tag: "Interrupted"; readonly error: GraphInterrupted }
  | { readonly _tag: "Suspended"; readonly error: GraphSuspended }
  | { readonly _tag: "Finished"; readonly executionId: string; readonly state: S }

/**
 * The failures of a checkpointed run besides its nodes' own errors.
 *
 * @since 0.1.0
 * @category models
 */
export type RunError =
  | GraphValidationError
  | RecursionLimitExceeded
  | GraphInterrupted
  | GraphSuspended
  | InvalidUpdate
  | InvalidStep
  | InvalidResume
  | CheckpointStore.SaveError
  | CheckpointNotFound
  | ReadError

/**
 * A compiled graph that checkpoints every superstep to the `CheckpointStore`
 * it was compiled with. It must not outlive the store layer's scope.
 *
 * Every method that takes an `executionId` defaults to the runnable's own
 * {@link CheckpointableRunnable.executionId}.
 *
 * @since 0.1.0
 * @category models
 */
export interface CheckpointableRunnable<S, E = never, R = never> {
  /** The default execution id, made at compile time. */
  readonly executionId: Checkpoint.ExecutionId
  /**
   * Runs from the entry point with `input` and returns the final state. The
   * input is checkpoint `version` n+1 (`"__input__"`), each superstep adds
   * one. On an execution that already has checkpoints the run appends to it.
   */
  readonly invoke: (input: S, options?: RunOptions) => Effect.Effect<S, E | RunError, R>
  /**
   * `invoke` as a stream of {@link RunEvent}s, ending with `Finished` (whose
   * state is what `invoke` returns), `Interrupted` or `Suspended` (a pause is
   * an event, not a failure); any other failure fails the stream with its
   * typed error. Stopping the stream interrupts the run (its saves land
   * first, as for `invoke`; the execution is `pending` again). Events are
   * buffered without bound: the run never waits for a slow consumer, and no
   * event is dropped. `CheckpointSaved` comes once the checkpoint landed, so
   * with `"async"` durability it may follow the next superstep's
   * `TaskStarted`; every one comes before `Finished`.
   */
  readonly stream: (input: S, options?: RunOptions) => Stream.Stream<RunEvent<S>, E | RunError, R>
  /**
   * Saves `input` as a new execution's first checkpoint, `pending`, and
   * returns its id at once: a worker ({@link worker}) runs it.
   */
  readonly start: (input: S, options?: RunOptions) => Effect.Effect<Checkpoint.ExecutionId, CheckpointStore.SaveError>
  /** Saves `state` as the execution's next checkpoint (`next` defaults to `[]`) and returns it once it landed. */
  readonly saveCheckpoint: (
    nodeName: string,
    state: S,
    options?: RunOptions & { readonly next?: ReadonlyArray<string> | undefined }
  ) => Effect.Effect<TypedCheckpoint<S>, CheckpointStore.SaveError | ReadError>
  /** Loads a checkpoint, its state decoded with the graph's Schema. */
  readonly loadCheckpoint: (id: string) => Effect.Effect<TypedCheckpoint<S>, CheckpointNotFound | ReadError>
  /** The checkpoints of an execution, ascending by version, decoded. */
  readonly listCheckpoints: (
    executionId?: string,
    options?: CheckpointStore.ListOptions
  ) => Effect.Effect<ReadonlyArray<TypedCheckpoint<S>>, ReadError>
  /**
   * Continues a run from a checkpoint and returns the final state. From the
   * latest checkpoint of an execution it continues that execution; from an
   * older one it forks a new execution (first checkpoint: a copy of the
   * source, with `parentId` = the source; every checkpoint carries
   * `metadata.forkedFrom`). From a finished checkpoint it returns the state
   * and runs nothing.
   */
  readonly resumeFromCheckpoint: (
    id: string,
    options?: RunOptions
  ) => Effect.Effect<S, E | RunError | CheckpointNotFound, R>
  /**
   * Continues an execution from its latest checkpoint (crash recovery, after
   * a pause, an interrupt or a timer): no task whose update is saved runs
   * again, no saved step runs again. The resume first claims the execution
   * (its first write, awaited): a concurrent resume gets `CheckpointConflict`
   * or `LeaseLost` before running anything.
   */
  readonly resume: (
    executionId?: string,
    options?: ResumeOptions<S>
  ) => Effect.Effect<S, E | RunError | ExecutionNotFound | ExecutionFinished, R>
  /**
   * `resume` as a stream of {@link RunEvent}s, as {@link stream}: a task whose
   * update was saved gives `TaskFinished` with `replayed: true`; a resume's
   * `__update__` checkpoint gives `CheckpointSaved`; a finished execution
   * gives one `Finished`.
   */
  readonly streamResume: (
    executionId?: string,
    options?: ResumeOptions<S>
  ) => Stream.Stream<RunEvent<S>, E | RunError | ExecutionNotFound | ExecutionFinished, R>
  /** Re-arms a `failed` execution (status `pending`), so a worker runs it again; returns its record. */
  readonly retry: (
    executionId?: string
  ) => Effect.Effect<CheckpointStore.ExecutionRecord, ExecutionNotFound | CheckpointConflict | LeaseLost | ReadError>
  /** The execution's record (status, lease, failure…), if it has checkpoints. */
  readonly getExecution: (
    executionId?: string
  ) => Effect.Effect<Option.Option<CheckpointStore.ExecutionRecord>, ReadError>
  /** Removes the checkpoints of one execution (and of no other). */
  readonly clearCheckpoints: (executionId?: string) => Effect.Effect<void, StoreError>
}
const newExecution = { version: 0, id: undefined } as const

// -----------------------------------------------------------------------------
// compileCheckpointable
// -----------------------------------------------------------------------------

/**
 * Checks the graph and compiles it into a {@link CheckpointableRunnable} on the
 * `CheckpointStore` service, which it reads once and keeps.
 *
 * @example
 * ```ts
 * const runnable = yield* Graph.compileCheckpointable(graph, { durability: "sync", maxCheckpoints: 0 })
 * ```
 *
 * @since 0.1.0
 * @category compile
 */
export const compileCheckpointable = <S, I, E, R>(
  graph: Graph<S, I, E, R>,
  config?: Partial<CheckpointConfig>
): Effect.Effect<
  CheckpointableRunnable<S, E, Exclude<R, NodeContext>>,
  GraphValidationError,
  CheckpointStore.CheckpointStore
> =>
  Effect.gen(function*() {
    const options: CheckpointConfig = { ...defaultCheckpointConfig, ...config }
    const compiled = yield* validate(graph, options)
    const durations = yield* Effect.try({
      try: () => ({
        saveInterval: Duration.decode(options.saveInterval),
        maxSaveLag: Duration.toMillis(Duration.decode(options.maxSaveLag)),
        leaseTtl: Duration.decode(options.leaseTtl),
        sleepInProcess: Duration.toMillis(Duration.decode(options.sleepInProcess))
      }),
      catch: (e) => new GraphValidationError({ message: `Invalid configuration: ${String(e)}`, issues: [String(e)] })
    })
    const store = yield* CheckpointStore.CheckpointStore
    const defaultExecutionId = yield* Checkpoint.generateExecutionId
    const engine = makeEngine<S>({ options, compiled, durations, store, defaultExecutionId })
    const runner = makeRunner(engine)
    const resumer = makeResumer(engine, runner)
    const {
      encode,
      executionIdAt,
      executionIdOf,
      inputBoundary,
      inputDraft,
      known,
      makeCheckpoint,
      materialize,
      metadataOf,
      remember,
      typed
    } = engine
    const { execute, newRun } = runner
    const { resumeFromCheckpoint, resumeWith, runClaimed } = resumer
    const { active } = engine

    const invokeWith = (
      input: S,
      runOptions: RunOptions | undefined,
      events: ((event: RunEvent<S>) => void) | undefined
    ): Effect.Effect<S, E | RunError, any> =>
      Effect.clockWith((clock) => {
        // Synchronous up to the run: this is every invoke's path.
        const executionId = executionIdAt(runOptions?.executionId)
        if (Either.isLeft(executionId)) return Effect.fail(executionId.left)
        const now = clock.unsafeCurrentTimeMillis()
        const boundary = inputBoundary(input, now)
        if (Either.isLeft(boundary)) return Effect.fail(boundary.left)
        // Nothing is read first: the run assumes the execution is where this runnable last left it (or new),
        // and its first write checks that; if not, the queue reads it and renumbers (rebase).
        const last = known.get(executionId.right) ?? newExecution
        return execute(newRun({
          executionId: executionId.right,
          owner: newOwner(now),
          metadata: metadataOf(runOptions),
          mode: "direct",
          leaseTtl: durations.leaseTtl,
          boundary: boundary.right,
          start: last,
          chain: { version: last.version, parentId: last.id },
          rebase: true,
          emit: events,
          now
        }))
      })

    const saveCheckpoint = (
      nodeName: string,
      state: S,
      saveOptions?: RunOptions & { readonly next?: ReadonlyArray<string> | undefined }
    ): Effect.Effect<TypedCheckpoint<S>, CheckpointStore.SaveError | ReadError> =>
      Effect.gen(function*() {
        const executionId = yield* executionIdOf(saveOptions?.executionId)
        const encoded = yield* encode(state, nodeName)
        const next = saveOptions?.next ?? []
        const metadata = metadataOf(saveOptions)
        const running = active.get(executionId)
        if (running !== undefined) {
          // A save from inside a running node: it joins the run's ordered saves.
          const cp = yield* makeCheckpoint(running.chain, executionId, nodeName, encoded, next, { ...running.metadata, ...metadata }, undefined)
          const now = yield* Clock.currentTimeMillis
          // The run goes on after it: the execution stays running, the run keeps its lease.
          const item: Item = { _tag: "Checkpoint", checkpoint: cp, execution: { status: "running", lease: { owner: running.owner, ttl: running.leaseTtl } } }
          // A checkpoint write fails only as a save does (never CheckpointNotFound, which is for task writes).
          yield* running.saver.enqueue(item, now, true) as Effect.Effect<void, CheckpointStore.SaveError | ReadError>
          // The queue may have renumbered it (a rebase): what landed is the item's checkpoint now.
          return yield* typed(item.checkpoint)
        }
        const latest = yield* store.latest(executionId)
        const chain = {
          version: Option.match(latest, { onNone: () => 0, onSome: (c) => c.version }),
          parentId: Option.getOrUndefined(Option.map(latest, (c) => c.id))
        }
        const cp = yield* makeCheckpoint(chain, executionId, nodeName, encoded, next, metadata, undefined)
        yield* store.save(cp, {
          expect: { executionId, latestVersion: cp.version - 1, ...(cp.parentId === undefined ? {} : { latestCheckpointId: cp.parentId }) }
        })
        remember(executionId, cp.version, cp.id)
        return yield* typed(cp)
      })

    const start = (input: S, runOptions?: RunOptions) =>
      Effect.gen(function*() {
        const executionId = runOptions?.executionId === undefined
          ? yield* Checkpoint.generateExecutionId
          : yield* executionIdOf(runOptions.executionId)
        const chain = { version: 0, parentId: undefined as Checkpoint.CheckpointId | undefined }
        const cp = materialize(chain, executionId, metadataOf(runOptions), yield* inputDraft(input))
        yield* store.save(cp, { expect: { executionId, latestVersion: 0 }, execution: { status: "pending" } })
        remember(executionId, cp.version, cp.id)
        return executionId
      })

    const retry = (executionIdRaw?: string) =>
      Effect.gen(function*() {
        const executionId = yield* executionIdOf(executionIdRaw)
        const record = yield* store.getExecution(executionId)
        if (Option.isNone(record)) return yield* new ExecutionNotFound({ executionId })
        if (record.value.status !== "failed") return record.value
        return yield* store.updateExecution(
          executionId,
          { status: "pending" },
          { expect: { latestVersion: record.value.latestVersion, latestCheckpointId: record.value.latestCheckpointId } }
        )
      })

    // --- streams ---------------------------------------------------------------

    const streamOf = <A>(
      run: (events: (event: RunEvent<S>) => void) => Effect.Effect<A, any, any>
    ): Stream.Stream<RunEvent<S>, any, any> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const queue = yield* Queue.unbounded<Exit.Exit<RunEvent<S>, Option.Option<unknown>>>()
        const push = (event: RunEvent<S>) => {
          queue.unsafeOffer(Exit.succeed(event))
        }
        const offer = (event: RunEvent<S>) => Queue.offer(queue, Exit.succeed(event))
        yield* Effect.forkScoped(
          run(push).pipe(
            Effect.matchCauseEffect({
              onSuccess: () => Queue.offer(queue, Exit.fail(Option.none())),
              onFailure: (cause) => {
                const error = Option.getOrUndefined(Cause.failureOption(cause))
                if (error instanceof GraphInterrupted) {
                  return Effect.zipRight(offer({ _tag: "Interrupted", error }), Queue.offer(queue, Exit.fail(Option.none())))
                }
                if (error instanceof GraphSuspended) {
                  return Effect.zipRight(offer({ _tag: "Suspended", error }), Queue.offer(queue, Exit.fail(Option.none())))
                }
                return Queue.offer(queue, Exit.failCause(Cause.map(cause, Option.some)))
              }
            })
          )
        )
        return Stream.repeatEffectOption(Effect.flatten(Queue.take(queue)))
      }))

    const runnable: CheckpointableRunnable<S, E, any> & { readonly [ClaimableTypeId]: Claimable<E, any> } = {
      executionId: defaultExecutionId,
      invoke: (input, runOptions) => invokeWith(input, runOptions, undefined),
      stream: (input, runOptions) => streamOf((events) => invokeWith(input, runOptions, events)),
      start,
      saveCheckpoint,
      loadCheckpoint: (id) => Effect.flatMap(Effect.flatMap(Checkpoint.makeCheckpointId(id), store.load), typed),
      listCheckpoints: (executionId, listOptions) =>
        Effect.flatMap(executionIdOf(executionId), (e) =>
          Effect.flatMap(store.list(e, listOptions), (cps) => Effect.forEach(cps, typed))),
      resumeFromCheckpoint,
      resume: (executionId, resumeOptions) => resumeWith(executionId, resumeOptions, undefined),
      streamResume: (executionId, resumeOptions) => streamOf((events) => resumeWith(executionId, resumeOptions, events)),
      retry,
      getExecution: (executionId) => Effect.flatMap(executionIdOf(executionId), store.getExecution),
      clearCheckpoints: (executionId) =>
        Effect.flatMap(executionIdOf(executionId), (e) => Effect.zipRight(Effect.sync(() => known.delete(e)), store.clear(e))),
      [ClaimableTypeId]: {
        runClaimed,
        // One conditional write: a reader never sees `failed` without its failure, and an owner who lost the
        // execution to another live lease changes nothing.
        markFailed: (executionId, owner, error) =>
          Effect.ignore(store.updateExecution(executionId, { status: "failed", failure: failureOf(error), lease: null }, { owner }))
      }
    }
    return runnable as CheckpointableRunnable<S, E, Exclude<R, NodeContext>>
  })

