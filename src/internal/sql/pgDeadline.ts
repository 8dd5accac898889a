/**
 * A client-side deadline for PostgreSQL operations.
 *
 * A connection that stops answering (a partition, a frozen host: no RST) leaves `pg` waiting forever, and
 * interrupting a statement of `@effect/sql-pg` runs `pg_cancel_backend` on another pooled connection (up
 * to 5 s, through the same dead network) and then hands the stalled connection back to the pool. So each
 * operation of the store runs here:
 *
 * - on its own connection (`sql.reserve`), every statement of the operation on it (it is provided as the
 *   fiber's `TransactionConnection`; use {@link transaction}, not `sql.withTransaction`, for a transaction);
 * - each statement gets `queryTimeout`: when it passes, the `pg` client is `end()`ed, which destroys the
 *   socket, so `pg` fails the statement at once, the operation fails with a `CheckpointStoreError` that
 *   says so, and the pool drops the client when it is released (an ended client is never reused);
 * - its statements run straight on the `pg` client (`statement`; `@effect/sql`'s own statements on the
 *   operation's connection too), named prepared statements unless asked otherwise: an interrupt reaches
 *   the statement in flight, which closes the connection (the statement then fails at once, without
 *   `pg_cancel_backend`) and waits for it; without a `pg` client, the operation runs in a child fiber
 *   that is never interrupted, and an interrupt of the caller closes the connection and waits for it;
 * - the wait for a connection is bounded too: by the pool itself when it has a `connectTimeout`
 *   (`pg-pool` applies it to a queued request), else by `acquireTimeout`, and a connection that arrives
 *   after the wait was given up is closed;
 * - `join`: inside a transaction of the caller's on this client, the operation runs on that transaction's
 *   connection instead (same deadline; closing it on a stall ends the caller's transaction, which then
 *   fails as `@effect/sql` fails a transaction whose connection broke).
 *
 * Every timer is a real-time one (`setTimeout` / the live clock): a network deadline must not fire
 * because a test moved a `TestClock`, nor wait on one.
 *
 * @internal
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import { Cause, Clock, Context, Duration, Effect, Either, Exit, Fiber, Option, Scope } from "effect"
import { InvalidOption } from "../../CheckpointError.js"
import { span } from "../telemetry.js"
import type { Row } from "./dialect.js"

/** The default of `queryTimeout`. */
export const DEFAULT_QUERY_TIMEOUT: Duration.Duration = Duration.seconds(10)

/** How long an interrupted or timed-out operation waits for its statements to fail after its connection was closed. */
const SETTLE = Duration.seconds(1)
const SETTLE_MS = Duration.toMillis(SETTLE)

/** What a statement of `pg` answers (the rows; `pg` parses column types as its pool is configured). */
interface PgResult {
  readonly rows?: ReadonlyArray<Row>
}

/** The subset of a `pg` client used here (`@effect/sql-pg` connections carry it as `pg`). */
interface PgLike {
  readonly end: () => Promise<void> | void
  readonly query?: (
    config: { readonly text: string; readonly values: ReadonlyArray<unknown>; readonly name?: string },
    callback: (error: Error | null | undefined, result: PgResult) => void
  ) => unknown
}

/**
 * A name per statement text, for `pg`'s prepared statements (parsed and planned once per connection).
 * The same text always gets the same name, so two stores in one process never ask one connection to
 * prepare two texts under one name; past {@link MAX_PREPARED} texts, statements run unnamed.
 */
const preparedNames = new Map<string, string>()
const MAX_PREPARED = 1000

const nameOf = (text: string): string | undefined => {
  let name = preparedNames.get(text)
  if (name === undefined && preparedNames.size < MAX_PREPARED) {
    preparedNames.set(text, name = `effect_checkpoint_${preparedNames.size + 1}`)
  }
  return name
}

