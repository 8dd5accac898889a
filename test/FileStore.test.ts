import { describe, expect, it } from "@effect/vitest"
import {
  Config,
  ConfigError,
  ConfigProvider,
  Context,
  Effect,
  Either,
  FastCheck,
  Fiber,
  Layer,
  Option,
  TestClock
} from "effect"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Checkpoint from "../src/Checkpoint.js"
import * as CheckpointBackend from "../src/CheckpointBackend.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as FileStore from "../src/layers/File.js"
import * as MemoryStore from "../src/layers/Memory.js"
import { hashOf } from "../src/internal/packing.js"
import { conformance, freshExecution, hostileIds, mk, StoreTestKit, view } from "../src/testing.js"

/** A temp directory owned by this test file, removed when the scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-checkpoint-file-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** The blob files of an execution: name → size. */
const blobFiles = (dir: string, executionId: string): Map<string, number> => {
  const blobs = path.join(dir, "executions", executionId, "blobs")
  if (!fs.existsSync(blobs)) return new Map()
  return new Map(fs.readdirSync(blobs).map((name) => [name, fs.statSync(path.join(blobs, name)).size]))
}

const kitFor = (dir: string) =>
  Layer.succeed(StoreTestKit, {
    corrupt: (cp) =>
      Effect.sync(() => fs.writeFileSync(path.join(dir, "checkpoints", `${cp.id}.json`), "{\"id\": \"truncated")),
    blobStats: (executionId) =>
      Effect.sync(() => {
        const files = [...blobFiles(dir, executionId).values()]
        return { count: files.length, bytes: files.reduce((a, b) => a + b, 0) }
      })
  })

/** A fresh store in a fresh temp directory, plus its corruption kit. */
const fileUnderTest = Layer.unwrapScoped(
  Effect.map(tempDir, (dir) => Layer.merge(FileStore.layer({ directory: path.join(dir, "store") }), kitFor(path.join(dir, "store"))))
)

conformance("File", fileUnderTest, { blobs: true })

const store = CheckpointStore.CheckpointStore

/** Runs `body` with a store in a fresh directory `dir/store`. */
const withStore = <A, E>(
  body: (dir: string) => Effect.Effect<A, E, CheckpointStore.CheckpointStore>
) =>
  Effect.scoped(Effect.flatMap(tempDir, (root) => {
    const dir = path.join(root, "store")
    return body(dir).pipe(Effect.provide(FileStore.layer({ directory: dir })))
  }))

/** Every file and link under `dir`, relative, sorted. */
const tree = (dir: string): Array<string> =>
  (fs.readdirSync(dir, { recursive: true }) as Array<string>).sort()

