/**
 * The export format: JSON Lines, one block per execution.
 *
 * ```text
 * {"type":"checkpoint","id":…,"executionId":…,"version":1,…}   every checkpoint, ascending by version
 * {"type":"writes","checkpointId":…,"taskId":…,"writes":[{"key":…,"value":…}]}   every task's writes
 * {"type":"execution","executionId":…,"status":…,…}            the execution record: ends the block
 * ```
 *
 * A checkpoint line is the checkpoint's JSON document (`Checkpoint.encode`)
 * with a `type` field in front, so ids, versions, timestamps (ms), metadata,
 * runtime and state round-trip exactly. The execution line comes last: a block
 * without one (a truncated file) is refused rather than imported in part.
 *
 * @since 0.2.0
 * @internal
 */
import { Effect, Either } from "effect"
import * as Checkpoint from "../Checkpoint.js"
import { decodeFields } from "../CheckpointBackend.js"
import type * as CheckpointStore from "../CheckpointStore.js"
import { statuses } from "../CheckpointStore.js"
import { isValidId } from "../internal/identifier.js"
import { isPlainObject, jsonProblem } from "../internal/json.js"
import { CliError } from "./StoreUrl.js"

/**
 * The writes of one task of one checkpoint.
 *
 * @since 0.2.0
 * @category models
 */
export interface TaskWrites {
  readonly checkpointId: Checkpoint.CheckpointId
  readonly taskId: string
  readonly writes: ReadonlyArray<{ readonly key: string; readonly value: Checkpoint.Json }>
}

/**
 * One execution as exported: its checkpoints (ascending by version), its
 * task writes and its record.
 *
 * @since 0.2.0
 * @category models
 */
export interface Block {
  readonly executionId: Checkpoint.ExecutionId
  readonly checkpoints: ReadonlyArray<Checkpoint.Checkpoint>
  readonly writes: ReadonlyArray<TaskWrites>
  readonly record: CheckpointStore.ExecutionRecord
}

// -----------------------------------------------------------------------------
// Encoding
// -----------------------------------------------------------------------------

/**
 * The line of a checkpoint (without the newline).
 *
 * @since 0.2.0
 * @category encoding
 */
export const checkpointLine = (cp: Checkpoint.Checkpoint) =>
  Effect.map(Checkpoint.encode(cp), (document) => `{"type":"checkpoint",${document.slice(1)}`)

/**
 * The lines of a checkpoint's task writes, one per task.
 *
 * @since 0.2.0
 * @category encoding
 */
export const writesLines = (
  checkpointId: Checkpoint.CheckpointId,
  writes: ReadonlyArray<CheckpointStore.TaskWrite>
): Array<string> => {
  const byTask = new Map<string, Array<{ key: string; value: Checkpoint.Json }>>()
  for (const w of writes) {
    let task = byTask.get(w.taskId)
    if (task === undefined) {
      task = []
      byTask.set(w.taskId, task)
    }
    task.push({ key: w.key, value: w.value })
  }
  return [...byTask].map(([taskId, task]) => JSON.stringify({ type: "writes", checkpointId, taskId, writes: task }))
}

/**
 * An execution record as JSON (what `executions --json` prints, and the
 * execution line without its `type`).
 *
 * @since 0.2.0
 * @category encoding
 */
export const recordJson = (r: CheckpointStore.ExecutionRecord) => ({
  executionId: r.executionId,
  status: r.status,
  latestVersion: r.latestVersion,
  latestCheckpointId: r.latestCheckpointId,
  updatedAt: r.updatedAt.toISOString(),
  attempts: r.attempts,
  ...(r.wakeAt === undefined ? {} : { wakeAt: r.wakeAt.toISOString() }),
  ...(r.failure === undefined ? {} : { failure: { tag: r.failure.tag, message: r.failure.message } }),
  ...(r.lease === undefined ? {} : { lease: { owner: r.lease.owner, expiresAt: r.lease.expiresAt.toISOString() } })
})

/**
 * The execution line of a record.
 *
 * @since 0.2.0
 * @category encoding
 */
export const executionLine = (r: CheckpointStore.ExecutionRecord): string =>
  JSON.stringify({ type: "execution", ...recordJson(r) })

// -----------------------------------------------------------------------------
// Decoding
// -----------------------------------------------------------------------------

