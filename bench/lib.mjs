// Shared helpers of the effect-checkpoint benchmark: config, stats, the graphs of both libraries,
// the backends of both libraries, and the bookkeeping that lets every run (and `cleanup.mjs`)
// remove exactly what it made. Plain ESM, no build step; effect-checkpoint is imported like a
// user imports it (it resolves to the root's dist/, `npm run build`).
import os from "node:os";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { StateGraph, Annotation, Send, START, END } from "@langchain/langgraph";
import { MemorySaver } from "@langchain/langgraph-checkpoint";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import pg from "pg";
import Redis from "ioredis";
import { Effect, ManagedRuntime, Schema } from "effect";
import { CheckpointStore, Graph, MemoryStore } from "effect-checkpoint";
// The other stores are imported when a run opens them (`ecLayerFor`): a store whose module does not
// load (not built, not ported yet) is skipped and listed, and the rest of the run goes on.

const require = createRequire(import.meta.url);
export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------- config
// PostgreSQL: the existing database `test`, with schemas of our own (never a database of our own).
export const PG_URL = process.env.ECBENCH_PG_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
// Redis: a key prefix of our own, in db 14 (never FLUSHDB; keys are removed through our own index).
export const REDIS_URL = process.env.ECBENCH_REDIS_URL ?? "redis://127.0.0.1:6379/14";
export const RUN_ID = `${process.pid}`;
export const SCHEMA_PREFIX = "ecbench_"; // + <pid>_<side>
export const KEY_PREFIX = "ecbench:"; // + <pid>:<store>:
export const TMP_PREFIX = "ecbench-"; // + <pid>
export const DATA_DIR = process.env.ECBENCH_DATA_DIR ?? path.join(os.tmpdir(), `${TMP_PREFIX}${RUN_ID}`);
export const SCHEMAS = {
  lg: `${SCHEMA_PREFIX}${RUN_ID}_lg`, // LangGraph's PostgresSaver tables
  ec: `${SCHEMA_PREFIX}${RUN_ID}_ec`, // effect-checkpoint's PostgresStore tables
  raw: `${SCHEMA_PREFIX}${RUN_ID}_raw`, // the raw pg floor
  conv: `${SCHEMA_PREFIX}${RUN_ID}_conv`, // LangGraph's PostgresSaver tables of the conversation section (ours: in _ec)
};
export const redisPrefix = (tag) => `${KEY_PREFIX}${RUN_ID}:${tag}:`;

// ---------------------------------------------------------------- timing / stats (as the peer's lib.mjs)
export const now = () => Number(process.hrtime.bigint()) / 1e6; // ms, float

export function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx];
}
export function summarize(samples) {
  const s = Float64Array.from(samples).sort();
  const sum = s.reduce((a, b) => a + b, 0);
  return { n: s.length, median: quantile(s, 0.5), p99: quantile(s, 0.99), min: s[0], max: s[s.length - 1], mean: sum / s.length };
}
export function median(xs) {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
export function spread(xs) {
  const s = xs.filter((x) => Number.isFinite(x));
  if (!s.length) return { median: NaN, min: NaN, max: NaN };
  return { median: median(s), min: Math.min(...s), max: Math.max(...s) };
}
export const gc = () => {
  if (typeof globalThis.gc === "function") globalThis.gc();
};
export const rotate = (arr, k) => arr.map((_, i) => arr[(i + k) % arr.length]);
export const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);

export function makeBlob(bytes, seed = 1) {
  // deterministic pseudo-random base64-alphabet text (no JSON escaping needed) — the peer's
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  let x = seed >>> 0 || 1;
  const out = Buffer.allocUnsafe(Math.max(0, bytes));
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = alphabet.charCodeAt(x & 63);
  }
  return out.toString("latin1");
}

