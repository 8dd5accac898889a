/**
 * Encryption at rest (`CheckpointStore.encrypted`) on all five stores, against
 * the real servers: the conformance suite on the encrypted store, then
 * tampering by hand with the store's raw storage (SQL rows, Redis keys, files,
 * the Memory store's text) — flipped bytes, sealed values moved between
 * checkpoints, plaintext, edited headers — key rotation, no plaintext at rest,
 * and a graph run with an interrupt and a resume.
 *
 * Owns: PostgreSQL schemas `ec_enc_<pid>_…` (dropped when each layer closes,
 * and any left by this process in afterAll), Redis key prefixes
 * `ec-enc:<pid>:…` (removed by SCAN of the prefix), temp directories.
 */
import { PgClient } from "@effect/sql-pg"
import { SqliteClient } from "@effect/sql-sqlite-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, ManagedRuntime, Option, Redacted, Schema, type Scope } from "effect"
import { Redis } from "ioredis"
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type * as Checkpoint from "../src/Checkpoint.js"
import * as CheckpointBackend from "../src/CheckpointBackend.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import { makeState, memoryBackend } from "../src/internal/memoryBackend.js"
import * as FileStore from "../src/layers/File.js"
import * as PostgresStore from "../src/layers/Postgres.js"
import * as RedisStore from "../src/layers/Redis.js"
import * as SqliteStore from "../src/layers/Sqlite.js"
import { conformance, freshExecution, mk, StoreTestKit, view } from "../src/testing.js"
import { ownSchema, removeRedisPrefix, TEST_POSTGRES_URL, TEST_REDIS_URL } from "./fixtures/stores.js"

const store = CheckpointStore.CheckpointStore
const newKeyBytes = () => Redacted.make(new Uint8Array(randomBytes(32)))
const key = newKeyBytes()
/** The key id the sealed form carries, as SECURITY.md describes it: a short hash of the key. */
const keyIdOf = (k: Redacted.Redacted<Uint8Array>) => createHash("sha256").update(Redacted.value(k)).digest("base64url").slice(0, 11)

/** Never in any id or node name: only in states, metadata and write values. */
const MARKER = "PLAINTEXT-MARKER-7f3a"

// -----------------------------------------------------------------------------
// Raw access to each store
// -----------------------------------------------------------------------------

type Field = "state" | "metadata"
type Header = "next" | "nodeName" | "parentId" | "runtime"
const columnOf: Record<Header, string> = { next: "next", nodeName: "node_name", parentId: "parent_id", runtime: "runtime" }

/** The raw storage of one store, behind its back. Values are the stored JSON values (a sealed one is `{ $sealed }`). */
interface Raw {
  readonly get: (id: string, field: Field | "runtime") => Effect.Effect<unknown>
  readonly set: (id: string, field: Field, value: unknown) => Effect.Effect<void>
  /** Sets (or, with `undefined`, removes) an unsealed field of a stored checkpoint. */
  readonly setHeader: (id: string, field: Header, value: unknown) => Effect.Effect<void>
  readonly getWrite: (checkpointId: string, taskId: string, key: string) => Effect.Effect<unknown>
  readonly setWrite: (checkpointId: string, taskId: string, key: string, value: unknown) => Effect.Effect<void>
  /** Everything the store holds, as text (keys, names and values). */
  readonly dump: Effect.Effect<string>
  readonly blobStats: (executionId: string) => Effect.Effect<{ readonly count: number; readonly bytes: number }>
}

/** A store's storage: its raw access, and the store on it with given options. */
interface Env {
  readonly raw: Raw
  readonly plain: Layer.Layer<CheckpointStore.CheckpointStore, unknown>
}

const withEncryption = (env: Env, options: CheckpointStore.EncryptionOptions) => env.plain.pipe(CheckpointStore.encrypted(options))

/** Edits a JSON document (text). */
const editDoc = (text: string, f: (doc: Record<string, unknown>) => void) => {
  const doc = JSON.parse(text) as Record<string, unknown>
  f(doc)
  return JSON.stringify(doc)
}

