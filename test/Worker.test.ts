/**
 * The worker: it runs every started execution, retries with its schedule,
 * leaves failed and interrupted executions alone, wakes sleeping ones when
 * due, renews its leases, gives them back when interrupted, and takes over
 * the executions of dead runs. In process on every engine store; across
 * processes (SIGKILLed workers, concurrent claims) on one SQLite file and on
 * one PostgreSQL schema.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer, Option, Schedule, Schema, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as readline from "node:readline"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import { engineStores, layerOfSpec, sharedStoreSpecs, tempDir } from "./fixtures/stores.js"
import { chainGraph } from "./fixtures/worker-graphs.js"

class Boom extends Schema.TaggedError<Boom>()("Boom", { message: Schema.String }) {}

const recordOf = (executionId: string) =>
  Effect.flatMap(CheckpointStore.CheckpointStore, (s) => s.getExecution(executionId as never)).pipe(Effect.map(Option.getOrThrow))

/** Polls (real time) until `check` holds; dies after ~`limitMs`. */
const eventually = <A, E, R>(effect: Effect.Effect<A, E, R>, check: (a: A) => boolean, what: string, limitMs = 30_000) =>
  Effect.gen(function*() {
    const until = Date.now() + limitMs
    while (true) {
      const a = yield* effect
      if (check(a)) return a
      if (Date.now() > until) return yield* Effect.dieMessage(`timed out waiting for ${what}: ${JSON.stringify(a)}`)
      yield* Effect.sleep("10 millis")
    }
  })

const statuses = (ids: ReadonlyArray<string>) => Effect.forEach(ids, (id) => Effect.map(recordOf(id), (r) => r.status))

const fast = { pollInterval: "20 millis", leaseTtl: "5 seconds" } as const