// ---------------------------------------------------------------- graphs: LangGraph (the peer's, unchanged)
const LgThroughputState = Annotation.Root({
  log: Annotation({ reducer: (a, b) => a.concat(b), default: () => [] }),
  counter: Annotation({ reducer: (a, b) => a + b, default: () => 0 }),
});
export function lgThroughputGraph(checkpointer) {
  return new StateGraph(LgThroughputState)
    .addNode("step1", () => ({ log: ["step1 done"], counter: 1 }))
    .addNode("step2", () => ({ log: ["step2 done"], counter: 1 }))
    .addNode("step3", () => ({ log: ["step3 done"], counter: 1 }))
    .addEdge(START, "step1")
    .addEdge("step1", "step2")
    .addEdge("step2", "step3")
    .addEdge("step3", END)
    .compile(checkpointer ? { checkpointer } : {});
}
const LgSizeState = Annotation.Root({
  blob: Annotation(),
  counter: Annotation({ reducer: (a, b) => a + b, default: () => 0 }),
});
export function lgSizeGraph(checkpointer) {
  return new StateGraph(LgSizeState)
    .addNode("step1", () => ({ counter: 1 }))
    .addNode("step2", () => ({ counter: 1 }))
    .addNode("step3", () => ({ counter: 1 }))
    .addEdge(START, "step1")
    .addEdge("step1", "step2")
    .addEdge("step2", "step3")
    .addEdge("step3", END)
    .compile(checkpointer ? { checkpointer } : {});
}
const LgLoopState = Annotation.Root({
  counter: Annotation({ reducer: (a, b) => a + b, default: () => 0 }),
  target: Annotation(),
  note: Annotation(),
});
export function lgLoopGraph(checkpointer) {
  return new StateGraph(LgLoopState)
    .addNode("tick", (s) => ({ counter: 1, note: `tick ${s.counter + 1}`.padEnd(100, ".") }))
    .addEdge(START, "tick")
    .addConditionalEdges("tick", (s) => (s.counter >= s.target ? END : "tick"))
    .compile(checkpointer ? { checkpointer } : {});
}
export const throughputInput = () => ({ log: ["input"], counter: 0 });

// ---------------------------------------------------------------- graphs: effect-checkpoint (the same graphs)
// Same state, same work per node: append "stepN done" to `log`, add 1 to `counter`.
export const EcThroughputState = Schema.Struct({ log: Schema.Array(Schema.String), counter: Schema.Number });
const ecStep = (name) => (s) => Effect.succeed({ log: [...s.log, `${name} done`], counter: s.counter + 1 });
export const ecThroughputGraph = Graph.make(EcThroughputState).pipe(
  Graph.addNode("step1", ecStep("step1")),
  Graph.addNode("step2", ecStep("step2")),
  Graph.addNode("step3", ecStep("step3")),
  Graph.setEntryPoint("step1"),
  Graph.addEdge("step1", "step2"),
  Graph.addEdge("step2", "step3"),
  Graph.addEdge("step3", Graph.END)
);
// The blob is carried along untouched; only the counter changes.
export const EcSizeState = Schema.Struct({ blob: Schema.String, counter: Schema.Number });
const ecCount = (s) => Effect.succeed({ blob: s.blob, counter: s.counter + 1 });
export const ecSizeGraph = Graph.make(EcSizeState).pipe(
  Graph.addNode("step1", ecCount),
  Graph.addNode("step2", ecCount),
  Graph.addNode("step3", ecCount),
  Graph.setEntryPoint("step1"),
  Graph.addEdge("step1", "step2"),
  Graph.addEdge("step2", "step3"),
  Graph.addEdge("step3", Graph.END)
);
export const EcLoopState = Schema.Struct({ counter: Schema.Number, target: Schema.Number, note: Schema.String });
export const ecLoopGraph = Graph.make(EcLoopState).pipe(
  Graph.addNode("tick", (s) => Effect.succeed({ counter: s.counter + 1, target: s.target, note: `tick ${s.counter + 1}`.padEnd(100, ".") })),
  Graph.setEntryPoint("tick"),
  Graph.addConditionalEdges("tick", (s) => (s.counter >= s.target ? Graph.END : "tick"))
);

