/**
 * The Redis store against the real server (TEST_REDIS_URL, default
 * redis://127.0.0.1:6379/0). Every test owns a unique key prefix
 * `ec-test:redis:<uuid>:` and removes its keys through its own index sets when
 * its scope closes (never FLUSHDB, never KEYS). A final `SCAN MATCH` on that
 * unique prefix checks that nothing was left outside the indexes — staging keys
 * of large documents included, except in the fault tests that cut a save
 * between its staging `SET` and its script, where they must expire.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { ConfigError, ConfigProvider, Context, Duration, Effect, Layer, Option, Redacted } from "effect"
import { Redis } from "ioredis"
import { execFileSync } from "node:child_process"
import { randomUUID } from "node:crypto"
import type * as Checkpoint from "../src/Checkpoint.js"
import * as CheckpointBackend from "../src/CheckpointBackend.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as RedisStore from "../src/layers/Redis.js"
import { conformance, freshExecution, mk, StoreTestKit, view } from "../src/testing.js"
import { closedPort, redisProxy } from "./fixtures/redis-proxy.js"
import { privateRedis } from "./fixtures/redis-server.js"

const TEST_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/0"
const target = (() => {
  const u = new URL(TEST_URL)
  return { host: u.hostname || "127.0.0.1", port: Number(u.port || 6379) }
})()

/** Our own connection for looking behind the store's back (and cleaning up). */
const admin = new Redis(TEST_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectionName: "ec-test-admin" })
afterAll(() => admin.quit())

/** The store's keys, spelled out as the README documents them (not imported from src: the test checks the layout). */
const keysOf = (prefix: string) => ({
  checkpoint: (id: string) => `${prefix}|c|${id}`,
  execution: (e: string) => `${prefix}|x|${e}`,
  record: (e: string) => `${prefix}|r|${e}`,
  writes: (id: string) => `${prefix}|w|${id}`,
  blobs: (e: string) => `${prefix}|b|${e}`,
  blobCounts: (e: string) => `${prefix}|bc|${e}`,
  blobRefs: (e: string) => `${prefix}|br|${e}`,
  status: (st: string) => `${prefix}|i|${st}`,
  executions: `${prefix}|executions`,
  due: `${prefix}|due`,
  staging: (token: string) => `${prefix}|s|${token}`
})
const store = CheckpointStore.CheckpointStore
const STATUSES = ["pending", "running", "interrupted", "sleeping", "done", "failed"]

/** Every key under `prefix` (tests only: the prefix is unique to one test). */
const scanPrefix = (prefix: string) =>
  Effect.promise(async () => {
    const found: Array<string> = []
    let cursor = "0"
    do {
      const [next, keys] = await admin.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000)
      cursor = next
      found.push(...keys)
    } while (cursor !== "0")
    return found.sort()
  })

/** How long the store's staging keys live when their save never ran its script (see the store's docs). */
const STAGING_TTL_MS = 60_000

/**
 * Prefixes of fault tests, where a save cut off between its staging `SET` and its script may leave a
 * staging key behind: there, such keys are allowed if they expire within {@link STAGING_TTL_MS}.
 */
const mayLeaveStaging = new Set<string>()

/** The staging keys under `prefix`, with their remaining time to live (ms). */
const stagingKeys = (prefix: string) =>
  Effect.flatMap(scanPrefix(keysOf(prefix).staging("")), (keys) =>
    Effect.promise(() => Promise.all(keys.map(async (key) => ({ key, pttl: await admin.pttl(key) })))))

/** Asserts that every staging key under `prefix` expires, and within the staging ttl. */
const stagingKeysExpire = (prefix: string) =>
  Effect.map(stagingKeys(prefix), (staging) => {
    for (const { key, pttl } of staging) {
      expect(pttl, key).toBeGreaterThan(0)
      expect(pttl, key).toBeLessThanOrEqual(STAGING_TTL_MS)
    }
    return staging.length
  })

