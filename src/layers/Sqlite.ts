/**
 * The SQLite checkpoint store: one table in an embedded database file, built
 * on `@effect/sql-sqlite-node`'s `SqliteClient` (better-sqlite3). What a
 * single-machine deployment picks: no server, checkpoints survive the
 * process, several processes can share one file.
 *
 * The table (`checkpoints` unless `tableName` says otherwise):
 *
 * | column | type | holds |
 * |---|---|---|
 * | `id` | `TEXT PRIMARY KEY` | the checkpoint id |
 * | `execution_id` | `TEXT NOT NULL` | the execution it belongs to |
 * | `node_name` | `TEXT NOT NULL` | the node that just ran |
 * | `state` | `TEXT NOT NULL` | the state, as JSON text |
 * | `metadata` | `TEXT NOT NULL` | the metadata object, as JSON text |
 * | `timestamp` | `TEXT NOT NULL` | ISO-8601 text, millisecond precision (sorts as time) |
 * | `version` | `INTEGER NOT NULL` | 1, 2, 3 … per execution |
 * | `next` | `TEXT NOT NULL` | the node names still to run, as a JSON array |
 * | `parent_id` | `TEXT` | the checkpoint this one follows, or `NULL` |
 *
 * plus `UNIQUE (execution_id, version)`, whose index makes `list`, `latest`,
 * `prune` and `listExecutions` index range scans. The schema is created when
 * the layer is built and versioned per table in `effect_checkpoint_migrations`,
 * so a later release adds a column with a migration, never by hand.
 *
 * Every operation is ONE SQL statement (so one implicit transaction):
 * `saveMany` inserts the whole batch with one multi-row `INSERT` (one
 * `INSERT … SELECT … FROM json_each(?)` past 500 checkpoints), `prune` is one
 * `DELETE`, `listExecutions` one grouped query.
 *
 * A conditional save (`expect`) is that same one `INSERT`, with its condition
 * inside: the first row's id is
 * `CASE WHEN COALESCE((SELECT MAX(version) … WHERE execution_id = ?), 0) = ? THEN ? END`,
 * which is `NULL` when the execution's newest version is not the expected one,
 * so the `NOT NULL` id refuses the statement before it writes a row, and the
 * store reports `CheckpointConflict` (reading the actual newest version once
 * more, for the error only). A write statement takes SQLite's write lock
 * before it reads anything, so no other connection or process can write
 * between the check and the insert; with `layerClient` inside your
 * transaction, the check also sees that transaction's own writes. The single
 * save costs about 1 µs more than an unconditional one; a conditional batch
 * costs SQLite a little more per row (an `INSERT` whose rows read its own
 * table is staged in a temporary b-tree first). Unconditional saves run the
 * same statements as before.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { Config, Context, Duration, Effect, Either, Layer, Schedule } from "effect"
import * as Checkpoint from "../Checkpoint.js"
import {
  CheckpointConflict,
  CheckpointDecodeError,
  CheckpointEncodeError,
  type CheckpointStoreError,
  type InvalidIdentifier
} from "../CheckpointError.js"
import * as CheckpointStore from "../CheckpointStore.js"
import { checkSqlName, invalid } from "../internal/identifier.js"
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
   * The table that holds the checkpoints (default `"checkpoints"`):
   * `[A-Za-z_][A-Za-z0-9_]{0,62}`, not starting with `sqlite_` (SQLite's own)
   * and not `effect_checkpoint_migrations`. Anything else fails the layer with
   * `InvalidIdentifier`. Several tables (several stores) may share one file.
   * SQLite names ignore case, so a name that differs only in case from a table
   * or view already in the database (`Runs` when `runs` exists), or from a
   * checkpoint table recorded in `effect_checkpoint_migrations`, also fails
   * with `InvalidIdentifier`, naming that table: it would be the same table.
   */
  readonly tableName?: string | undefined
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

const BACKEND = "sqlite"
const DEFAULT_TABLE = "checkpoints"
const DEFAULT_BUSY_TIMEOUT: Duration.DurationInput = "5 seconds"

