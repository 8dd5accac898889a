/**
 * The PostgreSQL checkpoint store, on `@effect/sql-pg`: the production store.
 *
 * One table holds the checkpoints (default `checkpoints`):
 *
 * | column | type | |
 * |---|---|---|
 * | `id` | `TEXT PRIMARY KEY` | the checkpoint id |
 * | `execution_id` | `TEXT NOT NULL` | |
 * | `node_name` | `TEXT NOT NULL` | |
 * | `state` | `JSONB NOT NULL` | the encoded state |
 * | `metadata` | `JSONB NOT NULL` | a JSON object |
 * | `timestamp` | `TIMESTAMPTZ NOT NULL` | millisecond precision |
 * | `version` | `INTEGER NOT NULL` | `UNIQUE (execution_id, version)`: its index serves `list`, `latest`, `prune` and `listExecutions` |
 * | `next` | `JSONB NOT NULL` | a JSON array of node names |
 * | `parent_id` | `TEXT` | `NULL` for the first checkpoint |
 *
 * The table is created when the layer is built, under a transaction-scoped
 * advisory lock, so any number of processes may build the layer at once. Its
 * schema version is recorded in `effect_checkpoint_migrations` (in the same
 * PostgreSQL schema): a later release migrates the table it finds there.
 *
 * Every operation is one statement (one round trip): `save` is one `INSERT`,
 * `saveMany` one multi-row `INSERT` (all or nothing; a batch of more than 5000
 * runs one `INSERT` per 5000 in one transaction), `list` pushes `limit` and
 * `afterVersion` into SQL (the limit is applied before the JSON columns are
 * converted to text, so a page costs its own rows, whatever plan PostgreSQL
 * picks), `latest` is `ORDER BY version DESC LIMIT 1`, `prune` and
 * `listExecutions` are one statement each.
 *
 * A conditional save (`expect`) is the same one statement: `INSERT … SELECT …
 * WHERE` the expected execution's newest version (an index lookup, on the
 * statement's snapshot) is the expected one. When it is not, the statement
 * inserts no row and the save fails with `CheckpointConflict`; nothing else is
 * sent. Two conditional saves racing on one execution both see it as it was
 * before either committed, so both may pass that check; the
 * `(execution_id, version)` key then holds the second until the first commits,
 * and the second fails with the same conflict (with the version it found). That
 * key is what separates them: it does when both write the version after the one
 * they expect, as an append (and the graph engine) does. Under the default READ
 * COMMITTED, two conditional saves that write disjoint versions of one execution
 * (neither writing `latestVersion + 1`) can both succeed; under SERIALIZABLE,
 * PostgreSQL refuses one of them, which the store reports as the conflict too.
 * The check costs the server one more query plan per save: `@effect/sql-pg`
 * sends unnamed statements, which PostgreSQL plans each time.
 *
 * JSONB keeps JSON values, not JSON text: objects come back equal, but with
 * their keys in JSONB's order (shorter keys first), and JSONB refuses the NUL
 * character (`\u0000`) and unpaired surrogates in strings. A checkpoint holding
 * one fails with `CheckpointEncodeError` and nothing is written.
 *
 * @since 0.1.0
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { Cause, Config, Context, type Duration, Effect, identity, Layer, Option, Redacted } from "effect"
import * as Checkpoint from "../Checkpoint.js"
import {
  CheckpointConflict,
  CheckpointDecodeError,
  CheckpointEncodeError,
  type CheckpointStoreError,
  type InvalidIdentifier
} from "../CheckpointError.js"
import * as CheckpointStore from "../CheckpointStore.js"
import { checkSqlName, invalid, isValidId } from "../internal/identifier.js"
import { redact, storeError } from "../internal/storeError.js"

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/**
 * `synchronous_commit` for the store's saves. `"on"` (the default) makes a
 * save return only after its commit is flushed to disk. `"off"` lets a save
 * return before the flush (measured here: a save takes ~60% of the time), and
 * a crash of the PostgreSQL server or its machine (not of your process) may
 * lose the saves of the last `3 × wal_writer_delay` (600 ms by default) —
 * never corrupting the table or keeping half of a `saveMany`. It applies to
 * the store's `INSERT`s only, not to the connection, so a shared pool keeps
 * its own setting, and not inside a transaction of yours (see {@link layerClient}).
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
  /** The table that holds the checkpoints (default `"checkpoints"`): `[A-Za-z_][A-Za-z0-9_]{0,62}`, quoted, so case is kept. */
  readonly tableName?: string | undefined
  /**
   * The PostgreSQL schema of the table (created if missing); default: the
   * first schema of the connection's `search_path` (usually `public`).
   * Same rules as `tableName`.
   */
  readonly schema?: string | undefined
  /** `synchronous_commit` for saves (default `"on"`); see {@link SynchronousCommit}. */
  readonly synchronousCommit?: SynchronousCommit | undefined
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

