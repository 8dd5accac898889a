/**
 * The PostgreSQL checkpoint store, on `@effect/sql-pg`: the production store.
 *
 * A store named `t` (default `checkpoints`) keeps four tables in its schema:
 * `t` (one row per checkpoint; `state`, `metadata`, `next` and `runtime` as
 * JSONB, `timestamp` as TIMESTAMPTZ, `UNIQUE (execution_id, version)`),
 * `t_executions` (one record per execution: status, lease, attempts,
 * failure, wake-up time; indexed by update time and by status),
 * `t_writes` (task writes) and `t_blobs` (large values, stored once per
 * execution). Their schema version is recorded in
 * `effect_checkpoint_migrations`; tables written by 0.1.0 are migrated when
 * the layer is built (their executions get records from their newest
 * checkpoints: `interrupted` when it has nodes to run, so no worker picks it
 * up by surprise — `resume` it — else `done`), under an advisory lock, so any
 * number of processes may build the layer at once.
 *
 * Every change is one transaction holding a transaction-scoped advisory lock
 * per execution; `claim` takes due executions with `FOR UPDATE SKIP LOCKED`.
 * Lease and record times come from the database's clock.
 *
 * JSONB keeps JSON values, not JSON text: objects come back equal, but with
 * their keys in JSONB's order, and JSONB refuses the NUL character
 * (`\u0000`) and unpaired surrogates in strings: a checkpoint or task write
 * holding one fails with `CheckpointEncodeError` and nothing is written.
 *
 * @since 0.1.0
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Cause, Config, type ConfigError, Duration, Effect, Either, Layer, Option, Redacted } from "effect"
import * as CheckpointBackend from "../CheckpointBackend.js"
import type { CheckpointStoreError, InvalidIdentifier, InvalidOption } from "../CheckpointError.js"
import * as CheckpointStore from "../CheckpointStore.js"
import { checkSqlName, invalid } from "../internal/identifier.js"
import { sqlBackend } from "../internal/sql/backend.js"
import { queryTimeoutOption } from "../internal/sql/pgDeadline.js"
import {
  BACKEND,
  describe,
  ensureSchema,
  pgDialect,
  secretsOf,
  secretsOfClient,
  withConnection
} from "../internal/sql/postgres.js"
import * as Schema from "../internal/sql/schema.js"
import { storeError } from "../internal/storeError.js"

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/**
 * `synchronous_commit` for the store's saves. `"on"` (the default) makes a
 * save return only after its commit is flushed to disk. `"off"` lets a save
 * return before the flush, and a crash of the PostgreSQL server or its
 * machine (not of your process) may lose the saves of the last
 * `3 × wal_writer_delay` (600 ms by default) — never corrupting the tables or
 * keeping half of a `saveMany`. It applies to the store's saves only, not to
 * the connection, so a shared pool keeps its own setting, and not inside a
 * transaction of yours (see {@link layerClient}).
 *
 * @since 0.1.0
 * @category models
 */
export type SynchronousCommit = "on" | "off"

/**
 * Options of {@link layerClient} and {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientOptions {
  /**
   * The table that holds the checkpoints (default `"checkpoints"`; the other
   * tables are named after it): `[A-Za-z_][A-Za-z0-9_]{0,62}`, quoted, so
   * case is kept.
   */
  readonly tableName?: string | undefined
  /**
   * The PostgreSQL schema of the tables (created if missing); default: the
   * first schema of the connection's `search_path` (usually `public`).
   * Same rules as `tableName`.
   */
  readonly schema?: string | undefined
  /** `synchronous_commit` for saves (default `"on"`); see {@link SynchronousCommit}. */
  readonly synchronousCommit?: SynchronousCommit | undefined
  /** Executions not updated for this long are removed by `Retention.sweep` (see `Retention`); default none. */
  readonly ttl?: Duration.DurationInput | undefined
  /** Large state values stored once per execution (see `CheckpointBackend.MakeOptions`); `false`: whole states. */
  readonly largeValues?: CheckpointBackend.MakeOptions["largeValues"]
  /**
   * How long a statement may go without an answer from PostgreSQL (default
   * 10 seconds; a positive, finite duration, else the layer fails with
   * `InvalidOption` before connecting). When it passes — a network partition,
   * a frozen server, a proxy that stalls — the operation fails with
   * `CheckpointStoreError` and its connection is closed, never handed out
   * again. Each operation runs on a connection of its own, and an interrupt
   * (`Effect.timeout`, `Fiber.interrupt`) also closes the connection of the
   * operation it stops. It bounds the wait for a connection from the pool too
   * when the pool has no `connectTimeout` of its own ({@link layerClient}).
   *
   * A statement that is slow rather than unanswered is stopped the same way,
   * on the client's side: set it above your slowest expected operation (a
   * large `saveMany` runs one `INSERT` per 500 rows). The server may
   * still finish what it was doing: a change whose `COMMIT` had reached it
   * is then written.
   */
  readonly queryTimeout?: Duration.DurationInput | undefined
  /**
   * Run the store's statements as named prepared statements (default `true`):
   * PostgreSQL parses and plans each once per connection instead of on every
   * call. Set `false` behind a
   * connection pooler that cannot keep prepared statements across
   * transactions (PgBouncer in transaction mode before 1.21).
   *
   * @since 0.2.0
   */
  readonly preparedStatements?: boolean | undefined
}

