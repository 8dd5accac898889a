/**
 * Graphs of Effect steps over a Schema-typed state, and the runnables that
 * execute them: `compile` for a plain run, `compileCheckpointable` for a run
 * that saves a checkpoint after every step and can be resumed from any of them.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Graph, MemoryStore } from "effect-checkpoint"
 *
 * const State = Schema.Struct({ step: Schema.Int, history: Schema.Array(Schema.String) })
 *
 * const graph = Graph.make(State).pipe(
 *   Graph.addNode("step1", (s) => Effect.succeed({ step: 1, history: [...s.history, "one"] })),
 *   Graph.addNode("step2", (s) => Effect.succeed({ step: 2, history: [...s.history, "two"] })),
 *   Graph.addEdge("step1", "step2"),
 *   Graph.addEdge("step2", Graph.END),
 *   Graph.setEntryPoint("step1")
 * )
 *
 * const program = Effect.gen(function*() {
 *   const runnable = yield* Graph.compileCheckpointable(graph)
 *   const final = yield* runnable.invoke({ step: 0, history: [] })
 *   const checkpoints = yield* runnable.listCheckpoints()
 *   return { final, checkpoints }
 * })
 *
 * Effect.runPromise(program.pipe(Effect.provide(MemoryStore.layer)))
 * ```
 *
 * @since 0.1.0
 */
import {
  Cause,
  Clock,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  Option,
  ParseResult,
  Schema
} from "effect"
import { dual } from "effect/Function"
import { type Pipeable, pipeArguments } from "effect/Pipeable"
import * as Checkpoint from "./Checkpoint.js"
import {
  CheckpointConflict,
  CheckpointDecodeError,
  CheckpointEncodeError,
  type CheckpointNotFound,
  type StoreError
} from "./CheckpointError.js"
import * as CheckpointStore from "./CheckpointStore.js"
import { checkId } from "./internal/identifier.js"
import { uuidv7 } from "./internal/uuid.js"

// -----------------------------------------------------------------------------
// Names
// -----------------------------------------------------------------------------

/**
 * The name a router returns (or an edge points to) to finish the run.
 *
 * @since 0.1.0
 * @category constants
 */
export const END = "__end__" as const

/**
 * The `nodeName` of the checkpoint that holds a run's input state.
 *
 * @since 0.1.0
 * @category constants
 */
export const INPUT = "__input__" as const

/**
 * The `nodeName` of the checkpoint `resume({ update })` saves for the edited state.
 *
 * @since 0.1.0
 * @category constants
 */
export const UPDATE = "__update__" as const

const RESERVED = new Set<string>([END, INPUT, UPDATE])

/** How many executions a runnable remembers the position of (see `known` in `compileCheckpointable`). */
const KNOWN_EXECUTIONS = 1024

// -----------------------------------------------------------------------------
// Errors
// -----------------------------------------------------------------------------

/**
 * The graph is not runnable: an unknown node in an edge, no entry point, a
 * duplicate or reserved node name, a node with no way out (or two). At run
 * time, a router that names an unknown node, or a checkpoint whose `next`
 * names one, fails the same way.
 *
 * @since 0.1.0
 * @category errors
 */
export class GraphValidationError extends Schema.TaggedError<GraphValidationError>()("GraphValidationError", {
  message: Schema.String,
  issues: Schema.Array(Schema.String)
}) {}

/**
 * A run executed `limit` nodes without reaching `END` (a loop that does not
 * stop). The checkpoints saved so far stay, so the run can be resumed with a
 * higher limit.
 *
 * @since 0.1.0
 * @category errors
 */
export class RecursionLimitExceeded extends Schema.TaggedError<RecursionLimitExceeded>()("RecursionLimitExceeded", {
  limit: Schema.Number,
  executionId: Schema.optional(Schema.String)
}) {
  override get message(): string {
    return `Recursion limit of ${this.limit} node executions reached without reaching END` +
      (this.executionId === undefined ? "" : ` in execution ${JSON.stringify(this.executionId)}`)
  }
}

/**
 * `resume` was asked to continue an execution that has no checkpoints.
 *
 * @since 0.1.0
 * @category errors
 */
export class ExecutionNotFound extends Schema.TaggedError<ExecutionNotFound>()("ExecutionNotFound", {
  executionId: Schema.String
}) {
  override get message(): string {
    return `Execution ${JSON.stringify(this.executionId)} has no checkpoints`
  }
}

