/**
 * Supersteps (API.md §8, §14) on every engine store: tasks of one superstep
 * really run at once (and no more than `maxConcurrency` of them), their
 * updates fold in task order whatever the timing, fan-outs, fan-ins, routers
 * and sends schedule what they should, send inputs survive a resume, and a
 * task whose update is saved never runs again — after a sibling's failure, an
 * interrupt, a failed checkpoint save or (at the end of this file) a SIGKILL.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Option, Schema, Stream } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import type * as Checkpoint from "../src/Checkpoint.js"
import { CheckpointStoreError } from "../src/CheckpointError.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import { freshExecution } from "../src/testing.js"
import * as FanoutCrash from "./fixtures/fanout-crash-graph.js"
import { engineStores, layerOfSpec, sharedStoreSpecs, tempDir } from "./fixtures/stores.js"

// -----------------------------------------------------------------------------
// Fixtures
// -----------------------------------------------------------------------------

const State = Schema.Struct({
  log: Schema.Array(Schema.String),
  total: Schema.Number,
  owner: Schema.String,
  tags: Schema.Record({ key: Schema.String, value: Schema.String }),
  hi: Schema.Number,
  lo: Schema.Number,
  digits: Schema.Number,
  item: Schema.String,
  at: Schema.Date
})
type State = typeof State.Type

const input: State = { log: [], total: 0, owner: "", tags: {}, hi: 0, lo: 100, digits: 0, item: "", at: new Date(0) }

/** Every ready-made reducer, and a custom one whose result shows the fold order (digits in task order). */
const reducers = {
  log: Graph.Reducer.concat,
  total: Graph.Reducer.sum,
  tags: Graph.Reducer.merge,
  hi: Graph.Reducer.max,
  lo: Graph.Reducer.min,
  digits: (current: number, update: number) => current * 10 + update
}

class Boom extends Schema.TaggedError<Boom>()("Boom", { node: Schema.String }) {}

/** Calls and side effects of the nodes of one test. */
interface Probe {
  readonly calls: Record<string, number>
  readonly effects: Array<string>
}
const probe = (): Probe => ({ calls: {}, effects: [] })

/**
 * A node that counts its calls, runs `before(attempt)` (wait, fail…), then
 * does its side effect and returns `update`.
 */
const counted = (
  p: Probe,
  name: string,
  update: Partial<State>,
  before?: (attempt: number) => Effect.Effect<void, Boom>
) =>
(_: State) =>
  Effect.gen(function*() {
    const attempt = p.calls[name] = (p.calls[name] ?? 0) + 1
    if (before !== undefined) yield* before(attempt)
    p.effects.push(name)
    return update
  })

type Before = (attempt: number) => Effect.Effect<void, Boom>

/** start → [a, b, c] → done → END, each task appending its name; `behave` delays or fails a task. */
const fanOut3 = (p: Probe, behave: { readonly a?: Before; readonly b?: Before; readonly c?: Before } = {}) =>
  Graph.make(State, { reducers }).pipe(
    Graph.addNode("start", counted(p, "start", { log: ["start"] })),
    Graph.addNode("a", counted(p, "a", { log: ["a"], total: 1 }, behave.a)),
    Graph.addNode("b", counted(p, "b", { log: ["b"], total: 2 }, behave.b)),
    Graph.addNode("c", counted(p, "c", { log: ["c"], total: 3 }, behave.c)),
    Graph.addNode("done", counted(p, "done", { owner: "done" })),
    Graph.setEntryPoint("start"),
    Graph.addEdge("start", ["a", "b", "c"]),
    Graph.addEdge(["a", "b", "c"], "done"),
    Graph.addEdge("done", Graph.END)
  )

const fanOut3Final = { ...input, log: ["start", "a", "b", "c"], total: 6, owner: "done" }

/** The recorded shape of a checkpoint sequence (what determinism compares). */
const shape = (cps: ReadonlyArray<Checkpoint.Checkpoint>) =>
  cps.map((c) => ({ version: c.version, nodeName: c.nodeName, next: c.next, runtime: c.runtime }))

const storeService = CheckpointStore.CheckpointStore
const rawList = (e: Checkpoint.ExecutionId) => Effect.flatMap(storeService, (s) => s.list(e))
const latestOf = (e: Checkpoint.ExecutionId) =>
  Effect.flatMap(storeService, (s) => Effect.map(s.latest(e), Option.getOrThrow))
const writesOf = (id: Checkpoint.CheckpointId) => Effect.flatMap(storeService, (s) => s.listWrites(id))

/** A small seeded PRNG (mulberry32), so a failing determinism run can be replayed. */
const seeded = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** The error a failed Exit carries (its first failure), for assertions. */
const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

/**
 * Runs a stream of a run, completing `finished[node]` when a task of that
 * node finished — its update handed to the store ("async"), saved ("sync") or
 * buffered ("exit"). A node that must fail only after its siblings finished
 * waits for these, so what it races is the engine's bookkeeping, not time.
 */
const drive = <E>(
  stream: Stream.Stream<Graph.RunEvent<State>, E>,
  finished: Record<string, Deferred.Deferred<void>>
) =>
  Effect.exit(Stream.runForEach(stream, (event) =>
    event._tag === "TaskFinished" && finished[event.node] !== undefined
      ? Deferred.succeed(finished[event.node]!, undefined)
      : Effect.void))

