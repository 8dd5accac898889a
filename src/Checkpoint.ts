/**
 * The `Checkpoint` record, the JSON value schemas it stores user data with,
 * its branded id types, id generation, and its JSON text encoding.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Either, ParseResult, Schema } from "effect"
import { CheckpointDecodeError, CheckpointEncodeError, InvalidIdentifier } from "./CheckpointError.js"
import { checkId, idProblem, isValidId } from "./internal/identifier.js"
import { isPlainObject, jsonProblem } from "./internal/json.js"
import { uuidv7 } from "./internal/uuid.js"

// -----------------------------------------------------------------------------
// JSON values
// -----------------------------------------------------------------------------

/**
 * A JSON value: what a checkpoint stores as `state`.
 *
 * @since 0.1.0
 * @category models
 */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | JsonObject

/**
 * A JSON object: what a checkpoint stores as `metadata`.
 *
 * @since 0.1.0
 * @category models
 */
export interface JsonObject {
  readonly [key: string]: Json
}

/**
 * The schema of a JSON value. Decoding and encoding are the identity: the
 * value is checked, never rebuilt, so an own `__proto__` key survives (a plain
 * `Schema.Record` decode would turn it into the object's prototype).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Json: Schema.Schema<Json> = Schema.declare(
  (u: unknown): u is Json => jsonProblem(u) === undefined,
  { identifier: "Json", description: "a JSON value" }
)

/**
 * The schema of a JSON object (the checkpoint `metadata`). Like {@link Json},
 * it checks and never rebuilds.
 *
 * @since 0.1.0
 * @category schemas
 */
export const JsonObject: Schema.Schema<JsonObject> = Schema.declare(
  (u: unknown): u is JsonObject => isPlainObject(u) && jsonProblem(u) === undefined,
  { identifier: "JsonObject", description: "a JSON object" }
)

// -----------------------------------------------------------------------------
// Identifiers
// -----------------------------------------------------------------------------

/**
 * A checkpoint id: 1–128 characters of `[A-Za-z0-9._:-]`, not starting with
 * `.`, and never `__proto__`, `constructor` or `prototype`. Generated ids are
 * UUIDv7 text, so they sort by creation time.
 *
 * Make one with {@link makeCheckpointId} (or generate one with
 * {@link generateCheckpointId}); both return an Effect and never throw.
 *
 * @since 0.1.0
 * @category ids
 */
export const CheckpointId = Schema.String.pipe(
  Schema.filter((s) => idProblem(s) ?? true, { identifier: "CheckpointIdRules" }),
  Schema.brand("CheckpointId")
)

/**
 * @since 0.1.0
 * @category ids
 */
export type CheckpointId = typeof CheckpointId.Type

/**
 * An execution id: groups the checkpoints of one run (a "thread"). Same rules
 * as {@link CheckpointId}.
 *
 * @since 0.1.0
 * @category ids
 */
export const ExecutionId = Schema.String.pipe(
  Schema.filter((s) => idProblem(s) ?? true, { identifier: "ExecutionIdRules" }),
  Schema.brand("ExecutionId")
)

/**
 * @since 0.1.0
 * @category ids
 */
export type ExecutionId = typeof ExecutionId.Type

const makeId = <A extends string>(kind: "CheckpointId" | "ExecutionId") => (value: string): Effect.Effect<A, InvalidIdentifier> => {
  const error = checkId(kind, value)
  return error === undefined ? Effect.succeed(value as A) : Effect.fail(error)
}

/**
 * Checks `value` and brands it as a {@link CheckpointId}.
 *
 * @example
 * ```ts
 * import { Checkpoint } from "effect-checkpoint"
 * const id = Checkpoint.makeCheckpointId("0190b6c2-1234") // Effect<CheckpointId, InvalidIdentifier>
 * ```
 *
 * @since 0.1.0
 * @category ids
 */
export const makeCheckpointId: (value: string) => Effect.Effect<CheckpointId, InvalidIdentifier> = makeId("CheckpointId")

/**
 * Checks `value` and brands it as an {@link ExecutionId}.
 *
 * @since 0.1.0
 * @category ids
 */
export const makeExecutionId: (value: string) => Effect.Effect<ExecutionId, InvalidIdentifier> = makeId("ExecutionId")

