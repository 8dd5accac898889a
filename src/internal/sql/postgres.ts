/**
 * The PostgreSQL dialect of the SQL store, and its schema set-up.
 *
 * @internal
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { type Duration, Effect, Option, Redacted } from "effect"
import * as Checkpoint from "../../Checkpoint.js"
import { CheckpointEncodeError, type CheckpointStoreError } from "../../CheckpointError.js"
import type { Encoded } from "../../CheckpointBackend.js"
import { redact, storeError } from "../storeError.js"
import { type Db, type Dialect, failedTransaction, numbered, type ParamType, type Row } from "./dialect.js"
import { inCallersTransaction, statement, transaction, withDeadline } from "./pgDeadline.js"
import { dropDerived, migrations, migrationsTable, schemaVersion, type Tables } from "./schema.js"

export const BACKEND = "postgres"

/** The columns (and their `format_type`) a table must have to be adopted as schema version 1. */
const REQUIRED_COLUMNS: ReadonlyArray<readonly [string, string]> = [
  ["id", "text"],
  ["execution_id", "text"],
  ["node_name", "text"],
  ["state", "jsonb"],
  ["metadata", "jsonb"],
  ["timestamp", "timestamp with time zone"],
  ["version", "integer"],
  ["next", "jsonb"],
  ["parent_id", "text"]
]
/** The unique indexes it must have (column lists). */
const REQUIRED_UNIQUE: ReadonlyArray<string> = ["id", "execution_id version"]

// -----------------------------------------------------------------------------
// Errors
// -----------------------------------------------------------------------------

interface PgFailure {
  readonly name: string
  readonly message: string
  readonly code?: string
}

const fieldOf = (u: unknown, key: string): unknown =>
  typeof u === "object" && u !== null ? (u as Record<string, unknown>)[key] : undefined

const textOf = (u: unknown): string => {
  if (u instanceof AggregateError && u.errors.length > 0) {
    return u.errors.map(textOf).join("; ")
  }
  const message = fieldOf(u, "message")
  return typeof message === "string" && message.length > 0 ? message : String(u)
}

/** The SQLSTATE (or Node error code) of a failure of `@effect/sql`, if any. */
export const codeOf = (e: unknown): string | undefined => {
  const inner = fieldOf(e, "cause")
  const code = fieldOf(inner, "code") ?? fieldOf(e, "code")
  return typeof code === "string" ? code : undefined
}

/** A plain description of a failure: what the driver said, with its SQLSTATE and detail. */
export const describe = (e: unknown): PgFailure => {
  const inner = fieldOf(e, "cause")
  const outer = textOf(e)
  const detail = fieldOf(inner, "detail")
  const message = inner === undefined || inner === null
    ? outer
    : `${outer}: ${textOf(inner)}${typeof detail === "string" ? ` (${detail})` : ""}`
  const code = codeOf(e)
  return { name: "SqlError", message, ...(code === undefined ? {} : { code }) }
}

// -----------------------------------------------------------------------------
// JSONB limits
// -----------------------------------------------------------------------------

const SUSPECT = /[\u0000\ud800-\udfff]/

/** Why PostgreSQL text cannot hold `s` (a NUL or an unpaired surrogate), or `undefined`. */
export const textProblem = (s: string): string | undefined => {
  if (!SUSPECT.test(s)) return undefined
  if (s.includes("\u0000")) return "contains the NUL character (\\u0000)"
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++
        continue
      }
      return "contains an unpaired surrogate"
    }
    if (c >= 0xdc00 && c <= 0xdfff) return "contains an unpaired surrogate"
  }
  return undefined
}

/** The first string (or key) of a JSON value that JSONB refuses, with its path. */
const jsonbProblem = (value: unknown, path: string): string | undefined => {
  if (typeof value === "string") {
    const problem = textProblem(value)
    return problem === undefined ? undefined : `${path} ${problem}`
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const problem = jsonbProblem(value[i], `${path}[${i}]`)
      if (problem !== undefined) return problem
    }
    return undefined
  }
  if (typeof value === "object" && value !== null) {
    for (const key of Object.keys(value)) {
      const keyProblem = textProblem(key)
      if (keyProblem !== undefined) return `${path} has a key that ${keyProblem}`
      const problem = jsonbProblem((value as Record<string, unknown>)[key], `${path}[${JSON.stringify(key)}]`)
      if (problem !== undefined) return problem
    }
  }
  return undefined
}

