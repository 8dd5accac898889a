/**
 * Durable execution with a worker: `start` saves each run as `pending` and
 * returns at once; a worker claims the executions, runs them, and finishes
 * them after a crash.
 *
 *   npx tsx examples/worker.ts
 *
 * The example starts 8 executions of a 4-node graph on a File store (in a
 * temp directory it removes), runs a worker in a child process, SIGKILLs it
 * halfway through, and lets a second worker take over the executions of the
 * dead one once their leases expire. Every execution ends `done`; a node the
 * crash cut off runs again (make side effects idempotent, or put them in
 * `Graph.step`), a node whose checkpoint landed never does.
 */
import { Console, Effect, Fiber, Option, Schema } from "effect"
import { Graph } from "effect-checkpoint"
import { FileStore } from "effect-checkpoint/file"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const Order = Schema.Struct({ id: Schema.String, steps: Schema.Array(Schema.String) })

const stage = (name: string) => (s: typeof Order.Type) =>
  Effect.gen(function*() {
    yield* Effect.sleep("150 millis") // the work
    yield* Console.log(`  [pid ${process.pid}] ${s.id}: ${name}`)
    return { steps: [...s.steps, name] }
  })

const graph = Graph.make(Order).pipe(
  Graph.addNode("reserve", stage("reserve")),
  Graph.addNode("charge", stage("charge")),
  Graph.addNode("pack", stage("pack")),
  Graph.addNode("ship", stage("ship")),
  Graph.setEntryPoint("reserve"),
  Graph.addEdge("reserve", "charge"),
  Graph.addEdge("charge", "pack"),
  Graph.addEdge("pack", "ship"),
  Graph.addEdge("ship", Graph.END)
)

// A lease of 2 seconds: a dead worker's executions are taken over 2 s after it died.
const workerOptions = { concurrency: 3, leaseTtl: "2 seconds", pollInterval: "100 millis" } as const

/** The child process: a worker that runs until it is killed. */
const workerProcess = Effect.gen(function*() {
  const runnable = yield* Graph.compileCheckpointable(graph)
  yield* Graph.worker(runnable, { ...workerOptions, owner: `worker-pid-${process.pid}` })
})

const main = (directory: string) =>
  Effect.gen(function*() {
    const runnable = yield* Graph.compileCheckpointable(graph)
    const ids = yield* Effect.forEach(Array.from({ length: 8 }, (_, i) => `order-${i + 1}`), (id) =>
      runnable.start({ id, steps: [] }, { executionId: id }))
    yield* Console.log(`Started ${ids.length} executions: ${ids.join(", ")} (all pending, nothing ran yet)`)

    // A worker in another process.
    const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), "worker", directory], {
      stdio: ["ignore", "inherit", "inherit"]
    })
    const records = Effect.map(Effect.forEach(ids, (id) => runnable.getExecution(id)), (rs) => rs.flatMap(Option.toArray))
    const done = Effect.map(records, (rs) => rs.filter((r) => r.status === "done").length)
    // Kill it in the middle of its work: once an execution has two nodes behind it.
    while (!(yield* records).some((r) => r.latestVersion >= 3)) yield* Effect.sleep("20 millis")
    child.kill("SIGKILL")
    yield* Effect.async<void>((resume) => {
      if (child.exitCode !== null || child.signalCode !== null) resume(Effect.void)
      else child.once("exit", () => resume(Effect.void))
    })
    yield* Console.log("\n=== The worker process was killed (SIGKILL) ===")
    for (const id of ids) {
      const r = yield* runnable.getExecution(id)
      if (Option.isSome(r)) {
        const lease = r.value.lease ? `, leased by ${r.value.lease.owner}, which is dead` : ""
        yield* Console.log(`  ${id}: ${r.value.status} after ${r.value.latestVersion - 1} of 4 nodes${lease}`)
      }
    }

    yield* Console.log("\n=== A new worker takes over (once the dead one's leases expired) ===")
    const worker = yield* Effect.fork(Graph.worker(runnable, { ...workerOptions, owner: "recovery-worker" }))
    while ((yield* done) < ids.length) yield* Effect.sleep("50 millis")
    yield* Fiber.interrupt(worker) // lets its saves land and releases its leases

    yield* Console.log("\n=== All done ===")
    for (const id of ids) {
      const last = (yield* runnable.listCheckpoints(id)).at(-1)!
      yield* Console.log(`  ${id}: ${last.state.steps.join(" → ")} (${last.version} checkpoints)`)
    }
  })

if (process.argv[2] === "worker") {
  Effect.runPromise(workerProcess.pipe(Effect.provide(FileStore.layer({ directory: process.argv[3]! })))).catch((e) => {
    console.error(e)
    process.exit(1)
  })
} else {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), "effect-checkpoint-worker-example-"))
  Effect.runPromise(main(directory).pipe(Effect.provide(FileStore.layer({ directory }))))
    .catch((e) => {
      console.error(e)
      process.exitCode = 1
    })
    .finally(() => fs.rmSync(directory, { recursive: true, force: true }))
}
