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
import { ConfigProvider, Context, Duration, Effect, Either, FastCheck, Fiber, Layer, Option, Redacted, Schedule, Schema } from "effect"
import { Redis } from "ioredis"
import { execFileSync } from "node:child_process"
import { randomUUID } from "node:crypto"
import * as Checkpoint from "../src/Checkpoint.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as Graph from "../src/Graph.js"
import { isValidId } from "../src/internal/identifier.js"
import * as MemoryStore from "../src/layers/Memory.js"
import * as RedisStore from "../src/layers/Redis.js"
import { LIST_PAGE, LIST_PAGE_BYTES, SCRIPTS } from "../src/internal/redisScripts.js"
import { conformance, freshExecution, hostileIds, mk, StoreTestKit, view } from "../src/testing.js"
import { closedPort, redisProxy } from "./fixtures/redis-proxy.js"
import { privateRedis } from "./fixtures/redis-server.js"

const TEST_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/0"
const target = (() => {
  const u = new URL(TEST_URL)
  return { host: u.hostname || "127.0.0.1", port: Number(u.port || 6379), db: Number(u.pathname.slice(1) || 0) }
})()

/** Our own connection for looking behind the store's back (and cleaning up). */
const admin = new Redis(TEST_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectionName: "ec-test-admin" })
afterAll(() => admin.quit())

const store = CheckpointStore.CheckpointStore
/** The store's keys, spelled out as the README documents them (not imported from src: the test checks the layout). */
const keysOf = (prefix: string) => ({
  checkpoint: (id: string) => `${prefix}|c|${id}`,
  execution: (e: string) => `${prefix}|x|${e}`,
  executions: `${prefix}|executions`,
  staging: (token: string) => `${prefix}|s|${token}`
})

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
        if (ids.length > 0) del.del(...ids.map(k.checkpoint))
        del.del(k.execution(e))
      })
      await del.exec()
    }
    await admin.del(k.executions)
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
    corrupt: (cp) => Effect.promise(() => admin.set(keysOf(prefix).checkpoint(cp.id), `{"id":${JSON.stringify(cp.id)},"state":`))
  })

/** A fresh store on a fresh prefix, plus its corruption kit. */
const redisUnderTest = Layer.unwrapScoped(
  Effect.map(ownedPrefix, (prefix) => Layer.merge(RedisStore.layer({ url: TEST_URL, prefix }), kitFor(prefix)))
)

conformance("Redis", redisUnderTest)

/** Runs `body` with a store on its own prefix (and extra layer options). */
const withStore = <A, E>(
  body: (prefix: string) => Effect.Effect<A, E, CheckpointStore.CheckpointStore>,
  options: Partial<RedisStore.StoreOptions & RedisStore.ClientOptions> = {}
) =>
  Effect.scoped(Effect.flatMap(ownedPrefix, (prefix) =>
    body(prefix).pipe(Effect.provide(RedisStore.layer({ url: TEST_URL, prefix, ...options })))))

/** The id of the server connection named `name`. */
const clientIdByName = (name: string) =>
  Effect.promise(async () => {
    const list = String(await admin.call("CLIENT", "LIST"))
    const line = list.split("\n").find((l) => l.includes(` name=${name} `))
    const id = line === undefined ? undefined : /^id=(\d+)/.exec(line)?.[1]
    return id
  })

/** Kills the store's own connection (found by its unique name, waiting for it to be up), and no other. */
const killClient = (name: string) =>
  Effect.gen(function*() {
    let id = yield* clientIdByName(name)
    for (let tries = 0; id === undefined && tries < 100; tries++) {
      yield* Effect.sleep(Duration.millis(20))
      id = yield* clientIdByName(name)
    }
    expect(id, `connection ${name}`).toBeDefined()
    yield* Effect.promise(() => admin.call("CLIENT", "KILL", "ID", id!))
  })

/** Asserts that every checkpoint is either wholly stored (document and index entry) or wholly absent. */
const wholeOrAbsent = (prefix: string, cps: ReadonlyArray<Checkpoint.Checkpoint>) =>
  Effect.promise(async () => {
    const k = keysOf(prefix)
    const present: Array<boolean> = []
    for (const cp of cps) {
      // Both in one MULTI: one snapshot, even while a late save is landing.
      const replies = await admin.multi().exists(k.checkpoint(cp.id)).zscore(k.execution(cp.executionId), cp.id).exec()
      const doc = replies?.[0]?.[1]
      const score = replies?.[1]?.[1] as string | null | undefined
      expect(doc === 1, `checkpoint ${cp.version}: document and index agree`).toBe(score !== null)
      if (score !== null) expect(Number(score)).toBe(cp.version)
      present.push(doc === 1)
    }
    return present
  })

/** The commands in a stream of RESP requests (`*N\r\n$len\r\narg\r\n…`), name lower-cased; stops at a partial one. */
const commandsIn = (bytes: Buffer): Array<Array<string>> => {
  const commands: Array<Array<string>> = []
  let at = 0
  const line = () => {
    const end = bytes.indexOf("\r\n", at)
    if (end < 0) return undefined
    const text = bytes.subarray(at, end).toString()
    at = end + 2
    return text
  }
  while (at < bytes.length) {
    const header = line()
    if (header === undefined || !header.startsWith("*")) break
    const args: Array<string> = []
    for (let i = 0; i < Number(header.slice(1)); i++) {
      const len = line()
      if (len === undefined || !len.startsWith("$") || at + Number(len.slice(1)) + 2 > bytes.length) return commands
      args.push(bytes.subarray(at, at + Number(len.slice(1))).toString())
      at += Number(len.slice(1)) + 2
    }
    commands.push([args[0]!.toLowerCase(), ...args.slice(1)])
  }
  return commands
}

/** The command names in a stream of RESP requests, lower-cased. */
const commandNames = (bytes: Buffer): Array<string> => commandsIn(bytes).map((c) => c[0]!)

/** A checkpoint whose stored document is larger than the store's staging threshold (16 K characters). */
const mkLarge = (executionId: string, version: number, size = 40_000, tag: unknown = null) =>
  mk(executionId, version, { state: { blob: "L".repeat(size), version, tag } })

/** Waits until `ready()` holds (polling every 5 ms, at most 3 s). */
const eventually = (ready: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let tries = 0; tries < 600 && !ready(); tries++) yield* Effect.sleep(Duration.millis(5))
    expect(ready(), what).toBe(true)
  })

const SECRET = "s3cr3t-Pa55word"
const expectNoSecret = (error: unknown) => {
  expect(String(error)).not.toContain(SECRET)
  expect(JSON.stringify(error)).not.toContain(SECRET)
  expect((error as { message?: string }).message ?? "").not.toContain(SECRET)
  expect(JSON.stringify((error as { cause?: unknown }).cause ?? null)).not.toContain(SECRET)
}

