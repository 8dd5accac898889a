/**
 * Graphs of Effect steps over a Schema-typed state, and the runnables that
 * run them: `compile` for a plain run, `compileCheckpointable` for a run that
 * saves a checkpoint after every superstep and resumes from any of them.
 *
 * A node returns an update of the state (the fields it writes). Nodes that
 * the edges make ready together run together, as one superstep; their
 * updates are applied in a fixed order, so a run is deterministic whatever
 * the timing. Inside a node, `step`, `interrupt` and `sleep` make work
 * durable: a saved step never runs again, a run can wait for a human or a
 * timer as long as it takes.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Graph, MemoryStore } from "effect-checkpoint"
 *
 * const State = Schema.Struct({ topic: Schema.String, notes: Schema.Array(Schema.String) })
 *
 * const graph = Graph.make(State, { reducers: { notes: Graph.Reducer.concat } }).pipe(
 *   Graph.addNode("web", (s) => Effect.succeed({ notes: [`web on ${s.topic}`] })),
 *   Graph.addNode("papers", (s) => Effect.succeed({ notes: [`papers on ${s.topic}`] })),
 *   Graph.addNode("write", (s) => Effect.succeed({ notes: [`summary of ${s.notes.length}`] })),
 *   Graph.setEntryPoint("web"),
 *   Graph.addEdge("web", "papers"),
 *   Graph.addEdge("papers", "write"),
 *   Graph.addEdge("write", Graph.END)
 * )
 *
 * const program = Effect.gen(function*() {
 *   const runnable = yield* Graph.compileCheckpointable(graph)
 *   return yield* runnable.invoke({ topic: "effects", notes: [] })
 * })
 * Effect.runPromise(program.pipe(Effect.provide(MemoryStore.layer)))
 * ```
 *
 * @since 0.1.0
 */
import { type Duration, Effect, Either, Option, type Schema } from "effect"
import { dual } from "effect/Function"
import {
  type AnyNode,
  type AnyRouter,
  type CompileOptions,
  type Graph,
  type GraphInterrupted,
  type GraphOptions,
  type GraphSuspended,
  type GraphValidationError,
  type InvalidResume,
  type InvalidUpdate,
  makeGraph,
  type Reducer as InternalReducer,
  makeSend,
  RecursionLimitExceeded,
  RESERVED,
  type Route,
  type Send,
  type Update,
  validate
} from "./internal/graph.js"
import * as context from "./internal/run/context.js"
import { applyUpdates, makeTasks, planNext, viewOf } from "./internal/run/superstep.js"

export {
  type CompileOptions,
  END,
  ExecutionFinished,
  ExecutionNotFound,
  type Graph,
  GraphInterrupted,
  type GraphOptions,
  GraphSuspended,
  GraphValidationError,
  INPUT,
  InvalidResume,
  InvalidStep,
  InvalidUpdate,
  type Node,
  PendingInterrupt,
  RecursionLimitExceeded,
  type Reducers,
  type Route,
  type Router,
  type Send,
  type TypeId,
  type Update,
  UPDATE
} from "./internal/graph.js"

export { NodeContext } from "./internal/run/context.js"

export {
  type CheckpointableRunnable,
  type CheckpointConfig,
  compileCheckpointable,
  defaultCheckpointConfig,
  type Durability,
  type ReadError,
  type ResumeOptions,
  type RunError,
  type RunEvent,
  type RunOptions,
  type TypedCheckpoint,
  worker,
  workerLayer,
  type WorkerOptions
} from "./CheckpointedRunnable.js"

// -----------------------------------------------------------------------------
// Builders
// -----------------------------------------------------------------------------

/**
 * A new, empty graph for the state described by `schema`. The state is
 * encoded with this Schema before it is saved and decoded when it is loaded,
 * so a `Date`, a branded value or a class comes back as itself.
 *
 * `options.reducers` gives fields a reducer (see {@link Reducer}); a field
 * without one may be written by one task per superstep. `options.version`
 * and `options.migrations` evolve the state's Schema (see the README,
 * "Evolving your state").
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <S, I>(schema: Schema.Schema<S, I>, options: GraphOptions<S> = {}): Graph<S, I> =>
  makeGraph({ schema, options, nodes: new Map(), edges: new Map(), joins: [], entryPoint: undefined, issues: [] })

/**
 * Adds a node: a function from the state to an Effect of an update (the
 * fields it writes; a whole state is a whole update). Its errors and
 * requirements join the graph's.
 *
 * @since 0.1.0
 * @category builders
 */
