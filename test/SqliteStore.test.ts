import { PgClient } from "@effect/sql-pg"
import { SqliteClient } from "@effect/sql-sqlite-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Either, Layer, Option, Redacted, Schema, String as Str } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Checkpoint from "../src/Checkpoint.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import * as SqliteStore from "../src/layers/Sqlite.js"
import { recordStatements } from "./fixtures/sql-statements.js"
import { conformance, freshExecution, mk, StoreTestKit, view } from "../src/testing.js"

const store = CheckpointStore.CheckpointStore

/** A temp directory owned by this test file, removed when the scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-checkpoint-sqlite-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** A database file in a fresh temp directory (not created yet). */
const tempFile = Effect.map(tempDir, (dir) => path.join(dir, "store.db"))

/** Runs `f` on a separate connection to `filename` (a second SqliteClient), closed afterwards. */
const withSql = <A, E>(filename: string, f: (sql: SqlClient.SqlClient) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(Layer.build(SqliteClient.layer({ filename })), (ctx) => f(Context.get(ctx, SqlClient.SqlClient))))

const CORRUPT = "UPDATE \"checkpoints\" SET state = '{\"truncated' WHERE id = ?"
const BLOB_STATS = "SELECT count(*) AS count, coalesce(sum(length(CAST(value AS BLOB))), 0) AS bytes FROM \"checkpoints_blobs\" WHERE execution_id = ?"
const statsOf = (rows: ReadonlyArray<{ readonly count: number; readonly bytes: number }>) => ({
  count: Number(rows[0]!.count),
  bytes: Number(rows[0]!.bytes)
})

/** A fresh store in a fresh file; the kit corrupts rows through its own connection. */
const fileUnderTest = Layer.unwrapScoped(
  Effect.map(tempFile, (filename) =>
    Layer.merge(
      SqliteStore.layer({ filename }),
      Layer.succeed(StoreTestKit, {
        corrupt: (cp) => withSql(filename, (sql) => sql.unsafe(CORRUPT, [cp.id])),
        blobStats: (e) =>
          withSql(filename, (sql) => Effect.map(sql.unsafe<{ count: number; bytes: number }>(BLOB_STATS, [e]), statsOf))
      })
    ))
)

/** A fresh in-memory database, shared by the store (layerClient) and the kit. */
const memoryUnderTest = Layer.merge(
  SqliteStore.layerClient(),
  Layer.effect(
    StoreTestKit,
    Effect.map(SqlClient.SqlClient, (sql) => ({
      corrupt: (cp) => sql.unsafe(CORRUPT, [cp.id]),
      blobStats: (e) => Effect.map(sql.unsafe<{ count: number; bytes: number }>(BLOB_STATS, [e]), statsOf)
    }))
  )
).pipe(Layer.provide(SqliteClient.layer({ filename: ":memory:" })))

conformance("SQLite (file in a temp dir)", fileUnderTest, { blobs: true })
conformance("SQLite (:memory:, layerClient)", memoryUnderTest, { blobs: true })

/** Runs `body` with a store on a fresh file. */
const withFileStore = <A, E>(
  body: (filename: string) => Effect.Effect<A, E, CheckpointStore.CheckpointStore>,
  options: Omit<SqliteStore.Options, "filename"> = {}
) =>
  Effect.scoped(Effect.flatMap(tempFile, (filename) =>
    body(filename).pipe(Effect.provide(SqliteStore.layer({ ...options, filename })))))

/** The targets of this process's open file descriptors. */
const openFiles = (): Array<string> =>
  fs.readdirSync("/proc/self/fd").flatMap((fd) => {
    try {
      return [fs.readlinkSync(path.join("/proc/self/fd", fd))]
    } catch {
      return []
    }
  })

const FIXTURES = path.join(import.meta.dirname, "fixtures")

/** Starts a fixture script in a child node process (TypeScript through tsx). */
const startFixture = (script: string, args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, ["--import", "tsx", path.join(FIXTURES, script), ...args], {
        cwd: path.join(import.meta.dirname, ".."),
        stdio: ["pipe", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      return { child, output: () => ({ stdout, stderr }) }
    }),
    ({ child }) => Effect.sync(() => child.exitCode === null && child.kill("SIGKILL"))
  )

const exited = (child: ChildProcess) =>
  Effect.async<number | null>((resume) => {
    if (child.exitCode !== null) return resume(Effect.succeed(child.exitCode))
    child.once("exit", (code) => resume(Effect.succeed(code)))
  })

/** The last line a fixture printed, as JSON. */
const lastLine = (stdout: string): unknown => JSON.parse(stdout.trim().split("\n").pop()!)

/** Starts sqlite-writer processes, waits until each is loaded, then lets them all go at once; returns their reports. */
const runWriters = (args: (label: string) => ReadonlyArray<string>, labels: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const writers = yield* Effect.forEach(labels, (label) => startFixture("sqlite-writer.ts", args(label)))
    yield* until(() => writers.every((w) => w.output().stdout.includes("ready\n")), "the writers to load", 30_000)
    for (const w of writers) w.child.stdin!.end("go\n")
    const codes = yield* Effect.forEach(writers, (w) => exited(w.child), { concurrency: "unbounded" })
    return writers.map((w, i) => {
      const { stderr, stdout } = w.output()
      expect(stderr, labels[i]).toBe("")
      return { code: codes[i], report: lastLine(stdout) as WriterReport }
    })
  })

interface WriterReport {
  readonly label: string
  readonly buildError?: string
  readonly saved: number
  readonly won: Array<number>
  readonly conflicts: number
  readonly errors: Array<string>
  readonly firstWriteAt: number
  readonly lastWriteAt: number
}

/** Waits (polling, bounded) until `predicate` holds. */
const until = (predicate: () => boolean, what: string, timeoutMs = 20_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!predicate()) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* Effect.sleep("20 millis")
    }
  })

/** The store on a fresh file (`layer`) and on the app's `:memory:` client (`layerClient`): the two ways statements run. */
const bothLayers: ReadonlyArray<
  readonly [string, <A, E>(body: Effect.Effect<A, E, CheckpointStore.CheckpointStore>) => Effect.Effect<A, unknown>]
> = [
  ["layer", (body) => withFileStore(() => body)],
  ["layerClient", (body) =>
    Effect.provide(body, SqliteStore.layerClient().pipe(Layer.provide(SqliteClient.layer({ filename: ":memory:" }))))]
]


/** What a chain writer (the conditional-save race) records in each checkpoint it appends. */
interface ChainLink {
  readonly writer: string
  readonly expected: number
  readonly first: boolean
}

/**
 * Checks a chain written by racing conditional appends: every write (the
 * first checkpoint of a save or batch) expected exactly the version that
 * precedes it, and the rest of a batch follows its first checkpoint.
 */
const expectUnbrokenChain = (cps: ReadonlyArray<Checkpoint.Checkpoint>) => {
  let previous = 0
  let previousLink: ChainLink | undefined
  for (const cp of cps) {
    const link = cp.state as unknown as ChainLink
    if (link.first) {
      expect(link.expected, `version ${cp.version} by ${link.writer}`).toBe(previous)
    } else {
      expect(cp.version, `version ${cp.version} by ${link.writer}`).toBe(previous + 1)
      expect({ writer: previousLink?.writer, expected: previousLink?.expected }).toEqual({
        writer: link.writer,
        expected: link.expected
      })
    }
    previous = cp.version
    previousLink = link
  }
}

