/**
 * The Redis checkpoint store, on `ioredis`: the fast shared store, with an
 * optional time-to-live.
 *
 * Keys (every name is the store's `prefix`, a `|`, then its type):
 *
 * - `{prefix}|c|{id}` (string): the checkpoint as one JSON document
 * - `{prefix}|x|{executionId}` (sorted set): the ids of the execution's checkpoints, scored by version
 * - `{prefix}|executions` (sorted set): the execution ids, scored by the time of their last save (epoch ms)
 * - `{prefix}|s|{uuid}` (string): a large document on its way in (see below); gone when its save ends, or 60 s after a crash
 * - `{prefix}|migration` (string): only while a migration from the 0.1.0 layout is unfinished (expires after an hour)
 *
 * Neither prefixes nor ids can hold a `|`, so a key names its prefix (the text
 * before its first `|`): two stores with different prefixes never share a key,
 * even when one prefix starts with the other (`p:` and `p:checkpoint:`).
 *
 * Every operation but `listExecutions` is one round trip: `load` is one `GET`;
 * every other operation is one Lua script (`EVALSHA`), so a write is atomic —
 * the `(executionId, version)` and `id` checks and the writes of a save or of
 * a whole `saveMany` batch happen together or not at all. `clear` and `prune`
 * find their keys through the execution's sorted set, never with `KEYS` or
 * `SCAN`. `listExecutions` walks the executions set in pages (`ZSCAN`, and a
 * short script per page of 128 executions that reads their newest
 * checkpoints), so no call keeps Redis busy for long, however many executions
 * there are; every execution that exists for the whole walk is listed once.
 *
 * The 0.1.0 layout (`{prefix}checkpoint:{id}`,
 * `{prefix}execution:{executionId}:checkpoints`, `{prefix}executions`) was
 * ambiguous when prefixes nest. Building a store that finds it under its
 * prefix migrates it first, in short atomic steps through the old indexes
 * (never `KEYS` or `SCAN`), moving only the checkpoints whose document says
 * they belong there; it is safe to interrupt and to run from several processes
 * at once. See the README.
 *
 * Large documents (over 16 K characters) do not travel as a script argument
 * (Redis would copy them into Lua and out again: 3.5× a plain `SET` at 1 MB):
 * the save is one pipeline — still one round trip — of a `SET` of each large
 * document to its own staging key (`PX` 60 s), then the `EVALSHA`, which makes
 * the same checks and `RENAME`s each staging key into place (no copy), or,
 * when it does not save, deletes them. Readers never see a staging key, and a
 * save is still all or nothing: a connection lost between the `SET` and the
 * script leaves at most a staging key that expires, never a checkpoint without
 * its index entry or the reverse.
 *
 * Conditional saves (`expect`) are checked inside the same script, so the
 * check and the write are one atomic step and one round trip. The newest
 * version of an execution is what `latest` would return: the highest version
 * in its index whose checkpoint key still exists. Index entries whose key
 * expired (ttl) or vanished are skipped (and removed, as reads do); an
 * execution whose checkpoints all expired is empty (`latestVersion: 0`), while
 * one whose older versions were pruned or deleted is at its newest remaining
 * version. A failed expectation reports that version as `actualLatestVersion`.
 *
 * With a `ttl`, every save sets it on the checkpoint's key and (re)sets it on
 * the execution's sorted set and on the executions set: a checkpoint is gone
 * `ttl` after it was saved; the indexes live until `ttl` after the last save.
 * A checkpoint whose key expired (or vanished any other way) is gone, not
 * corrupt: `list`, `latest` and `listExecutions` skip it and remove it from
 * the index, and its version can be saved again.
 *
 * The store needs a standalone Redis (or the primary of a replicated one),
 * 5.0 or newer (tested with 7.0); Redis Cluster is not supported (a script
 * touches keys that can live in different slots). Durability is the server's:
 * with no persistence, a restart of Redis loses every checkpoint; with
 * `appendonly yes` and `appendfsync always`, an acknowledged save survives a
 * crash.
 *
 * Failures: when the connection drops, every operation in flight fails at
 * once with `CheckpointStoreError` and is never sent again by the client (a
 * save whose reply was lost may or may not have landed — never half: a retry
 * reports `CheckpointConflict` if it did); reads are sent once more by the
 * store. A server that does not answer fails an operation after
 * `commandTimeout`. The client reconnects by itself.
 *
 * @since 0.1.0
 */
