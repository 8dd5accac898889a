/**
 * Supersteps: the tasks of one step of a run, the state they see, how their
 * updates fold into the next state (in task order, with reducers), and which
 * tasks run next (edges, routers, sends, fan-ins). Pure planning, shared by
 * the plain runner (`Graph.compile`) and the checkpointed one.
 *
 * @internal
 */
import { Effect, Either } from "effect"
import {
  type Compiled,
  END,
  GraphValidationError,
  InvalidUpdate,
  isSend,
  type Join
} from "../graph.js"
import { isPlainObject } from "../json.js"

/** One task of a superstep: a node, and (for a send) its own input. */
export interface Task {
  readonly index: number
  /** Stable across reruns: the task's index in its checkpoint's `next`, zero-padded. */
  readonly id: string
  readonly node: string
  /** The send's input (decoded), merged into the task's view of the state. */
  readonly input: unknown
}

/** What a finished task returned. */
export interface Finished {
  readonly task: Task
  readonly update: unknown
}

/** Task ids of a superstep of `count` tasks (all of one width, so they sort as numbers). */
export const taskId = (index: number, count: number): string =>
  String(index).padStart(Math.max(4, String(Math.max(0, count - 1)).length), "0")

export const makeTasks = (
  next: ReadonlyArray<{ readonly node: string; readonly input?: unknown }>
): ReadonlyArray<Task> => next.map((t, index) => ({ index, id: taskId(index, next.length), node: t.node, input: t.input }))

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** `state` with `update`'s fields written over it, keeping the state's prototype (a Schema.Class state stays one). */
const overwrite = (state: Record<string, unknown>, update: Record<string, unknown>): Record<string, unknown> => {
  const out: Record<string, unknown> = isPlainObject(state) ? { ...state } : Object.assign(Object.create(Object.getPrototypeOf(state)), state)
  for (const key of Object.keys(update)) {
    const value = update[key]
    if (value !== undefined) out[key] = value
  }
  return out
}

/** The state a task sees: the superstep's state, with a send's input merged in. */
export const viewOf = <S>(state: S, task: Task): S =>
  task.input === undefined || !isObject(state) || !isObject(task.input)
    ? state
    : overwrite(state, task.input) as S

/**
 * The state after a superstep: the updates applied in task order onto the
 * state the superstep began with. A field with a reducer folds every value
 * written to it; a field without one may be written by one task only.
 */
export const applyUpdates = <S>(
  compiled: Compiled<S>,
  state: S,
  finished: ReadonlyArray<Finished>
): Either.Either<S, InvalidUpdate> => {
  if (finished.length === 1 && compiled.reducers.size === 0) {
    const update = finished[0]!.update
    return Either.right(isObject(state) && isObject(update) ? overwrite(state, update) as S : update as S)
  }
  if (!isObject(state)) {
    if (finished.length === 1) return Either.right(finished[0]!.update as S)
    return Either.left(invalid("(the whole state)", finished.map((f) => f.task.node)))
  }
  const out: Record<string, unknown> = isPlainObject(state)
    ? { ...state }
    : Object.assign(Object.create(Object.getPrototypeOf(state)), state)
  const writers = new Map<string, Array<string>>()
  for (const { task, update } of finished) {
    if (!isObject(update)) {
      if (finished.length > 1) return Either.left(invalid("(the whole state)", finished.map((f) => f.task.node)))
      return Either.right(update as S)
    }
    for (const key of Object.keys(update)) {
      const value = update[key]
      if (value === undefined) continue
      const reducer = compiled.reducers.get(key)
      if (reducer !== undefined) {
        out[key] = reducer(out[key], value)
        continue
      }
      const by = writers.get(key)
      if (by !== undefined) return Either.left(invalid(key, [...by, task.node]))
      writers.set(key, [task.node])
      out[key] = value
    }
  }
  return Either.right(out as S)
}

const invalid = (field: string, nodes: ReadonlyArray<string>) =>
  new InvalidUpdate({
    field,
    nodes,
    message: `Nodes ${nodes.map((n) => JSON.stringify(n)).join(" and ")} both wrote ${field} in one superstep, ` +
      `and it has no reducer: give it one (Graph.make(schema, { reducers })) or let one node write it`
  })

/** The fan-in progress of a run: join key → the sources finished since its target last ran. */
export type JoinProgress = ReadonlyMap<string, ReadonlySet<string>>