describe("SqliteStore", () => {
  describe("layer({ filename: \":memory:\" })", () => {
    it.live("is a working store of its own, gone when the scope closes", () =>
      Effect.gen(function*() {
        const e = yield* freshExecution()
        const cps = yield* Effect.forEach([1, 2, 3, 4], (v) => mk(e, v))
        yield* Effect.gen(function*() {
          const s = yield* store
          yield* s.save(cps[0]!)
          yield* s.saveMany(cps.slice(1))
          expect((yield* s.list(e)).map(view)).toEqual(cps.map(view))
          expect(Option.map(yield* s.latest(e), (c) => c.version)).toEqual(Option.some(4))
          expect(view(yield* s.load(cps[1]!.id))).toEqual(view(cps[1]!))
          expect((yield* Effect.flip(s.save(yield* mk(e, 2))))._tag).toBe("CheckpointConflict")
          expect((yield* s.listExecutions()).executions.map((x) => x.executionId)).toEqual([e])
          expect(yield* s.prune(e, 1)).toBe(3)
          expect((yield* s.list(e)).map((c) => c.version)).toEqual([4])
        }).pipe(Effect.provide(SqliteStore.layer({ filename: ":memory:" })))
        // A new layer is a new, empty database.
        const again = yield* Effect.flatMap(store, (s) => s.listExecutions()).pipe(
          Effect.provide(SqliteStore.layer({ filename: ":memory:" }))
        )
        expect(again.executions).toEqual([])
      }))
  })

  describe("schema", () => {
    it.live("creates the documented table, versioned, with an index that list/latest/prune/listExecutions search", () =>
      withFileStore((filename) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.save(yield* mk(e, 1))
          yield* withSql(filename, (sql) =>
            Effect.gen(function*() {
              const columns = yield* sql.unsafe<{ name: string; type: string; notnull: number; pk: number }>(
                "SELECT name, type, \"notnull\", pk FROM pragma_table_info('checkpoints')"
              )
              expect(columns.map((c) => [c.name, c.type, c.notnull, c.pk])).toEqual([
                ["id", "TEXT", 1, 1],
                ["execution_id", "TEXT", 1, 0],
                ["node_name", "TEXT", 1, 0],
                ["state", "TEXT", 1, 0],
                ["metadata", "TEXT", 1, 0],
                ["timestamp", "TEXT", 1, 0],
                ["version", "INTEGER", 1, 0],
                ["next", "TEXT", 1, 0],
                ["parent_id", "TEXT", 0, 0],
                ["runtime", "TEXT", 0, 0],
                ["refs", "TEXT", 0, 0]
              ])
              const names = SqliteStore.tableNames()
              expect(names).toEqual({
                checkpoints: "checkpoints",
                executions: "checkpoints_executions",
                writes: "checkpoints_writes",
                blobs: "checkpoints_blobs"
              })
              const recordColumns = yield* sql.unsafe<{ name: string }>(`SELECT name FROM pragma_table_info('${names.executions}')`)
              expect(recordColumns.map((c) => c.name)).toEqual([
                "execution_id",
                "latest_version",
                "latest_checkpoint_id",
                "updated_at",
                "status",
                "wake_at",
                "failure_tag",
                "failure_message",
                "attempts",
                "lease_owner",
                "lease_expires_at"
              ])
              const writeColumns = yield* sql.unsafe<{ name: string; pk: number }>(`SELECT name, pk FROM pragma_table_info('${names.writes}')`)
              expect(writeColumns.map((c) => [c.name, c.pk])).toEqual([["checkpoint_id", 1], ["task_id", 2], ["key", 3], ["value", 0], ["seq", 0]])
              const blobColumns = yield* sql.unsafe<{ name: string; pk: number }>(`SELECT name, pk FROM pragma_table_info('${names.blobs}')`)
              expect(blobColumns.map((c) => [c.name, c.pk])).toEqual([["execution_id", 1], ["hash", 2], ["value", 0]])
              const uniques = yield* sql.unsafe<{ name: string }>(
                "SELECT l.name FROM pragma_index_list('checkpoints') AS l WHERE l.\"unique\" = 1 AND l.origin = 'u'"
              )
              expect(uniques.length).toBe(1)
              const indexed = yield* sql.unsafe<{ name: string }>("SELECT name FROM pragma_index_info(?) ORDER BY seqno", [
                uniques[0]!.name
              ])
              expect(indexed.map((c) => c.name)).toEqual(["execution_id", "version"])
              const plan = (text: string, params: ReadonlyArray<unknown>) =>
                Effect.map(
                  sql.unsafe<{ detail: string }>(`EXPLAIN QUERY PLAN ${text}`, params as ReadonlyArray<never>),
                  (rows) => rows.map((r) => r.detail).join(" | ")
                )
              const t = "\"checkpoints\""
              const cols = "id, execution_id, node_name, state, metadata, timestamp, version, next, parent_id"
              for (
                const detail of [
                  yield* plan(`SELECT ${cols} FROM ${t} WHERE execution_id = ? AND version > ? ORDER BY version LIMIT ?`, [e, 0, -1]),
                  yield* plan(`SELECT ${cols} FROM ${t} WHERE execution_id = ? ORDER BY version DESC LIMIT 1`, [e]),
                  yield* plan(
                    `DELETE FROM ${t} WHERE execution_id = ? AND version <= (SELECT version FROM ${t} WHERE execution_id = ? ORDER BY version DESC LIMIT 1 OFFSET ?)`,
                    [e, e, 1]
                  )
                ]
              ) {
                expect(detail).toMatch(new RegExp(`USING (COVERING )?INDEX ${uniques[0]!.name} \\(execution_id=\\?`))
                expect(detail).not.toMatch(/SCAN checkpoints(?! USING)/)
                expect(detail).not.toContain("TEMP B-TREE")
              }
              // listExecutions: a page is an index range in (updated_at, execution_id) order — by status too — never a sort.
              const x = `"${names.executions}"`
              const pages = [
                yield* plan(`SELECT * FROM ${x} ORDER BY updated_at DESC, execution_id DESC LIMIT ?`, [10]),
                yield* plan(
                  `SELECT * FROM ${x} WHERE (updated_at, execution_id) < (?, ?) ORDER BY updated_at DESC, execution_id DESC LIMIT ?`,
                  [Date.now(), "x", 10]
                ),
                yield* plan(
                  `SELECT * FROM ${x} WHERE status = ? AND (updated_at, execution_id) < (?, ?) ORDER BY updated_at DESC, execution_id DESC LIMIT ?`,
                  ["pending", Date.now(), "x", 10]
                )
              ]
              expect(pages[0]).toContain(`USING INDEX ${names.executions}_updated`)
              expect(pages[1]).toContain(`USING INDEX ${names.executions}_updated`)
              expect(pages[2]).toContain(`USING INDEX ${names.executions}_status`)
              for (const detail of pages) expect(detail).not.toContain("TEMP B-TREE")
              // sweep: one range of the same index.
              expect(yield* plan(`DELETE FROM ${x} WHERE updated_at < ?`, [0])).toContain(`USING INDEX ${names.executions}_updated`)
              const versions = yield* sql.unsafe<{ table_name: string; version: number }>(
                `SELECT table_name, version FROM ${SqliteStore.migrationsTable}`
              )
              expect(versions).toEqual([{ table_name: "checkpoints", version: SqliteStore.schemaVersion }])
              const mode = yield* sql.unsafe<{ journal_mode: string }>("PRAGMA journal_mode")
              expect(mode[0]!.journal_mode).toBe("wal")
            }))
        })
      ))

    it.live("building again is idempotent and keeps the data; two tables share one file with a version each", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        const e = yield* freshExecution()
        const cp = yield* mk(e, 1)
        const other = yield* mk(e, 1, { state: "other table" })
        yield* Effect.flatMap(store, (s) => s.save(cp)).pipe(Effect.provide(SqliteStore.layer({ filename })))
        yield* Effect.flatMap(store, (s) => s.save(other)).pipe(
          Effect.provide(SqliteStore.layer({ filename, tableName: "other_runs" }))
        )
        for (let i = 0; i < 3; i++) {
          const listed = yield* Effect.flatMap(store, (s) => s.list(e)).pipe(Effect.provide(SqliteStore.layer({ filename })))
          expect(listed.map(view)).toEqual([view(cp)])
        }
        const listedOther = yield* Effect.flatMap(store, (s) => s.list(e)).pipe(
          Effect.provide(SqliteStore.layer({ filename, tableName: "other_runs" }))
        )
        expect(listedOther.map(view)).toEqual([view(other)])
        const versions = yield* withSql(filename, (sql) =>
          sql.unsafe<{ table_name: string; version: number }>(
            `SELECT table_name, version FROM ${SqliteStore.migrationsTable} ORDER BY table_name`
          ))
        expect(versions).toEqual([
          { table_name: "checkpoints", version: SqliteStore.schemaVersion },
          { table_name: "other_runs", version: SqliteStore.schemaVersion }
        ])
      })))

    it.live("a table written by a newer schema version is refused, not guessed at", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        yield* Effect.provide(store, SqliteStore.layer({ filename }))
        yield* withSql(filename, (sql) => sql.unsafe(`UPDATE ${SqliteStore.migrationsTable} SET version = 99`))
        const error = yield* Effect.flip(Effect.provide(store, SqliteStore.layer({ filename })))
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "sqlite", operation: "open" })
        expect(error.message).toContain("schema version 99")
      })))

    it.live("a foreign table of the same name fails the build with CheckpointStoreError, and is left alone", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        yield* withSql(filename, (sql) =>
          Effect.zipRight(
            sql.unsafe("CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, body TEXT)"),
            sql.unsafe("INSERT INTO checkpoints (body) VALUES ('mine')")
          ))
        const error = yield* Effect.flip(Effect.provide(store, SqliteStore.layer({ filename })))
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", operation: "open" })
        expect(error.message).toContain("not a checkpoint table")
        const rows = yield* withSql(filename, (sql) => sql.unsafe<{ body: string }>("SELECT body FROM checkpoints"))
        expect(rows).toEqual([{ body: "mine" }])
      })))
  })

  describe("table names", () => {
    const refused = [
      "checkpoints; DROP TABLE x",
      "a.b",
      "\"x\"",
      "",
      "1abc",
      "a-b",
      "a b",
      "x".repeat(64),
      "sqlite_master",
      "SQLITE_x",
      SqliteStore.migrationsTable,
      "tablé"
    ]

    it.live("a bad tableName fails the layer build with InvalidIdentifier before the file is touched", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        for (const tableName of refused) {
          const error = yield* Effect.flip(Effect.provide(store, SqliteStore.layer({ filename, tableName })))
          expect(error, tableName).toMatchObject({ _tag: "InvalidIdentifier", kind: "tableName", value: tableName })
          const viaClient = yield* Effect.flip(
            Effect.provide(store, SqliteStore.layerClient({ tableName }).pipe(Layer.provide(SqliteClient.layer({ filename: ":memory:" }))))
          )
          expect(viaClient, tableName).toMatchObject({ _tag: "InvalidIdentifier", kind: "tableName" })
        }
        expect(fs.existsSync(filename)).toBe(false)
      })))

    it.live("any valid name works, SQL keywords and mixed case included (names are always quoted)", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        for (const tableName of ["select", "Order", "_", "t".repeat(63), "group_by_2"]) {
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          const listed = yield* Effect.gen(function*() {
            const s = yield* store
            yield* s.save(cp)
            yield* s.saveMany([yield* mk(e, 2), yield* mk(e, 3)])
            expect(yield* s.prune(e, 2)).toBe(1)
            expect((yield* s.listExecutions()).executions.map((x) => x.executionId)).toEqual([e])
            return yield* s.list(e)
          }).pipe(Effect.provide(SqliteStore.layer({ filename, tableName })))
          expect(listed.map((c) => c.version), tableName).toEqual([2, 3])
        }
      })))

    /** The rows of `effect_checkpoint_migrations`, by name. */
    const recorded = (sql: SqlClient.SqlClient) =>
      Effect.map(
        sql.unsafe<{ table_name: string }>(`SELECT table_name FROM ${SqliteStore.migrationsTable} ORDER BY table_name`),
        (rows) => rows.map((r) => r.table_name)
      )

    for (const [first, second] of [["Runs", "runs"], ["runs", "Runs"]] as const) {
      it.live(`layer: "${second}" after "${first}" (names SQLite takes as one table) fails the build with InvalidIdentifier naming "${first}"`, () =>
        Effect.scoped(Effect.gen(function*() {
          const filename = yield* tempFile
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          yield* Effect.flatMap(store, (s) => s.save(cp)).pipe(Effect.provide(SqliteStore.layer({ filename, tableName: first })))
          const error = yield* Effect.flip(Effect.provide(store, SqliteStore.layer({ filename, tableName: second })))
          expect(error).toMatchObject({ _tag: "InvalidIdentifier", kind: "tableName", value: second })
          expect(error.message).toContain(`"${first}"`)
          expect(error.message).toContain("case")
          // Nothing recorded for the refused name; the first table and its rows are untouched.
          expect(yield* withSql(filename, recorded)).toEqual([first])
          const listed = yield* Effect.flatMap(store, (s) => s.list(e)).pipe(
            Effect.provide(SqliteStore.layer({ filename, tableName: first }))
          )
          expect(listed.map(view)).toEqual([view(cp)])
          // Refused every time, not only on the first attempt.
          expect(yield* Effect.flip(Effect.provide(store, SqliteStore.layer({ filename, tableName: second })))).toMatchObject({
            _tag: "InvalidIdentifier",
            kind: "tableName"
          })
        })))

      it.live(`layerClient: "${second}" after "${first}" fails the build with InvalidIdentifier naming "${first}"`, () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          yield* Effect.flatMap(store, (s) => s.save(cp)).pipe(Effect.provide(SqliteStore.layerClient({ tableName: first })))
          const error = yield* Effect.flip(Effect.provide(store, SqliteStore.layerClient({ tableName: second })))
          expect(error).toMatchObject({ _tag: "InvalidIdentifier", kind: "tableName", value: second })
          expect(error.message).toContain(`"${first}"`)
          expect(yield* recorded(sql)).toEqual([first])
          // A `clear` through the refused name can never reach the first table's executions.
          const listed = yield* Effect.flatMap(store, (s) => s.list(e)).pipe(
            Effect.provide(SqliteStore.layerClient({ tableName: first }))
          )
          expect(listed.map(view)).toEqual([view(cp)])
        }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:" }))))
    }

    it.live("a table of the app's whose name differs only in case, or a recorded one whose table is gone, is refused too", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        yield* withSql(filename, (sql) => sql.unsafe("CREATE TABLE Checkpoints (id INTEGER PRIMARY KEY, body TEXT)"))
        const foreign = yield* Effect.flip(Effect.provide(store, SqliteStore.layer({ filename })))
        expect(foreign).toMatchObject({ _tag: "InvalidIdentifier", kind: "tableName", value: "checkpoints" })
        expect(foreign.message).toContain("\"Checkpoints\"")
        // A view shares the tables' names.
        yield* withSql(filename, (sql) => sql.unsafe("CREATE VIEW Recent AS SELECT 1 AS x"))
        const view_ = yield* Effect.flip(Effect.provide(store, SqliteStore.layer({ filename, tableName: "RECENT" })))
        expect(view_).toMatchObject({ _tag: "InvalidIdentifier", kind: "tableName", value: "RECENT" })
        expect(view_.message).toContain("\"Recent\"")
        // Recorded as "Old", dropped by hand: "old" is still refused (building "Old" would take "old" for its own).
        yield* Effect.provide(store, SqliteStore.layer({ filename, tableName: "Old" }))
        yield* withSql(filename, (sql) => sql.unsafe("DROP TABLE \"Old\""))
        const recordedOnly = yield* Effect.flip(Effect.provide(store, SqliteStore.layer({ filename, tableName: "old" })))
        expect(recordedOnly).toMatchObject({ _tag: "InvalidIdentifier", kind: "tableName", value: "old" })
        expect(recordedOnly.message).toContain("\"Old\"")
        expect(recordedOnly.message).toContain(SqliteStore.migrationsTable)
        expect(yield* withSql(filename, recorded)).toEqual(["Old"])
      })))

    it.live("the same name twice is one table, as it should be: two layers at once share it", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        const e = yield* freshExecution()
        const a = Context.get(yield* Layer.build(SqliteStore.layer({ filename, tableName: "Runs" })), store)
        const b = Context.get(yield* Layer.build(SqliteStore.layer({ filename, tableName: "Runs" })), store)
        const cps = yield* Effect.forEach([1, 2], (v) => mk(e, v))
        yield* a.save(cps[0]!)
        yield* b.save(cps[1]!)
        expect((yield* a.list(e)).map(view)).toEqual(cps.map(view))
        expect((yield* b.list(e)).map(view)).toEqual(cps.map(view))
        const viaClient = yield* Effect.gen(function*() {
          const c = Context.get(yield* Layer.build(SqliteStore.layerClient({ tableName: "Runs" })), store)
          const d = Context.get(yield* Layer.build(SqliteStore.layerClient({ tableName: "Runs" })), store)
          yield* c.save(cps[0]!)
          return yield* d.list(e)
        }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:" })))
        expect(viaClient.map(view)).toEqual([view(cps[0]!)])
        expect(yield* withSql(filename, recorded)).toEqual(["Runs"])
      })))
  })

  describe("text SQLite holds", () => {
    for (const [name, run] of bothLayers) {
      it.live(`${name}: a nodeName with an unpaired surrogate fails with CheckpointEncodeError naming it, and nothing is written`, () =>
        run(Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          for (const nodeName of ["node\ud800", "\udc00node", "a\udbff\udbffb", "\ud800\udc00\udc00"]) {
            const bad = yield* mk(e, 1, { nodeName })
            const error = yield* Effect.flip(s.save(bad))
            expect(error, JSON.stringify(nodeName)).toMatchObject({ _tag: "CheckpointEncodeError", id: bad.id })
            expect(error.message).toContain("nodeName contains an unpaired surrogate")
            expect(error.message).toContain("SQLite")
            expect((yield* Effect.flip(s.save(bad, { expect: { executionId: e, latestVersion: 0 } }))))
              .toMatchObject({ _tag: "CheckpointEncodeError", id: bad.id })
            // In a batch (one statement of VALUES, or of JSON past 500), the whole batch is refused, naming the bad one.
            for (const size of [1, 3, 600]) {
              const batch = yield* Effect.forEach(Array.from({ length: size }, (_, i) => i + 1), (v) => mk(e, v))
              const at = Math.floor(size / 2)
              batch[at] = yield* mk(e, at + 1, { nodeName })
              const inBatch = yield* Effect.flip(s.saveMany(batch))
              expect(inBatch, `batch of ${size}`).toMatchObject({ _tag: "CheckpointEncodeError", id: batch[at]!.id })
              expect(inBatch.message).toContain("nodeName contains an unpaired surrogate")
            }
          }
          expect(yield* s.list(e)).toEqual([])
          expect((yield* s.listExecutions()).executions).toEqual([])
        })))

      it.live(`${name}: unpaired surrogates in state, metadata and next, emoji and NUL anywhere, round-trip exactly`, () =>
        run(Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const odd = {
            nodeName: "🚀 a\u0000b",
            state: { lone: "x\ud800", low: "\udc00y", ["k\udbff"]: ["\ud83d", "😀", "\u0000", "\u2028"] },
            metadata: { note: "m\udfff" },
            next: ["n\ud800", "🚀"]
          }
          const one = yield* mk(e, 1, odd)
          yield* s.save(one)
          expect(view(yield* s.load(one.id))).toEqual(view(one))
          // Both batch forms: multi-row VALUES, and one JSON parameter past 500 rows.
          for (const size of [2, 501]) {
            const x = yield* freshExecution(`batch${size}`)
            const batch = yield* Effect.forEach(Array.from({ length: size }, (_, i) => i + 1), (v) => mk(x, v, odd))
            yield* s.saveMany(batch)
            expect((yield* s.list(x)).map(view), `batch of ${size}`).toEqual(batch.map(view))
          }
          expect((yield* s.listExecutions()).executions.find((x) => x.executionId === e)).toMatchObject({ latestCheckpointId: one.id })
        })))
    }
  })

  describe("conflicts and batches", () => {
    it.live("a duplicate id or (executionId, version) is CheckpointConflict naming the incoming (or the colliding batch) checkpoint", () =>
      withFileStore(() =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const other = yield* freshExecution("other")
          const first = yield* mk(e, 1)
          yield* s.save(first)
          const sameSlot = yield* mk(e, 1)
          expect(yield* Effect.flip(s.save(sameSlot))).toMatchObject({
            _tag: "CheckpointConflict",
            executionId: e,
            version: 1,
            id: sameSlot.id
          })
          const sameId = yield* mk(other, 5, { id: first.id })
          expect(yield* Effect.flip(s.save(sameId))).toMatchObject({ _tag: "CheckpointConflict", executionId: other, version: 5 })
          // In a batch, the conflict names the checkpoint that collided, not the first of the batch.
          const batch = [yield* mk(other, 1), yield* mk(other, 2), yield* mk(e, 1), yield* mk(other, 3)]
          expect(yield* Effect.flip(s.saveMany(batch))).toMatchObject({
            _tag: "CheckpointConflict",
            executionId: e,
            version: 1,
            id: batch[2]!.id
          })
          const idBatch = [yield* mk(other, 1), yield* mk(other, 9, { id: first.id })]
          expect(yield* Effect.flip(s.saveMany(idBatch))).toMatchObject({ _tag: "CheckpointConflict", version: 9 })
          expect(yield* s.list(other)).toEqual([])
        })
      ))

    it.live("saveMany writes thousands in one statement (beyond SQLite's bound-parameter limit), all or nothing", () =>
      withFileStore(() =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          // 5000 checkpoints × 9 columns = 45 000 values: more than the 32 766 parameters one statement may bind.
          const cps = yield* Effect.forEach(Array.from({ length: 5000 }, (_, i) => i + 1), (v) =>
            mk(e, v, { state: { v, text: "ü\u2028\"'\\" } }))
          const clash = yield* mk(e, 5000)
          const bad = [...cps.slice(0, 4999), clash, cps[4999]!]
          expect((yield* Effect.flip(s.saveMany(bad)))._tag).toBe("CheckpointConflict")
          expect(yield* s.list(e)).toEqual([])
          yield* s.saveMany(cps)
          const listed = yield* s.list(e)
          expect(listed.length).toBe(5000)
          expect(listed.map(view)).toEqual(cps.map(view))
          expect(yield* s.prune(e, 10)).toBe(4990)
          expect((yield* s.list(e)).map((c) => c.version)).toEqual(Array.from({ length: 10 }, (_, i) => 4991 + i))
        })
      ))
    it.live("saveMany of every size around the one-statement forms (multi-row VALUES up to 500, JSON past it) is all or nothing", () =>
      withFileStore(() =>
        Effect.gen(function*() {
          const s = yield* store
          for (const size of [2, 3, 499, 500, 501, 502]) {
            const e = yield* freshExecution(`size${size}`)
            const cps = yield* Effect.forEach(Array.from({ length: size }, (_, i) => i + 1), (v) => mk(e, v, { parentId: undefined }))
            yield* s.save(cps[size - 1]!)
            // The last one collides with the stored one: nothing of the batch lands, and the conflict names it.
            const error = yield* Effect.flip(s.saveMany(cps))
            expect(error, `size ${size}`).toMatchObject({ _tag: "CheckpointConflict", version: size, id: cps[size - 1]!.id })
            expect((yield* s.list(e)).map((c) => c.version), `size ${size}`).toEqual([size])
            yield* s.delete(cps[size - 1]!.id)
            yield* s.saveMany(cps)
            expect((yield* s.list(e)).map(view), `size ${size}`).toEqual(cps.map(view))
          }
        })
      ))
  })

  describe("corrupt rows written by hand", () => {
    it.live("each kind of damage fails load/list/latest with CheckpointDecodeError naming the id", () =>
      withFileStore((filename) =>
        Effect.gen(function*() {
          const s = yield* store
          const damage: ReadonlyArray<readonly [string, string]> = [
            ["state = '{\"a\": '", "state"],
            ["metadata = '[1, 2]'", "metadata"],
            ["metadata = 'not json'", "metadata"],
            ["next = '\"step\"'", "next"],
            ["next = '[1]'", "next"],
            ["version = 'seven'", "version"],
            ["version = 0", "version"],
            ["timestamp = 'yesterday'", "timestamp"],
            ["state = x'7b7d'", "state"],
            ["parent_id = '../etc'", "parentId"],
            ["execution_id = 'a/b'", "executionId"]
          ]
          for (const [set, what] of damage) {
            const e = yield* freshExecution()
            const cps = yield* Effect.forEach([1, 2], (v) => mk(e, v))
            yield* s.saveMany(cps)
            const bad = cps[1]!
            yield* withSql(filename, (sql) => sql.unsafe(`UPDATE checkpoints SET ${set} WHERE id = ?`, [bad.id]))
            const onLoad = yield* Effect.flip(s.load(bad.id))
            expect(onLoad, set).toMatchObject({ _tag: "CheckpointDecodeError", id: bad.id })
            expect(onLoad.message, set).toContain(what)
            if (what !== "executionId" && what !== "version") {
              expect(yield* Effect.flip(s.list(e)), set).toMatchObject({ _tag: "CheckpointDecodeError", id: bad.id })
              expect(yield* Effect.flip(s.latest(e)), set).toMatchObject({ _tag: "CheckpointDecodeError", id: bad.id })
            }
            expect(view(yield* s.load(cps[0]!.id))).toEqual(view(cps[0]!))
            yield* s.delete(bad.id)
          }
        })
      ))

    it.live("listExecutions reads only records: a corrupt checkpoint still lists; a corrupt record fails reads naming its execution, and writes with CheckpointStoreError", () =>
      withFileStore((filename) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1, { next: [] })
          yield* s.save(cp)
          yield* withSql(filename, (sql) => sql.unsafe("UPDATE checkpoints SET state = '{', next = 'oops' WHERE id = ?", [cp.id]))
          const page = yield* s.listExecutions()
          expect(page.executions).toEqual([{
            executionId: e,
            latestVersion: 1,
            latestCheckpointId: cp.id,
            updatedAt: cp.timestamp,
            pending: false,
            status: "done",
            attempts: 0
          }])
          yield* withSql(filename, (sql) => sql.unsafe("UPDATE checkpoints_executions SET status = 'bogus' WHERE execution_id = ?", [e]))
          const onList = yield* Effect.flip(s.listExecutions())
          expect(onList._tag).toBe("CheckpointDecodeError")
          expect(onList.message).toContain(e)
          expect((yield* Effect.flip(s.getExecution(e)))._tag).toBe("CheckpointDecodeError")
          expect(yield* Effect.flip(s.save(yield* mk(e, 2)))).toMatchObject({ _tag: "CheckpointStoreError", operation: "save" })
          // Not a status a claim takes: passed by.
          expect(yield* s.claim({ owner: "w", ttl: "1 minute", limit: 10 })).toEqual([])
          yield* s.clear(e)
          expect((yield* s.listExecutions()).executions).toEqual([])
          expect(yield* s.claim({ owner: "w", ttl: "1 minute", limit: 10 })).toEqual([])
        })
      ))
  })

  describe("opening and closing", () => {
    it.live("after the scope closes the file is not held open: no descriptor, no -wal/-shm, and it can be removed and recreated", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        const e = yield* freshExecution()
        const cp = yield* mk(e, 1)
        yield* Effect.scoped(Effect.gen(function*() {
          const ctx = yield* Layer.build(SqliteStore.layer({ filename }))
          yield* Context.get(ctx, store).save(cp)
          // While the layer lives, this process holds the file (so the check below can see a leak).
          expect(openFiles()).toContain(filename)
        }))
        expect(openFiles().filter((f) => f.startsWith(filename))).toEqual([])
        expect(fs.existsSync(`${filename}-wal`)).toBe(false)
        expect(fs.existsSync(`${filename}-shm`)).toBe(false)
        // Everything was checkpointed into the main file: a fresh layer reads it back.
        const loaded = yield* Effect.flatMap(store, (s) => s.load(cp.id)).pipe(Effect.provide(SqliteStore.layer({ filename })))
        expect(view(loaded)).toEqual(view(cp))
        fs.rmSync(filename)
        const fresh = yield* Effect.flatMap(store, (s) => s.listExecutions()).pipe(Effect.provide(SqliteStore.layer({ filename })))
        expect(fresh.executions).toEqual([])
        expect(openFiles().filter((f) => f.startsWith(filename))).toEqual([])
      })))

    it.live("a failed build closes the file too", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        yield* withSql(filename, (sql) => sql.unsafe("CREATE TABLE checkpoints (x)"))
        expect((yield* Effect.flip(Effect.provide(store, SqliteStore.layer({ filename }))))._tag).toBe("CheckpointStoreError")
        expect(openFiles().filter((f) => f.startsWith(filename))).toEqual([])
      })))

    it.live("a file that cannot be opened fails the build with CheckpointStoreError, never a defect", () =>
      Effect.scoped(Effect.gen(function*() {
        const dir = yield* tempDir
        const missingDir = yield* Effect.flip(
          Effect.provide(store, SqliteStore.layer({ filename: path.join(dir, "no", "such", "dir", "x.db") }))
        )
        expect(missingDir).toMatchObject({ _tag: "CheckpointStoreError", backend: "sqlite", operation: "open" })
        expect(missingDir.message).toContain("directory does not exist")
        const notADatabase = path.join(dir, "text.db")
        fs.writeFileSync(notADatabase, "this is not a database ".repeat(100))
        const garbage = yield* Effect.flip(Effect.provide(store, SqliteStore.layer({ filename: notADatabase })))
        expect(garbage).toMatchObject({ _tag: "CheckpointStoreError", operation: "open" })
        expect(garbage.message).toContain("not a database")
        const aDirectory = yield* Effect.flip(Effect.provide(store, SqliteStore.layer({ filename: dir })))
        expect(aDirectory).toMatchObject({ _tag: "CheckpointStoreError", operation: "open" })
      })))

    it.live("synchronous FULL works like NORMAL (only durability differs)", () =>
      withFileStore(() =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cps = yield* Effect.forEach([1, 2, 3], (v) => mk(e, v))
          yield* s.save(cps[0]!)
          yield* s.saveMany(cps.slice(1))
          expect((yield* s.list(e)).map(view)).toEqual(cps.map(view))
        }), { synchronous: "FULL" }))

    it.live("layerConfig reads SQLITE_DB_PATH, and defaults to ./checkpoints.db", () =>
      Effect.scoped(Effect.gen(function*() {
        const dir = yield* tempDir
        const filename = path.join(dir, "from-config.db")
        const e = yield* freshExecution()
        yield* Effect.flatMap(store, (s) => Effect.flatMap(mk(e, 1), s.save)).pipe(
          Effect.provide(SqliteStore.layerConfig),
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["SQLITE_DB_PATH", filename]])))
        )
        const listed = yield* Effect.flatMap(store, (s) => s.list(e)).pipe(Effect.provide(SqliteStore.layer({ filename })))
        expect(listed.map((c) => c.version)).toEqual([1])
        // The default is relative to the working directory.
        const cwd = process.cwd()
        yield* Effect.acquireRelease(Effect.sync(() => process.chdir(dir)), () => Effect.sync(() => process.chdir(cwd)))
        yield* Effect.flatMap(store, (s) => Effect.flatMap(mk(e, 1), s.save)).pipe(
          Effect.provide(SqliteStore.layerConfig),
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map()))
        )
        expect(fs.existsSync(path.join(dir, "checkpoints.db"))).toBe(true)
      })))
  })

  describe("layerClient", () => {
    it.live("joins the app's transaction: a rolled-back transaction takes the checkpoint back", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const s = yield* store
        const e = yield* freshExecution()
        const kept = yield* mk(e, 1)
        const rolledBack = yield* mk(e, 2)
        yield* sql.withTransaction(s.save(kept))
        const failed = yield* Effect.either(sql.withTransaction(Effect.zipRight(s.save(rolledBack), Effect.fail("app error"))))
        expect(Either.isLeft(failed)).toBe(true)
        expect((yield* s.list(e)).map((c) => c.id)).toEqual([kept.id])
      }).pipe(Effect.provide(SqliteStore.layerClient().pipe(Layer.provideMerge(SqliteClient.layer({ filename: ":memory:" }))))))

    it.live("works on a client that transforms result names, and leaves the client open", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const e = yield* freshExecution()
        const cps = yield* Effect.forEach([1, 2], (v) => mk(e, v, { parentId: undefined }))
        yield* Effect.gen(function*() {
          const s = yield* store
          yield* s.saveMany(cps)
          expect((yield* s.list(e)).map(view)).toEqual(cps.map(view))
          expect((yield* s.listExecutions()).executions[0]).toMatchObject({ executionId: e, latestVersion: 2 })
        }).pipe(Effect.provide(SqliteStore.layerClient({ tableName: "app_checkpoints" })))
        // The store's scope is closed; the app's client still works and sees the rows (names transformed).
        const rows = yield* sql<{ executionId: string }>`SELECT execution_id FROM app_checkpoints`
        expect(rows).toEqual([{ executionId: e }, { executionId: e }])
      }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:", transformResultNames: Str.snakeToCamel }))))

    it.live("refuses a client that is not SQLite", () =>
      Effect.gen(function*() {
        const url = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test"
        const error = yield* Effect.flip(
          Effect.provide(store, SqliteStore.layerClient().pipe(Layer.provide(PgClient.layer({ url: Redacted.make(url) }))))
        )
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", operation: "open" })
        expect(error.message).toContain("SQLite")
      }))
  })

  describe("conditional saves (expect)", () => {
    for (const [name, run] of bothLayers) {
      it.live(`each statement form (1, 2, 500 rows, JSON past 500) writes only if the newest version is the expected one (${name})`, () =>
        run(Effect.gen(function*() {
          const s = yield* store
          for (const size of [1, 2, 500, 501]) {
            const e = yield* freshExecution(`size${size}`)
            yield* s.saveMany(yield* Effect.forEach([1, 2, 3], (v) => mk(e, v)))
            const batch = (from: number) =>
              Effect.forEach(Array.from({ length: size }, (_, i) => from + i), (v) => mk(e, v, { parentId: undefined }))
            const save = (cps: ReadonlyArray<Checkpoint.Checkpoint>, latestVersion: number) => {
              const options = { expect: { executionId: e, latestVersion } }
              return size === 1 ? s.save(cps[0]!, options) : s.saveMany(cps, options)
            }
            // Stale: nothing written, and the conflict says where the execution is.
            for (const stale of [0, 2, 4]) {
              expect(yield* Effect.flip(save(yield* batch(4), stale)), `size ${size}, expect ${stale}`).toMatchObject({
                _tag: "CheckpointConflict",
                executionId: e,
                version: stale + 1,
                expectedLatestVersion: stale,
                actualLatestVersion: 3
              })
            }
            // A failed expectation wins over a taken version: the caller learns it must re-read.
            expect(yield* Effect.flip(save(yield* batch(3), 2))).toMatchObject({ expectedLatestVersion: 2, actualLatestVersion: 3 })
            expect((yield* s.list(e)).map((c) => c.version), `size ${size}`).toEqual([1, 2, 3])
            // Current: written, all of it.
            const cps = yield* batch(4)
            yield* save(cps, 3)
            expect((yield* s.list(e, { afterVersion: 3 })).map(view), `size ${size}`).toEqual(cps.map(view))
            // The newest version is what is there now: after deleting the newest, the one before it.
            yield* s.delete(cps[size - 1]!.id)
            expect(yield* Effect.flip(save(yield* batch(size + 3), size + 3))).toMatchObject({
              actualLatestVersion: size === 1 ? 3 : size + 2
            })
            yield* save(yield* batch(size === 1 ? 4 : size + 3), size === 1 ? 3 : size + 2)
          }
        })))

      // (better-sqlite3 runs each statement to completion synchronously, so in one process this shows the
      // protocol; the race between PROCESSES, where a check-then-write would break, is in "several writers".)
      it.live(`concurrent fibers appending on a condition: each version goes to one writer, the chain is unbroken (${name})`, () =>
        run(Effect.gen(function*() {
          const s = yield* store
          const chain = yield* freshExecution("chain")
          // Writer w appends at versions L+1+4w…, so only the condition (never the unique version) stops a writer that lost.
          const writer = (w: number) =>
            Effect.gen(function*() {
              let lost = 0
              for (let attempt = 0; attempt < 40; attempt++) {
                const expected = Option.match(yield* s.latest(chain), { onNone: () => 0, onSome: (cp) => cp.version })
                // Let the other writers read the same version before this one writes.
                yield* Effect.yieldNow()
                const size = attempt % 3 === 2 ? 2 : 1
                const cps = yield* Effect.forEach(Array.from({ length: size }, (_, k) => k), (k) =>
                  mk(chain, expected + 1 + 4 * w + k, { state: { writer: `w${w}`, expected, first: k === 0 } }))
                const expect = { executionId: chain, latestVersion: expected }
                const saved = yield* Effect.either(size === 1 ? s.save(cps[0]!, { expect }) : s.saveMany(cps, { expect }))
                if (Either.isLeft(saved)) {
                  if (saved.left._tag !== "CheckpointConflict" || saved.left.expectedLatestVersion !== expected) {
                    return yield* Effect.die(saved.left)
                  }
                  lost++
                }
              }
              return lost
            })
          const lost = yield* Effect.forEach([0, 1, 2, 3], writer, { concurrency: "unbounded" })
          expect(lost.reduce((a, b) => a + b, 0)).toBeGreaterThan(0)
          const written = yield* s.list(chain)
          expect(written.length).toBeGreaterThan(40)
          expectUnbrokenChain(written)
        })))
    }

    it.live("layerClient: a save takes the write lock first, reads the record, inserts, updates the record; a failed expectation inserts nothing", () =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const expectOn = (latestVersion: number) => ({ expect: { executionId: e, latestVersion } })
        const [saved, statements] = yield* recordStatements(Effect.flatMap(mk(e, 1), (cp) => s.save(cp, expectOn(0))))
        expect(saved).toBeUndefined()
        expect(statements.map((text) => text.split(" ").slice(0, 3).join(" "))).toEqual([
          `UPDATE ${SqliteStore.migrationsTable} SET`,
          "SELECT execution_id, latest_version,",
          "INSERT INTO \"checkpoints\"",
          "INSERT INTO \"checkpoints_executions\""
        ])
        // 501 checkpoints: two INSERTs of at most 500 rows, one transaction.
        const [, batch] = yield* recordStatements(
          Effect.flatMap(Effect.forEach(Array.from({ length: 501 }, (_, i) => i + 2), (v) => mk(e, v)), (cps) => s.saveMany(cps, expectOn(1)))
        )
        expect(batch.filter((text) => text.startsWith("INSERT INTO \"checkpoints\" ")).length).toBe(2)
        const [result, failed] = yield* recordStatements(Effect.either(Effect.flatMap(mk(e, 600), (cp) => s.save(cp, expectOn(3)))))
        expect(Either.flip(result)).toEqual(
          Either.right(expect.objectContaining({ reason: "ExpectationFailed", expectedLatestVersion: 3, actualLatestVersion: 502 }))
        )
        expect(failed.filter((text) => text.startsWith("INSERT"))).toEqual([])
        expect((yield* s.list(e)).length).toBe(502)
      }).pipe(Effect.provide(SqliteStore.layerClient().pipe(Layer.provideMerge(SqliteClient.layer({ filename: ":memory:" }))))))

    it.live("layerClient: inside the app's transaction the condition sees the transaction's own writes, and a failed one leaves it usable", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const s = yield* store
        const e = yield* freshExecution()
        yield* sql.withTransaction(Effect.gen(function*() {
          yield* s.save(yield* mk(e, 1))
          yield* s.save(yield* mk(e, 2), { expect: { executionId: e, latestVersion: 1 } })
          const stale = yield* Effect.flip(
            s.saveMany([yield* mk(e, 3), yield* mk(e, 4)], { expect: { executionId: e, latestVersion: 1 } })
          )
          expect(stale).toMatchObject({ _tag: "CheckpointConflict", expectedLatestVersion: 1, actualLatestVersion: 2 })
          yield* s.saveMany([yield* mk(e, 3), yield* mk(e, 4)], { expect: { executionId: e, latestVersion: 2 } })
        }))
        expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2, 3, 4])
        // Rolled back with the app's transaction, and the execution is where it was.
        const failed = yield* Effect.either(sql.withTransaction(Effect.gen(function*() {
          yield* s.save(yield* mk(e, 5), { expect: { executionId: e, latestVersion: 4 } })
          return yield* Effect.fail("app error")
        })))
        expect(Either.isLeft(failed)).toBe(true)
        yield* s.save(yield* mk(e, 5), { expect: { executionId: e, latestVersion: 4 } })
        expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2, 3, 4, 5])
      }).pipe(Effect.provide(SqliteStore.layerClient().pipe(Layer.provideMerge(SqliteClient.layer({ filename: ":memory:" }))))))
  })

  describe("several writers on one file", () => {
    it.live("two layers in one process, built at once and writing at once, never see \"database is locked\"", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        const [one, two] = yield* Effect.all(
          [Layer.build(SqliteStore.layer({ filename })), Layer.build(SqliteStore.layer({ filename }))],
          { concurrency: "unbounded" }
        )
        const s1 = Context.get(one, store)
        const s2 = Context.get(two, store)
        const e = yield* freshExecution()
        const results = yield* Effect.forEach(
          Array.from({ length: 100 }, (_, i) => i),
          (i) => Effect.either(Effect.flatMap(mk(e, Math.floor(i / 2) + 1, { state: i }), (i % 2 === 0 ? s1 : s2).save)),
          { concurrency: "unbounded" }
        )
        const failures = results.filter(Either.isLeft).map((r) => r.left)
        expect(failures.length).toBe(50)
        expect(failures.every((f) => f._tag === "CheckpointConflict")).toBe(true)
        expect((yield* s2.list(e)).map((c) => c.version)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
      })))

    it.live("waits for another PROCESS's write lock instead of failing; reads go on meanwhile; busyTimeout bounds the wait", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        const patient = Context.get(yield* Layer.build(SqliteStore.layer({ filename })), store)
        const impatient = Context.get(yield* Layer.build(SqliteStore.layer({ filename, busyTimeout: 0 })), store)
        const e = yield* freshExecution()
        const first = yield* mk(e, 1)
        yield* patient.save(first)
        const holder = yield* startFixture("sqlite-lock-holder.ts", [filename, "1500"])
        yield* until(() => holder.output().stdout.includes("locked"), "the lock holder")
        // Without a busy timeout, a write under another process's lock fails at once: the store maps it.
        const locked = yield* Effect.flip(Effect.flatMap(mk(e, 2), impatient.save))
        expect(locked).toMatchObject({ _tag: "CheckpointStoreError", backend: "sqlite", operation: "save" })
        expect(locked.message).toContain("database is locked")
        expect(locked.cause).toMatchObject({ code: "SQLITE_BUSY" })
        // A conditional save too: the lock is taken before the condition is read, so it is "locked", never a conflict.
        const expectOne = { expect: { executionId: e, latestVersion: 1 } }
        expect(yield* Effect.flip(Effect.flatMap(mk(e, 2), (cp) => impatient.save(cp, expectOne)))).toMatchObject({
          _tag: "CheckpointStoreError",
          operation: "save",
          cause: { code: "SQLITE_BUSY" }
        })
        expect(yield* Effect.flip(Effect.flatMap(Effect.forEach([2, 3], (v) => mk(e, v)), (cps) => impatient.saveMany(cps, expectOne))))
          .toMatchObject({ _tag: "CheckpointStoreError", operation: "saveMany", cause: { code: "SQLITE_BUSY" } })
        // WAL: readers are not blocked by the writer.
        expect((yield* impatient.list(e)).map(view)).toEqual([view(first)])
        // With one, the write waits for the lock and lands.
        expect(holder.output().stdout).not.toContain("released")
        yield* Effect.flatMap(mk(e, 2), patient.save)
        expect(yield* exited(holder.child)).toBe(0)
        expect(holder.output().stdout).toContain("released")
        expect((yield* patient.list(e)).map((c) => c.version)).toEqual([1, 2])
      })))

    it.live("three PROCESSES opening one NEW file at the same instant all get a store (WAL switch and schema race)", () =>
      Effect.gen(function*() {
        for (let round = 0; round < 2; round++) {
          yield* Effect.scoped(Effect.gen(function*() {
            const filename = yield* tempFile
            const results = yield* runWriters((label) => [filename, "checkpoints", label, "2", "shared"], ["p1", "p2", "p3"])
            for (const { code, report } of results) {
              expect(report.buildError, `round ${round}`).toBeUndefined()
              expect(report.errors).toEqual([])
              expect(code).toBe(0)
            }
            const executions = yield* Effect.flatMap(store, (s) => s.listExecutions()).pipe(
              Effect.provide(SqliteStore.layer({ filename }))
            )
            expect(executions.executions.map((x) => x.executionId).sort()).toEqual(["p1-own", "p2-own", "p3-own", "shared"])
          }))
        }
      }), 60_000)

    it.live("two PROCESSES writing to one file at once: every write lands, races resolve as conflicts, nothing is locked", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        const table = "shared_runs"
        const shared = yield* freshExecution("shared")
        const count = 120
        const results = yield* runWriters(
          (label) => [filename, table, label, String(count), shared, "", "1500"],
          ["writer-a", "writer-b"]
        )
        const reports = results.map((r) => r.report)
        const codes = results.map((r) => r.code)
        for (const r of reports) expect(r.buildError, r.label).toBeUndefined()
        expect(codes).toEqual([0, 0])
        for (const r of reports) expect(r.errors, r.label).toEqual([])
        const [a, b] = reports as [typeof reports[0], typeof reports[0]]
        // They really wrote at the same time.
        expect(a.firstWriteAt < b.lastWriteAt && b.firstWriteAt < a.lastWriteAt).toBe(true)
        // Each version of the shared execution went to exactly one of them.
        expect([...a.won, ...b.won].sort((x, y) => x - y)).toEqual(Array.from({ length: count }, (_, i) => i + 1))
        expect(a.conflicts + b.conflicts).toBe(count)
        yield* Effect.gen(function*() {
          const s = yield* store
          const winners = new Map([...a.won.map((v) => [v, "writer-a"] as const), ...b.won.map((v) => [v, "writer-b"] as const)])
          const listed = yield* s.list(shared)
          expect(listed.map((c) => [c.version, (c.state as { writer: string }).writer])).toEqual(
            [...winners.entries()].sort((x, y) => x[0] - y[0])
          )
          for (const r of reports) {
            expect(r.saved).toBeGreaterThanOrEqual(count)
            const own = yield* s.list(`${r.label}-own` as Checkpoint.ExecutionId)
            expect(own.map((c) => c.version)).toEqual(Array.from({ length: r.saved }, (_, i) => i + 1))
            const batches = yield* s.list(`${r.label}-batches` as Checkpoint.ExecutionId)
            const lastBatch = r.saved - (r.saved % 10)
            expect(batches.map((c) => c.version)).toEqual([4, 3, 2, 1, 0].map((k) => lastBatch - k))
          }
        }).pipe(Effect.provide(SqliteStore.layer({ filename, tableName: table })))
      })), 60_000)

    it.live("three PROCESSES appending to one execution on a condition: every write follows the one before it", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        const table = "chain_runs"
        const chain = yield* freshExecution("chain")
        // The table exists before they start (the schema race has its own test).
        yield* Effect.provide(store, SqliteStore.layer({ filename, tableName: table }))
        const writers = yield* Effect.forEach(
          [["a", "layer"], ["b", "layer"], ["c", "client"]] as const,
          ([label, mode], slot) => startFixture("chainer.ts", [label, String(slot), chain, "1500", "sqlite", filename, table, mode])
        )
        yield* until(() => writers.every((w) => w.output().stdout.includes("ready\n")), "the writers to load", 30_000)
        for (const w of writers) w.child.stdin!.end("go\n")
        const codes = yield* Effect.forEach(writers, (w) => exited(w.child), { concurrency: "unbounded" })
        const reports = writers.map((w) => {
          expect(w.output().stderr).toBe("")
          return lastLine(w.output().stdout) as {
            readonly label: string
            readonly buildError?: string
            readonly attempts: number
            readonly written: number
            readonly lost: number
            readonly errors: Array<string>
            readonly firstWriteAt: number
            readonly lastWriteAt: number
          }
        })
        for (const r of reports) {
          expect(r.buildError, r.label).toBeUndefined()
          expect(r.errors, r.label).toEqual([])
          expect(r.written, r.label).toBeGreaterThan(0)
        }
        expect(codes).toEqual([0, 0, 0])
        // They really wrote at the same time, and really raced.
        for (const r of reports) {
          for (const q of reports) expect(r.firstWriteAt < q.lastWriteAt).toBe(true)
        }
        expect(reports.reduce((n, r) => n + r.lost, 0)).toBeGreaterThan(0)
        const written = yield* Effect.flatMap(store, (s) => s.list(chain)).pipe(
          Effect.provide(SqliteStore.layer({ filename, tableName: table }))
        )
        expect(written.length).toBe(reports.reduce((n, r) => n + r.written, 0))
        expectUnbrokenChain(written)
      })), 60_000)
  })

  describe("migration from 0.1.0", () => {
    /** The table and schema-version row 0.1.0 made, with checkpoints it wrote. */
    const v010 = (filename: string, rows: ReadonlyArray<ReadonlyArray<unknown>>) =>
      withSql(filename, (sql) =>
        Effect.gen(function*() {
          yield* sql.unsafe(`CREATE TABLE "checkpoints" (
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
)`)
          yield* sql.unsafe(
            `CREATE TABLE ${SqliteStore.migrationsTable} (table_name TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL)`
          )
          yield* sql.unsafe(`INSERT INTO ${SqliteStore.migrationsTable} VALUES ('checkpoints', 1, '2026-01-01T00:00:00.000Z')`)
          for (const row of rows) {
            yield* sql.unsafe(`INSERT INTO "checkpoints" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, row as Array<never>)
          }
        }))

    const State = Schema.Struct({ n: Schema.Number })
    const bump = (s: { readonly n: number }) => Effect.succeed({ n: s.n + 1 })
    const graph = Graph.make(State).pipe(
      Graph.addNode("a", bump),
      Graph.addNode("b", bump),
      Graph.addNode("c", bump),
      Graph.setEntryPoint("a"),
      Graph.addEdge("a", "b"),
      Graph.addEdge("b", "c"),
      Graph.addEdge("c", Graph.END)
    )

    it.live("tables of 0.1.0 get the new tables and a record per execution from its newest checkpoint (unfinished: interrupted); the run resumes", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        const t1 = "2026-01-01T00:00:01.000Z"
        const t2 = "2026-01-01T00:00:02.500Z"
        yield* v010(filename, [
          ["a1", "run-a", "a", "{\"n\":1}", "{}", t1, 1, "[\"b\"]", null],
          ["a2", "run-a", "b", "{\"n\":2}", "{}", t2, 2, "[\"c\"]", "a1"],
          ["b1", "run-b", "c", "{\"n\":9}", "{}", t1, 1, "[]", null],
          // A damaged row of 0.1.0 does not stop the migration: its execution gets a record, its reads fail as before.
          ["c1", "run-c", "a", "{", "{}", "garbage", 1, "oops", null]
        ])
        const s = Context.get(yield* Layer.build(SqliteStore.layer({ filename })), store)
        const a = Option.getOrThrow(yield* s.getExecution("run-a" as Checkpoint.ExecutionId))
        expect(a).toEqual({
          executionId: "run-a",
          latestVersion: 2,
          latestCheckpointId: "a2",
          updatedAt: new Date(t2),
          pending: true,
          status: "interrupted",
          attempts: 0
        })
        expect(Option.getOrThrow(yield* s.getExecution("run-b" as Checkpoint.ExecutionId))).toMatchObject({ status: "done", latestVersion: 1 })
        expect(Option.getOrThrow(yield* s.getExecution("run-c" as Checkpoint.ExecutionId))).toMatchObject({ status: "done", latestVersion: 1 })
        expect((yield* Effect.flip(s.load("c1" as Checkpoint.CheckpointId)))._tag).toBe("CheckpointDecodeError")
        yield* withSql(filename, (sql) =>
          Effect.map(
            sql.unsafe<{ version: number }>(`SELECT version FROM ${SqliteStore.migrationsTable} WHERE table_name = 'checkpoints'`),
            (rows) => expect(rows).toEqual([{ version: SqliteStore.schemaVersion }])
          ))
        // A worker does not take a 0.1.0 run by surprise; resume goes on from its newest checkpoint: only "c" runs.
        expect(yield* s.claim({ owner: "worker", ttl: "1 minute", limit: 10 })).toEqual([])
        const runnable = yield* Graph.compileCheckpointable(graph).pipe(Effect.provideService(store, s))
        const result = yield* runnable.resume("run-a" as Checkpoint.ExecutionId).pipe(Effect.provideService(store, s))
        expect(result).toEqual({ n: 3 })
        expect((yield* s.list("run-a" as Checkpoint.ExecutionId)).map((c) => c.nodeName)).toEqual(["a", "b", "c"])
        expect(Option.getOrThrow(yield* s.getExecution("run-a" as Checkpoint.ExecutionId))).toMatchObject({ status: "done", latestVersion: 3 })
        // Building again changes nothing.
        const again = Context.get(yield* Layer.build(SqliteStore.layer({ filename })), store)
        expect((yield* again.listExecutions()).executions.map((r) => r.executionId).sort()).toEqual(["run-a", "run-b", "run-c"])
      })))

    it.live("an unrecorded 0.1.0 table (made by hand) is adopted the same way; a newer schema version is refused", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        yield* v010(filename, [["x1", "run-x", "a", "{\"n\":1}", "{}", "2026-01-01T00:00:01.000Z", 1, "[\"b\"]", null]])
        yield* withSql(filename, (sql) => sql.unsafe(`DELETE FROM ${SqliteStore.migrationsTable}`))
        const s = Context.get(yield* Layer.build(SqliteStore.layer({ filename })), store)
        expect(Option.getOrThrow(yield* s.getExecution("run-x" as Checkpoint.ExecutionId))).toMatchObject({ status: "interrupted" })
        yield* withSql(filename, (sql) => sql.unsafe(`UPDATE ${SqliteStore.migrationsTable} SET version = 99`))
        const refused = yield* Effect.flip(Layer.build(SqliteStore.layer({ filename })))
        expect(refused).toMatchObject({ _tag: "CheckpointStoreError", operation: "open" })
        expect(refused.message).toContain("newer")
      })))
  })

  describe("claim between processes", () => {
    it.live("three PROCESSES claiming from one file at once: every due execution is claimed exactly once", () =>
      Effect.scoped(Effect.gen(function*() {
        const filename = yield* tempFile
        const s = Context.get(yield* Layer.build(SqliteStore.layer({ filename })), store)
        const executions = yield* Effect.forEach(Array.from({ length: 60 }), () => freshExecution("due"))
        yield* Effect.forEach(executions, (e) => Effect.flatMap(mk(e, 1), (cp) => s.save(cp)), { discard: true })
        const owners = ["w1", "w2", "w3"]
        const claimers = yield* Effect.forEach(owners, (owner) => startFixture("claimer.ts", [`sqlite:${filename}`, owner, "2"]))
        yield* until(() => claimers.every((c) => c.output().stdout.includes("ready\n")), "the claimers to load", 60_000)
        for (const c of claimers) c.child.stdin!.end("go\n")
        const codes = yield* Effect.forEach(claimers, (c) => exited(c.child), { concurrency: "unbounded" })
        const reports = claimers.map((c) => {
          expect(c.output().stderr).toBe("")
          return lastLine(c.output().stdout) as { owner: string; buildError?: string; claimed: Array<string>; errors: Array<string> }
        })
        expect(codes).toEqual([0, 0, 0])
        for (const r of reports) {
          expect(r.buildError, r.owner).toBeUndefined()
          expect(r.errors, r.owner).toEqual([])
        }
        const all = reports.flatMap((r) => r.claimed)
        expect(all.length).toBe(60)
        expect(new Set(all)).toEqual(new Set(executions))
        for (const e of executions) {
          const r = Option.getOrThrow(yield* s.getExecution(e))
          const owner = reports.find((rep) => rep.claimed.includes(e))!.owner
          expect([r.status, r.attempts, r.lease?.owner]).toEqual(["running", 1, owner])
        }
      })), 120_000)
  })

  describe("large values (blobs)", () => {
    it.live("a large field is stored once per execution, loads whole, and goes with the last checkpoint referencing it", () =>
      withFileStore((filename) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const count = withSql(filename, (sql) =>
            Effect.map(
              sql.unsafe<{ n: number; bytes: number }>(
                `SELECT (SELECT count(*) FROM checkpoints_blobs WHERE execution_id = ?) AS n, ` +
                  `(SELECT coalesce(sum(length(state)), 0) FROM checkpoints WHERE execution_id = ?) AS bytes`,
                [e, e]
              ),
              (rows) => rows[0]!
            ))
          const big = "x".repeat(10_000)
          const cps = yield* Effect.forEach([1, 2, 3], (v) => mk(e, v, { state: { big, v } }))
          for (const cp of cps) yield* s.save(cp)
          expect((yield* s.list(e)).map(view)).toEqual(cps.map(view))
          const stored = yield* count
          expect(stored.n).toBe(1)
          expect(stored.bytes).toBeLessThan(1000)
          // A new value: a second blob; pruning the checkpoints that held the first removes it.
          const other = yield* mk(e, 4, { state: { big: "y".repeat(10_000), v: 4 } })
          yield* s.save(other)
          expect((yield* count).n).toBe(2)
          expect(yield* s.prune(e, 1)).toBe(3)
          expect((yield* s.list(e)).map(view)).toEqual([view(other)])
          expect((yield* count).n).toBe(1)
          // A blob removed behind the packer's back: the next save sends it again.
          yield* withSql(filename, (sql) => sql.unsafe("DELETE FROM checkpoints_blobs WHERE execution_id = ?", [e]))
          const next = yield* mk(e, 5, { state: { big: "y".repeat(10_000), v: 5 } })
          yield* s.save(next)
          expect(view(yield* s.load(next.id))).toEqual(view(next))
          yield* s.clear(e)
          expect(yield* count).toEqual({ n: 0, bytes: 0 })
        })
      ))
  })
})
