/**
 * The Memory store's backend, apart from its layer so tests can reach the raw
 * documents (to corrupt one on purpose).
 *
 * @internal
 */
import { Effect } from "effect"
import * as Checkpoint from "../Checkpoint.js"
import { CheckpointConflict } from "../CheckpointError.js"
import type { Backend, Expectation } from "../CheckpointStore.js"
import { expectationFailed, summarize } from "../CheckpointStore.js"

interface Execution {
  /** version → checkpoint id */
  readonly byVersion: Map<number, string>
  /** the versions, ascending */
  readonly versions: Array<number>
}

/** The Memory store's state: encoded documents only, so nothing stored is ever shared with a caller. */
export interface MemoryState {
  /** checkpoint id → JSON document */
  readonly documents: Map<string, string>
  /** checkpoint id → where it is indexed */
  readonly locations: Map<string, { readonly executionId: string; readonly version: number }>
  readonly executions: Map<string, Execution>
}

export const makeState = (): MemoryState => ({ documents: new Map(), locations: new Map(), executions: new Map() })

/** Index of the first version greater than `v` (binary search). */
const upperBound = (versions: ReadonlyArray<number>, v: number): number => {
  let lo = 0
  let hi = versions.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (versions[mid]! <= v) lo = mid + 1
    else hi = mid
  }
  return lo
}

export const memoryBackend = (state: MemoryState): Backend => {
  const { documents, executions, locations } = state
  const decodeId = (id: string) => Checkpoint.decode(documents.get(id)!, id)

  const conflictOf = (e: Checkpoint.Encoded): CheckpointConflict | undefined => {
    const cp = e.checkpoint
    return documents.has(cp.id) || executions.get(cp.executionId)?.byVersion.has(cp.version)
      ? new CheckpointConflict({ executionId: cp.executionId, version: cp.version, id: cp.id })
      : undefined
  }

  const put = ({ checkpoint: cp, document }: Checkpoint.Encoded): void => {
    documents.set(cp.id, document)
    locations.set(cp.id, { executionId: cp.executionId, version: cp.version })
    let execution = executions.get(cp.executionId)
    if (execution === undefined) {
      execution = { byVersion: new Map(), versions: [] }
      executions.set(cp.executionId, execution)
    }
    execution.byVersion.set(cp.version, cp.id)
    const last = execution.versions[execution.versions.length - 1]
    if (last === undefined || last < cp.version) execution.versions.push(cp.version)
    else execution.versions.splice(upperBound(execution.versions, cp.version), 0, cp.version)
  }

  const removeVersions = (executionId: string, execution: Execution, versions: ReadonlyArray<number>): void => {
    for (const v of versions) {
      const id = execution.byVersion.get(v)!
      documents.delete(id)
      locations.delete(id)
      execution.byVersion.delete(v)
    }
    if (execution.byVersion.size === 0) executions.delete(executionId)
  }

  const latestVersionOf = (executionId: string): number => {
    const versions = executions.get(executionId)?.versions
    return versions === undefined || versions.length === 0 ? 0 : versions[versions.length - 1]!
  }

  const unmet = (expect: Expectation | undefined): CheckpointConflict | undefined => {
    if (expect === undefined) return undefined
    const actual = latestVersionOf(expect.executionId)
    return actual === expect.latestVersion ? undefined : expectationFailed(expect, actual)
  }

  const latestOf = (executionId: string) => {
    const execution = executions.get(executionId)
    const version = execution?.versions[execution.versions.length - 1]
    return version === undefined ? undefined : execution!.byVersion.get(version)!
  }

  return {
    // Each primitive runs synchronously inside one `Effect.suspend`, so it is atomic with respect to other fibers.
    insert: (batch, expect) =>
      Effect.suspend(() => {
        const failed = unmet(expect)
        if (failed !== undefined) return Effect.fail(failed)
        for (const e of batch) {
          const conflict = conflictOf(e)
          if (conflict !== undefined) return Effect.fail(conflict)
        }
        batch.forEach(put)
        return Effect.void
      }),
    insertOne: (e, expect) =>
      Effect.suspend(() => {
        const conflict = unmet(expect) ?? conflictOf(e)
        if (conflict !== undefined) return Effect.fail(conflict)
        put(e)
        return Effect.void
      }),
    load: (id) => Effect.suspend(() => documents.has(id) ? Effect.asSome(decodeId(id)) : Effect.succeedNone),
    list: (executionId, afterVersion, limit) =>
      Effect.suspend(() => {
        const execution = executions.get(executionId)
        if (execution === undefined) return Effect.succeed([])
        const start = upperBound(execution.versions, afterVersion)
        const end = limit === undefined ? execution.versions.length : start + limit
        const ids = execution.versions.slice(start, end).map((v) => execution.byVersion.get(v)!)
        return Effect.forEach(ids, decodeId)
      }),
    latest: (executionId) =>
      Effect.suspend(() => {
        const id = latestOf(executionId)
        return id === undefined ? Effect.succeedNone : Effect.asSome(decodeId(id))
      }),
    listExecutions: Effect.suspend(() =>
      Effect.forEach([...executions.keys()], (executionId) => Effect.map(decodeId(latestOf(executionId)!), summarize))
    ),
    delete: (id) =>
      Effect.sync(() => {
        const location = locations.get(id)
        if (location === undefined) return
        const execution = executions.get(location.executionId)!
        execution.versions.splice(upperBound(execution.versions, location.version) - 1, 1)
        removeVersions(location.executionId, execution, [location.version])
      }),
    clear: (executionId) =>
      Effect.sync(() => {
        const execution = executions.get(executionId)
        if (execution !== undefined) removeVersions(executionId, execution, [...execution.versions])
      }),
    prune: (executionId, keep) =>
      Effect.sync(() => {
        const execution = executions.get(executionId)
        if (execution === undefined || execution.versions.length <= keep) return 0
        const removed = execution.versions.splice(0, execution.versions.length - keep)
        removeVersions(executionId, execution, removed)
        return removed.length
      })
  }
}
