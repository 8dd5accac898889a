/**
 * The ordered save queue of one run: checkpoints are handed over in version
 * order and land in version order, written by one save fiber at a time, all
 * pending ones together (one `saveMany`). A failure leaves a gap-free prefix
 * and stops the run at its next step boundary.
 *
 * @internal
 */
import { Cause, Deferred, Effect, Exit, Fiber, Option } from "effect"
import * as Checkpoint from "../../Checkpoint.js"
import { CheckpointConflict, type CheckpointDecodeError, type StoreError } from "../../CheckpointError.js"
import type * as CheckpointStore from "../../CheckpointStore.js"

/** The failures of reading checkpoints. */
export type ReadError = CheckpointDecodeError | StoreError

/** Where the next checkpoint of an execution goes: its version and the checkpoint it follows. */
export interface Chain {
  readonly executionId: Checkpoint.ExecutionId
  version: number
  parentId: Checkpoint.CheckpointId | undefined
}

/** A save failure, stamped with when it happened relative to other failures of the run. */
export interface Failure {
  readonly cause: Cause.Cause<CheckpointStore.SaveError | ReadError>
  readonly at: number
}

/**
 * How a run stops when one of its saves failed: the run fails with this
 * marker, and `execute` puts the save's own failure in its place (once, in
 * time order with any other failure). It never leaves this module.
 */
export class SaveFailed {
  readonly _tag = "SaveFailed"
}
export const saveFailed = new SaveFailed()

interface Pending {
  /** Replaced when the run is renumbered (see `rebase`). */
  checkpoint: Checkpoint.Checkpoint
  readonly done: Deferred.Deferred<Checkpoint.Checkpoint, CheckpointStore.SaveError | ReadError> | undefined
}

/**
 * How a run's first write is checked. Every run writes its first checkpoints
 * on the condition that the execution is where the run thinks it is (`expect`),
 * so nothing is read before a run and two writers never interleave. When
 * `rebase` is on (a fresh `invoke`, which does not depend on the execution's
 * past), a failed condition makes the saver read the execution's latest
 * checkpoint, renumber what the run made so far after it, and write again;
 * otherwise (a resume, which continues a particular checkpoint) it fails.
 */
export interface FirstWrite {
  readonly expect: CheckpointStore.Expectation
  readonly rebase: boolean
}

/**
 * The saves of one run. Checkpoints are handed over in version order and
 * written by one save fiber at a time, all pending ones together (one
 * `saveMany`), so they land in order and a failure leaves a gap-free prefix.
 * The save fiber is a daemon: interrupting the run never cuts a save in the
 * middle; the run awaits it (`drain`) before it returns. A save that is
 * waited for while nothing else is pending is written inline, without a fiber.
 */
export interface Saver {
  /** Hands a checkpoint over; fails at once if an earlier save failed. With `wait`, returns it once it landed. */
  readonly enqueue: (
    checkpoint: Checkpoint.Checkpoint,
    wait: boolean
  ) => Effect.Effect<Checkpoint.Checkpoint, CheckpointStore.SaveError | ReadError>
  /** Fails with `SaveFailed` if a save failed (the step-boundary check). */
  readonly check: Effect.Effect<void, SaveFailed>
  /** Waits until every handed-over checkpoint landed or was dropped after a failure. */
  readonly drain: Effect.Effect<void>
  readonly failure: () => Failure | undefined
}

export const isSaveFailed = (cause: Cause.Cause<unknown>): boolean =>
  Option.exists(Cause.failureOption(cause), (e) => e instanceof SaveFailed)

/** A conditional save whose condition did not hold (as opposed to a taken id or version). */
const isExpectationConflict = (cause: Cause.Cause<unknown>): boolean =>
  Option.exists(
    Cause.failureOption(cause),
    (e) => e instanceof CheckpointConflict && e.reason === "ExpectationFailed"
  )

