/**
 * A run: supersteps from a boundary until nothing is left to run — the
 * tasks of each superstep (concurrently), their task writes, the pauses at
 * each boundary, the lease, the save queue — and how a run ends: every save
 * landed, the execution record settled, the first failure in time reported.
 *
 * @internal
 */
import { Cause, Clock, Duration, Effect, Either, Exit, Fiber, Option } from "effect"
import type * as Checkpoint from "../../Checkpoint.js"
import type { StoreError } from "../../CheckpointError.js"
import type * as CheckpointStore from "../../CheckpointStore.js"
import type { RunEvent } from "../../CheckpointedRunnable.js"
import {
  GraphInterrupted,
  GraphSuspended,
  InvalidResume,
  type PendingInterrupt,
  RecursionLimitExceeded,
  type Update
} from "../graph.js"
import { NodeContext, type NodeContextService } from "./context.js"
import { type Boundary, emptyAnswers, emptyFired, emptyWrites, type Engine, failureOf, PAUSE_TASK, type Run, runtimeOf } from "./engine.js"
import { type Failure, isSaveFailed, type Item, makeSaver, SaveFailed, saveFailed, type WriteError } from "./saver.js"
import { applyUpdates, type Finished, makeTasks, planNext, stepName, type Task, viewOf } from "./superstep.js"