const memoryEnv: Effect.Effect<Env, never, Scope.Scope> = Effect.sync(() => {
  const state = makeState()
  const doc = (id: string) => state.documents.get(id)!
  const writes = (cp: string, task: string) => state.writes.get(cp)!.get(task)!
  return {
    plain: Layer.succeed(store, CheckpointBackend.make(memoryBackend(state))),
    raw: {
      get: (id, field) => Effect.sync(() => (JSON.parse(doc(id)) as Record<string, unknown>)[field]),
      set: (id, field, value) => Effect.sync(() => void state.documents.set(id, editDoc(doc(id), (d) => (d[field] = value)))),
      setHeader: (id, field, value) => Effect.sync(() => void state.documents.set(id, editDoc(doc(id), (d) => (d[field] = value)))),
      getWrite: (cp, task, k) => Effect.sync(() => JSON.parse(writes(cp, task).get(k)!)),
      setWrite: (cp, task, k, value) => Effect.sync(() => void writes(cp, task).set(k, JSON.stringify(value))),
      dump: Effect.sync(() =>
        JSON.stringify([
          [...state.documents],
          [...state.records],
          [...state.writes].map(([c, t]) => [c, [...t].map(([id, ks]) => [id, [...ks]])]),
          [...state.blobs].map(([e, bs]) => [e, [...bs]])
        ])
      ),
      blobStats: (e) =>
        Effect.sync(() => {
          const stored = [...(state.blobs.get(e)?.values() ?? [])]
          return { count: stored.length, bytes: stored.reduce((n, b) => n + b.json.length, 0) }
        })
    }
  }
})

const tempDir = (kind: string) =>
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), `effect-checkpoint-enc-${kind}-`))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )

/** Every file under `dir`: relative path (or link target) and content. */
const filesOf = (dir: string): Array<string> =>
  (fs.readdirSync(dir, { recursive: true }) as Array<string>).flatMap((rel) => {
    const full = path.join(dir, rel)
    const stat = fs.lstatSync(full)
    return stat.isFile() ? [rel, fs.readFileSync(full, "utf8")] : stat.isSymbolicLink() ? [rel, fs.readlinkSync(full)] : [rel]
  })

const fileEnv: Effect.Effect<Env, never, Scope.Scope> = Effect.map(tempDir("file"), (dir) => {
  const docPath = (id: string) => path.join(dir, "checkpoints", `${id}.json`)
  const editFile = (file: string, f: (d: Record<string, unknown>) => void) =>
    Effect.sync(() => fs.writeFileSync(file, editDoc(fs.readFileSync(file, "utf8"), f)))
  const writePath = (cp: string, task: string, k: string) => {
    const taskDir = path.join(dir, "writes", cp, task)
    const name = fs.readdirSync(taskDir).find((n) => n.endsWith(`-${k}.json`))!
    return path.join(taskDir, name)
  }
  return {
    plain: FileStore.layer({ directory: dir }),
    raw: {
      get: (id, field) => Effect.sync(() => (JSON.parse(fs.readFileSync(docPath(id), "utf8")) as Record<string, unknown>)[field]),
      set: (id, field, value) => editFile(docPath(id), (d) => (d[field] = value)),
      setHeader: (id, field, value) => editFile(docPath(id), (d) => (d[field] = value)),
      getWrite: (cp, task, k) => Effect.sync(() => JSON.parse(fs.readFileSync(writePath(cp, task, k), "utf8"))),
      setWrite: (cp, task, k, value) => Effect.sync(() => fs.writeFileSync(writePath(cp, task, k), JSON.stringify(value))),
      dump: Effect.sync(() => filesOf(dir).join("\n")),
      blobStats: (e) =>
        Effect.sync(() => {
          const blobs = path.join(dir, "executions", e, "blobs")
          const files = fs.existsSync(blobs) ? fs.readdirSync(blobs).filter((n) => n.endsWith(".json")) : []
          return { count: files.length, bytes: files.reduce((n, f) => n + fs.statSync(path.join(blobs, f)).size, 0) }
        })
    }
  }
})

