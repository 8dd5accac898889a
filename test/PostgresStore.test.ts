/**
 * PostgresStore against the real PostgreSQL (TEST_POSTGRES_URL, default
 * postgres://postgres@127.0.0.1:5432/test). Everything this file creates lives
 * in PostgreSQL schemas named `ec_pg_test_<pid>_<time>…`, dropped at the end;
 * each conformance test gets its own table, dropped when its layer closes.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  ConfigError,
  ConfigProvider,
  Context,
  Deferred,
  Effect,
  Either,
  Fiber,
  Layer,
  ManagedRuntime,
  Option,
  Redacted,
  Schema,
  type Scope,
  String as Str
} from "effect"
import { execFileSync } from "node:child_process"
import * as net from "node:net"
import { afterAll } from "vitest"
import * as Checkpoint from "../src/Checkpoint.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import * as PostgresStore from "../src/layers/Postgres.js"
import { recordStatements } from "./fixtures/sql-statements.js"
import { tcpProxy } from "./fixtures/tcp-proxy.js"
import { conformance, freshExecution, hostileIds, mk, StoreTestKit, view } from "../src/testing.js"

const URL = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const RUN = `ec_pg_test_${process.pid}_${Date.now().toString(36)}`
/** The schema most tests use. Every schema this file makes starts with RUN, except STALL_SCHEMA. */
const SCHEMA = RUN
/** The schema of the stall tests (queryTimeout), dropped at the end too. */
const STALL_SCHEMA = `ec_pgto_${process.pid}_${Date.now().toString(36)}`

const store = CheckpointStore.CheckpointStore

// -----------------------------------------------------------------------------
// An admin connection for setup, inspection and cleanup
// -----------------------------------------------------------------------------

const admin = ManagedRuntime.make(PgClient.layer({ url: Redacted.make(URL), applicationName: "ec-pg-test-admin" }))

const query = <A extends object = Record<string, unknown>>(text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe<A>(text, params)).pipe(Effect.provide(admin), Effect.orDie)

afterAll(async () => {
  await Effect.runPromise(Effect.gen(function*() {
    const schemas = yield* query<{ name: string }>(
      `SELECT nspname AS name FROM pg_namespace WHERE left(nspname, $2) = $1`,
      [RUN, RUN.length]
    )
    for (const { name } of schemas) yield* query(`DROP SCHEMA "${name}" CASCADE`)
    yield* query(`DROP SCHEMA IF EXISTS "${STALL_SCHEMA}" CASCADE`)
  }))
  await admin.dispose()
})

let counter = 0
/** A table name of its own for one test. */
const freshName = (label = "t") => `${label}_${++counter}_${Date.now().toString(36)}`

/** Drops a table and its schema-version row. */
const dropTable = (schema: string, table: string) =>
  Effect.zipRight(
    query(
      `DROP TABLE IF EXISTS ${
        Object.values(PostgresStore.tableNames(table)).map((name) => `"${schema}"."${name}"`).join(", ")
      }`
    ),
    query(
      `DELETE FROM "${schema}".effect_checkpoint_migrations WHERE table_name = $1`,
      [table]
    ).pipe(Effect.catchAllDefect(() => Effect.void))
  )

/** A fresh table name, dropped when the scope closes. */
const scopedTable = (label = "t", schema = SCHEMA) =>
  Effect.acquireRelease(Effect.sync(() => freshName(label)), (table) => dropTable(schema, table))

const kitFor = (table: string) =>
  Layer.succeed(StoreTestKit, {
    // JSONB cannot hold broken JSON: store a well-formed row that is not a checkpoint (next not an array, metadata not an object).
    corrupt: (cp) =>
      query(`UPDATE "${SCHEMA}"."${table}" SET next = '{"not": "an array"}'::jsonb, metadata = '[1]'::jsonb WHERE id = $1`, [
        cp.id
      ]),
    blobStats: (e) =>
      Effect.map(
        query<{ count: string; bytes: string }>(
          `SELECT count(*) AS count, coalesce(sum(octet_length(value)), 0) AS bytes FROM "${SCHEMA}"."${
            PostgresStore.tableNames(table).blobs
          }" WHERE execution_id = $1`,
          [e]
        ),
        (rows) => ({ count: Number(rows[0]!.count), bytes: Number(rows[0]!.bytes) })
      )
  })

const pgUnderTest = Layer.unwrapScoped(
  Effect.map(scopedTable("conf"), (tableName) =>
    Layer.merge(PostgresStore.layer({ url: URL, schema: SCHEMA, tableName }), kitFor(tableName)))
)

conformance("Postgres", pgUnderTest, { preservesKeyOrder: false, blobs: true })

// Also the statements run unnamed (preparedStatements: false), as behind a pooler that cannot keep them.
conformance(
  "Postgres (synchronousCommit off, layerClient, unprepared)",
  Layer.unwrapScoped(
    Effect.map(scopedTable("conf_async"), (tableName) =>
      Layer.merge(
        PostgresStore.layerClient({ schema: SCHEMA, tableName, synchronousCommit: "off", preparedStatements: false }).pipe(
          Layer.provide(PgClient.layer({ url: Redacted.make(URL) }))
        ),
        kitFor(tableName)
      ))
  ),
  { preservesKeyOrder: false, blobs: true }
)

/** Runs `body` with a store on a fresh table of SCHEMA (dropped afterwards). */
const withStore = <A, E>(
  body: (table: string) => Effect.Effect<A, E, CheckpointStore.CheckpointStore | Scope.Scope>,
  options: Partial<PostgresStore.Options> = {}
) =>
  Effect.scoped(Effect.flatMap(scopedTable(), (tableName) =>
    body(tableName).pipe(Effect.provide(PostgresStore.layer({ url: URL, schema: SCHEMA, tableName, ...options })))))

// -----------------------------------------------------------------------------
// Fault injection: a TCP proxy in front of the server
// -----------------------------------------------------------------------------

interface Proxy {
  readonly port: number
  /** Stops listening and cuts every connection: the server is gone. */
  readonly kill: Effect.Effect<void>
  /** Listens again on the same port: the server is back. */
  readonly revive: Effect.Effect<void>
}

const pgTarget = (() => {
  const u = new globalThis.URL(URL)
  return { host: u.hostname || "127.0.0.1", port: Number(u.port || 5432) }
})()

/** A proxy to the server (`stall`: accepts connections and never answers). Closed when the scope closes. */
const proxy = (mode: "forward" | "stall" = "forward") =>
  Effect.acquireRelease(
    Effect.async<Proxy>((resume) => {
      const sockets = new Set<net.Socket>()
      const track = (s: net.Socket) => {
        sockets.add(s)
        s.on("close", () => sockets.delete(s))
        s.on("error", () => s.destroy())
      }
      const onConnection = (client: net.Socket) => {
        track(client)
        if (mode === "stall") return
        const upstream = net.connect(pgTarget.port, pgTarget.host)
        track(upstream)
        client.pipe(upstream)
        upstream.pipe(client)
        client.on("close", () => upstream.destroy())
        upstream.on("close", () => client.destroy())
      }
      let server = net.createServer(onConnection)
      const listen = (port: number) =>
        Effect.async<void>((done) => {
          server = net.createServer(onConnection)
          server.listen(port, "127.0.0.1", () => done(Effect.void))
        })
      const kill = Effect.async<void>((done) => {
        server.close(() => done(Effect.void))
        for (const s of sockets) s.destroy()
      })
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as net.AddressInfo).port
        resume(Effect.succeed({ port, kill, revive: listen(port) }))
      })
    }),
    (p) => p.kill
  )

/** A port nobody listens on. */
const closedPort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

const PASSWORD = "S3cr3t-pa55word-x9"
const withPassword = (port: number, extra = "") => `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/test${extra}`

/** Every way an error can be shown: none may contain the password. */
const expectNoPassword = (error: unknown) => {
  const shown = [
    String(error),
    JSON.stringify(error),
    (error as { message?: string }).message ?? "",
    Cause.pretty(Cause.fail(error)),
    JSON.stringify((error as { cause?: unknown }).cause ?? null)
  ]
  for (const text of shown) expect(text).not.toContain(PASSWORD)
}

/** The store's backends, by application_name. */
const backendsOf = (applicationName: string) =>
  query<{ pid: number; wait_event_type: string | null; state: string | null }>(
    `SELECT pid, wait_event_type, state FROM pg_stat_activity WHERE application_name = $1`,
    [applicationName]
  )

/** Polls `check` every 50 ms until it holds (at most ~10 s). */
const eventually = (check: Effect.Effect<boolean>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      if (yield* check) return
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage("condition never held")
  })

/**
 * Holds an ACCESS EXCLUSIVE lock on a test table (from the admin pool, in a
 * transaction that never ends) until the fiber is interrupted or the scope
 * closes; returns once the lock is granted.
 */
