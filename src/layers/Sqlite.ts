/**
 * The SQLite checkpoint store: an embedded database file, on better-sqlite3
 * (`layer`, its own connection) or on an `@effect/sql-sqlite-node`
 * `SqliteClient` of yours (`layerClient`). What a
 * single-machine deployment picks: no server, checkpoints survive the
 * process, several processes can share one file.
 *
 * A store named `t` (`checkpoints` unless `tableName` says otherwise) keeps
 * four tables: `t` (one row per checkpoint: the columns of 0.1.0 plus
 * `runtime` and `refs`), `t_executions` (one record per execution: status,
 * lease, attempts, failure, wake-up time), `t_writes` (task writes) and
 * `t_blobs` (large values, stored once per execution). Their schema version
 * is recorded per store in `effect_checkpoint_migrations`; a table written by
 * 0.1.0 is migrated when the layer is built (its executions get records from
 * their newest checkpoints: `interrupted` when it has nodes to run, so no
 * worker picks it up by surprise — `resume` it — else `done`).
 *
 * Every change is one `BEGIN IMMEDIATE` transaction, so saves, conditional
 * saves, leases and claims are atomic between the processes sharing the file.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import Sqlite from "better-sqlite3"
import { Config, type ConfigError, Duration, Effect, Layer, Schedule } from "effect"
import * as CheckpointBackend from "../CheckpointBackend.js"
import type { CheckpointStoreError, InvalidIdentifier } from "../CheckpointError.js"
import * as CheckpointStore from "../CheckpointStore.js"
import { nonEmptyString } from "../internal/config.js"
import { sqlBackend } from "../internal/sql/backend.js"
import type { Db } from "../internal/sql/dialect.js"
import * as Schema from "../internal/sql/schema.js"
import { BACKEND, checkTable, clientRunner, initSchema, nativeRunner, type Runner, sqliteDialect } from "../internal/sql/sqlite.js"
import { storeError } from "../internal/storeError.js"

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/**
 * How hard SQLite works to make a commit durable (`PRAGMA synchronous`).
 *
 * - `"NORMAL"` (the default): in WAL mode a commit is atomic and consistent
 *   and survives a crash of the PROCESS; a power loss or OS crash may lose the
 *   last commits (never corrupt the file). The fast choice for checkpoints.
 * - `"FULL"`: every commit is fsync'ed before it returns, so it also survives a
 *   power loss, at the cost of a disk flush per save.
 *
 * @since 0.1.0
 * @category models
 */
export type Synchronous = "NORMAL" | "FULL"

/**
 * Options of {@link layerClient}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientOptions {
  /**
   * The table that holds the checkpoints (default `"checkpoints"`; the other
   * tables are named after it): `[A-Za-z_][A-Za-z0-9_]{0,62}`, not starting
   * with `sqlite_` (SQLite's own) and not `effect_checkpoint_migrations`.
   * Anything else fails the layer with `InvalidIdentifier`. Several stores
   * may share one file. SQLite names ignore case, so a name that differs only
   * in case from a table or view already in the database (`Runs` when `runs`
   * exists), or from a checkpoint table recorded in
   * `effect_checkpoint_migrations`, also fails with `InvalidIdentifier`,
   * naming that table: it would be the same table.
   */
  readonly tableName?: string | undefined
  /** Executions not updated for this long are removed by `Retention.sweep` (see `Retention`); default none. */
  readonly ttl?: Duration.DurationInput | undefined
  /** Large state values stored once per execution (see `CheckpointBackend.MakeOptions`); `false`: whole states. */
  readonly largeValues?: CheckpointBackend.MakeOptions["largeValues"]
}