/**
 * The table that records each checkpoint table's schema version. Shared by
 * every checkpoint table of a database file (one row per table), which is why
 * it is not `PRAGMA user_version`: that is one number for the whole file.
 *
 * @since 0.1.0
 * @category schema
 */
export const migrationsTable = "effect_checkpoint_migrations"

/**
 * The migrations of a checkpoint table, in order. A migration's statements run
 * in one transaction together with the version update; the table's version is
 * the last one applied. Statements get the quoted table name.
 */
const migrations: ReadonlyArray<{ readonly version: number; readonly up: (table: string) => ReadonlyArray<string> }> = [
  {
    version: 1,
    up: (table) => [
      `CREATE TABLE IF NOT EXISTS ${table} (
  id TEXT PRIMARY KEY NOT NULL,
  execution_id TEXT NOT NULL,
  node_name TEXT NOT NULL,
  state TEXT NOT NULL,
  metadata TEXT NOT NULL,
  timestamp TEXT NOT NULL,
  version INTEGER NOT NULL,
  next TEXT NOT NULL,
  parent_id TEXT,
  UNIQUE (execution_id, version)
)`
    ]
  }
]

/**
 * The schema version this release creates and understands.
 *
 * @since 0.1.0
 * @category schema
 */
export const schemaVersion: number = migrations[migrations.length - 1]!.version

const COLUMNS = ["id", "execution_id", "node_name", "state", "metadata", "timestamp", "version", "next", "parent_id"] as const
const COLUMN_LIST = COLUMNS.join(", ")

// -----------------------------------------------------------------------------
// The connection the store runs on
// -----------------------------------------------------------------------------

/** What the store needs from SQLite: run one statement, and run a few in a transaction (at build only). */
interface Db {
  readonly all: (sql: string, params: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, SqlError>
  readonly transaction: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E | SqlError>
}

type Row = { readonly [column: string]: unknown }

/**
 * A connection the store holds for the whole life of its layer (reserved from
 * a client nobody else uses): statements go straight to it, with no pool or
 * span per call. Safe because every store operation is one statement that
 * better-sqlite3 runs synchronously to completion.
 */
const reservedDb = (conn: Connection): Db => ({
  all: (sql, params) => conn.execute(sql, params, undefined),
  transaction: (effect) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.zipRight(
        conn.executeUnprepared("BEGIN IMMEDIATE", [], undefined),
        Effect.onExit(restore(effect), (exit) =>
          Effect.orDie(conn.executeUnprepared(exit._tag === "Success" ? "COMMIT" : "ROLLBACK", [], undefined)))
      )
    )
})

/** A shared `SqlClient`: each statement goes through the client (its lock, its transaction, its spans). */
const clientDb = (sql: SqlClient.SqlClient): Db => ({
  all: (text, params) => sql.unsafe<Row>(text, params as ReadonlyArray<never>).withoutTransform,
  transaction: sql.withTransaction
})

/**
 * Layer builds of this process take their turn, so two stores built at once
 * on one file never wait on each other's schema transaction (a synchronous
 * busy wait would block the event loop the other one needs to commit).
 */
const buildLock = Effect.unsafeMakeSemaphore(1)

// -----------------------------------------------------------------------------
// Errors
// -----------------------------------------------------------------------------

/** The driver's own error inside a `SqlError`, for a useful message and code. */
const driverCause = (e: SqlError): unknown => e.cause instanceof Error ? e.cause : e

const isUniqueViolation = (e: SqlError): boolean => {
  const cause = e.cause as { readonly code?: unknown; readonly message?: unknown } | undefined
  const code = typeof cause?.code === "string" ? cause.code : ""
  return code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "SQLITE_CONSTRAINT_UNIQUE" ||
    (typeof cause?.message === "string" && cause.message.includes("UNIQUE constraint failed"))
}

/**
 * The refusal of a conditional save whose expectation failed: its guarded id
 * (see `statementsFor`) was `NULL`. Checkpoint ids are never `NULL`, so the
 * `NOT NULL` constraint on `id` fails for no other reason.
 */
