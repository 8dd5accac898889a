/**
 * The graph value, its compiled form and its errors, shared by the public
 * `Graph` module (builders, `compile`) and the checkpointed run engine
 * (`CheckpointedRunnable`), which must not import each other.
 *
 * @internal
 */
import { Effect, Schema } from "effect"
import type { Pipeable } from "effect/Pipeable"
import { pipeArguments } from "effect/Pipeable"
import { Json } from "../Checkpoint.js"
export { ExecutionNotFound } from "../CheckpointError.js"

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

/** Names no node may have. */
export const RESERVED: ReadonlySet<string> = new Set<string>([END, INPUT, UPDATE])

// -----------------------------------------------------------------------------
// Errors
// -----------------------------------------------------------------------------

/**
 * The graph is not runnable: an unknown node in an edge, no entry point, a
 * duplicate or reserved node name, a node with no way out, a fan-in that
 * waits for a node that can never run. At run time, a router or a send that
 * names an unknown node, or a checkpoint whose `next` names one, fails the
 * same way.
 *
 * @since 0.1.0
 * @category errors
 */
export class GraphValidationError extends Schema.TaggedError<GraphValidationError>()("GraphValidationError", {
  message: Schema.String,
  issues: Schema.Array(Schema.String)
}) {}

/**
 * A run made `limit` supersteps without finishing (a loop that does not
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
    return `Recursion limit of ${this.limit} supersteps reached without finishing` +
      (this.executionId === undefined ? "" : ` in execution ${JSON.stringify(this.executionId)}`)
  }
}

/**
 * One pending interrupt of a task (see {@link GraphInterrupted}).
 *
 * @since 0.2.0
 * @category models
 */
export const PendingInterrupt = Schema.Struct({
  interruptId: Schema.String,
  node: Schema.String,
  payload: Json
})

/**
 * @since 0.2.0
 * @category models
 */
export type PendingInterrupt = typeof PendingInterrupt.Type

/**
 * The run paused for a human, and everything up to the pause is saved:
 *
 * - `when: "before"` / `"after"`: at a node listed in `interruptBefore` /
 *   `interruptAfter`; `resume(executionId)` goes on (optionally with `update`);
 * - `when: "during"`: a node called `Graph.interrupt(schema, payload)`;
 *   `resume(executionId, { value })` reruns that task and `interrupt` returns
 *   the value. When parallel tasks interrupted, `interrupts` lists them all:
 *   resume them with `{ values: { [interruptId]: value } }`.
 *
 * The execution is `interrupted`: a worker never claims it.
 *
 * @since 0.1.0
 * @category errors
 */
export class GraphInterrupted extends Schema.TaggedError<GraphInterrupted>()("GraphInterrupted", {
  executionId: Schema.String,
  node: Schema.String,
  when: Schema.Literal("before", "after", "during"),
  /** The checkpoint the run continues from on resume. */
  checkpointId: Schema.String,
  /** For `"during"`: the interrupt to answer. */
  interruptId: Schema.optional(Schema.String),
  /** For `"during"`: what the node asked (a JSON value). */
  payload: Schema.optional(Json),
  /** For `"during"`: every interrupt pending in the superstep, in task order. */
  interrupts: Schema.optional(Schema.Array(PendingInterrupt))
}) {
  override get message(): string {
    return this.when === "during"
      ? `Execution ${JSON.stringify(this.executionId)} was interrupted by node ${JSON.stringify(this.node)} ` +
        `(interrupt ${JSON.stringify(this.interruptId)})`
      : `Execution ${JSON.stringify(this.executionId)} paused ${this.when} node ${JSON.stringify(this.node)}`
  }
}

/**
 * A node slept (`Graph.sleep`/`sleepUntil`) longer than the run waits in
 * process: the wake-up time is saved, the execution is `sleeping`, and the
 * run stopped. A worker resumes it when it is due; a `resume` before then
 * waits the rest.
 *
 * @since 0.2.0
 * @category errors
 */
export class GraphSuspended extends Schema.TaggedError<GraphSuspended>()("GraphSuspended", {
  executionId: Schema.String,
  wakeAt: Schema.DateFromSelf,
  checkpointId: Schema.String
}) {
  override get message(): string {
    return `Execution ${JSON.stringify(this.executionId)} sleeps until ${this.wakeAt.toISOString()}`
  }
}

/**
 * Tasks of one superstep wrote the same field, which has no reducer: the
 * run cannot know which value wins. Give the field a reducer
 * (`Graph.make(schema, { reducers })`) or let one task write it.
 *
 * @since 0.2.0
 * @category errors
 */
