/**
 * What effect-checkpoint reports: the span tree of a run (collected with a
 * test tracer), the metrics of its store operations, and debug logs.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, type Exit, HashSet, Logger, LogLevel, Metric, MetricState, Option, Schema, Stream, Tracer } from "effect"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import * as MemoryStore from "../src/layers/Memory.js"
import * as Telemetry from "../src/Telemetry.js"
import { freshExecution, mk } from "../src/testing.js"
import { engineStores } from "./fixtures/stores.js"

interface Recorded {
  readonly name: string
  readonly spanId: string
  readonly parentId: string | undefined
  readonly attributes: Map<string, unknown>
  status: "open" | "ok" | "error"
  exit?: Exit.Exit<unknown, unknown>
}

/** A tracer that keeps every span it was asked to make. */
const recordingTracer = () => {
  const spans: Array<Recorded> = []
  let next = 0
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const spanId = `s${++next}`
      const recorded: Recorded = {
        name,
        spanId,
        parentId: Option.match(parent, { onNone: () => undefined, onSome: (p) => p.spanId }),
        attributes: new Map(),
        status: "open"
      }
      spans.push(recorded)
      const span: Tracer.Span = {
        _tag: "Span",
        name,
        spanId,
        traceId: "t1",
        parent,
        context,
        status: { _tag: "Started", startTime },
        attributes: recorded.attributes,
        links,
        sampled: true,
        kind,
        end: (_endTime, exit) => {
          recorded.status = exit._tag === "Success" ? "ok" : "error"
          recorded.exit = exit
        },
        attribute: (key, value) => {
          recorded.attributes.set(key, value)
        },
        event: () => {},
        addLinks: () => {}
      }
      return span
    },
    context: (f) => f()
  })
  return { tracer, spans }
}

const State = Schema.Struct({ n: Schema.Number, notes: Schema.Array(Schema.String) })
const graph = Graph.make(State, { reducers: { notes: Graph.Reducer.concat } }).pipe(
  Graph.addNode("start", (s) => Effect.succeed({ n: s.n + 1 })),
  Graph.addNode("a", () => Effect.succeed({ notes: ["a"] })),
  Graph.addNode("b", () => Effect.succeed({ notes: ["b"] })),
  Graph.addEdge("start", ["a", "b"]),
  Graph.addEdge("a", Graph.END),
  Graph.addEdge("b", Graph.END),
  Graph.setEntryPoint("start")
)

