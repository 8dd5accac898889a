/**
 * The graph value, its compiled form and its errors, shared by the public
 * `Graph` module (builders, `compile`) and the checkpointed run engine
 * (`CheckpointedRunnable`), which must not import each other.
 *
 * @internal
 */
import { Effect, Schema } from "effect"
export { ExecutionNotFound } from "../CheckpointError.js"
import type { Pipeable } from "effect/Pipeable"
import { pipeArguments } from "effect/Pipeable"

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

export const TypeId: unique symbol = Symbol.for("effect-checkpoint/Graph")

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

export type AnyNode = (state: any) => Effect.Effect<any, any, any>
export type AnyRouter = (state: any) => string | Effect.Effect<string, any, any>
export type Edge = { readonly _tag: "Static"; readonly to: string } | { readonly _tag: "Conditional"; readonly route: AnyRouter }

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

export const makeGraph = <S, I, E, R>(fields: Omit<Graph<S, I, E, R>, TypeId | "pipe">): Graph<S, I, E, R> =>
  Object.assign(Object.create(proto), { [TypeId]: TypeId, ...fields })

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

/** The default `recursionLimit`. */
export const DEFAULT_RECURSION_LIMIT = 25

// -----------------------------------------------------------------------------
// Compile
// -----------------------------------------------------------------------------

export interface Compiled<S> {
  readonly nodes: ReadonlyMap<string, AnyNode>
  readonly edges: ReadonlyMap<string, Edge>
  readonly entryPoint: string
  readonly recursionLimit: number
  readonly schema: Schema.Schema<S, any>
}

export const validate = <S, I, E, R>(
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
  const limit = options?.recursionLimit ?? DEFAULT_RECURSION_LIMIT
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
export const route = <S>(graph: Compiled<S>, from: string, state: S): Effect.Effect<string, any, any> => {
  const edge = graph.edges.get(from)!
  if (edge._tag === "Static") return Effect.succeed(edge.to)
  const picked = edge.route(state)
  const check = (to: string) => to === END || graph.nodes.has(to) ? Effect.succeed(to) : Effect.fail(unknownTarget(from, to))
  return Effect.isEffect(picked) ? Effect.flatMap(picked as Effect.Effect<string, any, any>, check) : check(picked)
}