const isExpectationViolation = (e: SqlError): boolean => {
  const cause = e.cause as { readonly code?: unknown; readonly message?: unknown } | undefined
  return cause?.code === "SQLITE_CONSTRAINT_NOTNULL" && typeof cause.message === "string" && cause.message.endsWith(".id")
}

const failWith = (operation: string) => (e: SqlError): CheckpointStoreError => storeError(BACKEND, operation, driverCause(e))

const conflictOf = (cp: Checkpoint.Checkpoint) =>
  new CheckpointConflict({ executionId: cp.executionId, version: cp.version, id: cp.id })

// -----------------------------------------------------------------------------
// Rows
// -----------------------------------------------------------------------------

const parseColumn = (
  value: unknown,
  id: string | undefined,
  column: string
): Either.Either<unknown, CheckpointDecodeError> => {
  const named = id === undefined ? "" : ` ${JSON.stringify(id)}`
  if (typeof value !== "string") {
    return Either.left(
      new CheckpointDecodeError({
        ...(id === undefined ? {} : { id }),
        message: `Stored checkpoint${named}: column ${column} is not JSON text`
      })
    )
  }
  try {
    return Either.right(JSON.parse(value) as unknown)
  } catch (e) {
    return Either.left(
      new CheckpointDecodeError({
        ...(id === undefined ? {} : { id }),
        message: `Stored checkpoint${named}: column ${column} is not valid JSON: ${e instanceof Error ? e.message : String(e)}`
      })
    )
  }
}

const numberOf = (value: unknown): unknown => typeof value === "bigint" ? Number(value) : value

/**
 * A row as a checkpoint; a row that is not one (bad JSON, wrong types, a bad
 * id) fails with `CheckpointDecodeError` naming the checkpoint.
 */
const decodeRow = (row: Row, expectedId?: string): Effect.Effect<Checkpoint.Checkpoint, CheckpointDecodeError> => {
  const id = typeof row.id === "string" ? row.id : expectedId
  const state = parseColumn(row.state, id, "state")
  if (Either.isLeft(state)) return Effect.fail(state.left)
  const metadata = parseColumn(row.metadata, id, "metadata")
  if (Either.isLeft(metadata)) return Effect.fail(metadata.left)
  const next = parseColumn(row.next, id, "next")
  if (Either.isLeft(next)) return Effect.fail(next.left)
  return Checkpoint.decodeFields({
    id: row.id,
    executionId: row.execution_id,
    nodeName: row.node_name,
    state: state.right,
    metadata: metadata.right,
    timestamp: row.timestamp,
    version: numberOf(row.version),
    next: next.right,
    parentId: row.parent_id
  }, expectedId ?? id)
}

/** The summary of an execution from the columns of its newest row (its state is not read). */
const decodeSummary = (row: Row): Effect.Effect<CheckpointStore.ExecutionSummary, CheckpointDecodeError> => {
  const id = typeof row.id === "string" ? row.id : undefined
  const next = parseColumn(row.next, id, "next")
  if (Either.isLeft(next)) return Effect.fail(next.left)
  return Effect.map(
    Checkpoint.decodeFields({
      id: row.id,
      executionId: row.execution_id,
      nodeName: "-",
      state: null,
      metadata: {},
      timestamp: row.timestamp,
      version: numberOf(row.version),
      next: next.right
    }, id),
    CheckpointStore.summarize
  )
}

/** Any surrogate: the cheap test that lets almost every `nodeName` skip the loop below. */
const SURROGATE = /[\ud800-\udfff]/

/** `true` when `s` has a surrogate without its other half (UTF-8, so SQLite TEXT, has no way to hold one). */
const hasLoneSurrogate = (s: string): boolean => {
  if (!SURROGATE.test(s)) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0xd800 || c > 0xdfff) continue
    if (c > 0xdbff) return true
    // Past the end, charCodeAt is NaN: a high surrogate at the end is unpaired too.
    const d = s.charCodeAt(i + 1)
    if (!(d >= 0xdc00 && d <= 0xdfff)) return true
    i++
  }
  return false
}