export class InvalidUpdate extends Schema.TaggedError<InvalidUpdate>()("InvalidUpdate", {
  field: Schema.String,
  nodes: Schema.Array(Schema.String),
  message: Schema.String
}) {}

/**
 * `resume(executionId, { update })` of an execution that finished: editing a
 * finished run needs `allowFinished: true`.
 *
 * @since 0.2.0
 * @category errors
 */
export class ExecutionFinished extends Schema.TaggedError<ExecutionFinished>()("ExecutionFinished", {
  executionId: Schema.String,
  checkpointId: Schema.String
}) {
  override get message(): string {
    return `Execution ${JSON.stringify(this.executionId)} has finished; pass allowFinished: true to update its final state`
  }
}

/**
 * A resume could not hand its value to an interrupt: the value does not
 * decode with the interrupt's Schema (`cause` holds the parse error), no
 * interrupt is pending, or `value` is ambiguous (several are pending: use
 * `values` by id). Nothing was saved: the execution is still interrupted.
 *
 * @since 0.2.0
 * @category errors
 */
export class InvalidResume extends Schema.TaggedError<InvalidResume>()("InvalidResume", {
  executionId: Schema.String,
  message: Schema.String,
  interruptId: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Unknown)
}) {}

/**
 * A node called `Graph.step` twice with one name in one task; step names
 * must be unique within a task (they key the saved results). Also raised for
 * a step name outside `[A-Za-z0-9._:-]{1,100}`.
 *
 * @since 0.2.0
 * @category errors
 */
export class InvalidStep extends Schema.TaggedError<InvalidStep>()("InvalidStep", {
  name: Schema.String,
  node: Schema.String,
  message: Schema.String
}) {}

// -----------------------------------------------------------------------------
// Graph (builder)
// -----------------------------------------------------------------------------

export const TypeId: unique symbol = Symbol.for("effect-checkpoint/Graph")

/**
 * @since 0.1.0
 * @category symbols
 */
export type TypeId = typeof TypeId

/**
 * An update a node returns: the fields it writes. A full state is a full
 * update (0.1.0 nodes keep working).
 *
 * @since 0.2.0
 * @category models
 */
export type Update<S> = S extends object ? Partial<S> : S

/**
 * A node: a step from the state to an update of it.
 *
 * @since 0.1.0
 * @category models
 */
export type Node<S, E = never, R = never> = (state: S) => Effect.Effect<Update<S>, E, R>

const SendTypeId: unique symbol = Symbol.for("effect-checkpoint/Graph/Send")

/**
 * One task of `node` with its own `input` merged into its view of the state
 * (map-reduce). Made with `Graph.send`; a router returns sends.
 *
 * @since 0.2.0
 * @category models
 */
export interface Send<S = unknown> {
  readonly [SendTypeId]: typeof SendTypeId
  readonly node: string
  readonly input: Update<S>
}

export const makeSend = <S>(node: string, input: Update<S>): Send<S> => ({ [SendTypeId]: SendTypeId, node, input })

export const isSend = (u: unknown): u is Send<unknown> => typeof u === "object" && u !== null && SendTypeId in u

/**
 * What a router returns: a node name, `END`, a send, or several of them.
 *
 * @since 0.2.0
 * @category models
 */
export type Route<S> = string | Send<S> | ReadonlyArray<string | Send<S>>

/**
 * A router: picks what runs next, plainly or as an Effect.
 *
 * @since 0.1.0
 * @category models
 */
export type Router<S, E = never, R = never> = (state: S) => Route<S> | Effect.Effect<Route<S>, E, R>

/**
 * Folds the values written to one field in a superstep: `current` is the
 * value so far, `update` a task's value (tasks in order).
 *
 * @since 0.2.0
 * @category models
 */
export type Reducer<A> = (current: A, update: A) => A

/**
 * Reducers by field of the state.
 *
 * @since 0.2.0
 * @category models
 */
export type Reducers<S> = { readonly [K in keyof S]?: Reducer<S[K]> }

/**
 * Options of `Graph.make`.
 *
 * @since 0.2.0
 * @category models
 */
export interface GraphOptions<S> {
  /** Per-field reducers; a field without one may be written by one task per superstep. */
  readonly reducers?: Reducers<S> | undefined
  /** The version of the state's Schema (default 1); checkpoints record it. */
  readonly version?: number | undefined
  /**
   * `migrations[n]` turns a state encoded at version `n` into version `n + 1`
   * (encoded → encoded). Loading an older checkpoint applies them in order.
   */
  readonly migrations?: { readonly [from: number]: (encoded: any) => unknown } | undefined
}