/** The raw access of a SQL store, through `run` (a connection of the test's own). */
const sqlRaw = (
  run: <A extends object>(text: string, params: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<A>>,
  tables: { readonly checkpoints: string; readonly writes: string; readonly executions: string; readonly blobs: string },
  p: (n: number) => string,
  json: (n: number) => string,
  parse: (stored: unknown) => unknown
): Raw => ({
  get: (id, field) => Effect.map(run<Record<string, unknown>>(`SELECT ${field} AS v FROM ${tables.checkpoints} WHERE id = ${p(1)}`, [id]), (rows) => parse(rows[0]!.v)),
  set: (id, field, value) =>
    Effect.asVoid(run(`UPDATE ${tables.checkpoints} SET ${field} = ${json(1)} WHERE id = ${p(2)}`, [JSON.stringify(value), id])),
  setHeader: (id, field, value) =>
    Effect.asVoid(run(
      `UPDATE ${tables.checkpoints} SET ${columnOf[field]} = ${
        field === "next" || field === "runtime" ? json(1) : p(1)
      } WHERE id = ${p(2)}`,
      [value === undefined ? null : typeof value === "string" ? value : JSON.stringify(value), id]
    )),
  getWrite: (cp, task, k) =>
    Effect.map(
      run<Record<string, unknown>>(
        `SELECT value AS v FROM ${tables.writes} WHERE checkpoint_id = ${p(1)} AND task_id = ${p(2)} AND "key" = ${p(3)}`,
        [cp, task, k]
      ),
      (rows) => parse(rows[0]!.v)
    ),
  setWrite: (cp, task, k, value) =>
    Effect.asVoid(run(
      `UPDATE ${tables.writes} SET value = ${json(1)} WHERE checkpoint_id = ${p(2)} AND task_id = ${p(3)} AND "key" = ${p(4)}`,
      [JSON.stringify(value), cp, task, k]
    )),
  dump: Effect.map(
    Effect.forEach(Object.values(tables), (t) => run(`SELECT * FROM ${t}`, [])),
    (rows) => JSON.stringify(rows, (_, v) => (typeof v === "bigint" ? String(v) : v))
  ),
  blobStats: (e) =>
    Effect.map(
      run<{ count: unknown; bytes: unknown }>(
        `SELECT count(*) AS count, coalesce(sum(length(value)), 0) AS bytes FROM ${tables.blobs} WHERE execution_id = ${p(1)}`,
        [e]
      ),
      (rows) => ({ count: Number(rows[0]!.count), bytes: Number(rows[0]!.bytes) })
    )
})

const sqliteEnv: Effect.Effect<Env, never, Scope.Scope> = Effect.map(tempDir("sqlite"), (dir) => {
  const filename = path.join(dir, "store.db")
  const names = SqliteStore.tableNames("checkpoints")
  const run = <A extends object>(text: string, params: ReadonlyArray<unknown>) =>
    Effect.scoped(Effect.flatMap(
      Layer.build(SqliteClient.layer({ filename })),
      (ctx) => Context.get(ctx, SqlClient.SqlClient).unsafe<A>(text, params)
    )).pipe(Effect.orDie)
  return {
    plain: SqliteStore.layer({ filename }),
    raw: sqlRaw(
      run,
      {
        checkpoints: `"${names.checkpoints}"`,
        writes: `"${names.writes}"`,
        executions: `"${names.executions}"`,
        blobs: `"${names.blobs}"`
      },
      () => "?",
      () => "?",
      (v) => JSON.parse(v as string)
    )
  }
})

const pgAdmin = ManagedRuntime.make(PgClient.layer({ url: Redacted.make(TEST_POSTGRES_URL), applicationName: "ec-enc-test-admin" }))
const pgQuery = <A extends object>(text: string, params: ReadonlyArray<unknown>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe<A>(text, params)).pipe(Effect.provide(pgAdmin), Effect.orDie)

const postgresEnv: Effect.Effect<Env, never, Scope.Scope> = Effect.map(ownSchema("enc"), (schema) => {
  const names = PostgresStore.tableNames("checkpoints")
  const q = (t: string) => `"${schema}"."${t}"`
  return {
    plain: PostgresStore.layer({ url: TEST_POSTGRES_URL, schema, maxConnections: 4 }),
    raw: sqlRaw(
      pgQuery,
      { checkpoints: q(names.checkpoints), writes: q(names.writes), executions: q(names.executions), blobs: q(names.blobs) },
      (n) => `$${n}`,
      (n) => `$${n}::jsonb`,
      (v) => v
    )
  }
})

const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectionName: "ec-enc-test" })
const RUN = `ec-enc:${process.pid}:${Date.now().toString(36)}`
let prefixes = 0