describe("FileStore", () => {
  it.live("creates its directory, nested and missing, and lays files out as documented", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        expect(fs.statSync(dir).isDirectory()).toBe(true)
        const e = yield* freshExecution()
        const cp = yield* mk(e, 7)
        yield* s.save(cp)
        const doc = path.join(dir, "checkpoints", `${cp.id}.json`)
        const slot = path.join(dir, "executions", e, "0000000007")
        expect(JSON.parse(fs.readFileSync(doc, "utf8"))).toMatchObject({ id: cp.id, executionId: e, version: 7 })
        expect(fs.readlinkSync(slot)).toBe(`../../checkpoints/${cp.id}.json`)
        expect(JSON.parse(fs.readFileSync(path.join(dir, "executions", e, "record.json"), "utf8"))).toEqual({
          executionId: e,
          latestVersion: 7,
          latestCheckpointId: cp.id,
          updatedAt: cp.timestamp.toISOString(),
          status: "pending",
          attempts: 0
        })
        yield* s.saveWrites(cp.id, "task-0", [{ key: "update", value: { n: 1 } }, { key: "step:a", value: "x" }])
        yield* s.saveWrites(cp.id, "task-0", [{ key: "step:b", value: [1] }])
        const taskDir = path.join(dir, "writes", cp.id, "task-0")
        expect(fs.readdirSync(taskDir).sort()).toEqual(["0000000001-update.json", "0000000002-step:a.json", "0000000003-step:b.json"])
        expect(JSON.parse(fs.readFileSync(path.join(taskDir, "0000000001-update.json"), "utf8"))).toEqual({ n: 1 })
        yield* s.updateExecution(e, { lease: { owner: "worker-1", ttl: "1 minute" } })
        const record = JSON.parse(fs.readFileSync(path.join(dir, "executions", e, "record.json"), "utf8"))
        expect(record.lease.owner).toBe("worker-1")
        expect(Number.isNaN(Date.parse(record.lease.expiresAt))).toBe(false)
        // Nothing is left behind: no temp file, no lock.
        expect(fs.readdirSync(path.join(dir, "tmp"))).toEqual([])
        expect(fs.readdirSync(path.join(dir, "locks"))).toEqual([])
      })
    ))

  it.live("a half-written temp file left by a crash is never listed or loaded, and stale ones are removed at start", () =>
    Effect.scoped(Effect.gen(function*() {
      const root = yield* tempDir
      const dir = path.join(root, "store")
      const e = yield* freshExecution()
      const cp = yield* mk(e, 1)
      const run = <A, E>(eff: Effect.Effect<A, E, CheckpointStore.CheckpointStore>) =>
        eff.pipe(Effect.provide(FileStore.layer({ directory: dir })))
      yield* run(Effect.flatMap(store, (s) => s.save(cp)))
      // A crash mid-write: a truncated temp file, never linked into place.
      const stale = path.join(dir, "tmp", "crashed-long-ago.tmp")
      const fresh = path.join(dir, "tmp", "writing-right-now.tmp")
      fs.writeFileSync(stale, "{\"id\":\"half")
      fs.writeFileSync(fresh, "{\"id\":\"half")
      const old = new Date(Date.now() - 60 * 60 * 1000)
      fs.utimesSync(stale, old, old)
      const listed = yield* run(Effect.flatMap(store, (s) => s.list(e)))
      expect(listed.map(view)).toEqual([view(cp)])
      expect(fs.existsSync(stale)).toBe(false)
      expect(fs.existsSync(fresh)).toBe(true)
    })))

  it.live("left-overs of a crash between two steps: a slot without its document is skipped, a document without a slot is not listed", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const cps = yield* Effect.forEach([1, 2, 3], (v) => mk(e, v))
        yield* s.saveMany(cps)
        // Crash during delete/clear after the document went and before the slot did.
        fs.rmSync(path.join(dir, "checkpoints", `${cps[1]!.id}.json`))
        expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 3])
        expect((yield* s.list(e, { afterVersion: 1, limit: 1 })).map((c) => c.version)).toEqual([3])
        fs.rmSync(path.join(dir, "checkpoints", `${cps[2]!.id}.json`))
        expect(Option.map(yield* s.latest(e), (c) => c.version)).toEqual(Option.some(1))
        // Crash during save after the document was published and before its slot was made.
        const orphan = yield* mk(e, 4)
        fs.writeFileSync(path.join(dir, "checkpoints", `${orphan.id}.json`), yield* Checkpoint.encode(orphan))
        expect((yield* s.list(e)).map((c) => c.version)).toEqual([1])
        expect(view(yield* s.load(orphan.id))).toEqual(view(orphan))
        // The execution goes on: version 2 can be saved again into its freed slot after clearing the dangling link.
        expect(yield* s.prune(e, 0)).toBe(3)
        expect(yield* s.list(e)).toEqual([])
      })
    ))

  it.live("foreign or misplaced files fail with CheckpointDecodeError naming the checkpoint", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const other = yield* freshExecution("other")
        const a = yield* mk(e, 1)
        const b = yield* mk(other, 1)
        yield* s.saveMany([a, b])
        // Valid JSON that is not a checkpoint.
        fs.writeFileSync(path.join(dir, "checkpoints", `${a.id}.json`), JSON.stringify({ hello: "world" }))
        expect(yield* Effect.flip(s.load(a.id))).toMatchObject({ _tag: "CheckpointDecodeError", id: a.id })
        expect(yield* Effect.flip(s.list(e))).toMatchObject({ _tag: "CheckpointDecodeError", id: a.id })
        // Another checkpoint's document copied over this one's.
        fs.copyFileSync(path.join(dir, "checkpoints", `${b.id}.json`), path.join(dir, "checkpoints", `${a.id}.json`))
        const mismatch = yield* Effect.flip(s.load(a.id))
        expect(mismatch).toMatchObject({ _tag: "CheckpointDecodeError", id: a.id })
        expect(mismatch.message).toContain(b.id)
        expect(yield* Effect.flip(s.latest(e))).toMatchObject({ _tag: "CheckpointDecodeError" })
        // An empty file.
        fs.writeFileSync(path.join(dir, "checkpoints", `${a.id}.json`), "")
        expect(yield* Effect.flip(s.load(a.id))).toMatchObject({ _tag: "CheckpointDecodeError", id: a.id })
        // listExecutions answers from the records, which are fine: it reads no document.
        expect((yield* s.listExecutions()).executions.map((x) => x.executionId).sort()).toEqual([e, other].sort())
      })
    ))

  it.live("hostile ids never make it read or write outside its directory", () =>
    Effect.scoped(Effect.gen(function*() {
      const root = yield* tempDir
      const dir = path.join(root, "store")
      const sentinel = path.join(root, "outside")
      fs.mkdirSync(sentinel)
      fs.writeFileSync(path.join(root, "x.json"), "{\"secret\":true}")
      yield* Effect.gen(function*() {
        const s = yield* store
        const good = yield* mk(yield* freshExecution(), 1)
        for (const raw of [...hostileIds, "../outside/x", "../x", "../../x"]) {
          const id = raw as Checkpoint.CheckpointId
          const executionId = raw as Checkpoint.ExecutionId
          expect((yield* Effect.flip(s.save(new Checkpoint.Checkpoint({ ...good, id }, true))))._tag).toBe("InvalidIdentifier")
          expect((yield* Effect.flip(s.save(new Checkpoint.Checkpoint({ ...good, executionId }, true))))._tag).toBe(
            "InvalidIdentifier"
          )
          expect((yield* Effect.flip(s.load(id)))._tag).toBe("InvalidIdentifier")
          expect((yield* Effect.flip(s.clear(executionId)))._tag).toBe("InvalidIdentifier")
          expect((yield* Effect.flip(s.delete(id)))._tag).toBe("InvalidIdentifier")
        }
      }).pipe(Effect.provide(FileStore.layer({ directory: dir })))
      expect(tree(root)).toEqual([
        "outside",
        "store",
        "store/checkpoints",
        "store/executions",
        "store/locks",
        "store/tmp",
        "store/writes",
        "x.json"
      ])
      expect(fs.readFileSync(path.join(root, "x.json"), "utf8")).toBe("{\"secret\":true}")
    })))

  it.live("two stores on one directory see each other and share its conflicts", () =>
    Effect.scoped(Effect.gen(function*() {
      const root = yield* tempDir
      const dir = path.join(root, "shared")
      const one = yield* Layer.build(FileStore.layer({ directory: dir }))
      const two = yield* Layer.build(FileStore.layer({ directory: dir }))
      const s1 = Context.get(one, store)
      const s2 = Context.get(two, store)
      const e = yield* freshExecution()
      const cp = yield* mk(e, 1)
      yield* s1.save(cp)
      expect(view(yield* s2.load(cp.id))).toEqual(view(cp))
      expect((yield* Effect.flip(s2.save(yield* mk(e, 1))))._tag).toBe("CheckpointConflict")
      const rivals = yield* Effect.forEach([s1, s2, s1, s2], (s, i) => Effect.either(Effect.flatMap(mk(e, 2, { state: i }), s.save)), {
        concurrency: "unbounded"
      })
      expect(rivals.filter((r) => r._tag === "Right").length).toBe(1)
    })))

  it.live("a path that is not a directory fails the layer with CheckpointStoreError", () =>
    Effect.scoped(Effect.gen(function*() {
      const root = yield* tempDir
      const file = path.join(root, "a-file")
      fs.writeFileSync(file, "not a directory")
      const error = yield* Effect.flip(Effect.provide(store, FileStore.layer({ directory: file })))
      expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "file", operation: "open" })
    })))

  it.live("layerConfig reads its directory from CHECKPOINT_DIR", () =>
    Effect.scoped(Effect.gen(function*() {
      const root = yield* tempDir
      const dir = path.join(root, "from-config")
      const e = yield* freshExecution()
      yield* Effect.flatMap(store, (s) => Effect.flatMap(mk(e, 1), s.save)).pipe(
        Effect.provide(FileStore.layerConfig),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["CHECKPOINT_DIR", dir]])))
      )
      expect(fs.readdirSync(path.join(dir, "executions"))).toEqual([e])
    })))

  it.live("a missing or malformed config fails the layer with the ConfigError itself; an empty directory with InvalidOption", () =>
    Effect.gen(function*() {
      const empty = yield* Effect.flip(Effect.provide(store, FileStore.layerConfig).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["CHECKPOINT_DIR", ""]])))
      ))
      expect(ConfigError.isConfigError(empty)).toBe(true)
      expect(String(empty)).toContain("CHECKPOINT_DIR")
      const missing = yield* Effect.flip(
        Effect.provide(store, FileStore.layerConfigWith(Config.all({ directory: Config.string("MY_CHECKPOINT_DIR") }))).pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map()))
        )
      )
      expect(ConfigError.isConfigError(missing) && ConfigError.isMissingDataOnly(missing)).toBe(true)
      expect(String(missing)).toContain("MY_CHECKPOINT_DIR")
      expect(yield* Effect.flip(Effect.provide(store, FileStore.layer({ directory: "" })))).toMatchObject({
        _tag: "InvalidOption",
        option: "directory"
      })
    }))

  it.live("layerConfigWith reads the options from any Config", () =>
    Effect.scoped(Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "mine")
      const e = yield* freshExecution()
      yield* Effect.flatMap(store, (s) => Effect.flatMap(mk(e, 1), s.save)).pipe(
        Effect.provide(FileStore.layerConfigWith(Config.all({ directory: Config.string("MY_CHECKPOINT_DIR") }))),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["MY_CHECKPOINT_DIR", dir]])))
      )
      expect(fs.readdirSync(path.join(dir, "executions"))).toEqual([e])
    })))

  describe("on a full or read-only disk (tmpfs)", () => {
    /** A 256 KiB tmpfs, unmounted when the scope closes. */
    const smallDisk = Effect.acquireRelease(
      Effect.flatMap(tempDir, (dir) =>
        Effect.sync(() => {
          execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", dir])
          return dir
        })),
      (dir) => Effect.sync(() => execFileSync("umount", ["-l", dir]))
    )

    it.live("a full disk fails the save with CheckpointStoreError, leaves no partial file, and the store goes on", () =>
      Effect.scoped(Effect.gen(function*() {
        const dir = yield* smallDisk
        yield* Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const small = yield* mk(e, 1)
          yield* s.save(small)
          const big = yield* mk(e, 2, { state: { blob: "x".repeat(1024 * 1024) } })
          const error = yield* Effect.flip(s.save(big))
          expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "file", operation: "save" })
          expect(fs.readdirSync(path.join(dir, "tmp"))).toEqual([])
          expect(fs.existsSync(path.join(dir, "checkpoints", `${big.id}.json`))).toBe(false)
          expect((yield* s.list(e)).map(view)).toEqual([view(small)])
          // Space is back: the same version saves fine.
          yield* s.save(yield* mk(e, 2))
          expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2])
        }).pipe(Effect.provide(FileStore.layer({ directory: dir })))
      })))

    it.live("a read-only disk fails saves with CheckpointStoreError and still reads", () =>
      Effect.scoped(Effect.gen(function*() {
        const dir = yield* smallDisk
        yield* Effect.gen(function*() {
          const s = yield* store
          const e = yield* freshExecution()
          const cp = yield* mk(e, 1)
          yield* s.save(cp)
          execFileSync("mount", ["-o", "remount,ro", dir])
          const error = yield* Effect.flip(Effect.flatMap(mk(e, 2), s.save))
          expect(error).toMatchObject({ _tag: "CheckpointStoreError", backend: "file", operation: "save" })
          expect(yield* Effect.flip(s.delete(cp.id))).toMatchObject({ _tag: "CheckpointStoreError", operation: "delete" })
          expect((yield* s.list(e)).map(view)).toEqual([view(cp)])
          execFileSync("mount", ["-o", "remount,rw", dir])
        }).pipe(Effect.provide(FileStore.layer({ directory: dir })))
      })))
  })
})