const REFUSED = "which PostgreSQL cannot store (JSONB and TEXT refuse it)"

/** What in a checkpoint PostgreSQL would refuse, or `undefined`. */
const checkpointTextProblem = (cp: Checkpoint.Checkpoint): string | undefined => {
  const node = textProblem(cp.nodeName)
  if (node !== undefined) return `nodeName ${node}, ${REFUSED}`
  const problem = jsonbProblem(cp.state, "state") ?? jsonbProblem(cp.metadata, "metadata") ?? jsonbProblem(cp.next, "next")
  return problem === undefined ? undefined : `${problem}, ${REFUSED}`
}

// -----------------------------------------------------------------------------
// Rows
// -----------------------------------------------------------------------------
/** The password of a connection string (raw and decoded), to scrub from error messages. */
export const secretsOf = (url: string): ReadonlyArray<string> => {
  const secrets: Array<string> = []
  const add = (s: string | null | undefined) => {
    if (typeof s === "string" && s.length > 0) {
      secrets.push(s)
      const decoded = Option.getOrUndefined(Option.liftThrowable(decodeURIComponent)(s))
      if (decoded !== undefined && decoded !== s) secrets.push(decoded)
    }
  }
  const parsed = Option.liftThrowable((u: string) => new URL(u))(url)
  if (Option.isSome(parsed)) {
    add(parsed.value.password)
    add(parsed.value.searchParams.get("password"))
  } else {
    // Not a WHATWG URL (e.g. an unescaped '@' in the password): everything between "user:" and the last '@'.
    add(/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^:/?#@]*:(.*)@[^@]*$/.exec(url)?.[1])
  }
  return secrets
}

/** The secrets of an existing client's configuration, if it is a `PgClient`. */
export const secretsOfClient = (sql: SqlClient.SqlClient): ReadonlyArray<string> => {
  if (!(PgClient.TypeId in sql)) return []
  const config = (sql as PgClient.PgClient).config
  return [
    ...(config.url === undefined ? [] : secretsOf(Redacted.value(config.url))),
    ...(config.password === undefined ? [] : [Redacted.value(config.password)])
  ]
}

// -----------------------------------------------------------------------------
// The dialect
// -----------------------------------------------------------------------------

const casts: Record<ParamType, string> = {
  text: "text",
  json: "jsonb",
  int: "integer",
  time: "bigint",
  timestamp: "timestamptz"
}

const quote = (name: string): string => `"${name}"`

export interface PgOptions {
  /** The client the store runs on, without name transforms. */
  readonly sql: SqlClient.SqlClient
  readonly tables: Tables
  readonly secrets: ReadonlyArray<string>
  /** The client is the store's own: an app's transaction in the fiber's context is never joined. */
  readonly ownClient: boolean
  /** `synchronous_commit = off` for the transactions of saves. */
  readonly asyncCommit: boolean
  /** How long a statement may go without an answer before its connection is closed (see `pgDeadline.ts`). */
  readonly queryTimeout: Duration.Duration
  /** How long an operation may wait for a connection from the pool. */
  readonly acquireTimeout: Duration.Duration
  /** The pool bounds that wait itself (its `connectTimeout`). */
  readonly poolBoundsWait: boolean
  /** Statements run as named prepared statements (`pg` parses and plans each once per connection). */
  readonly prepare: boolean
}

/**
 * Every PostgreSQL operation of the store runs through this one function:
 * on a connection of its own, every statement under `queryTimeout` (a stalled
 * connection is closed and the operation fails with a `SqlError` saying so),
 * a caller's interrupt closing the connection (see `pgDeadline.ts`). Use
 * `transaction` from there for a transaction, not `sql.withTransaction`.
 *
 * On the store's own client it never runs on a transaction of the caller's:
 * `@effect/sql` runs a statement on whatever `TransactionConnection` the fiber
 * has, and with `layer` that one belongs to another client. With
 * `layerClient`, joining it is the point (then the operation runs on that
 * transaction's connection, under the same deadline).
 */
export const withConnection = (
  options: Pick<PgOptions, "sql" | "ownClient" | "queryTimeout" | "acquireTimeout" | "poolBoundsWait">
): <A, E>(op: Effect.Effect<A, E>) => Effect.Effect<A, E | SqlError> => {
  const deadline = withDeadline(options.sql, options)({ join: !options.ownClient })
  return (op) => deadline(op)
}

const NOW = "floor(extract(epoch FROM clock_timestamp()) * 1000)::float8"

export const pgDialect = (options: PgOptions): Dialect => {
  const { asyncCommit, prepare, secrets, sql, tables } = options
  const run = withConnection(options)
  // Straight on the operation's `pg` client (see `pgDeadline.ts`); through `@effect/sql` without one.
  const db: Db = {
    all: (text, params) => statement(text, params, prepare, () => sql.unsafe<Row>(text, params as ReadonlyArray<never>))
  }
  /**
   * The first statement of a write transaction: the advisory lock of each
   * execution (in one order, so two writers never wait on each other), then
   * the database's clock; with `synchronous_commit = off` for a save when asked.
   */
  const lockText = (locks: boolean, async: boolean) =>
    `SELECT ${NOW} AS now${async ? ", set_config('synchronous_commit', 'off', true) AS sc" : ""}` +
    (locks
      ? ` FROM (SELECT count(pg_advisory_xact_lock(hashtext($1), hashtext(k))) FROM ` +
        `(SELECT unnest($2::text[]) AS k ORDER BY 1) AS keys) AS locked`
      : "")
  const lockTexts = [lockText(false, false), lockText(false, true), lockText(true, false), lockText(true, true)]
  /** The same lock for one execution, as a CTE body (`single`): the same keys, so both serialise the same writers. */
  const singleLock = (async: boolean) =>
    `SELECT ${NOW} AS now${async ? ", set_config('synchronous_commit', 'off', true) AS sc" : ""} ` +
    `FROM (SELECT count(pg_advisory_xact_lock(hashtext(?::text), hashtext(?::text)))) AS locked`
  /** A save may commit asynchronously: with `synchronousCommit: "off"`, and never inside a transaction of the app's. */
  const commitsAsync: Effect.Effect<boolean> = asyncCommit
    ? Effect.map(inCallersTransaction, (joined) => !joined)
    : Effect.succeed(false)
  return {
    name: BACKEND,
    param: (type) => `?::${casts[type]}`,
    prepare: numbered,
    types: { json: "JSONB", key: `TEXT COLLATE "C"`, time: "BIGINT", timestamp: "TIMESTAMPTZ" },
    jsonText: (column) => `${column}::text`,
    timestampOut: (column) => `(extract(epoch FROM ${column}) * 1000)::float8`,
    timestampMs: (column) => `floor(extract(epoch FROM ${column}) * 1000)::bigint`,
    nextNonEmpty: (column) => `(CASE WHEN jsonb_typeof(${column}) = 'array' THEN jsonb_array_length(${column}) > 0 ELSE false END)`,
    inList: (expr) => `${expr} = ANY(?::text[])`,
    listParam: (values) => values,
    arrayHas: (column, hash) => `${column} @> jsonb_build_array(${hash})`,
    forUpdate: " FOR UPDATE",
    skipLocked: " FOR UPDATE SKIP LOCKED",
    isUniqueViolation: (e) => codeOf(e) === "23505",
    isSerializationFailure: (e) => codeOf(e) === "40001",
    storeError: (operation, e) => storeError(BACKEND, operation, describe(e), secrets),
    encodeError: (e, batch) => {
      const code = codeOf(e)
      if (code === undefined || !code.startsWith("22")) return undefined
      for (const { checkpoint: cp } of batch) {
        const problem = checkpointTextProblem(cp)
        if (problem !== undefined) return new CheckpointEncodeError({ id: cp.id, message: problem })
      }
      return new CheckpointEncodeError({
        ...(batch.length === 1 ? { id: batch[0]!.checkpoint.id } : {}),
        message: `PostgreSQL refused the data: ${redact(describe(e).message, secrets)}`
      })
    },
    checkpointProblem: (e: Encoded) => {
      const problem = textProblem(e.checkpoint.nodeName)
      return problem === undefined
        ? undefined
        : new CheckpointEncodeError({ id: e.checkpoint.id, message: `nodeName ${problem}, ${REFUSED}` })
    },
    writesProblem: (checkpointId, writes) => {
      for (const w of writes) {
        if (!/\\u(0000|d[89a-f])/i.test(w.json)) continue
        const problem = jsonbProblem(w.value, `writes[${JSON.stringify(w.key)}]`)
        if (problem !== undefined) return new CheckpointEncodeError({ id: checkpointId, message: `${problem}, ${REFUSED}` })
      }
      return undefined
    },
    read: (body) => run(body(db)),
    single: {
      lock: singleLock,
      // Not inside a transaction of the caller's that the operation joins (`layerClient`): there, a failed
      // plain statement would abort it, so the save takes the transaction path (a savepoint). The caller's
      // transaction is looked up outside `run`, which provides the operation's own connection as one.
      run: (body) =>
        Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (tx) =>
          Option.isSome(tx) && !options.ownClient
            ? Effect.succeedNone
            : run(Effect.asSome(body(db, asyncCommit))))
    },
    write: (executions, _given, body, save) =>
      run(Effect.flatMap(save === true ? commitsAsync : Effect.succeed(false), (async) =>
        // Our own BEGIN/COMMIT on the operation's connection; in a transaction of the caller's, a savepoint.
        failedTransaction(transaction(
          sql,
          Effect.flatMap(
            db.all(
              lockTexts[(executions.length > 0 ? 2 : 0) + (async ? 1 : 0)]!,
              executions.length > 0 ? [tables.checkpoints, executions] : []
            ),
            (rows) => body(db, Number(rows[0]?.now))
          )
        ))))
  }
}

