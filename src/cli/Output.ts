/**
 * Tables, JSON and the progress bar of the CLI.
 *
 * @since 0.2.0
 * @internal
 */
import { Clock, Effect } from "effect"
import type * as Io from "./Io.js"

/**
 * A plain-text table: a header row, columns padded to their widest cell,
 * two spaces apart.
 *
 * @since 0.2.0
 * @category formatting
 */
export const table = (headers: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i]!)).join("  ").trimEnd()
  return [line(headers), ...rows.map(line)].join("\n") + "\n"
}

/**
 * `text` cut to `max` characters (with `…`), on one line.
 *
 * @since 0.2.0
 * @category formatting
 */
export const clip = (text: string, max: number): string => {
  const one = text.replace(/\s+/g, " ")
  return one.length <= max ? one : `${one.slice(0, Math.max(0, max - 1))}…`
}

/**
 * A value as indented JSON, with a final newline.
 *
 * @since 0.2.0
 * @category formatting
 */
export const json = (value: unknown): string => `${JSON.stringify(value, null, 2)}\n`

/** Escape sequences of terminal styles. */
// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;?]*[A-Za-z]/g

/**
 * `text` without terminal colours and styles.
 *
 * @since 0.2.0
 * @category formatting
 */
export const stripAnsi = (text: string): string => text.replace(ANSI, "")

/**
 * A progress bar on standard error, drawn only when it is a terminal (never
 * in a pipe or a file, so scripts and logs stay clean; and, with
 * `unlessStdoutIsTTY`, not when standard output is the same terminal).
 * Redraws at most every 100 ms; `done` clears it.
 *
 * @since 0.2.0
 * @category progress
 */
export interface Progress {
  readonly update: (done: number, total: number | undefined, detail: string) => Effect.Effect<void>
  readonly done: Effect.Effect<void>
}

/**
 * @since 0.2.0
 * @category progress
 */
export const progress = (io: Io.Service, label: string, options?: { readonly unlessStdoutIsTTY?: boolean }): Progress => {
  if (!io.stderrIsTTY || (options?.unlessStdoutIsTTY === true && io.stdoutIsTTY)) {
    return { update: () => Effect.void, done: Effect.void }
  }
  let last = 0
  let drawn = false
  const draw = (done: number, total: number | undefined, detail: string) =>
    Effect.gen(function*() {
      const columns = Math.max(40, yield* io.columns)
      const count = total === undefined ? `${done}` : `${done}/${total}`
      const text = `${label} ${count} ${detail}`
      const room = columns - text.length - 4
      const bar = total === undefined || total === 0 || room < 10
        ? ""
        : (() => {
          const width = Math.min(30, room)
          const filled = Math.round((Math.min(done, total) / total) * width)
          return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] `
        })()
      drawn = true
      yield* io.err(`\r\u001b[2K${clip(bar + text, columns - 1)}`)
    })
  return {
    update: (done, total, detail) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (now - last < 100 && !(total !== undefined && done >= total)) return Effect.void
        last = now
        return draw(done, total, detail)
      }),
    done: Effect.suspend(() => drawn ? io.err("\r\u001b[2K") : Effect.void)
  }
}
