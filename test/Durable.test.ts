/**
 * Durable execution inside a node (`Graph.step`, `Graph.interrupt`,
 * `Graph.sleep`) and the execution record a run keeps (status, lease,
 * failure, wake-up time), on every store the engine tests run on.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, type Duration, Effect, Exit, Fiber, Option, Schema, TestClock } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import * as FileStore from "../src/layers/File.js"
import { LogState, stepGraph } from "./fixtures/durable-graphs.js"
import { engineStores } from "./fixtures/stores.js"

class Boom extends Schema.TaggedError<Boom>()("Boom", { message: Schema.String }) {}

const Approval = Schema.Struct({ approved: Schema.Boolean, at: Schema.Date })

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

const record = (executionId: string) =>
  Effect.flatMap(CheckpointStore.CheckpointStore, (s) => s.getExecution(executionId as never)).pipe(
    Effect.map(Option.getOrThrow)
  )

const writesOf = (checkpointId: string) =>
  Effect.flatMap(CheckpointStore.CheckpointStore, (s) => s.listWrites(checkpointId as never))

const latestOf = (executionId: string) =>
  Effect.flatMap(CheckpointStore.CheckpointStore, (s) => s.latest(executionId as never)).pipe(Effect.map(Option.getOrThrow))

/** Polls (real time) until `check` holds. */
const eventually = <A, E, R>(effect: Effect.Effect<A, E, R>, check: (a: A) => boolean, what: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 2000; i++) {
      const a = yield* effect
      if (check(a)) return a
      yield* Effect.sleep("5 millis")
    }
    return yield* Effect.dieMessage(`timed out waiting for ${what}`)
  })

/** approve: a step "draft", then an interrupt for an Approval; logs what it got. */
const approvalGraph = (counts: { draft: number; after: number }) =>
  Graph.make(LogState).pipe(
    Graph.addNode("approve", (s) =>
      Effect.gen(function*() {
        const text = yield* Graph.step("draft", Effect.sync(() => (counts.draft++, "the draft")), Schema.String)
        const answer = yield* Graph.interrupt(Approval, { text })
        counts.after++
        return { log: [...s.log, `${text}:${answer.approved}:${answer.at.toISOString()}`] }
      })),
    Graph.setEntryPoint("approve"),
    Graph.addEdge("approve", Graph.END)
  )

/** Two tasks in one superstep (fan-out from "start"), each asking its own question. */
const parallelGraph = (runs: Record<string, number>) => {
  const ask = (name: string) => (_: LogState) =>
    Effect.gen(function*() {
      runs[name] = (runs[name] ?? 0) + 1
      const answer = yield* Graph.interrupt(Schema.String, { question: name })
      return { log: [`${name}=${answer}`] }
    })
  return Graph.make(LogState, { reducers: { log: Graph.Reducer.concat } }).pipe(
    Graph.addNode("start", () => Effect.succeed({ log: ["start"] })),
    Graph.addNode("a", ask("a")),
    Graph.addNode("b", ask("b")),
    Graph.setEntryPoint("start"),
    Graph.addEdge("start", ["a", "b"]),
    Graph.addEdge("a", Graph.END),
    Graph.addEdge("b", Graph.END)
  )
}

