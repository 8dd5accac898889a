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
import { type Boundary, emptyAnswers, noWrites, emptyFired, emptyWrites, type Engine, failureOf, PAUSE_TASK, type Run, runtimeOf } from "./engine.js"
import { type Failure, isSaveFailed, type Item, makeSaver, SaveFailed, saveFailed, type WriteError } from "./saver.js"
import { span } from "../telemetry.js"
import { applyUpdates, type Finished, makeTasks, planNext, stepName, type Task, viewOf } from "./superstep.js"

/** Builds the run functions of an engine. */
export const makeRunner = <S>(engine: Engine<S>) => {
  const { active, clockTick, codec, compiled, draftAt, durations, encodeSends, interruptAfter, interruptBefore, known, materialize, maxCheckpoints, options, remember, saving, store } = engine
  // --- saving ----------------------------------------------------------------

  /** The execution record change a checkpoint's save carries. */
  const patchFor = (run: Run<S>, cp: { readonly next: ReadonlyArray<string> }): CheckpointStore.ExecutionPatch =>
    cp.next.length > 0
      ? { status: "running", lease: { owner: run.owner, ttl: run.leaseTtl } }
      : { lease: null }

  /** Whether a superstep waits for checkpoints older than `maxSaveLag` ("async" saves only). */
  const lagBounded = saving && options.durability === "async"

  /** Hands the boundary checkpoint (and the task writes made while it waited) to the save queue. */
  const saveBoundary = (run: Run<S>, wait: boolean): Effect.Effect<void, SaveFailed> =>
    Effect.suspend(() => {
      const b = run.boundary
      if (b.saved || b.draft === undefined) return Effect.void
      b.saved = true
      const cp = materialize(run.chain, run.executionId, run.metadata, b.draft)
      const item: Item = { _tag: "Checkpoint", checkpoint: cp, execution: patchFor(run, cp) }
      if (b.buffered.length === 0) {
        return Effect.clockWith((clock) =>
          Effect.catchAllCause(run.saver.enqueue(item, clock.unsafeCurrentTimeMillis(), wait), () => Effect.fail(saveFailed))
        )
      }
      const items: Array<Item> = [item, ...b.buffered]
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
    wait: boolean,
    superseded = false
  ): Effect.Effect<void, SaveFailed> =>
    Effect.withFiberRuntime((fiber) => {
      if (execution?.status === "interrupted") run.marksInterrupted = true
      const span = fiber.currentSpan
      const item: Item = { _tag: "Writes", checkpointId: b.id, taskId, writes, execution, superseded, span }
      if (!b.saved) {
        b.buffered.push(item)
        return Effect.void
      }
      return Effect.flatMap(Clock.currentTimeMillis, (now) => run.saver.enqueue(item, now, wait)).pipe(
        // The queue keeps the failure; the run reports it once, in time order with any other.
        Effect.catchAllCause(() => Effect.fail(saveFailed))
      )
    })

  const sync = options.durability === "sync"
  const stepSave = (run: Run<S>) => saving ? saveBoundary(run, options.durability === "sync") : Effect.void

  // --- a superstep -----------------------------------------------------------

  const emit = (run: Run<S>, event: () => RunEvent<S>) => {
    if (run.emit !== undefined) run.emit(event())
  }

  const isStop = (e: unknown): e is GraphInterrupted | GraphSuspended =>
    e instanceof GraphInterrupted || e instanceof GraphSuspended

  /**
   * The NodeContext of a task: its saved writes, a way to save more, the
   * answers a resume gave it. A run's single-task supersteps share one (reset
   * for each task), provided once for the whole run; each task of a
   * multi-task superstep gets its own.
   */
  class TaskContext implements NodeContextService {
    executionId: string
    checkpointId = ""
    taskId = ""
    node = ""
    saved: ReadonlyMap<string, Checkpoint.Json> = noWrites
    readonly inProcessSleepMs = durations.sleepInProcess
    private b: Boundary<S> | undefined
    private steps: Set<string> | undefined
    private interrupts = 0
    private sleeps = 0
    constructor(readonly run: Run<S>) {
      this.executionId = run.executionId
    }
    reset(b: Boundary<S>, task: Task): this {
      this.b = b
      this.checkpointId = b.id
      this.taskId = task.id
      this.node = task.node
      this.saved = b.writes.get(task.id) ?? noWrites
      this.steps = undefined
      this.interrupts = 0
      this.sleeps = 0
      return this
    }
    // A failed write stops the run with the store's own error (the queue keeps it; see `execute`).
    write(key: string, value: Checkpoint.Json, execution?: CheckpointStore.ExecutionPatch) {
      return writeTask(this.run, this.b!, this.taskId, [{ key, value }], execution, true) as unknown as Effect.Effect<
        void,
        WriteError
      >
    }
    resumeValue(index: number) {
      const answers = this.b!.answers.get(this.taskId)
      return answers === undefined || !answers.has(index) ? Option.none() : Option.some(answers.get(index))
    }
    claimStep(name: string) {
      this.steps ??= new Set()
      if (this.steps.has(name)) return false
      this.steps.add(name)
      return true
    }
    nextInterrupt() {
      return this.interrupts++
    }
    nextSleep() {
      return this.sleeps++
    }
  }

  const finishedEvent = (run: Run<S>, task: Task, update: unknown, replayed: boolean) =>
    emit(run, () => ({
      _tag: "TaskFinished",
      executionId: run.executionId,
      superstep: run.supersteps,
      node: task.node,
      taskId: task.id,
      update: update as Update<S>,
      replayed
    }))

  /** Runs one task (or applies its saved update) and returns its update; interrupts and suspensions fail it. */
  const runTask = (run: Run<S>, b: Boundary<S>, task: Task, multi: boolean): Effect.Effect<unknown, any, any> => {
    const replay = b.writes.get(task.id)?.get("update")
    if (replay !== undefined) {
      const decoded = codec.decodeUpdate(replay, b.id)
      if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
      finishedEvent(run, task, decoded.right, true)
      return Effect.succeed(decoded.right)
    }
    emit(run, () => ({
      _tag: "TaskStarted",
      executionId: run.executionId,
      superstep: run.supersteps,
      node: task.node,
      taskId: task.id
    }))
    const node = compiled.nodes.get(task.node)!(viewOf(b.state, task))
    const ran = multi
      ? Effect.provideService(node, NodeContext, new TaskContext(run).reset(b, task))
      : (run.context.reset(b, task), node)
    return Effect.flatMap(ran, (update): Effect.Effect<unknown, any> => {
      if (!multi) {
        finishedEvent(run, task, update, false)
        return Effect.succeed(update)
      }
      // Each finished task's update is saved at once: a sibling's failure or a crash does not lose it
      // (unless the superstep's checkpoint is queued first: it holds the update; see the save queue).
      const value = codec.encodeUpdate(update, task.node)
      if (Either.isLeft(value)) return Effect.fail(value.left)
      return Effect.as(
        writeTask(run, b, task.id, [{ key: "update", value: value.right }], undefined, sync, !sync),
        update
      ).pipe(Effect.tap(() => finishedEvent(run, task, update, false)))
    })
  }

  /** Runs the boundary's tasks (concurrently when there are several) and returns their updates in task order. */
  const runTasks = (run: Run<S>, b: Boundary<S>): Effect.Effect<ReadonlyArray<Finished>, any, any> => {
    if (b.tasks.length === 1) {
      const task = b.tasks[0]!
      return Effect.map(runTask(run, b, task, false), (update) => [{ task, update }])
    }
    // Interrupts and suspensions do not stop the siblings (all of a superstep's interrupts are collected);
    // any other failure does: the first one in time fails the superstep and interrupts the others.
    return Effect.forEach(
      b.tasks,
      (task) =>
        Effect.catchIf(
          Effect.map(
            span(runTask(run, b, task, true), "checkpoint.task", () => ({
              "checkpoint.execution_id": run.executionId,
              "checkpoint.node": task.node,
              "checkpoint.task_id": task.id,
              "checkpoint.id": b.id
            })),
            (update): Finished | GraphInterrupted | GraphSuspended => ({ task, update })
          ),
          isStop,
          (e) => Effect.succeed(e)
        ),
      { concurrency: compiled.maxConcurrency ?? "unbounded" }
    ).pipe(Effect.flatMap((outcomes): Effect.Effect<ReadonlyArray<Finished>, GraphInterrupted | GraphSuspended> => {
      const interrupts: Array<GraphInterrupted> = []
      const suspensions: Array<GraphSuspended> = []
      const finished: Array<Finished> = []
      for (const outcome of outcomes) {
        if (outcome instanceof GraphInterrupted) interrupts.push(outcome)
        else if (outcome instanceof GraphSuspended) suspensions.push(outcome)
        else finished.push(outcome)
      }
      if (interrupts.length > 0) {
        const first = interrupts[0]!
        const pending: Array<PendingInterrupt> = interrupts.flatMap((i) =>
          i.interruptId === undefined ? [] : [{ interruptId: i.interruptId, node: i.node, payload: i.payload ?? null }]
        )
        return Effect.fail(interrupts.length === 1 ? first : new GraphInterrupted({ ...first, interrupts: pending }))
      }
      if (suspensions.length > 0) {
        return Effect.fail(suspensions.reduce((x, y) => x.wakeAt.getTime() <= y.wakeAt.getTime() ? x : y))
      }
      return Effect.succeed(finished)
    }))
  }

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
  const pauses = (run: Run<S>): Effect.Effect<void, any> | undefined => {
    if (interruptAfter.size === 0 && interruptBefore.size === 0) return undefined
    return Effect.suspend(() => {
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
  }

  /** Renews the run's lease when half of it passed since it was last taken (a long superstep); `undefined` when not due. */
  const renewIfDue = (run: Run<S>, now: number): Effect.Effect<void, any> | undefined => {
    if (now - run.leaseAt < Duration.toMillis(run.leaseTtl) / 2) return undefined
    run.leaseAt = now
    // Renews the lease, or takes it again if nobody else holds it (fencing: another owner's live lease → LeaseLost).
    return store.updateExecution(run.executionId, { lease: { owner: run.owner, ttl: run.leaseTtl } }, { owner: run.owner }).pipe(
      Effect.asVoid,
      // Nothing saved yet ("exit"): there is no lease to renew.
      Effect.catchTag("ExecutionNotFound", () => Effect.void)
    )
  }

  // --- the run loop ----------------------------------------------------------

  /** Runs supersteps from the boundary until nothing is left to run. */
  const loop = (run: Run<S>): Effect.Effect<S, any, any> =>
    Effect.gen(function*() {
      const clock = yield* Effect.clock
      while (true) {
        const b = run.boundary
        if (b.tasks.length === 0) return b.state
        if (run.saver.failure() !== undefined) return yield* Effect.fail(saveFailed)
        const now = clock.unsafeCurrentTimeMillis()
        if (lagBounded) {
          const bounded = run.saver.bound(now - durations.maxSaveLag)
          if (bounded !== undefined) yield* bounded
        }
        const paused = pauses(run)
        if (paused !== undefined) yield* paused
        if (run.supersteps >= compiled.recursionLimit) {
          return yield* new RecursionLimitExceeded({ limit: compiled.recursionLimit, executionId: run.executionId })
        }
        const renewed = renewIfDue(run, now)
        if (renewed !== undefined) yield* renewed
        run.supersteps++
        const finished = yield* span(
          runTasks(run, b),
          b.tasks.length === 1 ? "checkpoint.node" : "checkpoint.superstep",
          () => ({
            "checkpoint.execution_id": run.executionId,
            "checkpoint.superstep": run.supersteps,
            "checkpoint.node": b.tasks.length === 1 ? b.tasks[0]!.node : stepName(b.tasks),
            "checkpoint.id": b.id
          })
        )
        const applied = applyUpdates(compiled, b.state, finished)
        if (Either.isLeft(applied)) return yield* Effect.fail(applied.left)
        const state: S = applied.right
        const planned = planNext(compiled, b.tasks, state, b.joins)
        const plan = Effect.isEffect(planned) ? yield* planned : planned
        const nodeName = b.tasks.length === 1 ? b.tasks[0]!.node : stepName(b.tasks)
        const encoded = codec.encode(state, nodeName)
        if (Either.isLeft(encoded)) return yield* Effect.fail(encoded.left)
        const sends = encodeSends(plan.next)
        if (Either.isLeft(sends)) return yield* Effect.fail(sends.left)
        const ran = b.tasks.map((t) => t.node)
        const draft = draftAt(
          clock.unsafeCurrentTimeMillis(),
          nodeName,
          encoded.right,
          plan.next.map((t) => t.node),
          runtimeOf(sends.right, plan.joins, ran, compiled.version)
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
        if (saving) yield* saveBoundary(run, options.durability === "sync")
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
    if (error instanceof SaveFailed) return Effect.void
    if (error instanceof GraphInterrupted) {
      // A new interrupt (or pause) was saved with the status. One recorded by an earlier run (a parallel task
      // still waiting for its answer) was not: the resume's claim made the execution running, with its lease.
      return run.marksInterrupted ? Effect.void : update({ status: "interrupted", lease: null })
    }
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
    span(executeRun(run), "checkpoint.run", () => ({ "checkpoint.execution_id": run.executionId, "checkpoint.mode": run.mode }))

  const executeRun = (run: Run<S>): Effect.Effect<S, any, any> =>
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
          Effect.zipRight(stepSave(run), Effect.provideService(loop(run), NodeContext, run.context)).pipe(
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
          emit(run, () => ({ _tag: "Finished", executionId: run.executionId, state: first.value }))
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
      context: undefined as never,
      supersteps: 0,
      leaseAt: args.now,
      marksInterrupted: false,
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
    run.context = new TaskContext(run)
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

