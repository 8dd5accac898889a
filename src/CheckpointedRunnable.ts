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
import {
  Cause,
  Clock,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  Layer,
  Option,
  Queue,
  type Schedule,
  Stream
} from "effect"
import * as Checkpoint from "./Checkpoint.js"
import {
  type CheckpointConflict,
  type CheckpointDecodeError,
  type CheckpointNotFound,
  ExecutionNotFound,
  type LeaseLost,
  type StoreError
} from "./CheckpointError.js"
import * as CheckpointStore from "./CheckpointStore.js"
import {
  type CompileOptions,
  DEFAULT_RECURSION_LIMIT,
  ExecutionFinished,
  type Graph,
  GraphInterrupted,
  GraphSuspended,
  GraphValidationError,
  INPUT,
  InvalidResume,
  type InvalidStep,
  type InvalidUpdate,
  type PendingInterrupt,
  RecursionLimitExceeded,
  type Update,
  UPDATE,
  validate
} from "./internal/graph.js"
import { checkId } from "./internal/identifier.js"
import { isPlainObject } from "./internal/json.js"
import { interruptIdOf, NodeContext, type NodeContextService, parseInterruptId } from "./internal/run/context.js"
import {
  type Failure,
  type Item,
  isSaveFailed,
  makeSaver,
  type ReadError,
  SaveFailed,
  saveFailed,
  type Saver,
  type WriteError
} from "./internal/run/saver.js"
import { makeStateCodec } from "./internal/run/stateCodec.js"
import {
  applyUpdates,
  type Finished,
  type JoinProgress,
  makeTasks,
  planNext,
  stepName,
  type Task,
  viewOf
} from "./internal/run/superstep.js"
import { uuidv7 } from "./internal/uuid.js"

export type { ReadError } from "./internal/run/saver.js"

/** How many executions a runnable remembers the position of (see `known` in `compileCheckpointable`). */
const KNOWN_EXECUTIONS = 1024

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
   * How long a run's lease on its execution lasts (default 5 minutes); every
   * checkpoint saved renews it, and so does every superstep that starts after
   * half of it passed. A run that crashed leaves its execution to a worker
   * once the lease expired.
   */
  readonly leaseTtl: Duration.DurationInput
  /** A `Graph.sleep` up to this long waits in process; a longer one suspends the run (default 1 second). */
  readonly sleepInProcess: Duration.DurationInput
}

/**
 * The defaults (langgraphgo's `DefaultCheckpointConfig()` for the first
 * four): autoSave on, saveInterval 30 seconds, maxCheckpoints 10, durability
 * `"async"`, recursionLimit 25, maxSaveLag 50 ms, leaseTtl 5 minutes,
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
  leaseTtl: "5 minutes",
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
   * state is what `invoke` returns), `Interrupted` or `Suspended`. Stopping
   * the stream interrupts the run (its saves land first, as for `invoke`).
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
  /** `resume` as a stream of {@link RunEvent}s. */
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