const pgOf = (conn: Connection): PgLike | undefined => {
  const pg = (conn as { readonly pg?: unknown }).pg
  return typeof pg === "object" && pg !== null && typeof (pg as { end?: unknown }).end === "function"
    ? pg as PgLike
    : undefined
}

/**
 * `queryTimeout` as given by a user: a positive, finite duration (default {@link DEFAULT_QUERY_TIMEOUT}),
 * else `InvalidOption`.
 */
export const queryTimeoutOption = (input: Duration.DurationInput | undefined): Either.Either<Duration.Duration, InvalidOption> => {
  if (input === undefined) return Either.right(DEFAULT_QUERY_TIMEOUT)
  const decoded = Duration.decodeUnknown(input)
  const ms = Option.isSome(decoded) ? Duration.toMillis(decoded.value) : Number.NaN
  return Option.isSome(decoded) && Number.isFinite(ms) && ms > 0
    ? Either.right(decoded.value)
    : Either.left(
      new InvalidOption({
        option: "queryTimeout",
        message: `queryTimeout must be a positive, finite duration, got ${describeInput(input)}`
      })
    )
}

const describeInput = (input: unknown): string => {
  try {
    return typeof input === "string" ? JSON.stringify(input) : String(input)
  } catch {
    return typeof input
  }
}

/**
 * What an operation runs with.
 */
export interface DeadlineOptions {
  /** How long one statement may go without an answer. */
  readonly queryTimeout: Duration.Duration
  /** How long to wait for a connection from the pool (default: `queryTimeout`). */
  readonly acquireTimeout?: Duration.Duration | undefined
  /**
   * The pool bounds the wait for a connection itself (its `connectTimeout`, which `pg-pool` applies to
   * a queued request as to a new connection): the connection is taken without a timer of ours.
   */
  readonly poolBoundsWait?: boolean | undefined
}

/** The connection of the running operation, for {@link transaction}. */
class Reserved extends Context.Tag("effect-checkpoint/PgDeadline/Reserved")<Reserved, {
  readonly conn: Connection
  /** The connection is a transaction of the caller's (joined), not the operation's own. */
  readonly joined: boolean
  /** Closes the connection (idempotent); the pool drops it when it is released. */
  readonly close: () => void
  /**
   * Runs one statement straight on the `pg` client, under the deadline (`undefined` without one:
   * then statements go through `@effect/sql`). An interrupt closes the connection and waits (up to
   * a second) for the statement to fail, instead of `pg_cancel_backend` through another connection.
   */
  readonly run: ((text: string, params: ReadonlyArray<unknown>, prepare: boolean) => Effect.Effect<ReadonlyArray<Row>, SqlError>) | undefined
}>() {}

/**
 * Runs `text` on the running operation's connection: straight on its `pg` client when it has one
 * (prepared unless `prepare` is `false`), else through `fallback` (`@effect/sql`).
 */
export const statement = (
  text: string,
  params: ReadonlyArray<unknown>,
  prepare: boolean,
  fallback: () => Effect.Effect<ReadonlyArray<Row>, SqlError>
): Effect.Effect<ReadonlyArray<Row>, SqlError> =>
  Effect.flatMap(Effect.serviceOption(Reserved), (reserved) => {
    const run = Option.isSome(reserved) ? reserved.value.run : undefined
    if (run === undefined) return fallback()
    // The span `@effect/sql` gives each statement, with the same name and attributes (when a tracer reads it).
    return span(run(text, params, prepare), "sql.execute", () => ({
      "db.system.name": "postgresql",
      "db.operation.name": "execute",
      "db.query.text": text
    }), "client")
  })

const liveClock = Clock.make()

/** `effect` with a real-time timeout (`None` when it passed). */
const withinReal = <A, E, R>(effect: Effect.Effect<A, E, R>, d: Duration.Duration) =>
  Effect.withClock(Effect.timeoutOption(effect, d), liveClock)

