/**
 * The `effect-checkpoint` CLI.
 *
 * - In process: the export format round-trips executions exactly between two
 *   stores (and the copy resumes to the end), imports refuse what they must,
 *   and `verify` finds every kind of damage.
 * - The real bin (compiled like `npm run build`, run with `node`): the help of
 *   every command, usage errors, store URLs, one-line errors with passwords
 *   redacted (a closed port, a wrong password to a private redis-server),
 *   import from standard input, the progress bar on a terminal only.
 * - The real bin against real stores (file:, sqlite:, postgres://, redis://):
 *   every command on executions seeded by graph runs, a corrupt checkpoint
 *   that verify finds, and SQLite → PostgreSQL through export | import, where
 *   the run then finishes.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, Redacted, Schedule } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll } from "vitest"
import * as Checkpoint from "../src/Checkpoint.js"
import * as CheckpointBackend from "../src/CheckpointBackend.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import { exportExecution, importExecution } from "../src/cli/Commands.js"
import * as ExportFormat from "../src/cli/ExportFormat.js"
import type { CliError } from "../src/cli/StoreUrl.js"
import * as StoreUrl from "../src/cli/StoreUrl.js"
import * as Verify from "../src/cli/Verify.js"
import * as Graph from "../src/Graph.js"
import * as SqliteStore from "../src/layers/Sqlite.js"
import { makeState, type MemoryState, memoryBackend } from "../src/internal/memoryBackend.js"
import { closedPort } from "./fixtures/redis-proxy.js"
import { input, linear, research, type Research } from "./fixtures/cli-graph.js"
import { build, type Built, captureIo, type Result, run, runInProcess, runOnTerminal, type RunOptions } from "./fixtures/cli-run.js"
import { postgresStore, realStores, type RealStore, sqliteStore } from "./fixtures/cli-stores.js"

const Store = CheckpointStore.CheckpointStore
const eid = (s: string) => s as Checkpoint.ExecutionId

/** A Memory store whose raw documents the test can reach. */
const memoryWithState = () => {
  const state = makeState()
  return { state, layer: Layer.succeed(Store, CheckpointBackend.make(memoryBackend(state))) }
}

const memoryTarget: StoreUrl.Target = Either.getOrThrow(StoreUrl.parse(Redacted.make("memory:")))

/**
 * Seeds a store with three executions, all through graph runs:
 * - `failed`: plan, web ∥ papers (task writes), review (interrupt, answered), write fails → `failed`;
 * - `paused`: plan, web ∥ papers, then review asks → `interrupted`;
 * - `done`: a → b → c, no task writes → `done`.
 */
const seed = (prefix: string) =>
  Effect.gen(function*() {
    const failWrite = { on: true }
    // "sync": every task's update is written (in "async" a queued superstep checkpoint supersedes them).
    const runnable = yield* Graph.compileCheckpointable(research(failWrite), { maxCheckpoints: 0, durability: "sync" })
    const failed = eid(`${prefix}-failed`)
    const paused = eid(`${prefix}-paused`)
    const done = eid(`${prefix}-done`)
    expect((yield* Effect.flip(runnable.invoke(input, { executionId: failed, metadata: JSON.parse(`{"by":"seed","__proto__":{"x":1}}`) })))._tag)
      .toBe("GraphInterrupted")
    expect((yield* Effect.flip(runnable.resume(failed, { value: { approved: true } })))._tag).toBe("WriteFailed")
    expect((yield* Effect.flip(runnable.invoke(input, { executionId: paused })))._tag).toBe("GraphInterrupted")
    const plain = yield* Graph.compileCheckpointable(linear, { maxCheckpoints: 0 })
    yield* plain.invoke(input, { executionId: done })
    return { failed, paused, done }
  })

/** Everything a store holds of an execution, in a comparable form. */
const snapshot = (executionId: Checkpoint.ExecutionId) =>
  Effect.gen(function*() {
    const store = yield* Store
    const checkpoints = yield* store.list(executionId)
    const documents = yield* Effect.forEach(checkpoints, (cp) => Checkpoint.encode(cp))
    const writes = yield* Effect.forEach(checkpoints, (cp) => store.listWrites(cp.id))
    const record = Option.getOrThrow(yield* store.getExecution(executionId))
    return {
      documents,
      writes,
      record: { status: record.status, failure: record.failure, wakeAt: record.wakeAt, latestVersion: record.latestVersion, latestCheckpointId: record.latestCheckpointId },
      updatedAt: record.updatedAt
    }
  })

/** Exports executions from the store in context: the JSON Lines text. */
const exportText = (ids: ReadonlyArray<Checkpoint.ExecutionId>) =>
  Effect.gen(function*() {
    const io = captureIo()
    const store = yield* Store
    for (const id of ids) yield* exportExecution(store, id, memoryTarget).pipe(Effect.provide(io.layer))
    return io.stdout()
  })

/** Imports JSON Lines text into the store in context, as `import` does. */
const importText = (text: string, force = false) =>
  Effect.gen(function*() {
    const store = yield* Store
    const imported: Array<string> = []
    const reader = ExportFormat.makeReader((block) =>
      Effect.map(importExecution(store, block, force, memoryTarget), () => void imported.push(block.executionId))
    )
    for (const line of text.split("\n")) yield* reader.line(line)
    yield* reader.end
    return imported
  })

// -----------------------------------------------------------------------------
// In process
// -----------------------------------------------------------------------------