/**
 * `nodeName` is the one column bound as a string as it is (ids are checked,
 * `state`/`metadata`/`next` are `JSON.stringify` text, which escapes an
 * unpaired surrogate): one that SQLite would read back as U+FFFD is refused.
 */
const unstorable = (cp: Checkpoint.Checkpoint): CheckpointEncodeError | undefined =>
  hasLoneSurrogate(cp.nodeName)
    ? new CheckpointEncodeError({
      id: cp.id,
      message: "nodeName contains an unpaired surrogate, which SQLite cannot store (its TEXT is UTF-8: it would read back as U+FFFD)"
    })
    : undefined

const paramsOf = (e: Checkpoint.Encoded): ReadonlyArray<unknown> => {
  const cp = e.checkpoint
  return [cp.id, cp.executionId, cp.nodeName, e.state, e.metadata, e.timestamp, cp.version, e.next, cp.parentId ?? null]
}

// -----------------------------------------------------------------------------
// The store
// -----------------------------------------------------------------------------

/**
 * The largest batch written as one multi-row `VALUES` statement (9 bound
 * values a row, well under SQLite's 32 766). Larger batches go in one
 * `INSERT … SELECT … FROM json_each(?)`: still one statement, any size, but
 * the JSON round trip costs more per row.
 */
const MAX_VALUES_ROWS = 500

/** The statements of one table, built once. */
const statementsFor = (table: string) => {
  const t = `"${table}"`
  const fromJson = COLUMNS.map((_, i) => `value ->> ${i}`).join(", ")
  const row = `(${COLUMNS.map(() => "?").join(", ")})`
  /**
   * The condition of a conditional save, on its two parameters (execution id,
   * expected latest version). One index seek on `(execution_id, version)`; a
   * non-correlated subquery, so SQLite evaluates it once per statement.
   */
  const holds = `COALESCE((SELECT MAX(version) FROM ${t} WHERE execution_id = ?), 0) = ?`
  /**
   * A conditional save writes the id of its first row as
   * `CASE WHEN <holds> THEN ? END`: `NULL` when the expectation fails, which
   * the `NOT NULL` id refuses (`SQLITE_CONSTRAINT_NOTNULL`) before any row is
   * written, so the statement writes nothing. See {@link isExpectationViolation}.
   */
  const guardedId = `CASE WHEN ${holds} THEN ? END`
  const guardedRow = `(${guardedId}, ${COLUMNS.slice(1).map(() => "?").join(", ")})`
  const valuesTexts = new Map<number, string>()
  const guardedValuesTexts = new Map<number, string>()
  return {
    insert: `INSERT INTO ${t} (${COLUMN_LIST}) VALUES ${row}`,
    /** {@link insert} on a condition: parameters `executionId, latestVersion, ...row`. */
    insertExpect: `INSERT INTO ${t} (${COLUMN_LIST}) VALUES ${guardedRow}`,
    /** `n` rows in one statement (at most {@link MAX_VALUES_ROWS}); the text of each size is built once. */
    insertValues: (n: number): string => {
      let text = valuesTexts.get(n)
      if (text === undefined) {
        text = `INSERT INTO ${t} (${COLUMN_LIST}) VALUES ${Array.from({ length: n }, () => row).join(", ")}`
        valuesTexts.set(n, text)
      }
      return text
    },
    /** {@link insertValues} on a condition (its first row carries it): parameters `executionId, latestVersion, ...rows`. */
    insertValuesExpect: (n: number): string => {
      let text = guardedValuesTexts.get(n)
      if (text === undefined) {
        const rest = Array.from({ length: n - 1 }, () => `, ${row}`).join("")
        text = `INSERT INTO ${t} (${COLUMN_LIST}) VALUES ${guardedRow}${rest}`
        guardedValuesTexts.set(n, text)
      }
      return text
    },
    /** Any number of rows in one statement: one JSON array of rows as the only parameter. */
    insertJson: `INSERT INTO ${t} (${COLUMN_LIST}) SELECT ${fromJson} FROM json_each(?)`,
    /** {@link insertJson} on a condition: parameters `executionId, latestVersion, rows`. */
    insertJsonExpect: `INSERT INTO ${t} (${COLUMN_LIST}) SELECT ` +
      `CASE WHEN ${holds} THEN value ->> 0 END, ${COLUMNS.slice(1).map((_, i) => `value ->> ${i + 1}`).join(", ")} ` +
      `FROM json_each(?)`,
    /** The newest version of an execution (0 if none): only to report a failed expectation. */
    latestVersion: `SELECT COALESCE(MAX(version), 0) AS version FROM ${t} WHERE execution_id = ?`,
    /** The index (in the batch) of the first checkpoint that collides with a stored one. */
    batchConflict: `SELECT b.key AS at FROM json_each(?) AS b WHERE ` +
      `EXISTS (SELECT 1 FROM ${t} WHERE id = b.value ->> 0) OR ` +
      `EXISTS (SELECT 1 FROM ${t} WHERE execution_id = b.value ->> 1 AND version = b.value ->> 6) ` +
      `ORDER BY b.key LIMIT 1`,
    load: `SELECT ${COLUMN_LIST} FROM ${t} WHERE id = ?`,
    list: `SELECT ${COLUMN_LIST} FROM ${t} WHERE execution_id = ? AND version > ? ORDER BY version LIMIT ?`,
    latest: `SELECT ${COLUMN_LIST} FROM ${t} WHERE execution_id = ? ORDER BY version DESC LIMIT 1`,
    // SQLite takes the bare columns of a MAX() aggregate from the row holding the maximum.
    listExecutions: `SELECT id, execution_id, MAX(version) AS version, timestamp, next FROM ${t} GROUP BY execution_id`,
    delete: `DELETE FROM ${t} WHERE id = ?`,
    clear: `DELETE FROM ${t} WHERE execution_id = ?`,
    // Removes the (keep+1)-th newest and everything older; nothing when there are `keep` or fewer.
    prune: `DELETE FROM ${t} WHERE execution_id = ? AND version <= ` +
      `(SELECT version FROM ${t} WHERE execution_id = ? ORDER BY version DESC LIMIT 1 OFFSET ?) RETURNING 1`
  }
}