/**
 * Runs `effect` (the statements of one store operation) on a connection of its own under the deadline;
 * see the module header. Failures of `effect` are kept, except that any failure after a deadline passed
 * becomes a `SqlError` saying so (the store maps it to `CheckpointStoreError` as any other, with its
 * operation's name): "no answer from PostgreSQL within 10s (queryTimeout); the connection was closed".
 */
export const withDeadline = (sql: SqlClient.SqlClient, options: DeadlineOptions) => {
  const { queryTimeout } = options
  const poolBoundsWait = options.poolBoundsWait === true
  const acquireTimeout = options.acquireTimeout ?? queryTimeout
  const timeoutMs = Math.max(1, Math.ceil(Duration.toMillis(queryTimeout)))

  /** Reserves a connection in a scope of its own (closing the scope releases it). */
  const reserve = Effect.flatMap(Scope.make(), (scope) =>
    Scope.extend(sql.reserve, scope).pipe(
      Effect.map((conn) => ({ scope, conn })),
      Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
    ))

  /** Closes and releases a connection that arrives after its operation gave up waiting. */
  const discardLate = (acquiring: Fiber.Fiber<{ readonly scope: Scope.CloseableScope; readonly conn: Connection }, SqlError>) =>
    Effect.forkDaemon(Effect.flatMap(Fiber.await(acquiring), (exit) =>
      Exit.isSuccess(exit)
        ? Effect.suspend(() => {
          closePg(pgOf(exit.value.conn))
          return Scope.close(exit.value.scope, Exit.void)
        })
        : Effect.void))

  /**
   * Runs `effect` on `conn` (at transaction depth `depth`) with a deadline on each statement; closes the
   * connection when a deadline passes or the caller interrupts.
   */
  const runOn = <A, E, R>(
    restore: <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) => Effect.Effect<X, Y, Z>,
    conn: Connection,
    depth: number,
    joined: boolean,
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<Exit.Exit<A, E | SqlError>, never, R> =>
    Effect.gen(function*() {
      const pg = pgOf(conn)
      let timedOut = false
      let closed = false
      const close = () => {
        if (closed) return
        closed = true
        closePg(pg)
      }
      /** A statement's deadline: closes the connection when it passes (none once the connection is closed). */
      const arm = () =>
        closed ? undefined : setTimeout(() => {
          timedOut = true
          close()
        }, timeoutMs)
      const guard = <X>(statement: Effect.Effect<X, SqlError>): Effect.Effect<X, SqlError> =>
        Effect.suspend(() => {
          const timer = arm()
          return timer === undefined ? statement : Effect.ensuring(statement, Effect.sync(() => clearTimeout(timer)))
        })
      const query = pg?.query
      /** One statement straight on the `pg` client: see `Reserved.run`. */
      const run = query === undefined ? undefined : (
        text: string,
        params: ReadonlyArray<unknown>,
        prepare: boolean
      ): Effect.Effect<ReadonlyArray<Row>, SqlError> =>
        Effect.async<ReadonlyArray<Row>, SqlError>((resume) => {
          let done = false
          let settle: (() => void) | undefined
          const timer = arm()
          const name = prepare && params.length > 0 ? nameOf(text) : undefined
          const answered = (error: unknown, result: unknown) => {
            if (done) return
            done = true
            if (timer !== undefined) clearTimeout(timer)
            settle?.()
            resume(
              error !== null && error !== undefined
                ? Effect.fail(new SqlError({ cause: error, message: "Failed to execute statement" }))
                : Effect.succeed(rowsOf(result))
            )
          }
          try {
            query.call(pg, name === undefined ? { text, values: params } : { text, values: params, name }, answered)
          } catch (cause) {
            answered(cause ?? new Error("the statement could not be sent"), undefined)
          }
          // Interrupted: close the connection, so the statement fails at once, and wait for it (bounded).
          return Effect.async<void>((settled) => {
            if (done) return settled(Effect.void)
            close()
            const t = setTimeout(() => settled(Effect.void), SETTLE_MS)
            settle = () => {
              clearTimeout(t)
              settled(Effect.void)
            }
          })
        })
      /** `@effect/sql`'s own statements on this connection, through `run` when there is one. */
      const viaRun = (
        text: string,
        params: ReadonlyArray<unknown>,
        transformRows: (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined,
        viaConnection: () => Effect.Effect<ReadonlyArray<any>, SqlError>
      ) =>
        run === undefined
          ? guard(viaConnection())
          : Effect.map(run(text, params, false), (rows) => transformRows === undefined ? rows : transformRows(rows))
      const guarded: Connection = pg === undefined ? conn : {
        execute: (text, params, transformRows) => viaRun(text, params, transformRows, () => conn.execute(text, params, transformRows)),
        executeRaw: (text, params) => guard(conn.executeRaw(text, params)),
        executeStream: (text, params, transformRows) => conn.executeStream(text, params, transformRows),
        executeValues: (text, params) => guard(conn.executeValues(text, params)),
        executeUnprepared: (text, params, transformRows) =>
          viaRun(text, params ?? [], transformRows, () => conn.executeUnprepared(text, params, transformRows))
      }
      const body = effect.pipe(
        Effect.provideService(SqlClient.TransactionConnection, [guarded, depth] as const),
        Effect.provideService(Reserved, { conn: guarded, close, joined, run })
      )
      let exit: Exit.Exit<A, E | SqlError>
      if (run !== undefined) {
        // Every statement is one of ours: an interrupt reaches the one in flight, which closes the connection.
        exit = yield* Effect.exit(restore(body))
      } else {
        // Without a `pg` client to close (not @effect/sql-pg), the deadline is an interrupt of the operation.
        // A daemon: an interrupt of this fiber goes to its children too, and an interrupted statement of
        // @effect/sql-pg runs `pg_cancel_backend` on another connection (through the same dead network).
        const child = yield* Effect.forkDaemon(
          pg === undefined
            ? restore(withinReal(body, queryTimeout)).pipe(
              Effect.flatMap(Option.match({
                onNone: () => {
                  timedOut = true
                  return Effect.fail(deadlineError("the operation was interrupted"))
                },
                onSome: Effect.succeed
              }))
            )
            : restore(body)
        )
        const result = yield* Effect.exit(restore(Fiber.await(child)))
        if (Exit.isSuccess(result)) {
          exit = result.value
        } else {
          // Interrupted while waiting: close the connection, so the statement fails at once and is not cancelled.
          close()
          const settled = yield* withinReal(Fiber.await(child), SETTLE)
          if (Option.isNone(settled)) yield* Fiber.interruptFork(child)
          exit = result as Exit.Exit<never>
        }
      }
      if (Exit.isFailure(exit) && timedOut && !Exit.isInterrupted(exit) && pg !== undefined) {
        exit = Exit.fail(deadlineError("the connection was closed"))
      }
      if (Exit.isFailure(exit) && (Cause.isInterrupted(exit.cause) || Cause.isDie(exit.cause))) {
        // An interrupted or dead operation may leave its connection in any state (a transaction, a
        // statement in flight): never reuse it. (A statement's own failure does not: `pg` marks a broken
        // connection itself, and {@link transaction} rolls back or closes.)
        close()
      }
      return exit
    })

  /**
   * A connection: within the pool's own bound (`poolBoundsWait`), or within `acquireTimeout`, a
   * connection that arrives after the wait was given up being closed.
   */
  const acquire = (
    restore: <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) => Effect.Effect<X, Y, Z>
  ): Effect.Effect<{ readonly scope: Scope.CloseableScope; readonly conn: Connection }, SqlError> =>
    poolBoundsWait ? restore(reserve) : Effect.gen(function*() {
      const acquiring = yield* Effect.forkDaemon(reserve)
      const waited = yield* Effect.exit(restore(withinReal(Fiber.await(acquiring), acquireTimeout)))
      if (Exit.isFailure(waited)) {
        yield* discardLate(acquiring)
        return yield* Effect.failCause(waited.cause)
      }
      if (Option.isNone(waited.value)) {
        yield* discardLate(acquiring)
        return yield* Effect.fail(
          new SqlError({ message: `no connection from the pool within ${Duration.format(acquireTimeout)}` })
        )
      }
      return yield* waited.value.value
    })

  const deadlineError = (outcome: string) =>
    new SqlError({
      message: `no answer from PostgreSQL within ${Duration.format(queryTimeout)} (queryTimeout); ${outcome}`
    })

  return (options?: { readonly join?: boolean | undefined }) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        // --- joining a transaction of the caller's: its connection, which is not ours to release ------
        if (options?.join === true) {
          const tx = yield* Effect.serviceOption(SqlClient.TransactionConnection)
          if (Option.isSome(tx)) {
            const [conn, depth] = tx.value
            return yield* yield* runOn(restore, conn, depth, true, effect)
          }
        }

        // --- a connection, then the statements, each within queryTimeout; then it goes back (or is dropped)
        const { conn, scope } = yield* acquire(restore)
        const exit = yield* runOn(restore, conn, 0, false, effect)
        yield* Scope.close(scope, Exit.void)
        return yield* exit
      })
    )
}

