/**
 * The CLI's standard streams as a service, so the commands never touch
 * `process` (the bin provides {@link layerNode}).
 *
 * @since 0.2.0
 * @internal
 */
import * as NodeStream from "@effect/platform-node/NodeStream"
import { Context, Effect, Layer, type Stream } from "effect"

/**
 * What the commands read from and write to.
 *
 * @since 0.2.0
 * @category models
 */
export interface Service {
  /** Writes text to standard output as it is (no newline added). */
  readonly out: (text: string) => Effect.Effect<void>
  /** Writes text to standard error as it is (no newline added). */
  readonly err: (text: string) => Effect.Effect<void>
  /** Standard input. */
  readonly stdin: Stream.Stream<Uint8Array>
  /** Whether standard input is a terminal (then `import` has nothing to read). */
  readonly stdinIsTTY: boolean
  /** Whether standard output is a terminal. */
  readonly stdoutIsTTY: boolean
  /** Whether standard error is a terminal (the progress bar is drawn there, and only then). */
  readonly stderrIsTTY: boolean
  /** The width of the terminal on standard error (80 when unknown). */
  readonly columns: Effect.Effect<number>
}

/**
 * @since 0.2.0
 * @category tags
 */
export class Io extends Context.Tag("effect-checkpoint/cli/Io")<Io, Service>() {}

/** A write that resolves once the stream took the text; a closed stream (EPIPE) is ignored. */
const writer = (stream: NodeJS.WriteStream) => (text: string): Effect.Effect<void> =>
  text.length === 0 ? Effect.void : Effect.async<void>((resume) => {
    try {
      stream.write(text, () => resume(Effect.void))
    } catch {
      resume(Effect.void)
    }
  })

/**
 * The process's own streams.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerNode: Layer.Layer<Io> = Layer.sync(Io, () => {
  // A reader that went away (`export | head`) closes the pipe: stop writing quietly.
  for (const stream of [process.stdout, process.stderr]) stream.on("error", () => {})
  return {
    out: writer(process.stdout),
    err: writer(process.stderr),
    stdin: NodeStream.stdin,
    stdinIsTTY: process.stdin.isTTY === true,
    stdoutIsTTY: process.stdout.isTTY === true,
    stderrIsTTY: process.stderr.isTTY === true,
    columns: Effect.sync(() => process.stderr.columns ?? 80)
  }
})