describe("RedisStore", () => {
  it.live("lays keys out as documented: a document, a version-scored index, an executions set; no expiry without ttl", () =>
    withStore((prefix) =>
      Effect.gen(function*() {
        const s = yield* store
        const k = keysOf(prefix)
        const e = yield* freshExecution()
        const before = Date.now()
        const cps = yield* Effect.forEach([12, 3, 100], (v) => mk(e, v))
        for (const cp of cps) yield* s.save(cp)
        const doc = yield* Effect.promise(() => admin.get(k.checkpoint(cps[0]!.id)))
        expect(JSON.parse(doc!)).toMatchObject({ id: cps[0]!.id, executionId: e, version: 12 })
        expect(yield* Effect.promise(() => admin.type(k.execution(e)))).toBe("zset")
        // Ordered by version as numbers (3 < 12 < 100), not by id or text.
        const indexed = yield* Effect.promise(() => admin.zrange(k.execution(e), 0, -1, "WITHSCORES"))
        expect(indexed).toEqual([cps[1]!.id, "3", cps[0]!.id, "12", cps[2]!.id, "100"])
        const updated = Number(yield* Effect.promise(() => admin.zscore(k.executions, e)))
        expect(updated).toBeGreaterThanOrEqual(before - 1000)
        expect(updated).toBeLessThanOrEqual(Date.now() + 1000)
        for (const key of [k.checkpoint(cps[0]!.id), k.execution(e), k.executions]) {
          expect(yield* Effect.promise(() => admin.pttl(key))).toBe(-1)
        }
        expect(yield* scanPrefix(prefix)).toEqual(
          [...cps.map((c) => k.checkpoint(c.id)), k.execution(e), k.executions].sort()
        )
        // The index goes away with the execution's last checkpoint.
        yield* s.clear(e)
        expect(yield* scanPrefix(prefix)).toEqual([])
      })
    ))

  it.live("a checkpoint whose key vanished is skipped, removed from the index, and its version can be saved again", () =>
    withStore((prefix) =>
      Effect.gen(function*() {
        const s = yield* store
        const k = keysOf(prefix)
        const e = yield* freshExecution()
        const other = yield* freshExecution("other")
        const cps = yield* Effect.forEach([1, 2, 3, 4, 5], (v) => mk(e, v))
        yield* s.saveMany([...cps, yield* mk(other, 1)])
        // Keys vanish behind the store's back (as they do when a ttl expires).
        yield* Effect.promise(() => admin.del(k.checkpoint(cps[1]!.id), k.checkpoint(cps[4]!.id)))
        // A page still fills up past a vanished member.
        expect((yield* s.list(e, { limit: 2 })).map((c) => c.version)).toEqual([1, 3])
        expect(Option.map(yield* s.latest(e), (c) => c.version)).toEqual(Option.some(4))
        expect(yield* Effect.promise(() => admin.zrange(k.execution(e), 0, -1))).toEqual(
          [cps[0]!.id, cps[2]!.id, cps[3]!.id]
        )
        expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 3, 4])
        expect((yield* Effect.flip(s.load(cps[1]!.id)))._tag).toBe("CheckpointNotFound")
        // Its slot is free again.
        yield* s.save(yield* mk(e, 2))
        yield* Effect.promise(() => admin.zadd(k.execution(e), 5, cps[4]!.id)) // a stale entry at version 5
        yield* s.save(yield* mk(e, 5))
        expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2, 3, 4, 5])
        // An execution whose checkpoints all vanished drops out of listExecutions and of the executions set.
        const ids = yield* Effect.promise(() => admin.zrange(k.execution(e), 0, -1))
        yield* Effect.promise(() => admin.del(...ids.map(k.checkpoint)))
        expect((yield* s.listExecutions()).map((x) => x.executionId)).toEqual([other])
        expect(yield* Effect.promise(() => admin.zrange(k.executions, 0, -1))).toEqual([other])
        expect(yield* Effect.promise(() => admin.exists(k.execution(e)))).toBe(0)
        expect(yield* s.list(e)).toEqual([])
        // prune counts only the checkpoints it really removed.
        const o = yield* Effect.forEach([2, 3, 4], (v) => mk(other, v))
        yield* s.saveMany(o)
        yield* Effect.promise(() => admin.del(k.checkpoint(o[2]!.id)))
        expect(yield* s.prune(other, 1)).toBe(2)
        expect((yield* s.list(other)).map((c) => c.version)).toEqual([3])
      })
    ))

  it.live("values that are not checkpoints fail with CheckpointDecodeError naming the checkpoint", () =>
    withStore((prefix) =>
      Effect.gen(function*() {
        const s = yield* store
        const k = keysOf(prefix)
        const e = yield* freshExecution()
        const other = yield* freshExecution("other")
        const a = yield* mk(e, 1)
        const b = yield* mk(other, 1)
        yield* s.saveMany([a, b])
        const key = k.checkpoint(a.id)
        const expectDecodeError = (what: string) =>
          Effect.gen(function*() {
            for (const op of [s.load(a.id), s.list(e), s.latest(e), s.listExecutions()]) {
              const error = yield* Effect.flip(op as Effect.Effect<unknown, unknown>)
              expect(error, what).toMatchObject({ _tag: "CheckpointDecodeError", id: a.id })
            }
          })
        for (const [what, value] of [["not JSON", "not json {"], ["a foreign shape", "{\"hello\":\"world\"}"], ["empty", ""]]) {
          yield* Effect.promise(() => admin.set(key, value!))
          yield* expectDecodeError(what!)
        }
        // Another checkpoint's document copied over this one's.
        yield* Effect.promise(() => admin.copy(k.checkpoint(b.id), key, "REPLACE"))
        yield* expectDecodeError("another checkpoint's document")
        // The right document, indexed at the wrong version.
        yield* Effect.promise(() => admin.del(key))
        yield* s.save(a)
        yield* Effect.promise(() => admin.zadd(k.execution(e), 7, a.id))
        const misplaced = yield* Effect.flip(s.list(e))
        expect(misplaced).toMatchObject({ _tag: "CheckpointDecodeError", id: a.id })
        expect(misplaced.message).toContain("version 7")
        // A key of another type.
        yield* Effect.promise(() => admin.del(key).then(() => admin.hset(key, "state", "{}")))
        yield* expectDecodeError("a hash")
        // delete removes any of these, and the store goes on.
        yield* s.delete(a.id)
        expect(yield* s.list(e)).toEqual([])
        yield* s.save(yield* mk(e, 1))
        expect((yield* s.list(e)).length).toBe(1)
      })
    ))

  it.live("a prefix outside [A-Za-z0-9_:.-]{0,64} fails the layer with InvalidIdentifier before any connection", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      for (const prefix of ["*", "a*:", "p?", "[x]", "a b", "x".repeat(65), "é:", "__proto__", "a\nb", "{tag}"]) {
        const error = yield* Effect.flip(Effect.provide(store, RedisStore.layer({ host: "127.0.0.1", port, prefix })))
        expect(error, prefix).toMatchObject({ _tag: "InvalidIdentifier", kind: "prefix" })
        const overClient = yield* Effect.flip(Effect.provide(store, RedisStore.layerClient(admin, { prefix })))
        expect(overClient, prefix).toMatchObject({ _tag: "InvalidIdentifier", kind: "prefix" })
      }
    }))

  it.live("hostile ids never reach a key: nothing at all is written under the prefix", () =>
    withStore((prefix) =>
      Effect.gen(function*() {
        const s = yield* store
        const base = yield* mk(yield* freshExecution(), 1)
        for (const raw of hostileIds) {
          const id = raw as Checkpoint.CheckpointId
          const executionId = raw as Checkpoint.ExecutionId
          const attempts = [
            s.save(new Checkpoint.Checkpoint({ ...base, id }, true)),
            s.save(new Checkpoint.Checkpoint({ ...base, executionId }, true)),
            s.saveMany([base, new Checkpoint.Checkpoint({ ...base, id, version: 2 }, true)]),
            s.load(id),
            s.list(executionId),
            s.latest(executionId),
            s.delete(id),
            s.clear(executionId),
            s.prune(executionId, 0)
          ]
          for (const attempt of attempts) {
            expect((yield* Effect.flip(attempt as Effect.Effect<unknown, { _tag: string }>))._tag).toBe("InvalidIdentifier")
          }
        }
        expect(yield* scanPrefix(prefix)).toEqual([])
      })
    ))

  it.live("two prefixes are two stores; one prefix on two connections is one store with atomic conflicts", () =>
    Effect.scoped(Effect.gen(function*() {
      const p1 = yield* ownedPrefix
      const p2 = yield* ownedPrefix
      const s1 = Context.get(yield* Layer.build(RedisStore.layer({ url: TEST_URL, prefix: p1 })), store)
      const s1b = Context.get(yield* Layer.build(RedisStore.layer({ url: TEST_URL, prefix: p1 })), store)
      const s2 = Context.get(yield* Layer.build(RedisStore.layer({ url: TEST_URL, prefix: p2 })), store)
      const e = yield* freshExecution()
      const cp = yield* mk(e, 1)
      yield* s1.save(cp)
      expect(view(yield* s1b.load(cp.id))).toEqual(view(cp))
      expect((yield* Effect.flip(s2.load(cp.id)))._tag).toBe("CheckpointNotFound")
      yield* s2.save(cp) // the same checkpoint is new in another store
      expect((yield* s2.listExecutions()).map((x) => x.executionId)).toEqual([e])
      // Rival saves of one version from two connections: exactly one wins.
      const rivals = yield* Effect.forEach([s1, s1b, s1, s1b, s1, s1b], (s, i) =>
        Effect.either(Effect.flatMap(mk(e, 2, { state: i }), s.save)), { concurrency: "unbounded" })
      expect(rivals.filter(Either.isRight).length).toBe(1)
      expect(rivals.filter(Either.isLeft).every((r) => r.left._tag === "CheckpointConflict")).toBe(true)
      expect((yield* s1.list(e)).map((c) => c.version)).toEqual([1, 2])
    })))

  it.live("large executions: list, saveMany, prune and clear handle thousands of checkpoints in one call each", () =>
    withStore((prefix) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const cps = yield* Effect.forEach(Array.from({ length: 1500 }, (_, i) => i + 1), (v) =>
          mk(e, v, { state: { v } }))
        yield* s.saveMany(cps)
        const all = yield* s.list(e)
        expect(all.map((c) => c.version)).toEqual(cps.map((c) => c.version))
        expect((yield* s.list(e, { afterVersion: 600, limit: 700 })).map((c) => c.version)).toEqual(
          cps.slice(600, 1300).map((c) => c.version)
        )
        expect(yield* s.prune(e, 900)).toBe(600)
        expect((yield* s.list(e)).length).toBe(900)
        yield* s.clear(e)
        expect(yield* scanPrefix(prefix)).toEqual([])
      })
    ))

  describe("conditional saves (expect)", () => {
    const expectOn = (executionId: string, latestVersion: number) => ({
      expect: { executionId: executionId as Checkpoint.ExecutionId, latestVersion }
    })

    it.live("a conditional save is one EVALSHA and nothing else: no read before it; large documents only add their SETs to the same round trip", () =>
      Effect.scoped(Effect.gen(function*() {
        const proxy = yield* redisProxy(target)
        const prefix = yield* ownedPrefix
        const s = Context.get(
          yield* Layer.build(RedisStore.layer({ host: "127.0.0.1", port: proxy.port, db: target.db, prefix })),
          store
        )
        const e = yield* freshExecution()
        yield* s.save(yield* mk(e, 1))
        /** Sends `op` with the proxy stalled: returns what the store sent before it got any reply, then lets it finish. */
        const sentAtOnce = <A, E>(op: Effect.Effect<A, E>) =>
          Effect.gen(function*() {
            proxy.stall()
            const fiber = yield* Effect.fork(Effect.either(op))
            yield* eventually(() => commandNames(proxy.heldToServer()).includes("evalsha"), "the script was sent")
            yield* Effect.sleep(Duration.millis(20))
            const names = commandNames(proxy.heldToServer())
            proxy.resume()
            return { names, result: yield* fiber.await.pipe(Effect.flatten) }
          })
        const small = yield* sentAtOnce(s.save(yield* mk(e, 2), expectOn(e, 1)))
        expect(small.names).toEqual(["evalsha"])
        expect(Either.isRight(small.result)).toBe(true)
        const batch = [yield* mkLarge(e, 3), yield* mk(e, 4), yield* mkLarge(e, 5, 200_000)]
        const mixed = yield* sentAtOnce(s.saveMany(batch, expectOn(e, 2)))
        expect(mixed.names).toEqual(["set", "set", "evalsha"])
        expect(Either.isRight(mixed.result)).toBe(true)
        const stale = yield* sentAtOnce(s.save(yield* mkLarge(e, 6), expectOn(e, 4)))
        expect(stale.names).toEqual(["set", "evalsha"])
        expect(stale.result).toMatchObject({
          left: { _tag: "CheckpointConflict", executionId: e, expectedLatestVersion: 4, actualLatestVersion: 5 }
        })
        const listed = yield* s.list(e)
        expect(listed.map((c) => c.version)).toEqual([1, 2, 3, 4, 5])
        expect(listed.slice(2).map(view)).toEqual(batch.map(view))
        expect(yield* stagingKeys(prefix)).toEqual([])
      })))

    it.live("the newest version is the newest live one, as latest sees it: vanished checkpoints do not count, deleted or pruned older ones do not empty the execution", () =>
      withStore((prefix) =>
        Effect.gen(function*() {
          const s = yield* store
          const k = keysOf(prefix)
          const e = yield* freshExecution()
          const cps = yield* Effect.forEach([1, 2, 3, 4], (v) => mk(e, v))
          yield* s.saveMany(cps)
          // The newest key vanishes behind the store's back (as when it expires).
          yield* Effect.promise(() => admin.del(k.checkpoint(cps[3]!.id)))
          const stale = yield* Effect.flip(s.save(yield* mk(e, 5), expectOn(e, 4)))
          expect(stale).toMatchObject({ _tag: "CheckpointConflict", expectedLatestVersion: 4, actualLatestVersion: 3 })
          expect(Option.map(yield* s.latest(e), (c) => c.version)).toEqual(Option.some(3))
          // The vanished entry is gone from the index, as after a read.
          expect(yield* Effect.promise(() => admin.zscore(k.execution(e), cps[3]!.id))).toBeNull()
          yield* s.save(yield* mk(e, 4), expectOn(e, 3))
          // Deleting the oldest and pruning keep the execution at its newest version.
          yield* s.delete(cps[0]!.id)
          yield* s.prune(e, 1)
          expect(yield* Effect.flip(s.save(yield* mk(e, 1), expectOn(e, 0)))).toMatchObject({ actualLatestVersion: 4 })
          yield* s.save(yield* mk(e, 5), expectOn(e, 4))
          // Every key vanishes: the execution is empty, as latest says.
          const ids = yield* Effect.promise(() => admin.zrange(k.execution(e), 0, -1))
          yield* Effect.promise(() => admin.del(...ids.map(k.checkpoint)))
          expect(Option.isNone(yield* s.latest(e))).toBe(true)
          expect(yield* Effect.flip(s.save(yield* mk(e, 6), expectOn(e, 5)))).toMatchObject({ actualLatestVersion: 0 })
          yield* s.save(yield* mk(e, 1), expectOn(e, 0))
          expect((yield* s.list(e)).map((c) => c.version)).toEqual([1])
          // An expectation on an execution that never existed holds at 0 and writes nothing of its own.
          const never = yield* freshExecution("never")
          const other = yield* freshExecution("other")
          yield* s.saveMany([yield* mk(other, 1), yield* mk(other, 2)], expectOn(never, 0))
          expect(yield* Effect.promise(() => admin.exists(k.execution(never)))).toBe(0)
          expect((yield* s.listExecutions()).map((x) => x.executionId).sort()).toEqual([e, other].sort())
          // One conditional save effect run twice (a retry): the second run finds its own write.
          for (const third of [yield* mk(other, 3), yield* mkLarge(other, 4)]) {
            const once = s.save(third, expectOn(other, third.version - 1))
            yield* once
            expect(yield* Effect.flip(once)).toMatchObject({
              _tag: "CheckpointConflict",
              expectedLatestVersion: third.version - 1,
              actualLatestVersion: third.version
            })
          }
        })
      ))

    it.live("with a ttl, expired checkpoints do not count: an execution whose checkpoints all expired is at version 0", () =>
      withStore((prefix) =>
        Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          yield* s.save(yield* mk(e, 1), expectOn(e, 0))
          yield* s.save(yield* mkLarge(e, 2), expectOn(e, 1))
          yield* Effect.sleep(Duration.millis(600))
          expect(Option.isNone(yield* s.latest(e))).toBe(true)
          const error = yield* Effect.flip(s.save(yield* mk(e, 3), expectOn(e, 2)))
          expect(error).toMatchObject({ _tag: "CheckpointConflict", expectedLatestVersion: 2, actualLatestVersion: 0 })
          yield* s.saveMany([yield* mkLarge(e, 1), yield* mk(e, 2)], expectOn(e, 0))
          expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2])
          expect(yield* stagingKeys(prefix)).toEqual([])
        }), { ttl: "400 millis" }))

    it.live("rivals on three connections expecting the same version, small and large documents: one wins each round, the rest conflict and write nothing", () =>
      Effect.scoped(Effect.gen(function*() {
        const prefix = yield* ownedPrefix
        const stores = yield* Effect.forEach([1, 2, 3], () =>
          Effect.map(Layer.build(RedisStore.layer({ url: TEST_URL, prefix })), (ctx) => Context.get(ctx, store)))
        const e = yield* freshExecution()
        const winners: Array<Checkpoint.Checkpoint> = []
        for (let round = 0; round < 6; round++) {
          const base = 2 * round
          const rivals = yield* Effect.forEach(Array.from({ length: 6 }, (_, i) => i), (i) =>
            Effect.forEach([base + 1, base + 2], (v) =>
              i % 2 === 0 ? mkLarge(e, v, 30_000, { round, i }) : mk(e, v, { state: { round, i } })))
          const results = yield* Effect.forEach(
            rivals,
            (batch, i) => Effect.either(stores[i % 3]!.saveMany(batch, expectOn(e, base))),
            { concurrency: "unbounded" }
          )
          expect(results.filter(Either.isRight).length, `round ${round}`).toBe(1)
          for (const r of results) {
            if (Either.isLeft(r)) {
              expect(r.left).toMatchObject({ _tag: "CheckpointConflict", expectedLatestVersion: base, actualLatestVersion: base + 2 })
            }
          }
          winners.push(...rivals[results.findIndex(Either.isRight)]!)
        }
        expect((yield* stores[0]!.list(e)).map(view)).toEqual(winners.map(view))
        expect(yield* wholeOrAbsent(prefix, winners)).toEqual(winners.map(() => true))
        expect(yield* stagingKeys(prefix)).toEqual([])
      })))
  })

  describe("large documents (staging keys)", () => {
    it.live("round trip through a staging key that never outlives its save, with and without a ttl", () =>
      Effect.gen(function*() {
        for (const ttl of [undefined, "1 hour"] as const) {
          yield* withStore((prefix) =>
            Effect.gen(function*() {
              const s = yield* store
              const k = keysOf(prefix)
              const e = yield* freshExecution()
              // Around the threshold, and far above it.
              const one = yield* mkLarge(e, 1, 1_000_000)
              yield* s.save(one)
              const batch = [yield* mk(e, 2), yield* mkLarge(e, 3, 16_300), yield* mkLarge(e, 4, 16_400), yield* mkLarge(e, 5)]
              yield* s.saveMany(batch)
              const all = [one, ...batch]
              expect((yield* s.list(e)).map(view)).toEqual(all.map(view))
              expect(view(yield* s.load(one.id))).toEqual(view(one))
              expect(Option.map(yield* s.latest(e), view)).toEqual(Option.some(view(batch[3]!)))
              for (const cp of all) {
                const pttl = yield* Effect.promise(() => admin.pttl(k.checkpoint(cp.id)))
                if (ttl === undefined) expect(pttl, `v${cp.version}`).toBe(-1)
                else expect(pttl, `v${cp.version}`).toBeGreaterThan(3_500_000)
              }
              expect(yield* scanPrefix(prefix)).toEqual([...all.map((c) => k.checkpoint(c.id)), k.execution(e), k.executions].sort())
            }), ttl === undefined ? {} : { ttl })
        }
      }))

    it.live("a refused save of large documents leaves nothing: a taken version or id, a batch conflict, a failed expectation", () =>
      withStore((prefix) =>
        Effect.gen(function*() {
          const s = yield* store
          const k = keysOf(prefix)
          const e = yield* freshExecution()
          const first = yield* mkLarge(e, 1)
          yield* s.save(first)
          const expected = [k.checkpoint(first.id), k.execution(e), k.executions].sort()
          const refused = [
            s.save(yield* mkLarge(e, 1)),
            s.save(first),
            s.saveMany([yield* mkLarge(e, 2), yield* mk(e, 3), yield* mkLarge(e, 1)]),
            s.saveMany([yield* mkLarge(e, 2), yield* mkLarge(e, 3)], { expect: { executionId: e, latestVersion: 0 } }),
            s.save(yield* mkLarge(e, 2), { expect: { executionId: e, latestVersion: 5 } }),
            // The expectation holds and version 2 is free, but the id is taken.
            s.save(new Checkpoint.Checkpoint({ ...first, version: 2 }, true), { expect: { executionId: e, latestVersion: 1 } }),
            s.saveMany([yield* mkLarge(e, 2), new Checkpoint.Checkpoint({ ...first, version: 3 }, true)], {
              expect: { executionId: e, latestVersion: 1 }
            })
          ]
          for (const [i, op] of refused.entries()) {
            expect((yield* Effect.flip(op))._tag, `attempt ${i}`).toBe("CheckpointConflict")
            expect(yield* scanPrefix(prefix), `attempt ${i}`).toEqual(expected)
          }
        })
      ))

    it.live("the script refuses a staged document that is missing (an expired staging key): nothing is written and the batch's staging keys go", () =>
      withStore((prefix) =>
        Effect.scoped(Effect.gen(function*() {
          const s = yield* store
          const k = keysOf(prefix)
          const e = yield* freshExecution()
          // Watch the store's own commands to learn its scripts' SHAs and argument layout.
          const monitor = yield* Effect.acquireRelease(
            Effect.promise(() => admin.monitor()),
            (m) => Effect.sync(() => m.disconnect())
          )
          const seen: Array<Array<string>> = []
          monitor.on("monitor", (_time: string, args: Array<string>, source: string) => {
            if (source !== "lua" && args[0]?.toLowerCase() === "evalsha" && args.some((a) => a.includes(prefix))) seen.push(args)
          })
          yield* s.save(yield* mkLarge(e, 1))
          yield* s.saveMany([yield* mkLarge(e, 2)])
          yield* eventually(() => seen.length >= 2, "MONITOR saw both scripts")
          const [save, saveMany] = seen as [Array<string>, Array<string>]
          // save: EVALSHA sha 3 (3 keys) P id executionId version '*'+token ttl now; saveMany: EVALSHA sha 1 key P ttl now id …
          expect(save[10]).toMatch(/^\*[0-9a-f-]{36}$/)
          expect(saveMany[10]).toMatch(/^\*[0-9a-f-]{36}$/)
          const lost = yield* mk(e, 3)
          const replayOne = Effect.tryPromise({
            try: () =>
              admin.evalsha(save[1]!, 3, k.checkpoint(lost.id), k.execution(e), k.executions, save[6]!, lost.id, e, "3", `*${randomUUID()}`, "0", "1"),
            catch: String
          })
          expect(yield* Effect.flip(replayOne)).toContain("a staged document is missing")
          // saveMany: one staged document present, the next one missing.
          const present = `${randomUUID()}`
          yield* Effect.promise(() => admin.set(keysOf(prefix).staging(present), "{}", "PX", 60_000))
          const a = yield* mk(e, 4)
          const replayMany = Effect.tryPromise({
            try: () =>
              admin.evalsha(saveMany[1]!, 1, k.executions, saveMany[4]!, "0", "1", a.id, e, "4", `*${present}`, lost.id, e, "3", `*${randomUUID()}`),
            catch: String
          })
          expect(yield* Effect.flip(replayMany)).toContain("a staged document is missing")
          expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2])
          expect(yield* stagingKeys(prefix)).toEqual([])
          expect(yield* scanPrefix(prefix)).toHaveLength(4)
        }))
      ))
  })

  describe("ttl", () => {
    it.live("keys carry the ttl, expire with real time, and leave nothing behind", () =>
      withStore((prefix) =>
        Effect.gen(function*() {
          const s = yield* store
          const k = keysOf(prefix)
          const e = yield* freshExecution()
          const cps = yield* Effect.forEach([1, 2], (v) => mk(e, v))
          yield* s.save(cps[0]!)
          yield* s.saveMany([cps[1]!])
          for (const key of [k.checkpoint(cps[0]!.id), k.checkpoint(cps[1]!.id), k.execution(e), k.executions]) {
            const left = yield* Effect.promise(() => admin.pttl(key))
            expect(left, key).toBeGreaterThan(0)
            expect(left, key).toBeLessThanOrEqual(400)
          }
          expect((yield* s.list(e)).length).toBe(2)
          yield* Effect.sleep(Duration.millis(700))
          expect(yield* scanPrefix(prefix)).toEqual([])
          expect(yield* s.list(e)).toEqual([])
          expect(Option.isNone(yield* s.latest(e))).toBe(true)
          expect(yield* s.listExecutions()).toEqual([])
          expect((yield* Effect.flip(s.load(cps[0]!.id)))._tag).toBe("CheckpointNotFound")
          // The execution starts again from version 1.
          yield* s.save(yield* mk(e, 1))
          expect((yield* s.list(e)).length).toBe(1)
        }), { ttl: "400 millis" }))

    it.live("each checkpoint expires ttl after its own save; a later save keeps the execution's index alive", () =>
      withStore((prefix) =>
        Effect.gen(function*() {
          const s = yield* store
          const k = keysOf(prefix)
          const e = yield* freshExecution()
          const first = yield* mk(e, 1)
          yield* s.save(first)
          yield* Effect.sleep(Duration.millis(600))
          const second = yield* mk(e, 2)
          yield* s.save(second)
          yield* Effect.sleep(Duration.millis(600))
          // The first has expired (1200 ms after its save), the second has not (600 ms).
          expect((yield* s.list(e)).map(view)).toEqual([view(second)])
          expect(yield* Effect.promise(() => admin.zrange(k.execution(e), 0, -1))).toEqual([second.id])
          expect((yield* s.listExecutions()).map((x) => x.latestCheckpointId)).toEqual([second.id])
          // Version 1 can be saved again.
          yield* s.save(yield* mk(e, 1))
          expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2])
        }), { ttl: "1 second" }))

    it.live("a zero or infinite ttl means keys never expire; a ttl that is not a duration fails the layer", () =>
      Effect.gen(function*() {
        for (const ttl of [0, Duration.infinity] as const) {
          yield* withStore((prefix) =>
            Effect.gen(function*() {
              const s = yield* store
              const cp = yield* mk(yield* freshExecution(), 1)
              yield* s.save(cp)
              expect(yield* Effect.promise(() => admin.pttl(keysOf(prefix).checkpoint(cp.id)))).toBe(-1)
            }), { ttl })
        }
        const error = yield* Effect.flip(
          Effect.provide(store, RedisStore.layer({ url: TEST_URL, ttl: "soon" as Duration.DurationInput }))
        )
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "redis", operation: "config" })
      }))
  })

  describe("faults", () => {
    it.live("a dead server fails the layer with CheckpointStoreError within seconds, without the password", () =>
      Effect.gen(function*() {
        const port = yield* closedPort
        const started = Date.now()
        const layers = [
          RedisStore.layer({ url: `redis://someone:${SECRET}@127.0.0.1:${port}/0` }),
          RedisStore.layer({ url: Redacted.make(`redis://:${encodeURIComponent(SECRET)}@127.0.0.1:${port}`) }),
          RedisStore.layer({ host: "127.0.0.1", port, password: Redacted.make(SECRET), db: 1 }),
          RedisStore.layer({ host: "127.0.0.1", port, password: SECRET })
        ]
        for (const l of layers) {
          const error = yield* Effect.flip(Effect.provide(store, l))
          expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "redis", operation: "connect" })
          expect(error.message).toContain("ECONNREFUSED")
          expectNoSecret(error)
        }
        expect(Date.now() - started).toBeLessThan(10_000)
      }))

    it.live("a refused password fails the layer with CheckpointStoreError that does not contain it", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          Effect.provide(store, RedisStore.layer({ host: target.host, port: target.port, username: "ec-no-such-user", password: SECRET }))
        )
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "redis", operation: "connect" })
        expect(error.message).toContain("WRONGPASS")
        expectNoSecret(error)
        const viaUrl = yield* Effect.flip(
          Effect.provide(store, RedisStore.layer({ url: `redis://ec-no-such-user:${SECRET}@${target.host}:${target.port}` }))
        )
        expect(viaUrl.message).toContain("WRONGPASS")
        expectNoSecret(viaUrl)
      }))

    it.live("CLIENT KILL of the store's connection: the next operation recovers, and a killed run leaves nothing half-written", () =>
      Effect.gen(function*() {
        const name = `ec-test-${randomUUID()}`
        yield* withStore((prefix) =>
          Effect.gen(function*() {
            // Its 20 KB documents are staged: a save killed between its SET and its script leaves a staging key, which expires.
            mayLeaveStaging.add(prefix)
            const s = yield* store
            const e = yield* freshExecution()
            yield* s.saveMany(yield* Effect.forEach([1, 2, 3], (v) => mk(e, v)))
            // Killed while idle: the next operation reconnects and succeeds.
            yield* killClient(name)
            expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2, 3])
            yield* s.save(yield* mk(e, 4))
            // Killed in the middle of a run of saves: each save lands whole or fails typed.
            let next = 5
            let stored = [1, 2, 3, 4]
            let failures = 0
            for (let round = 0; round < 10 && failures === 0; round++) {
              const run = yield* Effect.forEach(Array.from({ length: 60 }, (_, i) => next + i), (v) =>
                mk(e, v, { state: { blob: "x".repeat(20_000), v } }))
              next += 60
              const fiber = yield* Effect.fork(
                Effect.forEach(run, (cp) => Effect.either(s.save(cp)), { concurrency: 20 })
              )
              // Kill the connection again and again while the saves run, so some are surely in flight.
              const killer = yield* Effect.fork(
                Effect.forever(Effect.zipRight(Effect.ignore(killClient(name)), Effect.sleep(Duration.millis(1))))
              )
              const results = yield* fiber.await.pipe(Effect.flatten, Effect.ensuring(Fiber.interrupt(killer)))
              for (const r of results) {
                if (Either.isLeft(r)) {
                  expect(r.left).toMatchObject({ _tag: "CheckpointStoreError", backend: "redis", operation: "save" })
                  failures++
                }
              }
              const present = yield* wholeOrAbsent(prefix, run)
              results.forEach((r, i) => {
                if (Either.isRight(r)) expect(present[i], `saved v${run[i]!.version} is stored`).toBe(true)
              })
              stored = [...stored, ...run.filter((_, i) => present[i]).map((c) => c.version)]
            }
            expect(failures, "the kill hit saves in flight").toBeGreaterThan(0)
            // The store goes on: what is stored lists in order, and new saves land.
            expect((yield* s.list(e)).map((c) => c.version)).toEqual(stored)
            yield* s.save(yield* mk(e, 1000))
            expect(Option.map(yield* s.latest(e), (c) => c.version)).toEqual(Option.some(1000))
          }), { connectionName: name, commandTimeout: "1 second" })
      }))

    it.live("through a proxy: a stall fails the operation typed after commandTimeout, and the store recovers", () =>
      Effect.scoped(Effect.gen(function*() {
        const proxy = yield* redisProxy(target)
        const prefix = yield* ownedPrefix
        const s = Context.get(
          yield* Layer.build(RedisStore.layer({ host: "127.0.0.1", port: proxy.port, db: target.db, prefix, commandTimeout: "400 millis" })),
          store
        )
        const e = yield* freshExecution()
        yield* s.save(yield* mk(e, 1))
        proxy.stall()
        const stalled = yield* mk(e, 2)
        const started = Date.now()
        const error = yield* Effect.flip(s.save(stalled))
        expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "redis", operation: "save" })
        expect(error.message).toContain("timed out")
        expect(Date.now() - started).toBeLessThan(3_000)
        expect((yield* Effect.flip(s.list(e)))._tag).toBe("CheckpointStoreError")
        proxy.resume()
        // The stalled save reached the server late: it landed whole (its outcome was unknown to the caller).
        yield* Effect.sleep(Duration.millis(100))
        expect(yield* wholeOrAbsent(prefix, [stalled])).toEqual([true])
        expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2])
        expect((yield* Effect.flip(s.save(stalled)))._tag).toBe("CheckpointConflict")
        // The same with a large document (staging SET + script in one pipeline), conditional: it lands whole, its staging key is gone.
        proxy.stall()
        const large = yield* mkLarge(e, 3, 300_000)
        expect(yield* Effect.flip(s.save(large, { expect: { executionId: e, latestVersion: 2 } }))).toMatchObject({
          _tag: "CheckpointStoreError",
          operation: "save"
        })
        proxy.resume()
        let landed = [false]
        for (let tries = 0; tries < 100 && !landed[0]; tries++) {
          yield* Effect.sleep(Duration.millis(20))
          landed = yield* wholeOrAbsent(prefix, [large])
        }
        expect(landed).toEqual([true])
        expect(view(yield* s.load(large.id))).toEqual(view(large))
        expect(yield* stagingKeys(prefix)).toEqual([])
      })))

    it.live("through a proxy: a cut connection mid-batch leaves the batch all there or all absent; a server down fails fast and comes back", () =>
      Effect.scoped(Effect.gen(function*() {
        const proxy = yield* redisProxy(target)
        const prefix = yield* ownedPrefix
        const s = Context.get(
          yield* Layer.build(RedisStore.layer({ host: "127.0.0.1", port: proxy.port, db: target.db, prefix, commandTimeout: "1 second" })),
          store
        )
        const e = yield* freshExecution()
        // Cut in the middle of the staged batches: staging keys whose script never ran are left, and expire.
        mayLeaveStaging.add(prefix)
        // Batches of inline documents, then batches whose large documents are staged (SETs, then the script).
        const shapes = [
          { size: 200, blob: (_: number) => 5_000 },
          { size: 40, blob: (i: number) => i % 2 === 0 ? 60_000 : 5_000 }
        ]
        let next = 1
        for (const shape of shapes) {
          const outcomes = new Set<string>()
          for (let round = 0; round < 6; round++) {
            const batch = yield* Effect.forEach(Array.from({ length: shape.size }, (_, i) => i), (i) =>
              mk(e, next + i, { state: { blob: "y".repeat(shape.blob(i)) } }))
            next += shape.size
            const fiber = yield* Effect.fork(Effect.either(s.saveMany(batch)))
            // The last round cuts only after the reply came (on a loaded machine no fixed delay is sure to be long enough).
            if (round < 5) yield* Effect.sleep(Duration.millis([0, 2, 5, 15, 40][round]!))
            else yield* Fiber.await(fiber)
            proxy.cut()
            const result = yield* fiber.await.pipe(Effect.flatten)
            if (Either.isLeft(result)) expect(result.left).toMatchObject({ _tag: "CheckpointStoreError", operation: "saveMany" })
            const present = yield* wholeOrAbsent(prefix, batch)
            expect(new Set(present).size, `round ${round}: all or nothing`).toBe(1)
            if (Either.isRight(result)) expect(present[0]).toBe(true)
            outcomes.add(`${result._tag}:${present[0]}`)
            yield* stagingKeysExpire(prefix)
            // The next operation reconnects.
            yield* s.list(e, { limit: 1 })
          }
          // Cut before the batch was all sent, and after it landed (the last round waits for its reply).
          expect(outcomes.has("Left:false"), `batches of ${shape.size}`).toBe(true)
          expect(outcomes.has("Right:true"), `batches of ${shape.size}`).toBe(true)
        }
        // The server goes away: operations fail typed within seconds, naming the cause.
        yield* proxy.down()
        const started = Date.now()
        const down = yield* Effect.flip(s.latest(e))
        expect(down).toMatchObject({ _tag: "CheckpointStoreError", backend: "redis", operation: "latest" })
        expect(down.message).toMatch(/ECONNREFUSED|closed|retries|timed out/)
        expect(Date.now() - started).toBeLessThan(5_000)
        // It comes back: the store reconnects by itself.
        yield* proxy.up()
        const back = yield* s.save(yield* mk(e, 5000)).pipe(
          Effect.retry({ schedule: Schedule.spaced("250 millis"), times: 20, while: (x) => x._tag === "CheckpointStoreError" }),
          Effect.either
        )
        expect(Either.isRight(back) || Either.isLeft(back) && back.left._tag === "CheckpointConflict").toBe(true)
        expect(Option.map(yield* s.latest(e), (c) => c.version)).toEqual(Option.some(5000))
      })))
    it.live("a private server killed (SIGKILL) mid-run and restarted: every checkpoint is whole or absent, acknowledged saves survive, the store reconnects and reloads its scripts", () =>
      Effect.scoped(Effect.gen(function*() {
        const server = yield* privateRedis
        const direct = yield* Effect.acquireRelease(
          Effect.sync(() => new Redis({ host: "127.0.0.1", port: server.port, lazyConnect: true, maxRetriesPerRequest: 0 })),
          (c) => Effect.sync(() => c.disconnect())
        )
        direct.on("error", () => undefined)
        const s = Context.get(
          yield* Layer.build(RedisStore.layer({ host: "127.0.0.1", port: server.port, commandTimeout: "2 seconds" })),
          store
        )
        const e = yield* freshExecution()
        yield* s.saveMany(yield* Effect.forEach([1, 2, 3], (v) => mk(e, v)))
        const run = yield* Effect.forEach(Array.from({ length: 300 }, (_, i) => i + 4), (v) =>
          mk(e, v, { state: { blob: "z".repeat(20_000), v } }))
        // Saves started before the crash; none is started after it (each would only wait for a reconnection).
        let crashed = false
        const fiber = yield* Effect.fork(Effect.forEach(run, (cp) =>
          Effect.suspend(() => crashed ? Effect.succeed(undefined) : Effect.either(s.save(cp))), { concurrency: 10 }))
        yield* Effect.sleep(Duration.millis(30))
        yield* server.crash()
        crashed = true
        const results = yield* fiber.await.pipe(Effect.flatten)
        const failed = results.filter((r) => r !== undefined && Either.isLeft(r))
        expect(failed.length, "the crash hit the run").toBeGreaterThan(0)
        for (const r of failed) expect(r).toMatchObject({ left: { _tag: "CheckpointStoreError", backend: "redis", operation: "save" } })
        yield* server.start()
        // A restarted server has an empty script cache.
        expect(yield* Effect.promise(() => direct.info("commandstats"))).not.toMatch(/cmdstat_eval/)
        // The store reconnects by itself.
        const listed = yield* s.list(e).pipe(
          Effect.retry({ schedule: Schedule.spaced("200 millis"), times: 25, while: (x) => x._tag === "CheckpointStoreError" })
        )
        // Each checkpoint is whole or absent; each acknowledged save is there (appendfsync always).
        const present: Array<boolean> = []
        for (const cp of run) {
          const doc = yield* Effect.promise(() => direct.exists(keysOf("").checkpoint(cp.id)))
          const score = yield* Effect.promise(() => direct.zscore(keysOf("").execution(e), cp.id))
          expect(doc === 1, `v${cp.version}: document and index agree`).toBe(score !== null)
          present.push(doc === 1)
        }
        results.forEach((r, i) => {
          if (r !== undefined && Either.isRight(r)) expect(present[i], `acknowledged v${run[i]!.version} survived`).toBe(true)
        })
        expect(listed.map((c) => c.version)).toEqual([1, 2, 3, ...run.filter((_, i) => present[i]).map((c) => c.version)])
        // The 20 KB documents were staged: a staging key that survived the crash still expires (its expiry is in the AOF).
        const staging = yield* Effect.promise(() => direct.keys(`${keysOf("").staging("")}*`))
        for (const key of staging) {
          const pttl = yield* Effect.promise(() => direct.pttl(key))
          expect(pttl, key).toBeGreaterThan(0)
          expect(pttl, key).toBeLessThanOrEqual(STAGING_TTL_MS)
        }
        // The store loaded its scripts again (EVAL after NOSCRIPT) and goes on.
        yield* s.save(yield* mk(e, 10_000))
        yield* s.delete(run[0]!.id)
        expect(yield* Effect.promise(() => direct.info("commandstats"))).toMatch(/cmdstat_eval:calls=[1-9]/)
        expect(Option.map(yield* s.latest(e), (c) => c.version)).toEqual(Option.some(10_000))
      })))
  })

  describe("layers", () => {
    it.live("layerConfig reads REDIS_ADDR (host:port or URL), REDIS_DB, REDIS_PREFIX and REDIS_TTL", () =>
      Effect.scoped(Effect.gen(function*() {
        const prefix = yield* ownedPrefix
        const e = yield* freshExecution()
        const save = (env: Record<string, string>, version: number) =>
          Effect.flatMap(store, (s) => Effect.flatMap(mk(e, version), s.save)).pipe(
            Effect.provide(RedisStore.layerConfig),
            Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
          )
        yield* save({ REDIS_ADDR: `${target.host}:${target.port}`, REDIS_DB: String(target.db), REDIS_PREFIX: prefix, REDIS_TTL: "1 hour" }, 1)
        yield* save({ REDIS_ADDR: TEST_URL, REDIS_PREFIX: prefix }, 2)
        const k = keysOf(prefix)
        const ids = yield* Effect.promise(() => admin.zrange(k.execution(e), 0, -1))
        expect(ids.length).toBe(2)
        const ttl = yield* Effect.promise(() => admin.pttl(k.checkpoint(ids[0]!)))
        expect(ttl).toBeGreaterThan(3_000_000)
        expect(yield* Effect.promise(() => admin.pttl(k.checkpoint(ids[1]!)))).toBe(-1)
        const bad = yield* Effect.flip(save({ REDIS_ADDR: TEST_URL, REDIS_DB: "one" }, 3))
        expect(bad).toMatchObject({ _tag: "CheckpointStoreError", backend: "redis", operation: "config" })
        const badPrefix = yield* Effect.flip(save({ REDIS_ADDR: TEST_URL, REDIS_PREFIX: "a*" }, 3))
        expect(badPrefix).toMatchObject({ _tag: "InvalidIdentifier", kind: "prefix" })
        const port = yield* closedPort
        const down = yield* Effect.flip(save({ REDIS_ADDR: `127.0.0.1:${port}`, REDIS_PASSWORD: SECRET }, 3))
        expect(down).toMatchObject({ _tag: "CheckpointStoreError", operation: "connect" })
        expectNoSecret(down)
      })))

    it.live("layer closes its own connection when the scope closes", () =>
      Effect.gen(function*() {
        const name = `ec-test-${randomUUID()}`
        yield* withStore(() =>
          Effect.gen(function*() {
            yield* Effect.flatMap(store, (s) => s.listExecutions())
            expect(yield* clientIdByName(name)).toBeDefined()
          }), { connectionName: name })
        yield* Effect.sleep(Duration.millis(50))
        expect(yield* clientIdByName(name)).toBeUndefined()
      }))

    it.live("layerClient runs on the app's client, honours its keyPrefix, and never closes it", () =>
      Effect.scoped(Effect.gen(function*() {
        const outer = yield* ownedPrefix
        const client = yield* Effect.acquireRelease(
          Effect.sync(() => new Redis(TEST_URL, { lazyConnect: true, keyPrefix: outer, maxRetriesPerRequest: 1 })),
          (c) => Effect.promise(() => c.quit())
        )
        const e = yield* freshExecution()
        // Large documents too: their staging keys are under keyPrefix + prefix like every other key.
        const cps = [yield* mk(e, 1), yield* mkLarge(e, 2), yield* mkLarge(e, 3)]
        const fourth = yield* mkLarge(e, 4)
        yield* Effect.gen(function*() {
          const s = yield* store
          yield* s.saveMany(cps)
          yield* s.delete(cps[0]!.id)
          expect((yield* s.list(e)).map((c) => c.version)).toEqual([2, 3])
          expect(yield* s.prune(e, 1)).toBe(1)
          expect((yield* s.listExecutions()).map((x) => x.latestVersion)).toEqual([3])
          yield* s.save(fourth, { expect: { executionId: e, latestVersion: 3 } })
          const stale = yield* Effect.flip(s.save(yield* mkLarge(e, 5), { expect: { executionId: e, latestVersion: 3 } }))
          expect(stale).toMatchObject({ _tag: "CheckpointConflict", actualLatestVersion: 4 })
          expect(view(yield* s.load(fourth.id))).toEqual(view(fourth))
        }).pipe(Effect.provide(RedisStore.layerClient(client, { prefix: "inner:" })))
        expect(client.status).toBe("ready")
        // The store's keys are under keyPrefix + prefix, and the indexes agree with the documents.
        const k = keysOf(`${outer}inner:`)
        expect(yield* scanPrefix(outer)).toEqual(
          [k.checkpoint(cps[2]!.id), k.checkpoint(fourth.id), k.execution(e), k.executions].sort()
        )
        yield* cleanup(`${outer}inner:`)
      })))

    it.live("an operation on a closed layerClient client fails typed", () =>
      Effect.gen(function*() {
        const client = new Redis(TEST_URL, { lazyConnect: true, maxRetriesPerRequest: 1 })
        const result = yield* Effect.gen(function*() {
          const s = yield* store
          yield* Effect.promise(() => client.quit())
          return yield* Effect.flip(s.list(yield* freshExecution()))
        }).pipe(Effect.provide(RedisStore.layerClient(client)))
        expect(result).toMatchObject({ _tag: "CheckpointStoreError", backend: "redis", operation: "list" })
      }))
  })

  describe("examples/redis.ts", () => {
    it.live("runs the graph on worker A, resumes it on worker B from Redis, shows the ttl, and clears what it made", () =>
      Effect.gen(function*() {
        const out = yield* Effect.sync(() =>
          execFileSync("npx", ["tsx", "examples/redis.ts"], {
            encoding: "utf8",
            timeout: 60_000,
            env: { ...process.env, REDIS_ADDR: TEST_URL },
            stdio: ["ignore", "pipe", "pipe"]
          })
        )
        const executionId = /=== Worker A: run (\S+) /.exec(out)?.[1]
        expect(executionId).toBeDefined()
        expect(out).toContain("The run stopped: step 2: the worker crashed (simulated)")
        expect(out).toContain(`=== Worker B: 2 checkpoints of ${executionId} in Redis ===`)
        expect(out).toMatch(/#1 __input__ key=example_checkpoints:\|c\|\S+ ttl=3[56]\d\ds /)
        const resumed = out.slice(out.indexOf("=== Worker B: resume"))
        expect(resumed).not.toContain("Running step 1")
        expect(resumed).toContain("Running step 2")
        expect(resumed).toContain("Final data:    Start → Step1 → Step2 → Step3")
        expect(out).toContain("=== 4 checkpoints after the resume ===")
        expect(out).toContain(`=== Cleared: 0 checkpoints left for ${executionId} ===`)
        const k = keysOf("example_checkpoints:")
        expect(yield* Effect.promise(() => admin.exists(k.execution(executionId!)))).toBe(0)
        expect(yield* Effect.promise(() => admin.zscore(k.executions, executionId!))).toBeNull()
      }))
  })
})