import { Config, Duration, Effect, identity, Layer, Option, Redacted } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import { randomUUID } from "node:crypto"
import * as Checkpoint from "../Checkpoint.js"
import {
  CheckpointConflict,
  CheckpointDecodeError,
  type CheckpointStoreError,
  type InvalidIdentifier
} from "../CheckpointError.js"
import * as CheckpointStore from "../CheckpointStore.js"
import { checkPrefix, isValidId } from "../internal/identifier.js"
import { keysOf, LIST_PAGE, LIST_PAGE_BYTES, MIGRATE_BATCH, type Script, SCRIPTS } from "../internal/redisScripts.js"
import { storeError } from "../internal/storeError.js"

const BACKEND = "redis"

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/**
 * What the store does with the keys, whatever the connection.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoreOptions {
  /**
   * Prepended to every key (`[A-Za-z0-9_:.-]{0,64}`, e.g. `"myapp:"`); two
   * stores with different prefixes never see each other. Default `""`.
   */
  readonly prefix?: string | undefined
  /**
   * How long a saved checkpoint lives. Unset, zero or infinite: forever.
   * Counted from each save; see the module documentation.
   */
  readonly ttl?: Duration.DurationInput | undefined
}

/**
 * How the store's own client connects and how long it waits.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientOptions {
  /** The name the connection gets (`CLIENT SETNAME`), to find it in `CLIENT LIST`. Default `"effect-checkpoint"`. */
  readonly connectionName?: string | undefined
  /** How long to wait for the server to accept a connection. Default 5 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /**
   * How long one operation waits for its reply before it fails with
   * `CheckpointStoreError` (a stalled server or network). Default 5 seconds.
   */
  readonly commandTimeout?: Duration.DurationInput | undefined
}

/**
 * Connect with a URL: `redis://[[username]:password@]host[:port][/db]`,
 * `rediss://…` for TLS, or a plain `host:port`.
 *
 * @since 0.1.0
 * @category models
 */
export interface UrlOptions {
  readonly url: string | Redacted.Redacted<string>
}

/**
 * Connect with separate fields (the reference's `Addr`, `Password`, `DB`).
 *
 * @since 0.1.0
 * @category models
 */
export interface HostOptions {
  /** Default `"localhost"`. */
  readonly host?: string | undefined
  /** Default `6379`. */
  readonly port?: number | undefined
  readonly username?: string | undefined
  readonly password?: string | Redacted.Redacted<string> | undefined
  /** The database number. Default `0`. */
  readonly db?: number | undefined
}

/**
 * Options of {@link layer}: a connection (a URL or host fields), the store's
 * key prefix and ttl, and the client's timeouts.
 *
 * @since 0.1.0
 * @category models
 */
export type Options = (UrlOptions | HostOptions) & StoreOptions & ClientOptions

/**
 * Documents longer than this (in UTF-16 code units, ~bytes for JSON) do not
 * travel as a script argument, which Redis copies into Lua and out again: the
 * save's pipeline first `SET`s them to a staging key, and the script `RENAME`s
 * that key into place. Measured on Redis 7 over loopback: a save takes as long
 * either way at 12–16 KB; below, the extra command of the pipeline costs more
 * (+15–25 µs at 1–4 KB) than the copy it saves; above, staging is faster
 * (−20–30% from 64 KB to 1 MB, where the save is then at the raw `SET` plus
 * the JSON encoding).
 */
const STAGE_ABOVE = 16 * 1024

/**
 * How long a staging key lives if its script never runs (the connection
 * dropped between the `SET` and the `EVALSHA`): it only has to outlive the gap
 * between two commands of one pipeline.
 */
const STAGING_TTL_MS = 60_000

/** Where a `listExecutions` walk stands. */
interface ListWalk {
  /** The `ZSCAN` cursor of the executions set; `undefined` once the scan is over. */
  cursor: string | undefined
  /** Scanned ids not read yet. */
  pending: Array<string>
  /** Every id scanned so far. */
  readonly queued: Set<string>
  /** Each execution with a live checkpoint: its newest one's id, version and document. */
  readonly found: Map<string, readonly [unknown, unknown, unknown]>
}

/** A document sent ahead of its save script, to `{prefix}|s|{uuid}`. */
interface Staged {
  readonly key: string
  readonly document: string
}

// -----------------------------------------------------------------------------
// The store
// -----------------------------------------------------------------------------