export const addNode: {
  <S, E2, R2>(
    name: string,
    node: (state: S) => Effect.Effect<NoInfer<Update<S>>, E2, R2>
  ): <I, E, R>(self: Graph<S, I, E, R>) => Graph<S, I, E | E2, R | R2>
  <S, I, E, R, E2, R2>(
    self: Graph<S, I, E, R>,
    name: string,
    node: (state: NoInfer<S>) => Effect.Effect<NoInfer<Update<S>>, E2, R2>
  ): Graph<S, I, E | E2, R | R2>
} = dual(3, <S, I, E, R>(self: Graph<S, I, E, R>, name: string, node: AnyNode): Graph<S, I, any, any> => {
  const issues = [...self.issues]
  if (RESERVED.has(name) || name.length === 0) issues.push(`"${name}" is a reserved node name`)
  else if (self.nodes.has(name)) issues.push(`node "${name}" is added twice`)
  const nodes = new Map(self.nodes)
  if (!nodes.has(name)) nodes.set(name, node)
  return makeGraph({ ...self, nodes, issues })
})

const list = (names: string | ReadonlyArray<string>): ReadonlyArray<string> => typeof names === "string" ? [names] : names

/**
 * Adds an edge.
 *
 * - `addEdge("a", "b")`: after `a`, `b` runs (`Graph.END` finishes).
 * - `addEdge("a", ["b", "c"])` (or several edges from `a`): fan-out — `b`
 *   and `c` run together in the next superstep.
 * - `addEdge(["b", "c"], "d")`: fan-in — `d` runs once, after both `b` and
 *   `c` finished (since `d` last ran), whichever superstep each ran in.
 *
 * @since 0.1.0
 * @category builders
 */
export const addEdge: {
  (from: string | ReadonlyArray<string>, to: string | ReadonlyArray<string>): <S, I, E, R>(self: Graph<S, I, E, R>) => Graph<S, I, E, R>
  <S, I, E, R>(self: Graph<S, I, E, R>, from: string | ReadonlyArray<string>, to: string | ReadonlyArray<string>): Graph<S, I, E, R>
} = dual(3, <S, I, E, R>(self: Graph<S, I, E, R>, from: string | ReadonlyArray<string>, to: string | ReadonlyArray<string>) => {
  if (typeof from !== "string") {
    const joins = [...self.joins, ...list(to).map((target) => ({ sources: [...from], target }))]
    return makeGraph({ ...self, joins })
  }
  const edges = new Map(self.edges)
  edges.set(from, [...(edges.get(from) ?? []), { _tag: "Static", to: list(to) }])
  return makeGraph({ ...self, edges })
})

/**
 * Adds a conditional edge: after `from` runs, `router` picks what runs next
 * from the new state — a node name, `END`, a {@link send}, or several of them
 * (fan-out). It may return plainly or as an Effect; its errors and
 * requirements join the graph's. The pick is saved in the checkpoint's
 * `next`, so a resumed run does not ask the router again.
 *
 * `paths`, when given, lists every name the router may return: `compile`
 * checks them, and a pick outside them fails the run.
 *
 * @since 0.1.0
 * @category builders
 */
export const addConditionalEdges: {
  <S, E2 = never, R2 = never>(
    from: string,
    router: (state: S) => Route<S> | Effect.Effect<Route<S>, E2, R2>,
    paths?: ReadonlyArray<string>
  ): <I, E, R>(self: Graph<S, I, E, R>) => Graph<S, I, E | E2, R | R2>
  <S, I, E, R, E2 = never, R2 = never>(
    self: Graph<S, I, E, R>,
    from: string,
    router: (state: NoInfer<S>) => Route<NoInfer<S>> | Effect.Effect<Route<NoInfer<S>>, E2, R2>,
    paths?: ReadonlyArray<string>
  ): Graph<S, I, E | E2, R | R2>
} = dual(
  (args) => typeof args[0] !== "string",
  <S, I, E, R>(self: Graph<S, I, E, R>, from: string, route: AnyRouter, paths?: ReadonlyArray<string>) => {
    const edges = new Map(self.edges)
    edges.set(from, [...(edges.get(from) ?? []), { _tag: "Conditional", route, paths }])
    return makeGraph({ ...self, edges })
  }
)

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