/** Removes a prefix's keys through its own index sets (and nothing else), 500 executions a round trip. */
const removeByIndex = (prefix: string) =>
  Effect.promise(async () => {
    const k = keysOf(prefix)
    const executions = await admin.zrange(k.executions, 0, -1)
    for (let i = 0; i < executions.length; i += 500) {
      const chunk = executions.slice(i, i + 500)
      const read = admin.pipeline()
      for (const e of chunk) read.zrange(k.execution(e), 0, -1)
      const members = (await read.exec()) ?? []
      const del = admin.pipeline()
      chunk.forEach((e, j) => {
        const ids = (members[j]?.[1] ?? []) as Array<string>
        if (ids.length > 0) del.del(...ids.map(k.checkpoint), ...ids.map(k.writes))
        del.del(k.execution(e), k.record(e), k.blobs(e), k.blobCounts(e), k.blobRefs(e))
      })
      await del.exec()
    }
    await admin.del(k.executions, k.due, ...STATUSES.map(k.status))
  })

/** Removes a prefix's keys through its own index sets, then checks that nothing is left. */
const cleanup = (prefix: string) =>
  Effect.gen(function*() {
    yield* removeByIndex(prefix)
    if (mayLeaveStaging.delete(prefix)) {
      yield* stagingKeysExpire(prefix)
      const staging = yield* scanPrefix(keysOf(prefix).staging(""))
      if (staging.length > 0) yield* Effect.promise(() => admin.del(...staging))
    }
    const left = yield* scanPrefix(prefix)
    if (left.length > 0) {
      yield* Effect.promise(() => admin.del(...left))
      return yield* Effect.dieMessage(`keys left outside the store's indexes under ${prefix}: ${left.slice(0, 10).join(", ")}`)
    }
  })

/** A unique prefix, cleaned up when the scope closes. */
const ownedPrefix = Effect.acquireRelease(
  Effect.sync(() => `ec-test:redis:${randomUUID()}:`),
  (prefix) => Effect.orDie(cleanup(prefix))
)

const kitFor = (prefix: string) =>
  Layer.succeed(StoreTestKit, {
    corrupt: (cp) => Effect.promise(() => admin.set(keysOf(prefix).checkpoint(cp.id), `{"id":${JSON.stringify(cp.id)},"state":`)),
    blobStats: (executionId) =>
      Effect.map(Effect.promise(() => admin.hgetall(keysOf(prefix).blobs(executionId))), (blobs) => {
        const values = Object.values(blobs)
        return { count: values.length, bytes: values.reduce((n, v) => n + Buffer.byteLength(v), 0) }
      })
  })

/** A fresh store on a fresh prefix, plus its corruption kit. */
const redisUnderTest = Layer.unwrapScoped(
  Effect.map(ownedPrefix, (prefix) => Layer.merge(RedisStore.layer({ url: TEST_URL, prefix }), kitFor(prefix)))
)

conformance("Redis", redisUnderTest, { blobs: true })

/** Runs `body` with a store on its own prefix (and extra layer options). */
const withStore = <A, E>(
  body: (prefix: string) => Effect.Effect<A, E, CheckpointStore.CheckpointStore>,
  options: Partial<RedisStore.StoreOptions & RedisStore.ClientOptions> = {}
) =>
  Effect.scoped(Effect.flatMap(ownedPrefix, (prefix) =>
    body(prefix).pipe(Effect.provide(RedisStore.layer({ url: TEST_URL, prefix, ...options })))))

/** A store on `prefix`, built in the current scope. */
const buildStore = (prefix: string, options: Partial<RedisStore.Options> = {}) =>
  Effect.map(Layer.build(RedisStore.layer({ url: TEST_URL, prefix, ...options })), (ctx) => Context.get(ctx, store))

const SECRET = "s3cr3t-Pa55word"
const expectNoSecret = (error: unknown) => {
  expect(String(error)).not.toContain(SECRET)
  expect(JSON.stringify(error)).not.toContain(SECRET)
  expect((error as { message?: string }).message ?? "").not.toContain(SECRET)
  expect(JSON.stringify((error as { cause?: unknown }).cause ?? null)).not.toContain(SECRET)
}

const idsOf = (page: CheckpointStore.ExecutionPage) => page.executions.map((r) => r.executionId)

