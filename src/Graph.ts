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
import { Effect, type Schema } from "effect"
import { dual } from "effect/Function"
import {
  type AnyNode,
  type AnyRouter,
  type CompileOptions,
  type Edge,
  END,
  type Graph,
  GraphValidationError,
  makeGraph,
  RecursionLimitExceeded,
  RESERVED,
  route,
  validate
} from "./internal/graph.js"

export {
  /**
   * The options of {@link compile} (and part of `CheckpointConfig`).
   *
   * @since 0.1.0
   * @category models
   */
  type CompileOptions,
  END,
  ExecutionNotFound,
  type Graph,
  GraphInterrupted,
  GraphValidationError,
  INPUT,
  type Node,
  RecursionLimitExceeded,
  type Router,
  type TypeId,
  UPDATE
} from "./internal/graph.js"

export {
  type CheckpointableRunnable,
  type CheckpointConfig,
  compileCheckpointable,
  defaultCheckpointConfig,
  type Durability,
  type ReadError,
  type ResumeOptions,
  type RunError,
  type RunOptions,
  type TypedCheckpoint
} from "./CheckpointedRunnable.js"

// -----------------------------------------------------------------------------
// Builders
// -----------------------------------------------------------------------------

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
// Compile
// -----------------------------------------------------------------------------

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

