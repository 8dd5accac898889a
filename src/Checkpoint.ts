/**
 * The `Checkpoint` record, the JSON value schemas it stores user data with,
 * its branded id types, id generation, and its JSON text encoding.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Schema } from "effect"
import type { CheckpointDecodeError, CheckpointEncodeError, InvalidIdentifier } from "./CheckpointError.js"
import * as codec from "./internal/codec.js"
import { checkId, idProblem } from "./internal/identifier.js"
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
 * - `runtime` is what the run engine needs to continue exactly from this
 *   checkpoint (send inputs, fan-in progress, the state's version); stores
 *   keep it as they keep `metadata`, and it is absent when there is nothing.
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
  parentId: Schema.optionalWith(CheckpointId, { exact: true }),
  runtime: Schema.optionalWith(JsonObject, { exact: true })
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
  readonly runtime?: unknown
}

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
      ...(options.parentId === undefined ? {} : { parentId: options.parentId as CheckpointId }),
      ...(options.runtime === undefined ? {} : { runtime: options.runtime as JsonObject })
    }
    const problem = codec.checkpointProblem(props)
    if (problem !== undefined) return yield* Effect.fail(problem)
    return new Checkpoint(props, true)
  })

// -----------------------------------------------------------------------------
// Encoding
// -----------------------------------------------------------------------------

/**
 * Encodes a checkpoint as one JSON document (what the File and Redis stores
 * keep, and what the CLI exports). Fails with `InvalidIdentifier` for a bad id
 * and `CheckpointEncodeError` for anything that would not round-trip exactly.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encode = (cp: Checkpoint): Effect.Effect<string, CheckpointEncodeError | InvalidIdentifier> =>
  Effect.map(codec.toEncoded(cp), (e) => e.document)

/**
 * Decodes a checkpoint from the JSON document {@link encode} wrote. Corrupt,
 * truncated or foreign text fails with `CheckpointDecodeError` naming `id`
 * (when given, the document must also hold that id).
 *
 * @since 0.1.0
 * @category encoding
 */
export const decode = (text: string, id?: string): Effect.Effect<Checkpoint, CheckpointDecodeError> =>
  codec.decodeDocument(text, id)
