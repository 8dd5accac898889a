import { describe, expect, expectTypeOf, it } from "@effect/vitest"
import { Cause, Context, Deferred, Effect, Exit, Fiber, Layer, Option, Schema, TestClock } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Checkpoint from "../src/Checkpoint.js"
import { CheckpointStoreError } from "../src/CheckpointError.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import * as FileStore from "../src/layers/File.js"
import * as MemoryStore from "../src/layers/Memory.js"
import { freshExecution } from "../src/testing.js"

// -----------------------------------------------------------------------------
// Fixtures
// -----------------------------------------------------------------------------

const ProcessState = Schema.Struct({
  step: Schema.Int,
  data: Schema.String,
  history: Schema.Array(Schema.String)
})
type ProcessState = typeof ProcessState.Type

const input: ProcessState = { step: 0, data: "Start", history: ["Initialized"] }

class Boom extends Schema.TaggedError<Boom>()("Boom", { at: Schema.String }) {}
class Other extends Schema.TaggedError<Other>()("Other", {}) {}

/** Counts the calls of each node. */
const makeCounter = () => {
  const calls: Record<string, number> = {}
  const log: Array<string> = []
  return {
    calls,
    log,
    hit: (name: string) => {
      calls[name] = (calls[name] ?? 0) + 1
      log.push(name)
    }
  }
}

const step = (n: number, counter?: ReturnType<typeof makeCounter>) => (s: ProcessState) =>
  Effect.sync(() => {
    counter?.hit(`step${n}`)
    return { step: n, data: `${s.data} → Step${n}`, history: [...s.history, `Completed Step ${n}`] }
  })

/** step1 → step2 → step3 → END */
const linear = (counter?: ReturnType<typeof makeCounter>) =>
  Graph.make(ProcessState).pipe(
    Graph.addNode("step1", step(1, counter)),
    Graph.addNode("step2", step(2, counter)),
    Graph.addNode("step3", step(3, counter)),
    Graph.addEdge("step1", "step2"),
    Graph.addEdge("step2", "step3"),
    Graph.addEdge("step3", Graph.END),
    Graph.setEntryPoint("step1")
  )

/** A loop: "tick" adds 1 to `step` until it reaches `until`. */
const loopGraph = (until: number, counter?: ReturnType<typeof makeCounter>) =>
  Graph.make(ProcessState).pipe(
    Graph.addNode("tick", (s) =>
      Effect.sync(() => {
        counter?.hit("tick")
        return { ...s, step: s.step + 1, history: [...s.history, `tick ${s.step + 1}`] }
      })),
    Graph.addConditionalEdges("tick", (s) => s.step >= until ? Graph.END : "tick"),
    Graph.setEntryPoint("tick")
  )

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-checkpoint-graph-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const fileLayer = Layer.unwrapScoped(Effect.map(tempDir, (dir) => FileStore.layer({ directory: dir })))

const stores: ReadonlyArray<readonly [string, Layer.Layer<CheckpointStore.CheckpointStore, unknown>]> = [
  ["Memory", MemoryStore.layer],
  ["File", fileLayer]
]

interface Hooks {
  /** Runs before a write reaches the inner store (delay it, fail it, gate it). */
  readonly before?: (cps: ReadonlyArray<Checkpoint.Checkpoint>) => Effect.Effect<void, CheckpointStore.SaveError>
  /** Called with every checkpoint as it lands, in landing order. */
  readonly landed?: (cp: Checkpoint.Checkpoint) => void
  /** Called on every read of an execution's latest checkpoint. */
  readonly latest?: (executionId: string) => void
  /** Called on every write (save or saveMany) that reaches the inner store, with its condition. */
  readonly write?: (cps: ReadonlyArray<Checkpoint.Checkpoint>, options: CheckpointStore.SaveOptions | undefined) => void
}

/**
 * The real Memory store, with a hook in front of its writes so tests can slow
 * them down, hold them or make them fail, and see the order they land in.
 */
const instrumented = (hooks: Hooks) =>
  Layer.effect(
    CheckpointStore.CheckpointStore,
    Effect.map(MemoryStore.make, (inner): CheckpointStore.Service => {
      const before = hooks.before ?? (() => Effect.void)
      const landed = (cps: ReadonlyArray<Checkpoint.Checkpoint>) => Effect.sync(() => cps.forEach((cp) => hooks.landed?.(cp)))
      const wrote = (cps: ReadonlyArray<Checkpoint.Checkpoint>, options: CheckpointStore.SaveOptions | undefined) =>
        Effect.sync(() => hooks.write?.(cps, options))
      return {
        ...inner,
        latest: (executionId) => Effect.zipRight(Effect.sync(() => hooks.latest?.(executionId)), inner.latest(executionId)),
        save: (cp, options) =>
          before([cp]).pipe(
            Effect.zipRight(wrote([cp], options)),
            Effect.zipRight(inner.save(cp, options)),
            Effect.zipRight(landed([cp]))
          ),
        saveMany: (cps, options) =>
          before(cps).pipe(
            Effect.zipRight(wrote(cps, options)),
            Effect.zipRight(inner.saveMany(cps, options)),
            Effect.zipRight(landed(cps))
          )
      }
    })
  )

const failWith = (operation: string) =>
  new CheckpointStoreError({ backend: "test", operation, message: `injected failure of ${operation}` })

const names = (cps: ReadonlyArray<{ readonly nodeName: string }>) => cps.map((c) => c.nodeName)
const versions = (cps: ReadonlyArray<{ readonly version: number }>) => cps.map((c) => c.version)

// -----------------------------------------------------------------------------
// Builder and compile
// -----------------------------------------------------------------------------

