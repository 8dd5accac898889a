/**
 * The Redis checkpoint store, on `ioredis`: a fast store shared by every
 * process and host that reaches the server, with an optional time-to-live.
 *
 * It keeps each checkpoint as one JSON document, the checkpoints of an
 * execution in a sorted set by version, one record per execution (status,
 * lease, attempts, failure), the task writes of each checkpoint, and indexes
 * that answer `listExecutions` and `claim` a page at a time. Every key starts
 * with the store's `prefix` and a `|`, so stores with different prefixes —
 * nested ones included — never share a key. Every write is one Lua script:
 * atomic, fenced by the execution's lease, and timed by the server's clock, so
 * workers on different hosts agree on when a lease expires.
 *
 * With a `ttl`, Redis itself expires the data: a checkpoint `ttl` after its
 * save, an execution's record, indexes and large values `ttl` after its last
 * save, task writes with their checkpoint. Native expiry does not spare an
 * execution that is leased, interrupted or sleeping; `Retention.sweep` does.
 *
 * A store built on data of the 0.1.0 layout migrates it first (see the
 * README). It needs a standalone Redis (or the primary of a replicated one),
 * 5.0 or newer; Redis Cluster is not supported. Durability is the server's:
 * with no persistence, a restart of Redis loses every checkpoint.
 *
 * @since 0.1.0
 */
import { Config, ConfigError, Duration, Effect, Either, identity, Layer, Option, Redacted } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import { randomUUID } from "node:crypto"
import type * as Checkpoint from "../Checkpoint.js"
import * as CheckpointBackend from "../CheckpointBackend.js"
import {
  type CheckpointConflict,
  CheckpointDecodeError,
  CheckpointNotFound,
  type CheckpointStoreError,
  ExecutionNotFound,
  type InvalidIdentifier,
  InvalidOption,
  type LeaseLost
} from "../CheckpointError.js"
import * as CheckpointStore from "../CheckpointStore.js"
import { checkPrefix } from "../internal/identifier.js"
import { keysOf, MIGRATE_BATCH, RECORD_FIELDS, type ScriptName, SCRIPTS, SWEEP_BATCH } from "../internal/redisScripts.js"
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
   * How long data lives without a save. Unset, zero or infinite: forever.
   * Redis expires it natively (see the module documentation); it is also the
   * store's retention `ttl` for `Retention`.
   */
  readonly ttl?: Duration.DurationInput | undefined
  /**
   * Large state values stored once per execution (see
   * `CheckpointBackend.MakeOptions`); `false` stores whole states. Default on.
   */
  readonly largeValues?: CheckpointBackend.MakeOptions["largeValues"]
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
 * that key into place (one round trip still).
 */
const STAGE_ABOVE = 16 * 1024

/**
 * How long a staging key lives if its script never runs (the connection
 * dropped between the `SET` and the script): it only has to outlive the gap
 * between two commands of one pipeline.
 */
const STAGING_TTL_MS = 60_000

/** A document sent ahead of its save script, to `{prefix}|s|{uuid}`. */
interface Staged {
  readonly key: string
  readonly document: string
}

// -----------------------------------------------------------------------------
// The store
// -----------------------------------------------------------------------------

const isWrongType = (e: unknown): boolean => e instanceof Error && e.message.startsWith("WRONGTYPE")
/** The server answered with an error (the connection is fine). */
const isReplyError = (e: unknown): boolean => e instanceof Error && e.name === "ReplyError"
/**
 * The connection closed under a command that was sent (or queued): ioredis
 * fails it at once (`maxRetriesPerRequest: 0`) instead of sending it again.
 */
const isConnectionDrop = (e: unknown): boolean =>
  e instanceof Error && (e.name === "MaxRetriesPerRequestError" || e.message === "Connection is closed.")

/** Runs a read once more if the connection dropped under it. */
const onceMoreIfDropped = <A>(read: Effect.Effect<A, unknown>): Effect.Effect<A, unknown> =>
  Effect.catchIf(read, isConnectionDrop, () => read)

