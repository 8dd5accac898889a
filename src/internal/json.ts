/**
 * JSON value checks. User state and metadata must round-trip exactly, so they
 * are checked once before encoding instead of letting `JSON.stringify` quietly
 * turn a `Date` into a string, drop an `undefined` or turn `NaN` into `null`.
 *
 * @internal
 */

/** The deepest nesting we accept (deeper values are refused, not crashed on). */
export const MAX_DEPTH = 1000

/** `true` for `{}`-style objects (prototype `Object.prototype` or `null`). */
export const isPlainObject = (value: unknown): value is Record<string, unknown> => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

const describe = (value: unknown): string => {
  if (value === undefined) return "undefined"
  if (typeof value === "bigint") return "a BigInt"
  if (typeof value === "function") return "a function"
  if (typeof value === "symbol") return "a symbol"
  if (typeof value === "number") return String(value)
  const name = (value as object).constructor?.name
  return name ? `an instance of ${name}` : "a non-plain object"
}

const pathOf = (root: string, keys: ReadonlyArray<string | number>): string => {
  let path = root
  for (const key of keys) {
    path += typeof key === "number"
      ? `[${key}]`
      : /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key)
      ? `.${key}`
      : `[${JSON.stringify(key)}]`
  }
  return path
}

/**
 * Why `value` is not a JSON value that survives `JSON.stringify`/`JSON.parse`
 * unchanged, or `undefined` when it is. The answer names the offending path.
 * (The walk keeps the keys it went through and writes the path only for a
 * problem: a save checks every state, and most have none.)
 */
export const jsonProblem = (value: unknown, root = "$"): string | undefined => {
  const ancestors = new Set<object>()
  const keys: Array<string | number> = []
  const at = () => pathOf(root, keys)
  /** Visits `v` at `key` below the current path (the path keeps `key` only when a problem is found there). */
  const child = (key: string | number, v: unknown, depth: number): string | undefined => {
    keys.push(key)
    const problem = visit(v, depth + 1)
    if (problem === undefined) keys.pop()
    return problem
  }
  const visit = (v: unknown, depth: number): string | undefined => {
    switch (typeof v) {
      case "string":
      case "boolean":
        return undefined
      case "number":
        return Number.isFinite(v) ? undefined : `${at()} is ${v}, which JSON cannot represent`
      case "object": {
        if (v === null) return undefined
        if (ancestors.has(v)) return `${at()} is a cycle`
        if (depth >= MAX_DEPTH) return `${at()} is nested deeper than ${MAX_DEPTH} levels`
        if (Array.isArray(v)) {
          ancestors.add(v)
          for (let i = 0; i < v.length; i++) {
            const problem = child(i, v[i], depth)
            if (problem !== undefined) return problem
          }
          ancestors.delete(v)
          return undefined
        }
        if (!isPlainObject(v)) {
          return `${at()} is ${describe(v)}, not a JSON value` +
            (v instanceof Date ? " (in a state Schema, use Schema.Date, which encodes to ISO text, not Schema.DateFromSelf)" : "")
        }
        ancestors.add(v)
        for (const key of Object.keys(v)) {
          const problem = child(key, v[key], depth)
          if (problem !== undefined) return problem
        }
        ancestors.delete(v)
        return undefined
      }
      default:
        return `${at()} is ${describe(v)}, not a JSON value`
    }
  }
  return visit(value, 0)
}
