// The `conversation` section of the benchmark: a long chat on one execution, and the bytes it takes.
//
// State `{ messages: Array<{ role, content }> }` with an append reducer (ours: `Graph.Reducer.concat`,
// LangGraph: a concat reducer). One node, `turn`, appends a user + an assistant message (~200
// characters of content each, pseudo-random base64 text, so the databases' compression does not
// flatter anyone) and loops back to itself; the graph is compiled with `interruptBefore: ["turn"]`,
// so one `invoke` starts the conversation (it pauses before the first turn) and every turn is one
// `resume` (LangGraph: `invoke(null, { configurable: { thread_id } })`). `--conversation-turns`
// turns (default 500, `--quick` 100) on ONE execution / thread, every checkpoint kept (ours:
// `maxCheckpoints: 0`).
//
// Runs, their turns interleaved (turn t of every run, the order rotating from turn to turn):
//   ours on SQLite and PostgreSQL (large values packed: the default) — "ours";
//   the same with `largeValues: false` — "full snapshots", every checkpoint holds the whole state;
//   LangGraph's SqliteSaver and PostgresSaver.
// Bytes are what the database itself says, once the turns are done:
//   SQLite: `PRAGMA wal_checkpoint(TRUNCATE)` on a second connection, then `page_count × page_size`
//     of the file (each run has its own file; `dbstat` per table is in the JSON);
//   PostgreSQL: `VACUUM` of the run's tables, then the sum of `pg_total_relation_size` (heap + TOAST
//     + indexes) over them: ours its four tables, LangGraph every table of its own schema.
// Target (issue 14 item 3): ours ≤ 10% of full snapshots, on SQLite and on PostgreSQL.
import fs from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { Effect, Either, Schema } from "effect";
import { Graph } from "effect-checkpoint";
import { StateGraph, Annotation, START } from "@langchain/langgraph";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import * as L from "./lib.mjs";

export const CONVERSATION_RUNS = [
  { key: "ours:sqlite", side: "ours", backend: "sqlite", options: {} },
  { key: "full:sqlite", side: "ours", backend: "sqlite", options: { largeValues: false } },
  { key: "lg:sqlite", side: "lg", backend: "sqlite" },
  { key: "ours:postgres", side: "ours", backend: "postgres", options: {} },
  { key: "full:postgres", side: "ours", backend: "postgres", options: { largeValues: false } },
  { key: "lg:postgres", side: "lg", backend: "postgres" },
];

const CONTENT = 200;
/** The two messages of turn k (1-based), the same on both sides. */
const pair = (k) => [
  { role: "user", content: `u${k} ${L.makeBlob(CONTENT - 2 - String(k).length, 2 * k)}` },
  { role: "assistant", content: `a${k} ${L.makeBlob(CONTENT - 2 - String(k).length, 2 * k + 1)}` },
];
const turnOf = (messages) => messages.length / 2 + 1;

// ---------------------------------------------------------------- the graphs
const Message = Schema.Struct({ role: Schema.String, content: Schema.String });
const EcChatState = Schema.Struct({ messages: Schema.Array(Message) });
const ecChatGraph = Graph.make(EcChatState, { reducers: { messages: Graph.Reducer.concat } }).pipe(
  Graph.addNode("turn", (s) => Effect.succeed({ messages: pair(turnOf(s.messages)) })),
  Graph.setEntryPoint("turn"),
  Graph.addEdge("turn", "turn")
);
const LgChatState = Annotation.Root({
  messages: Annotation({ reducer: (a, b) => a.concat(b), default: () => [] }),
});
const lgChatGraph = (checkpointer) =>
  new StateGraph(LgChatState)
    .addNode("turn", (s) => ({ messages: pair(turnOf(s.messages)) }))
    .addEdge(START, "turn")
    .addEdge("turn", "turn")
    .compile({ checkpointer, interruptBefore: ["turn"] });

// ---------------------------------------------------------------- sizes
const quoteIdent = (s) => {
  if (!/^[a-z0-9_]+$/.test(s)) throw new Error(`refusing identifier ${s}`);
  return `"${s}"`;
};

/** The bytes of a SQLite file once its WAL is checkpointed, from the database's own page counts. */
function sqliteBytes(file) {
  const db = new Database(file);
  try {
    const [ck] = db.pragma("wal_checkpoint(TRUNCATE)");
    const pageSize = db.pragma("page_size", { simple: true });
    const pageCount = db.pragma("page_count", { simple: true });
    const freelist = db.pragma("freelist_count", { simple: true });
    let tables;
    try {
      tables = Object.fromEntries(db.prepare("SELECT name, SUM(pgsize) AS bytes FROM dbstat GROUP BY name ORDER BY name").all().map((r) => [r.name, r.bytes]));
    } catch (e) {
      tables = { error: `dbstat: ${e.message}` };
    }
    let walBytes = 0;
    try { walBytes = fs.statSync(`${file}-wal`).size; } catch { /* none */ }
    return { bytes: pageCount * pageSize, page_size: pageSize, page_count: pageCount, freelist_count: freelist, wal_busy: ck?.busy, wal_bytes_after: walBytes, tables };
  } finally {
    db.close();
  }
}

