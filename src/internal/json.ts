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

const pathOf = (path: string, key: string): string =>
  /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`

/**
 * Why `value` is not a JSON value that survives `JSON.stringify`/`JSON.parse`
 * unchanged, or `undefined` when it is. The answer names the offending path.
 */
export const jsonProblem = (value: unknown, root = "$"): string | undefined => {
  const ancestors = new Set<object>()
  const visit = (v: unknown, path: string, depth: number): string | undefined => {
    switch (typeof v) {
      case "string":
      case "boolean":
        return undefined
      case "number":
        return Number.isFinite(v) ? undefined : `${path} is ${v}, which JSON cannot represent`
      case "object": {
        if (v === null) return undefined
        if (ancestors.has(v)) return `${path} is a cycle`
        if (depth >= MAX_DEPTH) return `${path} is nested deeper than ${MAX_DEPTH} levels`
        if (Array.isArray(v)) {
          ancestors.add(v)
          for (let i = 0; i < v.length; i++) {
            const problem = visit(v[i], `${path}[${i}]`, depth + 1)
            if (problem !== undefined) return problem
          }
          ancestors.delete(v)
          return undefined
        }
        if (!isPlainObject(v)) {
          return `${path} is ${describe(v)}, not a JSON value` +
            (v instanceof Date ? " (in a state Schema, use Schema.Date, which encodes to ISO text, not Schema.DateFromSelf)" : "")
        }
        ancestors.add(v)
        for (const key of Object.keys(v)) {
          const problem = visit(v[key], pathOf(path, key), depth + 1)
          if (problem !== undefined) return problem
        }
        ancestors.delete(v)
        return undefined
      }
      default:
        return `${path} is ${describe(v)}, not a JSON value`
    }
  }
  return visit(value, root, 0)
}
