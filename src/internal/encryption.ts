/**
 * Encryption at rest: a `Backend` that seals what it is given before the
 * store underneath writes it, and opens what it reads.
 *
 * AES-256-GCM, a fresh 96-bit IV per value. What is sealed: a checkpoint's
 * `state`, `metadata` and `runtime` (each separately), and every task write's
 * value. The associated data binds each sealed value to where it belongs —
 * the execution id, version and checkpoint id, and the field name (for a
 * write: the checkpoint id, task id and key) — so a sealed value copied into
 * another checkpoint (or field, or write) does not open. A checkpoint's sealed
 * values are bound to its unsealed header too (node name, `next`, parent id,
 * timestamp, whether it has a runtime): those stay readable but cannot be
 * edited without the checkpoint failing to open. Only the canonical base64url
 * spelling of a sealed value opens. A sealed value is
 * stored as `{ "$sealed": "ec1.<keyId>.<iv>.<ciphertext+tag>" }` (base64url),
 * so every store keeps it as the JSON object it expects.
 *
 * Keys are 32 bytes; `keyId` is a short hash of the key, so a value sealed
 * with a previous key finds its key after a rotation.
 *
 * Large values (blobs, see `packing.ts`) are sealed too, bound to their
 * execution and content hash. The store never sees their content hash: a
 * blob is stored under a name keyed by the key, the execution and the hash
 * (HMAC-SHA-256 with a key derived from the sealing key), so equal values in
 * two executions have unrelated names, and nobody without the key can test a
 * guess against a name. Within one execution, checkpoints that share a value
 * share its name (that is what stores it once). After a rotation, a blob is
 * looked up under the name of every key given, and stored again under the
 * new key's name on the next save that references it.
 *
 * @internal
 */
import { Effect, Either, Option, Redacted } from "effect"
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes } from "node:crypto"
import * as Checkpoint from "../Checkpoint.js"
import { CheckpointDecodeError, CheckpointEncodeError, InvalidOption } from "../CheckpointError.js"
import { type Backend, type BlobWrite, BlobsMissing, type Encoded, type EncodedWrite } from "../CheckpointBackend.js"
import type { TaskWrite } from "../CheckpointStore.js"
import { toEncoded } from "./codec.js"
import { isPlainObject } from "./json.js"

const VERSION = "ec1"
const KEY_BYTES = 32
const IV_BYTES = 12
const TAG_BYTES = 16

interface Key {
  readonly id: string
  readonly bytes: Uint8Array
  /** The key blob names are derived with (HKDF of the key: never the key itself). */
  readonly names: Uint8Array
}

const keyIdOf = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("base64url").slice(0, 11)

/** The keys, checked: the first seals, all open. */
export const checkKeys = (
  key: Redacted.Redacted<Uint8Array>,
  previousKeys: ReadonlyArray<Redacted.Redacted<Uint8Array>>
): Either.Either<ReadonlyArray<Key>, InvalidOption> => {
  const out: Array<Key> = []
  for (const [i, redacted] of [key, ...previousKeys].entries()) {
    const option = i === 0 ? "key" : `previousKeys[${i - 1}]`
    const bytes = Redacted.isRedacted(redacted) ? Redacted.value(redacted) : undefined
    if (!(bytes instanceof Uint8Array) || bytes.length !== KEY_BYTES) {
      return Either.left(new InvalidOption({ option, message: `${option} must be a Redacted Uint8Array of ${KEY_BYTES} bytes` }))
    }
    out.push({
      id: keyIdOf(bytes),
      bytes,
      names: new Uint8Array(hkdfSync("sha256", bytes, new Uint8Array(0), "effect-checkpoint blob names", 32))
    })
  }
  return Either.right(out)
}

const seal = (key: Key, plaintext: string, ad: string): { readonly $sealed: string } => {
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv("aes-256-gcm", key.bytes, iv)
  cipher.setAAD(Buffer.from(ad, "utf8"))
  const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final(), cipher.getAuthTag()])
  return { $sealed: `${VERSION}.${key.id}.${iv.toString("base64url")}.${body.toString("base64url")}` }
}

