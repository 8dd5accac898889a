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
  "prefix",
  "TaskId",
  "WriteKey",
  "owner",
  "cursor"
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
 * Why a write was refused by {@link CheckpointConflict}:
 *
 * - `"IdTaken"`: a checkpoint with this `id` exists (in any execution);
 * - `"VersionTaken"`: the execution already has a checkpoint with this `version`;
 * - `"ExpectationFailed"`: a conditional write (`expect`) found the execution
 *   elsewhere than expected (another writer moved it, or it was cleared);
 * - `"WriteTaken"`: the task already saved a write under this key
 *   (`saveWrites`).
 *
 * @since 0.2.0
 * @category models
 */
export const ConflictReason = Schema.Literal("IdTaken", "VersionTaken", "ExpectationFailed", "WriteTaken")

/**
 * @since 0.2.0
 * @category models
 */
export type ConflictReason = typeof ConflictReason.Type

/**
 * A write was refused because it collides with what the store holds (see
 * {@link ConflictReason}). Nothing was written, and what the store holds is
 * unchanged.
 *
 * `executionId` and `version` describe the incoming checkpoint (for
 * `"WriteTaken"`: the checkpoint the task writes belong to, and `key` names
 * the write).
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckpointConflict extends Schema.TaggedError<CheckpointConflict>()("CheckpointConflict", {
  reason: ConflictReason,
  executionId: Schema.String,
  version: Schema.Number,
  id: Schema.optional(Schema.String),
  /** For `"ExpectationFailed"`: the newest version the write expected. */
  expectedLatestVersion: Schema.optional(Schema.Number),
  /** For `"ExpectationFailed"`, when the store reports it: the newest version it found (0: none). */
  actualLatestVersion: Schema.optional(Schema.Number),
  /** For `"WriteTaken"`: the task and the key of the write that exists. */
  taskId: Schema.optional(Schema.String),
  key: Schema.optional(Schema.String)
}) {
  override get message(): string {
    const execution = JSON.stringify(this.executionId)
    switch (this.reason) {
      case "ExpectationFailed":
        return `Checkpoint conflict: execution ${execution} was expected to be at version ${this.expectedLatestVersion}` +
          (this.actualLatestVersion === undefined ? "" : ` but is at version ${this.actualLatestVersion}`)
      case "IdTaken":
        return `Checkpoint conflict: checkpoint id ${JSON.stringify(this.id)} is taken`
      case "VersionTaken":
        return `Checkpoint conflict: execution ${execution} already has version ${this.version}`
      case "WriteTaken":
        return `Checkpoint conflict: task ${JSON.stringify(this.taskId)} of checkpoint ${JSON.stringify(this.id)} ` +
          `already saved ${JSON.stringify(this.key)}`
    }
  }
}

/**
 * A write, renewal or release by `owner` was refused because another owner
 * holds a live lease on the execution (a worker took it over after this
 * owner's lease expired). Nothing was written: the run that gets it must stop
 * (fencing).
 *
 * @since 0.2.0
 * @category errors
 */
export class LeaseLost extends Schema.TaggedError<LeaseLost>()("LeaseLost", {
  executionId: Schema.String,
  owner: Schema.String,
  /** The owner that holds the lease now, when the store knows it. */
  holder: Schema.optional(Schema.String)
}) {
  override get message(): string {
    return `Lease lost: execution ${JSON.stringify(this.executionId)} is leased by ` +
      `${this.holder === undefined ? "another owner" : JSON.stringify(this.holder)}, not ${JSON.stringify(this.owner)}`
  }
}

/**
 * The execution has no record in the store: it never had a checkpoint, or it
 * was cleared, pruned to nothing or swept.
 *
 * @since 0.1.0
 * @category errors
 */
export class ExecutionNotFound extends Schema.TaggedError<ExecutionNotFound>()("ExecutionNotFound", {
  executionId: Schema.String
}) {
  override get message(): string {
    return `Execution ${JSON.stringify(this.executionId)} has no checkpoints`
  }
}

/**
 * A store option has a value that cannot be used (a negative ttl, a timeout
 * that is not a duration). Raised when the layer is built, before anything is
 * opened. (A bad table name or key prefix is an {@link InvalidIdentifier}.)
 *
 * @since 0.2.0
 * @category errors
 */
export class InvalidOption extends Schema.TaggedError<InvalidOption>()("InvalidOption", {
  option: Schema.String,
  message: Schema.String
}) {}

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
export type StoreError = CheckpointStoreError | InvalidIdentifier | InvalidOption