/**
 * The run stopped at a node listed in `interruptBefore` or `interruptAfter`
 * (a pause, e.g. for a human). Everything up to the pause is saved;
 * `resume(executionId)` continues from there (optionally with `update`).
 *
 * @since 0.1.0
 * @category errors
 */
export class GraphInterrupted extends Schema.TaggedError<GraphInterrupted>()("GraphInterrupted", {
  executionId: Schema.String,
  node: Schema.String,
  when: Schema.Literal("before", "after"),
  checkpointId: Schema.optional(Schema.String)
}) {
  override get message(): string {
    return `Execution ${JSON.stringify(this.executionId)} paused ${this.when} node ${JSON.stringify(this.node)}`
  }
}

// -----------------------------------------------------------------------------
// Graph (builder)
// -----------------------------------------------------------------------------

const TypeId: unique symbol = Symbol.for("effect-checkpoint/Graph")

/**
 * @since 0.1.0
 * @category symbols
 */
export type TypeId = typeof TypeId

/**
 * A node: a step from one state to the next.
 *
 * @since 0.1.0
 * @category models
 */
export type Node<S, E = never, R = never> = (state: S) => Effect.Effect<S, E, R>

/**
 * A router: picks the node that runs next (or `END`), plainly or as an Effect.
 *
 * @since 0.1.0
 * @category models
 */
export type Router<S, E = never, R = never> = (state: S) => string | Effect.Effect<string, E, R>

type AnyNode = (state: any) => Effect.Effect<any, any, any>
type AnyRouter = (state: any) => string | Effect.Effect<string, any, any>
type Edge = { readonly _tag: "Static"; readonly to: string } | { readonly _tag: "Conditional"; readonly route: AnyRouter }

/**
 * A graph of nodes over the state `S` (encoded as `I` by its Schema). `E` and
 * `R` accumulate the errors and requirements of its nodes and routers. A
 * graph is an immutable value: every builder returns a new one.
 *
 * @since 0.1.0
 * @category models
 */
export interface Graph<in out S, in out I = S, out E = never, out R = never> extends Pipeable {
  readonly [TypeId]: { readonly _E: (_: never) => E; readonly _R: (_: never) => R; readonly _I: (_: never) => I }
  readonly schema: Schema.Schema<S, I>
  readonly nodes: ReadonlyMap<string, AnyNode>
  readonly edges: ReadonlyMap<string, ReadonlyArray<Edge>>
  readonly entryPoint: string | undefined
  /** Problems found while building (duplicate or reserved names), reported by `compile`. */
  readonly issues: ReadonlyArray<string>
}

const proto = {
  pipe() {
    return pipeArguments(this, arguments)
  }
}

const makeGraph = <S, I, E, R>(fields: Omit<Graph<S, I, E, R>, TypeId | "pipe">): Graph<S, I, E, R> =>
  Object.assign(Object.create(proto), { [TypeId]: TypeId, ...fields })

/**
 * A new, empty graph for the state described by `schema`. The state is
 * encoded with this Schema before it is saved and decoded when it is loaded,
 * so a `Date`, a branded value or a class comes back as itself.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <S, I>(schema: Schema.Schema<S, I>): Graph<S, I> =>
  makeGraph({ schema, nodes: new Map(), edges: new Map(), entryPoint: undefined, issues: [] })

/**
 * Adds a node. Its errors and requirements join the graph's.
 *
 * @since 0.1.0
 * @category builders
 */
export const addNode: {
  <S, E2, R2>(
    name: string,
    node: (state: S) => Effect.Effect<NoInfer<S>, E2, R2>
  ): <I, E, R>(self: Graph<S, I, E, R>) => Graph<S, I, E | E2, R | R2>
  <S, I, E, R, E2, R2>(
    self: Graph<S, I, E, R>,
    name: string,
    node: (state: NoInfer<S>) => Effect.Effect<NoInfer<S>, E2, R2>
  ): Graph<S, I, E | E2, R | R2>
} = dual(3, <S, I, E, R>(self: Graph<S, I, E, R>, name: string, node: AnyNode): Graph<S, I, any, any> => {
  const issues = [...self.issues]
  if (RESERVED.has(name) || name.length === 0) issues.push(`"${name}" is a reserved node name`)
  else if (self.nodes.has(name)) issues.push(`node "${name}" is added twice`)
  const nodes = new Map(self.nodes)
  if (!nodes.has(name)) nodes.set(name, node)
  return makeGraph({ ...self, nodes, issues })
})