describe("RedisStore", () => {
  it.live("lays keys out as documented: document, version index, record, writes, indexes; no expiry without ttl", () =>
    withStore((prefix) =>
      Effect.gen(function*() {
        const s = yield* store
        const k = keysOf(prefix)
        const e = yield* freshExecution()
        const cps = yield* Effect.forEach([12, 3, 100], (v) => mk(e, v, { timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, v)) }))
        for (const cp of cps) yield* s.save(cp)
        yield* s.saveWrites(cps[2]!.id, "task-0", [{ key: "update", value: { n: 1 } }])
        const r = yield* Effect.promise(async () => ({
          doc: await admin.get(k.checkpoint(cps[0]!.id)),
          index: await admin.zrange(k.execution(e), 0, -1, "WITHSCORES"),
          record: await admin.hgetall(k.record(e)),
          writes: await admin.hgetall(k.writes(cps[2]!.id)),
          executions: await admin.zscore(k.executions, e),
          pending: await admin.zscore(k.status("pending"), e),
          due: await admin.zscore(k.due, e),
          ttls: await Promise.all(
            [k.checkpoint(cps[0]!.id), k.execution(e), k.record(e), k.writes(cps[2]!.id), k.executions].map((x) => admin.pttl(x))
          )
        }))
        expect(JSON.parse(r.doc!)).toMatchObject({ id: cps[0]!.id, executionId: e, version: 12 })
        expect(r.index).toEqual([cps[1]!.id, "3", cps[0]!.id, "12", cps[2]!.id, "100"])
        expect(r.record).toEqual({ v: "100", id: cps[2]!.id, at: String(cps[2]!.timestamp.getTime()), st: "pending", n: "0" })
        expect(r.writes).toEqual({ "#": "1", "task-0|update": "1:{\"n\":1}" })
        expect(Number(r.executions)).toBe(cps[2]!.timestamp.getTime())
        expect(Number(r.pending)).toBe(cps[2]!.timestamp.getTime())
        expect(r.due).not.toBeNull()
        expect(r.ttls).toEqual([-1, -1, -1, -1, -1])
        // A finished execution leaves the due set and moves to the done set.
        yield* s.save(yield* mk(e, 101, { next: [] }))
        expect(yield* Effect.promise(() => admin.zscore(k.due, e))).toBeNull()
        expect(yield* Effect.promise(() => admin.zscore(k.status("pending"), e))).toBeNull()
        expect(yield* Effect.promise(() => admin.zscore(k.status("done"), e))).not.toBeNull()
      })
    ))

  it.live("a prefix outside [A-Za-z0-9_:.-]{0,64} fails the layer with InvalidIdentifier before any connection", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      for (const prefix of ["../", "a*", "__proto__", "'", "\"q\"", "a|b", "a b", "x".repeat(65), "é"]) {
        const error = yield* Effect.flip(Effect.provide(store, RedisStore.layer({ url: `redis://127.0.0.1:${port}`, prefix })))
        expect(error, prefix).toMatchObject({ _tag: "InvalidIdentifier", kind: "prefix" })
      }
    }))

  it.live("nested prefixes are separate stores: deleting, clearing and claiming on one never touches the other", () =>
    Effect.scoped(Effect.gen(function*() {
      const root = yield* ownedPrefix
      const nested = `${root}checkpoint:`
      yield* Effect.addFinalizer(() => Effect.orDie(cleanup(nested)))
      const a = yield* buildStore(root)
      const b = yield* buildStore(nested)
      const e = "e" as Checkpoint.ExecutionId
      const [a1, b1] = [yield* mk(e, 1), yield* mk(e, 1)]
      yield* a.save(a1)
      yield* b.save(b1)
      yield* a.delete("execution:e:checkpoints" as Checkpoint.CheckpointId)
      yield* a.clear(e)
      expect((yield* b.list(e)).map(view)).toEqual([view(b1)])
      expect(yield* a.list(e)).toEqual([])
      yield* a.save(yield* mk(e, 1))
      expect((yield* a.claim({ owner: "w", ttl: "1 minute", limit: 10 })).map((r) => r.executionId)).toEqual([e])
      expect((yield* b.getExecution(e)).pipe(Option.map((r) => r.status))).toEqual(Option.some("pending"))
      expect(idsOf(yield* b.listExecutions())).toEqual([e])
    })))

  it.live("a corrupt record fails getExecution and listExecutions with CheckpointDecodeError naming the execution", () =>
    withStore((prefix) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        yield* s.save(yield* mk(e, 1))
        yield* Effect.promise(() => admin.hset(keysOf(prefix).record(e), "st", "bogus"))
        const one = yield* Effect.flip(s.getExecution(e))
        expect(one).toMatchObject({ _tag: "CheckpointDecodeError" })
        expect(one.message).toContain(e)
        expect((yield* Effect.flip(s.listExecutions()))._tag).toBe("CheckpointDecodeError")
        // A value of the wrong type at a checkpoint's key is a decode error too.
        const cp = yield* mk(e, 2)
        yield* s.save(cp)
        yield* Effect.promise(() => admin.del(keysOf(prefix).checkpoint(cp.id)).then(() => admin.rpush(keysOf(prefix).checkpoint(cp.id), "x")))
        expect(yield* Effect.flip(s.load(cp.id))).toMatchObject({ _tag: "CheckpointDecodeError", id: cp.id })
        yield* s.clear(e)
      })
    ))

  it.live("two connections claiming at once: 20 rounds, no execution claimed twice", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* ownedPrefix
      const a = yield* buildStore(prefix, { connectionName: "ec-test-claim-a" })
      const b = yield* buildStore(prefix, { connectionName: "ec-test-claim-b" })
      for (let round = 0; round < 20; round++) {
        const executions = yield* Effect.forEach(Array.from({ length: 15 }), () => freshExecution(`r${round}`))
        yield* a.saveMany(yield* Effect.forEach(executions, (e) => mk(e, 1)))
        const [x, y] = yield* Effect.all([
          a.claim({ owner: "owner-a", ttl: "1 minute", limit: 10 }),
          b.claim({ owner: "owner-b", ttl: "1 minute", limit: 10 })
        ], { concurrency: 2 })
        const ids = [...x, ...y].map((r) => r.executionId)
        expect(new Set(ids).size, `round ${round}`).toBe(ids.length)
        expect(ids.length, `round ${round}`).toBe(15)
        for (const r of [...x, ...y]) expect(r.attempts).toBe(1)
      }
    })))

  it.live("250 executions: listExecutions pages (limit 7) are complete and without duplicates while another connection saves", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* ownedPrefix
      const a = yield* buildStore(prefix)
      const b = yield* buildStore(prefix)
      const base = Date.UTC(2026, 0, 1)
      const all = yield* Effect.forEach(Array.from({ length: 250 }, (_, i) => i), (i) =>
        Effect.map(freshExecution(`p${i}`), (id) => ({ id, at: base + (i % 50) * 1000 })))
      yield* a.saveMany(yield* Effect.forEach(all, ({ at, id }) => mk(id, 1, { timestamp: new Date(at) })))
      // Newer executions appear while the walk goes on: they sort before the cursor, so the walk never sees them twice.
      const seen: Array<string> = []
      let cursor: string | undefined
      let page = 0
      do {
        const result = yield* b.listExecutions(cursor === undefined ? { limit: 7 } : { limit: 7, cursor })
        seen.push(...idsOf(result))
        cursor = result.cursor
        yield* a.save(yield* mk(yield* freshExecution(`new${page++}`), 1, { timestamp: new Date(base + 3_600_000) }))
      } while (cursor !== undefined)
      expect(new Set(seen).size).toBe(seen.length)
      expect([...seen].sort()).toEqual(all.map((x) => x.id).sort())
    })))

  it.live("large documents: staged saves round-trip, and leave no staging key", () =>
    withStore((prefix) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const big = yield* mk(e, 1, { state: { text: "L".repeat(300_000), list: Array.from({ length: 5000 }, (_, i) => i) } })
        const batch = yield* Effect.forEach([2, 3], (v) => mk(e, v, { state: { text: `${v}`.repeat(40_000) } }))
        yield* s.save(big)
        yield* s.saveMany(batch)
        expect((yield* s.list(e)).map(view)).toEqual([big, ...batch].map(view))
        // A refused large save leaves nothing either.
        expect((yield* Effect.flip(s.save(yield* mk(e, 2, { state: { text: "Z".repeat(50_000) } }))))._tag).toBe("CheckpointConflict")
        const staging = yield* scanPrefix(keysOf(prefix).staging(""))
        expect(staging).toEqual([])
      }), { largeValues: false }))

  it.live("large values are stored once per execution and removed with the last checkpoint that references them", () =>
    withStore((prefix) =>
      Effect.gen(function*() {
        const s = yield* store
        const k = keysOf(prefix)
        const e = yield* freshExecution()
        const doc = "D".repeat(20_000)
        const cps = yield* Effect.forEach([1, 2, 3], (v) => mk(e, v, { state: { doc, v } }))
        for (const cp of cps) yield* s.save(cp)
        const blobs = yield* Effect.promise(() => admin.hgetall(k.blobs(e)))
        expect(Object.keys(blobs)).toHaveLength(1)
        expect(Object.values(blobs)[0]).toBe(JSON.stringify(doc))
        expect((yield* s.list(e)).map(view)).toEqual(cps.map(view))
        expect(yield* s.prune(e, 1)).toBe(2)
        expect(Object.keys(yield* Effect.promise(() => admin.hgetall(k.blobs(e))))).toHaveLength(1)
        yield* s.delete(cps[2]!.id)
        expect(yield* Effect.promise(() => admin.exists(k.blobs(e), k.blobCounts(e), k.blobRefs(e)))).toBe(0)
      })
    ))

  it.live("ttl: every key of an execution expires — checkpoints, record, writes, indexes — and nothing is left", () =>
    withStore((prefix) =>
      Effect.gen(function*() {
        const s = yield* store
        const k = keysOf(prefix)
        const e = yield* freshExecution()
        const cp = yield* mk(e, 1, { state: { doc: "T".repeat(10_000) } })
        yield* s.save(cp, { execution: { lease: { owner: "w", ttl: "1 minute" } } })
        yield* s.saveWrites(cp.id, "t", [{ key: "k", value: 1 }])
        const ttls = yield* Effect.promise(() =>
          Promise.all([k.checkpoint(cp.id), k.execution(e), k.record(e), k.writes(cp.id), k.blobs(e), k.executions, k.due].map((x) => admin.pttl(x)))
        )
        for (const t of ttls) {
          expect(t).toBeGreaterThan(0)
          expect(t).toBeLessThanOrEqual(1500)
        }
        expect(s.ttl).toEqual(Option.some(Duration.millis(1500)))
        yield* Effect.sleep("1700 millis")
        expect(yield* s.getExecution(e)).toEqual(Option.none())
        expect(yield* s.list(e)).toEqual([])
        expect(yield* s.listWrites(cp.id)).toEqual([])
        expect((yield* s.listExecutions()).executions).toEqual([])
        expect(yield* scanPrefix(prefix)).toEqual([])
      }), { ttl: "1500 millis" }))

  it.live("a ttl that is not a duration fails the layer with InvalidOption", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.provide(store, RedisStore.layer({ url: TEST_URL, ttl: "forever" as Duration.DurationInput })))
      expect(error).toMatchObject({ _tag: "InvalidOption", option: "ttl" })
    }))
})