describe.each(engineStores)("durable execution on the %s store", (_name, storeLayer) => {
  const live = (title: string, body: () => Effect.Effect<void, unknown, CheckpointStore.CheckpointStore>, timeout?: number) =>
    it.live(title, () => body().pipe(Effect.provide(storeLayer)), timeout)
  const clocked = (title: string, body: () => Effect.Effect<void, unknown, CheckpointStore.CheckpointStore>) =>
    it.effect(title, () => body().pipe(Effect.provide(storeLayer)))

  // ---------------------------------------------------------------------------
  // Execution records
  // ---------------------------------------------------------------------------

  describe("execution records", () => {
    live("a run holds its own lease while running, and is done with no lease at the end", () =>
      Effect.gen(function*() {
        const entered = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const graph = Graph.make(LogState).pipe(
          Graph.addNode("a", (s) => Effect.succeed({ log: [...s.log, "a"] })),
          Graph.addNode("b", (s) =>
            Effect.as(Effect.zipRight(Deferred.succeed(entered, undefined), Deferred.await(release)), { log: [...s.log, "b"] })),
          Graph.setEntryPoint("a"),
          Graph.addEdge("a", "b"),
          Graph.addEdge("b", Graph.END)
        )
        const runnable = yield* Graph.compileCheckpointable(graph, { durability: "sync" })
        const fiber = yield* Effect.fork(runnable.invoke({ log: [] }, { executionId: "rec-running" }))
        yield* Deferred.await(entered)
        const running = yield* record("rec-running")
        expect(running.status).toBe("running")
        expect(running.pending).toBe(true)
        expect(running.lease?.owner).toMatch(/^run-/)
        expect(running.lease!.expiresAt.getTime()).toBeGreaterThan(Date.now())
        yield* Deferred.succeed(release, undefined)
        expect((yield* Fiber.join(fiber)).log).toEqual(["a", "b"])
        const done = yield* record("rec-running")
        expect(done.status).toBe("done")
        expect(done.pending).toBe(false)
        expect(done.lease).toBeUndefined()
        expect(done.latestVersion).toBe(3)
      }))

    live("a failed run is failed, with the error's tag and message, and no lease", () =>
      Effect.gen(function*() {
        const graph = Graph.make(LogState).pipe(
          Graph.addNode("a", (s) => Effect.succeed({ log: [...s.log, "a"] })),
          Graph.addNode("b", () => Effect.fail(new Boom({ message: "b broke" }))),
          Graph.setEntryPoint("a"),
          Graph.addEdge("a", "b"),
          Graph.addEdge("b", Graph.END)
        )
        const runnable = yield* Graph.compileCheckpointable(graph)
        const exit = yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "rec-failed" }))
        expect(failureOf(exit)).toBeInstanceOf(Boom)
        const r = yield* record("rec-failed")
        expect(r.status).toBe("failed")
        expect(r.failure).toEqual({ tag: "Boom", message: "b broke" })
        expect(r.lease).toBeUndefined()
      }))

    live("a pause (interruptBefore) and a Graph.interrupt both leave the execution interrupted, with no lease", () =>
      Effect.gen(function*() {
        const paused = yield* Graph.compileCheckpointable(
          stepGraph({ step: Effect.succeed(1), afterStep: Effect.void }),
          { interruptBefore: ["work"] }
        )
        const e1 = yield* Effect.exit(paused.invoke({ log: [] }, { executionId: "rec-paused" }))
        expect(failureOf(e1)).toMatchObject({ _tag: "GraphInterrupted", when: "before", node: "work" })
        const r1 = yield* record("rec-paused")
        expect(r1.status).toBe("interrupted")
        expect(r1.lease).toBeUndefined()

        const counts = { draft: 0, after: 0 }
        const asking = yield* Graph.compileCheckpointable(approvalGraph(counts))
        const e2 = yield* Effect.exit(asking.invoke({ log: [] }, { executionId: "rec-asked" }))
        expect(failureOf(e2)).toMatchObject({ _tag: "GraphInterrupted", when: "during", node: "approve", payload: { text: "the draft" } })
        const r2 = yield* record("rec-asked")
        expect(r2.status).toBe("interrupted")
        expect(r2.lease).toBeUndefined()
      }))

    live("a long sleep leaves the execution sleeping with its wakeAt, and no lease", () =>
      Effect.gen(function*() {
        const graph = Graph.make(LogState).pipe(
          Graph.addNode("nap", (s) => Effect.as(Graph.sleep("1 hour"), { log: [...s.log, "woke"] })),
          Graph.setEntryPoint("nap"),
          Graph.addEdge("nap", Graph.END)
        )
        const runnable = yield* Graph.compileCheckpointable(graph)
        const before = Date.now()
        const exit = yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "rec-sleeping" }))
        const error = failureOf(exit)
        expect(error).toBeInstanceOf(Graph.GraphSuspended)
        const wakeAt = (error as Graph.GraphSuspended).wakeAt.getTime()
        expect(wakeAt).toBeGreaterThanOrEqual(before + 3_600_000)
        const r = yield* record("rec-sleeping")
        expect(r.status).toBe("sleeping")
        expect(r.wakeAt?.getTime()).toBe(wakeAt)
        expect(r.lease).toBeUndefined()
      }))

    live("a run whose fiber is interrupted leaves the execution pending, with no lease", () =>
      Effect.gen(function*() {
        const entered = yield* Deferred.make<void>()
        const graph = stepGraph({ step: Effect.succeed(1), afterStep: Effect.zipRight(Deferred.succeed(entered, undefined), Effect.never) })
        const runnable = yield* Graph.compileCheckpointable(graph)
        const fiber = yield* Effect.fork(runnable.invoke({ log: [] }, { executionId: "rec-pending" }))
        yield* Deferred.await(entered)
        yield* Fiber.interrupt(fiber)
        const r = yield* record("rec-pending")
        expect(r.status).toBe("pending")
        expect(r.lease).toBeUndefined()
      }))
  })

  // ---------------------------------------------------------------------------
  // Steps
  // ---------------------------------------------------------------------------

  describe("Graph.step", () => {
    live("a saved step is not rerun after a later failure of its node; its result comes back", () =>
      Effect.gen(function*() {
        let ran = 0
        let fail = true
        const graph = stepGraph({
          step: Effect.sync(() => ++ran * 10),
          afterStep: Effect.suspend(() => fail ? Effect.die(new Boom({ message: "after the step" })) : Effect.void)
        })
        const runnable = yield* Graph.compileCheckpointable(graph)
        const exit = yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "step-later-failure" }))
        expect(Exit.isFailure(exit)).toBe(true)
        expect(ran).toBe(1)
        fail = false
        const out = yield* runnable.resume("step-later-failure")
        expect(ran).toBe(1)
        expect(out.log).toEqual(["prepare", "work:10", "finish"])
      }))

    live("a failed step is not saved: the rerun retries its effect", () =>
      Effect.gen(function*() {
        let attempts = 0
        const graph = stepGraph({
          step: Effect.suspend(() => ++attempts === 1 ? Effect.die(new Boom({ message: "flaky" })) : Effect.succeed(7)),
          afterStep: Effect.void
        })
        const runnable = yield* Graph.compileCheckpointable(graph)
        const exit = yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "step-failed" }))
        expect(Exit.isFailure(exit)).toBe(true)
        const latest = yield* latestOf("step-failed")
        expect(latest.next).toEqual(["work"])
        expect((yield* writesOf(latest.id)).filter((w) => w.key.startsWith("step:"))).toEqual([])
        const out = yield* runnable.resume("step-failed")
        expect(attempts).toBe(2)
        expect(out.log).toEqual(["prepare", "work:7", "finish"])
      }))

    live("a step whose result encodes to undefined (Schema.Void, Schema.Undefined) is saved as null and replayed as undefined; a null stays null", () =>
      Effect.gen(function*() {
        let sent = 0
        let fail = true
        const graph = Graph.make(LogState).pipe(
          Graph.addNode("notify", (s) =>
            Effect.gen(function*() {
              const result = yield* Graph.step("send", Effect.sync(() => void sent++), Schema.Void)
              const none = yield* Graph.step("none", Effect.sync(() => (sent++, undefined)), Schema.Undefined)
              const nothing = yield* Graph.step("nothing", Effect.sync(() => (sent++, null)), Schema.NullOr(Schema.Number))
              if (fail) return yield* new Boom({ message: "after sending" })
              return { log: [...s.log, `sent:${String(result)}:${String(none)}:${String(nothing)}`] }
            })),
          Graph.setEntryPoint("notify"),
          Graph.addEdge("notify", Graph.END)
        )
        const runnable = yield* Graph.compileCheckpointable(graph)
        const exit = yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "step-void" }))
        expect(failureOf(exit)).toBeInstanceOf(Boom)
        expect(sent).toBe(3)
        fail = false
        const out = yield* runnable.resume("step-void")
        expect(sent).toBe(3)
        expect(out.log).toEqual(["sent:undefined:undefined:null"])
      }))

    live("a duplicate step name in one task, or a malformed one, fails with InvalidStep", () =>
      Effect.gen(function*() {
        const withSteps = (names: ReadonlyArray<string>) =>
          Graph.make(LogState).pipe(
            Graph.addNode("n", (s) =>
              Effect.as(Effect.forEach(names, (name) => Graph.step(name, Effect.succeed(1), Schema.Number)), s)),
            Graph.setEntryPoint("n"),
            Graph.addEdge("n", Graph.END)
          )
        for (const [names, pattern] of [
          [["x", "x"], /runs twice/],
          [["../x"], /must be 1–100 characters/],
          [[""], /must be 1–100 characters/],
          [["a".repeat(101)], /must be 1–100 characters/]
        ] as const) {
          const runnable = yield* Graph.compileCheckpointable(withSteps(names))
          const error = failureOf(yield* Effect.exit(runnable.invoke({ log: [] })))
          expect(error).toBeInstanceOf(Graph.InvalidStep)
          expect((error as Graph.InvalidStep).message).toMatch(pattern)
          expect((error as Graph.InvalidStep).node).toBe("n")
        }
      }))
  })

  // ---------------------------------------------------------------------------
  // Interrupts
  // ---------------------------------------------------------------------------

  describe("Graph.interrupt", () => {
    live("resume takes the encoded value; the steps before the interrupt ran once", () =>
      Effect.gen(function*() {
        const counts = { draft: 0, after: 0 }
        const runnable = yield* Graph.compileCheckpointable(approvalGraph(counts))
        const exit = yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "int-value" }))
        const interrupted = failureOf(exit) as Graph.GraphInterrupted
        expect(interrupted).toBeInstanceOf(Graph.GraphInterrupted)
        expect(interrupted.interruptId).toBeDefined()
        const out = yield* runnable.resume("int-value", { value: { approved: true, at: "2026-01-02T03:04:05.000Z" } })
        expect(out.log).toEqual(["the draft:true:2026-01-02T03:04:05.000Z"])
        expect(counts).toEqual({ draft: 1, after: 1 })
        expect((yield* record("int-value")).status).toBe("done")
      }))

    live("a value that does not decode fails with InvalidResume: nothing saved, still interrupted", () =>
      Effect.gen(function*() {
        const counts = { draft: 0, after: 0 }
        const runnable = yield* Graph.compileCheckpointable(approvalGraph(counts))
        yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "int-bad" }))
        const before = yield* latestOf("int-bad")
        const writesBefore = yield* writesOf(before.id)
        for (const value of [{ approved: "yes", at: "2026-01-02T03:04:05.000Z" }, { approved: true, at: "not a date" }, "nope"]) {
          const error = failureOf(yield* Effect.exit(runnable.resume("int-bad", { value })))
          expect(error).toBeInstanceOf(Graph.InvalidResume)
          expect((error as Graph.InvalidResume).message).toMatch(/does not match its Schema/)
        }
        const after = yield* latestOf("int-bad")
        expect(after.id).toBe(before.id)
        expect(yield* writesOf(after.id)).toEqual(writesBefore)
        const r = yield* record("int-bad")
        expect(r.status).toBe("interrupted")
        expect(r.lease).toBeUndefined()
        // The right answer still works, and nothing ran twice.
        const out = yield* runnable.resume("int-bad", { value: { approved: false, at: "2026-01-02T03:04:05.000Z" } })
        expect(out.log).toEqual(["the draft:false:2026-01-02T03:04:05.000Z"])
        expect(counts).toEqual({ draft: 1, after: 1 })
      }))

    live("several interrupts in one task are answered in order", () =>
      Effect.gen(function*() {
        let asked = 0
        const graph = Graph.make(LogState).pipe(
          Graph.addNode("form", (s) =>
            Effect.gen(function*() {
              asked++
              const name = yield* Graph.interrupt(Schema.String, { field: "name" })
              const age = yield* Graph.interrupt(Schema.NumberFromString, { field: "age" })
              return { log: [...s.log, `${name}:${age + 1}`] }
            })),
          Graph.setEntryPoint("form"),
          Graph.addEdge("form", Graph.END)
        )
        const runnable = yield* Graph.compileCheckpointable(graph)
        const first = failureOf(yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "int-order" }))) as Graph.GraphInterrupted
        expect(first.payload).toEqual({ field: "name" })
        const second = failureOf(yield* Effect.exit(runnable.resume("int-order", { value: "Ada" }))) as Graph.GraphInterrupted
        expect(second).toBeInstanceOf(Graph.GraphInterrupted)
        expect(second.payload).toEqual({ field: "age" })
        expect(second.interruptId).not.toBe(first.interruptId)
        expect((yield* record("int-order")).status).toBe("interrupted")
        const out = yield* runnable.resume("int-order", { value: "36" })
        expect(out.log).toEqual(["Ada:37"])
        expect(asked).toBe(3)
      }))

    live("parallel interrupts are answered by id with values", () =>
      Effect.gen(function*() {
        const runs: Record<string, number> = {}
        const runnable = yield* Graph.compileCheckpointable(parallelGraph(runs))
        const error = failureOf(yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "int-parallel" }))) as Graph.GraphInterrupted
        expect(error.interrupts?.map((i) => i.node)).toEqual(["a", "b"])
        const [ia, ib] = error.interrupts!
        // One value for two pending interrupts is ambiguous.
        expect(failureOf(yield* Effect.exit(runnable.resume("int-parallel", { value: "x" })))).toBeInstanceOf(Graph.InvalidResume)
        const out = yield* runnable.resume("int-parallel", { values: { [ib!.interruptId]: "B", [ia!.interruptId]: "A" } })
        expect(out.log).toEqual(["start", "a=A", "b=B"])
        expect(runs).toEqual({ a: 2, b: 2 })
      }))

    live("a partial answer keeps the finished task's update; the execution is interrupted again, with no lease", () =>
      Effect.gen(function*() {
        const runs: Record<string, number> = {}
        const runnable = yield* Graph.compileCheckpointable(parallelGraph(runs))
        const error = failureOf(yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "int-partial" }))) as Graph.GraphInterrupted
        const [ia, ib] = error.interrupts!
        const again = failureOf(yield* Effect.exit(runnable.resume("int-partial", { values: { [ia!.interruptId]: "A" } })))
        expect(again).toMatchObject({ _tag: "GraphInterrupted", node: "b", interruptId: ib!.interruptId })
        const latest = yield* latestOf("int-partial")
        const updates = (yield* writesOf(latest.id)).filter((w) => w.key === "update")
        expect(updates.length).toBe(1)
        const r = yield* record("int-partial")
        expect(r.status).toBe("interrupted")
        expect(r.lease).toBeUndefined()
        const out = yield* runnable.resume("int-partial", { values: { [ib!.interruptId]: "B" } })
        expect(out.log).toEqual(["start", "a=A", "b=B"])
        // a ran twice (asked, answered) and was not run again for b's answer.
        expect(runs).toEqual({ a: 2, b: 3 })
      }))

    live("two approvers answering at once: exactly one runs the node on", () =>
      Effect.gen(function*() {
        const counts = { draft: 0, after: 0 }
        const runnable = yield* Graph.compileCheckpointable(approvalGraph(counts))
        yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "int-race" }))
        const value = (approved: boolean) => ({ approved, at: "2026-01-02T03:04:05.000Z" })
        const exits = yield* Effect.all(
          [runnable.resume("int-race", { value: value(true) }), runnable.resume("int-race", { value: value(false) })].map(Effect.exit),
          { concurrency: "unbounded" }
        )
        const won = exits.filter(Exit.isSuccess)
        expect(won.length).toBe(1)
        // The loser lost the claim, or (when the winner was done first) found nothing left to answer.
        const lost = failureOf(exits.find(Exit.isFailure)!) as { _tag: string }
        expect(["CheckpointConflict", "LeaseLost", "InvalidResume"]).toContain(lost._tag)
        expect(counts).toEqual({ draft: 1, after: 1 })
        const cps = yield* runnable.listCheckpoints("int-race")
        expect(cps.map((c) => c.version)).toEqual([1, 2])
        expect(cps[1]!.state.log).toEqual((won[0] as Exit.Success<LogState, never>).value.log)
      }))
  })

  // ---------------------------------------------------------------------------
  // Sleeps (TestClock)
  // ---------------------------------------------------------------------------

  describe("Graph.sleep", () => {
    const napGraph = (duration: Duration.DurationInput, woke: { n: number }) =>
      Graph.make(LogState).pipe(
        Graph.addNode("nap", (s) =>
          Effect.gen(function*() {
            yield* Graph.sleep(duration)
            woke.n++
            return { log: [...s.log, "woke"] }
          })),
        Graph.setEntryPoint("nap"),
        Graph.addEdge("nap", Graph.END)
      )

    clocked("a short sleep waits in process (TestClock)", () =>
      Effect.gen(function*() {
        const woke = { n: 0 }
        const runnable = yield* Graph.compileCheckpointable(napGraph("500 millis", woke))
        const fiber = yield* Effect.fork(runnable.invoke({ log: [] }, { executionId: "nap-short" }))
        yield* TestClock.adjust("499 millis")
        expect(woke.n).toBe(0)
        expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
        yield* TestClock.adjust("1 millis")
        expect((yield* Fiber.join(fiber)).log).toEqual(["woke"])
        expect((yield* record("nap-short")).status).toBe("done")
      }))

    clocked("a long sleep suspends; an early resume waits the rest (TestClock)", () =>
      Effect.gen(function*() {
        const woke = { n: 0 }
        const runnable = yield* Graph.compileCheckpointable(napGraph("1 hour", woke))
        const error = failureOf(yield* Effect.exit(runnable.invoke({ log: [] }, { executionId: "nap-long" })))
        expect(error).toBeInstanceOf(Graph.GraphSuspended)
        expect((error as Graph.GraphSuspended).wakeAt.getTime()).toBe(3_600_000)
        expect((yield* record("nap-long")).wakeAt?.getTime()).toBe(3_600_000)
        yield* TestClock.adjust("40 minutes")
        const fiber = yield* Effect.fork(runnable.resume("nap-long"))
        yield* TestClock.adjust("19 minutes")
        expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
        expect(woke.n).toBe(0)
        yield* TestClock.adjust("1 minute")
        expect((yield* Fiber.join(fiber)).log).toEqual(["woke"])
        expect(woke.n).toBe(1)
        expect((yield* record("nap-long")).status).toBe("done")
      }))
  })

  // ---------------------------------------------------------------------------
  // Fencing
  // ---------------------------------------------------------------------------

  describe("fencing", () => {
    live("a run whose lease was taken over fails with LeaseLost and nothing of it lands", () =>
      Effect.gen(function*() {
        const store = yield* CheckpointStore.CheckpointStore
        const entered = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const graph = stepGraph({
          step: Effect.succeed(5),
          afterStep: Effect.zipRight(Deferred.succeed(entered, undefined), Deferred.await(release))
        })
        const runnable = yield* Graph.compileCheckpointable(graph)
        const fiber = yield* Effect.fork(runnable.invoke({ log: [] }, { executionId: "fenced" }))
        yield* Deferred.await(entered)
        // Another owner takes the execution over (as `resume({ takeOver })` or a worker after expiry would).
        yield* store.updateExecution("fenced" as never, { lease: { owner: "intruder", ttl: "1 hour" } })
        const at = yield* latestOf("fenced")
        const writesAt = yield* writesOf(at.id)
        yield* Deferred.succeed(release, undefined)
        const error = failureOf(yield* Fiber.await(fiber))
        expect(error).toMatchObject({ _tag: "LeaseLost" })
        const latest = yield* latestOf("fenced")
        expect(latest.version).toBe(at.version)
        expect(yield* writesOf(latest.id)).toEqual(writesAt)
        const r = yield* record("fenced")
        expect(r.lease?.owner).toBe("intruder")
        expect(r.status).toBe("running")
      }))
  })
})

