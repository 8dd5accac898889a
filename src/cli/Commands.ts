/**
 * The commands of the `effect-checkpoint` CLI, built with `@effect/cli`.
 *
 * Every command opens the store its `--store` URL names (or the
 * `CHECKPOINT_STORE` environment variable), does one thing and closes it.
 * Output is a table (or plain text) by default and JSON with `--json`; a
 * failure is one line on standard error (`error: …`, never with a password)
 * and a non-zero exit code.
 *
 * @since 0.2.0
 * @internal
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import { Clock, Config, Effect, Either, Option, Redacted, Stream } from "effect"
import * as Checkpoint from "../Checkpoint.js"
import * as CheckpointStore from "../CheckpointStore.js"
import * as ExportFormat from "./ExportFormat.js"
import { Io } from "./Io.js"
import * as Output from "./Output.js"
import * as StoreUrl from "./StoreUrl.js"
import { CliError } from "./StoreUrl.js"
import * as Verify from "./Verify.js"

// -----------------------------------------------------------------------------
// Options shared by every command
// -----------------------------------------------------------------------------

const store = Options.redacted("store").pipe(
  Options.withAlias("s"),
  Options.withPseudoName("URL"),
  Options.withDescription(
    "The store to open: memory: (a new, empty store that lives for this one command), file:DIR, sqlite:FILE, " +
      "postgres://user:password@host:5432/db or redis://[:password@]host[:port][/db]. " +
      "Default: the CHECKPOINT_STORE environment variable. A password in the URL is never printed."
  ),
  Options.withFallbackConfig(Config.redacted("CHECKPOINT_STORE")),
  Options.optional
)

const table = Options.text("table").pipe(
  Options.withPseudoName("NAME"),
  Options.withDescription("The table of a sqlite: or postgres:// store (default: checkpoints)."),
  Options.optional
)

const prefix = Options.text("prefix").pipe(
  Options.withPseudoName("PREFIX"),
  Options.withDescription("The key prefix of a redis:// store (default: none)."),
  Options.optional
)

const json = Options.boolean("json").pipe(
  Options.withDescription("Print JSON (for scripts) instead of a table.")
)

const storeOptions = { store, table, prefix }

interface StoreConfig {
  readonly store: Option.Option<Redacted.Redacted<string>>
  readonly table: Option.Option<string>
  readonly prefix: Option.Option<string>
}

const executionIdArg = (description: string) =>
  Args.text({ name: "executionId" }).pipe(Args.withDescription(description))

const checkpointIdArg = (description: string) =>
  Args.text({ name: "checkpointId" }).pipe(Args.withDescription(description))

/** What each command's --help says: a summary (also listed by the root's --help), then the details. */
const helpText = {
  executions: {
    summary: "List executions, most recently updated first.",
    details: [
      "Columns: the execution id, its status (pending, running, interrupted, sleeping, done, failed), the version of its newest checkpoint, when its record last changed, how many times a worker claimed it, and a note: when a sleeping execution wakes, who holds its lease, its last failure.",
      "At most --limit executions are printed; when there are more, the last line gives the --cursor of the next page.",
      "--json prints {\"executions\":[{executionId, status, latestVersion, latestCheckpointId, updatedAt, attempts, wakeAt?, failure?, lease?}], \"cursor\"?}.",
      "Example: effect-checkpoint executions --store sqlite:./checkpoints.db --status failed --status interrupted"
    ]
  },
  list: {
    summary: "List the checkpoints of an execution, oldest first.",
    details: [
      "Columns: version, checkpoint id, the node (or nodes, joined with +) that ran, the nodes that run next (- when the execution finished) and the time it was saved.",
      "--json prints an array of {id, version, nodeName, timestamp, next, parentId?, metadata}; the states are left out (see show).",
      "An execution the store does not hold is an error.",
      "Example: effect-checkpoint list run-42 --store postgres://app@db:5432/app --table checkpoints"
    ]
  },
  show: {
    summary: "Show one checkpoint and its state.",
    details: [
      "Prints the checkpoint's fields (execution, version, node, time, next, parent, metadata, runtime), then its state as indented JSON: the state as stored, encoded with the graph's Schema.",
      "--json prints the checkpoint's whole JSON document (what export writes for it).",
      "Example: effect-checkpoint show 01936f4e-1b2c-7d3e-8f40-123456789abc --store file:./checkpoints"
    ]
  },
  writes: {
    summary: "List the task writes of a checkpoint.",
    details: [
      "Task writes are what the tasks a checkpoint scheduled saved before the next checkpoint: each finished task's update (key update), durable step results (step:NAME), interrupt answers (interrupt:I, resume:I), sleeps (sleep:I) and pauses (task pause). A resume applies them instead of running those tasks again.",
      "Columns: task id, key, value (as JSON, cut to fit). --json prints an array of {taskId, key, value}.",
      "Example: effect-checkpoint writes 01936f4e-1b2c-7d3e-8f40-123456789abc --store redis://localhost:6379 --prefix myapp:"
    ]
  },
  verify: {
    summary: "Check that executions can be read back and resumed.",
    details: [
      "For each execution (default: every execution of the store) it checks that every checkpoint decodes, that versions are contiguous from the oldest one kept, that each parentId is the checkpoint before it, that timestamps never go back, that task writes decode, and that the execution record names the newest checkpoint. A checkpoint that does not decode is reported by id, and the check goes on past it.",
      "Prints a table and the problems found, and exits with 1 when there is any (0 when all is well).",
      "--json prints {\"ok\":…, \"executions\":[{executionId, checkpoints, ok, problems:[{checkpointId?, version?, message}]}]}.",
      "Example: effect-checkpoint verify --store sqlite:./checkpoints.db && echo all good"
    ]
  },
  prune: {
    summary: "Keep only the newest checkpoints of an execution.",
    details: [
      "Removes all but the newest N checkpoints (with their task writes); --keep 0 removes the whole execution. The execution can still be resumed from its newest checkpoint.",
      "--json prints {executionId, removed, keep}.",
      "Example: effect-checkpoint prune run-42 --keep 5 --store sqlite:./checkpoints.db"
    ]
  },
  clear: {
    summary: "Remove an execution.",
    details: [
      "Removes the execution's checkpoints, task writes and record, and nothing of any other execution. An execution the store does not hold is an error.",
      "--json prints {executionId, cleared}.",
      "Example: effect-checkpoint clear run-42 --store redis://localhost:6379"
    ]
  },
  retry: {
    summary: "Re-arm a failed execution, so a worker runs it again.",
    details: [
      "Sets the status of a failed execution to pending (what runnable.retry does): a worker (Graph.worker) then claims it and resumes it from its newest checkpoint. An execution that is not failed is refused. The CLI does not run graphs itself: it does not know your nodes; resume a run in code with runnable.resume, or let a worker do it.",
      "--json prints the execution record.",
      "Example: effect-checkpoint retry run-42 --store postgres://app@db:5432/app"
    ]
  },
  "export": {
    summary: "Write executions to standard output as JSON Lines.",
    details: [
      "Exports the executions given (default: every execution of the store): for each, one line per checkpoint (oldest first: its JSON document with \"type\":\"checkpoint\"), one line per task with writes (\"type\":\"writes\"), then its execution record (\"type\":\"execution\"), which ends the block. import reads it into any store, keeping ids, versions, timestamps, metadata, runtime and state exactly.",
      "A progress bar is drawn on standard error when it is a terminal (and standard output is not), never in a pipe.",
      "Example: effect-checkpoint export --store sqlite:./checkpoints.db | effect-checkpoint import --store postgres://app@db:5432/app"
    ]
  },
  "import": {
    summary: "Read an export from standard input into the store.",
    details: [
      "For each execution of the input: its checkpoints are saved in one all-or-nothing write, then its task writes, then its status, wake-up time and last failure (no lease: a running execution arrives pending, for a worker to take). An execution that already exists in the store stops the import with an error, unless --force replaces it. A block that ends early (a truncated file) is refused, and nothing of it is written.",
      "The record's updatedAt is the newest checkpoint's time; for an execution with task writes it is the time of the import (its status is set after its writes, so no worker resumes it without them). attempts starts again at 0.",
      "Prints a summary; --json prints {executions, checkpoints, writes}. A progress bar is drawn on standard error when it is a terminal, never in a pipe.",
      "Example: effect-checkpoint import --store postgres://app@db:5432/app < runs.jsonl"
    ]
  },
  ping: {
    summary: "Check that the store can be reached.",
    details: [
      "Opens the store (which creates its table, migrations or directory if missing, as the store layers do) and reads from it once. Exits with 0 when it answers, and 1 with the reason when it does not.",
      "--json prints {ok, store, ms}.",
      "Example: effect-checkpoint ping --store redis://:password@localhost:6379/0"
    ]
  }
} as const