const scan = (prefix: string) =>
  Effect.promise(async () => {
    const found: Array<string> = []
    let cursor = "0"
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000)
      cursor = next
      found.push(...keys)
    } while (cursor !== "0")
    return found.sort()
  })

const redisEnv: Effect.Effect<Env, never, Scope.Scope> = Effect.map(
  Effect.acquireRelease(Effect.sync(() => `${RUN}:${++prefixes}`), removeRedisPrefix),
  (prefix) => {
    const ckey = (id: string) => `${prefix}|c|${id}`
    const wkey = (id: string) => `${prefix}|w|${id}`
    const editKey = (id: string, f: (d: Record<string, unknown>) => void) =>
      Effect.promise(async () => void await redis.set(ckey(id), editDoc((await redis.get(ckey(id)))!, f)))
    /** A write's field holds `<seq>:<json>`. */
    const writeField = (task: string, k: string) => `${task}|${k}`
    return {
      plain: RedisStore.layer({ url: TEST_REDIS_URL, prefix }),
      raw: {
        get: (id, field) => Effect.promise(async () => (JSON.parse((await redis.get(ckey(id)))!) as Record<string, unknown>)[field]),
        set: (id, field, value) => editKey(id, (d) => (d[field] = value)),
        setHeader: (id, field, value) => editKey(id, (d) => (d[field] = value)),
        getWrite: (cp, task, k) =>
          Effect.promise(async () => {
            const stored = (await redis.hget(wkey(cp), writeField(task, k)))!
            return JSON.parse(stored.slice(stored.indexOf(":") + 1))
          }),
        setWrite: (cp, task, k, value) =>
          Effect.promise(async () => {
            const stored = (await redis.hget(wkey(cp), writeField(task, k)))!
            await redis.hset(wkey(cp), writeField(task, k), `${stored.slice(0, stored.indexOf(":") + 1)}${JSON.stringify(value)}`)
          }),
        dump: Effect.flatMap(scan(prefix), (keys) =>
          Effect.promise(async () => {
            const out: Array<string> = []
            for (const k of keys) {
              const type = await redis.type(k)
              const content = type === "string"
                ? await redis.get(k)
                : type === "hash"
                ? await redis.hgetall(k)
                : type === "zset"
                ? await redis.zrange(k, 0, -1)
                : type
              out.push(k, JSON.stringify(content))
            }
            return out.join("\n")
          })),
        blobStats: (e) =>
          Effect.map(Effect.promise(() => redis.hgetall(`${prefix}|b|${e}`)), (blobs) => {
            const values = Object.values(blobs)
            return { count: values.length, bytes: values.reduce((n, v) => n + Buffer.byteLength(v), 0) }
          })
      }
    }
  }
)

afterAll(async () => {
  await Effect.runPromise(Effect.gen(function*() {
    const left = `ec_enc_${process.pid}_`
    const schemas = yield* pgQuery<{ name: string }>(`SELECT nspname AS name FROM pg_namespace WHERE left(nspname, $2) = $1`, [left, left.length])
    for (const { name } of schemas) yield* pgQuery(`DROP SCHEMA "${name}" CASCADE`, [])
    yield* removeRedisPrefix(RUN)
  }))
  await pgAdmin.dispose()
  redis.disconnect()
})

const stores: ReadonlyArray<readonly [string, Effect.Effect<Env, never, Scope.Scope>]> = [
  ["Memory", memoryEnv],
  ["File", fileEnv],
  ["SQLite", sqliteEnv],
  ["PostgreSQL", postgresEnv],
  ["Redis", redisEnv]
]

// -----------------------------------------------------------------------------
// Sealed values, by hand
// -----------------------------------------------------------------------------

interface Sealed {
  readonly $sealed: string
}
const isSealed = (v: unknown): v is Sealed =>
  typeof v === "object" && v !== null && Object.keys(v).length === 1 && typeof (v as Sealed).$sealed === "string"