describe.each(engineStores)("the worker on the %s store", (_name, storeLayer) => {
  const live = (title: string, body: () => Effect.Effect<void, unknown, CheckpointStore.CheckpointStore | Scope.Scope>, timeout?: number) =>
    it.live(title, () => body().pipe(Effect.scoped, Effect.provide(storeLayer)), timeout)

  live("start returns at once (pending, nothing ran); a worker runs every started execution to its end", () =>
    Effect.gen(function*() {
      const runs: Array<string> = []
      const runnable = yield* Graph.compileCheckpointable(chainGraph(3, (name, k) => Effect.sync(() => runs.push(`${name}:${k}`))))
      const ids = yield* Effect.forEach(["a", "b", "c", "d", "e"], (name) => runnable.start({ name, done: [] }))
      expect(runs).toEqual([])
      for (const id of ids) {
        const r = yield* recordOf(id)
        expect(r.status).toBe("pending")
        expect(r.lease).toBeUndefined()
        expect(r.attempts).toBe(0)
      }
      yield* Effect.forkScoped(Graph.worker(runnable, { ...fast, concurrency: 2 }))
      yield* eventually(statuses(ids), (s) => s.every((x) => x === "done"), "every execution done")
      for (const [i, id] of ids.entries()) {
        const cps = yield* runnable.listCheckpoints(id)
        expect(cps.at(-1)!.state).toEqual({ name: "abcde"[i], done: [1, 2, 3] })
        const r = yield* recordOf(id)
        expect(r.lease).toBeUndefined()
        expect(r.attempts).toBe(1)
      }
      expect(runs.length).toBe(15)
    }))

  live("a custom executionId for start; a bad worker owner is refused, naming the owner", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(chainGraph(1, () => Effect.void))
      expect(yield* runnable.start({ name: "x", done: [] }, { executionId: "mine-1" })).toBe("mine-1")
      const error = yield* Effect.flip(Graph.worker(runnable, { owner: "../evil" }))
      expect(error).toMatchObject({ _tag: "InvalidIdentifier", kind: "owner", value: "../evil" })
    }))

  live("a failing run is retried with the schedule, then failed (in one write, with its failure) and left alone until retry(id)", () =>
    Effect.gen(function*() {
      // Every record change the worker makes, as a reader sees it right after.
      const seen: Array<CheckpointStore.ExecutionRecord> = []
      const store = yield* CheckpointStore.CheckpointStore
      const watched: CheckpointStore.Service = {
        ...store,
        release: (id, options) => Effect.tap(store.release(id, options), (r) => Effect.sync(() => seen.push(r))),
        updateExecution: (id, patch, options) => Effect.tap(store.updateExecution(id, patch, options), (r) => Effect.sync(() => seen.push(r)))
      }
      let attempts = 0
      let broken = true
      const graph = chainGraph(2, (_, k) =>
        k === 2 && broken ? Effect.zipRight(Effect.sync(() => attempts++), new Boom({ message: `attempt ${attempts}` })) : Effect.void)
      const runnable = yield* Graph.compileCheckpointable(graph).pipe(Effect.provideService(CheckpointStore.CheckpointStore, watched))
      const id = yield* runnable.start({ name: "flaky", done: [] })
      yield* Effect.forkScoped(
        Graph.worker(runnable, { ...fast, retry: Schedule.recurs(2) }).pipe(Effect.provideService(CheckpointStore.CheckpointStore, watched))
      )
      const failed = yield* eventually(recordOf(id), (r) => r.status === "failed", "failed")
      expect(attempts).toBe(3)
      expect(failed.failure).toEqual({ tag: "Boom", message: "attempt 2" })
      expect(failed.lease).toBeUndefined()
      expect(failed.attempts).toBe(1)
      // Never `failed` without its failure, not even for a moment.
      expect(seen.filter((r) => r.status === "failed" && r.failure === undefined)).toEqual([])
      // Left alone: many polls later nothing ran.
      yield* Effect.sleep("200 millis")
      expect(attempts).toBe(3)
      expect((yield* recordOf(id)).status).toBe("failed")
      broken = false
      const rearmed = yield* runnable.retry(id)
      expect(rearmed.status).toBe("pending")
      const done = yield* eventually(recordOf(id), (r) => r.status === "done", "done after retry")
      expect(done.attempts).toBe(2)
      expect((yield* runnable.listCheckpoints(id)).at(-1)!.state.done).toEqual([1, 2])
    }))

  live("interrupted executions are never claimed; answered, the worker is not needed", () =>
    Effect.gen(function*() {
      let asked = 0
      const graph = Graph.make(Schema.Struct({ answer: Schema.String })).pipe(
        Graph.addNode("ask", () => Effect.map(Effect.zipRight(Effect.sync(() => asked++), Graph.interrupt(Schema.String, "?")), (answer) => ({ answer }))),
        Graph.setEntryPoint("ask"),
        Graph.addEdge("ask", Graph.END)
      )
      const runnable = yield* Graph.compileCheckpointable(graph)
      const id = yield* runnable.start({ answer: "" })
      yield* Effect.forkScoped(Graph.worker(runnable, fast))
      yield* eventually(recordOf(id), (r) => r.status === "interrupted", "interrupted")
      expect(asked).toBe(1)
      yield* Effect.sleep("200 millis")
      const r = yield* recordOf(id)
      expect(r.status).toBe("interrupted")
      expect(r.attempts).toBe(1)
      expect(r.lease).toBeUndefined()
      expect(asked).toBe(1)
      expect((yield* runnable.resume(id, { value: "42" })).answer).toBe("42")
    }))

  live("a sleeping execution is claimed once it is due, not before", () =>
    Effect.gen(function*() {
      const woke: Array<number> = []
      const graph = Graph.make(Schema.Struct({ n: Schema.Number })).pipe(
        Graph.addNode("nap", () => Effect.zipRight(Graph.sleep("1500 millis"), Effect.sync(() => (woke.push(Date.now()), { n: 1 })))),
        Graph.setEntryPoint("nap"),
        Graph.addEdge("nap", Graph.END)
      )
      // Sleeps over 100 ms suspend the run: the worker must come back for it.
      const runnable = yield* Graph.compileCheckpointable(graph, { sleepInProcess: "100 millis" })
      const id = yield* runnable.start({ n: 0 })
      yield* Effect.forkScoped(Graph.worker(runnable, fast))
      const sleeping = yield* eventually(recordOf(id), (r) => r.status === "sleeping", "sleeping")
      const wakeAt = sleeping.wakeAt!.getTime()
      expect(sleeping.lease).toBeUndefined()
      expect(sleeping.attempts).toBe(1)
      // While not due, polls leave it alone (checked only while the read ended well before wakeAt).
      yield* Effect.sleep("300 millis")
      const meanwhile = yield* recordOf(id)
      if (Date.now() < wakeAt - 100) {
        expect(meanwhile.status).toBe("sleeping")
        expect(meanwhile.attempts).toBe(1)
      }
      const done = yield* eventually(recordOf(id), (r) => r.status === "done", "done")
      expect(done.attempts).toBe(2)
      expect(woke.length).toBe(1)
      expect(woke[0]!).toBeGreaterThanOrEqual(wakeAt)
    }))

  live("the worker renews its lease during a long node: nobody else can claim the execution", () =>
    Effect.gen(function*() {
      const store = yield* CheckpointStore.CheckpointStore
      let runs = 0
      const entered = yield* Deferred.make<void>()
      const graph = chainGraph(1, () =>
        Effect.zipRight(Effect.zipRight(Effect.sync(() => runs++), Deferred.succeed(entered, undefined)), Effect.sleep("3 seconds")))
      const runnable = yield* Graph.compileCheckpointable(graph)
      const id = yield* runnable.start({ name: "long", done: [] })
      yield* Effect.forkScoped(Graph.worker(runnable, { pollInterval: "20 millis", leaseTtl: "1500 millis" }))
      yield* Deferred.await(entered)
      const first = (yield* recordOf(id)).lease!
      const stolen: Array<string> = []
      const expiries = new Set<number>()
      while ((yield* recordOf(id)).status === "running") {
        const got = yield* store.claim({ owner: "thief", ttl: "1 minute", limit: 10 })
        stolen.push(...got.map((r) => r.executionId))
        const lease = (yield* recordOf(id)).lease
        if (lease !== undefined) expiries.add(lease.expiresAt.getTime())
        yield* Effect.sleep("100 millis")
      }
      expect(stolen).toEqual([])
      // 3 s of node with a 1.5 s lease: it was renewed, and past the first expiry.
      expect(Math.max(...expiries)).toBeGreaterThan(first.expiresAt.getTime())
      const done = yield* eventually(recordOf(id), (r) => r.status === "done", "done")
      expect(done.attempts).toBe(1)
      expect(runs).toBe(1)
    }), 30_000)

  live("interrupting a worker releases its leases: a second worker takes over at once", () =>
    Effect.gen(function*() {
      const entered = yield* Deferred.make<void>()
      let hold = true
      const runs: Array<string> = []
      const graph = chainGraph(2, (name, k) =>
        Effect.zipRight(
          Effect.sync(() => runs.push(`${name}:${k}`)),
          k === 2 && hold ? Effect.zipRight(Deferred.succeed(entered, undefined), Effect.never) : Effect.void
        ))
      const runnable = yield* Graph.compileCheckpointable(graph)
      const id = yield* runnable.start({ name: "x", done: [] })
      // A lease of an hour: only a release lets anyone else in soon.
      const first = yield* Effect.fork(Graph.worker(runnable, { pollInterval: "20 millis", leaseTtl: "1 hour", owner: "first" }))
      yield* Deferred.await(entered)
      expect((yield* recordOf(id)).lease?.owner).toBe("first")
      yield* Fiber.interrupt(first)
      const released = yield* recordOf(id)
      expect(released.status).toBe("pending")
      expect(released.lease).toBeUndefined()
      // n1's checkpoint landed before the worker went away.
      expect((yield* runnable.listCheckpoints(id)).map((c) => c.nodeName)).toEqual(["__input__", "n1"])
      hold = false
      yield* Effect.forkScoped(Graph.worker(runnable, { pollInterval: "20 millis", leaseTtl: "1 hour", owner: "second" }))
      const done = yield* eventually(recordOf(id), (r) => r.status === "done", "done")
      expect(done.attempts).toBe(2)
      expect(runs).toEqual(["x:1", "x:2", "x:2"])
    }))

  live("a dead run's execution is taken over once its lease expired", () =>
    Effect.gen(function*() {
      const store = yield* CheckpointStore.CheckpointStore
      const runnable = yield* Graph.compileCheckpointable(chainGraph(2, () => Effect.void))
      const id = yield* runnable.start({ name: "orphan", done: [] })
      // A run that took it and died: running, leased for a short while, never renewed.
      yield* store.updateExecution(id, { status: "running", lease: { owner: "run-dead", ttl: "700 millis" } })
      const expiresAt = (yield* recordOf(id)).lease!.expiresAt.getTime()
      yield* Effect.forkScoped(Graph.worker(runnable, fast))
      yield* Effect.sleep("200 millis")
      const meanwhile = yield* recordOf(id)
      if (Date.now() < expiresAt - 100) {
        expect(meanwhile.lease?.owner).toBe("run-dead")
        expect(meanwhile.attempts).toBe(0)
      }
      const done = yield* eventually(recordOf(id), (r) => r.status === "done", "done")
      expect(done.attempts).toBe(1)
      expect((yield* runnable.listCheckpoints(id)).at(-1)!.state.done).toEqual([1, 2])
    }))

  live("workerLayer: the worker runs in the layer's scope and gives its leases back when it closes", () =>
    Effect.gen(function*() {
      const entered = yield* Deferred.make<void>()
      const graph = chainGraph(2, (name, k) =>
        name === "held" && k === 2 ? Effect.zipRight(Deferred.succeed(entered, undefined), Effect.never) : Effect.void)
      const runnable = yield* Graph.compileCheckpointable(graph)
      const ids = yield* Effect.forEach(["p", "q", "held"], (name) => runnable.start({ name, done: [] }))
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(Graph.workerLayer(runnable, { pollInterval: "20 millis", leaseTtl: "1 hour" }), scope)
      yield* eventually(statuses(ids.slice(0, 2)), (s) => s.every((x) => x === "done"), "p and q done")
      yield* Deferred.await(entered)
      expect((yield* recordOf(ids[2]!)).status).toBe("running")
      yield* Scope.close(scope, Exit.void)
      const held = yield* recordOf(ids[2]!)
      expect(held.status).toBe("pending")
      expect(held.lease).toBeUndefined()
    }))
})