// -----------------------------------------------------------------------------
// A step survives a SIGKILL of its process (File store, two processes)
// -----------------------------------------------------------------------------

const waitForFile = (file: string, timeoutMs: number) =>
  eventually(Effect.sync(() => fs.existsSync(file)), (b) => b, file).pipe(
    Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => new Error(`${file} did not appear`) })
  )

describe("a saved step across a SIGKILL", () => {
  it.live("the process dies after the step; a resume elsewhere does not rerun it", () =>
    Effect.gen(function*() {
      const root = fs.mkdtempSync(path.join(os.tmpdir(), "effect-checkpoint-durable-kill-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(root, { recursive: true, force: true })))
      const storeDir = path.join(root, "store")
      const markers = path.join(root, "markers")
      fs.mkdirSync(markers)
      const child = spawn(
        process.execPath,
        ["--import", "tsx", path.join(import.meta.dirname, "fixtures", "durable-step-runner.ts"), storeDir, markers, "killed"],
        { stdio: ["ignore", "ignore", "pipe"] }
      )
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
      yield* waitForFile(path.join(markers, "after-step"), 30_000)
      child.kill("SIGKILL")
      yield* Effect.async<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) resume(Effect.void)
        else child.once("exit", () => resume(Effect.void))
      })
      let ran = 0
      yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(stepGraph({ step: Effect.sync(() => ++ran), afterStep: Effect.void }))
        const r = yield* runnable.getExecution("killed")
        expect(Option.getOrThrow(r).status).toBe("running")
        const out = yield* runnable.resume("killed", { takeOver: true })
        expect(out.log).toEqual(["prepare", "work:42", "finish"])
        expect(ran).toBe(0)
      }).pipe(Effect.provide(FileStore.layer({ directory: storeDir })))
    }).pipe(Effect.scoped), 60_000)
})