const BACKEND = "postgres"
const DEFAULT_TABLE = "checkpoints"
const DEFAULT_APPLICATION_NAME = "effect-checkpoint"
const DEFAULT_CONNECT_TIMEOUT: Duration.DurationInput = "5 seconds"
/** Rows per `INSERT` of a `saveMany` (9 parameters a row; PostgreSQL allows 65535). */
const ROWS_PER_INSERT = 5000

// -----------------------------------------------------------------------------
// Schema and migrations
// -----------------------------------------------------------------------------

/**
 * The table that records each checkpoint table's schema version: one row per
 * checkpoint table (`table_name`, `version`, `migrated_at`), in the same
 * PostgreSQL schema as the checkpoint tables. It cannot be used as a
 * `tableName`.
 *
 * @since 0.1.0
 * @category schema
 */
export const migrationsTable = "effect_checkpoint_migrations"

/**
 * The migrations of a checkpoint table, in order. A migration's statements run
 * in the schema transaction, under the advisory lock, together with the
 * version update. Statements get the qualified, quoted table name.
 */
const migrations: ReadonlyArray<{ readonly version: number; readonly up: (table: string) => ReadonlyArray<string> }> = [
  {
    version: 1,
    up: (table) => [
      `CREATE TABLE IF NOT EXISTS ${table} (
  id TEXT PRIMARY KEY,
  execution_id TEXT NOT NULL,
  node_name TEXT NOT NULL,
  state JSONB NOT NULL,
  metadata JSONB NOT NULL,
  "timestamp" TIMESTAMPTZ NOT NULL,
  version INTEGER NOT NULL,
  next JSONB NOT NULL,
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

const COLUMN_LIST = `id, execution_id, node_name, state, metadata, "timestamp", version, next, parent_id`
/** The columns as the store reads them: JSON as text (parsed here, never by a type parser), time as epoch ms. */
const SELECT_LIST = `id, execution_id, node_name, state::text AS state, metadata::text AS metadata, next::text AS next, ` +
  `(extract(epoch FROM "timestamp") * 1000)::float8 AS ts, version, parent_id`

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
const codeOf = (e: unknown): string | undefined => {
  const inner = fieldOf(e, "cause")
  const code = fieldOf(inner, "code") ?? fieldOf(e, "code")
  return typeof code === "string" ? code : undefined
}

/** A plain description of a failure: what the driver said, with its SQLSTATE and detail. */
const describe = (e: unknown): PgFailure => {
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
const textProblem = (s: string): string | undefined => {
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

interface Row {
  readonly id: unknown
  readonly execution_id: unknown
  readonly node_name: unknown
  readonly state: string | null
  readonly metadata: string | null
  readonly next: string | null
  readonly ts: unknown
  readonly version: unknown
  readonly parent_id: unknown
}

interface SummaryRow {
  readonly execution_id: unknown
  readonly id: unknown
  readonly version: unknown
  readonly ts: unknown
  readonly pending: unknown
}

const parseColumn = (text: string | null): unknown => (text === null ? undefined : JSON.parse(text))

const decodeRow = (row: Row): Effect.Effect<Checkpoint.Checkpoint, CheckpointDecodeError> => {
  const id = typeof row.id === "string" ? row.id : undefined
  return Effect.try({
    try: () => ({
      id: row.id,
      executionId: row.execution_id,
      nodeName: row.node_name,
      state: parseColumn(row.state),
      metadata: parseColumn(row.metadata),
      next: parseColumn(row.next),
      timestamp: row.ts,
      version: row.version,
      parentId: row.parent_id
    }),
    catch: (e) =>
      new CheckpointDecodeError({
        ...(id === undefined ? {} : { id }),
        message: `Stored checkpoint${id === undefined ? "" : ` ${JSON.stringify(id)}`} holds JSON that does not parse: ${textOf(e)}`
      })
  }).pipe(Effect.flatMap((fields) => Checkpoint.decodeFields(fields, id)))
}

const decodeSummary = (row: SummaryRow): Effect.Effect<CheckpointStore.ExecutionSummary, CheckpointDecodeError> => {
  const { execution_id: executionId, id, pending, ts, version } = row
  if (
    isValidId(executionId) && isValidId(id) && typeof version === "number" &&
    Checkpoint.versionProblem(version) === undefined && typeof ts === "number" && Number.isFinite(ts) &&
    typeof pending === "boolean"
  ) {
    return Effect.succeed({
      executionId: executionId as Checkpoint.ExecutionId,
      latestVersion: version,
      latestCheckpointId: id as Checkpoint.CheckpointId,
      updatedAt: new Date(ts),
      pending
    })
  }
  const known = typeof id === "string" ? id : undefined
  const problems = [
    isValidId(executionId) ? undefined : `execution id ${JSON.stringify(executionId)} is not valid`,
    isValidId(id) ? undefined : "id is not valid",
    typeof version === "number" && Checkpoint.versionProblem(version) === undefined ? undefined : `version ${String(version)} is not valid`,
    typeof ts === "number" && Number.isFinite(ts) ? undefined : "timestamp is not valid",
    typeof pending === "boolean" ? undefined : "next is not an array"
  ].filter((p) => p !== undefined)
  return Effect.fail(
    new CheckpointDecodeError({
      ...(known === undefined ? {} : { id: known }),
      message: `Stored checkpoint${known === undefined ? "" : ` ${JSON.stringify(known)}`} is not a valid checkpoint: ${problems.join("; ")}`
    })
  )
}

// -----------------------------------------------------------------------------
// The store
// -----------------------------------------------------------------------------

const quote = (name: string): string => `"${name}"`

/** Checks the table and schema names; the error for the first bad one. */
const checkNames = (options: ClientOptions): InvalidIdentifier | undefined => {
  const tableName = options.tableName ?? DEFAULT_TABLE
  const tableError = checkSqlName("tableName", tableName)
  if (tableError !== undefined) return tableError
  if (tableName === migrationsTable) return invalid("tableName", tableName, "is the name of the schema-version table")
  return options.schema === undefined ? undefined : checkSqlName("schemaName", options.schema)
}

/** The password of a connection string (raw and decoded), to scrub from error messages. */
const secretsOf = (url: string): ReadonlyArray<string> => {
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
const secretsOfClient = (sql: SqlClient.SqlClient): ReadonlyArray<string> => {
  if (!(PgClient.TypeId in sql)) return []
  const config = (sql as PgClient.PgClient).config
  return [
    ...(config.url === undefined ? [] : secretsOf(Redacted.value(config.url))),
    ...(config.password === undefined ? [] : [Redacted.value(config.password)])
  ]
}

/**
 * Builds a PostgreSQL store on the `SqlClient` in context (which must be a
 * PostgreSQL client, e.g. `PgClient.layer`): creates or migrates its table
 * (see {@link migrationsTable}) and returns the store. The client's name
 * transforms are not applied to the store's statements or rows.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: ClientOptions = {}
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier, SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (client) => makeWith(client, options, secretsOfClient(client), false))

/**
 * The store on `client`. `ownClient`: the client is the store's own ({@link layer}), so a
 * `TransactionConnection` in the caller's context is another client's and must not be used.
 */
const makeWith = (
  client: SqlClient.SqlClient,
  options: ClientOptions,
  secrets: ReadonlyArray<string>,
  ownClient: boolean
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier> =>
  Effect.gen(function*() {
    const nameError = checkNames(options)
    if (nameError !== undefined) return yield* Effect.fail(nameError)
    const isPg = client.onDialectOrElse({ pg: () => true, orElse: () => false })
    if (!isPg) {
      return yield* Effect.fail(
        storeError(BACKEND, "connect", new Error("PostgresStore needs a PostgreSQL SqlClient (e.g. PgClient.layer)"))
      )
    }
    const sql = client.withoutTransforms()
    const tableName = options.tableName ?? DEFAULT_TABLE
    const schema = options.schema
    const prefix = schema === undefined ? "" : `${quote(schema)}.`
    const table = `${prefix}${quote(tableName)}`
    const versions = `${prefix}${quote(migrationsTable)}`
    const fail = (operation: string) => (e: unknown) => Effect.fail(storeError(BACKEND, operation, describe(e), secrets))
    const run = <A extends object>(text: string, params: ReadonlyArray<unknown> = []) => sql.unsafe<A>(text, params)
    /**
     * An operation of the store. On its own client, it never runs on a transaction of the caller's:
     * `@effect/sql` runs a statement on whatever `TransactionConnection` the fiber has, and with
     * {@link layer} that one belongs to another client (the app's `sql.withTransaction`, maybe not
     * even PostgreSQL). With {@link layerClient} joining it is the point.
     */
    const own: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E> = ownClient
      ? (effect) =>
        Effect.flatMap(
          Effect.serviceOption(SqlClient.TransactionConnection),
          (tx) => Option.isNone(tx) ? effect : Effect.mapInputContext(effect, Context.omit(SqlClient.TransactionConnection))
        )
      : identity

    yield* ensureSchema(sql, { schema, tableName, table, versions }).pipe(
      Effect.catchTag("SqlError", fail("schema"))
    )

    // --- statements, built once ---------------------------------------------
    const asyncCommit = options.synchronousCommit === "off"
    /** The 9 values of row `i` (parameters `$9i+1` … `$9i+9`), without parentheses. */
    const rowValues = (i: number, async: boolean) => {
      const b = i * 9
      // synchronousCommit "off": the first row's parent_id sets it for this statement's own (implicit)
      // transaction only — one statement still, and the cheapest form to plan (measured).
      const parentId = async && i === 0
        ? `CASE WHEN set_config('synchronous_commit', 'off', true) = 'off' THEN $${b + 9}::text END`
        : `$${b + 9}::text`
      return `$${b + 1}::text, $${b + 2}::text, $${b + 3}::text, $${b + 4}::jsonb, $${b + 5}::jsonb, ` +
        `$${b + 6}::timestamptz, $${b + 7}::integer, $${b + 8}::jsonb, ${parentId}`
    }
    const valuesList = (rows: number, async: boolean) =>
      Array.from({ length: rows }, (_, i) => `(${rowValues(i, async)})`).join(", ")
    /**
     * The expectation of a conditional save, on parameters `$p` (execution id) and `$p+1` (its expected newest
     * version, 0 = none). An uncorrelated subquery: PostgreSQL evaluates it once, as a one-time filter, on the
     * statement's snapshot, before any row is built — so a failed expectation inserts nothing (0 rows) and,
     * with `synchronousCommit: "off"`, never reaches the `set_config`.
     */
    const expectation = (p: number) =>
      `COALESCE((SELECT version FROM ${table} WHERE execution_id = $${p}::text ORDER BY version DESC LIMIT 1), 0) ` +
      `= $${p + 1}::integer`
    /**
     * The `INSERT` of `rows` rows; `conditional`: only if the expectation (its last two parameters) holds —
     * still one statement. One row: `INSERT … SELECT <values> WHERE …` (cheaper to plan than a `VALUES` list).
     */
    const insertText = (rows: number, async: boolean, conditional: boolean) =>
      !conditional
        ? `INSERT INTO ${table} (${COLUMN_LIST}) VALUES ${valuesList(rows, async)}`
        : rows === 1
        ? `INSERT INTO ${table} (${COLUMN_LIST}) SELECT ${rowValues(0, async)} WHERE ${expectation(10)}`
        : `INSERT INTO ${table} (${COLUMN_LIST}) SELECT * FROM (VALUES ${valuesList(rows, async)}) AS v ` +
          `WHERE ${expectation(rows * 9 + 1)}`
    const insertOneTexts = {
      sync: insertText(1, false, false),
      async: insertText(1, true, false),
      syncIf: insertText(1, false, true),
      asyncIf: insertText(1, true, true)
    }
    /**
     * Whether a save may commit asynchronously: only with `synchronousCommit: "off"`, and never inside a
     * transaction of the app's (a save inside `sql.withTransaction` joins it, and must not change how it commits).
     */
    const commitsAsync: Effect.Effect<boolean> = asyncCommit
      ? Effect.map(Effect.serviceOption(SqlClient.TransactionConnection), Option.isNone)
      : Effect.succeed(false)
    const loadText = `SELECT ${SELECT_LIST} FROM ${table} WHERE id = $1`
    // LIMIT first, converting after: the subquery keeps the columns as stored, so whatever plan PostgreSQL
    // picks (on a table not analysed yet: a bitmap scan and a sort of the whole execution), only the rows
    // returned are converted to text. Its ORDER BY is kept by the outer one (no second sort).
    const listText = `SELECT ${SELECT_LIST} FROM (SELECT ${COLUMN_LIST} FROM ${table} ` +
      `WHERE execution_id = $1 AND version > $2 ORDER BY version LIMIT $3) AS page ORDER BY version`
    const latestText = `SELECT ${SELECT_LIST} FROM ${table} WHERE execution_id = $1 ORDER BY version DESC LIMIT 1`
    const latestVersionText = `SELECT COALESCE((SELECT version FROM ${table} WHERE execution_id = $1 ` +
      `ORDER BY version DESC LIMIT 1), 0) AS version`
    const executionsText = `SELECT DISTINCT ON (execution_id) execution_id, id, version, ` +
      `(extract(epoch FROM "timestamp") * 1000)::float8 AS ts, ` +
      `CASE WHEN jsonb_typeof(next) = 'array' THEN jsonb_array_length(next) > 0 END AS pending ` +
      `FROM ${table} ORDER BY execution_id, version DESC`
    const deleteText = `DELETE FROM ${table} WHERE id = $1`
    const clearText = `DELETE FROM ${table} WHERE execution_id = $1`
    // The (keep+1)-th newest version and every older one go; fewer than keep+1 rows → the subquery is NULL → none.
    const pruneText = `WITH removed AS (DELETE FROM ${table} WHERE execution_id = $1 AND version <= ` +
      `(SELECT version FROM ${table} WHERE execution_id = $1 ORDER BY version DESC OFFSET $2 LIMIT 1) RETURNING 1) ` +
      `SELECT count(*)::int AS n FROM removed`
    const conflictText = `SELECT id, execution_id, version FROM ${table} ` +
      `WHERE id = ANY($1::text[]) OR (execution_id, version) IN (SELECT * FROM unnest($2::text[], $3::int[]))`

    const paramsOf = (e: Checkpoint.Encoded): Array<unknown> => {
      const cp = e.checkpoint
      return [cp.id, cp.executionId, cp.nodeName, e.state, e.metadata, e.timestamp, cp.version, e.next, cp.parentId ?? null]
    }

    const conflictOf = (cp: Checkpoint.Checkpoint) =>
      new CheckpointConflict({ executionId: cp.executionId, version: cp.version, id: cp.id })

    /** The checkpoint of a batch that collides with a stored one (one query, on the error path only). */
    const findConflict = (batch: ReadonlyArray<Checkpoint.Encoded>) =>
      run<{ id: string; execution_id: string; version: number }>(conflictText, [
        batch.map((e) => e.checkpoint.id),
        batch.map((e) => e.checkpoint.executionId),
        batch.map((e) => e.checkpoint.version)
      ]).pipe(
        Effect.map((rows) => {
          const ids = new Set(rows.map((r) => r.id))
          const slots = new Set(rows.map((r) => `${r.execution_id}\u0000${r.version}`))
          const hit = batch.find(({ checkpoint: cp }) => ids.has(cp.id) || slots.has(`${cp.executionId}\u0000${cp.version}`))
          return conflictOf((hit ?? batch[0]!).checkpoint)
        }),
        Effect.orElseSucceed(() => conflictOf(batch[0]!.checkpoint))
      )

    /** A refused value (SQLSTATE class 22): which checkpoint, and why. */
    const encodeErrorOf = (batch: ReadonlyArray<Checkpoint.Encoded>, e: SqlError) => {
      for (const { checkpoint: cp } of batch) {
        const problem = checkpointTextProblem(cp)
        if (problem !== undefined) return new CheckpointEncodeError({ id: cp.id, message: problem })
      }
      return new CheckpointEncodeError({
        ...(batch.length === 1 ? { id: batch[0]!.checkpoint.id } : {}),
        message: `PostgreSQL refused the checkpoint's data: ${redact(describe(e).message, secrets)}`
      })
    }

    /** What a failed `INSERT` means: a taken id or version, a refused value, or a store failure. */
    const insertFailure = (
      batch: ReadonlyArray<Checkpoint.Encoded>,
      operation: string,
      e: SqlError,
      code: string | undefined
    ): Effect.Effect<never, InsertError> => {
      if (code === "23505") {
        return Effect.flatMap(
          batch.length === 1 ? Effect.succeed(conflictOf(batch[0]!.checkpoint)) : findConflict(batch),
          Effect.fail
        )
      }
      if (code !== undefined && code.startsWith("22")) return Effect.fail(encodeErrorOf(batch, e))
      return fail(operation)(e)
    }

    /**
     * A conditional save whose expectation held on its snapshot but that lost to a save committed meanwhile:
     * a taken `(executionId, version)` (23505, READ COMMITTED) or a serialization failure (40001, SERIALIZABLE).
     * If the execution's newest version is no longer the expected one, that is the expectation's conflict
     * (with the version found); otherwise the failure is what it says. Error path only: one more query.
     */
    const lostRace = (
      batch: ReadonlyArray<Checkpoint.Encoded>,
      operation: string,
      expect: CheckpointStore.Expectation,
      e: SqlError,
      code: "23505" | "40001"
    ): Effect.Effect<never, InsertError> =>
      run<{ version: unknown }>(latestVersionText, [expect.executionId]).pipe(
        Effect.map((rows) => rows[0]?.version),
        // The app's transaction this save joined is aborted now: nothing can be read on it.
        Effect.orElseSucceed(() => undefined),
        Effect.flatMap((actual) =>
          typeof actual === "number"
            ? actual === expect.latestVersion
              ? insertFailure(batch, operation, e, code)
              : Effect.fail(CheckpointStore.expectationFailed(expect, actual))
            : code === "23505"
            ? Effect.fail(CheckpointStore.expectationFailed(expect))
            : fail(operation)(e)
        )
      )

    /** Runs a conditional `INSERT`: inserting no row means the expectation did not hold. */
    const runIf = (text: string, params: ReadonlyArray<unknown>, expect: CheckpointStore.Expectation) =>
      Effect.flatMap(
        sql.unsafe(text, params).raw,
        (result) => fieldOf(result, "rowCount") === 0 ? Effect.fail(CheckpointStore.expectationFailed(expect)) : Effect.void
      )

    /** One `INSERT` of `part` (conditional if `expect` is given), the expectation's values as its last parameters. */
    const insertPart = (
      part: ReadonlyArray<Checkpoint.Encoded>,
      async: boolean,
      expect: CheckpointStore.Expectation | undefined
    ) => {
      const one = part.length === 1
      if (expect === undefined) {
        return Effect.asVoid(run(
          one ? (async ? insertOneTexts.async : insertOneTexts.sync) : insertText(part.length, async, false),
          one ? paramsOf(part[0]!) : part.flatMap(paramsOf)
        ))
      }
      const params = one ? paramsOf(part[0]!) : part.flatMap(paramsOf)
      params.push(expect.executionId, expect.latestVersion)
      return runIf(
        one ? (async ? insertOneTexts.asyncIf : insertOneTexts.syncIf) : insertText(part.length, async, true),
        params,
        expect
      )
    }

    const insertBatch = (
      batch: ReadonlyArray<Checkpoint.Encoded>,
      operation: string,
      expect: CheckpointStore.Expectation | undefined
    ) => {
      const statement = Effect.flatMap(commitsAsync, (async) =>
        batch.length <= ROWS_PER_INSERT
          ? insertPart(batch, async, expect)
          // More than one INSERT: one transaction, the expectation checked by the first.
          : sql.withTransaction(Effect.forEach(
            chunks(batch, ROWS_PER_INSERT),
            (part, i) => i === 0 ? insertPart(part, async, expect) : insertPart(part, false, undefined),
            { discard: true }
          )))
      return statement.pipe(
        Effect.catchTag("SqlError", (e): Effect.Effect<never, InsertError> => {
          const code = codeOf(e)
          return expect !== undefined && (code === "23505" || code === "40001")
            ? lostRace(batch, operation, expect, e, code)
            : insertFailure(batch, operation, e, code)
        })
      )
    }

    /** `nodeName` goes to a TEXT column as it is: refuse what PostgreSQL would refuse or silently replace. */
    const guardText = (batch: ReadonlyArray<Checkpoint.Encoded>) => {
      for (const { checkpoint: cp } of batch) {
        const problem = textProblem(cp.nodeName)
        if (problem !== undefined) {
          return new CheckpointEncodeError({ id: cp.id, message: `nodeName ${problem}, ${REFUSED}` })
        }
      }
      return undefined
    }

    const decodeFirst = (rows: ReadonlyArray<Row>) =>
      rows.length === 0 ? Effect.succeedNone : Effect.asSome(decodeRow(rows[0]!))

    return CheckpointStore.make({
      insertOne: (e, expect) => {
        const problem = guardText([e])
        return problem === undefined ? own(insertBatch([e], "save", expect)) : Effect.fail(problem)
      },
      insert: (batch, expect) => {
        const problem = guardText(batch)
        return problem === undefined ? own(insertBatch(batch, "saveMany", expect)) : Effect.fail(problem)
      },
      load: (id) =>
        own(run<Row>(loadText, [id]).pipe(
          Effect.catchTag("SqlError", fail("load")),
          Effect.flatMap(decodeFirst)
        )),
      list: (executionId, afterVersion, limit) =>
        own(run<Row>(listText, [
          executionId,
          Math.min(Math.max(Math.floor(afterVersion), 0), Checkpoint.MAX_VERSION),
          limit === undefined ? null : Math.min(limit, Checkpoint.MAX_VERSION)
        ]).pipe(
          Effect.catchTag("SqlError", fail("list")),
          Effect.flatMap((rows) => Effect.forEach(rows, decodeRow))
        )),
      latest: (executionId) =>
        own(run<Row>(latestText, [executionId]).pipe(
          Effect.catchTag("SqlError", fail("latest")),
          Effect.flatMap(decodeFirst)
        )),
      listExecutions: own(run<SummaryRow>(executionsText).pipe(
        Effect.catchTag("SqlError", fail("listExecutions")),
        Effect.flatMap((rows) => Effect.forEach(rows, decodeSummary))
      )),
      delete: (id) => own(run(deleteText, [id]).pipe(Effect.asVoid, Effect.catchTag("SqlError", fail("delete")))),
      clear: (executionId) =>
        own(run(clearText, [executionId]).pipe(Effect.asVoid, Effect.catchTag("SqlError", fail("clear")))),
      prune: (executionId, keep) =>
        own(run<{ n: number }>(pruneText, [executionId, keep]).pipe(
          Effect.map((rows) => rows[0]?.n ?? 0),
          Effect.catchTag("SqlError", fail("prune"))
        ))
    })
  })

