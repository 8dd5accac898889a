/**
 * The ordered save queue of one run.
 *
 * A run hands over checkpoints and task writes in the order it makes them;
 * they land in that order, written by one save fiber at a time: consecutive
 * checkpoints together (one `saveMany`), each task's writes with one
 * `saveWrites`. So what a crash leaves is always a gap-free prefix of the run,
 * and a task write never arrives before its checkpoint. A task's update that
 * nobody waits for (not `"sync"`) and that is still queued when the checkpoint
 * after its superstep is queued is not written: that checkpoint holds it.
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
import { Cause, Deferred, Effect, Exit, Fiber, Option, type Tracer } from "effect"
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
    /**
     * A task's update, nobody waiting for it: when the checkpoint that
     * follows its superstep is queued before it was written, it is not
     * written at all — that checkpoint holds the update.
     */
    readonly superseded?: boolean | undefined
    /** The span of the task that made it: its write is traced there, whichever fiber writes it. */
    readonly span?: Tracer.AnySpan | undefined
  }

interface Entry {
  readonly item: Item
  /** When it was handed over (Clock ms), for the lag bound. */
  readonly madeAt: number
  /** Completed with the item's outcome, for a caller that waits while another fiber writes. */
  readonly done: Deferred.Deferred<void, WriteError> | undefined
  /** A caller waits for it (through `done`, or by writing it itself): it is written even when superseded. */
  readonly waited: boolean
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

const idle = { _tag: "idle" } as const

/** How many scheduler turns a save fiber gives a run to queue the checkpoint that supersedes task updates. */
const SUPERSEDE_TURNS = 3

/**
 * The queue of one run. A class, not a closure: a run makes one, and its
 * methods are shared by every run.
 */
class SaveQueue implements Saver {
  private readonly pending: Array<Entry> = []
  /** The newest checkpoint that landed: the condition of the next checkpoint write. */
  private landedAt: { version: number; id: Checkpoint.CheckpointId | undefined }
  private mayRebase: boolean
  private failed: Failure | undefined
  /** When the oldest entry of the batch being written was handed over. */
  private flying: number | undefined
  /**
   * Who writes: `"idle"`; `"scheduled"`: a fiber was forked but has not
   * started (whoever comes first — that fiber, or a run that must wait anyway
   * — does the writing; `token` tells the fiber whether it still should);
   * `"running"` with the fiber; or `"inline"`: a caller that waits for its
   * save writes in its own fiber (`done` completes when it stops). Exactly one
   * writer at a time, so items land in the order they were handed over.
   */
  private writer: typeof idle | { readonly _tag: "scheduled"; readonly token: object } | {
    readonly _tag: "running"
    readonly fiber: Fiber.RuntimeFiber<void>
  } | { readonly _tag: "inline"; done: Deferred.Deferred<void> | undefined } = idle

  constructor(private readonly options: SaverOptions) {
    this.landedAt = { ...options.start }
    this.mayRebase = options.rebase
  }

  failure(): Failure | undefined {
    return this.failed
  }

  landed(): { readonly version: number; readonly id: Checkpoint.CheckpointId | undefined } {
    return this.landedAt
  }

  get check(): Effect.Effect<void, SaveFailed> {
    return this.failed === undefined ? Effect.void : Effect.fail(saveFailed)
  }

  private fail(cause: Cause.Cause<WriteError>) {
    this.failed ??= { cause, at: this.options.clockTick() }
  }

  private settle(batch: ReadonlyArray<Entry>, exit: Exit.Exit<void, WriteError>): Effect.Effect<void> {
    let waiting: Array<Deferred.Deferred<void, WriteError>> | undefined
    for (const e of batch) if (e.done !== undefined) (waiting ??= []).push(e.done)
    return waiting === undefined ? Effect.void : Effect.forEach(waiting, (d) => Deferred.done(d, exit), { discard: true })
  }

