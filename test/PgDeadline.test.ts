/**
 * The PostgreSQL deadline (src/internal/sql/pgDeadline.ts) on a raw `PgClient`, through a TCP proxy
 * that stalls (a partition without RST). Everything this file creates lives in the schema
 * `ec_pgto_<pid>_…`, dropped at the end.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Deferred, Duration, Effect, Exit, Fiber, Layer, ManagedRuntime, Redacted, Schedule } from "effect"
import { afterAll, beforeAll } from "vitest"
import { SqlError } from "@effect/sql/SqlError"
import { InvalidOption } from "../src/CheckpointError.js"
import { DEFAULT_QUERY_TIMEOUT, queryTimeoutOption, transaction, withDeadline } from "../src/internal/sql/pgDeadline.js"
import { type TcpProxy, tcpProxy } from "./fixtures/tcp-proxy.js"

const HOST = "127.0.0.1"
const PORT = 5432
const URL = `postgres://postgres@${HOST}:${PORT}/test`
const SCHEMA = `ec_pgto_${process.pid}_${Date.now().toString(36)}_d`
const PASSWORD = "hunter2-deadline-secret"
/** Generous bound for a test that would hang without the deadline. */
const BOUND = 30_000

const admin = ManagedRuntime.make(PgClient.layer({ url: Redacted.make(URL), applicationName: "ec-pgto-admin" }))
const query = <A extends object = Record<string, unknown>>(text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe<A>(text, params)).pipe(Effect.provide(admin), Effect.orDie)

beforeAll(async () => {
  await Effect.runPromise(query(`CREATE SCHEMA "${SCHEMA}"`))
  await Effect.runPromise(query(`CREATE TABLE "${SCHEMA}".t (n int PRIMARY KEY)`))
})
afterAll(async () => {
  await Effect.runPromise(query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`))
  await admin.dispose()
})

/** A proxy to PostgreSQL and a `PgClient` through it (one connection at most unless told), both closed with the scope. */
const through = (options: { readonly maxConnections?: number } = {}) =>
  Effect.gen(function*() {
    const proxy = yield* tcpProxy({ host: HOST, port: PORT })
    const context = yield* Layer.build(PgClient.layer({
      url: Redacted.make(`postgres://postgres:${PASSWORD}@${HOST}:${proxy.port}/test`),
      applicationName: "ec-pgto-deadline",
      maxConnections: options.maxConnections ?? 1
    }))
    return { proxy, sql: Context.get(context, PgClient.PgClient) }
  })

const pidOf = (sql: SqlClient.SqlClient) =>
  Effect.map(sql.unsafe<{ pid: number }>("SELECT pg_backend_pid() AS pid"), (rows) => rows[0]!.pid)

/** Waits (bounded) until backend `pid` is gone: its connection was closed. */
const backendGone = (pid: number) =>
  query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1", [pid]).pipe(
    Effect.filterOrFail((rows) => rows[0]!.n === 0),
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("20 seconds"))),
    Effect.orElse(() => Effect.die(new Error(`backend ${pid} is still there: its connection was not closed`)))
  )

const rows = Effect.map(query<{ n: number }>(`SELECT n FROM "${SCHEMA}".t ORDER BY n`), (r) => r.map((x) => x.n))

const stalls = (proxy: TcpProxy) => Effect.sync(() => proxy.stall())

describe("queryTimeoutOption", () => {
  it.effect("defaults to 10 seconds and takes a positive, finite duration", () =>
    Effect.gen(function*() {
      expect(Duration.toMillis(yield* queryTimeoutOption(undefined))).toBe(10_000)
      expect(DEFAULT_QUERY_TIMEOUT).toEqual(Duration.seconds(10))
      expect(Duration.toMillis(yield* queryTimeoutOption("250 millis"))).toBe(250)
      expect(Duration.toMillis(yield* queryTimeoutOption(1500))).toBe(1500)
      expect(Duration.toMillis(yield* queryTimeoutOption(Duration.seconds(2)))).toBe(2000)
    }))

  it.effect("refuses zero, negative, infinite, NaN and garbage with InvalidOption", () =>
    Effect.gen(function*() {
      for (const bad of [0, -1, Infinity, NaN, "0 seconds", "forever", Duration.infinity, "-5 seconds"] as const) {
        const error = yield* Effect.flip(queryTimeoutOption(bad as Duration.DurationInput))
        expect(error).toBeInstanceOf(InvalidOption)
        expect(error.option).toBe("queryTimeout")
      }
    }))
})

