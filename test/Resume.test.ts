/**
 * Resumes that must not do what a careless one would: two approvers resuming
 * at once (only one runs the node), pause gates that fire once per arrival
 * and are never bypassed, updates of finished executions, a runnable whose
 * memory of an execution is stale, and states too deep for the stack.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Layer, Option, Schema } from "effect"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import { freshExecution } from "../src/testing.js"
import { engineStores } from "./fixtures/stores.js"

const Approval = Schema.Struct({
  draft: Schema.String,
  approved: Schema.Boolean,
  published: Schema.Number
})
type Approval = typeof Approval.Type
const draft: Approval = { draft: "hello", approved: false, published: 0 }

/** a → b → c, where b "publishes" (a side effect we count). */
const gate = (published: { n: number }, wait?: Effect.Effect<void>) =>
  Graph.make(Approval).pipe(
    Graph.addNode("a", (s) => Effect.succeed({ draft: `${s.draft}!` })),
    Graph.addNode("b", (s) =>
      Effect.gen(function*() {
        if (wait !== undefined) yield* wait
        published.n++
        return { published: s.published + 1 }
      })),
    Graph.addNode("c", () => Effect.succeed({})),
    Graph.addEdge("a", "b"),
    Graph.addEdge("b", "c"),
    Graph.addEdge("c", Graph.END),
    Graph.setEntryPoint("a")
  )

const names = (cps: ReadonlyArray<{ readonly nodeName: string }>) => cps.map((c) => c.nodeName)