// -----------------------------------------------------------------------------
// The key space: prefixes never share a key
// -----------------------------------------------------------------------------

/** A short unique parent prefix, so that generated prefixes under it stay within 64 characters. */
const shortPrefix = () => `ecp:${randomUUID().slice(0, 8)}:`

/** Every key under `parent` removed; fails if there was any (they should have gone through the indexes). */
const nothingLeftUnder = (parent: string) =>
  Effect.gen(function*() {
    const left = yield* scanPrefix(parent)
    if (left.length > 0) yield* Effect.promise(() => admin.del(...left))
    expect(left, `keys left under ${parent}`).toEqual([])
  })

/** What a store shows of some executions and ids: everything a caller can observe. */
const observe = (
  s: CheckpointStore.Service,
  executions: ReadonlyArray<string>,
  ids: ReadonlyArray<string>
) =>
  Effect.gen(function*() {
    const summaries = (yield* s.listExecutions()).map((x) => ({ ...x, updatedAt: x.updatedAt.toISOString() }))
    const lists = yield* Effect.forEach(executions, (e) => Effect.map(s.list(e as Checkpoint.ExecutionId), (cps) => cps.map(view)))
    const latest = yield* Effect.forEach(executions, (e) =>
      Effect.map(s.latest(e as Checkpoint.ExecutionId), Option.map(view)))
    const loaded = yield* Effect.forEach(ids, (id) =>
      s.load(id as Checkpoint.CheckpointId).pipe(Effect.map(view), Effect.catchTag("CheckpointNotFound", (e) => Effect.succeed(e._tag))))
    return { summaries, lists, latest, loaded }
  })

