/**
 * Encryption at rest and large values together: blobs are sealed, bound to
 * their execution and content hash, and stored under names that do not
 * reveal the content hash. Memory (its stored text) and File (its files).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type * as Checkpoint from "../src/Checkpoint.js"
import * as CheckpointBackend from "../src/CheckpointBackend.js"
import * as CheckpointStore from "../src/CheckpointStore.js"
import { makeState, type MemoryState, memoryBackend } from "../src/internal/memoryBackend.js"
import { hashOf } from "../src/internal/packing.js"
import * as FileStore from "../src/layers/File.js"
import { conformance, freshExecution, mk, StoreTestKit, view } from "../src/testing.js"

const key = Redacted.make(new Uint8Array(randomBytes(32)))
const newKey = Redacted.make(new Uint8Array(randomBytes(32)))
const store = CheckpointStore.CheckpointStore

const memoryStore = (state: MemoryState) => Layer.succeed(store, CheckpointBackend.make(memoryBackend(state)))
const blobStatsOf = (state: MemoryState) => (executionId: string) =>
  Effect.sync(() => {
    const stored = [...(state.blobs.get(executionId)?.values() ?? [])]
    return { count: stored.length, bytes: stored.reduce((n, b) => n + b.json.length, 0) }
  })

/** Replaces the stored text of a blob of the Memory store, behind its back. */
const setJson = (blobs: Map<string, { readonly json: string; refs: number }>, name: string, json: string) =>
  blobs.set(name, { json, refs: blobs.get(name)!.refs })

/** An encrypted Memory store, with a kit on its raw state. */
const encryptedMemory = Layer.unwrapEffect(Effect.sync(() => {
  const state = makeState()
  return Layer.merge(
    memoryStore(state).pipe(CheckpointStore.encrypted({ key })),
    Layer.succeed(StoreTestKit, {
      corrupt: (cp) => Effect.sync(() => state.documents.set(cp.id, `{"id":${JSON.stringify(cp.id)},"state":`)),
      blobStats: blobStatsOf(state)
    })
  )
}))

conformance("Memory, encrypted", encryptedMemory, { blobs: true })

const marker = "SECRET-MARKER-"
const secretBig = { text: `${marker}${"confidential ".repeat(1000)}`, list: [marker, 1, 2, 3] }
const secretChat = (n: number) => Array.from({ length: n }, (_, i) => ({ i, text: `${marker}${i} ${"words ".repeat(40)}` }))
/** Every form of the secrets that must not be stored: the text, and the content hashes of the large values. */
const forbidden = (states: ReadonlyArray<{ readonly big: unknown; readonly chat: unknown }>) => [
  marker,
  ...states.flatMap((s) => [hashOf(JSON.stringify(s.big)), hashOf(JSON.stringify(s.chat))])
]

/** Saves 12 checkpoints of an execution with a large value and a growing array, and writes; returns what was saved. */
const saveSecrets = (executionId: Checkpoint.ExecutionId) =>
  Effect.gen(function*() {
    const s = yield* store
    const saved: Array<Checkpoint.Checkpoint> = []
    for (let v = 1; v <= 12; v++) {
      const cp = yield* mk(executionId, v, { state: { big: secretBig, chat: secretChat(v * 3) }, metadata: { note: marker } })
      yield* s.save(cp)
      saved.push(cp)
    }
    yield* s.saveWrites(saved[11]!.id, "t", [{ key: "k", value: marker }])
    expect((yield* s.list(executionId)).map(view)).toEqual(saved.map(view))
    return saved
  })

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-checkpoint-encblobs-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** Every file under `dir`: its relative path and its content. */
const filesOf = (dir: string): Array<readonly [string, string]> =>
  (fs.readdirSync(dir, { recursive: true }) as Array<string>).flatMap((rel) => {
    const full = path.join(dir, rel)
    const stat = fs.lstatSync(full)
    return stat.isFile() ? [[rel, fs.readFileSync(full, "utf8")] as const] : stat.isSymbolicLink() ? [[rel, fs.readlinkSync(full)] as const] : []
  })

/** The blob files of an execution of a File store. */
const blobDir = (dir: string, executionId: string) => path.join(dir, "executions", executionId, "blobs")

