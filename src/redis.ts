/**
 * effect-checkpoint's Redis store, as its own entry point so that users of the
 * other stores never load `ioredis`:
 *
 * ```ts
 * import { RedisStore } from "effect-checkpoint/redis"
 * ```
 *
 * `ioredis` (^5) is an optional peer dependency: install it to use this entry.
 *
 * @since 0.1.0
 */

/**
 * The Redis store layers: `RedisStore.layer`, `RedisStore.layerConfig`,
 * `RedisStore.layerClient`.
 *
 * @since 0.1.0
 */
export * as RedisStore from "./layers/Redis.js"