const isNoScript = (e: unknown): boolean => e instanceof Error && e.message.startsWith("NOSCRIPT")
const isWrongType = (e: unknown): boolean => e instanceof Error && e.message.startsWith("WRONGTYPE")
/** The server answered with an error (the connection is fine). */
const isReplyError = (e: unknown): boolean => e instanceof Error && e.name === "ReplyError"
/**
 * The connection closed under a command that was sent (or queued): ioredis
 * fails it at once (`maxRetriesPerRequest: 0`) instead of sending it again.
 */
const isConnectionDrop = (e: unknown): boolean =>
  e instanceof Error && (e.name === "MaxRetriesPerRequestError" || e.message === "Connection is closed.")

/** Runs a read once more if the connection dropped under it (cheaper than `Effect.retry` on the hot path). */
const onceMoreIfDropped = <A>(read: Effect.Effect<A, unknown>): Effect.Effect<A, unknown> =>
  Effect.catchIf(read, isConnectionDrop, () => read)

/** Milliseconds of a ttl (0 = never expires), or why it is not one. */
const ttlMillis = (ttl: Duration.DurationInput | undefined): number | string => {
  if (ttl === undefined) return 0
  const decoded = Duration.decodeUnknown(ttl)
  if (Option.isNone(decoded)) return `ttl is not a duration: ${String(ttl)}`
  const ms = Duration.toMillis(decoded.value)
  return Number.isFinite(ms) && ms > 0 ? Math.ceil(ms) : 0
}

const timeoutMillis = (name: string, value: Duration.DurationInput | undefined, fallback: number): number | string => {
  if (value === undefined) return fallback
  const decoded = Duration.decodeUnknown(value)
  if (Option.isNone(decoded)) return `${name} is not a duration: ${String(value)}`
  const ms = Duration.toMillis(decoded.value)
  return Number.isFinite(ms) && ms > 0 ? Math.ceil(ms) : `${name} must be a positive, finite duration`
}

/** What a store knows about the client it runs on. */
interface ClientContext {
  /** Strings that must never appear in an error (passwords). */
  readonly secrets: ReadonlyArray<string>
  /** The last connection error the client reported, if the store listens for them. */
  readonly lastError: () => Error | undefined
}

const configError = (message: string) => storeError(BACKEND, "config", new Error(message))