/**
 * A table, view or recorded checkpoint table whose name differs from `table`
 * only in case. SQLite matches names without regard to (ASCII) case, so it
 * would be the same table: `clear` on one would delete the other's executions.
 */
const caseTwin = (db: Db, table: string): Effect.Effect<InvalidIdentifier | undefined, SqlError> =>
  Effect.map(
    db.all(
      `SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view') AND name = ? COLLATE NOCASE AND name <> ? ` +
        `UNION ALL SELECT 'recorded', table_name FROM ${migrationsTable} WHERE table_name = ? COLLATE NOCASE AND table_name <> ?`,
      [table, table, table, table]
    ),
    (rows) => {
      const twin = rows.find((r) => r.type !== "recorded") ?? rows[0]
      if (twin === undefined) return undefined
      const name = JSON.stringify(String(twin.name))
      const where = twin.type === "recorded"
        ? `the checkpoint table ${name} recorded in ${migrationsTable}`
        : `the ${String(twin.type)} ${name} already in this database`
      return invalid(
        "tableName",
        table,
        `differs only in case from ${where}; SQLite table names ignore case, so both would be one table`
      )
    }
  )

/**
 * Creates or migrates the table (idempotent, safe to run from several
 * processes at once) and checks its shape. A name that differs only in case
 * from a table already there fails with `InvalidIdentifier`, nothing changed.
 */