describe("Encrypted blobs: Memory", () => {
  it.effect("no plaintext and no content hash in the stored text: documents, blobs, writes", () =>
    Effect.gen(function*() {
      const state = makeState()
      const e = yield* freshExecution()
      const other = yield* freshExecution()
      yield* Effect.provide(Effect.zipRight(saveSecrets(e), saveSecrets(other)), memoryStore(state).pipe(CheckpointStore.encrypted({ key })))
      const stored = [
        ...state.documents.values(),
        ...[...state.blobs.values()].flatMap((m) => [...m].flatMap(([name, b]) => [name, b.json])),
        ...[...state.writes.values()].flatMap((t) => [...t.values()].flatMap((k) => [...k.values()]))
      ]
      expect(state.blobs.get(e)!.size).toBeGreaterThan(2)
      const texts = stored.join("\n")
      for (const secret of forbidden([{ big: secretBig, chat: secretChat(36) }])) expect(texts).not.toContain(secret)
      // Equal values in two executions are stored under unrelated names.
      const names = (x: string) => new Set(state.blobs.get(x)!.keys())
      expect([...names(e)].filter((n) => names(other).has(n))).toEqual([])
      expect(names(e).size).toBe(names(other).size)
    }))

  it.effect("a flipped byte, a swapped or moved blob, or a plaintext blob fails reads with CheckpointDecodeError", () =>
    Effect.gen(function*() {
      const state = makeState()
      const layer = memoryStore(state).pipe(CheckpointStore.encrypted({ key }))
      const e = yield* freshExecution()
      const other = yield* freshExecution()
      const [saved] = yield* Effect.provide(Effect.all([saveSecrets(e), saveSecrets(other)]), layer)
      const blobs = state.blobs.get(e)!
      const otherBlobs = state.blobs.get(other)!
      const last = saved[saved.length - 1]!
      const damage = (change: () => void) =>
        Effect.gen(function*() {
          const before = new Map([...blobs].map(([n, b]) => [n, b.json]))
          change()
          const s = yield* store
          const error = yield* Effect.flip(s.load(last.id))
          expect(error).toMatchObject({ _tag: "CheckpointDecodeError", id: last.id })
          expect((yield* Effect.flip(s.list(e)))._tag).toBe("CheckpointDecodeError")
          for (const [n, json] of before) setJson(blobs, n, json)
          expect(view(yield* s.load(last.id))).toEqual(view(last))
        }).pipe(Effect.provide(layer))
      // Which blobs the last checkpoint references: all of the execution's, as stored (names).
      const [first, second] = [...blobs.keys()]
      // A flipped character in the ciphertext.
      yield* damage(() => {
        for (const [n, b] of blobs) {
          const sealed = JSON.parse(b.json) as { $sealed: string }
          const i = sealed.$sealed.length - 10
          const flipped = sealed.$sealed[i] === "A" ? "B" : "A"
          setJson(blobs, n, JSON.stringify({ $sealed: sealed.$sealed.slice(0, i) + flipped + sealed.$sealed.slice(i + 1) }))
        }
      })
      // Two blobs of the execution swapped.
      yield* damage(() => {
        const a = blobs.get(first!)!.json
        const b = blobs.get(second!)!.json
        for (const n of blobs.keys()) setJson(blobs, n, n === first ? b : a)
      })
      // Another execution's sealed blobs (of the same values) moved in.
      yield* damage(() => {
        const theirs = [...otherBlobs.values()].map((b) => b.json)
        ;[...blobs.keys()].forEach((n, i) => setJson(blobs, n, theirs[i % theirs.length]!))
      })
      // Plaintext where a sealed value belongs.
      yield* damage(() => {
        for (const n of blobs.keys()) setJson(blobs, n, JSON.stringify(secretBig))
      })
    }))

  it.effect("after a key rotation, blobs sealed with the previous key still open; new saves store them under the new key", () =>
    Effect.gen(function*() {
      const state = makeState()
      const e = yield* freshExecution()
      const saved = yield* Effect.provide(saveSecrets(e), memoryStore(state).pipe(CheckpointStore.encrypted({ key })))
      const before = new Set(state.blobs.get(e)!.keys())
      const rotated = memoryStore(state).pipe(CheckpointStore.encrypted({ key: newKey, previousKeys: [key] }))
      yield* Effect.gen(function*() {
        const s = yield* store
        expect((yield* s.list(e)).map(view)).toEqual(saved.map(view))
        const next = yield* mk(e, 13, { state: { big: secretBig, chat: secretChat(39) } })
        yield* s.save(next)
        const added = [...state.blobs.get(e)!.keys()].filter((n) => !before.has(n))
        expect(added.length).toBeGreaterThan(0)
        expect(view(yield* s.load(next.id))).toEqual(view(next))
        // Only the newest left: only blobs under the new key's names are left.
        yield* s.prune(e, 1)
        expect([...state.blobs.get(e)!.keys()].filter((n) => before.has(n))).toEqual([])
        expect(view(Option.getOrThrow(yield* s.latest(e)))).toEqual(view(next))
      }).pipe(Effect.provide(rotated))
      // Without the previous key, the old blobs do not open.
      const e2 = yield* freshExecution()
      const old = yield* Effect.provide(saveSecrets(e2), memoryStore(state).pipe(CheckpointStore.encrypted({ key })))
      const error = yield* Effect.flip(
        Effect.provide(Effect.flatMap(store, (s) => s.load(old[0]!.id)), memoryStore(state).pipe(CheckpointStore.encrypted({ key: newKey })))
      )
      expect(error._tag).toBe("CheckpointDecodeError")
    }))
})