/**
 * `true` when `value` is a valid checkpoint or execution id (the two share
 * their rules).
 *
 * @since 0.1.0
 * @category ids
 */
export const isIdentifier: (value: unknown) => boolean = isValidId

/**
 * A new time-sortable checkpoint id (UUIDv7 text). It reads the time from
 * `Clock`, and ids made in one process are strictly increasing, even within
 * one millisecond.
 *
 * @since 0.1.0
 * @category ids
 */
export const generateCheckpointId: Effect.Effect<CheckpointId> = Effect.map(
  Clock.currentTimeMillis,
  (ms) => uuidv7(ms) as CheckpointId
)

/**
 * A new time-sortable execution id (UUIDv7 text).
 *
 * @since 0.1.0
 * @category ids
 */
export const generateExecutionId: Effect.Effect<ExecutionId> = Effect.map(
  Clock.currentTimeMillis,
  (ms) => uuidv7(ms) as ExecutionId
)

// -----------------------------------------------------------------------------
// Checkpoint
// -----------------------------------------------------------------------------

/**
 * The largest version a store accepts (PostgreSQL `INTEGER`).
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_VERSION = 2_147_483_647

/**
 * One saved step of an execution.
 *
 * - `state` is the state ENCODED with the graph's Schema (a JSON value).
 * - `version` is the step number within the execution: 1, 2, 3 …;
 *   `(executionId, version)` and `id` are each unique in every store.
 * - `next` names the node(s) that run after this checkpoint; `[]` means the
 *   execution finished.
 * - `parentId` is the checkpoint this one follows (absent for the first).
 *
 * Constructing with `new Checkpoint(props)` validates and throws on bad input;
 * use {@link make} for an Effect that fails with typed errors instead.
 *
 * @since 0.1.0
 * @category models
 */
export class Checkpoint extends Schema.Class<Checkpoint>("Checkpoint")({
  id: CheckpointId,
  executionId: ExecutionId,
  nodeName: Schema.String,
  state: Json,
  metadata: JsonObject,
  timestamp: Schema.Date,
  version: Schema.Int,
  next: Schema.Array(Schema.String),
  parentId: Schema.optionalWith(CheckpointId, { exact: true })
}) {}

/**
 * The fields {@link make} needs; `id` and `timestamp` default to a generated id
 * and the current `Clock` time, `metadata` to `{}` and `next` to `[]`.
 *
 * @since 0.1.0
 * @category models
 */
export interface MakeOptions {
  readonly executionId: string
  readonly nodeName: string
  readonly state: unknown
  readonly version: number
  readonly id?: string | undefined
  readonly metadata?: unknown
  readonly timestamp?: Date | undefined
  readonly next?: ReadonlyArray<string> | undefined
  readonly parentId?: string | undefined
}

/**
 * Why `version` is not a storable version, or `undefined`.
 *
 * @since 0.1.0
 * @category validation
 */
export const versionProblem = (version: unknown): string | undefined =>
  typeof version === "number" && Number.isInteger(version) && version >= 1 && version <= MAX_VERSION
    ? undefined
    : `version must be an integer from 1 to ${MAX_VERSION}, got ${String(version)}`

/**
 * Builds a checkpoint, checking every field: bad ids fail with
 * `InvalidIdentifier`, a state or metadata that is not JSON (or a bad version
 * or node name) with `CheckpointEncodeError`. Never throws.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: MakeOptions): Effect.Effect<Checkpoint, CheckpointEncodeError | InvalidIdentifier> =>
  Effect.gen(function*() {
    const id = options.id ?? (yield* generateCheckpointId)
    const metadata = options.metadata ?? {}
    const next = options.next ?? []
    const timestamp = options.timestamp ?? new Date(yield* Clock.currentTimeMillis)
    const props = {
      id: id as CheckpointId,
      executionId: options.executionId as ExecutionId,
      nodeName: options.nodeName,
      state: options.state as Json,
      metadata: metadata as JsonObject,
      timestamp,
      version: options.version,
      next,
      ...(options.parentId === undefined ? {} : { parentId: options.parentId as CheckpointId })
    }
    const problem = checkpointProblem(props)
    if (problem !== undefined) return yield* Effect.fail(problem)
    return new Checkpoint(props, true)
  })

/**
 * The first problem of a checkpoint's fields, as the typed error a store
 * fails with, or `undefined` when they can be stored. Stores run this on
 * every checkpoint they are given, so a checkpoint built with validation off
 * (`new Checkpoint(p, true)`) or an id cast from a raw string is still refused.
 *
 * @since 0.1.0
 * @category validation
 */
