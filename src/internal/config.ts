/**
 * The `Config` pieces the stores' `layerConfig` share.
 *
 * @internal
 */
import { Config } from "effect"

/** A string variable that must not be empty when set, with a default when it is not. */
export const nonEmptyString = (name: string, fallback: string): Config.Config<string> =>
  Config.string(name).pipe(
    Config.validate({ message: "must not be empty", validation: (s) => s.length > 0 }),
    Config.withDefault(fallback)
  )
