/**
 * Store URLs: which store a URL names, and the layer that opens it.
 *
 * | URL | store |
 * |---|---|
 * | `memory:` | a new, empty in-memory store (lives for one command: for trying the CLI and checking an export) |
 * | `file:DIR`, `file:///abs/dir` | `FileStore` in `DIR` |
 * | `sqlite:FILE`, `sqlite:///abs/file.db` | `SqliteStore` in `FILE` (`--table`) |
 * | `postgres://…`, `postgresql://…` | `PostgresStore` (`--table`) |
 * | `redis://…`, `rediss://…` | `RedisStore` (`--prefix`) |
 *
 * Each store's module (and so its driver) is loaded only when a URL names it,
 * so `--help` and the other stores never need `better-sqlite3`, `pg` or
 * `ioredis`. A URL's password never appears in a message: {@link Target}
 * carries a redacted form for display and the secrets to scrub.
 *
 * @since 0.2.0
 * @internal
 */
import { Data, Effect, Either, Layer, Option, Redacted } from "effect"
import { fileURLToPath } from "node:url"
import type * as CheckpointStore from "../CheckpointStore.js"
import { redact } from "../internal/storeError.js"
import * as MemoryStore from "../layers/Memory.js"

/**
 * A failure the CLI reports as one line (already free of secrets), with the
 * exit code it ends with.
 *
 * @since 0.2.0
 * @category errors
 */
export class CliError extends Data.TaggedError("CliError")<{
  readonly message: string
  readonly exitCode?: number
}> {}

/**
 * The kinds of store a URL can name.
 *
 * @since 0.2.0
 * @category models
 */
export type Kind = "memory" | "file" | "sqlite" | "postgres" | "redis"

/**
 * A parsed store URL.
 *
 * @since 0.2.0
 * @category models
 */
export interface Target {
  readonly kind: Kind
  /** The URL with any password replaced by `***`: safe to print. */
  readonly display: string
  /** Every secret the URL holds (a password, raw and decoded), to scrub from any message. */
  readonly secrets: ReadonlyArray<string>
  /** The directory (file), the database file (sqlite) or the whole URL (postgres, redis). */
  readonly location: Redacted.Redacted<string>
}

/**
 * Options that pick a place inside a store.
 *
 * @since 0.2.0
 * @category models
 */
export interface Placement {
  /** The table of an SQL store (`sqlite:`, `postgres://`). */
  readonly table: Option.Option<string>
  /** The key prefix of a Redis store. */
  readonly prefix: Option.Option<string>
}

/**
 * The URL forms, for messages.
 *
 * @since 0.2.0
 * @category parsing
 */
export const forms = "memory:, file:DIR, sqlite:FILE, postgres://…, redis://…"

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/