const partsOf = (v: unknown) => {
  expect(isSealed(v), JSON.stringify(v)).toBe(true)
  const parts = (v as Sealed).$sealed.split(".")
  expect(parts).toHaveLength(4)
  expect(parts[0]).toBe("ec1")
  return parts
}
/** The sealed value with one bit of one byte of its IV (`part` 2) or ciphertext+tag (`part` 3) flipped. */
const flipByte = (v: unknown, part: 2 | 3, at: number): Sealed => {
  const parts = partsOf(v)
  const bytes = Buffer.from(parts[part]!, "base64url")
  const i = ((at % bytes.length) + bytes.length) % bytes.length
  bytes[i] = bytes[i]! ^ 0x01
  parts[part] = bytes.toString("base64url")
  return { $sealed: parts.join(".") }
}
const decodeErrorOn = <A, E, R>(self: Effect.Effect<A, E, R>, id: string) =>
  Effect.map(Effect.flip(self), (error) => {
    expect(error).toMatchObject({ _tag: "CheckpointDecodeError", id })
    expect(String((error as { message: string }).message)).toContain(id)
    return error as unknown as { readonly message: string }
  })

/** Two checkpoints of one execution and one of another, with secrets in state, metadata and writes. */
const saveSecrets = Effect.gen(function*() {
  const s = yield* store
  const e = yield* freshExecution("enc")
  const other = yield* freshExecution("enc-other")
  const a = yield* mk(e, 1, { state: { secret: `${MARKER} a`, n: 1 }, metadata: { note: `${MARKER} meta a` } })
  const b = yield* mk(e, 2, { state: { secret: `${MARKER} b`, n: 2 }, metadata: { note: `${MARKER} meta b` }, parentId: a.id })
  const c = yield* mk(other, 1, { state: { secret: `${MARKER} c`, n: 1 }, metadata: { note: `${MARKER} meta c` } })
  yield* s.save(a)
  yield* s.save(b)
  yield* s.save(c)
  yield* s.saveWrites(a.id, "0001", [{ key: "answer", value: { said: `${MARKER} answer` } }, { key: "step", value: `${MARKER} step` }])
  yield* s.saveWrites(a.id, "0002", [{ key: "answer", value: { said: `${MARKER} other task` } }])
  yield* s.saveWrites(b.id, "0001", [{ key: "answer", value: { said: `${MARKER} answer of b` } }])
  return { e, other, a, b, c }
})

// -----------------------------------------------------------------------------
// The tests, on every store
// -----------------------------------------------------------------------------

/** A graph with a marker in its state, a durable step, and an interrupt asking for an approval. */
const Doc = Schema.Struct({ text: Schema.String, log: Schema.Array(Schema.String) })
const approvalGraph = (runs: { draft: number; publish: number }) =>
  Graph.make(Doc).pipe(
    Graph.addNode("draft", (s) =>
      Effect.gen(function*() {
        const text = yield* Graph.step("write", Effect.sync(() => (runs.draft++, `${MARKER} draft of ${s.text}`)), Schema.String)
        const answer = yield* Graph.interrupt(Schema.Struct({ ok: Schema.Boolean, note: Schema.String }), { text })
        return { text, log: [...s.log, `approved=${answer.ok} ${answer.note}`] }
      })),
    Graph.addNode("publish", (s) => Effect.sync(() => (runs.publish++, { log: [...s.log, "published"] }))),
    Graph.setEntryPoint("draft"),
    Graph.addEdge("draft", "publish"),
    Graph.addEdge("publish", Graph.END)
  )