// -----------------------------------------------------------------------------
// Schema
// -----------------------------------------------------------------------------

interface Probe {
  readonly schema_exists: boolean
  readonly versions_exists: boolean
  readonly table_exists: boolean
}

/**
 * Creates or migrates the tables. The fast path (the store is at
 * {@link schemaVersion}) only reads, so a role without DDL rights can build
 * the layer once the tables exist; everything else runs in one transaction
 * under an advisory lock on the PostgreSQL schema, so layers built at the same
 * time in several processes never race on `CREATE … IF NOT EXISTS`.
 */
export const ensureSchema = (
  sql: SqlClient.SqlClient,
  dialect: Dialect,
  schema: string | undefined,
  tables: Tables
): Effect.Effect<void, SqlError | CheckpointStoreError> =>
  Effect.gen(function*() {
    const versions = `${schema === undefined ? "" : `${quote(schema)}.`}${quote(migrationsTable)}`
    const probeText = `SELECT (CASE WHEN $1::text IS NULL THEN current_schema() ELSE to_regnamespace($1::text)::text END) ` +
      `IS NOT NULL AS schema_exists, to_regclass($2) IS NOT NULL AS versions_exists, to_regclass($3) IS NOT NULL AS table_exists`
    const probe = Effect.map(
      sql.unsafe<Probe>(probeText, [schema === undefined ? null : quote(schema), versions, tables.checkpoints]),
      (rows) => rows[0]!
    )
    const recorded = Effect.map(
      sql.unsafe<{ version: number }>(`SELECT version FROM ${versions} WHERE table_name = $1`, [tables.name]),
      (rows) => rows[0]?.version ?? 0
    )

    const seen = yield* probe
    if (seen.versions_exists && seen.table_exists && (yield* recorded) === schemaVersion) return

    yield* transaction(sql, Effect.gen(function*() {
      yield* sql.unsafe(
        `SELECT pg_advisory_xact_lock(hashtext('effect-checkpoint'), hashtext(coalesce($1::text, current_schema(), '')))`,
        [schema ?? null]
      )
      // Not `probe`: its `to_regclass` may answer from this session's catalog cache, which may not have seen
      // what the builder before us committed while we waited for the lock. Reading the catalogs does.
      const now = yield* Effect.map(
        sql.unsafe<Probe>(
          `WITH ns AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = coalesce($1::text, current_schema())) ` +
            `SELECT EXISTS (SELECT 1 FROM ns) AS schema_exists, ` +
            `EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN ns ON c.relnamespace = ns.oid WHERE c.relname = $2::text) AS versions_exists, ` +
            `EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN ns ON c.relnamespace = ns.oid WHERE c.relname = $3::text) AS table_exists`,
          [schema ?? null, migrationsTable, tables.name]
        ),
        (rows) => rows[0]!
      )
      if (schema !== undefined && !now.schema_exists) {
        yield* sql.unsafe(`CREATE SCHEMA IF NOT EXISTS ${quote(schema)}`)
      }
      if (!now.versions_exists) {
        yield* sql.unsafe(
          `CREATE TABLE IF NOT EXISTS ${versions} (table_name TEXT PRIMARY KEY, version INTEGER NOT NULL, ` +
            `migrated_at TIMESTAMPTZ NOT NULL DEFAULT now())`
        )
      }
      let version = now.versions_exists ? yield* recorded : 0
      if (version > schemaVersion) {
        return yield* Effect.fail(storeError(
          BACKEND,
          "migrate",
          new Error(
            `table ${tables.checkpoints} is at schema version ${version}, made by a newer effect-checkpoint ` +
              `(this one knows version ${schemaVersion}); upgrade effect-checkpoint`
          )
        ))
      }
      if (version === schemaVersion && now.table_exists) return
      if (version === 0 && now.table_exists) {
        // A table nobody recorded: one made by hand or by an older tool. Adopt it if it has the 0.1.0 layout.
        const missing = yield* layoutProblems(sql, tables.checkpoints)
        if (missing.length > 0) {
          return yield* Effect.fail(storeError(
            BACKEND,
            "migrate",
            new Error(
              `table ${tables.checkpoints} exists but does not have the effect-checkpoint layout (${missing.join("; ")}); ` +
                `upgrade it as the README's "Upgrading an existing table" section shows, or choose another tableName`
            )
          ))
        }
        version = 1
      } else if (version > 0 && !now.table_exists) {
        // The table was dropped but its record was not: make it again, without what described it.
        version = 0
        for (const statement of dropDerived(tables)) yield* sql.unsafe(statement)
      }
      for (const migration of migrations) {
        if (migration.version > version) {
          for (const statement of migration.up(dialect, tables)) yield* sql.unsafe(statement)
        }
      }
      yield* sql.unsafe(
        `INSERT INTO ${versions} (table_name, version) VALUES ($1, $2) ` +
          `ON CONFLICT (table_name) DO UPDATE SET version = EXCLUDED.version, migrated_at = now()`,
        [tables.name, schemaVersion]
      )
    }))
  })

/** What an existing table lacks to be used as it is: missing columns (or wrong types) and unique indexes. */
const layoutProblems = (sql: SqlClient.SqlClient, table: string) =>
  Effect.gen(function*() {
    const columns = yield* sql.unsafe<{ name: string; type: string }>(
      `SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute ` +
        `WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`,
      [table]
    )
    const uniques = yield* sql.unsafe<{ columns: string }>(
      `SELECT (SELECT string_agg(a.attname, ' ' ORDER BY k.ord) FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) ` +
        `JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) AS columns ` +
        `FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL`,
      [table]
    )
    const types = new Map(columns.map((c) => [c.name, c.type]))
    const problems: Array<string> = []
    for (const [name, type] of REQUIRED_COLUMNS) {
      const actual = types.get(name)
      if (actual === undefined) problems.push(`no column ${name} ${type}`)
      else if (actual !== type) problems.push(`column ${name} is ${actual}, not ${type}`)
    }
    const unique = new Set(uniques.map((u) => u.columns))
    for (const cols of REQUIRED_UNIQUE) {
      if (!unique.has(cols)) problems.push(`no UNIQUE (${cols.split(" ").join(", ")})`)
    }
    return problems
  })
