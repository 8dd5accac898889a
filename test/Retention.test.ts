/**
 * Retention: `Retention.sweep` removes executions idle for `ttl` (and only
 * those a run or a human no longer needs, unless forced); `Retention.layer`
 * sweeps on a schedule; and an execution that was cleared, pruned to nothing
 * or swept stays gone — a late save of an old run fails instead of bringing
 * it back.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Option, Schema, TestClock } from "effect"
import type * as Checkpoint from "../src/Checkpoint.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import * as MemoryStore from "../src/layers/Memory.js"
import * as Retention from "../src/Retention.js"
import { freshExecution, mk } from "../src/testing.js"

const State = Schema.Struct({ n: Schema.Number })
const line = Graph.make(State).pipe(
  Graph.addNode("a", (s) => Effect.succeed({ n: s.n + 1 })),
  Graph.addNode("b", (s) => Effect.succeed({ n: s.n + 1 })),
  Graph.addEdge("a", "b"),
  Graph.addEdge("b", Graph.END),
  Graph.setEntryPoint("a")
)

const statusOf = (e: Checkpoint.ExecutionId) =>
  Effect.flatMap(CheckpointStore.CheckpointStore, (s) => Effect.map(s.getExecution(e), Option.map((r) => r.status)))

describe("Retention.sweep", () => {
  it.effect("removes executions idle for ttl and returns how many; keeps interrupted, sleeping and leased ones unless forced", () =>
    Effect.gen(function*() {
      const store = yield* CheckpointStore.CheckpointStore
      const [old, interrupted, sleeping, leased, fresh] = yield* Effect.forEach(
        ["old", "interrupted", "sleeping", "leased", "fresh"],
        (label) => freshExecution(label)
      )
      yield* store.save(yield* mk(old!, 1, { next: [] }))
      yield* store.save(yield* mk(interrupted!, 1), { execution: { status: "interrupted" } })
      yield* store.save(yield* mk(sleeping!, 1), { execution: { status: "sleeping", wakeAt: new Date(Date.UTC(2100, 0)) } })
      yield* store.save(yield* mk(leased!, 1), { execution: { status: "running", lease: { owner: "w1", ttl: "30 days" } } })
      yield* TestClock.adjust("8 days")
      yield* store.save(yield* mk(fresh!, 1))
      expect(yield* Retention.sweep({ ttl: "7 days" })).toBe(1)
      expect(yield* statusOf(old!)).toEqual(Option.none())
      for (const kept of [interrupted!, sleeping!, leased!, fresh!]) expect(Option.isSome(yield* statusOf(kept))).toBe(true)
      expect(yield* Retention.sweep({ ttl: "7 days", force: true })).toBe(3)
      expect(yield* statusOf(fresh!)).toEqual(Option.some("pending"))
      expect((yield* store.listExecutions()).executions.map((r) => r.executionId)).toEqual([fresh])
    }).pipe(Effect.provide(MemoryStore.layer)))

  it.effect("uses the store's own ttl option when given none; a store without one needs it", () =>
    Effect.gen(function*() {
      const e = yield* freshExecution("store-ttl")
      const withTtl = Effect.gen(function*() {
        const store = yield* CheckpointStore.CheckpointStore
        yield* store.save(yield* mk(e, 1, { next: [] }))
        yield* TestClock.adjust("2 hours")
        return yield* Retention.sweep()
      })
      expect(yield* withTtl.pipe(Effect.provide(MemoryStore.layerWith({ ttl: "1 hour" })))).toBe(1)
      const without = yield* Effect.flip(Retention.sweep().pipe(Effect.provide(MemoryStore.layer)))
      expect(without).toMatchObject({ _tag: "InvalidOption", option: "ttl" })
      const negative = yield* Effect.flip(Retention.sweep({ ttl: "-1 hours" }).pipe(Effect.provide(MemoryStore.layer)))
      expect(negative).toMatchObject({ _tag: "InvalidOption", option: "ttl" })
    }))

  it.effect("Retention.layer sweeps at once and then every interval", () =>
    Effect.gen(function*() {
      const store = yield* CheckpointStore.CheckpointStore
      const a = yield* freshExecution("layer-a")
      const b = yield* freshExecution("layer-b")
      yield* store.save(yield* mk(a, 1, { next: [] }))
      yield* store.save(yield* mk(b, 1, { next: [] }))
      yield* Effect.scoped(Effect.gen(function*() {
        yield* Layer.build(Retention.layer({ ttl: "1 hour", interval: "10 minutes" }))
        yield* TestClock.adjust("30 minutes")
        expect(Option.isSome(yield* statusOf(a))).toBe(true)
        yield* TestClock.adjust("40 minutes")
        expect(yield* statusOf(a)).toEqual(Option.none())
        expect(yield* statusOf(b)).toEqual(Option.none())
      }))
    }).pipe(Effect.provide(MemoryStore.layer)))
})

describe("a removed execution stays gone", () => {
  it.live("a slow async save racing a clear fails with CheckpointConflict instead of resurrecting the execution", () =>
    Effect.gen(function*() {
      const inner = yield* CheckpointStore.CheckpointStore
      const held = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      let saves = 0
      // The store the run uses: its second write waits until the test says so.
      const slow: CheckpointStore.Service = {
        ...inner,
        save: (cp, options) => Effect.suspend(() => ++saves === 2 ? hold(inner.save(cp, options)) : inner.save(cp, options)),
        saveMany: (cps, options) => Effect.suspend(() => ++saves === 2 ? hold(inner.saveMany(cps, options)) : inner.saveMany(cps, options))
      }
      const hold = <A, E>(write: Effect.Effect<A, E>) =>
        Effect.zipRight(Effect.zipRight(Deferred.succeed(held, undefined), Deferred.await(release)), write)
      const e = yield* freshExecution("race")
      const runnable = yield* Graph.compileCheckpointable(line, { durability: "sync", maxCheckpoints: 0 }).pipe(
        Effect.provideService(CheckpointStore.CheckpointStore, slow)
      )
      const run = yield* Effect.fork(runnable.invoke({ n: 0 }, { executionId: e }))
      yield* Deferred.await(held)
      yield* inner.clear(e)
      yield* Deferred.succeed(release, undefined)
      const error = yield* Effect.flip(Fiber.join(run))
      expect(error).toMatchObject({ _tag: "CheckpointConflict", reason: "ExpectationFailed" })
      expect(yield* inner.list(e)).toEqual([])
      expect(yield* inner.getExecution(e)).toEqual(Option.none())
    }).pipe(Effect.provide(MemoryStore.layer)))
})
