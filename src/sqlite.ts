/**
 * The SQLite checkpoint store, on `@effect/sql-sqlite-node` (an optional peer
 * dependency: install it to use this entry point).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { SqliteStore } from "effect-checkpoint/sqlite"
 *
 * program.pipe(Effect.provide(SqliteStore.layer({ filename: "./checkpoints.db" })))
 * ```
 *
 * @since 0.1.0
 */

/**
 * `SqliteStore.layer({ filename, tableName, synchronous, busyTimeout })`,
 * `SqliteStore.layerConfig` (`SQLITE_DB_PATH`) and `SqliteStore.layerClient`
 * over an existing `SqlClient`.
 *
 * @since 0.1.0
 */
export * as SqliteStore from "./layers/Sqlite.js"
