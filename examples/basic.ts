/**
 * The basic example (a port of langgraphgo's examples/checkpointing/main.go):
 * a three-step graph that checkpoints after every step, lists its
 * checkpoints, and resumes from the second one.
 *
 *   npm run example            # or: npx tsx examples/basic.ts
 *
 * It runs on the Memory store. Swapping the store is one line — the layer:
 *
 *   Effect.provide(FileStore.layer({ directory: "./checkpoints" }))              // from "effect-checkpoint/file"
 *   Effect.provide(SqliteStore.layer({ filename: "./checkpoints.db" }))          // from "effect-checkpoint/sqlite"
 *   Effect.provide(PostgresStore.layer({ url: "postgres://…" }))                 // from "effect-checkpoint/postgres"
 *   Effect.provide(RedisStore.layer({ url: "redis://127.0.0.1:6379" }))          // from "effect-checkpoint/redis"
 */
import { Console, Effect, Schema } from "effect"
import { Graph, MemoryStore } from "effect-checkpoint"

// The state: a Schema, so checkpoints store it encoded and give it back typed.
const ProcessState = Schema.Struct({
  step: Schema.Int,
  data: Schema.String,
  history: Schema.Array(Schema.String)
})
type ProcessState = typeof ProcessState.Type

// One step: a node is a function from the state to an Effect of the next state.
const step = (n: number) => (s: ProcessState) =>
  Effect.gen(function*() {
    yield* Console.log(`Running step ${n}...`)
    yield* Effect.sleep("100 millis")
    return { step: n, data: `${s.data} → Step${n}`, history: [...s.history, `Completed Step ${n}`] }
  })

const graph = Graph.make(ProcessState).pipe(
  Graph.addNode("step1", step(1)),
  Graph.addNode("step2", step(2)),
  Graph.addNode("step3", step(3)),
  Graph.setEntryPoint("step1"),
  Graph.addEdge("step1", "step2"),
  Graph.addEdge("step2", "step3"),
  Graph.addEdge("step3", Graph.END)
)

const program = Effect.gen(function*() {
  const runnable = yield* Graph.compileCheckpointable(graph, {
    autoSave: true,
    saveInterval: "2 seconds",
    maxCheckpoints: 5
  })

  yield* Console.log("=== Run with checkpoints ===")
  const final = yield* runnable.invoke({ step: 0, data: "Start", history: ["Initialized"] })
  yield* Console.log("\n=== Done ===")
  yield* Console.log(`Final step:    ${final.step}`)
  yield* Console.log(`Final data:    ${final.data}`)
  yield* Console.log(`History:       ${final.history.join(" | ")}`)

  const checkpoints = yield* runnable.listCheckpoints()
  yield* Console.log(`\n=== ${checkpoints.length} checkpoints ===`)
  for (const cp of checkpoints) {
    yield* Console.log(
      `#${cp.version} ${cp.nodeName.padEnd(9)} id=${cp.id} next=[${cp.next.join(",")}] state=${JSON.stringify(cp.state)}`
    )
  }

  // Resume from the second checkpoint (after step1): an older checkpoint, so the
  // run forks into a new execution and the history above stays as it is.
  const second = checkpoints[1]!
  yield* Console.log(`\n=== Resume from checkpoint #${second.version} (${second.nodeName}) ${second.id} ===`)
  const resumed = yield* runnable.resumeFromCheckpoint(second.id)
  yield* Console.log(`Resumed step:  ${resumed.step}`)
  yield* Console.log(`Resumed data:  ${resumed.data}`)
  yield* Console.log(`History:       ${resumed.history.join(" | ")}`)
})

Effect.runPromise(program.pipe(Effect.provide(MemoryStore.layer))).catch((error) => {
  console.error(error)
  process.exit(1)
})