describe("withDeadline", () => {
  it.scopedLive("runs every statement of an operation on one connection, which goes back to the pool", () =>
    Effect.gen(function*() {
      const { sql } = yield* through({ maxConnections: 3 })
      const op = withDeadline(sql, { queryTimeout: Duration.seconds(5) })
      const [a, b] = yield* op()(Effect.all([pidOf(sql), pidOf(sql)]))
      expect(a).toBe(b)
      // Statements of concurrent operations each stay on their own connection.
      const pairs = yield* Effect.all(
        Array.from({ length: 3 }, () => op()(Effect.all([pidOf(sql), Effect.sleep("20 millis"), pidOf(sql)]))),
        { concurrency: "unbounded" }
      )
      for (const [x, , y] of pairs) expect(x).toBe(y)
      // A healthy connection is reused.
      const one = yield* through()
      const op1 = withDeadline(one.sql, { queryTimeout: Duration.seconds(5) })
      expect(yield* op1()(pidOf(one.sql))).toBe(yield* op1()(pidOf(one.sql)))
    }), BOUND)

  it.scopedLive("a stall after the connection was handed out fails typed within queryTimeout and closes it", () =>
    Effect.gen(function*() {
      const { proxy, sql } = yield* through()
      const op = withDeadline(sql, { queryTimeout: Duration.millis(500) })
      let pid = 0
      const error = yield* op()(Effect.gen(function*() {
        pid = yield* pidOf(sql)
        yield* stalls(proxy)
        return yield* pidOf(sql)
      })).pipe(Effect.flip)
      expect(error).toBeInstanceOf(SqlError)
      const e = error as SqlError
      expect(e.message).toMatch(/no answer from PostgreSQL within 500ms \(queryTimeout\); the connection was closed/)
      expect(JSON.stringify(e)).not.toContain(PASSWORD)
      expect(String(e)).not.toContain(PASSWORD)
      // Closed: its proxy pair is gone and its backend exits, although the network is still down.
      yield* backendGone(pid)
      expect(proxy.open()).toBe(0)
      // Network back: a fresh connection works (the closed one was not returned to the pool of one).
      proxy.resume()
      const next = yield* op()(pidOf(sql))
      expect(next).not.toBe(pid)
    }), BOUND)

  it.scopedLive("a stalled connection handed out by the pool fails the next operation, and only that one", () =>
    Effect.gen(function*() {
      const { proxy, sql } = yield* through()
      const op = withDeadline(sql, { queryTimeout: Duration.millis(300) })
      const pid = yield* op()(pidOf(sql))
      proxy.stall()
      const error = yield* Effect.flip(op()(pidOf(sql)))
      expect(error.message).toContain("(queryTimeout)")
      yield* backendGone(pid)
      proxy.resume()
      expect(yield* op()(pidOf(sql))).not.toBe(pid)
    }), BOUND)

  it.scopedLive("the wait for a connection is bounded; one that arrives late is closed", () =>
    Effect.gen(function*() {
      const { proxy, sql } = yield* through()
      const op = withDeadline(sql, {
        queryTimeout: Duration.seconds(5),
        acquireTimeout: Duration.millis(300)
      })
      yield* op()(pidOf(sql))
      // The pooled connection breaks; the new one's handshake stalls (the pool has no connect timeout).
      proxy.cut()
      proxy.stall()
      yield* Effect.sleep("50 millis")
      const error = yield* Effect.flip(op()(pidOf(sql)))
      expect(error).toBeInstanceOf(SqlError)
      expect(error.message).toMatch(/no connection from the pool within 300ms/)
      proxy.resume()
      // The late connection is closed, and the pool of one still serves the next operation.
      yield* op()(pidOf(sql))
      expect(proxy.accepted()).toBe(3)
      yield* Effect.sync(() => proxy.open()).pipe(
        Effect.filterOrFail((n) => n === 1),
        Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("10 seconds"))),
        Effect.orElse(() => Effect.die(new Error(`${proxy.open()} connections open, expected the pooled one only`)))
      )
    }), BOUND)

  it.scopedLive("an interrupt closes the connection at once (no pg_cancel_backend through the stall) and is honoured", () =>
    Effect.gen(function*() {
      const { proxy, sql } = yield* through()
      // A deadline far away: only the interrupt can end the operation.
      const op = withDeadline(sql, { queryTimeout: Duration.minutes(10) })
      const started = yield* Deferred.make<number>()
      const fiber = yield* Effect.fork(op()(Effect.gen(function*() {
        yield* Deferred.succeed(started, yield* pidOf(sql))
        yield* stalls(proxy)
        return yield* pidOf(sql)
      })))
      const pid = yield* Deferred.await(started)
      yield* Effect.sleep("100 millis")
      const exit = yield* Fiber.interrupt(fiber).pipe(Effect.timeout("20 seconds"))
      expect(Exit.isInterrupted(exit)).toBe(true)
      yield* backendGone(pid)
      proxy.resume()
      expect(yield* op()(pidOf(sql))).not.toBe(pid)
    }), BOUND)

  it.scopedLive("a caller's Effect.timeout is honoured while a statement waits on the server", () =>
    Effect.gen(function*() {
      const { proxy, sql } = yield* through()
      const op = withDeadline(sql, { queryTimeout: Duration.minutes(10) })
      let pid = 0
      const result = yield* op()(Effect.gen(function*() {
        pid = yield* pidOf(sql)
        yield* sql.unsafe("SELECT pg_sleep(600)")
      })).pipe(Effect.timeout("300 millis"), Effect.flip)
      expect(result._tag).toBe("TimeoutException")
      // The client closed its connection (the server notices only when pg_sleep ends: end it here).
      expect(proxy.open()).toBe(0)
      yield* query("SELECT pg_terminate_backend($1)", [pid])
      yield* backendGone(pid)
      expect(yield* op()(pidOf(sql))).not.toBe(pid)
    }), BOUND)
})