const withEdge = <S, I, E, R>(self: Graph<S, I, E, R>, from: string, edge: Edge): Graph<S, I, any, any> => {
  const edges = new Map(self.edges)
  edges.set(from, [...(edges.get(from) ?? []), edge])
  return makeGraph({ ...self, edges })
}

/**
 * Adds an edge: after `from` runs, `to` runs (or the run ends, for `END`).
 *
 * @since 0.1.0
 * @category builders
 */
export const addEdge: {
  (from: string, to: string): <S, I, E, R>(self: Graph<S, I, E, R>) => Graph<S, I, E, R>
  <S, I, E, R>(self: Graph<S, I, E, R>, from: string, to: string): Graph<S, I, E, R>
} = dual(3, <S, I, E, R>(self: Graph<S, I, E, R>, from: string, to: string) =>
  withEdge(self, from, { _tag: "Static", to }))

/**
 * Adds a conditional edge: after `from` runs, `router` picks the next node
 * from the new state (or `END`). The router may return the name plainly or as
 * an Effect; its errors and requirements join the graph's. The pick is saved
 * in the checkpoint's `next`, so a resumed run does not ask the router again.
 *
 * @since 0.1.0
 * @category builders
 */
export const addConditionalEdges: {
  <S, E2 = never, R2 = never>(
    from: string,
    router: (state: S) => string | Effect.Effect<string, E2, R2>
  ): <I, E, R>(self: Graph<S, I, E, R>) => Graph<S, I, E | E2, R | R2>
  <S, I, E, R, E2 = never, R2 = never>(
    self: Graph<S, I, E, R>,
    from: string,
    router: (state: NoInfer<S>) => string | Effect.Effect<string, E2, R2>
  ): Graph<S, I, E | E2, R | R2>
} = dual(3, <S, I, E, R>(self: Graph<S, I, E, R>, from: string, route: AnyRouter) =>
  withEdge(self, from, { _tag: "Conditional", route }))

/**
 * Sets the node a run starts at.
 *
 * @since 0.1.0
 * @category builders
 */
export const setEntryPoint: {
  (name: string): <S, I, E, R>(self: Graph<S, I, E, R>) => Graph<S, I, E, R>
  <S, I, E, R>(self: Graph<S, I, E, R>, name: string): Graph<S, I, E, R>
} = dual(2, <S, I, E, R>(self: Graph<S, I, E, R>, name: string) => makeGraph({ ...self, entryPoint: name }))

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/**
 * Options of {@link compile} (and part of {@link CheckpointConfig}).
 *
 * @since 0.1.0
 * @category models
 */
export interface CompileOptions {
  /** The most node executions one run (invoke or resume) may make before `RecursionLimitExceeded`. Default 25. */
  readonly recursionLimit?: number | undefined
  /** Pause the run before these nodes run (`GraphInterrupted`); checkpointed runs only. */
  readonly interruptBefore?: ReadonlyArray<string> | undefined
  /** Pause the run after these nodes run and their checkpoint is saved; checkpointed runs only. */
  readonly interruptAfter?: ReadonlyArray<string> | undefined
}

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
  recursionLimit: 25
}

// -----------------------------------------------------------------------------
// Compile
// -----------------------------------------------------------------------------

interface Compiled<S> {
  readonly nodes: ReadonlyMap<string, AnyNode>
  readonly edges: ReadonlyMap<string, Edge>
  readonly entryPoint: string
  readonly recursionLimit: number
  readonly schema: Schema.Schema<S, any>
}

