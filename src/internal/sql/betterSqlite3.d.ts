/**
 * The part of better-sqlite3 (the driver `@effect/sql-sqlite-node` installs)
 * the SQLite store uses for its own connection (`SqliteStore.layer`).
 *
 * @internal
 */
declare module "better-sqlite3" {
  export interface Statement {
    /** The statement returns rows (a `SELECT`, or a write with `RETURNING`). */
    readonly reader: boolean
    all(...params: ReadonlyArray<unknown>): Array<{ readonly [column: string]: unknown }>
    run(...params: ReadonlyArray<unknown>): unknown
  }
  export interface Database {
    prepare(text: string): Statement
    close(): void
  }
  const Database: new(filename: string) => Database
  export default Database
}