describe("Graph builder and compile", () => {
  it.effect("compile runs the nodes in order with no checkpoints", () =>
    Effect.gen(function*() {
      const counter = makeCounter()
      const runnable = yield* Graph.compile(linear(counter))
      const out = yield* runnable.invoke(input)
      expect(out).toEqual({
        step: 3,
        data: "Start → Step1 → Step2 → Step3",
        history: ["Initialized", "Completed Step 1", "Completed Step 2", "Completed Step 3"]
      })
      expect(counter.log).toEqual(["step1", "step2", "step3"])
    }))

  it.effect("builders are immutable: adding to a graph leaves the original as it was", () =>
    Effect.gen(function*() {
      const base = Graph.make(ProcessState).pipe(Graph.addNode("a", (s) => Effect.succeed(s)))
      const more = base.pipe(Graph.addNode("b", (s) => Effect.succeed(s)))
      expect([...base.nodes.keys()]).toEqual(["a"])
      expect([...more.nodes.keys()]).toEqual(["a", "b"])
      // data-first works too
      const direct = Graph.setEntryPoint(Graph.addEdge(base, "a", Graph.END), "a")
      expect((yield* (yield* Graph.compile(direct)).invoke(input))).toEqual(input)
    }))

  it.effect("conditional edges route by state, plainly or with an Effect router", () =>
    Effect.gen(function*() {
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("start", (s) => Effect.succeed({ ...s, step: s.step + 1 })),
        Graph.addNode("even", (s) => Effect.succeed({ ...s, data: "even" })),
        Graph.addNode("odd", (s) => Effect.succeed({ ...s, data: "odd" })),
        Graph.addConditionalEdges("start", (s) => Effect.succeed(s.step % 2 === 0 ? "even" : "odd")),
        Graph.addEdge("even", Graph.END),
        Graph.addConditionalEdges("odd", () => Graph.END),
        Graph.setEntryPoint("start")
      )
      const runnable = yield* Graph.compile(graph)
      expect((yield* runnable.invoke({ ...input, step: 1 })).data).toBe("even")
      expect((yield* runnable.invoke({ ...input, step: 2 })).data).toBe("odd")
    }))

  it.effect("validation reports every problem with GraphValidationError", () =>
    Effect.gen(function*() {
      const noEntry = Graph.make(ProcessState).pipe(Graph.addNode("a", (s) => Effect.succeed(s)), Graph.addEdge("a", Graph.END))
      const e1 = yield* Effect.flip(Graph.compile(noEntry))
      expect(e1._tag).toBe("GraphValidationError")
      expect(e1.issues.join()).toContain("no entry point")

      const broken = Graph.make(ProcessState).pipe(
        Graph.addNode("a", (s) => Effect.succeed(s)),
        Graph.addNode("a", (s) => Effect.succeed(s)),
        Graph.addNode("__input__", (s) => Effect.succeed(s)),
        Graph.addNode("__end__", (s) => Effect.succeed(s)),
        Graph.addNode("lonely", (s) => Effect.succeed(s)),
        Graph.addNode("twice", (s) => Effect.succeed(s)),
        Graph.addNode("orphan", (s) => Effect.succeed(s)),
        Graph.addEdge("a", "nowhere"),
        Graph.addEdge("a", ["twice", "void"]),
        Graph.addEdge("ghost", "a"),
        Graph.addEdge("twice", "a"),
        Graph.addConditionalEdges("twice", () => "a", ["a", "elsewhere"]),
        Graph.addEdge(["twice", "orphan"], "a"),
        Graph.addEdge(["twice", "specter"], "a"),
        Graph.setEntryPoint("missing")
      )
      const e2 = yield* Effect.flip(Graph.compile(broken, { interruptBefore: ["phantom"], maxConcurrency: 0 }))
      const issues = e2.issues.join("\n")
      expect(issues).toContain(`node "a" is added twice`)
      expect(issues).toContain(`"__input__" is a reserved node name`)
      expect(issues).toContain(`"__end__" is a reserved node name`)
      expect(issues).toContain(`"a" → "nowhere" points to an unknown node`)
      expect(issues).toContain(`starts at "ghost", which is not a node`)
      expect(issues).toContain(`node "lonely" has no way out`)
      expect(issues).toContain(`"a" → "void" points to an unknown node`)
      expect(issues).toContain(`"twice" → "elsewhere" points to an unknown node`)
      expect(issues).toContain(`the fan-in into "a" waits for "specter", which is not a node`)
      expect(issues).toContain(`the entry point "missing" is not a node`)
      expect(issues).toContain("maxConcurrency must be a positive integer")
      expect(issues).toContain(`interrupt at "phantom"`)
      expect(e2.message).toContain("Invalid graph")
      const e3 = yield* Effect.flip(Graph.compile(linear(), { recursionLimit: 0 }))
      expect(e3.issues.join()).toContain("recursionLimit")
      const e4 = yield* Effect.flip(Graph.compileCheckpointable(broken).pipe(Effect.provide(MemoryStore.layer)))
      expect(e4._tag).toBe("GraphValidationError")
      // A fan-in that waits for a node nothing leads to can never run.
      const stuck = Graph.make(ProcessState).pipe(
        Graph.addNode("a", (s) => Effect.succeed(s)),
        Graph.addNode("b", (s) => Effect.succeed(s)),
        Graph.addNode("c", (s) => Effect.succeed(s)),
        Graph.addEdge("a", "c"),
        Graph.addEdge(["a", "b"], "c"),
        Graph.addEdge("b", Graph.END),
        Graph.addEdge("c", Graph.END),
        Graph.setEntryPoint("a")
      )
      const e5 = yield* Effect.flip(Graph.compile(stuck))
      expect(e5.issues).toEqual([`the fan-in into "c" waits for "b", which can never run`])
    }))

  it.effect("a router that picks an unknown node fails the run with GraphValidationError", () =>
    Effect.gen(function*() {
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("a", (s) => Effect.succeed(s)),
        Graph.addConditionalEdges("a", () => "elsewhere"),
        Graph.setEntryPoint("a")
      )
      const error = yield* Effect.flip(Effect.flatMap(Graph.compile(graph), (r) => r.invoke(input)))
      expect(error._tag).toBe("GraphValidationError")
      expect(error.message).toContain("elsewhere")
    }))

  it.effect("a loop that does not stop hits the recursion limit (default 25)", () =>
    Effect.gen(function*() {
      const counter = makeCounter()
      const runnable = yield* Graph.compile(loopGraph(1000, counter))
      const error = yield* Effect.flip(runnable.invoke(input))
      expect(error).toMatchObject({ _tag: "RecursionLimitExceeded", limit: 25 })
      expect(counter.calls.tick).toBe(25)
      const tight = yield* Graph.compile(loopGraph(1000), { recursionLimit: 3 })
      expect(yield* Effect.flip(tight.invoke(input))).toMatchObject({ _tag: "RecursionLimitExceeded", limit: 3 })
      // A loop that ends within the limit is fine.
      expect((yield* (yield* Graph.compile(loopGraph(25))).invoke(input)).step).toBe(25)
    }))

  it.effect("node errors stay typed and requirements accumulate", () =>
    Effect.gen(function*() {
      class Greeter extends Context.Tag("test/Greeter")<Greeter, { readonly greet: (s: string) => string }>() {}
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("a", (s) => s.step < 0 ? Effect.fail(new Boom({ at: "a" })) : Effect.succeed(s)),
        Graph.addNode("b", (s) => Effect.map(Greeter, (g) => ({ ...s, data: g.greet(s.data) }))),
        Graph.addNode("c", (s) => s.step < -1 ? Effect.fail(new Other()) : Effect.succeed(s)),
        Graph.addEdge("a", "b"),
        Graph.addEdge("b", "c"),
        Graph.addEdge("c", Graph.END),
        Graph.setEntryPoint("a")
      )
      const runnable = yield* Graph.compile(graph)
      type Invoke = ReturnType<typeof runnable.invoke>
      expectTypeOf<Effect.Effect.Error<Invoke>>().toEqualTypeOf<
        Boom | Other | Graph.GraphValidationError | Graph.RecursionLimitExceeded | Graph.InvalidUpdate | Graph.GraphInterrupted
      >()
      expectTypeOf<Effect.Effect.Context<Invoke>>().toEqualTypeOf<Greeter>()
      const greeter = Layer.succeed(Greeter, { greet: (s) => `hello ${s}` })
      expect((yield* runnable.invoke(input).pipe(Effect.provide(greeter))).data).toBe("hello Start")
      const caught = yield* runnable.invoke({ ...input, step: -1 }).pipe(
        Effect.catchTag("Boom", (e) => Effect.succeed(`caught at ${e.at}`)),
        Effect.provide(greeter)
      )
      expect(caught).toBe("caught at a")
    }))
})