describe("RedisStore key space", () => {
  /** Pieces that spell the key types of the 0.1.0 layout and of this one. */
  const pieces = ["checkpoint", "checkpoints", "execution", "executions", "staging", "migration", "c", "x", "s", "p", "0", ":", "-", "."]
  const joined = (max: number) => FastCheck.array(FastCheck.constantFrom(...pieces), { maxLength: max }).map((xs) => xs.join(""))
  const room = 64 - shortPrefix().length

  /** What one prefix adds to the other when they nest: random pieces, or one that spells a key type of a layout. */
  const suffix = FastCheck.oneof(
    joined(4).filter((s) => s.length > 0),
    FastCheck.constantFrom("checkpoint:", "execution:", "checkpoint:execution:", "execution:x:checkpoints:", "c:", "x:")
  )
  /** Two different prefixes (under a unique parent): one inside the other either way, or unrelated. */
  const prefixes = FastCheck.tuple(joined(4), suffix, FastCheck.constantFrom("inner", "outer", "apart"), joined(4))
    .map(([a, s, how, b]) => (how === "inner" ? [a, a + s] : how === "outer" ? [a + s, a] : [a, b]).map((p) => p.slice(0, room)))
    .filter(([a, b]) => a !== b)

  type Op =
    | { readonly op: "save"; readonly id: number; readonly e: number; readonly v: number }
    | { readonly op: "saveMany"; readonly id: number; readonly e: number; readonly v: number; readonly id2: number }
    | { readonly op: "delete"; readonly id: number }
    | { readonly op: "clear"; readonly e: number }
    | { readonly op: "prune"; readonly e: number; readonly keep: number }
  const pick = FastCheck.nat()
  const op: FastCheck.Arbitrary<Op> = FastCheck.oneof(
    FastCheck.record({ op: FastCheck.constant("save" as const), id: pick, e: pick, v: FastCheck.integer({ min: 1, max: 3 }) }),
    FastCheck.record({ op: FastCheck.constant("saveMany" as const), id: pick, e: pick, v: FastCheck.integer({ min: 1, max: 3 }), id2: pick }),
    FastCheck.record({ op: FastCheck.constant("delete" as const), id: pick }),
    FastCheck.record({ op: FastCheck.constant("clear" as const), e: pick }),
    FastCheck.record({ op: FastCheck.constant("prune" as const), e: pick, keep: FastCheck.integer({ min: 0, max: 1 }) })
  )
  /** B's two executions (3 checkpoints each, ids `{e}:{v}`), spelled from the same pieces. */
  const executionsOfB = FastCheck.uniqueArray(joined(3).map((s) => `b${s}`), { minLength: 2, maxLength: 2 })

  it.live("the issue's case: with prefixes `p:` and `p:checkpoint:`, A.delete(\"execution:e:checkpoints\") leaves B's execution e whole", () =>
    Effect.scoped(Effect.gen(function*() {
      const parent = shortPrefix()
      yield* Effect.addFinalizer(() =>
        Effect.orDie(Effect.zipRight(Effect.zipRight(removeByIndex(`${parent}p:`), removeByIndex(`${parent}p:checkpoint:`)), nothingLeftUnder(parent))))
      const build = (prefix: string) => Effect.map(Layer.build(RedisStore.layer({ url: TEST_URL, prefix })), (ctx) => Context.get(ctx, store))
      const A = yield* build(`${parent}p:`)
      const B = yield* build(`${parent}p:checkpoint:`)
      const saved = yield* Effect.forEach([1, 2], (v) => mk("e", v))
      yield* B.saveMany(saved)
      yield* A.delete("execution:e:checkpoints" as Checkpoint.CheckpointId)
      yield* A.clear("e" as Checkpoint.ExecutionId)
      expect((yield* B.list("e" as Checkpoint.ExecutionId)).map(view)).toEqual(saved.map(view))
      expect((yield* Effect.flip(B.save(yield* mk("e", 1))))._tag).toBe("CheckpointConflict")
      expect((yield* B.listExecutions()).map((x) => x.latestVersion)).toEqual([2])
    })))

  it.live("saves, deletes, clears and prunes on one store never change what another store shows, for any two valid prefixes (nested included)", () =>
    Effect.promise(() =>
      FastCheck.assert(
        FastCheck.asyncProperty(prefixes, executionsOfB, FastCheck.array(op, { minLength: 4, maxLength: 14 }), ([a, b], eB, ops) =>
          Effect.runPromise(Effect.scoped(Effect.gen(function*() {
            const parent = shortPrefix()
            const pa = parent + a!
            const pb = parent + b!
            yield* Effect.addFinalizer(() =>
              Effect.orDie(Effect.zipRight(Effect.zipRight(removeByIndex(pa), removeByIndex(pb)), nothingLeftUnder(parent))))
            const build = (prefix: string) =>
              Effect.map(Layer.build(RedisStore.layer({ url: TEST_URL, prefix })), (ctx) => Context.get(ctx, store))
            const A = yield* build(pa)
            const B = yield* build(pb)
            const idsOfB = eB.flatMap((e) => [1, 2, 3].map((v) => `${e}:${v}`))
            yield* B.saveMany(yield* Effect.forEach(idsOfB, (id) => mk(id.slice(0, id.lastIndexOf(":")), Number(id.slice(-1)), { id })))
            // A's ids and executions: B's own names, and every name that makes one of A's keys spell one of
            // B's, in this layout or the 0.1.0 one (there, A.delete("execution:e:checkpoints") under the
            // prefixes `p:` and `p:checkpoint:` removed B's index of e). This layout has none: they all hold a `|`.
            const layouts = [
              { c: (p: string) => [`${p}|c|`, ""], x: (p: string) => [`${p}|x|`, ""], all: (p: string) => [`${p}|executions`] },
              {
                c: (p: string) => [`${p}checkpoint:`, ""],
                x: (p: string) => [`${p}execution:`, ":checkpoints"],
                all: (p: string) => [`${p}executions`]
              }
            ]
            const spelled = layouts.flatMap((l) => {
              const keysOfB = [
                ...idsOfB.map((id) => l.c(pb).join(id)),
                ...eB.map((e) => l.x(pb).join(e)),
                ...l.all(pb),
                `${pb}|s|x`,
                `${pb}staging:x`
              ]
              return [l.c(pa), l.x(pa)].flatMap(([head, tail]) =>
                keysOfB.filter((k) => k.startsWith(head!) && k.endsWith(tail!) && k.length > head!.length + tail!.length)
                  .map((k) => k.slice(head!.length, k.length - tail!.length)))
            })
            const pool = [...eB, ...idsOfB, ...spelled, "a-1"].filter(isValidId)
            const at = (i: number) => pool[i % pool.length]!
            const before = yield* observe(B, eB, idsOfB)
            for (const o of ops) {
              const attempt: Effect.Effect<unknown, unknown> = o.op === "save"
                ? Effect.flatMap(mk(at(o.e), o.v, { id: at(o.id) }), (cp) => A.save(cp))
                : o.op === "saveMany"
                ? Effect.flatMap(
                  Effect.all([mk(at(o.e), o.v, { id: at(o.id) }), mk(at(o.e), o.v + 3, { id: `${at(o.id2)}-2` })]),
                  (cps) => A.saveMany(cps)
                )
                : o.op === "delete"
                ? A.delete(at(o.id) as Checkpoint.CheckpointId)
                : o.op === "clear"
                ? A.clear(at(o.e) as Checkpoint.ExecutionId)
                : A.prune(at(o.e) as Checkpoint.ExecutionId, o.keep)
              const result = yield* Effect.either(attempt)
              if (Either.isLeft(result)) expect(result.left).toMatchObject({ _tag: "CheckpointConflict" })
            }
            expect(yield* observe(B, eB, idsOfB)).toEqual(before)
            // B's versions are still taken.
            const again = yield* Effect.flip(B.save(yield* mk(eB[0]!, 1)))
            expect(again._tag).toBe("CheckpointConflict")
          })))
        ),
        { numRuns: 30 }
      )
    ))
})

