/**
 * The stored forms of a checkpoint, a task write and an execution record:
 * checks before a write, JSON text once per part, and decoding of what a
 * backend read back. Public to store authors through `CheckpointBackend`.
 *
 * @internal
 */
import { Effect, Either, ParseResult, Schema } from "effect"
import * as Checkpoint from "../Checkpoint.js"
import { CheckpointDecodeError, CheckpointEncodeError, type InvalidIdentifier } from "../CheckpointError.js"
import { checkId, idProblem } from "./identifier.js"
import { isPlainObject, jsonProblem } from "./json.js"
import { refsOf } from "./packing.js"

const noRefs: ReadonlyArray<string> = []

// -----------------------------------------------------------------------------
// Checks
// -----------------------------------------------------------------------------

/** Why `version` is not a storable version, or `undefined`. */
export const versionProblem = (version: unknown): string | undefined =>
  typeof version === "number" && Number.isInteger(version) && version >= 1 && version <= Checkpoint.MAX_VERSION
    ? undefined
    : `version must be an integer from 1 to ${Checkpoint.MAX_VERSION}, got ${String(version)}`

/**
 * The first problem of a checkpoint's fields, as the typed error a store
 * fails with, or `undefined` when they can be stored. Stores run this on
 * every checkpoint they are given, so a checkpoint built with validation off
 * (`new Checkpoint(p, true)`) or an id cast from a raw string is still refused.
 */
