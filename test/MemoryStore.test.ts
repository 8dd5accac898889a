import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as CheckpointBackend from "../src/CheckpointBackend.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import { makeState, memoryBackend } from "../src/internal/memoryBackend.js"
import * as MemoryStore from "../src/layers/Memory.js"
import { conformance, freshExecution, mk, StoreTestKit } from "../src/testing.js"

/** A Memory store plus a kit that writes garbage over a stored document. */
const memoryUnderTest = Layer.effectContext(Effect.sync(() => {
  const state = makeState()
  return Context.make(CheckpointStore.CheckpointStore, CheckpointBackend.make(memoryBackend(state))).pipe(
    Context.add(StoreTestKit, {
      corrupt: (cp) => Effect.sync(() => state.documents.set(cp.id, `{"id":${JSON.stringify(cp.id)},"state":`)),
      blobStats: (executionId) =>
        Effect.sync(() => {
          const stored = [...(state.blobs.get(executionId)?.values() ?? [])]
          return { count: stored.length, bytes: stored.reduce((n, b) => n + b.json.length, 0) }
        })
    })
  )
}))

conformance("Memory", memoryUnderTest, { blobs: true })

describe("MemoryStore.layer", () => {
  it.effect("each build of the layer is a new, empty store", () =>
    Effect.gen(function*() {
      const e = yield* freshExecution()
      const cp = yield* mk(e, 1)
      yield* Effect.flatMap(CheckpointStore.CheckpointStore, (s) => s.save(cp)).pipe(Effect.provide(MemoryStore.layer))
      const listed = yield* Effect.flatMap(CheckpointStore.CheckpointStore, (s) => s.list(e)).pipe(
        Effect.provide(MemoryStore.layer)
      )
      expect(listed).toEqual([])
    }))

  it.effect("one provided layer is one shared store", () =>
    Effect.gen(function*() {
      const e = yield* freshExecution()
      const s = yield* CheckpointStore.CheckpointStore
      yield* s.save(yield* mk(e, 1))
      const again = yield* CheckpointStore.CheckpointStore
      expect((yield* again.list(e)).length).toBe(1)
    }).pipe(Effect.provide(MemoryStore.layer)))
})