export const makeSaver = (
  store: CheckpointStore.Service,
  clockTick: () => number,
  run: Chain,
  first: FirstWrite
): Saver => {
  const pending: Array<Pending> = []
  /**
   * The save fiber: `undefined` when none is going; `"scheduled"` when one was
   * forked but has not started (whoever comes first — that fiber, or a run
   * that must wait anyway — does the writing); or the running fiber.
   */
  let flusher: Fiber.RuntimeFiber<void> | "scheduled" | undefined
  /** Tells a forked fiber whether it is still the one that should write. */
  let generation = 0
  let failure: Failure | undefined
  /** The condition of the next write, until one write landed. */
  let expect: CheckpointStore.Expectation | undefined = first.expect
  let mayRebase = first.rebase
  const landed = () => {
    expect = undefined
  }
  const settle = (batch: ReadonlyArray<Pending>, exit: Exit.Exit<void, CheckpointStore.SaveError | ReadError>) =>
    Effect.forEach(
      batch,
      (p) => p.done === undefined ? Effect.void : Deferred.done(p.done, Exit.as(exit, p.checkpoint)),
      { discard: true }
    )
  const fail = (cause: Cause.Cause<CheckpointStore.SaveError | ReadError>) => {
    failure ??= { cause, at: clockTick() }
  }
  /**
   * The execution is not where this run thought (another writer, or this
   * runnable did not know it): read where it is and renumber everything this
   * run made so far to follow it. Nothing of the run has landed yet.
   */
  const rebase = (batch: ReadonlyArray<Pending>) =>
    Effect.map(store.latest(run.executionId), (latest) => {
      const base = Option.match(latest, { onNone: () => 0, onSome: (cp) => cp.version })
      const delta = base - expect!.latestVersion
      const firstId = batch[0]!.checkpoint.id
      const latestId = Option.getOrUndefined(Option.map(latest, (cp) => cp.id))
      const renumber = (cp: Checkpoint.Checkpoint) => {
        const { parentId: previous, ...rest } = cp
        const parentId = cp.id === firstId ? latestId : previous
        return new Checkpoint.Checkpoint(
          { ...rest, version: cp.version + delta, ...(parentId === undefined ? {} : { parentId }) },
          true
        )
      }
      for (const p of [...batch, ...pending]) p.checkpoint = renumber(p.checkpoint)
      run.version += delta
      expect = { executionId: run.executionId, latestVersion: base }
      mayRebase = false
    })
  /** Writes a batch: all together; if that fails as a whole, one by one, so the longest good prefix still lands. */
  const write = (batch: ReadonlyArray<Pending>): Effect.Effect<void, CheckpointStore.SaveError | ReadError> =>
    Effect.suspend(() => {
      const options = expect === undefined ? undefined : { expect }
      const cps = batch.map((p) => p.checkpoint)
      const all = cps.length === 1 ? store.save(cps[0]!, options) : store.saveMany(cps, options)
      return Effect.catchAllCause(
        Effect.tap(all, landed),
        (cause): Effect.Effect<void, CheckpointStore.SaveError | ReadError> => {
          if (options !== undefined && isExpectationConflict(cause)) {
            return mayRebase ? Effect.zipRight(rebase(batch), write(batch)) : Effect.failCause(cause)
          }
          if (cps.length === 1) return Effect.failCause(cause)
          return Effect.forEach(
            cps,
            (cp, i) => Effect.tap(store.save(cp, i === 0 ? options : undefined), landed),
            { discard: true }
          )
        }
      )
    })
  /** Writes everything pending, batch after batch, until nothing is left or a write fails. */
  const flushAll: Effect.Effect<void> = Effect.suspend(() => {
    if (pending.length === 0) return Effect.void
    const batch = pending.splice(0, pending.length)
    return Effect.matchCauseEffect(write(batch), {
      onFailure: (cause) => {
        fail(cause)
        // Nothing after a failed save may land: drop the rest, so what is stored stays a gap-free prefix.
        const dropped = pending.splice(0, pending.length)
        return settle([...batch, ...dropped], Exit.failCause(cause))
      },
      onSuccess: () => Effect.zipRight(settle(batch, Exit.void), flushAll)
    })
  })
  /** The body of a forked save fiber: it writes only if nobody wrote in its place before it started. */
  const forked = (gen: number): Effect.Effect<void> =>
    Effect.withFiberRuntime((fiber) => {
      if (flusher !== "scheduled" || gen !== generation) return Effect.void
      flusher = fiber as Fiber.RuntimeFiber<void>
      return Effect.ensuring(flushAll, Effect.sync(() => flusher = undefined))
    })
  /** Writes what is pending in this fiber, whole (an interruption never cuts a save). */
  const flushHere = Effect.suspend(() => {
    generation++
    flusher = undefined
    return Effect.uninterruptible(flushAll)
  })
  const failed = Effect.suspend(() => failure === undefined ? Effect.void : Effect.failCause(failure.cause))
  const check = Effect.suspend(() => failure === undefined ? Effect.void : Effect.fail(saveFailed))
  /** Until every handed-over checkpoint landed: take over a fiber that has not started, await one that has. */
  const drain: Effect.Effect<void> = Effect.suspend(() =>
    flusher === undefined
      ? Effect.void
      : flusher === "scheduled"
      ? Effect.zipRight(flushHere, drain)
      : Effect.zipRight(Fiber.await(flusher), drain)
  )
  return {
    check,
    enqueue: (checkpoint, wait) =>
      Effect.suspend(() => {
        if (failure !== undefined) return Effect.as(failed, checkpoint)
        const entry: Pending = {
          checkpoint,
          done: wait && typeof flusher === "object"
            ? Deferred.unsafeMake<Checkpoint.Checkpoint, CheckpointStore.SaveError | ReadError>(undefined as never)
            : undefined
        }
        pending.push(entry)
        if (wait && entry.done === undefined) {
          // No save fiber is writing: write it (and anything pending before it) here.
          return Effect.zipRight(flushHere, Effect.suspend(() => Effect.as(failed, entry.checkpoint)))
        }
        const start = flusher !== undefined
          ? Effect.void
          : Effect.suspend(() => {
            flusher = "scheduled"
            return Effect.asVoid(Effect.forkDaemon(forked(generation)))
          })
        return entry.done === undefined ? Effect.as(start, checkpoint) : Effect.zipRight(start, Deferred.await(entry.done))
      }),
    drain,
    failure: () => failure
  }
}

