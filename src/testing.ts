/**
 * The conformance suite of the `CheckpointStore` contract: every rule a store
 * must keep, stated once. Every store of this package runs it, and a store of
 * your own (built with `CheckpointBackend.make`) proves itself with it too.
 *
 * Run it from a test file of [vitest](https://vitest.dev) with
 * `@effect/vitest` (both are optional peer dependencies of this package, needed
 * only by this module):
 *
 * @example
 * ```ts
 * // test/MyStore.test.ts
 * import { Effect, Layer } from "effect"
 * import { conformance, StoreTestKit } from "effect-checkpoint/testing"
 * import * as MyStore from "../src/MyStore.js"
 *
 * // Each build of this layer must give a NEW, EMPTY, isolated store (its own
 * // table, key prefix or directory), removed when the layer's scope closes.
 * const underTest = Layer.unwrapScoped(Effect.map(freshTableName, (table) =>
 *   Layer.merge(
 *     MyStore.layer({ table }),
 *     // How to damage a stored checkpoint behind the store's back.
 *     Layer.succeed(StoreTestKit, { corrupt: (cp) => overwriteRow(table, cp.id, "not json") })
 *   )))
 *
 * conformance("MyStore", underTest)
 * ```
 *
 * Every test runs with the live clock (`it.live`), so the suite runs against
 * real servers; tests that need a lease to expire wait a few hundred
 * milliseconds for real (see {@link ConformanceOptions}). Tests of one store
 * run one after another.
 *
 * @since 0.2.0
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, Duration, Effect, Either, FastCheck, Layer, Option, Schema } from "effect"
import * as Checkpoint from "./Checkpoint.js"
import * as CheckpointBackend from "./CheckpointBackend.js"
import type { CheckpointConflict } from "./CheckpointError.js"
import * as CheckpointStore from "./CheckpointStore.js"

// -----------------------------------------------------------------------------
// Public helpers
// -----------------------------------------------------------------------------

/**
 * Test-only access to a store's raw storage, provided next to the store by
 * the layer under test.
 *
 * @since 0.2.0
 * @category tags
 */
export class StoreTestKit extends Context.Tag("effect-checkpoint/testing/StoreTestKit")<StoreTestKit, {
  /**
   * Replaces the stored form of this (saved) checkpoint with data that is not
   * a valid checkpoint (truncated JSON, say), behind the store's back.
   */
  readonly corrupt: (checkpoint: Checkpoint.Checkpoint) => Effect.Effect<void, unknown>
  /**
   * For a store that keeps large values as blobs (its backend has
   * `CheckpointBackend.Backend` `blobs`): how many blobs it holds for an
   * execution, and their stored size (in bytes or characters, as the store
   * counts). With it, and `ConformanceOptions.blobs: true`, the suite checks
   * that a large value is stored once and goes with the last checkpoint that
   * references it.
   */
  readonly blobStats?:
    | ((executionId: Checkpoint.ExecutionId) => Effect.Effect<{ readonly count: number; readonly bytes: number }, unknown>)
    | undefined
}>() {}

/**
 * What {@link conformance} runs against: a layer that, each time it is built,
 * provides a new, empty, isolated store and its {@link StoreTestKit}, and
 * removes the store's data when its scope closes.
 *
 * @since 0.2.0
 * @category models
 */
export type StoreUnderTest = Layer.Layer<CheckpointStore.CheckpointStore | StoreTestKit, unknown>

/**
 * Identifiers every store must refuse with `InvalidIdentifier` (path
 * traversal, glob and SQL characters, prototype names, empty, too long,
 * control characters, non-ASCII), as checkpoint ids, execution ids, task ids,
 * write keys and lease owners.
 *
 * @since 0.2.0
 * @category fixtures
 */
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

/**
 * A fresh execution id, unique in this process and across runs:
 * `<label>-<n>-<uuid>`.
 *
 * @since 0.2.0
 * @category fixtures
 */
export const freshExecution = (label = "exec"): Effect.Effect<Checkpoint.ExecutionId> =>
  Effect.map(Checkpoint.generateExecutionId, (id) => `${label}-${++counter}-${id}` as Checkpoint.ExecutionId)

/**
 * A valid checkpoint of `executionId` at `version`: node `node-<version>`, a
 * small state, `next` = `[node-<version + 1>]`, a fresh id and the current
 * time, unless `options` says otherwise.
 *
 * @since 0.2.0
 * @category fixtures
 */
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

/**
 * A plain view of a checkpoint, for comparing a loaded checkpoint with the
 * saved one (`timestamp` as ISO text; `parentId`/`runtime` `undefined` when
 * absent).
 *
 * @since 0.2.0
 * @category fixtures
 */
export const view = (cp: Checkpoint.Checkpoint) => ({
  id: cp.id,
  executionId: cp.executionId,
  nodeName: cp.nodeName,
  state: cp.state,
  metadata: cp.metadata,
  timestamp: cp.timestamp.toISOString(),
  version: cp.version,
  next: cp.next,
  parentId: cp.parentId,
  runtime: cp.runtime
})

/**
 * What a store may legitimately differ in. Every field is optional.
 *
 * @since 0.2.0
 * @category models
 */
export interface ConformanceOptions {
  /**
   * `false` for a store that keeps JSON values rather than JSON text
   * (PostgreSQL JSONB): objects come back equal, with their keys in the
   * store's own order. Default `true`: keys come back in the order they were
   * saved.
   */
  readonly preservesKeyOrder?: boolean | undefined
  /**
   * How far (ms) the store's clock may be from this process's `Clock`, for a
   * store that reads its database's clock: a time the store sets to "now"
   * (`updatedAt` of an update or a claim, a lease's `expiresAt`) must fall
   * within this of the test's own reading. Default 1000.
   */
  readonly clockTolerance?: number | undefined
  /**
   * The ttl (ms) of the leases that tests wait out; the tests wait this plus
   * 150 ms. Raise it for a store whose clock is coarse. Default 300.
   */
  readonly shortLeaseTtl?: number | undefined
  /** The timeout (ms) of each test. Default 60 000. */
  readonly timeout?: number | undefined
  /**
   * `true` for a store that keeps large values as blobs (a backend with
   * `blobs`, built with the default `largeValues` threshold of 4096): its
   * {@link StoreTestKit} must give `blobStats`, and the suite then checks how
   * blobs are stored and removed. Default `false`: those tests are reported
   * as skipped (a store with `blobs` that does not say so fails the suite).
   */
  readonly blobs?: boolean | undefined
}

// -----------------------------------------------------------------------------
// Internal helpers
// -----------------------------------------------------------------------------

const store = CheckpointStore.CheckpointStore

const versionsOf = (cps: ReadonlyArray<Checkpoint.Checkpoint>) => cps.map((c) => c.version)
const idsOf = (records: ReadonlyArray<CheckpointStore.ExecutionRecord>) => records.map((r) => r.executionId)

/** The record of an execution that must have one. */
const recordOf = (executionId: Checkpoint.ExecutionId) =>
  Effect.flatMap(store, (s) => s.getExecution(executionId)).pipe(
    Effect.flatMap(Option.match({
      onNone: () => Effect.dieMessage(`expected a record for ${executionId}`),
      onSome: Effect.succeed
    }))
  )

/** `true` when the execution has no record. */
const hasNoRecord = (executionId: Checkpoint.ExecutionId) =>
  Effect.flatMap(store, (s) => s.getExecution(executionId)).pipe(Effect.map(Option.isNone))

/** Runs `self` and returns its result with the `Clock` time before and after. */
const timed = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const before = yield* Clock.currentTimeMillis
    const a = yield* self
    const after = yield* Clock.currentTimeMillis
    return [a, before, after] as const
  })

/** Every page of `listExecutions` with these options, following the cursors. */
const walk = (options: Omit<CheckpointStore.ListExecutionsOptions, "cursor">) =>
  Effect.gen(function*() {
    const s = yield* store
    const pages: Array<CheckpointStore.ExecutionPage> = []
    let cursor: string | undefined
    for (let i = 0; i < 10_000; i++) {
      const page = yield* s.listExecutions(cursor === undefined ? options : { ...options, cursor })
      pages.push(page)
      if (page.cursor === undefined) return pages
      cursor = page.cursor
    }
    return yield* Effect.dieMessage("listExecutions never reached a last page")
  })

/** Code-unit order, descending. */
const byIdDescending = (a: string, b: string) => a < b ? 1 : a > b ? -1 : 0

/** Newest first: `(updatedAt, executionId)` descending. */
const newestFirst = (a: { readonly id: string; readonly at: number }, b: { readonly id: string; readonly at: number }) =>
  b.at - a.at || byIdDescending(a.id, b.id)

const expectOn = (executionId: Checkpoint.ExecutionId, latestVersion: number, latestCheckpointId?: Checkpoint.CheckpointId) => ({
  expect: latestCheckpointId === undefined ? { executionId, latestVersion } : { executionId, latestVersion, latestCheckpointId }
})

/** Asserts an `ExpectationFailed` conflict; `actual` is checked when the store reports it. */
const expectExpectationFailed = (
  error: unknown,
  executionId: Checkpoint.ExecutionId,
  expected: number,
  actual: number
) => {
  expect(error).toMatchObject({ _tag: "CheckpointConflict", reason: "ExpectationFailed", executionId, expectedLatestVersion: expected })
  const reported = (error as CheckpointConflict).actualLatestVersion
  if (reported !== undefined) expect(reported).toBe(actual)
}

/** JSON values of every kind, for task writes. */
const jsonSamples = (): ReadonlyArray<Checkpoint.Json> => [
  {},
  [],
  [1, "two", true, null, { three: 3 }, []],
  "a string",
  "",
  "héllo wörld — 你好 — 🎉 \u2028 \"quotes\" \\ back\\slash",
  0,
  -1.5,
  1e21,
  -2.5e-7,
  Number.MAX_SAFE_INTEGER,
  true,
  false,
  null,
  { nested: { deep: { deeper: [1, [2, [3, { x: "y" }]]] } } },
  JSON.parse("{\"__proto__\":{\"polluted\":true},\"constructor\":\"x\",\"prototype\":[1]}") as Checkpoint.Json
]

/** Values that are not JSON: a write of any of them is refused with `CheckpointEncodeError`. */
const notJson = (): ReadonlyArray<unknown> => {
  const cyclic: Record<string, unknown> = {}
  cyclic.self = cyclic
  return [
    10n,
    { n: 10n },
    cyclic,
    new Date(0),
    { d: new Date(0) },
    () => 1,
    undefined,
    { u: undefined },
    Number.NaN,
    Number.POSITIVE_INFINITY,
    [1, Number.NEGATIVE_INFINITY],
    new Map([["a", 1]]),
    Symbol("s")
  ]
}

// -----------------------------------------------------------------------------
// The suite
// -----------------------------------------------------------------------------

/**
 * Registers the conformance suite (a vitest `describe` block) for one store.
 * `makeStore` is built afresh for every test (see {@link StoreUnderTest}); a
 * store is done when it passes the whole suite.
 *
 * The rules it states, by section: save and load (exact round trips,
 * `runtime`, no shared objects, encode errors); list and latest; delete,
 * clear, prune; conflicts and their `reason`; conditional saves (`expect`,
 * with `latestCheckpointId`); removed executions stay gone; task writes;
 * execution records; `updateExecution`; leases and fencing; `claim`;
 * `listExecutions` (order, pages, filters); `sweep`; corrupt data; hostile
 * identifiers and bad options; concurrency; and a random model of it all.
 *
 * @since 0.2.0
 * @category conformance
 */