  /**
   * The execution is not where the run thought (another writer, or the
   * runnable did not know it): read where it is and renumber every checkpoint
   * not landed yet to follow it. Nothing of the run has landed yet.
   */
  private rebase(batch: ReadonlyArray<Entry>) {
    return Effect.map(this.options.store.latest(this.options.executionId), (latest) => {
      const base = Option.match(latest, { onNone: () => 0, onSome: (cp) => cp.version })
      const latestId = Option.getOrUndefined(Option.map(latest, (cp) => cp.id))
      const delta = base - this.landedAt.version
      let first = true
      for (const entry of [...batch, ...this.pending]) {
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
      this.landedAt = { version: base, id: latestId }
      this.mayRebase = false
      this.options.onRebase(delta, latestId)
    })
  }

  /** Writes consecutive checkpoints: together; if that fails as a whole, one by one, so the longest good prefix lands. */
  private writeCheckpoints(batch: ReadonlyArray<Entry>): Effect.Effect<void, WriteError> {
    return Effect.suspend(() => {
      const cps = batch.map((e) => (e.item as Extract<Item, { _tag: "Checkpoint" }>).checkpoint)
      const last = batch[batch.length - 1]!.item as Extract<Item, { _tag: "Checkpoint" }>
      const landed = this.landedAt
      const saveOptions: CheckpointStore.SaveOptions = {
        expect: {
          executionId: this.options.executionId,
          latestVersion: landed.version,
          ...(landed.id === undefined ? {} : { latestCheckpointId: landed.id })
        },
        owner: this.options.owner,
        execution: last.execution
      }
      const store = this.options.store
      const all = cps.length === 1 ? store.save(cps[0]!, saveOptions) : store.saveMany(cps, saveOptions)
      return Effect.matchCauseEffect(all, {
        onSuccess: () => {
          const newest = cps[cps.length - 1]!
          this.landedAt = { version: newest.version, id: newest.id }
          this.mayRebase = false
          const onLanded = this.options.onLanded
          if (onLanded !== undefined) cps.forEach(onLanded)
          return Effect.void
        },
        onFailure: (cause): Effect.Effect<void, WriteError> => {
          if (isExpectationConflict(cause)) {
            return this.mayRebase ? Effect.zipRight(this.rebase(batch), this.writeCheckpoints(batch)) : Effect.failCause(cause)
          }
          if (cps.length === 1) return Effect.failCause(cause)
          // One by one, each on the one before; the patch goes with the last.
          return Effect.forEach(batch, (entry) => this.writeCheckpoints([entry]), { discard: true })
        }
      })
    })
  }

  private writeItem(batch: ReadonlyArray<Entry>): Effect.Effect<void, WriteError> {
    const item = batch[0]!.item
    if (item._tag === "Checkpoint") return this.writeCheckpoints(batch)
    const write = this.options.store.saveWrites(item.checkpointId, item.taskId, item.writes, {
      owner: this.options.owner,
      execution: item.execution
    })
    return item.span === undefined ? write : Effect.withParentSpan(write, item.span)
  }

  /**
   * The next batch: every consecutive checkpoint at the head, or one writes
   * item. Task updates at the head that a queued checkpoint already holds
   * (see `superseded`) are settled without a write; `undefined` when nothing
   * is left.
   */
  private takeBatch(): Array<Entry> | undefined {
    const pending = this.pending
    if (pending[0]!.item._tag === "Writes") {
      if (this.supersedes()) {
        const dropped: Array<Entry> = []
        while (pending.length > 0) {
          const head = pending[0]!
          if (head.item._tag !== "Writes" || head.item.superseded !== true || head.waited) break
          dropped.push(pending.shift()!)
        }
        if (pending.length === 0) return undefined
        if (dropped.length > 0) return this.takeBatch()
      }
      return pending.splice(0, 1)
    }
    let n = 1
    while (n < pending.length && pending[n]!.item._tag === "Checkpoint") n++
    return pending.splice(0, n)
  }

  /** Whether a checkpoint is queued: the superstep of every task update before it is done. */
  private supersedes(): boolean {
    for (let i = this.pending.length - 1; i > 0; i--) if (this.pending[i]!.item._tag === "Checkpoint") return true
    return false
  }

  /** The writer stops (in the same step as it saw nothing left, so an item handed over later starts a new one). */
  private stopWriting(): void {
    const writer = this.writer
    this.writer = idle
    if (writer._tag === "inline" && writer.done !== undefined) Deferred.unsafeDone(writer.done, Exit.void)
  }

  /** Writes everything pending, batch after batch, until nothing is left or a write fails; then stops writing. */
  private flushAll(): Effect.Effect<void> {
    return Effect.suspend(() => {
      const batch = this.pending.length === 0 ? undefined : this.takeBatch()
      if (batch === undefined) {
        this.stopWriting()
        return Effect.void
      }
      this.flying = batch[0]!.madeAt
      return Effect.matchCauseEffect(this.writeItem(batch), {
        onFailure: (cause) => {
          this.flying = undefined
          this.fail(cause)
          // Nothing after a failed save may land: drop the rest, so what is stored stays a gap-free prefix.
          const dropped = this.pending.splice(0, this.pending.length)
          this.stopWriting()
          return this.settle([...batch, ...dropped], Exit.failCause(cause))
        },
        onSuccess: () => {
          this.flying = undefined
          return Effect.zipRight(this.settle(batch, Exit.void), this.flushAll())
        }
      })
    })
  }

  /** The body of a forked save fiber: it writes only if nobody took over before it started. */
  private forked(token: object): Effect.Effect<void> {
    return Effect.withFiberRuntime((fiber) => {
      const writer = this.writer
      if (writer._tag !== "scheduled" || writer.token !== token) return Effect.void
      this.writer = { _tag: "running", fiber: fiber as Fiber.RuntimeFiber<void> }
      // Task updates of a superstep whose checkpoint is not queued yet: when its tasks all finished in this same
      // turn, the run queues that checkpoint, which holds them, within a few scheduler turns; give it those turns,
      // so it supersedes them (one write instead of one per task). Tasks still running leave them to be written.
      const head = this.pending[0]?.item
      const first = head?._tag === "Writes" && head.superseded === true ? this.awaitSuperseding(SUPERSEDE_TURNS) : this.flushAll()
      return Effect.ensuring(
        first,
        Effect.sync(() => {
          if (this.writer._tag === "running" && this.writer.fiber === fiber) this.writer = idle
        })
      )
    })
  }

  /** {@link flushAll}, after up to `turns` scheduler turns while nothing queued supersedes the head. */
  private awaitSuperseding(turns: number): Effect.Effect<void> {
    return turns > 0 && !this.supersedes()
      ? Effect.zipRight(Effect.yieldNow(), Effect.suspend(() => this.awaitSuperseding(turns - 1)))
      : this.flushAll()
  }

  /** Writes what is pending in this fiber, whole (an interruption never cuts a save). */
  private flushHere(): Effect.Effect<void> {
    // Its Deferred is made only if another fiber comes to wait (drain): most flushes have no one else.
    this.writer = { _tag: "inline", done: undefined }
    return Effect.uninterruptible(this.flushAll())
  }

  /** Until every handed-over item landed: take over a fiber that has not started, await one that has. */
  get drain(): Effect.Effect<void> {
    return Effect.suspend(() => {
      const writer = this.writer
      switch (writer._tag) {
        case "idle":
          return this.pending.length === 0 ? Effect.void : Effect.zipRight(this.flushHere(), this.drain)
        case "scheduled":
          return Effect.zipRight(this.flushHere(), this.drain)
        case "running":
          return Effect.zipRight(Fiber.await(writer.fiber), this.drain)
        case "inline":
          writer.done ??= Deferred.unsafeMake<void>(undefined as never)
          return Effect.zipRight(Deferred.await(writer.done), this.drain)
      }
    })
  }

  enqueue(item: Item, madeAt: number, wait: boolean): Effect.Effect<void, WriteError> {
    if (this.failed !== undefined) return Effect.failCause(this.failed.cause)
    if (wait) {
      const writer = this.writer._tag
      if (writer === "idle" || writer === "scheduled") {
        // Nobody is writing: write it (and anything pending before it) here. The flush writes until nothing is
        // pending or a write failed (which drops the rest): so the item landed unless the queue failed.
        this.pending.push({ item, madeAt, done: undefined, waited: true })
        return Effect.zipRight(this.flushHere(), this.afterFlush)
      }
      const done = Deferred.unsafeMake<void, WriteError>(undefined as never)
      this.pending.push({ item, madeAt, done, waited: true })
      return Deferred.await(done)
    }
    this.pending.push({ item, madeAt, done: undefined, waited: false })
    if (this.writer._tag !== "idle") return Effect.void
    const token = {}
    this.writer = { _tag: "scheduled", token }
    return Effect.asVoid(Effect.forkDaemon(this.forked(token)))
  }

  /** After a flush in the caller's fiber: its item's outcome. */
  private readonly afterFlush: Effect.Effect<void, WriteError> = Effect.suspend(() =>
    this.failed === undefined ? Effect.void : Effect.failCause(this.failed.cause)
  )

  bound(olderThan: number): Effect.Effect<void> | undefined {
    const oldest = this.flying ?? this.pending[0]?.madeAt
    return oldest !== undefined && oldest <= olderThan ? this.drain : undefined
  }
}

export const makeSaver = (options: SaverOptions): Saver => new SaveQueue(options)
