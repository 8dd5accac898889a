/**
 * The store contract, stated once. Every store runs it:
 *
 *   conformance("Memory", layerWithKit)
 *
 * where the layer provides a fresh, isolated `CheckpointStore` (its own temp
 * dir, table or key prefix, removed when the layer's scope closes) and a
 * `StoreTestKit` that can corrupt a stored checkpoint behind the store's back.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, FastCheck, Layer, Option, Schema } from "effect"
import * as Checkpoint from "./Checkpoint.js"
import * as CheckpointStore from "./CheckpointStore.js"

/** Test-only access to a store's raw storage. */
export class StoreTestKit extends Context.Tag("test/StoreTestKit")<StoreTestKit, {
  /** Replaces the stored form of this (saved) checkpoint with data that is not a valid checkpoint. */
  readonly corrupt: (checkpoint: Checkpoint.Checkpoint) => Effect.Effect<void, unknown>
}>() {}

export type StoreUnderTest = Layer.Layer<CheckpointStore.CheckpointStore | StoreTestKit, unknown>

/** Ids every store must refuse, through the constructors and through its own guard. */
export const hostileIds: ReadonlyArray<string> = [
  "../x",
  "..",
  ".",
  ".hidden",
  "a/b",
  "/etc/passwd",
  "..\\x",
  "*",
  "?",
  "[a]",
  "__proto__",
  "constructor",
  "prototype",
  "a b",
  "",
  "x".repeat(129),
  "'",
  "\"quoted\"",
  "a'; DROP TABLE checkpoints; --",
  "a\u0000b",
  "tab\tx",
  "newline\nx",
  "é",
  "%2e%2e"
]

let counter = 0
/** A fresh execution id, unique in this process and across runs. */
export const freshExecution = (label = "exec"): Effect.Effect<Checkpoint.ExecutionId> =>
  Effect.map(Checkpoint.generateExecutionId, (id) => `${label}-${++counter}-${id}` as Checkpoint.ExecutionId)

/** A valid checkpoint. */
export const mk = (
  executionId: string,
  version: number,
  options: Partial<Omit<Checkpoint.MakeOptions, "executionId" | "version">> = {}
): Effect.Effect<Checkpoint.Checkpoint, never> =>
  Checkpoint.make({
    nodeName: `node-${version}`,
    state: { version, label: `state of ${executionId} v${version}` },
    next: [`node-${version + 1}`],
    ...options,
    executionId,
    version
  }).pipe(Effect.orDie)

const store = CheckpointStore.CheckpointStore

/** A comparable plain view of a checkpoint. */
export const view = (cp: Checkpoint.Checkpoint) => ({
  id: cp.id,
  executionId: cp.executionId,
  nodeName: cp.nodeName,
  state: cp.state,
  metadata: cp.metadata,
  timestamp: cp.timestamp.toISOString(),
  version: cp.version,
  next: cp.next,
  parentId: cp.parentId
})

const versionsOf = (cps: ReadonlyArray<Checkpoint.Checkpoint>) => cps.map((c) => c.version)

/** What a store may legitimately differ in. */
export interface ConformanceOptions {
  /**
   * `false` for a store that keeps JSON values rather than JSON text (PostgreSQL
   * JSONB): objects come back equal, with their keys in the store's own order.
   * Default `true`: keys come back in the order they were saved.
   */
  readonly preservesKeyOrder?: boolean
}