export type AnyNode = (state: any) => Effect.Effect<any, any, any>
export type AnyRouter = (state: any) => unknown
export type Edge =
  | { readonly _tag: "Static"; readonly to: ReadonlyArray<string> }
  | { readonly _tag: "Conditional"; readonly route: AnyRouter; readonly paths: ReadonlyArray<string> | undefined }

/** A fan-in: `target` runs once every source has finished since it last ran. */
export interface Join {
  readonly sources: ReadonlyArray<string>
  readonly target: string
}

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
  readonly options: GraphOptions<S>
  readonly nodes: ReadonlyMap<string, AnyNode>
  readonly edges: ReadonlyMap<string, ReadonlyArray<Edge>>
  readonly joins: ReadonlyArray<Join>
  readonly entryPoint: string | undefined
  /** Problems found while building (duplicate or reserved names), reported by `compile`. */
  readonly issues: ReadonlyArray<string>
}

const proto = {
  pipe() {
    return pipeArguments(this, arguments)
  }
}

export const makeGraph = <S, I, E, R>(fields: Omit<Graph<S, I, E, R>, TypeId | "pipe">): Graph<S, I, E, R> =>
  Object.assign(Object.create(proto), { [TypeId]: TypeId, ...fields })

/**
 * Options of `compile` (and part of `CheckpointConfig`).
 *
 * @since 0.1.0
 * @category models
 */
export interface CompileOptions {
  /** The most supersteps one run (invoke or resume) may make before `RecursionLimitExceeded`. Default 25. */
  readonly recursionLimit?: number | undefined
  /** How many tasks of one superstep run at once. Default: all of them. */
  readonly maxConcurrency?: number | undefined
  /** Pause the run before these nodes run (`GraphInterrupted`); checkpointed runs only. */
  readonly interruptBefore?: ReadonlyArray<string> | undefined
  /** Pause the run after these nodes run and their checkpoint is saved; checkpointed runs only. */
  readonly interruptAfter?: ReadonlyArray<string> | undefined
}

/** The default `recursionLimit`. */
export const DEFAULT_RECURSION_LIMIT = 25

// -----------------------------------------------------------------------------
// Compile
// -----------------------------------------------------------------------------

/** A graph checked and indexed for running. */
export interface Compiled<S> {
  readonly nodes: ReadonlyMap<string, AnyNode>
  readonly edges: ReadonlyMap<string, ReadonlyArray<Edge>>
  readonly joins: ReadonlyArray<Join & { readonly key: string }>
  /** source → the joins it feeds */
  readonly joinsBySource: ReadonlyMap<string, ReadonlyArray<Join & { readonly key: string }>>
  readonly entryPoint: string
  readonly recursionLimit: number
  readonly maxConcurrency: number | undefined
  readonly reducers: ReadonlyMap<string, Reducer<any>>
  readonly schema: Schema.Schema<S, any>
  readonly version: number
  readonly migrations: ReadonlyMap<number, (encoded: any) => unknown>
}

/** The stable key of a join in a checkpoint's `runtime.joins`. */
export const joinKey = (join: Join): string => `${join.sources.join("+")}>${join.target}`

const fieldsOf = (schema: Schema.Schema<any, any>): ReadonlySet<string> | undefined => {
  const fields = (schema as { readonly fields?: unknown }).fields
  return typeof fields === "object" && fields !== null ? new Set(Object.keys(fields)) : undefined
}

/** Nodes that may run at all: reachable from the entry point by edges and fan-ins. */
const reachable = (graph: Graph<any, any, any, any>): ReadonlySet<string> => {
  const seen = new Set<string>()
  const todo: Array<string> = []
  const visit = (name: string) => {
    if (!seen.has(name) && graph.nodes.has(name)) {
      seen.add(name)
      todo.push(name)
    }
  }
  if (graph.entryPoint !== undefined) visit(graph.entryPoint)
  while (todo.length > 0) {
    const name = todo.pop()!
    for (const edge of graph.edges.get(name) ?? []) {
      if (edge._tag === "Static") edge.to.forEach(visit)
      else if (edge.paths !== undefined) edge.paths.forEach(visit)
      else graph.nodes.forEach((_, n) => visit(n)) // a router without declared paths may pick any node
    }
    for (const join of graph.joins) {
      if (join.sources.every((s) => seen.has(s))) visit(join.target)
    }
  }
  return seen
}