const chunks = <A>(items: ReadonlyArray<A>, size: number): ReadonlyArray<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

type InsertError = CheckpointConflict | CheckpointEncodeError | CheckpointStoreError

interface Names {
  readonly schema: string | undefined
  readonly tableName: string
  /** Qualified, quoted. */
  readonly table: string
  /** Qualified, quoted. */
  readonly versions: string
}

interface Probe {
  readonly schema_exists: boolean
  readonly versions_exists: boolean
  readonly table_exists: boolean
}

/**
 * Creates or migrates the table. The fast path (the table is at
 * {@link schemaVersion}) only reads, so a role without DDL rights can build
 * the layer once the table exists; everything else runs in one transaction
 * under an advisory lock on the PostgreSQL schema, so layers built at the same
 * time in several processes never race on `CREATE … IF NOT EXISTS`.
 */
const ensureSchema = (sql: SqlClient.SqlClient, names: Names) =>
  Effect.gen(function*() {
    const probeText = `SELECT (CASE WHEN $1::text IS NULL THEN current_schema() ELSE to_regnamespace($1::text)::text END) ` +
      `IS NOT NULL AS schema_exists, to_regclass($2) IS NOT NULL AS versions_exists, to_regclass($3) IS NOT NULL AS table_exists`
    const probe = Effect.map(
      sql.unsafe<Probe>(probeText, [names.schema === undefined ? null : quote(names.schema), names.versions, names.table]),
      (rows) => rows[0]!
    )
    const recorded = Effect.map(
      sql.unsafe<{ version: number }>(`SELECT version FROM ${names.versions} WHERE table_name = $1`, [names.tableName]),
      (rows) => rows[0]?.version ?? 0
    )

    const seen = yield* probe
    if (seen.versions_exists && seen.table_exists && (yield* recorded) === schemaVersion) return

    yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql.unsafe(
        `SELECT pg_advisory_xact_lock(hashtext('effect-checkpoint'), hashtext(coalesce($1::text, current_schema(), '')))`,
        [names.schema ?? null]
      )
      const now = yield* probe
      if (names.schema !== undefined && !now.schema_exists) {
        yield* sql.unsafe(`CREATE SCHEMA IF NOT EXISTS ${quote(names.schema)}`)
      }
      if (!now.versions_exists) {
        yield* sql.unsafe(
          `CREATE TABLE IF NOT EXISTS ${names.versions} (table_name TEXT PRIMARY KEY, version INTEGER NOT NULL, ` +
            `migrated_at TIMESTAMPTZ NOT NULL DEFAULT now())`
        )
      }
      let version = now.versions_exists ? yield* recorded : 0
      if (version > schemaVersion) {
        return yield* Effect.fail(storeError(
          BACKEND,
          "migrate",
          new Error(
            `table ${names.table} is at schema version ${version}, made by a newer effect-checkpoint ` +
              `(this one knows version ${schemaVersion}); upgrade effect-checkpoint`
          )
        ))
      }
      if (version === 0 && now.table_exists) {
        // A table nobody recorded: one made by hand or by an older tool. Adopt it if it has our layout.
        const missing = yield* layoutProblems(sql, names.table)
        if (missing.length > 0) {
          return yield* Effect.fail(storeError(
            BACKEND,
            "migrate",
            new Error(
              `table ${names.table} exists but does not have the effect-checkpoint layout (${missing.join("; ")}); ` +
                `upgrade it as the README's "Upgrading an existing table" section shows, or choose another tableName`
            )
          ))
        }
        version = 1 // the layout just checked; later migrations (if any) run below
      } else if (version > 0 && !now.table_exists) {
        // The table was dropped but its record was not: make it again.
        version = 0
      }
      for (const migration of migrations) {
        if (migration.version > version) {
          for (const statement of migration.up(names.table)) yield* sql.unsafe(statement)
        }
      }
      yield* sql.unsafe(
        `INSERT INTO ${names.versions} (table_name, version) VALUES ($1, $2) ` +
          `ON CONFLICT (table_name) DO UPDATE SET version = EXCLUDED.version, migrated_at = now()`,
        [names.tableName, schemaVersion]
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
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier, SqlClient.SqlClient> =>
  Layer.effect(CheckpointStore.CheckpointStore, make(options))

/**
 * A PostgreSQL store with its own connection pool (the reference's
 * `NewPostgresCheckpointStore` + `InitSchema`; `Close` is the end of the
 * layer's scope). Building fails with `InvalidIdentifier` for a bad table or
 * schema name (before connecting) and with `CheckpointStoreError` when the
 * server cannot be reached within `connectTimeout`.
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
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier> => {
  const nameError = checkNames(options)
  if (nameError !== undefined) return Layer.fail(nameError)
  const url = Redacted.isRedacted(options.url) ? options.url : Redacted.make(options.url)
  const secrets = secretsOf(Redacted.value(url))
  const client = PgClient.layer({
    url,
    applicationName: options.applicationName ?? DEFAULT_APPLICATION_NAME,
    connectTimeout: options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT,
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
    Effect.flatMap(SqlClient.SqlClient, (sql) => makeWith(sql, options, secrets, true))
  ).pipe(Layer.provide(client))
}

/**
 * {@link layer} with its connection string read from `Config`:
 * `POSTGRES_CONN_STRING` (as a `Redacted` value), table `checkpoints`. A
 * missing variable fails the layer with `CheckpointStoreError` (operation
 * `"config"`).
 *
 * To read other names or options, map your own `Config` into {@link layer}:
 * `Layer.unwrapEffect(Effect.map(Config.redacted("DATABASE_URL"), (url) => PostgresStore.layer({ url, tableName: "runs" })))`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier> = Layer
  .unwrapEffect(
    Effect.map(
      Config.redacted("POSTGRES_CONN_STRING").pipe(
        // Config.redacted hides its error's message: say which variable, from the error's path.
        Effect.mapError((e) => storeError(BACKEND, "config", new Error(`cannot read POSTGRES_CONN_STRING ${String(e)}`)))
      ),
      (url) => layer({ url })
    )
  )