const validate = <S, I, E, R>(
  graph: Graph<S, I, E, R>,
  options: CompileOptions | undefined
): Effect.Effect<Compiled<S>, GraphValidationError> => {
  const issues = [...graph.issues]
  const known = (name: string) => graph.nodes.has(name)
  if (graph.entryPoint === undefined) issues.push("no entry point: call setEntryPoint")
  else if (!known(graph.entryPoint)) issues.push(`the entry point "${graph.entryPoint}" is not a node`)
  const edges = new Map<string, Edge>()
  for (const [from, list] of graph.edges) {
    if (!known(from)) issues.push(`an edge starts at "${from}", which is not a node`)
    if (list.length > 1) issues.push(`node "${from}" has ${list.length} outgoing edges; a node has exactly one`)
    for (const edge of list) {
      if (edge._tag === "Static" && edge.to !== END && !known(edge.to)) {
        issues.push(`the edge "${from}" → "${edge.to}" points to an unknown node`)
      }
    }
    edges.set(from, list[0]!)
  }
  for (const name of graph.nodes.keys()) {
    if (!graph.edges.has(name)) issues.push(`node "${name}" has no way out: add an edge (to END to finish)`)
  }
  for (const name of [...(options?.interruptBefore ?? []), ...(options?.interruptAfter ?? [])]) {
    if (!known(name)) issues.push(`interrupt at "${name}", which is not a node`)
  }
  const limit = options?.recursionLimit ?? defaultCheckpointConfig.recursionLimit
  if (!Number.isInteger(limit) || limit < 1) issues.push(`recursionLimit must be a positive integer, got ${limit}`)
  if (issues.length > 0) {
    return Effect.fail(
      new GraphValidationError({ message: `Invalid graph: ${issues.join("; ")}`, issues })
    )
  }
  return Effect.succeed({
    nodes: graph.nodes,
    edges,
    entryPoint: graph.entryPoint!,
    recursionLimit: limit,
    schema: graph.schema
  })
}

const unknownTarget = (from: string, to: string) =>
  new GraphValidationError({
    message: `The router of "${from}" picked "${to}", which is not a node`,
    issues: [`unknown node "${to}"`]
  })

/** The node that runs after `from` for `state` (or END). */
const route = <S>(graph: Compiled<S>, from: string, state: S): Effect.Effect<string, any, any> => {
  const edge = graph.edges.get(from)!
  if (edge._tag === "Static") return Effect.succeed(edge.to)
  const picked = edge.route(state)
  const check = (to: string) => to === END || graph.nodes.has(to) ? Effect.succeed(to) : Effect.fail(unknownTarget(from, to))
  return Effect.isEffect(picked) ? Effect.flatMap(picked as Effect.Effect<string, any, any>, check) : check(picked)
}

/**
 * A compiled graph without checkpoints.
 *
 * @since 0.1.0
 * @category models
 */
export interface Runnable<S, E = never, R = never> {
  /** Runs from the entry point with `input` to `END` and returns the final state. */
  readonly invoke: (input: S) => Effect.Effect<S, E | GraphValidationError | RecursionLimitExceeded, R>
}

/**
 * Checks the graph and compiles it into a plain {@link Runnable} (no
 * checkpoints). Fails with `GraphValidationError` listing every problem.
 *
 * @since 0.1.0
 * @category compile
 */
export const compile = <S, I, E, R>(
  graph: Graph<S, I, E, R>,
  options?: CompileOptions
): Effect.Effect<Runnable<S, E, R>, GraphValidationError> =>
  Effect.map(validate(graph, options), (compiled) => ({
    invoke: (input: S) =>
      Effect.gen(function*() {
        let state = input
        let node: string = compiled.entryPoint
        let steps = 0
        while (node !== END) {
          if (steps >= compiled.recursionLimit) return yield* new RecursionLimitExceeded({ limit: compiled.recursionLimit })
          steps++
          state = yield* compiled.nodes.get(node)!(state)
          node = yield* route(compiled, node, state)
        }
        return state
      })
  }))

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
 * The failures of reading checkpoints.
 *
 * @since 0.1.0
 * @category models
 */
export type ReadError = CheckpointDecodeError | StoreError

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

/** A save failure, stamped with when it happened relative to other failures of the run. */
interface Failure {
  readonly cause: Cause.Cause<CheckpointStore.SaveError | ReadError>
  readonly at: number
}

/**
 * How a run stops when one of its saves failed: the run fails with this
 * marker, and `execute` puts the save's own failure in its place (once, in
 * time order with any other failure). It never leaves this module.
 */
class SaveFailed {
  readonly _tag = "SaveFailed"
}
const saveFailed = new SaveFailed()

interface Pending {
  /** Replaced when the run is renumbered (see `rebase`). */
  checkpoint: Checkpoint.Checkpoint
  readonly done: Deferred.Deferred<Checkpoint.Checkpoint, CheckpointStore.SaveError | ReadError> | undefined
}

/**
 * How a run's first write is checked. Every run writes its first checkpoints
 * on the condition that the execution is where the run thinks it is (`expect`),
 * so nothing is read before a run and two writers never interleave. When
 * `rebase` is on (a fresh `invoke`, which does not depend on the execution's
 * past), a failed condition makes the saver read the execution's latest
 * checkpoint, renumber what the run made so far after it, and write again;
 * otherwise (a resume, which continues a particular checkpoint) it fails.
 */
