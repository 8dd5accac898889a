/**
 * A first look: save, list and load checkpoints with the Memory store.
 * (The graph issue replaces this with the port of the original basic example.)
 *
 *   npm run example
 */
import { Effect } from "effect"
import { Checkpoint, CheckpointStore, MemoryStore } from "effect-checkpoint"

const program = Effect.gen(function*() {
  const store = yield* CheckpointStore.CheckpointStore
  const executionId = yield* Checkpoint.generateExecutionId
  let parentId: Checkpoint.CheckpointId | undefined
  for (const [version, nodeName] of ["__input__", "step1", "step2", "step3"].entries()) {
    const cp = yield* Checkpoint.make({
      executionId,
      nodeName,
      version: version + 1,
      state: { step: version, history: ["Initialized"] },
      next: version < 3 ? [`step${version + 1}`] : [],
      parentId
    })
    yield* store.save(cp)
    parentId = cp.id
  }
  for (const cp of yield* store.list(executionId)) {
    console.log(`v${cp.version} ${cp.nodeName.padEnd(9)} ${cp.id} ${JSON.stringify(cp.state)}`)
  }
  const second = (yield* store.list(executionId, { afterVersion: 1, limit: 1 }))[0]!
  console.log("loaded:", (yield* store.load(second.id)).nodeName)
})

Effect.runPromise(program.pipe(Effect.provide(MemoryStore.layer)))
