/**
 * The typed event stream of a run (`stream`, `streamResume`) on every engine
 * store: events in causal order, `Finished.state` equal to what `invoke`
 * returns, pauses and interrupts as a last event (the stream itself does not
 * fail), other failures as the stream's typed failure, a consumer that stops
 * interrupting the run (back to `pending`, its saves landed), and a consumer
 * slower than the graph losing nothing (events are buffered, unbounded: the
 * run never waits for its consumer).
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Option, Schedule, Schema, Stream } from "effect"
import type * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import { freshExecution } from "../src/testing.js"
import { engineStores } from "./fixtures/stores.js"

const State = Schema.Struct({ n: Schema.Number, log: Schema.Array(Schema.String) })
type State = typeof State.Type
const input: State = { n: 0, log: [] }

class Boom extends Schema.TaggedError<Boom>()("Boom", { node: Schema.String }) {}

/** a → b → c, each appending its name; `b` can be replaced. */
const linearWith = <E>(b: (s: State) => Effect.Effect<Graph.Update<State>, E>) =>
  Graph.make(State, { reducers: { log: Graph.Reducer.concat } }).pipe(
    Graph.addNode("a", (s) => Effect.succeed({ n: s.n + 1, log: ["a"] })),
    Graph.addNode("b", b),
    Graph.addNode("c", (s) => Effect.succeed({ n: s.n + 1, log: ["c"] })),
    Graph.addEdge("a", "b"),
    Graph.addEdge("b", "c"),
    Graph.addEdge("c", Graph.END),
    Graph.setEntryPoint("a")
  )
const linear = linearWith((s) => Effect.succeed({ n: s.n + 1, log: ["b"] }))

type Event = Graph.RunEvent<State>

/** A short, comparable form of an event (task ids are zero-padded indexes: "0000" → 0). */
const show = (e: Event): string => {
  switch (e._tag) {
    case "TaskStarted":
      return `started ${e.node}#${Number(e.taskId)}@${e.superstep}`
    case "TaskFinished":
      return `finished ${e.node}#${Number(e.taskId)}@${e.superstep}${e.replayed ? " (replayed)" : ""}`
    case "CheckpointSaved":
      return `saved v${e.checkpoint.version} ${e.checkpoint.nodeName}`
    case "Interrupted":
      return `interrupted ${e.error.when} ${e.error.node}`
    case "Suspended":
      return "suspended"
    case "Finished":
      return "finished"
  }
}

const collect = <E, R>(stream: Stream.Stream<Event, E, R>) => Effect.map(Stream.runCollect(stream), Chunk.toReadonlyArray)

/** Waits (bounded) until the execution's record has `status`. */
const statusIs = (
  runnable: { readonly getExecution: (id?: string) => Effect.Effect<Option.Option<CheckpointStore.ExecutionRecord>, unknown> },
  executionId: string,
  status: CheckpointStore.ExecutionStatus
) =>
  runnable.getExecution(executionId).pipe(
    Effect.map(Option.map((r) => r.status)),
    Effect.filterOrFail((s) => Option.contains(s, status), () => "not yet"),
    Effect.retry(Schedule.spaced("10 millis").pipe(Schedule.intersect(Schedule.recurs(1000)))),
    Effect.orDie
  )