describe("RedisStore faults", () => {
  it.live("a dead server fails the layer with CheckpointStoreError, without the password", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const layers = [
        RedisStore.layer({ url: `redis://someone:${SECRET}@127.0.0.1:${port}/0` }),
        RedisStore.layer({ url: Redacted.make(`redis://:${encodeURIComponent(SECRET)}@127.0.0.1:${port}`) }),
        RedisStore.layer({ host: "127.0.0.1", port, password: Redacted.make(SECRET) })
      ]
      for (const l of layers) {
        const error = yield* Effect.flip(Effect.provide(store, l))
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "redis", operation: "connect" })
        expectNoSecret(error)
      }
    }))

  it.live("through a proxy: a stall fails the operation typed after commandTimeout; a server down fails fast; both recover", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* ownedPrefix
      const proxy = yield* redisProxy(target)
      const s = yield* buildStore(prefix, { url: `redis://127.0.0.1:${proxy.port}/0`, commandTimeout: "300 millis" })
      const e = yield* freshExecution()
      yield* s.save(yield* mk(e, 1))
      proxy.stall()
      const stalled = yield* Effect.flip(s.save(yield* mk(e, 2)))
      expect(stalled).toMatchObject({ _tag: "CheckpointStoreError", backend: "redis" })
      expectNoSecret(stalled)
      proxy.resume()
      proxy.cut()
      yield* proxy.down()
      const down = yield* Effect.flip(s.list(e))
      expect(down).toMatchObject({ _tag: "CheckpointStoreError", backend: "redis" })
      expectNoSecret(down)
      yield* proxy.up()
      const v3 = yield* mk(e, 3)
      yield* s.save(v3).pipe(Effect.retry({ times: 50, while: (err) => err._tag === "CheckpointStoreError" }))
      // The stalled save failed for its caller; its bytes were sent on when the proxy resumed, so it may have landed (whole).
      const versions = (yield* s.list(e)).map((c) => c.version)
      expect([[1, 3], [1, 2, 3]]).toContainEqual(versions)
    })))

  it.live("a private server killed and restarted: the store reconnects, reloads its scripts, and acknowledged saves survive", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* privateRedis
      const s = yield* Effect.map(
        Layer.build(RedisStore.layer({ url: `redis://127.0.0.1:${server.port}/0`, prefix: "crash:", commandTimeout: "2 seconds" })),
        (ctx) => Context.get(ctx, store)
      )
      const e = yield* freshExecution()
      const cps = yield* Effect.forEach([1, 2, 3], (v) => mk(e, v))
      yield* s.saveMany(cps)
      yield* s.saveWrites(cps[0]!.id, "t", [{ key: "k", value: 1 }])
      yield* server.crash()
      expect((yield* Effect.flip(s.latest(e)))._tag).toBe("CheckpointStoreError")
      yield* server.start()
      // The server lost its script cache: the next script call loads it again.
      const v4 = yield* mk(e, 4)
      yield* s.save(v4).pipe(Effect.retry({ times: 30, while: (err) => err._tag === "CheckpointStoreError" }))
      expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2, 3, 4])
      expect(yield* s.listWrites(cps[0]!.id)).toEqual([{ taskId: "t", key: "k", value: 1 }])
      expect((yield* s.claim({ owner: "w", ttl: "1 minute", limit: 5 })).map((r) => r.executionId)).toEqual([e])
    })))
})