/**
 * Options of {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends ClientOptions {
  /**
   * The connection string, e.g. `postgres://user:password@host:5432/db`.
   * Pass it as `Redacted` to keep it out of logs; errors never contain its
   * password either way. Server settings go in its `options` parameter, e.g.
   * `?options=-c%20statement_timeout%3D5000`.
   */
  readonly url: string | Redacted.Redacted<string>
  /** The `application_name` of the store's connections (default `"effect-checkpoint"`). */
  readonly applicationName?: string | undefined
  /** How long opening a connection may take — when the layer is built, and when the pool opens a new one (default 5 seconds). */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** The size of the connection pool (default 10). */
  readonly maxConnections?: number | undefined
}

const DEFAULT_APPLICATION_NAME = "effect-checkpoint"
const DEFAULT_CONNECT_TIMEOUT: Duration.DurationInput = "5 seconds"

/**
 * The table that records each store's schema version: one row per
 * checkpoint table (`table_name`, `version`, `migrated_at`), in the same
 * PostgreSQL schema as the store's tables. It cannot be used as a
 * `tableName`.
 *
 * @since 0.1.0
 * @category schema
 */
export const migrationsTable: string = Schema.migrationsTable

/**
 * The schema version this release creates and understands (1: 0.1.0's
 * checkpoint table; 2: records, task writes and blobs).
 *
 * @since 0.1.0
 * @category schema
 */
export const schemaVersion: number = Schema.schemaVersion

/**
 * The names of the tables of a store whose checkpoint table is `tableName`
 * (a name longer than 40 characters gives the other tables a shortened base
 * with a hash: PostgreSQL truncates names past 63 bytes).
 *
 * @since 0.2.0
 * @category schema
 */
export const tableNames: (tableName?: string) => Schema.TableNames = Schema.tableNames

/** Checks the table and schema names; the error for the first bad one. */
const checkNames = (options: ClientOptions): InvalidIdentifier | undefined => {
  const tableName = options.tableName ?? Schema.defaultTable
  const tableError = checkSqlName("tableName", tableName)
  if (tableError !== undefined) return tableError
  if (tableName === migrationsTable) return invalid("tableName", tableName, "is the name of the schema-version table")
  return options.schema === undefined ? undefined : checkSqlName("schemaName", options.schema)
}

/**
 * Builds a PostgreSQL store on the `SqlClient` in context (which must be a
 * PostgreSQL client, e.g. `PgClient.layer`): creates or migrates its tables
 * (see {@link migrationsTable}) and returns the store. The client's name
 * transforms are not applied to the store's statements or rows. Fails with
 * `InvalidOption` for a bad `queryTimeout`; every operation, the schema check
 * included, is bounded by it (see {@link ClientOptions}).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: ClientOptions = {}
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier | InvalidOption, SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (client) => {
    // A pool of yours: waiting for one of its connections is bounded by its connectTimeout, else by queryTimeout.
    const connectTimeout = PgClient.TypeId in client ? (client as PgClient.PgClient).config.connectTimeout : undefined
    const acquireTimeout = connectTimeout === undefined ? undefined : Option.getOrUndefined(Duration.decodeUnknown(connectTimeout))
    return makeWith(client, options, secretsOfClient(client), false, acquireTimeout)
  })

/**
 * The store on `client`. `ownClient`: the client is the store's own ({@link layer}), so a
 * `TransactionConnection` in the caller's context is another client's and must not be used.
 */