/** VACUUM the tables, then the sum of pg_total_relation_size (heap + TOAST + indexes) over them. */
async function pgBytes(schema, tables) {
  return L.pgAdmin(async (c) => {
    let names = tables;
    if (names === undefined) {
      names = (await c.query("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'", [schema])).rows.map((r) => r.relname);
    }
    const out = { bytes: 0, tables: {} };
    for (const t of names) {
      const q = `${quoteIdent(schema)}.${quoteIdent(t)}`;
      await c.query(`VACUUM ${q}`);
      const { rows } = await c.query("SELECT pg_total_relation_size($1::regclass)::bigint AS total, pg_relation_size($1::regclass)::bigint AS heap, pg_indexes_size($1::regclass)::bigint AS idx", [q]);
      const r = { total: Number(rows[0].total), heap: Number(rows[0].heap), indexes: Number(rows[0].idx) };
      r.toast_fsm_vm = r.total - r.heap - r.indexes; // TOAST (table + its index) and the free-space / visibility maps
      out.tables[t] = r;
      out.bytes += r.total;
    }
    return out;
  });
}

// ---------------------------------------------------------------- one run per store
async function openRun(spec, round) {
  const run = { ...spec, samples: [] };
  if (spec.side === "ours") {
    const b = await L.openEc(spec.backend, `conv_${spec.key.split(":")[0]}`, spec.options);
    run.b = b;
    run.executionId = `chat-${process.pid}-${round}`;
    const runnable = await b.compile(ecChatGraph, { maxCheckpoints: 0, interruptBefore: ["turn"] });
    const paused = (eff) => b.runtime.runPromise(Effect.either(eff)).then((r) => {
      if (Either.isRight(r) || r.left._tag !== "GraphInterrupted") throw new Error(`${spec.key}: expected a pause before turn, got ${Either.isRight(r) ? "the end" : r.left._tag}`);
    });
    run.start = () => paused(runnable.invoke({ messages: [] }, { executionId: run.executionId }));
    run.turn = () => paused(runnable.resume(run.executionId));
    run.final = async () => (await b.runtime.runPromise(b.store.latest(run.executionId))).value.state.messages;
    run.bytes = async () => {
      if (spec.backend === "sqlite") return sqliteBytes(b.info.filename);
      const t = b.info.tables;
      return pgBytes(b.info.schema, [t.checkpoints, t.executions, t.writes, t.blobs]);
    };
    run.checkpoints = async () => (await b.runtime.runPromise(b.store.list(run.executionId))).length;
    run.close = () => b.close();
  } else {
    let saver, pool, file;
    if (spec.backend === "sqlite") {
      fs.mkdirSync(L.DATA_DIR, { recursive: true });
      file = path.join(L.DATA_DIR, `lg-conv-${round}.sqlite`);
      for (const suf of ["", "-wal", "-shm"]) fs.rmSync(file + suf, { force: true });
      saver = SqliteSaver.fromConnString(file);
      saver.setup();
    } else {
      await L.dropSchemas([L.SCHEMAS.conv]);
      pool = new pg.Pool({ connectionString: L.PG_URL, application_name: "ecbench-lg-conv" });
      saver = new PostgresSaver(pool, undefined, { schema: L.SCHEMAS.conv });
      await saver.setup();
    }
    const graph = lgChatGraph(saver);
    const cfg = { configurable: { thread_id: `chat-${process.pid}-${round}` } };
    run.start = () => graph.invoke({ messages: [] }, cfg);
    run.turn = () => graph.invoke(null, cfg);
    run.final = async () => (await graph.getState(cfg)).values.messages;
    run.bytes = async () => (spec.backend === "sqlite" ? sqliteBytes(file) : pgBytes(L.SCHEMAS.conv));
    run.checkpoints = async () => { let n = 0; for await (const _ of saver.list({ configurable: { ...cfg.configurable, checkpoint_ns: "" } })) n++; return n; };
    run.close = async () => {
      if (file) { saver.db.close(); for (const suf of ["", "-wal", "-shm"]) fs.rmSync(file + suf, { force: true }); }
      if (pool) { await pool.end(); await L.dropSchemas([L.SCHEMAS.conv]); }
    };
  }
  return run;
}

