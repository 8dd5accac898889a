/**
 * Checkpointed runs of a graph: `compileCheckpointable` compiles a graph into
 * a runnable that saves a checkpoint after every step to the `CheckpointStore`
 * service and can resume from any of them. `Graph` re-exports everything here,
 * so `Graph.compileCheckpointable(graph, config)` is the usual way in.
 *
 * @since 0.2.0
 */
import { Cause, Clock, Duration, Effect, Either, Exit, Fiber, Option, ParseResult, Schema } from "effect"
import * as Checkpoint from "./Checkpoint.js"
import { CheckpointDecodeError, CheckpointEncodeError, type CheckpointNotFound, type StoreError } from "./CheckpointError.js"
import * as CheckpointStore from "./CheckpointStore.js"
import {
  type CompileOptions,
  DEFAULT_RECURSION_LIMIT,
  END,
  ExecutionNotFound,
  type Graph,
  GraphInterrupted,
  GraphValidationError,
  INPUT,
  RecursionLimitExceeded,
  route,
  UPDATE,
  validate
} from "./internal/graph.js"
import { checkId } from "./internal/identifier.js"
import { type Chain, isSaveFailed, makeSaver, type ReadError, saveFailed, type Saver } from "./internal/run/saver.js"
import { uuidv7 } from "./internal/uuid.js"

export type { ReadError } from "./internal/run/saver.js"

/** How many executions a runnable remembers the position of (see `known` in `compileCheckpointable`). */
const KNOWN_EXECUTIONS = 1024

/**
 * How checkpoints are saved.
 *
 * - `"async"` (default): after each node, the checkpoint is handed to a save
 *   fiber and the next node starts at once. Saves of a run land in version
 *   order (pending ones are written together), a failed save stops the run at
 *   the next step boundary, and `invoke` returns only after every save landed.
 * - `"sync"`: each save is awaited before the next node starts.
 * - `"exit"`: one save when the run ends: the final state, or, if a node
 *   failed or the run was interrupted, the last good state with `next` = the
 *   node to run again.
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
  /** Save a checkpoint after every step (default `true`). When `false`, the current state is saved every `saveInterval` while a run is going, and `saveCheckpoint` still works. */
  readonly autoSave: boolean
  /** How often a run with `autoSave: false` saves its current state (default 30 seconds). */
  readonly saveInterval: Duration.DurationInput
  /** Keep at most this many checkpoints per execution, pruning the oldest after each run (default 10; 0 keeps all). */
  readonly maxCheckpoints: number
  /** See {@link Durability} (default `"async"`). */
  readonly durability: Durability
}

/**
 * The defaults (the reference's `DefaultCheckpointConfig()`): autoSave on,
 * saveInterval 30 seconds, maxCheckpoints 10, durability `"async"`,
 * recursionLimit 25.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultCheckpointConfig: CheckpointConfig & { readonly recursionLimit: number } = {
  autoSave: true,
  saveInterval: "30 seconds",
  maxCheckpoints: 10,
  durability: "async",
  recursionLimit: DEFAULT_RECURSION_LIMIT
}

// -----------------------------------------------------------------------------
// Checkpointable runnable
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
 * Options of `invoke` and `resumeFromCheckpoint`.
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
  /** Edits the state before the run continues; the edit is saved as its own checkpoint (`nodeName` `"__update__"`). */
  readonly update?: ((state: S) => S) | undefined
  /** Merged into the metadata of every checkpoint the run saves. */
  readonly metadata?: Checkpoint.JsonObject | undefined
}

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
  | CheckpointStore.SaveError
  | ReadError