describe.each(engineStores)("streams on the %s store", (_name, storeLayer) => {
  const test = (title: string, body: () => Effect.Effect<unknown, unknown, CheckpointStore.CheckpointStore>) =>
    it.live(title, () => Effect.scoped(body()).pipe(Effect.provide(storeLayer)))

  test("a linear run (sync): every event in causal order, Finished.state is invoke's result", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear, { durability: "sync", maxCheckpoints: 0 })
      const e = yield* freshExecution("stream-linear")
      const events = yield* collect(runnable.stream(input, { executionId: e }))
      expect(events.map(show)).toEqual([
        "saved v1 __input__",
        "started a#0@1",
        "finished a#0@1",
        "saved v2 a",
        "started b#0@2",
        "finished b#0@2",
        "saved v3 b",
        "started c#0@3",
        "finished c#0@3",
        "saved v4 c",
        "finished"
      ])
      for (const event of events) {
        if (event._tag === "TaskStarted" || event._tag === "TaskFinished" || event._tag === "Finished") {
          expect(event.executionId).toBe(e)
        }
      }
      const updates = events.flatMap((x) => x._tag === "TaskFinished" ? [x.update] : [])
      expect(updates).toEqual([{ n: 1, log: ["a"] }, { n: 2, log: ["b"] }, { n: 3, log: ["c"] }])
      const finished = events.at(-1)!
      const invoked = yield* runnable.invoke(input, { executionId: yield* freshExecution("stream-linear-invoke") })
      expect(finished).toEqual({ _tag: "Finished", executionId: e, state: invoked })
      // The saved events are the stored checkpoints, ids and all.
      const stored = yield* runnable.listCheckpoints(e)
      expect(events.flatMap((x) => x._tag === "CheckpointSaved" ? [x.checkpoint.id] : [])).toEqual(stored.map((c) => c.id))
      expect(Option.map(yield* runnable.getExecution(e), (r) => r.status)).toEqual(Option.some("done"))
    }))

  test("a linear run (async, exit): saves follow the task that made them, Finished comes after every save", () =>
    Effect.gen(function*() {
      for (const durability of ["async", "exit"] as const) {
        const runnable = yield* Graph.compileCheckpointable(linear, { durability, maxCheckpoints: 0 })
        const e = yield* freshExecution(`stream-${durability}`)
        const events = yield* collect(runnable.stream(input, { executionId: e }))
        const shown = events.map(show)
        expect(shown.filter((s) => !s.startsWith("saved")), durability).toEqual([
          "started a#0@1",
          "finished a#0@1",
          "started b#0@2",
          "finished b#0@2",
          "started c#0@3",
          "finished c#0@3",
          "finished"
        ])
        const saved = shown.filter((s) => s.startsWith("saved"))
        expect(saved, durability).toEqual(
          durability === "exit" ? ["saved v1 c"] : ["saved v1 __input__", "saved v2 a", "saved v3 b", "saved v4 c"]
        )
        // Causal: a checkpoint is announced after the task that made it finished.
        for (const [i, s] of shown.entries()) {
          const node = s.split(" ")[2]!
          if (s.startsWith("saved") && node !== "__input__") {
            expect(shown.slice(0, i).some((x) => x.startsWith(`finished ${node}#`)), `${durability}: ${s}`).toBe(true)
          }
        }
        expect(shown.at(-1)).toBe("finished")
        const stored = yield* runnable.listCheckpoints(e)
        expect(events.flatMap((x) => x._tag === "CheckpointSaved" ? [x.checkpoint.id] : [])).toEqual(stored.map((c) => c.id))
      }
    }))

  test("a superstep: tasks start in task order, finish as they finish, one checkpoint for the superstep", () =>
    Effect.gen(function*() {
      // b finishes first: a waits until b is done, so the finish order is fixed (b, a) and differs from task order.
      const bDone = yield* Deferred.make<void>()
      const graph = Graph.make(State, { reducers: { log: Graph.Reducer.concat } }).pipe(
        Graph.addNode("start", () => Effect.succeed({ log: ["start"] })),
        Graph.addNode("a", () => Effect.as(Deferred.await(bDone), { log: ["a"] })),
        Graph.addNode("b", () => Effect.as(Deferred.succeed(bDone, undefined), { log: ["b"] })),
        Graph.addNode("join", (s) => Effect.succeed({ n: s.log.length })),
        Graph.addEdge("start", ["a", "b"]),
        Graph.addEdge(["a", "b"], "join"),
        Graph.addEdge("join", Graph.END),
        Graph.setEntryPoint("start")
      )
      const runnable = yield* Graph.compileCheckpointable(graph, { durability: "sync", maxCheckpoints: 0 })
      const e = yield* freshExecution("stream-superstep")
      const events = yield* collect(runnable.stream(input, { executionId: e }))
      expect(events.map(show)).toEqual([
        "saved v1 __input__",
        "started start#0@1",
        "finished start#0@1",
        "saved v2 start",
        "started a#0@2",
        "started b#1@2",
        "finished b#1@2",
        "finished a#0@2",
        "saved v3 a+b",
        "started join#0@3",
        "finished join#0@3",
        "saved v4 join",
        "finished"
      ])
      const last = events.at(-1)!
      expect(last._tag === "Finished" && last.state).toEqual({ n: 3, log: ["start", "a", "b"] })
      expect(events.flatMap((x) => x._tag === "TaskStarted" ? [x.taskId] : [])).toEqual(["0000", "0000", "0001", "0000"])
      // Each task's own update, not the merged state.
      const updates = events.flatMap((x) => x._tag === "TaskFinished" && x.superstep === 2 ? [[x.node, x.update]] : [])
      expect(updates).toEqual([["b", { log: ["b"] }], ["a", { log: ["a"] }]])
    }))

  test("a pause (interruptBefore): the stream ends with Interrupted and does not fail; streamResume finishes the run", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear, { durability: "sync", interruptBefore: ["b"], maxCheckpoints: 0 })
      const e = yield* freshExecution("stream-pause")
      const events = yield* collect(runnable.stream(input, { executionId: e }))
      expect(events.map(show)).toEqual([
        "saved v1 __input__",
        "started a#0@1",
        "finished a#0@1",
        "saved v2 a",
        "interrupted before b"
      ])
      const last = events.at(-1)!
      expect(last._tag === "Interrupted" && last.error).toMatchObject({ _tag: "GraphInterrupted", executionId: e, node: "b", when: "before" })
      expect(Option.map(yield* runnable.getExecution(e), (r) => r.status)).toEqual(Option.some("interrupted"))
      // invoke gives the same thing as a failure.
      const e2 = yield* freshExecution("stream-pause-invoke")
      expect(yield* Effect.flip(runnable.invoke(input, { executionId: e2 }))).toMatchObject({ _tag: "GraphInterrupted", node: "b" })

      const resumed = yield* collect(runnable.streamResume(e))
      expect(resumed.map(show)).toEqual([
        "started b#0@1",
        "finished b#0@1",
        "saved v3 b",
        "started c#0@2",
        "finished c#0@2",
        "saved v4 c",
        "finished"
      ])
      expect(resumed.at(-1)).toEqual({ _tag: "Finished", executionId: e, state: yield* runnable.resume(e2) })
    }))

  test("Graph.interrupt in a parallel task: Interrupted with its id; the resume replays the sibling's saved update", () =>
    Effect.gen(function*() {
      const ran = { a: 0, b: 0 }
      const graph = Graph.make(State, { reducers: { log: Graph.Reducer.concat } }).pipe(
        Graph.addNode("start", () => Effect.succeed({})),
        Graph.addNode("a", () => Effect.sync(() => (ran.a++, { log: ["a"] }))),
        Graph.addNode("b", () =>
          Effect.gen(function*() {
            ran.b++
            const answer = yield* Graph.interrupt(Schema.String, { question: "name?" })
            return { log: [`b:${answer}`] }
          })),
        Graph.addEdge("start", ["a", "b"]),
        Graph.addEdge("a", Graph.END),
        Graph.addEdge("b", Graph.END),
        Graph.setEntryPoint("start")
      )
      const runnable = yield* Graph.compileCheckpointable(graph, { durability: "sync", maxCheckpoints: 0 })
      const e = yield* freshExecution("stream-interrupt")
      const events = yield* collect(runnable.stream(input, { executionId: e }))
      const shown = events.map(show)
      expect(shown.slice(0, 5)).toEqual([
        "saved v1 __input__",
        "started start#0@1",
        "finished start#0@1",
        "saved v2 start",
        "started a#0@2"
      ])
      expect(shown).toContain("finished a#0@2")
      expect(shown).toContain("started b#1@2")
      expect(shown).not.toContain("finished b#1@2")
      expect(shown.at(-1)).toBe("interrupted during b")
      const last = events.at(-1)!
      if (last._tag !== "Interrupted") throw new Error("expected Interrupted")
      expect(last.error.payload).toEqual({ question: "name?" })
      expect(typeof last.error.interruptId).toBe("string")

      const resumed = yield* collect(runnable.streamResume(e, { value: "Ada" }))
      expect(resumed.map(show)).toEqual([
        "finished a#0@1 (replayed)",
        "started b#1@1",
        "finished b#1@1",
        "saved v3 a+b",
        "finished"
      ])
      expect(ran).toEqual({ a: 1, b: 2 })
      const final = resumed.at(-1)!
      expect(final._tag === "Finished" && final.state.log).toEqual(["a", "b:Ada"])
    }))

  test("a long Graph.sleep: the stream ends with Suspended; the execution sleeps", () =>
    Effect.gen(function*() {
      const graph = Graph.make(State).pipe(
        Graph.addNode("wait", () => Effect.as(Graph.sleep("1 hour"), {})),
        Graph.addEdge("wait", Graph.END),
        Graph.setEntryPoint("wait")
      )
      const runnable = yield* Graph.compileCheckpointable(graph, { durability: "sync" })
      const e = yield* freshExecution("stream-sleep")
      const events = yield* collect(runnable.stream(input, { executionId: e }))
      expect(events.map(show)).toEqual(["saved v1 __input__", "started wait#0@1", "suspended"])
      const last = events.at(-1)!
      expect(last._tag === "Suspended" && last.error._tag).toBe("GraphSuspended")
      expect(Option.map(yield* runnable.getExecution(e), (r) => r.status)).toEqual(Option.some("sleeping"))
    }))

  test("a node's failure fails the stream with the node's own typed error, after the events before it", () =>
    Effect.gen(function*() {
      const graph = linearWith(() => Effect.fail(new Boom({ node: "b" })))
      const runnable = yield* Graph.compileCheckpointable(graph, { durability: "sync", maxCheckpoints: 0 })
      const e = yield* freshExecution("stream-fail")
      const seen: Array<string> = []
      const error = yield* Effect.flip(Stream.runForEach(runnable.stream(input, { executionId: e }), (x) => Effect.sync(() => seen.push(show(x)))))
      expect(error).toBeInstanceOf(Boom)
      expect(error).toMatchObject({ _tag: "Boom", node: "b" })
      expect(seen).toEqual(["saved v1 __input__", "started a#0@1", "finished a#0@1", "saved v2 a", "started b#0@2"])
      const record = Option.getOrThrow(yield* runnable.getExecution(e))
      expect(record.status).toBe("failed")
      // And a store's failure is typed too: a hostile execution id.
      const bad = yield* Effect.flip(collect(runnable.stream(input, { executionId: "../x" })))
      expect(bad._tag).toBe("InvalidIdentifier")
    }))

  test("the consumer stopping interrupts the run: saves landed, execution back to pending, a resume finishes it", () =>
    Effect.gen(function*() {
      for (const durability of ["sync", "async"] as const) {
        let block = true
        const stopped = { b: 0 }
        const graph = linearWith((s) =>
          block
            ? Effect.onInterrupt(Effect.never, () => Effect.sync(() => stopped.b++))
            : Effect.succeed({ n: s.n + 1, log: ["b"] })
        )
        const runnable = yield* Graph.compileCheckpointable(graph, { durability, maxCheckpoints: 0 })
        const e = yield* freshExecution(`stream-stop-${durability}`)
        // Stop at b's start: b never returns on its own, so only the consumer stopping ends the run.
        const events = yield* collect(runnable.stream(input, { executionId: e }).pipe(
          Stream.takeUntil((x) => x._tag === "TaskStarted" && x.node === "b")
        ))
        expect(events.map(show).filter((s) => !s.startsWith("saved")), durability).toEqual([
          "started a#0@1",
          "finished a#0@1",
          "started b#0@2"
        ])
        // When the stream's consumer is done, the run is over: b was interrupted, saves landed, record settled.
        expect(stopped.b, durability).toBe(1)
        const record = Option.getOrThrow(yield* runnable.getExecution(e))
        expect(record.status, durability).toBe("pending")
        expect(record.lease, durability).toBeUndefined()
        expect((yield* runnable.listCheckpoints(e)).map((c) => c.nodeName), durability).toEqual(["__input__", "a"])
        block = false
        const final = yield* runnable.resume(e)
        expect(final.log, durability).toEqual(["a", "b", "c"])
      }
    }))

  test("a consumer slower than the graph loses no event: the run finishes first, every event is still delivered", () =>
    Effect.gen(function*() {
      // A loop of 20 supersteps; the consumer does not read past the first event until the run is done.
      const graph = Graph.make(State, { reducers: { log: Graph.Reducer.concat } }).pipe(
        Graph.addNode("tick", (s) => Effect.succeed({ n: s.n + 1, log: [String(s.n)] })),
        Graph.addConditionalEdges("tick", (s) => s.n < 20 ? "tick" : Graph.END),
        Graph.setEntryPoint("tick")
      )
      for (const durability of ["sync", "async"] as const) {
        const runnable = yield* Graph.compileCheckpointable(graph, { durability, maxCheckpoints: 0, recursionLimit: 50 })
        const e = yield* freshExecution(`stream-slow-${durability}`)
        let first = true
        const events = yield* collect(runnable.stream(input, { executionId: e }).pipe(
          Stream.tap(() => {
            if (!first) return Effect.void
            first = false
            return statusIs(runnable, e, "done")
          })
        ))
        const shown = events.map(show)
        expect(shown.filter((s) => s.startsWith("started")).length, durability).toBe(20)
        expect(shown.filter((s) => s.startsWith("finished tick")).length, durability).toBe(20)
        expect(shown.filter((s) => s.startsWith("saved")), durability).toEqual(
          Array.from({ length: 21 }, (_, i) => `saved v${i + 1} ${i === 0 ? "__input__" : "tick"}`)
        )
        expect(shown.at(-1), durability).toBe("finished")
        const last = events.at(-1)!
        expect(last._tag === "Finished" && last.state.n).toBe(20)
      }
    }))

  test("streamResume of a finished execution: one Finished with its state, nothing runs (an allowed update: its checkpoint first)", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear, { durability: "sync", maxCheckpoints: 0 })
      const e = yield* freshExecution("stream-finished")
      const state = yield* runnable.invoke(input, { executionId: e })
      const events = yield* collect(runnable.streamResume(e))
      expect(events).toEqual([{ _tag: "Finished", executionId: e, state }])
      // An update of the finished execution (allowed): its checkpoint, then Finished with the edited state.
      const edited = yield* collect(runnable.streamResume(e, { update: (s) => ({ ...s, n: -1 }), allowFinished: true }))
      expect(edited.map(show)).toEqual(["saved v5 __update__", "finished"])
      expect(edited.at(-1)).toEqual({ _tag: "Finished", executionId: e, state: { ...state, n: -1 } })
      const missing = yield* Effect.flip(collect(runnable.streamResume(yield* freshExecution("stream-missing"))))
      expect(missing._tag).toBe("ExecutionNotFound")
    }))

  test("streamResume with an update: the __update__ checkpoint is announced before the run goes on", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear, { durability: "sync", interruptBefore: ["b"], maxCheckpoints: 0 })
      const e = yield* freshExecution("stream-update")
      yield* collect(runnable.stream(input, { executionId: e }))
      const events = yield* collect(runnable.streamResume(e, { update: (s) => ({ ...s, n: 100 }) }))
      expect(events.map(show)).toEqual([
        "saved v3 __update__",
        "started b#0@1",
        "finished b#0@1",
        "saved v4 b",
        "started c#0@2",
        "finished c#0@2",
        "saved v5 c",
        "finished"
      ])
      const last = events.at(-1)!
      expect(last._tag === "Finished" && last.state.n).toBe(102)
    }))
})