describe("export | import (in process, Memory → Memory)", () => {
  it.live("round-trips executions exactly: checkpoints, task writes, status, failure", () =>
    Effect.gen(function*() {
      const source = memoryWithState()
      const target = memoryWithState()
      const ids = yield* seed("rt").pipe(Effect.provide(source.layer))
      const all = [ids.failed, ids.paused, ids.done]
      const text = yield* exportText(all).pipe(Effect.provide(source.layer))

      // The format: per execution, checkpoints (ascending), writes, then the execution line.
      const types = text.trim().split("\n").map((l) => (JSON.parse(l) as { type: string }).type)
      expect(types.filter((t) => t === "execution")).toHaveLength(3)
      expect(types[types.length - 1]).toBe("execution")
      expect(types).toContain("writes")

      const imported = yield* importText(text).pipe(Effect.provide(target.layer))
      expect(imported).toEqual(all)
      for (const id of all) {
        const before = yield* snapshot(id).pipe(Effect.provide(source.layer))
        const after = yield* snapshot(id).pipe(Effect.provide(target.layer))
        // Same ids, versions, timestamps, metadata (own __proto__ key included), runtime, state: the same documents.
        expect(after.documents, id).toEqual(before.documents)
        expect(after.writes, id).toEqual(before.writes)
        expect(after.record, id).toEqual(before.record)
      }
      const failedDoc = (yield* snapshot(ids.failed).pipe(Effect.provide(target.layer))).documents[0]!
      expect(Object.keys((JSON.parse(failedDoc) as { metadata: object }).metadata)).toContain("__proto__")
      expect((yield* snapshot(ids.failed).pipe(Effect.provide(source.layer))).documents.some((d) => d.includes("\"runtime\""))).toBe(true)
      // Without task writes, the record's time is the newest checkpoint's, as in the source.
      const doneBefore = yield* snapshot(ids.done).pipe(Effect.provide(source.layer))
      const doneAfter = yield* snapshot(ids.done).pipe(Effect.provide(target.layer))
      expect(doneAfter.updatedAt).toEqual(doneBefore.updatedAt)
      // A second export of the copy is the same text, but for the time of the records of executions with
      // task writes (their status was set after their writes, at the import).
      const withWrites = new Set([ids.failed, ids.paused] as ReadonlyArray<string>)
      const comparable = (t: string) =>
        t.trim().split("\n").map((line) => {
          const o = JSON.parse(line) as { type: string; executionId?: string; updatedAt?: string }
          if (o.type === "execution" && withWrites.has(o.executionId!)) delete o.updatedAt
          return JSON.stringify(o)
        })
      expect(comparable(yield* exportText(all).pipe(Effect.provide(target.layer)))).toEqual(comparable(text))
    }))

  it.live("the copy resumes to the end in the new store (an interrupted and a failed execution)", () =>
    Effect.gen(function*() {
      const source = memoryWithState()
      const target = memoryWithState()
      const ids = yield* seed("resume").pipe(Effect.provide(source.layer))
      const text = yield* exportText([ids.failed, ids.paused]).pipe(Effect.provide(source.layer))
      yield* importText(text).pipe(Effect.provide(target.layer))
      yield* Effect.gen(function*() {
        const store = yield* Store
        const runnable = yield* Graph.compileCheckpointable(research(), { maxCheckpoints: 0 })
        // The interrupted one: the answer goes to the pending review, and web/papers (saved as task writes) do not run again.
        const final: Research = yield* runnable.resume(ids.paused, { value: { approved: true } })
        expect(final.notes).toEqual(["plan checkpoints", "web", "papers", "written"])
        expect(final.approved).toBe(true)
        expect(final.written).toEqual(new Date("2025-01-02T03:04:05.678Z"))
        // The failed one: retry re-arms it, resume finishes it.
        expect((yield* runnable.retry(ids.failed)).status).toBe("pending")
        const finished = yield* runnable.resume(ids.failed)
        expect(finished.notes).toEqual(["plan checkpoints", "web", "papers", "written"])
        for (const id of [ids.failed, ids.paused]) {
          expect(Option.getOrThrow(yield* store.getExecution(id)).status).toBe("done")
          const report = yield* Verify.verifyExecution(store, id)
          expect(report.problems).toEqual([])
        }
      }).pipe(Effect.provide(target.layer))
    }))

  it.live("an execution the target holds is refused (nothing written) unless force replaces it", () =>
    Effect.gen(function*() {
      const source = memoryWithState()
      const target = memoryWithState()
      const ids = yield* seed("again").pipe(Effect.provide(source.layer))
      const text = yield* exportText([ids.done]).pipe(Effect.provide(source.layer))
      yield* importText(text).pipe(Effect.provide(target.layer))
      const before = yield* snapshot(ids.done).pipe(Effect.provide(target.layer))
      const refused = yield* Effect.flip(importText(text).pipe(Effect.provide(target.layer)))
      expect((refused as CliError).message).toMatch(/already exists in memory:.*--force/)
      expect(yield* snapshot(ids.done).pipe(Effect.provide(target.layer))).toEqual(before)
      // --force: the target's copy is replaced by the input's (here: a different run under the same id).
      const other = memoryWithState()
      const plain = yield* Graph.compileCheckpointable(linear, { maxCheckpoints: 0 }).pipe(Effect.provide(other.layer))
      yield* plain.invoke({ ...input, topic: "other" }, { executionId: ids.done }).pipe(Effect.provide(other.layer))
      const otherText = yield* exportText([ids.done]).pipe(Effect.provide(other.layer))
      expect(yield* importText(otherText, true).pipe(Effect.provide(target.layer))).toEqual([ids.done])
      expect(yield* snapshot(ids.done).pipe(Effect.provide(target.layer))).toEqual(
        yield* snapshot(ids.done).pipe(Effect.provide(other.layer))
      )
    }))

  it.live("a truncated export is refused: the execution whose block has no execution line is not written at all", () =>
    Effect.gen(function*() {
      const source = memoryWithState()
      const target = memoryWithState()
      const ids = yield* seed("cut").pipe(Effect.provide(source.layer))
      const text = yield* exportText([ids.done, ids.failed]).pipe(Effect.provide(source.layer))
      const lines = text.trim().split("\n")
      const cut = lines.slice(0, -2).join("\n") + "\n"
      const error = yield* Effect.flip(importText(cut).pipe(Effect.provide(target.layer)))
      expect((error as CliError).message).toContain(`ends inside the block of execution "${ids.failed}"`)
      yield* Effect.gen(function*() {
        const store = yield* Store
        // The complete block before it was imported; nothing of the cut one.
        expect(Option.isSome(yield* store.getExecution(ids.done))).toBe(true)
        expect(yield* store.list(ids.failed)).toEqual([])
        expect(Option.isNone(yield* store.getExecution(ids.failed))).toBe(true)
      }).pipe(Effect.provide(target.layer))
    }))

  it.live("lines out of place are refused with their line number", () =>
    Effect.gen(function*() {
      const source = memoryWithState()
      const ids = yield* seed("bad").pipe(Effect.provide(source.layer))
      const a = (yield* exportText([ids.done]).pipe(Effect.provide(source.layer))).trim().split("\n")
      const b = (yield* exportText([ids.paused]).pipe(Effect.provide(source.layer))).trim().split("\n")
      const cases: ReadonlyArray<readonly [string, RegExp]> = [
        [[a[0], b[0]].join("\n"), /line 2: a checkpoint of execution .*-paused" inside the block of .*-done"/],
        [a[a.length - 1]!, /line 1: the execution line of .* has no checkpoints before it/],
        [[a[0], "{\"type\":\"nope\"}"].join("\n"), /line 2: unknown line type "nope"/],
        [[a[0], "{not json"].join("\n"), /line 2: not JSON/],
        [[a[0], a[a.length - 1]].join("\n"), /line 2: the execution line .* says its newest checkpoint is version 4/],
        [[b[0], JSON.stringify({ type: "writes", checkpointId: JSON.parse(a[0]!).id, taskId: "0000", writes: [] })].join("\n"), /line 2: writes of checkpoint/],
        [[a[0], a[0]].join("\n"), /line 2: checkpoint .* appears twice/],
        [`{"type":"checkpoint","id":"x"}`, /line 1: Stored checkpoint "x" is not a valid checkpoint/]
      ]
      for (const [text, expected] of cases) {
        const target = memoryWithState()
        const error = yield* Effect.flip(importText(text).pipe(Effect.provide(target.layer)))
        expect((error as CliError).message, text.slice(0, 80)).toMatch(expected)
        expect((yield* Effect.flatMap(Store, (s) => s.listExecutions()).pipe(Effect.provide(target.layer))).executions).toEqual([])
      }
    }))

  it.live("a running execution arrives pending, without the source's lease, so a worker can take it", () =>
    Effect.gen(function*() {
      const source = memoryWithState()
      const target = memoryWithState()
      const id = eid("leased")
      yield* Effect.gen(function*() {
        const store = yield* Store
        const runnable = yield* Graph.compileCheckpointable(linear)
        yield* runnable.start(input, { executionId: id })
        const claimed = yield* store.claim({ owner: "worker-1", ttl: "1 hour", limit: 10 })
        expect(claimed.map((r) => [r.executionId, r.status])).toEqual([[id, "running"]])
      }).pipe(Effect.provide(source.layer))
      const text = yield* exportText([id]).pipe(Effect.provide(source.layer))
      expect(JSON.parse(text.trim().split("\n").pop()!)).toMatchObject({ status: "running", lease: { owner: "worker-1" } })
      yield* importText(text).pipe(Effect.provide(target.layer))
      yield* Effect.gen(function*() {
        const store = yield* Store
        const record = Option.getOrThrow(yield* store.getExecution(id))
        expect(record.status).toBe("pending")
        expect(record.lease).toBeUndefined()
        expect((yield* store.claim({ owner: "worker-2", ttl: "1 minute", limit: 10 })).map((r) => r.executionId)).toEqual([id])
      }).pipe(Effect.provide(target.layer))
    }))
})

