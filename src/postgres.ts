/**
 * The PostgreSQL checkpoint store, on `@effect/sql-pg` (an optional peer
 * dependency: install it to use this entry point).
 *
 * @example
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { PostgresStore } from "effect-checkpoint/postgres"
 *
 * program.pipe(Effect.provide(PostgresStore.layer({ url: Redacted.make("postgres://localhost:5432/app") })))
 * ```
 *
 * @since 0.1.0
 */

/**
 * `PostgresStore.layer({ url, tableName, schema, synchronousCommit, … })`,
 * `PostgresStore.layerConfig` (`POSTGRES_CONN_STRING`) and
 * `PostgresStore.layerClient` over an existing `SqlClient` (one shared pool).
 *
 * @since 0.1.0
 */
export * as PostgresStore from "./layers/Postgres.js"