/** What the worker needs of a runnable. */
interface Claimable<E, R> {
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

const ClaimableTypeId: unique symbol = Symbol.for("effect-checkpoint/CheckpointedRunnable/Claimable")

const claimable = <S, E, R>(runnable: CheckpointableRunnable<S, E, R>): Claimable<E, R> =>
  (runnable as unknown as { readonly [ClaimableTypeId]: Claimable<E, R> })[ClaimableTypeId]

// -----------------------------------------------------------------------------
// The engine
// -----------------------------------------------------------------------------

/** A superstep boundary: a checkpoint, the state it holds, and what runs next. */
interface Boundary<S> {
  /** The id of its checkpoint (fixed when the boundary is reached; task writes refer to it). */
  readonly id: Checkpoint.CheckpointId
  /**
   * Its checkpoint's fields until it is saved: the version and parent are
   * given when it is handed to the save queue, so a boundary that is never
   * saved (`"exit"`, `autoSave: false`) takes no version.
   */
  readonly draft: Draft | undefined
  /** Handed to the save queue (or stored already). */
  saved: boolean
  readonly state: S
  readonly tasks: ReadonlyArray<Task>
  readonly joins: JoinProgress
  /** The nodes whose superstep made it (for `interruptAfter`). */
  readonly ran: ReadonlyArray<string>
  /** Writes saved earlier by its tasks: task id → key → value. */
  readonly writes: ReadonlyMap<string, ReadonlyMap<string, Checkpoint.Json>>
  /** Pauses that fired at it already (`"after"`, `"before"`): a resume passes them. */
  readonly fired: ReadonlySet<string>
  /** Answers to interrupts given by the resume: task id → interrupt index → value. */
  readonly answers: ReadonlyMap<string, ReadonlyMap<number, unknown>>
  /** Task writes made while it was not saved yet (`"exit"`, `autoSave: false`). */
  buffered: Array<Item>
}

/** What a boundary needs of a checkpoint, saved or not. */
interface CheckpointLike {
  readonly id: Checkpoint.CheckpointId
  readonly nodeName: string
  readonly next: ReadonlyArray<string>
  readonly runtime?: Checkpoint.JsonObject | undefined
}

/** A checkpoint not numbered yet. */
interface Draft {
  readonly id: Checkpoint.CheckpointId
  readonly nodeName: string
  readonly state: Checkpoint.Json
  readonly next: ReadonlyArray<string>
  readonly runtime: Checkpoint.JsonObject | undefined
  readonly timestamp: Date
}

/** One run (invoke, resume, a worker's run) of one execution. */
interface Run<S> {
  readonly executionId: Checkpoint.ExecutionId
  readonly owner: string
  readonly metadata: Checkpoint.JsonObject
  readonly saver: Saver
  /** `"direct"` runs settle their execution's status when they fail; a worker's runs leave it to the worker. */
  readonly mode: "direct" | "worker"
  readonly leaseTtl: Duration.Duration
  readonly emit: ((event: RunEvent<S>) => Effect.Effect<void>) | undefined
  /** The next checkpoint's version is `version + 1`, its parent `parentId`. */
  readonly chain: { version: number; parentId: Checkpoint.CheckpointId | undefined }
  boundary: Boundary<S>
  supersteps: number
  /** When the lease was last taken or renewed (Clock ms). */
  leaseAt: number
}

const PAUSE_TASK = "pause"
const emptyWrites: ReadonlyMap<string, ReadonlyMap<string, Checkpoint.Json>> = new Map()
const emptyFired: ReadonlySet<string> = new Set()
const emptyAnswers: ReadonlyMap<string, ReadonlyMap<number, unknown>> = new Map()
const noJoins: JoinProgress = new Map()
const bothPauses: ReadonlySet<string> = new Set(["after", "before"])

/** The runtime data of a checkpoint, or `undefined` when there is none (a linear graph at state version 1). */
const runtimeOf = (
  sends: Record<string, Checkpoint.JsonObject> | undefined,
  joins: JoinProgress,
  ran: ReadonlyArray<string>,
  version: number
): Checkpoint.JsonObject | undefined => {
  let runtime: Record<string, Checkpoint.Json> | undefined
  const put = (key: string, value: Checkpoint.Json) => {
    runtime ??= {}
    runtime[key] = value
  }
  if (sends !== undefined) put("sends", sends)
  if (joins.size > 0) put("joins", Object.fromEntries([...joins].map(([k, v]) => [k, [...v]])))
  if (ran.length > 1) put("ran", [...ran])
  if (version !== 1) put("v", version)
  return runtime
}

/** The error's tag and message, for an execution record. */
const failureOf = (error: unknown): CheckpointStore.Failure => {
  const tag = typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string"
    ? error._tag
    : error instanceof Error
    ? error.name
    : "Unknown"
  const message = error instanceof Error ? error.message : typeof error === "string" ? error : JSON.stringify(error) ?? String(error)
  return { tag, message }
}

const newOwner = (now: number) => `run-${uuidv7(now)}`

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
    const interruptBefore = new Set(options.interruptBefore ?? [])
    const interruptAfter = new Set(options.interruptAfter ?? [])
    const maxCheckpoints = Math.max(0, Math.floor(options.maxCheckpoints))
    const codec = makeStateCodec(compiled.schema, compiled.version, compiled.migrations)
    const saving = options.autoSave && options.durability !== "exit"
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

    const encode = (state: S, node: string | undefined) =>
      Either.match(codec.encode(state, node), { onLeft: Effect.fail, onRight: Effect.succeed })

    const decode = (cp: Checkpoint.Checkpoint) =>
      Either.match(codec.decode(cp), { onLeft: Effect.fail, onRight: Effect.succeed })

    const typed = (cp: Checkpoint.Checkpoint) =>
      Effect.map(decode(cp), (state): TypedCheckpoint<S> => ({
        id: cp.id,
        executionId: cp.executionId,
        nodeName: cp.nodeName,
        state,
        metadata: cp.metadata,
        timestamp: cp.timestamp,
        version: cp.version,
        next: cp.next,
        ...(cp.parentId === undefined ? {} : { parentId: cp.parentId })
      }))

    // --- checkpoints ---------------------------------------------------------

    /** A checkpoint's fields, with a fresh id and the time of now (its state already encoded). */
    const draftOf = (
      nodeName: string,
      state: Checkpoint.Json,
      next: ReadonlyArray<string>,
      runtime: Checkpoint.JsonObject | undefined
    ): Effect.Effect<Draft> =>
      Effect.map(Clock.currentTimeMillis, (now) => ({
        id: uuidv7(now) as Checkpoint.CheckpointId,
        nodeName,
        state,
        next,
        runtime,
        timestamp: new Date(now)
      }))

    /** The draft as the next checkpoint of the chain (which moves on to it). */
    const materialize = (
      chain: Run<S>["chain"],
      executionId: Checkpoint.ExecutionId,
      metadata: Checkpoint.JsonObject,
      draft: Draft
    ): Checkpoint.Checkpoint => {
      const cp = new Checkpoint.Checkpoint({
        id: draft.id,
        executionId,
        nodeName: draft.nodeName,
        state: draft.state,
        metadata,
        timestamp: draft.timestamp,
        version: chain.version + 1,
        next: draft.next,
        ...(chain.parentId === undefined ? {} : { parentId: chain.parentId }),
        ...(draft.runtime === undefined ? {} : { runtime: draft.runtime })
      }, true)
      chain.version++
      chain.parentId = draft.id
      return cp
    }

    /** The next checkpoint of a chain, at once. */
    const makeCheckpoint = (
      chain: Run<S>["chain"],
      executionId: Checkpoint.ExecutionId,
      nodeName: string,
      state: Checkpoint.Json,
      next: ReadonlyArray<string>,
      metadata: Checkpoint.JsonObject,
      runtime: Checkpoint.JsonObject | undefined
    ): Effect.Effect<Checkpoint.Checkpoint> =>
      Effect.map(draftOf(nodeName, state, next, runtime), (draft) => materialize(chain, executionId, metadata, draft))

