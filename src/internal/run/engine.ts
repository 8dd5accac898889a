/**
 * The engine of a checkpointed runnable: what every run of it shares — the
 * compiled graph and its configuration, the store, the state's codec, where
 * the runnable last left each execution, the runs going on now — and the
 * superstep boundaries runs move between.
 *
 * @internal
 */
import { Clock, Duration, Effect, Either } from "effect"
import * as Checkpoint from "../../Checkpoint.js"
import type { CheckpointDecodeError, CheckpointEncodeError, StoreError } from "../../CheckpointError.js"
import type * as CheckpointStore from "../../CheckpointStore.js"
import type { CheckpointConfig, RunEvent, TypedCheckpoint } from "../../CheckpointedRunnable.js"
import { type Compiled, GraphValidationError, INPUT, UPDATE } from "../graph.js"
import { checkId } from "../identifier.js"
import { isPlainObject } from "../json.js"
import { uuidv7 } from "../uuid.js"
import type { NodeContextService } from "./context.js"
import type { Item, Saver } from "./saver.js"
import { makeStateCodec } from "./stateCodec.js"
import { type JoinProgress, makeTasks, type Task } from "./superstep.js"

/** How many executions a runnable remembers the position of (see `known`). */
const KNOWN_EXECUTIONS = 1024