/** Builds the run functions of an engine. */
export const makeRunner = <S>(engine: Engine<S>) => {
  const { active, clockTick, codec, compiled, draftOf, durations, encode, encodeSends, interruptAfter, interruptBefore, known, materialize, maxCheckpoints, options, remember, saving, store } = engine
  // --- saving ----------------------------------------------------------------

  /** The execution record change a checkpoint's save carries. */
  const patchFor = (run: Run<S>, cp: { readonly next: ReadonlyArray<string> }): CheckpointStore.ExecutionPatch =>
    cp.next.length > 0
      ? { status: "running", lease: { owner: run.owner, ttl: run.leaseTtl } }
      : { lease: null }

  /** Hands the boundary checkpoint (and the task writes made while it waited) to the save queue. */
  const saveBoundary = (run: Run<S>, wait: boolean): Effect.Effect<void, SaveFailed> =>
    Effect.suspend(() => {
      const b = run.boundary
      if (b.saved || b.draft === undefined) return Effect.void
      b.saved = true
      const cp = materialize(run.chain, run.executionId, run.metadata, b.draft)
      const items: Array<Item> = [{ _tag: "Checkpoint", checkpoint: cp, execution: patchFor(run, cp) }, ...b.buffered]
      b.buffered = []
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.forEach(items, (item, i) => run.saver.enqueue(item, now, wait && i === items.length - 1), { discard: true }))
        .pipe(Effect.catchAllCause(() => Effect.fail(saveFailed)))
    })

  /** Saves task writes of the boundary: at once when it is saved, else when it is. */
  const writeTask = (
    run: Run<S>,
    b: Boundary<S>,
    taskId: string,
    writes: ReadonlyArray<{ readonly key: string; readonly value: Checkpoint.Json }>,
    execution: CheckpointStore.ExecutionPatch | undefined,
    wait: boolean
  ): Effect.Effect<void, SaveFailed> =>
    Effect.suspend(() => {
      const item: Item = { _tag: "Writes", checkpointId: b.id, taskId, writes, execution }
      if (!b.saved) {
        b.buffered.push(item)
        return Effect.void
      }
      return Effect.flatMap(Clock.currentTimeMillis, (now) => run.saver.enqueue(item, now, wait)).pipe(
        // The queue keeps the failure; the run reports it once, in time order with any other.
        Effect.catchAllCause(() => Effect.fail(saveFailed))
      )
    })

  const stepSave = (run: Run<S>) => saving ? saveBoundary(run, options.durability === "sync") : Effect.void

  // --- a superstep -----------------------------------------------------------

  type Outcome =
    | { readonly _tag: "Done"; readonly finished: Finished }
    | { readonly _tag: "Interrupted"; readonly error: GraphInterrupted }
    | { readonly _tag: "Suspended"; readonly error: GraphSuspended }

  const emit = (run: Run<S>, event: () => RunEvent<S>) =>
    run.emit === undefined ? Effect.void : Effect.sync(() => run.emit!(event()))

  const runTask = (run: Run<S>, b: Boundary<S>, task: Task, multi: boolean): Effect.Effect<Outcome, any, any> => {
    const saved = b.writes.get(task.id)
    const replay = saved?.get("update")
    if (replay !== undefined) {
      return Either.match(codec.decodeUpdate(replay, b.id), {
        onLeft: Effect.fail,
        onRight: (update) =>
          Effect.as(
            emit(run, () => ({
              _tag: "TaskFinished",
              executionId: run.executionId,
              superstep: run.supersteps,
              node: task.node,
              taskId: task.id,
              update: update as Update<S>,
              replayed: true
            })),
            { _tag: "Done", finished: { task, update } } as Outcome
          )
      })
    }
    const answers = b.answers.get(task.id)
    const context: NodeContextService = {
      executionId: run.executionId,
      checkpointId: b.id,
      taskId: task.id,
      node: task.node,
      saved: saved ?? new Map(),
      // A failed write stops the run with the store's own error (the queue keeps it; see `execute`).
      write: (key, value, execution) =>
        writeTask(run, b, task.id, [{ key, value }], execution, true) as unknown as Effect.Effect<void, WriteError>,
      resumeValue: (index) => answers === undefined || !answers.has(index) ? Option.none() : Option.some(answers.get(index)),
      inProcessSleepMs: durations.sleepInProcess,
      stepNames: new Set(),
      counters: { interrupts: 0, sleeps: 0 }
    }
    const node = compiled.nodes.get(task.node)!
    const started = emit(run, () => ({
      _tag: "TaskStarted",
      executionId: run.executionId,
      superstep: run.supersteps,
      node: task.node,
      taskId: task.id
    }))
    return started.pipe(
      Effect.zipRight(Effect.provideService(node(viewOf(b.state, task)), NodeContext, context)),
      Effect.tap((update) => {
        if (!multi) return Effect.void
        // Each finished task's update is saved at once: a sibling's failure or a crash does not lose it.
        return Either.match(codec.encodeUpdate(update, task.node), {
          onLeft: Effect.fail,
          onRight: (value) => writeTask(run, b, task.id, [{ key: "update", value }], undefined, options.durability === "sync")
        })
      }),
      Effect.tap((update) =>
        emit(run, () => ({
          _tag: "TaskFinished",
          executionId: run.executionId,
          superstep: run.supersteps,
          node: task.node,
          taskId: task.id,
          update,
          replayed: false
        }))
      ),
      Effect.map((update): Outcome => ({ _tag: "Done", finished: { task, update } })),
      Effect.catchIf(
        (e): e is GraphInterrupted | GraphSuspended => e instanceof GraphInterrupted || e instanceof GraphSuspended,
        (e): Effect.Effect<Outcome> =>
          Effect.succeed(e instanceof GraphInterrupted ? { _tag: "Interrupted", error: e } : { _tag: "Suspended", error: e })
      )
    )
  }

  /** Runs the boundary's tasks (concurrently when there are several) and returns their updates in task order. */
  const runTasks = (run: Run<S>, b: Boundary<S>): Effect.Effect<ReadonlyArray<Finished>, any, any> =>
    Effect.gen(function*() {
      const multi = b.tasks.length > 1
      const outcomes: ReadonlyArray<Outcome> = yield* Effect.forEach(
        b.tasks,
        (task) => runTask(run, b, task, multi),
        multi ? { concurrency: compiled.maxConcurrency ?? "unbounded" } : undefined
      )
      const interrupts: Array<GraphInterrupted> = []
      const suspensions: Array<GraphSuspended> = []
      const finished: Array<Finished> = []
      for (const outcome of outcomes) {
        if (outcome._tag === "Done") finished.push(outcome.finished)
        else if (outcome._tag === "Interrupted") interrupts.push(outcome.error)
        else suspensions.push(outcome.error)
      }
      if (interrupts.length > 0) {
        const first = interrupts[0]!
        const pending: Array<PendingInterrupt> = interrupts.flatMap((i) =>
          i.interruptId === undefined ? [] : [{ interruptId: i.interruptId, node: i.node, payload: i.payload ?? null }]
        )
        return yield* Effect.fail(interrupts.length === 1 ? first : new GraphInterrupted({ ...first, interrupts: pending }))
      }
      if (suspensions.length > 0) {
        return yield* Effect.fail(suspensions.reduce((a, b) => a.wakeAt.getTime() <= b.wakeAt.getTime() ? a : b))
      }
      return finished
    })

  // --- pauses ----------------------------------------------------------------

  /** Fires a pause at the boundary: saved (with its marker, the execution `interrupted`) before the run stops. */
  const pause = (run: Run<S>, when: "before" | "after", node: string) =>
    Effect.gen(function*() {
      yield* saveBoundary(run, true)
      const b = run.boundary
      yield* writeTask(run, b, PAUSE_TASK, [{ key: when, value: { node } }], { status: "interrupted", lease: null }, true)
      return yield* new GraphInterrupted({ executionId: run.executionId, node, when, checkpointId: b.id })
    })

  /** The pauses due at the boundary, in order: after the nodes that made it, before the ones it schedules. */
  const pauses = (run: Run<S>) =>
    Effect.suspend(() => {
      const b = run.boundary
      if (!b.fired.has("after")) {
        const after = b.ran.find((n) => interruptAfter.has(n))
        if (after !== undefined) return pause(run, "after", after)
      }
      if (!b.fired.has("before")) {
        const before = b.tasks.find((t) => interruptBefore.has(t.node))
        if (before !== undefined) return pause(run, "before", before.node)
      }
      return Effect.void
    })

  /** Renews the run's lease when half of it passed since it was last taken (a long superstep). */
  const renewIfDue = (run: Run<S>) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      if (now - run.leaseAt < Duration.toMillis(run.leaseTtl) / 2) return Effect.void
      run.leaseAt = now
      return store.renew(run.executionId, { owner: run.owner, ttl: run.leaseTtl }).pipe(
        Effect.asVoid,
        // Nothing saved yet ("exit"): there is no lease to renew.
        Effect.catchTag("ExecutionNotFound", () => Effect.void)
      )
    })

  // --- the run loop ----------------------------------------------------------

  /** Runs supersteps from the boundary until nothing is left to run. */
  const loop = (run: Run<S>): Effect.Effect<S, any, any> =>
    Effect.gen(function*() {
      while (true) {
        const b = run.boundary
        if (b.tasks.length === 0) return b.state
        yield* run.saver.check
        if (saving && options.durability === "async") {
          const now = yield* Clock.currentTimeMillis
          yield* run.saver.bound(now - durations.maxSaveLag)
        }
        yield* pauses(run)
        if (run.supersteps >= compiled.recursionLimit) {
          return yield* new RecursionLimitExceeded({ limit: compiled.recursionLimit, executionId: run.executionId })
        }
        yield* renewIfDue(run)
        run.supersteps++
        const finished = yield* runTasks(run, b)
        const state: S = yield* Either.match(applyUpdates(compiled, b.state, finished), {
          onLeft: Effect.fail,
          onRight: Effect.succeed
        })
        const plan = yield* planNext(compiled, b.tasks, state, b.joins)
        const nodeName = b.tasks.length === 1 ? b.tasks[0]!.node : stepName(b.tasks)
        const encoded = yield* encode(state, nodeName)
        const sends = yield* Either.match(encodeSends(plan.next), { onLeft: Effect.fail, onRight: Effect.succeed })
        const ran = b.tasks.map((t) => t.node)
        const draft = yield* draftOf(
          nodeName,
          encoded,
          plan.next.map((t) => t.node),
          runtimeOf(sends, plan.joins, ran, compiled.version)
        )
        run.boundary = {
          id: draft.id,
          draft,
          saved: false,
          state,
          tasks: makeTasks(plan.next),
          joins: plan.joins,
          ran,
          writes: emptyWrites,
          fired: emptyFired,
          answers: emptyAnswers,
          buffered: []
        }
        yield* stepSave(run)
      }
    })

  /** The execution record after a run that stopped early (direct runs; worker runs are settled by the worker). */
  const settleRecord = (run: Run<S>, cause: Cause.Cause<unknown>): Effect.Effect<void, StoreError> => {
    const update = (patch: CheckpointStore.ExecutionPatch) =>
      store.updateExecution(run.executionId, patch, { owner: run.owner }).pipe(
        Effect.asVoid,
        // Nothing was saved, or another owner holds it now: nothing of ours to settle.
        Effect.catchTags({ ExecutionNotFound: () => Effect.void, LeaseLost: () => Effect.void, CheckpointConflict: () => Effect.void })
      )
    if (Cause.isInterruptedOnly(cause)) return update({ status: "pending", lease: null })
    const error = Option.getOrUndefined(Cause.failureOption(cause))
    if (error instanceof GraphInterrupted || error instanceof SaveFailed) return Effect.void
    if (error instanceof GraphSuspended) return update({ status: "sleeping", wakeAt: error.wakeAt, lease: null })
    if (error instanceof InvalidResume) return update({ status: "interrupted", lease: null })
    if (run.mode === "worker") return Effect.void
    return update({ status: "failed", failure: failureOf(error ?? Cause.squash(cause)), lease: null })
  }

  /**
   * Runs `run` from its boundary with its save queue (and a periodic save
   * fiber when autoSave is off). Whatever happens (success, failure,
   * interruption) every save of the run has landed before this returns; the
   * first failure in time wins, the other stays in the Cause.
   */
  const execute = (run: Run<S>): Effect.Effect<S, any, any> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        active.set(run.executionId, run)
        const periodic = options.autoSave
          ? undefined
          : yield* Effect.forkDaemon(Effect.interruptible(
            Effect.forever(Effect.zipRight(
              Effect.sleep(durations.saveInterval),
              Effect.ignore(Effect.suspend(() => saveBoundary(run, false)))
            ))
          ))
        let failedAt = 0
        const first = yield* Effect.exit(restore(
          Effect.zipRight(stepSave(run), loop(run)).pipe(
            Effect.tapErrorCause(() => Effect.sync(() => failedAt = clockTick()))
          )
        ))
        if (periodic !== undefined) yield* Fiber.interrupt(periodic)
        // "exit" durability saves where the run ended: the final state, or the last good one and its task writes.
        const final = options.durability === "exit" && options.autoSave
          ? yield* Effect.exit(saveBoundary(run, true))
          : Exit.void
        yield* run.saver.drain
        if (active.get(run.executionId) === run) active.delete(run.executionId)
        const failure = run.saver.failure()
        const settled = failure === undefined && Exit.isFailure(first)
          ? yield* Effect.exit(settleRecord(run, first.cause))
          : Exit.void
        const landed = run.saver.landed()
        if (failure !== undefined) known.delete(run.executionId)
        else if (landed.id !== undefined) remember(run.executionId, landed.version, landed.id)
        const pruned = failure === undefined && maxCheckpoints > 0 && landed.version > maxCheckpoints
          ? yield* Effect.exit(Effect.asVoid(store.prune(run.executionId, maxCheckpoints)))
          : Exit.void
        // The run's own failure, unless it only stopped because a save failed.
        const stopped = Exit.isFailure(first) && isSaveFailed(first.cause)
        let cause: Cause.Cause<any> = Exit.isFailure(first) && !stopped ? first.cause : Cause.empty
        if (failure !== undefined) cause = orderFailures(cause, failure, stopped ? 0 : failedAt)
        if (Exit.isFailure(final) && !isSaveFailed(final.cause)) cause = Cause.sequential(cause, final.cause)
        if (Exit.isFailure(settled)) cause = Cause.sequential(cause, settled.cause)
        if (Exit.isFailure(pruned)) cause = Cause.sequential(cause, pruned.cause)
        if (Cause.isEmpty(cause) && Exit.isSuccess(first)) {
          yield* emit(run, () => ({ _tag: "Finished", executionId: run.executionId, state: first.value }))
          return first.value
        }
        return yield* Effect.failCause(cause)
      })
    )

  const orderFailures = (cause: Cause.Cause<any>, failure: Failure, failedAt: number): Cause.Cause<any> =>
    failedAt !== 0 && failedAt < failure.at ? Cause.sequential(cause, failure.cause) : Cause.sequential(failure.cause, cause)

  /** A new run of `executionId` from `boundary` (its chain follows the boundary's checkpoint). */
  const newRun = (args: {
    readonly executionId: Checkpoint.ExecutionId
    readonly owner: string
    readonly metadata: Checkpoint.JsonObject
    readonly mode: "direct" | "worker"
    readonly leaseTtl: Duration.Duration
    readonly boundary: Boundary<S>
    /** Where the execution is in the store when the run starts. */
    readonly start: { readonly version: number; readonly id: Checkpoint.CheckpointId | undefined }
    /** The chain of the next checkpoint (the boundary's, when it is saved). */
    readonly chain: { version: number; parentId: Checkpoint.CheckpointId | undefined }
    readonly rebase: boolean
    readonly emit: ((event: RunEvent<S>) => void) | undefined
    readonly now: number
  }): Run<S> => {
    const run: Run<S> = {
      executionId: args.executionId,
      owner: args.owner,
      metadata: args.metadata,
      mode: args.mode,
      leaseTtl: args.leaseTtl,
      emit: args.emit,
      chain: args.chain,
      boundary: args.boundary,
      supersteps: 0,
      leaseAt: args.now,
      saver: makeSaver({
        store,
        executionId: args.executionId,
        start: args.start,
        rebase: args.rebase,
        owner: args.owner,
        clockTick,
        onRebase: (delta) => {
          run.chain.version += delta
        },
        onLanded: args.emit === undefined
          ? undefined
          : (checkpoint) => args.emit!({ _tag: "CheckpointSaved", checkpoint })
      })
    }
    return run
  }

  return {
    patchFor,
    saveBoundary,
    writeTask,
    stepSave,
    emit,
    runTask,
    runTasks,
    pause,
    pauses,
    renewIfDue,
    loop,
    settleRecord,
    execute,
    newRun
  }
}

/** The run functions of an engine. */
export type Runner<S> = ReturnType<typeof makeRunner<S>>