const help = (name: keyof typeof helpText): HelpDoc.HelpDoc =>
  HelpDoc.blocks([HelpDoc.p(helpText[name].summary), ...helpText[name].details.map((d) => HelpDoc.p(d))])

// -----------------------------------------------------------------------------
// Opening the store, and errors as one line
// -----------------------------------------------------------------------------

/** The message of any failure, on one line, without secrets. */
const describe = (error: unknown, target: StoreUrl.Target | undefined): string => {
  const where = target === undefined ? "" : ` in ${target.display}`
  let message: string
  const tagged = typeof error === "object" && error !== null && "_tag" in error ? error as { _tag: unknown } : undefined
  switch (tagged?._tag) {
    case "CheckpointNotFound":
      message = `checkpoint ${JSON.stringify((error as { id: string }).id)} not found${where}`
      break
    case "ExecutionNotFound":
      message = `execution ${JSON.stringify((error as { executionId: string }).executionId)} not found${where}`
      break
    case "CheckpointDecodeError":
      message = `${(error as Error).message} (run verify for a full report)`
      break
    default:
      message = error instanceof Error || (typeof error === "object" && error !== null && "message" in error)
        ? String((error as { message: unknown }).message)
        : String(error)
  }
  return StoreUrl.scrub(message, target).replace(/\s*\n\s*/g, " ").trim()
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

/** A key given in base64 (never shown: an error names the variable only). */
const keyOf = (variable: string, text: string): Either.Either<Redacted.Redacted<Uint8Array>, CliError> => {
  const trimmed = text.trim()
  const bytes = BASE64.test(trimmed) && trimmed.length % 4 === 0 ? Buffer.from(trimmed, "base64") : undefined
  return bytes !== undefined && bytes.length === 32
    ? Either.right(Redacted.make(new Uint8Array(bytes)))
    : Either.left(new CliError({ message: `${variable} must be a 32-byte key in base64 (44 characters)` }))
}

/**
 * The keys of an encrypted store (see `CheckpointStore.encrypted`), from the
 * environment only (a key on the command line would show in the process
 * list): `CHECKPOINT_KEY`, and `CHECKPOINT_PREVIOUS_KEYS` (comma-separated)
 * for values sealed before a rotation. `None` when no key is set.
 */
const encryptionKeys: Effect.Effect<Option.Option<CheckpointStore.EncryptionOptions>, CliError> = Effect.gen(function*() {
  const unreadable = (variable: string) => () => new CliError({ message: `${variable} could not be read` })
  const key = yield* Config.option(Config.redacted("CHECKPOINT_KEY")).pipe(Effect.mapError(unreadable("CHECKPOINT_KEY")))
  const previous = yield* Config.option(Config.redacted("CHECKPOINT_PREVIOUS_KEYS")).pipe(
    Effect.mapError(unreadable("CHECKPOINT_PREVIOUS_KEYS"))
  )
  if (Option.isNone(key)) {
    return Option.isSome(previous)
      ? yield* new CliError({ message: "CHECKPOINT_PREVIOUS_KEYS is set but CHECKPOINT_KEY is not" })
      : Option.none()
  }
  const current = yield* keyOf("CHECKPOINT_KEY", Redacted.value(key.value))
  const previousKeys = yield* Effect.forEach(
    Option.match(previous, {
      onNone: () => [],
      onSome: (list) => Redacted.value(list).split(",").filter((k) => k.trim() !== "")
    }),
    (text) => keyOf("CHECKPOINT_PREVIOUS_KEYS", text)
  )
  return Option.some({ key: current, previousKeys })
})

/** Runs `f` on the store the options name; every failure becomes a `CliError`. */
const withStore = <A, E>(
  config: StoreConfig,
  f: (store: CheckpointStore.Service, target: StoreUrl.Target) => Effect.Effect<A, E, Io>
): Effect.Effect<A, CliError, Io> =>
  Effect.gen(function*() {
    if (Option.isNone(config.store)) {
      return yield* new CliError({ message: "no store given: pass --store URL or set CHECKPOINT_STORE" })
    }
    const target = yield* Either.match(StoreUrl.parse(config.store.value), {
      onLeft: Effect.fail,
      onRight: Effect.succeed
    })
    const keys = yield* encryptionKeys
    const plain = StoreUrl.layer(target, { table: config.table, prefix: config.prefix })
    const storeLayer = Option.isSome(keys) ? plain.pipe(CheckpointStore.encrypted(keys.value)) : plain
    return yield* Effect.flatMap(CheckpointStore.CheckpointStore, (s) => f(s, target)).pipe(
      Effect.provide(storeLayer),
      Effect.mapError((e) =>
        e instanceof CliError && e.message === "" ? e : new CliError({ message: describe(e, target), ...exitOf(e) })
      ),
      Effect.catchAllDefect((defect) => Effect.fail(new CliError({ message: `internal error: ${describe(defect, target)}` })))
    )
  })

const exitOf = (e: unknown): { readonly exitCode?: number } =>
  e instanceof CliError && e.exitCode !== undefined ? { exitCode: e.exitCode } : {}

const executionIdOf = (raw: string) => Checkpoint.makeExecutionId(raw)
const checkpointIdOf = (raw: string) => Checkpoint.makeCheckpointId(raw)

/** Whether the store holds anything of the execution (a record, or checkpoints, readable or not). */
const exists = (store: CheckpointStore.Service, executionId: Checkpoint.ExecutionId) =>
  store.getExecution(executionId).pipe(
    Effect.flatMap((record) =>
      Option.isSome(record) ? Effect.succeed(true) : Effect.map(store.latest(executionId), Option.isSome)
    ),
    Effect.catchTag("CheckpointDecodeError", () => Effect.succeed(true))
  )

const notFound = (executionId: string, target: StoreUrl.Target) =>
  new CliError({ message: `execution ${JSON.stringify(executionId)} not found in ${target.display}` })

/** Fails with "not found" unless the store holds something of the execution. */
const requireExecution = (store: CheckpointStore.Service, executionId: Checkpoint.ExecutionId, target: StoreUrl.Target) =>
  Effect.flatMap(exists(store, executionId), (found) => found ? Effect.void : Effect.fail(notFound(executionId, target)))

/** All checkpoints of an execution, page by page. */
const listAll = (store: CheckpointStore.Service, executionId: Checkpoint.ExecutionId, upTo?: number) =>
  Effect.gen(function*() {
    const out: Array<Checkpoint.Checkpoint> = []
    let after = 0
    while (true) {
      const page = yield* store.list(executionId, { afterVersion: after, limit: 1000 })
      for (const cp of page) if (upTo === undefined || cp.version <= upTo) out.push(cp)
      if (page.length < 1000 || (upTo !== undefined && page[page.length - 1]!.version >= upTo)) return out
      after = page[page.length - 1]!.version
    }
  })

/** Every execution record of the store, newest first. */
const allExecutions = (store: CheckpointStore.Service) =>
  Effect.gen(function*() {
    const out: Array<CheckpointStore.ExecutionRecord> = []
    let cursor: string | undefined
    do {
      const page = yield* store.listExecutions({ limit: 1000, ...(cursor === undefined ? {} : { cursor }) })
      out.push(...page.executions)
      cursor = page.cursor
    } while (cursor !== undefined)
    return out
  })

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`
const iso = (d: Date) => d.toISOString()

// -----------------------------------------------------------------------------
// executions
// -----------------------------------------------------------------------------

const noteOf = (r: CheckpointStore.ExecutionRecord): string => {
  const notes: Array<string> = []
  if (r.status === "sleeping" && r.wakeAt !== undefined) notes.push(`wakes at ${iso(r.wakeAt)}`)
  if (r.lease !== undefined) notes.push(`leased by ${r.lease.owner} until ${iso(r.lease.expiresAt)}`)
  if (r.failure !== undefined) notes.push(`${r.status === "failed" ? "" : "last failure: "}${r.failure.tag}: ${r.failure.message}`)
  return Output.clip(notes.join("; "), 80)
}

const executions = Command.make(
  "executions",
  {
    ...storeOptions,
    json,
    status: Options.choice("status", CheckpointStore.statuses).pipe(
      Options.repeated,
      Options.withDescription(
        "Only executions in this status: pending, running, interrupted, sleeping, done or failed. Repeat it for several."
      )
    ),
    limit: Options.integer("limit").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("At most N executions (default 100, at most 10000)."),
      Options.withDefault(100)
    ),
    cursor: Options.text("cursor").pipe(
      Options.withPseudoName("CURSOR"),
      Options.withDescription("Continue after the previous page: the cursor it printed."),
      Options.optional
    )
  },
  (config) =>
    withStore(config, (store) =>
      Effect.gen(function*() {
        const io = yield* Io
        if (config.limit < 1) return yield* new CliError({ message: "--limit must be at least 1" })
        const page = yield* store.listExecutions({
          limit: Math.min(config.limit, 10_000),
          ...(config.status.length === 0 ? {} : { status: config.status }),
          ...(Option.isSome(config.cursor) ? { cursor: config.cursor.value } : {})
        })
        if (config.json) {
          return yield* io.out(Output.json({
            executions: page.executions.map(ExportFormat.recordJson),
            ...(page.cursor === undefined ? {} : { cursor: page.cursor })
          }))
        }
        if (page.executions.length === 0) return yield* io.out("no executions\n")
        yield* io.out(Output.table(
          ["EXECUTION", "STATUS", "VERSION", "UPDATED", "ATTEMPTS", "NOTE"],
          page.executions.map((r) => [r.executionId, r.status, String(r.latestVersion), iso(r.updatedAt), String(r.attempts), noteOf(r)])
        ))
        if (page.cursor !== undefined) yield* io.out(`more: add --cursor ${page.cursor}\n`)
      }))
).pipe(Command.withDescription(help("executions")))

// -----------------------------------------------------------------------------
// list
// -----------------------------------------------------------------------------

const list = Command.make(
  "list",
  { ...storeOptions, json, executionId: executionIdArg("The execution whose checkpoints to list.") },
  (config) =>
    withStore(config, (store, target) =>
      Effect.gen(function*() {
        const io = yield* Io
        const executionId = yield* executionIdOf(config.executionId)
        const checkpoints = yield* listAll(store, executionId)
        if (checkpoints.length === 0) {
          yield* requireExecution(store, executionId, target)
        }
        if (config.json) {
          return yield* io.out(Output.json(checkpoints.map((cp) => ({
            id: cp.id,
            version: cp.version,
            nodeName: cp.nodeName,
            timestamp: iso(cp.timestamp),
            next: cp.next,
            ...(cp.parentId === undefined ? {} : { parentId: cp.parentId }),
            metadata: cp.metadata
          }))))
        }
        yield* io.out(Output.table(
          ["VERSION", "CHECKPOINT", "NODE", "NEXT", "TIMESTAMP"],
          checkpoints.map((cp) => [
            String(cp.version),
            cp.id,
            cp.nodeName,
            cp.next.length === 0 ? "-" : Output.clip(cp.next.join(","), 40),
            iso(cp.timestamp)
          ])
        ))
      }))
).pipe(Command.withDescription(help("list")))

// -----------------------------------------------------------------------------
// show
// -----------------------------------------------------------------------------

const documentOf = (cp: Checkpoint.Checkpoint) =>
  Effect.map(Checkpoint.encode(cp), (text) => JSON.parse(text) as Record<string, unknown>)

const show = Command.make(
  "show",
  { ...storeOptions, json, checkpointId: checkpointIdArg("The checkpoint to show.") },
  (config) =>
    withStore(config, (store) =>
      Effect.gen(function*() {
        const io = yield* Io
        const cp = yield* store.load(yield* checkpointIdOf(config.checkpointId))
        const document = yield* documentOf(cp)
        if (config.json) return yield* io.out(Output.json(document))
        const rows: Array<[string, string]> = [
          ["checkpoint", cp.id],
          ["execution", cp.executionId],
          ["version", String(cp.version)],
          ["node", cp.nodeName],
          ["timestamp", iso(cp.timestamp)],
          ["next", cp.next.length === 0 ? "- (finished)" : cp.next.join(", ")],
          ["parent", cp.parentId ?? "-"],
          ["metadata", JSON.stringify(cp.metadata)],
          ...(cp.runtime === undefined ? [] : [["runtime", JSON.stringify(cp.runtime)] as [string, string]])
        ]
        const width = Math.max(...rows.map(([k]) => k.length))
        yield* io.out(
          rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n") + "\nstate:\n" + Output.json(cp.state)
        )
      }))
).pipe(Command.withDescription(help("show")))

// -----------------------------------------------------------------------------
// writes
// -----------------------------------------------------------------------------

const writes = Command.make(
  "writes",
  { ...storeOptions, json, checkpointId: checkpointIdArg("The checkpoint whose task writes to list.") },
  (config) =>
    withStore(config, (store) =>
      Effect.gen(function*() {
        const io = yield* Io
        const id = yield* checkpointIdOf(config.checkpointId)
        yield* store.load(id)
        const all = yield* store.listWrites(id)
        if (config.json) return yield* io.out(Output.json(all.map((w) => ({ taskId: w.taskId, key: w.key, value: w.value }))))
        if (all.length === 0) return yield* io.out("no task writes\n")
        yield* io.out(Output.table(
          ["TASK", "KEY", "VALUE"],
          all.map((w) => [w.taskId, w.key, Output.clip(JSON.stringify(w.value), 100)])
        ))
      }))
).pipe(Command.withDescription(help("writes")))

// -----------------------------------------------------------------------------
// verify
// -----------------------------------------------------------------------------

const verify = Command.make(
  "verify",
  {
    ...storeOptions,
    json,
    executionIds: Args.text({ name: "executionId" }).pipe(
      Args.withDescription("The executions to verify (default: every execution of the store)."),
      Args.repeated
    )
  },
  (config) =>
    withStore(config, (store, target) =>
      Effect.gen(function*() {
        const io = yield* Io
        let ids: ReadonlyArray<Checkpoint.ExecutionId>
        if (config.executionIds.length === 0) {
          ids = (yield* allExecutions(store)).map((r) => r.executionId)
        } else {
          ids = yield* Effect.forEach(config.executionIds, executionIdOf)
          for (const id of ids) yield* requireExecution(store, id, target)
        }
        const bar = Output.progress(io, "verifying")
        const reports: Array<Verify.Report> = []
        for (const id of ids) {
          reports.push(yield* Verify.verifyExecution(store, id))
          yield* bar.update(reports.length, ids.length, ids.length === 1 ? "execution" : "executions")
        }
        yield* bar.done
        const broken = reports.filter((r) => r.problems.length > 0)
        if (config.json) {
          yield* io.out(Output.json({
            ok: broken.length === 0,
            executions: reports.map((r) => ({ ...r, ok: r.problems.length === 0 }))
          }))
        } else {
          if (reports.length > 0) {
            yield* io.out(Output.table(
              ["EXECUTION", "CHECKPOINTS", "RESULT"],
              reports.map((r) => [
                r.executionId,
                String(r.checkpoints),
                r.problems.length === 0 ? "ok" : plural(r.problems.length, "problem")
              ])
            ))
          }
          for (const r of broken) {
            yield* io.out(`\n${r.executionId}:\n`)
            for (const p of r.problems) {
              const at = p.checkpointId === undefined
                ? ""
                : `checkpoint ${p.checkpointId}${p.version === undefined ? "" : ` (version ${p.version})`}: `
              yield* io.out(`  - ${at}${p.message}\n`)
            }
          }
          yield* io.out(
            `${reports.length > 0 ? "\n" : ""}verified ${plural(reports.length, "execution")}: ` +
              (broken.length === 0 ? "all ok\n" : `${broken.length} with problems\n`)
          )
        }
        if (broken.length > 0) return yield* new CliError({ message: "", exitCode: 1 })
      }))
).pipe(Command.withDescription(help("verify")))

// -----------------------------------------------------------------------------
// prune, clear, retry
// -----------------------------------------------------------------------------

const prune = Command.make(
  "prune",
  {
    ...storeOptions,
    json,
    keep: Options.integer("keep").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("How many of the newest checkpoints to keep (0 removes the execution).")
    ),
    executionId: executionIdArg("The execution to prune.")
  },
  (config) =>
    withStore(config, (store, target) =>
      Effect.gen(function*() {
        const io = yield* Io
        if (config.keep < 0) return yield* new CliError({ message: "--keep must be 0 or more" })
        const executionId = yield* executionIdOf(config.executionId)
        yield* requireExecution(store, executionId, target)
        const removed = yield* store.prune(executionId, config.keep)
        if (config.json) return yield* io.out(Output.json({ executionId, removed, keep: config.keep }))
        yield* io.out(`pruned ${executionId}: removed ${plural(removed, "checkpoint")}, kept at most the newest ${config.keep}\n`)
      }))
).pipe(Command.withDescription(help("prune")))

const clear = Command.make(
  "clear",
  { ...storeOptions, json, executionId: executionIdArg("The execution to remove.") },
  (config) =>
    withStore(config, (store, target) =>
      Effect.gen(function*() {
        const io = yield* Io
        const executionId = yield* executionIdOf(config.executionId)
        yield* requireExecution(store, executionId, target)
        yield* store.clear(executionId)
        if (config.json) return yield* io.out(Output.json({ executionId, cleared: true }))
        yield* io.out(`cleared ${executionId}\n`)
      }))
).pipe(Command.withDescription(help("clear")))

const retry = Command.make(
  "retry",
  { ...storeOptions, json, executionId: executionIdArg("The failed execution to re-arm.") },
  (config) =>
    withStore(config, (store, target) =>
      Effect.gen(function*() {
        const io = yield* Io
        const executionId = yield* executionIdOf(config.executionId)
        const record = yield* store.getExecution(executionId)
        if (Option.isNone(record)) return yield* notFound(executionId, target)
        const r = record.value
        if (r.status !== "failed") {
          return yield* new CliError({
            message: `execution ${JSON.stringify(executionId)} is ${r.status}, not failed: retry re-arms failed executions only`
          })
        }
        const updated = yield* store.updateExecution(
          executionId,
          { status: "pending" },
          { expect: { latestVersion: r.latestVersion, latestCheckpointId: r.latestCheckpointId } }
        )
        if (config.json) return yield* io.out(Output.json(ExportFormat.recordJson(updated)))
        yield* io.out(`${executionId} is pending again: a worker (Graph.worker) will run it from version ${updated.latestVersion}\n`)
      }))
).pipe(Command.withDescription(help("retry")))

// -----------------------------------------------------------------------------
// export, import
// -----------------------------------------------------------------------------

/**
 * Writes one execution's block to standard output; returns how many
 * checkpoints and task writes it held.
 *
 * @since 0.2.0
 * @category export
 */
export const exportExecution = (
  store: CheckpointStore.Service,
  executionId: Checkpoint.ExecutionId,
  target: StoreUrl.Target
) =>
  Effect.gen(function*() {
    const io = yield* Io
    const stored = yield* store.getExecution(executionId)
    // Only the checkpoints up to the record's newest: the block matches the record even if the execution moves on meanwhile.
    const checkpoints = yield* listAll(store, executionId, Option.getOrUndefined(Option.map(stored, (r) => r.latestVersion)))
    if (checkpoints.length === 0) return yield* notFound(executionId, target)
    const newest = checkpoints[checkpoints.length - 1]!
    const record: CheckpointStore.ExecutionRecord = Option.getOrElse(stored, () => ({
      executionId,
      latestVersion: newest.version,
      latestCheckpointId: newest.id,
      updatedAt: newest.timestamp,
      pending: newest.next.length > 0,
      status: newest.next.length > 0 ? "pending" as const : "done" as const,
      attempts: 0
    }))
    if (record.latestVersion !== newest.version || record.latestCheckpointId !== newest.id) {
      return yield* new CliError({
        message: `execution ${JSON.stringify(executionId)}: its record names version ${record.latestVersion} as the newest, ` +
          `but the newest checkpoint is version ${newest.version} (run verify)`
      })
    }
    const lines: Array<string> = []
    for (const cp of checkpoints) lines.push(yield* ExportFormat.checkpointLine(cp))
    yield* io.out(lines.join("\n") + "\n")
    let writeCount = 0
    for (const cp of checkpoints) {
      const all = yield* store.listWrites(cp.id)
      if (all.length === 0) continue
      writeCount += all.length
      yield* io.out(ExportFormat.writesLines(cp.id, all).join("\n") + "\n")
    }
    yield* io.out(ExportFormat.executionLine(record) + "\n")
    return { checkpoints: checkpoints.length, writes: writeCount }
  })

const exportCommand = Command.make(
  "export",
  {
    ...storeOptions,
    executionIds: Args.text({ name: "executionId" }).pipe(
      Args.withDescription("The executions to export (default: every execution of the store)."),
      Args.repeated
    )
  },
  (config) =>
    withStore(config, (store, target) =>
      Effect.gen(function*() {
        const io = yield* Io
        const ids = config.executionIds.length === 0
          ? (yield* allExecutions(store)).map((r) => r.executionId)
          : yield* Effect.forEach(config.executionIds, executionIdOf)
        const bar = Output.progress(io, "exporting", { unlessStdoutIsTTY: true })
        let checkpoints = 0
        let writeCount = 0
        let done = 0
        for (const id of ids) {
          const counts = yield* exportExecution(store, id, target)
          checkpoints += counts.checkpoints
          writeCount += counts.writes
          done++
          yield* bar.update(done, ids.length, `${ids.length === 1 ? "execution" : "executions"}, ${plural(checkpoints, "checkpoint")}`)
        }
        yield* bar.done
        if (io.stderrIsTTY && !io.stdoutIsTTY) {
          yield* io.err(
            `exported ${plural(done, "execution")} (${plural(checkpoints, "checkpoint")}, ${plural(writeCount, "task write")})\n`
          )
        }
      }))
).pipe(Command.withDescription(help("export")))

/**
 * Saves one block of an export into the store (see `import --help`).
 *
 * @since 0.2.0
 * @category export
 */
export const importExecution = (
  store: CheckpointStore.Service,
  block: ExportFormat.Block,
  force: boolean,
  target: StoreUrl.Target
) =>
  Effect.gen(function*() {
    const { executionId, record } = block
    if (yield* exists(store, executionId)) {
      if (!force) {
        return yield* new CliError({
          message: `execution ${JSON.stringify(executionId)} already exists in ${target.display}: ` +
            `nothing of it was imported (--force replaces it)`
        })
      }
      yield* store.clear(executionId)
    }
    // No lease comes along: the run that held it is not in this store. A worker takes a `running` one as `pending`.
    const status = record.status === "running" ? "pending" : record.status
    const newest = block.checkpoints[block.checkpoints.length - 1]!
    // With task writes, the execution is held `failed` (which nothing claims or resumes by itself)
    // until they are in, so no worker resumes it without them.
    const hold = block.writes.length > 0
    yield* store.saveMany(block.checkpoints, {
      expect: { executionId, latestVersion: 0 },
      execution: {
        status: hold ? "failed" : status,
        wakeAt: record.wakeAt ?? null,
        failure: hold
          ? { tag: "ImportIncomplete", message: "the import stopped before the task writes were saved: import it again with --force" }
          : record.failure ?? null
      }
    })
    for (const w of block.writes) yield* store.saveWrites(w.checkpointId, w.taskId, w.writes)
    if (hold) {
      yield* store.updateExecution(
        executionId,
        { status, failure: record.failure ?? null },
        { expect: { latestVersion: newest.version, latestCheckpointId: newest.id } }
      )
    }
  })

const importCommand = Command.make(
  "import",
  {
    ...storeOptions,
    json,
    force: Options.boolean("force").pipe(
      Options.withDescription(
        "Replace an execution that already exists in the store (it is cleared first). " +
          "Without it, such an execution stops the import with an error and nothing of it is written."
      )
    )
  },
  (config) =>
    withStore(config, (store, target) =>
      Effect.gen(function*() {
        const io = yield* Io
        if (io.stdinIsTTY) {
          return yield* new CliError({
            message: "import reads an export from standard input: effect-checkpoint import --store URL < export.jsonl"
          })
        }
        const bar = Output.progress(io, "importing")
        const counts = { executions: 0, checkpoints: 0, writes: 0 }
        const reader = ExportFormat.makeReader((block) =>
          Effect.gen(function*() {
            yield* importExecution(store, block, config.force, target)
            counts.executions++
            counts.checkpoints += block.checkpoints.length
            counts.writes += block.writes.reduce((n, w) => n + w.writes.length, 0)
            yield* bar.update(
              counts.executions,
              undefined,
              `${counts.executions === 1 ? "execution" : "executions"}, ${plural(counts.checkpoints, "checkpoint")}`
            )
          })
        )
        const started = yield* Clock.currentTimeMillis
        const result = yield* io.stdin.pipe(
          Stream.decodeText(),
          Stream.splitLines,
          Stream.runForEach(reader.line),
          Effect.zipRight(reader.end),
          Effect.either
        )
        yield* bar.done
        if (Either.isLeft(result)) {
          const imported = counts.executions === 0
            ? ""
            : ` (${plural(counts.executions, "execution")} before it were imported)`
          return yield* new CliError({ message: `${describe(result.left, target)}${imported}` })
        }
        const ms = (yield* Clock.currentTimeMillis) - started
        if (config.json) return yield* io.out(Output.json(counts))
        yield* io.out(
          `imported ${plural(counts.executions, "execution")} (${plural(counts.checkpoints, "checkpoint")}, ` +
            `${plural(counts.writes, "task write")}) into ${target.display} in ${ms} ms\n`
        )
      }))
).pipe(Command.withDescription(help("import")))

// -----------------------------------------------------------------------------
// ping
// -----------------------------------------------------------------------------

const ping = Command.make(
  "ping",
  { ...storeOptions, json },
  (config) =>
    withStore(config, (store, target) =>
      Effect.gen(function*() {
        const io = yield* Io
        const started = yield* Clock.currentTimeMillis
        yield* store.listExecutions({ limit: 1 })
        const ms = (yield* Clock.currentTimeMillis) - started
        if (config.json) return yield* io.out(Output.json({ ok: true, store: target.display, ms }))
        yield* io.out(`ok: ${target.display} answered in ${ms} ms\n`)
      }))
).pipe(Command.withDescription(help("ping")))

// -----------------------------------------------------------------------------
// The root command
// -----------------------------------------------------------------------------

/**
 * The `effect-checkpoint` command and its subcommands.
 *
 * @since 0.2.0
 * @category commands
 */
export const root = Command.make("effect-checkpoint").pipe(
  Command.withDescription(HelpDoc.blocks([
    HelpDoc.p(
      "Inspect and maintain an effect-checkpoint store: list executions and checkpoints, show states and task writes, " +
        "verify, prune, clear and retry executions, and move them between stores with export | import."
    ),
    HelpDoc.p(
      (Object.keys(helpText) as Array<keyof typeof helpText>)
        .map((name) => `  ${name.padEnd(11)} ${helpText[name].summary}`)
        .join("\n")
    ),
    HelpDoc.p(
      "Every command takes --store URL, or reads the CHECKPOINT_STORE environment variable: memory: (an empty store " +
        "that lives for one command), file:DIR, sqlite:FILE, postgres://user:password@host:5432/db, " +
        "redis://[:password@]host[:port][/db]; --table picks the table of an SQL store, --prefix the key prefix of a " +
        "Redis store. A password is never printed. An encrypted store (CheckpointStore.encrypted) opens with its key " +
        "in CHECKPOINT_KEY (32 bytes, base64), and keys of earlier rotations in CHECKPOINT_PREVIOUS_KEYS " +
        "(comma-separated). Output is a table, or JSON with --json. Run a command with --help for all of its options."
    ),
    HelpDoc.p(
      "Exit codes: 0 done; 1 the command failed (one line on standard error) or verify found problems; " +
        "2 bad usage (unknown command or option, missing argument); 130 interrupted."
    )
  ])),
  Command.withSubcommands([executions, list, show, writes, verify, prune, clear, retry, exportCommand, importCommand, ping])
)