// -----------------------------------------------------------------------------
// Store kit v3 on files: records, writes, 0.1.0 directories, locks, processes
// -----------------------------------------------------------------------------

const FIXTURES = path.join(import.meta.dirname, "fixtures")

/** Starts a fixture script in a child node process (TypeScript through tsx). */
const startFixture = (script: string, args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, ["--import", "tsx", path.join(FIXTURES, script), ...args], {
        cwd: path.join(import.meta.dirname, ".."),
        stdio: ["pipe", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      return { child, output: () => ({ stdout, stderr }) }
    }),
    ({ child }) => Effect.sync(() => child.exitCode === null && child.kill("SIGKILL"))
  )

const exited = (child: ChildProcess) =>
  Effect.async<number | null>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(child.exitCode))
    child.once("exit", (code) => resume(Effect.succeed(code)))
  })

/** The last line a fixture printed, as JSON. */
const lastLine = (stdout: string): unknown => JSON.parse(stdout.trim().split("\n").pop()!)

const until = (predicate: () => boolean, what: string, timeoutMs = 90_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!predicate()) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* Effect.sleep("20 millis")
    }
  })

/** Lays a checkpoint out as 0.1.0 did (and as a save that crashed before its record does): document and slot, no record. */
const writeRaw = (dir: string, cp: Checkpoint.Checkpoint) =>
  Effect.map(CheckpointBackend.encode(cp), ({ document }) => {
    fs.writeFileSync(path.join(dir, "checkpoints", `${cp.id}.json`), document)
    fs.mkdirSync(path.join(dir, "executions", cp.executionId), { recursive: true })
    fs.symlinkSync(
      `../../checkpoints/${cp.id}.json`,
      path.join(dir, "executions", cp.executionId, String(cp.version).padStart(10, "0"))
    )
  })

const recordFile = (dir: string, executionId: string) => path.join(dir, "executions", executionId, "record.json")

/** This process's host identity, as the store writes it into a lock. */
const thisHost = () => `${os.hostname()}|${fs.readlinkSync("/proc/self/ns/pid")}`

const writeLock = (dir: string, executionId: string, content: string) =>
  fs.writeFileSync(path.join(dir, "locks", `${executionId}.lock`), content)

