/**
 * The PostgreSQL example (a port of langgraphgo's examples/checkpointing/postgres):
 * a three-step graph checkpointed to PostgreSQL. Step 2 fails on its first
 * attempt, like a crash in the middle of a run; the run is then resumed from
 * its last checkpoint, so step 1 does not run again. At the end the example
 * clears the checkpoints it made (the table stays, as a real app's would).
 *
 *   npm run build && npx tsx examples/postgres.ts
 *   POSTGRES_CONN_STRING=postgres://user:password@host:5432/db npx tsx examples/postgres.ts
 *
 * Default connection string: postgres://postgres@127.0.0.1:5432/test. The
 * table is `example_checkpoints`, created if missing.
 */
import { Console, Data, Effect, Redacted, Schema } from "effect"
import { Graph } from "effect-checkpoint"
import { PostgresStore } from "effect-checkpoint/postgres"

const connString = process.env.POSTGRES_CONN_STRING ?? "postgres://postgres@127.0.0.1:5432/test"

const ProcessState = Schema.Struct({
  step: Schema.Int,
  data: Schema.String,
  history: Schema.Array(Schema.String)
})
type ProcessState = typeof ProcessState.Type

/** What a step fails with: a typed error, not an exception. */
class StepFailed extends Data.TaggedError("StepFailed")<{ readonly step: number; readonly reason: string }> {}

let attemptsOfStep2 = 0

const step = (n: number) => (s: ProcessState) =>
  Effect.gen(function*() {
    yield* Console.log(`Running step ${n}...`)
    yield* Effect.sleep("100 millis")
    if (n === 2 && ++attemptsOfStep2 === 1) {
      return yield* new StepFailed({ step: n, reason: "the worker crashed (simulated)" })
    }
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
  const runnable = yield* Graph.compileCheckpointable(graph, { maxCheckpoints: 5 })
  const executionId = runnable.executionId

  yield* Console.log(`=== Run ${executionId} ===`)
  const failed = yield* runnable.invoke({ step: 0, data: "Start", history: ["Initialized"] }).pipe(Effect.flip)
  yield* Console.log(`The run stopped: ${failed._tag === "StepFailed" ? `step ${failed.step}: ${failed.reason}` : failed._tag}`)

  const saved = yield* runnable.listCheckpoints()
  yield* Console.log(`\n=== ${saved.length} checkpoints in PostgreSQL ===`)
  for (const cp of saved) {
    yield* Console.log(`#${cp.version} ${cp.nodeName.padEnd(9)} id=${cp.id} next=[${cp.next.join(",")}] state=${JSON.stringify(cp.state)}`)
  }

  yield* Console.log(`\n=== Resume ${executionId} from its latest checkpoint ===`)
  const final = yield* runnable.resume()
  yield* Console.log(`Final step:    ${final.step}`)
  yield* Console.log(`Final data:    ${final.data}`)
  yield* Console.log(`History:       ${final.history.join(" | ")}`)

  const all = yield* runnable.listCheckpoints()
  yield* Console.log(`\n=== ${all.length} checkpoints after the resume ===`)
  for (const cp of all) {
    yield* Console.log(`#${cp.version} ${cp.nodeName.padEnd(9)} ${cp.timestamp.toISOString()} next=[${cp.next.join(",")}]`)
  }

  yield* runnable.clearCheckpoints()
  yield* Console.log(`\n=== Cleared: ${(yield* runnable.listCheckpoints()).length} checkpoints left for ${executionId} ===`)
})

const store = PostgresStore.layer({ url: Redacted.make(connString), tableName: "example_checkpoints" })

Effect.runPromise(program.pipe(Effect.provide(store))).catch((error) => {
  console.error(error)
  process.exit(1)
})