describe("telemetry", () => {
  it.live("spans: run → superstep/node → task, store operations under the run, failures marked", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const e = yield* freshExecution("spans")
      yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(graph, { durability: "sync" })
        yield* runnable.invoke({ n: 0, notes: [] }, { executionId: e })
      }).pipe(Effect.withTracer(tracer))
      const byName = (name: string) => spans.filter((s) => s.name === name)
      const [run] = byName("checkpoint.run")
      expect(run).toBeDefined()
      expect(run!.attributes.get("checkpoint.execution_id")).toBe(e)
      expect(run!.status).toBe("ok")
      const node = byName("checkpoint.node")
      expect(node.map((s) => s.attributes.get("checkpoint.node"))).toEqual(["start"])
      expect(node[0]!.parentId).toBe(run!.spanId)
      const superstep = byName("checkpoint.superstep")
      expect(superstep.map((s) => s.attributes.get("checkpoint.node"))).toEqual(["a+b"])
      expect(superstep[0]!.parentId).toBe(run!.spanId)
      const tasks = byName("checkpoint.task")
      expect(tasks.map((s) => s.attributes.get("checkpoint.node")).sort()).toEqual(["a", "b"])
      for (const t of tasks) expect(t.parentId).toBe(superstep[0]!.spanId)
      // Store operations: checkpoint saves under the run, task writes under their task.
      const saves = spans.filter((s) => s.name === "checkpoint.save" || s.name === "checkpoint.saveMany")
      expect(saves.length).toBe(3)
      for (const s of saves) {
        expect(s.attributes.get("checkpoint.backend")).toBe("memory")
        expect(s.attributes.get("checkpoint.execution_id")).toBe(e)
        expect(typeof s.attributes.get("checkpoint.bytes")).toBe("number")
        expect(typeof s.attributes.get("checkpoint.id")).toBe("string")
        expect(typeof s.attributes.get("checkpoint.version")).toBe("number")
        expect(spans.find((x) => x.spanId === s.parentId)?.name).toMatch(/^checkpoint\.(run|node|superstep)$/)
      }
      const writes = byName("checkpoint.saveWrites")
      expect(writes.length).toBe(2)
      for (const w of writes) expect(tasks.map((t) => t.spanId)).toContain(w.parentId)
      // A failing store operation is marked on its span.
      const store = yield* CheckpointStore.CheckpointStore
      const cp = yield* mk(e, 1)
      yield* Effect.flip(store.save(cp)).pipe(Effect.withTracer(tracer))
      const failed = spans.filter((s) => s.name === "checkpoint.save").at(-1)!
      expect(failed.status).toBe("error")
    }).pipe(Effect.provide(MemoryStore.layer)))

  it.live("no tracer provided: no span is made (they would cost a save as much as the save)", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(graph)
      const seen: Array<string> = []
      yield* runnable.invoke({ n: 0, notes: [] }).pipe(
        Effect.tap(() => Effect.currentSpan.pipe(Effect.tap((s) => Effect.sync(() => seen.push(s.name))), Effect.ignore))
      )
      expect(seen).toEqual([])
    }).pipe(Effect.provide(MemoryStore.layer)))

  it.live("metrics: saves, checkpoint bytes, save latency, loads and conflicts by backend", () =>
    Effect.gen(function*() {
      const backend = (m: Metric.Metric.Counter<number>) => m.pipe(Metric.tagged("backend", "memory"))
      const before = {
        saves: (yield* Metric.value(backend(Telemetry.saves))).count,
        loads: (yield* Metric.value(backend(Telemetry.loads))).count,
        bytes: (yield* Metric.value(Telemetry.checkpointBytes.pipe(Metric.tagged("backend", "memory")))).count,
        latency: (yield* Metric.value(Telemetry.saveLatency.pipe(Metric.tagged("backend", "memory")))).count,
        conflicts: (yield* Metric.value(Telemetry.conflicts.pipe(Metric.tagged("backend", "memory"), Metric.tagged("reason", "VersionTaken")))).count
      }
      const store = yield* CheckpointStore.CheckpointStore
      const e = yield* freshExecution("metrics")
      const cps = yield* Effect.forEach([1, 2, 3], (v) => mk(e, v))
      yield* store.saveMany(cps)
      yield* store.save(yield* mk(e, 4))
      yield* store.list(e)
      yield* store.latest(e)
      yield* Effect.flip(store.save(yield* mk(e, 4)))
      const after = {
        saves: (yield* Metric.value(backend(Telemetry.saves))).count,
        loads: (yield* Metric.value(backend(Telemetry.loads))).count,
        bytes: (yield* Metric.value(Telemetry.checkpointBytes.pipe(Metric.tagged("backend", "memory")))).count,
        latency: (yield* Metric.value(Telemetry.saveLatency.pipe(Metric.tagged("backend", "memory")))).count,
        conflicts: (yield* Metric.value(Telemetry.conflicts.pipe(Metric.tagged("backend", "memory"), Metric.tagged("reason", "VersionTaken")))).count
      }
      expect(after.saves - before.saves).toBe(4)
      expect(after.loads - before.loads).toBe(2)
      expect(after.bytes - before.bytes).toBe(2)
      expect(after.latency - before.latency).toBe(2)
      expect(after.conflicts - before.conflicts).toBe(1)
      void MetricState
      void HashSet
    }).pipe(Effect.provide(MemoryStore.layer)))

  it.live("logs: a debug line per save, annotated, only when debug logging is on", () =>
    Effect.gen(function*() {
      const lines: Array<{ message: unknown; annotations: Record<string, unknown> }> = []
      const logger = Logger.make(({ annotations, message }) => {
        lines.push({ message, annotations: Object.fromEntries(annotations) })
      })
      const store = yield* CheckpointStore.CheckpointStore
      const e = yield* freshExecution("logs")
      yield* store.save(yield* mk(e, 1)).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      expect(lines).toEqual([])
      yield* store.save(yield* mk(e, 2)).pipe(
        Logger.withMinimumLogLevel(LogLevel.Debug),
        Effect.provide(Logger.replace(Logger.defaultLogger, logger))
      )
      expect(lines.length).toBe(1)
      expect(String(lines[0]!.message)).toContain("saved 1 checkpoint")
      expect(lines[0]!.annotations["checkpoint.execution_id"]).toBe(e)
      expect(lines[0]!.annotations["checkpoint.backend"]).toBe("memory")
      expect(lines[0]!.annotations["checkpoint.version"]).toBe(2)
    }).pipe(Effect.provide(MemoryStore.layer)))
})

