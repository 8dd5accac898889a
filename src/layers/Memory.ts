/**
 * The in-memory checkpoint store: for tests, demos and short-lived processes.
 * Checkpoints live as encoded JSON text, so a loaded or saved object can be
 * mutated freely without changing what the store holds.
 *
 * @since 0.1.0
 */
import { type Duration, Effect, Layer } from "effect"
import * as CheckpointBackend from "../CheckpointBackend.js"
import * as CheckpointStore from "../CheckpointStore.js"
import { makeState, memoryBackend } from "../internal/memoryBackend.js"

/**
 * A new, empty in-memory store.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<CheckpointStore.Service> = Effect.sync(() =>
  CheckpointBackend.make(memoryBackend(makeState()))
)

/**
 * Options of {@link layerWith}.
 *
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** Retention: executions not updated for this long are removed by `Retention.sweep` / `Retention.layer`. */
  readonly ttl?: Duration.DurationInput | undefined
}

/**
 * {@link layer} with options.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerWith = (options: Options): Layer.Layer<CheckpointStore.CheckpointStore> =>
  Layer.effect(
    CheckpointStore.CheckpointStore,
    Effect.sync(() => CheckpointBackend.make(memoryBackend(makeState()), options))
  )

/**
 * A layer with a new, empty in-memory store (the reference's
 * `NewMemoryCheckpointStore()`). Each time the layer is built, the store is
 * new: provide it once at the top of an app to share it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { MemoryStore } from "effect-checkpoint"
 * program.pipe(Effect.provide(MemoryStore.layer))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<CheckpointStore.CheckpointStore> = Layer.effect(CheckpointStore.CheckpointStore, make)