// -----------------------------------------------------------------------------
// Checkpointed runs on every store
// -----------------------------------------------------------------------------

describe.each(stores)("compileCheckpointable on the %s store", (_name, storeLayer) => {
  const test = (title: string, body: () => Effect.Effect<unknown, unknown, CheckpointStore.CheckpointStore>) =>
    it.live(title, () => body().pipe(Effect.provide(storeLayer)))

  test("a 3-node run leaves 4 checkpoints: __input__, step1, step2, step3, in order and chained", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear())
      const out = yield* runnable.invoke(input)
      expect(out.history).toEqual(["Initialized", "Completed Step 1", "Completed Step 2", "Completed Step 3"])
      const cps = yield* runnable.listCheckpoints()
      expect(names(cps)).toEqual(["__input__", "step1", "step2", "step3"])
      expect(versions(cps)).toEqual([1, 2, 3, 4])
      expect(cps.map((c) => c.next)).toEqual([["step1"], ["step2"], ["step3"], []])
      expect(cps.map((c) => c.state.step)).toEqual([0, 1, 2, 3])
      expect(cps[0]!.state).toEqual(input)
      expect(cps[3]!.state).toEqual(out)
      expect(cps[0]!.parentId).toBeUndefined()
      for (let i = 1; i < cps.length; i++) expect(cps[i]!.parentId).toBe(cps[i - 1]!.id)
      expect(cps.every((c) => c.executionId === runnable.executionId)).toBe(true)
      // ids are time-sortable: their order is the version order
      expect([...cps.map((c) => c.id)].sort()).toEqual(cps.map((c) => c.id))
    }))

  test("metadata is saved on every checkpoint of the run", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear())
      const executionId = yield* freshExecution()
      yield* runnable.invoke(input, { executionId, metadata: { user: "ada", tags: ["x"] } })
      const cps = yield* runnable.listCheckpoints(executionId)
      expect(cps.length).toBe(4)
      expect(cps.every((c) => c.metadata.user === "ada")).toBe(true)
      expect(yield* runnable.listCheckpoints()).toEqual([])
    }))

  test("a manual checkpoint is the next version; load by id decodes it", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear())
      const executionId = yield* freshExecution()
      const first = yield* runnable.saveCheckpoint("manual", input, { executionId, metadata: { why: "test" } })
      expect(first).toMatchObject({ nodeName: "manual", version: 1, next: [], executionId, metadata: { why: "test" } })
      expect(first.state).toEqual(input)
      yield* runnable.invoke(input, { executionId })
      const second = yield* runnable.saveCheckpoint("manual-2", { ...input, step: 9 }, { executionId, next: ["step2"] })
      expect(second.version).toBe(6)
      const cps = yield* runnable.listCheckpoints(executionId)
      expect(names(cps)).toEqual(["manual", "__input__", "step1", "step2", "step3", "manual-2"])
      expect(cps[1]!.parentId).toBe(first.id)
      const loaded = yield* runnable.loadCheckpoint(second.id)
      expect(loaded).toEqual(second)
      expect(loaded.state.step).toBe(9)
      // A manual checkpoint with `next` can be resumed from.
      expect((yield* runnable.resume(executionId)).data).toBe("Start → Step2 → Step3")
      const missing = yield* Effect.flip(runnable.loadCheckpoint(yield* Checkpoint.generateCheckpointId))
      expect(missing._tag).toBe("CheckpointNotFound")
      expect((yield* Effect.flip(runnable.loadCheckpoint("../etc/passwd")))._tag).toBe("InvalidIdentifier")
    }))

  test("list and clear are per execution, with two executions interleaved", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear())
      const a = yield* freshExecution("a")
      const b = yield* freshExecution("b")
      yield* runnable.invoke(input, { executionId: a })
      yield* runnable.saveCheckpoint("note", input, { executionId: b })
      yield* runnable.invoke({ ...input, data: "B" }, { executionId: b })
      yield* runnable.saveCheckpoint("note", input, { executionId: a })
      expect(names(yield* runnable.listCheckpoints(a))).toEqual(["__input__", "step1", "step2", "step3", "note"])
      expect(names(yield* runnable.listCheckpoints(b))).toEqual(["note", "__input__", "step1", "step2", "step3"])
      expect((yield* runnable.listCheckpoints(b)).every((c) => c.executionId === b)).toBe(true)
      yield* runnable.clearCheckpoints(a)
      expect(yield* runnable.listCheckpoints(a)).toEqual([])
      expect((yield* runnable.listCheckpoints(b)).length).toBe(5)
      expect(versions(yield* runnable.listCheckpoints(b, { afterVersion: 3, limit: 1 }))).toEqual([4])
      expect((yield* Effect.flip(runnable.invoke(input, { executionId: "bad id" })))._tag).toBe("InvalidIdentifier")
    }))

  test("two concurrent invocations with different execution ids do not see each other's checkpoints", () =>
    Effect.gen(function*() {
      const slow = Graph.make(ProcessState).pipe(
        Graph.addNode("one", (s) => Effect.as(Effect.sleep("5 millis"), { ...s, history: [...s.history, `one:${s.data}`] })),
        Graph.addNode("two", (s) => Effect.as(Effect.sleep("5 millis"), { ...s, history: [...s.history, `two:${s.data}`] })),
        Graph.addEdge("one", "two"),
        Graph.addEdge("two", Graph.END),
        Graph.setEntryPoint("one")
      )
      const runnable = yield* Graph.compileCheckpointable(slow)
      const ids = yield* Effect.forEach(["x", "y", "z"], (l) => freshExecution(l))
      const outs = yield* Effect.forEach(ids, (executionId, i) => runnable.invoke({ ...input, data: `run${i}` }, { executionId }), {
        concurrency: "unbounded"
      })
      for (const [i, executionId] of ids.entries()) {
        expect(outs[i]!.history).toEqual(["Initialized", `one:run${i}`, `two:run${i}`])
        const cps = yield* runnable.listCheckpoints(executionId)
        expect(versions(cps)).toEqual([1, 2, 3])
        expect(cps.every((c) => c.state.data === `run${i}`)).toBe(true)
      }
    }))

  test("a failing node fails the run with its own typed error and the earlier checkpoints stay", () =>
    Effect.gen(function*() {
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("step1", step(1)),
        Graph.addNode("step2", () => Effect.fail(new Boom({ at: "step2" }))),
        Graph.addNode("step3", step(3)),
        Graph.addEdge("step1", "step2"),
        Graph.addEdge("step2", "step3"),
        Graph.addEdge("step3", Graph.END),
        Graph.setEntryPoint("step1")
      )
      const runnable = yield* Graph.compileCheckpointable(graph)
      const caught = yield* runnable.invoke(input).pipe(Effect.catchTag("Boom", (e) => Effect.succeed(`boom at ${e.at}`)))
      expect(caught).toBe("boom at step2")
      const cps = yield* runnable.listCheckpoints()
      expect(names(cps)).toEqual(["__input__", "step1"])
      expect(cps[1]!.next).toEqual(["step2"])
    }))

  test("a node that fails on the very first step leaves only the input checkpoint", () =>
    Effect.gen(function*() {
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("first", () => Effect.fail(new Boom({ at: "first" }))),
        Graph.addEdge("first", Graph.END),
        Graph.setEntryPoint("first")
      )
      const runnable = yield* Graph.compileCheckpointable(graph)
      expect((yield* Effect.flip(runnable.invoke(input)))._tag).toBe("Boom")
      const cps = yield* runnable.listCheckpoints()
      expect(names(cps)).toEqual(["__input__"])
      expect(cps[0]!.next).toEqual(["first"])
    }))

  test("resume after a failure runs each remaining node exactly once", () =>
    Effect.gen(function*() {
      const counter = makeCounter()
      let failOnce = true
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("step1", step(1, counter)),
        Graph.addNode("step2", (s) =>
          Effect.suspend(() => {
            counter.hit("step2")
            if (failOnce) {
              failOnce = false
              return Effect.fail(new Boom({ at: "step2" }))
            }
            return Effect.succeed({ ...s, step: 2, history: [...s.history, "Completed Step 2"] })
          })),
        Graph.addNode("step3", step(3, counter)),
        Graph.addEdge("step1", "step2"),
        Graph.addEdge("step2", "step3"),
        Graph.addEdge("step3", Graph.END),
        Graph.setEntryPoint("step1")
      )
      const runnable = yield* Graph.compileCheckpointable(graph)
      expect((yield* Effect.flip(runnable.invoke(input)))._tag).toBe("Boom")
      const out = yield* runnable.resume()
      expect(out.history).toEqual(["Initialized", "Completed Step 1", "Completed Step 2", "Completed Step 3"])
      expect(counter.calls).toEqual({ step1: 1, step2: 2, step3: 1 })
      const cps = yield* runnable.listCheckpoints()
      expect(names(cps)).toEqual(["__input__", "step1", "step2", "step3"])
      expect(versions(cps)).toEqual([1, 2, 3, 4])
      // Resuming a finished execution runs nothing and returns its final state.
      expect(yield* runnable.resume()).toEqual(out)
      expect(counter.calls).toEqual({ step1: 1, step2: 2, step3: 1 })
      expect((yield* runnable.listCheckpoints()).length).toBe(4)
    }))

  test("resume of an execution with no checkpoints fails with ExecutionNotFound", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear())
      const executionId = yield* freshExecution()
      const error = yield* Effect.flip(runnable.resume(executionId))
      expect(error).toMatchObject({ _tag: "ExecutionNotFound", executionId })
    }))

  test("invoke on an execution with checkpoints appends a new run; numbering continues", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear(), { maxCheckpoints: 0 })
      yield* runnable.invoke(input)
      yield* runnable.invoke({ ...input, data: "again" })
      const cps = yield* runnable.listCheckpoints()
      expect(versions(cps)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
      expect(names(cps)).toEqual(["__input__", "step1", "step2", "step3", "__input__", "step1", "step2", "step3"])
      expect(cps[4]!.parentId).toBe(cps[3]!.id)
      expect(cps[7]!.state.data).toBe("again → Step1 → Step2 → Step3")
    }))

  test("resumeFromCheckpoint: from the latest it continues the execution, from an older one it forks", () =>
    Effect.gen(function*() {
      const counter = makeCounter()
      const runnable = yield* Graph.compileCheckpointable(linear(counter))
      const pausing = yield* Graph.compileCheckpointable(linear(counter), { interruptAfter: ["step1"] })
      const interrupted = yield* Effect.flip(pausing.invoke(input, { executionId: runnable.executionId }))
      expect(interrupted).toMatchObject({ _tag: "GraphInterrupted", node: "step1", when: "after" })
      const before = yield* runnable.listCheckpoints()
      expect(names(before)).toEqual(["__input__", "step1"])
      // From the latest: the same execution goes on.
      const out = yield* runnable.resumeFromCheckpoint(before[1]!.id)
      expect(out.step).toBe(3)
      const after = yield* runnable.listCheckpoints()
      expect(names(after)).toEqual(["__input__", "step1", "step2", "step3"])
      expect(versions(after)).toEqual([1, 2, 3, 4])
      expect(counter.calls).toEqual({ step1: 1, step2: 1, step3: 1 })
      // From an older one: a fork into a new execution; the history is untouched.
      const forked = yield* runnable.resumeFromCheckpoint(after[0]!.id, { metadata: { reason: "retry" } })
      expect(forked).toEqual(out)
      expect(counter.calls).toEqual({ step1: 2, step2: 2, step3: 2 })
      expect((yield* runnable.listCheckpoints()).map((c) => c.id)).toEqual(after.map((c) => c.id))
      const store = yield* CheckpointStore.CheckpointStore
      const fork = (yield* store.listExecutions()).executions.find((x) => x.executionId !== runnable.executionId)!
      const forkCps = yield* runnable.listCheckpoints(fork.executionId)
      expect(names(forkCps)).toEqual(["__input__", "step1", "step2", "step3"])
      expect(versions(forkCps)).toEqual([1, 2, 3, 4])
      expect(forkCps[0]!.parentId).toBe(after[0]!.id)
      expect(forkCps[0]!.state).toEqual(after[0]!.state)
      expect(forkCps.every((c) => c.metadata.forkedFrom === after[0]!.id && c.metadata.reason === "retry")).toBe(true)
      // A fork into a named execution.
      const named = yield* freshExecution("named")
      yield* runnable.resumeFromCheckpoint(after[1]!.id, { executionId: named })
      expect(names(yield* runnable.listCheckpoints(named))).toEqual(["step1", "step2", "step3"])
      // From a finished checkpoint: the state, nothing run.
      const calls = { ...counter.calls }
      expect(yield* runnable.resumeFromCheckpoint(after[3]!.id)).toEqual(out)
      expect(counter.calls).toEqual(calls)
      expect((yield* Effect.flip(runnable.resumeFromCheckpoint(yield* Checkpoint.generateCheckpointId)))._tag).toBe(
        "CheckpointNotFound"
      )
    }))

  test("a typed state with a Date and a branded field survives the round trip as the same types", () =>
    Effect.gen(function*() {
      const UserId = Schema.String.pipe(Schema.brand("UserId"))
      const Typed = Schema.Struct({
        user: UserId,
        at: Schema.Date,
        count: Schema.Number,
        tags: Schema.Array(Schema.String)
      })
      const graph = Graph.make(Typed).pipe(
        Graph.addNode("bump", (s) => Effect.succeed({ ...s, count: s.count + 1, at: new Date(s.at.getTime() + 1000) })),
        Graph.addEdge("bump", Graph.END),
        Graph.setEntryPoint("bump")
      )
      const runnable = yield* Graph.compileCheckpointable(graph)
      const start = { user: UserId.make("u-1"), at: new Date("2026-11-25T10:00:00.000Z"), count: 0, tags: ["a"] }
      const out = yield* runnable.invoke(start)
      expect(out.at).toEqual(new Date("2026-11-25T10:00:01.000Z"))
      const cps = yield* runnable.listCheckpoints()
      expect(cps[1]!.state.at).toBeInstanceOf(Date)
      expect(cps[1]!.state.at.toISOString()).toBe("2026-11-25T10:00:01.000Z")
      expectTypeOf(cps[1]!.state.user).toEqualTypeOf<typeof UserId.Type>()
      expectTypeOf(cps[1]!.state.at).toEqualTypeOf<Date>()
      const loaded = yield* runnable.loadCheckpoint(cps[0]!.id)
      expect(loaded.state).toEqual(start)
      // What is stored is the encoded form: an ISO string, not a Date.
      const raw = yield* Effect.flatMap(CheckpointStore.CheckpointStore, (s) => s.load(cps[0]!.id))
      expect((raw.state as { at: string }).at).toBe("2026-11-25T10:00:00.000Z")
    }))

  test("a state the Schema rejects fails with CheckpointEncodeError and nothing is saved", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear())
      const bad = { step: 1.5, data: "x", history: [] } as unknown as ProcessState
      const error = yield* Effect.flip(runnable.invoke(bad))
      expect(error._tag).toBe("CheckpointEncodeError")
      expect(error.message).toContain("Schema")
      expect(yield* runnable.listCheckpoints()).toEqual([])
      expect((yield* Effect.flip(runnable.saveCheckpoint("manual", bad)))._tag).toBe("CheckpointEncodeError")
      expect(yield* runnable.listCheckpoints()).toEqual([])
      // A node that produces a state the Schema rejects: the run fails, the checkpoints before it stay.
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("ok", step(1)),
        Graph.addNode("bad", (s) => Effect.succeed({ ...s, step: Number.NaN })),
        Graph.addEdge("ok", "bad"),
        Graph.addEdge("bad", Graph.END),
        Graph.setEntryPoint("ok")
      )
      const r2 = yield* Graph.compileCheckpointable(graph)
      expect((yield* Effect.flip(r2.invoke(input)))._tag).toBe("CheckpointEncodeError")
      expect(names(yield* r2.listCheckpoints())).toEqual(["__input__", "ok"])
    }))

  test("a stored state that no longer fits the Schema fails with CheckpointDecodeError naming the checkpoint", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear())
      const store = yield* CheckpointStore.CheckpointStore
      const foreign = yield* Checkpoint.make({
        executionId: runnable.executionId,
        nodeName: "step1",
        state: { step: "not a number" },
        version: 1,
        next: ["step2"]
      })
      yield* store.save(foreign)
      const error = yield* Effect.flip(runnable.loadCheckpoint(foreign.id))
      expect(error).toMatchObject({ _tag: "CheckpointDecodeError", id: foreign.id })
      expect((yield* Effect.flip(runnable.resume()))._tag).toBe("CheckpointDecodeError")
      expect((yield* Effect.flip(runnable.listCheckpoints()))._tag).toBe("CheckpointDecodeError")
    }))

  test("a conditional loop that does not stop hits the recursion limit; the steps so far stay and resume goes on", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(loopGraph(8), { recursionLimit: 5, maxCheckpoints: 0 })
      const error = yield* Effect.flip(runnable.invoke(input))
      expect(error).toMatchObject({ _tag: "RecursionLimitExceeded", limit: 5, executionId: runnable.executionId })
      const cps = yield* runnable.listCheckpoints()
      expect(versions(cps)).toEqual([1, 2, 3, 4, 5, 6])
      expect(cps[5]!.next).toEqual(["tick"])
      expect((yield* runnable.resume()).step).toBe(8)
    }))

  test("maxCheckpoints keeps the newest N of the execution after a run (never the latest); 0 keeps all", () =>
    Effect.gen(function*() {
      const pruned = yield* Graph.compileCheckpointable(loopGraph(12), { maxCheckpoints: 5, recursionLimit: 50 })
      const out = yield* pruned.invoke(input)
      const cps = yield* pruned.listCheckpoints()
      expect(versions(cps)).toEqual([9, 10, 11, 12, 13])
      expect(cps[4]!.state).toEqual(out)
      const all = yield* Graph.compileCheckpointable(loopGraph(12), { maxCheckpoints: 0, recursionLimit: 50 })
      yield* all.invoke(input)
      expect((yield* all.listCheckpoints()).length).toBe(13)
    }))

  test("interruptBefore pauses before a node; resume with update edits the state and goes on", () =>
    Effect.gen(function*() {
      const counter = makeCounter()
      const runnable = yield* Graph.compileCheckpointable(linear(counter), { interruptBefore: ["step3"] })
      const paused = yield* Effect.flip(runnable.invoke(input))
      expect(paused).toMatchObject({ _tag: "GraphInterrupted", node: "step3", when: "before" })
      const cps = yield* runnable.listCheckpoints()
      expect(names(cps)).toEqual(["__input__", "step1", "step2"])
      expect((paused as Graph.GraphInterrupted).checkpointId).toBe(cps[2]!.id)
      expect(counter.calls.step3).toBeUndefined()
      const out = yield* runnable.resume(undefined, { update: (s) => ({ ...s, data: `${s.data} (approved)` }) })
      expect(out.data).toBe("Start → Step1 → Step2 (approved) → Step3")
      expect(names(yield* runnable.listCheckpoints())).toEqual(["__input__", "step1", "step2", "__update__", "step3"])
      expect(counter.calls).toEqual({ step1: 1, step2: 1, step3: 1 })
    }))
})

