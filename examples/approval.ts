/**
 * A human approval inside a node: the node drafts a text with a durable
 * `Graph.step` (an expensive LLM-style call), then asks for approval with
 * `Graph.interrupt`. The run stops; later — here in another process — a
 * `resume` with the answer continues the node where it stopped: the draft is
 * not written again, because the step's result was saved.
 *
 *   npx tsx examples/approval.ts
 *
 * Runs on a File store in a temp directory it removes. (LangGraph's
 * `interrupt()` reruns the whole node on resume, LLM call included.)
 */
import { Console, Effect, Schema } from "effect"
import { Graph } from "effect-checkpoint"
import { FileStore } from "effect-checkpoint/file"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const Post = Schema.Struct({
  topic: Schema.String,
  text: Schema.String,
  status: Schema.Literal("draft", "published", "rejected")
})

/** What the reviewer answers (the resume's `value`: its encoded side, as JSON). */
const Review = Schema.Struct({ approved: Schema.Boolean, reviewer: Schema.String, at: Schema.Date })

const llmWrite = (topic: string) =>
  Effect.gen(function*() {
    yield* Console.log(`  [pid ${process.pid}] calling the LLM to draft "${topic}" (slow, costs money)`)
    yield* Effect.sleep("300 millis")
    return `Five things nobody tells you about ${topic}.`
  })

const graph = Graph.make(Post).pipe(
  Graph.addNode("write", (s) =>
    Effect.gen(function*() {
      // Saved before it returns: a rerun of this node gets the text back without calling the LLM.
      const text = yield* Graph.step("draft", llmWrite(s.topic), Schema.String)
      // Stops the run here the first time; on resume, returns the reviewer's answer.
      const review = yield* Graph.interrupt(Review, { question: "Publish this?", text })
      yield* Console.log(`  [pid ${process.pid}] ${review.approved ? "approved" : "rejected"} by ${review.reviewer} at ${review.at.toISOString()}`)
      return { text, status: review.approved ? "published" as const : "rejected" as const }
    })),
  Graph.addNode("publish", (s) =>
    Effect.as(Console.log(`  [pid ${process.pid}] publishing: ${s.text}`), {})),
  Graph.setEntryPoint("write"),
  Graph.addConditionalEdges("write", (s) => s.status === "published" ? "publish" : Graph.END),
  Graph.addEdge("publish", Graph.END)
)

/** The first process: runs until the node asks for approval. */
const ask = (executionId: string) =>
  Effect.gen(function*() {
    const runnable = yield* Graph.compileCheckpointable(graph)
    yield* Console.log("=== Run until the approval ===")
    const stopped = yield* Effect.flip(runnable.invoke({ topic: "effect systems", text: "", status: "draft" }, { executionId }))
    if (stopped._tag !== "GraphInterrupted") return yield* Effect.fail(stopped)
    yield* Console.log(`Interrupted in node "${stopped.node}" (interrupt ${stopped.interruptId})`)
    yield* Console.log(`Payload: ${JSON.stringify(stopped.payload)}`)
    const record = yield* runnable.getExecution(executionId)
    yield* Console.log(`Execution status: ${record._tag === "Some" ? record.value.status : "?"}`)
  })

/** The second process: the reviewer's answer arrives (say, from an HTTP handler). */
const answer = (executionId: string) =>
  Effect.gen(function*() {
    const runnable = yield* Graph.compileCheckpointable(graph)
    yield* Console.log(`\n=== Resume in another process (pid ${process.pid}) with the answer ===`)
    const final = yield* runnable.resume(executionId, {
      value: { approved: true, reviewer: "ada", at: "2026-12-05T18:00:00.000Z" }
    })
    yield* Console.log(`Final state: ${JSON.stringify(final)}`)
    const record = yield* runnable.getExecution(executionId)
    yield* Console.log(`Execution status: ${record._tag === "Some" ? record.value.status : "?"}`)
  })

const [mode, dir, executionId] = process.argv.slice(2)
if (mode === "answer") {
  Effect.runPromise(answer(executionId!).pipe(Effect.provide(FileStore.layer({ directory: dir! })))).catch((e) => {
    console.error(e)
    process.exit(1)
  })
} else {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), "effect-checkpoint-approval-example-"))
  Effect.runPromise(ask("post-1").pipe(Effect.provide(FileStore.layer({ directory }))))
    .then(() => {
      // The answer comes from another process, any time later.
      const out = execFileSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), "answer", directory, "post-1"], {
        encoding: "utf8"
      })
      process.stdout.write(out)
    })
    .catch((e) => {
      console.error(e)
      process.exitCode = 1
    })
    .finally(() => fs.rmSync(directory, { recursive: true, force: true }))
}