/** The JSON value sealed in `value`, or why it cannot be opened. */
const open = (keys: ReadonlyArray<Key>, value: unknown, ad: string): Either.Either<unknown, string> =>
  Either.flatMap(openText(keys, value, ad), (text) => {
    try {
      return Either.right(JSON.parse(text))
    } catch {
      return Either.left("what it holds is not JSON")
    }
  })

/** The text sealed in `value`, or why it cannot be opened. */
const openText = (keys: ReadonlyArray<Key>, value: unknown, ad: string): Either.Either<string, string> => {
  if (!isPlainObject(value) || typeof value.$sealed !== "string" || Object.keys(value).length !== 1) {
    return Either.left("it is not sealed (plaintext where a sealed value was expected)")
  }
  const parts = value.$sealed.split(".")
  if (parts.length !== 4 || parts[0] !== VERSION) return Either.left("its sealed form is not one this version reads")
  const key = keys.find((k) => k.id === parts[1])
  if (key === undefined) return Either.left(`it was sealed with a key that is not given (key id ${parts[1]})`)
  try {
    const iv = Buffer.from(parts[2]!, "base64url")
    const body = Buffer.from(parts[3]!, "base64url")
    // Node's base64 decoding is lenient (it skips characters it does not know and ignores the unused bits of
    // the last character): only the one canonical spelling of the bytes opens, so no edit of the stored text does.
    if (iv.toString("base64url") !== parts[2] || body.toString("base64url") !== parts[3]) {
      return Either.left("its sealed form is not canonical base64url (altered)")
    }
    if (iv.length !== IV_BYTES || body.length < TAG_BYTES) return Either.left("its sealed form is truncated")
    const decipher = createDecipheriv("aes-256-gcm", key.bytes, iv)
    decipher.setAAD(Buffer.from(ad, "utf8"))
    decipher.setAuthTag(body.subarray(body.length - TAG_BYTES))
    return Either.right(
      Buffer.concat([decipher.update(body.subarray(0, body.length - TAG_BYTES)), decipher.final()]).toString("utf8")
    )
  } catch {
    return Either.left("it does not open: altered, moved from another place, or sealed with another key")
  }
}

/**
 * What a checkpoint's sealed values are bound to: where they belong (execution
 * id, version, checkpoint id, field) and the checkpoint's unsealed header —
 * node name, `next`, parent id, timestamp and whether it has a runtime — so an
 * edited header (a `next` that skips a node, say) or a removed runtime makes
 * the checkpoint fail to open instead of loading as if valid. Ids hold no NUL;
 * the header is JSON, last.
 */
const checkpointAd = (
  cp: {
    readonly executionId: string
    readonly version: number
    readonly id: string
    readonly nodeName: string
    readonly next: ReadonlyArray<string>
    readonly parentId?: string | undefined
    readonly timestamp: Date
  },
  hasRuntime: boolean,
  field: string
) =>
  `checkpoint\u0000${cp.executionId}\u0000${cp.version}\u0000${cp.id}\u0000${field}\u0000${
    JSON.stringify([cp.nodeName, cp.next, cp.parentId ?? null, cp.timestamp.getTime(), hasRuntime])
  }`
const writeAd = (checkpointId: string, taskId: string, key: string) => `write\u0000${checkpointId}\u0000${taskId}\u0000${key}`
const blobAd = (executionId: string, hash: string) => `blob\u0000${executionId}\u0000${hash}`

/** The name a blob of `executionId` with content hash `hash` is stored under with `key` (22 characters of base64url, like a hash). */
const blobName = (key: Key, executionId: string, hash: string): string =>
  createHmac("sha256", key.names).update(blobAd(executionId, hash)).digest("base64url").slice(0, 22)