for (const [name, makeEnv] of stores) {
  const kitted: Layer.Layer<CheckpointStore.CheckpointStore | StoreTestKit, unknown> = Layer.unwrapScoped(
    Effect.map(makeEnv, (env) =>
      Layer.merge(
        withEncryption(env, { key }),
        Layer.succeed(StoreTestKit, {
          corrupt: (cp) => env.raw.set(cp.id, "state", `not sealed, not ${cp.id}`),
          blobStats: env.raw.blobStats
        })
      ))
  )
  // The whole suite on the encrypted Memory and SQLite stores; its other stores' suites run unencrypted
  // in their own files, and the checks below run encrypted on every store.
  {
    conformance(`${name}, encrypted`, kitted, { blobs: true, preservesKeyOrder: name !== "PostgreSQL" })
  }

  describe(`encryption at rest on the ${name} store`, () => {
    const test = (title: string, body: (env: Env) => Effect.Effect<void, unknown, CheckpointStore.CheckpointStore | Scope.Scope>) =>
      it.scopedLive(title, () => Effect.flatMap(makeEnv, (env) => Effect.provide(body(env), withEncryption(env, { key }))), 30_000)

    test("nothing stored holds the plaintext of a state, metadata or task write", (env) =>
      Effect.gen(function*() {
        const s = yield* store
        const { a, b } = yield* saveSecrets
        expect(view(yield* s.load(a.id))).toEqual(view(a))
        expect(view(yield* s.load(b.id))).toEqual(view(b))
        expect((yield* s.listWrites(a.id)).map((w) => w.value)).toEqual([
          { said: `${MARKER} answer` },
          `${MARKER} step`,
          { said: `${MARKER} other task` }
        ])
        const dump = yield* env.raw.dump
        expect(dump).toContain(a.id)
        expect(dump).not.toContain(MARKER)
        // Every sealed value carries the key's id.
        for (const field of ["state", "metadata"] as const) expect(partsOf(yield* env.raw.get(a.id, field))[1]).toBe(keyIdOf(key))
        expect(partsOf(yield* env.raw.getWrite(a.id, "0001", "answer"))[1]).toBe(keyIdOf(key))
      }))

    test("a flipped byte of a sealed state or metadata (IV, ciphertext or tag) fails with CheckpointDecodeError naming the checkpoint", (env) =>
      Effect.gen(function*() {
        const s = yield* store
        const { e, a } = yield* saveSecrets
        for (const field of ["state", "metadata"] as const) {
          const original = yield* env.raw.get(a.id, field)
          for (const [part, at] of [[2, 0], [2, -1], [3, 0], [3, 5], [3, -1], [3, -16]] as const) {
            yield* env.raw.set(a.id, field, flipByte(original, part, at))
            const error = yield* decodeErrorOn(s.load(a.id), a.id)
            expect(error.message).toContain(field)
            yield* decodeErrorOn(s.list(e), a.id)
          }
          yield* env.raw.set(a.id, field, original)
          expect(view(yield* s.load(a.id))).toEqual(view(a))
        }
      }))

    test("a sealed state or metadata copied into another checkpoint (same or other execution) does not open there", (env) =>
      Effect.gen(function*() {
        const s = yield* store
        const { a, b, c } = yield* saveSecrets
        for (const field of ["state", "metadata"] as const) {
          const original = yield* env.raw.get(b.id, field)
          for (const from of [a, c]) {
            yield* env.raw.set(b.id, field, yield* env.raw.get(from.id, field))
            yield* decodeErrorOn(s.load(b.id), b.id)
          }
          // The state sealed as the metadata of the same checkpoint (and the other way round) does not open either.
          yield* env.raw.set(b.id, field, yield* env.raw.get(b.id, field === "state" ? "metadata" : "state"))
          yield* decodeErrorOn(s.load(b.id), b.id)
          yield* env.raw.set(b.id, field, original)
        }
        expect(view(yield* s.load(b.id))).toEqual(view(b))
        expect(view(yield* s.load(a.id))).toEqual(view(a))
      }))

    test("a plaintext state or metadata, or an unreadable sealed form, fails with CheckpointDecodeError: never returned as if valid", (env) =>
      Effect.gen(function*() {
        const s = yield* store
        const { e, a } = yield* saveSecrets
        for (const field of ["state", "metadata"] as const) {
          const original = yield* env.raw.get(a.id, field)
          const parts = partsOf(original)
          for (
            const bad of [
              { secret: "plain", n: 1 },
              a[field],
              "plain text",
              null,
              { $sealed: (original as Sealed).$sealed, extra: 1 },
              { $sealed: `ec2.${parts.slice(1).join(".")}` },
              { $sealed: parts.slice(0, 3).join(".") },
              { $sealed: `${parts.slice(0, 3).join(".")}.AAAA` },
              { $sealed: 42 }
            ]
          ) {
            yield* env.raw.set(a.id, field, bad)
            yield* decodeErrorOn(s.load(a.id), a.id)
            yield* decodeErrorOn(s.list(e), a.id)
          }
          yield* env.raw.set(a.id, field, original)
        }
        expect(view(yield* s.load(a.id))).toEqual(view(a))
      }))

    test("a task write: a flipped byte, a value moved from another write, or plaintext fails listWrites with CheckpointDecodeError", (env) =>
      Effect.gen(function*() {
        const s = yield* store
        const { a, b } = yield* saveSecrets
        const original = yield* env.raw.getWrite(a.id, "0001", "answer")
        const damaged = [
          flipByte(original, 3, 0),
          flipByte(original, 3, -1),
          flipByte(original, 2, 3),
          yield* env.raw.getWrite(a.id, "0001", "step"), // another key of the same task
          yield* env.raw.getWrite(a.id, "0002", "answer"), // the same key of another task
          yield* env.raw.getWrite(b.id, "0001", "answer"), // the same task and key of another checkpoint
          { said: `${MARKER} answer` },
          `plain`
        ]
        for (const bad of damaged) {
          yield* env.raw.setWrite(a.id, "0001", "answer", bad)
          const error = yield* decodeErrorOn(s.listWrites(a.id), a.id)
          expect(error.message).toContain("answer")
        }
        yield* env.raw.setWrite(a.id, "0001", "answer", original)
        expect((yield* s.listWrites(a.id)).map((w) => w.value)[0]).toEqual({ said: `${MARKER} answer` })
      }))

    test("key rotation: old checkpoints and writes open with previousKeys, new ones are sealed with the new key; without the old key they fail typed", (env) =>
      Effect.gen(function*() {
        const { e, a, b } = yield* saveSecrets
        const newKey = newKeyBytes()
        const rotated = withEncryption(env, { key: newKey, previousKeys: [key] })
        const c = yield* mk(e, 3, { state: { secret: `${MARKER} after rotation`, n: 3 }, parentId: b.id })
        yield* Effect.gen(function*() {
          const s = yield* store
          expect((yield* s.list(e)).map(view)).toEqual([a, b].map(view))
          expect((yield* s.listWrites(a.id)).length).toBe(3)
          yield* s.save(c)
          yield* s.saveWrites(c.id, "0001", [{ key: "answer", value: `${MARKER} new` }])
          expect((yield* s.list(e)).map(view)).toEqual([a, b, c].map(view))
        }).pipe(Effect.provide(rotated))
        // The key ids in the raw values: old ones with the old key, new ones with the new key.
        expect(partsOf(yield* env.raw.get(a.id, "state"))[1]).toBe(keyIdOf(key))
        expect(partsOf(yield* env.raw.get(c.id, "state"))[1]).toBe(keyIdOf(newKey))
        expect(partsOf(yield* env.raw.get(c.id, "metadata"))[1]).toBe(keyIdOf(newKey))
        expect(partsOf(yield* env.raw.getWrite(c.id, "0001", "answer"))[1]).toBe(keyIdOf(newKey))
        expect(yield* env.raw.dump).not.toContain(MARKER)
        // Only the new key: the new ones open, the old ones fail typed, naming the key id they need.
        yield* Effect.gen(function*() {
          const s = yield* store
          expect(view(yield* s.load(c.id))).toEqual(view(c))
          expect((yield* s.listWrites(c.id)).map((w) => w.value)).toEqual([`${MARKER} new`])
          const error = yield* decodeErrorOn(s.load(a.id), a.id)
          expect(error.message).toContain(keyIdOf(key))
          yield* decodeErrorOn(s.list(e), a.id)
          yield* decodeErrorOn(s.listWrites(a.id), a.id)
        }).pipe(Effect.provide(withEncryption(env, { key: newKey })))
        // The old key alone does not open the new ones.
        yield* Effect.gen(function*() {
          const s = yield* store
          yield* decodeErrorOn(s.load(c.id), c.id)
          expect(view(yield* s.load(a.id))).toEqual(view(a))
        }).pipe(Effect.provide(withEncryption(env, { key })))
        // The unencrypted store reads no sealed value as a state: it returns the sealed form, never the plaintext.
        const raw = yield* Effect.provide(Effect.flatMap(store, (s) => s.load(a.id)), env.plain)
        expect(isSealed(raw.state)).toBe(true)
      }))

    test("a graph run: invoke, a step, an interrupt and a resume work on the encrypted store, and nothing of it is stored in plaintext", (env) =>
      Effect.gen(function*() {
        const runs = { draft: 0, publish: 0 }
        const runnable = yield* Graph.compileCheckpointable(approvalGraph(runs))
        const e = yield* freshExecution("enc-graph")
        const paused = yield* Effect.flip(runnable.invoke({ text: "memo", log: [] }, { executionId: e }))
        expect(paused).toMatchObject({ _tag: "GraphInterrupted", node: "draft", when: "during", payload: { text: `${MARKER} draft of memo` } })
        expect(yield* env.raw.dump).not.toContain(MARKER)
        const out = yield* runnable.resume(e, { value: { ok: true, note: `${MARKER} fine` } })
        expect(out).toEqual({ text: `${MARKER} draft of memo`, log: [`approved=true ${MARKER} fine`, "published"] })
        expect(runs).toEqual({ draft: 1, publish: 1 })
        const s = yield* store
        expect(Option.map(yield* s.getExecution(e), (r) => r.status)).toEqual(Option.some("done"))
        expect((yield* runnable.listCheckpoints(e)).map((c) => c.nodeName)).toEqual(["__input__", "draft", "publish"])
        expect(yield* env.raw.dump).not.toContain(MARKER)
      }))
  })
}