describe("RedisStore layers", () => {
  it.live("layerConfig reads REDIS_ADDR, REDIS_DB, REDIS_PREFIX and REDIS_TTL; a bad value fails with the ConfigError itself", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* ownedPrefix
      const withEnv = (env: Record<string, string>) =>
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
      const e = yield* freshExecution()
      const cp = yield* mk(e, 1)
      yield* Effect.flatMap(store, (s) => s.save(cp)).pipe(
        Effect.provide(RedisStore.layerConfig),
        withEnv({ REDIS_ADDR: `${target.host}:${target.port}`, REDIS_DB: "0", REDIS_PREFIX: prefix, REDIS_TTL: "1 hour" })
      )
      const pttl = yield* Effect.promise(() => admin.pttl(keysOf(prefix).checkpoint(cp.id)))
      expect(pttl).toBeGreaterThan(3_500_000)
      for (const env of [{ REDIS_DB: "zero" }, { REDIS_TTL: "soon" }, { REDIS_ADDR: "redis://[bad" }]) {
        const error = yield* Effect.flip(Effect.provide(store, RedisStore.layerConfig).pipe(withEnv(env)))
        expect(ConfigError.isConfigError(error), JSON.stringify(env)).toBe(true)
      }
    })))

  it.live("layerClient runs on the app's client, honours its keyPrefix, and never closes it", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* ownedPrefix
      const client = new Redis(TEST_URL, { keyPrefix: `${prefix}app:`, maxRetriesPerRequest: 1 })
      yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
      const e = yield* freshExecution()
      const cp = yield* mk(e, 1)
      yield* Effect.flatMap(store, (s) => Effect.zipRight(s.save(cp), s.list(e))).pipe(
        Effect.provide(RedisStore.layerClient(client, { prefix: "inner" }))
      )
      expect(yield* Effect.promise(() => admin.exists(`${prefix}app:inner|c|${cp.id}`))).toBe(1)
      expect(yield* Effect.promise(() => admin.hget(`${prefix}app:inner|r|${e}`, "id"))).toBe(cp.id)
      expect(client.status).toBe("ready")
      yield* Effect.promise(() => client.del(`inner|c|${cp.id}`, `inner|x|${e}`, `inner|r|${e}`, "inner|executions", "inner|due", "inner|i|pending"))
    })))
})

