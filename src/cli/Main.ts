/**
 * The CLI as one effect: parse the arguments, run the command, and turn the
 * outcome into an exit code.
 *
 * | exit code | meaning |
 * |---|---|
 * | 0 | done |
 * | 1 | the command failed (one line on standard error), or `verify` found problems |
 * | 2 | bad usage: an unknown command or option, a missing argument (`@effect/cli` prints why) |
 * | 130 | interrupted (Ctrl-C) |
 *
 * @since 0.2.0
 * @internal
 */
import type * as CliApp from "@effect/cli/CliApp"
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import * as ValidationError from "@effect/cli/ValidationError"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import { Cause, Config, Console, Effect, Layer, Option } from "effect"
import { redact } from "../internal/storeError.js"
import { root } from "./Commands.js"
import { Io } from "./Io.js"
import { stripAnsi } from "./Output.js"
import { CliError } from "./StoreUrl.js"

/** The version in the package's package.json (two folders up from this module, in `src/` and in `dist/`). */
const version = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const file = yield* path.fromFileUrl(new URL("../../package.json", import.meta.url))
  const parsed = JSON.parse(yield* fs.readFileString(file)) as { version?: unknown }
  return typeof parsed.version === "string" ? parsed.version : "unknown"
}).pipe(Effect.orElseSucceed(() => "unknown"))

/**
 * `Console` on the CLI's streams: what `@effect/cli` prints (help, usage
 * errors) goes through `Io`, without URL passwords, and without colours
 * unless standard output is a terminal and `NO_COLOR` is unset.
 */
const consoleLayer = Layer.unwrapEffect(Effect.gen(function*() {
  const io = yield* Io
  const noColor = yield* Config.string("NO_COLOR").pipe(Config.option, Effect.orElseSucceed(() => Option.none()))
  const plain = !io.stdoutIsTTY || Option.isSome(noColor)
  const text = (args: ReadonlyArray<unknown>) => {
    // A URL typed where @effect/cli did not expect it comes back in its message: without its password.
    const joined = redact(args.map((a) => typeof a === "string" ? a : String(a)).join(" "))
    return `${plain ? stripAnsi(joined) : joined}\n`
  }
  const base = yield* Effect.console
  const console: Console.Console = {
    ...base,
    log: (...args) => io.out(text(args)),
    info: (...args) => io.out(text(args)),
    error: (...args) => io.err(text(args)),
    warn: (...args) => io.err(text(args))
  }
  return Console.setConsole(console)
}))

/**
 * Runs the CLI on `argv` (as `process.argv`: the runtime and the script
 * first) and returns the exit code. Never fails.
 *
 * @since 0.2.0
 * @category running
 */
export const main = (
  argv: ReadonlyArray<string>
): Effect.Effect<number, never, Io | CliApp.CliApp.Environment> =>
  Effect.gen(function*() {
    const io = yield* Io
    const run = Command.run(root, { name: "effect-checkpoint", version: yield* version, executable: "effect-checkpoint" })
    return yield* run(argv).pipe(
      Effect.as(0),
      Effect.catchAll((e) => {
        if (ValidationError.isValidationError(e)) return Effect.succeed(2) // @effect/cli printed it
        if (e instanceof CliError) {
          return Effect.as(e.message === "" ? Effect.void : io.err(`error: ${e.message}\n`), e.exitCode ?? 1)
        }
        return Effect.as(io.err(`error: ${String(e)}\n`), 1)
      }),
      Effect.catchAllCause((cause) =>
        Cause.isInterruptedOnly(cause)
          ? Effect.succeed(130)
          : Effect.as(io.err(`internal error: ${Cause.pretty(cause).split("\n")[0]}\n`), 1)
      ),
      Effect.provide(Layer.merge(consoleLayer, CliConfig.layer({ showBuiltIns: false })))
    )
  })