const initSchema = (db: Db, table: string): Effect.Effect<void, CheckpointStoreError | InvalidIdentifier> =>
  Effect.gen(function*() {
    const quoted = `"${table}"`
    yield* db.all(
      `CREATE TABLE IF NOT EXISTS ${migrationsTable} (table_name TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL)`,
      []
    )
    yield* db.transaction(Effect.gen(function*() {
      // A write first, so the transaction holds the write lock before it reads the version.
      yield* db.all(
        `INSERT INTO ${migrationsTable} (table_name, version, applied_at) VALUES (?, 0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ` +
          `ON CONFLICT (table_name) DO NOTHING`,
        [table]
      )
      // Under the write lock, so two processes cannot create "Runs" and "runs" at once; failing rolls back the insert.
      const twin = yield* caseTwin(db, table)
      if (twin !== undefined) return yield* Effect.fail(twin)
      const rows = yield* db.all(`SELECT version FROM ${migrationsTable} WHERE table_name = ?`, [table])
      const current = Number(numberOf(rows[0]?.version ?? 0))
      if (current > schemaVersion) {
        return yield* Effect.fail(
          storeError(
            BACKEND,
            "open",
            `table ${table} has schema version ${current}, newer than the ${schemaVersion} this version of effect-checkpoint knows; upgrade effect-checkpoint`
          )
        )
      }
      for (const migration of migrations) {
        if (migration.version <= current) continue
        for (const statement of migration.up(quoted)) yield* db.all(statement, [])
        yield* db.all(
          `UPDATE ${migrationsTable} SET version = ?, applied_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE table_name = ?`,
          [migration.version, table]
        )
      }
    }))
    const columns = new Set((yield* db.all("SELECT name FROM pragma_table_info(?)", [table])).map((r) => r.name))
    const missing = COLUMNS.filter((c) => !columns.has(c))
    if (missing.length > 0) {
      return yield* Effect.fail(
        storeError(BACKEND, "open", `table ${table} exists but is not a checkpoint table (no column ${missing.join(", ")})`)
      )
    }
  }).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(failWith("open")(e))), buildLock.withPermits(1))

/** A valid table name, or `InvalidIdentifier`. */
const checkTable = (tableName: string): Effect.Effect<string, InvalidIdentifier> => {
  const error = checkSqlName("tableName", tableName)
  if (error !== undefined) return Effect.fail(error)
  if (tableName.toLowerCase().startsWith("sqlite_")) {
    return Effect.fail(invalid("tableName", tableName, "names starting with sqlite_ are reserved by SQLite"))
  }
  if (tableName.toLowerCase() === migrationsTable) {
    return Effect.fail(invalid("tableName", tableName, "is the table that records schema versions"))
  }
  return Effect.succeed(tableName)
}