/** A superstep boundary: a checkpoint, the state it holds, and what runs next. */
export interface Boundary<S> {
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
export interface CheckpointLike {
  readonly id: Checkpoint.CheckpointId
  readonly nodeName: string
  readonly next: ReadonlyArray<string>
  readonly runtime?: Checkpoint.JsonObject | undefined
}

/** A checkpoint not numbered yet. */
export interface Draft {
  readonly id: Checkpoint.CheckpointId
  readonly nodeName: string
  readonly state: Checkpoint.Json
  readonly next: ReadonlyArray<string>
  readonly runtime: Checkpoint.JsonObject | undefined
  readonly timestamp: Date
}

/** One run (invoke, resume, a worker's run) of one execution. */
export interface Run<S> {
  readonly executionId: Checkpoint.ExecutionId
  readonly owner: string
  readonly metadata: Checkpoint.JsonObject
  readonly saver: Saver
  /** `"direct"` runs settle their execution's status when they fail; a worker's runs leave it to the worker. */
  readonly mode: "direct" | "worker"
  readonly leaseTtl: Duration.Duration
  readonly emit: ((event: RunEvent<S>) => void) | undefined
  /** The next checkpoint's version is `version + 1`, its parent `parentId`. */
  readonly chain: { version: number; parentId: Checkpoint.CheckpointId | undefined }
  boundary: Boundary<S>
  /** The NodeContext of the run's single-task supersteps (see `runner.ts`). */
  context: NodeContextService & { readonly reset: (b: Boundary<S>, task: Task) => unknown }
  supersteps: number
  /** When the lease was last taken or renewed (Clock ms). */
  leaseAt: number
  /** A write of this run marks the execution interrupted (a new interrupt or pause): its end need not. */
  marksInterrupted: boolean
}

export const PAUSE_TASK = "pause"
/** The saved writes of a task that has none. */
export const noWrites: ReadonlyMap<string, Checkpoint.Json> = new Map()
export const emptyWrites: ReadonlyMap<string, ReadonlyMap<string, Checkpoint.Json>> = new Map()
export const emptyFired: ReadonlySet<string> = new Set()
export const emptyAnswers: ReadonlyMap<string, ReadonlyMap<number, unknown>> = new Map()
export const noJoins: JoinProgress = new Map()
export const bothPauses: ReadonlySet<string> = new Set(["after", "before"])

/** The runtime data of a checkpoint, or `undefined` when there is none (a linear graph at state version 1). */
export const runtimeOf = (
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
export const failureOf = (error: unknown): CheckpointStore.Failure => {
  const tag = typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string"
    ? error._tag
    : error instanceof Error
    ? error.name
    : "Unknown"
  const message = error instanceof Error ? error.message : typeof error === "string" ? error : JSON.stringify(error) ?? String(error)
  return { tag, message }
}

export const newOwner = (now: number) => `run-${uuidv7(now)}`

/** The durations of a configuration, decoded once. */
export interface Durations {
  readonly saveInterval: Duration.Duration
  readonly maxSaveLag: number
  readonly leaseTtl: Duration.Duration
  readonly sleepInProcess: number
}

/** Builds the engine of one runnable. */
export const makeEngine = <S>(args: {
  readonly options: CheckpointConfig
  readonly compiled: Compiled<S>
  readonly durations: Durations
  readonly store: CheckpointStore.Service
  readonly defaultExecutionId: Checkpoint.ExecutionId
}) => {
  const { compiled, defaultExecutionId, durations, options, store } = args
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

  /** A checkpoint's fields at `now`, with a fresh id (its state already encoded). */
  const draftAt = (
    now: number,
    nodeName: string,
    state: Checkpoint.Json,
    next: ReadonlyArray<string>,
    runtime: Checkpoint.JsonObject | undefined
  ): Draft => ({ id: uuidv7(now) as Checkpoint.CheckpointId, nodeName, state, next, runtime, timestamp: new Date(now) })

  /** {@link draftAt} the `Clock`'s now. */
  const draftOf = (
    nodeName: string,
    state: Checkpoint.Json,
    next: ReadonlyArray<string>,
    runtime: Checkpoint.JsonObject | undefined
  ): Effect.Effect<Draft> => Effect.map(Clock.currentTimeMillis, (now) => draftAt(now, nodeName, state, next, runtime))

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
  ): Either.Either<ReadonlyArray<Task>, GraphValidationError | CheckpointDecodeError> => {
    const unknownNodes = cp.next.filter((n) => !compiled.nodes.has(n))
    if (unknownNodes.length > 0) {
      return Either.left(
        new GraphValidationError({
          message: `Checkpoint ${JSON.stringify(cp.id)} continues with ${
            unknownNodes.map((n) => `"${n}"`).join(", ")
          }, which ${unknownNodes.length === 1 ? "is not a node" : "are not nodes"} of this graph`,
          issues: unknownNodes.map((n) => `unknown node "${n}"`)
        })
      )
    }
    const sends = cp.runtime?.sends
    if (!isPlainObject(sends)) return Either.right(makeTasks(cp.next.map((node) => ({ node }))))
    const next: Array<{ node: string; input?: unknown }> = []
    for (let i = 0; i < cp.next.length; i++) {
      const input = sends[String(i)]
      if (input === undefined) {
        next.push({ node: cp.next[i]! })
        continue
      }
      const decoded = codec.decodeUpdate(input, cp.id)
      if (Either.isLeft(decoded)) return Either.left(decoded.left)
      next.push({ node: cp.next[i]!, input: decoded.right })
    }
    return Either.right(makeTasks(next))
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

  const metadataOf = (opts: { readonly metadata?: Checkpoint.JsonObject | undefined } | undefined, extra = {}) =>
    ({ ...opts?.metadata, ...extra }) as Checkpoint.JsonObject

  /** A boundary at a checkpoint of the store (`saved`) or at a draft to save, with what its tasks saved. */
  const boundaryOf = (
    cp: Checkpoint.Checkpoint | Draft,
    state: S,
    saved: boolean,
    extra: Partial<Pick<Boundary<S>, "writes" | "fired" | "answers">> = {}
  ): Effect.Effect<Boundary<S>, GraphValidationError | CheckpointDecodeError> =>
    Either.match(boundaryAt(cp, state, saved, extra), { onLeft: Effect.fail, onRight: Effect.succeed })

  /** {@link boundaryOf}, synchronously. */
  const boundaryAt = (
    cp: Checkpoint.Checkpoint | Draft,
    state: S,
    saved: boolean,
    extra: Partial<Pick<Boundary<S>, "writes" | "fired" | "answers">> = {}
  ): Either.Either<Boundary<S>, GraphValidationError | CheckpointDecodeError> =>
    Either.map(tasksOf(cp), (tasks): Boundary<S> => ({
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

  const inputDraft = (input: S) =>
    Effect.flatMap(
      encode(input, undefined),
      (state) => draftOf(INPUT, state, [compiled.entryPoint], inputRuntime)
    )

  /** The runtime of an input checkpoint. */
  const inputRuntime = runtimeOf(undefined, noJoins, [], compiled.version)
  /** The `next` of an input checkpoint. */
  const inputNext: ReadonlyArray<string> = [compiled.entryPoint]

  /** The boundary a fresh run starts at: the input, not saved yet (synchronous: on every invoke's path). */
  const inputBoundary = (input: S, now: number): Either.Either<Boundary<S>, CheckpointEncodeError | GraphValidationError | CheckpointDecodeError> =>
    Either.flatMap(
      codec.encode(input, undefined),
      (state) => boundaryAt(draftAt(now, INPUT, state, inputNext, inputRuntime), input, false)
    )

  /** `executionIdOf`, synchronously. */
  const executionIdAt = (raw: string | undefined): Either.Either<Checkpoint.ExecutionId, StoreError> => {
    const value = raw ?? defaultExecutionId
    const error = checkId("ExecutionId", value)
    return error === undefined ? Either.right(value as Checkpoint.ExecutionId) : Either.left(error)
  }

  return {
    options,
    compiled,
    durations,
    store,
    defaultExecutionId,
    interruptBefore,
    interruptAfter,
    maxCheckpoints,
    codec,
    saving,
    known,
    remember,
    active,
    clockTick,
    executionIdOf,
    encode,
    decode,
    typed,
    draftAt,
    draftOf,
    materialize,
    makeCheckpoint,
    encodeSends,
    tasksOf,
    joinsOf,
    ranOf,
    metadataOf,
    boundaryOf,
    boundaryAt,
    inputBoundary,
    executionIdAt,
    inputDraft
  }
}

/** The engine of a runnable with state `S`. */
export type Engine<S> = ReturnType<typeof makeEngine<S>>