// -----------------------------------------------------------------------------
// Migration from the 0.1.0 layout
// -----------------------------------------------------------------------------

/** The keys of the 0.1.0 layout, as its README listed them. */
const oldKeysOf = (prefix: string) => ({
  checkpoint: (id: string) => `${prefix}checkpoint:${id}`,
  execution: (e: string) => `${prefix}execution:${e}:checkpoints`,
  executions: `${prefix}executions`
})

/**
 * Writes checkpoints as a 0.1.0 store saved them, with raw commands: the document, its entry in the
 * execution's index, the execution in the executions set (scored `savedAt`). With `ttlMs`, the
 * documents and the execution's index expire, and the executions set too if `executionsExpire`.
 */
const writeOld = (
  prefix: string,
  cps: ReadonlyArray<Checkpoint.Checkpoint>,
  options: { readonly ttlMs?: number; readonly savedAt?: number; readonly executionsExpire?: boolean } = {}
) =>
  Effect.gen(function*() {
    const k = oldKeysOf(prefix)
    const docs = yield* Effect.forEach(cps, (cp) => Effect.orDie(Checkpoint.encode(cp)))
    yield* Effect.promise(async () => {
      for (let i = 0; i < cps.length; i += 1000) {
        const p = admin.pipeline()
        cps.slice(i, i + 1000).forEach((cp, j) => {
          if (options.ttlMs === undefined) p.set(k.checkpoint(cp.id), docs[i + j]!)
          else p.set(k.checkpoint(cp.id), docs[i + j]!, "PX", options.ttlMs)
          p.zadd(k.execution(cp.executionId), cp.version, cp.id)
          p.zadd(k.executions, options.savedAt ?? Date.now(), cp.executionId)
          if (options.ttlMs !== undefined) {
            p.pexpire(k.execution(cp.executionId), options.ttlMs)
            if (options.executionsExpire === true) p.pexpire(k.executions, options.ttlMs)
          }
        })
        await p.exec()
      }
    })
  })

