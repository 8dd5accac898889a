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