// -----------------------------------------------------------------------------
// Across processes (SQLite and PostgreSQL)
// -----------------------------------------------------------------------------

const fixture = (name: string) => path.join(import.meta.dirname, "fixtures", name)

/** A child process running a fixture with tsx, its stdout lines as a queue; SIGKILLed when the scope closes. */
const child = (file: string, args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const proc = spawn(process.execPath, ["--import", "tsx", fixture(file), ...args], { stdio: ["pipe", "pipe", "pipe"] })
      // Each line awaited listens for the exit meanwhile.
      proc.setMaxListeners(0)
      const lines: Array<string> = []
      const waiting: Array<() => void> = []
      readline.createInterface({ input: proc.stdout! }).on("line", (line) => {
        lines.push(line)
        waiting.splice(0).forEach((wake) => wake())
      })
      let stderr = ""
      proc.stderr!.on("data", (d) => stderr += String(d))
      const nextLine = Effect.async<string, Error>((resume) => {
        const take = () => {
          if (lines.length > 0) resume(Effect.succeed(lines.shift()!))
          else if (proc.exitCode !== null || proc.signalCode !== null) resume(Effect.fail(new Error(`${file} exited: ${stderr}`)))
          else waiting.push(take)
        }
        const onExit = () => take()
        proc.once("exit", onExit)
        take()
        return Effect.sync(() => proc.off("exit", onExit))
      }).pipe(Effect.timeoutFail({ duration: "60 seconds", onTimeout: () => new Error(`${file}: no line within 60 s (${stderr})`) }))
      return { proc, nextLine }
    }),
    ({ proc }) => kill(proc)
  )