interface FirstWrite {
  readonly expect: CheckpointStore.Expectation
  readonly rebase: boolean
}

/**
 * The saves of one run. Checkpoints are handed over in version order and
 * written by one save fiber at a time, all pending ones together (one
 * `saveMany`), so they land in order and a failure leaves a gap-free prefix.
 * The save fiber is a daemon: interrupting the run never cuts a save in the
 * middle; the run awaits it (`drain`) before it returns. A save that is
 * waited for while nothing else is pending is written inline, without a fiber.
 */
interface Saver {
  /** Hands a checkpoint over; fails at once if an earlier save failed. With `wait`, returns it once it landed. */
  readonly enqueue: (
    checkpoint: Checkpoint.Checkpoint,
    wait: boolean
  ) => Effect.Effect<Checkpoint.Checkpoint, CheckpointStore.SaveError | ReadError>
  /** Fails with `SaveFailed` if a save failed (the step-boundary check). */
  readonly check: Effect.Effect<void, SaveFailed>
  /** Waits until every handed-over checkpoint landed or was dropped after a failure. */
  readonly drain: Effect.Effect<void>
  readonly failure: () => Failure | undefined
}

const isSaveFailed = (cause: Cause.Cause<unknown>): boolean =>
  Option.exists(Cause.failureOption(cause), (e) => e instanceof SaveFailed)

/** A conditional save whose condition did not hold (as opposed to a taken id or version). */
const isExpectationConflict = (cause: Cause.Cause<unknown>): boolean =>
  Option.exists(
    Cause.failureOption(cause),
    (e) => e instanceof CheckpointConflict && e.expectedLatestVersion !== undefined
  )

