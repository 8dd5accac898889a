/**
 * Large states, stored once: a checkpoint whose state has a large field keeps
 * that field's value in a blob (content-addressed, per execution, shared by
 * every checkpoint that references it), and an array field that only grew
 * keeps its elements in chunks — each checkpoint writes only the elements it
 * appended. Chunks merge like a binary counter (a new chunk merges with the
 * one before it while it is at least as long), so a checkpoint references
 * O(log n) chunks, an element is rewritten O(log n) times, and at every
 * power of two the field is one chunk: a full snapshot.
 *
 * The stored state keeps the field's key with `null` in its place (so key
 * order survives), and the stored `runtime` gets `$pack`:
 * `{ field: { b: hash } | { c: [hash, …] } }`. Loading puts the values back:
 * what `load`, `list` and `latest` return is the whole state, the same JSON
 * as a full snapshot.
 *
 * The packer remembers, per execution, the last text of each large field and
 * which blobs it knows are stored, so an untouched value is not sent again.
 * It remembers as it packs (the checkpoints of one batch follow each other);
 * when a save fails, the store kit makes it forget the execution. When it is
 * wrong (another process pruned or cleared the execution), the store refuses
 * the save (`BlobsMissing`) and the packer sends everything.
 *
 * @internal
 */
import { createHash } from "node:crypto"
import * as Checkpoint from "../Checkpoint.js"
import { isPlainObject } from "./json.js"

/** The default size (in JSON characters) above which a field goes to a blob. */
export const DEFAULT_THRESHOLD = 4096
/** How many executions a packer remembers. */
const REMEMBERED = 512

export const hashOf = (text: string): string => createHash("sha256").update(text).digest("base64url").slice(0, 22)

interface Chunk {
  readonly hash: string
  readonly text: string
  readonly count: number
}

type FieldMemory =
  | { readonly kind: "blob"; readonly text: string; readonly hash: string; readonly value: unknown }
  | { readonly kind: "chunks"; readonly text: string; readonly chunks: ReadonlyArray<Chunk> }

interface ExecutionMemory {
  readonly fields: Map<string, FieldMemory>
  /** Blobs this packer knows are stored for the execution. */
  readonly known: Set<string>
}

/** A blob to store with a save. */
export interface BlobWrite {
  readonly executionId: string
  readonly hash: string
  readonly json: string
}

export interface Packed {
  readonly checkpoint: Checkpoint.Checkpoint
  readonly refs: ReadonlyArray<string>
  readonly blobs: ReadonlyArray<BlobWrite>
}

/** `[a,b]` + `[c]` → `[a,b,c]` (texts of JSON arrays). */
const joinArrays = (a: string, b: string): string => a === "[]" ? b : b === "[]" ? a : `${a.slice(0, -1)},${b.slice(1)}`

/** The chunks of an array field whose text is `text` (of `count` elements), reusing `previous` when it only grew. */
const chunksOf = (previous: FieldMemory | undefined, text: string, count: number): ReadonlyArray<Chunk> => {
  const chunks: Array<Chunk> = []
  if (previous?.kind === "chunks") {
    const before = previous.text
    const prevCount = previous.chunks.reduce((n, c) => n + c.count, 0)
    const prefix = before.slice(0, -1)
    const grew = count > prevCount && text.startsWith(prefix) &&
      (before === "[]" || text.charCodeAt(prefix.length) === 44 /* , */)
    if (grew) {
      chunks.push(...previous.chunks)
      const appended = `[${text.slice(before === "[]" ? 1 : prefix.length + 1, -1)}]`
      chunks.push({ hash: hashOf(appended), text: appended, count: count - prevCount })
      while (chunks.length >= 2 && chunks[chunks.length - 1]!.count >= chunks[chunks.length - 2]!.count) {
        const last = chunks.pop()!
        const before2 = chunks.pop()!
        const merged = joinArrays(before2.text, last.text)
        chunks.push({ hash: hashOf(merged), text: merged, count: before2.count + last.count })
      }
      return chunks
    }
    if (text === before) return previous.chunks
  }
  return [{ hash: hashOf(text), text, count }]
}

export interface Packer {
  /**
   * Whether `cp` may hold large values: its execution has some, or its
   * state's JSON (`stateLength` characters) is longer than the threshold.
   * Small states of executions without large values cost nothing more.
   */
  readonly worth: (cp: Checkpoint.Checkpoint, stateLength: number) => boolean
  /** The checkpoint as it is stored: large fields out, with the blobs to send and the hashes it references. */
  readonly pack: (cp: Checkpoint.Checkpoint) => Packed | undefined
  /** Forget what the packer knows of an execution (a save found a blob missing). */
  readonly forget: (executionId: string) => void
  /** Note blobs known to be stored (read back from the store). */
  readonly know: (executionId: string, hashes: ReadonlyArray<string>) => void
}

