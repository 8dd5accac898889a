/**
 * What the SQL store needs from a database: a {@link Dialect} says how
 * SQLite and PostgreSQL differ (placeholders and casts, JSON and time types,
 * lists, row locks, the clock, and how an operation and a transaction run);
 * everything else is in `backend.ts` and `schema.ts`, shared.
 *
 * @internal
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Option } from "effect"
import type { CheckpointEncodeError, CheckpointStoreError } from "../../CheckpointError.js"
import type { Encoded, EncodedWrite } from "../../CheckpointBackend.js"

export type Row = { readonly [column: string]: unknown }

/** Runs one statement (`?` placeholders already turned into the dialect's). */
export interface Db {
  readonly all: (sql: string, params: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, SqlError>
}

/** The type of a bound value, for the dialects that cast parameters. */
export type ParamType = "text" | "json" | "int" | "time" | "timestamp"

export interface Dialect {
  readonly name: "sqlite" | "postgres"
  /** A placeholder of `type` (`?`, or `?::jsonb` …); `prepare` numbers them. */
  readonly param: (type: ParamType) => string
  /** Statement text with `?` placeholders → the driver's form (`$1` … for PostgreSQL). */
  readonly prepare: (text: string) => string
  readonly types: {
    /** A JSON column. */
    readonly json: string
    /** A key column compared and ordered by code unit (ids). */
    readonly key: string
    /** Epoch milliseconds. */
    readonly time: string
    /** The checkpoint's `timestamp` column. */
    readonly timestamp: string
  }
  /** A JSON column as text, for reading. */
  readonly jsonText: (column: string) => string
  /** The `timestamp` column as something `decodeFields` reads (ISO text or epoch ms). */
  readonly timestampOut: (column: string) => string
  /** The `timestamp` column as epoch ms (a number), in SQL (migrations). */
  readonly timestampMs: (column: string) => string
  /** `next` (JSON) is a non-empty array, in SQL (migrations; false for anything else). */
  readonly nextNonEmpty: (column: string) => string
  /** `expr` is one of the list bound at this `?` (see {@link listParam}). */
  readonly inList: (expr: string) => string
  /** The value to bind for {@link inList}. */
  readonly listParam: (values: ReadonlyArray<string>) => unknown
  /** A JSON array column holds the text `hash` (an SQL expression). */
  readonly arrayHas: (column: string, hash: string) => string
  /** Locks the rows a `SELECT` reads until the transaction ends (PostgreSQL), or nothing (SQLite's write lock covers it). */
  readonly forUpdate: string
  /** Passes rows locked by another transaction by (claim). */
  readonly skipLocked: string
  /** A constraint said no: a taken id, version, key. */
  readonly isUniqueViolation: (e: SqlError) => boolean
  /** A transaction refused because a concurrent one changed what it read (PostgreSQL SERIALIZABLE). */
  readonly isSerializationFailure: (e: SqlError) => boolean
  /** The failure as the store reports it (never with a secret in it). */
  readonly storeError: (operation: string, e: unknown) => CheckpointStoreError
  /** A value the database refused (PostgreSQL: SQLSTATE class 22), as the encode error naming the checkpoint; else `undefined`. */
  readonly encodeError: (e: SqlError, batch: ReadonlyArray<Encoded>) => CheckpointEncodeError | undefined
  /** What the database would refuse or alter in a checkpoint, checked before writing. */
  readonly checkpointProblem: (e: Encoded) => CheckpointEncodeError | undefined
  /** The same for task writes. */
  readonly writesProblem: (checkpointId: string, writes: ReadonlyArray<EncodedWrite>) => CheckpointEncodeError | undefined
  /** Runs a read. */
  readonly read: <A, E>(body: (db: Db) => Effect.Effect<A, E | SqlError>) => Effect.Effect<A, E | SqlError>
  /**
   * Runs `body` in one transaction that no other writer of these executions
   * interleaves with (SQLite: `BEGIN IMMEDIATE`, the database's write lock;
   * PostgreSQL: a transaction-scoped advisory lock per execution). `now` is the
   * database's clock in epoch ms where it has one, else `given`. `save`: the
   * transaction may commit asynchronously (PostgreSQL `synchronousCommit: "off"`).
   */
  readonly write: <A, E>(
    executions: ReadonlyArray<string>,
    given: number,
    body: (db: Db, now: number) => Effect.Effect<A, E | SqlError>,
    save?: boolean
  ) => Effect.Effect<A, E | SqlError>
  /**
   * A save as one statement (PostgreSQL), for the dialects whose statements
   * can write several tables at once; absent elsewhere.
   */
  readonly single?: {
    /**
     * The body of a CTE `lk(now)` that takes the lock `write` takes for one
     * execution (parameters: the lock's table key, the execution id) and then
     * reads the database's clock, in epoch ms; `async`: the statement's
     * transaction commits asynchronously.
     */
    readonly lock: (async: boolean) => string
    /**
     * Runs `body` (one statement, its own transaction) with whether it may
     * commit asynchronously (a save); `Option.none()` without running it when
     * the statement would join a transaction of the app's (a failed statement
     * would abort it: `write`'s savepoint is needed there).
     */
    readonly run: <A, E>(
      body: (db: Db, async: boolean) => Effect.Effect<A, E | SqlError>
    ) => Effect.Effect<Option.Option<A>, E | SqlError>
  }
}

/** Statement text with `?` placeholders numbered `$1`, `$2` … (there is no `?` anywhere else in the store's SQL). */
export const numbered = (text: string): string => {
  let n = 0
  return text.replace(/\?/g, () => `$${++n}`)
}

/**
 * `@effect/sql` dies when it cannot roll a failed transaction back (the
 * connection is gone): that is a store failure, never a defect.
 */
export const failedTransaction = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | SqlError> =>
  Effect.catchSomeDefect(effect, (defect) =>
    typeof defect === "object" && defect !== null && "_tag" in defect && defect._tag === "SqlError"
      ? Option.some(Effect.fail(defect as SqlError))
      : Option.none())
