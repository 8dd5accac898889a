/**
 * The state's codec in a run: the graph's Schema to and from the JSON a
 * checkpoint stores, with the state's version and its migrations, and the
 * encoding of partial updates (task writes, send inputs) field by field.
 *
 * Stack overflows (a deeply recursive state) become typed errors, never
 * defects.
 *
 * @internal
 */
import { Either, ParseResult, Schema, SchemaAST } from "effect"
import type * as Checkpoint from "../../Checkpoint.js"
import { CheckpointDecodeError, CheckpointEncodeError } from "../../CheckpointError.js"
import { isPlainObject, jsonProblem } from "../json.js"

export interface StateCodec<S> {
  readonly version: number
  /** The state encoded with the Schema, checked to be JSON. `node` names who produced it, for the error. */
  readonly encode: (state: S, node: string | undefined) => Either.Either<Checkpoint.Json, CheckpointEncodeError>
  /** A checkpoint's state decoded (migrated first when it is older). */
  readonly decode: (
    cp: { readonly id: string; readonly state: Checkpoint.Json; readonly runtime?: Checkpoint.JsonObject | undefined }
  ) => Either.Either<S, CheckpointDecodeError>
  /** An update (the fields a task wrote) as a JSON object, for a task write or a send input. */
  readonly encodeUpdate: (update: unknown, node: string) => Either.Either<Checkpoint.JsonObject, CheckpointEncodeError>
  /** Reads back what {@link encodeUpdate} made. */
  readonly decodeUpdate: (value: unknown, checkpointId: string) => Either.Either<unknown, CheckpointDecodeError>
}

const formatted = (e: ParseResult.ParseError) => ParseResult.TreeFormatter.formatErrorSync(e)

/** Runs `f`, turning a stack overflow (or any throw) into `onThrow(message)`. */
const guarded = <A, E>(f: () => Either.Either<A, E>, onThrow: (message: string) => E): Either.Either<A, E> => {
  try {
    return f()
  } catch (e) {
    return Either.left(onThrow(
      e instanceof RangeError
        ? `it is nested too deeply to process (${e.message})`
        : e instanceof Error
        ? e.message
        : String(e)
    ))
  }
}

const encodeFailure = (node: string | undefined, message: string) =>
  new CheckpointEncodeError({
    message: `The state${node === undefined ? "" : ` after node ${JSON.stringify(node)}`} cannot be saved: ${message}`
  })

/** The fields of a Struct or Class schema (with their property signatures), or `undefined`. */
const fieldsOf = (schema: Schema.Schema<any, any>): Record<string, Schema.Struct.Field> | undefined => {
  const fields = (schema as { readonly fields?: unknown }).fields
  return typeof fields === "object" && fields !== null ? fields as Record<string, Schema.Struct.Field> : undefined
}

interface FieldCodec {
  readonly encode: (value: unknown) => Either.Either<unknown, ParseResult.ParseError>
  readonly decode: (value: unknown) => Either.Either<unknown, ParseResult.ParseError>
}