/**
 * A compiled graph that checkpoints every step to the `CheckpointStore` it
 * was compiled with. It must not outlive the store layer's scope.
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
   * input is checkpoint `version` n+1 (`"__input__"`), each node adds one. On
   * an execution that already has checkpoints the run appends to it.
   */
  readonly invoke: (input: S, options?: RunOptions) => Effect.Effect<S, E | RunError, R>
  /** The reference's name for {@link CheckpointableRunnable.invoke}. */
  readonly invokeWithConfig: (input: S, options?: RunOptions) => Effect.Effect<S, E | RunError, R>
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
   * Continues a run from a checkpoint: runs its `next` nodes on to `END`,
   * saving as it goes, and returns the final state. From the latest
   * checkpoint of an execution it continues that execution; from an older one
   * it forks a new execution (first checkpoint: a copy of the source, with
   * `parentId` = the source; every checkpoint carries `metadata.forkedFrom`).
   * From a finished checkpoint it returns the state and runs nothing.
   */
  readonly resumeFromCheckpoint: (
    id: string,
    options?: RunOptions
  ) => Effect.Effect<S, E | RunError | CheckpointNotFound, R>
  /**
   * Continues an execution from its latest checkpoint (crash recovery, or
   * after a pause): no node whose checkpoint exists runs again.
   * `ExecutionNotFound` if the execution has no checkpoints.
   */
  readonly resume: (
    executionId?: string,
    options?: ResumeOptions<S>
  ) => Effect.Effect<S, E | RunError | ExecutionNotFound, R>
  /** Removes the checkpoints of one execution (and of no other). */
  readonly clearCheckpoints: (executionId?: string) => Effect.Effect<void, StoreError>
}

/** Where a run stands: the last completed step, its state, and what runs next. */
interface Position<S> {
  readonly nodeName: string
  readonly state: S
  readonly next: ReadonlyArray<string>
  /** Already saved as a checkpoint. */
  readonly saved: boolean
}