const noSaves = { maxCheckpoints: 0 } as const

// -----------------------------------------------------------------------------
// On every engine store
// -----------------------------------------------------------------------------

describe.each(engineStores)("supersteps on the %s store", (_name, storeLayer) => {
  const test = (title: string, body: () => Effect.Effect<unknown, unknown, CheckpointStore.CheckpointStore>, timeout?: number) =>
    it.live(title, () => body().pipe(Effect.provide(storeLayer)), timeout)

  test("concurrency is real: two tasks that each wait for the other's signal finish; with maxConcurrency 1 they cannot", () =>
    Effect.gen(function*() {
      const handshake = (aReady: Deferred.Deferred<void>, bReady: Deferred.Deferred<void>) =>
        Graph.make(State, { reducers }).pipe(
          Graph.addNode("start", (_: State) => Effect.succeed({})),
          Graph.addNode("a", (_: State) =>
            Effect.as(Effect.zipRight(Deferred.succeed(aReady, undefined), Deferred.await(bReady)), { log: ["a"] })),
          Graph.addNode("b", (_: State) =>
            Effect.as(Effect.zipRight(Deferred.succeed(bReady, undefined), Deferred.await(aReady)), { log: ["b"] })),
          Graph.setEntryPoint("start"),
          Graph.addEdge("start", ["a", "b"]),
          Graph.addEdge("a", Graph.END),
          Graph.addEdge("b", Graph.END)
        )
      const fresh = Effect.all([Deferred.make<void>(), Deferred.make<void>()])
      // A sequential engine would wait for ever in "a": the generous timeout only bounds a broken engine.
      const [a1, b1] = yield* fresh
      const runnable = yield* Graph.compileCheckpointable(handshake(a1, b1), noSaves)
      const out = yield* runnable.invoke(input, { executionId: yield* freshExecution("handshake") }).pipe(Effect.timeout("20 seconds"))
      expect(out.log).toEqual(["a", "b"])
      // The plain runnable too (§14: §8 applies to Graph.compile).
      const [a2, b2] = yield* fresh
      const plain = yield* Graph.compile(handshake(a2, b2))
      expect((yield* plain.invoke(input).pipe(Effect.timeout("20 seconds"))).log).toEqual(["a", "b"])
      // One at a time, "a" waits for a "b" that cannot start: a deadlock. Once "a" is waiting, a broken
      // bound would let "b" start at once; it never does, and the run never finishes.
      const [a3, b3] = yield* fresh
      const serial = yield* Graph.compileCheckpointable(handshake(a3, b3), { ...noSaves, maxConcurrency: 1 })
      const stuck = yield* Effect.fork(serial.invoke(input, { executionId: yield* freshExecution("serial") }))
      yield* Deferred.await(a3).pipe(Effect.timeout("20 seconds"))
      yield* Effect.sleep("100 millis")
      expect(yield* Deferred.isDone(b3)).toBe(false)
      expect(Option.isNone(yield* Fiber.poll(stuck))).toBe(true)
      yield* Fiber.interrupt(stuck)
    }))

  test("never more than maxConcurrency tasks run at once (and all of them without a bound)", () =>
    Effect.gen(function*() {
      let running = 0
      let peak = 0
      let gate = yield* Deferred.make<void>()
      const items = ["0", "1", "2", "3", "4", "5", "6"]
      // Every task holds the gate until the test opens it: the tasks running meanwhile are all that may run.
      const graph = Graph.make(State, { reducers }).pipe(
        Graph.addNode("plan", (_: State) => Effect.succeed({})),
        Graph.addNode("work", (s: State) =>
          Effect.gen(function*() {
            running++
            peak = Math.max(peak, running)
            yield* Deferred.await(gate)
            running--
            return { log: [s.item] }
          })),
        Graph.setEntryPoint("plan"),
        Graph.addConditionalEdges("plan", () => items.map((item) => Graph.send<State>("work", { item }))),
        Graph.addEdge("work", Graph.END)
      )
      for (const [limit, expected] of [[3, 3], [1, 1], [undefined, items.length]] as const) {
        running = 0
        peak = 0
        gate = yield* Deferred.make<void>()
        const runnable = yield* Graph.compileCheckpointable(graph, { ...noSaves, maxConcurrency: limit })
        const fiber = yield* Effect.fork(runnable.invoke(input, { executionId: yield* freshExecution("bounded") }))
        yield* Effect.gen(function*() {
          while (running < expected) yield* Effect.sleep("5 millis")
        }).pipe(Effect.timeout("20 seconds"))
        // A broken bound would start more tasks at once; give it the chance.
        yield* Effect.sleep("50 millis")
        expect(running, `maxConcurrency ${limit}`).toBe(expected)
        yield* Deferred.succeed(gate, undefined)
        const out = yield* Fiber.join(fiber)
        expect(out.log, `maxConcurrency ${limit}`).toEqual(items)
        expect(peak, `maxConcurrency ${limit}`).toBe(expected)
      }
    }))

  test("determinism: 50 seeded runs with random task delays give identical states and checkpoint sequences", () =>
    Effect.gen(function*() {
      const finishOrders = new Set<string>()
      let reference: { state: State; shape: ReturnType<typeof shape> } | undefined
      for (let seed = 1; seed <= 50; seed++) {
        const random = seeded(seed)
        const order: Array<string> = []
        const task = (name: string, update: (s: State) => Partial<State>) => (s: State) =>
          Effect.gen(function*() {
            yield* Effect.sleep(`${Math.floor(random() * 6)} millis`)
            order.push(s.item === "" ? name : `${name}:${s.item}`)
            return update(s)
          })
        const graph = Graph.make(State, { reducers }).pipe(
          Graph.addNode("plan", task("plan", () => ({ log: ["plan"] }))),
          Graph.addNode("a", task("a", () => ({ log: ["a"], total: 1, tags: { k: "a", a: "1" }, hi: 3, lo: 3, digits: 1, owner: "a" }))),
          Graph.addNode("b", task("b", () => ({ log: ["b"], total: 2, tags: { k: "b", b: "2" }, hi: 7, lo: 2, digits: 2 }))),
          Graph.addNode("c", task("c", () => ({ log: ["c"], total: 3, tags: { k: "c" }, hi: 5, lo: 9, digits: 3 }))),
          Graph.addNode("join", task("join", (s) => ({ log: [`join saw ${s.log.join(",")}`] }))),
          Graph.addNode("map", task("map", (s) => ({ log: [`map ${s.item}`], total: s.item.length }))),
          Graph.addNode("reduce", task("reduce", (s) => ({ log: [`reduce ${s.total}`], item: "done" }))),
          Graph.setEntryPoint("plan"),
          Graph.addEdge("plan", ["a", "b", "c"]),
          Graph.addEdge(["a", "b", "c"], "join"),
          Graph.addConditionalEdges("join", () => ["x", "yy", "zzz"].map((item) => Graph.send<State>("map", { item }))),
          Graph.addEdge("map", "reduce"),
          Graph.addEdge("reduce", Graph.END)
        )
        const runnable = yield* Graph.compileCheckpointable(graph, noSaves)
        const e = yield* freshExecution(`seed-${seed}`)
        const state = yield* runnable.invoke(input, { executionId: e })
        const run = { state, shape: shape(yield* rawList(e)) }
        finishOrders.add(order.join(" "))
        if (reference === undefined) reference = run
        expect(run, `seed ${seed}`).toEqual(reference)
      }
      // The timing did vary: the tasks finished in different orders across the runs.
      expect(finishOrders.size).toBeGreaterThan(1)
      expect(reference!.state).toEqual({
        ...input,
        log: ["plan", "a", "b", "c", "join saw plan,a,b,c", "map x", "map yy", "map zzz", "reduce 12"],
        total: 12,
        owner: "a",
        tags: { k: "c", a: "1", b: "2" },
        hi: 7,
        lo: 2,
        digits: 123,
        item: "done"
      })
      // One checkpoint per superstep; a multi-task superstep is named by its nodes in task order.
      expect(reference!.shape.map((c) => [c.version, c.nodeName, c.next])).toEqual([
        [1, "__input__", ["plan"]],
        [2, "plan", ["a", "b", "c"]],
        [3, "a+b+c", ["join"]],
        [4, "join", ["map", "map", "map"]],
        [5, "map", ["reduce"]],
        [6, "reduce", []]
      ])
      // The sends are in the checkpoint that schedules them, by task index.
      expect(Object.keys((reference!.shape[3]!.runtime as { sends: object }).sends)).toEqual(["0", "1", "2"])
    }), 60_000)

  test("reducers (concat, sum, merge, max, min, custom) fold onto the superstep's start value in task order, not finish order", () =>
    Effect.gen(function*() {
      // c finishes first, then b, then a.
      const cDone = yield* Deferred.make<void>()
      const bDone = yield* Deferred.make<void>()
      const finishOrder: Array<string> = []
      const graph = Graph.make(State, { reducers }).pipe(
        Graph.addNode("start", (_: State) => Effect.succeed({})),
        Graph.addNode("a", (_: State) =>
          Effect.zipRight(Deferred.await(bDone), Effect.sync(() => {
            finishOrder.push("a")
            return { log: ["a"], total: 1, tags: { k: "a", a: "1" }, hi: 3, lo: 3, digits: 1 }
          }))),
        Graph.addNode("b", (_: State) =>
          Effect.zipRight(Deferred.await(cDone), Effect.sync(() => {
            finishOrder.push("b")
            return { log: ["b"], total: 2, tags: { k: "b", b: "2" }, hi: 7, lo: 2, digits: 2 }
          }))
            .pipe(Effect.zipLeft(Deferred.succeed(bDone, undefined)))),
        Graph.addNode("c", (_: State) =>
          Effect.sync(() => {
            finishOrder.push("c")
            return { log: ["c"], total: 3, tags: { k: "c" }, hi: 5, lo: 9, digits: 3 }
          }).pipe(Effect.zipLeft(Deferred.succeed(cDone, undefined)))),
        Graph.setEntryPoint("start"),
        Graph.addEdge("start", ["a", "b", "c"]),
        Graph.addEdge(["a", "b", "c"], "after"),
        Graph.addNode("after", (_: State) => Effect.succeed({})),
        Graph.addEdge("after", Graph.END)
      )
      const begin: State = { ...input, log: ["before"], total: 100, tags: { k: "0", z: "9" }, hi: 4, lo: 4, digits: 9 }
      const expected: State = {
        ...begin,
        log: ["before", "a", "b", "c"],
        total: 106,
        tags: { k: "c", z: "9", a: "1", b: "2" },
        hi: 7,
        lo: 2,
        digits: 9123
      }
      const runnable = yield* Graph.compileCheckpointable(graph, noSaves)
      expect(yield* runnable.invoke(begin, { executionId: yield* freshExecution("reducers") })).toEqual(expected)
      expect(finishOrder).toEqual(["c", "b", "a"])
    }))

  test("reducers fold the same way in a plain Graph.compile run", () =>
    Effect.gen(function*() {
      const graph = fanOut3(probe(), { a: () => Effect.sleep("15 millis"), b: () => Effect.sleep("5 millis") })
      expect(yield* (yield* Graph.compile(graph)).invoke(input)).toEqual(fanOut3Final)
    }))

  test("InvalidUpdate { field, nodes }: two parallel edges, or two sends to one node, write a field without a reducer", () =>
    Effect.gen(function*() {
      const edges = Graph.make(State, { reducers }).pipe(
        Graph.addNode("start", (_: State) => Effect.succeed({})),
        Graph.addNode("a", (_: State) => Effect.succeed({ owner: "a", log: ["a"] })),
        Graph.addNode("b", (_: State) => Effect.succeed({ log: ["b"] })),
        Graph.addNode("c", (_: State) => Effect.succeed({ owner: "c" })),
        Graph.setEntryPoint("start"),
        Graph.addEdge("start", ["a", "b", "c"]),
        Graph.addEdge("a", Graph.END),
        Graph.addEdge("b", Graph.END),
        Graph.addEdge("c", Graph.END)
      )
      const sends = Graph.make(State, { reducers }).pipe(
        Graph.addNode("start", (_: State) => Effect.succeed({})),
        Graph.addNode("map", (s: State) => Effect.succeed({ owner: s.item })),
        Graph.setEntryPoint("start"),
        Graph.addConditionalEdges("start", () => [Graph.send<State>("map", { item: "x" }), Graph.send<State>("map", { item: "y" })]),
        Graph.addEdge("map", Graph.END)
      )
      for (const [graph, nodes] of [[edges, ["a", "c"]], [sends, ["map", "map"]]] as const) {
        const runnable = yield* Graph.compileCheckpointable(graph, noSaves)
        const e = yield* freshExecution("invalid")
        const error = yield* Effect.flip(runnable.invoke(input, { executionId: e }))
        expect(error).toMatchObject({ _tag: "InvalidUpdate", field: "owner", nodes })
        expect(error.message).toContain("owner")
        // The run failed; the superstep's tasks did run, but nothing after them was saved.
        expect(Option.getOrThrow(yield* runnable.getExecution(e)).status).toBe("failed")
        expect((yield* runnable.listCheckpoints(e)).map((c) => c.nodeName)).toEqual(["__input__", "start"])
        const plainError = yield* Effect.flip((yield* Graph.compile(graph)).invoke(input))
        expect(plainError).toMatchObject({ _tag: "InvalidUpdate", field: "owner", nodes })
      }
    }))

  test("a router returning several names, sends and END: one task per name (once) and per send, in the router's order", () =>
    Effect.gen(function*() {
      const graph = Graph.make(State, { reducers }).pipe(
        Graph.addNode("plan", (_: State) => Effect.succeed({ log: ["plan"] })),
        Graph.addNode("a", (_: State) => Effect.succeed({ log: ["a"] })),
        Graph.addNode("b", (_: State) => Effect.succeed({ log: ["b"] })),
        Graph.addNode("map", (s: State) => Effect.succeed({ log: [`map ${s.item}`] })),
        Graph.setEntryPoint("plan"),
        Graph.addConditionalEdges("plan", (s) =>
          s.owner === "stop"
            ? Graph.END
            : ["b", Graph.send<State>("map", { item: "x" }), Graph.END, "a", Graph.send<State>("map", { item: "y" }), "b"]),
        Graph.addEdge("a", Graph.END),
        Graph.addEdge("b", Graph.END),
        Graph.addEdge("map", Graph.END)
      )
      const runnable = yield* Graph.compileCheckpointable(graph, noSaves)
      const e = yield* freshExecution("router")
      const out = yield* runnable.invoke(input, { executionId: e })
      expect(out.log).toEqual(["plan", "b", "map x", "a", "map y"])
      const cps = yield* rawList(e)
      expect(cps.map((c) => [c.nodeName, c.next])).toEqual([
        ["__input__", ["plan"]],
        ["plan", ["b", "map", "a", "map"]],
        ["b+map+a", []]
      ])
      // The sends' inputs are saved by task index (the view of the state, not a write).
      const sends = (cps[1]!.runtime as { sends: Record<string, unknown> }).sends
      expect(Object.keys(sends)).toEqual(["1", "3"])
      expect(JSON.stringify(sends)).toContain("\"x\"")
      expect(out.item).toBe("")
      // END alone finishes the run after the router's node.
      const e2 = yield* freshExecution("router-end")
      expect((yield* runnable.invoke({ ...input, owner: "stop" }, { executionId: e2 })).log).toEqual(["plan"])
      expect((yield* rawList(e2)).map((c) => c.next)).toEqual([["plan"], []])
    }))

  test("send inputs are saved with their checkpoint: a resume in a new runnable whose router changed runs the saved tasks; a Date comes back a Date", () =>
    Effect.gen(function*() {
      let routed = 0
      const seen: Array<string> = []
      const graph = (items: ReadonlyArray<string>) =>
        Graph.make(State, { reducers }).pipe(
          Graph.addNode("plan", (_: State) => Effect.succeed({})),
          Graph.addNode("map", (s: State) =>
            Effect.sync(() => {
              seen.push(`${s.item} ${s.at instanceof Date ? "Date" : typeof s.at}`)
              return { log: [`${s.item}@${s.at.toISOString()}`] }
            })),
          Graph.setEntryPoint("plan"),
          Graph.addConditionalEdges("plan", () => {
            routed++
            return items.map((item, i) => Graph.send<State>("map", { item, at: new Date(Date.UTC(2026, 0, i + 1, 12)) }))
          }),
          Graph.addEdge("map", Graph.END)
        )
      const first = yield* Graph.compileCheckpointable(graph(["x", "y"]), { ...noSaves, interruptBefore: ["map"] })
      const e = yield* freshExecution("sends")
      const paused = yield* Effect.flip(first.invoke(input, { executionId: e }))
      expect(paused).toMatchObject({ _tag: "GraphInterrupted", node: "map", when: "before" })
      expect(seen).toEqual([])
      // Another process, another router: the saved tasks run, with their saved inputs; the router is not asked.
      routed = 0
      const second = yield* Graph.compileCheckpointable(graph(["other"]), noSaves)
      const out = yield* second.resume(e)
      expect(routed).toBe(0)
      expect(seen).toEqual(["x Date", "y Date"])
      expect(out.log).toEqual(["x@2026-01-01T12:00:00.000Z", "y@2026-01-02T12:00:00.000Z"])
      // A send's input is the task's view, not a write: the state's own fields are untouched.
      expect(out.item).toBe("")
      expect(out.at).toEqual(new Date(0))
    }))

  test("fan-in runs once, after sources that finish in different supersteps, and across a resume", () =>
    Effect.gen(function*() {
      const p = probe()
      let failA2 = true
      const graph = Graph.make(State, { reducers }).pipe(
        Graph.addNode("start", counted(p, "start", {})),
        Graph.addNode("a", counted(p, "a", { log: ["a"] })),
        Graph.addNode("b", counted(p, "b", { log: ["b"] })),
        Graph.addNode("a2", counted(p, "a2", { log: ["a2"] }, () => failA2 ? Effect.fail(new Boom({ node: "a2" })) : Effect.void)),
        Graph.addNode("join", (s: State) => Effect.map(counted(p, "join", {})(s), () => ({ log: [`join saw ${s.log.join(",")}`] }))),
        Graph.setEntryPoint("start"),
        Graph.addEdge("start", ["a", "b"]),
        Graph.addEdge("a", "a2"),
        Graph.addEdge(["a2", "b"], "join"),
        Graph.addEdge("join", Graph.END)
      )
      const runnable = yield* Graph.compileCheckpointable(graph, noSaves)
      // Without a failure: b finishes in superstep 2, a2 in superstep 3, join runs once in superstep 4.
      failA2 = false
      const e1 = yield* freshExecution("join")
      expect((yield* runnable.invoke(input, { executionId: e1 })).log).toEqual(["a", "b", "a2", "join saw a,b,a2"])
      expect(p.calls.join).toBe(1)
      const cps = yield* rawList(e1)
      expect(cps.map((c) => [c.nodeName, c.next])).toEqual([
        ["__input__", ["start"]],
        ["start", ["a", "b"]],
        ["a+b", ["a2"]],
        ["a2", ["join"]],
        ["join", []]
      ])
      // The fan-in's progress is saved with the checkpoint between: b is done, a2 is not.
      expect((cps[2]!.runtime as { joins: unknown }).joins).toEqual({ "a2+b>join": ["b"] })
      expect(cps[3]!.runtime?.joins).toBeUndefined()
      // With a failure of a2 between: the resume knows b is done and runs join once.
      failA2 = true
      const e2 = yield* freshExecution("join-resume")
      expect(yield* Effect.flip(runnable.invoke(input, { executionId: e2 }))).toMatchObject({ _tag: "Boom", node: "a2" })
      failA2 = false
      const before = { ...p.calls }
      expect((yield* runnable.resume(e2)).log).toEqual(["a", "b", "a2", "join saw a,b,a2"])
      expect(p.calls.join! - before.join!).toBe(1)
      expect(p.calls.b).toBe(before.b)
      expect(p.calls.a).toBe(before.a)
    }))

  for (const durability of ["async", "sync", "exit"] as const) {
    test(`${durability}: one of three tasks fails; the others' updates are saved and a resume runs only the failed one`, () =>
      Effect.gen(function*() {
        const p = probe()
        const finished = { a: yield* Deferred.make<void>(), c: yield* Deferred.make<void>() }
        // b fails once a and c have finished (their updates handed to the store).
        const graph = fanOut3(p, {
          b: (attempt) =>
            attempt === 1
              ? Effect.zipRight(Effect.all([Deferred.await(finished.a), Deferred.await(finished.c)]), Effect.fail(new Boom({ node: "b" })))
              : Effect.void
        })
        const runnable = yield* Graph.compileCheckpointable(graph, { ...noSaves, durability })
        const e = yield* freshExecution(`fails-${durability}`)
        const exit = yield* drive(runnable.stream(input, { executionId: e }), finished)
        expect(failureOf(exit)).toMatchObject({ _tag: "Boom", node: "b" })
        expect(p.calls).toEqual({ start: 1, a: 1, b: 1, c: 1 })
        expect([...p.effects].sort()).toEqual(["a", "c", "start"])
        // The checkpoint that scheduled the superstep holds a's and c's updates, in task order.
        const latest = yield* latestOf(e)
        expect(latest.nodeName).toBe("start")
        expect(latest.next).toEqual(["a", "b", "c"])
        const writes = yield* writesOf(latest.id)
        expect(writes.map((w) => [w.taskId, w.key])).toEqual([["0000", "update"], ["0002", "update"]])
        expect(Option.getOrThrow(yield* runnable.getExecution(e)).status).toBe("failed")
        // The resume runs b only (then done), and applies a's and c's saved updates in task order.
        const out = yield* runnable.resume(e)
        expect(out).toEqual(fanOut3Final)
        expect(p.calls).toEqual({ start: 1, a: 1, b: 2, c: 1, done: 1 })
        expect([...p.effects].sort()).toEqual(["a", "b", "c", "done", "start"])
        expect(Option.getOrThrow(yield* runnable.getExecution(e)).status).toBe("done")
      }))
  }

  test("the first failure in time interrupts a running sibling, which reruns on resume; a finished one does not", () =>
    Effect.gen(function*() {
      const p = probe()
      const bStarted = yield* Deferred.make<void>()
      let bInterrupted = 0
      const finished = { c: yield* Deferred.make<void>() }
      const graph = fanOut3(p, {
        a: (attempt) =>
          attempt === 1
            ? Effect.zipRight(Effect.all([Deferred.await(bStarted), Deferred.await(finished.c)]), Effect.fail(new Boom({ node: "a" })))
            : Effect.void,
        b: (attempt) =>
          attempt === 1
            ? Effect.zipRight(Deferred.succeed(bStarted, undefined), Effect.never).pipe(
              Effect.onInterrupt(() => Effect.sync(() => bInterrupted++))
            )
            : Effect.void
      })
      const runnable = yield* Graph.compileCheckpointable(graph, noSaves)
      const e = yield* freshExecution("first-failure")
      const exit = yield* drive(runnable.stream(input, { executionId: e }), finished)
      expect(failureOf(exit)).toMatchObject({ _tag: "Boom", node: "a" })
      expect(bInterrupted).toBe(1)
      expect(p.effects.sort()).toEqual(["c", "start"])
      const latest = yield* latestOf(e)
      expect((yield* writesOf(latest.id)).map((w) => w.taskId)).toEqual(["0002"])
      const out = yield* runnable.resume(e)
      expect(out).toEqual(fanOut3Final)
      expect(p.calls).toEqual({ start: 1, a: 2, b: 2, c: 1, done: 1 })
    }))

  test("Fiber.interrupt of a run: the execution is pending again, finished tasks keep their writes, a resume runs the rest", () =>
    Effect.gen(function*() {
      const p = probe()
      let blocked = true
      const block = () => blocked ? Effect.never : Effect.void
      const graph = fanOut3(p, { b: block, c: block })
      const runnable = yield* Graph.compileCheckpointable(graph, noSaves)
      const e = yield* freshExecution("interrupted")
      const fiber = yield* Effect.fork(runnable.invoke(input, { executionId: e }))
      // Wait until a's update is in the store.
      const store = yield* storeService
      const scheduling = yield* Effect.gen(function*() {
        while (true) {
          const latest = yield* store.latest(e)
          if (Option.isSome(latest) && latest.value.nodeName === "start" && (yield* store.listWrites(latest.value.id)).length === 1) {
            return latest.value
          }
          yield* Effect.sleep("5 millis")
        }
      }).pipe(Effect.timeout("20 seconds"))
      yield* Fiber.interrupt(fiber)
      const record = Option.getOrThrow(yield* runnable.getExecution(e))
      expect(record.status).toBe("pending")
      expect(record.lease).toBeUndefined()
      expect((yield* writesOf(scheduling.id)).map((w) => w.taskId)).toEqual(["0000"])
      expect((yield* latestOf(e)).id).toBe(scheduling.id)
      blocked = false
      const out = yield* runnable.resume(e)
      expect(out).toEqual(fanOut3Final)
      expect(p.calls).toEqual({ start: 1, a: 1, b: 2, c: 2, done: 1 })
      expect(p.effects.filter((x) => x === "a")).toEqual(["a"])
    }))

  test("recursionLimit counts supersteps, not tasks", () =>
    Effect.gen(function*() {
      // 3 supersteps (start; a, b, c; done), 5 tasks.
      const graph = fanOut3(probe())
      const three = yield* Graph.compileCheckpointable(graph, { ...noSaves, recursionLimit: 3 })
      expect(yield* three.invoke(input, { executionId: yield* freshExecution("limit-3") })).toEqual(fanOut3Final)
      const two = yield* Graph.compileCheckpointable(graph, { ...noSaves, recursionLimit: 2 })
      const error = yield* Effect.flip(two.invoke(input, { executionId: yield* freshExecution("limit-2") }))
      expect(error).toMatchObject({ _tag: "RecursionLimitExceeded", limit: 2 })
      expect(yield* (yield* Graph.compile(graph, { recursionLimit: 3 })).invoke(input)).toEqual(fanOut3Final)
      expect(yield* Effect.flip((yield* Graph.compile(graph, { recursionLimit: 2 })).invoke(input))).toMatchObject({
        _tag: "RecursionLimitExceeded",
        limit: 2
      })
    }))

  test("a linear graph saves exactly as 0.1.0: one checkpoint per node, no runtime, no task writes", () =>
    Effect.gen(function*() {
      const Linear = Schema.Struct({ step: Schema.Int, data: Schema.String })
      const step = (n: number) => (s: typeof Linear.Type) => Effect.succeed({ step: n, data: `${s.data} → ${n}` })
      const graph = Graph.make(Linear).pipe(
        Graph.addNode("step1", step(1)),
        Graph.addNode("step2", step(2)),
        Graph.addNode("step3", step(3)),
        Graph.setEntryPoint("step1"),
        Graph.addEdge("step1", "step2"),
        Graph.addEdge("step2", "step3"),
        Graph.addEdge("step3", Graph.END)
      )
      for (const durability of ["async", "sync"] as const) {
        const runnable = yield* Graph.compileCheckpointable(graph, { ...noSaves, durability })
        const e = yield* freshExecution(`linear-${durability}`)
        expect(yield* runnable.invoke({ step: 0, data: "Start" }, { executionId: e })).toEqual({ step: 3, data: "Start → 1 → 2 → 3" })
        const cps = yield* rawList(e)
        expect(cps.map((c) => [c.version, c.nodeName, c.next, c.state])).toEqual([
          [1, "__input__", ["step1"], { step: 0, data: "Start" }],
          [2, "step1", ["step2"], { step: 1, data: "Start → 1" }],
          [3, "step2", ["step3"], { step: 2, data: "Start → 1 → 2" }],
          [4, "step3", [], { step: 3, data: "Start → 1 → 2 → 3" }]
        ])
        expect(cps.map((c) => c.parentId)).toEqual([undefined, cps[0]!.id, cps[1]!.id, cps[2]!.id])
        for (const cp of cps) {
          expect("runtime" in cp && cp.runtime !== undefined, cp.nodeName).toBe(false)
          expect(yield* writesOf(cp.id), cp.nodeName).toEqual([])
        }
      }
    }))

  test("compile reports unknown names in lists and fan-in sources that can never run, all at once", () =>
    Effect.gen(function*() {
      const noop = (_: State) => Effect.succeed({})
      const graph = Graph.make(State).pipe(
        Graph.addNode("a", noop),
        Graph.addNode("b", noop),
        Graph.addNode("c", noop),
        Graph.addNode("island", noop),
        Graph.setEntryPoint("a"),
        Graph.addEdge("a", ["b", "ghost"]),
        Graph.addEdge(["b", "phantom"], "c"),
        Graph.addEdge(["b", "island"], ["c", "nowhere"]),
        Graph.addEdge("c", Graph.END),
        Graph.addEdge("island", Graph.END)
      )
      const expected = [
        `the edge "a" → "ghost" points to an unknown node`,
        `the fan-in into "c" waits for "phantom", which is not a node`,
        `the fan-in into "nowhere" points to an unknown node`,
        `the fan-in into "c" waits for "island", which can never run`,
        `the fan-in into "nowhere" waits for "island", which can never run`
      ]
      const checkpointed = yield* Effect.flip(Graph.compileCheckpointable(graph))
      expect(checkpointed._tag).toBe("GraphValidationError")
      expect([...checkpointed.issues].sort()).toEqual([...expected].sort())
      for (const issue of expected) expect(checkpointed.message).toContain(issue)
      const plain = yield* Effect.flip(Graph.compile(graph))
      expect([...plain.issues].sort()).toEqual([...expected].sort())
    }))

  test("a superstep whose every task saved its update runs none of them on resume (its checkpoint never landed)", () =>
    Effect.gen(function*() {
      const inner = yield* storeService
      const refused = (cps: ReadonlyArray<Checkpoint.Checkpoint>) =>
        cps.some((c) => c.nodeName === "a+b+c")
          ? Effect.fail(new CheckpointStoreError({ backend: "test", operation: "save", message: "injected: the superstep's checkpoint is lost" }))
          : Effect.void
      // The store loses the checkpoint after the superstep (as if the process died right before it).
      const lossy: CheckpointStore.Service = {
        ...inner,
        save: (cp, options) => Effect.zipRight(refused([cp]), inner.save(cp, options)),
        saveMany: (cps, options) => Effect.zipRight(refused(cps), inner.saveMany(cps, options))
      }
      const p = probe()
      const graph = fanOut3(p)
      const first = yield* Graph.compileCheckpointable(graph, { ...noSaves, durability: "sync" }).pipe(
        Effect.provideService(storeService, lossy)
      )
      const e = yield* freshExecution("all-saved")
      expect(yield* Effect.flip(first.invoke(input, { executionId: e }))).toMatchObject({ _tag: "CheckpointStoreError" })
      expect(p.calls).toEqual({ start: 1, a: 1, b: 1, c: 1 })
      const latest = yield* latestOf(e)
      expect(latest.nodeName).toBe("start")
      expect((yield* writesOf(latest.id)).map((w) => w.taskId)).toEqual(["0000", "0001", "0002"])
      // The dead run's lease is still live: take over, as after a crash.
      const second = yield* Graph.compileCheckpointable(graph, noSaves)
      const replayed: Array<string> = []
      const exit = yield* Effect.exit(Stream.runForEach(second.streamResume(e, { takeOver: true }), (event) =>
        Effect.sync(() => {
          if (event._tag === "TaskFinished" && event.replayed) replayed.push(event.node)
        })))
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(replayed).toEqual(["a", "b", "c"])
      expect(p.calls).toEqual({ start: 1, a: 1, b: 1, c: 1, done: 1 })
      expect((yield* second.listCheckpoints(e)).at(-1)!.state).toEqual(fanOut3Final)
      expect((yield* rawList(e)).map((c) => c.nodeName)).toEqual(["__input__", "start", "a+b+c", "done"])
    }))
})