describe("verify (in process, Memory)", () => {
  const corruptDocument = (state: MemoryState, id: string) => state.documents.set(id, `{"id":${JSON.stringify(id)},"state":`)

  it.live("clean executions have no problems", () =>
    Effect.gen(function*() {
      const { layer } = memoryWithState()
      yield* Effect.gen(function*() {
        const ids = yield* seed("clean")
        const store = yield* Store
        for (const id of Object.values(ids)) {
          const report = yield* Verify.verifyExecution(store, id)
          expect(report.problems, id).toEqual([])
          expect(report.checkpoints, id).toBeGreaterThan(0)
        }
        // After a prune the oldest kept checkpoint's parent is gone: still fine.
        yield* store.prune(ids.failed, 2)
        expect((yield* Verify.verifyExecution(store, ids.failed)).problems).toEqual([])
      }).pipe(Effect.provide(layer))
    }))

  it.live("every corrupt checkpoint is reported by id, and the check goes on past it", () =>
    Effect.gen(function*() {
      const { layer, state } = memoryWithState()
      yield* Effect.gen(function*() {
        const ids = yield* seed("corrupt")
        const store = yield* Store
        const cps = yield* store.list(ids.failed)
        expect(cps).toHaveLength(4)
        corruptDocument(state, cps[1]!.id)
        corruptDocument(state, cps[3]!.id)
        const report = yield* Verify.verifyExecution(store, ids.failed)
        expect(report.checkpoints).toBe(2)
        expect(report.problems.map((p) => p.checkpointId)).toEqual([cps[1]!.id, cps[3]!.id])
        for (const p of report.problems) expect(p.message).toMatch(/^does not decode: /)
        // The other executions are fine.
        expect((yield* Verify.verifyExecution(store, ids.done)).problems).toEqual([])
      }).pipe(Effect.provide(layer))
    }))

  it.live("gaps, a broken parent chain and time going back are each reported", () =>
    Effect.gen(function*() {
      const { layer } = memoryWithState()
      yield* Effect.gen(function*() {
        const store = yield* Store
        const e = eid("damaged")
        const at = (ms: number) => new Date(Date.UTC(2025, 0, 1) + ms)
        const make = (version: number, extra: Partial<Checkpoint.MakeOptions>) =>
          Checkpoint.make({ executionId: e, version, nodeName: `n${version}`, state: { v: version }, next: ["x"], ...extra })
        const v1 = yield* make(1, { timestamp: at(1000) })
        const v2 = yield* make(2, { timestamp: at(2000), parentId: v1.id })
        const v4 = yield* make(4, { timestamp: at(3000), parentId: v2.id }) // gap: no version 3
        const v5 = yield* make(5, { timestamp: at(4000), parentId: v2.id }) // wrong parent
        const v6 = yield* make(6, { timestamp: at(3500), parentId: v5.id }) // time goes back
        const v7 = yield* make(7, { timestamp: at(5000) }) // no parent
        yield* store.saveMany([v1, v2, v4, v5, v6, v7])
        const report = yield* Verify.verifyExecution(store, e)
        const byVersion = (v: number) => report.problems.filter((p) => p.version === v).map((p) => p.message)
        expect(byVersion(4)).toEqual([expect.stringMatching(/version 4 follows version 2: versions are not contiguous/)])
        expect(byVersion(5)).toEqual([expect.stringMatching(/parentId is .* but it follows .*: the parent chain is broken/)])
        expect(byVersion(6)).toEqual([expect.stringMatching(/timestamp 2025-01-01T00:00:03.500Z is before the previous/)])
        expect(byVersion(7)).toEqual([expect.stringMatching(/has no parentId, but follows/)])
        expect(byVersion(2)).toEqual([])
        expect(report.checkpoints).toBe(6)
      }).pipe(Effect.provide(layer))
    }))
})