describe("FileStore: records, task writes and 0.1.0 directories", () => {
  it.live("a 0.1.0 directory keeps working: records are backfilled on first access, unfinished ones as interrupted", () =>
    Effect.scoped(Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "v010")
      for (const sub of ["checkpoints", "executions", "tmp"]) fs.mkdirSync(path.join(dir, sub), { recursive: true })
      const unfinished = yield* freshExecution("unfinished")
      const finished = yield* freshExecution("finished")
      const u = yield* Effect.forEach([1, 2], (v) => mk(unfinished, v, { timestamp: new Date(Date.UTC(2025, 0, 1, 0, 0, v)) }))
      const f = [
        yield* mk(finished, 1, { timestamp: new Date(Date.UTC(2025, 0, 2)) }),
        yield* mk(finished, 2, { next: [], timestamp: new Date(Date.UTC(2025, 0, 3)) })
      ]
      yield* Effect.forEach([...u, ...f], (cp) => writeRaw(dir, cp))
      yield* Effect.gen(function*() {
        const s = yield* store
        // A worker never picks up a 0.1.0 execution by surprise.
        expect(yield* s.claim({ owner: "worker", ttl: "1 minute", limit: 10 })).toEqual([])
        const { executions } = yield* s.listExecutions()
        expect(executions).toEqual([
          {
            executionId: finished,
            latestVersion: 2,
            latestCheckpointId: f[1]!.id,
            updatedAt: f[1]!.timestamp,
            pending: false,
            status: "done",
            attempts: 0
          },
          {
            executionId: unfinished,
            latestVersion: 2,
            latestCheckpointId: u[1]!.id,
            updatedAt: u[1]!.timestamp,
            pending: true,
            status: "interrupted",
            attempts: 0
          }
        ])
        expect(fs.existsSync(recordFile(dir, unfinished))).toBe(true)
        // It goes on like any execution: a conditional save, a claim after it is pending again.
        yield* s.save(yield* mk(unfinished, 3), { expect: { executionId: unfinished, latestVersion: 2 } })
        const claimed = yield* s.claim({ owner: "worker", ttl: "1 minute", limit: 10 })
        expect(claimed.map((r) => [r.executionId, r.latestVersion, r.status, r.attempts])).toEqual([[unfinished, 3, "running", 1]])
      }).pipe(Effect.provide(FileStore.layer({ directory: dir })))
    })))

  it.live("getExecution backfills a 0.1.0 execution too, and a deleted record.json is rebuilt", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        yield* Effect.forEach([1, 2], (v) => Effect.flatMap(mk(e, v), (cp) => writeRaw(dir, cp)))
        expect(Option.map(yield* s.getExecution(e), (r) => [r.latestVersion, r.status])).toEqual(Option.some([2, "interrupted"]))
        fs.rmSync(recordFile(dir, e))
        expect(Option.map(yield* s.getExecution(e), (r) => r.latestVersion)).toEqual(Option.some(2))
        expect(Option.isNone(yield* s.getExecution(yield* freshExecution("never")))).toBe(true)
      })
    ))

  it.live("a record left behind by a crash (a slot without its record, or a record whose newest slot went) heals on the next conditional write", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        yield* s.saveMany(yield* Effect.forEach([1, 2], (v) => mk(e, v)))
        // A save that crashed after its slot, before its record: latest() says 3, the record 2.
        const three = yield* mk(e, 3)
        yield* writeRaw(dir, three)
        expect(Option.map(yield* s.latest(e), (c) => c.version)).toEqual(Option.some(3))
        // A run that read latest() expects 3 (with its id): it may go on.
        yield* s.save(yield* mk(e, 4), { expect: { executionId: e, latestVersion: 3, latestCheckpointId: three.id } })
        expect(Option.map(yield* s.getExecution(e), (r) => r.latestVersion)).toEqual(Option.some(4))
        // The newest checkpoint's files vanish (a crash in a removal): the record follows the newest left.
        const four = (yield* s.list(e))[3]!
        fs.rmSync(path.join(dir, "executions", e, "0000000004"))
        fs.rmSync(path.join(dir, "checkpoints", `${four.id}.json`))
        const updated = yield* s.updateExecution(e, { status: "interrupted" }, { expect: { latestVersion: 3 } })
        expect([updated.latestVersion, updated.latestCheckpointId, updated.status]).toEqual([3, three.id, "interrupted"])
        // A stale expectation still fails, naming what the store holds.
        const stale = yield* Effect.flip(s.save(yield* mk(e, 9), { expect: { executionId: e, latestVersion: 2 } }))
        expect(stale).toMatchObject({ _tag: "CheckpointConflict", reason: "ExpectationFailed", actualLatestVersion: 3 })
      })
    ))

  it.live("a corrupt record.json: reads fail with CheckpointDecodeError naming the execution, writes with CheckpointStoreError, claim and sweep pass it by", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const other = yield* freshExecution("other")
        yield* s.save(yield* mk(e, 1))
        yield* s.save(yield* mk(other, 1))
        for (const bad of ["{\"executionId\":", JSON.stringify({ executionId: other, latestVersion: 1 }), "[]"]) {
          fs.writeFileSync(recordFile(dir, e), bad)
          const read = yield* Effect.flip(s.getExecution(e))
          expect(read._tag).toBe("CheckpointDecodeError")
          expect(read.message).toContain(e)
          expect((yield* Effect.flip(s.listExecutions()))._tag).toBe("CheckpointDecodeError")
          expect(yield* Effect.flip(Effect.flatMap(mk(e, 2), s.save))).toMatchObject({ _tag: "CheckpointStoreError", operation: "save" })
          expect(
            (yield* s.claim({ owner: "w", ttl: "1 minute", limit: 10 })).map((r) => r.executionId)
          ).toEqual([other])
          yield* s.release(other, { owner: "w", status: "pending" })
          expect(yield* s.sweep({ before: new Date(Date.now() + 60_000), force: true })).toBe(1)
          yield* s.save(yield* mk(other, 1))
        }
        // Removing the bad record lets the store rebuild it from the checkpoints.
        fs.rmSync(recordFile(dir, e))
        expect(Option.map(yield* s.getExecution(e), (r) => r.latestVersion)).toEqual(Option.some(1))
      })
    ))

  it.live("task writes are files that go with their checkpoint: delete, prune and clear remove them", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const cps = yield* Effect.forEach([1, 2, 3, 4], (v) => mk(e, v))
        yield* s.saveMany(cps)
        yield* Effect.forEach(cps, (cp) => s.saveWrites(cp.id, "0", [{ key: "update", value: { v: cp.version } }]))
        const writesOf = (cp: Checkpoint.Checkpoint) => fs.existsSync(path.join(dir, "writes", cp.id))
        // A taken key fails the whole batch: nothing of it is written.
        const taken = yield* Effect.flip(s.saveWrites(cps[0]!.id, "0", [{ key: "new", value: 1 }, { key: "update", value: 2 }]))
        expect(taken).toMatchObject({ _tag: "CheckpointConflict", reason: "WriteTaken", taskId: "0", key: "update", version: 1 })
        expect(fs.readdirSync(path.join(dir, "writes", cps[0]!.id, "0"))).toEqual(["0000000001-update.json"])
        yield* s.delete(cps[3]!.id)
        expect(cps.map(writesOf)).toEqual([true, true, true, false])
        expect(yield* s.prune(e, 1)).toBe(2)
        expect(cps.map(writesOf)).toEqual([false, false, true, false])
        expect(yield* s.listWrites(cps[2]!.id)).toEqual([{ taskId: "0", key: "update", value: { v: 3 } }])
        yield* s.clear(e)
        expect(fs.readdirSync(path.join(dir, "writes"))).toEqual([])
        expect(fs.readdirSync(path.join(dir, "executions"))).toEqual([])
        expect(fs.readdirSync(path.join(dir, "checkpoints"))).toEqual([])
        expect(fs.readdirSync(path.join(dir, "tmp"))).toEqual([])
        // A write that does not decode fails listWrites naming the checkpoint.
        const cp = yield* mk(e, 1)
        yield* s.save(cp)
        yield* s.saveWrites(cp.id, "0", [{ key: "k", value: 1 }])
        fs.writeFileSync(path.join(dir, "writes", cp.id, "0", "0000000001-k.json"), "{not json")
        expect(yield* Effect.flip(s.listWrites(cp.id))).toMatchObject({ _tag: "CheckpointDecodeError", id: cp.id })
      })
    ))

  it.live("sweep removes whole executions (documents and writes included), sparing interrupted, sleeping and leased ones unless forced", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const old = new Date(Date.UTC(2025, 0, 1))
        const cutoff = new Date(Date.UTC(2025, 5, 1))
        const done = yield* freshExecution("done")
        const interrupted = yield* freshExecution("interrupted")
        const sleeping = yield* freshExecution("sleeping")
        const leased = yield* freshExecution("leased")
        const recent = yield* freshExecution("recent")
        const doneCp = yield* mk(done, 1, { next: [], timestamp: old })
        yield* s.save(doneCp)
        yield* s.saveWrites(doneCp.id, "0", [{ key: "update", value: 1 }])
        yield* s.save(yield* mk(interrupted, 1, { timestamp: old }), { execution: { status: "interrupted" } })
        yield* s.save(yield* mk(sleeping, 1, { timestamp: old }), {
          execution: { status: "sleeping", wakeAt: new Date(Date.UTC(2025, 2, 1)) }
        })
        yield* s.save(yield* mk(leased, 1, { timestamp: old }), {
          execution: { status: "running", lease: { owner: "w", ttl: "1 hour" } }
        })
        yield* s.save(yield* mk(recent, 1, { timestamp: new Date(Date.UTC(2025, 8, 1)) }))
        expect(yield* s.sweep({ before: cutoff })).toBe(1)
        expect(fs.existsSync(path.join(dir, "executions", done))).toBe(false)
        expect(fs.existsSync(path.join(dir, "checkpoints", `${doneCp.id}.json`))).toBe(false)
        expect(fs.existsSync(path.join(dir, "writes", doneCp.id))).toBe(false)
        const left = (yield* s.listExecutions()).executions.map((r) => r.executionId)
        expect(left.sort()).toEqual([interrupted, sleeping, leased, recent].sort())
        expect(yield* s.sweep({ before: cutoff, force: true })).toBe(3)
        expect((yield* s.listExecutions()).executions.map((r) => r.executionId)).toEqual([recent])
        expect(fs.readdirSync(path.join(dir, "executions"))).toEqual([recent])
        expect(fs.readdirSync(path.join(dir, "tmp"))).toEqual([])
        // A swept execution stays gone: a late save of its old run fails.
        const late = yield* Effect.flip(Effect.flatMap(mk(leased, 2), (cp) =>
          s.save(cp, { expect: { executionId: leased, latestVersion: 1 } })))
        expect(late).toMatchObject({ _tag: "CheckpointConflict", reason: "ExpectationFailed" })
      })
    ))

  it.live("listExecutions pages newest first with cursors and filters, over every record", () =>
    withStore(() =>
      Effect.gen(function*() {
        const s = yield* store
        const ids = yield* Effect.forEach(Array.from({ length: 7 }), () => freshExecution("page"))
        yield* Effect.forEach(ids, (e, i) =>
          Effect.flatMap(
            mk(e, 1, { timestamp: new Date(Date.UTC(2025, 0, 1 + (i % 4))), ...(i % 2 === 0 ? {} : { next: [] }) }),
            (cp) => s.save(cp)
          ))
        const expected = ids.map((e, i) => [e, Date.UTC(2025, 0, 1 + (i % 4))] as const)
          .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? 1 : -1)).map(([e]) => e)
        const seen: Array<string> = []
        let cursor: string | undefined
        do {
          const page: CheckpointStore.ExecutionPage = yield* s.listExecutions({ limit: 3, ...(cursor === undefined ? {} : { cursor }) })
          seen.push(...page.executions.map((r) => r.executionId))
          cursor = page.cursor
        } while (cursor !== undefined)
        expect(seen).toEqual(expected)
        const pending = (yield* s.listExecutions({ status: "pending" })).executions.map((r) => r.executionId)
        expect(pending).toEqual(expected.filter((e) => ids.indexOf(e as Checkpoint.ExecutionId) % 2 === 0))
        const between = yield* s.listExecutions({
          updatedAfter: new Date(Date.UTC(2025, 0, 1)),
          updatedBefore: new Date(Date.UTC(2025, 0, 4))
        })
        expect(between.executions.map((r) => r.updatedAt.getUTCDate()).sort()).toEqual([2, 2, 3, 3])
      })
    ))
})