// -----------------------------------------------------------------------------
// Saving: durability, ordering, failures, interruption
// -----------------------------------------------------------------------------

describe("saving", () => {
  it("defaultCheckpointConfig holds the reference's defaults", () => {
    expect(Graph.defaultCheckpointConfig).toEqual({
      autoSave: true,
      saveInterval: "30 seconds",
      maxCheckpoints: 10,
      durability: "async",
      recursionLimit: 25,
      maxSaveLag: "50 millis",
      leaseTtl: "30 seconds",
      sleepInProcess: "1 second"
    })
  })

  it.live("async: the next node starts without waiting for the save, and invoke returns only after every save landed", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const gate = yield* Deferred.make<void>()
      const ranStep2 = yield* Deferred.make<void>()
      const layer = instrumented({
        before: (cps) =>
          Effect.zipRight(Effect.sync(() => events.push(`write ${versions(cps).join(",")}`)), Deferred.await(gate)),
        landed: (cp) => events.push(`landed ${cp.version}`)
      })
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("step1", (s) => Effect.sync(() => (events.push("run step1"), s))),
        Graph.addNode("step2", (s) =>
          Effect.zipRight(Effect.sleep("5 millis"), Effect.sync(() => (events.push("run step2"), s))).pipe(
            Effect.zipLeft(Deferred.succeed(ranStep2, undefined))
          )),
        Graph.addEdge("step1", "step2"),
        Graph.addEdge("step2", Graph.END),
        Graph.setEntryPoint("step1")
      )
      yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(graph)
        const fiber = yield* Effect.fork(runnable.invoke(input))
        yield* Deferred.await(ranStep2)
        // Both nodes ran although no save has landed yet; invoke has not returned.
        expect(events).toContain("run step2")
        expect(events.some((e) => e.startsWith("landed"))).toBe(false)
        expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(fiber)
        const landed = events.filter((e) => e.startsWith("landed"))
        expect(landed).toEqual(["landed 1", "landed 2", "landed 3"])
        expect(versions(yield* runnable.listCheckpoints())).toEqual([1, 2, 3])
      }).pipe(Effect.provide(layer))
    }))

  it.live("invoke reads nothing first: one conditional write per run of a new execution, and of one this runnable knows", () =>
    Effect.gen(function*() {
      const reads: Array<string> = []
      const writes: Array<{ versions: Array<number>; expect: number | undefined }> = []
      const layer = instrumented({
        latest: (e) => reads.push(e),
        write: (cps, options) => writes.push({ versions: versions(cps), expect: options?.expect?.latestVersion })
      })
      yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(linear())
        const e = yield* freshExecution()
        yield* runnable.invoke(input, { executionId: e })
        expect(reads).toEqual([])
        expect(writes).toEqual([{ versions: [1, 2, 3, 4], expect: 0 }])
        // Again on the same execution: this runnable knows where it left it.
        yield* runnable.invoke(input, { executionId: e })
        expect(reads).toEqual([])
        expect(writes[1]).toEqual({ versions: [5, 6, 7, 8], expect: 4 })
        const cps = yield* runnable.listCheckpoints(e)
        expect(versions(cps)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
        expect(cps[4]!.parentId).toBe(cps[3]!.id)
      }).pipe(Effect.provide(layer))
    }))

  it.live("a runnable that does not know the execution reads it after the failed condition and renumbers its run", () =>
    Effect.gen(function*() {
      const reads: Array<string> = []
      const layer = instrumented({ latest: (e) => reads.push(e) })
      yield* Effect.gen(function*() {
        const e = yield* freshExecution()
        const one = yield* Graph.compileCheckpointable(loopGraph(6), { maxCheckpoints: 3 })
        yield* one.invoke(input, { executionId: e })
        // The execution is at version 7, with versions 1–4 pruned: version 1 is free again, yet it is not empty.
        expect(versions(yield* one.listCheckpoints(e))).toEqual([5, 6, 7])
        const before = yield* one.listCheckpoints(e)
        // A manual save from inside a node joins the run, is renumbered with it, and returns its final version.
        let manual: Graph.TypedCheckpoint<ProcessState> | undefined
        let self: Graph.CheckpointableRunnable<ProcessState, CheckpointStore.SaveError | Graph.ReadError> | undefined
        const withManualSave = Graph.make(ProcessState).pipe(
          Graph.addNode("note", (s) =>
            Effect.map(self!.saveCheckpoint("manual", s, { executionId: e }), (cp) => {
              manual = cp
              return s
            })),
          Graph.addEdge("note", Graph.END),
          Graph.setEntryPoint("note")
        )
        const two = yield* Graph.compileCheckpointable(withManualSave, { maxCheckpoints: 0 })
        self = two
        expect(reads).toEqual([])
        yield* two.invoke(input, { executionId: e })
        expect(reads).toEqual([e])
        const cps = yield* two.listCheckpoints(e)
        expect(versions(cps)).toEqual([5, 6, 7, 8, 9, 10])
        expect(names(cps).slice(3)).toEqual(["__input__", "manual", "note"])
        expect(cps[3]!.parentId).toBe(before[2]!.id)
        expect(cps[4]!.parentId).toBe(cps[3]!.id)
        expect(manual?.version).toBe(9)
        expect(manual?.id).toBe(cps[4]!.id)
      }).pipe(Effect.provide(layer))
    }))

  it.live("a resume whose execution moved on meanwhile fails with CheckpointConflict instead of forking history", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const started = yield* Deferred.make<void>()
      const e = yield* freshExecution()
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("wait", (s) => Effect.zipRight(Deferred.succeed(started, undefined), Effect.as(Deferred.await(gate), s))),
        Graph.addEdge("wait", Graph.END),
        Graph.setEntryPoint("wait")
      )
      const runnable = yield* Graph.compileCheckpointable(graph, { durability: "exit", interruptBefore: ["wait"] })
      expect((yield* Effect.flip(runnable.invoke(input, { executionId: e })))._tag).toBe("GraphInterrupted")
      const fiber = yield* Effect.fork(runnable.resume(e))
      yield* Deferred.await(started)
      // Another writer (another runnable, maybe another process) appends to the execution meanwhile.
      const other = yield* Graph.compileCheckpointable(graph)
      yield* other.saveCheckpoint("elsewhere", input, { executionId: e })
      yield* Deferred.succeed(gate, undefined)
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error._tag).toBe("CheckpointConflict")
      expect(names(yield* runnable.listCheckpoints(e))).toEqual(["__input__", "elsewhere"])
    }).pipe(Effect.provide(MemoryStore.layer)))

  it.live("async: saves land in version order even when writes take random time (a gap-free prefix)", () =>
    Effect.gen(function*() {
      const landed: Array<number> = []
      const layer = instrumented({
        before: () => Effect.sleep(`${Math.floor(Math.random() * 4)} millis`),
        landed: (cp) => landed.push(cp.version)
      })
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("tick", (s) => Effect.as(Effect.sleep(`${Math.floor(Math.random() * 3)} millis`), { ...s, step: s.step + 1 })),
        Graph.addConditionalEdges("tick", (s) => s.step >= 30 ? Graph.END : "tick"),
        Graph.setEntryPoint("tick")
      )
      yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(graph, { recursionLimit: 100, maxCheckpoints: 0 })
        yield* runnable.invoke(input)
        expect(landed).toEqual(Array.from({ length: 31 }, (_, i) => i + 1))
      }).pipe(Effect.provide(layer))
    }))

  it.live("async: a failed save stops the run at the next step boundary with the typed error", () =>
    Effect.gen(function*() {
      const counter = makeCounter()
      const layer = instrumented({
        before: (cps) => cps.some((c) => c.version === 2) ? Effect.fail(failWith("save")) : Effect.void
      })
      const slowStep = (n: number) => (s: ProcessState) =>
        Effect.zipRight(Effect.sleep("20 millis"), step(n, counter)(s))
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("step1", step(1, counter)),
        Graph.addNode("step2", slowStep(2)),
        Graph.addNode("step3", slowStep(3)),
        Graph.addEdge("step1", "step2"),
        Graph.addEdge("step2", "step3"),
        Graph.addEdge("step3", Graph.END),
        Graph.setEntryPoint("step1")
      )
      yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(graph)
        const error = yield* Effect.flip(runnable.invoke(input))
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", operation: "save" })
        expect(counter.calls.step3).toBeUndefined()
        // What landed is a prefix: the input only (version 2 failed, nothing after it landed).
        expect(versions(yield* runnable.listCheckpoints())).toEqual([1])
      }).pipe(Effect.provide(layer))
    }))

  it.live("the first failure in time wins and the other stays in the Cause", () =>
    Effect.gen(function*() {
      // The save fails first, then the node.
      const saveFirst = instrumented({
        before: (cps) => cps.some((c) => c.version === 2) ? Effect.fail(failWith("save")) : Effect.void
      })
      const failingLater = Graph.make(ProcessState).pipe(
        Graph.addNode("step1", step(1)),
        Graph.addNode("step2", () => Effect.zipRight(Effect.sleep("30 millis"), Effect.fail(new Boom({ at: "step2" })))),
        Graph.addEdge("step1", "step2"),
        Graph.addEdge("step2", Graph.END),
        Graph.setEntryPoint("step1")
      )
      const exit1 = yield* Effect.exit(
        Effect.flatMap(Graph.compileCheckpointable(failingLater), (r) => r.invoke(input)).pipe(Effect.provide(saveFirst))
      )
      expect(Exit.isFailure(exit1)).toBe(true)
      if (Exit.isFailure(exit1)) {
        const failures = Cause.failures(exit1.cause)
        expect([...failures].map((f) => f._tag)).toEqual(["CheckpointStoreError", "Boom"])
        expect(Option.getOrThrow(Cause.failureOption(exit1.cause))._tag).toBe("CheckpointStoreError")
      }
      // The node fails first, then the save.
      const saveLater = instrumented({
        before: () => Effect.zipRight(Effect.sleep("30 millis"), Effect.fail(failWith("save")))
      })
      const failingNow = Graph.make(ProcessState).pipe(
        Graph.addNode("step1", () => Effect.fail(new Boom({ at: "step1" }))),
        Graph.addEdge("step1", Graph.END),
        Graph.setEntryPoint("step1")
      )
      const exit2 = yield* Effect.exit(
        Effect.flatMap(Graph.compileCheckpointable(failingNow), (r) => r.invoke(input)).pipe(Effect.provide(saveLater))
      )
      expect(Exit.isFailure(exit2)).toBe(true)
      if (Exit.isFailure(exit2)) {
        expect([...Cause.failures(exit2.cause)].map((f) => f._tag)).toEqual(["Boom", "CheckpointStoreError"])
        const caught = yield* Effect.catchTag(Effect.failCause(exit2.cause), "Boom", (e) => Effect.succeed(e.at))
        expect(caught).toBe("step1")
      }
    }))

  it.live("an interrupted invoke returns only after its saves landed, and no save lands after it", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const stuck = yield* Deferred.make<void>()
      const landed: Array<number> = []
      const layer = instrumented({ before: () => Deferred.await(gate), landed: (cp) => landed.push(cp.version) })
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("step1", step(1)),
        Graph.addNode("forever", (s) => Effect.zipRight(Deferred.succeed(stuck, undefined), Effect.as(Effect.never, s))),
        Graph.addEdge("step1", "forever"),
        Graph.addEdge("forever", Graph.END),
        Graph.setEntryPoint("step1")
      )
      yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(graph)
        const fiber = yield* Effect.fork(runnable.invoke(input))
        yield* Deferred.await(stuck)
        const interrupting = yield* Effect.fork(Fiber.interrupt(fiber))
        yield* Effect.sleep("30 millis")
        // The interruption waits for the pending saves.
        expect(Option.isNone(yield* Fiber.poll(interrupting))).toBe(true)
        expect(landed).toEqual([])
        yield* Deferred.succeed(gate, undefined)
        const exit = yield* Fiber.join(interrupting)
        expect(Exit.isInterrupted(exit)).toBe(true)
        expect(landed).toEqual([1, 2])
        yield* Effect.sleep("30 millis")
        expect(landed).toEqual([1, 2])
        expect(names(yield* runnable.listCheckpoints())).toEqual(["__input__", "step1"])
        expect((yield* runnable.listCheckpoints())[1]!.next).toEqual(["forever"])
      }).pipe(Effect.provide(layer))
    }))

  it.live("sync: each save lands before the next node starts", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const layer = instrumented({
        before: () => Effect.sleep("5 millis"),
        landed: (cp) => events.push(`landed ${cp.nodeName}`)
      })
      const node = (name: string) => (s: ProcessState) => Effect.sync(() => (events.push(`run ${name}`), s))
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("a", node("a")),
        Graph.addNode("b", node("b")),
        Graph.addEdge("a", "b"),
        Graph.addEdge("b", Graph.END),
        Graph.setEntryPoint("a")
      )
      yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(graph, { durability: "sync" })
        yield* runnable.invoke(input)
        expect(events).toEqual(["landed __input__", "run a", "landed a", "run b", "landed b"])
      }).pipe(Effect.provide(layer))
    }))

  it.live("sync: a failed save fails the run at once, before the next node", () =>
    Effect.gen(function*() {
      const counter = makeCounter()
      const layer = instrumented({
        before: (cps) => cps.some((c) => c.nodeName === "step1") ? Effect.fail(failWith("save")) : Effect.void
      })
      yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(linear(counter), { durability: "sync" })
        expect((yield* Effect.flip(runnable.invoke(input)))._tag).toBe("CheckpointStoreError")
        expect(counter.log).toEqual(["step1"])
        expect(names(yield* runnable.listCheckpoints())).toEqual(["__input__"])
      }).pipe(Effect.provide(layer))
    }))

  it.live("exit: only the final state is saved; after a failing node, the last good state with next = that node", () =>
    Effect.gen(function*() {
      const counter = makeCounter()
      let fail = true
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("step1", step(1, counter)),
        Graph.addNode("step2", (s) =>
          Effect.suspend(() => {
            counter.hit("step2")
            return fail ? Effect.fail(new Boom({ at: "step2" })) : Effect.succeed({ ...s, step: 2 })
          })),
        Graph.addEdge("step1", "step2"),
        Graph.addEdge("step2", Graph.END),
        Graph.setEntryPoint("step1")
      )
      const runnable = yield* Graph.compileCheckpointable(graph, { durability: "exit" })
      expect((yield* Effect.flip(runnable.invoke(input)))._tag).toBe("Boom")
      const afterFailure = yield* runnable.listCheckpoints()
      expect(names(afterFailure)).toEqual(["step1"])
      expect(afterFailure[0]!.next).toEqual(["step2"])
      expect(afterFailure[0]!.state.step).toBe(1)
      fail = false
      const out = yield* runnable.resume()
      expect(out.step).toBe(2)
      expect(counter.calls).toEqual({ step1: 1, step2: 2 })
      const cps = yield* runnable.listCheckpoints()
      expect(names(cps)).toEqual(["step1", "step2"])
      expect(cps[1]!.next).toEqual([])
      const fresh = yield* freshExecution()
      yield* runnable.invoke(input, { executionId: fresh })
      expect(names(yield* runnable.listCheckpoints(fresh))).toEqual(["step2"])
    }).pipe(Effect.provide(MemoryStore.layer)))

  it.live("exit: a failed final save fails the run with the store's typed error", () =>
    Effect.gen(function*() {
      const layer = instrumented({ before: () => Effect.fail(failWith("save")) })
      yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(linear(), { durability: "exit" })
        const error = yield* Effect.flip(runnable.invoke(input))
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", operation: "save" })
        expect(yield* runnable.listCheckpoints()).toEqual([])
        // A node failure and the failed save of the last good state: the node's error first, the save's in the Cause.
        const failing = Graph.make(ProcessState).pipe(
          Graph.addNode("a", () => Effect.fail(new Boom({ at: "a" }))),
          Graph.addEdge("a", Graph.END),
          Graph.setEntryPoint("a")
        )
        const r2 = yield* Graph.compileCheckpointable(failing, { durability: "exit" })
        const exit = yield* Effect.exit(r2.invoke(input))
        expect(Exit.isFailure(exit) && [...Cause.failures(exit.cause)].map((f) => f._tag)).toEqual(["Boom", "CheckpointStoreError"])
      }).pipe(Effect.provide(layer))
    }))

  it.effect("autoSave off: a fiber saves the current state every saveInterval while the run goes on (TestClock)", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      const entered = yield* Deferred.make<void>()
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("step1", step(1)),
        Graph.addNode("wait", (s) =>
          Effect.zipRight(Deferred.succeed(entered, undefined), Effect.as(Deferred.await(release), { ...s, data: "released" }))),
        Graph.addNode("step3", step(3)),
        Graph.addEdge("step1", "wait"),
        Graph.addEdge("wait", "step3"),
        Graph.addEdge("step3", Graph.END),
        Graph.setEntryPoint("step1")
      )
      const runnable = yield* Graph.compileCheckpointable(graph, { autoSave: false, saveInterval: "10 seconds" })
      const fiber = yield* Effect.fork(runnable.invoke(input))
      yield* Deferred.await(entered)
      // No per-step saves with autoSave off.
      expect(yield* runnable.listCheckpoints()).toEqual([])
      yield* TestClock.adjust("9 seconds")
      expect(yield* runnable.listCheckpoints()).toEqual([])
      yield* TestClock.adjust("1 second")
      // The periodic save: where the run stands while "wait" blocks — after step1, about to run "wait".
      const first = yield* runnable.listCheckpoints()
      expect(names(first)).toEqual(["step1"])
      expect(first[0]!.next).toEqual(["wait"])
      // Nothing new happened: the next tick saves nothing again.
      yield* TestClock.adjust("10 seconds")
      expect((yield* runnable.listCheckpoints()).length).toBe(1)
      // A manual save from outside joins the run's ordered saves.
      const manual = yield* runnable.saveCheckpoint("manual", { ...input, data: "manual" })
      expect(manual.version).toBe(2)
      yield* Deferred.succeed(release, undefined)
      const out = yield* Fiber.join(fiber)
      expect(out.data).toBe("released → Step3")
      // The run ended before another tick: no more saves.
      expect(names(yield* runnable.listCheckpoints())).toEqual(["step1", "manual"])
      // After the run, the periodic fiber is gone.
      yield* TestClock.adjust("1 minute")
      expect((yield* runnable.listCheckpoints()).length).toBe(2)
    }).pipe(Effect.provide(MemoryStore.layer)))

  it.live("a save fails on a real full disk (File store on a tmpfs): the run fails with CheckpointStoreError", () =>
    Effect.scoped(Effect.gen(function*() {
      const { execFileSync } = yield* Effect.promise(() => import("node:child_process"))
      const dir = yield* Effect.acquireRelease(
        Effect.flatMap(tempDir, (d) =>
          Effect.sync(() => {
            execFileSync("mount", ["-t", "tmpfs", "-o", "size=128k", "tmpfs", d])
            return d
          })),
        (d) => Effect.sync(() => execFileSync("umount", ["-l", d]))
      )
      const graph = Graph.make(ProcessState).pipe(
        Graph.addNode("grow", (s) => Effect.succeed({ ...s, data: "x".repeat(512 * 1024) })),
        Graph.addEdge("grow", Graph.END),
        Graph.setEntryPoint("grow")
      )
      yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(graph)
        const error = yield* Effect.flip(runnable.invoke(input))
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "file" })
        expect(names(yield* runnable.listCheckpoints())).toEqual(["__input__"])
      }).pipe(Effect.provide(FileStore.layer({ directory: dir })))
    })))
})

