import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer, Option } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Checkpoint from "../src/Checkpoint.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import * as FileStore from "../src/layers/File.js"
import { conformance, freshExecution, hostileIds, mk, StoreTestKit, view } from "../src/testing.js"

/** A temp directory owned by this test file, removed when the scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-checkpoint-file-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const kitFor = (dir: string) =>
  Layer.succeed(StoreTestKit, {
    corrupt: (cp) =>
      Effect.sync(() => fs.writeFileSync(path.join(dir, "checkpoints", `${cp.id}.json`), "{\"id\": \"truncated"))
  })

/** A fresh store in a fresh temp directory, plus its corruption kit. */
const fileUnderTest = Layer.unwrapScoped(
  Effect.map(tempDir, (dir) => Layer.merge(FileStore.layer({ directory: path.join(dir, "store") }), kitFor(path.join(dir, "store"))))
)

conformance("File", fileUnderTest)

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
        expect(fs.readdirSync(path.join(dir, "tmp"))).toEqual([])
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
        expect(yield* Effect.flip(s.listExecutions())).toMatchObject({ _tag: "CheckpointDecodeError", id: a.id })
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
      expect(tree(root)).toEqual(["outside", "store", "store/checkpoints", "store/executions", "store/tmp", "x.json"])
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
