/**
 * The SQL store's backend, one for every dialect (see `dialect.ts`): the
 * record, write, lease and blob rules of `CheckpointBackend.Backend`, as the
 * Memory backend states them, in SQL.
 *
 * Every change runs in one transaction that no other writer of the same
 * executions interleaves with (`Dialect.write`), and reads an execution's
 * record (locking its row, on PostgreSQL) before it touches anything else of
 * the execution: one lock order for every operation, so two of them never
 * wait on each other.
 *
 * @internal
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Either, Option } from "effect"
import * as Checkpoint from "../../Checkpoint.js"
import type { Backend, Encoded, ExecutionQuery, InsertOptions } from "../../CheckpointBackend.js"
import { BlobsMissing, conflict, decodeFields, decodeRecord, derivedStatus, expectationMet, leaseProblem, parseJson } from "../../CheckpointBackend.js"
import {
  type CheckpointConflict,
  type CheckpointDecodeError,
  type CheckpointEncodeError,
  CheckpointNotFound,
  type CheckpointStoreError,
  ExecutionNotFound
} from "../../CheckpointError.js"
import { patchRecord, recordAfterInsert, type StoredRecord, toRecord, toStored } from "../storedRecord.js"
import type { ExecutionRecord, TaskWrite } from "../../CheckpointStore.js"
import type { Db, Dialect, Row } from "./dialect.js"
import { statuses } from "../records.js"
import type { Tables } from "./schema.js"

const CP_COLUMNS = `id, execution_id, node_name, state, metadata, "timestamp", version, next, parent_id, runtime, refs`
const REC_COLUMNS = "execution_id, latest_version, latest_checkpoint_id, updated_at, status, wake_at, failure_tag, " +
  "failure_message, attempts, lease_owner, lease_expires_at"
/** Rows per multi-row `INSERT` (11 values a row: under SQLite's 32 766 and PostgreSQL's 65 535 parameters). */
const ROWS_PER_INSERT = 500


const recordParams = (executionId: string, r: StoredRecord): ReadonlyArray<unknown> => [
  executionId,
  r.latestVersion,
  r.latestCheckpointId,
  r.updatedAt,
  r.status,
  r.wakeAt ?? null,
  r.failure?.tag ?? null,
  r.failure?.message ?? null,
  r.attempts,
  r.lease?.owner ?? null,
  r.lease?.expiresAt ?? null
]

const decodeRecordRow = (row: Row): Either.Either<ExecutionRecord, CheckpointDecodeError> =>
  decodeRecord({
    executionId: row.execution_id,
    latestVersion: row.latest_version,
    latestCheckpointId: row.latest_checkpoint_id,
    updatedAt: row.updated_at,
    status: row.status,
    wakeAt: row.wake_at,
    failureTag: row.failure_tag,
    failureMessage: row.failure_message,
    attempts: row.attempts,
    leaseOwner: row.lease_owner,
    leaseExpiresAt: row.lease_expires_at
  })


const numberOf = (value: unknown): unknown =>
  typeof value === "bigint" ? Number(value) : typeof value === "string" && /^-?\d+$/.test(value) ? Number(value) : value

const chunks = <A>(items: ReadonlyArray<A>, size: number): ReadonlyArray<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

/** A statement text per row count, built once. */
const perCount = (build: (n: number) => string) => {
  const texts = new Map<number, string>()
  return (n: number): string => {
    let text = texts.get(n)
    if (text === undefined) texts.set(n, text = build(n))
    return text
  }
}

/** A corrupt record met by a write: the write fails with `CheckpointStoreError` (reads report the `CheckpointDecodeError`). */
type WriteFailure<E> = Exclude<E, CheckpointDecodeError> | CheckpointStoreError