describe("FileStore: large values", () => {
  const big = { text: "large ".repeat(1000), list: Array.from({ length: 100 }, (_, i) => i) }
  const bigJson = JSON.stringify(big)
  const blobName = (value: unknown) => `${hashOf(JSON.stringify(value))}.json`

  it.live("a large value is one file executions/<id>/blobs/<hash>.json holding its JSON; the document holds null and $refs; a 0.1.0 execution takes them too", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const cps = [yield* mk(e, 1, { state: { big, n: 1 } }), yield* mk(e, 2, { state: { big, n: 2 } })]
        for (const cp of cps) yield* s.save(cp)
        expect([...blobFiles(dir, e).keys()]).toEqual([blobName(big)])
        expect(fs.readFileSync(path.join(dir, "executions", e, "blobs", blobName(big)), "utf8")).toBe(bigJson)
        for (const cp of cps) {
          const text = fs.readFileSync(path.join(dir, "checkpoints", `${cp.id}.json`), "utf8")
          expect(text).not.toContain("large large")
          const doc = JSON.parse(text)
          expect(doc.state).toEqual({ big: null, n: cp.version })
          expect(doc.$refs).toEqual([hashOf(bigJson)])
          expect(doc.runtime).toEqual({ $pack: { big: { b: hashOf(bigJson) } } })
        }
        expect((yield* s.list(e)).map(view)).toEqual(cps.map(view))
        // Nothing is left in tmp/ by a save.
        expect(fs.readdirSync(path.join(dir, "tmp"))).toEqual([])
        // A 0.1.0 execution (documents and slots only) gets blobs on its next save.
        const old = yield* freshExecution("v010")
        const raw = yield* Effect.forEach([1, 2], (v) => mk(old, v))
        yield* Effect.forEach(raw, (cp) => writeRaw(dir, cp))
        const next = yield* mk(old, 3, { state: { big } })
        yield* s.save(next)
        expect([...blobFiles(dir, old).keys()]).toEqual([blobName(big)])
        expect((yield* s.list(old)).map(view)).toEqual([...raw, next].map(view))
      })
    ))

  it.live("a crash between a blob and its checkpoint leaves only an unreferenced blob: reads work, a save reuses it, the next delete or prune removes it", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const v1 = yield* mk(e, 1, { state: { big } })
        yield* s.save(v1)
        // What a crash leaves: blobs are published whole (temp file, fsync, link) before the checkpoint that
        // references them, so a crash leaves whole blob files that nothing references, and maybe a temp file.
        const other = { text: "other ".repeat(1000) }
        const blobs = path.join(dir, "executions", e, "blobs")
        fs.writeFileSync(path.join(blobs, blobName(other)), JSON.stringify(other))
        fs.writeFileSync(path.join(blobs, `${"Z".repeat(22)}.json`), JSON.stringify({ never: "referenced" }))
        fs.writeFileSync(path.join(dir, "tmp", `${randomUUID()}.tmp`), JSON.stringify(other).slice(0, 100))
        expect(view(yield* s.load(v1.id))).toEqual(view(v1))
        expect((yield* s.list(e)).map(view)).toEqual([view(v1)])
        // Another process saves the value the crashed save was writing: the blob there is used as it is.
        const v2 = yield* Effect.provide(
          Effect.flatMap(store, (fresh) => Effect.flatMap(mk(e, 2, { state: { other } }), (cp) => Effect.as(fresh.save(cp), cp))),
          FileStore.layer({ directory: dir })
        )
        expect((yield* s.list(e)).map(view)).toEqual([view(v1), view(v2)])
        expect(blobFiles(dir, e).size).toBe(3)
        // The next removal collects what no checkpoint left references (the crash's orphan and v1's blob).
        yield* s.delete(v1.id)
        expect([...blobFiles(dir, e).keys()]).toEqual([blobName(other)])
        expect((yield* s.list(e)).map(view)).toEqual([view(v2)])
        fs.writeFileSync(path.join(blobs, `${"Y".repeat(22)}.json`), "{}")
        yield* s.save(yield* mk(e, 3))
        expect(yield* s.prune(e, 1)).toBe(1)
        expect(blobFiles(dir, e).size).toBe(0)
        // Clear removes the whole directory, orphans included.
        fs.writeFileSync(path.join(blobs, `${"X".repeat(22)}.json`), "{}")
        yield* s.clear(e)
        expect(fs.existsSync(path.join(dir, "executions", e))).toBe(false)
      })
    ))

  it.live("a referenced blob that is gone or damaged fails reads with CheckpointDecodeError naming the checkpoint; the next save of the value stores it again", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const v1 = yield* mk(e, 1, { state: { big } })
        yield* s.save(v1)
        const file = path.join(dir, "executions", e, "blobs", blobName(big))
        fs.rmSync(file)
        const reads: ReadonlyArray<Effect.Effect<unknown, { readonly message: string }>> = [s.load(v1.id), s.list(e), s.latest(e)]
        for (const read of reads) {
          const error = yield* Effect.flip(read)
          expect(error).toMatchObject({ _tag: "CheckpointDecodeError", id: v1.id })
          expect(error.message).toContain("missing")
        }
        // This store thinks the blob is stored: the save is refused (BlobsMissing), and made again with it.
        const v2 = yield* mk(e, 2, { state: { big, n: 2 } })
        yield* s.save(v2)
        expect((yield* s.list(e)).map(view)).toEqual([view(v1), view(v2)])
        fs.writeFileSync(file, "{\"truncated")
        expect(yield* Effect.flip(s.load(v2.id))).toMatchObject({ _tag: "CheckpointDecodeError", id: v2.id })
      })
    ))

  it.live("a save that fails after writing its blobs takes them back", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const taken = yield* mk(yield* freshExecution("first"), 1)
        yield* s.save(taken)
        const clash = yield* mk(e, 1, { id: taken.id, state: { big } })
        expect(yield* Effect.flip(s.save(clash))).toMatchObject({ _tag: "CheckpointConflict", reason: "IdTaken" })
        expect(blobFiles(dir, e).size).toBe(0)
        const rival = yield* mk(e, 1, { state: { small: true } })
        yield* s.save(rival)
        expect(yield* Effect.flip(s.save(yield* mk(e, 1, { state: { big } })))).toMatchObject({ reason: "VersionTaken" })
        expect(blobFiles(dir, e).size).toBe(0)
        expect((yield* s.list(e)).map(view)).toEqual([view(rival)])
      })
    ))
})

