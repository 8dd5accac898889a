/**
 * Identifier rules shared by the id schemas, the stores' own guards, and the
 * table-name / key-prefix checks of the SQL and Redis layers.
 *
 * @internal
 */
import { InvalidIdentifier, type IdentifierKind } from "../CheckpointError.js"

/** 1–128 chars of `[A-Za-z0-9._:-]`, not starting with `.`. */
const ID_PATTERN = /^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}$/

/** Names that would touch an object's prototype when used as a key. */
const RESERVED = new Set(["__proto__", "constructor", "prototype"])

/** A SQL table or schema name we splice into statements: `[A-Za-z_][A-Za-z0-9_]{0,62}`. */
const SQL_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

/** A Redis key prefix: `[A-Za-z0-9_:.-]{0,64}` (never a glob character). */
const PREFIX_PATTERN = /^[A-Za-z0-9_:.-]{0,64}$/

/** Why `value` is not a valid checkpoint or execution id, or `undefined` if it is. */
export const idProblem = (value: unknown): string | undefined => {
  if (typeof value !== "string") return "must be a string"
  if (value.length === 0) return "must not be empty"
  if (value.length > 128) return "must be at most 128 characters"
  if (!ID_PATTERN.test(value)) {
    return value.startsWith(".")
      ? "must not start with '.'"
      : "may only contain the characters A-Z a-z 0-9 . _ : -"
  }
  if (RESERVED.has(value)) return "is a reserved name"
  return undefined
}

/** `true` when `value` is a valid checkpoint or execution id. */
export const isValidId = (value: unknown): value is string =>
  typeof value === "string" && ID_PATTERN.test(value) && !RESERVED.has(value)

const shown = (value: unknown): string => {
  const text = typeof value === "string" ? value : String(value)
  return text.length > 200 ? `${text.slice(0, 200)}…` : text
}

/** Builds the {@link InvalidIdentifier} for a refused value. */
export const invalid = (kind: IdentifierKind, value: unknown, reason: string): InvalidIdentifier =>
  new InvalidIdentifier({ kind, value: shown(value), reason })

/** The error for `value` as a checkpoint or execution id, or `undefined` if it is valid. */
export const checkId = (kind: "CheckpointId" | "ExecutionId", value: unknown): InvalidIdentifier | undefined => {
  if (isValidId(value)) return undefined
  return invalid(kind, value, idProblem(value) ?? "is not a valid identifier")
}

/** The error for a SQL table or schema name, or `undefined` if it is valid. */
export const checkSqlName = (kind: "tableName" | "schemaName", value: unknown): InvalidIdentifier | undefined =>
  typeof value === "string" && SQL_NAME_PATTERN.test(value)
    ? undefined
    : invalid(kind, value, "must match [A-Za-z_][A-Za-z0-9_]{0,62}")

/** The error for a Redis key prefix, or `undefined` if it is valid. */
export const checkPrefix = (value: unknown): InvalidIdentifier | undefined =>
  typeof value === "string" && PREFIX_PATTERN.test(value) && !RESERVED.has(value)
    ? undefined
    : invalid("prefix", value, "must match [A-Za-z0-9_:.-]{0,64}")
