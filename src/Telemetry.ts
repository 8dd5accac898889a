/**
 * What effect-checkpoint reports about itself: spans, metrics and logs.
 *
 * - **Spans** (`Effect.withSpan`, so any tracer you provide — e.g.
 *   `@effect/opentelemetry` — receives them): `checkpoint.run` →
 *   `checkpoint.node` (a single-task superstep) or `checkpoint.superstep` →
 *   `checkpoint.task`, and one span per store operation (`checkpoint.save`,
 *   `checkpoint.load`, …) under whatever span is current. A resume (and a
 *   worker's run of an execution) is one `checkpoint.resume` span holding its
 *   reads, its claim and the `checkpoint.run`. Spans carry ids, node names
 *   and sizes, never a state, metadata or a connection string. Attributes:
 *   `checkpoint.execution_id`, `checkpoint.node`, `checkpoint.version`,
 *   `checkpoint.id`, `checkpoint.backend`, `checkpoint.bytes`. A failure is
 *   recorded on its span.
 * - **Metrics** (`Metric`, tagged with `backend`): the ones below.
 * - **Logs**: `Effect.logDebug` with the same annotations (enable them with
 *   `Logger.withMinimumLogLevel(LogLevel.Debug)`); never `console`.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { Telemetry } from "effect-checkpoint"
 *
 * const saves = Metric.value(Telemetry.saves.pipe(Metric.tagged("backend", "postgres")))
 * ```
 *
 * @since 0.2.0
 */
import { Metric } from "effect"
import { keys } from "./internal/telemetry.js"

/**
 * Checkpoints saved (a `saveMany` of n counts n), by `backend`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const saves = Metric.fromMetricKey(keys.saves)

/**
 * Store reads (`load`, `list`, `latest`, `listWrites`, `getExecution`, `listExecutions`), by `backend`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const loads = Metric.fromMetricKey(keys.loads)

/**
 * Writes refused as conflicts, by `backend` and `reason`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const conflicts = Metric.fromMetricKey(keys.conflicts)

/**
 * Store operations that failed for another reason than a conflict, by
 * `backend`, `operation` and error `tag`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const errors = Metric.fromMetricKey(keys.errors)

/**
 * How long a save (`save`, `saveMany`) took, in milliseconds, by `backend`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const saveLatency = Metric.fromMetricKey(keys.saveLatency)

/**
 * The bytes (JSON characters of the checkpoint documents) each save wrote, by `backend`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const checkpointBytes = Metric.fromMetricKey(keys.checkpointBytes)