describe("Encrypted blobs: File", () => {
  it.scopedLive("no plaintext and no content hash in any file or file name; a damaged or moved blob file fails reads with CheckpointDecodeError", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "store")
      const layer = FileStore.layer({ directory: dir }).pipe(CheckpointStore.encrypted({ key }))
      const e = yield* freshExecution()
      const other = yield* freshExecution()
      const [saved] = yield* Effect.provide(Effect.all([saveSecrets(e), saveSecrets(other)]), layer)
      const files = filesOf(dir)
      expect(files.filter(([rel]) => rel.includes(`${path.sep}blobs${path.sep}`)).length).toBeGreaterThan(4)
      for (const secret of forbidden([{ big: secretBig, chat: secretChat(36) }])) {
        for (const [rel, content] of files) {
          expect(rel).not.toContain(secret)
          expect(content, rel).not.toContain(secret)
        }
      }
      const last = saved[saved.length - 1]!
      const names = fs.readdirSync(blobDir(dir, e))
      const otherNames = fs.readdirSync(blobDir(dir, other))
      expect(names.filter((n) => otherNames.includes(n))).toEqual([])
      const read = (n: string) => fs.readFileSync(path.join(blobDir(dir, e), n), "utf8")
      const originals = new Map(names.map((n) => [n, read(n)]))
      const damage = (change: () => void) =>
        Effect.gen(function*() {
          change()
          const s = yield* store
          expect(yield* Effect.flip(s.load(last.id))).toMatchObject({ _tag: "CheckpointDecodeError", id: last.id })
          for (const [n, text] of originals) fs.writeFileSync(path.join(blobDir(dir, e), n), text)
          expect(view(yield* s.load(last.id))).toEqual(view(last))
        }).pipe(Effect.provide(layer))
      // A flipped character.
      yield* damage(() => {
        for (const n of names) {
          const text = read(n)
          const i = text.length - 12
          fs.writeFileSync(path.join(blobDir(dir, e), n), text.slice(0, i) + (text[i] === "A" ? "B" : "A") + text.slice(i + 1))
        }
      })
      // Rotated among themselves.
      yield* damage(() => names.forEach((n, i) => fs.writeFileSync(path.join(blobDir(dir, e), n), originals.get(names[(i + 1) % names.length]!)!)))
      // Moved in from the other execution.
      yield* damage(() =>
        names.forEach((n, i) => fs.copyFileSync(path.join(blobDir(dir, other), otherNames[i % otherNames.length]!), path.join(blobDir(dir, e), n)))
      )
      // Plaintext.
      yield* damage(() => names.forEach((n) => fs.writeFileSync(path.join(blobDir(dir, e), n), JSON.stringify(secretBig))))
    }))
})