// -----------------------------------------------------------------------------
// The bin
// -----------------------------------------------------------------------------

let built: Built
beforeAll(async () => {
  built = await build()
}, 180_000)
afterAll(() => built?.remove())

/** The real bin, in a child process. */
const cli = (args: ReadonlyArray<string>, options?: RunOptions) => Effect.suspend(() => run(built.bin, args, options))
/** The same CLI in this process (no start-up time): for the checks that are not about the process. */
const cmd = (args: ReadonlyArray<string>, options?: RunOptions) => runInProcess(args, options)

/** The one line a failed command prints. */
const oneLineError = (result: Result) => {
  expect(result.status, result.stdout + result.stderr).toBe(1)
  const lines = result.stderr.trimEnd().split("\n")
  expect(lines, result.stderr).toHaveLength(1)
  expect(lines[0]).toMatch(/^error: /)
  return lines[0]!
}
const failsWith = (args: ReadonlyArray<string>, options?: RunOptions) => Effect.map(cmd(args, options), oneLineError)

const json = (result: Result) => {
  expect(result.status, result.stderr).toBe(0)
  return JSON.parse(result.stdout)
}

const tmp = (name: string) => path.join(os.tmpdir(), `ec-cli-${process.pid}-${name}`)

const commands: ReadonlyArray<readonly [string, ReadonlyArray<string>]> = [
  ["executions", ["--store", "--table", "--prefix", "--json", "--status", "--limit", "--cursor"]],
  ["list", ["--store", "--table", "--prefix", "--json", "<executionId>"]],
  ["show", ["--store", "--table", "--prefix", "--json", "<checkpointId>"]],
  ["writes", ["--store", "--table", "--prefix", "--json", "<checkpointId>"]],
  ["verify", ["--store", "--table", "--prefix", "--json", "<executionId>"]],
  ["prune", ["--store", "--table", "--prefix", "--json", "--keep", "<executionId>"]],
  ["clear", ["--store", "--table", "--prefix", "--json", "<executionId>"]],
  ["retry", ["--store", "--table", "--prefix", "--json", "<executionId>"]],
  ["export", ["--store", "--table", "--prefix", "<executionId>"]],
  ["import", ["--store", "--table", "--prefix", "--json", "--force"]],
  ["ping", ["--store", "--table", "--prefix", "--json"]]
]

describe("the bin, as a process", () => {
  it.live("--help lists every command with its summary, the store URLs and the exit codes, without colours in a pipe", () =>
    Effect.gen(function*() {
      const result = yield* cli(["--help"])
      expect(result.status).toBe(0)
      for (const [name] of commands) expect(result.stdout).toMatch(new RegExp(`^  ${name}\\s+\\S`, "m"))
      expect(result.stdout).toContain("CHECKPOINT_STORE")
      expect(result.stdout).toMatch(/memory:.*file:DIR.*sqlite:FILE.*postgres:\/\/.*redis:\/\//s)
      expect(result.stdout).toMatch(/Exit codes: 0 .* 1 .* 2 .* 130/)
      expect(result.stdout).not.toContain("\u001b[")
    }))

  it.live("exit codes: 2 for bad usage, 1 with one line for a failure, 0 when done; the store from CHECKPOINT_STORE", () =>
    Effect.gen(function*() {
      const usage = yield* cli(["prune", "x", "--store", "memory:"])
      expect(usage.status).toBe(2)
      expect(usage.stderr).toMatch(/Expected to find option: '--keep'/)
      expect(yield* Effect.map(cli(["executions"]), oneLineError)).toBe(
        "error: no store given: pass --store URL or set CHECKPOINT_STORE"
      )
      expect(yield* cli(["executions"], { env: { CHECKPOINT_STORE: "memory:" } })).toMatchObject({
        status: 0,
        stdout: "no executions\n",
        stderr: ""
      })
    }))

  it.live("import reads an export on stdin (into memory: it checks the file); a truncated one is a one-line error", () =>
    Effect.gen(function*() {
      const source = memoryWithState()
      const ids = yield* seed("stdin").pipe(Effect.provide(source.layer))
      const text = yield* exportText([ids.failed, ids.paused, ids.done]).pipe(Effect.provide(source.layer))
      const lines = text.trim().split("\n")
      const checkpoints = lines.filter((l) => l.startsWith("{\"type\":\"checkpoint\"")).length
      const ok = yield* cli(["import", "--store", "memory:"], { input: text })
      expect(ok.status, ok.stderr).toBe(0)
      expect(ok.stdout).toMatch(
        new RegExp(`^imported 3 executions \\(${checkpoints} checkpoints, \\d+ task writes\\) into memory: in \\d+ ms\\n$`)
      )
      expect(ok.stderr).toBe("")
      expect(yield* Effect.map(cli(["import", "--store", "memory:"], { input: lines.slice(0, -1).join("\n") }), oneLineError))
        .toMatch(/ends inside the block of execution ".*-done".*truncated.*\(2 executions before it were imported\)/)
      // The same in process: --json counts, a line that is not JSON, an empty input.
      const counts = json(yield* cmd(["import", "--store", "memory:", "--json"], { input: text }))
      expect(counts).toMatchObject({ executions: 3, checkpoints })
      expect(counts.writes).toBeGreaterThan(0)
      expect(yield* failsWith(["import", "--store", "memory:"], { input: "hello\n" })).toMatch(/^error: line 1: not JSON/)
      expect(yield* cmd(["import", "--store", "memory:"], { input: "" })).toMatchObject({ status: 0 })
    }))

  it.live("a progress bar on a terminal, none in a pipe", () =>
    Effect.gen(function*() {
      const source = memoryWithState()
      const ids = yield* seed("progress").pipe(Effect.provide(source.layer))
      const file = tmp("progress.jsonl")
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(file, { force: true })))
      fs.writeFileSync(file, yield* exportText([ids.failed, ids.paused, ids.done]).pipe(Effect.provide(source.layer)))
      const terminal = yield* Effect.suspend(() => runOnTerminal(built.bin, ["import", "--store", "memory:"], file))
      expect(terminal.status, terminal.stdout).toBe(0)
      expect(terminal.stdout).toMatch(/\r\u001b\[2Kimporting \d+ executions?, \d+ checkpoints/)
      expect(terminal.stdout).toMatch(/imported 3 executions/)
      const piped = yield* cli(["import", "--store", "memory:"], { input: fs.readFileSync(file, "utf8") })
      expect(piped.stderr).toBe("")
      expect(piped.stdout).not.toContain("\r")
    }).pipe(Effect.scoped))
})

