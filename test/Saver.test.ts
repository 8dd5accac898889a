/**
 * The ordered save queue of a run (src/internal/run/saver.ts), on its own:
 * a real Memory store behind a wrapper that delays writes (random, seeded),
 * fails chosen ones and records every call.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Option, Random } from "effect"
import * as Checkpoint from "../src/Checkpoint.js"
import { CheckpointStoreError } from "../src/CheckpointError.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import { type Item, makeSaver, type Saver } from "../src/internal/run/saver.js"
import * as MemoryStore from "../src/layers/Memory.js"
import { freshExecution } from "../src/testing.js"

interface Call {
  readonly op: "save" | "saveMany" | "saveWrites"
  readonly versions: ReadonlyArray<number>
  readonly taskId?: string
}

interface Harness {
  readonly store: CheckpointStore.Service
  readonly calls: Array<Call>
  /** Fails every write whose versions include `version` (or whose task is `taskId`) until cleared. */
  failOn: { version?: number; taskId?: string } | undefined
  /** Holds every write until it is opened (`undefined`: never held). */
  gate: Deferred.Deferred<void> | undefined
  /** Random delay per write, up to this many ms. */
  maxDelayMs: number
}

/** A Memory store whose writes are delayed, can be failed, and are recorded. */
const harness = Effect.gen(function*() {
  const inner = yield* MemoryStore.make
  const h: Harness = { store: inner, calls: [], failOn: undefined, gate: undefined, maxDelayMs: 0 }
  const before = (call: Call) =>
    Effect.gen(function*() {
      if (h.gate !== undefined) yield* Deferred.await(h.gate)
      if (h.maxDelayMs > 0) yield* Effect.sleep(yield* Random.nextIntBetween(0, h.maxDelayMs))
      h.calls.push(call)
      const f = h.failOn
      if (f !== undefined && (call.versions.includes(f.version ?? -1) || (f.taskId !== undefined && call.taskId === f.taskId))) {
        return yield* new CheckpointStoreError({ backend: "test", operation: call.op, message: "injected failure" })
      }
    })
  const store: CheckpointStore.Service = {
    ...inner,
    save: (cp, o) => Effect.zipRight(before({ op: "save", versions: [cp.version] }), inner.save(cp, o)),
    saveMany: (cps, o) => Effect.zipRight(before({ op: "saveMany", versions: cps.map((c) => c.version) }), inner.saveMany(cps, o)),
    saveWrites: (id, taskId, writes, o) =>
      Effect.zipRight(before({ op: "saveWrites", versions: [], taskId }), inner.saveWrites(id, taskId, writes, o))
  }
  ;(h as { store: CheckpointStore.Service }).store = store
  return h
})

let tick = 0
const newSaver = (h: Harness, executionId: Checkpoint.ExecutionId, extra: { rebase?: boolean; onRebase?: (d: number) => void } = {}) =>
  makeSaver({
    store: h.store,
    executionId,
    start: { version: 0, id: undefined },
    rebase: extra.rebase ?? false,
    owner: undefined,
    clockTick: () => ++tick,
    onRebase: (delta) => extra.onRebase?.(delta)
  })

/** Checkpoints 1..n of one execution, each the parent of the next. */
const chain = (executionId: Checkpoint.ExecutionId, n: number, from = 1) =>
  Effect.gen(function*() {
    const out: Array<Checkpoint.Checkpoint> = []
    let parentId: Checkpoint.CheckpointId | undefined
    for (let v = from; v < from + n; v++) {
      const cp = yield* Checkpoint.make({
        executionId,
        version: v,
        nodeName: `n${v}`,
        state: { v },
        next: [`n${v + 1}`],
        ...(parentId === undefined ? {} : { parentId })
      }).pipe(Effect.orDie)
      parentId = cp.id
      out.push(cp)
    }
    return out
  })