describe("FileStore: the same behaviour as Memory", () => {
  type Op =
    | { readonly op: "save"; readonly e: number; readonly v: number; readonly done: boolean; readonly status?: CheckpointStore.ExecutionStatus | undefined; readonly owner?: string | undefined; readonly expect?: "current" | "stale" | undefined; readonly lease?: string | undefined }
    | { readonly op: "saveMany"; readonly e: number; readonly vs: ReadonlyArray<number> }
    | { readonly op: "saveWrites"; readonly e: number; readonly v: number; readonly task: string; readonly keys: ReadonlyArray<string>; readonly status?: CheckpointStore.ExecutionStatus | undefined; readonly owner?: string | undefined }
    | { readonly op: "update"; readonly e: number; readonly status?: CheckpointStore.ExecutionStatus | undefined; readonly wake?: number | null | undefined; readonly failure?: string | null | undefined; readonly lease?: string | null | undefined; readonly owner?: string | undefined; readonly expect?: "current" | "stale" | undefined }
    | { readonly op: "renew"; readonly e: number; readonly owner: string }
    | { readonly op: "release"; readonly e: number; readonly owner: string; readonly status?: CheckpointStore.ExecutionStatus | undefined }
    | { readonly op: "claim"; readonly owner: string; readonly limit: number }
    | { readonly op: "sweep"; readonly ago: number; readonly force: boolean }
    | { readonly op: "delete"; readonly e: number; readonly v: number }
    | { readonly op: "clear"; readonly e: number }
    | { readonly op: "prune"; readonly e: number; readonly keep: number }
    | { readonly op: "list"; readonly statuses?: ReadonlyArray<CheckpointStore.ExecutionStatus> | undefined; readonly limit: number }
    | { readonly op: "tick"; readonly ms: number }

  const e = FastCheck.integer({ min: 0, max: 2 })
  const v = FastCheck.integer({ min: 1, max: 4 })
  const owner = FastCheck.constantFrom("w1", "w2")
  const status = FastCheck.constantFrom(...CheckpointStore.statuses)
  const maybe = <A>(arb: FastCheck.Arbitrary<A>) => FastCheck.option(arb, { nil: undefined })
  const opArb: FastCheck.Arbitrary<Op> = FastCheck.oneof(
    { weight: 8, arbitrary: FastCheck.record({ op: FastCheck.constant("save" as const), e, v, done: FastCheck.boolean(), status: maybe(status), owner: maybe(owner), expect: maybe(FastCheck.constantFrom("current" as const, "stale" as const)), lease: maybe(owner) }) },
    { weight: 2, arbitrary: FastCheck.record({ op: FastCheck.constant("saveMany" as const), e, vs: FastCheck.array(v, { maxLength: 3 }) }) },
    { weight: 4, arbitrary: FastCheck.record({ op: FastCheck.constant("saveWrites" as const), e, v, task: FastCheck.constantFrom("0", "1", "10"), keys: FastCheck.subarray(["a", "b", "c"]), status: maybe(status), owner: maybe(owner) }) },
    { weight: 4, arbitrary: FastCheck.record({ op: FastCheck.constant("update" as const), e, status: maybe(status), wake: maybe(FastCheck.option(FastCheck.integer({ min: -2000, max: 2000 }), { nil: null })), failure: maybe(FastCheck.option(FastCheck.constantFrom("Boom", "Oops"), { nil: null })), lease: maybe(FastCheck.option(owner, { nil: null })), owner: maybe(owner), expect: maybe(FastCheck.constantFrom("current" as const, "stale" as const)) }) },
    { weight: 2, arbitrary: FastCheck.record({ op: FastCheck.constant("renew" as const), e, owner }) },
    { weight: 2, arbitrary: FastCheck.record({ op: FastCheck.constant("release" as const), e, owner, status: maybe(status) }) },
    { weight: 3, arbitrary: FastCheck.record({ op: FastCheck.constant("claim" as const), owner, limit: FastCheck.integer({ min: 1, max: 3 }) }) },
    { weight: 1, arbitrary: FastCheck.record({ op: FastCheck.constant("sweep" as const), ago: FastCheck.integer({ min: 0, max: 3000 }), force: FastCheck.boolean() }) },
    { weight: 1, arbitrary: FastCheck.record({ op: FastCheck.constant("delete" as const), e, v }) },
    { weight: 1, arbitrary: FastCheck.record({ op: FastCheck.constant("clear" as const), e }) },
    { weight: 1, arbitrary: FastCheck.record({ op: FastCheck.constant("prune" as const), e, keep: FastCheck.integer({ min: 0, max: 2 }) }) },
    { weight: 1, arbitrary: FastCheck.record({ op: FastCheck.constant("list" as const), statuses: maybe(FastCheck.subarray([...CheckpointStore.statuses], { minLength: 1 })), limit: FastCheck.integer({ min: 1, max: 4 }) }) },
    { weight: 3, arbitrary: FastCheck.record({ op: FastCheck.constant("tick" as const), ms: FastCheck.integer({ min: 1, max: 1500 }) }) }
  )

  /** A comparable form of a result: errors by tag and fields, values as they are. */
  const outcome = (r: Either.Either<unknown, unknown>) =>
    Either.isRight(r)
      ? { ok: Option.isOption(r.right) ? Option.getOrNull(r.right) : r.right }
      : { error: { ...(r.left as object), tag: (r.left as { _tag: string })._tag } }

  it.effect("any sequence of writes, task writes, record updates, leases, claims and sweeps gives the results Memory gives", () =>
    Effect.gen(function*() {
      const samples = FastCheck.sample(FastCheck.array(opArb, { minLength: 30, maxLength: 70 }), { numRuns: 8, seed: 7 })
      for (const ops of samples) {
        yield* Effect.scoped(Effect.gen(function*() {
          const root = yield* tempDir
          const file = Context.get(yield* Layer.build(FileStore.layer({ directory: path.join(root, "store") })), store)
          const memory = Context.get(yield* Layer.build(MemoryStore.layer), store)
          const executions = yield* Effect.forEach([0, 1, 2], () => freshExecution("diff"))
          /** (execution, version) → the id saved there (as both stores hold it). */
          const ids = new Map<string, Checkpoint.CheckpointId>()
          const both = <A, E>(f: (s: CheckpointStore.Service) => Effect.Effect<A, E>) =>
            Effect.gen(function*() {
              const m = yield* Effect.either(f(memory))
              const fl = yield* Effect.either(f(file))
              return [m, fl] as const
            })
          for (const [step, o] of ops.entries()) {
            const now = yield* TestClock.currentTimeMillis
            const exec = "e" in o ? executions[o.e]! : executions[0]!
            const current = Option.getOrUndefined(yield* memory.getExecution(exec))
            const expectation = (kind: "current" | "stale" | undefined) =>
              kind === undefined
                ? undefined
                : kind === "current"
                ? { latestVersion: current?.latestVersion ?? 0, ...(current === undefined ? {} : { latestCheckpointId: current.latestCheckpointId }) }
                : { latestVersion: (current?.latestVersion ?? 0) + 1 }
            let results: readonly [Either.Either<unknown, unknown>, Either.Either<unknown, unknown>]
            switch (o.op) {
              case "save": {
                const cp = yield* mk(exec, o.v, o.done ? { next: [] } : {})
                const patch: CheckpointStore.ExecutionPatch = {
                  ...(o.status === undefined ? {} : { status: o.status }),
                  ...(o.lease === undefined ? {} : { lease: { owner: o.lease, ttl: "1 second" } })
                }
                const ex = expectation(o.expect)
                results = yield* both((s) =>
                  s.save(cp, {
                    ...(ex === undefined ? {} : { expect: { executionId: exec, ...ex } }),
                    ...(o.owner === undefined ? {} : { owner: o.owner }),
                    execution: patch
                  }))
                if (Either.isRight(results[0])) ids.set(`${o.e}:${o.v}`, cp.id)
                break
              }
              case "saveMany": {
                const cps = yield* Effect.forEach(o.vs, (ver) => mk(exec, ver))
                results = yield* both((s) => s.saveMany(cps))
                if (Either.isRight(results[0])) for (const cp of cps) ids.set(`${o.e}:${cp.version}`, cp.id)
                break
              }
              case "saveWrites": {
                const id = ids.get(`${o.e}:${o.v}`) ?? (yield* Checkpoint.generateCheckpointId)
                results = yield* both((s) =>
                  s.saveWrites(id, o.task, o.keys.map((key) => ({ key, value: { key, step } })), {
                    ...(o.owner === undefined ? {} : { owner: o.owner }),
                    ...(o.status === undefined ? {} : { execution: { status: o.status } })
                  }))
                break
              }
              case "update": {
                const patch: CheckpointStore.ExecutionPatch = {
                  ...(o.status === undefined ? {} : { status: o.status }),
                  ...(o.wake === undefined ? {} : { wakeAt: o.wake === null ? null : new Date(now + o.wake) }),
                  ...(o.failure === undefined ? {} : { failure: o.failure === null ? null : { tag: o.failure, message: `${o.failure} at ${step}` } }),
                  ...(o.lease === undefined ? {} : { lease: o.lease === null ? null : { owner: o.lease, ttl: "1 second" } })
                }
                const ex = expectation(o.expect)
                results = yield* both((s) =>
                  s.updateExecution(exec, patch, {
                    ...(o.owner === undefined ? {} : { owner: o.owner }),
                    ...(ex === undefined ? {} : { expect: ex })
                  }))
                break
              }
              case "renew":
                results = yield* both((s) => s.renew(exec, { owner: o.owner, ttl: "1 second" }))
                break
              case "release":
                results = yield* both((s) => s.release(exec, { owner: o.owner, ...(o.status === undefined ? {} : { status: o.status }) }))
                break
              case "claim":
                results = yield* both((s) =>
                  Effect.map(s.claim({ owner: o.owner, ttl: "1 second", limit: o.limit }), (rs) => rs.filter((r) => executions.includes(r.executionId))))
                break
              case "sweep":
                results = yield* both((s) => s.sweep({ before: new Date(now - o.ago), force: o.force }))
                break
              case "delete": {
                const id = ids.get(`${o.e}:${o.v}`) ?? (yield* Checkpoint.generateCheckpointId)
                results = yield* both((s) => s.delete(id))
                break
              }
              case "clear":
                results = yield* both((s) => s.clear(exec))
                break
              case "prune":
                results = yield* both((s) => s.prune(exec, o.keep))
                break
              case "list":
                results = yield* both((s) => s.listExecutions({ limit: o.limit, ...(o.statuses === undefined ? {} : { status: o.statuses }) }))
                break
              case "tick":
                yield* TestClock.adjust(o.ms)
                results = [Either.right(undefined), Either.right(undefined)]
                break
            }
            expect(outcome(results[1]), `step ${step}: ${JSON.stringify(o)}`).toEqual(outcome(results[0]))
            // The whole store, as both hold it.
            for (const x of executions) {
              const [ml, fl] = yield* both((s) => s.list(x))
              expect(Either.map(fl, (cps) => cps.map(view)), `step ${step}: list`).toEqual(Either.map(ml, (cps) => cps.map(view)))
              const [mr, fr] = yield* both((s) => s.getExecution(x))
              expect(outcome(fr), `step ${step}: record of ${x}`).toEqual(outcome(mr))
              for (const cp of Either.getOrElse(ml, () => [])) {
                const [mw, fw] = yield* both((s) => s.listWrites(cp.id))
                expect(outcome(fw), `step ${step}: writes of v${cp.version}`).toEqual(outcome(mw))
              }
            }
          }
        }))
      }
    }), 120_000)
})