/**
 * A task of `node` whose view of the state has `input` merged in (for
 * map-reduce: a router returns one send per item). Several sends to one node
 * are several tasks of the next superstep. A send's input is saved with the
 * checkpoint that schedules it, so a resume runs exactly the same tasks.
 *
 * @example
 * ```ts
 * Graph.addConditionalEdges("plan", (s) => s.topics.map((topic) => Graph.send("search", { topic })))
 * ```
 *
 * @since 0.2.0
 * @category builders
 */
export const send = <S>(node: string, input: Update<S>): Send<S> => makeSend(node, input)

/**
 * Folds the values written to one field in a superstep: `current` is the
 * value so far, `update` a task's value (tasks in order).
 *
 * @since 0.2.0
 * @category reducers
 */
export type Reducer<A> = InternalReducer<A>

/**
 * Ready-made reducers for `Graph.make(schema, { reducers })`: each folds the
 * values tasks write to a field into the value the superstep began with, in
 * task order. Any `(current, update) => next` function is a reducer too.
 *
 * @since 0.2.0
 * @category reducers
 */
export const Reducer = {
  /** Appends arrays (an append reducer: checkpoints store only what each appended, see the README). */
  concat: <A>(current: ReadonlyArray<A>, update: ReadonlyArray<A>): ReadonlyArray<A> => [...current, ...update],
  /** Adds numbers. */
  sum: (current: number, update: number): number => current + update,
  /** Merges objects by key (later tasks win per key). */
  merge: <V>(current: { readonly [key: string]: V }, update: { readonly [key: string]: V }): { readonly [key: string]: V } => ({
    ...current,
    ...update
  }),
  /** The larger number. */
  max: (current: number, update: number): number => Math.max(current, update),
  /** The smaller number. */
  min: (current: number, update: number): number => Math.min(current, update)
} as const

// -----------------------------------------------------------------------------
// Inside a node
// -----------------------------------------------------------------------------

/**
 * A memoized step: runs `effect` once per task, saves its success (encoded
 * with `schema`) before returning it, and when the task runs again (after a
 * crash, a later failure or an interrupt) returns the saved result without
 * running `effect`. Failures are not saved: a rerun retries the effect. Step
 * names are unique within a task (`[A-Za-z0-9._:-]`, up to 100 characters).
 * A result that encodes to `undefined` (`Schema.Void`) is saved as `null`
 * and replayed as `undefined`.
 *
 * With `durability: "exit"`, step results are saved only when the run stops
 * early (a failure, an interrupt), like the rest of that mode's saves.
 *
 * @example
 * ```ts
 * const draft = (s: State) => Effect.gen(function*() {
 *   const text = yield* Graph.step("draft", llm.write(s.topic), Schema.String)
 *   return { text }
 * })
 * ```
 *
 * @since 0.2.0
 * @category durable
 */
export const step: <A, I, E, R>(
  name: string,
  effect: Effect.Effect<A, E, R>,
  schema: Schema.Schema<A, I>
) => Effect.Effect<A, E | context.PrimitiveError, R | context.NodeContext> = context.step

/**
 * Pauses the run for a human: the first time, the task's saved steps stay,
 * the execution becomes `interrupted` and the run fails with
 * `GraphInterrupted { when: "during", interruptId, payload }`. A later
 * `resume(executionId, { value })` reruns the task, and this call returns
 * `value` decoded with `schema` (a value that does not decode fails the
 * resume with `InvalidResume` and saves nothing). Several interrupts in one
 * task are answered in order; parallel tasks' interrupts by id
 * (`{ values: { [interruptId]: value } }`).
 *
 * @since 0.2.0
 * @category durable
 */