export const makeStateCodec = <S>(
  schema: Schema.Schema<S, any>,
  version: number,
  migrations: ReadonlyMap<number, (encoded: any) => unknown>
): StateCodec<S> => {
  const encodeState = Schema.encodeEither(schema)
  const decodeState = Schema.decodeUnknownEither(schema, { onExcessProperty: "error" })
  const fields = fieldsOf(schema)
  /** Per field: a one-field Struct (so optional and renamed fields work), and its encoded key. */
  const fieldCodecs = new Map<string, FieldCodec>()
  const fieldCodec = (name: string): FieldCodec | undefined => {
    const cached = fieldCodecs.get(name)
    if (cached !== undefined || fields === undefined || !Object.hasOwn(fields, name)) return cached
    const one = Schema.Struct({ [name]: fields[name]! }) as unknown as Schema.Schema<any, any>
    const encodedAst = SchemaAST.encodedAST(one.ast)
    const encodedKey = SchemaAST.isTypeLiteral(encodedAst) && encodedAst.propertySignatures.length === 1
      ? encodedAst.propertySignatures[0]!.name
      : name
    const encodeOne = Schema.encodeEither(one)
    const decodeOne = Schema.decodeUnknownEither(one, { onExcessProperty: "error" })
    const codec: FieldCodec = {
      encode: (value) => Either.map(encodeOne({ [name]: value } as any), (o) => (o as Record<PropertyKey, unknown>)[encodedKey]),
      decode: (value) =>
        Either.map(decodeOne(value === undefined ? {} : { [encodedKey]: value }), (o) => (o as Record<string, unknown>)[name])
    }
    fieldCodecs.set(name, codec)
    return codec
  }

  const encode = (state: S, node: string | undefined) =>
    guarded(
      (): Either.Either<Checkpoint.Json, CheckpointEncodeError> => {
        const result = encodeState(state)
        if (Either.isLeft(result)) {
          return Either.left(encodeFailure(node, `it does not match the graph's Schema: ${formatted(result.left)}`))
        }
        // Whether it is JSON is checked once, by the store, whose error names the node too.
        return Either.right(result.right as Checkpoint.Json)
      },
      (message) => encodeFailure(node, message)
    )

  const decodeFailure = (id: string, message: string) =>
    new CheckpointDecodeError({ id, message: `The state of checkpoint ${JSON.stringify(id)} ${message}` })

  /** The encoded state brought up to `version`. */
  const migrate = (id: string, state: unknown, from: number): Either.Either<unknown, CheckpointDecodeError> => {
    if (from === version) return Either.right(state)
    if (from > version) {
      return Either.left(decodeFailure(
        id,
        `was saved at state version ${from}, newer than this graph's version ${version}: upgrade the code before resuming it`
      ))
    }
    let current = state
    for (let v = from; v < version; v++) {
      const step = migrations.get(v)
      if (step === undefined) {
        return Either.left(decodeFailure(
          id,
          `was saved at state version ${from}; this graph is at version ${version} and has no migration from version ${v}`
        ))
      }
      try {
        current = step(current)
      } catch (e) {
        return Either.left(decodeFailure(
          id,
          `could not be migrated from version ${v} to ${v + 1}: ${e instanceof Error ? e.message : String(e)}`
        ))
      }
    }
    return Either.right(current)
  }

  const decode: StateCodec<S>["decode"] = (cp) =>
    guarded(
      (): Either.Either<S, CheckpointDecodeError> => {
        const v = cp.runtime?.v
        const from = v === undefined ? 1 : v
        if (typeof from !== "number" || !Number.isInteger(from) || from < 1) {
          return Either.left(decodeFailure(cp.id, `has a state version that is not a version: ${JSON.stringify(v)}`))
        }
        return Either.flatMap(migrate(cp.id, cp.state, from), (state) =>
          Either.mapLeft(
            decodeState(state),
            (e) => decodeFailure(cp.id, `does not match the graph's Schema: ${formatted(e)}`)
          ))
      },
      (message) => decodeFailure(cp.id, message)
    )

  const encodeUpdate: StateCodec<S>["encodeUpdate"] = (update, node) =>
    guarded(
      (): Either.Either<Checkpoint.JsonObject, CheckpointEncodeError> => {
        if (fields === undefined || !isPlainObject(update)) {
          // A whole state (the state is not a struct, or the node returned a class instance or a non-object).
          return Either.map(encode(update as S, node), (state) => ({ state }))
        }
        const out: Record<string, unknown> = {}
        for (const key of Object.keys(update)) {
          const value = update[key]
          if (value === undefined) continue
          const codec = fieldCodec(key)
          if (codec === undefined) {
            return Either.left(encodeFailure(node, `the update writes ${JSON.stringify(key)}, which is not a field of the state`))
          }
          const encoded = codec.encode(value)
          if (Either.isLeft(encoded)) {
            return Either.left(encodeFailure(node, `the update of ${JSON.stringify(key)} does not match the Schema: ${formatted(encoded.left)}`))
          }
          if (encoded.right !== undefined) out[key] = encoded.right
        }
        const problem = jsonProblem(out, "update")
        return problem === undefined
          ? Either.right({ fields: out as Checkpoint.JsonObject })
          : Either.left(encodeFailure(node, problem))
      },
      (message) => encodeFailure(node, message)
    )

  const decodeUpdate: StateCodec<S>["decodeUpdate"] = (value, checkpointId) =>
    guarded(
      (): Either.Either<unknown, CheckpointDecodeError> => {
        const broken = (message: string) =>
          Either.left(new CheckpointDecodeError({ id: checkpointId, message: `A task write of checkpoint ${JSON.stringify(checkpointId)} ${message}` }))
        if (!isPlainObject(value)) return broken("is not an update")
        if (Object.hasOwn(value, "state")) {
          return Either.mapLeft(decodeState(value.state), (e) => new CheckpointDecodeError({ id: checkpointId, message: formatted(e) }))
        }
        if (!isPlainObject(value.fields)) return broken("is not an update")
        const out: Record<string, unknown> = {}
        for (const key of Object.keys(value.fields)) {
          const codec = fieldCodec(key)
          if (codec === undefined) return broken(`writes ${JSON.stringify(key)}, which is not a field of the state`)
          const decoded = codec.decode(value.fields[key])
          if (Either.isLeft(decoded)) return broken(`does not match the Schema: ${formatted(decoded.left)}`)
          out[key] = decoded.right
        }
        return Either.right(out)
      },
      (message) => new CheckpointDecodeError({ id: checkpointId, message })
    )

  return { version, encode, decode, encodeUpdate, decodeUpdate }
}
