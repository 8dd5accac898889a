/**
 * A store written outside the library (examples/json-file-store.ts), with
 * nothing but the public entry points — `effect-checkpoint` and
 * `effect-checkpoint/testing` — passes the published conformance suite, runs
 * graphs, and survives a restart: the store-author kit works from the
 * outside. (Under vitest those entry points map to src/, see vitest.config.ts;
 * examples.test.ts runs the same store from the built package.)
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Schema } from "effect"
import { CheckpointBackend, CheckpointStore, Graph } from "effect-checkpoint"
import { conformance, freshExecution, mk, StoreTestKit } from "effect-checkpoint/testing"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as JsonFileStore from "../examples/json-file-store.js"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-checkpoint-third-party-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** A new store in a file of its own, and a kit that writes garbage over a stored document. */
const underTest = Layer.unwrapScoped(Effect.gen(function*() {
  const dir = yield* tempDir
  const { backend, data } = yield* JsonFileStore.open(path.join(dir, "store.json"))
  return Layer.succeedContext(
    Context.make(CheckpointStore.CheckpointStore, CheckpointBackend.make(backend)).pipe(
      Context.add(StoreTestKit, {
        corrupt: (cp) =>
          Effect.sync(() => {
            data.checkpoints.get(cp.id)!.document = `{"id":${JSON.stringify(cp.id)},"state":`
          })
      })
    )
  )
}))

conformance("JsonFile (a third-party store)", underTest)

const State = Schema.Struct({ n: Schema.Number })
const graph = Graph.make(State).pipe(
  Graph.addNode("a", (s) => Effect.succeed({ n: s.n + 1 })),
  Graph.addNode("b", (s) => Effect.succeed({ n: s.n * 10 })),
  Graph.addEdge("a", "b"),
  Graph.addEdge("b", Graph.END),
  Graph.setEntryPoint("a")
)

describe("a third-party store in use", () => {
  it.scopedLive("a run paused in one process is resumed from the same file by the next (a restart)", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "store.json")
      const e = yield* freshExecution("third-party")
      const paused = yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(graph, { interruptBefore: ["b"] })
        return yield* Effect.flip(runnable.invoke({ n: 1 }, { executionId: e }))
      }).pipe(Effect.provide(JsonFileStore.layer({ file })))
      expect(paused).toMatchObject({ _tag: "GraphInterrupted", node: "b" })
      // A new layer: the store is read back from the file.
      const [final, record, nodes] = yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(graph)
        const final = yield* runnable.resume(e)
        const record = yield* runnable.getExecution(e)
        const nodes = (yield* runnable.listCheckpoints(e)).map((c) => c.nodeName)
        return [final, record, nodes] as const
      }).pipe(Effect.provide(JsonFileStore.layer({ file })))
      expect(final).toEqual({ n: 20 })
      expect(Option.map(record, (r) => r.status)).toEqual(Option.some("done"))
      expect(nodes).toEqual(["__input__", "a", "b"])
    }))

  it.scopedLive("a write the file refuses fails typed and changes nothing (all or nothing)", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "store.json")
      const e = yield* freshExecution("third-party-fail")
      yield* Effect.gen(function*() {
        const store = yield* CheckpointStore.CheckpointStore
        yield* store.save(yield* mk(e, 1))
        // The file's directory becomes a file: the next write cannot land.
        fs.rmSync(dir, { recursive: true, force: true })
        fs.writeFileSync(dir, "not a directory")
        const error = yield* Effect.flip(store.save(yield* mk(e, 2)))
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "json-file", operation: "insert" })
        expect((yield* store.list(e)).map((c) => c.version)).toEqual([1])
        expect(Option.map(yield* store.getExecution(e), (r) => r.latestVersion)).toEqual(Option.some(1))
        fs.rmSync(dir, { force: true })
      }).pipe(Effect.provide(JsonFileStore.layer({ file })))
    }))

  it.scopedLive("a file that is not a store fails the layer with a typed error", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "store.json")
      fs.writeFileSync(file, "{ not json")
      const error = yield* Effect.flip(Layer.build(JsonFileStore.layer({ file })))
      expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "json-file", operation: "open" })
    }))
})
