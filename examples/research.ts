/**
 * A research agent with parallel branches (map-reduce):
 *
 *   plan ──send──▶ search(topic 1) ─┐
 *        ├─send──▶ search(topic 2) ─┤
 *        ├─ …                       ├──▶ summarise ──▶ END
 *        └─send──▶ search(topic 5) ─┘
 *
 * `plan` splits a question into five topics and sends one `search` task per
 * topic (`Graph.send`); the five searches run at once, in one superstep; their
 * notes fold into the state with reducers (`concat`, `sum`) in task order;
 * `summarise` runs once, after all of them.
 *
 * Then a crash: the run happens in a child process, where two of the five
 * sources hang. Once the three other searches are saved (each finished task's
 * update is saved at once), this process kills the child with SIGKILL and
 * resumes the execution: only the two missing searches and the summary run.
 * Both processes open one SQLite file (in a temp directory, removed at the
 * end); no server is needed. Each node's log line names the process that ran it.
 *
 *   npm run build && npx tsx examples/research.ts
 */
import { Console, Effect, Option, Schema } from "effect"
import { Checkpoint, CheckpointStore, Graph } from "effect-checkpoint"
import { SqliteStore } from "effect-checkpoint/sqlite"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

// --- the state: fields written by parallel tasks have a reducer ---------------

const Note = Schema.Struct({ topic: Schema.String, source: Schema.String, text: Schema.String })

const Research = Schema.Struct({
  question: Schema.String,
  topics: Schema.Array(Schema.String),
  /** The topic of one search task (its send's input). */
  topic: Schema.String,
  notes: Schema.Array(Note),
  sources: Schema.Number,
  summary: Schema.String
})
type Research = typeof Research.Type

const role = process.argv[2] === "child" ? "child" : "parent"
const say = (line: string) => Console.log(`[${role} ${process.pid}] ${line}`)

// --- the nodes ----------------------------------------------------------------

const plan = (s: Research) =>
  Effect.gen(function*() {
    const topics = ["history", "storage engines", "consistency models", "benchmarks", "failure modes"].map((t) => `${s.question}: ${t}`)
    yield* say(`plan: ${topics.length} topics`)
    return { topics }
  })

/** A fake search. In the child, two sources hang (the child is killed while they do). */
const search = (s: Research) =>
  Effect.gen(function*() {
    const index = s.topics.indexOf(s.topic)
    if (role === "child" && index >= 3) {
      yield* say(`search #${index + 1} "${s.topic}": the source does not answer…`)
      return yield* Effect.never
    }
    // Later topics answer sooner: tasks finish out of order, the notes still fold in task order.
    yield* Effect.sleep(`${50 + 40 * (s.topics.length - 1 - index)} millis`)
    yield* say(`search #${index + 1} "${s.topic}": 1 note`)
    return { notes: [{ topic: s.topic, source: `source-${index + 1}`, text: `what source-${index + 1} says about ${s.topic}` }], sources: 1 }
  })

const summarise = (s: Research) =>
  Effect.gen(function*() {
    yield* say(`summarise: ${s.notes.length} notes from ${s.sources} sources`)
    return { summary: s.notes.map((n, i) => `${i + 1}. ${n.text}`).join("\n") }
  })

const graph = Graph.make(Research, { reducers: { notes: Graph.Reducer.concat, sources: Graph.Reducer.sum } }).pipe(
  Graph.addNode("plan", plan),
  Graph.addNode("search", search),
  Graph.addNode("summarise", summarise),
  Graph.setEntryPoint("plan"),
  // Map: one search task per topic, each with its own input. The inputs are saved with the checkpoint.
  Graph.addConditionalEdges("plan", (s) => s.topics.map((topic) => Graph.send<Research>("search", { topic }))),
  // Reduce: every search leads to summarise, which runs once, after all of them.
  Graph.addEdge("search", "summarise"),
  Graph.addEdge("summarise", Graph.END)
)

const input: Research = { question: "durable agents", topics: [], topic: "", notes: [], sources: 0, summary: "" }
const EXECUTION = "research-1"

// --- the child: runs until it is killed -----------------------------------------

const child = (filename: string) =>
  Effect.gen(function*() {
    const runnable = yield* Graph.compileCheckpointable(graph, { maxCheckpoints: 0 })
    yield* runnable.invoke(input, { executionId: EXECUTION })
  }).pipe(Effect.provide(SqliteStore.layer({ filename })))

// --- the parent: starts the child, kills it mid-fan-out, resumes ----------------

const parent = Effect.gen(function*() {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), "effect-checkpoint-research-"))
  yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(directory, { recursive: true, force: true })))
  const filename = path.join(directory, "research.db")
  yield* Console.log(`=== Research run in a child process (SQLite store in ${filename}) ===`)

  yield* Effect.gen(function*() {
    // This process opens the file first (creating its tables), then the child opens it too.
    const store = yield* CheckpointStore.CheckpointStore

    // The same script, as a child (tsx's loader flags are in execArgv).
    const proc = spawn(process.execPath, [...process.execArgv, process.argv[1]!, "child", filename], {
      stdio: ["ignore", "inherit", "inherit"]
    })
    const exited = Effect.async<void>((resume) => {
      if (proc.exitCode !== null || proc.signalCode !== null) resume(Effect.void)
      else proc.once("exit", () => resume(Effect.void))
    })
    // Whatever happens here, the child does not outlive this process.
    yield* Effect.addFinalizer(() => Effect.zipRight(Effect.sync(() => proc.kill("SIGKILL")), exited))
    // Wait until three searches' updates are in the store (task writes of the checkpoint that scheduled them).
    const executionId = yield* Checkpoint.makeExecutionId(EXECUTION)
    while (true) {
      if (proc.exitCode !== null) return yield* Effect.die(new Error("the child exited before the crash"))
      const latest = yield* store.latest(executionId).pipe(Effect.orElseSucceed(() => Option.none()))
      if (Option.isSome(latest) && latest.value.nodeName === "plan") {
        const writes = yield* store.listWrites(latest.value.id)
        if (writes.length === 3) {
          yield* Console.log(`\n[parent ${process.pid}] 3 of 5 searches are saved (tasks ${writes.map((w) => w.taskId).join(", ")}): SIGKILL the child`)
          break
        }
      }
      yield* Effect.sleep("20 millis")
    }
    proc.kill("SIGKILL")
    yield* exited

    yield* Console.log(`\n=== Resume in this process (pid ${process.pid}) ===`)
    const runnable = yield* Graph.compileCheckpointable(graph, { maxCheckpoints: 0 })
    // The child's lease would block a resume until it expires; it is dead, so take over now.
    const final = yield* runnable.resume(EXECUTION, { takeOver: true })

    yield* Console.log(`\n=== Summary (${final.sources} sources) ===\n${final.summary}`)
    yield* Console.log(`\n=== Checkpoints ===`)
    for (const cp of yield* runnable.listCheckpoints(EXECUTION)) {
      yield* Console.log(`#${cp.version} ${cp.nodeName.padEnd(10)} next=[${cp.next.join(",")}]`)
    }
  }).pipe(Effect.provide(SqliteStore.layer({ filename })))
})

const main = role === "child" ? child(process.argv[3]!) : Effect.scoped(parent)

Effect.runPromise(main).catch((error) => {
  console.error(error)
  process.exit(1)
})