/** The rows of a `pg` result (of the last statement, for a text of several). */
const rowsOf = (result: unknown): ReadonlyArray<Row> => {
  const last = Array.isArray(result) ? result[result.length - 1] : result
  const rows = typeof last === "object" && last !== null ? (last as PgResult).rows : undefined
  return Array.isArray(rows) ? rows : []
}

const closePg = (pg: PgLike | undefined) => {
  if (pg === undefined) return
  try {
    const ended = pg.end()
    if (ended !== undefined && typeof (ended as Promise<void>).catch === "function") {
      ;(ended as Promise<void>).catch(() => undefined)
    }
  } catch {
    // already closed
  }
}

/** Whether the running operation joined a transaction of the caller's (false outside {@link withDeadline}). */
export const inCallersTransaction: Effect.Effect<boolean> = Effect.map(
  Effect.serviceOption(Reserved),
  Option.match({ onNone: () => false, onSome: (r) => r.joined })
)

/**
 * `effect` in a transaction on the operation's own connection (`BEGIN` … `COMMIT`, `ROLLBACK` when it
 * fails). Unlike `sql.withTransaction`, a failed `COMMIT` is a `SqlError` (not a defect), and a failed
 * `ROLLBACK` closes the connection (the server then rolls back) instead of dying. Outside
 * {@link withDeadline}, it is `sql.withTransaction`.
 */
export const transaction = <A, E, R>(
  sql: SqlClient.SqlClient,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E | SqlError, R> =>
  Effect.flatMap(Effect.serviceOption(Reserved), (reserved): Effect.Effect<A, E | SqlError, R> => {
    // Outside an operation, or in a transaction of the caller's (a savepoint): @effect/sql's own.
    if (Option.isNone(reserved) || reserved.value.joined) return sql.withTransaction(effect)
    const { close, conn } = reserved.value
    const run = (text: string) => conn.executeUnprepared(text, [], undefined)
    return Effect.uninterruptibleMask((restore) =>
      Effect.zipRight(run("BEGIN"), Effect.exit(restore(effect))).pipe(
        Effect.flatMap((exit): Effect.Effect<A, E | SqlError> =>
          Exit.isSuccess(exit)
            ? Effect.as(run("COMMIT"), exit.value)
            : run("ROLLBACK").pipe(Effect.catchAll(() => Effect.sync(close)), Effect.zipRight(exit))
        )
      )
    )
  })