const lockTable = (table: string) =>
  Effect.gen(function*() {
    const holder = yield* Effect.forkScoped(
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql.withTransaction(
          Effect.zipRight(sql.unsafe(`LOCK TABLE "${SCHEMA}"."${table}" IN ACCESS EXCLUSIVE MODE`), Effect.never)
        )).pipe(Effect.provide(admin))
    )
    yield* eventually(Effect.map(
      query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE relation = to_regclass($1) AND granted`, [
        `"${SCHEMA}"."${table}"`
      ]),
      (r) => r[0]!.n > 0
    ))
    return holder
  })

// -----------------------------------------------------------------------------

describe("PostgresStore", () => {
  describe("schema", () => {
    it.live("creates the documented table with one unique index besides the key, and records its schema version", () =>
      withStore((table) =>
        Effect.gen(function*() {
          const columns = yield* query<{ name: string; type: string; nullable: string }>(
            `SELECT column_name AS name, data_type AS type, is_nullable AS nullable FROM information_schema.columns ` +
              `WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`,
            [SCHEMA, table]
          )
          expect(columns.map((c) => [c.name, c.type, c.nullable])).toEqual([
            ["id", "text", "NO"],
            ["execution_id", "text", "NO"],
            ["node_name", "text", "NO"],
            ["state", "jsonb", "NO"],
            ["metadata", "jsonb", "NO"],
            ["timestamp", "timestamp with time zone", "NO"],
            ["version", "integer", "NO"],
            ["next", "jsonb", "NO"],
            ["parent_id", "text", "YES"],
            ["runtime", "jsonb", "YES"],
            ["refs", "jsonb", "YES"]
          ])
          const names = PostgresStore.tableNames(table)
          const recordIndexes = yield* query<{ def: string }>(
            `SELECT indexdef AS def FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY indexname`,
            [SCHEMA, names.executions]
          )
          expect(recordIndexes.map((i) => i.def.replace(/^.* USING /, ""))).toEqual([
            "btree (execution_id)",
            "btree (status, updated_at DESC, execution_id DESC)",
            "btree (updated_at DESC, execution_id DESC)"
          ])
          const writeKey = yield* query<{ def: string }>(
            `SELECT indexdef AS def FROM pg_indexes WHERE schemaname = $1 AND tablename = $2`,
            [SCHEMA, names.writes]
          )
          expect(writeKey.map((i) => i.def.replace(/^.* USING /, ""))).toEqual([`btree (checkpoint_id, task_id, key)`])
          const indexes = yield* query<{ def: string }>(
            `SELECT indexdef AS def FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY indexname`,
            [SCHEMA, table]
          )
          expect(indexes.length).toBe(2)
          expect(indexes.map((i) => i.def.replace(/^.* USING /, ""))).toEqual(["btree (execution_id, version)", "btree (id)"])
          const recorded = yield* query<{ version: number }>(
            `SELECT version FROM "${SCHEMA}".${PostgresStore.migrationsTable} WHERE table_name = $1`,
            [table]
          )
          expect(recorded).toEqual([{ version: PostgresStore.schemaVersion }])
          expect(PostgresStore.schemaVersion).toBe(2)
        })
      ))

    it.live("layers built in parallel, in a schema that does not exist yet, all succeed (advisory lock)", () =>
      Effect.scoped(Effect.gen(function*() {
        const schema = `${RUN}_par_${++counter}`
        const tables = ["a", "b"].map((t) => `par_${t}`)
        const layers = Array.from({ length: 8 }, (_, i) =>
          PostgresStore.layer({ url: URL, schema, tableName: tables[i % 2]!, maxConnections: 2 }))
        // Build all eight at once, each with its own pool: eight sessions race to create the schema and two tables.
        const contexts = yield* Effect.forEach(layers, (l) => Layer.build(l), { concurrency: "unbounded" })
        const stores = contexts.map((c) => Context.get(c, store))
        const e = yield* freshExecution()
        yield* stores[0]!.save(yield* mk(e, 1))
        yield* stores[3]!.save(yield* mk(e, 2))
        // Stores on one table see each other; the other table is separate.
        expect((yield* stores[2]!.list(e)).map((c) => c.version)).toEqual([1])
        expect((yield* stores[1]!.list(e)).map((c) => c.version)).toEqual([2])
        const recorded = yield* query<{ table_name: string; version: number }>(
          `SELECT table_name, version FROM "${schema}".${PostgresStore.migrationsTable} ORDER BY table_name`
        )
        expect(recorded).toEqual(tables.map((table_name) => ({ table_name, version: PostgresStore.schemaVersion })))
      })))

    it.live("an up-to-date table is used without DDL: a read-only session can build the layer and read", () =>
      Effect.scoped(Effect.gen(function*() {
        const tableName = yield* scopedTable()
        const e = yield* freshExecution()
        const cp = yield* mk(e, 1)
        yield* Effect.flatMap(store, (s) => s.save(cp)).pipe(
          Effect.provide(PostgresStore.layer({ url: URL, schema: SCHEMA, tableName }))
        )
        const readOnly = `${URL}?options=${encodeURIComponent("-c default_transaction_read_only=on")}`
        yield* Effect.gen(function*() {
          const s = yield* store
          expect((yield* s.list(e)).map(view)).toEqual([view(cp)])
          const refused = yield* Effect.flip(Effect.flatMap(mk(e, 2), s.save))
          expect(refused).toMatchObject({ _tag: "CheckpointStoreError", backend: "postgres", operation: "save" })
          expect(refused.message).toContain("read-only")
        }).pipe(Effect.provide(PostgresStore.layer({ url: readOnly, schema: SCHEMA, tableName })))
      })))

    it.live("a table dropped behind the store's back is made again at the next build", () =>
      Effect.scoped(Effect.gen(function*() {
        const tableName = yield* scopedTable()
        const layer = PostgresStore.layer({ url: URL, schema: SCHEMA, tableName })
        yield* Effect.provide(store, layer)
        yield* query(`DROP TABLE "${SCHEMA}"."${tableName}"`)
        const e = yield* freshExecution()
        yield* Effect.flatMap(store, (s) => Effect.zipRight(Effect.flatMap(mk(e, 1), s.save), s.list(e))).pipe(
          Effect.provide(layer)
        )
        const count = yield* query<{ n: number }>(`SELECT count(*)::int AS n FROM "${SCHEMA}"."${tableName}"`)
        expect(count).toEqual([{ n: 1 }])
      })))

    it.live("a table recorded at a newer schema version is refused, untouched", () =>
      Effect.scoped(Effect.gen(function*() {
        const tableName = yield* scopedTable()
        const layer = PostgresStore.layer({ url: URL, schema: SCHEMA, tableName })
        yield* Effect.provide(store, layer)
        yield* query(`UPDATE "${SCHEMA}".${PostgresStore.migrationsTable} SET version = 99 WHERE table_name = $1`, [tableName])
        const error = yield* Effect.flip(Effect.provide(store, layer))
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "postgres", operation: "migrate" })
        expect(error.message).toContain("newer")
        const recorded = yield* query<{ version: number }>(
          `SELECT version FROM "${SCHEMA}".${PostgresStore.migrationsTable} WHERE table_name = $1`,
          [tableName]
        )
        expect(recorded).toEqual([{ version: 99 }])
      })))

    /** The table of the reference implementation (langgraphgo's InitSchema). */
    const referenceTable = (table: string) => [
      `CREATE TABLE "${SCHEMA}"."${table}" (id TEXT PRIMARY KEY, execution_id TEXT NOT NULL, node_name TEXT NOT NULL, ` +
      `state JSONB NOT NULL, metadata JSONB, timestamp TIMESTAMPTZ NOT NULL, version INTEGER NOT NULL)`,
      `CREATE INDEX "idx_${table}_execution_id" ON "${SCHEMA}"."${table}" (execution_id)`
    ]
    /** The upgrade the README gives, for the table `t`. */
    const readmeUpgrade = (t: string) => [
      `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS next JSONB NOT NULL DEFAULT '[]'::jsonb, ADD COLUMN IF NOT EXISTS parent_id TEXT`,
      `ALTER TABLE ${t} ALTER COLUMN next DROP DEFAULT`,
      `UPDATE ${t} SET metadata = '{}'::jsonb WHERE metadata IS NULL`,
      `ALTER TABLE ${t} ALTER COLUMN metadata SET NOT NULL`,
      `ALTER TABLE ${t} ADD UNIQUE (execution_id, version)`
    ]

    it.live("an older table is refused with what it lacks; after the README's upgrade it is adopted, its rows load and its executions get records (unfinished: interrupted)", () =>
      Effect.scoped(Effect.gen(function*() {
        const tableName = yield* scopedTable("old")
        const qualified = `"${SCHEMA}"."${tableName}"`
        yield* Effect.provide(store, PostgresStore.layer({ url: URL, schema: SCHEMA, tableName: "warm_up_schema" })).pipe(
          Effect.ensuring(dropTable(SCHEMA, "warm_up_schema"))
        )
        for (const statement of referenceTable(tableName)) yield* query(statement)
        const e = yield* freshExecution()
        const oldId = yield* Checkpoint.generateCheckpointId
        yield* query(
          `INSERT INTO ${qualified} (id, execution_id, node_name, state, metadata, timestamp, version) ` +
            `VALUES ($1, $2, 'step1', '{"step": 1}'::jsonb, NULL, '2025-01-02T03:04:05.678Z', 1)`,
          [oldId, e]
        )
        const layer = PostgresStore.layer({ url: URL, schema: SCHEMA, tableName })
        const refused = yield* Effect.flip(Effect.provide(store, layer))
        expect(refused).toMatchObject({ _tag: "CheckpointStoreError", backend: "postgres", operation: "migrate" })
        expect(refused.message).toContain("no column next jsonb")
        expect(refused.message).toContain("no UNIQUE (execution_id, version)")
        expect(refused.message).toContain("README")
        // Refusing changed nothing.
        expect(yield* query(`SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2`, [
          SCHEMA,
          tableName
        ])).toHaveLength(7)

        for (const statement of readmeUpgrade(qualified)) yield* query(statement)
        // A run 0.1.0 stopped mid-way (its newest checkpoint has nodes to run).
        const stopped = yield* freshExecution("stopped")
        yield* query(
          `INSERT INTO ${qualified} (id, execution_id, node_name, state, metadata, timestamp, version, next) ` +
            `VALUES ($1, $2, 'step1', '{"step": 1}'::jsonb, '{}'::jsonb, '2025-01-02T03:04:05.678Z', 1, '["step2"]'::jsonb)`,
          [yield* Checkpoint.generateCheckpointId, stopped]
        )
        yield* Effect.gen(function*() {
          const s = yield* store
          // Adopted from 0.1.0: each execution has a record from its newest checkpoint; no worker takes the stopped one.
          expect(Option.map(yield* s.getExecution(e), (r) => r.status)).toEqual(Option.some("done"))
          expect(Option.map(yield* s.getExecution(stopped), (r) => r.status)).toEqual(Option.some("interrupted"))
          expect(yield* s.claim({ owner: "worker", ttl: "1 minute", limit: 10 })).toEqual([])
          const old = yield* s.load(oldId as Checkpoint.CheckpointId)
          expect(view(old)).toEqual({
            id: oldId,
            executionId: e,
            nodeName: "step1",
            state: { step: 1 },
            metadata: {},
            timestamp: "2025-01-02T03:04:05.678Z",
            version: 1,
            next: [],
            parentId: undefined
          })
          yield* s.save(yield* mk(e, 2, { parentId: oldId }))
          expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2])
          expect((yield* Effect.flip(Effect.flatMap(mk(e, 2), s.save)))._tag).toBe("CheckpointConflict")
        }).pipe(Effect.provide(layer))
        const recorded = yield* query<{ version: number }>(
          `SELECT version FROM "${SCHEMA}".${PostgresStore.migrationsTable} WHERE table_name = $1`,
          [tableName]
        )
        expect(recorded).toEqual([{ version: PostgresStore.schemaVersion }])
        // The record follows the new save.
        expect((yield* query<{ status: string }>(
          `SELECT status FROM "${SCHEMA}"."${PostgresStore.tableNames(tableName).executions}" WHERE execution_id = $1`,
          [e]
        ))).toEqual([{ status: "pending" }])
      })))

    it.live("bad table and schema names fail with InvalidIdentifier before any connection is made", () =>
      Effect.gen(function*() {
        const port = yield* closedPort
        const url = withPassword(port)
        // (`__proto__`, `constructor` and `prototype` are bad ids but fine, quoted, as SQL names.)
        const bad = [...hostileIds.filter((n) => !["__proto__", "constructor", "prototype"].includes(n)), "x".repeat(64), "1abc", "a.b", "a-b", "public.checkpoints", "tbl\"; DROP TABLE x; --"]
        for (const name of bad) {
          const asTable = yield* Effect.flip(Effect.provide(store, PostgresStore.layer({ url, tableName: name })))
          expect(asTable, name).toMatchObject({ _tag: "InvalidIdentifier", kind: "tableName" })
          const asSchema = yield* Effect.flip(Effect.provide(store, PostgresStore.layer({ url, schema: name })))
          expect(asSchema, name).toMatchObject({ _tag: "InvalidIdentifier", kind: "schemaName" })
        }
        // layerClient checks them before it touches the (working) client's database.
        const client = PgClient.layer({ url: Redacted.make(URL) })
        for (const name of ["x".repeat(64), "a.b", "tbl\"; DROP TABLE x; --"]) {
          const viaClient = yield* Effect.flip(Effect.provide(store, PostgresStore.layerClient({ tableName: name }).pipe(Layer.provide(client))))
          expect(viaClient, name).toMatchObject({ _tag: "InvalidIdentifier", kind: "tableName" })
          const viaSchema = yield* Effect.flip(Effect.provide(store, PostgresStore.layerClient({ schema: name }).pipe(Layer.provide(client))))
          expect(viaSchema, name).toMatchObject({ _tag: "InvalidIdentifier", kind: "schemaName" })
        }
        const reserved = yield* Effect.flip(Effect.provide(store, PostgresStore.layer({ url, tableName: PostgresStore.migrationsTable })))
        expect(reserved).toMatchObject({ _tag: "InvalidIdentifier", kind: "tableName" })
      }))

    it.live("a 63-character table name is used exactly as given (PostgreSQL would truncate a longer one)", () =>
      Effect.scoped(Effect.gen(function*() {
        const tableName = `T63_${++counter}_`.padEnd(63, "x")
        yield* Effect.addFinalizer(() => dropTable(SCHEMA, tableName))
        const e = yield* freshExecution()
        yield* Effect.flatMap(store, (s) => Effect.flatMap(mk(e, 1), s.save)).pipe(
          Effect.provide(PostgresStore.layer({ url: URL, schema: SCHEMA, tableName }))
        )
        const found = yield* query<{ name: string }>(
          `SELECT tablename AS name FROM pg_tables WHERE schemaname = $1 AND tablename = $2`,
          [SCHEMA, tableName]
        )
        expect(found).toEqual([{ name: tableName }])
      })))
  })

  describe("round trips", () => {
    it.live("reads are one statement (list pushes limit and afterVersion into SQL); a save is one statement: lock, record, insert", () =>
      withStore(() =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cps = yield* Effect.forEach([1, 2, 3, 4, 5], (v) => mk(e, v))
          const count = <A, E>(effect: Effect.Effect<A, E>) => Effect.map(recordStatements(effect), ([, statements]) => statements)
          const saved = yield* count(s.save(cps[0]!, { expect: { executionId: e, latestVersion: 0 } }))
          expect(saved).toHaveLength(1)
          expect(saved[0]).toMatch(/^WITH lk AS/)
          expect(saved[0]).toContain("pg_advisory_xact_lock")
          const many = yield* count(s.saveMany(cps.slice(1), { expect: { executionId: e, latestVersion: 1 } }))
          expect(many).toHaveLength(1)
          expect(yield* count(s.save(yield* mk(e, 6)))).toHaveLength(1)
          expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2, 3, 4, 5, 6])
          const [page, listed] = yield* recordStatements(s.list(e, { afterVersion: 2, limit: 2 }))
          expect(page.map((c) => c.version)).toEqual([3, 4])
          expect(listed).toHaveLength(1)
          expect(listed[0]).toContain("version > $2")
          expect(listed[0]).toContain("LIMIT $3")
          const latest = yield* count(s.latest(e))
          expect(latest).toHaveLength(1)
          expect(latest[0]).toContain("ORDER BY version DESC LIMIT 1")
          expect(yield* count(s.load(cps[0]!.id))).toHaveLength(1)
          expect(yield* count(s.listExecutions())).toHaveLength(1)
          expect(yield* count(s.getExecution(e))).toHaveLength(1)
        })
      ))

    it.live("states are stored as JSONB values (not JSON text): top-level array, string, number, null, object, boolean", () =>
      withStore((table) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const states: ReadonlyArray<Checkpoint.Json> = [[1, "two", { three: 3 }], "just a string", 42.5, null, { a: [] }, true, "[1,2]"]
          yield* s.saveMany(yield* Effect.forEach(states, (state, i) => mk(e, i + 1, { state })))
          const stored = yield* query<{ kind: string; text: string }>(
            `SELECT jsonb_typeof(state) AS kind, state::text AS text FROM "${SCHEMA}"."${table}" WHERE execution_id = $1 ORDER BY version`,
            [e]
          )
          expect(stored.map((r) => r.kind)).toEqual(["array", "string", "number", "null", "object", "boolean", "string"])
          expect(stored[0]!.text).toBe(`[1, "two", {"three": 3}]`)
          // A JSONB query sees the values.
          const found = yield* query<{ version: number }>(
            `SELECT version FROM "${SCHEMA}"."${table}" WHERE execution_id = $1 AND state @> '[{"three": 3}]'::jsonb`,
            [e]
          )
          expect(found).toEqual([{ version: 1 }])
          expect((yield* s.list(e)).map((c) => c.state)).toEqual(states)
          const one = yield* mk(e, 20, { state: [] })
          yield* s.save(one)
          expect((yield* s.load(one.id)).state).toEqual([])
        })
      ))

    it.live("JSONB keeps values, not key order: objects come back equal, own __proto__ keys stay data", () =>
      withStore(() =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const state = JSON.parse(`{"zeta": 1, "__proto__": {"polluted": true}, "a": {"y": 2, "b": 3}}`)
          const cp = yield* mk(e, 1, { state, metadata: { second: 2, first: 1 } })
          yield* s.save(cp)
          const loaded = yield* s.load(cp.id)
          expect(loaded.state).toEqual(state)
          expect(Object.keys(loaded.state as object).sort()).toEqual(["__proto__", "a", "zeta"])
          expect(Object.getPrototypeOf(loaded.state)).toBe(Object.prototype)
          expect(({} as Record<string, unknown>).polluted).toBeUndefined()
          expect(loaded.metadata).toEqual({ first: 1, second: 2 })
        })
      ))

    it.live("NUL characters and unpaired surrogates fail with CheckpointEncodeError naming where, and nothing is written", () =>
      withStore((table) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cases: ReadonlyArray<readonly [Partial<Checkpoint.MakeOptions>, string]> = [
            [{ state: { text: "a\u0000b" } }, `state["text"] contains the NUL character`],
            [{ state: "\u0000" }, "state contains the NUL character"],
            [{ state: [{ ["k\u0000"]: 1 }] }, "state[0] has a key that contains the NUL character"],
            [{ metadata: { note: "x\u0000" } }, `metadata["note"] contains the NUL character`],
            [{ state: { lone: "\ud800" } }, `state["lone"] contains an unpaired surrogate`],
            [{ state: { lone: "x\udc00" } }, `state["lone"] contains an unpaired surrogate`],
            [{ next: ["a\u0000"] }, "next[0] contains the NUL character"],
            [{ nodeName: "node\u0000" }, "nodeName contains the NUL character"],
            [{ nodeName: "node\ud800" }, "nodeName contains an unpaired surrogate"]
          ]
          for (const [options, expected] of cases) {
            const cp = yield* mk(e, 1, options)
            const error = yield* Effect.flip(s.save(cp))
            expect(error).toMatchObject({ _tag: "CheckpointEncodeError", id: cp.id })
            expect(error.message).toContain(expected)
            expect(error.message).toContain("PostgreSQL cannot store")
            // In a batch, the error names the bad checkpoint and none of the batch is written.
            const good = yield* mk(e, 2)
            const inBatch = yield* Effect.flip(s.saveMany([good, cp]))
            expect(inBatch).toMatchObject({ _tag: "CheckpointEncodeError", id: cp.id })
          }
          // Paired surrogates (emoji) are fine.
          const emoji = yield* mk(e, 3, { nodeName: "🚀 node", state: { s: "😀 \u2028 ok" } })
          yield* s.save(emoji)
          expect(view(yield* s.load(emoji.id))).toEqual(view(emoji))
          const rows = yield* query<{ n: number }>(`SELECT count(*)::int AS n FROM "${SCHEMA}"."${table}"`)
          expect(rows).toEqual([{ n: 1 }])
        })
      ))

    it.live("a timestamp PostgreSQL cannot store fails with CheckpointEncodeError and writes nothing", () =>
      withStore(() =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1, { timestamp: new Date("+010000-01-01T00:00:00.000Z") })
          const error = yield* Effect.flip(s.save(cp))
          expect(error).toMatchObject({ _tag: "CheckpointEncodeError", id: cp.id })
          expect(error.message).toContain("PostgreSQL refused")
          expect(yield* s.list(e)).toEqual([])
          // Millisecond precision and old dates round-trip.
          const old = yield* mk(e, 2, { timestamp: new Date("1900-02-28T23:59:59.999Z") })
          yield* s.save(old)
          expect((yield* s.load(old.id)).timestamp.toISOString()).toBe("1900-02-28T23:59:59.999Z")
        })
      ))

    it.live("a conflict in a batch names the checkpoint that collides, by id or by (executionId, version)", () =>
      withStore(() =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const stored = yield* mk(e, 5)
          yield* s.save(stored)
          const bySlot = yield* mk(e, 5)
          const slotError = yield* Effect.flip(s.saveMany([yield* mk(e, 3), yield* mk(e, 4), bySlot, yield* mk(e, 6)]))
          expect(slotError).toMatchObject({ _tag: "CheckpointConflict", executionId: e, version: 5, id: bySlot.id })
          const other = yield* freshExecution("other")
          const byId = yield* mk(other, 7, { id: stored.id })
          const idError = yield* Effect.flip(s.saveMany([yield* mk(other, 1), byId]))
          expect(idError).toMatchObject({ _tag: "CheckpointConflict", executionId: other, version: 7, id: stored.id })
          expect(yield* s.list(other)).toEqual([])
          expect((yield* s.list(e)).map(view)).toEqual([view(stored)])
        })
      ))

    it.live("a batch larger than one INSERT is still all or nothing (one transaction)", () =>
      withStore((table) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const clash = yield* mk(e, 6001)
          yield* s.save(clash)
          const batch = yield* Effect.forEach(Array.from({ length: 6001 }, (_, i) => i + 1), (v) => mk(e, v, { state: v }))
          const error = yield* Effect.flip(s.saveMany(batch))
          expect(error).toMatchObject({ _tag: "CheckpointConflict", version: 6001 })
          const count = query<{ n: number }>(`SELECT count(*)::int AS n FROM "${SCHEMA}"."${table}"`)
          expect(yield* count).toEqual([{ n: 1 }])
          yield* s.saveMany(batch.slice(0, 6000))
          expect(yield* count).toEqual([{ n: 6001 }])
          expect((yield* s.list(e, { afterVersion: 5998 })).map((c) => c.state)).toEqual([5999, 6000, clash.state])
        })
      ))

    it.live("listExecutions reads records only (never a checkpoint), from the (updated_at, execution_id) index; a corrupt record fails naming it", () =>
      withStore((table) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.saveMany([yield* mk(e, 1), yield* mk(e, 2, { next: [] })])
          const [summaries, statements] = yield* recordStatements(s.listExecutions())
          expect(summaries.executions.find((x) => x.executionId === e)).toMatchObject({ latestVersion: 2, pending: false, status: "done" })
          expect(statements).toHaveLength(1)
          expect(statements[0]).toContain(`"${PostgresStore.tableNames(table).executions}"`)
          expect(statements[0]).not.toContain(`"${table}"`)
          const records = `"${SCHEMA}"."${PostgresStore.tableNames(table).executions}"`
          const plan = yield* query<{ "QUERY PLAN": string }>(
            `EXPLAIN SELECT * FROM ${records} WHERE (updated_at, execution_id) < (1, 'x') ORDER BY updated_at DESC, execution_id DESC LIMIT 10`
          )
          expect(plan.map((r) => r["QUERY PLAN"]).join("\n")).not.toMatch(/Sort/)
          yield* query(`UPDATE ${records} SET status = 'bogus' WHERE execution_id = $1`, [e])
          const failed = yield* Effect.flip(s.listExecutions())
          expect(failed._tag).toBe("CheckpointDecodeError")
          expect(failed.message).toContain(e)
        })
      ))

    it.live("a state that no longer fits the graph's Schema loads as CheckpointDecodeError", () =>
      withStore(() =>
        Effect.gen(function*() {
          const State = Schema.Struct({ step: Schema.Int, at: Schema.DateFromString })
          const graph = Graph.make(State).pipe(
            Graph.addNode("tick", (s) => Effect.succeed({ ...s, step: s.step + 1 })),
            Graph.addEdge("tick", Graph.END),
            Graph.setEntryPoint("tick")
          )
          const runnable = yield* Graph.compileCheckpointable(graph, { durability: "sync" })
          const executionId = yield* freshExecution("graph")
          const final = yield* runnable.invoke({ step: 0, at: new Date("2026-01-01T00:00:00.000Z") }, { executionId })
          expect(final.step).toBe(1)
          const listed = yield* runnable.listCheckpoints(executionId)
          expect(listed.map((c) => c.state.at)).toEqual([new Date("2026-01-01T00:00:00.000Z"), new Date("2026-01-01T00:00:00.000Z")])
          // Another program writes a checkpoint whose state the Schema rejects.
          const s = yield* store
          const foreign = yield* mk(executionId, 3, { state: { step: "three" } })
          yield* s.save(foreign)
          const error = yield* Effect.flip(runnable.loadCheckpoint(foreign.id))
          expect(error).toMatchObject({ _tag: "CheckpointDecodeError", id: foreign.id })
        })
      ))
  })

  describe("list", () => {
    it.live("list({ limit }) converts only the rows it returns to text, whatever the plan (here: a table not analysed yet)", () =>
      withStore((table) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          // The bench's read section: one 1001-checkpoint execution in a new table.
          const state = (v: number) => ({ step: v, data: "processed by step ".repeat(8), history: ["a", "b", "c", "d"] })
          yield* s.saveMany(yield* Effect.forEach(Array.from({ length: 1001 }, (_, i) => i + 1), (v) => mk(e, v, { state: state(v) })))
          const [page, statements] = yield* recordStatements(s.list(e, { limit: 10 }))
          expect(page.map((c) => c.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
          expect(statements).toHaveLength(1)
          interface PlanNode {
            readonly "Node Type": string
            readonly "Actual Rows": number
            readonly "Actual Loops": number
            readonly Output?: ReadonlyArray<string>
            readonly Plans?: ReadonlyArray<PlanNode>
          }
          const explained = yield* query<{ "QUERY PLAN": ReadonlyArray<{ Plan: PlanNode }> }>(
            `EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) ${statements[0]}`,
            [e, 0, 10]
          )
          const nodes: Array<PlanNode> = []
          const walk = (node: PlanNode) => {
            nodes.push(node)
            for (const child of node.Plans ?? []) walk(child)
          }
          walk(explained[0]!["QUERY PLAN"][0]!.Plan)
          // Every node that evaluates the JSONB → text conversions does so for at most the 10 rows returned.
          const converting = nodes.filter((n) => (n.Output ?? []).some((o) => /\(\S*state\)::text/.test(o)))
          expect(converting.length).toBeGreaterThan(0)
          for (const node of converting) {
            expect(node["Actual Rows"] * node["Actual Loops"], node["Node Type"]).toBeLessThanOrEqual(10)
          }
          // The other pages are right too.
          expect((yield* s.list(e, { afterVersion: 995, limit: 10 })).map((c) => c.version)).toEqual([996, 997, 998, 999, 1000, 1001])
          expect((yield* s.list(e)).length).toBe(1001)
          expect(table.length).toBeGreaterThan(0)
        })
      ))
  })

  describe("conditional saves (expect)", () => {
    const expectOn = (executionId: Checkpoint.ExecutionId, latestVersion: number) => ({ expect: { executionId, latestVersion } })
    const countRows = (table: string, executionId: string) =>
      Effect.map(
        query<{ n: number }>(`SELECT count(*)::int AS n FROM "${SCHEMA}"."${table}" WHERE execution_id = $1`, [executionId]),
        (rows) => rows[0]!.n
      )

    for (const synchronousCommit of ["on", "off"] as const) {
      it.live(`synchronousCommit ${synchronousCommit}: a save's transaction ${synchronousCommit === "off" ? "commits asynchronously" : "keeps the server's setting"}; a failed expectation inserts nothing`, () =>
        withStore((table) =>
          Effect.gen(function*() {
            const s = yield* store
            const e = yield* freshExecution()
            const [, one] = yield* recordStatements(Effect.flatMap(mk(e, 1), (cp) => s.save(cp, expectOn(e, 0))))
            expect(one[0]!.includes("set_config('synchronous_commit', 'off', true)")).toBe(synchronousCommit === "off")
            yield* s.saveMany([yield* mk(e, 2), yield* mk(e, 3)], expectOn(e, 1))
            const [error, stale] = yield* recordStatements(
              Effect.flip(Effect.flatMap(Effect.forEach([4, 5], (v) => mk(e, v)), (cps) => s.saveMany(cps, expectOn(e, 2))))
            )
            expect(error).toMatchObject({ _tag: "CheckpointConflict", reason: "ExpectationFailed", expectedLatestVersion: 2, actualLatestVersion: 3 })
            expect(stale.filter((text) => text.startsWith("INSERT"))).toEqual([])
            expect(yield* countRows(table, e)).toBe(3)
            // Reads never change how the connection commits.
            const [, read] = yield* recordStatements(s.list(e))
            expect(read.join("\n")).not.toContain("synchronous_commit")
          }), { synchronousCommit }))
    }

    it.live("a batch larger than one INSERT checks the expectation in its first, all in one transaction", () =>
      withStore((table) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.save(yield* mk(e, 1))
          const batch = yield* Effect.forEach(Array.from({ length: 5001 }, (_, i) => i + 2), (v) => mk(e, v, { state: v }))
          const error = yield* Effect.flip(s.saveMany(batch, expectOn(e, 0)))
          expect(error).toMatchObject({ _tag: "CheckpointConflict", expectedLatestVersion: 0 })
          expect(yield* countRows(table, e)).toBe(1)
          yield* s.saveMany(batch, expectOn(e, 1))
          expect(yield* countRows(table, e)).toBe(5002)
        })
      ))

    // Deterministic race: the first save holds its rows uncommitted in an app transaction (layerClient);
    // the second runs its conditional INSERT meanwhile on another connection.
    for (const isolation of ["read committed", "serializable"] as const) {
      it.live(`${isolation}: two conditional saves into an empty execution both pass the check; the unique key holds the second until the first commits, and it fails with the expectation's conflict (or goes through if the first rolls back)`, () =>
        Effect.scoped(Effect.gen(function*() {
          const tableName = yield* scopedTable("race")
          const applicationName = freshName("ec-pg-test-race")
          const url = isolation === "serializable"
            ? `${URL}?options=${encodeURIComponent("-c default_transaction_isolation=serializable")}`
            : URL
          const Pg = PgClient.layer({ url: Redacted.make(url), applicationName, maxConnections: 4 })
          const context = yield* Layer.build(
            Layer.merge(Pg, PostgresStore.layerClient({ schema: SCHEMA, tableName }).pipe(Layer.provide(Pg)))
          )
          const s = Context.get(context, store)
          const sql = Context.get(context, SqlClient.SqlClient)

          const race = (outcome: "commit" | "rollback") =>
            Effect.gen(function*() {
              const e = yield* freshExecution()
              const first = yield* Effect.forEach([1, 2], (v) => mk(e, v, { state: { first: v } }))
              const second = yield* Effect.forEach([1, 2], (v) => mk(e, v, { state: { second: v } }))
              const inserted = yield* Deferred.make<void>()
              const release = yield* Deferred.make<void>()
              const holder = yield* Effect.fork(sql.withTransaction(
                s.saveMany(first, expectOn(e, 0)).pipe(
                  Effect.zipRight(Deferred.succeed(inserted, undefined)),
                  Effect.zipRight(Deferred.await(release)),
                  Effect.zipRight(outcome === "commit" ? Effect.void : Effect.fail("rolled back" as const))
                )
              ))
              yield* Deferred.await(inserted)
              const rival = yield* Effect.fork(Effect.either(s.saveMany(second, expectOn(e, 0))))
              // The rival's check saw an empty execution (the first save is not committed): it waits on the key.
              yield* eventually(Effect.map(backendsOf(applicationName), (rows) => rows.some((r) => r.wait_event_type === "Lock")))
              yield* Deferred.succeed(release, undefined)
              const held = yield* Effect.either(Fiber.join(holder))
              return { e, first, second, held, rival: yield* Fiber.join(rival) }
            })

          const won = yield* race("commit")
          expect(won.held._tag).toBe("Right")
          expect(won.rival._tag).toBe("Left")
          expect(Either.isLeft(won.rival) && won.rival.left).toMatchObject({
            _tag: "CheckpointConflict",
            executionId: won.e,
            expectedLatestVersion: 0,
            actualLatestVersion: 2
          })
          expect((yield* s.list(won.e)).map(view)).toEqual(won.first.map(view))

          const undone = yield* race("rollback")
          expect(Either.isLeft(undone.held) && undone.held.left).toBe("rolled back")
          expect(undone.rival._tag).toBe("Right")
          expect((yield* s.list(undone.e)).map(view)).toEqual(undone.second.map(view))
        })))
    }

    it.live("rivals at once on the store's own pool: per execution exactly one wins, every other gets the expectation's conflict and writes nothing", () =>
      withStore(() =>
        Effect.gen(function*() {
          const s = yield* store
          // Eight executions, six rivals each: four new (expect 0), four at version 3 (expect 3); even rivals
          // write two checkpoints (saveMany), odd ones one (save).
          const executions = yield* Effect.forEach(Array.from({ length: 8 }), () => freshExecution("rivals"))
          const existing = yield* Effect.forEach(executions.slice(4), (e) => Effect.forEach([1, 2, 3], (v) => mk(e, v)))
          yield* s.saveMany(existing.flat())
          const rivals = yield* Effect.forEach(executions, (e, i) => {
            const base = i < 4 ? 0 : 3
            return Effect.forEach(Array.from({ length: 6 }), (_, r) =>
              Effect.map(
                Effect.forEach(r % 2 === 0 ? [1, 2] : [1], (d) => mk(e, base + d, { state: { rival: r } })),
                (cps) => ({ e, base, cps })
              ))
          })
          const all = rivals.flat()
          const results = yield* Effect.forEach(all, ({ base, cps, e }) =>
            Effect.either(
              cps.length === 1 ? s.save(cps[0]!, expectOn(e, base)) : s.saveMany(cps, expectOn(e, base))
            ), { concurrency: "unbounded" })
          for (const [i, e] of executions.entries()) {
            const base = i < 4 ? 0 : 3
            const mine = all.flatMap((r, k) => (r.e === e ? [{ ...r, result: results[k]! }] : []))
            const winners = mine.filter((r) => Either.isRight(r.result))
            expect(winners).toHaveLength(1)
            for (const r of mine) {
              if (Either.isLeft(r.result)) {
                expect(r.result.left).toMatchObject({ _tag: "CheckpointConflict", executionId: e, expectedLatestVersion: base })
              }
            }
            const before = i < 4 ? [] : existing[i - 4]!
            expect((yield* s.list(e)).map(view)).toEqual([...before, ...winners[0]!.cps].map(view))
          }
        }), { maxConnections: 10 }))
  })

  describe("one-statement saves", () => {
    const expectOn = (executionId: Checkpoint.ExecutionId, latestVersion: number) => ({ expect: { executionId, latestVersion } })
    const recordRow = (table: string, e: string) =>
      query<Record<string, unknown>>(
        `SELECT latest_version, latest_checkpoint_id, status, lease_owner, attempts FROM "${SCHEMA}"."${
          PostgresStore.tableNames(table).executions
        }" WHERE execution_id = $1`,
        [e]
      )
    /** The error of a save, the statements it ran, and that the first was the one-statement save. */
    const failing = <E>(effect: Effect.Effect<unknown, E>) =>
      Effect.map(recordStatements(Effect.flip(effect)), ([error, statements]) => {
        expect(statements[0]).toMatch(/^WITH lk AS/)
        return error
      })

    it.live("updateExecution, renew and release are one statement when their checks pass; each failure reason still comes out, nothing written", () =>
      withStore((table) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.saveMany(yield* Effect.forEach([1, 2], (v) => mk(e, v)))
          const statementsOf = <A, E>(effect: Effect.Effect<A, E>) => recordStatements(effect)

          // Takes the lease, then renews it as its holder: one statement each, the record as stored.
          const [taken, one] = yield* statementsOf(
            s.updateExecution(e, { status: "running", lease: { owner: "alice", ttl: "1 minute" } }, { owner: "alice" })
          )
          expect(one).toHaveLength(1)
          expect(one[0]).toMatch(/^WITH lk AS/)
          expect(taken).toMatchObject({ status: "running", lease: { owner: "alice" }, latestVersion: 2 })
          expect((yield* s.getExecution(e)).pipe(Option.getOrThrow)).toEqual(taken)
          const [renewed, two] = yield* statementsOf(s.renew(e, { owner: "alice", ttl: "2 minutes" }))
          expect(two).toHaveLength(1)
          expect(renewed.lease!.expiresAt.getTime()).toBeGreaterThan(taken.lease!.expiresAt.getTime())
          const [, three] = yield* statementsOf(
            s.updateExecution(e, { wakeAt: new Date(5_000), failure: { tag: "Boom", message: "no" } }, {
              owner: "alice",
              expect: { latestVersion: 2 }
            })
          )
          expect(three).toHaveLength(1)
          const before = yield* recordRow(table, e)

          // Each reason: the one statement writes nothing, the transaction after it says why.
          const reasons = [
            [s.updateExecution(e, { status: "done" }, { owner: "bob" }), { _tag: "LeaseLost", owner: "bob" }],
            [s.renew(e, { owner: "bob", ttl: "1 minute" }), { _tag: "LeaseLost" }],
            [
              s.updateExecution(e, { status: "done" }, { owner: "alice", expect: { latestVersion: 1 } }),
              { _tag: "CheckpointConflict", reason: "ExpectationFailed", actualLatestVersion: 2 }
            ],
            [s.updateExecution(yield* freshExecution("none"), { status: "done" }), { _tag: "ExecutionNotFound" }]
          ] as const
          for (const [effect, expected] of reasons) {
            const [error, statements] = yield* statementsOf(Effect.flip(effect as Effect.Effect<unknown, unknown>))
            expect(error).toMatchObject(expected)
            expect(statements[0]).toMatch(/^WITH lk AS/)
            expect(statements.length).toBeGreaterThan(1)
          }
          expect(yield* recordRow(table, e)).toEqual(before)

          // A corrupt record is never written over: the update fails with CheckpointStoreError.
          yield* query(
            `UPDATE "${SCHEMA}"."${PostgresStore.tableNames(table).executions}" SET attempts = -1 WHERE execution_id = $1`,
            [e]
          )
          const corrupt = yield* Effect.flip(s.release(e, { owner: "alice" }))
          expect(corrupt).toMatchObject({ _tag: "CheckpointStoreError" })
          expect(yield* recordRow(table, e)).toEqual([{ ...before[0], attempts: -1 }])

          // Released by its holder: one statement, no lease left.
          yield* query(
            `UPDATE "${SCHEMA}"."${PostgresStore.tableNames(table).executions}" SET attempts = 1 WHERE execution_id = $1`,
            [e]
          )
          const [released, four] = yield* statementsOf(s.release(e, { owner: "alice", status: "pending" }))
          expect(four).toHaveLength(1)
          expect(released).toMatchObject({ status: "pending", attempts: 1 })
          expect(released.lease).toBeUndefined()
        })
      ))

    it.live("each conflict reason comes out of the one-statement path, and nothing is written: IdTaken, VersionTaken (in the middle of a batch), ExpectationFailed, LeaseLost", () =>
      withStore((table) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const other = yield* freshExecution("other")
          const stored = yield* Effect.forEach([1, 2, 3], (v) => mk(e, v))
          const [, one] = yield* recordStatements(s.saveMany(stored, { execution: { lease: { owner: "alice", ttl: "1 minute" } } }))
          expect(one).toHaveLength(1)
          const before = yield* recordRow(table, e)
          expect(before).toMatchObject([{ latest_version: 3, lease_owner: "alice" }])

          // IdTaken: a checkpoint of another execution with the id of a stored one.
          const stolen = yield* mk(other, 1, { id: stored[0]!.id })
          expect(yield* failing(s.save(stolen))).toMatchObject({ _tag: "CheckpointConflict", reason: "IdTaken", id: stolen.id })
          expect(yield* recordRow(table, other)).toEqual([])
          expect(yield* s.list(other)).toEqual([])

          // VersionTaken in the middle of a batch: v4 and v5 are new, the middle one takes version 3.
          const v3again = yield* mk(e, 3, { state: { again: true } })
          const batch = [yield* mk(e, 4), v3again, yield* mk(e, 5)]
          expect(yield* failing(s.saveMany(batch, { owner: "alice" }))).toMatchObject({
            _tag: "CheckpointConflict",
            reason: "VersionTaken",
            id: v3again.id,
            version: 3
          })
          expect((yield* s.list(e)).map(view)).toEqual(stored.map(view))
          expect(yield* recordRow(table, e)).toEqual(before)

          // ExpectationFailed, with the version found; then on an empty execution expected at a version.
          expect(yield* failing(s.saveMany([yield* mk(e, 4)], expectOn(e, 2)))).toMatchObject({
            _tag: "CheckpointConflict",
            reason: "ExpectationFailed",
            expectedLatestVersion: 2,
            actualLatestVersion: 3
          })
          expect(yield* failing(s.save(yield* mk(other, 2), expectOn(other, 1)))).toMatchObject({
            reason: "ExpectationFailed",
            actualLatestVersion: 0
          })
          // Expecting an empty execution that has checkpoints.
          expect(yield* failing(s.save(yield* mk(e, 4), expectOn(e, 0)))).toMatchObject({
            reason: "ExpectationFailed",
            actualLatestVersion: 3
          })

          // LeaseLost: bob writes while alice holds a live lease, with or without an expectation.
          expect(yield* failing(s.save(yield* mk(e, 4), { owner: "bob" }))).toMatchObject({ _tag: "LeaseLost", owner: "bob" })
          expect(yield* failing(s.save(yield* mk(e, 4), { owner: "bob", ...expectOn(e, 3) }))).toMatchObject({
            _tag: "LeaseLost"
          })
          expect((yield* s.list(e)).map(view)).toEqual(stored.map(view))
          expect(yield* recordRow(table, e)).toEqual(before)
          expect(yield* s.list(other)).toEqual([])

          // The holder writes in one statement, and so does anyone once the lease is gone.
          const [, held] = yield* recordStatements(s.save(yield* mk(e, 4), { owner: "alice", ...expectOn(e, 3) }))
          expect(held).toHaveLength(1)
          yield* query(
            `UPDATE "${SCHEMA}"."${PostgresStore.tableNames(table).executions}" SET lease_expires_at = 0 WHERE execution_id = $1`,
            [e]
          )
          const [, expired] = yield* recordStatements(s.save(yield* mk(e, 5), { owner: "bob", ...expectOn(e, 4) }))
          expect(expired).toHaveLength(1)
          expect(yield* recordRow(table, e)).toMatchObject([{ latest_version: 5, lease_owner: "alice" }])
        })
      ))

    it.live("the record rules hold in one statement: a save behind the newest keeps latest* and takes the patch's status; lease, wakeAt and failure follow the patch", () =>
      withStore((table) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.saveMany([yield* mk(e, 1), yield* mk(e, 3)], {
            execution: { lease: { owner: "alice", ttl: "1 minute" }, failure: { tag: "Boom", message: "m" } }
          })
          const [, statements] = yield* recordStatements(s.save(yield* mk(e, 2, { next: [] }), { execution: { status: "interrupted" } }))
          expect(statements).toHaveLength(1)
          const record = yield* Effect.flatten(s.getExecution(e))
          expect(record).toMatchObject({
            latestVersion: 3,
            status: "interrupted",
            failure: { tag: "Boom", message: "m" },
            lease: { owner: "alice" },
            attempts: 0
          })
          yield* s.save(yield* mk(e, 4, { next: [] }), { execution: { lease: null, failure: null } })
          const after = yield* Effect.flatten(s.getExecution(e))
          expect(after).toMatchObject({ latestVersion: 4, status: "done", attempts: 0 })
          expect(after?.lease).toBeUndefined()
          expect(after?.failure).toBeUndefined()
          expect(yield* recordRow(table, e)).toMatchObject([{ latest_version: 4, status: "done", lease_owner: null }])
        })
      ))

    it.live("a corrupt record is never written over by the one-statement path: the save fails with CheckpointStoreError and writes nothing", () =>
      withStore((table) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.save(yield* mk(e, 1))
          yield* query(
            `UPDATE "${SCHEMA}"."${PostgresStore.tableNames(table).executions}" SET status = 'bogus' WHERE execution_id = $1`,
            [e]
          )
          expect((yield* failing(s.save(yield* mk(e, 2))))._tag).toBe("CheckpointStoreError")
          expect((yield* s.list(e)).map((c) => c.version)).toEqual([1])
          expect(yield* recordRow(table, e)).toMatchObject([{ status: "bogus", latest_version: 1 }])
        })
      ))

    it.live("inside a transaction of the app's (layerClient) a save is the transaction (a savepoint), never the one statement", () =>
      Effect.scoped(Effect.gen(function*() {
        const tableName = yield* scopedTable("inapp")
        const Pg = PgClient.layer({ url: Redacted.make(URL), applicationName: freshName("ec-pg-test-inapp") })
        const context = yield* Layer.build(Layer.merge(Pg, PostgresStore.layerClient({ schema: SCHEMA, tableName }).pipe(Layer.provide(Pg))))
        const s = Context.get(context, store)
        const sql = Context.get(context, SqlClient.SqlClient)
        const e = yield* freshExecution()
        const [, outside] = yield* recordStatements(s.save(yield* mk(e, 1)))
        expect(outside).toHaveLength(1)
        const [failed, inside] = yield* recordStatements(sql.withTransaction(Effect.gen(function*() {
          const error = yield* Effect.flip(s.save(yield* mk(e, 1, { state: "dup" })))
          // The app's transaction is still usable after the conflict.
          yield* s.save(yield* mk(e, 2))
          return error
        })))
        expect(failed).toMatchObject({ reason: "VersionTaken" })
        expect(inside.some((text) => text.startsWith("WITH lk"))).toBe(false)
        expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2])
      })))
  })

  describe("failures", () => {
    it.live("a refused connection fails the layer with CheckpointStoreError, fast, without the password", () =>
      Effect.gen(function*() {
        const port = yield* closedPort
        const error = yield* Effect.flip(Effect.provide(store, PostgresStore.layer({ url: withPassword(port) })))
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "postgres", operation: "connect" })
        expect(error.message).toContain("ECONNREFUSED")
        expectNoPassword(error)
        // The same through a Redacted URL and through layerConfig.
        const redacted = yield* Effect.flip(Effect.provide(store, PostgresStore.layer({ url: Redacted.make(withPassword(port)) })))
        expectNoPassword(redacted)
        const fromConfig = yield* Effect.flip(Effect.provide(store, PostgresStore.layerConfig)).pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["POSTGRES_CONN_STRING", withPassword(port)]])))
        )
        expect(fromConfig).toMatchObject({ _tag: "CheckpointStoreError", operation: "connect" })
        expectNoPassword(fromConfig)
        // A password that is not URL-safe, and one that is not even a valid URL.
        const odd = `postgres://postgres:p%40ss%2Fw0rd-${PASSWORD}@127.0.0.1:${port}/test`
        expectNoPassword(yield* Effect.flip(Effect.provide(store, PostgresStore.layer({ url: odd }))))
        const broken = `postgres://postgres:${PASSWORD}@@127.0.0.1:${port}:x/test`
        const brokenError = yield* Effect.flip(Effect.provide(store, PostgresStore.layer({ url: broken })))
        expect(brokenError._tag).toBe("CheckpointStoreError")
        expectNoPassword(brokenError)
      }))

    it.live("a server that accepts but never answers fails the layer within the connect timeout", () =>
      Effect.scoped(Effect.gen(function*() {
        const stalled = yield* proxy("stall")
        const started = Date.now()
        const error = yield* Effect.flip(
          Effect.provide(store, PostgresStore.layer({ url: withPassword(stalled.port), connectTimeout: "1 second" }))
        ).pipe(Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("the layer hung") }))
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "postgres", operation: "connect" })
        expect(Date.now() - started).toBeLessThan(15_000)
        expectNoPassword(error)
      })))

    it.live("a server that goes away fails each operation with CheckpointStoreError naming it; the store recovers when it is back", () =>
      Effect.scoped(Effect.gen(function*() {
        const tableName = yield* scopedTable()
        const pg = yield* proxy()
        const url = withPassword(pg.port)
        yield* Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const first = yield* mk(e, 1)
          yield* s.save(first)
          yield* pg.kill
          const failures = [
            yield* Effect.flip(Effect.flatMap(mk(e, 2), s.save)),
            yield* Effect.flip(Effect.flatMap(mk(e, 2), (cp) => s.saveMany([cp]))),
            yield* Effect.flip(s.load(first.id)),
            yield* Effect.flip(s.list(e)),
            yield* Effect.flip(s.latest(e)),
            yield* Effect.flip(s.listExecutions()),
            yield* Effect.flip(s.delete(first.id)),
            yield* Effect.flip(s.clear(e)),
            yield* Effect.flip(s.prune(e, 0))
          ]
          expect(failures.map((f) => [f._tag, (f as { operation?: string }).operation])).toEqual(
            ["save", "saveMany", "load", "list", "latest", "listExecutions", "delete", "clear", "prune"].map((op) => [
              "CheckpointStoreError",
              op
            ])
          )
          for (const f of failures) {
            expect(f).toMatchObject({ backend: "postgres" })
            expectNoPassword(f)
          }
          yield* pg.revive
          const second = yield* mk(e, 2)
          yield* s.save(second)
          expect((yield* s.list(e)).map(view)).toEqual([view(first), view(second)])
        }).pipe(Effect.provide(PostgresStore.layer({ url, schema: SCHEMA, tableName, connectTimeout: "2 seconds" })))
      })))

    it.live("a backend terminated in the middle of a save fails it with CheckpointStoreError; the next save works", () =>
      Effect.scoped(Effect.gen(function*() {
        const applicationName = freshName("ec-pg-test-term")
        yield* withStore((table) =>
          Effect.gen(function*() {
            const s = yield* store
            const e = yield* freshExecution()
            yield* s.save(yield* mk(e, 1))
            // Hold a lock so the next save waits inside the server, then terminate the backend running it.
            const locked = yield* lockTable(table)
            const save = yield* Effect.fork(Effect.flatMap(mk(e, 2), s.save))
            yield* eventually(Effect.map(backendsOf(applicationName), (rows) => rows.some((r) => r.wait_event_type === "Lock")))
            const killed = (yield* backendsOf(applicationName)).map((r) => r.pid)
            expect(killed.length).toBeGreaterThan(0)
            yield* query(`SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid`, [killed])
            const error = yield* Effect.flip(Fiber.join(save))
            expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "postgres", operation: "save" })
            expect(error.message).toMatch(/terminat/i)
            yield* Fiber.interrupt(locked)
            // The same store goes on, no rebuild needed. A killed connection the pool still holds may fail the
            // one statement that picks it before its close arrives — typed, and that connection is then dropped.
            const third = yield* mk(e, 3)
            const failures: Array<unknown> = []
            yield* s.save(third).pipe(
              Effect.tapError((f) => Effect.sync(() => failures.push(f))),
              Effect.retry({ times: killed.length })
            )
            expect(failures.length).toBeLessThanOrEqual(killed.length)
            for (const f of failures) expect(f).toMatchObject({ _tag: "CheckpointStoreError", operation: "save" })
            expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 3])
          }), { applicationName })
      })))

    it.live("a statement timeout (set in the URL's options) fails the save with CheckpointStoreError and writes nothing", () =>
      Effect.scoped(Effect.gen(function*() {
        const url = `${URL}?options=${encodeURIComponent("-c statement_timeout=300")}`
        yield* withStore((table) =>
          Effect.gen(function*() {
            const s = yield* store
            const e = yield* freshExecution()
            yield* lockTable(table)
            const error = yield* Effect.flip(Effect.flatMap(mk(e, 1), s.save))
            expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "postgres", operation: "save" })
            expect(error.message).toContain("statement timeout")
            expect((error.cause as { code?: string }).code).toBe("57014")
          }), { url })
      })))
  })

  describe("layers", () => {
    it.live("layerConfig reads POSTGRES_CONN_STRING; default table `checkpoints` in the connection's schema", () =>
      Effect.scoped(Effect.gen(function*() {
        const schema = `${RUN}_cfg`
        yield* query(`CREATE SCHEMA "${schema}"`)
        const url = `${URL}?options=${encodeURIComponent(`-c search_path=${schema}`)}`
        const e = yield* freshExecution()
        yield* Effect.flatMap(store, (s) => Effect.flatMap(mk(e, 1), s.save)).pipe(
          Effect.provide(PostgresStore.layerConfig),
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["POSTGRES_CONN_STRING", url]])))
        )
        const rows = yield* query<{ execution_id: string }>(`SELECT execution_id FROM "${schema}".checkpoints`)
        expect(rows).toEqual([{ execution_id: e }])
        const missing = yield* Effect.flip(Effect.provide(store, PostgresStore.layerConfig)).pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map()))
        )
        // The ConfigError itself, naming the variable.
        expect(ConfigError.isConfigError(missing)).toBe(true)
        expect(String(missing)).toContain("POSTGRES_CONN_STRING")
      })))

    it.live("layerClient shares the app's pool, ignores its name transforms, and async commit does not leak into it", () =>
      Effect.scoped(Effect.gen(function*() {
        const tableName = yield* scopedTable()
        const applicationName = freshName("ec-pg-test-shared")
        const Pg = PgClient.layer({
          url: Redacted.make(URL),
          applicationName,
          maxConnections: 2,
          transformQueryNames: Str.camelToSnake,
          transformResultNames: Str.snakeToCamel
        })
        const App = Layer.merge(
          Pg,
          PostgresStore.layerClient({ schema: SCHEMA, tableName, synchronousCommit: "off" }).pipe(Layer.provide(Pg))
        )
        const context = yield* Layer.build(App)
        const s = Context.get(context, store)
        const sql = Context.get(context, SqlClient.SqlClient)
        const e = yield* freshExecution()
        const state = { snake_case_key: { inner_key: [1, { deep_key: true }] }, camelKey: "x" }
        const cp = yield* mk(e, 1, { state, metadata: { some_meta: 1 } })
        yield* s.save(cp)
        yield* s.saveMany([yield* mk(e, 2), yield* mk(e, 3)])
        expect(view(yield* s.load(cp.id))).toEqual(view(cp))
        expect((yield* s.listExecutions()).executions.find((x) => x.executionId === e)).toMatchObject({ latestVersion: 3 })
        // The store's statements ran on the app's pool (its connections carry the app's application_name).
        const lastQueries = yield* query<{ query: string }>(
          `SELECT query FROM pg_stat_activity WHERE application_name = $1`,
          [applicationName]
        )
        expect(lastQueries.some((r) => r.query.includes(tableName))).toBe(true)
        // The app's own queries still get its transforms, and its sessions keep synchronous_commit on.
        const rows = yield* sql<{ executionId: string }>`SELECT execution_id FROM ${sql(SCHEMA)}.${sql(tableName)} LIMIT 1`
        expect(rows[0]?.executionId).toBe(e)
        const settings = yield* Effect.forEach([1, 2, 3], () => sql<{ synchronousCommit: string }>`SHOW synchronous_commit`)
        expect(settings.map((r) => r[0]?.synchronousCommit)).toEqual(["on", "on", "on"])
      })))

    it.live("layerClient: a save inside the app's transaction joins it, and async commit never changes how it commits", () =>
      Effect.scoped(Effect.gen(function*() {
        const tableName = yield* scopedTable()
        const Pg = PgClient.layer({ url: Redacted.make(URL) })
        const context = yield* Layer.build(
          Layer.merge(Pg, PostgresStore.layerClient({ schema: SCHEMA, tableName, synchronousCommit: "off" }).pipe(Layer.provide(Pg)))
        )
        const s = Context.get(context, store)
        const sql = Context.get(context, SqlClient.SqlClient)
        const e = yield* freshExecution()
        const first = yield* mk(e, 1)
        // Rolled back with the app's transaction: nothing saved.
        const rolledBack = yield* Effect.flip(sql.withTransaction(Effect.zipRight(s.save(first), Effect.fail("app failure" as const))))
        expect(rolledBack).toBe("app failure")
        expect(yield* s.list(e)).toEqual([])
        // Committed with it; inside, the transaction keeps synchronous_commit on.
        const inside = yield* sql.withTransaction(
          Effect.zipRight(s.saveMany([first, yield* mk(e, 2)]), sql<{ synchronous_commit: string }>`SHOW synchronous_commit`)
        )
        expect(inside[0]?.synchronous_commit).toBe("on")
        expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2])
      })))

    it.live("layer: an operation inside another client's transaction runs on the store's own pool, not in that transaction", () =>
      withStore(() =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const first = yield* mk(e, 1)
          const second = yield* mk(e, 2)
          // The app's own PostgreSQL client: its rollback does not take the store's save with it.
          const rolledBack = yield* Effect.flip(
            Effect.flatMap(SqlClient.SqlClient, (sql) =>
              sql.withTransaction(Effect.zipRight(s.save(first, { expect: { executionId: e, latestVersion: 0 } }), Effect.fail("app failure" as const)))).pipe(
                Effect.provide(PgClient.layer({ url: Redacted.make(URL) }))
              )
          )
          expect(rolledBack).toBe("app failure")
          expect((yield* s.list(e)).map(view)).toEqual([view(first)])
          // A SQLite transaction is none of its business either (its statements used to be sent there).
          const seen = yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
            sql.withTransaction(Effect.zipRight(s.saveMany([second]), s.list(e)))).pipe(
              Effect.provide(SqliteClient.layer({ filename: ":memory:" }))
            )
          expect(seen.map(view)).toEqual([view(first), view(second)])
        })
      ))

    it.live("layerClient refuses a client that is not PostgreSQL", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          Effect.provide(store, PostgresStore.layerClient().pipe(Layer.provide(SqliteClient.layer({ filename: ":memory:" }))))
        )
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "postgres", operation: "connect" })
        expect(error.message).toContain("PostgreSQL")
      }))

    it.live("closing the layer closes its pool", () =>
      Effect.gen(function*() {
        const applicationName = freshName("ec-pg-test-close")
        yield* withStore((table) =>
          Effect.gen(function*() {
            const s = yield* store
            yield* Effect.forEach([1, 2, 3], (v) => Effect.flatMap(freshExecution(), (e) => Effect.flatMap(mk(e, v), s.save)), {
              concurrency: 3
            })
            expect((yield* backendsOf(applicationName)).length).toBeGreaterThan(0)
            expect(table.length).toBeGreaterThan(0)
          }), { applicationName })
        yield* eventually(Effect.map(backendsOf(applicationName), (rows) => rows.length === 0))
      }))
  })

  describe("claim between pools", () => {
    it.live("three stores with pools of their own claim from one table at once: every due execution is claimed exactly once", () =>
      Effect.scoped(Effect.gen(function*() {
        const tableName = yield* scopedTable("claim")
        const stores = yield* Effect.forEach([1, 2, 3], () =>
          Effect.map(Layer.build(PostgresStore.layer({ url: URL, schema: SCHEMA, tableName, maxConnections: 3 })), (c) => Context.get(c, store)))
        const executions = yield* Effect.forEach(Array.from({ length: 60 }), () => freshExecution("due"))
        yield* Effect.forEach(executions, (e) => Effect.flatMap(mk(e, 1), (cp) => stores[0]!.save(cp)), { discard: true, concurrency: 8 })
        const claimAll = (s: CheckpointStore.Service, owner: string) =>
          Effect.gen(function*() {
            const got: Array<string> = []
            for (;;) {
              const batch = yield* s.claim({ owner, ttl: "5 minutes", limit: 2 })
              if (batch.length === 0) return got
              for (const r of batch) {
                expect([r.status, r.lease?.owner]).toEqual(["running", owner])
                got.push(r.executionId)
              }
            }
          })
        const results = yield* Effect.all(
          stores.flatMap((s, i) => [claimAll(s, `w${i}a`), claimAll(s, `w${i}b`)]),
          { concurrency: "unbounded" }
        )
        const all = results.flat()
        expect(all.length).toBe(60)
        expect(new Set(all)).toEqual(new Set(executions))
        for (const e of executions) {
          const r = yield* stores[1]!.getExecution(e)
          expect(r._tag === "Some" && r.value.attempts).toBe(1)
        }
      })))
  })

  describe("examples/postgres.ts", () => {
    it.live("runs the graph, stops at the simulated crash, resumes from PostgreSQL and clears what it made", () =>
      Effect.gen(function*() {
        // Its table goes to this file's schema (search_path), never to public.
        yield* query(`CREATE SCHEMA IF NOT EXISTS "${SCHEMA}"`)
        const url = `${URL}?options=${encodeURIComponent(`-c search_path=${SCHEMA}`)}`
        const out = yield* Effect.sync(() =>
          execFileSync("npx", ["tsx", "examples/postgres.ts"], {
            encoding: "utf8",
            timeout: 60_000,
            env: { ...process.env, POSTGRES_CONN_STRING: url },
            stdio: ["ignore", "pipe", "pipe"]
          })
        )
        const executionId = /=== Run (\S+) ===/.exec(out)?.[1]
        expect(executionId).toBeDefined()
        expect(out).toContain("The run stopped: step 2: the worker crashed (simulated)")
        expect(out).toContain("=== 2 checkpoints in PostgreSQL ===")
        const resumed = out.slice(out.indexOf("=== Resume"))
        expect(resumed).not.toContain("Running step 1")
        expect(resumed).toContain("Running step 2")
        expect(resumed).toContain("Final data:    Start → Step1 → Step2 → Step3")
        expect(out).toContain("=== 4 checkpoints after the resume ===")
        expect(out).toContain("=== Cleared: 0 checkpoints left")
        const left = yield* query<{ n: number }>(
          `SELECT count(*)::int AS n FROM "${SCHEMA}".example_checkpoints WHERE execution_id = $1`,
          [executionId]
        )
        expect(left).toEqual([{ n: 0 }])
      }))
  })
})