/** The store on `db`, after its schema is in place. */
const makeStore = (
  db: Db,
  table: string
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier> =>
  Effect.map(initSchema(db, table), () => {
    const q = statementsFor(table)
    const all = (operation: string, sql: string, params: ReadonlyArray<unknown>) =>
      Effect.mapError(db.all(sql, params), failWith(operation))
    const decodeAll = (rows: ReadonlyArray<Row>) => Effect.forEach(rows, (row) => decodeRow(row))

    /** A failed expectation, with the execution's newest version if one more read finds it (it is only reported). */
    const expectationFailed = (expect: CheckpointStore.Expectation): Effect.Effect<never, CheckpointConflict> =>
      Effect.flatMap(
        Effect.orElseSucceed(db.all(q.latestVersion, [expect.executionId]), (): ReadonlyArray<Row> => []),
        (rows) => {
          const actual = Number(numberOf(rows[0]?.version))
          // Another writer may have moved it back meanwhile: report only a version that contradicts the expectation.
          return Effect.fail(CheckpointStore.expectationFailed(
            expect,
            Number.isInteger(actual) && actual !== expect.latestVersion ? actual : undefined
          ))
        }
      )

    const insertBatch = (
      batch: ReadonlyArray<Checkpoint.Encoded>,
      expect: CheckpointStore.Expectation | undefined
    ): Effect.Effect<unknown, CheckpointConflict | CheckpointStoreError> => {
      const rows = batch.map(paramsOf)
      const write = expect === undefined
        ? batch.length <= MAX_VALUES_ROWS
          ? db.all(q.insertValues(batch.length), rows.flat())
          : db.all(q.insertJson, [JSON.stringify(rows)])
        : batch.length <= MAX_VALUES_ROWS
        ? db.all(q.insertValuesExpect(batch.length), [expect.executionId, expect.latestVersion, ...rows.flat()])
        : db.all(q.insertJsonExpect, [expect.executionId, expect.latestVersion, JSON.stringify(rows)])
      return Effect.catchAll(write, (e): Effect.Effect<never, CheckpointConflict | CheckpointStoreError> =>
        expect !== undefined && isExpectationViolation(e)
          ? expectationFailed(expect)
          : isUniqueViolation(e)
          // Name the checkpoint that collided (the first one, if it is gone again by now).
          ? Effect.flatMap(
            Effect.orElseSucceed(db.all(q.batchConflict, [JSON.stringify(rows)]), (): ReadonlyArray<Row> => []),
            (rows): Effect.Effect<never, CheckpointConflict> =>
              Effect.fail(conflictOf((batch[Number(rows[0]?.at ?? 0)] ?? batch[0]!).checkpoint))
          )
          : Effect.fail(failWith("saveMany")(e)))
    }

    const insertOne = (operation: string) => (e: Checkpoint.Encoded, expect: CheckpointStore.Expectation | undefined) =>
      expect === undefined
        ? Effect.mapError(
          db.all(q.insert, paramsOf(e)),
          (error) => isUniqueViolation(error) ? conflictOf(e.checkpoint) : failWith(operation)(error)
        )
        : Effect.catchAll(
          db.all(q.insertExpect, [expect.executionId, expect.latestVersion, ...paramsOf(e)]),
          (error): Effect.Effect<never, CheckpointConflict | CheckpointStoreError> =>
            isExpectationViolation(error)
              ? expectationFailed(expect)
              : Effect.fail(isUniqueViolation(error) ? conflictOf(e.checkpoint) : failWith(operation)(error))
        )
    const saveOne = insertOne("save")
    const saveManyOfOne = insertOne("saveMany")

    return CheckpointStore.make({
      insertOne: (e, expect) => {
        const problem = unstorable(e.checkpoint)
        return problem === undefined ? saveOne(e, expect) : Effect.fail(problem)
      },
      insert: (batch, expect) => {
        for (const e of batch) {
          const problem = unstorable(e.checkpoint)
          if (problem !== undefined) return Effect.fail(problem)
        }
        return Effect.asVoid(batch.length === 1 ? saveManyOfOne(batch[0]!, expect) : insertBatch(batch, expect))
      },
      load: (id) =>
        Effect.flatMap(all("load", q.load, [id]), (rows) =>
          rows.length === 0 ? Effect.succeedNone : Effect.asSome(decodeRow(rows[0]!, id))),
      list: (executionId, afterVersion, limit) =>
        Effect.flatMap(all("list", q.list, [executionId, Math.max(0, afterVersion), limit ?? -1]), decodeAll),
      latest: (executionId) =>
        Effect.flatMap(all("latest", q.latest, [executionId]), (rows) =>
          rows.length === 0 ? Effect.succeedNone : Effect.asSome(decodeRow(rows[0]!))),
      listExecutions: Effect.flatMap(all("listExecutions", q.listExecutions, []), (rows) =>
        Effect.forEach(rows, decodeSummary)),
      delete: (id) => Effect.asVoid(all("delete", q.delete, [id])),
      clear: (executionId) => Effect.asVoid(all("clear", q.clear, [executionId])),
      prune: (executionId, keep) => Effect.map(all("prune", q.prune, [executionId, executionId, keep]), (rows) => rows.length)
    })
  })

// -----------------------------------------------------------------------------
// Constructors and layers
// -----------------------------------------------------------------------------

/**
 * Builds a store on the `SqlClient` in context (an `@effect/sql` SQLite
 * client your app already has): creates or migrates the table, then runs
 * every statement through that client, so its statements take the client's
 * turn, and join the client's transaction when run inside
 * `sql.withTransaction`. The client's connection settings (WAL, busy timeout,
 * synchronous) are yours; `SqliteClient` enables WAL and better-sqlite3 waits
 * 5 seconds on a lock by default.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: ClientOptions = {}
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const table = yield* checkTable(options.tableName ?? DEFAULT_TABLE)
    const sql = yield* SqlClient.SqlClient
    const isSqlite = sql.onDialectOrElse({ sqlite: () => true, orElse: () => false })
    if (!isSqlite) {
      return yield* Effect.fail(storeError(BACKEND, "open", "SqliteStore.layerClient needs a SQLite SqlClient"))
    }
    return yield* makeStore(clientDb(sql), table)
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
const enableWal = (conn: Connection, busyMillis: number) =>
  Effect.flatMap(conn.execute("PRAGMA journal_mode", [], undefined), (rows) => {
    const mode = String(rows[0]?.journal_mode ?? "").toLowerCase()
    return mode === "wal" || mode === "memory"
      ? Effect.void
      : conn.execute("PRAGMA journal_mode = WAL", [], undefined).pipe(
        Effect.retry({
          while: isBusy,
          schedule: Schedule.spaced("10 millis").pipe(Schedule.jittered, Schedule.upTo(Duration.millis(busyMillis)))
        }),
        Effect.asVoid
      )
  })

/** Opens the client and holds its one connection for the layer's lifetime (the scope closes both). */
const openOwn = (options: Options, table: string) =>
  Effect.gen(function*() {
    // WAL is switched on below, not by SqliteClient: see `enableWal`.
    const context = yield* Effect.mapError(
      Layer.build(SqliteClient.layer({ filename: options.filename, disableWAL: true })),
      (e) => storeError(BACKEND, "open", e)
    )
    const conn = yield* Context.get(context, SqlClient.SqlClient).reserve
    const busy = Math.max(0, Math.round(Duration.toMillis(Duration.decode(options.busyTimeout ?? DEFAULT_BUSY_TIMEOUT))))
    const synchronous = options.synchronous === "FULL" ? "FULL" : "NORMAL"
    yield* conn.execute(`PRAGMA busy_timeout = ${busy}`, [], undefined)
    yield* enableWal(conn, busy)
    yield* conn.execute(`PRAGMA synchronous = ${synchronous}`, [], undefined)
    return yield* makeStore(reservedDb(conn), table)
  }).pipe(
    Effect.catchTag("SqlError", (e) => Effect.fail(failWith("open")(e))),
    // better-sqlite3 throws while opening (missing directory, not a database): a typed error, never a defect.
    Effect.catchAllDefect((defect) => Effect.fail(storeError(BACKEND, "open", defect)))
  )

/**
 * A SQLite store in `options.filename` (the reference's
 * `NewSqliteCheckpointStore`): opens the file with `SqliteClient` (WAL
 * journal, `synchronous = NORMAL` unless `FULL` is asked for, a 5 second busy
 * timeout), creates or migrates the table, and closes the file when the
 * layer's scope closes.
 *
 * The layer holds its connection for itself, so each operation is one
 * prepared statement on it with no pool in between. Several processes (or
 * several layers) may use one file: writers take turns on SQLite's lock, and
 * wait up to `busyTimeout` for it. Within ONE process, prefer one store layer
 * (or {@link layerClient} over one client) per file: a connection that keeps a
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
 * program.pipe(Effect.provide(SqliteStore.layer({ filename: "./checkpoints.db" })))
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
    Effect.flatMap(checkTable(options.tableName ?? DEFAULT_TABLE), (table) => openOwn(options, table))
  )

/**
 * {@link layer} with its file read from `Config`: `SQLITE_DB_PATH` (default
 * `./checkpoints.db`), table `checkpoints`. A config error fails the layer with
 * `CheckpointStoreError` (operation `"config"`).
 *
 * To read other names or set other options, map your own `Config` into
 * {@link layer}:
 * `Layer.unwrapEffect(Effect.map(Config.string("MY_DB"), (filename) => SqliteStore.layer({ filename, synchronous: "FULL" })))`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier> = Layer
  .unwrapEffect(
    Effect.map(
      Config.string("SQLITE_DB_PATH").pipe(
        Config.withDefault("./checkpoints.db"),
        Effect.mapError((e) => storeError(BACKEND, "config", e))
      ),
      (filename) => layer({ filename })
    )
  )
