/**
 * `verify`: reads an execution back and checks what a resume relies on.
 *
 * - every checkpoint decodes (and belongs to the execution it is listed under);
 * - versions are contiguous from the oldest kept one (a prune keeps the newest);
 * - each checkpoint's `parentId` is the checkpoint before it (the oldest kept
 *   one may point anywhere: a pruned checkpoint, or a fork's source);
 * - timestamps never go back;
 * - the task writes of every checkpoint decode;
 * - the execution record names the newest checkpoint.
 *
 * A checkpoint that does not decode does not stop the check: the rest of the
 * execution is read one version at a time past it, so every corrupt
 * checkpoint is reported, each by id.
 *
 * @since 0.2.0
 * @internal
 */
import { Effect, Either, Option } from "effect"
import type * as Checkpoint from "../Checkpoint.js"
import type { CheckpointDecodeError } from "../CheckpointError.js"
import type * as CheckpointStore from "../CheckpointStore.js"

/**
 * One thing wrong with an execution.
 *
 * @since 0.2.0
 * @category models
 */
export interface Problem {
  /** The checkpoint it concerns, when there is one. */
  readonly checkpointId?: string | undefined
  readonly version?: number | undefined
  readonly message: string
}

/**
 * What `verify` found in one execution.
 *
 * @since 0.2.0
 * @category models
 */
export interface Report {
  readonly executionId: string
  /** How many checkpoints were read (those that decode). */
  readonly checkpoints: number
  readonly problems: ReadonlyArray<Problem>
}

/** How many checkpoints one `list` call reads. */
const PAGE = 500

/** Success as `Right`, a decode failure as `Left`; the store's own errors stay failures. */
const decoded = <A, E extends { readonly _tag: string }>(
  effect: Effect.Effect<A, CheckpointDecodeError | E>
): Effect.Effect<Either.Either<A, CheckpointDecodeError>, Exclude<E, CheckpointDecodeError>> =>
  effect.pipe(
    Effect.map(Either.right),
    Effect.catchIf(
      (e): e is CheckpointDecodeError => e._tag === "CheckpointDecodeError",
      (e) => Effect.succeed(Either.left(e))
    )
  ) as Effect.Effect<Either.Either<A, CheckpointDecodeError>, Exclude<E, CheckpointDecodeError>>
/** The most versions stepped over one at a time when no record bounds them. */
const MAX_STEPS = 10_000

type Entry =
  | { readonly _tag: "ok"; readonly checkpoint: Checkpoint.Checkpoint }
  | { readonly _tag: "corrupt"; readonly error: CheckpointDecodeError }

/**
 * Verifies one execution. Fails only with the store's own errors (a lost
 * connection, say); what is wrong with the data is in the report.
 *
 * @since 0.2.0
 * @category verify
 */
export const verifyExecution = (
  store: CheckpointStore.Service,
  executionId: Checkpoint.ExecutionId
): Effect.Effect<Report, CheckpointStore.StoreError> =>
  Effect.gen(function*() {
    const problems: Array<Problem> = []
    let recordBroken = false
    const record = yield* store.getExecution(executionId).pipe(
      Effect.catchTag("CheckpointDecodeError", (e) => {
        recordBroken = true
        problems.push({ message: `the execution record does not decode: ${e.message}` })
        return Effect.succeed(Option.none<CheckpointStore.ExecutionRecord>())
      })
    )
    const bound = Option.match(record, { onNone: () => undefined, onSome: (r) => r.latestVersion })

    // Read every checkpoint a page at a time. When a page does not decode, read on one checkpoint at a
    // time: those that decode are kept, and the first after `after` that does not is stepped over by
    // looking one version further (versions are contiguous when all is well).
    const entries: Array<Entry> = []
    const seenCorrupt = new Set<string>()
    const noteCorrupt = (error: CheckpointDecodeError) => {
      const key = `${error.id ?? ""}\u0000${error.message}`
      if (seenCorrupt.has(key)) return
      seenCorrupt.add(key)
      entries.push({ _tag: "corrupt", error })
    }
    let after = 0
    let steps = 0
    let single = false
    while (true) {
      const page = yield* decoded(store.list(executionId, { afterVersion: after, limit: single ? 1 : PAGE }))
      if (Either.isRight(page)) {
        for (const checkpoint of page.right) entries.push({ _tag: "ok", checkpoint })
        if (page.right.length === 0 || (!single && page.right.length < PAGE)) break
        after = page.right[page.right.length - 1]!.version
        single = false
        continue
      }
      if (!single) {
        single = true
        continue
      }
      noteCorrupt(page.left)
      after++
      steps++
      if ((bound !== undefined && after > bound) || steps > MAX_STEPS) {
        // Past the record's newest version (or too far): whatever is left is read (or reported) at once.
        const tail = yield* decoded(store.list(executionId, { afterVersion: after }))
        if (Either.isRight(tail)) for (const checkpoint of tail.right) entries.push({ _tag: "ok", checkpoint })
        else noteCorrupt(tail.left)
        break
      }
    }

    let previous: Checkpoint.Checkpoint | undefined
    let brokenBefore = false
    let count = 0
    for (const entry of entries) {
      if (entry._tag === "corrupt") {
        problems.push({
          ...(entry.error.id === undefined ? {} : { checkpointId: entry.error.id }),
          message: `does not decode: ${entry.error.message}`
        })
        brokenBefore = true
        continue
      }
      const cp = entry.checkpoint
      count++
      const at = { checkpointId: cp.id, version: cp.version }
      if (cp.executionId !== executionId) {
        problems.push({ ...at, message: `is listed under this execution but belongs to ${JSON.stringify(cp.executionId)}` })
      }
      if (previous !== undefined && !brokenBefore) {
        if (cp.version !== previous.version + 1) {
          problems.push({ ...at, message: `version ${cp.version} follows version ${previous.version}: versions are not contiguous` })
        }
        if (cp.parentId !== previous.id) {
          problems.push({
            ...at,
            message: cp.parentId === undefined
              ? `has no parentId, but follows ${JSON.stringify(previous.id)}`
              : `parentId is ${JSON.stringify(cp.parentId)}, but it follows ${JSON.stringify(previous.id)}: the parent chain is broken`
          })
        }
        if (cp.timestamp.getTime() < previous.timestamp.getTime()) {
          problems.push({
            ...at,
            message: `timestamp ${cp.timestamp.toISOString()} is before the previous checkpoint's (${previous.timestamp.toISOString()})`
          })
        }
      }
      previous = cp
      brokenBefore = false
      const writes = yield* decoded(store.listWrites(cp.id))
      if (writes._tag === "Left") problems.push({ ...at, message: `its task writes do not decode: ${writes.left.message}` })
    }

    if (Option.isSome(record)) {
      const r = record.value
      const newest = entries[entries.length - 1]
      if (newest?._tag === "ok" && (newest.checkpoint.version !== r.latestVersion || newest.checkpoint.id !== r.latestCheckpointId)) {
        problems.push({
          message: `the execution record names version ${r.latestVersion} (${JSON.stringify(r.latestCheckpointId)}) as the newest, ` +
            `but the newest checkpoint is version ${newest.checkpoint.version} (${JSON.stringify(newest.checkpoint.id)})`
        })
      }
      if (entries.length === 0) problems.push({ message: "the execution has a record but no checkpoints" })
    } else if (entries.length > 0 && !recordBroken) {
      problems.push({ message: "the execution has checkpoints but no execution record" })
    }
    return { executionId, checkpoints: count, problems }
  })