// -----------------------------------------------------------------------------
// A connection that stops answering (queryTimeout)
// -----------------------------------------------------------------------------

/** Generous bound of a step that would hang without the deadline: hitting it fails the test, it never hangs the suite. */
const bounded = <A, E, R>(what: string, effect: Effect.Effect<A, E, R>) =>
  Effect.timeoutFail(effect, { duration: "30 seconds", onTimeout: () => new Error(`${what} hung`) }).pipe(Effect.orDie)

/** A store on a fresh table of STALL_SCHEMA, through a proxy that can stall; both closed with the scope. */
const stallable = (options: Partial<PostgresStore.Options> = {}) =>
  Effect.gen(function*() {
    const net = yield* tcpProxy(pgTarget)
    const tableName = freshName("stall")
    const context = yield* Layer.build(PostgresStore.layer({
      url: withPassword(net.port),
      schema: STALL_SCHEMA,
      tableName,
      queryTimeout: "700 millis",
      connectTimeout: "700 millis",
      ...options
    }))
    return { net, tableName, store: Context.get(context, store), context }
  })

/** What the store holds of `executionId`: checkpoint versions, task writes, and the record's latest version. */
const storedOf = (tableName: string, executionId: string) =>
  Effect.gen(function*() {
    const names = PostgresStore.tableNames(tableName)
    const t = (name: string) => `"${STALL_SCHEMA}"."${name}"`
    const versions = yield* query<{ version: number }>(
      `SELECT version FROM ${t(names.checkpoints)} WHERE execution_id = $1 ORDER BY version`,
      [executionId]
    )
    const writes = yield* query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${t(names.writes)} w JOIN ${t(names.checkpoints)} c ON c.id = w.checkpoint_id ` +
        `WHERE c.execution_id = $1`,
      [executionId]
    )
    const record = yield* query<{ latest_version: number; status: string; lease_owner: string | null }>(
      `SELECT latest_version, status, lease_owner FROM ${t(names.executions)} WHERE execution_id = $1`,
      [executionId]
    )
    return { versions: versions.map((r) => r.version), writes: writes[0]!.n, record: record[0] }
  })

const expectStalled = (error: unknown, operation: string) => {
  expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "postgres", operation })
  // Either the statement got no answer, or (once its connection was closed) a new one could not be opened.
  expect((error as { message: string }).message).toMatch(
    /no answer from PostgreSQL within 700ms \(queryTimeout\); the connection was closed|timeout|no connection/
  )
  expectNoPassword(error)
}

describe("PostgresStore: a connection that stops answering (queryTimeout)", () => {
  it.live("every operation fails with CheckpointStoreError in bounded time, writes nothing, and works again after", () =>
    Effect.scoped(Effect.gen(function*() {
      const { net, store: s, tableName } = yield* stallable({ maxConnections: 1 })
      const e = yield* freshExecution("stall")
      const first = yield* mk(e, 1)
      yield* s.save(first)
      yield* s.saveWrites(first.id, "0", [{ key: "k", value: 0 }])
      const before = yield* storedOf(tableName, e)
      net.stall()
      const batch = yield* Effect.forEach([2, 3, 4], (v) => mk(e, v))
      const operations: ReadonlyArray<readonly [string, Effect.Effect<unknown, unknown>]> = [
        ["latest", s.latest(e)],
        ["save", Effect.flatMap(mk(e, 2), (cp) => s.save(cp))],
        ["saveMany", s.saveMany(batch)],
        ["saveWrites", s.saveWrites(first.id, "1", [{ key: "k", value: 1 }])],
        ["load", s.load(first.id)],
        ["list", s.list(e)],
        ["listWrites", s.listWrites(first.id)],
        ["getExecution", s.getExecution(e)],
        ["listExecutions", s.listExecutions()],
        ["claim", s.claim({ owner: "stall-worker", ttl: "1 minute", limit: 10 })],
        ["updateExecution", s.updateExecution(e, { status: "failed" })],
        ["delete", s.delete(first.id)],
        ["clear", s.clear(e)],
        ["prune", s.prune(e, 0)]
      ]
      for (const [operation, effect] of operations) {
        expectStalled(yield* bounded(operation, Effect.flip(effect)), operation)
      }
      // The network comes back: nothing was written, and every operation works.
      net.resume()
      expect(yield* storedOf(tableName, e)).toEqual(before)
      expect(Option.map(yield* s.latest(e), view)).toEqual(Option.some(view(first)))
      yield* s.saveMany(batch)
      expect((yield* storedOf(tableName, e)).versions).toEqual([1, 2, 3, 4])
    })), 120_000)

  it.live("a stall right after the connection was handed out: the statement fails within queryTimeout, the connection is closed", () =>
    Effect.scoped(Effect.gen(function*() {
      const { net, store: s } = yield* stallable({ maxConnections: 1 })
      const e = yield* freshExecution("stall")
      yield* s.save(yield* mk(e, 1))
      const opened = net.accepted()
      expect(net.open()).toBe(1)
      net.stall()
      expectStalled(yield* bounded("latest", Effect.flip(s.latest(e))), "latest")
      // Closed, not returned to the pool: its proxy pair is gone and the next operation opens a new one.
      yield* eventually(Effect.sync(() => net.open() === 0))
      net.resume()
      expect(Option.isSome(yield* s.latest(e))).toBe(true)
      expect(net.accepted()).toBe(opened + 1)
    })), 60_000)

  it.live("a batch stalled at its COMMIT fails typed and writes nothing (the server rolls back)", () =>
    Effect.scoped(Effect.gen(function*() {
      const { net, store: s, tableName } = yield* stallable()
      const e = yield* freshExecution("stall")
      yield* s.save(yield* mk(e, 1))
      // More rows than one INSERT takes: several statements in one transaction, then COMMIT.
      const batch = yield* Effect.forEach(Array.from({ length: 1_200 }, (_, i) => i + 2), (v) => mk(e, v))
      net.stallOn("COMMIT\u0000")
      const error = yield* bounded("saveMany", Effect.flip(s.saveMany(batch)))
      expect(error).toMatchObject({ _tag: "CheckpointStoreError", operation: "saveMany" })
      expect((error as { message: string }).message).toContain("(queryTimeout); the connection was closed")
      expectNoPassword(error)
      net.resume()
      expect((yield* storedOf(tableName, e)).versions).toEqual([1])
      yield* s.saveMany(batch)
      expect((yield* storedOf(tableName, e)).versions.length).toBe(1_201)
    })), 60_000)

  it.live("building the layer while the server does not answer fails typed; it builds once the network is back", () =>
    Effect.scoped(Effect.gen(function*() {
      const net = yield* tcpProxy(pgTarget)
      const tableName = freshName("stall")
      const url = withPassword(net.port)
      // layerClient on an app's pool that connected before the stall: the schema check is bounded.
      const client = yield* Layer.build(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }))
      const onClient = PostgresStore.layerClient({ schema: STALL_SCHEMA, tableName, queryTimeout: "700 millis" })
      net.stall()
      const viaClient = yield* bounded(
        "layerClient build",
        Effect.flip(Effect.provide(store, onClient.pipe(Layer.provide(Layer.succeedContext(client)))))
      )
      expect(viaClient).toMatchObject({ _tag: "CheckpointStoreError", operation: "schema" })
      expectNoPassword(viaClient)
      // layer, its own pool: bounded by connectTimeout.
      const own = PostgresStore.layer({ url, schema: STALL_SCHEMA, tableName, queryTimeout: "700 millis", connectTimeout: "700 millis" })
      const viaLayer = yield* bounded("layer build", Effect.flip(Effect.provide(store, own)))
      expect(viaLayer).toMatchObject({ _tag: "CheckpointStoreError", operation: "connect" })
      expectNoPassword(viaLayer)
      net.resume()
      yield* Effect.provide(store, onClient.pipe(Layer.provide(Layer.succeedContext(client))))
      const s = yield* Effect.provide(store, own)
      const e = yield* freshExecution("stall")
      yield* Effect.provide(Effect.flatMap(mk(e, 1), (cp) => Effect.flatMap(store, (st) => st.save(cp))), own)
      expect(Option.isSome(yield* Effect.provide(Effect.flatMap(store, (st) => st.latest(e)), own))).toBe(true)
      expect(s).toBeDefined()
    })), 60_000)

  it.live("an invalid queryTimeout fails the layer with InvalidOption before connecting", () =>
    Effect.scoped(Effect.gen(function*() {
      const net = yield* tcpProxy(pgTarget)
      for (const queryTimeout of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, "forever", "-2 seconds", "0 millis"]) {
        const error = yield* Effect.flip(Effect.provide(
          store,
          PostgresStore.layer({ url: withPassword(net.port), schema: STALL_SCHEMA, queryTimeout } as PostgresStore.Options)
        ))
        expect(error).toMatchObject({ _tag: "InvalidOption", option: "queryTimeout" })
        expectNoPassword(error)
      }
      expect(net.accepted()).toBe(0)
      const client = Layer.succeedContext(yield* Layer.build(PgClient.layer({ url: Redacted.make(URL) })))
      const error = yield* Effect.flip(Effect.provide(
        store,
        PostgresStore.layerClient({ schema: STALL_SCHEMA, tableName: freshName("never"), queryTimeout: 0 }).pipe(Layer.provide(client))
      ))
      expect(error).toMatchObject({ _tag: "InvalidOption", option: "queryTimeout" })
    })), 60_000)

  for (const durability of ["sync", "async"] as const) {
    it.live(`a graph run (${durability}) under Effect.timeout ends typed while the network stalls; Fiber.interrupt completes; the runnable then runs to the end`, () =>
      Effect.scoped(Effect.gen(function*() {
        // The engine runs a save uninterruptibly: the caller's timeout or interrupt ends the run once the
        // save in flight fails (queryTimeout), which it must, instead of waiting forever.
        const { context, net } = yield* stallable({ queryTimeout: "2 seconds", connectTimeout: "2 seconds" })
        const State = Schema.Struct({ n: Schema.Int })
        /** The node that stalls the network when it runs next, and the signal that it did. */
        let stallIn: { readonly node: string; readonly reached: Deferred.Deferred<void> } | undefined
        const stallAt = (node: string) =>
          Effect.map(Deferred.make<void>(), (reached) => {
            stallIn = { node, reached }
            return reached
          })
        const node = (name: string) => (s: { readonly n: number }) =>
          Effect.suspend(() => {
            if (stallIn?.node === name) {
              net.stall()
              Deferred.unsafeDone(stallIn.reached, Effect.void)
              stallIn = undefined
            }
            return Effect.succeed({ n: s.n + 1 })
          })
        const graph = Graph.make(State).pipe(
          Graph.addNode("a", node("a")),
          Graph.addNode("b", node("b")),
          Graph.addNode("c", node("c")),
          Graph.addEdge("a", "b"),
          Graph.addEdge("b", "c"),
          Graph.addEdge("c", Graph.END),
          Graph.setEntryPoint("a")
        )
        const runnable = yield* Effect.provide(Graph.compileCheckpointable(graph, { durability }), context)
        const invoke = (executionId: string) => Effect.provide(runnable.invoke({ n: 0 }, { executionId }), context)

        // 1. Effect.timeout: the run ends (typed) instead of hanging.
        const reachedFirst = yield* stallAt("b")
        const timedOut = yield* bounded(
          "invoke under Effect.timeout",
          Effect.either(invoke(yield* freshExecution("stall")).pipe(Effect.timeout("10 seconds")))
        )
        expect(Either.isLeft(timedOut)).toBe(true)
        expect(["TimeoutException", "CheckpointStoreError"]).toContain((timedOut as Either.Left<{ _tag: string }, unknown>).left._tag)
        expect(yield* Deferred.isDone(reachedFirst)).toBe(true)
        net.resume()

        // 2. Fiber.interrupt completes.
        const reached = yield* stallAt("b")
        const fiber = yield* Effect.fork(invoke(yield* freshExecution("stall")))
        yield* Deferred.await(reached)
        yield* Effect.sleep("100 millis")
        yield* bounded("Fiber.interrupt", Fiber.interrupt(fiber))
        net.resume()

        // 3. The same runnable runs to the end.
        const final = yield* bounded("invoke after", invoke(yield* freshExecution("stall")))
        expect(final).toEqual({ n: 3 })
      })), 120_000)
  }
})
