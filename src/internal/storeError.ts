/**
 * Building `CheckpointStoreError`s that never leak a secret.
 *
 * @internal
 */
import { Cause, Effect } from "effect"
import { CheckpointStoreError } from "../CheckpointError.js"

/** `scheme://user:password@` → `scheme://user:***@`, and every known secret → `***`. */
export const redact = (text: string, secrets: ReadonlyArray<string> = []): string => {
  let out = text.replace(/([A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s:/@]*):[^\s@/]*@/g, "$1:***@")
  for (const secret of secrets) {
    if (secret.length > 0) out = out.split(secret).join("***")
  }
  return out
}

const causeMessage = (cause: unknown): string => {
  if (Cause.isCause(cause)) return Cause.pretty(cause)
  if (cause instanceof Error) return cause.message
  if (typeof cause === "object" && cause !== null && "message" in cause && typeof cause.message === "string") {
    return cause.message
  }
  return String(cause)
}

/** A plain, redacted copy of an error: its name, message and code, nothing else. */
const sanitize = (cause: unknown, secrets: ReadonlyArray<string>): Record<string, string> => {
  const out: Record<string, string> = { message: redact(causeMessage(cause), secrets) }
  if (typeof cause === "object" && cause !== null) {
    const c = cause as Record<string, unknown>
    if (typeof c.name === "string") out.name = c.name
    if (typeof c.code === "string" || typeof c.code === "number") out.code = String(c.code)
    if (typeof c._tag === "string") out.tag = c._tag
    if (typeof c.reason === "string") out.reason = c.reason
  }
  return out
}

/**
 * A `CheckpointStoreError` for `cause`, with every secret (and any password in
 * a URL) removed from the message and the cause.
 */
export const storeError = (
  backend: string,
  operation: string,
  cause: unknown,
  secrets: ReadonlyArray<string> = []
): CheckpointStoreError =>
  new CheckpointStoreError({
    backend,
    operation,
    message: `${backend} ${operation} failed: ${redact(causeMessage(cause), secrets)}`,
    cause: sanitize(cause, secrets)
  })

/** Maps any failure of `effect` to a redacted `CheckpointStoreError`. */
export const mapStoreError = (backend: string, operation: string, secrets: ReadonlyArray<string> = []) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, CheckpointStoreError, R> =>
  Effect.mapError(effect, (e) => storeError(backend, operation, e, secrets))