describe("the commands", () => {
  it.live("--help of every command names every option and argument, with a description and an example", () =>
    Effect.forEach(commands, ([name, expected]) =>
      Effect.map(cmd([name, "--help"]), (result) => {
        expect(result.status, name).toBe(0)
        expect(result.stdout, name).toMatch(/DESCRIPTION\n\n\S.*\n\n\S/)
        expect(result.stdout, name).toMatch(new RegExp(`Example: effect-checkpoint ${name} `))
        for (const option of expected) expect(result.stdout, `${name} ${option}`).toContain(option)
        // Every option is described: its name, its type, what it does (and whether it is optional).
        const options = result.stdout.slice(result.stdout.indexOf("OPTIONS"))
        for (const block of options.split(/\n\n(?=\S)/).slice(1)) {
          expect(block.split("\n").filter((l) => l.trim() !== "").length, `${name}: ${block}`).toBeGreaterThanOrEqual(3)
        }
      })))

  it.live("bad usage exits with 2 and says why", () =>
    Effect.forEach(
      [
        [["bogus"], /Invalid subcommand/],
        [["list", "--store", "memory:"], /Missing argument <executionId>/],
        [["executions", "--store", "memory:", "--limit", "many"], /'many' is not a integer/],
        [["executions", "--store", "memory:", "--status", "asleep"], /Expected one of the following cases: pending/],
        [["prune", "x", "--store", "memory:"], /Expected to find option: '--keep'/],
        [["list", "a", "b", "--store", "memory:"], /unknown argument: 'b'/]
      ] as const,
      ([args, message]) =>
        Effect.map(cmd(args), (result) => {
          expect(result.status, args.join(" ")).toBe(2)
          expect(result.stderr + result.stdout, args.join(" ")).toMatch(message)
        })
    ))

  it.live("the store comes from --store or CHECKPOINT_STORE; a URL that names no store is a one-line error", () =>
    Effect.gen(function*() {
      expect(yield* cmd(["executions"], { env: { CHECKPOINT_STORE: "memory:" } })).toMatchObject({ status: 0, stdout: "no executions\n" })
      expect((yield* cmd(["ping", "-s", "memory:"])).stdout).toMatch(/^ok: memory: answered in \d+ ms\n$/)
      expect(json(yield* cmd(["ping", "-s", "memory:", "--json"]))).toMatchObject({ ok: true, store: "memory:" })
      expect(yield* failsWith(["ping", "--store", "mongodb://u:pw-123456@h/db"])).toBe(
        "error: unknown store URL scheme \"mongodb:\": use one of memory:, file:DIR, sqlite:FILE, postgres://…, redis://…"
      )
      const checks: ReadonlyArray<readonly [ReadonlyArray<string>, RegExp]> = [
        [["ping", "--store", "./checkpoints.db"], /the store URL has no scheme/],
        [["ping", "--store", "file:"], /needs a directory/],
        [["ping", "--store", "sqlite:"], /needs a file/],
        [["ping", "--store", "memory:x"], /takes nothing after/],
        [["ping", "--store", "memory:", "--table", "t"], /--table applies to sqlite: and postgres:\/\/ stores, not to memory/],
        [["ping", "--store", "redis://127.0.0.1:1", "--table", "t"], /not to redis/],
        [["ping", "--store", "sqlite:x.db", "--prefix", "p:"], /--prefix applies to redis:\/\/ stores/]
      ]
      for (const [args, message] of checks) expect(yield* failsWith(args), args.join(" ")).toMatch(message)
    }))

  it.live("an unknown id or a bad id is a one-line error", () =>
    Effect.forEach(
      [
        [["list", "run-1"], "error: execution \"run-1\" not found in memory:"],
        [["show", "cp-1"], "error: checkpoint \"cp-1\" not found in memory:"],
        [["writes", "cp-1"], "error: checkpoint \"cp-1\" not found in memory:"],
        [["verify", "run-1"], "error: execution \"run-1\" not found in memory:"],
        [["prune", "run-1", "--keep", "1"], "error: execution \"run-1\" not found in memory:"],
        [["clear", "run-1"], "error: execution \"run-1\" not found in memory:"],
        [["retry", "run-1"], "error: execution \"run-1\" not found in memory:"],
        [["export", "run-1"], "error: execution \"run-1\" not found in memory:"],
        [["list", "../etc"], /^error: Invalid ExecutionId "\.\.\/etc": /],
        [["prune", "run-1", "--keep", "-1"], "error: --keep must be 0 or more"],
        [["executions", "--limit", "0"], "error: --limit must be at least 1"]
      ] as const,
      ([args, expected]) =>
        Effect.map(failsWith([...args, "--store", "memory:"]), (line) =>
          typeof expected === "string" ? expect(line).toBe(expected) : expect(line).toMatch(expected))
    ))
})

/** Waits (bounded) until a Redis on `port` answers PING (with anything: `-NOAUTH` is an answer). */
const waitForRedis = (port: number) =>
  Effect.async<boolean>((resume) => {
    const socket = net.connect(port, "127.0.0.1")
    const done = (up: boolean) => {
      socket.destroy()
      resume(Effect.succeed(up))
    }
    socket.setTimeout(500, () => done(false))
    socket.on("error", () => done(false))
    socket.on("data", () => done(true))
    socket.on("connect", () => socket.write("PING\r\n"))
  }).pipe(
    Effect.filterOrFail((up) => up),
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("10 seconds"))),
    Effect.orDieWith(() => new Error(`no Redis answers on port ${port}`))
  )