export const validate = <S, I, E, R>(
  graph: Graph<S, I, E, R>,
  options: CompileOptions | undefined
): Effect.Effect<Compiled<S>, GraphValidationError> => {
  const issues = [...graph.issues]
  const known = (name: string) => graph.nodes.has(name)
  if (graph.entryPoint === undefined) issues.push("no entry point: call setEntryPoint")
  else if (!known(graph.entryPoint)) issues.push(`the entry point "${graph.entryPoint}" is not a node`)
  for (const [from, list] of graph.edges) {
    if (!known(from)) issues.push(`an edge starts at "${from}", which is not a node`)
    for (const edge of list) {
      const targets = edge._tag === "Static" ? edge.to : edge.paths ?? []
      for (const to of targets) {
        if (to !== END && !known(to)) issues.push(`the edge "${from}" → "${to}" points to an unknown node`)
      }
      if (edge._tag === "Static" && edge.to.length === 0) issues.push(`the edge from "${from}" goes nowhere`)
    }
  }
  const joins = graph.joins.map((join) => ({ ...join, key: joinKey(join) }))
  const joinsBySource = new Map<string, Array<Join & { readonly key: string }>>()
  for (const join of joins) {
    if (join.target === END) issues.push(`a fan-in cannot lead to END (from ${join.sources.map((s) => `"${s}"`).join(", ")})`)
    else if (!known(join.target)) issues.push(`the fan-in into "${join.target}" points to an unknown node`)
    if (join.sources.length === 0) issues.push(`the fan-in into "${join.target}" has no sources`)
    for (const source of join.sources) {
      if (!known(source)) issues.push(`the fan-in into "${join.target}" waits for "${source}", which is not a node`)
      joinsBySource.set(source, [...(joinsBySource.get(source) ?? []), join])
    }
  }
  for (const name of graph.nodes.keys()) {
    if (!graph.edges.has(name) && !joinsBySource.has(name)) {
      issues.push(`node "${name}" has no way out: add an edge (to END to finish)`)
    }
  }
  if (graph.entryPoint !== undefined && known(graph.entryPoint)) {
    const runs = reachable(graph)
    for (const join of joins) {
      for (const source of join.sources) {
        if (known(source) && !runs.has(source)) {
          issues.push(`the fan-in into "${join.target}" waits for "${source}", which can never run`)
        }
      }
    }
  }
  for (const name of [...(options?.interruptBefore ?? []), ...(options?.interruptAfter ?? [])]) {
    if (!known(name)) issues.push(`interrupt at "${name}", which is not a node`)
  }
  const limit = options?.recursionLimit ?? DEFAULT_RECURSION_LIMIT
  if (!Number.isInteger(limit) || limit < 1) issues.push(`recursionLimit must be a positive integer, got ${limit}`)
  const concurrency = options?.maxConcurrency
  if (concurrency !== undefined && !(Number.isInteger(concurrency) && concurrency >= 1)) {
    issues.push(`maxConcurrency must be a positive integer, got ${concurrency}`)
  }
  const reducers = new Map<string, Reducer<any>>()
  const fields = fieldsOf(graph.schema)
  for (const [field, reducer] of Object.entries(graph.options.reducers ?? {})) {
    if (typeof reducer !== "function") issues.push(`the reducer of "${field}" is not a function`)
    else if (fields !== undefined && !fields.has(field)) issues.push(`a reducer is given for "${field}", which is not a field of the state`)
    else reducers.set(field, reducer as Reducer<any>)
  }
  const version = graph.options.version ?? 1
  if (!Number.isInteger(version) || version < 1) issues.push(`version must be a positive integer, got ${version}`)
  const migrations = new Map<number, (encoded: any) => unknown>()
  for (const [from, migrate] of Object.entries(graph.options.migrations ?? {})) {
    const n = Number(from)
    if (!Number.isInteger(n) || n < 1 || n >= version) {
      issues.push(`a migration is given from version ${from}, which is not a version before ${version}`)
    } else if (typeof migrate !== "function") issues.push(`the migration from version ${from} is not a function`)
    else migrations.set(n, migrate)
  }
  if (issues.length > 0) {
    return Effect.fail(new GraphValidationError({ message: `Invalid graph: ${issues.join("; ")}`, issues }))
  }
  return Effect.succeed({
    nodes: graph.nodes,
    edges: graph.edges,
    joins,
    joinsBySource,
    entryPoint: graph.entryPoint!,
    recursionLimit: limit,
    maxConcurrency: concurrency,
    reducers,
    schema: graph.schema,
    version,
    migrations
  })
}