export const interrupt: <A, I>(
  schema: Schema.Schema<A, I>,
  payload: unknown
) => Effect.Effect<A, GraphInterrupted | InvalidResume | context.PrimitiveError, context.NodeContext> =
  context.interrupt

/**
 * A durable timer: the wake-up time is saved; a short wait (up to the
 * runnable's `sleepInProcess`) happens in process, a longer one stops the
 * run with `GraphSuspended { wakeAt }` (the execution is `sleeping`) and a
 * worker resumes it when it is due. A resume before then waits the rest.
 * Uses `Clock`, so it runs under `TestClock`.
 *
 * @since 0.2.0
 * @category durable
 */
export const sleep: (
  duration: Duration.DurationInput
) => Effect.Effect<void, GraphSuspended | context.PrimitiveError, context.NodeContext> = context.sleep

/**
 * {@link sleep} until a time.
 *
 * @since 0.2.0
 * @category durable
 */
export const sleepUntil: (
  wakeAt: Date
) => Effect.Effect<void, GraphSuspended | context.PrimitiveError, context.NodeContext> = context.sleepUntil

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
  /** Runs from the entry point with `input` to the end and returns the final state. */
  readonly invoke: (
    input: S
  ) => Effect.Effect<S, E | GraphValidationError | RecursionLimitExceeded | InvalidUpdate | GraphInterrupted, R>
}

/**
 * Checks the graph and compiles it into a plain {@link Runnable}: supersteps,
 * reducers and sends as with checkpoints, nothing saved. `step` runs its
 * effect, `sleep` waits in process, and `interrupt` fails the run with
 * `GraphInterrupted` (nothing to resume: use `compileCheckpointable` for
 * that). Fails with `GraphValidationError` listing every problem.
 *
 * @since 0.1.0
 * @category compile
 */
export const compile = <S, I, E, R>(
  graph: Graph<S, I, E, R>,
  options?: CompileOptions
): Effect.Effect<Runnable<S, E, Exclude<R, context.NodeContext>>, GraphValidationError> =>
  Effect.map(validate(graph, options), (compiled) => ({
    invoke: (input: S) =>
      Effect.gen(function*() {
        let state = input
        let tasks = makeTasks([{ node: compiled.entryPoint }])
        let joins: ReadonlyMap<string, ReadonlySet<string>> = new Map()
        let steps = 0
        while (tasks.length > 0) {
          if (steps >= compiled.recursionLimit) return yield* new RecursionLimitExceeded({ limit: compiled.recursionLimit })
          steps++
          const current = state
          const finished = yield* Effect.forEach(tasks, (task) =>
            Effect.map(
              (compiled.nodes.get(task.node)!(viewOf(current, task)) as Effect.Effect<unknown, E, R>).pipe(
                Effect.provideService(context.NodeContext, plainContext(task.node, task.id))
              ),
              (update) => ({ task, update })
            ), { concurrency: tasks.length === 1 ? undefined : compiled.maxConcurrency ?? "unbounded" })
          state = yield* Either.match(applyUpdates(compiled, current, finished), {
            onLeft: Effect.fail,
            onRight: Effect.succeed
          })
          const planned = planNext(compiled, tasks, state, joins)
          const plan = Effect.isEffect(planned) ? yield* planned : planned
          tasks = makeTasks(plan.next)
          joins = plan.joins
        }
        return state
      }) as Effect.Effect<S, any, any>
  }))

/** The context of a task of a plain run: nothing is saved, nothing can be resumed. */
const plainContext = (node: string, taskId: string): context.NodeContextService => {
  const steps = new Set<string>()
  let interrupts = 0
  let sleeps = 0
  return {
    executionId: "",
    checkpointId: "",
    taskId,
    node,
    saved: new Map(),
    write: () => Effect.void,
    resumeValue: () => Option.none(),
    inProcessSleepMs: Number.POSITIVE_INFINITY,
    claimStep: (name) => steps.has(name) ? false : (steps.add(name), true),
    nextInterrupt: () => interrupts++,
    nextSleep: () => sleeps++
  }
}
