/**
 * State evolution: checkpoints record the state's version; loading an older
 * one migrates it (encoded → encoded); a newer one, a missing migration, or a
 * field the Schema does not know is a CheckpointDecodeError — never silently
 * dropped data.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import type * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import { freshExecution } from "../src/testing.js"
import { engineStores } from "./fixtures/stores.js"

/** Version 1: a name. */
const V1 = Schema.Struct({ name: Schema.String, step: Schema.Number })
/** Version 2: first and last names. */
const V2 = Schema.Struct({ first: Schema.String, last: Schema.String, step: Schema.Number })
/** Version 3: a greeting count too. */
const V3 = Schema.Struct({ first: Schema.String, last: Schema.String, step: Schema.Number, greetings: Schema.Number })

const linear = <S extends { readonly step: number }, I>(graph: Graph.Graph<S, I>) =>
  graph.pipe(
    Graph.addNode("one", (s: S) => Effect.succeed({ step: s.step + 1 } as unknown as Graph.Update<S>)),
    Graph.addNode("two", (s: S) => Effect.succeed({ step: s.step + 1 } as unknown as Graph.Update<S>)),
    Graph.addEdge("one", "two"),
    Graph.addEdge("two", Graph.END),
    Graph.setEntryPoint("one")
  )

const v1Graph = linear(Graph.make(V1))
const v2Graph = linear(Graph.make(V2, {
  version: 2,
  migrations: {
    1: (s: { name: string; step: number }) => {
      const [first = "", ...rest] = s.name.split(" ")
      return { first, last: rest.join(" "), step: s.step }
    }
  }
}))
const v3Graph = linear(Graph.make(V3, {
  version: 3,
  migrations: {
    1: (s: { name: string; step: number }) => {
      const [first = "", ...rest] = s.name.split(" ")
      return { first, last: rest.join(" "), step: s.step }
    },
    2: (s: { first: string; last: string; step: number }) => ({ ...s, greetings: 0 })
  }
}))