// --- the span tree on every engine store ---------------------------------------

/** A value that must never reach a span: it is in the state, the metadata and a node's error. */
const SECRET = "s3cr3t-value-4711"

const Secretive = Schema.Struct({ token: Schema.String, log: Schema.Array(Schema.String), n: Schema.Number })
class Boom extends Schema.TaggedError<Boom>()("Boom", { detail: Schema.String }) {}

/** start → [a, b] → join: a single-task superstep, a two-task one, then one more. */
const fanOut = (join: () => Effect.Effect<{ readonly n: number }, Boom> = () => Effect.succeed({ n: 3 })) =>
  Graph.make(Secretive, { reducers: { log: Graph.Reducer.concat } }).pipe(
    Graph.addNode("start", () => Effect.succeed({ log: ["start"] })),
    Graph.addNode("a", (s) => Effect.succeed({ log: [`a:${s.token}`] })),
    Graph.addNode("b", () => Effect.succeed({ log: ["b"] })),
    Graph.addNode("join", join),
    Graph.addEdge("start", ["a", "b"]),
    Graph.addEdge(["a", "b"], "join"),
    Graph.addEdge("join", Graph.END),
    Graph.setEntryPoint("start")
  )

/** The attributes a span may carry: ids, names, numbers — never a value of the user's. */
const allowedAttributes = new Set([
  "checkpoint.execution_id",
  "checkpoint.id",
  "checkpoint.version",
  "checkpoint.node",
  "checkpoint.backend",
  "checkpoint.bytes",
  "checkpoint.count",
  "checkpoint.task_id",
  "checkpoint.superstep",
  "checkpoint.mode",
  "checkpoint.owner"
])

/** The tree of the spans, one line per span: indentation, name, and its node or the node of its checkpoint. */
const render = (spans: ReadonlyArray<Recorded>): Array<string> => {
  const lines: Array<string> = []
  const walk = (parentId: string | undefined, depth: number) => {
    for (const s of spans.filter((x) => x.parentId === parentId)) {
      // The driver's own spans (`sql.execute`, …) are left out of the tree.
      if (!s.name.startsWith("checkpoint.")) continue
      const node = s.attributes.get("checkpoint.node")
      lines.push(`${"  ".repeat(depth)}${s.name}${node === undefined ? "" : ` ${String(node)}`}${s.status === "error" ? " (error)" : ""}`)
      walk(s.spanId, depth + 1)
    }
  }
  walk(undefined, 0)
  return lines
}

const checkAttributes = (spans: ReadonlyArray<Recorded>, backend: string) => {
  for (const s of spans) {
    for (const [key, value] of s.attributes) {
      // Our spans carry only our attributes; no span (the driver's included) carries a user value.
      if (s.name.startsWith("checkpoint.")) expect(allowedAttributes.has(key), `${s.name}: ${key}`).toBe(true)
      expect(JSON.stringify(value) ?? "", `${s.name}: ${key}`).not.toContain(SECRET)
    }
    if (s.name.startsWith("checkpoint.") && s.attributes.has("checkpoint.backend")) {
      expect(s.attributes.get("checkpoint.backend")).toBe(backend)
    }
  }
}

