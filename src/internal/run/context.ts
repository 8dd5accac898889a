/**
 * The `NodeContext` service the runner provides to every task, and the
 * durable primitives built on it: memoized steps, interrupts and timers
 * inside a node. A task's saved writes (step results, interrupt payloads and
 * answers, wake-up times) are keyed by what the node did, in order, so a
 * rerun of the task finds them again.
 *
 * @internal
 */
import { Clock, Context, Duration, Effect, Either, Option, ParseResult, Schema } from "effect"
import type * as Checkpoint from "../../Checkpoint.js"
import { CheckpointDecodeError, CheckpointEncodeError } from "../../CheckpointError.js"
import type * as CheckpointStore from "../../CheckpointStore.js"
import { GraphInterrupted, GraphSuspended, InvalidResume, InvalidStep } from "../graph.js"
import { isValidId } from "../identifier.js"
import { jsonProblem } from "../json.js"
import type { WriteError } from "./saver.js"

/** What the runner knows of the task a node runs as. */
export interface NodeContextService {
  readonly executionId: string
  /** The checkpoint whose `next` scheduled this task. */
  readonly checkpointId: string
  readonly taskId: string
  readonly node: string
  /** The task's writes saved by an earlier run of it. */
  readonly saved: ReadonlyMap<string, Checkpoint.Json>
  /** Saves one write of this task (durably before it returns, unless the run saves only at its end). */
  readonly write: (
    key: string,
    value: Checkpoint.Json,
    execution?: CheckpointStore.ExecutionPatch
  ) => Effect.Effect<void, WriteError>
  /** The value a resume gave the task's `index`-th interrupt (the Schema's encoded side), if any. */
  readonly resumeValue: (index: number) => Option.Option<unknown>
  /** How long a sleep may wait in process before the run suspends instead. */
  readonly inProcessSleepMs: number
  /** Marks a step name as used by this run of the task; `false` if it was used already. */
  readonly claimStep: (name: string) => boolean
  /** The index of the task's next interrupt (0, 1, …). */
  readonly nextInterrupt: () => number
  /** The index of the task's next sleep (0, 1, …). */
  readonly nextSleep: () => number
}

/**
 * The runner's context of the task a node runs as. A node that uses
 * `Graph.step`, `Graph.interrupt` or `Graph.sleep` has it in its
 * requirements; compiling the graph removes it (the runner provides it).
 *
 * @since 0.2.0
 * @category tags
 */
export class NodeContext extends Context.Tag("effect-checkpoint/NodeContext")<NodeContext, NodeContextService>() {}

/** The id of the `index`-th interrupt of a task of a checkpoint. */
export const interruptIdOf = (checkpointId: string, taskId: string, index: number): string =>
  `${checkpointId}/${taskId}/${index}`

/** The parts of an interrupt id, or `undefined`. */
export const parseInterruptId = (
  id: string
): { readonly checkpointId: string; readonly taskId: string; readonly index: number } | undefined => {
  const parts = id.split("/")
  if (parts.length !== 3) return undefined
  const index = Number(parts[2])
  return Number.isInteger(index) && index >= 0 ? { checkpointId: parts[0]!, taskId: parts[1]!, index } : undefined
}

const formatted = (e: ParseResult.ParseError) => ParseResult.TreeFormatter.formatErrorSync(e)

/** Errors of the durable primitives themselves (besides the wrapped effect's). */
export type PrimitiveError = InvalidStep | CheckpointEncodeError | CheckpointDecodeError | WriteError

const MAX_STEP_NAME = 100

/** See `Graph.step`. */
export const step = <A, I, E, R>(
  name: string,
  effect: Effect.Effect<A, E, R>,
  schema: Schema.Schema<A, I>
): Effect.Effect<A, E | PrimitiveError, R | NodeContext> =>
  Effect.flatMap(NodeContext, (ctx): Effect.Effect<A, E | PrimitiveError, R> => {
    if (!isValidId(name) || name.length > MAX_STEP_NAME) {
      return Effect.fail(new InvalidStep({ name, node: ctx.node, message: `step name ${JSON.stringify(name)} must be 1–${MAX_STEP_NAME} characters of [A-Za-z0-9._:-]` }))
    }
    if (!ctx.claimStep(name)) {
      return Effect.fail(new InvalidStep({ name, node: ctx.node, message: `step ${JSON.stringify(name)} runs twice in one task of node ${JSON.stringify(ctx.node)}: step names must be unique in a task` }))
    }
    const key = `step:${name}`
    const saved = ctx.saved.get(key)
    if (saved !== undefined) {
      return Either.match(Schema.decodeUnknownEither(schema)(saved === null ? savedNull(schema) : saved), {
        onLeft: (e) =>
          Effect.fail(new CheckpointDecodeError({
            id: ctx.checkpointId,
            message: `The saved result of step ${JSON.stringify(name)} of node ${JSON.stringify(ctx.node)} no longer matches its Schema: ${formatted(e)}`
          })),
        onRight: Effect.succeed
      })
    }
    return Effect.flatMap(effect, (result) => {
      const encoded = Schema.encodeEither(schema)(result)
      if (Either.isLeft(encoded)) {
        return Effect.fail(new CheckpointEncodeError({
          message: `The result of step ${JSON.stringify(name)} of node ${JSON.stringify(ctx.node)} does not match its Schema: ${formatted(encoded.left)}`
        }))
      }
      // A result that encodes to `undefined` (`Schema.Void`, `Schema.Undefined`) is saved as `null` (see `savedNull`).
      const value = encoded.right === undefined ? null : encoded.right
      const problem = jsonProblem(value, `step ${name}`)
      if (problem !== undefined) return Effect.fail(new CheckpointEncodeError({ message: problem }))
      return Effect.as(ctx.write(key, value as Checkpoint.Json), result)
    })
  })

