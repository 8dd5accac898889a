/**
 * The ordered save queue of one run.
 *
 * A run hands over checkpoints and task writes in the order it makes them;
 * they land in that order, written by one save fiber at a time: consecutive
 * checkpoints together (one `saveMany`), each task's writes with one
 * `saveWrites`. So what a crash leaves is always a gap-free prefix of the run,
 * and a task write never arrives before its checkpoint.
 *
 * Every checkpoint write is conditional on the checkpoint before it (version
 * and id), so a run never writes over a history that moved under it (another
 * writer, a `clear`). Only the first write of a fresh `invoke` may *rebase*:
 * if its condition fails, the queue reads where the execution is, renumbers
 * what has not landed to follow it, and writes again.
 *
 * The save fiber is a daemon: interrupting the run never cuts a save in the
 * middle; the run `drain`s before it returns. A save that must be waited for
 * while nothing is being written is written inline, without a fiber. When the
 * run ends before the forked fiber got to start (a fast graph), the run takes
 * the writing over instead of waiting for the fiber to be scheduled.
 *
 * @internal
 */
import { Cause, Deferred, Effect, Exit, Fiber, Option } from "effect"
import * as Checkpoint from "../../Checkpoint.js"
import {
  CheckpointConflict,
  type CheckpointDecodeError,
  type CheckpointNotFound,
  type StoreError
} from "../../CheckpointError.js"
import type * as CheckpointStore from "../../CheckpointStore.js"

/** The failures of reading checkpoints. */
export type ReadError = CheckpointDecodeError | StoreError

/** What a write may fail with. */
export type WriteError = CheckpointStore.SaveError | ReadError | CheckpointNotFound

/** Where the next checkpoint of an execution goes: its version and the checkpoint it follows. */
export interface Chain {
  readonly executionId: Checkpoint.ExecutionId
  version: number
  parentId: Checkpoint.CheckpointId | undefined
}

/** A save failure, stamped with when it happened relative to other failures of the run. */
export interface Failure {
  readonly cause: Cause.Cause<WriteError>
  readonly at: number
}

/**
 * How a run stops when one of its saves failed: the run fails with this
 * marker, and the runner puts the save's own failure in its place (once, in
 * time order with any other failure). It never leaves the engine.
 */
export class SaveFailed {
  readonly _tag = "SaveFailed"
}
export const saveFailed = new SaveFailed()

export const isSaveFailed = (cause: Cause.Cause<unknown>): boolean =>
  Option.exists(Cause.failureOption(cause), (e) => e instanceof SaveFailed)

/** One thing to save. */
export type Item =
  | {
    readonly _tag: "Checkpoint"
    /** Replaced when the run is renumbered (see rebase). */
    checkpoint: Checkpoint.Checkpoint
    readonly execution: CheckpointStore.ExecutionPatch | undefined
  }
  | {
    readonly _tag: "Writes"
    readonly checkpointId: Checkpoint.CheckpointId
    readonly taskId: string
    readonly writes: ReadonlyArray<{ readonly key: string; readonly value: Checkpoint.Json }>
    readonly execution: CheckpointStore.ExecutionPatch | undefined
  }

interface Entry {
  readonly item: Item
  /** When it was handed over (Clock ms), for the lag bound. */
  readonly madeAt: number
  readonly done: Deferred.Deferred<void, WriteError> | undefined
}

/** Options of a queue. */
export interface SaverOptions {
  readonly store: CheckpointStore.Service
  readonly executionId: Checkpoint.ExecutionId
  /** Where the execution is when the run starts (0 / undefined: empty). */
  readonly start: { readonly version: number; readonly id: Checkpoint.CheckpointId | undefined }
  /** May the first write rebase (a fresh invoke)? */
  readonly rebase: boolean
  /** The run's lease owner (fencing), if any. */
  readonly owner: string | undefined
  /** Orders failures of a run in time. */
  readonly clockTick: () => number
  /** Renumbering after a rebase: called with the delta, so the run moves its own chain. */
  readonly onRebase: (delta: number, latestId: Checkpoint.CheckpointId | undefined) => void
  /** Called with each checkpoint once it landed. */
  readonly onLanded?: ((checkpoint: Checkpoint.Checkpoint) => void) | undefined
}