describe.each(engineStores)("state evolution on the %s store", (_name, storeLayer) => {
  const test = (title: string, body: () => Effect.Effect<unknown, unknown, CheckpointStore.CheckpointStore>) =>
    it.live(title, () => body().pipe(Effect.provide(storeLayer)))

  test("checkpoints record the state version; an older checkpoint is migrated on load and on resume", () =>
    Effect.gen(function*() {
      const e = yield* freshExecution("evolve")
      const old = yield* Graph.compileCheckpointable(v1Graph, { maxCheckpoints: 0 })
      // A v1 run stopped after its first node (interruptAfter), to be resumed by v3 code.
      const paused = yield* Graph.compileCheckpointable(v1Graph, { interruptAfter: ["one"] })
      yield* Effect.flip(paused.invoke({ name: "Ada Lovelace", step: 0 }, { executionId: e }))
      const v1 = yield* old.listCheckpoints(e)
      expect(v1.map((c) => c.state)).toEqual([{ name: "Ada Lovelace", step: 0 }, { name: "Ada Lovelace", step: 1 }])

      const current = yield* Graph.compileCheckpointable(v3Graph, { maxCheckpoints: 0 })
      const loaded = yield* current.listCheckpoints(e)
      expect(loaded.map((c) => c.state)).toEqual([
        { first: "Ada", last: "Lovelace", step: 0, greetings: 0 },
        { first: "Ada", last: "Lovelace", step: 1, greetings: 0 }
      ])
      const out = yield* current.resume(e)
      expect(out).toEqual({ first: "Ada", last: "Lovelace", step: 2, greetings: 0 })
      // The new checkpoint is at version 3: old code refuses it, naming both versions.
      const newest = (yield* current.listCheckpoints(e)).at(-1)!
      const refused = yield* Effect.flip(old.loadCheckpoint(newest.id))
      expect(refused._tag).toBe("CheckpointDecodeError")
      expect(refused.message).toContain("version 3")
      expect(refused.message).toContain("version 1")
    }))

  test("a missing migration step fails with CheckpointDecodeError naming both versions", () =>
    Effect.gen(function*() {
      const e = yield* freshExecution("gap")
      const old = yield* Graph.compileCheckpointable(v1Graph)
      yield* old.invoke({ name: "Grace Hopper", step: 0 }, { executionId: e })
      const gappy = linear(Graph.make(V3, {
        version: 3,
        migrations: { 2: (s: { first: string; last: string; step: number }) => ({ ...s, greetings: 0 }) }
      }))
      const current = yield* Graph.compileCheckpointable(gappy)
      const error = yield* Effect.flip(current.listCheckpoints(e))
      expect(error._tag).toBe("CheckpointDecodeError")
      expect(error.message).toContain("version 1")
      expect(error.message).toContain("version 3")
      expect(error.message).toContain("no migration from version 1")
    }))

  test("a field the Schema does not know is an error, never dropped", () =>
    Effect.gen(function*() {
      const e = yield* freshExecution("unknown")
      const v2 = yield* Graph.compileCheckpointable(v2Graph)
      yield* v2.invoke({ first: "Alan", last: "Turing", step: 0 }, { executionId: e })
      // The same version number, but a Schema that lost a field: reading must not drop `last`.
      const narrowed = linear(Graph.make(Schema.Struct({ first: Schema.String, step: Schema.Number }), { version: 2 }))
      const reader = yield* Graph.compileCheckpointable(narrowed)
      const error = yield* Effect.flip(reader.listCheckpoints(e))
      expect(error._tag).toBe("CheckpointDecodeError")
      expect(error.message).toContain("last")
    }))

  test("a migration that throws fails with CheckpointDecodeError, not a defect", () =>
    Effect.gen(function*() {
      const e = yield* freshExecution("throws")
      const old = yield* Graph.compileCheckpointable(v1Graph)
      yield* old.invoke({ name: "X", step: 0 }, { executionId: e })
      const broken = linear(Graph.make(V2, {
        version: 2,
        migrations: {
          1: () => {
            throw new Error("bad migration")
          }
        }
      }))
      const error = yield* Effect.flip((yield* Graph.compileCheckpointable(broken)).listCheckpoints(e))
      expect(error._tag).toBe("CheckpointDecodeError")
      expect(error.message).toContain("bad migration")
    }))

  test("resume of a checkpoint whose next names a node the graph no longer has → GraphValidationError naming it", () =>
    Effect.gen(function*() {
      const e = yield* freshExecution("gone")
      const paused = yield* Graph.compileCheckpointable(v1Graph, { interruptAfter: ["one"] })
      yield* Effect.flip(paused.invoke({ name: "Y", step: 0 }, { executionId: e }))
      const renamed = Graph.make(V1).pipe(
        Graph.addNode("one", (s) => Effect.succeed({ step: s.step + 1 })),
        Graph.addNode("second", (s) => Effect.succeed({ step: s.step + 1 })),
        Graph.addEdge("one", "second"),
        Graph.addEdge("second", Graph.END),
        Graph.setEntryPoint("one")
      )
      const error = yield* Effect.flip((yield* Graph.compileCheckpointable(renamed)).resume(e))
      expect(error._tag).toBe("GraphValidationError")
      expect(error.message).toContain(`"two"`)
    }))
})

describe("compile checks migrations", () => {
  it.effect("a migration from a version at or past the current one is refused", () =>
    Effect.gen(function*() {
      const bad = linear(Graph.make(V2, { version: 2, migrations: { 2: (s: unknown) => s, 0: (s: unknown) => s } }))
      const error = yield* Effect.flip(Graph.compile(bad))
      expect(error.issues.join("\n")).toContain("migration is given from version 2")
      expect(error.issues.join("\n")).toContain("migration is given from version 0")
    }))
})