describe("RedisStore migration from the 0.1.0 layout", () => {
  const oldKeysOf = (prefix: string) => ({
    checkpoint: (id: string) => `${prefix}checkpoint:${id}`,
    execution: (e: string) => `${prefix}execution:${e}:checkpoints`,
    executions: `${prefix}executions`
  })

  it.live("a 0.1.0 data set is migrated when the store is built: listed, loaded, with records; foreign keys stay; a second build changes nothing", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* ownedPrefix
      const old = oldKeysOf(prefix)
      const paused = yield* freshExecution("paused")
      const finished = yield* freshExecution("finished")
      const cps = [
        yield* mk(paused, 1),
        yield* mk(paused, 2),
        yield* mk(finished, 1),
        yield* mk(finished, 2, { next: [] })
      ]
      const savedAt = Date.UTC(2025, 5, 1)
      const foreign = yield* mk(paused, 3)
      yield* Effect.promise(async () => {
        for (const cp of cps) {
          const { document } = await Effect.runPromise(CheckpointBackend.encode(cp))
          await admin.set(old.checkpoint(cp.id), document)
          await admin.zadd(old.execution(cp.executionId), cp.version, cp.id)
          await admin.zadd(old.executions, savedAt, cp.executionId)
        }
        // An index entry whose document says it belongs elsewhere stays where it is.
        await admin.set(old.checkpoint(foreign.id), JSON.stringify({ id: foreign.id, executionId: "someone-else" }))
        await admin.zadd(old.execution(paused), 3, foreign.id)
      })
      const s = yield* buildStore(prefix)
      expect((yield* s.list(paused)).map(view)).toEqual(cps.slice(0, 2).map(view))
      expect((yield* s.list(finished)).map(view)).toEqual(cps.slice(2).map(view))
      expect(yield* s.getExecution(paused)).toEqual(Option.some(expect.objectContaining({
        latestVersion: 2,
        latestCheckpointId: cps[1]!.id,
        status: "interrupted",
        updatedAt: new Date(savedAt),
        attempts: 0
      })))
      expect((yield* s.getExecution(finished)).pipe(Option.map((r) => r.status))).toEqual(Option.some("done"))
      expect([...idsOf(yield* s.listExecutions())].sort()).toEqual([finished, paused].sort())
      // Interrupted executions are never claimed by surprise.
      expect(yield* s.claim({ owner: "w", ttl: "1 minute", limit: 10 })).toEqual([])
      // The foreign entry stayed in the old layout, untouched; the old executions set is gone.
      expect(yield* Effect.promise(() => admin.exists(old.checkpoint(foreign.id), old.execution(paused), old.executions))).toBe(2)
      yield* buildStore(prefix)
      expect((yield* s.list(paused)).map((c) => c.version)).toEqual([1, 2])
      yield* Effect.promise(() => admin.del(old.checkpoint(foreign.id), old.execution(paused)))
    })))
})

describe("examples/redis.ts", () => {
  it.live("runs: worker A crashes in step 2, worker B takes over and finishes, and clears what it made", () =>
    Effect.sync(() => {
      const out = execFileSync("npx", ["tsx", "examples/redis.ts"], {
        encoding: "utf8",
        env: { ...process.env, REDIS_ADDR: TEST_URL },
        timeout: 60_000
      })
      expect(out).toContain("Final step:    3")
      expect(out).toMatch(/Cleared: 0 checkpoints left/)
    }), 90_000)
})