/** Milliseconds of a ttl (0 = never expires), or the error. */
const ttlMillis = (ttl: Duration.DurationInput | undefined): Either.Either<number, InvalidOption> => {
  if (ttl === undefined) return Either.right(0)
  const decoded = Duration.decodeUnknown(ttl)
  if (Option.isNone(decoded)) return Either.left(new InvalidOption({ option: "ttl", message: `ttl is not a duration: ${String(ttl)}` }))
  const ms = Duration.toMillis(decoded.value)
  return Either.right(Number.isFinite(ms) && ms > 0 ? Math.ceil(ms) : 0)
}

const timeoutMillis = (
  name: string,
  value: Duration.DurationInput | undefined,
  fallback: number
): Either.Either<number, InvalidOption> => {
  if (value === undefined) return Either.right(fallback)
  const decoded = Duration.decodeUnknown(value)
  const ms = Option.isSome(decoded) ? Duration.toMillis(decoded.value) : Number.NaN
  return Number.isFinite(ms) && ms > 0
    ? Either.right(Math.ceil(ms))
    : Either.left(new InvalidOption({ option: name, message: `${name} must be a positive, finite duration, got ${String(value)}` }))
}

/** What a store knows about the client it runs on. */
interface ClientContext {
  /** Strings that must never appear in an error (passwords). */
  readonly secrets: ReadonlyArray<string>
  /** The last connection error the client reported, if the store listens for them. */
  readonly lastError: () => Error | undefined
}

/** The ioredis commands of our scripts (`defineCommand`), all with no declared keys. */
type Commands = { readonly [K in ScriptName]: (...args: ReadonlyArray<string>) => Promise<unknown> }

/** A record patch as the scripts read it (see `readPatch` in the scripts). */
const patchArgs = (p: CheckpointBackend.RecordPatch | undefined): Array<string> =>
  p === undefined ? ["", "~", "~", "", "", "~", "", ""] : [
    p.status ?? "",
    p.wakeAt === undefined ? "~" : p.wakeAt === null ? "-" : String(Math.round(p.wakeAt)),
    p.failure === undefined ? "~" : p.failure === null ? "-" : "=",
    p.failure?.tag ?? "",
    p.failure?.message ?? "",
    p.lease === undefined ? "~" : p.lease === null ? "-" : "=",
    p.lease?.owner ?? "",
    p.lease ? String(p.lease.ttlMs) : ""
  ]

/** Records as the scripts return them: 11 values each. */
const decodeRecords = (
  reply: unknown
): Effect.Effect<Array<CheckpointStore.ExecutionRecord>, CheckpointDecodeError> => {
  const flat = Array.isArray(reply) ? reply as Array<unknown> : []
  const out: Array<CheckpointStore.ExecutionRecord> = []
  for (let i = 0; i + 10 < flat.length; i += 11) {
    const decoded = recordFrom(flat, i)
    if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
    out.push(decoded.right)
  }
  return Effect.succeed(out)
}

const recordFrom = (flat: ReadonlyArray<unknown>, at: number) =>
  CheckpointBackend.decodeRecord({
    executionId: flat[at],
    latestVersion: flat[at + 1],
    latestCheckpointId: flat[at + 2],
    updatedAt: flat[at + 3],
    status: flat[at + 4],
    wakeAt: flat[at + 5],
    failureTag: flat[at + 6],
    failureMessage: flat[at + 7],
    attempts: flat[at + 8],
    leaseOwner: flat[at + 9],
    leaseExpiresAt: flat[at + 10]
  })