describe("encrypted stores (CHECKPOINT_KEY)", () => {
  const key = new Uint8Array(32).map((_, i) => i * 7 + 1)
  const base64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64")
  const files: Array<string> = []
  const fresh = (name: string) => {
    const file = tmp(`${name}-${files.length}.db`)
    files.push(file)
    return file
  }
  afterAll(() => {
    for (const f of files) for (const suffix of ["", "-wal", "-shm"]) fs.rmSync(f + suffix, { force: true })
  })
  const sealed = (filename: string, k: Uint8Array = key) =>
    SqliteStore.layer({ filename }).pipe(CheckpointStore.encrypted({ key: Redacted.make(k) }))
  /** A linear run in an encrypted SQLite file; its newest checkpoint. */
  const seeded = (filename: string) =>
    Effect.gen(function*() {
      const runnable = yield* Graph.compileCheckpointable(linear, { maxCheckpoints: 0 })
      yield* runnable.invoke(input, { executionId: eid("secret-run") })
      return Option.getOrThrow(yield* (yield* Store).latest(eid("secret-run")))
    }).pipe(Effect.provide(sealed(filename)))

  it.live("with the key every command reads the states in clear; without it they are shown sealed; a wrong key fails on one line", () =>
    Effect.gen(function*() {
      const file = fresh("read")
      const newest = yield* seeded(file)
      const store = ["--store", `sqlite:${file}`]
      const env = { CHECKPOINT_KEY: base64(key) }
      const clear = json(yield* cmd(["show", newest.id, "--json", ...store], { env }))
      expect(clear.state).toEqual(newest.state)
      expect(JSON.stringify(clear.state)).not.toContain("$sealed")
      const raw = json(yield* cmd(["show", newest.id, "--json", ...store]))
      expect(JSON.stringify(raw.state)).toContain("$sealed")
      const verified = yield* cmd(["verify", "--json", ...store], { env })
      expect(json(verified).ok).toBe(true)
      const wrongKey = { CHECKPOINT_KEY: base64(key.map((b) => b ^ 0xff)) }
      expect(yield* failsWith(["show", newest.id, ...store], { env: wrongKey })).toContain(newest.id)
      const report = yield* cmd(["verify", "--json", ...store], { env: wrongKey })
      expect(report.status).toBe(1)
      expect(JSON.parse(report.stdout).ok).toBe(false)
      // After a rotation the old key is a previous key: the old values still open.
      const rotated = { CHECKPOINT_KEY: base64(key.map((b) => b ^ 0x55)), CHECKPOINT_PREVIOUS_KEYS: `,${base64(key)}` }
      expect(json(yield* cmd(["show", newest.id, "--json", ...store], { env: rotated })).state).toEqual(newest.state)
    }))

  it.live("export reads in clear and import seals what it writes", () =>
    Effect.gen(function*() {
      const from = fresh("from")
      const to = fresh("to")
      const newest = yield* seeded(from)
      const env = { CHECKPOINT_KEY: base64(key) }
      const exported = yield* cmd(["export", "secret-run", "--store", `sqlite:${from}`], { env })
      expect(exported.status, exported.stderr).toBe(0)
      expect(exported.stdout).not.toContain("$sealed")
      expect(json(yield* cmd(["import", "--json", "--store", `sqlite:${to}`], { env, input: exported.stdout })).checkpoints)
        .toBeGreaterThan(0)
      const plain = yield* Effect.flatMap(Store, (s) => s.load(newest.id)).pipe(Effect.provide(SqliteStore.layer({ filename: to })))
      expect(JSON.stringify(plain.state)).toContain("$sealed")
      const opened = yield* Effect.flatMap(Store, (s) => s.load(newest.id)).pipe(Effect.provide(sealed(to)))
      expect(opened.state).toEqual(newest.state)
    }))

  it.live("a malformed key is one line naming the variable, never its value", () =>
    Effect.gen(function*() {
      const store = ["ping", "--store", "memory:"]
      for (
        const env of [
          { CHECKPOINT_KEY: "not-base64-at-all!!" },
          { CHECKPOINT_KEY: base64(key.slice(0, 16)) },
          { CHECKPOINT_KEY: base64(key), CHECKPOINT_PREVIOUS_KEYS: "c2hvcnQ=" }
        ]
      ) {
        const line = yield* failsWith(store, { env })
        expect(line).toMatch(/CHECKPOINT_(PREVIOUS_)?KEYS? must be a 32-byte key in base64/)
        for (const value of Object.values(env)) expect(line).not.toContain(value)
      }
      expect(yield* failsWith(store, { env: { CHECKPOINT_PREVIOUS_KEYS: base64(key) } })).toContain("CHECKPOINT_KEY is not")
    }))
})