// -----------------------------------------------------------------------------
// Every character of a sealed value, and the unsealed header of a checkpoint
// -----------------------------------------------------------------------------

/** The sealed value with the character at `at` replaced by another base64url character. */
const replaceChar = (v: Sealed, at: number): Sealed => {
  const c = v.$sealed[at]!
  return { $sealed: v.$sealed.slice(0, at) + (c === "A" ? "B" : "A") + v.$sealed.slice(at + 1) }
}

describe("encryption at rest: every stored character counts (Memory)", () => {
  it.scopedLive("any one character of a sealed state or write replaced fails with CheckpointDecodeError", () =>
    Effect.flatMap(memoryEnv, (env) =>
      Effect.gen(function*() {
        const s = yield* store
        const { a } = yield* saveSecrets
        const original = (yield* env.raw.get(a.id, "state")) as Sealed
        const accepted: Array<number> = []
        for (let at = 0; at < original.$sealed.length; at++) {
          if (original.$sealed[at] === ".") continue
          yield* env.raw.set(a.id, "state", replaceChar(original, at))
          if ((yield* Effect.either(s.load(a.id)))._tag === "Right") accepted.push(at)
        }
        yield* env.raw.set(a.id, "state", original)
        const write = (yield* env.raw.getWrite(a.id, "0001", "answer")) as Sealed
        for (let at = 0; at < write.$sealed.length; at++) {
          if (write.$sealed[at] === ".") continue
          yield* env.raw.setWrite(a.id, "0001", "answer", replaceChar(write, at))
          if ((yield* Effect.either(s.listWrites(a.id)))._tag === "Right") accepted.push(-at)
        }
        expect(accepted).toEqual([])
      }).pipe(Effect.provide(withEncryption(env, { key })))))
})

