/**
 * The SQLite dialect of the SQL store, and its schema set-up.
 *
 * @internal
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import type { Database, Statement } from "better-sqlite3"
import { Effect } from "effect"
import { CheckpointEncodeError, type CheckpointStoreError, type InvalidIdentifier } from "../../CheckpointError.js"
import { checkSqlName, invalid } from "../identifier.js"
import { storeError } from "../storeError.js"
import { type Db, type Dialect, failedTransaction, type Row } from "./dialect.js"
import { migrations, migrationsTable, schemaVersion, type Tables, v1Columns } from "./schema.js"

export const BACKEND = "sqlite"

/** How statements reach SQLite: a read, and a write transaction that holds the database's write lock throughout. */
export interface Runner {
  readonly db: Db
  readonly read: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E>
  readonly transaction: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E | SqlError>
}

/** Prepared statements per text, at most this many (a store has a few dozen texts). */
const MAX_PREPARED = 500

/**
 * The store's own connection ({@link layer}): better-sqlite3 directly, each
 * statement prepared once and run synchronously (a statement is a call, not
 * a round trip: the driver's path costs as much as SQLite's work). One
 * operation at a time (a semaphore), so a transaction never sees another
 * operation's statements, and a read never sees a transaction not committed.
 */
export const nativeRunner = (native: Database): Runner => {
  const lock = Effect.unsafeMakeSemaphore(1)
  const prepared = new Map<string, Statement>()
  const statementOf = (text: string): Statement => {
    let statement = prepared.get(text)
    if (statement === undefined) {
      statement = native.prepare(text)
      if (prepared.size < MAX_PREPARED) prepared.set(text, statement)
    }
    return statement
  }
  const all = (text: string, params: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<Row>, SqlError> =>
    Effect.try({
      try: () => {
        const statement = statementOf(text)
        if (statement.reader) return statement.all(...params)
        statement.run(...params)
        return []
      },
      catch: (cause) => new SqlError({ cause, message: "Failed to execute statement" })
    })
  const run = (text: string) => all(text, [])
  return {
    db: { all },
    read: (effect) => lock.withPermits(1)(effect),
    transaction: (effect) =>
      lock.withPermits(1)(Effect.uninterruptibleMask((restore) =>
        Effect.zipRight(
          run("BEGIN IMMEDIATE"),
          Effect.matchCauseEffect(restore(effect), {
            onSuccess: (a) => Effect.as(Effect.tapError(run("COMMIT"), () => Effect.ignore(run("ROLLBACK"))), a),
            onFailure: (cause) => Effect.zipRight(Effect.ignore(run("ROLLBACK")), Effect.failCause(cause))
          })
        )
      ))
  }
}

/**
 * The app's `SqlClient` (`layerClient`): its lock, its transactions (a write
 * inside `sql.withTransaction` joins it). A write transaction starts with a
 * write, so it holds SQLite's write lock before it reads anything.
 */
export const clientRunner = (sql: SqlClient.SqlClient, t: Tables): Runner => {
  const db: Db = { all: (text, params) => sql.unsafe<Row>(text, params as ReadonlyArray<never>).withoutTransform }
  const takeLock = `UPDATE ${migrationsTable} SET version = version WHERE table_name = ?`
  return {
    db,
    read: (effect) => effect,
    transaction: (effect) => failedTransaction(sql.withTransaction(Effect.zipRight(db.all(takeLock, [t.name]), effect)))
  }
}

/** The driver's own error inside a `SqlError`, for a useful message and code. */
const driverCause = (e: unknown): unknown =>
  typeof e === "object" && e !== null && "cause" in e && e.cause instanceof Error ? e.cause : e

/** Any surrogate: the cheap test that lets almost every `nodeName` skip the loop below. */
const SURROGATE = /[\ud800-\udfff]/

/** `true` when `s` has a surrogate without its other half (SQLite TEXT is UTF-8: no way to hold one). */
const hasLoneSurrogate = (s: string): boolean => {
  if (!SURROGATE.test(s)) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0xd800 || c > 0xdfff) continue
    if (c > 0xdbff) return true
    const d = s.charCodeAt(i + 1)
    if (!(d >= 0xdc00 && d <= 0xdfff)) return true
    i++
  }
  return false
}