// ---------------------------------------------------------------- graphs: fan-out (both libraries)
// plan → 8 tasks → join → END, as 8 parallel edges (w1…w8, joined by a fan-in) or as 8 sends to one
// node "work" (map-reduce). Every task appends its name to `log` and adds 1 to `counter` (reducers
// on both sides); join appends the count. 3 supersteps; ours saves 4 checkpoints and 8 task writes.
export const FANOUT = 8;
const fanNames = Array.from({ length: FANOUT }, (_, i) => `w${i + 1}`);
const fanItems = Array.from({ length: FANOUT }, (_, i) => `item${i + 1}`);
export const fanoutInput = () => ({ log: [], counter: 0, item: "" });
export const checkFanout = (out, who) => {
  if (out.counter !== FANOUT || out.log.length !== FANOUT + 2 || out.log[FANOUT + 1] !== `join ${FANOUT}`) {
    throw new Error(`${who} fan-out graph ended at ${JSON.stringify(out)}`);
  }
};

const LgFanoutState = Annotation.Root({
  log: Annotation({ reducer: (a, b) => a.concat(b), default: () => [] }),
  counter: Annotation({ reducer: (a, b) => a + b, default: () => 0 }),
  item: Annotation(),
});
export function lgFanoutGraph(shape, checkpointer) {
  let g = new StateGraph(LgFanoutState)
    .addNode("plan", () => ({ log: ["plan"] }))
    .addNode("join", (s) => ({ log: [`join ${s.counter}`] }))
    .addEdge(START, "plan")
    .addEdge("join", END);
  if (shape === "edges") {
    for (const n of fanNames) g = g.addNode(n, () => ({ log: [n], counter: 1 })).addEdge("plan", n);
    g = g.addEdge(fanNames, "join");
  } else {
    // A Send's argument is the task's input (its view of the state).
    g = g
      .addNode("work", (s) => ({ log: [s.item], counter: 1 }))
      .addConditionalEdges("plan", () => fanItems.map((item) => new Send("work", { item })))
      .addEdge("work", "join");
  }
  return g.compile(checkpointer ? { checkpointer } : {});
}

export const EcFanoutState = Schema.Struct({ log: Schema.Array(Schema.String), counter: Schema.Number, item: Schema.String });
const fanReducers = { log: Graph.Reducer.concat, counter: Graph.Reducer.sum };
export function ecFanoutGraph(shape) {
  let g = Graph.make(EcFanoutState, { reducers: fanReducers }).pipe(
    Graph.addNode("plan", () => Effect.succeed({ log: ["plan"] })),
    Graph.addNode("join", (s) => Effect.succeed({ log: [`join ${s.counter}`] })),
    Graph.setEntryPoint("plan"),
    Graph.addEdge("join", Graph.END)
  );
  if (shape === "edges") {
    for (const n of fanNames) g = Graph.addNode(g, n, () => Effect.succeed({ log: [n], counter: 1 }));
    g = Graph.addEdge(Graph.addEdge(g, "plan", fanNames), fanNames, "join");
  } else {
    g = g.pipe(
      Graph.addNode("work", (s) => Effect.succeed({ log: [s.item], counter: 1 })),
      Graph.addConditionalEdges("plan", () => fanItems.map((item) => Graph.send("work", { item }))),
      Graph.addEdge("work", "join")
    );
  }
  return g;
}