type Line =
  | { readonly _tag: "checkpoint"; readonly checkpoint: Checkpoint.Checkpoint }
  | { readonly _tag: "writes"; readonly writes: TaskWrites }
  | { readonly _tag: "execution"; readonly record: CheckpointStore.ExecutionRecord }

const statusSet = new Set<unknown>(statuses)

const dateOf = (value: unknown): Date | undefined => {
  if (typeof value !== "string") return undefined
  const ms = Date.parse(value)
  return Number.isFinite(ms) ? new Date(ms) : undefined
}

const decodeRecordLine = (o: Record<string, unknown>): Either.Either<CheckpointStore.ExecutionRecord, string> => {
  const updatedAt = dateOf(o.updatedAt)
  const wakeAt = o.wakeAt === undefined ? undefined : dateOf(o.wakeAt)
  const failure = o.failure
  const lease = o.lease
  if (!isValidId(o.executionId)) return Either.left("executionId is not a valid execution id")
  if (!statusSet.has(o.status)) return Either.left(`status ${JSON.stringify(o.status)} is not a status`)
  if (!(typeof o.latestVersion === "number" && Number.isInteger(o.latestVersion) && o.latestVersion >= 1)) {
    return Either.left("latestVersion is not a version")
  }
  if (!isValidId(o.latestCheckpointId)) return Either.left("latestCheckpointId is not a valid checkpoint id")
  if (updatedAt === undefined) return Either.left("updatedAt is not an ISO-8601 time")
  if (o.wakeAt !== undefined && wakeAt === undefined) return Either.left("wakeAt is not an ISO-8601 time")
  if (!(typeof o.attempts === "number" && Number.isInteger(o.attempts) && o.attempts >= 0)) {
    return Either.left("attempts is not a count")
  }
  if (failure !== undefined && !(isPlainObject(failure) && typeof failure.tag === "string" && typeof failure.message === "string")) {
    return Either.left("failure must be an object with a string tag and message")
  }
  if (
    lease !== undefined &&
    !(isPlainObject(lease) && isValidId(lease.owner) && dateOf(lease.expiresAt) !== undefined)
  ) {
    return Either.left("lease must be an object with an owner and an ISO-8601 expiresAt")
  }
  const status = o.status as CheckpointStore.ExecutionStatus
  return Either.right({
    executionId: o.executionId as Checkpoint.ExecutionId,
    status,
    pending: status !== "done",
    latestVersion: o.latestVersion,
    latestCheckpointId: o.latestCheckpointId as Checkpoint.CheckpointId,
    updatedAt,
    attempts: o.attempts,
    ...(wakeAt === undefined ? {} : { wakeAt }),
    ...(failure === undefined ? {} : { failure: { tag: failure.tag as string, message: failure.message as string } }),
    ...(lease === undefined
      ? {}
      : { lease: { owner: lease.owner as string, expiresAt: dateOf(lease.expiresAt)! } })
  })
}

const decodeWritesLine = (o: Record<string, unknown>): Either.Either<TaskWrites, string> => {
  if (!isValidId(o.checkpointId)) return Either.left("checkpointId is not a valid checkpoint id")
  if (typeof o.taskId !== "string") return Either.left("taskId is not a string")
  if (!Array.isArray(o.writes)) return Either.left("writes is not an array")
  const writes: Array<{ key: string; value: Checkpoint.Json }> = []
  for (const w of o.writes as ReadonlyArray<unknown>) {
    if (!isPlainObject(w) || typeof w.key !== "string" || !("value" in w)) {
      return Either.left("each write must be an object with a string key and a value")
    }
    const problem = jsonProblem(w.value, `writes[${JSON.stringify(w.key)}]`)
    if (problem !== undefined) return Either.left(problem)
    writes.push({ key: w.key, value: w.value as Checkpoint.Json })
  }
  return Either.right({ checkpointId: o.checkpointId as Checkpoint.CheckpointId, taskId: o.taskId, writes })
}