describe("generated ids", () => {
  it.effect("are UUIDv7 text whose first 48 bits are the clock's milliseconds, in the order they were made (also when the clock steps back)", () =>
    Effect.gen(function*() {
      const uuid = /^([0-9a-f]{8})-([0-9a-f]{4})-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
      // Ahead of any id this process made before (ids never go back in time, see below).
      const at = Date.now() + 60_000
      yield* TestClock.setTime(at)
      const ids: Array<string> = []
      for (let i = 0; i < 4000; i++) {
        // Many ids within one millisecond, then the clock moves on, then it steps back.
        if (i === 2000) yield* TestClock.adjust("1 millis")
        if (i === 3000) yield* TestClock.setTime(at - 10_000)
        ids.push(i % 2 === 0 ? yield* Checkpoint.generateCheckpointId : yield* Checkpoint.generateExecutionId)
      }
      for (const id of ids) expect(id).toMatch(uuid)
      const ms = (id: string) => parseInt(id.slice(0, 8) + id.slice(9, 13), 16)
      expect(ms(ids[0]!)).toBe(at)
      expect(ms(ids[2999]!)).toBe(at + 1)
      expect(ms(ids[3999]!)).toBe(at + 1)
      expect([...ids].sort()).toEqual(ids)
      expect(new Set(ids).size).toBe(ids.length)
    }))
})

describe("values that are not JSON", () => {
  it.effect("are refused with the path that leads to them", () =>
    Effect.gen(function*() {
      const refused = (state: unknown) =>
        Effect.flip(Checkpoint.make({ executionId: "json-paths", nodeName: "n", state: state as Checkpoint.Json, version: 1 }))
      expect((yield* refused({ a: [1, { "b c": Number.NaN }] })).message).toContain(`state.a[1]["b c"] is NaN`)
      expect((yield* refused({ ok: "x", when: new Date(0) })).message).toContain("state.when is an instance of Date")
      expect((yield* refused([[0, [undefined]]])).message).toContain("state[0][1][0] is undefined")
      const cycle: Record<string, unknown> = { list: [] }
      ;(cycle.list as Array<unknown>).push(cycle)
      expect((yield* refused(cycle)).message).toContain("state.list[0] is a cycle")
      // A sibling that was fine does not stay in the path.
      expect((yield* refused({ first: { deep: [1, 2] }, second: Infinity })).message).toContain("state.second is Infinity")
    }).pipe(Effect.provide(MemoryStore.layer)))
})