/**
 * What a step result saved as `null` is decoded from: `undefined` when the
 * Schema's encoded side is `void`, or cannot be `null` (so the result encoded
 * to `undefined` and was saved as `null`); else `null` itself.
 */
const savedNull = (schema: Schema.Schema<any, any>): null | undefined => {
  const encoded = Schema.encodedSchema(schema)
  return encoded.ast._tag === "VoidKeyword" || !Schema.is(encoded)(null) ? undefined : null
}

/** See `Graph.interrupt`. */
export const interrupt = <A, I>(
  schema: Schema.Schema<A, I>,
  payload: unknown
): Effect.Effect<A, GraphInterrupted | InvalidResume | PrimitiveError, NodeContext> =>
  Effect.flatMap(NodeContext, (ctx): Effect.Effect<A, GraphInterrupted | InvalidResume | PrimitiveError> => {
    const index = ctx.nextInterrupt()
    const interruptId = interruptIdOf(ctx.checkpointId, ctx.taskId, index)
    const answered = ctx.saved.get(`resume:${index}`)
    if (answered !== undefined) {
      return Either.match(Schema.decodeUnknownEither(schema)(answered), {
        onLeft: (e) =>
          Effect.fail(new CheckpointDecodeError({
            id: ctx.checkpointId,
            message: `The saved answer of interrupt ${JSON.stringify(interruptId)} no longer matches its Schema: ${formatted(e)}`
          })),
        onRight: Effect.succeed
      })
    }
    const given = ctx.resumeValue(index)
    if (Option.isSome(given)) {
      const decoded = Schema.decodeUnknownEither(schema)(given.value)
      if (Either.isLeft(decoded)) {
        return Effect.fail(new InvalidResume({
          executionId: ctx.executionId,
          interruptId,
          message: `The value given for interrupt ${JSON.stringify(interruptId)} of node ${JSON.stringify(ctx.node)} does not match its Schema: ${formatted(decoded.left)}`,
          cause: decoded.left
        }))
      }
      const problem = jsonProblem(given.value, "value")
      if (problem !== undefined) {
        return Effect.fail(new InvalidResume({ executionId: ctx.executionId, interruptId, message: `The value given for interrupt ${JSON.stringify(interruptId)} is not JSON: ${problem}` }))
      }
      return Effect.as(ctx.write(`resume:${index}`, given.value as Checkpoint.Json), decoded.right)
    }
    const problem = jsonProblem(payload, "payload")
    if (problem !== undefined) return Effect.fail(new CheckpointEncodeError({ message: `The interrupt's payload is not JSON: ${problem}` }))
    const interrupted = new GraphInterrupted({
      executionId: ctx.executionId,
      node: ctx.node,
      when: "during",
      checkpointId: ctx.checkpointId,
      interruptId,
      payload: payload as Checkpoint.Json
    })
    const key = `interrupt:${index}`
    const record = ctx.saved.has(key)
      ? Effect.void
      : ctx.write(key, { payload: payload as Checkpoint.Json }, { status: "interrupted", lease: null })
    return Effect.zipRight(record, Effect.fail(interrupted))
  })

/** See `Graph.sleepUntil`. */
export const sleepUntil = (wakeAt: Date): Effect.Effect<void, GraphSuspended | PrimitiveError, NodeContext> =>
  Effect.flatMap(NodeContext, (ctx): Effect.Effect<void, GraphSuspended | PrimitiveError> => {
    const index = ctx.nextSleep()
    const key = `sleep:${index}`
    const saved = ctx.saved.get(key)
    const savedWake = typeof saved === "object" && saved !== null && !Array.isArray(saved)
      ? (saved as Checkpoint.JsonObject).wakeAt
      : undefined
    const savedAt = typeof savedWake === "number" ? savedWake : undefined
    const wake = savedAt ?? wakeAt.getTime()
    if (!Number.isFinite(wake)) {
      return Effect.fail(new CheckpointEncodeError({ message: `sleepUntil needs a valid Date, got ${String(wakeAt)}` }))
    }
    const record = savedAt === undefined ? ctx.write(key, { wakeAt: wake }) : Effect.void
    return Effect.zipRight(
      record,
      Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<void, GraphSuspended> => {
        const remaining = wake - now
        if (remaining <= 0) return Effect.void
        // A resume before the time (the sleep was saved by an earlier run) waits the rest.
        if (savedAt !== undefined || remaining <= ctx.inProcessSleepMs) return Effect.sleep(Duration.millis(remaining))
        return Effect.fail(new GraphSuspended({ executionId: ctx.executionId, wakeAt: new Date(wake), checkpointId: ctx.checkpointId }))
      })
    )
  })

/** See `Graph.sleep`. */
export const sleep = (duration: Duration.DurationInput): Effect.Effect<void, GraphSuspended | PrimitiveError, NodeContext> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => sleepUntil(new Date(now + Duration.toMillis(Duration.decode(duration)))))