export const makePacker = (threshold: number): Packer => {
  const memory = new Map<string, ExecutionMemory>()
  const recall = (executionId: string): ExecutionMemory => {
    let m = memory.get(executionId)
    if (m === undefined) {
      m = { fields: new Map(), known: new Set() }
      memory.set(executionId, m)
      if (memory.size > REMEMBERED) memory.delete(memory.keys().next().value!)
    } else {
      memory.delete(executionId)
      memory.set(executionId, m)
    }
    return m
  }
  return {
    worth: (cp, stateLength) => stateLength > threshold || (memory.get(cp.executionId)?.fields.size ?? 0) > 0,
    forget: (executionId) => memory.delete(executionId),
    know: (executionId, hashes) => {
      const m = recall(executionId)
      for (const h of hashes) m.known.add(h)
    },
    pack: (cp) => {
      const state = cp.state
      if (!isPlainObject(state)) return undefined
      let packed: Record<string, Checkpoint.Json> | undefined
      let pack: Record<string, Checkpoint.Json> | undefined
      const remembered: Array<readonly [string, FieldMemory]> = []
      const m = memory.get(cp.executionId)
      for (const key of Object.keys(state)) {
        const value = state[key]
        const previous = m?.fields.get(key)
        let field: FieldMemory
        if (previous?.kind === "blob" && previous.value === value && typeof value !== "object") {
          // The same (primitive) value as last time: not even stringified again.
          field = previous
        } else {
          const text = JSON.stringify(value)
          if (text === undefined || text.length <= threshold) continue
          field = Array.isArray(value)
            ? { kind: "chunks", text, chunks: chunksOf(previous, text, value.length) }
            : {
              kind: "blob",
              text,
              value,
              hash: previous?.kind === "blob" && previous.text === text ? previous.hash : hashOf(text)
            }
        }
        remembered.push([key, field])
        packed ??= { ...state } as Record<string, Checkpoint.Json>
        packed[key] = null
        pack ??= {}
        // An own property even for "__proto__" (an assignment would set the prototype).
        Object.defineProperty(pack, key, {
          value: field.kind === "blob" ? { b: field.hash } : { c: field.chunks.map((c) => c.hash) },
          enumerable: true,
          writable: true,
          configurable: true
        })
      }
      if (packed === undefined || pack === undefined) return undefined
      const refs = new Set<string>()
      const blobs: Array<BlobWrite> = []
      for (const [, field] of remembered) {
        const parts = field.kind === "blob" ? [{ hash: field.hash, text: field.text }] : field.chunks
        for (const part of parts) {
          if (refs.has(part.hash)) continue
          refs.add(part.hash)
          if (m?.known.has(part.hash) !== true) blobs.push({ executionId: cp.executionId, hash: part.hash, json: part.text })
        }
      }
      const { runtime, ...rest } = cp
      const checkpoint = new Checkpoint.Checkpoint({
        ...rest,
        state: packed,
        runtime: { ...runtime, $pack: pack }
      }, true)
      const mem = recall(cp.executionId)
      for (const [key, field] of remembered) mem.fields.set(key, field)
      for (const h of refs) mem.known.add(h)
      return { checkpoint, refs: [...refs], blobs }
    }
  }
}

/** The hashes a stored checkpoint references, or `[]`. */
export const refsOf = (cp: Checkpoint.Checkpoint): ReadonlyArray<string> => {
  const pack = cp.runtime?.$pack
  if (!isPlainObject(pack)) return []
  const out: Array<string> = []
  for (const entry of Object.values(pack)) {
    if (!isPlainObject(entry)) continue
    if (typeof entry.b === "string") out.push(entry.b)
    else if (Array.isArray(entry.c)) for (const h of entry.c) if (typeof h === "string") out.push(h)
  }
  return out
}

/**
 * The whole checkpoint from its stored form and the blobs it references
 * (`blobs`: hash → JSON text); a description of what is wrong otherwise.
 */
export const unpack = (
  cp: Checkpoint.Checkpoint,
  blobs: ReadonlyMap<string, string>
): { readonly checkpoint: Checkpoint.Checkpoint } | { readonly problem: string } => {
  const pack = cp.runtime?.$pack
  if (pack === undefined) return { checkpoint: cp }
  if (!isPlainObject(pack) || !isPlainObject(cp.state)) return { problem: "its large values are not recorded as this version writes them" }
  const state: Record<string, unknown> = { ...cp.state }
  const read = (hash: unknown): unknown => {
    const text = typeof hash === "string" ? blobs.get(hash) : undefined
    if (text === undefined) throw new Error(`the stored value ${JSON.stringify(hash)} is missing`)
    return JSON.parse(text)
  }
  try {
    for (const [key, entry] of Object.entries(pack)) {
      if (!isPlainObject(entry) || !Object.hasOwn(state, key)) throw new Error(`the large value of ${JSON.stringify(key)} is not recorded properly`)
      if (entry.b !== undefined) state[key] = read(entry.b)
      else if (Array.isArray(entry.c)) {
        const out: Array<unknown> = []
        for (const hash of entry.c) {
          const part = read(hash)
          if (!Array.isArray(part)) throw new Error(`the stored part ${JSON.stringify(hash)} of ${JSON.stringify(key)} is not an array`)
          out.push(...part)
        }
        state[key] = out
      } else throw new Error(`the large value of ${JSON.stringify(key)} is not recorded properly`)
    }
  } catch (e) {
    return { problem: e instanceof Error ? e.message : String(e) }
  }
  const { $pack: _, ...runtime } = cp.runtime!
  const { runtime: __, ...rest } = cp
  return {
    checkpoint: new Checkpoint.Checkpoint({
      ...rest,
      state: state as Checkpoint.Json,
      ...(Object.keys(runtime).length === 0 ? {} : { runtime })
    }, true)
  }
}
