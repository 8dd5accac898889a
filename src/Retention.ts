/**
 * Retention: executions that were not updated for a while are removed —
 * their checkpoints, task writes and record — by one call (`sweep`) or by a
 * Layer that sweeps on a schedule. A leased, interrupted or sleeping execution
 * is kept unless `force` is set (a run or a human may still need it). Redis
 * stores with a `ttl` also expire keys by themselves (that native expiry does
 * not know about interrupts: see the Redis store's documentation).
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Retention } from "effect-checkpoint"
 * import { SqliteStore } from "effect-checkpoint/sqlite"
 *
 * // Remove executions idle for 7 days, every hour, in the background.
 * const Store = SqliteStore.layer({ filename: "./app.db" })
 * const App = Retention.layer({ ttl: "7 days", interval: "1 hour" }).pipe(Layer.provideMerge(Store))
 *
 * // Or once, now:
 * const removed = Retention.sweep({ ttl: "30 days" })
 * ```
 *
 * @since 0.2.0
 */
import { Clock, Duration, Effect, Layer, Option, Schedule } from "effect"
import { InvalidOption, type StoreError } from "./CheckpointError.js"
import * as CheckpointStore from "./CheckpointStore.js"

/**
 * Options of {@link sweep}.
 *
 * @since 0.2.0
 * @category models
 */
export interface SweepOptions {
  /**
   * Remove executions not updated for this long. Default: the store's own
   * `ttl` option (a store without one needs it here).
   */
  readonly ttl?: Duration.DurationInput | undefined
  /** Also remove leased, interrupted and sleeping executions. Default `false`. */
  readonly force?: boolean | undefined
}

/**
 * Removes the executions of the store in context that were not updated for
 * `ttl` (one indexed statement on SQL stores) and returns how many it
 * removed.
 *
 * @since 0.2.0
 * @category retention
 */
export const sweep = (options: SweepOptions = {}): Effect.Effect<number, StoreError, CheckpointStore.CheckpointStore> =>
  Effect.gen(function*() {
    const store = yield* CheckpointStore.CheckpointStore
    const ttl = options.ttl === undefined ? store.ttl : Option.map(Duration.decodeUnknown(options.ttl), (d) => d)
    const ms = Option.match(ttl, { onNone: () => Number.NaN, onSome: Duration.toMillis })
    if (!(Number.isFinite(ms) && ms > 0)) {
      return yield* new InvalidOption({
        option: "ttl",
        message: options.ttl === undefined
          ? "the store has no ttl option: give sweep a ttl"
          : `ttl must be a positive, finite duration, got ${String(options.ttl)}`
      })
    }
    const now = yield* Clock.currentTimeMillis
    return yield* store.sweep({ before: new Date(now - ms), force: options.force === true })
  })

/**
 * Options of {@link layer}.
 *
 * @since 0.2.0
 * @category models
 */
export interface LayerOptions extends SweepOptions {
  /** How often to sweep (default 1 hour). */
  readonly interval?: Duration.DurationInput | undefined
}

/**
 * Sweeps the store in context every `interval` while the layer is alive (the
 * first sweep at once). A failed sweep is logged as a warning and the next
 * one runs on schedule.
 *
 * @since 0.2.0
 * @category retention
 */
export const layer = (options: LayerOptions = {}): Layer.Layer<never, never, CheckpointStore.CheckpointStore> =>
  Layer.scopedDiscard(
    Effect.forkScoped(
      Effect.repeat(
        sweep(options).pipe(
          Effect.tap((removed) =>
            removed > 0 ? Effect.logDebug(`retention removed ${removed} execution(s)`) : Effect.void
          ),
          Effect.catchAll((error) => Effect.logWarning("retention sweep failed", error))
        ),
        Schedule.spaced(Duration.decode(options.interval ?? "1 hour"))
      )
    )
  )