export const sqlBackend = (d: Dialect, t: Tables): Backend => {
  const p = d.param
  const prep = d.prepare
  const repeat = (row: string, n: number) => Array.from({ length: n }, () => row).join(", ")

  // ---------------------------------------------------------------------------
  // Statements, built once
  // ---------------------------------------------------------------------------

  const selectCp = `id, execution_id, node_name, ${d.jsonText("state")} AS state, ${d.jsonText("metadata")} AS metadata, ` +
    `${d.jsonText("next")} AS next, ${d.jsonText("runtime")} AS runtime, ${d.timestampOut(`"timestamp"`)} AS ts, version, parent_id`
  const cpRow = `(${p("text")}, ${p("text")}, ${p("text")}, ${p("json")}, ${p("json")}, ${p("timestamp")}, ${p("int")}, ` +
    `${p("json")}, ${p("text")}, ${p("json")}, ${p("json")})`
  const recRow = `(${p("text")}, ${p("int")}, ${p("text")}, ${p("time")}, ${p("text")}, ${p("time")}, ${p("text")}, ` +
    `${p("text")}, ${p("int")}, ${p("text")}, ${p("time")})`
  const sql = {
    insertCheckpoints: perCount((n) => prep(`INSERT INTO ${t.checkpoints} (${CP_COLUMNS}) VALUES ${repeat(cpRow, n)}`)),
    upsertRecords: perCount((n) =>
      prep(
        `INSERT INTO ${t.executions} (${REC_COLUMNS}) VALUES ${repeat(recRow, n)} ON CONFLICT (execution_id) DO UPDATE SET ` +
          REC_COLUMNS.split(", ").slice(1).map((c) => `${c} = excluded.${c}`).join(", ")
      )
    ),
    insertWrites: perCount((n) =>
      prep(
        `INSERT INTO ${t.writes} (checkpoint_id, task_id, "key", value, seq) VALUES ` +
          repeat(`(${p("text")}, ${p("text")}, ${p("text")}, ${p("json")}, ${p("int")})`, n)
      )
    ),
    insertBlobs: perCount((n) =>
      prep(
        `INSERT INTO ${t.blobs} (execution_id, hash, value) VALUES ${repeat(`(${p("text")}, ${p("text")}, ${p("text")})`, n)} ` +
          `ON CONFLICT (execution_id, hash) DO NOTHING`
      )
    ),
    records: prep(`SELECT ${REC_COLUMNS} FROM ${t.executions} WHERE ${d.inList("execution_id")}${d.forUpdate}`),
    recordLocked: prep(`SELECT ${REC_COLUMNS} FROM ${t.executions} WHERE execution_id = ${p("text")}${d.forUpdate}`),
    record: prep(`SELECT ${REC_COLUMNS} FROM ${t.executions} WHERE execution_id = ${p("text")}`),
    load: prep(`SELECT ${selectCp} FROM ${t.checkpoints} WHERE id = ${p("text")}`),
    // The page first, then the JSON columns as text: only the rows returned are converted.
    list: prep(
      `SELECT ${selectCp} FROM (SELECT * FROM ${t.checkpoints} WHERE execution_id = ${p("text")} AND version > ${p("int")} ` +
        `ORDER BY version LIMIT ${p("int")}) AS page ORDER BY version`
    ),
    latest: prep(`SELECT ${selectCp} FROM ${t.checkpoints} WHERE execution_id = ${p("text")} ORDER BY version DESC LIMIT 1`),
    newest: prep(`SELECT id, version FROM ${t.checkpoints} WHERE execution_id = ${p("text")} ORDER BY version DESC LIMIT 1`),
    locate: prep(`SELECT execution_id, version FROM ${t.checkpoints} WHERE id = ${p("text")}`),
    taken: prep(`SELECT id, execution_id, version FROM ${t.checkpoints} WHERE ${d.inList("id")} OR ${d.inList("execution_id")}`),
    storedBlobs: prep(`SELECT hash FROM ${t.blobs} WHERE execution_id = ${p("text")} AND ${d.inList("hash")}`),
    loadBlobs: prep(`SELECT hash, value FROM ${t.blobs} WHERE execution_id = ${p("text")} AND ${d.inList("hash")}`),
    collectBlobs: prep(
      `DELETE FROM ${t.blobs} WHERE execution_id = ${p("text")} AND NOT EXISTS (SELECT 1 FROM ${t.checkpoints} c ` +
        `WHERE c.execution_id = ${t.blobs}.execution_id AND c.refs IS NOT NULL AND ${d.arrayHas("c.refs", `${t.blobs}.hash`)})`
    ),
    taskKeys: prep(`SELECT "key", seq FROM ${t.writes} WHERE checkpoint_id = ${p("text")} AND task_id = ${p("text")}`),
    listWrites: prep(
      `SELECT task_id, "key", ${d.jsonText("value")} AS value FROM ${t.writes} WHERE checkpoint_id = ${p("text")} ORDER BY task_id, seq`
    ),
    deleteCheckpoint: prep(`DELETE FROM ${t.checkpoints} WHERE id = ${p("text")} RETURNING refs`),
    deleteWritesOf: prep(`DELETE FROM ${t.writes} WHERE checkpoint_id = ${p("text")}`),
    deleteWritesIn: prep(`DELETE FROM ${t.writes} WHERE ${d.inList("checkpoint_id")}`),
    followNewest: prep(
      `UPDATE ${t.executions} SET latest_version = ${p("int")}, latest_checkpoint_id = ${p("text")} ` +
        `WHERE execution_id = ${p("text")} AND latest_version <> ${p("int")}`
    ),
    deleteRecord: prep(`DELETE FROM ${t.executions} WHERE execution_id = ${p("text")}`),
    deleteBlobsOf: prep(`DELETE FROM ${t.blobs} WHERE execution_id = ${p("text")}`),
    clearWrites: prep(
      `DELETE FROM ${t.writes} WHERE checkpoint_id IN (SELECT id FROM ${t.checkpoints} WHERE execution_id = ${p("text")})`
    ),
    clearCheckpoints: prep(`DELETE FROM ${t.checkpoints} WHERE execution_id = ${p("text")}`),
    // The (keep+1)-th newest and everything older; nothing when there are `keep` or fewer.
    prune: prep(
      `DELETE FROM ${t.checkpoints} WHERE execution_id = ${p("text")} AND version <= (SELECT version FROM ${t.checkpoints} ` +
        `WHERE execution_id = ${p("text")} ORDER BY version DESC LIMIT 1 OFFSET ${p("int")}) RETURNING id, refs`
    ),
    due: prep(
      `SELECT execution_id FROM ${t.executions} WHERE status IN ('pending', 'sleeping', 'running') ` +
        `AND (lease_owner IS NULL OR lease_expires_at <= ${p("time")}) ` +
        `AND (status <> 'sleeping' OR wake_at IS NULL OR wake_at <= ${p("time")}) ` +
        `ORDER BY updated_at, execution_id LIMIT ${p("int")}${d.skipLocked}`
    ),
    claim: prep(
      `UPDATE ${t.executions} SET status = 'running', attempts = attempts + 1, updated_at = ${p("time")}, ` +
        `lease_owner = ${p("text")}, lease_expires_at = ${p("time")} WHERE ${d.inList("execution_id")} RETURNING ${REC_COLUMNS}`
    ),
    sweep: prep(
      `DELETE FROM ${t.executions} WHERE updated_at < ${p("time")} AND status NOT IN ('interrupted', 'sleeping') ` +
        `AND (lease_owner IS NULL OR lease_expires_at <= ${p("time")}) RETURNING execution_id`
    ),
    sweepForced: prep(`DELETE FROM ${t.executions} WHERE updated_at < ${p("time")} RETURNING execution_id`),
    sweepWrites: prep(
      `DELETE FROM ${t.writes} WHERE checkpoint_id IN (SELECT id FROM ${t.checkpoints} WHERE ${d.inList("execution_id")})`
    ),
    sweepCheckpoints: prep(`DELETE FROM ${t.checkpoints} WHERE ${d.inList("execution_id")}`),
    sweepBlobs: prep(`DELETE FROM ${t.blobs} WHERE ${d.inList("execution_id")}`)
  }

  // ---------------------------------------------------------------------------
  // Helpers
  // ---------------------------------------------------------------------------

  const storeFailure = (operation: string) => (e: SqlError | CheckpointDecodeError): CheckpointStoreError =>
    d.storeError(operation, e._tag === "CheckpointDecodeError" ? e.message : e)

  /** Maps the SQL failures of a read to `CheckpointStoreError`. */
  const reading = (operation: string) => <A, E>(effect: Effect.Effect<A, E | SqlError>) =>
    Effect.catchIf(effect, isSqlError, (e) => Effect.fail(storeFailure(operation)(e))) as Effect.Effect<
      A,
      Exclude<E, SqlError> | CheckpointStoreError
    >

  /** Maps the SQL failures of a write, and a corrupt record it met, to `CheckpointStoreError`. */
  const writing = (operation: string) => <A, E>(effect: Effect.Effect<A, E | SqlError>) =>
    Effect.catchIf(
      effect as Effect.Effect<A, unknown>,
      (e): e is SqlError | CheckpointDecodeError => isSqlError(e) || isDecodeError(e),
      (e) => Effect.fail(storeFailure(operation)(e))
    ) as Effect.Effect<A, WriteFailure<Exclude<E, SqlError>>>

  const decodeRow = (row: Row, expectedId?: string): Effect.Effect<Checkpoint.Checkpoint, CheckpointDecodeError> => {
    const id = typeof row.id === "string" ? row.id : expectedId
    const state = parseJson(row.state, id, "column state")
    if (Either.isLeft(state)) return Effect.fail(state.left)
    const metadata = parseJson(row.metadata, id, "column metadata")
    if (Either.isLeft(metadata)) return Effect.fail(metadata.left)
    const next = parseJson(row.next, id, "column next")
    if (Either.isLeft(next)) return Effect.fail(next.left)
    const runtime = row.runtime === null || row.runtime === undefined
      ? Either.right(undefined)
      : parseJson(row.runtime, id, "column runtime")
    if (Either.isLeft(runtime)) return Effect.fail(runtime.left)
    return decodeFields({
      id: row.id,
      executionId: row.execution_id,
      nodeName: row.node_name,
      state: state.right,
      metadata: metadata.right,
      timestamp: numberOf(row.ts),
      version: numberOf(row.version),
      next: next.right,
      parentId: row.parent_id,
      runtime: runtime.right
    }, expectedId ?? id)
  }

  /** The records of `executions` (locked until the transaction ends, on PostgreSQL). */
  const readRecords = (db: Db, executions: ReadonlyArray<string>) =>
    Effect.flatMap(
      executions.length === 1
        ? db.all(sql.recordLocked, [executions[0]])
        : db.all(sql.records, [d.listParam(executions)]),
      (rows) => {
        const out = new Map<string, StoredRecord>()
        for (const row of rows) {
          const decoded = decodeRecordRow(row)
          if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
          out.set(decoded.right.executionId, toStored(decoded.right))
        }
        return Effect.succeed(out)
      }
    )

  const putRecords = (db: Db, records: ReadonlyArray<readonly [string, StoredRecord]>) =>
    Effect.forEach(
      chunks(records, ROWS_PER_INSERT),
      (part) => db.all(sql.upsertRecords(part.length), part.flatMap(([id, r]) => recordParams(id, r))),
      { discard: true }
    )

  /** Which checkpoint of a batch collides with a stored one (after the insert failed on a key). */
  const takenIn = (batch: ReadonlyArray<Encoded>, operation: string): Effect.Effect<CheckpointConflict, CheckpointStoreError> =>
    d.read((db) =>
      db.all(sql.taken, [
        d.listParam(batch.map((e) => e.checkpoint.id)),
        d.listParam([...new Set(batch.map((e) => e.checkpoint.executionId))])
      ])
    ).pipe(
      Effect.map((rows) => {
        const ids = new Set(rows.map((r) => r.id))
        const slots = new Set(rows.map((r) => `${String(r.execution_id)}\u0000${String(numberOf(r.version))}`))
        const byId = batch.find((e) => ids.has(e.checkpoint.id))
        if (byId !== undefined) return conflict.idTaken(byId.checkpoint)
        const bySlot = batch.find((e) => slots.has(`${e.checkpoint.executionId}\u0000${e.checkpoint.version}`))
        return conflict.versionTaken((bySlot ?? batch[0]!).checkpoint)
      }),
      reading(operation)
    )

  /** The newest version of an execution (0: none), read on its own (after a transaction failed). */
  const latestVersionOf = (executionId: string, operation: string) =>
    d.read((db) => db.all(sql.newest, [executionId])).pipe(
      Effect.map((rows) => rows.length === 0 ? 0 : Number(numberOf(rows[0]!.version))),
      reading(operation)
    )

  /** Removes the blobs of an execution that no checkpoint references any more. */
  const collectBlobs = (db: Db, executionId: string, removedRefs: ReadonlyArray<unknown>) =>
    removedRefs.some((r) => r !== null && r !== undefined) ? db.all(sql.collectBlobs, [executionId]) : Effect.void

  /** After checkpoints went: the record follows the newest one left, or goes with the blobs when none is left. */
  const followNewest = (db: Db, executionId: string) =>
    Effect.flatMap(db.all(sql.newest, [executionId]), (rows) => {
      const top = rows[0]
      return top === undefined
        ? Effect.zipRight(db.all(sql.deleteRecord, [executionId]), db.all(sql.deleteBlobsOf, [executionId]))
        : db.all(sql.followNewest, [numberOf(top.version), top.id, executionId, numberOf(top.version)])
    })

  // ---------------------------------------------------------------------------
  // Writes
  // ---------------------------------------------------------------------------

  /**
   * PostgreSQL: a save whose checkpoints all belong to one execution (the
   * expectation, if any, on it too, and every blob of it) as ONE statement,
   * one round trip. A data-modifying CTE takes the same advisory lock as
   * `write` and the clock (`lk`), checks the blobs the batch references but
   * does not send (`bc`, locking them: a blob deleted meanwhile is not
   * counted), then writes the record row (`rec`) only if the record rules'
   * checks pass, against the row's latest version (`ON CONFLICT DO UPDATE …
   * WHERE` or `UPDATE … WHERE`, which lock it): the lease, the expectation,
   * the referenced blobs, and a record `decodeRecord` would accept. The
   * blobs (`bi`) and checkpoints (`ins`) are written only if `rec` wrote,
   * and a taken id or version fails the whole statement. So it writes all
   * or nothing; `false` (nothing written, the lock released) says a check
   * did not pass, or the record appeared after the statement's snapshot:
   * `insert` then runs the transaction, which says why (or writes).
   *
   * Without an expectation, or expecting an empty execution (version 0),
   * `rec` inserts the record or updates it (a record made meanwhile is
   * updated, its checks applied); expecting a version, only an existing
   * record may be updated, so a record deleted meanwhile fails the check.
   */
  const singleSave = (batch: ReadonlyArray<Encoded>, options: InsertOptions, single: NonNullable<Dialect["single"]>) => {
    const executionId = batch[0]!.checkpoint.executionId
    let newest = batch[0]!
    for (const e of batch) {
      if (e.checkpoint.executionId !== executionId) return undefined
      if (e.checkpoint.version > newest.checkpoint.version) newest = e
    }
    const expect = options.expect
    if (expect !== undefined && expect.executionId !== executionId) return undefined
    if (batch.length > ROWS_PER_INSERT || options.blobs.length > ROWS_PER_INSERT) return undefined
    const sent = new Set<string>()
    for (const b of options.blobs) {
      if (b.executionId !== executionId) return undefined
      sent.add(b.hash)
    }
    const unsent = new Set<string>()
    for (const e of batch) for (const h of e.refs) if (!sent.has(h)) unsent.add(h)
    const patch = options.patch
    const shape = {
      upsert: expect === undefined || expect.latestVersion === 0,
      expectId: expect?.latestCheckpointId !== undefined,
      expect: expect !== undefined,
      owner: options.owner !== undefined,
      status: patch.status !== undefined,
      wake: patch.wakeAt !== undefined,
      failure: patch.failure !== undefined,
      lease: patch.lease !== undefined && patch.lease !== null,
      leaseGiven: patch.lease !== undefined,
      unsent: unsent.size > 0,
      blobs: options.blobs.length,
      rows: batch.length
    }
    const cp = newest.checkpoint
    return single.run((db, async) => {
      // In the text's order: the lock's, bc's, the record's values, the checks' (see `singleText`).
      const params: Array<unknown> = [t.checkpoints, executionId]
      if (shape.unsent) params.push(executionId, d.listParam([...unsent]))
      // The record as it would be made (the values `rec` writes or compares against).
      params.push(
        executionId,
        cp.version,
        cp.id,
        cp.timestamp.getTime(),
        patch.status ?? derivedStatus(cp),
        patch.wakeAt ?? null,
        patch.failure?.tag ?? null,
        patch.failure?.message ?? null,
        patch.lease?.owner ?? null
      )
      if (shape.lease) params.push(patch.lease!.ttlMs)
      if (shape.upsert && shape.unsent) params.push(unsent.size)
      if (shape.owner) params.push(options.owner)
      if (expect !== undefined) {
        if (!shape.upsert) params.push(expect.latestVersion)
        if (shape.expectId) params.push(expect.latestCheckpointId)
      }
      if (shape.unsent) params.push(unsent.size)
      for (const b of options.blobs) params.push(b.executionId, b.hash, b.json)
      for (const e of batch) params.push(...checkpointParams(e))
      const key = JSON.stringify({ ...shape, async })
      let text = singleTexts.get(key)
      if (text === undefined) singleTexts.set(key, text = singleText(shape, single.lock(async)))
      return Effect.map(db.all(text, params), (rows) => Number(numberOf(rows[0]?.ok)) === 1)
    })
  }

  const singleTexts = new Map<string, string>()
  /** A stored record `decodeRecord` accepts (`x`: the row), as SQL conditions: never written over otherwise. */
  const validRecord = [
    `x.status IN (${statuses.map((s) => `'${s}'`).join(", ")})`,
    "x.latest_version >= 1",
    "x.attempts >= 0",
    "(x.lease_owner IS NULL) = (x.lease_expires_at IS NULL)",
    "(x.failure_tag IS NULL) = (x.failure_message IS NULL)"
  ]
  /** The record's lease lets the writer (the next `?`) write: none, its own, or expired at `now` (SQL). */
  const leaseLets = (now: string) =>
    `(x.lease_owner IS NULL OR x.lease_owner = ${p("text")} OR x.lease_expires_at <= ${now})`
  const singleText = (
    shape: {
      readonly upsert: boolean
      readonly expect: boolean
      readonly expectId: boolean
      readonly owner: boolean
      readonly status: boolean
      readonly wake: boolean
      readonly failure: boolean
      readonly lease: boolean
      readonly leaseGiven: boolean
      readonly unsent: boolean
      readonly blobs: number
      readonly rows: number
    },
    lock: string
  ): string => {
    const now = "(SELECT now FROM lk)"
    const values = `${p("text")} AS execution_id, ${p("int")} AS latest_version, ${p("text")} AS latest_checkpoint_id, ` +
      `${p("time")} AS updated_at, ${p("text")} AS status, ${p("time")} AS wake_at, ${p("text")} AS failure_tag, ` +
      `${p("text")} AS failure_message, 0 AS attempts, ${p("text")} AS lease_owner, ` +
      `${shape.lease ? `(lk.now + ${p("time")})::bigint` : "NULL::bigint"} AS lease_expires_at`
    // What the record must be for the save to go ahead (`x`: the stored record, at its latest version).
    const checks = [
      ...validRecord,
      ...(shape.owner ? [leaseLets(now)] : []),
      ...(shape.expect ? [`x.latest_version = ${shape.upsert ? "0" : p("int")}`] : []),
      ...(shape.expectId ? [`x.latest_checkpoint_id = ${p("text")}`] : [])
    ]
    const blobsHeld = shape.unsent ? [`(SELECT n FROM bc) = ${p("int")}`] : []
    const sets = (v: string) => {
      const advances = `x.latest_version < ${v}.latest_version`
      return [
        `latest_version = GREATEST(x.latest_version, ${v}.latest_version)`,
        `latest_checkpoint_id = CASE WHEN ${advances} THEN ${v}.latest_checkpoint_id ELSE x.latest_checkpoint_id END`,
        `updated_at = CASE WHEN ${advances} THEN ${v}.updated_at ELSE x.updated_at END`,
        `status = ${shape.status ? `${v}.status` : `CASE WHEN ${advances} THEN ${v}.status ELSE x.status END`}`,
        ...(shape.wake ? [`wake_at = ${v}.wake_at`] : []),
        ...(shape.failure ? [`failure_tag = ${v}.failure_tag`, `failure_message = ${v}.failure_message`] : []),
        ...(shape.leaseGiven ? [`lease_owner = ${v}.lease_owner`, `lease_expires_at = ${v}.lease_expires_at`] : [])
      ].join(", ")
    }
    const parts = [`lk AS (${lock})`]
    if (shape.unsent) {
      parts.push(
        `bc AS (SELECT count(*) AS n FROM (SELECT 1 FROM ${t.blobs} b WHERE b.execution_id = ${p("text")} ` +
          `AND ${d.inList("b.hash")} FOR SHARE) AS held)`
      )
    }
    if (shape.upsert) {
      // The `WHERE` of the checks follows the `SET`, whose values come from `excluded` (no parameters of their own).
      const setText = sets("excluded")
      const selectText = `SELECT ${values} FROM lk`
      const checkText = checks.join(" AND ")
      const blobText = blobsHeld.join("")
      parts.push(
        `rec AS (INSERT INTO ${t.executions} AS x (${REC_COLUMNS}) ${selectText}` +
          (shape.unsent ? ` WHERE ${blobText}` : "") +
          ` ON CONFLICT (execution_id) DO UPDATE SET ${setText} WHERE ${checkText}` +
          (shape.unsent ? ` AND (SELECT n FROM bc) = ${p("int")}` : "") +
          ` RETURNING 1)`
      )
    } else {
      parts.push(
        `rec AS (UPDATE ${t.executions} AS x SET ${sets("v")} FROM (SELECT ${values} FROM lk) AS v ` +
          `WHERE x.execution_id = v.execution_id AND ${[...checks, ...blobsHeld].join(" AND ")} RETURNING 1)`
      )
    }
    if (shape.blobs > 0) {
      parts.push(
        `bi AS (INSERT INTO ${t.blobs} (execution_id, hash, value) SELECT * FROM (VALUES ` +
          `${repeat(`(${p("text")}, ${p("text")}, ${p("text")})`, shape.blobs)}) AS b WHERE EXISTS (SELECT 1 FROM rec) ` +
          `ON CONFLICT (execution_id, hash) DO NOTHING)`
      )
    }
    parts.push(
      `ins AS (INSERT INTO ${t.checkpoints} (${CP_COLUMNS}) SELECT * FROM (VALUES ${repeat(cpRow, shape.rows)}) AS c ` +
        `WHERE EXISTS (SELECT 1 FROM rec))`
    )
    return prep(`WITH ${parts.join(", ")} SELECT count(*) AS ok FROM rec`)
  }

  const insert = (operation: "save" | "saveMany") => (batch: ReadonlyArray<Encoded>, options: InsertOptions) =>
    Effect.suspend(() => {
      for (const e of batch) {
        const problem = d.checkpointProblem(e)
        if (problem !== undefined) return Effect.fail(problem)
      }
      const newest = new Map<string, Encoded>()
      for (const e of batch) {
        const current = newest.get(e.checkpoint.executionId)
        if (current === undefined || current.checkpoint.version < e.checkpoint.version) newest.set(e.checkpoint.executionId, e)
      }
      const expect = options.expect
      const executions = [...newest.keys()]
      if (expect !== undefined && !newest.has(expect.executionId)) executions.push(expect.executionId)
      executions.sort()
      const body = (db: Db, now: number) =>
        Effect.gen(function*() {
          const records = yield* readRecords(db, executions)
          for (const executionId of newest.keys()) {
            const lost = leaseProblem(executionId, records.get(executionId)?.lease, options.owner, false, now)
            if (lost !== undefined) return yield* lost
          }
          if (expect !== undefined && !expectationMet(records.get(expect.executionId), expect)) {
            return yield* conflict.expectationFailed(expect, records.get(expect.executionId)?.latestVersion ?? 0)
          }
          yield* storeBlobs(db, batch, options)
          for (const part of chunks(batch, ROWS_PER_INSERT)) {
            yield* db.all(sql.insertCheckpoints(part.length), part.flatMap(checkpointParams))
          }
          const changed: Array<readonly [string, StoredRecord]> = []
          for (const [executionId, { checkpoint: cp }] of newest) {
            const record = records.get(executionId)
            changed.push([executionId, recordAfterInsert(record, cp, options.patch, now)])
          }
          yield* putRecords(db, changed)
        })
      const transaction = d.write(executions, options.now, body, true)
      const single = d.single === undefined ? undefined : singleSave(batch, options, d.single)
      // One statement when it can; the transaction when it cannot, or when a check did not pass (it says which).
      const attempt = single === undefined
        ? transaction
        : Effect.flatMap(single, (done) => Option.isSome(done) && done.value ? Effect.void : transaction)
      return attempt.pipe(
        Effect.catchIf(isSqlError, (e): Effect.Effect<never, CheckpointConflict | CheckpointEncodeError | CheckpointStoreError> => {
          const raced = d.isUniqueViolation(e) || d.isSerializationFailure(e)
          if (raced && expect !== undefined) {
            // The expectation held on what this transaction saw, and another writer got there first (a transaction
            // of the app's, or SERIALIZABLE): read once more, and report the expectation with the version found.
            return Effect.flatMap(latestVersionOf(expect.executionId, operation), (actual) =>
              actual !== expect.latestVersion
                ? Effect.fail(conflict.expectationFailed(expect, actual))
                : d.isUniqueViolation(e)
                ? Effect.flatMap(takenIn(batch, operation), Effect.fail)
                : Effect.fail(storeFailure(operation)(e)))
          }
          if (d.isUniqueViolation(e)) return Effect.flatMap(takenIn(batch, operation), Effect.fail)
          const refused = d.encodeError(e, batch)
          return Effect.fail(refused ?? storeFailure(operation)(e))
        }),
        writing(operation)
      )
    })

  const checkpointParams = (e: Encoded): ReadonlyArray<unknown> => {
    const cp = e.checkpoint
    return [
      cp.id,
      cp.executionId,
      cp.nodeName,
      e.state,
      e.metadata,
      e.timestamp,
      cp.version,
      e.next,
      cp.parentId ?? null,
      e.runtime,
      e.refs.length === 0 ? null : JSON.stringify(e.refs)
    ]
  }

  /** Refuses a batch that references a blob its execution does not have; stores the batch's blobs. */
  const storeBlobs = (db: Db, batch: ReadonlyArray<Encoded>, options: InsertOptions) =>
    Effect.gen(function*() {
      const wanted = new Map<string, Set<string>>()
      for (const e of batch) {
        if (e.refs.length === 0) continue
        let set = wanted.get(e.checkpoint.executionId)
        if (set === undefined) wanted.set(e.checkpoint.executionId, set = new Set())
        for (const h of e.refs) set.add(h)
      }
      for (const [executionId, hashes] of wanted) {
        const sent = new Set(options.blobs.filter((b) => b.executionId === executionId).map((b) => b.hash))
        const unsent = [...hashes].filter((h) => !sent.has(h))
        if (unsent.length === 0) continue
        const stored = new Set((yield* db.all(sql.storedBlobs, [executionId, d.listParam(unsent)])).map((r) => r.hash))
        const missing = unsent.filter((h) => !stored.has(h))
        if (missing.length > 0) return yield* new BlobsMissing({ executionId, hashes: missing })
      }
      for (const part of chunks(options.blobs, ROWS_PER_INSERT)) {
        yield* db.all(sql.insertBlobs(part.length), part.flatMap((b) => [b.executionId, b.hash, b.json]))
      }
    })

  const saveWrites: Backend["saveWrites"] = (checkpointId, taskId, batch, options) =>
    Effect.suspend(() => {
      const problem = d.writesProblem(checkpointId, batch)
      if (problem !== undefined) return Effect.fail(problem)
      return Effect.flatMap(reading("saveWrites")(d.read((db) => db.all(sql.locate, [checkpointId]))), (rows) => {
        const found = rows[0]
        if (found === undefined) return Effect.fail(new CheckpointNotFound({ id: checkpointId }))
        const executionId = String(found.execution_id)
        const version = Number(numberOf(found.version))
        return d.write([executionId], options.now, (db, now) =>
          Effect.gen(function*() {
            const record = (yield* readRecords(db, [executionId])).get(executionId)
            // Deleted while this waited for the lock?
            if ((yield* db.all(sql.locate, [checkpointId])).length === 0) {
              return yield* new CheckpointNotFound({ id: checkpointId })
            }
            const lost = leaseProblem(executionId, record?.lease, options.owner, false, now)
            if (lost !== undefined) return yield* lost
            const keys = yield* db.all(sql.taskKeys, [checkpointId, taskId])
            const taken = new Set(keys.map((k) => k.key))
            for (const w of batch) {
              if (taken.has(w.key)) return yield* conflict.writeTaken({ checkpointId, executionId, version }, taskId, w.key)
            }
            let seq = 0
            for (const k of keys) seq = Math.max(seq, Number(numberOf(k.seq)))
            for (const part of chunks(batch.map((w, i) => [w, seq + 1 + i] as const), ROWS_PER_INSERT)) {
              yield* db.all(sql.insertWrites(part.length), part.flatMap(([w, s]) => [checkpointId, taskId, w.key, w.json, s]))
            }
            if (options.patch !== undefined && record !== undefined) {
              yield* putRecords(db, [[executionId, patchRecord(record, options.patch, now)]])
            }
          })).pipe(
            Effect.catchIf(isSqlError, (e): Effect.Effect<never, CheckpointConflict | CheckpointEncodeError | CheckpointStoreError> => {
              if (d.isUniqueViolation(e)) {
                // Only a concurrent writer outside the store's locks (a transaction of the app's) gets here.
                return Effect.fail(conflict.writeTaken({ checkpointId, executionId, version }, taskId, batch[0]?.key ?? ""))
              }
              const refused = d.encodeError(e, [])
              return Effect.fail(
                refused === undefined ? storeFailure("saveWrites")(e) : Object.assign(refused, { id: checkpointId })
              )
            }),
            writing("saveWrites")
          )
      })
    })

  /**
   * PostgreSQL: `updateExecution` as ONE statement — the lock and the clock
   * (`lk`), then an `UPDATE` of the record whose `WHERE` holds the checks
   * (a record `decodeRecord` accepts, the lease, the expectation), evaluated
   * on the row's latest version. No row back: a check did not pass (or there
   * is no record); the transaction then says which.
   */
  const singleUpdate = (
    executionId: string,
    patch: Parameters<Backend["updateExecution"]>[1],
    options: Parameters<Backend["updateExecution"]>[2],
    single: NonNullable<Dialect["single"]>
  ) => {
    const shape = {
      status: patch.status !== undefined,
      touched: patch.status !== undefined || patch.wakeAt !== undefined || patch.failure !== undefined,
      wake: patch.wakeAt !== undefined,
      failure: patch.failure !== undefined,
      lease: patch.lease !== undefined && patch.lease !== null,
      leaseGiven: patch.lease !== undefined,
      owner: options.owner === undefined ? "none" as const : options.holds ? "holds" as const : "free" as const,
      expect: options.expect !== undefined,
      expectId: options.expect?.latestCheckpointId !== undefined
    }
    const params: Array<unknown> = [t.checkpoints, executionId]
    if (shape.status) params.push(patch.status)
    if (shape.wake) params.push(patch.wakeAt ?? null)
    if (shape.failure) params.push(patch.failure?.tag ?? null, patch.failure?.message ?? null)
    if (shape.leaseGiven) params.push(patch.lease?.owner ?? null)
    if (shape.lease) params.push(patch.lease!.ttlMs)
    params.push(executionId)
    if (shape.owner !== "none") params.push(options.owner)
    if (shape.expect) params.push(options.expect!.latestVersion)
    if (shape.expectId) params.push(options.expect!.latestCheckpointId)
    const key = JSON.stringify(shape)
    let text = updateTexts.get(key)
    if (text === undefined) {
      const sets = [
        ...(shape.status ? [`status = ${p("text")}`] : []),
        ...(shape.touched ? ["updated_at = lk.now::bigint"] : []),
        ...(shape.wake ? [`wake_at = ${p("time")}`] : []),
        ...(shape.failure ? [`failure_tag = ${p("text")}`, `failure_message = ${p("text")}`] : []),
        ...(shape.leaseGiven
          ? [`lease_owner = ${p("text")}`, `lease_expires_at = ${shape.lease ? `(lk.now + ${p("time")})::bigint` : "NULL"}`]
          : [])
      ]
      const checks = [
        `x.execution_id = ${p("text")}`,
        ...validRecord,
        ...(shape.owner === "holds" ? [`x.lease_owner = ${p("text")}`] : []),
        ...(shape.owner === "free" ? [leaseLets("lk.now")] : []),
        ...(shape.expect ? [`x.latest_version = ${p("int")}`] : []),
        ...(shape.expectId ? [`x.latest_checkpoint_id = ${p("text")}`] : [])
      ]
      // Nothing to set still takes the row's lock and checks it (an `UPDATE` that keeps a value).
      const setText = sets.length === 0 ? "attempts = x.attempts" : sets.join(", ")
      updateTexts.set(
        key,
        text = prep(
          `WITH lk AS (${single.lock(false)}) UPDATE ${t.executions} AS x SET ${setText} FROM lk ` +
            `WHERE ${checks.join(" AND ")} RETURNING ${REC_COLUMNS.split(", ").map((c) => `x.${c}`).join(", ")}`
        )
      )
    }
    return single.run((db) => db.all(text!, params))
  }
  const updateTexts = new Map<string, string>()

  const updateExecution: Backend["updateExecution"] = (executionId, patch, options) =>
    d.single === undefined
      ? updateInTransaction(executionId, patch, options)
      : Effect.flatMap(
        reading("updateExecution")(singleUpdate(executionId, patch, options, d.single)),
        (done) => {
          const row = Option.isSome(done) ? done.value[0] : undefined
          if (row === undefined) return updateInTransaction(executionId, patch, options)
          return Either.match(decodeRecordRow(row), {
            onLeft: (e) => Effect.fail(storeFailure("updateExecution")(e)),
            onRight: Effect.succeed
          })
        }
      )

  const updateInTransaction: Backend["updateExecution"] = (executionId, patch, options) =>
    d.write([executionId], options.now, (db, now) =>
      Effect.gen(function*() {
        const record = (yield* readRecords(db, [executionId])).get(executionId)
        if (record === undefined) return yield* new ExecutionNotFound({ executionId })
        const lost = leaseProblem(executionId, record.lease, options.owner, options.holds, now)
        if (lost !== undefined) return yield* lost
        if (options.expect !== undefined && !expectationMet(record, options.expect)) {
          return yield* conflict.expectationFailed({ executionId, ...options.expect }, record.latestVersion)
        }
        const next = patchRecord(record, patch, now)
        yield* putRecords(db, [[executionId, next]])
        return toRecord(executionId, next)
      })).pipe(writing("updateExecution"))

  const removeCheckpoint = (id: string) =>
    Effect.flatMap(reading("delete")(d.read((db) => db.all(sql.locate, [id]))), (rows) => {
      const found = rows[0]
      if (found === undefined) return Effect.void
      const executionId = String(found.execution_id)
      return d.write([executionId], 0, (db) =>
        Effect.gen(function*() {
          yield* db.all(sql.records, [d.listParam([executionId])])
          const removed = yield* db.all(sql.deleteCheckpoint, [id])
          if (removed.length === 0) return
          yield* db.all(sql.deleteWritesOf, [id])
          yield* followNewest(db, executionId)
          yield* collectBlobs(db, executionId, removed.map((r) => r.refs))
        })).pipe(writing("delete"))
    })

  const clear = (executionId: string) =>
    d.write([executionId], 0, (db) =>
      Effect.gen(function*() {
        yield* db.all(sql.deleteRecord, [executionId])
        yield* db.all(sql.clearWrites, [executionId])
        yield* db.all(sql.clearCheckpoints, [executionId])
        yield* db.all(sql.deleteBlobsOf, [executionId])
      })).pipe(writing("clear"))

  const prune = (executionId: string, keep: number) =>
    d.write([executionId], 0, (db) =>
      Effect.gen(function*() {
        yield* db.all(sql.records, [d.listParam([executionId])])
        const removed = yield* db.all(sql.prune, [executionId, executionId, keep])
        if (removed.length === 0) return 0
        for (const part of chunks(removed, ROWS_PER_INSERT)) {
          yield* db.all(sql.deleteWritesIn, [d.listParam(part.map((r) => String(r.id)))])
        }
        if (keep === 0) yield* followNewest(db, executionId)
        else yield* collectBlobs(db, executionId, removed.map((r) => r.refs))
        return removed.length
      })).pipe(writing("prune"))

  const claim: Backend["claim"] = ({ limit, now, owner, ttlMs }) =>
    d.write([], now, (db, now) =>
      Effect.gen(function*() {
        const due = (yield* db.all(sql.due, [now, now, limit])).map((r) => String(r.execution_id))
        if (due.length === 0) return []
        const rows = yield* db.all(sql.claim, [now, owner, now + ttlMs, d.listParam(due)])
        const order = new Map(due.map((id, i) => [id, i]))
        const out: Array<ExecutionRecord> = []
        for (const row of rows) {
          const decoded = decodeRecordRow(row)
          if (Either.isLeft(decoded)) return yield* decoded.left
          out.push(decoded.right)
        }
        return out.sort((a, b) => order.get(a.executionId)! - order.get(b.executionId)!)
      })).pipe(writing("claim"))

  const sweep: Backend["sweep"] = ({ before, force, now }) =>
    d.write([], now, (db, now) =>
      Effect.gen(function*() {
        const gone = (yield* (force ? db.all(sql.sweepForced, [before]) : db.all(sql.sweep, [before, now])))
          .map((r) => String(r.execution_id))
        for (const part of chunks(gone, ROWS_PER_INSERT)) {
          const list = d.listParam(part)
          yield* db.all(sql.sweepWrites, [list])
          yield* db.all(sql.sweepCheckpoints, [list])
          yield* db.all(sql.sweepBlobs, [list])
        }
        return gone.length
      })).pipe(writing("sweep"))

  // ---------------------------------------------------------------------------
  // Reads
  // ---------------------------------------------------------------------------

  const listExecutions = (query: ExecutionQuery) => {
    const conditions: Array<string> = []
    const params: Array<unknown> = []
    if (query.updatedBefore !== undefined) {
      conditions.push(`updated_at < ${p("time")}`)
      params.push(query.updatedBefore)
    }
    if (query.updatedAfter !== undefined) {
      conditions.push(`updated_at > ${p("time")}`)
      params.push(query.updatedAfter)
    }
    if (query.after !== undefined) {
      conditions.push(`(updated_at, execution_id) < (${p("time")}, ${p("text")})`)
      params.push(query.after.updatedAt, query.after.executionId)
    }
    const order = "ORDER BY updated_at DESC, execution_id DESC"
    const where = (extra: ReadonlyArray<string>) => {
      const all = [...extra, ...conditions]
      return all.length === 0 ? "" : ` WHERE ${all.join(" AND ")}`
    }
    let text: string
    let values: Array<unknown>
    if (query.statuses === undefined) {
      text = `SELECT ${REC_COLUMNS} FROM ${t.executions}${where([])} ${order} LIMIT ${p("int")}`
      values = [...params, query.limit]
    } else {
      // One index range per status, each at most `limit` rows: O(statuses × limit), whatever the table holds.
      text = query.statuses.map((_, i) =>
        `SELECT * FROM (SELECT ${REC_COLUMNS} FROM ${t.executions}${where([`status = ${p("text")}`])} ${order} ` +
        `LIMIT ${p("int")}) AS s${i}`
      ).join(" UNION ALL ") + ` ${order} LIMIT ${p("int")}`
      values = [...query.statuses.flatMap((s) => [s, ...params, query.limit]), query.limit]
    }
    return d.read((db) => db.all(prep(text), values)).pipe(
      reading("listExecutions"),
      Effect.flatMap((rows) => Effect.forEach(rows, (row) => decodeRecordRow(row)))
    )
  }

  const decodeFirst = (rows: ReadonlyArray<Row>, id?: string) =>
    rows.length === 0 ? Effect.succeedNone : Effect.asSome(decodeRow(rows[0]!, id))

  return {
    name: d.name,
    insert: insert("saveMany"),
    insertOne: (e, options) => insert("save")([e], options),
    load: (id) => d.read((db) => db.all(sql.load, [id])).pipe(reading("load"), Effect.flatMap((rows) => decodeFirst(rows, id))),
    list: (executionId, afterVersion, limit) =>
      d.read((db) =>
        db.all(sql.list, [
          executionId,
          Math.min(Math.max(Math.floor(afterVersion), -1), Checkpoint.MAX_VERSION),
          Math.min(limit ?? Checkpoint.MAX_VERSION, Checkpoint.MAX_VERSION)
        ])
      ).pipe(reading("list"), Effect.flatMap((rows) => Effect.forEach(rows, (row) => decodeRow(row)))),
    latest: (executionId) =>
      d.read((db) => db.all(sql.latest, [executionId])).pipe(reading("latest"), Effect.flatMap((rows) => decodeFirst(rows))),
    delete: removeCheckpoint,
    clear,
    prune,
    saveWrites,
    listWrites: (checkpointId) =>
      d.read((db) => db.all(sql.listWrites, [checkpointId])).pipe(
        reading("listWrites"),
        Effect.flatMap((rows) =>
          Effect.forEach(rows, (row): Effect.Effect<TaskWrite, CheckpointDecodeError> => {
            const value = parseJson(
              row.value,
              checkpointId,
              `the write ${JSON.stringify(row.key)} of task ${JSON.stringify(row.task_id)}`
            )
            return Either.isLeft(value)
              ? Effect.fail(value.left)
              : Effect.succeed({ taskId: String(row.task_id), key: String(row.key), value: value.right as Checkpoint.Json })
          })
        )
      ),
    getExecution: (executionId) =>
      d.read((db) => db.all(sql.record, [executionId])).pipe(
        reading("getExecution"),
        Effect.flatMap((rows) =>
          rows.length === 0 ? Effect.succeedNone : Either.match(decodeRecordRow(rows[0]!), {
            onLeft: Effect.fail,
            onRight: (r) => Effect.succeed(Option.some(r))
          })
        )
      ),
    listExecutions,
    updateExecution,
    claim,
    sweep,
    blobs: {
      load: (executionId, hashes) =>
        hashes.length === 0
          ? Effect.succeed(new Map<string, string>())
          : d.read((db) => db.all(sql.loadBlobs, [executionId, d.listParam(hashes)])).pipe(
            reading("load"),
            Effect.map((rows) => new Map(rows.map((r) => [String(r.hash), String(r.value)])))
          )
    }
  }
}

const isSqlError = (e: unknown): e is SqlError =>
  typeof e === "object" && e !== null && "_tag" in e && e._tag === "SqlError"

const isDecodeError = (e: unknown): e is CheckpointDecodeError =>
  typeof e === "object" && e !== null && "_tag" in e && e._tag === "CheckpointDecodeError"
