/**
 * Watching a run: its typed event stream, its spans, its metrics and its
 * debug logs.
 *
 *   npx tsx examples/observability.ts
 *
 * Spans go to whatever `Tracer` is provided. This example prints them with a
 * small tracer of its own, so it needs nothing but `effect`; with
 * OpenTelemetry (`@effect/opentelemetry` 0.64 and the OTel SDK 2.x — the
 * Effect 3 line), the same spans go to any exporter:
 *
 *   import { NodeSdk } from "@effect/opentelemetry"
 *   import { ConsoleSpanExporter, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base"
 *   const Otel = NodeSdk.layer(() => ({
 *     resource: { serviceName: "my-app" },
 *     spanProcessor: new BatchSpanProcessor(new ConsoleSpanExporter())
 *   }))
 *   program.pipe(Effect.provide(Otel))
 */
import { Console, Effect, Logger, LogLevel, Metric, Option, Schema, Stream, Tracer } from "effect"
import { Graph, MemoryStore, Telemetry } from "effect-checkpoint"

// --- a graph: one step, two in parallel, one more --------------------------------

const State = Schema.Struct({ topic: Schema.String, facts: Schema.Array(Schema.String), summary: Schema.String })

const graph = Graph.make(State, { reducers: { facts: Graph.Reducer.concat } }).pipe(
  Graph.addNode("plan", (s) => Effect.succeed({ facts: [`topic: ${s.topic}`] })),
  Graph.addNode("search", () => Effect.as(Effect.sleep("20 millis"), { facts: ["found 3 papers"] })),
  Graph.addNode("lookup", () => Effect.as(Effect.sleep("10 millis"), { facts: ["found 1 definition"] })),
  Graph.addNode("write", (s) => Effect.succeed({ summary: s.facts.join("; ") })),
  Graph.addEdge("plan", ["search", "lookup"]),
  Graph.addEdge(["search", "lookup"], "write"),
  Graph.addEdge("write", Graph.END),
  Graph.setEntryPoint("plan")
)

// --- a tracer that prints each trace as a tree when its root span ends -----------

interface Printed {
  readonly name: string
  readonly parent: string | undefined
  readonly attributes: Map<string, unknown>
  readonly start: bigint
  end?: bigint
  failed?: boolean
}

const printingTracer = (): Tracer.Tracer => {
  const spans = new Map<string, Printed>()
  let next = 0
  const print = (rootId: string) => {
    const lines: Array<string> = []
    const walk = (id: string, depth: number) => {
      const s = spans.get(id)!
      const ms = s.end === undefined ? "?" : (Number(s.end - s.start) / 1e6).toFixed(1)
      const shown = ["checkpoint.node", "checkpoint.version", "checkpoint.bytes", "checkpoint.task_id"]
        .filter((k) => s.attributes.has(k))
        .map((k) => `${k.slice("checkpoint.".length)}=${String(s.attributes.get(k))}`)
      lines.push(`${"  ".repeat(depth)}${s.name}${shown.length > 0 ? ` [${shown.join(" ")}]` : ""} ${ms} ms${s.failed ? " FAILED" : ""}`)
      for (const [childId, child] of spans) if (child.parent === id) walk(childId, depth + 1)
    }
    walk(rootId, 0)
    for (const [id, s] of [...spans]) if (s.end !== undefined) spans.delete(id)
    return Console.log(lines.join("\n"))
  }
  return Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const spanId = `span-${++next}`
      const parentId = Option.match(parent, { onNone: () => undefined, onSome: (p) => p.spanId })
      const printed: Printed = { name, parent: parentId, attributes: new Map(), start: startTime }
      spans.set(spanId, printed)
      return {
        _tag: "Span",
        name,
        spanId,
        traceId: "trace",
        parent,
        context,
        status: { _tag: "Started", startTime },
        attributes: printed.attributes,
        links,
        sampled: true,
        kind,
        end: (endTime, exit) => {
          printed.end = endTime
          printed.failed = exit._tag === "Failure"
          if (parentId === undefined || !spans.has(parentId)) Effect.runSync(print(spanId))
        },
        attribute: (key, value) => {
          printed.attributes.set(key, value)
        },
        event: () => {},
        addLinks: () => {}
      }
    },
    context: (f) => f()
  })
}

// --- the program -------------------------------------------------------------------

const program = Effect.gen(function*() {
  const runnable = yield* Graph.compileCheckpointable(graph, { durability: "sync" })

  yield* Console.log("=== Events (runnable.stream) ===")
  yield* runnable.stream({ topic: "checkpoints", facts: [], summary: "" }, { executionId: "research-1" }).pipe(
    Stream.runForEach((event) => {
      switch (event._tag) {
        case "TaskStarted":
          return Console.log(`superstep ${event.superstep}: ${event.node} started (task ${event.taskId})`)
        case "TaskFinished":
          return Console.log(`superstep ${event.superstep}: ${event.node} finished: ${JSON.stringify(event.update)}`)
        case "CheckpointSaved":
          return Console.log(`checkpoint #${event.checkpoint.version} saved (${event.checkpoint.nodeName})`)
        case "Interrupted":
        case "Suspended":
          return Console.log(`stopped: ${event.error.message}`)
        case "Finished":
          return Console.log(`finished: ${event.state.summary}`)
      }
    })
  )

  yield* Console.log("\n=== Spans of a second run (a custom Tracer; OpenTelemetry works the same) ===")
  yield* runnable.invoke({ topic: "spans", facts: [], summary: "" }, { executionId: "research-2" }).pipe(
    Effect.withTracer(printingTracer())
  )

  yield* Console.log("\n=== Debug logs of one store operation ===")
  yield* runnable.saveCheckpoint("manual", { topic: "logs", facts: [], summary: "" }, { executionId: "research-3" }).pipe(
    Logger.withMinimumLogLevel(LogLevel.Debug)
  )

  yield* Console.log("\n=== Metrics (Telemetry, tagged backend=memory) ===")
  const memory = <T, I, O>(metric: Metric.Metric<T, I, O>) => metric.pipe(Metric.tagged("backend", "memory"))
  const saves = yield* Metric.value(memory(Telemetry.saves))
  const loads = yield* Metric.value(memory(Telemetry.loads))
  const latency = yield* Metric.value(memory(Telemetry.saveLatency))
  const bytes = yield* Metric.value(memory(Telemetry.checkpointBytes))
  yield* Console.log(`effect_checkpoint_saves_total{backend=memory}        ${saves.count}`)
  yield* Console.log(`effect_checkpoint_loads_total{backend=memory}        ${loads.count}`)
  yield* Console.log(`effect_checkpoint_save_duration_ms{backend=memory}   count=${latency.count}`)
  yield* Console.log(
    `effect_checkpoint_checkpoint_bytes{backend=memory}   count=${bytes.count} mean=${Math.round(bytes.sum / Math.max(1, bytes.count))}`
  )
})

Effect.runPromise(program.pipe(Effect.provide(MemoryStore.layer))).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
