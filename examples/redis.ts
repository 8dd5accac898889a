/**
 * The Redis example (a port of langgraphgo's examples/checkpointing/redis):
 * a three-step graph checkpointed to Redis under the prefix
 * `example_checkpoints:`, with a time-to-live of one hour on every key.
 *
 * Worker A runs the graph; step 2 fails on its first attempt, like a worker
 * that crashed in the middle of a run (its lease on the execution is still
 * live). Worker B — a second connection, as another process or machine would
 * have — lists the checkpoints Worker A left in Redis, shows their keys, TTL
 * and execution record, and takes the run over from its last checkpoint
 * (`resume(id, { takeOver: true })`): step 1 does not run again. At the end
 * it clears the run (left alone, it would expire after the hour).
 *
 *   npm run build && npx tsx examples/redis.ts
 *   REDIS_ADDR=redis.example.com:6379 npx tsx examples/redis.ts
 *
 * REDIS_ADDR is `host:port` (default `localhost:6379`) or a `redis://` URL.
 */
import { Console, Data, Effect, Layer, Option, Schema } from "effect"
import { type Checkpoint, CheckpointStore, Graph } from "effect-checkpoint"
import { RedisStore } from "effect-checkpoint/redis"
import { Redis } from "ioredis"

const redisAddr = process.env.REDIS_ADDR ?? "localhost:6379"
const prefix = "example_checkpoints:"

/** The store, as each worker would build it: its own connection, closed when the worker is done. */
const store = RedisStore.layer({ url: redisAddr, prefix, ttl: "1 hour" })

const ProcessState = Schema.Struct({
  step: Schema.Int,
  data: Schema.String,
  history: Schema.Array(Schema.String)
})
type ProcessState = typeof ProcessState.Type

/** What a step fails with: a typed error, not an exception. */
class StepFailed extends Data.TaggedError("StepFailed")<{ readonly step: number; readonly reason: string }> {}

let attemptsOfStep2 = 0

const step = (n: number) => (s: ProcessState) =>
  Effect.gen(function*() {
    yield* Console.log(`Running step ${n}...`)
    yield* Effect.sleep("100 millis")
    if (n === 2 && ++attemptsOfStep2 === 1) {
      return yield* new StepFailed({ step: n, reason: "the worker crashed (simulated)" })
    }
    return { step: n, data: `${s.data} → Step${n}`, history: [...s.history, `Completed Step ${n}`] }
  })

const graph = Graph.make(ProcessState).pipe(
  Graph.addNode("step1", step(1)),
  Graph.addNode("step2", step(2)),
  Graph.addNode("step3", step(3)),
  Graph.setEntryPoint("step1"),
  Graph.addEdge("step1", "step2"),
  Graph.addEdge("step2", "step3"),
  Graph.addEdge("step3", Graph.END)
)

/** The original's checkpoint config: save after every step, keep the newest 5 per execution. */
const config = { autoSave: true, saveInterval: "2 seconds", maxCheckpoints: 5 } as const

/** Worker A: starts the run, which stops in step 2. Returns the execution id. */
const workerA = Effect.gen(function*() {
  const runnable = yield* Graph.compileCheckpointable(graph, config)
  yield* Console.log(`=== Worker A: run ${runnable.executionId} (Redis at ${redisAddr}) ===`)
  const failed = yield* runnable.invoke({ step: 0, data: "Start", history: ["Initialized"] }).pipe(Effect.flip)
  yield* Console.log(`The run stopped: ${failed._tag === "StepFailed" ? `step ${failed.step}: ${failed.reason}` : failed._tag}`)
  return runnable.executionId
})

/** How long the key of a checkpoint has left to live, read straight from Redis. */
const secondsLeft = (id: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Redis(redisAddr.includes("://") ? redisAddr : `redis://${redisAddr}`, { lazyConnect: true })),
    (redis) => Effect.promise(() => redis.pttl(`${prefix}|c|${id}`)),
    (redis) => Effect.promise(() => redis.quit())
  ).pipe(Effect.map((ms) => Math.round(ms / 1000)))

/** Worker B: finds what Worker A left in Redis and finishes the run. */
const workerB = (executionId: Checkpoint.ExecutionId) =>
  Effect.gen(function*() {
    const runnable = yield* Graph.compileCheckpointable(graph, config)
    const saved = yield* runnable.listCheckpoints(executionId)
    yield* Console.log(`\n=== Worker B: ${saved.length} checkpoints of ${executionId} in Redis ===`)
    for (const cp of saved) {
      yield* Console.log(
        `#${cp.version} ${cp.nodeName.padEnd(9)} key=${prefix}|c|${cp.id} ttl=${yield* secondsLeft(cp.id)}s ` +
          `next=[${cp.next.join(",")}] state=${JSON.stringify(cp.state)}`
      )
    }
    yield* Console.log(`(index: ${prefix}|x|${executionId}, a sorted set scored by version)`)
    const store = yield* CheckpointStore.CheckpointStore
    const record = yield* store.getExecution(executionId)
    if (Option.isSome(record)) {
      const r = record.value
      yield* Console.log(
        `record ${prefix}|r|${executionId}: status=${r.status} latest=#${r.latestVersion} attempts=${r.attempts}` +
          (r.failure ? ` failure=${r.failure.tag}` : "") + (r.lease ? ` lease=${r.lease.owner}` : "")
      )
    }

    // Worker A died holding its lease: Worker B takes the execution over instead of waiting for the lease to expire.
    yield* Console.log(`\n=== Worker B: take over ${executionId} from its latest checkpoint ===`)
    const final = yield* runnable.resume(executionId, { takeOver: true })
    yield* Console.log(`Final step:    ${final.step}`)
    yield* Console.log(`Final data:    ${final.data}`)
    yield* Console.log(`History:       ${final.history.join(" | ")}`)

    const all = yield* runnable.listCheckpoints(executionId)
    yield* Console.log(`\n=== ${all.length} checkpoints after the resume ===`)
    for (const cp of all) {
      yield* Console.log(`#${cp.version} ${cp.nodeName.padEnd(9)} ${cp.timestamp.toISOString()} next=[${cp.next.join(",")}]`)
    }

    yield* runnable.clearCheckpoints(executionId)
    yield* Console.log(`\n=== Cleared: ${(yield* runnable.listCheckpoints(executionId)).length} checkpoints left for ${executionId} ===`)
  })

// Each worker gets its own store layer, so its own connection: Redis is the only thing they share.
const program = Effect.flatMap(
  Effect.provide(workerA, store),
  (executionId) => Effect.provide(workerB(executionId), Layer.fresh(store))
)

Effect.runPromise(program).catch((error) => {
  console.error(error)
  process.exit(1)
})