const cpItem = (checkpoint: Checkpoint.Checkpoint): Item => ({ _tag: "Checkpoint", checkpoint, execution: undefined })
const writesItem = (checkpointId: Checkpoint.CheckpointId, taskId: string, superseded = false): Item => ({
  _tag: "Writes",
  checkpointId,
  taskId,
  writes: [{ key: "update", value: { fields: { task: taskId } } }],
  execution: undefined,
  superseded
})

const versionsOf = (store: CheckpointStore.Service, executionId: Checkpoint.ExecutionId) =>
  Effect.map(store.list(executionId), (cps) => cps.map((c) => c.version))

const enqueueAll = (saver: Saver, items: ReadonlyArray<Item>) =>
  Effect.forEach(items, (item) => saver.enqueue(item, 0, false), { discard: true })

describe("the save queue", () => {
  it.live("lands checkpoints in version order, whatever the delays, and batches consecutive ones", () =>
    Effect.gen(function*() {
      for (let seed = 0; seed < 20; seed++) {
        const h = yield* harness
        h.maxDelayMs = 3
        const id = yield* freshExecution("order")
        const saver = newSaver(h, id)
        const cps = yield* chain(id, 12)
        // Hand them over with random gaps, as a run with nodes of random length would.
        for (const cp of cps) {
          yield* saver.enqueue(cpItem(cp), 0, false)
          yield* Effect.sleep(yield* Random.nextIntBetween(0, 3))
        }
        yield* saver.drain
        expect(yield* versionsOf(h.store, id)).toEqual(cps.map((c) => c.version))
        expect(h.calls.flatMap((c) => c.versions)).toEqual(cps.map((c) => c.version))
        expect(saver.landed()).toEqual({ version: 12, id: cps[11]!.id })
        expect(saver.failure()).toBeUndefined()
      }
    }).pipe(Effect.withRandom(Random.make("order"))))

  it.effect("after a failed write nothing later lands: the store holds a gap-free prefix, and enqueue fails", () =>
    Effect.gen(function*() {
      const h = yield* harness
      const id = yield* freshExecution("prefix")
      const saver = newSaver(h, id)
      const cps = yield* chain(id, 6)
      h.gate = yield* Deferred.make<void>()
      yield* enqueueAll(saver, cps.slice(0, 3).map(cpItem))
      h.failOn = { version: 3 }
      yield* Deferred.succeed(h.gate, undefined)
      h.gate = undefined
      yield* saver.drain
      // The batch 1..3 failed as a whole, then one by one: 1 and 2 landed, 3 failed.
      expect(yield* versionsOf(h.store, id)).toEqual([1, 2])
      expect(saver.failure()).toBeDefined()
      const late = yield* Effect.exit(saver.enqueue(cpItem(cps[3]!), 0, false))
      expect(Exit.isFailure(late)).toBe(true)
      yield* saver.drain
      expect(yield* versionsOf(h.store, id)).toEqual([1, 2])
    }))

  it.effect("the first failure wins: later items are dropped, the waiters get the first failure", () =>
    Effect.gen(function*() {
      const h = yield* harness
      const id = yield* freshExecution("first")
      const saver = newSaver(h, id)
      const [a, b, c] = yield* chain(id, 3)
      h.gate = yield* Deferred.make<void>()
      yield* saver.enqueue(cpItem(a!), 0, false)
      yield* saver.enqueue(writesItem(a!.id, "0"), 0, false)
      const waiter = yield* Effect.fork(saver.enqueue(cpItem(b!), 0, true))
      yield* saver.enqueue(cpItem(c!), 0, false)
      h.failOn = { taskId: "0" }
      yield* Deferred.succeed(h.gate, undefined)
      h.gate = undefined
      const exit = yield* Fiber.await(waiter)
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit)) {
        const error = Option.getOrUndefined(Cause.failureOption(exit.cause))
        expect(error).toBeInstanceOf(CheckpointStoreError)
        expect((error as CheckpointStoreError).operation).toBe("saveWrites")
      }
      yield* saver.drain
      expect(yield* versionsOf(h.store, id)).toEqual([1])
      expect(h.calls.map((c) => c.op)).toEqual(["save", "saveWrites"])
    }))

  it.effect("an interrupted waiter does not cut the save in flight: drain waits for it and it lands", () =>
    Effect.gen(function*() {
      const h = yield* harness
      const id = yield* freshExecution("interrupt")
      const saver = newSaver(h, id)
      const [a] = yield* chain(id, 1)
      h.gate = yield* Deferred.make<void>()
      const waiter = yield* Effect.fork(saver.enqueue(cpItem(a!), 0, true))
      yield* Effect.yieldNow()
      // The waiter writes it itself, uninterruptibly: the interruption completes only once the save did.
      const interrupting = yield* Effect.fork(Fiber.interrupt(waiter))
      yield* Effect.yieldNow()
      expect(interrupting.unsafePoll()).toBeNull()
      expect(yield* versionsOf(h.store, id)).toEqual([])
      const drained = yield* Effect.fork(saver.drain)
      yield* Effect.yieldNow()
      expect(drained.unsafePoll()).toBeNull()
      yield* Deferred.succeed(h.gate, undefined)
      yield* Fiber.join(interrupting)
      yield* Fiber.join(drained)
      expect(yield* versionsOf(h.store, id)).toEqual([1])
      expect(saver.landed().version).toBe(1)
    }))

  it.effect("a rebase renumbers what has not landed to follow the execution's newest checkpoint", () =>
    Effect.gen(function*() {
      const h = yield* harness
      const id = yield* freshExecution("rebase")
      // Someone else wrote versions 1..2 first.
      const theirs = yield* chain(id, 2)
      yield* h.store.saveMany(theirs)
      let delta = 0
      const saver = newSaver(h, id, { rebase: true, onRebase: (d) => delta = d })
      const ours = yield* chain(id, 3)
      yield* enqueueAll(saver, ours.map(cpItem))
      yield* saver.drain
      expect(saver.failure()).toBeUndefined()
      expect(delta).toBe(2)
      const stored = yield* h.store.list(id)
      expect(stored.map((c) => c.version)).toEqual([1, 2, 3, 4, 5])
      expect(stored.map((c) => c.id)).toEqual([...theirs, ...ours].map((c) => c.id))
      // The first of ours now follows their newest; ours keep their own chain.
      expect(stored[2]!.parentId).toBe(theirs[1]!.id)
      expect(stored[3]!.parentId).toBe(ours[0]!.id)
    }))

  it.effect("without rebase, a moved execution fails the write with ExpectationFailed and nothing lands", () =>
    Effect.gen(function*() {
      const h = yield* harness
      const id = yield* freshExecution("norebase")
      yield* h.store.saveMany(yield* chain(id, 1))
      const saver = newSaver(h, id)
      const ours = yield* chain(id, 2)
      const exit = yield* Effect.exit(saver.enqueue(cpItem(ours[0]!), 0, true))
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit)) {
        const error = Option.getOrUndefined(Cause.failureOption(exit.cause))
        expect(error).toMatchObject({ _tag: "CheckpointConflict", reason: "ExpectationFailed" })
      }
      expect(yield* versionsOf(h.store, id)).toEqual([1])
    }))

  it.effect("task updates still queued when the next checkpoint is queued are not written; awaited ones are", () =>
    Effect.gen(function*() {
      const h = yield* harness
      const id = yield* freshExecution("superseded")
      const saver = newSaver(h, id)
      const [a, b] = yield* chain(id, 2)
      h.gate = yield* Deferred.make<void>()
      yield* saver.enqueue(cpItem(a!), 0, false)
      yield* saver.enqueue(writesItem(a!.id, "0", true), 0, false)
      yield* saver.enqueue(writesItem(a!.id, "1", true), 0, false)
      // A step result (not superseded) is written whatever follows it.
      yield* saver.enqueue(writesItem(a!.id, "2", false), 0, false)
      yield* saver.enqueue(cpItem(b!), 0, false)
      yield* Deferred.succeed(h.gate, undefined)
      h.gate = undefined
      yield* saver.drain
      expect(yield* versionsOf(h.store, id)).toEqual([1, 2])
      expect(h.calls.map((c) => c.taskId ?? c.op)).toEqual(["save", "2", "save"])
      expect((yield* h.store.listWrites(a!.id)).map((w) => w.taskId)).toEqual(["2"])
    }))

  it.effect("task updates with no checkpoint after them are written (a superstep that stopped early keeps them)", () =>
    Effect.gen(function*() {
      const h = yield* harness
      const id = yield* freshExecution("kept")
      const saver = newSaver(h, id)
      const [a] = yield* chain(id, 1)
      h.gate = yield* Deferred.make<void>()
      yield* saver.enqueue(cpItem(a!), 0, false)
      yield* saver.enqueue(writesItem(a!.id, "0", true), 0, false)
      yield* saver.enqueue(writesItem(a!.id, "1", true), 0, false)
      yield* Deferred.succeed(h.gate, undefined)
      h.gate = undefined
      yield* saver.drain
      expect((yield* h.store.listWrites(a!.id)).map((w) => w.taskId)).toEqual(["0", "1"])
    }))

  it.effect("a save fiber that starts on task updates waits a few scheduler turns for the checkpoint that supersedes them", () =>
    Effect.gen(function*() {
      const h = yield* harness
      const id = yield* freshExecution("turns")
      const saver = newSaver(h, id)
      const [a, b] = yield* chain(id, 2)
      yield* saver.enqueue(cpItem(a!), 0, true)
      // The updates fork the save fiber; the superstep's checkpoint comes one turn later (its tasks all finished).
      yield* saver.enqueue(writesItem(a!.id, "0", true), 0, false)
      yield* saver.enqueue(writesItem(a!.id, "1", true), 0, false)
      yield* Effect.yieldNow()
      yield* saver.enqueue(cpItem(b!), 0, false)
      yield* saver.drain
      expect(h.calls.map((c) => c.taskId ?? c.op)).toEqual(["save", "save"])
      expect(yield* h.store.listWrites(a!.id)).toEqual([])
      expect(yield* versionsOf(h.store, id)).toEqual([1, 2])
    }))

  it.live("task updates of a superstep still running are written by the save fiber, without waiting for the run", () =>
    Effect.gen(function*() {
      const h = yield* harness
      const id = yield* freshExecution("running")
      const saver = newSaver(h, id)
      const [a] = yield* chain(id, 1)
      yield* saver.enqueue(cpItem(a!), 0, true)
      yield* saver.enqueue(writesItem(a!.id, "0", true), 0, false)
      // No checkpoint follows (a sibling task still runs): the update lands by itself, no drain needed.
      const landed = yield* Effect.gen(function*() {
        while ((yield* h.store.listWrites(a!.id)).length === 0) yield* Effect.sleep("1 millis")
      }).pipe(Effect.timeout("5 seconds"), Effect.exit)
      expect(Exit.isSuccess(landed)).toBe(true)
      expect(h.calls.map((c) => c.taskId ?? c.op)).toEqual(["save", "0"])
    }))

  it.effect("bound: waits for items older than the bound, not for newer ones", () =>
    Effect.gen(function*() {
      const h = yield* harness
      const id = yield* freshExecution("bound")
      const saver = newSaver(h, id)
      const [a] = yield* chain(id, 1)
      expect(saver.bound(1_000)).toBeUndefined()
      h.gate = yield* Deferred.make<void>()
      yield* saver.enqueue(cpItem(a!), 100, false)
      expect(saver.bound(50)).toBeUndefined()
      const waiting = saver.bound(150)
      expect(waiting).toBeDefined()
      const fiber = yield* Effect.fork(waiting!)
      yield* Effect.yieldNow()
      expect(fiber.unsafePoll()).toBeNull()
      yield* Deferred.succeed(h.gate, undefined)
      yield* Fiber.join(fiber)
      expect(yield* versionsOf(h.store, id)).toEqual([1])
    }))
})
