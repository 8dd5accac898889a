/**
 * What a crash can lose in `async` durability: a process is SIGKILLed while
 * node k of n runs (synchronous nodes, which never let a save fiber run);
 * every checkpoint made more than `maxSaveLag` before node k started has
 * landed, so a resume reruns at most node k-1 and node k.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Graph from "../src/Graph.js"
import * as FileStore from "../src/layers/File.js"

const FIXTURE = path.join(import.meta.dirname, "fixtures", "crash-runner.ts")
const N = 6
const BUSY_MS = 250

const waitFor = (file: string, timeoutMs: number) =>
  Effect.async<void, Error>((resume) => {
    const started = Date.now()
    const timer = setInterval(() => {
      if (fs.existsSync(file)) {
        clearInterval(timer)
        resume(Effect.void)
      } else if (Date.now() - started > timeoutMs) {
        clearInterval(timer)
        resume(Effect.fail(new Error(`${file} did not appear`)))
      }
    }, 5)
    return Effect.sync(() => clearInterval(timer))
  })

const State = Schema.Struct({ done: Schema.Array(Schema.Number) })

describe("a crash in async durability", () => {
  for (const k of [2, 4, 6]) {
    it.live(`killed in node ${k} of ${N}: every checkpoint older than the lag bound landed; resume reruns at most one finished node`, () =>
      Effect.gen(function*() {
        const root = fs.mkdtempSync(path.join(os.tmpdir(), "effect-checkpoint-crash-"))
        try {
          const storeDir = path.join(root, "store")
          const markers = path.join(root, "markers")
          fs.mkdirSync(markers)
          const executionId = `crash-${k}-${process.pid}`
          const child = spawn(process.execPath, ["--import", "tsx", FIXTURE, storeDir, markers, executionId, String(N), String(BUSY_MS)], {
            stdio: ["ignore", "ignore", "pipe"]
          })
          yield* waitFor(path.join(markers, `started-${k}`), 30_000)
          // Into node k's synchronous work, then the kill.
          yield* Effect.sleep(`${BUSY_MS / 2} millis`)
          child.kill("SIGKILL")
          yield* Effect.async<void>((resume) => {
            if (child.exitCode !== null || child.signalCode !== null) resume(Effect.void)
            else child.once("exit", () => resume(Effect.void))
          })
          expect(fs.existsSync(path.join(markers, "finished"))).toBe(false)
          yield* Effect.gen(function*() {
            let ran: Array<number> = []
            const graph = Array.from({ length: N }, (_, i) => i + 1).reduce(
              (g, i) =>
                g.pipe(
                  Graph.addNode(`n${i}`, (s) => Effect.sync(() => {
                    ran.push(i)
                    return { done: [...s.done, i] }
                  })),
                  Graph.addEdge(`n${i}`, i === N ? Graph.END : `n${i + 1}`)
                ),
              Graph.make(State) as Graph.Graph<typeof State.Type, typeof State.Encoded>
            ).pipe(Graph.setEntryPoint("n1"))
            const runnable = yield* Graph.compileCheckpointable(graph, { maxCheckpoints: 0 })
            const saved = yield* runnable.listCheckpoints(executionId)
            // Versions 1 (input) … k-1 (after node k-2) were made a node's time (≫ the 50 ms lag) before node k started.
            expect(saved.length).toBeGreaterThanOrEqual(k - 1)
            expect(saved.map((c) => c.version)).toEqual(Array.from({ length: saved.length }, (_, i) => i + 1))
            ran = []
            // The killed run's lease would block a resume until it expires: take over (the process is gone).
            const out = yield* runnable.resume(executionId, { takeOver: true })
            expect(out.done).toEqual(Array.from({ length: N }, (_, i) => i + 1))
            // What reran: node k (it was running) and at most node k-1 (its checkpoint may have been in flight).
            expect(ran[ran.length - 1]).toBe(N)
            expect(ran[0]).toBeGreaterThanOrEqual(k - 1)
          }).pipe(Effect.provide(FileStore.layer({ directory: storeDir })))
        } finally {
          fs.rmSync(root, { recursive: true, force: true })
        }
      }), 60_000)
  }
})