describe("the bin never prints a password", () => {
  const secret = "S3cret-Pw_42"

  it.live("a closed port: postgres:// and redis:// give one line, without the password (also from CHECKPOINT_STORE, also percent-encoded)", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const encoded = "p%40ss%2Fw0rd-xyz"
      const urls = [
        `postgres://app:${secret}@127.0.0.1:${port}/db`,
        `postgresql://app:${encoded}@127.0.0.1:${port}/db`,
        `postgres://app@127.0.0.1:${port}/db?password=${secret}`,
        `redis://:${secret}@127.0.0.1:${port}/0`,
        `redis://default:${encoded}@127.0.0.1:${port}`
      ]
      const check = (url: string, r: Result) => {
        const line = oneLineError(r)
        for (const s of [secret, encoded, decodeURIComponent(encoded)]) expect(r.stdout + r.stderr, url).not.toContain(s)
        expect(line, url).toMatch(/connect|ECONNREFUSED|refused/i)
      }
      // The bin, in a process: from --store and from CHECKPOINT_STORE.
      check(urls[0]!, yield* cli(["ping", "--store", urls[0]!]))
      check(urls[3]!, yield* cli(["ping", "--store", urls[3]!]))
      check(urls[1]!, yield* cli(["executions"], { env: { CHECKPOINT_STORE: urls[1]! } }))
      // Every form, in process.
      for (const url of urls) {
        check(url, yield* cmd(["ping", "--store", url]))
        check(url, yield* cmd(["list", "run-1"], { env: { CHECKPOINT_STORE: url } }))
      }
      // A URL that does not parse still keeps its password to itself.
      const bad = yield* cmd(["ping", "--store", `postgres://app:${secret}@@[bad`])
      expect(oneLineError(bad)).toMatch(/not a valid postgres URL: postgres:\/\/app:\*\*\*@/)
      expect(bad.stdout + bad.stderr).not.toContain(secret)
      // Nor does a URL typed where no argument goes (@effect/cli repeats it in its message).
      const misplaced = yield* cmd(["executions", `postgres://app:${secret}@db/app`, "--store", "memory:"])
      expect(misplaced.status).toBe(2)
      expect(misplaced.stderr).toContain("postgres://app:***@db/app")
      expect(misplaced.stdout + misplaced.stderr).not.toContain(secret)
    }), 120_000)

  it.live("a wrong password to a Redis that requires one: one line, without the password; the right one answers", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ec-cli-redis-auth-${process.pid}-`))
      const good = "right-Passw0rd-1"
      const server = spawn("redis-server", [
        "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", dir, "--requirepass", good
      ], { stdio: "ignore" })
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          server.kill("SIGKILL")
          fs.rmSync(dir, { recursive: true, force: true })
        })
      )
      yield* waitForRedis(port)
      const wrong = "wrong-Secret-99"
      const check = (r: Result) => {
        const line = oneLineError(r)
        expect(r.stdout + r.stderr).not.toContain(wrong)
        expect(line).toMatch(/WRONGPASS|invalid username-password|NOAUTH|auth/i)
      }
      check(yield* cli(["ping", "--store", `redis://:${wrong}@127.0.0.1:${port}`], { timeout: 30_000 }))
      check(yield* cmd(["executions", "--store", `redis://default:${wrong}@127.0.0.1:${port}/0`]))
      expect(yield* cmd(["ping", "--store", `redis://:${good}@127.0.0.1:${port}`])).toMatchObject({ status: 0 })
    }).pipe(Effect.scoped), 120_000)
})

// -----------------------------------------------------------------------------
// The bin against real stores
// -----------------------------------------------------------------------------

