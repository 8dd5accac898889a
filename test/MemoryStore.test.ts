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

describe("MemoryStore: large values read while they are removed", () => {
  it.effect("a checkpoint removed with its blobs between its read and its blobs' is left out of list, not found by load, passed by latest", () =>
    Effect.gen(function*() {
      const state = makeState()
      const inner = memoryBackend(state)
      // Runs once, between a read of checkpoints and the read of their blobs.
      let meanwhile: Effect.Effect<unknown, unknown> | undefined
      const racing: CheckpointBackend.Backend = {
        ...inner,
        blobs: {
          load: (executionId, hashes) =>
            Effect.suspend(() => {
              const run = meanwhile ?? Effect.void
              meanwhile = undefined
              return Effect.zipRight(Effect.orDie(run), inner.blobs!.load(executionId, hashes))
            })
        }
      }
      const s = CheckpointBackend.make(racing)
      const e = yield* freshExecution()
      const cps = yield* Effect.forEach([1, 2, 3, 4, 5], (v) => mk(e, v, { state: { big: String(v).repeat(5000) } }))
      for (const cp of cps) yield* s.save(cp)
      meanwhile = inner.prune(e, 4)
      expect((yield* s.list(e)).map((cp) => cp.version)).toEqual([2, 3, 4, 5])
      meanwhile = inner.delete(cps[2]!.id)
      expect(yield* Effect.flip(s.load(cps[2]!.id))).toMatchObject({ _tag: "CheckpointNotFound", id: cps[2]!.id })
      meanwhile = inner.delete(cps[4]!.id)
      const latest = yield* s.latest(e)
      expect(latest._tag === "Some" && latest.value.version).toBe(4)
      expect((yield* s.load(cps[3]!.id)).state).toEqual({ big: "4".repeat(5000) })
      // A checkpoint that is still there with a blob gone is damaged: CheckpointDecodeError naming it.
      state.blobs.get(e)!.clear()
      expect(yield* Effect.flip(s.load(cps[3]!.id))).toMatchObject({ _tag: "CheckpointDecodeError", id: cps[3]!.id })
      expect(yield* Effect.flip(s.list(e))).toMatchObject({ _tag: "CheckpointDecodeError", id: cps[1]!.id })
    }))
})