export const checkpointProblem = (
  cp: Pick<Checkpoint, "id" | "executionId" | "nodeName" | "state" | "metadata" | "timestamp" | "version" | "next"> & {
    readonly parentId?: string | undefined
  }
): CheckpointEncodeError | InvalidIdentifier | undefined => {
  const idError = checkId("CheckpointId", cp.id) ?? checkId("ExecutionId", cp.executionId) ??
    (cp.parentId === undefined ? undefined : checkId("CheckpointId", cp.parentId))
  if (idError !== undefined) return idError
  const id = cp.id
  const fail = (message: string) => new CheckpointEncodeError({ id, message })
  if (typeof cp.nodeName !== "string" || cp.nodeName.length === 0) return fail("nodeName must be a non-empty string")
  const version = versionProblem(cp.version)
  if (version !== undefined) return fail(version)
  if (!(cp.timestamp instanceof Date) || Number.isNaN(cp.timestamp.getTime())) return fail("timestamp must be a valid Date")
  if (!Array.isArray(cp.next) || !cp.next.every((n) => typeof n === "string")) {
    return fail("next must be an array of node names")
  }
  if (!isPlainObject(cp.metadata)) return fail("metadata must be a JSON object")
  const problem = jsonProblem(cp.state, "state") ?? jsonProblem(cp.metadata, "metadata")
  return problem === undefined ? undefined : fail(problem)
}

// -----------------------------------------------------------------------------
// Encoding
// -----------------------------------------------------------------------------

/**
 * A checkpoint in its stored form: the JSON text of each part, computed once,
 * so a backend that stores columns and a backend that stores one document
 * share the work.
 *
 * @since 0.1.0
 * @category encoding
 */
export interface Encoded {
  readonly checkpoint: Checkpoint
  /** JSON text of `state`. */
  readonly state: string
  /** JSON text of `metadata`. */
  readonly metadata: string
  /** JSON text of `next`. */
  readonly next: string
  /** `timestamp` as ISO-8601 text (millisecond precision). */
  readonly timestamp: string
  /** The whole checkpoint as one JSON document (what {@link decode} reads). */
  readonly document: string
}

/** JSON text of `value`, or the error (synchronous: `toEncoded` is on every save's hot path). */
const stringify = (value: unknown, id: string, what: string): Either.Either<string, CheckpointEncodeError> => {
  try {
    return Either.right(JSON.stringify(value))
  } catch (e) {
    return Either.left(new CheckpointEncodeError({ id, message: `${what} cannot be encoded as JSON: ${String(e)}` }))
  }
}

/**
 * Checks a checkpoint (see {@link checkpointProblem}) and encodes it.
 *
 * @since 0.1.0
 * @category encoding
 */
export const toEncoded = (cp: Checkpoint): Effect.Effect<Encoded, CheckpointEncodeError | InvalidIdentifier> => {
  const problem = checkpointProblem(cp)
  if (problem !== undefined) return Effect.fail(problem)
  const encodedState = stringify(cp.state, cp.id, "state")
  if (Either.isLeft(encodedState)) return Effect.fail(encodedState.left)
  const encodedMetadata = stringify(cp.metadata, cp.id, "metadata")
  if (Either.isLeft(encodedMetadata)) return Effect.fail(encodedMetadata.left)
  const state = encodedState.right
  const metadata = encodedMetadata.right
  const next = JSON.stringify(cp.next)
  const timestamp = cp.timestamp.toISOString()
  const document = `{"id":${JSON.stringify(cp.id)},"executionId":${JSON.stringify(cp.executionId)},"nodeName":${
    JSON.stringify(cp.nodeName)
  },"version":${cp.version},"timestamp":"${timestamp}","next":${next}${
    cp.parentId === undefined ? "" : `,"parentId":${JSON.stringify(cp.parentId)}`
  },"metadata":${metadata},"state":${state}}`
  return Effect.succeed({ checkpoint: cp, state, metadata, next, timestamp, document })
}