export const sqliteDialect = (runner: Runner): Dialect => ({
  name: BACKEND,
  param: () => "?",
  prepare: (text) => text,
  types: { json: "TEXT", key: "TEXT", time: "INTEGER", timestamp: "TEXT" },
  jsonText: (column) => column,
  timestampOut: (column) => column,
  timestampMs: (column) => `CAST(ROUND((julianday(${column}) - 2440587.5) * 86400000.0) AS INTEGER)`,
  nextNonEmpty: (column) =>
    `(CASE WHEN json_valid(${column}) THEN json_type(${column}) = 'array' AND json_array_length(${column}) > 0 ELSE 0 END)`,
  inList: (expr) => `${expr} IN (SELECT value FROM json_each(?))`,
  listParam: (values) => JSON.stringify(values),
  arrayHas: (column, hash) => `EXISTS (SELECT 1 FROM json_each(${column}) AS r WHERE r.value = ${hash})`,
  forUpdate: "",
  skipLocked: "",
  isUniqueViolation: (e) => {
    const cause = e.cause as { readonly code?: unknown; readonly message?: unknown } | undefined
    const code = typeof cause?.code === "string" ? cause.code : ""
    return code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "SQLITE_CONSTRAINT_UNIQUE" ||
      (typeof cause?.message === "string" && cause.message.includes("UNIQUE constraint failed"))
  },
  isSerializationFailure: () => false,
  storeError: (operation, e) => storeError(BACKEND, operation, driverCause(e)),
  encodeError: () => undefined,
  checkpointProblem: (e) =>
    hasLoneSurrogate(e.checkpoint.nodeName)
      ? new CheckpointEncodeError({
        id: e.checkpoint.id,
        message:
          "nodeName contains an unpaired surrogate, which SQLite cannot store (its TEXT is UTF-8: it would read back as U+FFFD)"
      })
      : undefined,
  writesProblem: () => undefined,
  read: (body) => runner.read(body(runner.db)),
  write: (_executions, given, body) => runner.transaction(body(runner.db, given))
})

// -----------------------------------------------------------------------------
// Schema
// -----------------------------------------------------------------------------

/** A valid table name, or `InvalidIdentifier`. */
export const checkTable = (tableName: string): Effect.Effect<string, InvalidIdentifier> => {
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

const numberOf = (value: unknown): unknown => typeof value === "bigint" ? Number(value) : value

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
 * Layer builds of this process take their turn, so two stores built at once
 * on one file never wait on each other's schema transaction (a synchronous
 * busy wait would block the event loop the other one needs to commit).
 */
const buildLock = Effect.unsafeMakeSemaphore(1)

/**
 * Creates or migrates the tables (idempotent, safe to run from several
 * processes at once) and checks their shape. A name that differs only in case
 * from a table already there fails with `InvalidIdentifier`, nothing changed.
 */
export const initSchema = (
  runner: Runner,
  dialect: Dialect,
  t: Tables
): Effect.Effect<void, CheckpointStoreError | InvalidIdentifier> =>
  Effect.gen(function*() {
    const db = runner.db
    yield* db.all(
      `CREATE TABLE IF NOT EXISTS ${migrationsTable} (table_name TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL)`,
      []
    )
    yield* runner.transaction(Effect.gen(function*() {
      yield* db.all(
        `INSERT INTO ${migrationsTable} (table_name, version, applied_at) VALUES (?, 0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ` +
          `ON CONFLICT (table_name) DO NOTHING`,
        [t.name]
      )
      // Under the write lock, so two processes cannot create "Runs" and "runs" at once; failing rolls back the insert.
      const twin = yield* caseTwin(db, t.name)
      if (twin !== undefined) return yield* Effect.fail(twin)
      const rows = yield* db.all(`SELECT version FROM ${migrationsTable} WHERE table_name = ?`, [t.name])
      let current = Number(numberOf(rows[0]?.version ?? 0))
      if (current > schemaVersion) {
        return yield* Effect.fail(
          storeError(
            BACKEND,
            "open",
            `table ${t.name} has schema version ${current}, newer than the ${schemaVersion} this version of effect-checkpoint knows; upgrade effect-checkpoint`
          )
        )
      }
      const exists = (yield* db.all(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`, [t.name])).length > 0
      if (current === 0 && exists) {
        // A table nobody recorded (made by hand, or by 0.1.0 before it recorded versions): adopt it if it has the layout.
        current = 1
      }
      if (current > 0 && !exists) {
        // The table was dropped behind the store's back: make it again, without what described it.
        current = 0
        yield* db.all(`DROP TABLE IF EXISTS ${t.executions}`, [])
        yield* db.all(`DROP TABLE IF EXISTS ${t.writes}`, [])
        yield* db.all(`DROP TABLE IF EXISTS ${t.blobs}`, [])
      }
      if (current === 1) yield* checkColumns(db, t)
      for (const migration of migrations) {
        if (migration.version <= current) continue
        for (const statement of migration.up(dialect, t)) yield* db.all(statement, [])
      }
      if (current < schemaVersion) {
        yield* db.all(
          `UPDATE ${migrationsTable} SET version = ?, applied_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE table_name = ?`,
          [schemaVersion, t.name]
        )
      }
    }))
    yield* checkColumns(db, t)
  }).pipe(
    Effect.catchTag("SqlError", (e) => Effect.fail(storeError(BACKEND, "open", driverCause(e)))),
    buildLock.withPermits(1)
  )

const checkColumns = (db: Db, t: Tables) =>
  Effect.gen(function*() {
    const columns = new Set((yield* db.all("SELECT name FROM pragma_table_info(?)", [t.name])).map((r) => r.name))
    const missing = v1Columns.filter((c) => !columns.has(c))
    if (missing.length > 0) {
      return yield* Effect.fail(
        storeError(BACKEND, "open", `table ${t.name} exists but is not a checkpoint table (no column ${missing.join(", ")})`)
      )
    }
  })