/** The keys under `prefix` that are not of this layout (no `|` after the prefix). */
const oldLayoutKeys = (prefix: string) =>
  Effect.map(scanPrefix(prefix), (keys) => keys.filter((key) => !key.slice(prefix.length).includes("|")))

/** Every key under `prefix` with its type, value and whether it expires: what a no-op must leave equal. */
const snapshot = (prefix: string) =>
  Effect.flatMap(scanPrefix(prefix), (keys) =>
    Effect.promise(() =>
      Promise.all(keys.map(async (key) => {
        const type = await admin.type(key)
        const value = type === "string" ? await admin.get(key) : type === "zset" ? await admin.zrange(key, 0, -1, "WITHSCORES") : type
        const pttl = await admin.pttl(key)
        return { key, type, value, expires: pttl > 0 }
      }))
    ))

/** One step of the migration script, as the store runs it (a test hook: the store runs steps until done). */
const migrateStep = (prefix: string, budget: number) =>
  Effect.promise(() => admin.eval(SCRIPTS.migrate.lua, 0, prefix, String(budget)))

const buildStore = (prefix: string) =>
  Effect.map(Layer.build(RedisStore.layer({ url: TEST_URL, prefix })), (ctx) => Context.get(ctx, store))

const Steps = Schema.Struct({ n: Schema.Int, trail: Schema.Array(Schema.String) })
const stepsGraph = Graph.make(Steps).pipe(
  Graph.addNode("one", (s) => Effect.succeed({ n: s.n + 1, trail: [...s.trail, "one"] })),
  Graph.addNode("two", (s) => Effect.succeed({ n: s.n + 1, trail: [...s.trail, "two"] })),
  Graph.addNode("three", (s) => Effect.succeed({ n: s.n + 1, trail: [...s.trail, "three"] })),
  Graph.setEntryPoint("one"),
  Graph.addEdge("one", "two"),
  Graph.addEdge("two", "three"),
  Graph.addEdge("three", Graph.END)
)