    /** Send inputs encoded for a checkpoint's runtime, by task index. */
    const encodeSends = (next: ReadonlyArray<{ readonly node: string; readonly input?: unknown }>) => {
      let sends: Record<string, Checkpoint.JsonObject> | undefined
      for (let i = 0; i < next.length; i++) {
        const input = next[i]!.input
        if (input === undefined) continue
        const encoded = codec.encodeUpdate(input, next[i]!.node)
        if (Either.isLeft(encoded)) return Either.left(encoded.left)
        sends ??= {}
        sends[String(i)] = encoded.right
      }
      return Either.right(sends)
    }

    /** The tasks a checkpoint schedules (its `next`, with the send inputs of its runtime), checked against the graph. */
    const tasksOf = (
      cp: CheckpointLike
    ): Effect.Effect<ReadonlyArray<Task>, GraphValidationError | CheckpointDecodeError> => {
      const unknownNodes = cp.next.filter((n) => !compiled.nodes.has(n))
      if (unknownNodes.length > 0) {
        return Effect.fail(
          new GraphValidationError({
            message: `Checkpoint ${JSON.stringify(cp.id)} continues with ${
              unknownNodes.map((n) => `"${n}"`).join(", ")
            }, which ${unknownNodes.length === 1 ? "is not a node" : "are not nodes"} of this graph`,
            issues: unknownNodes.map((n) => `unknown node "${n}"`)
          })
        )
      }
      const sends = isPlainObject(cp.runtime?.sends) ? cp.runtime.sends : {}
      return Effect.map(
        Effect.forEach(cp.next, (node, i): Effect.Effect<{ node: string; input?: unknown }, CheckpointDecodeError> => {
          const input = sends[String(i)]
          if (input === undefined) return Effect.succeed({ node })
          return Either.match(codec.decodeUpdate(input, cp.id), {
            onLeft: Effect.fail,
            onRight: (decoded) => Effect.succeed({ node, input: decoded })
          })
        }),
        makeTasks
      )
    }

    const joinsOf = (cp: CheckpointLike): JoinProgress => {
      const joins = cp.runtime?.joins
      if (!isPlainObject(joins)) return noJoins
      return new Map(Object.entries(joins).flatMap(([key, sources]) =>
        Array.isArray(sources) ? [[key, new Set(sources.filter((s): s is string => typeof s === "string"))] as const] : []
      ))
    }

    const ranOf = (cp: CheckpointLike): ReadonlyArray<string> => {
      const ran = cp.runtime?.ran
      if (Array.isArray(ran)) return ran.filter((n): n is string => typeof n === "string")
      return cp.nodeName === INPUT || cp.nodeName === UPDATE ? [] : [cp.nodeName]
    }

    // --- saving ----------------------------------------------------------------

    /** The execution record change a checkpoint's save carries. */
    const patchFor = (run: Run<S>, cp: { readonly next: ReadonlyArray<string> }): CheckpointStore.ExecutionPatch =>
      cp.next.length > 0
        ? { status: "running", lease: { owner: run.owner, ttl: run.leaseTtl } }
        : { lease: null }