describe("FileStore: locks between processes", () => {
  it.live("a lock whose holder process died is broken at once, not after its 30 s expiry", () =>
    Effect.scoped(Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "store")
      const e = yield* freshExecution()
      yield* Effect.provide(store, FileStore.layer({ directory: dir }))
      const holder = yield* startFixture("file-lock-holder.ts", [dir, e])
      yield* until(() => holder.output().stdout.includes("locked\n"), "the holder to take the lock")
      const lock = path.join(dir, "locks", `${e}.lock`)
      expect(JSON.parse(fs.readFileSync(lock, "utf8"))).toMatchObject({ pid: holder.child.pid, host: thisHost() })
      holder.child.kill("SIGKILL")
      yield* exited(holder.child)
      const started = Date.now()
      yield* Effect.flatMap(store, (s) => Effect.flatMap(mk(e, 1), s.save)).pipe(
        Effect.provide(FileStore.layer({ directory: dir }))
      )
      // A bound, not a speed: the lock expires only after 30 s.
      expect(Date.now() - started).toBeLessThan(10_000)
      expect(fs.readdirSync(path.join(dir, "locks"))).toEqual([])
    })), 180_000)

  it.live("a live holder is waited for; an expired lock of another machine is broken; an empty lock is a holder writing it until it is a ttl old", () =>
    withStore((dir) =>
      Effect.gen(function*() {
        const s = yield* store
        const e = yield* freshExecution()
        const saveOne = (v: number) => Effect.flatMap(mk(e, v), s.save)
        const stillWaiting = (fiber: Fiber.RuntimeFiber<void, unknown>) =>
          Effect.gen(function*() {
            yield* Effect.sleep("300 millis")
            expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
          })
        // Held by a live process of this machine (this one), for a minute.
        writeLock(dir, e, JSON.stringify({ token: randomUUID(), pid: process.pid, host: thisHost(), expiresAt: Date.now() + 60_000 }))
        const first = yield* Effect.fork(saveOne(1))
        yield* stillWaiting(first)
        expect(yield* s.list(e)).toEqual([])
        fs.rmSync(path.join(dir, "locks", `${e}.lock`))
        yield* Fiber.join(first)
        // Held by a process of another machine until it expires, 5 s from now.
        writeLock(dir, e, JSON.stringify({ token: randomUUID(), pid: 1, host: "elsewhere|pid:[1]", expiresAt: Date.now() + 5000 }))
        const second = yield* Effect.fork(saveOne(2))
        yield* stillWaiting(second)
        yield* Fiber.join(second)
        // An empty lock: fresh, it is waited for; a ttl (30 s) old, it is broken.
        writeLock(dir, e, "")
        const third = yield* Effect.fork(saveOne(3))
        yield* stillWaiting(third)
        const old = new Date(Date.now() - 60_000)
        fs.utimesSync(path.join(dir, "locks", `${e}.lock`), old, old)
        yield* Fiber.join(third)
        expect((yield* s.list(e)).map((c) => c.version)).toEqual([1, 2, 3])
        expect(fs.readdirSync(path.join(dir, "locks"))).toEqual([])
      })
    ), 60_000)

  it.live("claim never gives one execution to two owners: three PROCESSES claiming at once", () =>
    Effect.scoped(Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "store")
      const executions = yield* Effect.forEach(Array.from({ length: 60 }), () => freshExecution("due"))
      yield* Effect.flatMap(store, (s) =>
        Effect.forEach(executions, (e) => Effect.flatMap(mk(e, 1, { next: ["work"] }), s.save), { discard: true })).pipe(
          Effect.provide(FileStore.layer({ directory: dir }))
        )
      const owners = ["worker-a", "worker-b", "worker-c"]
      const claimers = yield* Effect.forEach(owners, (owner) => startFixture("claimer.ts", [`file:${dir}`, owner, "2"]))
      yield* until(() => claimers.every((c) => c.output().stdout.includes("ready\n")), "the claimers to load")
      for (const c of claimers) c.child.stdin!.end("go\n")
      const codes = yield* Effect.forEach(claimers, (c) => exited(c.child), { concurrency: "unbounded" })
      const reports = claimers.map((c) => {
        expect(c.output().stderr).toBe("")
        return lastLine(c.output().stdout) as {
          readonly owner: string
          readonly buildError?: string
          readonly claimed: Array<string>
          readonly errors: Array<string>
        }
      })
      expect(codes).toEqual([0, 0, 0])
      for (const r of reports) {
        expect(r.buildError, r.owner).toBeUndefined()
        expect(r.errors, r.owner).toEqual([])
      }
      const all = reports.flatMap((r) => r.claimed)
      expect(all.length).toBe(60)
      expect(new Set(all)).toEqual(new Set(executions))
      // They really raced: more than one got some.
      expect(reports.filter((r) => r.claimed.length > 0).length).toBeGreaterThan(1)
      // Each record names the owner that reported it, claimed once.
      const records = yield* Effect.flatMap(store, (s) => Effect.forEach(executions, (e) => s.getExecution(e))).pipe(
        Effect.provide(FileStore.layer({ directory: dir }))
      )
      for (const [i, record] of records.entries()) {
        const r = Option.getOrThrow(record)
        const owner = reports.find((rep) => rep.claimed.includes(executions[i]!))!.owner
        expect([r.status, r.attempts, r.lease?.owner]).toEqual(["running", 1, owner])
      }
      expect(fs.readdirSync(path.join(dir, "locks"))).toEqual([])
    })), 180_000)

  it.live("two stores of one process on one directory claim disjoint executions", () =>
    Effect.scoped(Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "shared")
      const s1 = Context.get(yield* Layer.build(FileStore.layer({ directory: dir })), store)
      const s2 = Context.get(yield* Layer.build(FileStore.layer({ directory: dir })), store)
      const executions = yield* Effect.forEach(Array.from({ length: 20 }), () => freshExecution("due"))
      yield* Effect.forEach(executions, (e) => Effect.flatMap(mk(e, 1), s1.save), { discard: true })
      const claims = yield* Effect.forEach(
        [s1, s2, s1, s2],
        (s, i) => s.claim({ owner: `w${i}`, ttl: "1 minute", limit: 20 }),
        { concurrency: "unbounded" }
      )
      const all = claims.flat().map((r) => r.executionId)
      expect(all.length).toBe(20)
      expect(new Set(all)).toEqual(new Set(executions))
    })))

  it.live("three PROCESSES appending to one execution on a condition: every write follows the one before it", () =>
    Effect.scoped(Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "store")
      const chain = yield* freshExecution("chain")
      yield* Effect.provide(store, FileStore.layer({ directory: dir }))
      const writers = yield* Effect.forEach(
        ["a", "b", "c"],
        (label, slot) => startFixture("chainer.ts", [label, String(slot), chain, "3000", "file", dir])
      )
      yield* until(() => writers.every((w) => w.output().stdout.includes("ready\n")), "the writers to load")
      for (const w of writers) w.child.stdin!.end("go\n")
      const codes = yield* Effect.forEach(writers, (w) => exited(w.child), { concurrency: "unbounded" })
      const reports = writers.map((w) => {
        expect(w.output().stderr).toBe("")
        return lastLine(w.output().stdout) as {
          readonly label: string
          readonly buildError?: string
          readonly written: number
          readonly lost: number
          readonly errors: Array<string>
          readonly firstWriteAt: number
          readonly lastWriteAt: number
        }
      })
      for (const r of reports) {
        expect(r.buildError, r.label).toBeUndefined()
        expect(r.errors, r.label).toEqual([])
        // Each one tried (a writer may lose every race on a busy machine: that is the condition working).
        expect(r.written + r.lost, JSON.stringify(reports)).toBeGreaterThan(0)
      }
      expect(codes).toEqual([0, 0, 0])
      for (const r of reports) {
        for (const q of reports) expect(r.firstWriteAt < q.lastWriteAt).toBe(true)
      }
      // They really raced: several won, and some lost.
      expect(reports.filter((r) => r.written > 0).length, JSON.stringify(reports)).toBeGreaterThan(1)
      expect(reports.reduce((n, r) => n + r.lost, 0)).toBeGreaterThan(0)
      const written = yield* Effect.flatMap(store, (s) => s.list(chain)).pipe(
        Effect.provide(FileStore.layer({ directory: dir }))
      )
      expect(written.length).toBe(reports.reduce((n, r) => n + r.written, 0))
      // Every write followed the one before it: a first checkpoint expected the version before it, a second is the next version.
      let previous = 0
      let previousLink: { writer: string; expected: number } | undefined
      for (const cp of written) {
        const link = cp.state as { writer: string; expected: number; first: boolean }
        if (link.first) expect(link.expected, `version ${cp.version}`).toBe(previous)
        else {
          expect(cp.version).toBe(previous + 1)
          expect([previousLink?.writer, previousLink?.expected]).toEqual([link.writer, link.expected])
        }
        previous = cp.version
        previousLink = link
      }
      const record = yield* Effect.flatMap(store, (s) => s.getExecution(chain)).pipe(
        Effect.provide(FileStore.layer({ directory: dir }))
      )
      expect(Option.map(record, (r) => r.latestVersion)).toEqual(Option.some(previous))
    })), 180_000)
})