// -----------------------------------------------------------------------------
// A real crash: SIGKILL of another process mid-fan-out (File, SQLite, PostgreSQL)
// -----------------------------------------------------------------------------

const FANOUT_CRASH = path.join(import.meta.dirname, "fixtures", "fanout-crash.ts")

const waitUntil = <A>(probe: () => Effect.Effect<A | undefined, unknown>, what: string, timeoutMs = 30_000) =>
  Effect.gen(function*() {
    const started = Date.now()
    while (true) {
      const found = yield* probe()
      if (found !== undefined) return found
      if (Date.now() - started > timeoutMs) return yield* Effect.fail(new Error(`timed out waiting for ${what}`))
      yield* Effect.sleep("10 millis")
    }
  })

/** The fan-out fixture in a child process on the store of `spec`; SIGKILLed (and awaited) when the scope closes. */
const fanoutChild = (spec: string, effects: string, executionId: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const proc = spawn(process.execPath, ["--import", "tsx", FANOUT_CRASH, spec, effects, executionId], {
        stdio: ["ignore", "ignore", "pipe"]
      })
      let stderr = ""
      proc.stderr.on("data", (d) => stderr += String(d))
      const exited = Effect.async<void>((resume) => {
        if (proc.exitCode !== null || proc.signalCode !== null) resume(Effect.void)
        else proc.once("exit", () => resume(Effect.void))
      })
      return { proc, exited, stderr: () => stderr }
    }),
    ({ exited, proc }) => Effect.zipRight(Effect.sync(() => proc.kill("SIGKILL")), exited)
  )