describe("transaction", () => {
  it.scopedLive("commits, rolls back on failure, and writes nothing when COMMIT stalls", () =>
    Effect.gen(function*() {
      const { proxy, sql } = yield* through()
      const op = withDeadline(sql, { queryTimeout: Duration.millis(500) })
      const insert = (n: number) => sql.unsafe(`INSERT INTO "${SCHEMA}".t VALUES ($1)`, [n])
      yield* op()(transaction(sql, Effect.all([insert(1), insert(2)])))
      expect(yield* rows).toEqual([1, 2])
      // A failure inside rolls back, and the connection stays usable (same backend afterwards).
      const pid = yield* op()(pidOf(sql))
      const failed = yield* op()(transaction(sql, Effect.zipRight(insert(3), insert(1)))).pipe(Effect.flip)
      expect(failed._tag).toBe("SqlError")
      expect(yield* rows).toEqual([1, 2])
      expect(yield* op()(pidOf(sql))).toBe(pid)
      // Stalled at COMMIT: the deadline closes the connection, the server rolls back.
      const error = yield* op()(
        transaction(sql, Effect.all([insert(4), insert(5), stalls(proxy)]))
      ).pipe(Effect.flip)
      expect(error).toBeInstanceOf(SqlError)
      expect(error.message).toContain("(queryTimeout)")
      yield* backendGone(pid)
      proxy.resume()
      expect(yield* rows).toEqual([1, 2])
      yield* op()(transaction(sql, insert(6)))
      expect(yield* rows).toEqual([1, 2, 6])
    }).pipe(Effect.ensuring(query(`DELETE FROM "${SCHEMA}".t`))), BOUND)

  it.scopedLive("join: inside the caller's transaction, on its connection (a savepoint), under the deadline", () =>
    Effect.gen(function*() {
      const { proxy, sql } = yield* through({ maxConnections: 2 })
      const op = withDeadline(sql, { queryTimeout: Duration.millis(500) })
      const insert = (n: number) => sql.unsafe(`INSERT INTO "${SCHEMA}".t VALUES ($1)`, [n])
      // Joined: same connection, rolled back with the caller's transaction.
      const outcome = yield* sql.withTransaction(Effect.gen(function*() {
        const mine = yield* pidOf(sql)
        const theirs = yield* op({ join: true })(transaction(sql, Effect.zipRight(insert(10), pidOf(sql))))
        expect(theirs).toBe(mine)
        // Not joined: a connection of its own, committed on its own.
        const own = yield* op()(Effect.zipRight(insert(11), pidOf(sql)))
        expect(own).not.toBe(mine)
        return yield* Effect.fail("abort" as const)
      })).pipe(Effect.flip)
      expect(outcome).toBe("abort")
      expect(yield* rows).toEqual([11])
      // A stall inside the caller's transaction fails the joined operation typed, in bounded time; the
      // caller's transaction then fails as @effect/sql fails one whose connection broke (its ROLLBACK dies).
      let opError: unknown
      const stalled = yield* sql.withTransaction(Effect.gen(function*() {
        yield* pidOf(sql)
        yield* stalls(proxy)
        opError = yield* Effect.flip(op({ join: true })(insert(12)))
        return yield* Effect.fail(opError)
      })).pipe(Effect.sandbox, Effect.flip)
      expect(opError).toBeInstanceOf(SqlError)
      expect((opError as SqlError).message).toContain("(queryTimeout); the connection was closed")
      expect(Cause.isEmpty(stalled)).toBe(false)
      proxy.resume()
      expect(yield* rows).toEqual([11])
    }).pipe(Effect.ensuring(query(`DELETE FROM "${SCHEMA}".t`))), BOUND)

  it.scopedLive("outside withDeadline it is sql.withTransaction", () =>
    Effect.gen(function*() {
      const { sql } = yield* through()
      yield* transaction(sql, sql.unsafe(`INSERT INTO "${SCHEMA}".t VALUES (7)`))
      expect(yield* rows).toEqual([7])
    }).pipe(Effect.ensuring(query(`DELETE FROM "${SCHEMA}".t`))), BOUND)
})