// ---------------------------------------------------------------- PostgreSQL helpers
export async function pgAdmin(fn) {
  const c = new pg.Client({ connectionString: PG_URL, application_name: "ecbench-admin" });
  await c.connect();
  try {
    await c.query("SET lock_timeout = '10s'");
    return await fn(c);
  } finally {
    await c.end();
  }
}
const quoteIdent = (s) => {
  if (!/^[a-z0-9_]+$/.test(s)) throw new Error(`refusing identifier ${s}`);
  return `"${s}"`;
};
export async function dropSchemas(names) {
  await pgAdmin(async (c) => {
    for (const n of names) {
      if (!n.startsWith(SCHEMA_PREFIX)) throw new Error(`refusing to drop schema ${n}`);
      await c.query(`DROP SCHEMA IF EXISTS ${quoteIdent(n)} CASCADE`);
    }
  });
}
export async function createSchema(name) {
  await pgAdmin((c) => c.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(name)}`));
}

// ---------------------------------------------------------------- Redis helpers
export const newRedis = () => new Redis(REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: 2 });

/**
 * Removes every key an effect-checkpoint RedisStore with `prefix` wrote, through the store's own indexes
 * (layout: `{prefix}|c|{id}`, `|x|{e}`, `|r|{e}`, `|w|{id}`, `|b|`/`|bc|`/`|br|{e}`, `|executions`, `|due`, `|i|{status}`).
 */
export async function removeRedisStoreKeys(redis, prefix) {
  if (!prefix.startsWith(KEY_PREFIX)) throw new Error(`refusing prefix ${prefix}`);
  const k = `${prefix}|`;
  const executionsKey = `${k}executions`;
  let removed = 0;
  for (;;) {
    const ids = await redis.zrange(executionsKey, 0, 499);
    if (ids.length === 0) break;
    for (const e of ids) {
      const setKey = `${k}x|${e}`;
      const cps = await redis.zrange(setKey, 0, -1);
      for (let i = 0; i < cps.length; i += 250) {
        const chunk = cps.slice(i, i + 250);
        removed += await redis.unlink(...chunk.map((id) => `${k}c|${id}`), ...chunk.map((id) => `${k}w|${id}`));
      }
      removed += await redis.unlink(setKey, `${k}r|${e}`, `${k}b|${e}`, `${k}bc|${e}`, `${k}br|${e}`);
    }
    await redis.zrem(executionsKey, ...ids);
  }
  const statuses = ["pending", "running", "interrupted", "sleeping", "done", "failed"].map((st) => `${k}i|${st}`);
  removed += await redis.unlink(executionsKey, `${k}due`, ...statuses);
  return removed;
}

/** Sweeps keys under our own prefix with SCAN (cleanup.mjs only: after a crash, the index may be incomplete). */
export async function sweepRedisPrefix(redis, pattern) {
  if (!pattern.startsWith(KEY_PREFIX)) throw new Error(`refusing pattern ${pattern}`);
  let cursor = "0", n = 0;
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    if (keys.length) n += await redis.unlink(...keys);
  } while (cursor !== "0");
  return n;
}

// ---------------------------------------------------------------- resource ledger (for cleanup.mjs)
// Written before anything is created, so an interrupted run can be cleaned up by `node cleanup.mjs`.
export function writeLedger(extra = {}) {
  fs.mkdirSync(DATA_DIR, { recursive: true });
  fs.writeFileSync(
    path.join(DATA_DIR, "ledger.json"),
    JSON.stringify({ pid: process.pid, pgUrl: PG_URL, redisUrl: REDIS_URL, schemas: Object.values(SCHEMAS), redisPrefixes: [`${KEY_PREFIX}${RUN_ID}:`], ...extra }, null, 1)
  );
}

// ---------------------------------------------------------------- LangGraph backends (as the peer's openBackend)
// { name, saver, reset(), close(), info }
export async function openLg(name) {
  if (name === "none") return { name, saver: undefined, reset: async () => {}, close: async () => {}, info: {} };
  if (name === "memory") {
    const b = { name, saver: new MemorySaver(), info: {} };
    b.reset = async () => { b.saver = new MemorySaver(); gc(); };
    b.close = async () => { b.saver = undefined; };
    return b;
  }
  if (name === "sqlite") {
    fs.mkdirSync(DATA_DIR, { recursive: true });
    const file = path.join(DATA_DIR, "lg-sqlite-saver.sqlite");
    const rm = () => { for (const suf of ["", "-wal", "-shm"]) fs.rmSync(file + suf, { force: true }); };
    rm();
    const b = { name, file, info: {} };
    const open = () => {
      b.saver = SqliteSaver.fromConnString(file);
      b.saver.setup();
      b.info.journal_mode = b.saver.db.pragma("journal_mode", { simple: true });
      b.info.synchronous = b.saver.db.pragma("synchronous", { simple: true }); // 1 = NORMAL, 2 = FULL
    };
    open();
    b.reset = async () => { b.saver.db.close(); rm(); open(); };
    b.close = async () => { b.saver.db.close(); rm(); };
    return b;
  }
  if (name === "postgres") {
    const pool = new pg.Pool({ connectionString: PG_URL, application_name: "ecbench-lg" }); // as PostgresSaver.fromConnString
    const saver = new PostgresSaver(pool, undefined, { schema: SCHEMAS.lg });
    await saver.setup();
    const s = quoteIdent(SCHEMAS.lg);
    const b = { name, saver, pool, info: { schema: SCHEMAS.lg } };
    b.reset = async () => { await pool.query(`TRUNCATE ${s}.checkpoints, ${s}.checkpoint_blobs, ${s}.checkpoint_writes`); };
    b.close = async () => { await pool.end(); };
    return b;
  }
  throw new Error(`unknown LangGraph backend ${name}`);
}

export function lgLabel(name) {
  return { none: "no checkpointer", memory: "MemorySaver", sqlite: "SqliteSaver", postgres: "PostgresSaver", file: "–", redis: "– (RedisSaver needs RedisJSON + RediSearch)" }[name] ?? name;
}

// ---------------------------------------------------------------- effect-checkpoint backends
// { name, runtime, store, reset(), close(), info, compile(graph, config) }
// Each store is a Layer; a ManagedRuntime builds it once and keeps it until `close`.
let ecSeq = 0;
export async function ecLayerFor(name, tag, options = {}) {
  const seq = ++ecSeq;
  if (name === "memory") return { layer: MemoryStore.layer, info: {} };
  if (name === "file") {
    const { FileStore } = await import("effect-checkpoint/file");
    const directory = path.join(DATA_DIR, `ec-file-${tag}-${seq}`);
    return { layer: FileStore.layer({ directory }), info: { directory }, rm: () => fs.rmSync(directory, { recursive: true, force: true }) };
  }
  if (name === "sqlite") {
    const { SqliteStore } = await import("effect-checkpoint/sqlite");
    fs.mkdirSync(DATA_DIR, { recursive: true });
    const filename = path.join(DATA_DIR, `ec-sqlite-${tag}-${seq}.sqlite`);
    return {
      layer: SqliteStore.layer({ filename, ...options }), // WAL, synchronous = NORMAL (the defaults), like the raw floor
      info: { filename, synchronous: "NORMAL" },
      rm: () => { for (const suf of ["", "-wal", "-shm"]) fs.rmSync(filename + suf, { force: true }); },
    };
  }
  if (name === "postgres") {
    const { PostgresStore } = await import("effect-checkpoint/postgres");
    const tableName = `cp_${tag}_${seq}`.replace(/[^A-Za-z0-9_]/g, "_");
    // v3: four tables per store (checkpoints, _executions, _writes, _blobs); a reset empties all four
    const t = PostgresStore.tableNames(tableName);
    const qualified = [t.checkpoints, t.executions, t.writes, t.blobs].map((n) => `${quoteIdent(SCHEMAS.ec)}.${quoteIdent(n)}`);
    return {
      layer: PostgresStore.layer({ url: PG_URL, schema: SCHEMAS.ec, tableName, applicationName: "ecbench-ec", ...options }),
      info: { schema: SCHEMAS.ec, tableName, tables: t },
      truncate: async () => pgAdmin((c) => c.query(`TRUNCATE ${qualified.join(", ")}`)),
      // on close: the store's tables and its row in the schema-version table go (the schema at the run's end)
      drop: async () => pgAdmin(async (c) => {
        await c.query(`DROP TABLE IF EXISTS ${qualified.join(", ")}`);
        await c.query(`DELETE FROM ${quoteIdent(SCHEMAS.ec)}.${quoteIdent(PostgresStore.migrationsTable)} WHERE table_name = $1`, [tableName]).catch(() => {});
      }),
    };
  }
  if (name === "redis") {
    const { RedisStore } = await import("effect-checkpoint/redis");
    const prefix = redisPrefix(tag);
    return { layer: RedisStore.layer({ url: REDIS_URL, prefix, ...options }), info: { prefix }, prefix };
  }
  throw new Error(`unknown effect-checkpoint backend ${name}`);
}

export async function openEc(name, tag = "tp", options = {}) {
  if (name === "none") return { name, store: undefined, reset: async () => {}, close: async () => {}, info: {} };
  const b = { name, info: {} };
  let redis;
  const open = async () => {
    const spec = await ecLayerFor(name, tag, options);
    spec.rm?.();
    b.spec = spec;
    b.info = spec.info;
    b.runtime = ManagedRuntime.make(spec.layer);
    try {
      b.store = await b.runtime.runPromise(CheckpointStore.CheckpointStore);
    } catch (e) {
      // The layer did not build (server down, store not ported…): release what it took, report.
      await b.runtime.dispose().catch(() => {});
      b.runtime = undefined;
      spec.rm?.();
      throw e;
    }
  };
  const shut = async () => {
    if (b.runtime) await b.runtime.dispose();
    b.runtime = undefined;
    b.spec?.rm?.();
    await b.spec?.drop?.();
    if (b.spec?.prefix) {
      redis ??= newRedis();
      await removeRedisStoreKeys(redis, b.spec.prefix);
    }
  };
  await open();
  if (name === "postgres") {
    b.reset = async () => { await b.spec.truncate(); };
  } else if (name === "redis") {
    b.reset = async () => { redis ??= newRedis(); await removeRedisStoreKeys(redis, b.spec.prefix); };
  } else {
    // memory: a new store; file and sqlite: close, remove the files, open anew (as the peer does for SQLite)
    b.reset = async () => { await shut(); gc(); await open(); };
  }
  b.close = async () => {
    await shut();
    if (redis) redis.disconnect();
  };
  b.compile = (graph, config) => b.runtime.runPromise(Graph.compileCheckpointable(graph, config));
  return b;
}

export function ecLabel(name) {
  return { none: "Graph.compile (no checkpoints)", memory: "MemoryStore", file: "FileStore", sqlite: "SqliteStore", postgres: "PostgresStore", redis: "RedisStore" }[name] ?? name;
}
export function backendLabel(name) {
  return { none: "engine floor (no checkpoints)", memory: "Memory", file: "File (fsync per save)", sqlite: "SQLite file (WAL, synchronous=NORMAL)", postgres: "PostgreSQL", redis: "Redis" }[name] ?? name;
}

// ---------------------------------------------------------------- versions
export function versions() {
  const pkgs = [
    "@langchain/langgraph", "@langchain/langgraph-checkpoint", "@langchain/langgraph-checkpoint-sqlite",
    "@langchain/langgraph-checkpoint-postgres", "@langchain/core", "better-sqlite3", "pg", "ioredis",
  ];
  const out = { node: process.version };
  const read = (file) => JSON.parse(fs.readFileSync(file, "utf8")).version;
  for (const p of pkgs) {
    try { out[p] = read(path.join(BENCH_DIR, "node_modules", p, "package.json")); } catch (e) { out[p] = `? (${e.message})`; }
  }
  // what effect-checkpoint itself runs on (the root's copies)
  const rootNm = path.join(BENCH_DIR, "..", "node_modules");
  for (const p of ["effect", "@effect/sql", "@effect/sql-pg", "@effect/sql-sqlite-node", "better-sqlite3", "ioredis", "pg"]) {
    try { out[`root:${p}`] = read(path.join(rootNm, p, "package.json")); } catch { /* not installed */ }
  }
  try { out["effect-checkpoint"] = read(path.join(BENCH_DIR, "..", "package.json")); } catch { /* */ }
  // effect must be ONE copy: the one effect-checkpoint imports
  try {
    const mine = fs.realpathSync(require.resolve("effect"));
    const theirs = fs.realpathSync(createRequire(path.join(BENCH_DIR, "..", "dist", "index.js")).resolve("effect"));
    out.effect_single_copy = mine === theirs;
  } catch (e) { out.effect_single_copy = `? (${e.message})`; }
  return out;
}