export const checkpointProblem = (
  cp: Pick<Checkpoint.Checkpoint, "id" | "executionId" | "nodeName" | "state" | "metadata" | "timestamp" | "version" | "next"> & {
    readonly parentId?: string | undefined
    readonly runtime?: unknown
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
  if (cp.runtime !== undefined && !isPlainObject(cp.runtime)) return fail("runtime must be a JSON object")
  const problem = jsonProblem(cp.state, "state") ?? jsonProblem(cp.metadata, "metadata") ??
    (cp.runtime === undefined ? undefined : jsonProblem(cp.runtime, "runtime"))
  return problem === undefined ? undefined : fail(`checkpoint of node ${JSON.stringify(cp.nodeName)}: ${problem}`)
}

// -----------------------------------------------------------------------------
// Encoding
// -----------------------------------------------------------------------------

/**
 * A checkpoint in its stored form: the JSON text of each part, computed once,
 * so a backend that stores columns and a backend that stores one document
 * share the work.
 */
export interface Encoded {
  readonly checkpoint: Checkpoint.Checkpoint
  /** JSON text of `state`. */
  readonly state: string
  /** JSON text of `metadata`. */
  readonly metadata: string
  /** JSON text of `next`. */
  readonly next: string
  /** `timestamp` as ISO-8601 text (millisecond precision). */
  readonly timestamp: string
  /** JSON text of `runtime`, or `null` when the checkpoint has none. */
  readonly runtime: string | null
  /** The blobs (large values) the checkpoint references (see `Backend.blobs`); `[]` for most. */
  readonly refs: ReadonlyArray<string>
  /** The whole checkpoint as one JSON document (what {@link decodeDocument} reads). */
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

/** Checks a checkpoint (see {@link checkpointProblem}) and encodes it. */
export const toEncoded = (cp: Checkpoint.Checkpoint): Effect.Effect<Encoded, CheckpointEncodeError | InvalidIdentifier> => {
  const problem = checkpointProblem(cp)
  return problem !== undefined ? Effect.fail(problem) : Either.match(encodeChecked(cp), { onLeft: Effect.fail, onRight: Effect.succeed })
}

/**
 * Encodes a checkpoint already checked with {@link checkpointProblem} (what
 * remains to fail is `JSON.stringify` itself: a stack overflow, say).
 */
export const encodeChecked = (cp: Checkpoint.Checkpoint): Either.Either<Encoded, CheckpointEncodeError> => {
  const encodedState = stringify(cp.state, cp.id, "state")
  if (Either.isLeft(encodedState)) return Either.left(encodedState.left)
  const encodedMetadata = stringify(cp.metadata, cp.id, "metadata")
  if (Either.isLeft(encodedMetadata)) return Either.left(encodedMetadata.left)
  let runtime: string | null = null
  if (cp.runtime !== undefined) {
    const encodedRuntime = stringify(cp.runtime, cp.id, "runtime")
    if (Either.isLeft(encodedRuntime)) return Either.left(encodedRuntime.left)
    runtime = encodedRuntime.right
  }
  const state = encodedState.right
  const metadata = encodedMetadata.right
  const next = JSON.stringify(cp.next)
  const timestamp = cp.timestamp.toISOString()
  const document = `{"id":${JSON.stringify(cp.id)},"executionId":${JSON.stringify(cp.executionId)},"nodeName":${
    JSON.stringify(cp.nodeName)
  },"version":${cp.version},"timestamp":"${timestamp}","next":${next}${
    cp.parentId === undefined ? "" : `,"parentId":${JSON.stringify(cp.parentId)}`
  }${runtime === null ? "" : `,"runtime":${runtime}`},"metadata":${metadata},"state":${state}}`
  return Either.right({
    checkpoint: cp,
    state,
    metadata,
    next,
    timestamp,
    runtime,
    refs: cp.runtime === undefined ? noRefs : refsOf(cp),
    document
  })
}

// -----------------------------------------------------------------------------
// Decoding
// -----------------------------------------------------------------------------

const idSchema = Schema.String.pipe(Schema.filter((s) => idProblem(s) ?? true, { identifier: "Id" }))
const objectSchema = Schema.declare(isPlainObject, { identifier: "JsonObject", description: "a JSON object" })

/** The stored shape: ids re-checked, dates from text, `Date`s or epoch millis, `parentId`/`runtime` null or absent. */
const Stored = Schema.Struct({
  id: idSchema,
  executionId: idSchema,
  nodeName: Schema.String,
  state: Schema.Unknown,
  metadata: objectSchema,
  timestamp: Schema.Union(Schema.DateFromSelf, Schema.Date, Schema.DateFromNumber).pipe(Schema.validDate()),
  version: Schema.Int,
  next: Schema.Array(Schema.String),
  parentId: Schema.optional(Schema.NullOr(idSchema)),
  runtime: Schema.optional(Schema.NullOr(objectSchema))
})
const decodeStored = Schema.decodeUnknownEither(Stored)

const named = (id: string | undefined) => id === undefined ? "" : ` ${JSON.stringify(id)}`

/**
 * Decodes a checkpoint from its fields as read from a backend (already parsed
 * from JSON): what SQL stores use for a row. `id` names the checkpoint in the
 * error when the data is too broken to say. The `state`, `metadata` and
 * `runtime` values must come from `JSON.parse` (they are taken as they are,
 * not rebuilt).
 */
export const decodeFields = (fields: unknown, id?: string): Effect.Effect<Checkpoint.Checkpoint, CheckpointDecodeError> => {
  const result = decodeStored(fields, { onExcessProperty: "ignore" })
  if (Either.isLeft(result)) {
    const known = id ?? (isPlainObject(fields) && typeof fields.id === "string" ? fields.id : undefined)
    return Effect.fail(
      new CheckpointDecodeError({
        ...(known === undefined ? {} : { id: known }),
        message: `Stored checkpoint${named(known)} is not a valid checkpoint: ${
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
    new Checkpoint.Checkpoint(
      {
        id: s.id as Checkpoint.CheckpointId,
        executionId: s.executionId as Checkpoint.ExecutionId,
        nodeName: s.nodeName,
        state: s.state as Checkpoint.Json,
        metadata: s.metadata as Checkpoint.JsonObject,
        timestamp: s.timestamp,
        version: s.version,
        next: s.next,
        ...(s.parentId === undefined || s.parentId === null ? {} : { parentId: s.parentId as Checkpoint.CheckpointId }),
        ...(s.runtime === undefined || s.runtime === null ? {} : { runtime: s.runtime as Checkpoint.JsonObject })
      },
      true
    )
  )
}

/** Parses JSON text, failing with `CheckpointDecodeError` naming `id` (and `what`, e.g. a column). */
export const parseJson = (text: unknown, id?: string, what?: string): Either.Either<unknown, CheckpointDecodeError> => {
  const where = what === undefined ? "" : `: ${what}`
  if (typeof text !== "string") {
    return Either.left(
      new CheckpointDecodeError({
        ...(id === undefined ? {} : { id }),
        message: `Stored checkpoint${named(id)}${where} is not JSON text`
      })
    )
  }
  try {
    return Either.right(JSON.parse(text) as unknown)
  } catch (e) {
    return Either.left(
      new CheckpointDecodeError({
        ...(id === undefined ? {} : { id }),
        message: `Stored checkpoint${named(id)}${where} is not valid JSON: ${e instanceof Error ? e.message : String(e)}`
      })
    )
  }
}

/**
 * Decodes a checkpoint from the JSON document {@link toEncoded} wrote. Corrupt,
 * truncated or foreign text fails with `CheckpointDecodeError` naming `id`
 * (when given, the document must also hold that id).
 */
export const decodeDocument = (text: unknown, id?: string): Effect.Effect<Checkpoint.Checkpoint, CheckpointDecodeError> => {
  const parsed = parseJson(text, id)
  return Either.isLeft(parsed) ? Effect.fail(parsed.left) : decodeFields(parsed.right, id)
}