/**
 * Options of {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends ClientOptions {
  /** The database file (created if missing; its directory must exist), or `":memory:"`. */
  readonly filename: string
  /** `PRAGMA synchronous` (default `"NORMAL"`); see {@link Synchronous}. */
  readonly synchronous?: Synchronous | undefined
  /**
   * How long a statement waits for another connection's write lock before it
   * fails with `CheckpointStoreError` (`PRAGMA busy_timeout`, default 5 seconds).
   * better-sqlite3 is synchronous: the wait blocks this process's event loop.
   */
  readonly busyTimeout?: Duration.DurationInput | undefined
}

const DEFAULT_BUSY_TIMEOUT: Duration.DurationInput = "5 seconds"

/**
 * The table that records each store's schema version. Shared by every store
 * of a database file (one row per checkpoint table), which is why it is not
 * `PRAGMA user_version`: that is one number for the whole file.
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
 * The names of the tables of a store whose checkpoint table is `tableName`.
 *
 * @since 0.2.0
 * @category schema
 */
export const tableNames: (tableName?: string) => Schema.TableNames = Schema.tableNames

/** The store on `runner`, after its schema is in place. */
const makeStore = (
  runner: Runner,
  table: string,
  options: ClientOptions
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier> => {
  const dialect = sqliteDialect(runner)
  const tables = Schema.tablesFor(table)
  return Effect.as(
    initSchema(runner, dialect, tables),
    CheckpointBackend.make(sqlBackend(dialect, tables), { ttl: options.ttl, largeValues: options.largeValues })
  )
}

// -----------------------------------------------------------------------------
// Constructors and layers
// -----------------------------------------------------------------------------

/**
 * Builds a store on the `SqlClient` in context (an `@effect/sql` SQLite
 * client your app already has): creates or migrates the tables, then runs
 * every statement through that client, so its statements take the client's
 * turn, and join the client's transaction when run inside
 * `sql.withTransaction`. The client's connection settings (WAL, busy timeout,
 * synchronous) are yours.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: ClientOptions = {}
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const table = yield* checkTable(options.tableName ?? Schema.defaultTable)
    const sql = yield* SqlClient.SqlClient
    const isSqlite = sql.onDialectOrElse({ sqlite: () => true, orElse: () => false })
    if (!isSqlite) {
      return yield* Effect.fail(storeError(BACKEND, "open", "SqliteStore.layerClient needs a SQLite SqlClient"))
    }
    return yield* makeStore(clientRunner(sql, Schema.tablesFor(table)), table, options)
  })

/**
 * A store on the `SqlClient` your app provides (for example
 * `SqliteClient.layer({ filename })` from `@effect/sql-sqlite-node`), so the
 * store shares your connection and your transactions. The client stays yours:
 * the layer does not close it. Fails with `InvalidIdentifier` for a bad
 * `tableName` (or one that differs only in case from a table already in the
 * database) and `CheckpointStoreError` when the schema cannot be created.
 *
 * @example
 * ```ts
 * import { SqliteClient } from "@effect/sql-sqlite-node"
 * import { Layer } from "effect"
 * import { SqliteStore } from "effect-checkpoint/sqlite"
 *
 * const Sql = SqliteClient.layer({ filename: "./app.db" })
 * const Store = SqliteStore.layerClient({ tableName: "run_checkpoints" }).pipe(Layer.provide(Sql))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerClient = (
  options: ClientOptions = {}
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier, SqlClient.SqlClient> =>
  Layer.effect(CheckpointStore.CheckpointStore, make(options))

const isBusy = (e: SqlError): boolean => {
  const code = (e.cause as { readonly code?: unknown } | undefined)?.code
  return typeof code === "string" && (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"))
}

/**
 * Puts the file in WAL mode (once per file: the mode is stored in it). When
 * several processes open a new file at once, SQLite answers the switch with
 * SQLITE_BUSY at once, without its busy handler, so the switch is retried
 * here for up to `busyMillis`.
 */
const enableWal = (db: Db, busyMillis: number) =>
  Effect.flatMap(db.all("PRAGMA journal_mode", []), (rows) => {
    const mode = String(rows[0]?.journal_mode ?? "").toLowerCase()
    return mode === "wal" || mode === "memory"
      ? Effect.void
      : db.all("PRAGMA journal_mode = WAL", []).pipe(
        Effect.retry({
          while: isBusy,
          schedule: Schedule.spaced("10 millis").pipe(Schedule.jittered, Schedule.upTo(Duration.millis(busyMillis)))
        }),
        Effect.asVoid
      )
  })

/** Opens the file with better-sqlite3 and holds the connection for the layer's lifetime (the scope closes it). */
const openOwn = (options: Options, table: string) =>
  Effect.gen(function*() {
    const native = yield* Effect.acquireRelease(
      Effect.try({ try: () => new Sqlite(options.filename), catch: (e) => storeError(BACKEND, "open", e) }),
      (native) => Effect.sync(() => native.close())
    )
    const runner = nativeRunner(native)
    const busy = Math.max(0, Math.round(Duration.toMillis(Duration.decode(options.busyTimeout ?? DEFAULT_BUSY_TIMEOUT))))
    const synchronous = options.synchronous === "FULL" ? "FULL" : "NORMAL"
    yield* runner.db.all(`PRAGMA busy_timeout = ${busy}`, [])
    yield* enableWal(runner.db, busy)
    yield* runner.db.all(`PRAGMA synchronous = ${synchronous}`, [])
    return yield* makeStore(runner, table, options)
  }).pipe(
    Effect.catchTag("SqlError", (e) => Effect.fail(storeError(BACKEND, "open", e.cause instanceof Error ? e.cause : e)))
  )

/**
 * A SQLite store in `options.filename` (the reference's
 * `NewSqliteCheckpointStore`): opens the file with better-sqlite3 (WAL
 * journal, `synchronous = NORMAL` unless `FULL` is asked for, a 5 second busy
 * timeout), creates or migrates the tables, and closes the file when the
 * layer's scope closes.
 *
 * The layer holds its connection for itself. Several processes (or several
 * layers) may use one file: writers take turns on SQLite's lock, and wait up
 * to `busyTimeout` for it. Within ONE process, prefer one store layer (or
 * {@link layerClient} over one client) per file: a connection that keeps a
 * transaction open while another one waits blocks the event loop it needs.
 *
 * Fails with `InvalidIdentifier` for a bad `tableName` (checked before the
 * file is touched) or one that differs only in case from a table already in
 * the file (checked under the write lock, nothing changed), and
 * `CheckpointStoreError` (operation `"open"`) when the file cannot be opened
 * or the schema created.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { SqliteStore } from "effect-checkpoint/sqlite"
 *
 * program.pipe(Effect.provide(SqliteStore.layer({ filename: "./checkpoints.db", ttl: "30 days" })))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier> =>
  Layer.scoped(
    CheckpointStore.CheckpointStore,
    Effect.flatMap(checkTable(options.tableName ?? Schema.defaultTable), (table) => openOwn(options, table))
  )

/**
 * {@link layer} with its options read from a `Config`: a missing or malformed
 * value fails the layer with the `ConfigError` itself.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { SqliteStore } from "effect-checkpoint/sqlite"
 *
 * const StoreLive = SqliteStore.layerConfigWith(Config.all({ filename: Config.string("MY_APP_DB") }))
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfigWith = (
  config: Config.Config<Options>
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(config, layer))

/**
 * {@link layer} with its file read from `Config`: `SQLITE_DB_PATH` (default
 * `./checkpoints.db`), table `checkpoints`. A config error fails the layer
 * with the `ConfigError` itself. For other names or options, see
 * {@link layerConfigWith}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<
  CheckpointStore.CheckpointStore,
  CheckpointStoreError | InvalidIdentifier | ConfigError.ConfigError
> = layerConfigWith(
  Config.all({
    filename: nonEmptyString("SQLITE_DB_PATH", "./checkpoints.db")
  })
)