/** What runs after a superstep. */
export interface Plan {
  readonly next: ReadonlyArray<{ readonly node: string; readonly input?: unknown }>
  readonly joins: JoinProgress
}

const unknownTarget = (from: string, to: string, paths: ReadonlyArray<string> | undefined) =>
  new GraphValidationError({
    message: paths === undefined || !paths.includes(to)
      ? `The router of "${from}" picked "${to}", which is ${paths === undefined ? "not a node" : "not one of its declared paths"}`
      : `The router of "${from}" picked "${to}", which is not a node`,
    issues: [`unknown node "${to}"`]
  })

/**
 * The tasks of the next superstep: for each finished task in task order, its
 * edges' targets (a router sees the new state) and the fan-ins it completes.
 * A node named by several tasks runs once; every send is its own task.
 *
 * Synchronous (a plan) unless a router returns an Effect (then an Effect of it).
 */
export const planNext = <S>(
  compiled: Compiled<S>,
  finished: ReadonlyArray<Task>,
  state: S,
  joins: JoinProgress
): Plan | Effect.Effect<Plan, GraphValidationError> => {
  const next: Array<{ node: string; input?: unknown }> = []
  const scheduled = new Set<string>()
  let progress: Map<string, Set<string>> | undefined
  const schedule = (node: string) => {
    if (!scheduled.has(node)) {
      scheduled.add(node)
      next.push({ node })
    }
  }
  /** Adds what a router picked; the error when it picked something that cannot run. */
  const routed = (from: string, paths: ReadonlyArray<string> | undefined, route: unknown): GraphValidationError | undefined => {
    for (const target of Array.isArray(route) ? route : [route]) {
      if (isSend(target)) {
        if (!compiled.nodes.has(target.node)) return unknownTarget(from, target.node, undefined)
        next.push({ node: target.node, input: target.input })
      } else if (typeof target === "string") {
        if (target === END) continue
        if (!compiled.nodes.has(target) || (paths !== undefined && !paths.includes(target))) {
          return unknownTarget(from, target, paths)
        }
        schedule(target)
      } else {
        return new GraphValidationError({
          message: `The router of "${from}" returned ${String(target)}, which is neither a node name, END nor a send`,
          issues: ["bad route"]
        })
      }
    }
    return undefined
  }
  /** Plans from task `t`, edge `e` on; suspends into an Effect at the first router that returns one. */
  const from = (t: number, e: number): Plan | Effect.Effect<Plan, GraphValidationError> => {
    for (; t < finished.length; t++, e = 0) {
      const task = finished[t]!
      const edges = compiled.edges.get(task.node) ?? noEdges
      for (; e < edges.length; e++) {
        const edge = edges[e]!
        if (edge._tag === "Static") {
          for (const to of edge.to) if (to !== END) schedule(to)
          continue
        }
        const picked = edge.route(state)
        if (Effect.isEffect(picked)) {
          const resume = { t, e: e + 1 }
          return Effect.flatMap(picked as Effect.Effect<unknown, GraphValidationError>, (route) => {
            const error = routed(task.node, edge.paths, route)
            return error !== undefined ? Effect.fail(error) : lift(from(resume.t, resume.e))
          })
        }
        const error = routed(task.node, edge.paths, picked)
        if (error !== undefined) return Effect.fail(error)
      }
      for (const join of compiled.joinsBySource.get(task.node) ?? []) {
        progress ??= new Map([...joins].map(([k, v]) => [k, new Set(v)]))
        const done = progress.get(join.key) ?? new Set<string>()
        done.add(task.node)
        if (complete(join, done)) {
          progress.delete(join.key)
          schedule(join.target)
        } else progress.set(join.key, done)
      }
    }
    return { next, joins: progress ?? joins }
  }
  return from(0, 0)
}

const noEdges: ReadonlyArray<never> = []
const lift = <A, E>(a: A | Effect.Effect<A, E>): Effect.Effect<A, E> => Effect.isEffect(a) ? a as Effect.Effect<A, E> : Effect.succeed(a as A)

const complete = (join: Join, done: ReadonlySet<string>) => join.sources.every((s) => done.has(s))

/** A multi-task superstep's checkpoint `nodeName`: its nodes, each once, in task order, joined with `+`. */
export const stepName = (tasks: ReadonlyArray<Task>): string => [...new Set(tasks.map((t) => t.node))].join("+")