    /** Hands the boundary checkpoint (and the task writes made while it waited) to the save queue. */
    const saveBoundary = (run: Run<S>, wait: boolean): Effect.Effect<void, SaveFailed> =>
      Effect.suspend(() => {
        const b = run.boundary
        if (b.saved || b.draft === undefined) return Effect.void
        b.saved = true
        const cp = materialize(run.chain, run.executionId, run.metadata, b.draft)
        const items: Array<Item> = [{ _tag: "Checkpoint", checkpoint: cp, execution: patchFor(run, cp) }, ...b.buffered]
        b.buffered = []
        return Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.forEach(items, (item, i) => run.saver.enqueue(item, now, wait && i === items.length - 1), { discard: true }))
          .pipe(Effect.catchAllCause(() => Effect.fail(saveFailed)))
      })

    /** Saves task writes of the boundary: at once when it is saved, else when it is. */
    const writeTask = (
      run: Run<S>,
      b: Boundary<S>,
      taskId: string,
      writes: ReadonlyArray<{ readonly key: string; readonly value: Checkpoint.Json }>,
      execution: CheckpointStore.ExecutionPatch | undefined,
      wait: boolean
    ): Effect.Effect<void, SaveFailed> =>
      Effect.suspend(() => {
        const item: Item = { _tag: "Writes", checkpointId: b.id, taskId, writes, execution }
        if (!b.saved) {
          b.buffered.push(item)
          return Effect.void
        }
        return Effect.flatMap(Clock.currentTimeMillis, (now) => run.saver.enqueue(item, now, wait)).pipe(
          // The queue keeps the failure; the run reports it once, in time order with any other.
          Effect.catchAllCause(() => Effect.fail(saveFailed))
        )
      })

    const stepSave = (run: Run<S>) => saving ? saveBoundary(run, options.durability === "sync") : Effect.void

    // --- a superstep -----------------------------------------------------------

    type Outcome =
      | { readonly _tag: "Done"; readonly finished: Finished }
      | { readonly _tag: "Interrupted"; readonly error: GraphInterrupted }
      | { readonly _tag: "Suspended"; readonly error: GraphSuspended }

    const emit = (run: Run<S>, event: () => RunEvent<S>) => run.emit === undefined ? Effect.void : run.emit(event())

    const runTask = (run: Run<S>, b: Boundary<S>, task: Task, multi: boolean): Effect.Effect<Outcome, any, any> => {
      const saved = b.writes.get(task.id)
      const replay = saved?.get("update")
      if (replay !== undefined) {
        return Either.match(codec.decodeUpdate(replay, b.id), {
          onLeft: Effect.fail,
          onRight: (update) =>
            Effect.as(
              emit(run, () => ({
                _tag: "TaskFinished",
                executionId: run.executionId,
                superstep: run.supersteps,
                node: task.node,
                taskId: task.id,
                update: update as Update<S>,
                replayed: true
              })),
              { _tag: "Done", finished: { task, update } } as Outcome
            )
        })
      }
      const answers = b.answers.get(task.id)
      const context: NodeContextService = {
        executionId: run.executionId,
        checkpointId: b.id,
        taskId: task.id,
        node: task.node,
        saved: saved ?? new Map(),
        // A failed write stops the run with the store's own error (the queue keeps it; see `execute`).
        write: (key, value, execution) =>
          writeTask(run, b, task.id, [{ key, value }], execution, true) as unknown as Effect.Effect<void, WriteError>,
        resumeValue: (index) => answers === undefined || !answers.has(index) ? Option.none() : Option.some(answers.get(index)),
        inProcessSleepMs: durations.sleepInProcess,
        stepNames: new Set(),
        counters: { interrupts: 0, sleeps: 0 }
      }
      const node = compiled.nodes.get(task.node)!
      const started = emit(run, () => ({
        _tag: "TaskStarted",
        executionId: run.executionId,
        superstep: run.supersteps,
        node: task.node,
        taskId: task.id
      }))
      return started.pipe(
        Effect.zipRight(Effect.provideService(node(viewOf(b.state, task)), NodeContext, context)),
        Effect.tap((update) => {
          if (!multi) return Effect.void
          // Each finished task's update is saved at once: a sibling's failure or a crash does not lose it.
          return Either.match(codec.encodeUpdate(update, task.node), {
            onLeft: Effect.fail,
            onRight: (value) => writeTask(run, b, task.id, [{ key: "update", value }], undefined, options.durability === "sync")
          })
        }),
        Effect.tap((update) =>
          emit(run, () => ({
            _tag: "TaskFinished",
            executionId: run.executionId,
            superstep: run.supersteps,
            node: task.node,
            taskId: task.id,
            update,
            replayed: false
          }))
        ),
        Effect.map((update): Outcome => ({ _tag: "Done", finished: { task, update } })),
        Effect.catchIf(
          (e): e is GraphInterrupted | GraphSuspended => e instanceof GraphInterrupted || e instanceof GraphSuspended,
          (e): Effect.Effect<Outcome> =>
            Effect.succeed(e instanceof GraphInterrupted ? { _tag: "Interrupted", error: e } : { _tag: "Suspended", error: e })
        )
      )
    }

    /** Runs the boundary's tasks (concurrently when there are several) and returns their updates in task order. */
    const runTasks = (run: Run<S>, b: Boundary<S>): Effect.Effect<ReadonlyArray<Finished>, any, any> =>
      Effect.gen(function*() {
        const multi = b.tasks.length > 1
        const outcomes: ReadonlyArray<Outcome> = yield* Effect.forEach(
          b.tasks,
          (task) => runTask(run, b, task, multi),
          multi ? { concurrency: compiled.maxConcurrency ?? "unbounded" } : undefined
        )
        const interrupts: Array<GraphInterrupted> = []
        const suspensions: Array<GraphSuspended> = []
        const finished: Array<Finished> = []
        for (const outcome of outcomes) {
          if (outcome._tag === "Done") finished.push(outcome.finished)
          else if (outcome._tag === "Interrupted") interrupts.push(outcome.error)
          else suspensions.push(outcome.error)
        }
        if (interrupts.length > 0) {
          const first = interrupts[0]!
          const pending: Array<PendingInterrupt> = interrupts.flatMap((i) =>
            i.interruptId === undefined ? [] : [{ interruptId: i.interruptId, node: i.node, payload: i.payload ?? null }]
          )
          return yield* Effect.fail(interrupts.length === 1 ? first : new GraphInterrupted({ ...first, interrupts: pending }))
        }
        if (suspensions.length > 0) {
          return yield* Effect.fail(suspensions.reduce((a, b) => a.wakeAt.getTime() <= b.wakeAt.getTime() ? a : b))
        }
        return finished
      })

    // --- pauses ----------------------------------------------------------------

    /** Fires a pause at the boundary: saved (with its marker, the execution `interrupted`) before the run stops. */
    const pause = (run: Run<S>, when: "before" | "after", node: string) =>
      Effect.gen(function*() {
        yield* saveBoundary(run, true)
        const b = run.boundary
        yield* writeTask(run, b, PAUSE_TASK, [{ key: when, value: { node } }], { status: "interrupted", lease: null }, true)
        return yield* new GraphInterrupted({ executionId: run.executionId, node, when, checkpointId: b.id })
      })

    /** The pauses due at the boundary, in order: after the nodes that made it, before the ones it schedules. */
    const pauses = (run: Run<S>) =>
      Effect.suspend(() => {
        const b = run.boundary
        if (!b.fired.has("after")) {
          const after = b.ran.find((n) => interruptAfter.has(n))
          if (after !== undefined) return pause(run, "after", after)
        }
        if (!b.fired.has("before")) {
          const before = b.tasks.find((t) => interruptBefore.has(t.node))
          if (before !== undefined) return pause(run, "before", before.node)
        }
        return Effect.void
      })

    /** Renews the run's lease when half of it passed since it was last taken (a long superstep). */
    const renewIfDue = (run: Run<S>) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (now - run.leaseAt < Duration.toMillis(run.leaseTtl) / 2) return Effect.void
        run.leaseAt = now
        return store.renew(run.executionId, { owner: run.owner, ttl: run.leaseTtl }).pipe(
          Effect.asVoid,
          // Nothing saved yet ("exit"): there is no lease to renew.
          Effect.catchTag("ExecutionNotFound", () => Effect.void)
        )
      })

    // --- the run loop ----------------------------------------------------------

    /** Runs supersteps from the boundary until nothing is left to run. */
    const loop = (run: Run<S>): Effect.Effect<S, any, any> =>
      Effect.gen(function*() {
        while (true) {
          const b = run.boundary
          if (b.tasks.length === 0) return b.state
          yield* run.saver.check
          if (saving && options.durability === "async") {
            const now = yield* Clock.currentTimeMillis
            yield* run.saver.bound(now - durations.maxSaveLag)
          }
          yield* pauses(run)
          if (run.supersteps >= compiled.recursionLimit) {
            return yield* new RecursionLimitExceeded({ limit: compiled.recursionLimit, executionId: run.executionId })
          }
          yield* renewIfDue(run)
          run.supersteps++
          const finished = yield* runTasks(run, b)
          const state: S = yield* Either.match(applyUpdates(compiled, b.state, finished), {
            onLeft: Effect.fail,
            onRight: Effect.succeed
          })
          const plan = yield* planNext(compiled, b.tasks, state, b.joins)
          const nodeName = b.tasks.length === 1 ? b.tasks[0]!.node : stepName(b.tasks)
          const encoded = yield* encode(state, nodeName)
          const sends = yield* Either.match(encodeSends(plan.next), { onLeft: Effect.fail, onRight: Effect.succeed })
          const ran = b.tasks.map((t) => t.node)
          const draft = yield* draftOf(
            nodeName,
            encoded,
            plan.next.map((t) => t.node),
            runtimeOf(sends, plan.joins, ran, compiled.version)
          )
          run.boundary = {
            id: draft.id,
            draft,
            saved: false,
            state,
            tasks: makeTasks(plan.next),
            joins: plan.joins,
            ran,
            writes: emptyWrites,
            fired: emptyFired,
            answers: emptyAnswers,
            buffered: []
          }
          yield* stepSave(run)
        }
      })

    /** The execution record after a run that stopped early (direct runs; worker runs are settled by the worker). */
    const settleRecord = (run: Run<S>, cause: Cause.Cause<unknown>): Effect.Effect<void, StoreError> => {
      const update = (patch: CheckpointStore.ExecutionPatch) =>
        store.updateExecution(run.executionId, patch, { owner: run.owner }).pipe(
          Effect.asVoid,
          // Nothing was saved, or another owner holds it now: nothing of ours to settle.
          Effect.catchTags({ ExecutionNotFound: () => Effect.void, LeaseLost: () => Effect.void, CheckpointConflict: () => Effect.void })
        )
      if (Cause.isInterruptedOnly(cause)) return update({ status: "pending", lease: null })
      const error = Option.getOrUndefined(Cause.failureOption(cause))
      if (error instanceof GraphInterrupted || error instanceof SaveFailed) return Effect.void
      if (error instanceof GraphSuspended) return update({ status: "sleeping", wakeAt: error.wakeAt, lease: null })
      if (error instanceof InvalidResume) return update({ status: "interrupted", lease: null })
      if (run.mode === "worker") return Effect.void
      return update({ status: "failed", failure: failureOf(error ?? Cause.squash(cause)), lease: null })
    }

    /**
     * Runs `run` from its boundary with its save queue (and a periodic save
     * fiber when autoSave is off). Whatever happens (success, failure,
     * interruption) every save of the run has landed before this returns; the
     * first failure in time wins, the other stays in the Cause.
     */
    const execute = (run: Run<S>): Effect.Effect<S, any, any> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          active.set(run.executionId, run)
          const periodic = options.autoSave
            ? undefined
            : yield* Effect.forkDaemon(Effect.interruptible(
              Effect.forever(Effect.zipRight(
                Effect.sleep(durations.saveInterval),
                Effect.ignore(Effect.suspend(() => saveBoundary(run, false)))
              ))
            ))
          let failedAt = 0
          const first = yield* Effect.exit(restore(
            Effect.zipRight(stepSave(run), loop(run)).pipe(
              Effect.tapErrorCause(() => Effect.sync(() => failedAt = clockTick()))
            )
          ))
          if (periodic !== undefined) yield* Fiber.interrupt(periodic)
          // "exit" durability saves where the run ended: the final state, or the last good one and its task writes.
          const final = options.durability === "exit" && options.autoSave
            ? yield* Effect.exit(saveBoundary(run, true))
            : Exit.void
          yield* run.saver.drain
          if (active.get(run.executionId) === run) active.delete(run.executionId)
          const failure = run.saver.failure()
          const settled = failure === undefined && Exit.isFailure(first)
            ? yield* Effect.exit(settleRecord(run, first.cause))
            : Exit.void
          const landed = run.saver.landed()
          if (failure !== undefined) known.delete(run.executionId)
          else if (landed.id !== undefined) remember(run.executionId, landed.version, landed.id)
          const pruned = failure === undefined && maxCheckpoints > 0 && landed.version > maxCheckpoints
            ? yield* Effect.exit(Effect.asVoid(store.prune(run.executionId, maxCheckpoints)))
            : Exit.void
          // The run's own failure, unless it only stopped because a save failed.
          const stopped = Exit.isFailure(first) && isSaveFailed(first.cause)
          let cause: Cause.Cause<any> = Exit.isFailure(first) && !stopped ? first.cause : Cause.empty
          if (failure !== undefined) cause = orderFailures(cause, failure, stopped ? 0 : failedAt)
          if (Exit.isFailure(final) && !isSaveFailed(final.cause)) cause = Cause.sequential(cause, final.cause)
          if (Exit.isFailure(settled)) cause = Cause.sequential(cause, settled.cause)
          if (Exit.isFailure(pruned)) cause = Cause.sequential(cause, pruned.cause)
          if (Cause.isEmpty(cause) && Exit.isSuccess(first)) {
            yield* emit(run, () => ({ _tag: "Finished", executionId: run.executionId, state: first.value }))
            return first.value
          }
          return yield* Effect.failCause(cause)
        })
      )

    const orderFailures = (cause: Cause.Cause<any>, failure: Failure, failedAt: number): Cause.Cause<any> =>
      failedAt !== 0 && failedAt < failure.at ? Cause.sequential(cause, failure.cause) : Cause.sequential(failure.cause, cause)

    /** A new run of `executionId` from `boundary` (its chain follows the boundary's checkpoint). */
    const newRun = (args: {
      readonly executionId: Checkpoint.ExecutionId
      readonly owner: string
      readonly metadata: Checkpoint.JsonObject
      readonly mode: "direct" | "worker"
      readonly leaseTtl: Duration.Duration
      readonly boundary: Boundary<S>
      /** Where the execution is in the store when the run starts. */
      readonly start: { readonly version: number; readonly id: Checkpoint.CheckpointId | undefined }
      /** The chain of the next checkpoint (the boundary's, when it is saved). */
      readonly chain: { version: number; parentId: Checkpoint.CheckpointId | undefined }
      readonly rebase: boolean
      readonly emit: ((event: RunEvent<S>) => Effect.Effect<void>) | undefined
      readonly now: number
    }): Run<S> => {
      const run: Run<S> = {
        executionId: args.executionId,
        owner: args.owner,
        metadata: args.metadata,
        mode: args.mode,
        leaseTtl: args.leaseTtl,
        emit: args.emit,
        chain: args.chain,
        boundary: args.boundary,
        supersteps: 0,
        leaseAt: args.now,
        saver: makeSaver({
          store,
          executionId: args.executionId,
          start: args.start,
          rebase: args.rebase,
          owner: args.owner,
          clockTick,
          onRebase: (delta) => {
            run.chain.version += delta
          },
          onLanded: args.emit === undefined
            ? undefined
            : (checkpoint) => Effect.runFork(args.emit!({ _tag: "CheckpointSaved", checkpoint }))
        })
      }
      return run
    }

    const metadataOf = (opts: { readonly metadata?: Checkpoint.JsonObject | undefined } | undefined, extra = {}) =>
      ({ ...opts?.metadata, ...extra }) as Checkpoint.JsonObject

    /** A boundary at a checkpoint of the store (`saved`) or at a draft to save, with what its tasks saved. */
    const boundaryOf = (
      cp: Checkpoint.Checkpoint | Draft,
      state: S,
      saved: boolean,
      extra: Partial<Pick<Boundary<S>, "writes" | "fired" | "answers">> = {}
    ) =>
      Effect.map(tasksOf(cp), (tasks): Boundary<S> => ({
        id: cp.id,
        draft: saved ? undefined : cp as Draft,
        saved,
        state,
        tasks,
        joins: joinsOf(cp),
        ran: ranOf(cp),
        writes: extra.writes ?? emptyWrites,
        fired: extra.fired ?? emptyFired,
        answers: extra.answers ?? emptyAnswers,
        buffered: []
      }))

    // --- invoke ----------------------------------------------------------------

    const inputDraft = (input: S) =>
      Effect.flatMap(
        encode(input, undefined),
        (state) => draftOf(INPUT, state, [compiled.entryPoint], runtimeOf(undefined, noJoins, [], compiled.version))
      )

    const invokeWith = (
      input: S,
      runOptions: RunOptions | undefined,
      events: ((event: RunEvent<S>) => Effect.Effect<void>) | undefined
    ): Effect.Effect<S, E | RunError, any> =>
      Effect.gen(function*() {
        const executionId = yield* executionIdOf(runOptions?.executionId)
        // Nothing is read first: the run assumes the execution is where this runnable last left it (or new),
        // and its first write checks that; if not, the queue reads it and renumbers (rebase).
        const last = known.get(executionId) ?? { version: 0, id: undefined }
        const chain = { version: last.version, parentId: last.id }
        const metadata = metadataOf(runOptions)
        const draft = yield* inputDraft(input)
        const now = yield* Clock.currentTimeMillis
        const boundary = yield* boundaryOf(draft, input, false)
        return yield* execute(newRun({
          executionId,
          owner: newOwner(now),
          metadata,
          mode: "direct",
          leaseTtl: durations.leaseTtl,
          boundary,
          start: last,
          chain,
          rebase: true,
          emit: events,
          now
        }))
      })

    // --- resume ----------------------------------------------------------------

    /** What the task writes of a checkpoint say: by task, the pauses that fired, the interrupts still pending. */
    const readWrites = (cp: Checkpoint.Checkpoint, tasks: ReadonlyArray<Task>) =>
      Effect.map(store.listWrites(cp.id), (writes) => {
        const byTask = new Map<string, Map<string, Checkpoint.Json>>()
        for (const w of writes) {
          let keys = byTask.get(w.taskId)
          if (keys === undefined) byTask.set(w.taskId, keys = new Map())
          keys.set(w.key, w.value)
        }
        const fired = new Set(byTask.get(PAUSE_TASK)?.keys() ?? [])
        const pending: Array<{ readonly interruptId: string; readonly taskId: string; readonly index: number; readonly node: string }> = []
        for (const task of tasks) {
          const keys = byTask.get(task.id)
          if (keys === undefined || keys.has("update")) continue
          for (const key of keys.keys()) {
            if (!key.startsWith("interrupt:")) continue
            const index = Number(key.slice("interrupt:".length))
            if (!keys.has(`resume:${index}`)) {
              pending.push({ interruptId: interruptIdOf(cp.id, task.id, index), taskId: task.id, index, node: task.node })
            }
          }
        }
        return { byTask, fired, pending }
      })

    /** Matches a resume's `value`/`values` to the pending interrupts. */
    const answersOf = (
      executionId: string,
      pending: ReadonlyArray<{ readonly interruptId: string; readonly taskId: string; readonly index: number }>,
      resumeOptions: ResumeOptions<S> | undefined
    ): Either.Either<ReadonlyMap<string, ReadonlyMap<number, unknown>>, InvalidResume> => {
      const answers = new Map<string, Map<number, unknown>>()
      const give = (taskId: string, index: number, value: unknown) => {
        let byIndex = answers.get(taskId)
        if (byIndex === undefined) answers.set(taskId, byIndex = new Map())
        byIndex.set(index, value)
      }
      const hasValue = resumeOptions !== undefined && "value" in resumeOptions && resumeOptions.value !== undefined
      if (hasValue) {
        if (pending.length !== 1) {
          return Either.left(new InvalidResume({
            executionId,
            message: pending.length === 0
              ? `Execution ${JSON.stringify(executionId)} has no pending interrupt to give a value to`
              : `Execution ${JSON.stringify(executionId)} has ${pending.length} pending interrupts: answer them by id with values`
          }))
        }
        give(pending[0]!.taskId, pending[0]!.index, resumeOptions!.value)
      }
      for (const [interruptId, value] of Object.entries(resumeOptions?.values ?? {})) {
        const target = pending.find((p) => p.interruptId === interruptId)
        if (target === undefined || parseInterruptId(interruptId) === undefined) {
          return Either.left(new InvalidResume({
            executionId,
            interruptId,
            message: `Interrupt ${JSON.stringify(interruptId)} is not pending in execution ${JSON.stringify(executionId)}`
          }))
        }
        give(target.taskId, target.index, value)
      }
      return Either.right(answers)
    }

    /**
     * Continues the execution from its latest checkpoint `from`: reads the
     * task writes, claims the execution (the first write, awaited — or the
     * `__update__` checkpoint), then runs.
     */
    const continueLatest = (
      from: Checkpoint.Checkpoint,
      state: S,
      resumeOptions: ResumeOptions<S> | undefined,
      events: ((event: RunEvent<S>) => Effect.Effect<void>) | undefined
    ): Effect.Effect<S, any, any> =>
      Effect.gen(function*() {
        const executionId = from.executionId
        const forkedFrom = from.metadata.forkedFrom
        const metadata = metadataOf(resumeOptions, typeof forkedFrom === "string" ? { forkedFrom } : {})
        const update = resumeOptions?.update
        const now = yield* Clock.currentTimeMillis
        const owner = newOwner(now)
        const expect = { executionId, latestVersion: from.version, latestCheckpointId: from.id }
        if (from.next.length === 0) {
          const hasAnswer = resumeOptions?.value !== undefined || Object.keys(resumeOptions?.values ?? {}).length > 0
          if (hasAnswer) {
            return yield* new InvalidResume({ executionId, message: `Execution ${JSON.stringify(executionId)} has finished: no interrupt is pending` })
          }
          if (update === undefined) return state
          if (resumeOptions?.allowFinished !== true) return yield* new ExecutionFinished({ executionId, checkpointId: from.id })
          const edited = update(state)
          const chain = { version: from.version, parentId: from.id }
          const cp = yield* makeCheckpoint(chain, executionId, UPDATE, yield* encode(edited, UPDATE), [], metadata, from.runtime)
          yield* store.save(cp, { expect })
          remember(executionId, cp.version, cp.id)
          return edited
        }
        const tasks = (yield* boundaryOf(from, state, true)).tasks
        const written = yield* readWrites(from, tasks)
        const answers = yield* Either.match(answersOf(executionId, written.pending, resumeOptions), {
          onLeft: Effect.fail,
          onRight: Effect.succeed
        })
        const chain = { version: from.version, parentId: from.id as Checkpoint.CheckpointId | undefined }
        let boundary: Boundary<S>
        if (update !== undefined) {
          // The edit is the claim: a conditional save, awaited before anything runs.
          const edited = update(state)
          const cp = yield* makeCheckpoint(chain, executionId, UPDATE, yield* encode(edited, UPDATE), from.next, metadata, from.runtime)
          yield* store.save(cp, {
            expect,
            owner,
            execution: { status: "running", lease: { owner, ttl: durations.leaseTtl } }
          })
          // What the tasks saved (steps, updates, pause markers) goes on with the edited checkpoint.
          yield* Effect.forEach(written.byTask, ([taskId, keys]) =>
            store.saveWrites(cp.id, taskId, [...keys].map(([key, value]) => ({ key, value })), { owner }), { discard: true })
          boundary = yield* boundaryOf(cp, edited, true, { writes: written.byTask, fired: written.fired, answers })
        } else {
          yield* store.updateExecution(
            executionId,
            { status: "running", lease: { owner, ttl: durations.leaseTtl } },
            { owner, expect }
          )
          boundary = yield* boundaryOf(from, state, true, { writes: written.byTask, fired: written.fired, answers })
        }
        const start = { version: chain.version, id: chain.parentId }
        return yield* execute(newRun({
          executionId,
          owner,
          metadata,
          mode: "direct",
          leaseTtl: durations.leaseTtl,
          boundary,
          start,
          chain,
          rebase: false,
          emit: events,
          now
        }))
      })

    const resumeWith = (
      executionIdRaw: string | undefined,
      resumeOptions: ResumeOptions<S> | undefined,
      events: ((event: RunEvent<S>) => Effect.Effect<void>) | undefined
    ): Effect.Effect<S, any, any> =>
      Effect.gen(function*() {
        const executionId = yield* executionIdOf(executionIdRaw)
        const latest = yield* store.latest(executionId)
        if (Option.isNone(latest)) return yield* new ExecutionNotFound({ executionId })
        const from = latest.value
        return yield* continueLatest(from, yield* decode(from), resumeOptions, events)
      })

    const resumeFromCheckpoint = (id: string, runOptions?: RunOptions) =>
      Effect.gen(function*() {
        const from = yield* Effect.flatMap(Checkpoint.makeCheckpointId(id), store.load)
        const state = yield* decode(from)
        if (from.next.length === 0) return state
        const latest = yield* store.latest(from.executionId)
        const isLatest = Option.isSome(latest) && latest.value.id === from.id
        if (isLatest && (runOptions?.executionId === undefined || runOptions.executionId === from.executionId)) {
          return yield* continueLatest(from, state, runOptions, undefined)
        }
        // An older checkpoint: fork, so that history is never overwritten.
        const executionId = runOptions?.executionId === undefined
          ? yield* Checkpoint.generateExecutionId
          : yield* executionIdOf(runOptions.executionId)
        const targetLatest = runOptions?.executionId === undefined ? Option.none() : yield* store.latest(executionId)
        const metadata = metadataOf(runOptions, { forkedFrom: from.id })
        const base = Option.match(targetLatest, {
          onNone: () => ({ version: 0, id: undefined }),
          onSome: (cp) => ({ version: cp.version, id: cp.id as Checkpoint.CheckpointId | undefined })
        })
        const chain = { version: base.version, parentId: from.id as Checkpoint.CheckpointId | undefined }
        const copy = yield* draftOf(from.nodeName, from.state, from.next, from.runtime)
        const now = yield* Clock.currentTimeMillis
        // The fork starts past the pauses of its first boundary, as a resume would.
        const boundary = yield* boundaryOf(copy, state, false, { fired: bothPauses })
        return yield* execute(newRun({
          executionId,
          owner: newOwner(now),
          metadata,
          mode: "direct",
          leaseTtl: durations.leaseTtl,
          boundary,
          start: base,
          chain,
          rebase: false,
          emit: undefined,
          now
        }))
      })

    /** A worker's run of an execution it claimed (it holds the lease). */
    const runClaimed = (executionId: Checkpoint.ExecutionId, owner: string, leaseTtl: Duration.Duration) =>
      Effect.gen(function*() {
        const latest = yield* store.latest(executionId)
        if (Option.isNone(latest)) return yield* new ExecutionNotFound({ executionId })
        const from = latest.value
        const state = yield* decode(from)
        if (from.next.length === 0) {
          yield* store.release(executionId, { owner, status: "done" })
          return state
        }
        const tasks = (yield* boundaryOf(from, state, true)).tasks
        const written = yield* readWrites(from, tasks)
        const boundary = yield* boundaryOf(from, state, true, { writes: written.byTask, fired: written.fired })
        const forkedFrom = from.metadata.forkedFrom
        const chain = { version: from.version, parentId: from.id as Checkpoint.CheckpointId | undefined }
        return yield* execute(newRun({
          executionId,
          owner,
          metadata: typeof forkedFrom === "string" ? { forkedFrom } : {},
          mode: "worker",
          leaseTtl,
          boundary,
          start: { version: from.version, id: from.id },
          chain,
          rebase: false,
          emit: undefined,
          now: yield* Clock.currentTimeMillis
        }))
      })

    // --- manual saves, start, retry -----------------------------------------------

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
          const item: Item = { _tag: "Checkpoint", checkpoint: cp, execution: patchFor(running, cp) }
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
      run: (events: (event: RunEvent<S>) => Effect.Effect<void>) => Effect.Effect<A, any, any>
    ): Stream.Stream<RunEvent<S>, any, any> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const queue = yield* Queue.unbounded<Exit.Exit<RunEvent<S>, Option.Option<unknown>>>()
        const offer = (event: RunEvent<S>) => Queue.offer(queue, Exit.succeed(event))
        yield* Effect.forkScoped(
          run(offer).pipe(
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
        markFailed: (executionId, owner, error) =>
          store.release(executionId, { owner, status: "failed" }).pipe(
            Effect.zipRight(store.updateExecution(executionId, { failure: failureOf(error) })),
            Effect.ignore
          )
      }
    }
    return runnable as CheckpointableRunnable<S, E, Exclude<R, NodeContext>>
  })


// -----------------------------------------------------------------------------
// The worker
// -----------------------------------------------------------------------------

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
    const ownerError = checkId("ExecutionId", owner)
    if (ownerError !== undefined) return yield* Effect.fail(ownerError)
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

