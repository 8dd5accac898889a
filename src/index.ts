/**
 * effect-checkpoint: checkpointed graph execution for Effect.
 *
 * @since 0.1.0
 */

/**
 * The `Checkpoint` record, its id types, id generation and encoding.
 *
 * @since 0.1.0
 */
export * as Checkpoint from "./Checkpoint.js"

/**
 * Every error a store or the checkpoint encoding fails with.
 *
 * @since 0.1.0
 */
export * as CheckpointError from "./CheckpointError.js"

/**
 * The `CheckpointStore` service, its interface and `make`.
 *
 * @since 0.1.0
 */
export * as CheckpointStore from "./CheckpointStore.js"

/**
 * For store authors: the `Backend` a store implements and `make`.
 *
 * @since 0.2.0
 */
export * as CheckpointBackend from "./CheckpointBackend.js"

/**
 * Retention: `sweep` and a Layer that sweeps on a schedule.
 *
 * @since 0.2.0
 */
export * as Retention from "./Retention.js"

/**
 * Spans, metrics and logs.
 *
 * @since 0.2.0
 */
export * as Telemetry from "./Telemetry.js"

/**
 * Graphs of Effect steps, `compile` and `compileCheckpointable`.
 *
 * @since 0.1.0
 */
export * as Graph from "./Graph.js"

/**
 * The in-memory store layer.
 *
 * @since 0.1.0
 */
export * as MemoryStore from "./layers/Memory.js"