describe("RedisStore migration from the 0.1.0 layout", () => {
  it.live("a 0.1.0 data set is migrated when the store is built: listed, loaded, resumable, expiries kept; what is not its own stays; a second build changes nothing", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* ownedPrefix
      const old = oldKeysOf(prefix)
      // A graph run paused after its first node, saved by a 0.1.0 store.
      const paused = yield* Effect.gen(function*() {
        const runnable = yield* Graph.compileCheckpointable(stepsGraph, { interruptAfter: ["one"], durability: "sync" })
        const stopped = yield* Effect.flip(runnable.invoke({ n: 0, trail: [] }))
        expect(stopped._tag).toBe("GraphInterrupted")
        return yield* Effect.flatMap(store, (s) => s.list(runnable.executionId))
      }).pipe(Effect.provide(MemoryStore.layer))
      const eA = paused[0]!.executionId
      expect(paused.map((c) => c.nodeName)).toEqual(["__input__", "one"])
      const eB = yield* freshExecution("ttl")
      const eC = yield* freshExecution("long")
      const eD = yield* freshExecution("gone")
      const withTtl = yield* Effect.forEach([1, 2, 3, 4, 5], (v) => mk(eB, v))
      const long = yield* Effect.forEach(Array.from({ length: 600 }, (_, i) => i + 1), (v) => mk(eC, v, { state: { v } }))
      const savedAt = Date.now() - 60_000
      yield* writeOld(prefix, paused, { savedAt })
      yield* writeOld(prefix, withTtl, { ttlMs: 3_600_000, savedAt: savedAt + 1 })
      yield* writeOld(prefix, long, { savedAt: savedAt + 2 })
      // An index entry whose document vanished, one whose document is another checkpoint, an old staging key.
      const foreign = yield* mk(eA, 9)
      yield* Effect.promise(() =>
        admin.multi()
          .zadd(old.execution(eD), 1, "gone-1")
          .zadd(old.executions, savedAt, eD)
          .zadd(old.execution(eA), 9, "not-mine")
          .set(old.checkpoint("not-mine"), JSON.stringify({ ...view(foreign), id: "someone-else" }))
          .set(`${prefix}staging:${randomUUID()}`, "{}", "PX", 60_000)
          .exec()
      )
      const leftBehind = [old.execution(eA), old.checkpoint("not-mine"), old.execution(eD)]

      const s = yield* buildStore(prefix)
      // Everything of the store is there, in the new layout.
      const summaries = yield* s.listExecutions()
      expect(summaries.map((x) => [x.executionId, x.latestVersion]).sort()).toEqual(
        [[eA, 2], [eB, 5], [eC, 600]].sort()
      )
      expect(summaries.find((x) => x.executionId === eA)?.pending).toBe(true)
      for (const cps of [paused, withTtl, long]) {
        expect((yield* s.list(cps[0]!.executionId)).map(view)).toEqual(cps.map(view))
        expect(Option.map(yield* s.latest(cps[0]!.executionId), view)).toEqual(Option.some(view(cps[cps.length - 1]!)))
      }
      for (const cp of [...paused, ...withTtl, long[0]!, long[599]!]) expect(view(yield* s.load(cp.id))).toEqual(view(cp))
      // Expiries went with the keys: the ttl'd execution's documents and index expire, the others do not.
      const k = keysOf(prefix)
      for (const key of [...withTtl.map((c) => k.checkpoint(c.id)), k.execution(eB)]) {
        const left = yield* Effect.promise(() => admin.pttl(key))
        expect(left, key).toBeGreaterThan(3_000_000)
        expect(left, key).toBeLessThanOrEqual(3_600_000)
      }
      for (const key of [k.checkpoint(long[0]!.id), k.execution(eC), k.executions]) {
        expect(yield* Effect.promise(() => admin.pttl(key)), key).toBe(-1)
      }
      // Executions keep their last-save time.
      expect(Number(yield* Effect.promise(() => admin.zscore(k.executions, eC)))).toBe(savedAt + 2)
      // Of the old layout, only what the store could not claim is left (and the staging key, which expires).
      const oldLeft = yield* oldLayoutKeys(prefix)
      expect(oldLeft.filter((key) => !key.includes("staging:"))).toEqual([...leftBehind].sort())
      expect(yield* Effect.promise(() => admin.zrange(old.execution(eA), 0, -1))).toEqual(["not-mine"])

      // A second build is a no-op.
      const before = yield* snapshot(prefix)
      yield* buildStore(prefix)
      expect(yield* snapshot(prefix)).toEqual(before)
      expect(before.map((x) => x.key)).not.toContain(`${prefix}|migration`)

      // The paused run resumes from Redis: node one does not run again.
      const resumed = yield* Effect.flatMap(
        Graph.compileCheckpointable(stepsGraph, { durability: "sync" }),
        (runnable) => runnable.resume(eA)
      ).pipe(Effect.provide(RedisStore.layer({ url: TEST_URL, prefix })))
      expect(resumed).toEqual({ n: 3, trail: ["one", "two", "three"] })
      expect((yield* s.list(eA)).map((c) => c.nodeName)).toEqual(["__input__", "one", "two", "three"])
      // Versions stay taken, and a conditional save appends.
      expect((yield* Effect.flip(s.save(yield* mk(eB, 5))))._tag).toBe("CheckpointConflict")
      yield* s.save(yield* mk(eC, 601), { expect: { executionId: eC, latestVersion: 600 } })

      yield* Effect.promise(() => admin.del(...oldLeft))
    })))

  it.live("an interrupted migration completes on the next build, even without its progress key; three processes building at once share the work", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* ownedPrefix
      const old = oldKeysOf(prefix)
      const k = keysOf(prefix)
      const executions = yield* Effect.forEach([1, 2, 3, 4], (i) => freshExecution(`m${i}`))
      const all = yield* Effect.forEach(executions, (e) =>
        Effect.forEach(Array.from({ length: 150 }, (_, i) => i + 1), (v) => mk(e, v)))
      // Written by a 0.1.0 store with a ttl: every key expires.
      for (const cps of all) yield* writeOld(prefix, cps, { ttlMs: 3_600_000, executionsExpire: true })
      const first = Number(yield* Effect.promise(() => admin.zrange(old.executions, 0, 0)).pipe(Effect.map((x) => executions.indexOf(x[0] as Checkpoint.ExecutionId))))

      // The first step only (budget 50: the execution and 49 of its checkpoints), then the process "dies".
      expect(yield* migrateStep(prefix, 50)).toBe(1)
      expect(yield* Effect.promise(() => admin.zcard(k.execution(executions[first]!)))).toBe(49)
      expect(yield* Effect.promise(() => admin.zcard(old.execution(executions[first]!)))).toBe(101)
      const progress = yield* Effect.promise(() => admin.pttl(`${prefix}|migration`))
      expect(progress).toBeGreaterThan(0)
      expect(progress).toBeLessThanOrEqual(3_600_000)
      // Its progress key is lost (it expired): the next step only looks at some members again.
      yield* Effect.promise(() => admin.del(`${prefix}|migration`))
      expect(yield* migrateStep(prefix, 30)).toBe(1)
      expect(yield* Effect.promise(() => admin.zcard(k.execution(executions[first]!)))).toBe(78)

      // Three processes build at once: each waits for the migration to be done, and nothing is lost or doubled.
      const stores = yield* Effect.all([buildStore(prefix), buildStore(prefix), buildStore(prefix)], { concurrency: "unbounded" })
      for (const s of stores) {
        expect((yield* s.listExecutions()).map((x) => [x.executionId, x.latestVersion]).sort()).toEqual(
          executions.map((e) => [e, 150]).sort()
        )
      }
      for (const cps of all) expect((yield* stores[0]!.list(cps[0]!.executionId)).map(view)).toEqual(cps.map(view))
      expect(yield* oldLayoutKeys(prefix)).toEqual([])
      for (const key of [k.executions, ...executions.map(k.execution), k.checkpoint(all[0]![0]!.id)]) {
        expect(yield* Effect.promise(() => admin.pttl(key)), key).toBeGreaterThan(3_000_000)
      }
      expect(yield* Effect.promise(() => admin.exists(`${prefix}|migration`))).toBe(0)
    })))

  it.live("the migration moves only what the old keys say is the store's own: nested 0.1.0 stores that shared keys each get theirs", () =>
    Effect.scoped(Effect.gen(function*() {
      const parent = shortPrefix()
      // A and B shared one old index: A's execution "a:checkpoints:execution:b" and B's execution "b".
      const pA = parent
      const pB = `${parent}execution:a:checkpoints:`
      // D's old executions key was E's document of checkpoint "x:executions".
      const pD = `${parent}q:checkpoint:x:`
      const pE = `${parent}q:`
      // B's checkpoint "x:checkpoint:c1" sits in the shared index; where A would look for its document is C's document of "c1".
      const pC = `${parent}checkpoint:x:`
      const all = [pA, pB, pC, pD, pE]
      yield* Effect.addFinalizer(() =>
        Effect.orDie(Effect.zipRight(Effect.forEach(all, removeByIndex), nothingLeftUnder(parent))))
      const ofA = yield* Effect.forEach([1, 2], (v) => mk("a:checkpoints:execution:b", v, { id: `a-${v}` }))
      const ofB = [
        ...yield* Effect.forEach([1, 2, 3], (v) => mk("b", v, { id: `b-${v}` })),
        yield* mk("b", 4, { id: "x:checkpoint:c1" })
      ]
      const ofC = yield* mk("cc", 1, { id: "c1" })
      const ofE = yield* mk("ee", 1, { id: "x:executions" })
      yield* writeOld(pA, ofA)
      yield* writeOld(pB, ofB)
      yield* writeOld(pC, [ofC])
      yield* writeOld(pE, [ofE])
      const shared = oldKeysOf(pA).execution("a:checkpoints:execution:b")
      expect(shared).toBe(oldKeysOf(pB).execution("b"))
      expect(yield* Effect.promise(() => admin.zcard(shared))).toBe(6)
      expect(oldKeysOf(pA).checkpoint("x:checkpoint:c1")).toBe(oldKeysOf(pC).checkpoint("c1"))
      expect(oldKeysOf(pD).executions).toBe(oldKeysOf(pE).checkpoint("x:executions"))

      const A = yield* buildStore(pA)
      expect((yield* A.list("a:checkpoints:execution:b" as Checkpoint.ExecutionId)).map(view)).toEqual(ofA.map(view))
      expect((yield* A.listExecutions()).map((x) => x.executionId)).toEqual(["a:checkpoints:execution:b"])
      // B's old data is untouched: its members of the shared index, its documents, its executions set.
      expect(yield* Effect.promise(() => admin.zrange(shared, 0, -1))).toEqual(["b-1", "b-2", "b-3", "x:checkpoint:c1"])
      for (const cp of ofB) expect(yield* Effect.promise(() => admin.exists(oldKeysOf(pB).checkpoint(cp.id)))).toBe(1)
      expect(yield* Effect.promise(() => admin.zrange(oldKeysOf(pB).executions, 0, -1))).toEqual(["b"])
      // D finds a string where its old executions set would be: not its own, not touched.
      const textOfE = yield* Effect.promise(() => admin.get(oldKeysOf(pE).checkpoint("x:executions")))
      const D = yield* buildStore(pD)
      expect(yield* D.listExecutions()).toEqual([])
      expect(yield* Effect.promise(() => admin.get(oldKeysOf(pE).checkpoint("x:executions")))).toBe(textOfE)

      const B = yield* buildStore(pB)
      expect((yield* B.list("b" as Checkpoint.ExecutionId)).map(view)).toEqual(ofB.map(view))
      const C = yield* buildStore(pC)
      expect(view(yield* C.load("c1" as Checkpoint.CheckpointId))).toEqual(view(ofC))
      const E = yield* buildStore(pE)
      expect(view(yield* E.load("x:executions" as Checkpoint.CheckpointId))).toEqual(view(ofE))
      // A is unchanged by B's and E's migrations, and nothing of the old layout is left.
      expect((yield* A.list("a:checkpoints:execution:b" as Checkpoint.ExecutionId)).map(view)).toEqual(ofA.map(view))
      expect(yield* oldLayoutKeys(parent)).toEqual([])
    })))
})