export const conformance = (name: string, makeStore: StoreUnderTest, options: ConformanceOptions = {}): void => {
  describe(`CheckpointStore conformance: ${name}`, () => {
    const test = (title: string, body: () => Effect.Effect<unknown, unknown, CheckpointStore.CheckpointStore | StoreTestKit>) =>
      it.live(title, () => body().pipe(Effect.provide(makeStore)))

    describe("save and load", () => {
      test("round-trips every field exactly", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const first = yield* mk(e, 1, { next: ["a", "b"], timestamp: new Date("2026-01-02T03:04:05.678Z") })
          const meta = JSON.parse('{"__proto__":{"polluted":true},"constructor":"x","nested":{"k":[1,2,{"z":null}]}}')
          const second = yield* mk(e, 2, {
            nodeName: "node with spaces & ünïcödé 🚀",
            state: {
              text: "héllo wörld — 你好 — 🎉 \u2028 \"quotes\" \\ back\\slash",
              nested: { deep: { deeper: { deepest: [1, [2, [3, { x: "y" }]]] } } },
              array: [1, "two", true, null, { three: 3 }, []],
              empty: {},
              numbers: [0, -1, 1.5, 1e21, -2.5e-7, Number.MAX_SAFE_INTEGER]
            },
            metadata: meta,
            next: [],
            parentId: first.id
          })
          yield* s.save(first)
          yield* s.save(second)
          const a = yield* s.load(first.id)
          const b = yield* s.load(second.id)
          expect(view(a)).toEqual(view(first))
          expect(view(b)).toEqual(view(second))
          expect(a).toBeInstanceOf(Checkpoint.Checkpoint)
          expect(a.timestamp).toBeInstanceOf(Date)
          expect(a.parentId).toBeUndefined()
          expect("parentId" in a).toBe(false)
          expect(b.parentId).toBe(first.id)
          // An own `__proto__` key is data: kept as a key, never turned into the prototype.
          const keys = Object.keys(b.metadata)
          expect(options.preservesKeyOrder === false ? [...keys].sort() : keys).toEqual(["__proto__", "constructor", "nested"])
          expect(Object.getPrototypeOf(b.metadata)).toBe(Object.prototype)
          expect(({} as Record<string, unknown>).polluted).toBeUndefined()
        }))

      test("round-trips top-level JSON values of every kind as state", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const states: ReadonlyArray<Checkpoint.Json> = [
            {},
            [],
            [1, 2, 3],
            "a string",
            "",
            42,
            -0.5,
            true,
            false,
            null
          ]
          const cps = yield* Effect.forEach(states, (state, i) => mk(e, i + 1, { state }))
          yield* Effect.forEach(cps, (cp) => s.save(cp))
          const loaded = yield* s.list(e)
          expect(loaded.map((c) => c.state)).toEqual(states)
        }))

      test("round-trips a 1 MB state", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const big = {
            blob: "x".repeat(1024 * 1024),
            items: Array.from({ length: 2000 }, (_, i) => ({ i, s: `item-${i}-ü` }))
          }
          const cp = yield* mk(e, 1, { state: big })
          yield* s.save(cp)
          const loaded = yield* s.load(cp.id)
          expect(loaded.state).toEqual(big)
          expect((yield* s.list(e))[0]!.state).toEqual(big)
        }))

      test("a saved or loaded object can be mutated without changing the store", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const state = { list: [1, 2], inner: { a: 1 } }
          const metadata = { tag: "original" }
          const cp = yield* mk(e, 1, { state, metadata })
          yield* s.save(cp)
          state.list.push(3)
          state.inner.a = 99
          metadata.tag = "changed"
          const loaded = yield* s.load(cp.id)
          expect(loaded.state).toEqual({ list: [1, 2], inner: { a: 1 } })
          expect(loaded.metadata).toEqual({ tag: "original" })
          ;(loaded.state as { list: Array<number> }).list.push(4)
          ;(loaded.next as Array<string>).push("mutated")
          const again = yield* s.load(cp.id)
          expect(again.state).toEqual({ list: [1, 2], inner: { a: 1 } })
          expect(again.next).toEqual(["node-2"])
        }))

      test("load of a missing id fails with CheckpointNotFound carrying the id", () =>
        Effect.gen(function*() {
          const s = yield* store
          const id = yield* Checkpoint.generateCheckpointId
          const error = yield* Effect.flip(s.load(id))
          expect(error._tag).toBe("CheckpointNotFound")
          expect(error).toMatchObject({ id })
          const caught = yield* s.load(id).pipe(
            Effect.catchTag("CheckpointNotFound", (e) => Effect.succeed(`missing ${e.id}`))
          )
          expect(caught).toBe(`missing ${id}`)
        }))

      test("a state that is not JSON fails with CheckpointEncodeError and writes nothing", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const base = yield* mk(e, 1)
          const cyclic: Record<string, unknown> = {}
          cyclic.self = cyclic
          const bad: ReadonlyArray<unknown> = [
            { n: 10n },
            cyclic,
            { d: new Date(0) },
            { f: () => 1 },
            { u: undefined },
            { x: Number.NaN },
            new Map([["a", 1]])
          ]
          for (const state of bad) {
            const cp = new Checkpoint.Checkpoint({ ...base, state: state as Checkpoint.Json }, true)
            const error = yield* Effect.flip(s.save(cp))
            expect(error._tag).toBe("CheckpointEncodeError")
            const many = yield* Effect.flip(s.saveMany([cp]))
            expect(many._tag).toBe("CheckpointEncodeError")
          }
          const badMeta = new Checkpoint.Checkpoint({ ...base, metadata: [] as unknown as Checkpoint.JsonObject }, true)
          expect((yield* Effect.flip(s.save(badMeta)))._tag).toBe("CheckpointEncodeError")
          for (const version of [0, -1, 1.5, Number.NaN, 2 ** 31]) {
            const cp = new Checkpoint.Checkpoint({ ...base, version }, true)
            expect((yield* Effect.flip(s.save(cp)))._tag).toBe("CheckpointEncodeError")
          }
          expect(yield* s.list(e)).toEqual([])
          expect(Option.isNone(yield* s.latest(e))).toBe(true)
          expect(Either.isLeft(yield* Effect.either(s.load(base.id)))).toBe(true)
        }))
    })

    describe("list and latest", () => {
      test("an unknown execution has no checkpoints and no latest", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          expect(yield* s.list(e)).toEqual([])
          expect(yield* s.list(e, { limit: 5, afterVersion: 2 })).toEqual([])
          expect(Option.isNone(yield* s.latest(e))).toBe(true)
        }))

      test("lists ascending by version even when saved out of order", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          for (const v of [3, 1, 10, 2, 7, 4]) yield* s.save(yield* mk(e, v))
          const listed = yield* s.list(e)
          expect(versionsOf(listed)).toEqual([1, 2, 3, 4, 7, 10])
          expect(listed.every((c) => c.executionId === e)).toBe(true)
          const latest = yield* s.latest(e)
          expect(Option.map(latest, (c) => c.version)).toEqual(Option.some(10))
        }))

      test("lists only the asked execution when two are interleaved", () =>
        Effect.gen(function*() {
          const s = yield* store
          const a = yield* freshExecution("a")
          const b = yield* freshExecution("b")
          for (let v = 1; v <= 4; v++) {
            yield* s.save(yield* mk(a, v))
            yield* s.save(yield* mk(b, v, { state: { from: "b", v } }))
          }
          const la = yield* s.list(a)
          const lb = yield* s.list(b)
          expect(versionsOf(la)).toEqual([1, 2, 3, 4])
          expect(versionsOf(lb)).toEqual([1, 2, 3, 4])
          expect(la.every((c) => c.executionId === a)).toBe(true)
          expect(lb.every((c) => c.executionId === b && (c.state as { from: string }).from === "b")).toBe(true)
        }))

      test("pages forward with limit and afterVersion", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.saveMany(yield* Effect.forEach([1, 2, 3, 5, 8, 9], (v) => mk(e, v)))
          expect(versionsOf(yield* s.list(e, { limit: 2 }))).toEqual([1, 2])
          expect(versionsOf(yield* s.list(e, { afterVersion: 2 }))).toEqual([3, 5, 8, 9])
          expect(versionsOf(yield* s.list(e, { afterVersion: 3, limit: 2 }))).toEqual([5, 8])
          expect(versionsOf(yield* s.list(e, { afterVersion: 4, limit: 10 }))).toEqual([5, 8, 9])
          expect(versionsOf(yield* s.list(e, { afterVersion: 9 }))).toEqual([])
          expect(versionsOf(yield* s.list(e, { afterVersion: 0 }))).toEqual([1, 2, 3, 5, 8, 9])
          expect(versionsOf(yield* s.list(e, { limit: 0 }))).toEqual([])
          expect(versionsOf(yield* s.list(e, { limit: -3 }))).toEqual([])
          expect(versionsOf(yield* s.list(e, { limit: 100 }))).toEqual([1, 2, 3, 5, 8, 9])
          // Paging through with the last version seen visits every checkpoint once.
          const seen: Array<number> = []
          let after = 0
          for (;;) {
            const page = yield* s.list(e, { afterVersion: after, limit: 4 })
            if (page.length === 0) break
            seen.push(...versionsOf(page))
            after = page[page.length - 1]!.version
          }
          expect(seen).toEqual([1, 2, 3, 5, 8, 9])
        }))
    })

    describe("delete, clear, prune", () => {
      test("delete removes one checkpoint; deleting again or a missing id is not an error", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cps = yield* Effect.forEach([1, 2, 3], (v) => mk(e, v))
          yield* s.saveMany(cps)
          yield* s.delete(cps[2]!.id)
          yield* s.delete(cps[2]!.id)
          yield* s.delete(yield* Checkpoint.generateCheckpointId)
          expect((yield* Effect.flip(s.load(cps[2]!.id)))._tag).toBe("CheckpointNotFound")
          expect(versionsOf(yield* s.list(e))).toEqual([1, 2])
          expect(Option.map(yield* s.latest(e), (c) => c.version)).toEqual(Option.some(2))
          yield* s.delete(cps[0]!.id)
          expect(versionsOf(yield* s.list(e))).toEqual([2])
          // A deleted version can be saved again.
          yield* s.save(yield* mk(e, 3))
          expect(versionsOf(yield* s.list(e))).toEqual([2, 3])
        }))

      test("clear removes one execution and touches no other", () =>
        Effect.gen(function*() {
          const s = yield* store
          const a = yield* freshExecution("a")
          const b = yield* freshExecution("b")
          const aCps = yield* Effect.forEach([1, 2, 3], (v) => mk(a, v))
          const bCps = yield* Effect.forEach([1, 2], (v) => mk(b, v))
          yield* s.saveMany([...aCps, ...bCps])
          yield* s.clear(a)
          expect(yield* s.list(a)).toEqual([])
          expect(Option.isNone(yield* s.latest(a))).toBe(true)
          for (const cp of aCps) expect((yield* Effect.flip(s.load(cp.id)))._tag).toBe("CheckpointNotFound")
          expect((yield* s.list(b)).map(view)).toEqual(bCps.map(view))
          yield* s.clear(a)
          yield* s.clear(yield* freshExecution("never"))
          const executions = (yield* s.listExecutions()).executions.map((x) => x.executionId)
          expect(executions).toContain(b)
          expect(executions).not.toContain(a)
          // The cleared execution can start again from version 1.
          yield* s.save(yield* mk(a, 1))
          expect(versionsOf(yield* s.list(a))).toEqual([1])
        }))

      test("prune keeps the newest N and returns how many it removed", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const other = yield* freshExecution("other")
          yield* s.saveMany(yield* Effect.forEach([1, 2, 3, 4, 5, 6, 7], (v) => mk(e, v)))
          yield* s.saveMany(yield* Effect.forEach([1, 2, 3], (v) => mk(other, v)))
          expect(yield* s.prune(e, 3)).toBe(4)
          expect(versionsOf(yield* s.list(e))).toEqual([5, 6, 7])
          expect(yield* s.prune(e, 3)).toBe(0)
          expect(yield* s.prune(e, 10)).toBe(0)
          expect(yield* s.prune(e, 1)).toBe(2)
          expect(versionsOf(yield* s.list(e))).toEqual([7])
          expect(yield* s.prune(e, 0)).toBe(1)
          expect(yield* s.list(e)).toEqual([])
          expect(yield* s.prune(e, 0)).toBe(0)
          expect(yield* s.prune(yield* freshExecution("never"), 2)).toBe(0)
          expect(versionsOf(yield* s.list(other))).toEqual([1, 2, 3])
        }))
    })

    describe("conflicts", () => {
      test("a second save of the same (executionId, version) conflicts and leaves the first unchanged", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const first = yield* mk(e, 1, { state: { who: "first" } })
          const second = yield* mk(e, 1, { state: { who: "second" } })
          yield* s.save(first)
          const error = yield* Effect.flip(s.save(second))
          expect(error._tag).toBe("CheckpointConflict")
          expect(error).toMatchObject({ executionId: e, version: 1 })
          const listed = yield* s.list(e)
          expect(listed.map(view)).toEqual([view(first)])
          expect((yield* Effect.flip(s.load(second.id)))._tag).toBe("CheckpointNotFound")
          const caught = yield* s.save(second).pipe(
            Effect.catchTag("CheckpointConflict", (c) => Effect.succeed(`${c.executionId}@${c.version}`))
          )
          expect(caught).toBe(`${e}@1`)
        }))

      test("a second save of the same id conflicts, even in another execution", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const other = yield* freshExecution("other")
          const first = yield* mk(e, 1)
          yield* s.save(first)
          const sameId = yield* mk(other, 1, { id: first.id, state: { who: "impostor" } })
          const error = yield* Effect.flip(s.save(sameId))
          expect(error._tag).toBe("CheckpointConflict")
          expect(view(yield* s.load(first.id))).toEqual(view(first))
          expect(yield* s.list(other)).toEqual([])
          const again = yield* Effect.flip(s.save(first))
          expect(again._tag).toBe("CheckpointConflict")
          expect((yield* s.list(e)).map(view)).toEqual([view(first)])
        }))

      test("saveMany is all or nothing", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const other = yield* freshExecution("other")
          const existing = yield* mk(e, 3)
          yield* s.save(existing)
          // One checkpoint of the batch conflicts with a stored one: none of the batch is written.
          const batch = [yield* mk(other, 1), yield* mk(e, 1), yield* mk(e, 2), yield* mk(e, 3), yield* mk(e, 4)]
          expect((yield* Effect.flip(s.saveMany(batch)))._tag).toBe("CheckpointConflict")
          expect(versionsOf(yield* s.list(e))).toEqual([3])
          expect(yield* s.list(other)).toEqual([])
          for (const cp of batch) {
            if (cp.id !== existing.id) expect((yield* Effect.flip(s.load(cp.id)))._tag).toBe("CheckpointNotFound")
          }
          expect(view(yield* s.load(existing.id))).toEqual(view(existing))
          // Two checkpoints of the batch collide with each other: none is written.
          const twice = [yield* mk(e, 5), yield* mk(e, 6), yield* mk(e, 5)]
          expect((yield* Effect.flip(s.saveMany(twice)))._tag).toBe("CheckpointConflict")
          const sameId = yield* mk(e, 7)
          expect((yield* Effect.flip(s.saveMany([sameId, yield* mk(e, 8, { id: sameId.id })])))._tag)
            .toBe("CheckpointConflict")
          // A bad checkpoint anywhere in the batch: none is written.
          const bad = new Checkpoint.Checkpoint({ ...(yield* mk(e, 9)), executionId: "../bad" as Checkpoint.ExecutionId }, true)
          expect((yield* Effect.flip(s.saveMany([yield* mk(e, 10), bad])))._tag).toBe("InvalidIdentifier")
          expect(versionsOf(yield* s.list(e))).toEqual([3])
          // An empty batch does nothing; a good batch across two executions lands whole.
          yield* s.saveMany([])
          yield* s.saveMany([yield* mk(e, 1), yield* mk(other, 1), yield* mk(e, 2)])
          expect(versionsOf(yield* s.list(e))).toEqual([1, 2, 3])
          expect(versionsOf(yield* s.list(other))).toEqual([1])
        }))
    })

    describe("conditional saves (expect)", () => {
      const expectOn = (executionId: Checkpoint.ExecutionId, latestVersion: number) => ({ expect: { executionId, latestVersion } })

      test("expect latestVersion 0 saves into an empty execution only", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const first = yield* mk(e, 1)
          yield* s.save(first, expectOn(e, 0))
          const again = yield* Effect.flip(s.save(yield* mk(e, 2), expectOn(e, 0)))
          expect(again._tag).toBe("CheckpointConflict")
          expect(again).toMatchObject({ executionId: e, expectedLatestVersion: 0 })
          expect(again.message).toContain("expected to be at version 0")
          expect((yield* s.list(e)).map(view)).toEqual([view(first)])
        }))

      test("expect the current latest version appends; a stale one conflicts and writes nothing", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.saveMany(yield* Effect.forEach([1, 2], (v) => mk(e, v)))
          yield* s.save(yield* mk(e, 3), expectOn(e, 2))
          yield* s.saveMany(yield* Effect.forEach([4, 5], (v) => mk(e, v)), expectOn(e, 3))
          const stale = yield* Effect.flip(s.saveMany(yield* Effect.forEach([6, 7], (v) => mk(e, v)), expectOn(e, 3)))
          expect(stale).toMatchObject({ _tag: "CheckpointConflict", executionId: e, expectedLatestVersion: 3 })
          const staleOne = yield* Effect.flip(s.save(yield* mk(e, 6), expectOn(e, 4)))
          expect(staleOne._tag).toBe("CheckpointConflict")
          expect(versionsOf(yield* s.list(e))).toEqual([1, 2, 3, 4, 5])
          // Caught by tag, like any conflict.
          const caught = yield* s.save(yield* mk(e, 6), expectOn(e, 0)).pipe(
            Effect.catchTag("CheckpointConflict", (c) => Effect.succeed(c.expectedLatestVersion))
          )
          expect(caught).toBe(0)
        }))

      test("an execution whose first versions were pruned is not empty", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.saveMany(yield* Effect.forEach([1, 2, 3, 4, 5], (v) => mk(e, v)))
          expect(yield* s.prune(e, 2)).toBe(3)
          // Version 1 is free again, but the execution is at version 5: a save expecting an empty one must fail.
          const error = yield* Effect.flip(s.save(yield* mk(e, 1), expectOn(e, 0)))
          expect(error._tag).toBe("CheckpointConflict")
          expect(versionsOf(yield* s.list(e))).toEqual([4, 5])
          yield* s.save(yield* mk(e, 6), expectOn(e, 5))
          // After clear, it is empty again.
          yield* s.clear(e)
          yield* s.save(yield* mk(e, 1), expectOn(e, 0))
          expect(versionsOf(yield* s.list(e))).toEqual([1])
        }))

      test("the expectation may name another execution than the one written; batches stay all or nothing", () =>
        Effect.gen(function*() {
          const s = yield* store
          const guardExecution = yield* freshExecution("guard")
          const target = yield* freshExecution("target")
          yield* s.save(yield* mk(guardExecution, 1))
          yield* s.saveMany(yield* Effect.forEach([1, 2], (v) => mk(target, v)), expectOn(guardExecution, 1))
          const error = yield* Effect.flip(
            s.saveMany(yield* Effect.forEach([3, 4], (v) => mk(target, v)), expectOn(guardExecution, 0))
          )
          expect(error._tag).toBe("CheckpointConflict")
          expect(versionsOf(yield* s.list(target))).toEqual([1, 2])
          // A batch that conflicts by version fails whole even when the expectation holds.
          const clash = yield* Effect.flip(
            s.saveMany([yield* mk(target, 3), yield* mk(target, 2)], expectOn(target, 2))
          )
          expect(clash._tag).toBe("CheckpointConflict")
          expect(versionsOf(yield* s.list(target))).toEqual([1, 2])
        }))

      test("a bad expectation is refused before anything is written", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          for (const bad of ["../x", "", "__proto__"]) {
            const error = yield* Effect.flip(s.save(cp, expectOn(bad as Checkpoint.ExecutionId, 0)))
            expect(error._tag).toBe("InvalidIdentifier")
          }
          for (const bad of [-1, 1.5, Number.NaN, 2 ** 31]) {
            expect((yield* Effect.flip(s.saveMany([cp], expectOn(e, bad))))._tag).toBe("InvalidOption")
          }
          expect(yield* s.list(e)).toEqual([])
        }))

      test("concurrent conditional saves into one new execution: exactly one wins", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const rivals = yield* Effect.forEach(Array.from({ length: 8 }), (_, i) =>
            Effect.forEach([1, 2], (v) => mk(e, v, { state: { rival: i, v } })))
          const results = yield* Effect.forEach(rivals, (batch) => Effect.either(s.saveMany(batch, expectOn(e, 0))), {
            concurrency: "unbounded"
          })
          expect(results.filter(Either.isRight).length).toBe(1)
          expect(results.filter(Either.isLeft).every((r) => r.left._tag === "CheckpointConflict")).toBe(true)
          const winner = rivals[results.findIndex(Either.isRight)]!
          expect((yield* s.list(e)).map(view)).toEqual(winner.map(view))
        }))
    })

    describe("listExecutions", () => {
      test("summarises each execution by its newest checkpoint; pendingOnly keeps the unfinished ones", () =>
        Effect.gen(function*() {
          const s = yield* store
          const done = yield* freshExecution("done")
          const pending = yield* freshExecution("pending")
          yield* s.save(yield* mk(done, 1, { timestamp: new Date("2026-01-01T00:00:00.000Z") }))
          const doneLast = yield* mk(done, 2, { next: [], timestamp: new Date("2026-01-01T00:00:01.000Z") })
          yield* s.save(doneLast)
          const pendingLast = yield* mk(pending, 1, { next: ["work"], timestamp: new Date("2026-01-01T00:00:02.000Z") })
          yield* s.save(pendingLast)
          const all = (yield* s.listExecutions()).executions
          expect(all.map((x) => x.executionId)).toEqual([pending, done])
          expect(all[1]).toEqual({
            executionId: done,
            latestVersion: 2,
            latestCheckpointId: doneLast.id,
            updatedAt: doneLast.timestamp,
            pending: false,
            status: "done",
            attempts: 0
          })
          expect(all[0]).toMatchObject({ executionId: pending, latestVersion: 1, latestCheckpointId: pendingLast.id, pending: true })
          const onlyPending = (yield* s.listExecutions({ pendingOnly: true })).executions
          expect(onlyPending.map((x) => x.executionId)).toEqual([pending])
          yield* s.clear(pending)
          expect((yield* s.listExecutions()).executions.map((x) => x.executionId)).toEqual([done])
          expect(yield* s.listExecutions({ pendingOnly: true })).toEqual({ executions: [] })
        }))
    })

    describe("corrupt data", () => {
      test("a corrupt stored checkpoint fails load, list and latest with CheckpointDecodeError naming it", () =>
        Effect.gen(function*() {
          const s = yield* store
          const kit = yield* StoreTestKit
          const e = yield* freshExecution()
          const cps = yield* Effect.forEach([1, 2, 3], (v) => mk(e, v))
          yield* s.saveMany(cps)
          const bad = cps[2]!
          yield* kit.corrupt(bad)
          const onLoad = yield* Effect.flip(s.load(bad.id))
          expect(onLoad._tag).toBe("CheckpointDecodeError")
          expect(onLoad).toMatchObject({ id: bad.id })
          const onList = yield* Effect.flip(s.list(e))
          expect(onList._tag).toBe("CheckpointDecodeError")
          expect(onList).toMatchObject({ id: bad.id })
          const onLatest = yield* Effect.flip(s.latest(e))
          expect(onLatest._tag).toBe("CheckpointDecodeError")
          expect(onLatest).toMatchObject({ id: bad.id })
          const recovered = yield* s.load(bad.id).pipe(
            Effect.catchTag("CheckpointDecodeError", (d) => Effect.succeed(d.id))
          )
          expect(recovered).toBe(bad.id)
          // The good ones still load, a page that avoids the bad one still lists, and the bad one can be removed.
          expect(view(yield* s.load(cps[0]!.id))).toEqual(view(cps[0]!))
          expect(versionsOf(yield* s.list(e, { limit: 2 }))).toEqual([1, 2])
          yield* s.delete(bad.id)
          expect(versionsOf(yield* s.list(e))).toEqual([1, 2])
        }))
    })

    describe("hostile identifiers", () => {
      test("the public constructors refuse them with InvalidIdentifier", () =>
        Effect.gen(function*() {
          for (const raw of hostileIds) {
            const asCheckpoint = yield* Effect.flip(Checkpoint.makeCheckpointId(raw))
            expect(asCheckpoint).toMatchObject({ _tag: "InvalidIdentifier", kind: "CheckpointId" })
            const asExecution = yield* Effect.flip(Checkpoint.makeExecutionId(raw))
            expect(asExecution).toMatchObject({ _tag: "InvalidIdentifier", kind: "ExecutionId" })
            const made = yield* Effect.flip(Checkpoint.make({ executionId: raw, nodeName: "n", state: {}, version: 1 }))
            expect(made._tag).toBe("InvalidIdentifier")
            expect(Either.isLeft(Schema.decodeUnknownEither(Checkpoint.CheckpointId)(raw))).toBe(true)
          }
        }))

      test("the store's own guard refuses them on every operation, and nothing is written", () =>
        Effect.gen(function*() {
          const s = yield* store
          const good = yield* freshExecution()
          const base = yield* mk(good, 1)
          const before = (yield* s.listExecutions()).executions.length
          for (const raw of hostileIds) {
            const id = raw as Checkpoint.CheckpointId
            const executionId = raw as Checkpoint.ExecutionId
            const withBadId = new Checkpoint.Checkpoint({ ...base, id }, true)
            const withBadExecution = new Checkpoint.Checkpoint({ ...base, executionId }, true)
            const withBadParent = new Checkpoint.Checkpoint({ ...base, parentId: id }, true)
            const failures = [
              yield* Effect.flip(s.save(withBadId)),
              yield* Effect.flip(s.save(withBadExecution)),
              yield* Effect.flip(s.save(withBadParent)),
              yield* Effect.flip(s.saveMany([withBadExecution])),
              yield* Effect.flip(s.load(id)),
              yield* Effect.flip(s.list(executionId)),
              yield* Effect.flip(s.list(executionId, { limit: 1 })),
              yield* Effect.flip(s.latest(executionId)),
              yield* Effect.flip(s.delete(id)),
              yield* Effect.flip(s.clear(executionId)),
              yield* Effect.flip(s.prune(executionId, 0))
            ]
            for (const f of failures) expect(f._tag, `for ${JSON.stringify(raw)}`).toBe("InvalidIdentifier")
          }
          expect((yield* s.listExecutions()).executions.length).toBe(before)
          expect(yield* s.list(good)).toEqual([])
        }))
    })

    describe("concurrency", () => {
      test("200 concurrent saves into 20 executions: all listed, none lost or duplicated", () =>
        Effect.gen(function*() {
          const s = yield* store
          const executions = yield* Effect.forEach(Array.from({ length: 20 }), () => freshExecution("c"))
          const cps = yield* Effect.forEach(
            executions.flatMap((e) => Array.from({ length: 10 }, (_, i) => [e, 10 - i] as const)),
            ([e, v]) => mk(e, v)
          )
          yield* Effect.forEach(cps, (cp) => s.save(cp), { concurrency: "unbounded", discard: true })
          for (const e of executions) {
            const listed = yield* s.list(e)
            expect(versionsOf(listed)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
          }
          const ids = new Set(cps.map((c) => c.id))
          const listedIds = (yield* Effect.forEach(executions, (e) => s.list(e))).flat().map((c) => c.id)
          expect(listedIds.length).toBe(200)
          expect(new Set(listedIds)).toEqual(ids)
          const summaries = (yield* s.listExecutions()).executions.filter((x) => executions.includes(x.executionId))
          expect(summaries.length).toBe(20)
          expect(summaries.every((x) => x.latestVersion === 10)).toBe(true)
        }))

      test("concurrent saves of the same (executionId, version): exactly one wins", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const rivals = yield* Effect.forEach(Array.from({ length: 8 }), (_, i) => mk(e, 1, { state: { rival: i } }))
          const results = yield* Effect.forEach(rivals, (cp) => Effect.either(s.save(cp)), { concurrency: "unbounded" })
          expect(results.filter(Either.isRight).length).toBe(1)
          expect(results.filter(Either.isLeft).every((r) => r.left._tag === "CheckpointConflict")).toBe(true)
          const listed = yield* s.list(e)
          expect(listed.length).toBe(1)
          const winner = rivals[results.findIndex(Either.isRight)]!
          expect(view(listed[0]!)).toEqual(view(winner))
        }))
    })

    describe("model", () => {
      test("any sequence of save, saveMany, delete, clear and prune leaves the store equal to a model", () =>
        Effect.gen(function*() {
          const s = yield* store
          type Op =
            | { readonly op: "save"; readonly e: number; readonly v: number }
            | { readonly op: "saveMany"; readonly e: number; readonly vs: ReadonlyArray<number> }
            | { readonly op: "delete"; readonly e: number; readonly v: number }
            | { readonly op: "clear"; readonly e: number }
            | { readonly op: "prune"; readonly e: number; readonly keep: number }
          const e = FastCheck.integer({ min: 0, max: 2 })
          const v = FastCheck.integer({ min: 1, max: 6 })
          const op: FastCheck.Arbitrary<Op> = FastCheck.oneof(
            FastCheck.record({ op: FastCheck.constant("save" as const), e, v }),
            FastCheck.record({ op: FastCheck.constant("saveMany" as const), e, vs: FastCheck.array(v, { maxLength: 3 }) }),
            FastCheck.record({ op: FastCheck.constant("delete" as const), e, v }),
            FastCheck.record({ op: FastCheck.constant("clear" as const), e }),
            FastCheck.record({ op: FastCheck.constant("prune" as const), e, keep: FastCheck.integer({ min: 0, max: 3 }) })
          )
          const samples = FastCheck.sample(FastCheck.array(op, { minLength: 5, maxLength: 25 }), { numRuns: 12, seed: 42 })
          for (const ops of samples) {
            const executions = yield* Effect.forEach([0, 1, 2], () => freshExecution("m"))
            // model: execution index → version → checkpoint id
            const model = executions.map(() => new Map<number, string>())
            for (const o of ops) {
              const exec = executions[o.e]!
              const m = model[o.e]!
              switch (o.op) {
                case "save": {
                  const cp = yield* mk(exec, o.v)
                  const r = yield* Effect.either(s.save(cp))
                  expect(Either.isRight(r)).toBe(!m.has(o.v))
                  if (Either.isRight(r)) m.set(o.v, cp.id)
                  break
                }
                case "saveMany": {
                  const cps = yield* Effect.forEach(o.vs, (ver) => mk(exec, ver))
                  const r = yield* Effect.either(s.saveMany(cps))
                  const ok = new Set(o.vs).size === o.vs.length && o.vs.every((ver) => !m.has(ver))
                  expect(Either.isRight(r)).toBe(ok)
                  if (ok) for (const cp of cps) m.set(cp.version, cp.id)
                  break
                }
                case "delete": {
                  const id = m.get(o.v)
                  yield* s.delete((id ?? (yield* Checkpoint.generateCheckpointId)) as Checkpoint.CheckpointId)
                  m.delete(o.v)
                  break
                }
                case "clear": {
                  yield* s.clear(exec)
                  m.clear()
                  break
                }
                case "prune": {
                  const sorted = [...m.keys()].sort((a, b) => a - b)
                  const drop = sorted.slice(0, Math.max(0, sorted.length - o.keep))
                  expect(yield* s.prune(exec, o.keep)).toBe(drop.length)
                  for (const ver of drop) m.delete(ver)
                  break
                }
              }
            }
            for (let i = 0; i < executions.length; i++) {
              const listed = yield* s.list(executions[i]!)
              const expected = [...model[i]!.entries()].sort((a, b) => a[0] - b[0])
              expect(listed.map((c) => [c.version, c.id])).toEqual(expected)
              const latest = yield* s.latest(executions[i]!)
              expect(Option.getOrUndefined(Option.map(latest, (c) => c.id))).toBe(expected[expected.length - 1]?.[1])
            }
            yield* Effect.forEach(executions, (x) => s.clear(x), { discard: true })
          }
        }))
    })
  })
}