describe.each(engineStores)("the span tree of a run on the %s store", (name, storeLayer) => {
  const backend = ({ PostgreSQL: "postgres" } as Record<string, string>)[name] ?? name.toLowerCase()
  const test = (title: string, body: () => Effect.Effect<unknown, unknown, CheckpointStore.CheckpointStore>) =>
    it.live(title, () => Effect.scoped(body()).pipe(Effect.provide(storeLayer)))
  const input = { token: SECRET, log: [], n: 0 }

  test("run → node / superstep → task → store operation; the stream makes the same tree; no user value in any span", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(fanOut(), { durability: "sync", maxCheckpoints: 0 })
      const expected = [
        "checkpoint.run",
        "  checkpoint.save __input__",
        "  checkpoint.node start",
        "  checkpoint.save start",
        "  checkpoint.superstep a+b",
        "    checkpoint.task a",
        "      checkpoint.saveWrites",
        "    checkpoint.task b",
        "      checkpoint.saveWrites",
        "  checkpoint.save a+b",
        "  checkpoint.node join",
        "  checkpoint.save join"
      ]
      for (const how of ["invoke", "stream"] as const) {
        const { spans, tracer } = recordingTracer()
        const e = yield* freshExecution(`tree-${how}`)
        const options = { executionId: e, metadata: { note: SECRET } }
        yield* (how === "invoke"
          ? Effect.asVoid(runnable.invoke(input, options))
          : Stream.runDrain(runnable.stream(input, options))).pipe(Effect.withTracer(tracer))
        expect(render(spans), how).toEqual(expected)
        for (const s of spans.filter((x) => x.name.startsWith("checkpoint."))) {
          expect(s.status, `${how}: ${s.name}`).toBe("ok")
          // Every span names the execution, or the checkpoint it is about.
          expect(s.attributes.get("checkpoint.execution_id") ?? s.attributes.get("checkpoint.id"), s.name).toBeDefined()
          if (s.attributes.has("checkpoint.execution_id")) expect(s.attributes.get("checkpoint.execution_id")).toBe(e)
        }
        // The checkpoint spans carry the checkpoint's own identity.
        const stored = yield* runnable.listCheckpoints(e)
        const saves = spans.filter((s) => s.name === "checkpoint.save")
        expect(saves.map((s) => [s.attributes.get("checkpoint.id"), s.attributes.get("checkpoint.version")])).toEqual(
          stored.map((c) => [c.id, c.version])
        )
        for (const s of saves) expect(s.attributes.get("checkpoint.bytes")).toBeGreaterThan(0)
        checkAttributes(spans, backend)
      }
    }))

  test("a resume: its reads and its claim are in the resume's span, with the run", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(fanOut(), { durability: "sync", maxCheckpoints: 0, interruptBefore: ["join"] })
      const e = yield* freshExecution("tree-resume")
      yield* Effect.flip(runnable.invoke(input, { executionId: e }))
      const { spans, tracer } = recordingTracer()
      yield* runnable.resume(e).pipe(Effect.withTracer(tracer))
      expect(render(spans)).toEqual([
        "checkpoint.resume",
        "  checkpoint.latest",
        "  checkpoint.listWrites",
        "  checkpoint.updateExecution",
        "  checkpoint.run",
        "    checkpoint.node join",
        "    checkpoint.save join"
      ])
      expect(spans[0]!.attributes.get("checkpoint.execution_id")).toBe(e)
      checkAttributes(spans, backend)
    }))

  test("a failure is recorded on the spans it crossed, with the typed error and no user value elsewhere", () =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(fanOut(() => Effect.fail(new Boom({ detail: SECRET }))), {
        durability: "sync",
        maxCheckpoints: 0
      })
      const e = yield* freshExecution("tree-failure")
      const { spans, tracer } = recordingTracer()
      const error = yield* Effect.flip(runnable.invoke(input, { executionId: e }).pipe(Effect.withTracer(tracer)))
      expect(error).toBeInstanceOf(Boom)
      const tree = render(spans)
      expect(tree[0]).toBe("checkpoint.run (error)")
      expect(tree).toContain("  checkpoint.node join (error)")
      // The failed run settles its record (failed) under the run span.
      expect(tree.at(-1)).toBe("  checkpoint.updateExecution")
      const failed = spans.filter((s) => s.status === "error")
      expect(failed.map((s) => s.name)).toEqual(["checkpoint.run", "checkpoint.node"])
      for (const s of failed) {
        expect(Option.getOrUndefined(Cause.failureOption((s.exit as Exit.Failure<unknown, unknown>).cause))).toBeInstanceOf(Boom)
      }
      checkAttributes(spans, backend)
      // A hostile id fails the resume's span (not the store's: nothing reached it).
      const { spans: hostile, tracer: tracer2 } = recordingTracer()
      yield* Effect.flip(runnable.resume("../etc").pipe(Effect.withTracer(tracer2)))
      expect(render(hostile)).toEqual(["checkpoint.resume (error)"])
    }))
})