// -----------------------------------------------------------------------------
// listExecutions: bounded pages
// -----------------------------------------------------------------------------

describe("RedisStore listExecutions in bounded pages", () => {
  /** What the store sent for one operation, read through a recording proxy. */
  const sentDuring = <A, E>(proxy: { readonly record: () => void; readonly recorded: () => Buffer }, op: Effect.Effect<A, E>) =>
    Effect.gen(function*() {
      proxy.record()
      const result = yield* op
      return { result, sent: commandsIn(proxy.recorded()) }
    })

  /** The ids each page script call was given (`EVALSHA sha 1 executions P bytes id…`). */
  const pageCalls = (sent: ReadonlyArray<ReadonlyArray<string>>) =>
    sent.filter((c) => c[0] === "evalsha").map((c) => {
      expect(c[1]).toBe(SCRIPTS.listPage.sha)
      return c.slice(6)
    })

  /** A checkpoint document in the store's encoding, written by hand (fast for tens of thousands). */
  const rawDoc = (id: string, executionId: string, version: number) =>
    `{"id":"${id}","executionId":"${executionId}","nodeName":"n${version}","version":${version},` +
    `"timestamp":"2026-01-01T00:00:00.000Z","next":["n${version + 1}"],"metadata":{},"state":{"v":${version}}}`

  /**
   * Writes `n` executions with raw pipelined commands: execution i has version 1, and version 2 when
   * i % 5 == 0; its newest document is missing when i % 7 == 0, and every document when i % 11 == 0
   * (as when keys expired). Returns each listable execution's newest live checkpoint.
   */
  const writeExecutions = (prefix: string, run: string, n: number) =>
    Effect.promise(async () => {
      const k = keysOf(prefix)
      const expected = new Map<string, { readonly version: number; readonly id: string }>()
      for (let from = 0; from < n; from += 2000) {
        const p = admin.pipeline()
        for (let i = from; i < Math.min(n, from + 2000); i++) {
          const e = `${run}-${i}`
          const versions = i % 5 === 0 ? [1, 2] : [1]
          const live = i % 11 === 0 ? [] : i % 7 === 0 ? versions.slice(0, -1) : versions
          p.zadd(k.executions, Date.now(), e)
          for (const v of versions) p.zadd(k.execution(e), v, `${e}.v${v}`)
          for (const v of live) p.set(k.checkpoint(`${e}.v${v}`), rawDoc(`${e}.v${v}`, e, v))
          const newest = live[live.length - 1]
          if (newest !== undefined) expected.set(e, { version: newest, id: `${e}.v${newest}` })
        }
        await p.exec()
      }
      return expected
    })

  it.live("20,000 executions: all listed, each read once, in many calls of at most LIST_PAGE executions each", () =>
    Effect.scoped(Effect.gen(function*() {
      const proxy = yield* redisProxy(target)
      const prefix = yield* ownedPrefix
      const k = keysOf(prefix)
      const s = Context.get(
        yield* Layer.build(RedisStore.layer({ host: "127.0.0.1", port: proxy.port, db: target.db, prefix })),
        store
      )
      const n = 20_000
      const run = yield* freshExecution("many")
      const expected = yield* writeExecutions(prefix, run, n)
      const { result: listed, sent } = yield* sentDuring(proxy, s.listExecutions())
      expect(listed.length).toBe(expected.size)
      for (const x of listed) {
        const want = expected.get(x.executionId)
        if (want?.version !== x.latestVersion || want.id !== x.latestCheckpointId) {
          expect({ version: x.latestVersion, id: x.latestCheckpointId }, x.executionId).toEqual(want)
        }
      }
      // Executions with nothing live left the set (and their indexes emptied).
      expect(yield* Effect.promise(() => admin.zcard(k.executions))).toBe(expected.size)
      expect(yield* Effect.promise(() => admin.exists(k.execution(`${run}-0`)))).toBe(0)
      // Bounded calls: ZSCANs of LIST_PAGE, page scripts of at most LIST_PAGE ids; every execution read once.
      expect(new Set(sent.map((c) => c[0]))).toEqual(new Set(["zscan", "evalsha"]))
      for (const c of sent.filter((c) => c[0] === "zscan")) expect(c.slice(3)).toEqual(["COUNT", String(LIST_PAGE)])
      const pages = pageCalls(sent)
      expect(pages.every((ids) => ids.length <= LIST_PAGE)).toBe(true)
      expect(pages.length).toBeGreaterThanOrEqual(Math.ceil(n / LIST_PAGE))
      expect(pages.flat().length).toBe(n)
      expect(new Set(pages.flat()).size).toBe(n)
    })))

  it.live("while another connection saves (new versions, new executions), a walk misses no execution and lists each once", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* ownedPrefix
      const s = Context.get(yield* Layer.build(RedisStore.layer({ url: TEST_URL, prefix })), store)
      const writer = Context.get(yield* Layer.build(RedisStore.layer({ url: TEST_URL, prefix })), store)
      const run = yield* freshExecution("busy")
      const expected = yield* writeExecutions(prefix, run, 3000)
      const touched = [...expected.keys()].filter((_, i) => i % 5 === 0)
      const fresh = yield* Effect.forEach(Array.from({ length: 200 }, (_, i) => i), (i) => mk(`${run}-new-${i}`, 1))
      const saves = yield* Effect.fork(Effect.all([
        Effect.forEach(touched, (e) => Effect.flatMap(mk(e, 3), (cp) => writer.save(cp)), { concurrency: 4 }),
        Effect.forEach(fresh, (cp) => writer.save(cp), { concurrency: 4 })
      ], { concurrency: 2 }))
      const during = yield* s.listExecutions()
      yield* Fiber.join(saves)
      const seen = during.map((x) => x.executionId)
      expect(new Set(seen).size).toBe(seen.length)
      const byId = new Map(during.map((x) => [x.executionId as string, x.latestVersion]))
      const missed = [...expected].filter(([e, { version }]) => byId.get(e) !== version && byId.get(e) !== 3)
      expect(missed).toEqual([])
      expect((yield* s.listExecutions()).length).toBe(expected.size + fresh.length)
    })))

  it.live("a page of large documents is read in several calls, each stopping once it read LIST_PAGE_BYTES", () =>
    Effect.scoped(Effect.gen(function*() {
      const proxy = yield* redisProxy(target)
      const prefix = yield* ownedPrefix
      const s = Context.get(
        yield* Layer.build(RedisStore.layer({ host: "127.0.0.1", port: proxy.port, db: target.db, prefix })),
        store
      )
      const size = 300_000
      const cps = yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) =>
        Effect.flatMap(freshExecution(`big${i}`), (e) => mkLarge(e, 1, size)))
      yield* s.saveMany(cps)
      const { result: listed, sent } = yield* sentDuring(proxy, s.listExecutions())
      expect(listed.map((x) => x.latestCheckpointId).sort()).toEqual(cps.map((c) => c.id).sort())
      const pages = pageCalls(sent)
      // 10 documents of 300 KB, at most LIST_PAGE_BYTES (plus one document) a call: several calls, each going on where the last stopped.
      expect(pages.length).toBeGreaterThanOrEqual(Math.ceil((10 * size) / (LIST_PAGE_BYTES + size)))
      for (let i = 1; i < pages.length; i++) {
        expect(pages[i]!.length).toBeLessThan(pages[i - 1]!.length)
        expect(pages[i - 1]!.slice(-pages[i]!.length)).toEqual(pages[i])
      }
    })))
})