const makeWith = (
  client: SqlClient.SqlClient,
  options: ClientOptions,
  secrets: ReadonlyArray<string>,
  ownClient: boolean,
  acquireTimeout: Duration.Duration | undefined
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier | InvalidOption> =>
  Effect.gen(function*() {
    const nameError = checkNames(options)
    if (nameError !== undefined) return yield* Effect.fail(nameError)
    const queryTimeout = yield* queryTimeoutOption(options.queryTimeout)
    const isPg = client.onDialectOrElse({ pg: () => true, orElse: () => false })
    if (!isPg) {
      return yield* Effect.fail(
        storeError(BACKEND, "connect", new Error("PostgresStore needs a PostgreSQL SqlClient (e.g. PgClient.layer)"))
      )
    }
    const sql = client.withoutTransforms()
    const tables = Schema.tablesFor(options.tableName ?? Schema.defaultTable, options.schema)
    // The pool bounds the wait for a connection itself when it has a connectTimeout (always, for the store's own).
    const connection = {
      sql,
      ownClient,
      queryTimeout,
      acquireTimeout: acquireTimeout ?? queryTimeout,
      poolBoundsWait: acquireTimeout !== undefined
    }
    const dialect = pgDialect({
      ...connection,
      tables,
      secrets,
      asyncCommit: options.synchronousCommit === "off",
      prepare: options.preparedStatements !== false
    })
    // One bounded operation, as every other.
    yield* withConnection(connection)(ensureSchema(sql, dialect, options.schema, tables)).pipe(
      Effect.catchTag("SqlError", (e) => Effect.fail(storeError(BACKEND, "schema", describe(e), secrets)))
    )
    return CheckpointBackend.make(sqlBackend(dialect, tables), { ttl: options.ttl, largeValues: options.largeValues })
  })

// -----------------------------------------------------------------------------
// Layers
// -----------------------------------------------------------------------------

/**
 * A PostgreSQL store over the `SqlClient` your app already has (a
 * `PgClient.layer`), so the store shares its pool. The table is created or
 * migrated when the layer is built; the client is yours to close.
 *
 * A save made inside your `sql.withTransaction(…)` joins that transaction: it
 * commits or rolls back with your own writes (and `synchronousCommit: "off"`
 * then leaves the transaction's commit as it is). The client's name
 * transforms (`transformQueryNames`, `transformResultNames`) never apply to
 * the store's statements or to the checkpoints' JSON.
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { Layer, Redacted } from "effect"
 * import { PostgresStore } from "effect-checkpoint/postgres"
 *
 * const Pg = PgClient.layer({ url: Redacted.make("postgres://app:secret@db:5432/app") })
 * const Store = PostgresStore.layerClient({ tableName: "checkpoints" })
 * const AppLayer = Layer.merge(Pg, Store.pipe(Layer.provide(Pg)))  // one pool for both
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerClient = (
  options: ClientOptions = {}
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier | InvalidOption, SqlClient.SqlClient> =>
  Layer.effect(CheckpointStore.CheckpointStore, make(options))

/**
 * A PostgreSQL store with its own connection pool (the reference's
 * `NewPostgresCheckpointStore` + `InitSchema`; `Close` is the end of the
 * layer's scope). Building fails with `InvalidIdentifier` for a bad table or
 * schema name and `InvalidOption` for a bad `queryTimeout` (both before
 * connecting), and with `CheckpointStoreError` when the server cannot be
 * reached within `connectTimeout` or stops answering (`queryTimeout`).
 *
 * Its operations always run on its own pool: one made inside a transaction of
 * another client of yours (`sql.withTransaction`) neither joins nor waits for
 * it. To save inside your transaction, use {@link layerClient} on that client.
 *
 * @example
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { PostgresStore } from "effect-checkpoint/postgres"
 *
 * program.pipe(Effect.provide(PostgresStore.layer({
 *   url: Redacted.make("postgres://app:secret@db:5432/app"),
 *   tableName: "checkpoints"
 * })))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier | InvalidOption> => {
  const nameError = checkNames(options)
  if (nameError !== undefined) return Layer.fail(nameError)
  const queryTimeout = queryTimeoutOption(options.queryTimeout)
  if (Either.isLeft(queryTimeout)) return Layer.fail(queryTimeout.left)
  const connectTimeout = options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT
  const url = Redacted.isRedacted(options.url) ? options.url : Redacted.make(options.url)
  const secrets = secretsOf(Redacted.value(url))
  const client = PgClient.layer({
    url,
    applicationName: options.applicationName ?? DEFAULT_APPLICATION_NAME,
    connectTimeout,
    maxConnections: options.maxConnections
  }).pipe(
    Layer.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Layer.failCause(Cause.stripFailures(cause))
        : Layer.fail(storeError(BACKEND, "connect", describe(Cause.squash(cause)), secrets))
    )
  )
  return Layer.effect(
    CheckpointStore.CheckpointStore,
    Effect.flatMap(
      SqlClient.SqlClient,
      (sql) => makeWith(sql, options, secrets, true, Option.getOrUndefined(Duration.decodeUnknown(connectTimeout)))
    )
  ).pipe(Layer.provide(client))
}

/**
 * {@link layer} with its options read from a `Config`: a missing or malformed
 * value fails the layer with the `ConfigError` itself.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { PostgresStore } from "effect-checkpoint/postgres"
 *
 * const StoreLive = PostgresStore.layerConfigWith(Config.all({ url: Config.redacted("DATABASE_URL") }))
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfigWith = (
  config: Config.Config<Options>
): Layer.Layer<
  CheckpointStore.CheckpointStore,
  CheckpointStoreError | InvalidIdentifier | InvalidOption | ConfigError.ConfigError
> => Layer.unwrapEffect(Effect.map(config, layer))

/**
 * {@link layer} with its connection string read from `Config`:
 * `POSTGRES_CONN_STRING` (as a `Redacted` value), table `checkpoints`. A
 * missing variable fails the layer with the `ConfigError` itself. For other
 * names or options, see {@link layerConfigWith}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<
  CheckpointStore.CheckpointStore,
  CheckpointStoreError | InvalidIdentifier | InvalidOption | ConfigError.ConfigError
> = layerConfigWith(Config.all({ url: Config.redacted("POSTGRES_CONN_STRING") }))