const kill = (proc: ChildProcess) =>
  Effect.async<void>((resume) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resume(Effect.void)
    proc.once("exit", () => resume(Effect.void))
    proc.kill("SIGKILL")
  })

/** A store several processes share (File is left out: its claim reads every record, too slow for the chaos rounds). */
const sharedStores = sharedStoreSpecs.filter(([name]) => name !== "File")

describe.each(sharedStores)("workers in several processes on %s", (_, makeSpec) => {
  it.live("chaos: 60 executions × 10 nodes, 3 worker processes, one SIGKILLed every ~400 ms for 8 rounds and restarted", () =>
    Effect.gen(function*() {
      const spec = yield* makeSpec
      const runsDir = path.join(yield* tempDir("worker-runs"), "runs")
      fs.mkdirSync(runsDir)
      yield* chaos(spec, runsDir, { EXECUTIONS: 60, NODES: 10, ROUNDS: 8 }).pipe(Effect.provide(layerOfSpec(spec)))
    }).pipe(Effect.scoped), 150_000)

  it.live("two processes claiming at once, 20 rounds: they never get the same execution, and together get all", () =>
    Effect.gen(function*() {
      const spec = yield* makeSpec
      yield* Effect.gen(function*() {
        // The store's tables exist before the claimers open it.
        const runnable = yield* Graph.compileCheckpointable(chainGraph(1, () => Effect.void))
        const claimers = yield* Effect.forEach(["left", "right"], (owner) => child("claimer.ts", [spec, owner, "3"]), {
          concurrency: "unbounded"
        })
        for (const c of claimers) expect(yield* c.nextLine).toBe("ready")
        for (let round = 0; round < 20; round++) {
          const ids = yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => `r${round}-${i}`), (id) =>
            runnable.start({ name: id, done: [] }, { executionId: id }))
          for (const c of claimers) c.proc.stdin!.write("go\n")
          const results = (yield* Effect.forEach(claimers, (c) => c.nextLine)).map((line) =>
            JSON.parse(line) as { owner: string; claimed: Array<string>; errors: Array<string> }
          )
          for (const r of results) expect(r.errors).toEqual([])
          const all = results.flatMap((r) => r.claimed)
          expect(new Set(all).size).toBe(all.length)
          expect([...all].sort()).toEqual([...ids].sort())
          for (const r of results) {
            for (const id of r.claimed) expect((yield* recordOf(id)).lease?.owner).toBe(r.owner)
          }
        }
      }).pipe(Effect.provide(layerOfSpec(spec)))
    }).pipe(Effect.scoped), 120_000)
})

