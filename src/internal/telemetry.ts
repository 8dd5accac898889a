/**
 * The metric keys behind `Telemetry`, and the per-backend metrics the store
 * kit updates on every operation. A metric tagged through `Metric.tagged`
 * resolves its registry entry on every update; keys with the backend's tag
 * built in resolve it once, which keeps a save's bookkeeping under a
 * microsecond.
 *
 * @internal
 */
import { Effect, Metric, MetricBoundaries, MetricKey, MetricLabel, type Tracer } from "effect"

export const keys = {
  saves: MetricKey.counter("effect_checkpoint_saves_total", { description: "Checkpoints saved", incremental: true }),
  loads: MetricKey.counter("effect_checkpoint_loads_total", { description: "Store reads", incremental: true }),
  conflicts: MetricKey.counter("effect_checkpoint_conflicts_total", {
    description: "Writes refused as conflicts",
    incremental: true
  }),
  errors: MetricKey.counter("effect_checkpoint_errors_total", { description: "Store operations that failed", incremental: true }),
  saveLatency: MetricKey.histogram(
    "effect_checkpoint_save_duration_ms",
    MetricBoundaries.fromIterable([0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]),
    "Save latency in milliseconds"
  ),
  checkpointBytes: MetricKey.histogram(
    "effect_checkpoint_checkpoint_bytes",
    MetricBoundaries.exponential({ start: 64, factor: 2, count: 20 }),
    "Bytes (JSON characters) written by a save"
  )
}

/** The metrics of one backend, with its `backend` tag in their keys. */
export const forBackend = (backend: string) => {
  const tag = [MetricLabel.make("backend", backend)]
  const tagged = <T extends Parameters<typeof MetricKey.taggedWithLabels>[0]>(key: T) =>
    Metric.fromMetricKey(MetricKey.taggedWithLabels(key, tag) as typeof key)
  return {
    saves: tagged(keys.saves),
    loads: tagged(keys.loads),
    saveLatency: tagged(keys.saveLatency),
    checkpointBytes: tagged(keys.checkpointBytes)
  }
}

/** Effect's built-in tracer (what runs when none is provided), read once. */
let builtIn: Tracer.Tracer | undefined
const builtInTracer = (): Tracer.Tracer => builtIn ??= Effect.runSync(Effect.tracer)

/**
 * `effect` in a span named `name` — when a tracer other than Effect's
 * built-in one is provided (e.g. `@effect/opentelemetry`'s). Without one,
 * spans would be in-memory objects nobody reads, and a span on every save
 * costs as much as the rest of a Memory save: they are skipped.
 */
export const span = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  name: string,
  attributes: () => Record<string, unknown>,
  kind: Tracer.SpanKind = "internal"
): Effect.Effect<A, E, R> =>
  Effect.tracerWith((tracer) =>
    tracer === builtInTracer()
      ? effect
      : Effect.withSpan(effect, name, { kind, captureStackTrace: false, attributes: attributes() })
  )