describe.each(engineStores)("resumes on the %s store", (_name, storeLayer) => {
  const test = (title: string, body: () => Effect.Effect<unknown, unknown, CheckpointStore.CheckpointStore>) =>
    it.live(title, () => body().pipe(Effect.provide(storeLayer)))

  test("two approvers resuming one paused execution at once: exactly one runs the node", () =>
    Effect.gen(function*() {
      for (const durability of ["async", "sync", "exit"] as const) {
        const published = { n: 0 }
        const entered = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const hold = Effect.zipRight(Deferred.succeed(entered, undefined), Deferred.await(release))
        const runnable = yield* Graph.compileCheckpointable(gate(published, hold), { interruptBefore: ["b"], durability })
        const e = yield* freshExecution(`approve-${durability}`)
        const paused = yield* Effect.flip(runnable.invoke(draft, { executionId: e }))
        expect(paused).toMatchObject({ _tag: "GraphInterrupted", node: "b", when: "before" })
        // Two approvers at once. The one that wins holds node b until the other has finished: the other
        // must fail without entering b (if it entered b, it would wait there too, and this would time out).
        const first = yield* Effect.fork(runnable.resume(e, { update: (s) => ({ ...s, approved: true }) }))
        const second = yield* Effect.fork(runnable.resume(e, { update: (s) => ({ ...s, approved: true }) }))
        const loserExit = yield* Effect.raceFirst(first.await, second.await).pipe(Effect.timeout("10 seconds"))
        yield* Deferred.await(entered)
        yield* Deferred.succeed(release, undefined)
        const exits = [yield* first.await, yield* second.await]
        expect(exits).toContainEqual(loserExit)
        const wins = exits.filter(Exit.isSuccess)
        const losses = exits.filter(Exit.isFailure)
        expect(wins.length, durability).toBe(1)
        expect(losses.length, durability).toBe(1)
        const loss = Option.getOrThrow(Cause.failureOption((losses[0] as Exit.Failure<unknown, { _tag: string }>).cause))
        expect(["CheckpointConflict", "LeaseLost"]).toContain(loss._tag)
        expect(published.n, durability).toBe(1)
      }
    }))

  test("two plain resumes of a failed execution at once: exactly one runs the node", () =>
    Effect.gen(function*() {
      const published = { n: 0 }
      let failOnce = true
      const entered = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const graph = gate(
        published,
        Effect.suspend(() => {
          if (failOnce) {
            failOnce = false
            return Effect.die("first run fails in b")
          }
          return Effect.zipRight(Deferred.succeed(entered, undefined), Deferred.await(release))
        })
      )
      const runnable = yield* Graph.compileCheckpointable(graph)
      const e = yield* freshExecution("plain")
      const failed = yield* Effect.exit(runnable.invoke(draft, { executionId: e }))
      expect(Exit.isFailure(failed)).toBe(true)
      const first = yield* Effect.fork(runnable.resume(e))
      yield* Deferred.await(entered)
      const second = yield* Effect.exit(runnable.resume(e))
      yield* Deferred.succeed(release, undefined)
      expect(Exit.isSuccess(yield* first.await)).toBe(true)
      expect(Exit.isFailure(second)).toBe(true)
      if (Exit.isFailure(second)) {
        expect(["CheckpointConflict", "LeaseLost"]).toContain(Option.getOrThrow(Cause.failureOption(second.cause))._tag)
      }
      expect(published.n).toBe(1)
    }))

  test("interruptAfter a then interruptBefore b: both pauses fire, once each, in order", () =>
    Effect.gen(function*() {
      const published = { n: 0 }
      const runnable = yield* Graph.compileCheckpointable(gate(published), { interruptAfter: ["a"], interruptBefore: ["b"] })
      const e = yield* freshExecution("gates")
      const afterA = yield* Effect.flip(runnable.invoke(draft, { executionId: e }))
      expect(afterA).toMatchObject({ _tag: "GraphInterrupted", node: "a", when: "after" })
      const beforeB = yield* Effect.flip(runnable.resume(e))
      expect(beforeB).toMatchObject({ _tag: "GraphInterrupted", node: "b", when: "before" })
      expect(published.n).toBe(0)
      // The same checkpoint both times: pauses add no checkpoints.
      expect((beforeB as Graph.GraphInterrupted).checkpointId).toBe((afterA as Graph.GraphInterrupted).checkpointId)
      const store = yield* CheckpointStore.CheckpointStore
      expect(Option.map(yield* store.getExecution(e), (r) => r.status)).toEqual(Option.some("interrupted"))
      const out = yield* runnable.resume(e)
      expect(out.published).toBe(1)
      expect(published.n).toBe(1)
      expect(names(yield* runnable.listCheckpoints(e))).toEqual(["__input__", "a", "b", "c"])
      expect(Option.map(yield* store.getExecution(e), (r) => r.status)).toEqual(Option.some("done"))
    }))

  test("a pause is never bypassed: an execution left at the gate without the pause (a failure, a crash) pauses on resume", () =>
    Effect.gen(function*() {
      const published = { n: 0 }
      let failB = true
      const failing = Graph.make(Approval).pipe(
        Graph.addNode("a", (s) => Effect.succeed({ draft: `${s.draft}!` })),
        Graph.addNode("b", () => failB ? Effect.die("b fails before it publishes") : Effect.sync(() => ({ published: ++published.n }))),
        Graph.addNode("c", () => Effect.succeed({})),
        Graph.addEdge("a", "b"),
        Graph.addEdge("b", "c"),
        Graph.addEdge("c", Graph.END),
        Graph.setEntryPoint("a")
      )
      const e = yield* freshExecution("bypass")
      // A run without the gate stops at b's boundary (b dies): no pause fired there.
      const ungated = yield* Graph.compileCheckpointable(failing)
      expect(Exit.isFailure(yield* Effect.exit(ungated.invoke(draft, { executionId: e })))).toBe(true)
      failB = false
      // The gated runnable resumes it: the gate holds before b, and b has not run.
      const gated = yield* Graph.compileCheckpointable(failing, { interruptBefore: ["b"] })
      const paused = yield* Effect.flip(gated.resume(e))
      expect(paused).toMatchObject({ _tag: "GraphInterrupted", node: "b", when: "before" })
      expect(published.n).toBe(0)
      // The next resume passes the gate that fired, once.
      const out = yield* gated.resume(e)
      expect(out.published).toBe(1)
      expect(published.n).toBe(1)
    }))

  test("resume with update of a finished execution is refused unless allowFinished", () =>
    Effect.gen(function*() {
      const published = { n: 0 }
      const runnable = yield* Graph.compileCheckpointable(gate(published))
      const e = yield* freshExecution("finished")
      yield* runnable.invoke(draft, { executionId: e })
      const before = yield* runnable.listCheckpoints(e)
      const refused = yield* Effect.flip(runnable.resume(e, { update: (s) => ({ ...s, approved: true }) }))
      expect(refused).toMatchObject({ _tag: "ExecutionFinished", executionId: e })
      expect(yield* runnable.listCheckpoints(e)).toEqual(before)
      // A plain resume of a finished execution returns its final state and runs nothing.
      expect((yield* runnable.resume(e)).published).toBe(1)
      const edited = yield* runnable.resume(e, { update: (s) => ({ ...s, approved: true }), allowFinished: true })
      expect(edited.approved).toBe(true)
      const after = yield* runnable.listCheckpoints(e)
      expect(names(after).slice(-1)).toEqual(["__update__"])
      expect(after[after.length - 1]!.next).toEqual([])
      expect(published.n).toBe(1)
    }))

  test("a runnable whose memory of an execution is stale never writes a checkpoint whose parent is gone", () =>
    Effect.gen(function*() {
      const published = { n: 0 }
      const one = yield* Graph.compileCheckpointable(gate(published), { maxCheckpoints: 0 })
      const two = yield* Graph.compileCheckpointable(gate(published), { maxCheckpoints: 0 })
      const e = yield* freshExecution("stale")
      yield* one.invoke(draft, { executionId: e })
      // Another runnable clears the execution and runs it again to the same version.
      yield* two.clearCheckpoints(e)
      yield* two.invoke(draft, { executionId: e })
      // `one` still remembers version 4 with the old id: its conditional write must fail and it must rebase.
      yield* one.invoke(draft, { executionId: e })
      const cps = yield* one.listCheckpoints(e)
      expect(cps.map((c) => c.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
      const ids = new Set(cps.map((c) => c.id))
      for (const cp of cps.slice(1)) expect(ids.has(cp.parentId!), `parent of v${cp.version}`).toBe(true)
    }))
})

describe("deep states", () => {
  interface Tree {
    readonly c: ReadonlyArray<Tree>
  }
  const Tree: Schema.Schema<Tree> = Schema.Struct({ c: Schema.Array(Schema.suspend(() => Tree)) })
  const State = Schema.Struct({ tree: Tree })
  const deep = (depth: number): Tree => {
    let t: Tree = { c: [] }
    for (let i = 0; i < depth; i++) t = { c: [t] }
    return t
  }

  it.live("a recursive state too deep for the stack fails with CheckpointEncodeError, never a defect", () =>
    Effect.gen(function*() {
      const graph = Graph.make(State).pipe(
        Graph.addNode("grow", () => Effect.succeed({ tree: deep(5000) })),
        Graph.addEdge("grow", Graph.END),
        Graph.setEntryPoint("grow")
      )
      const runnable = yield* Graph.compileCheckpointable(graph)
      const exit = yield* Effect.exit(runnable.invoke({ tree: { c: [] } }))
      expect(Exit.isFailure(exit) && !Cause.isDie(exit.cause)).toBe(true)
      const error = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
      expect(error).toMatchObject({ _tag: "CheckpointEncodeError" })
      expect((error as { message: string }).message).toContain(`node "grow"`)
      // The input as deep: refused before anything runs.
      const input = yield* Effect.exit(runnable.invoke({ tree: deep(5000) }))
      expect(Exit.isFailure(input) && Option.getOrUndefined(Cause.failureOption(input.cause))).toMatchObject({
        _tag: "CheckpointEncodeError"
      })
    }).pipe(Effect.provide(Layer.fresh(engineStores[0]![1]))))

  it.live("a Schema.DateFromSelf state gets a hint to use Schema.Date", () =>
    Effect.gen(function*() {
      const graph = Graph.make(Schema.Struct({ at: Schema.DateFromSelf })).pipe(
        Graph.addNode("n", (s) => Effect.succeed(s)),
        Graph.addEdge("n", Graph.END),
        Graph.setEntryPoint("n")
      )
      const runnable = yield* Graph.compileCheckpointable(graph)
      const error = yield* Effect.flip(runnable.invoke({ at: new Date() }))
      expect(error).toMatchObject({ _tag: "CheckpointEncodeError" })
      expect(error.message).toContain("use Schema.Date")
    }).pipe(Effect.provide(Layer.fresh(engineStores[0]![1]))))
})