export const conformance = (name: string, makeStore: StoreUnderTest, options: ConformanceOptions = {}): void => {
  const tolerance = options.clockTolerance ?? 1000
  const shortTtl = options.shortLeaseTtl ?? 300
  const timeout = options.timeout ?? 60_000
  /** Long enough for a lease of `shortTtl` to expire. */
  const waitOutShortLease = Effect.sleep(Duration.millis(shortTtl + 150))

  /** `actual` is a time the store set to its "now", somewhere between `from` and `to` (`Clock` ms). */
  const expectNow = (actual: Date | undefined, from: number, to: number, what: string) => {
    expect(actual, what).toBeInstanceOf(Date)
    const t = actual!.getTime()
    expect(t, what).toBeGreaterThanOrEqual(from - tolerance)
    expect(t, what).toBeLessThanOrEqual(to + tolerance)
  }

  /** A lease of `owner` that the store set, during [from, to], for `ttlMs`. */
  const expectLease = (
    record: CheckpointStore.ExecutionRecord,
    owner: string,
    ttlMs: number,
    from: number,
    to: number
  ) => {
    expect(record.lease?.owner).toBe(owner)
    expectNow(record.lease?.expiresAt, from + ttlMs, to + ttlMs, `the lease of ${record.executionId} expires at now + ttl`)
  }

  describe(`CheckpointStore conformance: ${name}`, () => {
    const test = (title: string, body: () => Effect.Effect<unknown, unknown, CheckpointStore.CheckpointStore | StoreTestKit>) =>
      it.live(title, () => body().pipe(Effect.provide(makeStore)), timeout)

    // -------------------------------------------------------------------------
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
            parentId: first.id,
            runtime: { sends: [{ node: "a", input: { x: 1 } }], joins: { w: ["a", "b"] }, stateVersion: 2 }
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
          expect("runtime" in a).toBe(false)
          expect(b.parentId).toBe(first.id)
          expect(b.runtime).toEqual(second.runtime)
          // An own `__proto__` key is data: kept as a key, never turned into the prototype.
          const keys = Object.keys(b.metadata)
          expect(options.preservesKeyOrder === false ? [...keys].sort() : keys).toEqual(["__proto__", "constructor", "nested"])
          expect(Object.getPrototypeOf(b.metadata)).toBe(Object.prototype)
          expect(({} as Record<string, unknown>).polluted).toBeUndefined()
          // list and latest return the same checkpoints.
          expect((yield* s.list(e)).map(view)).toEqual([view(first), view(second)])
          expect(Option.map(yield* s.latest(e), view)).toEqual(Option.some(view(second)))
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
          for (const state of notJson()) {
            const cp = new Checkpoint.Checkpoint({ ...base, state: state as Checkpoint.Json }, true)
            const error = yield* Effect.flip(s.save(cp))
            expect(error._tag).toBe("CheckpointEncodeError")
            const many = yield* Effect.flip(s.saveMany([cp]))
            expect(many._tag).toBe("CheckpointEncodeError")
          }
          const badMeta = new Checkpoint.Checkpoint({ ...base, metadata: [] as unknown as Checkpoint.JsonObject }, true)
          expect((yield* Effect.flip(s.save(badMeta)))._tag).toBe("CheckpointEncodeError")
          const badRuntime = new Checkpoint.Checkpoint({ ...base, runtime: { n: 1n } as unknown as Checkpoint.JsonObject }, true)
          expect((yield* Effect.flip(s.save(badRuntime)))._tag).toBe("CheckpointEncodeError")
          for (const version of [0, -1, 1.5, Number.NaN, 2 ** 31]) {
            const cp = new Checkpoint.Checkpoint({ ...base, version }, true)
            expect((yield* Effect.flip(s.save(cp)))._tag).toBe("CheckpointEncodeError")
          }
          expect(yield* s.list(e)).toEqual([])
          expect(Option.isNone(yield* s.latest(e))).toBe(true)
          expect(yield* hasNoRecord(e)).toBe(true)
          expect(Either.isLeft(yield* Effect.either(s.load(base.id)))).toBe(true)
        }))
    })

    // -------------------------------------------------------------------------
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

    // -------------------------------------------------------------------------
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
          const executions = idsOf((yield* s.listExecutions()).executions)
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

    // -------------------------------------------------------------------------
    describe("conflicts", () => {
      test("a taken (executionId, version) conflicts with reason VersionTaken and leaves the first unchanged", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const first = yield* mk(e, 1, { state: { who: "first" } })
          const second = yield* mk(e, 1, { state: { who: "second" } })
          yield* s.save(first)
          const error = yield* Effect.flip(s.save(second))
          expect(error).toMatchObject({ _tag: "CheckpointConflict", reason: "VersionTaken", executionId: e, version: 1 })
          const listed = yield* s.list(e)
          expect(listed.map(view)).toEqual([view(first)])
          expect((yield* Effect.flip(s.load(second.id)))._tag).toBe("CheckpointNotFound")
          expect((yield* recordOf(e)).latestCheckpointId).toBe(first.id)
          const caught = yield* s.save(second).pipe(
            Effect.catchTag("CheckpointConflict", (c) => Effect.succeed(`${c.reason} ${c.executionId}@${c.version}`))
          )
          expect(caught).toBe(`VersionTaken ${e}@1`)
        }))

      test("a taken id conflicts with reason IdTaken, even in another execution", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const other = yield* freshExecution("other")
          const first = yield* mk(e, 1)
          yield* s.save(first)
          const sameId = yield* mk(other, 1, { id: first.id, state: { who: "impostor" } })
          const error = yield* Effect.flip(s.save(sameId))
          expect(error).toMatchObject({ _tag: "CheckpointConflict", reason: "IdTaken", id: first.id, executionId: other, version: 1 })
          expect(view(yield* s.load(first.id))).toEqual(view(first))
          expect(yield* s.list(other)).toEqual([])
          expect(yield* hasNoRecord(other)).toBe(true)
          // The same id at a new version of the same execution: IdTaken.
          const sameIdNextVersion = yield* mk(e, 2, { id: first.id })
          expect(yield* Effect.flip(s.save(sameIdNextVersion))).toMatchObject({ reason: "IdTaken", id: first.id })
          // The very same checkpoint again collides on both; either reason names a real collision.
          const again = yield* Effect.flip(s.save(first))
          expect(again._tag).toBe("CheckpointConflict")
          expect(["IdTaken", "VersionTaken"]).toContain((again as CheckpointConflict).reason)
          expect((yield* s.list(e)).map(view)).toEqual([view(first)])
        }))

      test("saveMany is all or nothing, and its conflicts carry the right reason", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const other = yield* freshExecution("other")
          const existing = yield* mk(e, 3)
          yield* s.save(existing)
          // One checkpoint of the batch takes a stored version: none of the batch is written.
          const batch = [yield* mk(other, 1), yield* mk(e, 1), yield* mk(e, 2), yield* mk(e, 3), yield* mk(e, 4)]
          expect(yield* Effect.flip(s.saveMany(batch))).toMatchObject({
            _tag: "CheckpointConflict",
            reason: "VersionTaken",
            executionId: e,
            version: 3,
            id: batch[3]!.id
          })
          expect(versionsOf(yield* s.list(e))).toEqual([3])
          expect(yield* s.list(other)).toEqual([])
          expect(yield* hasNoRecord(other)).toBe(true)
          for (const cp of batch) {
            if (cp.id !== existing.id) expect((yield* Effect.flip(s.load(cp.id)))._tag).toBe("CheckpointNotFound")
          }
          expect(view(yield* s.load(existing.id))).toEqual(view(existing))
          // One checkpoint of the batch takes a stored id.
          const thief = yield* mk(other, 2, { id: existing.id })
          expect(yield* Effect.flip(s.saveMany([yield* mk(other, 1), thief]))).toMatchObject({
            reason: "IdTaken",
            id: existing.id,
            executionId: other
          })
          expect(yield* s.list(other)).toEqual([])
          // Two checkpoints of the batch collide with each other: none is written.
          const twice = [yield* mk(e, 5), yield* mk(e, 6), yield* mk(e, 5)]
          expect(yield* Effect.flip(s.saveMany(twice))).toMatchObject({ reason: "VersionTaken", executionId: e, version: 5 })
          const sameId = yield* mk(e, 7)
          expect(yield* Effect.flip(s.saveMany([sameId, yield* mk(e, 8, { id: sameId.id })]))).toMatchObject({
            reason: "IdTaken",
            id: sameId.id
          })
          // A failed expectation is reported before a taken version.
          expect(
            yield* Effect.flip(s.saveMany([yield* mk(e, 3), yield* mk(e, 4)], expectOn(e, 1)))
          ).toMatchObject({ reason: "ExpectationFailed", expectedLatestVersion: 1 })
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

    // -------------------------------------------------------------------------
    describe("conditional saves (expect)", () => {
      test("expect latestVersion 0 saves into an empty execution only", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const first = yield* mk(e, 1)
          yield* s.save(first, expectOn(e, 0))
          const again = yield* Effect.flip(s.save(yield* mk(e, 2), expectOn(e, 0)))
          expectExpectationFailed(again, e, 0, 1)
          expect(again.message).toContain("expected to be at version 0")
          expect((yield* s.list(e)).map(view)).toEqual([view(first)])
        }))

      test("expect the current latest version appends; a stale one fails with ExpectationFailed and writes nothing", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.saveMany(yield* Effect.forEach([1, 2], (v) => mk(e, v)))
          yield* s.save(yield* mk(e, 3), expectOn(e, 2))
          yield* s.saveMany(yield* Effect.forEach([4, 5], (v) => mk(e, v)), expectOn(e, 3))
          const stale = yield* Effect.flip(s.saveMany(yield* Effect.forEach([6, 7], (v) => mk(e, v)), expectOn(e, 3)))
          expectExpectationFailed(stale, e, 3, 5)
          const staleOne = yield* Effect.flip(s.save(yield* mk(e, 6), expectOn(e, 4)))
          expectExpectationFailed(staleOne, e, 4, 5)
          // Expecting a version the execution has not reached fails too.
          expectExpectationFailed(yield* Effect.flip(s.save(yield* mk(e, 7), expectOn(e, 6))), e, 6, 5)
          expect(versionsOf(yield* s.list(e))).toEqual([1, 2, 3, 4, 5])
          expect((yield* recordOf(e)).latestVersion).toBe(5)
          // Caught by tag, like any conflict.
          const caught = yield* s.save(yield* mk(e, 6), expectOn(e, 0)).pipe(
            Effect.catchTag("CheckpointConflict", (c) => Effect.succeed(c.expectedLatestVersion))
          )
          expect(caught).toBe(0)
        }))

      test("an expectation with latestCheckpointId is met only when both the version and the id match", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const [v1, v2] = yield* Effect.forEach([1, 2], (v) => mk(e, v))
          yield* s.saveMany([v1!, v2!])
          expectExpectationFailed(yield* Effect.flip(s.save(yield* mk(e, 3), expectOn(e, 2, v1!.id))), e, 2, 2)
          expectExpectationFailed(yield* Effect.flip(s.save(yield* mk(e, 3), expectOn(e, 1, v1!.id))), e, 1, 2)
          expectExpectationFailed(
            yield* Effect.flip(s.save(yield* mk(e, 3), expectOn(e, 2, yield* Checkpoint.generateCheckpointId))),
            e,
            2,
            2
          )
          expect(versionsOf(yield* s.list(e))).toEqual([1, 2])
          const v3 = yield* mk(e, 3)
          yield* s.save(v3, expectOn(e, 2, v2!.id))
          yield* s.saveMany([yield* mk(e, 4)], expectOn(e, 3, v3.id))
          expect(versionsOf(yield* s.list(e))).toEqual([1, 2, 3, 4])
        }))

      test("a stale latestCheckpointId (cleared and re-run to the same version by someone else) fails and writes nothing", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const mine = yield* Effect.forEach([1, 2], (v) => mk(e, v, { state: { run: "mine" } }))
          yield* s.saveMany(mine)
          yield* s.clear(e)
          const theirs = yield* Effect.forEach([1, 2], (v) => mk(e, v, { state: { run: "theirs" } }))
          yield* s.saveMany(theirs)
          const late = yield* mk(e, 3, { state: { run: "mine" } })
          expectExpectationFailed(yield* Effect.flip(s.save(late, expectOn(e, 2, mine[1]!.id))), e, 2, 2)
          expectExpectationFailed(yield* Effect.flip(s.saveMany([late], expectOn(e, 2, mine[1]!.id))), e, 2, 2)
          expect((yield* s.list(e)).map(view)).toEqual(theirs.map(view))
          expect((yield* Effect.flip(s.load(late.id)))._tag).toBe("CheckpointNotFound")
          expect(yield* recordOf(e)).toMatchObject({ latestVersion: 2, latestCheckpointId: theirs[1]!.id })
          yield* s.save(late, expectOn(e, 2, theirs[1]!.id))
          expect(versionsOf(yield* s.list(e))).toEqual([1, 2, 3])
        }))

      test("an execution whose first versions were pruned is not empty", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.saveMany(yield* Effect.forEach([1, 2, 3, 4, 5], (v) => mk(e, v)))
          expect(yield* s.prune(e, 2)).toBe(3)
          // Version 1 is free again, but the execution is at version 5: a save expecting an empty one must fail.
          expectExpectationFailed(yield* Effect.flip(s.save(yield* mk(e, 1), expectOn(e, 0))), e, 0, 5)
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
          expectExpectationFailed(error, guardExecution, 0, 1)
          expect(versionsOf(yield* s.list(target))).toEqual([1, 2])
          // A batch that conflicts by version fails whole even when the expectation holds.
          const clash = yield* Effect.flip(
            s.saveMany([yield* mk(target, 3), yield* mk(target, 2)], expectOn(target, 2))
          )
          expect(clash).toMatchObject({ _tag: "CheckpointConflict", reason: "VersionTaken", version: 2 })
          expect(versionsOf(yield* s.list(target))).toEqual([1, 2])
        }))

      test("a bad expectation is refused before anything is written", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          for (const bad of ["../x", "", "__proto__"]) {
            const error = yield* Effect.flip(s.save(cp, expectOn(bad as Checkpoint.ExecutionId, 0)))
            expect(error).toMatchObject({ _tag: "InvalidIdentifier", kind: "ExecutionId" })
            const badId = yield* Effect.flip(s.save(cp, expectOn(e, 0, bad as Checkpoint.CheckpointId)))
            expect(badId).toMatchObject({ _tag: "InvalidIdentifier", kind: "CheckpointId" })
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
          for (const r of results) {
            if (Either.isLeft(r)) {
              expect(r.left._tag).toBe("CheckpointConflict")
              // The losers either saw the winner's batch or raced it to the same version.
              expect(["ExpectationFailed", "VersionTaken"]).toContain((r.left as CheckpointConflict).reason)
            }
          }
          const winner = rivals[results.findIndex(Either.isRight)]!
          expect((yield* s.list(e)).map(view)).toEqual(winner.map(view))
        }))
    })

    // -------------------------------------------------------------------------
    describe("removed executions stay gone", () => {
      const removals: ReadonlyArray<
        readonly [string, (e: Checkpoint.ExecutionId) => Effect.Effect<unknown, unknown, CheckpointStore.CheckpointStore>]
      > = [
        ["clear", (e) => Effect.flatMap(store, (s) => s.clear(e))],
        ["prune to 0", (e) => Effect.flatMap(store, (s) => s.prune(e, 0))],
        [
          "sweep",
          () =>
            Effect.flatMap(store, (s) =>
              Effect.map(s.sweep({ before: new Date(Date.UTC(2021, 0, 1)) }), (n) => expect(n).toBe(1)))
        ]
      ]
      for (const [how, remove] of removals) {
        test(`after ${how}, a late conditional save expecting the old latest fails and resurrects nothing; expecting 0 works`, () =>
          Effect.gen(function*() {
            const s = yield* store
            const e = yield* freshExecution()
            const old = yield* Effect.forEach(
              [1, 2, 3],
              (v) => mk(e, v, { timestamp: new Date(Date.UTC(2020, 0, 1, 0, 0, v)) })
            )
            yield* s.saveMany(old)
            yield* s.saveWrites(old[2]!.id, "task", [{ key: "k", value: 1 }])
            yield* remove(e)
            expect(yield* hasNoRecord(e)).toBe(true)
            const late = yield* mk(e, 4)
            expectExpectationFailed(yield* Effect.flip(s.save(late, expectOn(e, 3))), e, 3, 0)
            expectExpectationFailed(yield* Effect.flip(s.saveMany([late], expectOn(e, 3, old[2]!.id))), e, 3, 0)
            expect(yield* s.list(e)).toEqual([])
            expect(yield* hasNoRecord(e)).toBe(true)
            expect((yield* Effect.flip(s.load(late.id)))._tag).toBe("CheckpointNotFound")
            expect(idsOf((yield* s.listExecutions()).executions)).not.toContain(e)
            // Its writes went with it, and a late write has nowhere to go.
            expect(yield* s.listWrites(old[2]!.id)).toEqual([])
            expect((yield* Effect.flip(s.saveWrites(old[2]!.id, "task", [{ key: "k2", value: 2 }])))._tag)
              .toBe("CheckpointNotFound")
            expect((yield* Effect.flip(s.updateExecution(e, { status: "failed" })))._tag).toBe("ExecutionNotFound")
            // A fresh run expecting an empty execution starts it again.
            const fresh = yield* mk(e, 1)
            yield* s.save(fresh, expectOn(e, 0))
            expect((yield* s.list(e)).map(view)).toEqual([view(fresh)])
            expect(yield* recordOf(e)).toMatchObject({ latestVersion: 1, latestCheckpointId: fresh.id, attempts: 0 })
          }))
      }
    })

    // -------------------------------------------------------------------------
    describe("task writes", () => {
      test("saveWrites and listWrites round-trip JSON values of every kind", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          yield* s.save(cp)
          const asWrites = (values: ReadonlyArray<Checkpoint.Json>) =>
            values.map((value, i) => ({ key: `k${String(i).padStart(2, "0")}`, value }))
          const writes = asWrites(jsonSamples())
          yield* s.saveWrites(cp.id, "task-0", writes)
          // The values given can be mutated without changing the store.
          ;(writes[2]!.value as Array<unknown>).push("mutated")
          const expected = asWrites(jsonSamples()).map((w) => ({ taskId: "task-0", key: w.key, value: w.value }))
          const listed = yield* s.listWrites(cp.id)
          expect(listed).toEqual(expected)
          // An own `__proto__` key is data, never the prototype.
          const withProto = listed[listed.length - 1]!.value as Record<string, unknown>
          const keys = Object.keys(withProto)
          expect(options.preservesKeyOrder === false ? [...keys].sort() : keys).toEqual(["__proto__", "constructor", "prototype"])
          expect(Object.getPrototypeOf(withProto)).toBe(Object.prototype)
          expect(Object.getOwnPropertyDescriptor(withProto, "__proto__")?.value).toEqual({ polluted: true })
          expect(({} as Record<string, unknown>).polluted).toBeUndefined()
          // What listWrites returns can be mutated without changing the store.
          ;(listed[2]!.value as Array<unknown>).push("mutated")
          expect(yield* s.listWrites(cp.id)).toEqual(expected)
        }))

      test("writes are listed by taskId, then in the order saved; several calls of one task append", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          yield* s.save(cp)
          yield* s.saveWrites(cp.id, "b", [{ key: "z", value: 1 }, { key: "a", value: 2 }, { key: "m", value: 3 }])
          yield* s.saveWrites(cp.id, "a", [{ key: "x", value: "a1" }])
          yield* s.saveWrites(cp.id, "b", [{ key: "c", value: 4 }])
          yield* s.saveWrites(cp.id, "10", [{ key: "only", value: null }])
          yield* s.saveWrites(cp.id, "a", [{ key: "step:fetch", value: { ok: true } }, { key: "b", value: "a2" }])
          yield* s.saveWrites(cp.id, "9", [{ key: "k", value: [] }])
          yield* s.saveWrites(cp.id, "B", [{ key: "k", value: "upper" }])
          yield* s.saveWrites(cp.id, "b", [])
          // Task ids in code-unit order ("10" < "9" < "B" < "a" < "b"), keys in the order saved.
          expect((yield* s.listWrites(cp.id)).map((w) => [w.taskId, w.key, w.value])).toEqual([
            ["10", "only", null],
            ["9", "k", []],
            ["B", "k", "upper"],
            ["a", "x", "a1"],
            ["a", "step:fetch", { ok: true }],
            ["a", "b", "a2"],
            ["b", "z", 1],
            ["b", "a", 2],
            ["b", "m", 3],
            ["b", "c", 4]
          ])
        }))

      test("a key the task already has fails with WriteTaken and writes nothing of that call", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 4)
          yield* s.save(cp)
          yield* s.saveWrites(cp.id, "t", [{ key: "k1", value: "first" }])
          const before = yield* recordOf(e)
          const error = yield* Effect.flip(
            s.saveWrites(
              cp.id,
              "t",
              [{ key: "k2", value: 2 }, { key: "k1", value: "second" }, { key: "k3", value: 3 }],
              { execution: { status: "interrupted" } }
            )
          )
          expect(error).toMatchObject({
            _tag: "CheckpointConflict",
            reason: "WriteTaken",
            executionId: e,
            version: 4,
            id: cp.id,
            taskId: "t",
            key: "k1"
          })
          expect(yield* s.listWrites(cp.id)).toEqual([{ taskId: "t", key: "k1", value: "first" }])
          expect(yield* recordOf(e)).toEqual(before)
          const caught = yield* s.saveWrites(cp.id, "t", [{ key: "k1", value: 0 }]).pipe(
            Effect.catchTag("CheckpointConflict", (c) => Effect.succeed(`${c.reason} ${c.taskId}/${c.key}`))
          )
          expect(caught).toBe("WriteTaken t/k1")
          // Another task may use the same key; the task may add new keys.
          yield* s.saveWrites(cp.id, "u", [{ key: "k1", value: "u" }])
          yield* s.saveWrites(cp.id, "t", [{ key: "k2", value: 2 }])
          // A call that names one key twice is refused whole.
          const twice = yield* Effect.flip(s.saveWrites(cp.id, "t", [{ key: "k9", value: 1 }, { key: "k9", value: 2 }]))
          expect(twice._tag).toBe("CheckpointEncodeError")
          expect((yield* s.listWrites(cp.id)).map((w) => [w.taskId, w.key, w.value])).toEqual([
            ["t", "k1", "first"],
            ["t", "k2", 2],
            ["u", "k1", "u"]
          ])
        }))

      test("saveWrites to a missing checkpoint fails with CheckpointNotFound; listWrites of one without writes or a missing one is empty", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          const missing = yield* Checkpoint.generateCheckpointId
          const error = yield* Effect.flip(s.saveWrites(missing, "t", [{ key: "k", value: 1 }]))
          expect(error).toMatchObject({ _tag: "CheckpointNotFound", id: missing })
          expect((yield* Effect.flip(s.saveWrites(cp.id, "t", [{ key: "k", value: 1 }])))._tag).toBe("CheckpointNotFound")
          expect(yield* s.listWrites(missing)).toEqual([])
          yield* s.save(cp)
          expect(yield* s.listWrites(cp.id)).toEqual([])
          expect(yield* s.listWrites(missing)).toEqual([])
          // A deleted checkpoint takes no more writes.
          yield* s.delete(cp.id)
          expect((yield* Effect.flip(s.saveWrites(cp.id, "t", [{ key: "k", value: 1 }])))._tag).toBe("CheckpointNotFound")
          expect(yield* s.list(e)).toEqual([])
        }))

      test("writes of different tasks, checkpoints and executions are independent", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution("a")
          const f = yield* freshExecution("b")
          const [c1, c2] = yield* Effect.forEach([1, 2], (v) => mk(e, v))
          const c3 = yield* mk(f, 1)
          yield* s.saveMany([c1!, c2!, c3])
          for (const [cp, label] of [[c1!, "c1"], [c2!, "c2"], [c3, "c3"]] as const) {
            yield* s.saveWrites(cp.id, "t", [{ key: "k", value: `${label}/t` }])
            yield* s.saveWrites(cp.id, "u", [{ key: "k", value: `${label}/u` }])
          }
          for (const [cp, label] of [[c1!, "c1"], [c2!, "c2"], [c3, "c3"]] as const) {
            expect(yield* s.listWrites(cp.id)).toEqual([
              { taskId: "t", key: "k", value: `${label}/t` },
              { taskId: "u", key: "k", value: `${label}/u` }
            ])
          }
        }))

      test("delete, clear and prune remove the writes of the checkpoints they remove and keep the others", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const f = yield* freshExecution("other")
          const cps = yield* Effect.forEach([1, 2, 3, 4], (v) => mk(e, v))
          const others = yield* Effect.forEach([1, 2], (v) => mk(f, v))
          yield* s.saveMany([...cps, ...others])
          for (const cp of [...cps, ...others]) yield* s.saveWrites(cp.id, "t", [{ key: "k", value: cp.version }])
          const writesOf = (cp: Checkpoint.Checkpoint) => Effect.map(s.listWrites(cp.id), (ws) => ws.map((w) => w.value))
          // delete: the deleted checkpoint's writes go, and do not come back if its id is saved again.
          yield* s.delete(cps[3]!.id)
          expect(yield* writesOf(cps[3]!)).toEqual([])
          expect(yield* writesOf(cps[2]!)).toEqual([3])
          yield* s.save(cps[3]!)
          expect(yield* writesOf(cps[3]!)).toEqual([])
          yield* s.saveWrites(cps[3]!.id, "t", [{ key: "k", value: 40 }])
          expect(yield* writesOf(cps[3]!)).toEqual([40])
          // prune: the pruned checkpoints' writes go.
          expect(yield* s.prune(e, 2)).toBe(2)
          expect(yield* writesOf(cps[0]!)).toEqual([])
          expect(yield* writesOf(cps[1]!)).toEqual([])
          expect(yield* writesOf(cps[2]!)).toEqual([3])
          expect(yield* writesOf(cps[3]!)).toEqual([40])
          yield* s.save(cps[0]!)
          expect(yield* writesOf(cps[0]!)).toEqual([])
          // clear: every write of the execution goes.
          yield* s.clear(e)
          for (const cp of cps) expect(yield* writesOf(cp)).toEqual([])
          yield* s.saveMany(cps)
          for (const cp of cps) expect(yield* writesOf(cp)).toEqual([])
          // The other execution kept all of its own.
          expect(yield* writesOf(others[0]!)).toEqual([1])
          expect(yield* writesOf(others[1]!)).toEqual([2])
        }))

      test("a bad taskId or key fails with InvalidIdentifier, a value that is not JSON with CheckpointEncodeError; nothing is written", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          yield* s.save(cp)
          for (const raw of hostileIds) {
            const badTask = yield* Effect.flip(s.saveWrites(cp.id, raw, [{ key: "k", value: 1 }]))
            expect(badTask, `taskId ${JSON.stringify(raw)}`).toMatchObject({ _tag: "InvalidIdentifier", kind: "TaskId" })
            const badKey = yield* Effect.flip(s.saveWrites(cp.id, "t", [{ key: "ok", value: 1 }, { key: raw, value: 1 }]))
            expect(badKey, `key ${JSON.stringify(raw)}`).toMatchObject({ _tag: "InvalidIdentifier", kind: "WriteKey" })
          }
          for (const value of notJson()) {
            const error = yield* Effect.flip(
              s.saveWrites(cp.id, "t", [{ key: "ok", value: 1 }, { key: "bad", value: value as Checkpoint.Json }])
            )
            expect(error._tag).toBe("CheckpointEncodeError")
          }
          expect(yield* s.listWrites(cp.id)).toEqual([])
          // The task can still save those keys.
          yield* s.saveWrites(cp.id, "t", [{ key: "ok", value: 1 }, { key: "bad", value: 2 }])
          expect((yield* s.listWrites(cp.id)).map((w) => w.key)).toEqual(["ok", "bad"])
        }))

      test("an execution patch on saveWrites changes the record with the writes", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1, { timestamp: new Date(Date.UTC(2020, 0, 1)) })
          yield* s.save(cp)
          const [, from, to] = yield* timed(
            s.saveWrites(cp.id, "pause", [{ key: "before", value: { node: "review" } }], {
              execution: { status: "interrupted" }
            })
          )
          const record = yield* recordOf(e)
          expect(record).toMatchObject({ status: "interrupted", pending: true, latestVersion: 1, latestCheckpointId: cp.id })
          expectNow(record.updatedAt, from, to, "updatedAt after a status change")
          expect(yield* s.listWrites(cp.id)).toEqual([{ taskId: "pause", key: "before", value: { node: "review" } }])
          // A patch alone (no writes) changes the record too.
          yield* s.saveWrites(cp.id, "pause", [], { execution: { failure: { tag: "Boom", message: "it broke" } } })
          expect((yield* recordOf(e)).failure).toEqual({ tag: "Boom", message: "it broke" })
          expect(yield* s.listWrites(cp.id)).toHaveLength(1)
        }))
    })

    // -------------------------------------------------------------------------
    describe("execution records", () => {
      test("a save makes the record from the newest checkpoint: latest, updatedAt, a derived status, no attempts, lease or wakeAt", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          expect(yield* hasNoRecord(e)).toBe(true)
          const first = yield* mk(e, 1, { next: ["a"], timestamp: new Date("2026-01-01T00:00:00.001Z") })
          yield* s.save(first)
          expect(yield* recordOf(e)).toEqual({
            executionId: e,
            latestVersion: 1,
            latestCheckpointId: first.id,
            updatedAt: first.timestamp,
            pending: true,
            status: "pending",
            attempts: 0
          })
          const last = yield* mk(e, 2, { next: [], timestamp: new Date("2026-01-01T00:00:02.002Z") })
          yield* s.save(last)
          const record = yield* recordOf(e)
          expect(record).toEqual({
            executionId: e,
            latestVersion: 2,
            latestCheckpointId: last.id,
            updatedAt: last.timestamp,
            pending: false,
            status: "done",
            attempts: 0
          })
          expect(record.lease).toBeUndefined()
          expect(record.wakeAt).toBeUndefined()
          expect(record.failure).toBeUndefined()
          // getExecution and listExecutions agree.
          expect((yield* s.listExecutions()).executions).toEqual([record])
        }))

      test("an execution patch on save sets status, wakeAt, failure and lease; a later save without one clears wakeAt only", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const wakeAt = new Date("2030-01-02T03:04:05.678Z")
          const [, from, to] = yield* timed(s.save(yield* mk(e, 1), {
            execution: {
              status: "sleeping",
              wakeAt,
              failure: { tag: "Flaky", message: "timed out — retrying" },
              lease: { owner: "worker-1", ttl: "1 minute" }
            }
          }))
          const record = yield* recordOf(e)
          expect(record).toMatchObject({
            status: "sleeping",
            pending: true,
            wakeAt,
            failure: { tag: "Flaky", message: "timed out — retrying" },
            attempts: 0
          })
          expectLease(record, "worker-1", 60_000, from, to)
          const second = yield* mk(e, 2, { next: ["x"] })
          yield* s.save(second)
          const after = yield* recordOf(e)
          expect(after).toMatchObject({ status: "pending", latestVersion: 2, latestCheckpointId: second.id })
          expect(after.wakeAt).toBeUndefined()
          expect(after.failure).toEqual({ tag: "Flaky", message: "timed out — retrying" })
          expect(after.lease).toEqual(record.lease)
          yield* s.save(yield* mk(e, 3, { next: [] }), { execution: { failure: null, lease: null } })
          const cleared = yield* recordOf(e)
          expect(cleared).toMatchObject({ status: "done", pending: false, latestVersion: 3 })
          expect(cleared.failure).toBeUndefined()
          expect(cleared.lease).toBeUndefined()
          // An explicit status wins over the derived one.
          yield* s.save(yield* mk(e, 4, { next: [] }), { execution: { status: "failed" } })
          expect(yield* recordOf(e)).toMatchObject({ status: "failed", pending: true, latestVersion: 4 })
        }))

      test("the record follows the newest checkpoint of a batch; a save older than the latest does not move it", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const at = (sec: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, sec))
          const v2 = yield* mk(e, 2, { timestamp: at(2) })
          const v5 = yield* mk(e, 5, { timestamp: at(5), next: [] })
          const v3 = yield* mk(e, 3, { timestamp: at(3) })
          yield* s.saveMany([v2, v5, v3])
          const expected = { latestVersion: 5, latestCheckpointId: v5.id, updatedAt: at(5), status: "done", pending: false }
          expect(yield* recordOf(e)).toMatchObject(expected)
          // Older versions saved later, even with a newer timestamp and nodes to run, leave the record.
          yield* s.save(yield* mk(e, 4, { timestamp: at(9), next: ["x"] }))
          yield* s.saveMany([yield* mk(e, 1, { timestamp: at(10), next: ["x"] })])
          expect(yield* recordOf(e)).toMatchObject(expected)
          expect(versionsOf(yield* s.list(e))).toEqual([1, 2, 3, 4, 5])
          // A newer one moves it.
          const v6 = yield* mk(e, 6, { timestamp: at(11), next: ["y"] })
          yield* s.save(v6)
          expect(yield* recordOf(e)).toMatchObject({
            latestVersion: 6,
            latestCheckpointId: v6.id,
            updatedAt: at(11),
            status: "pending"
          })
        }))

      test("delete of the newest moves the record to the newest left; of an older one leaves it; of the last removes it", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const [v1, v2, v3] = yield* Effect.forEach([1, 2, 3], (v) => mk(e, v))
          yield* s.saveMany([v1!, v2!, v3!])
          yield* s.delete(v2!.id)
          expect(yield* recordOf(e)).toMatchObject({ latestVersion: 3, latestCheckpointId: v3!.id })
          yield* s.delete(v3!.id)
          expect(yield* recordOf(e)).toMatchObject({ latestVersion: 1, latestCheckpointId: v1!.id })
          // A conditional save now expects version 1.
          expectExpectationFailed(yield* Effect.flip(s.save(v2!, expectOn(e, 3))), e, 3, 1)
          yield* s.delete(v1!.id)
          expect(yield* hasNoRecord(e)).toBe(true)
          expect(idsOf((yield* s.listExecutions()).executions)).not.toContain(e)
          yield* s.save(v2!, expectOn(e, 0))
          expect(yield* recordOf(e)).toMatchObject({ latestVersion: 2, latestCheckpointId: v2!.id, attempts: 0 })
        }))

      test("clear and prune to 0 remove the record; prune keeping some keeps it", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const f = yield* freshExecution("f")
          const cps = yield* Effect.forEach([1, 2, 3], (v) => mk(e, v))
          yield* s.saveMany([...cps, yield* mk(f, 1)])
          yield* s.updateExecution(e, { status: "interrupted", failure: { tag: "T", message: "m" } })
          const before = yield* recordOf(e)
          expect(yield* s.prune(e, 1)).toBe(2)
          expect(yield* recordOf(e)).toEqual(before)
          expect(yield* s.prune(e, 0)).toBe(1)
          expect(yield* hasNoRecord(e)).toBe(true)
          yield* s.clear(f)
          expect(yield* hasNoRecord(f)).toBe(true)
          expect((yield* s.listExecutions()).executions).toEqual([])
        }))
    })

    // -------------------------------------------------------------------------
    describe("updateExecution", () => {
      test("sets and clears status, wakeAt and failure, returns the record and moves updatedAt to now", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1, { timestamp: new Date(Date.UTC(2020, 0, 1)) })
          yield* s.save(cp)
          const wakeAt = new Date("2031-05-06T07:08:09.123Z")
          const [slept, from, to] = yield* timed(s.updateExecution(e, { status: "sleeping", wakeAt }))
          expect(slept).toMatchObject({ executionId: e, status: "sleeping", wakeAt, latestVersion: 1, latestCheckpointId: cp.id })
          expectNow(slept.updatedAt, from, to, "updatedAt after a status change")
          expect(yield* recordOf(e)).toEqual(slept)
          const [failed, from2, to2] = yield* timed(s.updateExecution(e, { failure: { tag: "Boom", message: "no" } }))
          expect(failed).toMatchObject({ status: "sleeping", wakeAt, failure: { tag: "Boom", message: "no" } })
          expectNow(failed.updatedAt, from2, to2, "updatedAt after a failure change")
          const cleared = yield* s.updateExecution(e, { status: "failed", wakeAt: null, failure: null })
          expect(cleared).toMatchObject({ status: "failed", pending: true, attempts: 0 })
          expect(cleared.wakeAt).toBeUndefined()
          expect(cleared.failure).toBeUndefined()
          expect(yield* recordOf(e)).toEqual(cleared)
          const done = yield* s.updateExecution(e, { status: "done" })
          expect(done).toMatchObject({ status: "done", pending: false })
          // An empty patch changes nothing and returns the record.
          expect(yield* s.updateExecution(e, {})).toEqual(done)
          // The checkpoints are untouched.
          expect((yield* s.list(e)).map(view)).toEqual([view(cp)])
        }))

      test("a lease-only patch leaves updatedAt; lease: null removes the lease", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1, { timestamp: new Date(Date.UTC(2020, 0, 1)) })
          yield* s.save(cp)
          const [leased, from, to] = yield* timed(s.updateExecution(e, { lease: { owner: "w-1", ttl: "10 seconds" } }))
          expect(leased.updatedAt).toEqual(cp.timestamp)
          expectLease(leased, "w-1", 10_000, from, to)
          const [renewed, from2, to2] = yield* timed(s.updateExecution(e, { lease: { owner: "w-1", ttl: "20 seconds" } }))
          expectLease(renewed, "w-1", 20_000, from2, to2)
          const freed = yield* s.updateExecution(e, { lease: null })
          expect(freed.lease).toBeUndefined()
          expect(freed.updatedAt).toEqual(cp.timestamp)
          expect(yield* recordOf(e)).toEqual(freed)
        }))

      test("a missing execution fails with ExecutionNotFound", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          expect(yield* Effect.flip(s.updateExecution(e, { status: "failed" }))).toMatchObject({
            _tag: "ExecutionNotFound",
            executionId: e
          })
          expect((yield* Effect.flip(s.renew(e, { owner: "w", ttl: "1 minute" })))._tag).toBe("ExecutionNotFound")
          expect((yield* Effect.flip(s.release(e, { owner: "w" })))._tag).toBe("ExecutionNotFound")
          expect(yield* hasNoRecord(e)).toBe(true)
        }))

      test("expect is honoured: the version, and the id when given", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const [v1, v2] = yield* Effect.forEach([1, 2], (v) => mk(e, v))
          yield* s.saveMany([v1!, v2!])
          const before = yield* recordOf(e)
          expectExpectationFailed(
            yield* Effect.flip(s.updateExecution(e, { status: "interrupted" }, { expect: { latestVersion: 1 } })),
            e,
            1,
            2
          )
          expectExpectationFailed(
            yield* Effect.flip(
              s.updateExecution(e, { status: "interrupted" }, { expect: { latestVersion: 2, latestCheckpointId: v1!.id } })
            ),
            e,
            2,
            2
          )
          expect(yield* recordOf(e)).toEqual(before)
          const updated = yield* s.updateExecution(e, { status: "interrupted" }, {
            expect: { latestVersion: 2, latestCheckpointId: v2!.id }
          })
          expect(updated.status).toBe("interrupted")
          expect((yield* s.updateExecution(e, { status: "pending" }, { expect: { latestVersion: 2 } })).status).toBe("pending")
        }))
    })

    // -------------------------------------------------------------------------
    describe("leases and fencing", () => {
      test("a write with an owner is refused with LeaseLost while another owner holds a live lease; nothing changes", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const free = yield* freshExecution("free")
          const v1 = yield* mk(e, 1)
          yield* s.save(v1, { execution: { lease: { owner: "alice", ttl: "1 minute" } } })
          const before = yield* recordOf(e)
          const lost = (error: unknown) => {
            expect(error).toMatchObject({ _tag: "LeaseLost", executionId: e, owner: "bob" })
            const holder = (error as { holder?: string }).holder
            if (holder !== undefined) expect(holder).toBe("alice")
          }
          const v2 = yield* mk(e, 2)
          lost(yield* Effect.flip(s.save(v2, { owner: "bob" })))
          lost(yield* Effect.flip(s.saveMany([v2], { owner: "bob" })))
          lost(yield* Effect.flip(s.saveMany([yield* mk(free, 1), v2], { owner: "bob" })))
          // The lease is checked before the expectation.
          lost(yield* Effect.flip(s.save(v2, { owner: "bob", ...expectOn(e, 0) })))
          lost(yield* Effect.flip(s.saveWrites(v1.id, "t", [{ key: "k", value: 1 }], { owner: "bob" })))
          lost(yield* Effect.flip(s.saveWrites(v1.id, "t", [], { owner: "bob", execution: { status: "failed" } })))
          lost(yield* Effect.flip(s.updateExecution(e, { status: "failed" }, { owner: "bob" })))
          lost(yield* Effect.flip(s.updateExecution(e, { lease: { owner: "bob", ttl: "1 minute" } }, { owner: "bob" })))
          expect((yield* s.list(e)).map(view)).toEqual([view(v1)])
          expect(yield* s.list(free)).toEqual([])
          expect(yield* hasNoRecord(free)).toBe(true)
          expect(yield* s.listWrites(v1.id)).toEqual([])
          expect(yield* recordOf(e)).toEqual(before)
        }))

      test("a write with an owner is allowed when that owner holds the lease or there is none; a write without owner is not fenced", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const v1 = yield* mk(e, 1)
          yield* s.save(v1, { owner: "alice", execution: { lease: { owner: "alice", ttl: "1 minute" } } })
          yield* s.save(yield* mk(e, 2), { owner: "alice" })
          yield* s.saveMany([yield* mk(e, 3)], { owner: "alice", ...expectOn(e, 2) })
          yield* s.saveWrites(v1.id, "t", [{ key: "k", value: 1 }], { owner: "alice" })
          const updated = yield* s.updateExecution(e, { status: "interrupted" }, { owner: "alice" })
          expect(updated).toMatchObject({ status: "interrupted", lease: { owner: "alice" } })
          // Without an owner, no lease is checked.
          yield* s.save(yield* mk(e, 4))
          yield* s.saveWrites(v1.id, "u", [{ key: "k", value: 2 }])
          expect(versionsOf(yield* s.list(e))).toEqual([1, 2, 3, 4])
          expect(yield* s.listWrites(v1.id)).toHaveLength(2)
          expect((yield* recordOf(e)).lease?.owner).toBe("alice")
          // No lease at all: any owner may write.
          const f = yield* freshExecution("f")
          const f1 = yield* mk(f, 1)
          yield* s.save(f1, { owner: "bob" })
          yield* s.saveWrites(f1.id, "t", [{ key: "k", value: 1 }], { owner: "carol" })
          yield* s.updateExecution(f, { status: "sleeping" }, { owner: "dave" })
          expect((yield* recordOf(f)).status).toBe("sleeping")
        }))

      test("a lease patch takes or renews the lease until the store's now + ttl; lease: null removes it", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.save(yield* mk(e, 1))
          const [taken, from, to] = yield* timed(
            s.updateExecution(e, { lease: { owner: "alice", ttl: "10 seconds" } }, { owner: "alice" })
          )
          expectLease(taken, "alice", 10_000, from, to)
          const [, from2, to2] = yield* timed(
            s.save(yield* mk(e, 2), { owner: "alice", execution: { lease: { owner: "alice", ttl: "30 seconds" } } })
          )
          expectLease(yield* recordOf(e), "alice", 30_000, from2, to2)
          const released = yield* s.updateExecution(e, { lease: null }, { owner: "alice" })
          expect(released.lease).toBeUndefined()
          // With no lease left, another owner may take it.
          const [bobs, from3, to3] = yield* timed(
            s.updateExecution(e, { lease: { owner: "bob", ttl: 5000 } }, { owner: "bob" })
          )
          expectLease(bobs, "bob", 5000, from3, to3)
        }))

      test("renew and release are refused with LeaseLost unless the caller holds the lease", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.save(yield* mk(e, 1, { timestamp: new Date(Date.UTC(2020, 0, 1)) }))
          // No lease: nobody holds it.
          expect(yield* Effect.flip(s.renew(e, { owner: "alice", ttl: "1 minute" }))).toMatchObject({
            _tag: "LeaseLost",
            executionId: e,
            owner: "alice"
          })
          expect((yield* Effect.flip(s.release(e, { owner: "alice" })))._tag).toBe("LeaseLost")
          yield* s.updateExecution(e, { lease: { owner: "alice", ttl: "1 minute" } })
          const held = yield* recordOf(e)
          expect((yield* Effect.flip(s.renew(e, { owner: "bob", ttl: "5 minutes" })))._tag).toBe("LeaseLost")
          expect((yield* Effect.flip(s.release(e, { owner: "bob", status: "failed" })))._tag).toBe("LeaseLost")
          expect(yield* recordOf(e)).toEqual(held)
          // The holder renews: a new expiry, updatedAt unchanged.
          const [renewed, from, to] = yield* timed(s.renew(e, { owner: "alice", ttl: "2 minutes" }))
          expectLease(renewed, "alice", 120_000, from, to)
          expect(renewed.updatedAt).toEqual(held.updatedAt)
          expect(yield* recordOf(e)).toEqual(renewed)
          // The holder releases, setting a status.
          const [released, from2, to2] = yield* timed(s.release(e, { owner: "alice", status: "interrupted" }))
          expect(released.lease).toBeUndefined()
          expect(released.status).toBe("interrupted")
          expectNow(released.updatedAt, from2, to2, "updatedAt after a release with a status")
          expect(yield* recordOf(e)).toEqual(released)
          expect((yield* Effect.flip(s.release(e, { owner: "alice" })))._tag).toBe("LeaseLost")
          // A release without a status leaves the status (and updatedAt).
          yield* s.updateExecution(e, { lease: { owner: "alice", ttl: "1 minute" } })
          const plain = yield* s.release(e, { owner: "alice" })
          expect(plain.lease).toBeUndefined()
          expect(plain.status).toBe("interrupted")
          expect(plain.updatedAt).toEqual(released.updatedAt)
        }))

      test("after a lease expired: its holder may still renew or release it; another owner may write and take it over", () =>
        Effect.gen(function*() {
          const s = yield* store
          const [renewing, releasing, taken] = yield* Effect.forEach(["renewing", "releasing", "taken"], freshExecution)
          const takenV1 = yield* mk(taken!, 1)
          yield* s.saveMany([yield* mk(renewing!, 1), yield* mk(releasing!, 1), takenV1])
          for (const e of [renewing!, releasing!, taken!]) {
            yield* s.updateExecution(e, { lease: { owner: "alice", ttl: shortTtl } })
          }
          yield* waitOutShortLease
          // An expired lease still counts as held by its owner.
          const [renewed, from, to] = yield* timed(s.renew(renewing!, { owner: "alice", ttl: "1 minute" }))
          expectLease(renewed, "alice", 60_000, from, to)
          expect((yield* Effect.flip(s.renew(renewing!, { owner: "bob", ttl: "1 minute" })))._tag).toBe("LeaseLost")
          const released = yield* s.release(releasing!, { owner: "alice", status: "failed" })
          expect(released.lease).toBeUndefined()
          expect(released.status).toBe("failed")
          // Another owner may write over an expired lease, and take it.
          yield* s.save(yield* mk(taken!, 2), { owner: "bob" })
          yield* s.saveWrites(takenV1.id, "t", [{ key: "k", value: "bob" }], { owner: "bob" })
          const [bobs, from2, to2] = yield* timed(
            s.updateExecution(taken!, { lease: { owner: "bob", ttl: "1 minute" } }, { owner: "bob" })
          )
          expectLease(bobs, "bob", 60_000, from2, to2)
          // The old holder is fenced out now.
          const fenced = yield* Effect.flip(s.save(yield* mk(taken!, 3), { owner: "alice" }))
          expect(fenced).toMatchObject({ _tag: "LeaseLost", executionId: taken, owner: "alice" })
          expect((yield* Effect.flip(s.renew(taken!, { owner: "alice", ttl: "1 minute" })))._tag).toBe("LeaseLost")
          expect((yield* Effect.flip(s.release(taken!, { owner: "alice" })))._tag).toBe("LeaseLost")
          expect(versionsOf(yield* s.list(taken!))).toEqual([1, 2])
          expect((yield* recordOf(taken!)).lease?.owner).toBe("bob")
        }))
    })

    // -------------------------------------------------------------------------
    describe("claim", () => {
      test("takes due executions only — pending, sleeping past wakeAt, running with an expired lease — and leases them", () =>
        Effect.gen(function*() {
          const s = yield* store
          const now = yield* Clock.currentTimeMillis
          const hour = 3_600_000
          // An execution a worker claimed before, whose lease then expired.
          const expired = yield* freshExecution("expired")
          yield* s.save(yield* mk(expired, 1, { timestamp: new Date(now - 3 * hour) }))
          const first = yield* s.claim({ owner: "old-worker", ttl: shortTtl, limit: 100 })
          expect(idsOf(first)).toEqual([expired])
          expect(first[0]).toMatchObject({ status: "running", attempts: 1, lease: { owner: "old-worker" } })
          const ids = yield* Effect.forEach(
            ["pending", "sleepingDue", "sleepingLater", "runningLive", "pendingLeased", "interrupted", "done", "failed"],
            freshExecution
          )
          const [pending, sleepingDue, sleepingLater, runningLive, pendingLeased, interrupted, done, failed] = ids as [
            Checkpoint.ExecutionId,
            ...Array<Checkpoint.ExecutionId>
          ]
          const at = new Date(now - 2 * hour)
          yield* s.save(yield* mk(pending, 1, { timestamp: at }))
          yield* s.save(yield* mk(sleepingDue!, 1, { timestamp: at }), {
            execution: { status: "sleeping", wakeAt: new Date(now - hour) }
          })
          yield* s.save(yield* mk(sleepingLater!, 1, { timestamp: at }), {
            execution: { status: "sleeping", wakeAt: new Date(now + hour) }
          })
          yield* s.save(yield* mk(runningLive!, 1, { timestamp: at }), {
            execution: { status: "running", lease: { owner: "busy-worker", ttl: "1 minute" } }
          })
          yield* s.save(yield* mk(pendingLeased!, 1, { timestamp: at }), {
            execution: { lease: { owner: "busy-worker", ttl: "1 minute" } }
          })
          yield* s.save(yield* mk(interrupted!, 1, { timestamp: at }), { execution: { status: "interrupted" } })
          yield* s.save(yield* mk(done!, 1, { timestamp: at, next: [] }))
          yield* s.save(yield* mk(failed!, 1, { timestamp: at }), { execution: { status: "failed" } })
          const untouched = [sleepingLater!, runningLive!, pendingLeased!, interrupted!, done!, failed!]
          const before = yield* Effect.forEach(untouched, recordOf)
          yield* waitOutShortLease
          const [claimed, from, to] = yield* timed(s.claim({ owner: "worker-1", ttl: "1 minute", limit: 100 }))
          expect([...idsOf(claimed)].sort()).toEqual([expired, pending, sleepingDue!].sort())
          for (const record of claimed) {
            expect(record).toMatchObject({ status: "running", pending: true, latestVersion: 1 })
            expect(record.attempts).toBe(record.executionId === expired ? 2 : 1)
            expectLease(record, "worker-1", 60_000, from, to)
            expectNow(record.updatedAt, from, to, "updatedAt of a claimed execution")
            expect(yield* recordOf(record.executionId)).toEqual(record)
          }
          // Nothing else moved, and nothing more is due.
          expect(yield* Effect.forEach(untouched, recordOf)).toEqual(before)
          expect(yield* s.claim({ owner: "worker-2", ttl: "1 minute", limit: 100 })).toEqual([])
        }))

      test("limit is honoured", () =>
        Effect.gen(function*() {
          const s = yield* store
          const executions = yield* Effect.forEach(Array.from({ length: 5 }), () => freshExecution("due"))
          yield* s.saveMany(yield* Effect.forEach(executions, (e) => mk(e, 1)))
          expect(yield* s.claim({ owner: "w", ttl: "1 minute", limit: 0 })).toEqual([])
          expect(yield* s.claim({ owner: "w", ttl: "1 minute", limit: -1 })).toEqual([])
          const a = yield* s.claim({ owner: "w", ttl: "1 minute", limit: 2 })
          const b = yield* s.claim({ owner: "w", ttl: "1 minute", limit: 2 })
          const c = yield* s.claim({ owner: "w", ttl: "1 minute", limit: 10 })
          expect([a.length, b.length, c.length]).toEqual([2, 2, 1])
          const all = [...idsOf(a), ...idsOf(b), ...idsOf(c)]
          expect(new Set(all).size).toBe(5)
          expect([...all].sort()).toEqual([...executions].sort())
          expect(yield* s.claim({ owner: "w", ttl: "1 minute", limit: 10 })).toEqual([])
        }))

      test("two owners claiming at once never get the same execution", () =>
        Effect.gen(function*() {
          const s = yield* store
          for (let round = 0; round < 20; round++) {
            const executions = yield* Effect.forEach(Array.from({ length: 10 }), () => freshExecution(`r${round}`))
            yield* s.saveMany(yield* Effect.forEach(executions, (e) => mk(e, 1)))
            const [a, b] = yield* Effect.all([
              s.claim({ owner: "owner-a", ttl: "1 minute", limit: 10 }),
              s.claim({ owner: "owner-b", ttl: "1 minute", limit: 10 })
            ], { concurrency: 2 })
            const ids = [...idsOf(a), ...idsOf(b)]
            expect(new Set(ids).size, `round ${round}`).toBe(ids.length)
            expect([...ids].sort(), `round ${round}`).toEqual([...executions].sort())
            for (const r of a) expect(r.lease?.owner).toBe("owner-a")
            for (const r of b) expect(r.lease?.owner).toBe("owner-b")
            for (const e of executions) {
              const record = yield* recordOf(e)
              expect(record.attempts).toBe(1)
              expect(record.lease?.owner).toBe(idsOf(a).includes(e) ? "owner-a" : "owner-b")
            }
          }
        }))

      test("a bad owner fails with InvalidIdentifier, a bad ttl with InvalidOption, and nothing is claimed", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.save(yield* mk(e, 1))
          for (const raw of hostileIds) {
            expect(yield* Effect.flip(s.claim({ owner: raw, ttl: "1 minute", limit: 10 })), JSON.stringify(raw))
              .toMatchObject({ _tag: "InvalidIdentifier", kind: "owner" })
          }
          const badTtls: ReadonlyArray<unknown> = [0, -1, Number.NaN, Number.POSITIVE_INFINITY, "forever", "-5 seconds"]
          for (const ttl of badTtls) {
            expect(
              yield* Effect.flip(s.claim({ owner: "w", ttl: ttl as Duration.DurationInput, limit: 10 })),
              String(ttl)
            ).toMatchObject({ _tag: "InvalidOption" })
          }
          expect(yield* recordOf(e)).toMatchObject({ status: "pending", attempts: 0 })
          expect((yield* recordOf(e)).lease).toBeUndefined()
        }))
    })

    // -------------------------------------------------------------------------
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
          expect(idsOf(all)).toEqual([pending, done])
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
          expect(idsOf(onlyPending)).toEqual([pending])
          yield* s.clear(pending)
          expect(idsOf((yield* s.listExecutions()).executions)).toEqual([done])
          expect(yield* s.listExecutions({ pendingOnly: true })).toEqual({ executions: [] })
        }))

      test("pages walk every execution once, newest first by (updatedAt, executionId)", () =>
        Effect.gen(function*() {
          const s = yield* store
          const prefix = yield* freshExecution("page")
          const base = Date.UTC(2026, 0, 1)
          // 250 executions; a few share one timestamp (ties are broken by execution id, descending).
          const timeOf = (i: number) => i >= 100 && i < 105 ? base + 100_000 : i === 201 ? base + 200_000 : base + i * 1000
          const all = Array.from({ length: 250 }, (_, i) => ({
            id: `${prefix}-${String((i * 37) % 250).padStart(3, "0")}` as Checkpoint.ExecutionId,
            at: timeOf(i)
          }))
          yield* s.saveMany(yield* Effect.forEach(all, ({ at, id }) => mk(id, 1, { timestamp: new Date(at) })))
          const expected = [...all].sort(newestFirst).map((x) => x.id)
          const firstPage = yield* s.listExecutions()
          expect(idsOf(firstPage.executions)).toEqual(expected.slice(0, 100))
          expect(firstPage.cursor).toBeTypeOf("string")
          expect(firstPage.executions[0]!.updatedAt).toEqual(new Date(base + 249_000))
          for (const size of [7, 100, 50, 250, 1000]) {
            const pages = yield* walk({ limit: size })
            expect(pages.flatMap((p) => idsOf(p.executions)), `pages of ${size}`).toEqual(expected)
            expect(pages.length, `pages of ${size}`).toBe(Math.ceil(250 / size))
            for (const page of pages.slice(0, -1)) {
              expect(page.executions.length).toBe(size)
              expect(page.cursor).toBeTypeOf("string")
            }
            expect(pages[pages.length - 1]!.cursor, `the last page of ${size} has no cursor`).toBeUndefined()
          }
          for (const limit of [0, -1, -100]) {
            const empty = yield* s.listExecutions({ limit })
            expect(empty.executions).toEqual([])
            expect(empty.cursor).toBeUndefined()
          }
        }))

      test("ties in updatedAt are ordered by execution id, descending in code-unit order", () =>
        Effect.gen(function*() {
          const s = yield* store
          const prefix = yield* freshExecution("tie")
          const at = new Date(Date.UTC(2026, 0, 1))
          const ids = ["A", "a", "_", "0", "Z9", "z", "-x", ".x", ":x", "a.b", "a-b", "ab"].map((suffix) =>
            `${prefix}-${suffix}` as Checkpoint.ExecutionId
          )
          yield* s.saveMany(yield* Effect.forEach(ids, (id) => mk(id, 1, { timestamp: at })))
          const expected = [...ids].sort(byIdDescending)
          expect(idsOf((yield* s.listExecutions()).executions)).toEqual(expected)
          expect((yield* walk({ limit: 2 })).flatMap((p) => idsOf(p.executions))).toEqual(expected)
        }))

      test("status, pendingOnly, updatedBefore and updatedAfter filter, also while paging", () =>
        Effect.gen(function*() {
          const s = yield* store
          const base = Date.UTC(2026, 0, 1)
          const all: Array<{ id: Checkpoint.ExecutionId; at: number; status: CheckpointStore.ExecutionStatus }> = []
          let i = 0
          for (const status of CheckpointStore.statuses) {
            for (let n = 0; n < 4; n++) {
              const id = yield* freshExecution(status)
              const at = base + (i++) * 1000
              const cp = yield* mk(id, 1, { timestamp: new Date(at), next: status === "done" ? [] : ["x"] })
              yield* s.save(cp, status === "done" || status === "pending" ? {} : { execution: { status } })
              all.push({ id, at, status })
            }
          }
          const expected = (keep: (x: (typeof all)[number]) => boolean) => all.filter(keep).sort(newestFirst).map((x) => x.id)
          const list = (o: CheckpointStore.ListExecutionsOptions) => Effect.map(s.listExecutions(o), (p) => idsOf(p.executions))
          expect(yield* list({ status: "interrupted" })).toEqual(expected((x) => x.status === "interrupted"))
          expect(yield* list({ status: ["sleeping", "failed"] })).toEqual(
            expected((x) => x.status === "sleeping" || x.status === "failed")
          )
          expect(yield* list({ status: [] })).toEqual([])
          expect(yield* list({ pendingOnly: true })).toEqual(expected((x) => x.status !== "done"))
          expect(yield* list({ pendingOnly: true, status: ["done", "failed"] })).toEqual(expected((x) => x.status === "failed"))
          expect(yield* list({ pendingOnly: false })).toEqual(expected(() => true))
          // Time bounds are strict.
          const pivot = all[10]!.at
          expect(yield* list({ updatedBefore: new Date(pivot) })).toEqual(expected((x) => x.at < pivot))
          expect(yield* list({ updatedAfter: new Date(pivot) })).toEqual(expected((x) => x.at > pivot))
          const low = all[3]!.at
          const high = all[20]!.at
          expect(yield* list({ updatedAfter: new Date(low), updatedBefore: new Date(high) })).toEqual(
            expected((x) => x.at > low && x.at < high)
          )
          expect(yield* list({ updatedAfter: new Date(high), updatedBefore: new Date(low) })).toEqual([])
          // Every filter combined with paging.
          const filter = (x: (typeof all)[number]) =>
            (x.status === "pending" || x.status === "sleeping" || x.status === "done") && x.at > low && x.at < high
          const pages = yield* walk({
            status: ["pending", "sleeping", "done"],
            pendingOnly: true,
            updatedAfter: new Date(low),
            updatedBefore: new Date(high),
            limit: 3
          })
          expect(pages.flatMap((p) => idsOf(p.executions))).toEqual(
            expected((x) => filter(x) && x.status !== "done")
          )
          expect(pages.every((p) => p.executions.length <= 3)).toBe(true)
          const statusPages = yield* walk({ status: ["running", "failed"], limit: 3 })
          expect(statusPages.flatMap((p) => idsOf(p.executions))).toEqual(
            expected((x) => x.status === "running" || x.status === "failed")
          )
          expect(statusPages.length).toBe(3)
        }))

      test("a garbled cursor fails with InvalidIdentifier (kind cursor)", () =>
        Effect.gen(function*() {
          const s = yield* store
          yield* s.save(yield* mk(yield* freshExecution(), 1))
          const garbled = [
            "garbage!",
            "%%%",
            "eyJ4IjoxfQ",
            Buffer.from("[1]").toString("base64url"),
            Buffer.from("[1,\"../x\"]").toString("base64url"),
            Buffer.from("[\"x\",\"y\"]").toString("base64url"),
            "a".repeat(5000)
          ]
          for (const cursor of garbled) {
            expect(yield* Effect.flip(s.listExecutions({ cursor })), cursor.slice(0, 40)).toMatchObject({
              _tag: "InvalidIdentifier",
              kind: "cursor"
            })
          }
        }))
    })

    // -------------------------------------------------------------------------
    describe("sweep", () => {
      test("removes executions not updated since `before` — checkpoints, writes and record — and returns how many", () =>
        Effect.gen(function*() {
          const s = yield* store
          const now = yield* Clock.currentTimeMillis
          const hour = 3_600_000
          const before = new Date(now - hour)
          const old = new Date(now - 2 * hour)
          const fixture = (label: string, at: Date, next?: ReadonlyArray<string>) =>
            Effect.gen(function*() {
              const e = yield* freshExecution(label)
              const cp = yield* mk(e, 1, next === undefined ? { timestamp: at } : { timestamp: at, next })
              return { e, cp }
            })
          const oldDone = yield* fixture("old-done", old, [])
          const oldPending = yield* fixture("old-pending", old)
          const oldFailed = yield* fixture("old-failed", old)
          const oldExpired = yield* fixture("old-expired", old)
          const oldInterrupted = yield* fixture("old-interrupted", old)
          const oldSleeping = yield* fixture("old-sleeping", old)
          const oldLeased = yield* fixture("old-leased", old)
          const atBoundary = yield* fixture("boundary", before)
          const recent = yield* fixture("recent", new Date(now))
          yield* s.save(oldDone.cp)
          yield* s.save(oldPending.cp)
          yield* s.save(oldFailed.cp, { execution: { status: "failed", failure: { tag: "T", message: "m" } } })
          yield* s.save(oldExpired.cp, { execution: { status: "running", lease: { owner: "gone", ttl: shortTtl } } })
          yield* s.save(oldInterrupted.cp, { execution: { status: "interrupted" } })
          yield* s.save(oldSleeping.cp, { execution: { status: "sleeping", wakeAt: new Date(now - hour) } })
          yield* s.save(oldLeased.cp, { execution: { status: "running", lease: { owner: "busy", ttl: "1 minute" } } })
          yield* s.save(atBoundary.cp)
          yield* s.save(recent.cp)
          for (const x of [oldDone, oldPending, oldInterrupted, recent]) {
            yield* s.saveWrites(x.cp.id, "t", [{ key: "k", value: x.e }])
          }
          yield* waitOutShortLease
          const gone = (x: { e: Checkpoint.ExecutionId; cp: Checkpoint.Checkpoint }) =>
            Effect.gen(function*() {
              expect(yield* hasNoRecord(x.e), x.e).toBe(true)
              expect(yield* s.list(x.e)).toEqual([])
              expect((yield* Effect.flip(s.load(x.cp.id)))._tag).toBe("CheckpointNotFound")
              expect(yield* s.listWrites(x.cp.id)).toEqual([])
            })
          const kept = (x: { e: Checkpoint.ExecutionId; cp: Checkpoint.Checkpoint }) =>
            Effect.gen(function*() {
              expect((yield* recordOf(x.e)).latestCheckpointId).toBe(x.cp.id)
              expect(view(yield* s.load(x.cp.id))).toEqual(view(x.cp))
            })
          expect(yield* s.sweep({ before })).toBe(4)
          for (const x of [oldDone, oldPending, oldFailed, oldExpired]) yield* gone(x)
          for (const x of [oldInterrupted, oldSleeping, oldLeased, atBoundary, recent]) yield* kept(x)
          expect(yield* s.listWrites(oldInterrupted.cp.id)).toEqual([{ taskId: "t", key: "k", value: oldInterrupted.e }])
          expect(yield* s.sweep({ before })).toBe(0)
          // force removes the protected ones too.
          expect(yield* s.sweep({ before, force: true })).toBe(3)
          for (const x of [oldInterrupted, oldSleeping, oldLeased]) yield* gone(x)
          for (const x of [atBoundary, recent]) yield* kept(x)
          expect(yield* s.listWrites(recent.cp.id)).toEqual([{ taskId: "t", key: "k", value: recent.e }])
          expect(yield* s.sweep({ before: new Date(now + hour), force: true })).toBe(2)
          for (const x of [atBoundary, recent]) yield* gone(x)
          expect((yield* s.listExecutions()).executions).toEqual([])
        }))
    })

    // -------------------------------------------------------------------------
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

    // -------------------------------------------------------------------------
    describe("hostile identifiers and bad options", () => {
      test("the public constructors refuse hostile ids with InvalidIdentifier", () =>
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

      test("the store's own guard refuses hostile ids on every operation, and nothing is written", () =>
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
              yield* Effect.flip(s.prune(executionId, 0)),
              yield* Effect.flip(s.saveWrites(id, "t", [{ key: "k", value: 1 }])),
              yield* Effect.flip(s.listWrites(id)),
              yield* Effect.flip(s.getExecution(executionId)),
              yield* Effect.flip(s.updateExecution(executionId, { status: "failed" })),
              yield* Effect.flip(s.renew(executionId, { owner: "w", ttl: "1 minute" })),
              yield* Effect.flip(s.release(executionId, { owner: "w" }))
            ]
            for (const f of failures) expect(f._tag, `for ${JSON.stringify(raw)}`).toBe("InvalidIdentifier")
          }
          expect((yield* s.listExecutions()).executions.length).toBe(before)
          expect(yield* s.list(good)).toEqual([])
        }))

      test("a hostile lease owner is refused with InvalidIdentifier (kind owner) everywhere, and nothing changes", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          yield* s.save(cp)
          const record = yield* recordOf(e)
          const next = yield* mk(e, 2)
          for (const raw of hostileIds) {
            const failures = [
              yield* Effect.flip(s.save(next, { owner: raw })),
              yield* Effect.flip(s.saveMany([next], { owner: raw })),
              yield* Effect.flip(s.save(next, { execution: { lease: { owner: raw, ttl: "1 minute" } } })),
              yield* Effect.flip(s.saveWrites(cp.id, "t", [{ key: "k", value: 1 }], { owner: raw })),
              yield* Effect.flip(s.updateExecution(e, { status: "failed" }, { owner: raw })),
              yield* Effect.flip(s.updateExecution(e, { lease: { owner: raw, ttl: "1 minute" } })),
              yield* Effect.flip(s.renew(e, { owner: raw, ttl: "1 minute" })),
              yield* Effect.flip(s.release(e, { owner: raw }))
            ]
            for (const f of failures) {
              expect(f, `for ${JSON.stringify(raw)}`).toMatchObject({ _tag: "InvalidIdentifier", kind: "owner" })
            }
          }
          expect(versionsOf(yield* s.list(e))).toEqual([1])
          expect(yield* s.listWrites(cp.id)).toEqual([])
          expect(yield* recordOf(e)).toEqual(record)
        }))

      test("bad options are refused with InvalidOption, and nothing changes", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1, { timestamp: new Date(Date.UTC(2020, 0, 1)) })
          yield* s.save(cp)
          const record = yield* recordOf(e)
          const badPatches: ReadonlyArray<unknown> = [
            { status: "paused" },
            { wakeAt: new Date(Number.NaN) },
            { wakeAt: "tomorrow" },
            { failure: { tag: 1, message: "m" } },
            { failure: { tag: "T" } },
            { lease: { owner: "w", ttl: 0 } },
            { lease: { owner: "w", ttl: -1000 } },
            { lease: { owner: "w", ttl: "forever" } },
            { lease: { owner: "w", ttl: Number.NaN } }
          ]
          const next = yield* mk(e, 2)
          for (const bad of badPatches) {
            const patch = bad as CheckpointStore.ExecutionPatch
            const failures = [
              yield* Effect.flip(s.save(next, { execution: patch })),
              yield* Effect.flip(s.saveMany([next], { execution: patch })),
              yield* Effect.flip(s.saveWrites(cp.id, "t", [{ key: "k", value: 1 }], { execution: patch })),
              yield* Effect.flip(s.updateExecution(e, patch))
            ]
            for (const f of failures) expect(f._tag, JSON.stringify(bad)).toBe("InvalidOption")
          }
          expect(yield* Effect.flip(s.renew(e, { owner: "w", ttl: 0 }))).toMatchObject({ _tag: "InvalidOption" })
          expect(yield* Effect.flip(s.release(e, { owner: "w", status: "paused" as CheckpointStore.ExecutionStatus })))
            .toMatchObject({ _tag: "InvalidOption" })
          expect((yield* Effect.flip(s.updateExecution(e, {}, { expect: { latestVersion: -1 } })))._tag).toBe("InvalidOption")
          const listBad: ReadonlyArray<CheckpointStore.ListExecutionsOptions> = [
            { status: "paused" as CheckpointStore.ExecutionStatus },
            { status: ["pending", "paused" as CheckpointStore.ExecutionStatus] },
            { updatedBefore: new Date(Number.NaN) },
            { updatedAfter: new Date(Number.NaN) }
          ]
          for (const o of listBad) expect((yield* Effect.flip(s.listExecutions(o)))._tag).toBe("InvalidOption")
          expect((yield* Effect.flip(s.sweep({ before: new Date(Number.NaN) })))._tag).toBe("InvalidOption")
          expect((yield* Effect.flip(s.sweep({ before: "yesterday" as unknown as Date })))._tag).toBe("InvalidOption")
          expect(versionsOf(yield* s.list(e))).toEqual([1])
          expect(yield* s.listWrites(cp.id)).toEqual([])
          expect(yield* recordOf(e)).toEqual(record)
        }))
    })

    // -------------------------------------------------------------------------
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
          for (const summary of summaries) {
            const top = cps.find((c) => c.executionId === summary.executionId && c.version === 10)!
            expect(summary).toMatchObject({ latestVersion: 10, latestCheckpointId: top.id })
          }
        }))

      test("concurrent saves of the same (executionId, version): exactly one wins", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const rivals = yield* Effect.forEach(Array.from({ length: 8 }), (_, i) => mk(e, 1, { state: { rival: i } }))
          const results = yield* Effect.forEach(rivals, (cp) => Effect.either(s.save(cp)), { concurrency: "unbounded" })
          expect(results.filter(Either.isRight).length).toBe(1)
          for (const r of results) {
            if (Either.isLeft(r)) expect(r.left).toMatchObject({ _tag: "CheckpointConflict", reason: "VersionTaken" })
          }
          const listed = yield* s.list(e)
          expect(listed.length).toBe(1)
          const winner = rivals[results.findIndex(Either.isRight)]!
          expect(view(listed[0]!)).toEqual(view(winner))
          expect((yield* recordOf(e)).latestCheckpointId).toBe(winner.id)
        }))

      test("concurrent writes of one task key: exactly one wins", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          yield* s.save(cp)
          const results = yield* Effect.forEach(
            Array.from({ length: 8 }, (_, i) => i),
            (i) => Effect.either(s.saveWrites(cp.id, "t", [{ key: `mine-${i}`, value: i }, { key: "shared", value: i }])),
            { concurrency: "unbounded" }
          )
          const winners = results.flatMap((r, i) => Either.isRight(r) ? [i] : [])
          expect(winners.length).toBe(1)
          for (const r of results) {
            if (Either.isLeft(r)) expect(r.left).toMatchObject({ _tag: "CheckpointConflict", reason: "WriteTaken", key: "shared" })
          }
          expect(yield* s.listWrites(cp.id)).toEqual([
            { taskId: "t", key: `mine-${winners[0]}`, value: winners[0] },
            { taskId: "t", key: "shared", value: winners[0] }
          ])
        }))
    })

    // -------------------------------------------------------------------------
    describe("large values", () => {
      /** The threshold (JSON characters) above which `CheckpointBackend.make` stores a field as a blob by default. */
      const threshold = 4096
      /** Loaded equals saved: the same JSON text (key order too, for a store that keeps it). */
      const same = (actual: Checkpoint.Checkpoint, saved: Checkpoint.Checkpoint, what: string) => {
        if (options.preservesKeyOrder === false) expect(view(actual), what).toEqual(view(saved))
        else expect(JSON.stringify(view(actual)), what).toBe(JSON.stringify(view(saved)))
      }
      /** Every way to read an execution gives back exactly `saved` (ascending versions). */
      const readsBack = (s: CheckpointStore.Service, saved: ReadonlyArray<Checkpoint.Checkpoint>, label = "") =>
        Effect.gen(function*() {
          const e = saved[0]!.executionId
          const listed = yield* s.list(e)
          expect(versionsOf(listed), `${label} list`).toEqual(versionsOf(saved))
          listed.forEach((cp, i) => same(cp, saved[i]!, `${label} list v${cp.version}`))
          for (const cp of saved) same(yield* s.load(cp.id), cp, `${label} load v${cp.version}`)
          same(Option.getOrThrow(yield* s.latest(e)), saved[saved.length - 1]!, `${label} latest`)
          // A page in the middle too.
          const middle = Math.floor(saved.length / 2)
          const page = yield* s.list(e, { afterVersion: saved[middle]!.version - 1, limit: 2 })
          page.forEach((cp, i) => same(cp, saved[middle + i]!, `${label} page v${cp.version}`))
        })
      /** A second store on the same storage, as another process opens it (its own memory of what is stored). */
      const otherProcess = (s: CheckpointStore.Service): CheckpointStore.Service =>
        Option.match(CheckpointBackend.backendOf(s), {
          onNone: () => s,
          onSome: ({ backend, options }) => CheckpointBackend.make(backend, options)
        })
      /** A message of about 200 characters. */
      const message = (i: number) => ({ role: i % 2 === 0 ? "user" : "assistant", text: `message ${i} — ${"lorem ipsum ".repeat(15)}` })
      const chat = (n: number) => Array.from({ length: n }, (_, i) => message(i))

      test("values just under, at and over the threshold, in fields and whole states, round-trip byte-identical", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          // JSON.stringify of "x".repeat(n) is n + 2 characters long.
          const under = "u".repeat(threshold - 3)
          const at = "a".repeat(threshold - 2)
          const over = "o".repeat(threshold - 1)
          const states: ReadonlyArray<Checkpoint.Json> = [
            { under, small: 1 },
            { at, small: 2 },
            { over, small: 3 },
            { first: over, middle: "m", last: over + "!", list: Array.from({ length: 300 }, (_, i) => ({ i, s: "x".repeat(20) })) },
            { over, at, under, n: null, t: true },
            // Not an object: the whole state is one value.
            Array.from({ length: 500 }, (_, i) => `item ${i} ${"y".repeat(10)}`),
            "z".repeat(threshold * 3),
            { over: "o".repeat(threshold * 50) }
          ]
          const saved = yield* Effect.forEach(states, (state, i) =>
            mk(e, i + 1, i === 3 ? { state, runtime: { joins: { b: ["a"] }, note: "o".repeat(threshold + 1) } } : { state }))
          for (const cp of saved.slice(0, 4)) yield* s.save(cp)
          yield* s.saveMany(saved.slice(4))
          yield* readsBack(s, saved)
          // What a caller holds is its own: changing it changes nothing stored.
          const loaded = yield* s.load(saved[2]!.id)
          ;(loaded.state as { over: string }).over = "changed"
          same(yield* s.load(saved[2]!.id), saved[2]!, "after a caller changed a loaded state")
        }))

      test("a large field unchanged across 30 checkpoints comes back whole from each, next to fields that change", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const document = { title: "spec", body: "The quick brown fox. ".repeat(2000), tags: ["a", "b"] }
          const saved: Array<Checkpoint.Checkpoint> = []
          for (let v = 1; v <= 30; v++) {
            const cp = yield* mk(e, v, { state: { step: v, document, log: `step ${v}` } })
            saved.push(cp)
            if (v % 10 === 0) yield* s.saveMany(saved.slice(v - 3, v))
            else if (v % 10 < 8) yield* s.save(cp)
          }
          yield* readsBack(s, saved)
        }))

      test("an append-only array growing over 40 checkpoints, then changed in the middle, shrunk and grown again, comes back whole at every version", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const saved: Array<Checkpoint.Checkpoint> = []
          let messages: Array<{ role: string; text: string }> = []
          const add = (state: Checkpoint.Json) =>
            Effect.flatMap(mk(e, saved.length + 1, { state }), (cp) => Effect.as(s.save(cp), saved.push(cp)))
          for (let turn = 0; turn < 40; turn++) {
            messages = [...messages, ...Array.from({ length: 1 + (turn % 3) }, (_, i) => message(messages.length + i))]
            yield* add({ turn, messages })
          }
          // Changed in the middle: not an append.
          messages = messages.map((m, i) => i === 30 ? { ...m, text: "edited" } : m)
          yield* add({ turn: 40, messages })
          // Shrunk, then unchanged, then grown from there; then emptied and grown again.
          messages = messages.slice(0, 25)
          yield* add({ turn: 41, messages })
          yield* add({ turn: 42, messages })
          messages = [...messages, message(1000)]
          yield* add({ turn: 43, messages })
          yield* add({ turn: 44, messages: [] })
          yield* add({ turn: 45, messages: chat(30) })
          // Two appends in one batch.
          const batch = [
            yield* mk(e, saved.length + 1, { state: { turn: 46, messages: chat(32) } }),
            yield* mk(e, saved.length + 2, { state: { turn: 47, messages: chat(35) } })
          ]
          yield* s.saveMany(batch)
          saved.push(...batch)
          yield* readsBack(s, saved)
          for (const cp of saved) same(yield* s.load(cp.id), cp, `load v${cp.version}`)
        }))

      test("after prune, delete and clear, new saves of the same execution round-trip (what the store remembered is stale)", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const big = { blob: "b".repeat(threshold * 4) }
          const state = (v: number, n: number) => ({ v, big, messages: chat(n) })
          const saved: Array<Checkpoint.Checkpoint> = []
          const add = (n: number) =>
            Effect.flatMap(mk(e, (saved[saved.length - 1]?.version ?? 0) + 1, { state: state(saved.length, n) }), (cp) =>
              Effect.as(s.save(cp), saved.push(cp)))
          for (let i = 0; i < 6; i++) yield* add(20 + i)
          expect(yield* s.prune(e, 1)).toBe(5)
          saved.splice(0, 5)
          yield* add(26)
          yield* readsBack(s, saved, "after prune")
          // The last checkpoints referencing the large values go: they go too (in a store with blobs).
          yield* s.delete(saved[0]!.id)
          yield* s.delete(saved[1]!.id)
          saved.splice(0, 2)
          yield* add(27)
          yield* add(28)
          yield* readsBack(s, saved, "after delete")
          yield* s.clear(e)
          saved.splice(0)
          yield* add(29)
          yield* add(29)
          yield* readsBack(s, saved, "after clear")
          // Prune to zero, then the same execution again from version 1.
          yield* s.prune(e, 0)
          saved.splice(0)
          yield* add(30)
          yield* readsBack(s, saved, "after prune to 0")
        }))

      test("two stores on one storage (two processes) interleave saves, prunes and deletes of one execution", () =>
        Effect.gen(function*() {
          const a = yield* store
          const b = otherProcess(a)
          const e = yield* freshExecution()
          const big = "B".repeat(threshold * 3)
          const saved: Array<Checkpoint.Checkpoint> = []
          const add = (by: CheckpointStore.Service, state: Checkpoint.Json) =>
            Effect.flatMap(mk(e, (saved[saved.length - 1]?.version ?? 0) + 1, { state }), (cp) =>
              Effect.as(by.save(cp), saved.push(cp)))
          const both = (label: string) => Effect.zipRight(readsBack(a, saved, `${label} (a)`), readsBack(b, saved, `${label} (b)`))
          for (let i = 0; i < 8; i++) yield* add(i % 2 === 0 ? a : b, { i, big, messages: chat(20 + i) })
          yield* both("alternating")
          // b prunes what a remembers storing; a goes on as if nothing happened.
          yield* b.prune(e, 1)
          saved.splice(0, saved.length - 1)
          yield* add(a, { i: 12, big, messages: chat(33) })
          yield* add(a, { i: 13, big: big + "!", messages: chat(34) })
          yield* both("after b pruned")
          // a deletes everything b stored; b goes on.
          for (const cp of [...saved]) yield* a.delete(cp.id)
          saved.splice(0)
          yield* add(b, { i: 14, big, messages: chat(34) })
          yield* add(b, { i: 15, big, messages: chat(35) })
          yield* add(a, { i: 16, big, messages: chat(36) })
          yield* both("after a deleted")
          yield* b.clear(e)
          saved.splice(0)
          yield* add(a, { i: 17, big, messages: chat(36) })
          yield* add(b, { i: 18, big, messages: chat(37) })
          yield* both("after b cleared")
        }))

      test("unicode, escapes, nested objects and prototype names in large values round-trip exactly", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const text = "héllo wörld — 你好 — 🎉👩‍👩‍👧 \u2028\u2029 \"quotes\" \\ back\\slash \t\n\u0001 ".repeat(200)
          const nested = JSON.parse(
            `{"__proto__":{"polluted":${JSON.stringify(text)}},"constructor":{"prototype":[1,{"deep":{"deeper":[${
              JSON.stringify(text)
            }]}}]},"n":[1e21,-2.5e-7,0,-0.5]}`
          ) as Checkpoint.Json
          const states = [
            JSON.parse(`{"__proto__":${JSON.stringify(text)},"constructor":${JSON.stringify(text)},"x":1}`) as Checkpoint.Json,
            { text, nested, emoji: ["🎉".repeat(3000)] },
            { text, nested, emoji: ["🎉".repeat(3000), "👩‍👩‍👧".repeat(2000)] },
            JSON.parse(`{"__proto__":[${JSON.stringify(text)}],"k":2}`) as Checkpoint.Json,
            JSON.parse(`{"__proto__":[${JSON.stringify(text)},${JSON.stringify(text)}],"k":3}`) as Checkpoint.Json
          ]
          const saved = yield* Effect.forEach(states, (state, i) => mk(e, i + 1, { state }))
          for (const cp of saved) yield* s.save(cp)
          yield* readsBack(s, saved)
          const loaded = yield* s.load(saved[0]!.id)
          expect(Object.getPrototypeOf(loaded.state)).toBe(Object.prototype)
          expect(Object.hasOwn(loaded.state as object, "__proto__")).toBe(true)
          expect(({} as Record<string, unknown>).polluted).toBeUndefined()
        }))

      test("a store with blobs says so: ConformanceOptions.blobs and StoreTestKit.blobStats", () =>
        Effect.gen(function*() {
          const s = yield* store
          const kit = yield* StoreTestKit
          const hasBlobs = Option.match(CheckpointBackend.backendOf(s), {
            onNone: () => false,
            onSome: ({ backend, options }) => backend.blobs !== undefined && options.largeValues !== false
          })
          if (hasBlobs) {
            expect(options.blobs, "a store whose backend keeps blobs passes { blobs: true } to conformance").toBe(true)
          }
          if (options.blobs === true) {
            expect(kit.blobStats, "{ blobs: true } needs StoreTestKit.blobStats").toBeTypeOf("function")
          }
        }))

      const blobTest = (title: string, body: () => Effect.Effect<unknown, unknown, CheckpointStore.CheckpointStore | StoreTestKit>) =>
        it.live.skipIf(options.blobs !== true)(`blobs: ${title}`, () => body().pipe(Effect.provide(makeStore)), timeout)
      const statsOf = (e: Checkpoint.ExecutionId) =>
        Effect.flatMap(StoreTestKit, (kit) => kit.blobStats === undefined ? Effect.dieMessage("no StoreTestKit.blobStats") : kit.blobStats(e))

      blobTest("a large value is stored once per execution, shared by its checkpoints, and goes with the last of them", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const other = yield* freshExecution("other")
          const document = "d".repeat(100_000)
          const saved: Array<Checkpoint.Checkpoint> = []
          for (let v = 1; v <= 20; v++) {
            const cp = yield* mk(e, v, { state: { step: v, document } })
            saved.push(cp)
            yield* s.save(cp)
          }
          yield* s.save(yield* mk(other, 1, { state: { document } }))
          const stats = yield* statsOf(e)
          expect(stats.count).toBe(1)
          expect(stats.bytes).toBeGreaterThanOrEqual(document.length)
          expect(stats.bytes).toBeLessThan(document.length * 2)
          // Once per execution: the other execution has its own.
          expect((yield* statsOf(other)).count).toBe(1)
          expect(yield* s.prune(e, 2)).toBe(18)
          expect((yield* statsOf(e)).count).toBe(1)
          yield* s.delete(saved[18]!.id)
          expect((yield* statsOf(e)).count).toBe(1)
          yield* s.delete(saved[19]!.id)
          expect(yield* statsOf(e)).toEqual({ count: 0, bytes: 0 })
          expect((yield* statsOf(other)).count).toBe(1)
          // A value that changed: the old one goes when nothing references it.
          yield* s.save(yield* mk(other, 2, { state: { document: document + "!" } }))
          expect((yield* statsOf(other)).count).toBe(2)
          yield* s.prune(other, 1)
          expect((yield* statsOf(other)).count).toBe(1)
          same(Option.getOrThrow(yield* s.latest(other)), (yield* s.list(other))[0]!, "other")
        }))

      blobTest("an append-only array stores what each checkpoint appended, not the whole array again", () =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          let full = 0
          let last = ""
          for (let v = 1; v <= 40; v++) {
            const state = { v, messages: chat(v * 2) }
            last = JSON.stringify(state.messages)
            full += last.length
            yield* s.save(yield* mk(e, v, { state }))
          }
          const stats = yield* statsOf(e)
          // Full snapshots would store about 20 times the final array; chunks merged like a binary counter about log2(40).
          expect(stats.bytes).toBeLessThan(full / 2)
          expect(stats.bytes).toBeLessThan(last.length * 10)
          // With only the newest checkpoint left, what is stored is about the array once.
          yield* s.prune(e, 1)
          const left = yield* statsOf(e)
          expect(left.bytes).toBeGreaterThanOrEqual(last.length)
          expect(left.bytes).toBeLessThan(last.length * 1.6)
        }))

      blobTest("clear, prune to zero and sweep remove an execution's blobs", () =>
        Effect.gen(function*() {
          const s = yield* store
          const big = { blob: "c".repeat(threshold * 2) }
          const cleared = yield* freshExecution("cleared")
          const pruned = yield* freshExecution("pruned")
          const swept = yield* freshExecution("swept")
          for (const e of [cleared, pruned, swept]) {
            yield* s.save(yield* mk(e, 1, { state: big, timestamp: new Date(Date.UTC(2020, 0, 1)) }))
            expect((yield* statsOf(e)).count).toBe(1)
          }
          yield* s.clear(cleared)
          yield* s.prune(pruned, 0)
          expect(yield* s.sweep({ before: new Date(Date.UTC(2021, 0, 1)) })).toBe(1)
          for (const e of [cleared, pruned, swept]) expect(yield* statsOf(e), e).toEqual({ count: 0, bytes: 0 })
        }))
    })

    // -------------------------------------------------------------------------
    describe("model", () => {
      test("any sequence of save, saveMany, conditional saves, delete, clear, prune and saveWrites leaves the store equal to a model", () =>
        Effect.gen(function*() {
          const s = yield* store
          type Op =
            | { readonly op: "save"; readonly e: number; readonly v: number }
            | { readonly op: "saveMany"; readonly e: number; readonly vs: ReadonlyArray<number> }
            | { readonly op: "append"; readonly e: number; readonly stale: boolean }
            | { readonly op: "delete"; readonly e: number; readonly v: number }
            | { readonly op: "clear"; readonly e: number }
            | { readonly op: "prune"; readonly e: number; readonly keep: number }
            | {
              readonly op: "saveWrites"
              readonly e: number
              readonly v: number
              readonly task: number
              readonly keys: ReadonlyArray<number>
              readonly deleted: boolean
            }
          const e = FastCheck.integer({ min: 0, max: 2 })
          const v = FastCheck.integer({ min: 1, max: 6 })
          const op: FastCheck.Arbitrary<Op> = FastCheck.oneof(
            FastCheck.record({ op: FastCheck.constant("save" as const), e, v }),
            FastCheck.record({ op: FastCheck.constant("saveMany" as const), e, vs: FastCheck.array(v, { maxLength: 3 }) }),
            FastCheck.record({ op: FastCheck.constant("append" as const), e, stale: FastCheck.boolean() }),
            FastCheck.record({ op: FastCheck.constant("delete" as const), e, v }),
            FastCheck.record({ op: FastCheck.constant("clear" as const), e }),
            FastCheck.record({ op: FastCheck.constant("prune" as const), e, keep: FastCheck.integer({ min: 0, max: 3 }) }),
            FastCheck.record({
              op: FastCheck.constant("saveWrites" as const),
              e,
              v,
              task: FastCheck.integer({ min: 0, max: 2 }),
              keys: FastCheck.uniqueArray(FastCheck.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 3 }),
              deleted: FastCheck.boolean()
            })
          )
          const samples = FastCheck.sample(FastCheck.array(op, { minLength: 5, maxLength: 30 }), { numRuns: 12, seed: 42 })
          let written = 0
          for (const ops of samples) {
            const executions = yield* Effect.forEach([0, 1, 2], () => freshExecution("m"))
            interface Entry {
              readonly id: Checkpoint.CheckpointId
              /** taskId → [key, value] in the order saved */
              readonly writes: Map<string, Array<readonly [string, number]>>
            }
            // model: execution index → version → checkpoint
            const model = executions.map(() => new Map<number, Entry>())
            // ids of checkpoints that were removed, per execution
            const removed = executions.map(() => [] as Array<Checkpoint.CheckpointId>)
            const newest = (m: Map<number, Entry>) => Math.max(0, ...m.keys())
            const put = (m: Map<number, Entry>, cp: Checkpoint.Checkpoint) => m.set(cp.version, { id: cp.id, writes: new Map() })
            const drop = (i: number, ver: number) => {
              const entry = model[i]!.get(ver)
              if (entry !== undefined) removed[i]!.push(entry.id)
              model[i]!.delete(ver)
            }
            for (const o of ops) {
              const exec = executions[o.e]!
              const m = model[o.e]!
              switch (o.op) {
                case "save": {
                  const cp = yield* mk(exec, o.v)
                  const r = yield* Effect.either(s.save(cp))
                  expect(Either.isRight(r)).toBe(!m.has(o.v))
                  if (Either.isLeft(r)) expect(r.left).toMatchObject({ reason: "VersionTaken" })
                  if (Either.isRight(r)) put(m, cp)
                  break
                }
                case "saveMany": {
                  const cps = yield* Effect.forEach(o.vs, (ver) => mk(exec, ver))
                  const r = yield* Effect.either(s.saveMany(cps))
                  const ok = new Set(o.vs).size === o.vs.length && o.vs.every((ver) => !m.has(ver))
                  expect(Either.isRight(r)).toBe(ok)
                  if (ok) for (const cp of cps) put(m, cp)
                  break
                }
                case "append": {
                  const top = newest(m)
                  const cp = yield* mk(exec, top + 1)
                  const expectation = o.stale
                    ? { executionId: exec, latestVersion: top + 1 }
                    : top === 0
                    ? { executionId: exec, latestVersion: 0 }
                    : { executionId: exec, latestVersion: top, latestCheckpointId: m.get(top)!.id }
                  const r = yield* Effect.either(s.save(cp, { expect: expectation }))
                  if (o.stale) {
                    expect(Either.isLeft(r)).toBe(true)
                    if (Either.isLeft(r)) expectExpectationFailed(r.left, exec, top + 1, top)
                  } else {
                    expect(Either.isRight(r)).toBe(true)
                    put(m, cp)
                  }
                  break
                }
                case "delete": {
                  const id = m.get(o.v)?.id
                  yield* s.delete(id ?? (yield* Checkpoint.generateCheckpointId))
                  drop(o.e, o.v)
                  break
                }
                case "clear": {
                  yield* s.clear(exec)
                  for (const ver of [...m.keys()]) drop(o.e, ver)
                  break
                }
                case "prune": {
                  const sorted = [...m.keys()].sort((a, b) => a - b)
                  const gone = sorted.slice(0, Math.max(0, sorted.length - o.keep))
                  expect(yield* s.prune(exec, o.keep)).toBe(gone.length)
                  for (const ver of gone) drop(o.e, ver)
                  break
                }
                case "saveWrites": {
                  const taskId = `task-${o.task}`
                  const writes = o.keys.map((k) => ({ key: `key-${k}`, value: ++written }))
                  const entry = m.get(o.v)
                  const target = entry?.id ??
                    (o.deleted && removed[o.e]!.length > 0
                      ? removed[o.e]![removed[o.e]!.length - 1]!
                      : yield* Checkpoint.generateCheckpointId)
                  const r = yield* Effect.either(s.saveWrites(target, taskId, writes))
                  if (entry === undefined) {
                    expect(Either.isLeft(r) && r.left._tag).toBe("CheckpointNotFound")
                    break
                  }
                  const existing = entry.writes.get(taskId) ?? []
                  const taken = writes.find((w) => existing.some(([key]) => key === w.key))
                  if (taken !== undefined) {
                    expect(Either.isLeft(r) && r.left).toMatchObject({ reason: "WriteTaken", taskId, id: entry.id })
                  } else {
                    expect(Either.isRight(r)).toBe(true)
                    entry.writes.set(taskId, [...existing, ...writes.map((w) => [w.key, w.value] as const)])
                  }
                  break
                }
              }
            }
            const listedExecutions = idsOf((yield* s.listExecutions({ limit: 100 })).executions)
            for (let i = 0; i < executions.length; i++) {
              const exec = executions[i]!
              const expected = [...model[i]!.entries()].sort((a, b) => a[0] - b[0])
              const listed = yield* s.list(exec)
              expect(listed.map((c) => [c.version, c.id])).toEqual(expected.map(([ver, entry]) => [ver, entry.id]))
              const latest = yield* s.latest(exec)
              const top = expected[expected.length - 1]
              expect(Option.getOrUndefined(Option.map(latest, (c) => c.id))).toBe(top?.[1].id)
              // The record follows the newest checkpoint, and exists only while there is one.
              const record = yield* s.getExecution(exec)
              if (top === undefined) {
                expect(Option.isNone(record)).toBe(true)
                expect(listedExecutions).not.toContain(exec)
              } else {
                expect(Option.map(record, (r) => [r.latestVersion, r.latestCheckpointId])).toEqual(Option.some([top[0], top[1].id]))
                expect(listedExecutions).toContain(exec)
              }
              // Writes: by task id, then in the order saved; none for removed checkpoints.
              for (const [, entry] of expected) {
                const want = [...entry.writes.entries()].sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
                  .flatMap(([taskId, ws]) => ws.map(([key, value]) => ({ taskId, key, value })))
                expect(yield* s.listWrites(entry.id)).toEqual(want)
              }
              for (const id of removed[i]!) {
                if (!expected.some(([, entry]) => entry.id === id)) expect(yield* s.listWrites(id)).toEqual([])
              }
            }
            yield* Effect.forEach(executions, (x) => s.clear(x), { discard: true })
          }
        }))
    })
  })
}