/** One run (invoke or resume) of one execution. */
interface Run<S> extends Chain {
  readonly metadata: Checkpoint.JsonObject
  readonly saver: Saver
  position: Position<S>
}

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
): Effect.Effect<CheckpointableRunnable<S, E, R>, GraphValidationError, CheckpointStore.CheckpointStore> =>
  Effect.gen(function*() {
    const options: CheckpointConfig = { ...defaultCheckpointConfig, ...config }
    const compiled = yield* validate(graph, options)
    const store = yield* CheckpointStore.CheckpointStore
    const defaultExecutionId = yield* Checkpoint.generateExecutionId
    const interruptBefore = new Set(options.interruptBefore ?? [])
    const interruptAfter = new Set(options.interruptAfter ?? [])
    const saveInterval = Duration.decode(options.saveInterval)
    const maxCheckpoints = Math.max(0, Math.floor(options.maxCheckpoints))
    const encodeState = Schema.encodeEither(graph.schema)
    const decodeState = Schema.decodeUnknownEither(graph.schema)
    /**
     * Where this runnable last left each execution (newest version and id), so
     * `invoke` need not read the store first. A stale entry costs one failed
     * conditional write and a read, never a wrong number. Bounded (oldest out).
     */
    const known = new Map<string, { readonly version: number; readonly id: Checkpoint.CheckpointId | undefined }>()
    const remember = (executionId: string, version: number, id: Checkpoint.CheckpointId | undefined) => {
      known.delete(executionId)
      known.set(executionId, { version, id })
      if (known.size > KNOWN_EXECUTIONS) known.delete(known.keys().next().value!)
    }
    /** The runs going on now, by execution, so a manual save inside a node joins its run's ordered saves. */
    const active = new Map<string, Run<S>>()
    /** Orders failures of a run in time. */
    let tick = 0
    const clockTick = () => ++tick

    const executionIdOf = (raw: string | undefined): Effect.Effect<Checkpoint.ExecutionId, StoreError> => {
      const value = raw ?? defaultExecutionId
      const error = checkId("ExecutionId", value)
      return error === undefined ? Effect.succeed(value as Checkpoint.ExecutionId) : Effect.fail(error)
    }

    const encode = (state: S): Effect.Effect<Checkpoint.Json, CheckpointEncodeError> => {
      const result = encodeState(state)
      return Either.isRight(result)
        ? Effect.succeed(result.right as Checkpoint.Json)
        : Effect.fail(
          new CheckpointEncodeError({
            message: `The state does not match the graph's Schema: ${ParseResult.TreeFormatter.formatErrorSync(result.left)}`
          })
        )
    }

    const typed = (cp: Checkpoint.Checkpoint): Effect.Effect<TypedCheckpoint<S>, CheckpointDecodeError> => {
      const result = decodeState(cp.state)
      if (Either.isLeft(result)) {
        return Effect.fail(
          new CheckpointDecodeError({
            id: cp.id,
            message: `The state of checkpoint ${JSON.stringify(cp.id)} does not match the graph's Schema: ${
              ParseResult.TreeFormatter.formatErrorSync(result.left)
            }`
          })
        )
      }
      return Effect.succeed({
        id: cp.id,
        executionId: cp.executionId,
        nodeName: cp.nodeName,
        state: result.right,
        metadata: cp.metadata,
        timestamp: cp.timestamp,
        version: cp.version,
        next: cp.next,
        ...(cp.parentId === undefined ? {} : { parentId: cp.parentId })
      })
    }

    /** The next checkpoint of a chain (the next version, following the previous one), with an already encoded state. */
    const nextCheckpoint = (
      run: Chain,
      nodeName: string,
      state: Checkpoint.Json,
      next: ReadonlyArray<string>,
      metadata: Checkpoint.JsonObject
    ): Effect.Effect<Checkpoint.Checkpoint> =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const id = uuidv7(now) as Checkpoint.CheckpointId
        const cp = new Checkpoint.Checkpoint({
          id,
          executionId: run.executionId,
          nodeName,
          state,
          metadata,
          timestamp: new Date(now),
          version: run.version + 1,
          next,
          ...(run.parentId === undefined ? {} : { parentId: run.parentId })
        }, true)
        run.version++
        run.parentId = id
        return cp
      })

    /** Saves where the run stands, unless it is saved already. */
    const savePosition = (run: Run<S>, wait: boolean) =>
      Effect.suspend(() => {
        const at = run.position
        if (at.saved) return Effect.void
        return encode(at.state).pipe(
          Effect.flatMap((state) => nextCheckpoint(run, at.nodeName, state, at.next, run.metadata)),
          Effect.flatMap((cp) => {
            run.position = { ...at, saved: true }
            return Effect.catchAllCause(run.saver.enqueue(cp, wait), () => Effect.fail(saveFailed))
          })
        )
      })

    const stepSave = (run: Run<S>) =>
      !options.autoSave || options.durability === "exit"
        ? Effect.void
        : savePosition(run, options.durability === "sync")

    /** Saves where the run stands and stops it with `GraphInterrupted`. */
    const pause = (run: Run<S>, node: string, when: "before" | "after") =>
      Effect.flatMap(savePosition(run, true), () =>
        Effect.fail(
          new GraphInterrupted({
            executionId: run.executionId,
            node,
            when,
            ...(run.parentId === undefined ? {} : { checkpointId: run.parentId })
          })
        ))

    /** Runs nodes from `start` to END, saving after each step according to the config. */
    const loop = (run: Run<S>, start: string, pauseFirst: boolean) =>
      Effect.gen(function*() {
        let node = start
        let steps = 0
        let state = run.position.state
        while (node !== END) {
          yield* run.saver.check
          if (interruptBefore.has(node) && (pauseFirst || steps > 0)) return yield* pause(run, node, "before")
          if (steps >= compiled.recursionLimit) {
            return yield* new RecursionLimitExceeded({ limit: compiled.recursionLimit, executionId: run.executionId })
          }
          steps++
          state = yield* compiled.nodes.get(node)!(state) as Effect.Effect<S, E, R>
          const next: string = yield* route(compiled, node, state) as Effect.Effect<string, E | GraphValidationError, R>
          run.position = { nodeName: node, state, next: next === END ? [] : [next], saved: false }
          yield* stepSave(run)
          if (interruptAfter.has(node) && next !== END) return yield* pause(run, node, "after")
          node = next
        }
        return state
      })

    /**
     * Runs `run` from `start` with its saver (and a periodic save fiber when
     * autoSave is off). Whatever happens (success,
     * failure, interruption) every save of the run has landed before this
     * returns; the first failure in time wins, the other stays in the Cause.
     */
    const execute = (
      init: Omit<Run<S>, "saver">,
      start: string,
      pauseFirst: boolean,
      rebase: boolean
    ): Effect.Effect<S, E | RunError, R> =>
      Effect.suspend(() => {
        const run = { ...init } as Run<S>
        const expect = { executionId: init.executionId, latestVersion: init.version }
        ;(run as { saver: Saver }).saver = makeSaver(store, clockTick, run, { expect, rebase })
        return Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            active.set(run.executionId, run)
            const periodic = options.autoSave
              ? undefined
              : yield* Effect.forkDaemon(Effect.interruptible(
                Effect.forever(Effect.zipRight(Effect.sleep(saveInterval), Effect.ignore(savePosition(run, false))))
              ))
            let failedAt = 0
            const first = yield* Effect.exit(restore(
              Effect.zipRight(stepSave(run), loop(run, start, pauseFirst)).pipe(
                Effect.tapErrorCause(() => Effect.sync(() => failedAt = clockTick()))
              )
            ))
            if (periodic !== undefined) yield* Fiber.interrupt(periodic)
            // "exit" durability saves where the run ended: the final state, or the last good one.
            const final = options.durability === "exit" && options.autoSave
              ? yield* Effect.exit(savePosition(run, true))
              : Exit.void
            yield* run.saver.drain
            if (active.get(run.executionId) === run) active.delete(run.executionId)
            const failure = run.saver.failure()
            if (failure !== undefined) known.delete(run.executionId)
            else if (run.version !== init.version) remember(run.executionId, run.version, run.parentId)
            const pruned = failure === undefined && maxCheckpoints > 0 && run.version > maxCheckpoints
              ? yield* Effect.exit(Effect.asVoid(store.prune(run.executionId, maxCheckpoints)))
              : Exit.void
            // The run's own failure, unless it only stopped because a save failed.
            const stopped = Exit.isFailure(first) && isSaveFailed(first.cause)
            let cause: Cause.Cause<any> = Exit.isFailure(first) && !stopped ? first.cause : Cause.empty
            if (failure !== undefined) {
              cause = !stopped && failedAt !== 0 && failedAt < failure.at
                ? Cause.sequential(cause, failure.cause)
                : Cause.sequential(failure.cause, cause)
            }
            if (Exit.isFailure(final) && !isSaveFailed(final.cause)) cause = Cause.sequential(cause, final.cause)
            if (Exit.isFailure(pruned)) cause = Cause.sequential(cause, pruned.cause)
            return Cause.isEmpty(cause) && Exit.isSuccess(first)
              ? first.value
              : yield* Effect.failCause(cause)
          })
        )
      }) as Effect.Effect<S, E | RunError, R>

    /** The first node of `next`, checked against the graph. */
    const startOf = (cp: { readonly id: string; readonly next: ReadonlyArray<string> }) => {
      const [first, ...rest] = cp.next
      if (rest.length > 0) {
        return Effect.fail(
          new GraphValidationError({
            message: `Checkpoint ${JSON.stringify(cp.id)} continues with ${cp.next.length} nodes at once, which this graph cannot run`,
            issues: cp.next.map((n) => `parallel next "${n}"`)
          })
        )
      }
      return first !== undefined && compiled.nodes.has(first)
        ? Effect.succeed(first)
        : Effect.fail(
          new GraphValidationError({
            message: `Checkpoint ${JSON.stringify(cp.id)} continues with "${first}", which is not a node of this graph`,
            issues: [`unknown node "${first}"`]
          })
        )
    }

    const metadataOf = (options: { readonly metadata?: Checkpoint.JsonObject | undefined } | undefined, extra = {}) =>
      ({ ...options?.metadata, ...extra }) as Checkpoint.JsonObject

    const invoke = (input: S, runOptions?: RunOptions): Effect.Effect<S, E | RunError, R> =>
      Effect.gen(function*() {
        const executionId = yield* executionIdOf(runOptions?.executionId)
        // Nothing is read first: the run assumes the execution is where this runnable last left it (or new),
        // and its first write checks that; if not, the saver reads it and renumbers (see FirstWrite).
        const last = known.get(executionId)
        return yield* execute({
          executionId,
          version: last?.version ?? 0,
          parentId: last?.id,
          metadata: metadataOf(runOptions),
          position: { nodeName: INPUT, state: input, next: [compiled.entryPoint], saved: false }
        }, compiled.entryPoint, true, true)
      })

    /** Continues `execution` from its checkpoint `from` (decoded as `state`). */
    const continueFrom = (
      from: Checkpoint.Checkpoint,
      state: S,
      metadata: Checkpoint.JsonObject,
      update?: ((s: S) => S) | undefined
    ): Effect.Effect<S, E | RunError, R> => {
      const init = {
        executionId: from.executionId,
        version: from.version,
        parentId: from.id,
        metadata,
        position: { nodeName: from.nodeName, state, next: from.next, saved: true }
      }
      if (update === undefined) {
        if (from.next.length === 0) return Effect.succeed(state)
        return Effect.flatMap(startOf(from), (start) => execute(init, start, false, false))
      }
      const edited = { ...init, position: { nodeName: UPDATE, state: update(state), next: from.next, saved: false } }
      if (from.next.length === 0) {
        return execute(edited, END, false, false)
      }
      return Effect.flatMap(startOf(from), (start) => execute(edited, start, false, false))
    }

    const resumeFromCheckpoint = (id: string, runOptions?: RunOptions): Effect.Effect<S, E | RunError | CheckpointNotFound, R> =>
      Effect.gen(function*() {
        const from = yield* Effect.flatMap(Checkpoint.makeCheckpointId(id), store.load)
        const { state } = yield* typed(from)
        if (from.next.length === 0) return state
        const start = yield* startOf(from)
        const latest = yield* store.latest(from.executionId)
        const isLatest = Option.isSome(latest) && latest.value.id === from.id
        const forkedFrom = from.metadata.forkedFrom
        if (isLatest && (runOptions?.executionId === undefined || runOptions.executionId === from.executionId)) {
          const extra = typeof forkedFrom === "string" ? { forkedFrom } : {}
          return yield* continueFrom(from, state, metadataOf(runOptions, extra))
        }
        // An older checkpoint: fork, so that history is never overwritten.
        const executionId = runOptions?.executionId === undefined
          ? yield* Checkpoint.generateExecutionId
          : yield* executionIdOf(runOptions.executionId)
        const targetLatest = runOptions?.executionId === undefined ? Option.none() : yield* store.latest(executionId)
        const metadata = metadataOf(runOptions, { forkedFrom: from.id })
        const run: Omit<Run<S>, "saver"> = {
          executionId,
          version: Option.match(targetLatest, { onNone: () => 0, onSome: (cp) => cp.version }),
          parentId: from.id,
          metadata,
          position: { nodeName: from.nodeName, state, next: from.next, saved: false }
        }
        return yield* execute(run, start, false, false)
      })

    const resume = (executionIdRaw?: string, resumeOptions?: ResumeOptions<S>): Effect.Effect<S, E | RunError | ExecutionNotFound, R> =>
      Effect.gen(function*() {
        const executionId = yield* executionIdOf(executionIdRaw)
        const latest = yield* store.latest(executionId)
        if (Option.isNone(latest)) return yield* new ExecutionNotFound({ executionId })
        const from = latest.value
        const { state } = yield* typed(from)
        const forkedFrom = from.metadata.forkedFrom
        const extra = typeof forkedFrom === "string" ? { forkedFrom } : {}
        return yield* continueFrom(from, state, metadataOf(resumeOptions, extra), resumeOptions?.update)
      })

    const saveCheckpoint = (
      nodeName: string,
      state: S,
      saveOptions?: RunOptions & { readonly next?: ReadonlyArray<string> | undefined }
    ): Effect.Effect<TypedCheckpoint<S>, CheckpointStore.SaveError | ReadError> =>
      Effect.gen(function*() {
        const executionId = yield* executionIdOf(saveOptions?.executionId)
        const encoded = yield* encode(state)
        const next = saveOptions?.next ?? []
        const metadata = metadataOf(saveOptions)
        const running = active.get(executionId)
        if (running !== undefined) {
          // A save from inside a running node: it joins the run's ordered saves.
          const cp = yield* nextCheckpoint(running, nodeName, encoded, next, { ...running.metadata, ...metadata })
          return yield* typed(yield* running.saver.enqueue(cp, true))
        }
        const latest = yield* store.latest(executionId)
        const chain: Chain = {
          executionId,
          version: Option.match(latest, { onNone: () => 0, onSome: (c) => c.version }),
          parentId: Option.getOrUndefined(Option.map(latest, (c) => c.id))
        }
        const cp = yield* nextCheckpoint(chain, nodeName, encoded, next, metadata)
        yield* store.save(cp, { expect: { executionId, latestVersion: cp.version - 1 } })
        remember(executionId, cp.version, cp.id)
        return yield* typed(cp)
      })

    return {
      executionId: defaultExecutionId,
      invoke,
      invokeWithConfig: invoke,
      saveCheckpoint,
      loadCheckpoint: (id) => Effect.flatMap(Effect.flatMap(Checkpoint.makeCheckpointId(id), store.load), typed),
      listCheckpoints: (executionId, listOptions) =>
        Effect.flatMap(executionIdOf(executionId), (e) =>
          Effect.flatMap(store.list(e, listOptions), (cps) => Effect.forEach(cps, typed))),
      resumeFromCheckpoint,
      resume,
      clearCheckpoints: (executionId) =>
        Effect.flatMap(executionIdOf(executionId), (e) => Effect.zipRight(Effect.sync(() => known.delete(e)), store.clear(e)))
    }
  })