describe.each(realStores)("the bin against the %s store", (_name, makeStore) => {
  it.live("every command on executions seeded by graph runs; verify finds a corrupt checkpoint", () =>
    Effect.gen(function*() {
      const real: RealStore = yield* makeStore()
      yield* Effect.addFinalizer(() => Effect.orDie(real.cleanup))
      const ids = yield* seed(`cli-${real.name}`).pipe(Effect.provide(real.layer))
      // In process for the details; the bin itself (a process) for executions, verify, export | import.
      const at = (...args: ReadonlyArray<string>) => cmd([...args, ...real.args])
      const bin = (...args: ReadonlyArray<string>) => cli([...args, ...real.args])

      // executions: a table, filters, pages, JSON.
      const table = yield* bin("executions")
      expect(table.status, table.stderr).toBe(0)
      expect(table.stdout).toMatch(/^EXECUTION\s+STATUS\s+VERSION\s+UPDATED\s+ATTEMPTS\s+NOTE\n/)
      expect(table.stdout).toMatch(new RegExp(`${ids.failed}\\s+failed\\s+4\\s+\\S+\\s+0\\s+WriteFailed: the printer is on fire`))
      expect(table.stdout).toMatch(new RegExp(`${ids.paused}\\s+interrupted\\s+3\\s`))
      expect(table.stdout).toMatch(new RegExp(`${ids.done}\\s+done\\s+4\\s`))
      const failedOnly = json(yield* at("executions", "--status", "failed", "--json"))
      expect(failedOnly.executions.map((r: { executionId: string }) => r.executionId)).toEqual([ids.failed])
      const page = json(yield* at("executions", "--limit", "2", "--json"))
      expect(page.executions).toHaveLength(2)
      const rest = json(yield* at("executions", "--limit", "2", "--cursor", page.cursor, "--json"))
      expect([...page.executions, ...rest.executions].map((r: { executionId: string }) => r.executionId).sort()).toEqual(
        [ids.done, ids.failed, ids.paused].sort()
      )

      // list and show.
      const checkpoints = yield* Effect.flatMap(Store, (s) => s.list(ids.failed)).pipe(Effect.provide(real.layer))
      const listed = yield* at("list", ids.failed)
      expect(listed.status, listed.stderr).toBe(0)
      expect(listed.stdout.split("\n")[0]).toMatch(/^VERSION\s+CHECKPOINT\s+NODE\s+NEXT\s+TIMESTAMP$/)
      expect(listed.stdout).toMatch(new RegExp(`^2\\s+${checkpoints[1]!.id}\\s+plan\\s+web,papers\\s+`, "m"))
      expect(listed.stdout).toMatch(new RegExp(`^3\\s+${checkpoints[2]!.id}\\s+web\\+papers\\s+review\\s+`, "m"))
      expect(json(yield* at("list", ids.failed, "--json")).map((c: { version: number }) => c.version)).toEqual([1, 2, 3, 4])
      const shown = yield* at("show", checkpoints[2]!.id)
      expect(shown.status, shown.stderr).toBe(0)
      expect(shown.stdout).toMatch(
        new RegExp(`^checkpoint\\s+${checkpoints[2]!.id}\\nexecution\\s+${ids.failed}\\nversion\\s+3\\nnode\\s+web\\+papers\\n`)
      )
      // (PostgreSQL keeps JSON values, not text: keys in JSONB's order.)
      expect(shown.stdout).toMatch(/\nstate:\n\{\n  "/)
      expect(shown.stdout).toContain(`\n  "topic": "checkpoints",`)
      expect(shown.stdout).toMatch(/\n  "notes": \[\n    "plan checkpoints",\n    "web",\n    "papers"\n  \],?\n/)
      expect(json(yield* at("show", checkpoints[2]!.id, "--json"))).toEqual(JSON.parse(yield* Checkpoint.encode(checkpoints[2]!)))

      // writes: the fan-out's two task updates, and the interrupt's question and answer.
      const writes = yield* at("writes", checkpoints[1]!.id)
      expect(writes.stdout).toMatch(/^TASK\s+KEY\s+VALUE\n0000\s+update\s+\{"fields":\{"notes":\["web"\]\}\}\n0001\s+update\s+/)
      expect(json(yield* at("writes", checkpoints[2]!.id, "--json")).map((w: { key: string }) => w.key)).toEqual(["interrupt:0", "resume:0"])
      expect((yield* at("writes", checkpoints[0]!.id)).stdout).toBe("no task writes\n")

      // verify: all well.
      const verified = yield* bin("verify")
      expect(verified.status, verified.stdout + verified.stderr).toBe(0)
      expect(verified.stdout).toMatch(/verified 3 executions: all ok\n$/)

      // retry: a failed execution is re-armed; anything else is refused.
      expect(json(yield* at("retry", ids.failed, "--json"))).toMatchObject({ executionId: ids.failed, status: "pending" })
      expect(yield* failsWith(["retry", ids.done, ...real.args])).toMatch(/is done, not failed/)

      // export → import into memory: (which checks the whole file).
      const exported = yield* bin("export")
      expect(exported.status, exported.stderr).toBe(0)
      expect(exported.stderr).toBe("")
      expect(json(yield* cli(["import", "--store", "memory:", "--json"], { input: exported.stdout }))).toMatchObject({
        executions: 3,
        checkpoints: 11
      })
      // Exactly what the export gives in process.
      expect((yield* at("export")).stdout).toBe(exported.stdout)

      // prune.
      expect(json(yield* at("prune", ids.done, "--keep", "2", "--json"))).toEqual({ executionId: ids.done, removed: 2, keep: 2 })
      expect(json(yield* at("list", ids.done, "--json")).map((c: { version: number }) => c.version)).toEqual([3, 4])

      // A corrupt checkpoint: verify finds it by id, exits with 1, and the others are still fine.
      const paused = yield* Effect.flatMap(Store, (s) => s.list(ids.paused)).pipe(Effect.provide(real.layer))
      yield* real.corrupt(paused[1]!.id)
      const broken = yield* bin("verify")
      expect(broken.status, broken.stdout + broken.stderr).toBe(1)
      expect(broken.stdout).toMatch(new RegExp(`${ids.paused}\\s+\\d+\\s+1 problem\\n`))
      expect(broken.stdout).toContain(`  - checkpoint ${paused[1]!.id}`)
      expect(broken.stdout).toMatch(/does not decode/)
      expect(broken.stdout).toMatch(/verified 3 executions: 1 with problems\n$/)
      const brokenJson = yield* at("verify", ids.paused, "--json")
      expect(brokenJson.status).toBe(1)
      expect(JSON.parse(brokenJson.stdout)).toMatchObject({
        ok: false,
        executions: [{ executionId: ids.paused, ok: false, problems: [{ checkpointId: paused[1]!.id }] }]
      })
      expect((yield* at("verify", ids.failed)).status).toBe(0)
      // Reading it is a one-line error that points at verify.
      expect(yield* failsWith(["show", paused[1]!.id, ...real.args])).toMatch(/run verify for a full report/)

      // clear.
      expect(json(yield* at("clear", ids.paused, "--json"))).toEqual({ executionId: ids.paused, cleared: true })
      expect(yield* failsWith(["list", ids.paused, ...real.args])).toMatch(/not found/)
      expect((yield* at("verify")).status).toBe(0)
    }).pipe(Effect.scoped), 180_000)
})

describe("SQLite → PostgreSQL", () => {
  it.live("export from SQLite, import into PostgreSQL, and the runs finish there", () =>
    Effect.gen(function*() {
      const sqlite = yield* sqliteStore()
      const pg = yield* postgresStore()
      yield* Effect.addFinalizer(() => Effect.orDie(Effect.zipRight(sqlite.cleanup, pg.cleanup)))
      const ids = yield* seed("move").pipe(Effect.provide(sqlite.layer))
      const exported = yield* cli(["export", ids.paused, ids.failed, ...sqlite.args])
      expect(exported.status, exported.stderr).toBe(0)
      const imported = yield* cli(["import", ...pg.args], { input: exported.stdout })
      expect(imported.status, imported.stderr).toBe(0)
      expect(imported.stdout).toMatch(/^imported 2 executions \(7 checkpoints, \d+ task writes\) into postgres:\/\/postgres@127\.0\.0\.1:5432\/test/)
      expect((yield* cli(["verify", ...pg.args])).status).toBe(0)
      // Exactly the same checkpoints on both sides.
      for (const id of [ids.paused, ids.failed]) {
        const a = yield* snapshot(id).pipe(Effect.provide(sqlite.layer))
        const b = yield* snapshot(id).pipe(Effect.provide(pg.layer))
        // Equal JSON values (PostgreSQL keeps keys in JSONB's order).
        expect(b.documents.map((d) => JSON.parse(d))).toEqual(a.documents.map((d) => JSON.parse(d)))
        expect(b.writes).toEqual(a.writes)
        expect(b.record).toEqual(a.record)
      }
      // Resume there: the interrupted run takes its answer, the failed one is retried; both finish.
      yield* Effect.gen(function*() {
        const store = yield* Store
        const runnable = yield* Graph.compileCheckpointable(research(), { maxCheckpoints: 0 })
        const final = yield* runnable.resume(ids.paused, { value: { approved: true } })
        expect(final.notes).toEqual(["plan checkpoints", "web", "papers", "written"])
        yield* runnable.retry(ids.failed)
        expect((yield* runnable.resume(ids.failed)).approved).toBe(true)
        for (const id of [ids.paused, ids.failed]) {
          const record = Option.getOrThrow(yield* store.getExecution(id))
          expect(record.status).toBe("done")
          expect((yield* store.list(id)).map((c) => c.nodeName)).toEqual(["__input__", "plan", "web+papers", "review", "write"])
        }
      }).pipe(Effect.provide(pg.layer))
      // The source is untouched.
      expect(Option.getOrThrow(yield* Effect.flatMap(Store, (s) => s.getExecution(ids.paused)).pipe(Effect.provide(sqlite.layer))).status)
        .toBe("interrupted")
    }).pipe(Effect.scoped), 180_000)
})
