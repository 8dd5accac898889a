/**
 * The execution statuses, apart from `CheckpointStore` so that the store kit
 * can use them without importing the module that builds on it.
 *
 * @internal
 */
import type { ExecutionStatus } from "../CheckpointStore.js"

export const statuses: ReadonlyArray<ExecutionStatus> = ["pending", "running", "interrupted", "sleeping", "done", "failed"]

export const unfinished: ReadonlyArray<ExecutionStatus> = ["pending", "running", "interrupted", "sleeping", "failed"]