/** The password (raw and percent-decoded) and any `password=` query value of a URL. */
const secretsOf = (url: string): ReadonlyArray<string> => {
  const secrets = new Set<string>()
  const add = (s: string | null | undefined) => {
    if (typeof s !== "string" || s.length === 0) return
    secrets.add(s)
    try {
      secrets.add(decodeURIComponent(s))
    } catch {
      // not percent-encoded text: the raw form is enough
    }
  }
  try {
    const parsed = new URL(url)
    add(parsed.password)
    add(parsed.searchParams.get("password"))
  } catch {
    // Not a WHATWG URL (an unescaped '@' in the password, say): everything between "user:" and the last '@'.
    add(/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^:/?#@]*:(.*)@[^@]*$/.exec(url)?.[1])
  }
  return [...secrets]
}

/** `url` with its password and every secret replaced by `***`. */
const displayOf = (url: string, secrets: ReadonlyArray<string>): string =>
  redact(url, secrets).replace(/([?&]password=)[^&]*/gi, "$1***")

const fail = (message: string) => Either.left(new CliError({ message }))

/**
 * Parses a store URL. An unknown scheme or a URL that is not one names only
 * its scheme in the error, never the rest (which may hold a password).
 *
 * @since 0.2.0
 * @category parsing
 */
export const parse = (url: Redacted.Redacted<string>): Either.Either<Target, CliError> => {
  const raw = Redacted.value(url)
  const scheme = SCHEME.exec(raw)?.[1]?.toLowerCase()
  if (scheme === undefined) {
    return fail(`the store URL has no scheme: use one of ${forms}`)
  }
  const rest = raw.slice(scheme.length + 1)
  switch (scheme) {
    case "memory":
      return rest === "" || rest === "//"
        ? Either.right({ kind: "memory", display: "memory:", secrets: [], location: Redacted.make("") })
        : fail(`a memory: store URL takes nothing after "memory:"`)
    case "file": {
      let directory: string
      if (rest.startsWith("//")) {
        try {
          directory = fileURLToPath(raw)
        } catch (e) {
          return fail(`not a valid file URL (${e instanceof Error ? e.message : String(e)}): use file:DIR or file:///absolute/dir`)
        }
      } else directory = rest
      if (directory === "") return fail("a file: store URL needs a directory, e.g. file:./checkpoints")
      return Either.right({ kind: "file", display: `file:${directory}`, secrets: [], location: Redacted.make(directory) })
    }
    case "sqlite": {
      const filename = rest.startsWith("//") ? rest.slice(2) : rest
      if (filename === "") return fail("a sqlite: store URL needs a file, e.g. sqlite:./checkpoints.db")
      return Either.right({ kind: "sqlite", display: `sqlite:${filename}`, secrets: [], location: Redacted.make(filename) })
    }
    case "postgres":
    case "postgresql":
    case "redis":
    case "rediss": {
      const kind = scheme.startsWith("redis") ? "redis" : "postgres"
      const secrets = secretsOf(raw)
      const display = displayOf(raw, secrets)
      let parsed: URL
      try {
        parsed = new URL(raw)
      } catch {
        return fail(`not a valid ${kind} URL: ${display}`)
      }
      if (parsed.hostname === "" && kind === "redis") return fail(`the redis URL names no host: ${display}`)
      return Either.right({ kind, display, secrets, location: url })
    }
    default:
      return fail(`unknown store URL scheme "${scheme}:": use one of ${forms}`)
  }
}

/** Loads a store's module; a missing driver says which package to install. */
const load = <A>(kind: Kind, driver: string, importer: () => Promise<A>): Effect.Effect<A, CliError> =>
  Effect.tryPromise({
    try: importer,
    catch: (e) => {
      const code = typeof e === "object" && e !== null && "code" in e ? e.code : undefined
      const message = e instanceof Error ? e.message : String(e)
      return new CliError({
        message: code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND"
          ? `the ${kind} store needs the package ${driver}: npm install ${driver}`
          : `cannot load the ${kind} store: ${message.split("\n")[0]}`
      })
    }
  })

/** Refuses an option that does not apply to the store. */
const refuse = (target: Target, placement: Placement, allowed: "table" | "prefix" | "none"): CliError | undefined => {
  if (allowed !== "table" && Option.isSome(placement.table)) {
    return new CliError({ message: `--table applies to sqlite: and postgres:// stores, not to ${target.kind}` })
  }
  if (allowed !== "prefix" && Option.isSome(placement.prefix)) {
    return new CliError({ message: `--prefix applies to redis:// stores, not to ${target.kind}` })
  }
  return undefined
}

/**
 * The store a target names. Building it fails with the store's own errors
 * (`CheckpointStoreError`, `InvalidIdentifier`, …: the caller turns them into
 * one redacted line) or a `CliError` (a driver that is not installed, an
 * option that does not apply).
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (
  target: Target,
  placement: Placement
): Layer.Layer<CheckpointStore.CheckpointStore, unknown> => {
  const tableName = Option.getOrUndefined(placement.table)
  const refused = refuse(target, placement, target.kind === "sqlite" || target.kind === "postgres" ? "table" : target.kind === "redis" ? "prefix" : "none")
  if (refused !== undefined) return Layer.fail(refused)
  const location = Redacted.value(target.location)
  switch (target.kind) {
    case "memory":
      return MemoryStore.layer
    case "file":
      return Layer.unwrapEffect(
        Effect.map(load("file", "@effect/platform-node", () => import("../layers/File.js")), (m) => m.layer({ directory: location }))
      )
    case "sqlite":
      return Layer.unwrapEffect(
        Effect.map(
          load("sqlite", "@effect/sql-sqlite-node", () => import("../layers/Sqlite.js")),
          (m) => m.layer({ filename: location, ...(tableName === undefined ? {} : { tableName }) })
        )
      )
    case "postgres":
      return Layer.unwrapEffect(
        Effect.map(
          load("postgres", "@effect/sql-pg", () => import("../layers/Postgres.js")),
          (m) =>
            m.layer({
              url: target.location,
              applicationName: "effect-checkpoint-cli",
              ...(tableName === undefined ? {} : { tableName })
            })
        )
      )
    case "redis":
      return Layer.unwrapEffect(
        Effect.map(
          load("redis", "ioredis", () => import("../layers/Redis.js")),
          (m) =>
            m.layer({
              url: target.location,
              connectionName: "effect-checkpoint-cli",
              ...(Option.isSome(placement.prefix) ? { prefix: placement.prefix.value } : {})
            })
        )
      )
  }
}

/**
 * Replaces every secret of `target` (and any URL password) in `text` with `***`.
 *
 * @since 0.2.0
 * @category redaction
 */
export const scrub = (text: string, target: Target | undefined): string =>
  redact(text, target === undefined ? [] : target.secrets)