const chaos = (storeSpec: string, runsDir: string, { EXECUTIONS, NODES, ROUNDS }: { EXECUTIONS: number; NODES: number; ROUNDS: number }) =>
  Effect.gen(function*() {
    const store = yield* CheckpointStore.CheckpointStore
    const runnable = yield* Graph.compileCheckpointable(chainGraph(NODES, () => Effect.void), { maxCheckpoints: 0 })
    const names = Array.from({ length: EXECUTIONS }, (_, i) => `e${i}`)

    const start = (slot: number, generation: number) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const owner = `w${slot}-${generation}`
        const c = yield* Scope.extend(child("worker-process.ts", [storeSpec, runsDir, owner, String(NODES), "30"]), scope)
        return { owner, scope, proc: c.proc, ready: c.nextLine }
      })
    const workers = yield* Effect.forEach([0, 1, 2], (slot) => start(slot, 0))
    yield* Effect.addFinalizer(() => Effect.forEach(workers, (w) => Scope.close(w.scope, Exit.void), { discard: true }))
    // Every worker is up before the work arrives (so it is spread over them), then the kills begin.
    for (const w of workers) expect(yield* w.ready).toBe("ready")
    const ids = yield* Effect.forEach(names, (name) => runnable.start({ name, done: [] }, { executionId: name }))

    let kills = 0
    let hitInFlight = 0
    for (let round = 1; round <= ROUNDS; round++) {
      yield* Effect.sleep(`${300 + Math.floor(Math.random() * 200)} millis`)
      const slot = Math.floor(Math.random() * workers.length)
      const victim = workers[slot]!
      const running = yield* store.listExecutions({ status: "running", limit: 100 })
      yield* kill(victim.proc)
      kills++
      // Work the victim held when it died (its leases were live): it must be taken over and finished.
      // A restarted worker is not waited for: the next kill may hit it still starting.
      hitInFlight += running.executions.filter((r) => r.lease?.owner === victim.owner).length
      yield* Scope.close(victim.scope, Exit.void)
      workers[slot] = yield* start(slot, round)
    }

    yield* eventually(statuses(ids), (s) => s.every((x) => x === "done"), "every execution done", 90_000)
    expect(hitInFlight).toBeGreaterThan(0)
    for (const name of names) {
      const cps = yield* runnable.listCheckpoints(name)
      // Versions contiguous: the input, then one checkpoint per node, each applied once.
      expect(cps.map((c) => c.version)).toEqual(Array.from({ length: NODES + 1 }, (_, i) => i + 1))
      expect(cps.map((c) => c.nodeName)).toEqual(["__input__", ...Array.from({ length: NODES }, (_, i) => `n${i + 1}`)])
      expect(cps.at(-1)!.state).toEqual({ name, done: Array.from({ length: NODES }, (_, i) => i + 1) })
      // Every node ran, and none more than kills + 1 times.
      const runs = fs.readFileSync(path.join(runsDir, name), "utf8").trim().split("\n").map(Number)
      for (let k = 1; k <= NODES; k++) {
        const n = runs.filter((x) => x === k).length
        expect(n).toBeGreaterThanOrEqual(1)
        expect(n).toBeLessThanOrEqual(kills + 1)
      }
      const r = yield* recordOf(name)
      expect(r.lease).toBeUndefined()
    }
  }).pipe(Effect.scoped)
