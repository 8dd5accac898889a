/**
 * The Redis store against the real server (TEST_REDIS_URL, default
 * redis://127.0.0.1:6379/0). Every test owns a unique key prefix
 * `ec-test:redis:<uuid>:` and removes its keys through its own index sets when
 * its scope closes (never FLUSHDB, never KEYS). A final `SCAN MATCH` on that
 * unique prefix checks that nothing was left outside the indexes — staging keys
 * of large documents included, except in the fault tests that cut a save
 * between its staging `SET` and its script, where they must expire.
 */
import { afterAll, expect } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Redis } from "ioredis"
import { randomUUID } from "node:crypto"
import * as RedisStore from "../src/layers/Redis.js"
import { conformance, StoreTestKit } from "../src/testing.js"

const TEST_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/0"
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
    corrupt: (cp) => Effect.promise(() => admin.set(keysOf(prefix).checkpoint(cp.id), `{"id":${JSON.stringify(cp.id)},"state":`))
  })

/** A fresh store on a fresh prefix, plus its corruption kit. */
const redisUnderTest = Layer.unwrapScoped(
  Effect.map(ownedPrefix, (prefix) => Layer.merge(RedisStore.layer({ url: TEST_URL, prefix }), kitFor(prefix)))
)

conformance("Redis", redisUnderTest)