/** Builds the store over a connected (or lazily connecting) client. */
const makeWith = (
  client: Redis,
  options: StoreOptions,
  context: ClientContext
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier> =>
  Effect.gen(function*() {
    const prefix = options.prefix ?? ""
    const prefixError = checkPrefix(prefix)
    if (prefixError !== undefined) return yield* Effect.fail(prefixError)
    const ttl = ttlMillis(options.ttl)
    if (typeof ttl === "string") return yield* Effect.fail(configError(ttl))
    const ttlArg = String(ttl)
    // ioredis adds its `keyPrefix` to the keys it is given (KEYS of a script, GET);
    // keys built inside a script from an index member need it spelled out.
    const fullPrefix = (client.options.keyPrefix ?? "") + prefix
    const layout = keysOf(prefix)
    const checkpointKey = layout.checkpoint
    const executionKey = layout.execution
    const executionsKey = layout.executions

    const fail = (operation: string) => (cause: unknown): CheckpointStoreError => {
      if (!(cause instanceof Error)) return storeError(BACKEND, operation, cause, context.secrets)
      const dropped = isConnectionDrop(cause)
      // A lost or stalled connection says little by itself: add what the client last saw (ECONNREFUSED …).
      const last = dropped || cause.message === "Command timed out" ? context.lastError() : undefined
      const text = dropped ? "the connection to Redis was lost or could not be made" : cause.message
      const enriched = dropped || last !== undefined
        ? Object.assign(new Error(last === undefined ? text : `${text} (last connection error: ${last.message})`), {
          name: cause.name,
          code: (cause as { code?: unknown }).code ?? (last as { code?: unknown } | undefined)?.code
        })
        : cause
      return storeError(BACKEND, operation, enriched, context.secrets)
    }

    /** One EVALSHA; loads the script with EVAL if the server does not know it (a restart flushed its cache). */
    const evalScript = (s: Script, keys: ReadonlyArray<string>, args: ReadonlyArray<string>): Promise<unknown> =>
      client.evalsha(s.sha, keys.length, ...keys, fullPrefix, ...args).then(
        undefined,
        (e: unknown) => isNoScript(e) ? client.eval(s.lua, keys.length, ...keys, fullPrefix, ...args) : Promise.reject(e)
      )

    /** A write: never sent twice (a lost reply leaves its outcome unknown: it fails). */
    const run = (operation: string, s: Script, keys: ReadonlyArray<string>, args: ReadonlyArray<string>) =>
      Effect.tryPromise({ try: () => evalScript(s, keys, args), catch: fail(operation) })

    /**
     * A save whose large documents go ahead of the script: one pipeline (one
     * round trip) of a `SET … PX` per staged document, then the `EVALSHA`, which
     * moves them into place or removes them. Loads the script with `EVAL` if the
     * server does not know it (the staging keys are still there). When the
     * server answers with an error (a staging key or the script itself failed),
     * the staging keys are removed with one more command; when the connection
     * drops or stalls, they are left to expire.
     */
    const runStaged = (
      operation: string,
      s: Script,
      keys: ReadonlyArray<string>,
      args: ReadonlyArray<string>,
      staged: ReadonlyArray<Staged>
    ) =>
      Effect.tryPromise({
        try: () => {
          const dropStaged = (error: unknown): Promise<never> =>
            isReplyError(error)
              ? client.del(...staged.map((x) => x.key)).then(() => Promise.reject(error), () => Promise.reject(error))
              : Promise.reject(error)
          const pipeline = client.pipeline()
          for (const { document, key } of staged) pipeline.set(key, document, "PX", STAGING_TTL_MS)
          pipeline.evalsha(s.sha, keys.length, ...keys, fullPrefix, ...args)
          return pipeline.exec().then((results) => {
            if (results === null || results.length !== staged.length + 1) {
              return Promise.reject(new Error("Redis returned no reply for the save"))
            }
            // A failed SET (out of memory, a dropped connection) says more than the script's "staged document missing".
            const setError = results.slice(0, staged.length).find(([error]) => error !== null)?.[0]
            const [scriptError, reply] = results[staged.length]!
            if (setError == null && scriptError === null) return reply
            if (setError == null && isNoScript(scriptError)) {
              return client.eval(s.lua, keys.length, ...keys, fullPrefix, ...args).then(undefined, dropStaged)
            }
            return dropStaged(setError ?? scriptError)
          })
        },
        catch: fail(operation)
      })

    /** Where a document goes: inline as the script's argument, or ahead of it to a staging key (returned in `staged`). */
    const documentArg = (document: string, staged: Array<Staged>): string => {
      if (document.length <= STAGE_ABOVE) return document
      const token = randomUUID()
      staged.push({ key: layout.staging(token), document })
      return `*${token}`
    }

    /** A read: sent once more if the connection dropped under it (it changes nothing but stale index entries). */
    const runRead = (operation: string, s: Script, keys: ReadonlyArray<string>, args: ReadonlyArray<string>) =>
      Effect.mapError(onceMoreIfDropped(Effect.tryPromise({ try: () => evalScript(s, keys, args), catch: identity })), fail(operation))

    /** Decodes a document read at `id`'s key from the index of `executionId` at `score`. */
    const decodeAt = (
      id: unknown,
      score: unknown,
      doc: unknown,
      executionId: string
    ): Effect.Effect<Checkpoint.Checkpoint, CheckpointDecodeError> => {
      const name = typeof id === "string" ? id : String(id)
      if (typeof doc !== "string") {
        return Effect.fail(
          new CheckpointDecodeError({ id: name, message: `Stored checkpoint ${JSON.stringify(name)} is not a string value` })
        )
      }
      return Effect.flatMap(Checkpoint.decode(doc, name), (cp) =>
        cp.executionId === executionId && cp.version === Number(score)
          ? Effect.succeed(cp)
          : Effect.fail(
            new CheckpointDecodeError({
              id: name,
              message: `Stored checkpoint ${JSON.stringify(name)} is indexed as ${executionId} version ${
                String(score)
              } but says it is ${cp.executionId} version ${cp.version}`
            })
          ))
    }

    const decodeTriples = (reply: unknown, executionId: string) =>
      Effect.suspend(() => {
        const flat = Array.isArray(reply) ? reply : []
        const out: Array<Effect.Effect<Checkpoint.Checkpoint, CheckpointDecodeError>> = []
        for (let i = 0; i + 2 < flat.length; i += 3) out.push(decodeAt(flat[i], flat[i + 1], flat[i + 2], executionId))
        return Effect.all(out)
      })

    const read = (operation: string, executionId: string, newestFirst: boolean, bound: string, limit: number) =>
      Effect.flatMap(
        runRead(operation, SCRIPTS.read, [executionKey(executionId)], [newestFirst ? "1" : "0", bound, String(limit)]),
        (reply) => decodeTriples(reply, executionId)
      )

    const conflictOf = (cp: Checkpoint.Checkpoint) =>
      new CheckpointConflict({ executionId: cp.executionId, version: cp.version, id: cp.id })

    // Warm the server's script cache (and check the connection): saves then run with EVALSHA only.
    yield* Effect.tryPromise({
      try: () => {
        const pipeline = client.pipeline()
        for (const s of Object.values(SCRIPTS)) pipeline.script("LOAD", s.lua)
        return pipeline.exec().then((results) => {
          const error = results?.find(([e]) => e !== null)?.[0]
          return error ? Promise.reject(error) : undefined
        })
      },
      catch: fail("connect")
    })

    // Data of the 0.1.0 layout under this prefix moves to this one, in short steps, before the store serves.
    let more = true
    yield* Effect.whileLoop({
      while: () => more,
      body: () => run("migrate", SCRIPTS.migrate, [], [String(MIGRATE_BATCH)]),
      step: (reply) => {
        more = reply === 1
      }
    })

    /**
     * One round trip of `listExecutions`: the page script on up to
     * {@link LIST_PAGE} ids scanned before, pipelined with the `ZSCAN` of the
     * next ids. The state changes only when the whole round trip succeeded, so
     * it can be sent again.
     */
    const listStep = (walk: ListWalk): Promise<void> => {
      const page = walk.pending.slice(0, LIST_PAGE)
      const cursor = walk.cursor
      const scan = cursor !== undefined && walk.pending.length - page.length < LIST_PAGE
      const pageArgs = [fullPrefix, String(LIST_PAGE_BYTES), ...page]
      const pipeline = client.pipeline()
      if (page.length > 0) pipeline.evalsha(SCRIPTS.listPage.sha, 1, executionsKey, ...pageArgs)
      if (scan) pipeline.zscan(executionsKey, cursor, "COUNT", LIST_PAGE)
      return pipeline.exec().then((results) => {
        if (results === null || results.length !== (page.length > 0 ? 1 : 0) + (scan ? 1 : 0)) {
          return Promise.reject(new Error("Redis returned no reply for listExecutions"))
        }
        const scanned = scan ? results[results.length - 1]! : undefined
        if (scanned !== undefined && scanned[0] !== null) return Promise.reject(scanned[0])
        const pageReply: Promise<unknown> = page.length === 0
          ? Promise.resolve([0])
          : results[0]![0] === null
          ? Promise.resolve(results[0]![1])
          : isNoScript(results[0]![0])
          ? client.eval(SCRIPTS.listPage.lua, 1, executionsKey, ...pageArgs)
          : Promise.reject(results[0]![0])
        return pageReply.then((reply) => {
          const flat = Array.isArray(reply) ? reply : []
          // The script handles at least one id of a page; it may stop early on a page of large documents.
          const handled = page.length === 0 ? 0 : Math.min(page.length, Math.max(1, Number(flat[0])))
          for (let i = 1; i + 3 < flat.length; i += 4) walk.found.set(String(flat[i]), [flat[i + 1], flat[i + 2], flat[i + 3]])
          walk.pending = walk.pending.slice(handled)
          if (scanned !== undefined) {
            const [next, members] = scanned[1] as [string, Array<string>]
            // ZSCAN may return an id twice: it is read once.
            for (let i = 0; i < members.length; i += 2) {
              const executionId = members[i]!
              if (!walk.queued.has(executionId)) {
                walk.queued.add(executionId)
                walk.pending.push(executionId)
              }
            }
            walk.cursor = next === "0" ? undefined : next
          }
        })
      })
    }

    /**
     * Every execution with its newest live checkpoint, in bounded steps (see
     * {@link LIST_PAGE}): `ZSCAN` returns every execution that is in the set
     * for the whole walk, whatever saves happen meanwhile (an execution saved
     * during the walk is read once, before or after that save).
     */
    const listExecutions = Effect.suspend(() => {
      const walk: ListWalk = { cursor: "0", pending: [], queued: new Set(), found: new Map() }
      return Effect.whileLoop({
        while: () => walk.cursor !== undefined || walk.pending.length > 0,
        body: () => onceMoreIfDropped(Effect.tryPromise({ try: () => listStep(walk), catch: identity })),
        step: () => undefined
      }).pipe(
        Effect.mapError(fail("listExecutions")),
        Effect.zipRight(Effect.suspend(() => {
          const out: Array<Effect.Effect<CheckpointStore.ExecutionSummary, CheckpointDecodeError>> = []
          for (const [executionId, [id, score, doc]] of walk.found) {
            // A member that is not a valid id was not written by a store: it names no checkpoints of ours.
            if (!isValidId(executionId)) continue
            out.push(Effect.map(decodeAt(id, score, doc, executionId), CheckpointStore.summarize))
          }
          return Effect.all(out)
        }))
      )
    })

    /** The failed expectation a save script's reply reports (a negative reply: -1 - the newest version), if any. */
    const expectationOutcome = (reply: unknown, expect: CheckpointStore.Expectation | undefined) =>
      expect !== undefined && typeof reply === "number" && reply < 0
        ? CheckpointStore.expectationFailed(expect, -reply - 1)
        : undefined

    return CheckpointStore.make({
      insertOne: (e, expect) => {
        const cp = e.checkpoint
        return Effect.clockWith((clock) => {
          const keys = [checkpointKey(cp.id), executionKey(cp.executionId), executionsKey]
          const staged: Array<Staged> = []
          const args = [
            cp.id,
            cp.executionId,
            String(cp.version),
            documentArg(e.document, staged),
            ttlArg,
            String(clock.unsafeCurrentTimeMillis())
          ]
          if (expect !== undefined) {
            keys.push(executionKey(expect.executionId))
            args.push(String(expect.latestVersion))
          }
          return Effect.flatMap(
            staged.length === 0 ? run("save", SCRIPTS.save, keys, args) : runStaged("save", SCRIPTS.save, keys, args, staged),
            (saved) => {
              if (saved === 1) return Effect.void
              return Effect.fail(expectationOutcome(saved, expect) ?? conflictOf(cp))
            }
          )
        })
      },
      insert: (batch, expect) =>
        Effect.clockWith((clock) => {
          const keys = [executionsKey]
          const args: Array<string> = [ttlArg, String(clock.unsafeCurrentTimeMillis())]
          if (expect !== undefined) {
            keys.push(executionKey(expect.executionId))
            args.push(String(expect.latestVersion))
          }
          const staged: Array<Staged> = []
          for (const { checkpoint: cp, document } of batch) {
            args.push(cp.id, cp.executionId, String(cp.version), documentArg(document, staged))
          }
          return Effect.flatMap(
            staged.length === 0
              ? run("saveMany", SCRIPTS.saveMany, keys, args)
              : runStaged("saveMany", SCRIPTS.saveMany, keys, args, staged),
            (at): Effect.Effect<void, CheckpointConflict | CheckpointStoreError> => {
              if (at === 0) return Effect.void
              const unmet = expectationOutcome(at, expect)
              if (unmet !== undefined) return Effect.fail(unmet)
              const conflicting = typeof at === "number" && at > 0 ? batch[at - 1] : undefined
              return conflicting === undefined
                ? Effect.fail(storeError(BACKEND, "saveMany", new Error(`unexpected reply from the save script: ${String(at)}`)))
                : Effect.fail(conflictOf(conflicting.checkpoint))
            }
          )
        }),
      load: (id) =>
        onceMoreIfDropped(Effect.tryPromise({ try: () => client.get(checkpointKey(id)), catch: identity })).pipe(
          Effect.mapError((e) =>
            isWrongType(e)
              ? new CheckpointDecodeError({ id, message: `Stored checkpoint ${JSON.stringify(id)} is not a string value` })
              : fail("load")(e)
          ),
          Effect.flatMap((text) => text === null ? Effect.succeedNone : Effect.asSome(Checkpoint.decode(text, id)))
        ),
      list: (executionId, afterVersion, limit) =>
        read(
          "list",
          executionId,
          false,
          afterVersion === -Infinity ? "-inf" : `(${afterVersion}`,
          limit === undefined || limit > Checkpoint.MAX_VERSION ? -1 : limit
        ),
      latest: (executionId) =>
        Effect.map(read("latest", executionId, true, "+inf", 1), (found) => Option.fromNullable(found[0])),
      listExecutions,
      delete: (id) => Effect.asVoid(run("delete", SCRIPTS.delete, [checkpointKey(id)], [id])),
      clear: (executionId) =>
        Effect.asVoid(run("clear", SCRIPTS.clear, [executionKey(executionId), executionsKey], [executionId])),
      prune: (executionId, keep) =>
        Effect.map(
          run("prune", SCRIPTS.prune, [executionKey(executionId), executionsKey], [executionId, String(keep)]),
          (removed) => typeof removed === "number" ? removed : Number(removed)
        )
    })
  })

/**
 * A store over an existing ioredis client, which stays yours: the store never
 * closes it. The client's `keyPrefix` (if any) comes before the store's
 * `prefix`. Give the client a bounded `maxRetriesPerRequest` and a
 * `commandTimeout` if operations must fail fast when Redis is down.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  client: Redis,
  options: StoreOptions = {}
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier> => {
  const password = client.options.password
  return makeWith(client, options, {
    secrets: typeof password === "string" && password.length > 0 ? [password] : [],
    lastError: () => undefined
  })
}

/** The password of a URL, as typed and decoded, for redaction. */
const urlSecrets = (url: string): Array<string> => {
  const match = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/@]*?:([^@/]*)@/.exec(url)
  if (match === null || match[1] === undefined || match[1].length === 0) return []
  const raw = match[1]
  let decoded = raw
  try {
    decoded = decodeURIComponent(raw)
  } catch {
    // keep the raw form
  }
  return decoded === raw ? [raw] : [raw, decoded]
}