/** Builds the store over a connected (or lazily connecting) client. */
const makeWith = (
  client: Redis,
  options: StoreOptions,
  context: ClientContext
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier | InvalidOption> =>
  Effect.gen(function*() {
    const prefix = options.prefix ?? ""
    const prefixError = checkPrefix(prefix)
    if (prefixError !== undefined) return yield* Effect.fail(prefixError)
    const ttl = yield* ttlMillis(options.ttl)
    const ttlArg = String(ttl)
    // ioredis adds its `keyPrefix` to the keys it is given (GET, HMGET …); the
    // scripts declare no keys and build every key from the full prefix.
    const fullPrefix = (client.options.keyPrefix ?? "") + prefix
    const layout = keysOf(prefix)
    for (const [name, lua] of Object.entries(SCRIPTS)) client.defineCommand(name, { numberOfKeys: 0, lua })
    const commands = client as unknown as Commands

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

    /** A write: never sent twice (a lost reply leaves its outcome unknown: it fails). */
    const run = (operation: string, name: ScriptName, args: ReadonlyArray<string>) =>
      Effect.tryPromise({ try: () => commands[name](fullPrefix, ...args), catch: fail(operation) })

    /** A read (it changes nothing but stale index entries): sent once more if the connection dropped under it. */
    const runRead = (operation: string, name: ScriptName, args: ReadonlyArray<string>) =>
      Effect.mapError(
        onceMoreIfDropped(Effect.tryPromise({ try: () => commands[name](fullPrefix, ...args), catch: identity })),
        fail(operation)
      )

    /** A plain client read, sent once more if the connection dropped. */
    const plainRead = <A>(operation: string, f: () => Promise<A>) =>
      Effect.mapError(onceMoreIfDropped(Effect.tryPromise({ try: f, catch: identity })), fail(operation))

    /**
     * A save whose large documents go ahead of the script: one pipeline (one
     * round trip) of a `SET … PX` per staged document, then the script, which
     * moves them into place or removes them. When the server answers with an
     * error, the staging keys are removed with one more command; when the
     * connection drops or stalls, they are left to expire.
     */
    const runStaged = (operation: string, args: ReadonlyArray<string>, staged: ReadonlyArray<Staged>) =>
      Effect.tryPromise({
        try: () => {
          const dropStaged = (error: unknown): Promise<never> =>
            isReplyError(error)
              ? client.del(...staged.map((x) => x.key)).then(() => Promise.reject(error), () => Promise.reject(error))
              : Promise.reject(error)
          const pipeline = client.pipeline()
          for (const { document, key } of staged) pipeline.set(key, document, "PX", STAGING_TTL_MS)
          ;(pipeline as unknown as Commands).ecpSave(fullPrefix, ...args)
          return pipeline.exec().then((results) => {
            if (results === null || results.length !== staged.length + 1) {
              return Promise.reject(new Error("Redis returned no reply for the save"))
            }
            // A failed SET (out of memory, a dropped connection) says more than the script's "staged document missing".
            const setError = results.slice(0, staged.length).find(([error]) => error !== null)?.[0]
            const [scriptError, reply] = results[staged.length]!
            if (setError == null && scriptError === null) return reply
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
      return Effect.flatMap(CheckpointBackend.decodeDocument(doc, name), (cp) =>
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

    const read = (operation: string, executionId: string, newestFirst: boolean, bound: string, limit: number) =>
      Effect.flatMap(
        runRead(operation, "ecpRead", [executionId, newestFirst ? "1" : "0", bound, String(limit)]),
        (reply) =>
          Effect.suspend(() => {
            const flat = Array.isArray(reply) ? reply as Array<unknown> : []
            const out: Array<Effect.Effect<Checkpoint.Checkpoint, CheckpointDecodeError>> = []
            for (let i = 0; i + 2 < flat.length; i += 3) out.push(decodeAt(flat[i], flat[i + 1], flat[i + 2], executionId))
            return Effect.all(out)
          })
      )

    // Data of the 0.1.0 layout under this prefix moves to this one, in short steps, before the store serves.
    let more = true
    yield* Effect.whileLoop({
      while: () => more,
      body: () => run("migrate", "ecpMigrate", [String(MIGRATE_BATCH)]),
      step: (reply) => {
        more = reply === 1
      }
    })

    const insert = (
      batch: ReadonlyArray<CheckpointBackend.Encoded>,
      options: CheckpointBackend.InsertOptions
    ) =>
      Effect.suspend(() => {
        const expect = options.expect
        const args: Array<string> = [
          ttlArg,
          String(options.now),
          options.owner ?? "",
          expect?.executionId ?? "",
          expect === undefined ? "" : String(expect.latestVersion),
          expect?.latestCheckpointId ?? "",
          ...patchArgs(options.patch),
          String(options.blobs.length)
        ]
        for (const b of options.blobs) args.push(b.executionId, b.hash, b.json)
        const staged: Array<Staged> = []
        for (const { checkpoint: cp, document, refs } of batch) {
          args.push(
            cp.id,
            cp.executionId,
            String(cp.version),
            documentArg(document, staged),
            String(cp.timestamp.getTime()),
            CheckpointBackend.derivedStatus(cp),
            refs.join(" ")
          )
        }
        const operation = batch.length === 1 ? "save" : "saveMany"
        return Effect.flatMap(
          staged.length === 0 ? run(operation, "ecpSave", args) : runStaged(operation, args, staged),
          (reply): Effect.Effect<void, CheckpointConflict | LeaseLost | CheckpointBackend.BlobsMissing | CheckpointStoreError> => {
            const r = Array.isArray(reply) ? reply as Array<unknown> : []
            const code = Number(r[0])
            const at = (i: unknown) => batch[Number(i) - 1]?.checkpoint
            switch (code) {
              case 0:
                return Effect.void
              case 1:
              case 2: {
                const cp = at(r[1])
                if (cp !== undefined) return Effect.fail(code === 1 ? CheckpointBackend.conflict.idTaken(cp) : CheckpointBackend.conflict.versionTaken(cp))
                break
              }
              case 3:
                if (expect !== undefined) return Effect.fail(CheckpointBackend.conflict.expectationFailed(expect, Number(r[1])))
                break
              case 4:
                return Effect.fail(CheckpointBackend.leaseLost(String(r[1]), options.owner ?? "", r[2] ? String(r[2]) : undefined))
              case 5:
                return Effect.fail(new CheckpointBackend.BlobsMissing({ executionId: String(r[1]), hashes: r.slice(2).map(String) }))
            }
            return Effect.fail(storeError(BACKEND, operation, new Error(`unexpected reply from the save script: ${JSON.stringify(reply)}`)))
          }
        )
      })

    const backend: CheckpointBackend.Backend = {
      name: BACKEND,
      insert,
      load: (id) =>
        plainRead("load", () => client.get(layout.checkpoint(id))).pipe(
          Effect.catchIf(
            (e) => isWrongType((e.cause as { message?: unknown } | undefined) ?? e) || /WRONGTYPE/.test(e.message),
            () => Effect.fail(new CheckpointDecodeError({ id, message: `Stored checkpoint ${JSON.stringify(id)} is not a string value` }))
          ),
          Effect.flatMap((text) =>
            text === null ? Effect.succeedNone : Effect.asSome(CheckpointBackend.decodeDocument(text, id))
          )
        ),
      list: (executionId, afterVersion, limit) =>
        read("list", executionId, false, afterVersion === -Infinity ? "-inf" : `(${afterVersion}`, limit ?? -1),
      latest: (executionId) => Effect.map(read("latest", executionId, true, "+inf", 1), (found) => Option.fromNullable(found[0])),
      delete: (id) => Effect.asVoid(run("delete", "ecpDelete", [id])),
      clear: (executionId) => Effect.asVoid(run("clear", "ecpClear", [executionId])),
      prune: (executionId, keep) => Effect.map(run("prune", "ecpPrune", [executionId, String(keep)]), Number),
      saveWrites: (checkpointId, taskId, writes, options) =>
        Effect.flatMap(
          run("saveWrites", "ecpSaveWrites", [
            checkpointId,
            taskId,
            options.owner ?? "",
            options.patch === undefined ? "0" : "1",
            ...patchArgs(options.patch),
            String(options.now),
            ttlArg,
            ...writes.flatMap((w) => [w.key, w.json])
          ]),
          (reply): Effect.Effect<void, CheckpointNotFound | CheckpointConflict | LeaseLost | CheckpointStoreError> => {
            const r = Array.isArray(reply) ? reply as Array<unknown> : []
            switch (Number(r[0])) {
              case 0:
                return Effect.void
              case 1:
                return Effect.fail(new CheckpointNotFound({ id: checkpointId }))
              case 2:
                return Effect.fail(CheckpointBackend.conflict.writeTaken(
                  { checkpointId, executionId: String(r[1]), version: Number(r[2]) },
                  taskId,
                  String(r[3])
                ))
              case 4:
                return Effect.fail(CheckpointBackend.leaseLost(String(r[1]), options.owner ?? "", r[2] ? String(r[2]) : undefined))
            }
            return Effect.fail(storeError(BACKEND, "saveWrites", new Error(`unexpected reply: ${JSON.stringify(reply)}`)))
          }
        ),
      listWrites: (checkpointId) =>
        Effect.flatMap(plainRead("listWrites", () => client.hgetall(layout.writes(checkpointId))), (fields) => {
          const rows: Array<{ taskId: string; key: string; seq: number; text: string }> = []
          for (const [field, value] of Object.entries(fields)) {
            const bar = field.indexOf("|")
            const colon = value.indexOf(":")
            if (bar < 0) continue
            rows.push({
              taskId: field.slice(0, bar),
              key: field.slice(bar + 1),
              seq: colon < 0 ? Number.NaN : Number(value.slice(0, colon)),
              text: colon < 0 ? value : value.slice(colon + 1)
            })
          }
          rows.sort((a, b) => a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : a.seq - b.seq)
          const out: Array<CheckpointStore.TaskWrite> = []
          for (const row of rows) {
            const parsed = Number.isNaN(row.seq)
              ? Either.left(new CheckpointDecodeError({ id: checkpointId, message: `Stored task write ${row.taskId}/${row.key} of checkpoint ${JSON.stringify(checkpointId)} is not valid` }))
              : CheckpointBackend.parseJson(row.text, checkpointId, `task write ${row.taskId}/${row.key}`)
            if (Either.isLeft(parsed)) return Effect.fail(parsed.left)
            out.push({ taskId: row.taskId, key: row.key, value: parsed.right as Checkpoint.Json })
          }
          return Effect.succeed(out)
        }),
      getExecution: (executionId) =>
        Effect.flatMap(
          plainRead("getExecution", () => client.hmget(layout.record(executionId), ...RECORD_FIELDS)),
          (values) =>
            values.every((v) => v === null)
              ? Effect.succeedNone
              : Effect.asSome(Either.match(recordFrom([executionId, ...values], 0), {
                onLeft: (e): Effect.Effect<CheckpointStore.ExecutionRecord, CheckpointDecodeError> => Effect.fail(e),
                onRight: (r) => Effect.succeed(r)
              }))
        ),
      listExecutions: (query) =>
        Effect.flatMap(
          runRead("listExecutions", "ecpListExecutions", [
            String(query.limit),
            query.after === undefined ? "" : String(query.after.updatedAt),
            query.after?.executionId ?? "",
            query.updatedBefore === undefined ? "" : String(query.updatedBefore),
            query.updatedAfter === undefined ? "" : String(query.updatedAfter),
            ...(query.statuses ?? [])
          ]),
          decodeRecords
        ),
      updateExecution: (executionId, patch, options) =>
        Effect.flatMap(
          run("updateExecution", "ecpUpdate", [
            executionId,
            options.owner ?? "",
            options.holds ? "1" : "0",
            options.expect === undefined ? "" : String(options.expect.latestVersion),
            options.expect?.latestCheckpointId ?? "",
            String(options.now),
            ttlArg,
            ...patchArgs(patch)
          ]),
          (reply): Effect.Effect<
            CheckpointStore.ExecutionRecord,
            ExecutionNotFound | CheckpointConflict | LeaseLost | CheckpointStoreError
          > => {
            const r = Array.isArray(reply) ? reply as Array<unknown> : []
            switch (Number(r[0])) {
              case 0:
                return Either.match(recordFrom(r, 1), {
                  onLeft: (e) => Effect.fail(storeError(BACKEND, "updateExecution", e)),
                  onRight: (record) => Effect.succeed(record)
                })
              case 1:
                return Effect.fail(new ExecutionNotFound({ executionId }))
              case 3:
                return Effect.fail(CheckpointBackend.conflict.expectationFailed({ executionId, latestVersion: options.expect?.latestVersion ?? 0 }, Number(r[1])))
              case 4:
                return Effect.fail(CheckpointBackend.leaseLost(executionId, options.owner ?? "", r[1] ? String(r[1]) : undefined))
            }
            return Effect.fail(storeError(BACKEND, "updateExecution", new Error(`unexpected reply: ${JSON.stringify(reply)}`)))
          }
        ),
      claim: ({ limit, now, owner, ttlMs }) =>
        Effect.flatMap(
          run("claim", "ecpClaim", [owner, String(ttlMs), String(limit), String(now), ttlArg]),
          (reply) => Effect.mapError(decodeRecords(reply), (e) => storeError(BACKEND, "claim", e))
        ),
      sweep: ({ before, force }) =>
        Effect.suspend(() => {
          let removed = 0
          let skip = 0
          let going = true
          return Effect.zipRight(
            Effect.whileLoop({
              while: () => going,
              body: () => run("sweep", "ecpSweep", [String(before), force ? "1" : "0", String(SWEEP_BATCH), String(skip)]),
              step: (reply) => {
                const r = Array.isArray(reply) ? reply.map(Number) : [0, 0, 0]
                removed += r[0] ?? 0
                skip += r[1] ?? 0
                going = r[2] === 1
              }
            }),
            Effect.sync(() => removed)
          )
        }),
      blobs: {
        load: (executionId, hashes) =>
          hashes.length === 0
            ? Effect.succeed(new Map<string, string>())
            : Effect.map(plainRead("load", () => client.hmget(layout.blobs(executionId), ...hashes)), (values) => {
              const out = new Map<string, string>()
              hashes.forEach((h, i) => {
                const v = values[i]
                if (typeof v === "string") out.set(h, v)
              })
              return out
            })
      }
    }
    return CheckpointBackend.make(backend, {
      ...(ttl > 0 ? { ttl: Duration.millis(ttl) } : {}),
      ...(options.largeValues === undefined ? {} : { largeValues: options.largeValues })
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
): Effect.Effect<CheckpointStore.Service, CheckpointStoreError | InvalidIdentifier | InvalidOption> => {
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
const newClient = (
  options: Options
): Effect.Effect<{ readonly client: Redis } & ClientContext, CheckpointStoreError | InvalidOption> =>
  Effect.gen(function*() {
    const connectTimeout = yield* timeoutMillis("connectTimeout", options.connectTimeout, 5_000)
    const commandTimeout = yield* timeoutMillis("commandTimeout", options.commandTimeout, 5_000)
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
 * fails with `InvalidIdentifier` for a bad prefix, `InvalidOption` for a bad
 * ttl or timeout, and `CheckpointStoreError` (operation `"connect"`) when
 * Redis cannot be reached; no error ever contains the password.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RedisStore } from "effect-checkpoint/redis"
 *
 * const StoreLive = RedisStore.layer({ url: "redis://localhost:6379/0", prefix: "myapp:", ttl: "7 days" })
 * program.pipe(Effect.provide(StoreLive))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier | InvalidOption> =>
  Layer.scoped(
    CheckpointStore.CheckpointStore,
    Effect.gen(function*() {
      // Refuse a bad prefix or ttl before opening a connection.
      const prefixError = checkPrefix(options.prefix ?? "")
      if (prefixError !== undefined) return yield* Effect.fail(prefixError)
      yield* ttlMillis(options.ttl)
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
): Layer.Layer<CheckpointStore.CheckpointStore, CheckpointStoreError | InvalidIdentifier | InvalidOption> =>
  Layer.effect(CheckpointStore.CheckpointStore, make(client, options))

/**
 * {@link layer} with its options read from a `Config`: a missing or malformed
 * value fails the layer with the `ConfigError` itself.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { RedisStore } from "effect-checkpoint/redis"
 *
 * const StoreLive = RedisStore.layerConfigWith(
 *   Config.all({ url: Config.redacted("MY_REDIS_URL"), prefix: Config.succeed("myapp:") })
 * )
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfigWith = (
  config: Config.Config<Options>
): Layer.Layer<
  CheckpointStore.CheckpointStore,
  CheckpointStoreError | InvalidIdentifier | InvalidOption | ConfigError.ConfigError
> => Layer.unwrapEffect(Effect.map(config, layer))

/** A URL (or `host:port`) with a separate password and db filling what the URL leaves out. */
const urlOf = (addr: string, password: Option.Option<Redacted.Redacted<string>>, db: Option.Option<number>) => {
  const url = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(addr) ? addr : `redis://${addr}`
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return Either.left(
      ConfigError.InvalidData(["REDIS_ADDR"], `not host:port or a redis:// URL: ${addr.replace(/:[^:@/]*@/, ":***@")}`)
    )
  }
  if (Option.isSome(password) && parsed.password === "") parsed.password = encodeURIComponent(Redacted.value(password.value))
  if (Option.isSome(db) && (parsed.pathname === "" || parsed.pathname === "/")) parsed.pathname = `/${db.value}`
  return Either.right(Redacted.make(parsed.toString()))
}

/**
 * {@link layer} configured from `Config` (the reference's example reads
 * `REDIS_ADDR`):
 *
 * | name | default | |
 * |---|---|---|
 * | `REDIS_ADDR` | `localhost:6379` | `host:port`, or a `redis://` / `rediss://` URL |
 * | `REDIS_PASSWORD` | none | read as `Redacted` |
 * | `REDIS_DB` | `0` | the database number |
 * | `REDIS_PREFIX` | `""` | the key prefix |
 * | `REDIS_TTL` | none | a duration (`"7 days"`); none = keys never expire |
 *
 * A URL's own password and database win over `REDIS_PASSWORD` and `REDIS_DB`.
 * A missing or malformed value fails the layer with the `ConfigError` itself.
 * For other names, see {@link layerConfigWith}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<
  CheckpointStore.CheckpointStore,
  CheckpointStoreError | InvalidIdentifier | InvalidOption | ConfigError.ConfigError
> = layerConfigWith(
  Config.all({
    addr: Config.string("REDIS_ADDR").pipe(Config.withDefault("localhost:6379")),
    password: Config.option(Config.redacted("REDIS_PASSWORD")),
    db: Config.option(Config.integer("REDIS_DB")),
    prefix: Config.string("REDIS_PREFIX").pipe(Config.withDefault("")),
    ttl: Config.option(Config.duration("REDIS_TTL"))
  }).pipe(
    Config.mapOrFail(({ addr, db, password, prefix, ttl }) =>
      Either.map(urlOf(addr, password, db), (url): Options => ({
        url,
        prefix,
        ...(Option.isSome(ttl) ? { ttl: ttl.value } : {})
      }))
    )
  )
)