/** Decodes one line; `number` (1-based) names it in errors. */
const decodeLine = (text: string, number: number): Effect.Effect<Line, CliError> => {
  const bad = (message: string) => Effect.fail(new CliError({ message: `line ${number}: ${message}` }))
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (e) {
    return bad(`not JSON (${e instanceof Error ? e.message : String(e)})`)
  }
  if (!isPlainObject(parsed)) return bad("not a JSON object")
  switch (parsed.type) {
    case "checkpoint":
      return Effect.mapBoth(decodeFields(parsed), {
        onFailure: (e) => new CliError({ message: `line ${number}: ${e.message}` }),
        onSuccess: (checkpoint): Line => ({ _tag: "checkpoint", checkpoint })
      })
    case "writes":
      return Either.match(decodeWritesLine(parsed), {
        onLeft: bad,
        onRight: (writes) => Effect.succeed<Line>({ _tag: "writes", writes })
      })
    case "execution":
      return Either.match(decodeRecordLine(parsed), {
        onLeft: bad,
        onRight: (record) => Effect.succeed<Line>({ _tag: "execution", record })
      })
    default:
      return bad(`unknown line type ${JSON.stringify(parsed.type)} (expected "checkpoint", "writes" or "execution")`)
  }
}

/**
 * Reads an export line by line and hands each complete block to `onBlock`.
 * Blank lines are skipped. A line out of place (a checkpoint of another
 * execution before the current block's execution line, writes of a checkpoint
 * not in the block, an execution line that does not match the block's newest
 * checkpoint) or input that ends inside a block fails with a `CliError`
 * naming the line.
 *
 * @since 0.2.0
 * @category decoding
 */
export const makeReader = <E, R>(onBlock: (block: Block) => Effect.Effect<void, E, R>) => {
  let number = 0
  let executionId: Checkpoint.ExecutionId | undefined
  let checkpoints: Array<Checkpoint.Checkpoint> = []
  let writes: Array<TaskWrites> = []
  let ids = new Set<string>()
  const reset = () => {
    executionId = undefined
    checkpoints = []
    writes = []
    ids = new Set()
  }
  const fail = (message: string) => Effect.fail(new CliError({ message: `line ${number}: ${message}` }))

  const line = (raw: string): Effect.Effect<void, E | CliError, R> => {
    number++
    const text = raw.endsWith("\r") ? raw.slice(0, -1) : raw
    if (text.trim() === "") return Effect.void
    return Effect.flatMap(decodeLine(text, number), (decoded): Effect.Effect<void, E | CliError, R> => {
      switch (decoded._tag) {
        case "checkpoint": {
          const cp = decoded.checkpoint
          if (executionId !== undefined && cp.executionId !== executionId) {
            return fail(
              `a checkpoint of execution ${JSON.stringify(cp.executionId)} inside the block of ${JSON.stringify(executionId)}, ` +
                `which has no execution line yet (a truncated or interleaved export)`
            )
          }
          if (ids.has(cp.id)) return fail(`checkpoint ${JSON.stringify(cp.id)} appears twice`)
          executionId = cp.executionId
          ids.add(cp.id)
          checkpoints.push(cp)
          return Effect.void
        }
        case "writes": {
          const w = decoded.writes
          if (!ids.has(w.checkpointId)) {
            return fail(`writes of checkpoint ${JSON.stringify(w.checkpointId)}, which is not a checkpoint of this block`)
          }
          writes.push(w)
          return Effect.void
        }
        case "execution": {
          const r = decoded.record
          if (executionId === undefined) {
            return fail(`the execution line of ${JSON.stringify(r.executionId)} has no checkpoints before it`)
          }
          if (r.executionId !== executionId) {
            return fail(`the execution line of ${JSON.stringify(r.executionId)} ends the block of ${JSON.stringify(executionId)}`)
          }
          const sorted = [...checkpoints].sort((a, b) => a.version - b.version)
          const newest = sorted[sorted.length - 1]!
          if (newest.version !== r.latestVersion || newest.id !== r.latestCheckpointId) {
            return fail(
              `the execution line of ${JSON.stringify(r.executionId)} says its newest checkpoint is version ${r.latestVersion} ` +
                `(${JSON.stringify(r.latestCheckpointId)}), but the block's newest is version ${newest.version} (${JSON.stringify(newest.id)})`
            )
          }
          const block: Block = { executionId, checkpoints: sorted, writes, record: r }
          reset()
          return onBlock(block)
        }
      }
    })
  }

  const end: Effect.Effect<void, CliError> = Effect.suspend(() =>
    executionId === undefined
      ? Effect.void
      : Effect.fail(
        new CliError({
          message: `the input ends inside the block of execution ${JSON.stringify(executionId)} ` +
            `(no execution line after its checkpoints): a truncated export; nothing of it was imported`
        })
      )
  )
  return { line, end }
}
