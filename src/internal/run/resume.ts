/**
 * Resuming: what a checkpoint's task writes say (steps, updates, pauses,
 * interrupts), how a resume's answers reach the interrupts, the claim a
 * resume makes before anything runs, forks from older checkpoints, and a
 * worker's run of an execution it claimed.
 *
 * @internal
 */
import { Clock, type Duration, Effect, Either, Option } from "effect"
import * as Checkpoint from "../../Checkpoint.js"
import { ExecutionNotFound } from "../../CheckpointError.js"
import type { ResumeOptions, RunEvent, RunOptions } from "../../CheckpointedRunnable.js"
import { ExecutionFinished, InvalidResume, UPDATE } from "../graph.js"
import { interruptIdOf, parseInterruptId } from "./context.js"
import { type Boundary, bothPauses, type Engine, newOwner, PAUSE_TASK } from "./engine.js"
import { span } from "../telemetry.js"
import type { Runner } from "./runner.js"
import type { Task } from "./superstep.js"

/** Builds the resume functions of an engine. */
export const makeResumer = <S>(engine: Engine<S>, runner: Runner<S>) => {
  const { boundaryOf, decode, draftOf, durations, encode, executionIdOf, makeCheckpoint, metadataOf, remember, store } = engine
  const { execute, newRun } = runner
  // --- resume ----------------------------------------------------------------

  /** What the task writes of a checkpoint say: by task, the pauses that fired, the interrupts still pending. */
  const readWrites = (cp: Checkpoint.Checkpoint, tasks: ReadonlyArray<Task>) =>
    Effect.map(store.listWrites(cp.id), (writes) => {
      const byTask = new Map<string, Map<string, Checkpoint.Json>>()
      for (const w of writes) {
        let keys = byTask.get(w.taskId)
        if (keys === undefined) byTask.set(w.taskId, keys = new Map())
        keys.set(w.key, w.value)
      }
      const fired = new Set(byTask.get(PAUSE_TASK)?.keys() ?? [])
      const pending: Array<{ readonly interruptId: string; readonly taskId: string; readonly index: number; readonly node: string }> = []
      for (const task of tasks) {
        const keys = byTask.get(task.id)
        if (keys === undefined || keys.has("update")) continue
        for (const key of keys.keys()) {
          if (!key.startsWith("interrupt:")) continue
          const index = Number(key.slice("interrupt:".length))
          if (!keys.has(`resume:${index}`)) {
            pending.push({ interruptId: interruptIdOf(cp.id, task.id, index), taskId: task.id, index, node: task.node })
          }
        }
      }
      return { byTask, fired, pending }
    })

  /** Matches a resume's `value`/`values` to the pending interrupts. */
  const answersOf = (
    executionId: string,
    pending: ReadonlyArray<{ readonly interruptId: string; readonly taskId: string; readonly index: number }>,
    resumeOptions: ResumeOptions<S> | undefined
  ): Either.Either<ReadonlyMap<string, ReadonlyMap<number, unknown>>, InvalidResume> => {
    const answers = new Map<string, Map<number, unknown>>()
    const give = (taskId: string, index: number, value: unknown) => {
      let byIndex = answers.get(taskId)
      if (byIndex === undefined) answers.set(taskId, byIndex = new Map())
      byIndex.set(index, value)
    }
    const hasValue = resumeOptions !== undefined && "value" in resumeOptions && resumeOptions.value !== undefined
    if (hasValue) {
      if (pending.length !== 1) {
        return Either.left(new InvalidResume({
          executionId,
          message: pending.length === 0
            ? `Execution ${JSON.stringify(executionId)} has no pending interrupt to give a value to`
            : `Execution ${JSON.stringify(executionId)} has ${pending.length} pending interrupts: answer them by id with values`
        }))
      }
      give(pending[0]!.taskId, pending[0]!.index, resumeOptions!.value)
    }
    for (const [interruptId, value] of Object.entries(resumeOptions?.values ?? {})) {
      const target = pending.find((p) => p.interruptId === interruptId)
      if (target === undefined || parseInterruptId(interruptId) === undefined) {
        return Either.left(new InvalidResume({
          executionId,
          interruptId,
          message: `Interrupt ${JSON.stringify(interruptId)} is not pending in execution ${JSON.stringify(executionId)}`
        }))
      }
      give(target.taskId, target.index, value)
    }
    return Either.right(answers)
  }

  /**
   * Continues the execution from its latest checkpoint `from`: reads the
   * task writes, claims the execution (the first write, awaited — or the
   * `__update__` checkpoint), then runs.
   */
  const continueLatest = (
    from: Checkpoint.Checkpoint,
    state: S,
    resumeOptions: ResumeOptions<S> | undefined,
    events: ((event: RunEvent<S>) => void) | undefined
  ): Effect.Effect<S, any, any> =>
    Effect.gen(function*() {
      const executionId = from.executionId
      const forkedFrom = from.metadata.forkedFrom
      const metadata = metadataOf(resumeOptions, typeof forkedFrom === "string" ? { forkedFrom } : {})
      const update = resumeOptions?.update
      const takeOver = resumeOptions?.takeOver === true
      const now = yield* Clock.currentTimeMillis
      const owner = newOwner(now)
      const expect = { executionId, latestVersion: from.version, latestCheckpointId: from.id }
      if (from.next.length === 0) {
        const hasAnswer = resumeOptions?.value !== undefined || Object.keys(resumeOptions?.values ?? {}).length > 0
        if (hasAnswer) {
          return yield* new InvalidResume({ executionId, message: `Execution ${JSON.stringify(executionId)} has finished: no interrupt is pending` })
        }
        if (update === undefined) {
          events?.({ _tag: "Finished", executionId, state })
          return state
        }
        if (resumeOptions?.allowFinished !== true) return yield* new ExecutionFinished({ executionId, checkpointId: from.id })
        const edited = update(state)
        const chain = { version: from.version, parentId: from.id }
        const cp = yield* makeCheckpoint(chain, executionId, UPDATE, yield* encode(edited, UPDATE), [], metadata, from.runtime)
        yield* store.save(cp, { expect })
        remember(executionId, cp.version, cp.id)
        events?.({ _tag: "CheckpointSaved", checkpoint: cp })
        events?.({ _tag: "Finished", executionId, state: edited })
        return edited
      }
      const tasks = (yield* boundaryOf(from, state, true)).tasks
      const written = yield* readWrites(from, tasks)
      const answers = yield* Either.match(answersOf(executionId, written.pending, resumeOptions), {
        onLeft: Effect.fail,
        onRight: Effect.succeed
      })
      const chain = { version: from.version, parentId: from.id as Checkpoint.CheckpointId | undefined }
      let boundary: Boundary<S>
      if (update !== undefined) {
        // The edit is the claim: a conditional save, awaited before anything runs.
        const edited = update(state)
        const cp = yield* makeCheckpoint(chain, executionId, UPDATE, yield* encode(edited, UPDATE), from.next, metadata, from.runtime)
        yield* store.save(cp, {
          expect,
          // Taking over: no fencing on the claim itself, so a live lease of another run does not stop it.
          owner: takeOver ? undefined : owner,
          execution: { status: "running", lease: { owner, ttl: durations.leaseTtl } }
        })
        events?.({ _tag: "CheckpointSaved", checkpoint: cp })
        // What the tasks saved (steps, updates, pause markers) goes on with the edited checkpoint.
        yield* Effect.forEach(written.byTask, ([taskId, keys]) =>
          store.saveWrites(cp.id, taskId, [...keys].map(([key, value]) => ({ key, value })), { owner }), { discard: true })
        boundary = yield* boundaryOf(cp, edited, true, { writes: written.byTask, fired: written.fired, answers })
      } else {
        yield* store.updateExecution(
          executionId,
          { status: "running", lease: { owner, ttl: durations.leaseTtl } },
          takeOver ? { expect } : { owner, expect }
        )
        boundary = yield* boundaryOf(from, state, true, { writes: written.byTask, fired: written.fired, answers })
      }
      const start = { version: chain.version, id: chain.parentId }
      return yield* execute(newRun({
        executionId,
        owner,
        metadata,
        mode: "direct",
        leaseTtl: durations.leaseTtl,
        boundary,
        start,
        chain,
        rebase: false,
        emit: events,
        now
      }))
    })

  /**
   * A resume in one span, so its reads and its claim (made before the run)
   * are in the same trace as the run.
   */
  const resumeSpan = <A, E, R>(effect: Effect.Effect<A, E, R>, attributes: () => Record<string, unknown>) =>
    span(effect, "checkpoint.resume", attributes)

  const resumeWith = (
    executionIdRaw: string | undefined,
    resumeOptions: ResumeOptions<S> | undefined,
    events: ((event: RunEvent<S>) => void) | undefined
  ): Effect.Effect<S, any, any> =>
    resumeSpan(resumeLatest(executionIdRaw, resumeOptions, events), () => ({
      "checkpoint.execution_id": String(executionIdRaw ?? engine.defaultExecutionId).slice(0, 200)
    }))

  const resumeLatest = (
    executionIdRaw: string | undefined,
    resumeOptions: ResumeOptions<S> | undefined,
    events: ((event: RunEvent<S>) => void) | undefined
  ): Effect.Effect<S, any, any> =>
    Effect.gen(function*() {
      const executionId = yield* executionIdOf(executionIdRaw)
      const latest = yield* store.latest(executionId)
      if (Option.isNone(latest)) return yield* new ExecutionNotFound({ executionId })
      const from = latest.value
      return yield* continueLatest(from, yield* decode(from), resumeOptions, events)
    })

  const resumeFromCheckpoint = (id: string, runOptions?: RunOptions) =>
    resumeSpan(fromCheckpoint(id, runOptions), () => ({ "checkpoint.id": String(id).slice(0, 200) }))

  const fromCheckpoint = (id: string, runOptions?: RunOptions) =>
    Effect.gen(function*() {
      const from = yield* Effect.flatMap(Checkpoint.makeCheckpointId(id), store.load)
      const state = yield* decode(from)
      if (from.next.length === 0) return state
      const latest = yield* store.latest(from.executionId)
      const isLatest = Option.isSome(latest) && latest.value.id === from.id
      if (isLatest && (runOptions?.executionId === undefined || runOptions.executionId === from.executionId)) {
        return yield* continueLatest(from, state, runOptions, undefined)
      }
      // An older checkpoint: fork, so that history is never overwritten.
      const executionId = runOptions?.executionId === undefined
        ? yield* Checkpoint.generateExecutionId
        : yield* executionIdOf(runOptions.executionId)
      const targetLatest = runOptions?.executionId === undefined ? Option.none() : yield* store.latest(executionId)
      const metadata = metadataOf(runOptions, { forkedFrom: from.id })
      const base = Option.match(targetLatest, {
        onNone: () => ({ version: 0, id: undefined }),
        onSome: (cp) => ({ version: cp.version, id: cp.id as Checkpoint.CheckpointId | undefined })
      })
      const chain = { version: base.version, parentId: from.id as Checkpoint.CheckpointId | undefined }
      const copy = yield* draftOf(from.nodeName, from.state, from.next, from.runtime)
      const now = yield* Clock.currentTimeMillis
      // The fork starts past the pauses of its first boundary, as a resume would.
      const boundary = yield* boundaryOf(copy, state, false, { fired: bothPauses })
      return yield* execute(newRun({
        executionId,
        owner: newOwner(now),
        metadata,
        mode: "direct",
        leaseTtl: durations.leaseTtl,
        boundary,
        start: base,
        chain,
        rebase: false,
        emit: undefined,
        now
      }))
    })

  /** A worker's run of an execution it claimed (it holds the lease). */
  const runClaimed = (executionId: Checkpoint.ExecutionId, owner: string, leaseTtl: Duration.Duration) =>
    resumeSpan(runClaimedIn(executionId, owner, leaseTtl), () => ({
      "checkpoint.execution_id": executionId,
      "checkpoint.mode": "worker"
    }))

  const runClaimedIn = (executionId: Checkpoint.ExecutionId, owner: string, leaseTtl: Duration.Duration) =>
    Effect.gen(function*() {
      const latest = yield* store.latest(executionId)
      if (Option.isNone(latest)) return yield* new ExecutionNotFound({ executionId })
      const from = latest.value
      const state = yield* decode(from)
      if (from.next.length === 0) {
        yield* store.release(executionId, { owner, status: "done" })
        return state
      }
      const tasks = (yield* boundaryOf(from, state, true)).tasks
      const written = yield* readWrites(from, tasks)
      const boundary = yield* boundaryOf(from, state, true, { writes: written.byTask, fired: written.fired })
      const forkedFrom = from.metadata.forkedFrom
      const chain = { version: from.version, parentId: from.id as Checkpoint.CheckpointId | undefined }
      return yield* execute(newRun({
        executionId,
        owner,
        metadata: typeof forkedFrom === "string" ? { forkedFrom } : {},
        mode: "worker",
        leaseTtl,
        boundary,
        start: { version: from.version, id: from.id },
        chain,
        rebase: false,
        emit: undefined,
        now: yield* Clock.currentTimeMillis
      }))
    })

  return {
    readWrites,
    answersOf,
    continueLatest,
    resumeWith,
    resumeFromCheckpoint,
    runClaimed
  }
}