/** The saves of one run. */
export interface Saver {
  /** Hands an item over; fails at once if an earlier save failed. With `wait`, returns once it landed. */
  readonly enqueue: (item: Item, madeAt: number, wait: boolean) => Effect.Effect<void, WriteError>
  /** Fails with `SaveFailed` if a save failed (the step-boundary check). */
  readonly check: Effect.Effect<void, SaveFailed>
  /** Waits until nothing handed over at `madeAt <= olderThan` is still unlanded; `undefined` when nothing is. */
  readonly bound: (olderThan: number) => Effect.Effect<void> | undefined
  /** Waits until every handed-over item landed or was dropped after a failure. */
  readonly drain: Effect.Effect<void>
  readonly failure: () => Failure | undefined
  /** The newest checkpoint that landed (or where the run started). */
  readonly landed: () => { readonly version: number; readonly id: Checkpoint.CheckpointId | undefined }
}

/** A conditional save whose condition did not hold (as opposed to a taken id or version). */
const isExpectationConflict = (cause: Cause.Cause<unknown>): boolean =>
  Option.exists(Cause.failureOption(cause), (e) => e instanceof CheckpointConflict && e.reason === "ExpectationFailed")

export const makeSaver = (options: SaverOptions): Saver => {
  const { executionId, owner, store } = options
  const pending: Array<Entry> = []
  /** The newest checkpoint that landed: the condition of the next checkpoint write. */
  let landed: { version: number; id: Checkpoint.CheckpointId | undefined } = { ...options.start }
  let mayRebase = options.rebase
  let failure: Failure | undefined
  /** When the oldest entry of the batch being written was handed over. */
  let flying: number | undefined
  /**
   * Who writes: `"idle"`; `"scheduled"`: a fiber was forked but has not
   * started (whoever comes first — that fiber, or a run that must wait anyway
   * — does the writing; `token` tells the fiber whether it still should); or
   * `"running"` with the fiber.
   */
  let writer: { readonly _tag: "idle" } | { readonly _tag: "scheduled"; readonly token: object } | {
    readonly _tag: "running"
    readonly fiber: Fiber.RuntimeFiber<void>
  } = { _tag: "idle" }

  const fail = (cause: Cause.Cause<WriteError>) => {
    failure ??= { cause, at: options.clockTick() }
  }
  const settle = (batch: ReadonlyArray<Entry>, exit: Exit.Exit<void, WriteError>): Effect.Effect<void> => {
    let waiting: Array<Deferred.Deferred<void, WriteError>> | undefined
    for (const e of batch) if (e.done !== undefined) (waiting ??= []).push(e.done)
    return waiting === undefined ? Effect.void : Effect.forEach(waiting, (d) => Deferred.done(d, exit), { discard: true })
  }

  /**
   * The execution is not where the run thought (another writer, or the
   * runnable did not know it): read where it is and renumber every checkpoint
   * not landed yet to follow it. Nothing of the run has landed yet.
   */
  const rebase = (batch: ReadonlyArray<Entry>) =>
    Effect.map(store.latest(executionId), (latest) => {
      const base = Option.match(latest, { onNone: () => 0, onSome: (cp) => cp.version })
      const latestId = Option.getOrUndefined(Option.map(latest, (cp) => cp.id))
      const delta = base - landed.version
      let first = true
      for (const entry of [...batch, ...pending]) {
        const item = entry.item
        if (item._tag !== "Checkpoint") continue
        const { parentId: previous, ...rest } = item.checkpoint
        const parentId = first ? latestId : previous
        first = false
        item.checkpoint = new Checkpoint.Checkpoint(
          { ...rest, version: item.checkpoint.version + delta, ...(parentId === undefined ? {} : { parentId }) },
          true
        )
      }
      landed = { version: base, id: latestId }
      mayRebase = false
      options.onRebase(delta, latestId)
    })

  const expectation = (): CheckpointStore.Expectation => ({
    executionId,
    latestVersion: landed.version,
    ...(landed.id === undefined ? {} : { latestCheckpointId: landed.id })
  })

  /** Writes consecutive checkpoints: together; if that fails as a whole, one by one, so the longest good prefix lands. */
  const writeCheckpoints = (batch: ReadonlyArray<Entry>): Effect.Effect<void, WriteError> =>
    Effect.suspend(() => {
      const cps = batch.map((e) => (e.item as Extract<Item, { _tag: "Checkpoint" }>).checkpoint)
      const last = batch[batch.length - 1]!.item as Extract<Item, { _tag: "Checkpoint" }>
      const saveOptions: CheckpointStore.SaveOptions = { expect: expectation(), owner, execution: last.execution }
      const moved = Effect.sync(() => {
        const newest = cps[cps.length - 1]!
        landed = { version: newest.version, id: newest.id }
        mayRebase = false
        cps.forEach((cp) => options.onLanded?.(cp))
      })
      const all = cps.length === 1 ? store.save(cps[0]!, saveOptions) : store.saveMany(cps, saveOptions)
      return Effect.catchAllCause(Effect.zipRight(all, moved), (cause): Effect.Effect<void, WriteError> => {
        if (isExpectationConflict(cause)) {
          return mayRebase ? Effect.zipRight(rebase(batch), writeCheckpoints(batch)) : Effect.failCause(cause)
        }
        if (cps.length === 1) return Effect.failCause(cause)
        // One by one, each on the one before; the patch goes with the last.
        return Effect.forEach(batch, (entry) => writeCheckpoints([entry]), { discard: true })
      })
    })

  const writeItem = (batch: ReadonlyArray<Entry>): Effect.Effect<void, WriteError> => {
    const item = batch[0]!.item
    if (item._tag === "Checkpoint") return writeCheckpoints(batch)
    return store.saveWrites(item.checkpointId, item.taskId, item.writes, { owner, execution: item.execution })
  }

  /** The next batch: every consecutive checkpoint at the head, or one writes item. */
  const takeBatch = (): Array<Entry> => {
    if (pending[0]!.item._tag === "Writes") return pending.splice(0, 1)
    let n = 1
    while (n < pending.length && pending[n]!.item._tag === "Checkpoint") n++
    return pending.splice(0, n)
  }

  /** Writes everything pending, batch after batch, until nothing is left or a write fails. */
  const flushAll: Effect.Effect<void> = Effect.suspend(() => {
    if (pending.length === 0) return Effect.void
    const batch = takeBatch()
    flying = batch[0]!.madeAt
    return Effect.matchCauseEffect(Effect.ensuring(writeItem(batch), Effect.sync(() => flying = undefined)), {
      onFailure: (cause) => {
        fail(cause)
        // Nothing after a failed save may land: drop the rest, so what is stored stays a gap-free prefix.
        const dropped = pending.splice(0, pending.length)
        return settle([...batch, ...dropped], Exit.failCause(cause))
      },
      onSuccess: () => Effect.zipRight(settle(batch, Exit.void), flushAll)
    })
  })

  /** The body of a forked save fiber: it writes only if nobody took over before it started. */
  const forked = (token: object): Effect.Effect<void> =>
    Effect.withFiberRuntime((fiber) => {
      if (writer._tag !== "scheduled" || writer.token !== token) return Effect.void
      writer = { _tag: "running", fiber: fiber as Fiber.RuntimeFiber<void> }
      return Effect.ensuring(flushAll, Effect.sync(() => writer = { _tag: "idle" }))
    })

  /** Writes what is pending in this fiber, whole (an interruption never cuts a save). */
  const flushHere = Effect.suspend(() => {
    writer = { _tag: "idle" }
    return Effect.uninterruptible(flushAll)
  })

  /** Until every handed-over item landed: take over a fiber that has not started, await one that has. */
  const drain: Effect.Effect<void> = Effect.suspend(() => {
    switch (writer._tag) {
      case "idle":
        return pending.length === 0 ? Effect.void : Effect.zipRight(flushHere, drain)
      case "scheduled":
        return Effect.zipRight(flushHere, drain)
      case "running":
        return Effect.zipRight(Fiber.await(writer.fiber), drain)
    }
  })

  const failed = Effect.suspend(() => failure === undefined ? Effect.void : Effect.failCause(failure.cause))

  return {
    check: Effect.suspend(() => failure === undefined ? Effect.void : Effect.fail(saveFailed)),
    enqueue: (item, madeAt, wait) =>
      Effect.suspend(() => {
        if (failure !== undefined) return failed
        if (wait && writer._tag !== "running") {
          // Nobody is writing: write it (and anything pending before it) here.
          pending.push({ item, madeAt, done: undefined })
          return Effect.zipRight(flushHere, failed)
        }
        const done = wait ? Deferred.unsafeMake<void, WriteError>(undefined as never) : undefined
        pending.push({ item, madeAt, done })
        const start = writer._tag !== "idle" ? Effect.void : Effect.suspend(() => {
          const token = {}
          writer = { _tag: "scheduled", token }
          return Effect.asVoid(Effect.forkDaemon(forked(token)))
        })
        return done === undefined ? start : Effect.zipRight(start, Deferred.await(done))
      }),
    bound: (olderThan) => {
      const oldest = flying ?? pending[0]?.madeAt
      return oldest !== undefined && oldest <= olderThan ? drain : undefined
    },
    drain,
    failure: () => failure,
    landed: () => landed
  }
}