const makeSaver = (
  store: CheckpointStore.Service,
  clockTick: () => number,
  run: Chain,
  first: FirstWrite
): Saver => {
  const pending: Array<Pending> = []
  /**
   * The save fiber: `undefined` when none is going; `"scheduled"` when one was
   * forked but has not started (whoever comes first — that fiber, or a run
   * that must wait anyway — does the writing); or the running fiber.
   */
  let flusher: Fiber.RuntimeFiber<void> | "scheduled" | undefined
  /** Tells a forked fiber whether it is still the one that should write. */
  let generation = 0
  let failure: Failure | undefined
  /** The condition of the next write, until one write landed. */
  let expect: CheckpointStore.Expectation | undefined = first.expect
  let mayRebase = first.rebase
  const landed = () => {
    expect = undefined
  }
  const settle = (batch: ReadonlyArray<Pending>, exit: Exit.Exit<void, CheckpointStore.SaveError | ReadError>) =>
    Effect.forEach(
      batch,
      (p) => p.done === undefined ? Effect.void : Deferred.done(p.done, Exit.as(exit, p.checkpoint)),
      { discard: true }
    )
  const fail = (cause: Cause.Cause<CheckpointStore.SaveError | ReadError>) => {
    failure ??= { cause, at: clockTick() }
  }
  /**
   * The execution is not where this run thought (another writer, or this
   * runnable did not know it): read where it is and renumber everything this
   * run made so far to follow it. Nothing of the run has landed yet.
   */
  const rebase = (batch: ReadonlyArray<Pending>) =>
    Effect.map(store.latest(run.executionId), (latest) => {
      const base = Option.match(latest, { onNone: () => 0, onSome: (cp) => cp.version })
      const delta = base - expect!.latestVersion
      const firstId = batch[0]!.checkpoint.id
      const latestId = Option.getOrUndefined(Option.map(latest, (cp) => cp.id))
      const renumber = (cp: Checkpoint.Checkpoint) => {
        const { parentId: previous, ...rest } = cp
        const parentId = cp.id === firstId ? latestId : previous
        return new Checkpoint.Checkpoint(
          { ...rest, version: cp.version + delta, ...(parentId === undefined ? {} : { parentId }) },
          true
        )
      }
      for (const p of [...batch, ...pending]) p.checkpoint = renumber(p.checkpoint)
      run.version += delta
      expect = { executionId: run.executionId, latestVersion: base }
      mayRebase = false
    })
  /** Writes a batch: all together; if that fails as a whole, one by one, so the longest good prefix still lands. */
  const write = (batch: ReadonlyArray<Pending>): Effect.Effect<void, CheckpointStore.SaveError | ReadError> =>
    Effect.suspend(() => {
      const options = expect === undefined ? undefined : { expect }
      const cps = batch.map((p) => p.checkpoint)
      const all = cps.length === 1 ? store.save(cps[0]!, options) : store.saveMany(cps, options)
      return Effect.catchAllCause(
        Effect.tap(all, landed),
        (cause): Effect.Effect<void, CheckpointStore.SaveError | ReadError> => {
          if (options !== undefined && isExpectationConflict(cause)) {
            return mayRebase ? Effect.zipRight(rebase(batch), write(batch)) : Effect.failCause(cause)
          }
          if (cps.length === 1) return Effect.failCause(cause)
          return Effect.forEach(
            cps,
            (cp, i) => Effect.tap(store.save(cp, i === 0 ? options : undefined), landed),
            { discard: true }
          )
        }
      )
    })
  /** Writes everything pending, batch after batch, until nothing is left or a write fails. */
  const flushAll: Effect.Effect<void> = Effect.suspend(() => {
    if (pending.length === 0) return Effect.void
    const batch = pending.splice(0, pending.length)
    return Effect.matchCauseEffect(write(batch), {
      onFailure: (cause) => {
        fail(cause)
        // Nothing after a failed save may land: drop the rest, so what is stored stays a gap-free prefix.
        const dropped = pending.splice(0, pending.length)
        return settle([...batch, ...dropped], Exit.failCause(cause))
      },
      onSuccess: () => Effect.zipRight(settle(batch, Exit.void), flushAll)
    })
  })
  /** The body of a forked save fiber: it writes only if nobody wrote in its place before it started. */
  const forked = (gen: number): Effect.Effect<void> =>
    Effect.withFiberRuntime((fiber) => {
      if (flusher !== "scheduled" || gen !== generation) return Effect.void
      flusher = fiber as Fiber.RuntimeFiber<void>
      return Effect.ensuring(flushAll, Effect.sync(() => flusher = undefined))
    })
  /** Writes what is pending in this fiber, whole (an interruption never cuts a save). */
  const flushHere = Effect.suspend(() => {
    generation++
    flusher = undefined
    return Effect.uninterruptible(flushAll)
  })
  const failed = Effect.suspend(() => failure === undefined ? Effect.void : Effect.failCause(failure.cause))
  const check = Effect.suspend(() => failure === undefined ? Effect.void : Effect.fail(saveFailed))
  /** Until every handed-over checkpoint landed: take over a fiber that has not started, await one that has. */
  const drain: Effect.Effect<void> = Effect.suspend(() =>
    flusher === undefined
      ? Effect.void
      : flusher === "scheduled"
      ? Effect.zipRight(flushHere, drain)
      : Effect.zipRight(Fiber.await(flusher), drain)
  )
  return {
    check,
    enqueue: (checkpoint, wait) =>
      Effect.suspend(() => {
        if (failure !== undefined) return Effect.as(failed, checkpoint)
        const entry: Pending = {
          checkpoint,
          done: wait && typeof flusher === "object"
            ? Deferred.unsafeMake<Checkpoint.Checkpoint, CheckpointStore.SaveError | ReadError>(undefined as never)
            : undefined
        }
        pending.push(entry)
        if (wait && entry.done === undefined) {
          // No save fiber is writing: write it (and anything pending before it) here.
          return Effect.zipRight(flushHere, Effect.suspend(() => Effect.as(failed, entry.checkpoint)))
        }
        const start = flusher !== undefined
          ? Effect.void
          : Effect.suspend(() => {
            flusher = "scheduled"
            return Effect.asVoid(Effect.forkDaemon(forked(generation)))
          })
        return entry.done === undefined ? Effect.as(start, checkpoint) : Effect.zipRight(start, Deferred.await(entry.done))
      }),
    drain,
    failure: () => failure
  }
}

/** Where a run stands: the last completed step, its state, and what runs next. */
interface Position<S> {
  readonly nodeName: string
  readonly state: S
  readonly next: ReadonlyArray<string>
  /** Already saved as a checkpoint. */
  readonly saved: boolean
}

/** Where the next checkpoint of an execution goes: its version and the checkpoint it follows. */
interface Chain {
  readonly executionId: Checkpoint.ExecutionId
  version: number
  parentId: Checkpoint.CheckpointId | undefined
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