/** A new client of our own (not connected yet), with the secrets to redact and a way to read its last error. */
const newClient = (options: Options): Effect.Effect<{ readonly client: Redis } & ClientContext, CheckpointStoreError> =>
  Effect.gen(function*() {
    const connectTimeout = timeoutMillis("connectTimeout", options.connectTimeout, 5_000)
    if (typeof connectTimeout === "string") return yield* Effect.fail(configError(connectTimeout))
    const commandTimeout = timeoutMillis("commandTimeout", options.commandTimeout, 5_000)
    if (typeof commandTimeout === "string") return yield* Effect.fail(configError(commandTimeout))
    const given = "url" in options && options.url !== undefined
      ? (Redacted.isRedacted(options.url) ? Redacted.value(options.url) : options.url)
      : undefined
    // A plain `host:port` (or `:password@host:port`) becomes a redis:// URL, so its password is found and redacted.
    const url = given === undefined || /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(given) || given.startsWith("/")
      ? given
      : `redis://${given}`
    const fields: HostOptions = "url" in options ? {} : options
    const password = fields.password === undefined
      ? undefined
      : Redacted.isRedacted(fields.password)
      ? Redacted.value(fields.password)
      : fields.password
    const secrets = [...(url === undefined ? [] : urlSecrets(url)), ...(password ? [password] : [])]
    const settings: RedisOptions = {
      lazyConnect: true,
      connectTimeout,
      commandTimeout,
      // When the connection drops, every command sent or queued on it fails at once (a dead server
      // fails fast), and is never sent again by ioredis: a save that may have run must not run twice
      // (it would report a conflict with itself). The store sends a dropped READ once more itself.
      // A command issued while reconnecting waits for that one reconnection.
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      connectionName: options.connectionName ?? "effect-checkpoint",
      ...(fields.host === undefined ? {} : { host: fields.host }),
      ...(fields.port === undefined ? {} : { port: fields.port }),
      ...(fields.username === undefined ? {} : { username: fields.username }),
      ...(password === undefined ? {} : { password }),
      ...(fields.db === undefined ? {} : { db: fields.db })
    }
    let lastError: { readonly error: Error; readonly at: number } | undefined
    const client = yield* Effect.try({
      try: () => url === undefined ? new Redis(settings) : new Redis(url, settings),
      catch: (e) => storeError(BACKEND, "connect", e, secrets)
    })
    // Without a listener, ioredis would print every connection error; they surface in typed errors instead.
    client.on("error", (e: unknown) => {
      if (e instanceof Error) lastError = { error: e, at: Date.now() }
    })
    client.on("ready", () => {
      lastError = undefined
    })
    return {
      client,
      secrets,
      lastError: () => lastError !== undefined && Date.now() - lastError.at < 60_000 ? lastError.error : undefined
    }
  })