describe("the root entry point without @effect/platform", () => {
  const dist = path.join(import.meta.dirname, "..", "dist")

  /** The bare specifiers a compiled module imports, following its relative imports. */
  const importGraph = (entry: string): Set<string> => {
    const seen = new Set<string>()
    const bare = new Set<string>()
    const walk = (file: string) => {
      if (seen.has(file)) return
      seen.add(file)
      const code = fs.readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "")
      for (const m of code.matchAll(/(?:^|[;\s])(?:import|export)\s*(?:[^"';]*?\sfrom\s*)?["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/gm)) {
        const spec = (m[1] ?? m[2])!
        if (spec.startsWith(".")) walk(path.resolve(path.dirname(file), spec))
        else bare.add(spec)
      }
    }
    walk(entry)
    return bare
  }

  it("dist/index.js imports only effect and node built-ins (dist/file.js imports the platform)", () => {
    expect(fs.existsSync(path.join(dist, "file.js")), "build first: npm run build").toBe(true)
    const root = [...importGraph(path.join(dist, "index.js"))]
    expect(root.filter((s) => !(s === "effect" || s.startsWith("effect/") || s.startsWith("node:")))).toEqual([])
    const file = [...importGraph(path.join(dist, "file.js"))]
    expect(file.some((s) => s.startsWith("@effect/platform/"))).toBe(true)
    expect(file.some((s) => s.startsWith("@effect/platform-node/"))).toBe(true)
  })

  it("a Memory run works in a process whose node_modules holds only effect and this package", () =>
    Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const sandbox = yield* tempDir
      const modules = path.join(sandbox, "node_modules")
      fs.mkdirSync(modules)
      fs.symlinkSync(fs.realpathSync(path.join(import.meta.dirname, "..", "node_modules", "effect")), path.join(modules, "effect"))
      const pkg = path.join(modules, "effect-checkpoint")
      fs.mkdirSync(pkg)
      fs.copyFileSync(path.join(import.meta.dirname, "..", "package.json"), path.join(pkg, "package.json"))
      fs.cpSync(dist, path.join(pkg, "dist"), { recursive: true })
      fs.writeFileSync(
        path.join(sandbox, "run.mjs"),
        `
import { Effect, Schema } from "effect"
import { Graph, MemoryStore } from "effect-checkpoint"
const State = Schema.Struct({ n: Schema.Number })
const graph = Graph.make(State).pipe(
  Graph.addNode("inc", (s) => Effect.succeed({ n: s.n + 1 })),
  Graph.setEntryPoint("inc"),
  Graph.addEdge("inc", Graph.END)
)
const program = Effect.gen(function*() {
  const runnable = yield* Graph.compileCheckpointable(graph)
  const final = yield* runnable.invoke({ n: 41 })
  const checkpoints = yield* runnable.listCheckpoints()
  return { final, checkpoints: checkpoints.length }
})
const file = await import("effect-checkpoint/file").then(() => "loaded", (e) => e.code + " " + e.message)
const result = await Effect.runPromise(program.pipe(Effect.provide(MemoryStore.layer)))
console.log(JSON.stringify({ ...result, file }))
`
      )
      const out = execFileSync(process.execPath, ["run.mjs"], { cwd: sandbox, encoding: "utf8", timeout: 30_000 })
      const result = JSON.parse(out.trim().split("\n").pop()!)
      expect(result.final).toEqual({ n: 42 })
      expect(result.checkpoints).toBe(2)
      // The control: the sandbox really hides the platform, so the File entry point cannot load there.
      expect(result.file).toMatch(/^ERR_MODULE_NOT_FOUND .*'@effect\/platform/)
    }))), 60_000)
})