/**
 * Encodes a checkpoint as one JSON document. Fails with `InvalidIdentifier`
 * for a bad id and `CheckpointEncodeError` for anything that would not
 * round-trip exactly.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encode = (cp: Checkpoint): Effect.Effect<string, CheckpointEncodeError | InvalidIdentifier> =>
  Effect.map(toEncoded(cp), (e) => e.document)

/** The stored shape: ids re-checked, dates from text, `Date`s or epoch millis, `parentId` null or absent. */
const Stored = Schema.Struct({
  id: CheckpointId,
  executionId: ExecutionId,
  nodeName: Schema.String,
  state: Schema.Unknown,
  metadata: Schema.declare(isPlainObject, { identifier: "JsonObject", description: "a JSON object" }),
  timestamp: Schema.Union(Schema.DateFromSelf, Schema.Date, Schema.DateFromNumber).pipe(Schema.validDate()),
  version: Schema.Int,
  next: Schema.Array(Schema.String),
  parentId: Schema.optional(Schema.NullOr(CheckpointId))
})
const decodeStored = Schema.decodeUnknownEither(Stored)

/**
 * Decodes a checkpoint from its fields as read from a backend (already parsed
 * from JSON): what SQL stores use for a row. `id` names the checkpoint in the
 * error when the data is too broken to say. The `state` and `metadata` values
 * must come from `JSON.parse` (they are taken as they are, not rebuilt).
 *
 * @since 0.1.0
 * @category encoding
 */
export const decodeFields = (fields: unknown, id?: string): Effect.Effect<Checkpoint, CheckpointDecodeError> => {
  const result = decodeStored(fields, { onExcessProperty: "ignore" })
  if (Either.isLeft(result)) {
    const known = id ?? (isPlainObject(fields) && typeof fields.id === "string" ? fields.id : undefined)
    return Effect.fail(
      new CheckpointDecodeError({
        ...(known === undefined ? {} : { id: known }),
        message: `Stored checkpoint${known === undefined ? "" : ` ${JSON.stringify(known)}`} is not a valid checkpoint: ${
          ParseResult.ArrayFormatter.formatErrorSync(result.left).slice(0, 3)
            .map((issue) => `${issue.path.length === 0 ? "" : `${issue.path.join(".")}: `}${issue.message}`).join("; ")
        }`
      })
    )
  }
  const s = result.right
  if (s.state === undefined) {
    return Effect.fail(new CheckpointDecodeError({ id: s.id, message: `Stored checkpoint ${JSON.stringify(s.id)} has no state` }))
  }
  if (id !== undefined && s.id !== id) {
    return Effect.fail(
      new CheckpointDecodeError({
        id,
        message: `Stored checkpoint ${JSON.stringify(id)} holds the checkpoint ${JSON.stringify(s.id)}`
      })
    )
  }
  const version = versionProblem(s.version)
  if (version !== undefined) return Effect.fail(new CheckpointDecodeError({ id: s.id, message: version }))
  return Effect.succeed(
    new Checkpoint(
      {
        id: s.id,
        executionId: s.executionId,
        nodeName: s.nodeName,
        state: s.state as Json,
        metadata: s.metadata as JsonObject,
        timestamp: s.timestamp,
        version: s.version,
        next: s.next,
        ...(s.parentId === undefined || s.parentId === null ? {} : { parentId: s.parentId })
      },
      true
    )
  )
}

/**
 * Parses JSON text, failing with `CheckpointDecodeError` naming `id`.
 *
 * @since 0.1.0
 * @category encoding
 */
export const parseJson = (text: string, id?: string): Effect.Effect<unknown, CheckpointDecodeError> =>
  Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: (e) =>
      new CheckpointDecodeError({
        ...(id === undefined ? {} : { id }),
        message: `Stored checkpoint${id === undefined ? "" : ` ${JSON.stringify(id)}`} is not valid JSON: ${
          e instanceof Error ? e.message : String(e)
        }`
      })
  })

/**
 * Decodes a checkpoint from the JSON document {@link encode} wrote. Corrupt,
 * truncated or foreign text fails with `CheckpointDecodeError` naming `id`
 * (when given, the document must also hold that id).
 *
 * @since 0.1.0
 * @category encoding
 */
export const decode = (text: string, id?: string): Effect.Effect<Checkpoint, CheckpointDecodeError> =>
  Effect.flatMap(parseJson(text, id), (fields) => decodeFields(fields, id))