for (const [name, makeEnv] of stores) {
  describe(`encryption at rest on the ${name} store: the unsealed header`, () => {
    it.scopedLive("an edited next, node name or parent, or a removed runtime, fails with CheckpointDecodeError", () =>
      Effect.flatMap(makeEnv, (env) =>
        Effect.gen(function*() {
          const s = yield* store
          const { e, a, b } = yield* saveSecrets
          const r = yield* mk(e, 3, { parentId: b.id, runtime: { sends: [`${MARKER} send`] } })
          yield* s.save(r)
          const edits: ReadonlyArray<readonly [Checkpoint.Checkpoint, Header, unknown, unknown]> = [
            [a, "next", ["node-9"], a.next], // skips the node that was to run next
            [a, "next", [], a.next],
            [a, "nodeName", "node-9", a.nodeName],
            [b, "parentId", r.id, b.parentId],
            [r, "runtime", undefined, yield* env.raw.get(r.id, "runtime")]
          ]
          for (const [cp, field, value, original] of edits) {
            yield* env.raw.setHeader(cp.id, field, value)
            yield* decodeErrorOn(s.load(cp.id), cp.id)
            yield* decodeErrorOn(s.list(e), cp.id)
            yield* env.raw.setHeader(cp.id, field, original)
            expect(view(yield* s.load(cp.id))).toEqual(view(cp))
          }
          expect(yield* env.raw.dump).not.toContain(MARKER)
        }).pipe(Effect.provide(withEncryption(env, { key })))))
  })
}