describe.each(sharedStoreSpecs)("a fan-out killed with SIGKILL after 2 of its 3 tasks finished (%s store)", (_name, makeSpec) => {
  it.live("a resume in this process (takeOver) runs only the third task", () =>
    Effect.gen(function*() {
      const spec = yield* makeSpec
      const effects = yield* tempDir("fanout-crash-effects")
      const executionId = `fanout-crash-${process.pid}`
      // This process opens the store first (its tables exist before the child starts).
      yield* Effect.gen(function*() {
        const store = yield* storeService
        const child = yield* fanoutChild(spec, effects, executionId)
        // The child's tasks a and b are done when their updates are in the store (c is still running there).
        yield* waitUntil(() =>
          Effect.gen(function*() {
            if (child.proc.exitCode !== null) return yield* Effect.fail(new Error(`the child exited early: ${child.stderr()}`))
            if (!fs.existsSync(path.join(effects, "started-c"))) return undefined
            const latest = yield* store.latest(executionId as Checkpoint.ExecutionId).pipe(Effect.orElseSucceed(() => Option.none()))
            if (Option.isNone(latest) || latest.value.nodeName !== "start") return undefined
            const writes = yield* store.listWrites(latest.value.id)
            return writes.length === 2 ? writes : undefined
          }), "two task writes")
        child.proc.kill("SIGKILL")
        yield* child.exited
        expect(child.proc.signalCode).toBe("SIGKILL")
        const done = () => fs.readdirSync(effects).filter((f) => f.startsWith("done-")).sort()
        const killed = [`done-a-${child.proc.pid}`, `done-b-${child.proc.pid}`, `done-start-${child.proc.pid}`]
        expect(done()).toEqual(killed)
        // The dead run's lease is still on the execution: the resume takes it over.
        const record = Option.getOrThrow(yield* store.getExecution(executionId as Checkpoint.ExecutionId))
        expect(record.status).toBe("running")
        expect(record.lease).toBeDefined()
        const runnable = yield* Graph.compileCheckpointable(FanoutCrash.graph(effects), { maxCheckpoints: 0 })
        const out = yield* runnable.resume(executionId, { takeOver: true })
        expect(out.log).toEqual(["start", "a", "b", "c", "join"])
        // Only c (and the join) ran here; a and b ran once, in the killed process.
        expect(done()).toEqual([...killed, `done-c-${process.pid}`, `done-join-${process.pid}`].sort())
        expect(Option.getOrThrow(yield* store.getExecution(executionId as Checkpoint.ExecutionId)).status).toBe("done")
      }).pipe(Effect.provide(layerOfSpec(spec)))
    }).pipe(Effect.scoped), 60_000)
})
