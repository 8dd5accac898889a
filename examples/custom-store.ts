/**
 * A store of your own: examples/json-file-store.ts implements the primitives
 * of `CheckpointBackend.Backend` over one JSON file, and
 * `CheckpointBackend.make` turns them into a full `CheckpointStore`. Here a
 * run pauses for approval, the "process" ends, and a new one — reading the
 * same file — resumes it.
 *
 *   npx tsx examples/custom-store.ts
 *
 * The store passes the conformance suite of `effect-checkpoint/testing`
 * (test/ThirdPartyStore.test.ts shows the ten lines that run it).
 */
import { Console, Effect, Schema } from "effect"
import { Graph } from "effect-checkpoint"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as JsonFileStore from "./json-file-store.js"

const Order = Schema.Struct({ item: Schema.String, approved: Schema.Boolean, shipped: Schema.Boolean })

const graph = Graph.make(Order).pipe(
  Graph.addNode("check", (o) => Effect.as(Console.log(`checking ${o.item}`), {})),
  Graph.addNode("ship", () => Effect.as(Console.log("shipping"), { shipped: true })),
  Graph.addEdge("check", "ship"),
  Graph.addEdge("ship", Graph.END),
  Graph.setEntryPoint("check")
)

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "custom-store-"))
const file = path.join(dir, "checkpoints.json")
const store = JsonFileStore.layer({ file })

// First process: runs until the pause before "ship".
const first = Effect.gen(function*() {
  const runnable = yield* Graph.compileCheckpointable(graph, { interruptBefore: ["ship"] })
  const paused = yield* Effect.flip(runnable.invoke({ item: "book", approved: false, shipped: false }, { executionId: "order-1" }))
  yield* Console.log(`paused: ${paused.message}`)
}).pipe(Effect.provide(store))

// Second process: a new layer reads the file and resumes with the approval.
const second = Effect.gen(function*() {
  const runnable = yield* Graph.compileCheckpointable(graph)
  const final = yield* runnable.resume("order-1", { update: (o) => ({ ...o, approved: true }) })
  yield* Console.log(`final: ${JSON.stringify(final)}`)
  for (const cp of yield* runnable.listCheckpoints("order-1")) yield* Console.log(`#${cp.version} ${cp.nodeName}`)
  yield* Console.log(`file: ${fs.statSync(file).size} bytes`)
}).pipe(Effect.provide(store))

Effect.runPromise(Effect.zipRight(first, second)).then(
  () => fs.rmSync(dir, { recursive: true, force: true }),
  (error) => {
    fs.rmSync(dir, { recursive: true, force: true })
    console.error(error)
    process.exitCode = 1
  }
)