/** One round of the section: `turns` turns of every run, interleaved; then each run's bytes. */
export async function sectionConversation(round, { turns, openOrSkip }) {
  const runs = [];
  const out = {};
  try {
    for (const spec of CONVERSATION_RUNS) {
      const r = await openOrSkip(spec.side === "ours" ? "ours (conversation)" : "LangGraph (conversation)", spec.key, () => openRun(spec, round));
      if (r) runs.push(r);
    }
    for (const r of runs) await r.start();
    L.gc();
    for (let t = 0; t < turns; t++) {
      for (const r of L.rotate(runs, t + round)) {
        const s = L.now();
        await r.turn();
        r.samples.push(L.now() - s);
      }
    }
    for (const r of runs) {
      const messages = await r.final();
      if (messages.length !== 2 * turns || messages[2 * turns - 1].content !== pair(turns)[1].content) {
        throw new Error(`${r.key}: the conversation ended with ${messages.length} messages, expected ${2 * turns}`);
      }
      const size = await r.bytes();
      const t = L.summarize(r.samples);
      const last = L.summarize(r.samples.slice(-Math.max(1, Math.round(turns / 10))));
      out[r.key] = {
        turns, checkpoints: await r.checkpoints(), bytes: size.bytes, size,
        turn_median_ms: t.median, turn_mean_ms: t.mean, turn_p99_ms: t.p99, last10pct_median_ms: last.median,
        state_bytes: Buffer.byteLength(JSON.stringify({ messages })),
      };
      L.log(`  conversation ${r.key}: ${turns} turns, ${out[r.key].checkpoints} checkpoints, ${(size.bytes / 1024).toFixed(0)} KiB, ` +
        `turn median ${t.median.toFixed(3)} ms (last 10%: ${last.median.toFixed(3)} ms)`);
    }
  } finally {
    for (const r of runs) await r.close().catch((e) => L.log(`close ${r.key}:`, e.message));
  }
  for (const backend of ["sqlite", "postgres"]) {
    const o = out[`ours:${backend}`], f = out[`full:${backend}`], g = out[`lg:${backend}`];
    if (o && f) out[`ours_over_full:${backend}`] = o.bytes / f.bytes;
    if (o && g) out[`ours_over_lg:${backend}`] = o.bytes / g.bytes;
  }
  return out;
}

/** The section's table (markdown), from every recorded round. */
export function conversationSummary(rounds, { collect, cell, verdict, turns }) {
  const o = [];
  o.push(`\n## 7. Conversation: ${turns} turns on one execution, append reducer, every checkpoint kept (median over rounds)\n`);
  o.push("Bytes are the database's own: SQLite page_count × page_size after a WAL checkpoint; PostgreSQL pg_total_relation_size (heap + TOAST + indexes) of the run's tables after VACUUM.\n");
  o.push("| backend | run | checkpoints | MiB | **ours / full snapshots** (target ≤ 0.10) | ours / LangGraph | turn median ms | turn median ms, last 10% of turns |");
  o.push("|---|---|---|---|---|---|---|---|");
  const label = { ours: "ours (large values packed)", full: "ours, largeValues: false (full snapshots)", lg: "LangGraph" };
  for (const backend of ["sqlite", "postgres"]) {
    for (const side of ["ours", "full", "lg"]) {
      const key = `${side}:${backend}`;
      const has = rounds.some((r) => r.conversation?.[key]);
      if (!has) { o.push(`| ${L.backendLabel(backend)} | ${label[side]} | – | – | | | – | – |`); continue; }
      const ratio = side === "ours" ? collect(rounds, (r) => r.conversation[`ours_over_full:${backend}`]) : undefined;
      const vsLg = side === "ours" ? collect(rounds, (r) => r.conversation[`ours_over_lg:${backend}`]) : undefined;
      o.push(`| ${L.backendLabel(backend)} | ${label[side]}${side === "lg" ? ` ${L.lgLabel(backend)}` : ""} | ` +
        `${collect(rounds, (r) => r.conversation[key].checkpoints).median} | ${cell(collect(rounds, (r) => r.conversation[key].bytes / 1048576), 2)} | ` +
        `${ratio ? `**${cell(ratio, 3)}**${verdict(ratio, (x) => x <= 0.1)}` : ""} | ${vsLg ? cell(vsLg, 3) : ""} | ` +
        `${cell(collect(rounds, (r) => r.conversation[key].turn_median_ms), 3)} | ${cell(collect(rounds, (r) => r.conversation[key].last10pct_median_ms), 3)} |`);
    }
  }
  return o.join("\n");
}