/** Connects our own client; the scope quits it. */
const acquire = (options: Options) =>
  Effect.acquireRelease(
    Effect.flatMap(newClient(options), (owned) =>
      Effect.tryPromise({
        try: () => owned.client.connect(),
        catch: (e) => {
          const last = owned.lastError()
          const cause = last !== undefined && e instanceof Error && e.message !== last.message
            ? Object.assign(new Error(`${last.message} (${e.message})`), { code: (last as { code?: unknown }).code })
            : e
          return storeError(BACKEND, "connect", cause, owned.secrets)
        }
      }).pipe(
        // A failed connect would go on reconnecting in the background: stop it.
        Effect.tapError(() => Effect.sync(() => owned.client.disconnect())),
        Effect.as(owned)
      )),
    ({ client }) =>
      Effect.promise(() => client.quit().catch(() => undefined)).pipe(
        Effect.timeoutOption(Duration.seconds(2)),
        Effect.ensuring(Effect.sync(() => client.disconnect()))
      )
  )

/**
 * A Redis store on a client it creates, connects, and quits when the layer's
 * scope closes (the reference's `NewRedisCheckpointStore`). Building the layer
 * fails with `InvalidIdentifier` for a bad prefix and `CheckpointStoreError`
 * (operation `"connect"`) when Redis cannot be reached; no error ever contains
 * the password.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RedisStore } from "effect-checkpoint/redis"
 *
 * const StoreLive = RedisStore.layer({ url: "redis://localhost:6379/0", prefix: "myapp:", ttl: "1 hour" })
 * program.pipe(Effect.provide(StoreLive))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier> =>
  Layer.scoped(
    CheckpointStore.CheckpointStore,
    Effect.gen(function*() {
      // Refuse a bad prefix or ttl before opening a connection.
      const prefixError = checkPrefix(options.prefix ?? "")
      if (prefixError !== undefined) return yield* Effect.fail(prefixError)
      const ttl = ttlMillis(options.ttl)
      if (typeof ttl === "string") return yield* Effect.fail(configError(ttl))
      const owned = yield* acquire(options)
      return yield* makeWith(owned.client, options, owned)
    })
  )

/**
 * A Redis store over an ioredis client of your app. The client is not closed
 * when the layer's scope closes; see {@link make}.
 *
 * @example
 * ```ts
 * import { Redis } from "ioredis"
 * import { RedisStore } from "effect-checkpoint/redis"
 *
 * const redis = new Redis("redis://127.0.0.1:6379", { maxRetriesPerRequest: 1, commandTimeout: 5000 })
 * const StoreLive = RedisStore.layerClient(redis, { prefix: "myapp:" })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerClient = (
  client: Redis,
  options: StoreOptions = {}
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier> =>
  Layer.effect(CheckpointStore.CheckpointStore, make(client, options))

/**
 * {@link layer} configured from `Config` (the reference's example reads
 * `REDIS_ADDR`):
 *
 * | name | default | |
 * | `REDIS_ADDR` | `localhost:6379` | `host:port`, or a `redis://` / `rediss://` URL |
 * | `REDIS_PASSWORD` | none | read as `Redacted` |
 * | `REDIS_DB` | `0` | the database number |
 * | `REDIS_PREFIX` | `""` | the key prefix |
 * | `REDIS_TTL` | none | a duration (`"1 hour"`); none = keys never expire |
 *
 * A URL's own password and database win over `REDIS_PASSWORD` and `REDIS_DB`.
 * A config error fails the layer with `CheckpointStoreError` (operation
 * `"config"`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier> =
  Layer.unwrapEffect(
    Effect.map(
      Config.all({
        addr: Config.string("REDIS_ADDR").pipe(Config.withDefault("localhost:6379")),
        password: Config.option(Config.redacted("REDIS_PASSWORD")),
        db: Config.option(Config.integer("REDIS_DB")),
        prefix: Config.string("REDIS_PREFIX").pipe(Config.withDefault("")),
        ttl: Config.option(Config.duration("REDIS_TTL"))
      }).pipe(Effect.mapError((e) => storeError(BACKEND, "config", e))),
      ({ addr, db, password, prefix, ttl }) =>
        layerUrl(addr, {
          prefix,
          ...(Option.isSome(password) ? { password: password.value } : {}),
          ...(Option.isSome(db) ? { db: db.value } : {}),
          ...(Option.isSome(ttl) ? { ttl: ttl.value } : {})
        })
    )
  )

/** A URL (or `host:port`) plus separate password/db that fill what the URL leaves out. */
const layerUrl = (
  addr: string,
  extra: StoreOptions & { readonly password?: Redacted.Redacted<string>; readonly db?: number }
) => {
  const hasScheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(addr)
  const url = hasScheme ? addr : `redis://${addr}`
  let parsed: URL | undefined
  try {
    parsed = new URL(url)
  } catch {
    parsed = undefined
  }
  if (parsed === undefined) {
    return Layer.fail(configError(`REDIS_ADDR is not host:port or a redis:// URL: ${addr.replace(/:[^:@/]*@/, ":***@")}`))
  }
  if (extra.password !== undefined && parsed.password === "") parsed.password = encodeURIComponent(Redacted.value(extra.password))
  if (extra.db !== undefined && (parsed.pathname === "" || parsed.pathname === "/")) parsed.pathname = `/${extra.db}`
  return layer({
    url: Redacted.make(parsed.toString()),
    prefix: extra.prefix,
    ttl: extra.ttl
  })
}
