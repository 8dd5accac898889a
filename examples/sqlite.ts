/**
 * The SQLite example (a port of langgraphgo's examples/checkpointing/sqlite):
 * checkpoints live in a database file, so they survive the process.
 *
 * A three-step graph runs in one process, which CRASHES (really exits) in
 * step 3. A second process then opens the same file, lists what is there and
 * resumes the run from its last checkpoint: steps 1 and 2 do not run again.
 *
 *   npm run build && npx tsx examples/sqlite.ts          # both parts, each in its own process
 *   npx tsx examples/sqlite.ts --run <executionId>       # part 1 only: run until the crash
 *   npx tsx examples/sqlite.ts --resume <executionId>    # part 2 only: list and resume from the file
 *
 * The file is SQLITE_DB_PATH (default ./checkpoints.db), read by
 * `SqliteStore.layerConfig`; no server is needed.
 */
import { Console, Effect, Schema } from "effect"
import { Checkpoint, CheckpointStore, Graph } from "effect-checkpoint"
import { SqliteStore } from "effect-checkpoint/sqlite"
import { spawnSync } from "node:child_process"

const ProcessState = Schema.Struct({
  step: Schema.Int,
  data: Schema.String,
  history: Schema.Array(Schema.String)
})
type ProcessState = typeof ProcessState.Type

const [mode, executionIdArg] = process.argv.slice(2)

const step = (n: number) => (s: ProcessState) =>
  Effect.gen(function*() {
    yield* Console.log(`  [pid ${process.pid}] running step ${n}`)
    yield* Effect.sleep("100 millis")
    if (n === 3 && mode === "--run") {
      // A crash, not an error: the process is gone, nothing gets to clean up.
      yield* Console.log(`  [pid ${process.pid}] 💥 the process dies in step 3`)
      process.exit(1)
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

// "sync": each checkpoint is in the file before the next step starts, so the
// crash cannot lose the checkpoint of step 2 (with the default "async", a
// crash may lose the newest one, and step 2 would run again on resume).
const config = { durability: "sync", maxCheckpoints: 10 } as const

const show = (cps: ReadonlyArray<Graph.TypedCheckpoint<ProcessState>>) =>
  Effect.forEach(cps, (cp) =>
    Console.log(`    #${cp.version} ${cp.nodeName.padEnd(9)} next=[${cp.next.join(",")}] data="${cp.state.data}"`))

/** Part 1: run the graph in this process, until the crash. */
const run = (executionId: string) =>
  Effect.gen(function*() {
    const runnable = yield* Graph.compileCheckpointable(graph, config)
    yield* Console.log(`Part 1 — process ${process.pid} runs execution ${executionId}`)
    yield* runnable.invoke({ step: 0, data: "Start", history: ["Initialized"] }, { executionId })
  })

/** Part 2: a new process finds the unfinished run in the file and finishes it. */
const resume = (executionId: string) =>
  Effect.gen(function*() {
    const store = yield* CheckpointStore.CheckpointStore
    const runnable = yield* Graph.compileCheckpointable(graph, config)
    yield* Console.log(`Part 2 — process ${process.pid} opens the file`)
    const { executions: pending } = yield* store.listExecutions({ pendingOnly: true })
    yield* Console.log(`  unfinished executions in the file: ${pending.length}`)
    for (const p of pending) {
      yield* Console.log(`    ${p.executionId}: ${p.status}, version ${p.latestVersion}, updated ${p.updatedAt.toISOString()}`)
    }
    yield* Console.log(`  checkpoints of ${executionId}:`)
    yield* show(yield* runnable.listCheckpoints(executionId))
    yield* Console.log(`  resuming ${executionId} from its latest checkpoint…`)
    // The crashed run still holds its lease (until it expires): take the execution over.
    const final = yield* runnable.resume(executionId, { takeOver: true })
    yield* Console.log(`  final data: ${final.data}`)
    yield* Console.log(`  history:    ${final.history.join(" | ")}`)
    yield* Console.log(`  checkpoints now:`)
    yield* show(yield* runnable.listCheckpoints(executionId))
  })

/** Both parts, each in a child process of its own (this same script). */
const both = Effect.gen(function*() {
  const executionId = yield* Checkpoint.generateExecutionId
  yield* Console.log(`Database: ${process.env.SQLITE_DB_PATH ?? "./checkpoints.db"}\n`)
  const again = (args: ReadonlyArray<string>) =>
    Effect.sync(() =>
      spawnSync(process.execPath, [...process.execArgv, process.argv[1]!, ...args], { stdio: "inherit", env: process.env })
    )
  const first = yield* again(["--run", executionId])
  yield* Console.log(`  (part 1 exited with code ${first.status})\n`)
  const second = yield* again(["--resume", executionId])
  if (second.status !== 0) return yield* Effect.fail(new Error(`part 2 exited with code ${second.status}`))
  yield* Console.log(`\nTry it by hand: npx tsx examples/sqlite.ts --resume ${executionId}  (it is finished now: nothing runs)`)
})

const program: Effect.Effect<unknown, unknown> = mode === "--run" && executionIdArg !== undefined
  ? run(executionIdArg).pipe(Effect.provide(SqliteStore.layerConfig))
  : mode === "--resume" && executionIdArg !== undefined
  ? resume(executionIdArg).pipe(
    Effect.catchTag("ExecutionNotFound", (e) => Console.log(`  no checkpoints of ${e.executionId} in this file`)),
    Effect.provide(SqliteStore.layerConfig)
  )
  : both

Effect.runPromise(program).catch((error) => {
  console.error(error)
  process.exit(1)
})
