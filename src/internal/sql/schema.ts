/**
 * The tables of a SQL store and their migrations, for every dialect.
 *
 * A store named `t` has four tables: `t` (the checkpoints, as in 0.1.0, plus
 * `runtime` and `refs`), `t_executions` (one record per execution),
 * `t_writes` (task writes) and `t_blobs` (large values, once per execution).
 * A name longer than 40 characters gives its tables a shortened base with a
 * hash (PostgreSQL truncates identifiers past 63 bytes).
 *
 * @internal
 */
import { createHash } from "node:crypto"
import type { Dialect } from "./dialect.js"

/** The table that records each checkpoint table's schema version. */
export const migrationsTable = "effect_checkpoint_migrations"

export interface Tables {
  /** The checkpoint table's own (unquoted) name: the key of its row in the migrations table. */
  readonly name: string
  /** Qualified and quoted. */
  readonly checkpoints: string
  readonly executions: string
  readonly writes: string
  readonly blobs: string
  /** Unquoted names of the derived tables and the indexes (for DDL and tests). */
  readonly raw: {
    readonly executions: string
    readonly writes: string
    readonly blobs: string
    readonly byUpdate: string
    readonly byStatus: string
  }
}

const quote = (name: string): string => `"${name}"`

/** The tables of the store whose checkpoint table is `name`, in `schema` (PostgreSQL) when given. */
export const tablesFor = (name: string, schema?: string): Tables => {
  const base = name.length <= 40
    ? name
    : `${name.slice(0, 31)}_${createHash("sha256").update(name).digest("hex").slice(0, 8)}`
  const prefix = schema === undefined ? "" : `${quote(schema)}.`
  const raw = {
    executions: `${base}_executions`,
    writes: `${base}_writes`,
    blobs: `${base}_blobs`,
    byUpdate: `${base}_executions_updated`,
    byStatus: `${base}_executions_status`
  }
  return {
    name,
    checkpoints: `${prefix}${quote(name)}`,
    executions: `${prefix}${quote(raw.executions)}`,
    writes: `${prefix}${quote(raw.writes)}`,
    blobs: `${prefix}${quote(raw.blobs)}`,
    raw
  }
}

/** The checkpoint table of a store given no `tableName`. */
export const defaultTable = "checkpoints"

/** The unquoted names of a store's tables: what the SQL layers' `tableNames` returns. */
export interface TableNames {
  /** The checkpoint table (the store's `tableName`). */
  readonly checkpoints: string
  /** One record per execution. */
  readonly executions: string
  /** Task writes. */
  readonly writes: string
  /** Large values, stored once per execution. */
  readonly blobs: string
}

/** The unquoted names of the tables of the store whose checkpoint table is `tableName`. */
export const tableNames = (tableName: string = defaultTable): TableNames => {
  const { raw } = tablesFor(tableName)
  return { checkpoints: tableName, executions: raw.executions, writes: raw.writes, blobs: raw.blobs }
}

/** The columns of a 0.1.0 checkpoint table (what a table must have to be adopted). */
export const v1Columns = ["id", "execution_id", "node_name", "state", "metadata", "timestamp", "version", "next", "parent_id"] as const

export interface Migration {
  readonly version: number
  readonly up: (d: Dialect, t: Tables) => ReadonlyArray<string>
}

/**
 * The migrations, in order. A migration's statements run in one transaction
 * with the version update.
 */
export const migrations: ReadonlyArray<Migration> = [
  {
    // 0.1.0: the checkpoint table.
    version: 1,
    up: (d, t) => [
      `CREATE TABLE IF NOT EXISTS ${t.checkpoints} (
  id TEXT PRIMARY KEY NOT NULL,
  execution_id TEXT NOT NULL,
  node_name TEXT NOT NULL,
  state ${d.types.json} NOT NULL,
  metadata ${d.types.json} NOT NULL,
  "timestamp" ${d.types.timestamp} NOT NULL,
  version INTEGER NOT NULL,
  next ${d.types.json} NOT NULL,
  parent_id TEXT,
  UNIQUE (execution_id, version)
)`
    ]
  },
  {
    // 0.2.0: runtime and blob references on checkpoints; execution records, task writes, blobs.
    version: 2,
    up: (d, t) => [
      `ALTER TABLE ${t.checkpoints} ADD COLUMN runtime ${d.types.json}`,
      `ALTER TABLE ${t.checkpoints} ADD COLUMN refs ${d.types.json}`,
      `CREATE TABLE IF NOT EXISTS ${t.executions} (
  execution_id ${d.types.key} PRIMARY KEY NOT NULL,
  latest_version INTEGER NOT NULL,
  latest_checkpoint_id TEXT NOT NULL,
  updated_at ${d.types.time} NOT NULL,
  status TEXT NOT NULL,
  wake_at ${d.types.time},
  failure_tag TEXT,
  failure_message TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  lease_owner TEXT,
  lease_expires_at ${d.types.time}
)`,
      `CREATE INDEX IF NOT EXISTS ${quote(t.raw.byUpdate)} ON ${t.executions} (updated_at DESC, execution_id DESC)`,
      `CREATE INDEX IF NOT EXISTS ${quote(t.raw.byStatus)} ON ${t.executions} (status, updated_at DESC, execution_id DESC)`,
      `CREATE TABLE IF NOT EXISTS ${t.writes} (
  checkpoint_id TEXT NOT NULL,
  task_id ${d.types.key} NOT NULL,
  "key" TEXT NOT NULL,
  value ${d.types.json} NOT NULL,
  seq INTEGER NOT NULL,
  PRIMARY KEY (checkpoint_id, task_id, "key")
)`,
      `CREATE TABLE IF NOT EXISTS ${t.blobs} (
  execution_id TEXT NOT NULL,
  hash TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (execution_id, hash)
)`,
      // A record for every execution already there, from its newest checkpoint: `interrupted` when it has
      // nodes to run (0.1.0 stopped it mid-run, by an interruptBefore/After pause or a crash: no worker
      // takes it by surprise, `resume` goes on), `done` when it has none. As the File and Redis stores.
      `INSERT INTO ${t.executions} (execution_id, latest_version, latest_checkpoint_id, updated_at, status, attempts) ` +
      `SELECT c.execution_id, c.version, c.id, COALESCE(${d.timestampMs("c.\"timestamp\"")}, 0), ` +
      `CASE WHEN ${d.nextNonEmpty("c.next")} THEN 'interrupted' ELSE 'done' END, 0 ` +
      `FROM ${t.checkpoints} c WHERE c.version = (SELECT MAX(m.version) FROM ${t.checkpoints} m WHERE m.execution_id = c.execution_id) ` +
      `ON CONFLICT (execution_id) DO NOTHING`
    ]
  }
]

/** The schema version this release creates and understands. */
export const schemaVersion: number = migrations[migrations.length - 1]!.version

/** Drops the derived tables (when the checkpoint table they describe is gone). */
export const dropDerived = (t: Tables): ReadonlyArray<string> => [
  `DROP TABLE IF EXISTS ${t.executions}`,
  `DROP TABLE IF EXISTS ${t.writes}`,
  `DROP TABLE IF EXISTS ${t.blobs}`
]