/** A backend that seals before `inner` writes and opens after it reads. */
export const sealedBackend = (inner: Backend, keys: ReadonlyArray<Key>): Backend => {
  const sealer = keys[0]!

  const sealCheckpoint = (e: Encoded): Effect.Effect<Encoded, CheckpointEncodeError> => {
    const cp = e.checkpoint
    const hasRuntime = e.runtime !== null
    // The references the store keeps: the names of the blobs, not their content hashes.
    const refs = e.refs.map((h) => blobName(sealer, cp.executionId, h))
    const sealed = new Checkpoint.Checkpoint({
      id: cp.id,
      executionId: cp.executionId,
      nodeName: cp.nodeName,
      state: seal(sealer, e.state, checkpointAd(cp, hasRuntime, "state")),
      metadata: seal(sealer, e.metadata, checkpointAd(cp, hasRuntime, "metadata")),
      timestamp: cp.timestamp,
      version: cp.version,
      next: cp.next,
      ...(cp.parentId === undefined ? {} : { parentId: cp.parentId }),
      ...(e.runtime === null ? {} : { runtime: seal(sealer, e.runtime, checkpointAd(cp, hasRuntime, "runtime")) })
    }, true)
    return Effect.mapBoth(toEncoded(sealed), {
      onFailure: (error) => new CheckpointEncodeError({ id: cp.id, message: error.message }),
      onSuccess: (encoded): Encoded => refs.length === 0 ? encoded : { ...encoded, refs }
    })
  }

  /** The insert options of a batch with its blobs sealed, and how to name a missing blob again by its content hash. */
  const sealOptions = <O extends { readonly blobs: ReadonlyArray<BlobWrite> }>(options: O, batch: ReadonlyArray<Encoded>) => {
    const blobs = options.blobs.map((b): BlobWrite => {
      const sealed = seal(sealer, b.json, blobAd(b.executionId, b.hash))
      return { executionId: b.executionId, hash: blobName(sealer, b.executionId, b.hash), json: JSON.stringify(sealed) }
    })
    const hashes = new Map<string, string>()
    for (const e of batch) for (const h of e.refs) hashes.set(blobName(sealer, e.checkpoint.executionId, h), h)
    const unname = (missing: BlobsMissing) =>
      new BlobsMissing({ executionId: missing.executionId, hashes: missing.hashes.map((n) => hashes.get(n) ?? n) })
    return { options: options.blobs.length === 0 ? options : { ...options, blobs }, unname }
  }

  const openCheckpoint = (cp: Checkpoint.Checkpoint): Effect.Effect<Checkpoint.Checkpoint, CheckpointDecodeError> => {
    const fail = (field: string, why: string) =>
      Effect.fail(new CheckpointDecodeError({ id: cp.id, message: `The ${field} of checkpoint ${JSON.stringify(cp.id)} cannot be opened: ${why}` }))
    const hasRuntime = cp.runtime !== undefined
    const state = open(keys, cp.state, checkpointAd(cp, hasRuntime, "state"))
    if (Either.isLeft(state)) return fail("state", state.left)
    const metadata = open(keys, cp.metadata, checkpointAd(cp, hasRuntime, "metadata"))
    if (Either.isLeft(metadata)) return fail("metadata", metadata.left)
    if (!isPlainObject(metadata.right)) return fail("metadata", "it is not a JSON object")
    let runtime: Option.Option<unknown> = Option.none()
    if (cp.runtime !== undefined) {
      const opened = open(keys, cp.runtime, checkpointAd(cp, hasRuntime, "runtime"))
      if (Either.isLeft(opened)) return fail("runtime", opened.left)
      if (!isPlainObject(opened.right)) return fail("runtime", "it is not a JSON object")
      runtime = Option.some(opened.right)
    }
    return Effect.succeed(new Checkpoint.Checkpoint({
      id: cp.id,
      executionId: cp.executionId,
      nodeName: cp.nodeName,
      state: state.right as Checkpoint.Json,
      metadata: metadata.right as Checkpoint.JsonObject,
      timestamp: cp.timestamp,
      version: cp.version,
      next: cp.next,
      ...(cp.parentId === undefined ? {} : { parentId: cp.parentId }),
      ...(Option.isSome(runtime) ? { runtime: runtime.value as Checkpoint.JsonObject } : {})
    }, true))
  }

  const sealWrites = (checkpointId: string, taskId: string, writes: ReadonlyArray<EncodedWrite>): ReadonlyArray<EncodedWrite> =>
    writes.map((w) => {
      const value = seal(sealer, w.json, writeAd(checkpointId, taskId, w.key))
      return { key: w.key, value, json: JSON.stringify(value) }
    })

  const openWrite = (checkpointId: string) => (w: TaskWrite): Effect.Effect<TaskWrite, CheckpointDecodeError> => {
    const value = open(keys, w.value, writeAd(checkpointId, w.taskId, w.key))
    return Either.isLeft(value)
      ? Effect.fail(new CheckpointDecodeError({
        id: checkpointId,
        message: `The write ${JSON.stringify(w.key)} of task ${JSON.stringify(w.taskId)} of checkpoint ${JSON.stringify(checkpointId)} cannot be opened: ${value.left}`
      }))
      : Effect.succeed({ taskId: w.taskId, key: w.key, value: value.right as Checkpoint.Json })
  }

  const openAll = (cps: ReadonlyArray<Checkpoint.Checkpoint>) => Effect.forEach(cps, openCheckpoint)
  const openSome = (cp: Option.Option<Checkpoint.Checkpoint>) =>
    Option.isNone(cp) ? Effect.succeed(cp) : Effect.asSome(openCheckpoint(cp.value))

  const innerBlobs = inner.blobs
  const blobs: Backend["blobs"] = innerBlobs === undefined ? undefined : {
    load: (executionId, hashes) => {
      // Under the name of every key: a blob stored before a rotation is found too.
      const names = hashes.map((h) => keys.map((k) => blobName(k, executionId, h)))
      return Effect.flatMap(innerBlobs.load(executionId, names.flat()), (found) => {
        const out = new Map<string, string>()
        for (const [i, hash] of hashes.entries()) {
          const name = names[i]!.find((n) => found.has(n))
          if (name === undefined) continue
          let value: unknown
          try {
            value = JSON.parse(found.get(name)!)
          } catch {
            value = undefined
          }
          const text = openText(keys, value, blobAd(executionId, hash))
          if (Either.isLeft(text)) {
            return Effect.fail(new CheckpointDecodeError({
              message: `A large value (blob ${name}) of execution ${JSON.stringify(executionId)} cannot be opened: ${text.left}`
            }))
          }
          out.set(hash, text.right)
        }
        return Effect.succeed(out)
      })
    }
  }

  return {
    ...inner,
    name: inner.name,
    blobs,
    insert: (batch, options) =>
      Effect.flatMap(Effect.forEach(batch, sealCheckpoint), (sealed) => {
        const { options: sealedOptions, unname } = sealOptions(options, batch)
        return Effect.catchTag(inner.insert(sealed, sealedOptions), "BlobsMissing", (m) => Effect.fail(unname(m)))
      }),
    insertOne: (e, options) =>
      Effect.flatMap(sealCheckpoint(e), (sealed) => {
        const { options: sealedOptions, unname } = sealOptions(options, [e])
        return Effect.catchTag(
          inner.insertOne === undefined ? inner.insert([sealed], sealedOptions) : inner.insertOne(sealed, sealedOptions),
          "BlobsMissing",
          (m) => Effect.fail(unname(m))
        )
      }),
    load: (id) => Effect.flatMap(inner.load(id), openSome),
    list: (executionId, afterVersion, limit) => Effect.flatMap(inner.list(executionId, afterVersion, limit), openAll),
    latest: (executionId) => Effect.flatMap(inner.latest(executionId), openSome),
    saveWrites: (checkpointId, taskId, writes, options) =>
      inner.saveWrites(checkpointId, taskId, sealWrites(checkpointId, taskId, writes), options),
    listWrites: (checkpointId) => Effect.flatMap(inner.listWrites(checkpointId), Effect.forEach(openWrite(checkpointId)))
  }
}
