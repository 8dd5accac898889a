/**
 * Every error a checkpoint store or the checkpoint encoding can fail with.
 *
 * All of them are `Schema.TaggedError` classes: they live in the typed error
 * channel, so callers recover with `Effect.catchTag("CheckpointNotFound", …)`,
 * and they carry the fields needed to act on them.
 *
 * They live in one module so that `Checkpoint`, `CheckpointStore`, `Graph` and
 * the store layers can all import them without importing each other.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * The identifier kinds that {@link InvalidIdentifier} reports.
 *
 * @since 0.1.0
 * @category models
 */
export const IdentifierKind = Schema.Literal(
  "CheckpointId",
  "ExecutionId",
  "tableName",
  "schemaName",
  "prefix"
)

/**
 * @since 0.1.0
 * @category models
 */
export type IdentifierKind = typeof IdentifierKind.Type

/**
 * No checkpoint with this id exists in the store.
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckpointNotFound extends Schema.TaggedError<CheckpointNotFound>()("CheckpointNotFound", {
  id: Schema.String
}) {
  override get message(): string {
    return `Checkpoint ${JSON.stringify(this.id)} not found`
  }
}

/**
 * A checkpoint could not be saved because the store already holds one with the
 * same `(executionId, version)` or the same `id`. Nothing was written, and the
 * checkpoint already stored is unchanged.
 *
 * The fields describe the incoming checkpoint.
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckpointConflict extends Schema.TaggedError<CheckpointConflict>()("CheckpointConflict", {
  executionId: Schema.String,
  version: Schema.Number,
  id: Schema.optional(Schema.String),
  /** For a conditional save (`expect`): the newest version the save expected. */
  expectedLatestVersion: Schema.optional(Schema.Number),
  /** For a conditional save, when the store reports it: the newest version it found. */
  actualLatestVersion: Schema.optional(Schema.Number)
}) {
  override get message(): string {
    if (this.expectedLatestVersion !== undefined) {
      return `Checkpoint conflict: execution ${JSON.stringify(this.executionId)} was expected to be at version ${this.expectedLatestVersion}` +
        (this.actualLatestVersion === undefined ? "" : ` but is at version ${this.actualLatestVersion}`)
    }
    return `Checkpoint conflict: execution ${JSON.stringify(this.executionId)} already has version ${this.version}` +
      (this.id === undefined ? "" : ` or checkpoint id ${JSON.stringify(this.id)} is taken`)
  }
}

/**
 * Stored data could not be read back as a checkpoint: corrupt, truncated,
 * hand-edited or foreign data, or a state the graph's Schema no longer accepts.
 * `id` names the checkpoint when it is known.
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckpointDecodeError extends Schema.TaggedError<CheckpointDecodeError>()("CheckpointDecodeError", {
  id: Schema.optional(Schema.String),
  message: Schema.String
}) {}

/**
 * A checkpoint could not be encoded for storage: a state that is not JSON
 * (a `BigInt`, a cycle, a function, `undefined`, a class instance), a value the
 * state Schema rejects, or a value the backend refuses. Nothing was written.
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckpointEncodeError extends Schema.TaggedError<CheckpointEncodeError>()("CheckpointEncodeError", {
  id: Schema.optional(Schema.String),
  message: Schema.String
}) {}

/**
 * The backend failed: connection refused, server gone, disk full, permission
 * denied, a failure while the store's layer was built.
 *
 * `message` and `cause` never contain a password from a connection string.
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckpointStoreError extends Schema.TaggedError<CheckpointStoreError>()("CheckpointStoreError", {
  backend: Schema.String,
  operation: Schema.String,
  message: Schema.String,
  cause: Schema.optional(Schema.Unknown)
}) {}

/**
 * An identifier was refused: a checkpoint id or execution id outside the
 * allowed alphabet, a table name, schema name or key prefix that could not be
 * used safely. Nothing was read or written with it.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidIdentifier extends Schema.TaggedError<InvalidIdentifier>()("InvalidIdentifier", {
  kind: IdentifierKind,
  value: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Invalid ${this.kind} ${JSON.stringify(this.value)}: ${this.reason}`
  }
}

/**
 * The errors of the store's own backend (as opposed to data errors).
 *
 * @since 0.1.0
 * @category models
 */
export type StoreError = CheckpointStoreError | InvalidIdentifier
