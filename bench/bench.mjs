// effect-checkpoint benchmark: effect-checkpoint side by side with LangGraph.js's checkpointers
// and the raw drivers, in ONE process and the same rounds, reported as ratios.
//
//   node --expose-gc bench/bench.mjs [--quick] [--rounds 5] [--warmup-rounds 1] [--n 300]
//        [--loop-steps 1000] [--sections throughput,save,read,size,fanout,durable,conversation] [--out file.json] [--keep]
//        [--durable-executions 10000] [--durable-recover 1000] [--durable-stores memory,file,sqlite,postgres,redis]
//        [--durable-recovery-stores memory,sqlite,postgres] [--conversation-turns 500]
//
// Method (the peer benchmark's, ../shared/peer-bench): every section runs once per round; one
// unrecorded warm-up round, then R recorded rounds; invocations/operations of the things compared
// are interleaved in blocks whose order rotates, so they see the same stretches of machine noise;
// ratios are computed inside each round, then summarised as median [min–max] over rounds.
import fs from "node:fs";
import { execFileSync } from "node:child_process";
import path from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { Effect } from "effect";
import { Checkpoint, Graph } from "effect-checkpoint";
import * as L from "./lib.mjs";
import { durableSummary, sectionDurable } from "./durable.mjs";
import { conversationSummary, sectionConversation } from "./conversation.mjs";

// ---------------------------------------------------------------- args
const argv = process.argv.slice(2);
const arg = (name, def) => {
  const i = argv.indexOf(`--${name}`);
  if (i === -1) return def;
  const v = argv[i + 1];
  return v === undefined || v.startsWith("--") ? true : v;
};
const QUICK = Boolean(arg("quick", false));
const ROUNDS = Number(arg("rounds", QUICK ? 1 : 5));
const WARMUP_ROUNDS = Number(arg("warmup-rounds", QUICK ? 0 : 1));
const N = Number(arg("n", QUICK ? 40 : 300));
const LOOP_STEPS = Number(arg("loop-steps", QUICK ? 200 : 1000));
const ALL_SECTIONS = ["throughput", "save", "read", "size", "fanout", "durable", "conversation"];
const SECTIONS = String(arg("sections", ALL_SECTIONS.join(","))).split(",").filter(Boolean);
for (const s of SECTIONS) if (!ALL_SECTIONS.includes(s)) throw new Error(`unknown section ${s} (sections: ${ALL_SECTIONS.join(", ")})`);
// durable (bench/durable.mjs): executions in the store for the records/claim latencies, crashed executions to recover
const DURABLE_EXECUTIONS = Number(arg("durable-executions", QUICK ? 1000 : 10000));
const DURABLE_RECOVER = Number(arg("durable-recover", QUICK ? 100 : 1000));
const DURABLE_REPS = QUICK ? 5 : 20;
const listArg = (name) => {
  const v = arg(name, undefined);
  return typeof v === "string" ? v.split(",").filter((x) => x.length > 0) : undefined;
};
const DURABLE_STORES = listArg("durable-stores");
const DURABLE_RECOVERY_STORES = listArg("durable-recovery-stores");
// conversation (bench/conversation.mjs): turns of the chat on one execution
const CONVERSATION_TURNS = Number(arg("conversation-turns", QUICK ? 100 : 500));
const KEEP_RESULTS_DIR = path.join(L.BENCH_DIR, "results");
const STAMP = new Date().toISOString().replace(/[:.]/g, "-");
const OUT = String(arg("out", path.join(KEEP_RESULTS_DIR, `bench-${STAMP}.json`)));
const WARMUP = QUICK ? 5 : 30; // warm-up invocations per run (the peer's)
const BLOCKS = 10; // interleaving blocks per run
// diagnostics: `--sides ec` (or `lg`) runs one side only in throughput/size, to see what interleaving costs
const SIDES = String(arg("sides", "lg,ec")).split(",");

// throughput: the backends of each side, and the durability variants (both sides: default "async")
const LG_BACKENDS = ["none", "memory", "sqlite", "postgres"];
const EC_BACKENDS = ["none", "memory", "file", "sqlite", "postgres", "redis"];
const DURABILITY_VARIANTS = [
  { backend: "sqlite", durability: "sync" },
  { backend: "sqlite", durability: "exit" },
  { backend: "postgres", durability: "sync" },
  { backend: "postgres", durability: "exit" },
];
const TP_ROWS = [
  ...EC_BACKENDS.map((b) => ({ key: b, backend: b })),
  ...DURABILITY_VARIANTS.map((v) => ({ key: `${v.backend}:${v.durability}`, backend: v.backend, durability: v.durability })),
];
const SAVE_BACKENDS = ["memory", "file", "sqlite", "postgres", "redis"];
// the raw floor each store's save is divided by
const RAW_FLOOR = { memory: "stringify", file: "fs-async", sqlite: "sqlite", postgres: "pg", redis: "ioredis" };
const READ_BACKENDS = ["memory", "file", "sqlite", "postgres", "redis"];
const LG_READ_BACKENDS = ["memory", "sqlite", "postgres"];
// size (optional section): the peer's sizes
const SIZES = [
  { label: "1KB", bytes: 1024, n: QUICK ? 20 : 300 },
  { label: "100KB", bytes: 100 * 1024, n: QUICK ? 10 : 100 },
  { label: "1MB", bytes: 1024 * 1024, n: QUICK ? 5 : 30 },
];
const SIZE_BACKENDS = ["none", "memory", "sqlite", "postgres"];
// fanout: plan → 8 tasks → join, as parallel edges and as sends, both libraries
const FANOUT_BACKENDS = ["none", "memory", "sqlite", "postgres"];
const FANOUT_SHAPES = ["edges", "sends"];
const FANOUT_ROWS = FANOUT_SHAPES.flatMap((shape) => FANOUT_BACKENDS.map((backend) => ({ key: `${shape}:${backend}`, shape, backend })));

// Stores that could not be opened (a server down, a store whose module does not load): skipped, listed.
const skipped = [];
async function openOrSkip(side, name, open) {
  try {
    return await open();
  } catch (e) {
    const error = String(e?.message ?? e).split("\n")[0].slice(0, 300);
    if (!skipped.some((x) => x.side === side && x.store === name)) skipped.push({ side, store: name, error });
    log(`skipped ${side} store ${name}: ${error}`);
    return undefined;
  }
}

let uniq = 0;
const tid = (p) => `${p}-${process.pid}-${++uniq}`;
const log = L.log;

// ---------------------------------------------------------------- timing helpers
// run = { key, warm, arg(i), call(arg): Promise, check?(result) }
// Every run gets its warm-up, then the n calls of all runs are taken in blocks, rotating the order
// block by block (the peer's `interleaved`).
async function interleaved(runs, n, round) {
  const blockSize = Math.max(1, Math.round(n / BLOCKS));
  for (const r of runs) {
    for (let i = 0; i < r.warm; i++) {
      const out = await r.call(r.arg(-1 - i));
      if (i === 0 && r.check) await r.check(out);
    }
  }
  L.gc();
  const samples = Object.fromEntries(runs.map((r) => [r.key, []]));
  const blocks = Math.ceil(n / blockSize);
  for (let b = 0; b < blocks; b++) {
    for (const r of L.rotate(runs, b + round)) {
      const m = Math.min(blockSize, n - b * blockSize);
      for (let j = 0; j < m; j++) {
        const a = r.arg(samples[r.key].length);
        const s = L.now();
        await r.call(a);
        samples[r.key].push(L.now() - s);
      }
    }
  }
  const out = {};
  for (const r of runs) {
    const total = samples[r.key].reduce((a, x) => a + x, 0);
    out[r.key] = { ...L.summarize(samples[r.key]), total_ms: total, inv_per_s: n / (total / 1000) };
  }
  return out;
}

// Operations (not invocations): `op` is either { promise: (i) => Promise } — awaited one by one —
// or { effect: (i) => Effect } — a block of them runs inside ONE Effect.runPromise, each timed on
// its own, which is how the graph engine (and any Effect program) calls a store.
async function interleavedOps(ops, reps, round, blocks = BLOCKS) {
  const nb = Math.max(1, Math.min(blocks, reps));
  const per = Math.ceil(reps / nb);
  const samples = Object.fromEntries(ops.map((o) => [o.key, []]));
  for (const o of ops) {
    const warm = o.warm ?? Math.min(50, Math.ceil(reps / 10));
    await runBlock(o, -warm, warm, []);
  }
  L.gc();
  for (let b = 0; b < nb; b++) {
    for (const o of L.rotate(ops, b + round)) {
      const start = samples[o.key].length;
      const m = Math.min(per, reps - start);
      if (m > 0) await runBlock(o, start, m, samples[o.key]);
    }
  }
  const out = {};
  for (const o of ops) {
    const r = L.summarize(samples[o.key]);
    out[o.key] = { n: r.n, median_us: r.median * 1000, p99_us: r.p99 * 1000, mean_us: r.mean * 1000, min_us: r.min * 1000 };
  }
  return out;
}
async function runBlock(o, start, m, sink) {
  if (o.effect) {
    await Effect.runPromise(Effect.gen(function* () {
      for (let j = 0; j < m; j++) {
        // building the effect is inside the timing: a store may do its work when the effect is built
        // (CheckpointStore.make's `save` encodes the checkpoint eagerly, before the effect runs)
        const s = L.now();
        yield* o.effect(start + j);
        sink.push(L.now() - s);
      }
    }));
  } else {
    for (let j = 0; j < m; j++) {
      const s = L.now();
      await o.promise(start + j);
      sink.push(L.now() - s);
    }
  }
}

// ---------------------------------------------------------------- section 1: throughput
async function sectionThroughput(round, lg, ec) {
  for (const b of Object.values(lg)) await b.reset();
  for (const b of Object.values(ec)) await b.reset();
  const runs = [];
  // LangGraph (the peer's runs, unchanged)
  for (const v of [...LG_BACKENDS.map((backend) => ({ backend })), ...DURABILITY_VARIANTS]) {
    if (!lg[v.backend]) continue; // skipped
    const graph = L.lgThroughputGraph(lg[v.backend].saver);
    const extra = v.durability ? { durability: v.durability } : {};
    runs.push({
      key: `lg:${v.durability ? `${v.backend}:${v.durability}` : v.backend}`,
      warm: WARMUP,
      arg: (i) => ({ configurable: { thread_id: tid(i < 0 ? "warm" : `tp${round}`) }, ...extra }),
      call: (cfg) => graph.invoke(L.throughputInput(), cfg),
      check: (out) => { if (out.counter !== 3 || out.log.length !== 4) throw new Error(`LangGraph graph ended at ${JSON.stringify(out)}`); },
    });
  }
  // effect-checkpoint: Graph.compile (engine floor) and compileCheckpointable on each store
  const floor = await Effect.runPromise(Graph.compile(L.ecThroughputGraph));
  runs.push({
    key: "ec:none", warm: WARMUP, arg: () => undefined,
    call: () => Effect.runPromise(floor.invoke(L.throughputInput())),
    check: checkEcOut,
  });
  for (const row of TP_ROWS) {
    if (row.backend === "none") continue;
    const b = ec[row.backend];
    if (!b) continue; // skipped
    const runnable = await b.compile(L.ecThroughputGraph, row.durability ? { durability: row.durability } : {});
    let lastId;
    runs.push({
      key: `ec:${row.key}`,
      warm: WARMUP,
      arg: (i) => (lastId = tid(i < 0 ? "warm" : `tp${round}`)),
      call: (executionId) => Effect.runPromise(runnable.invoke(L.throughputInput(), { executionId })),
      check: async (out) => {
        checkEcOut(out);
        // the checkpoints really landed: 4 for "async"/"sync" (input + 3 steps), 1 for "exit"
        const cps = await Effect.runPromise(b.store.list(lastId));
        const want = row.durability === "exit" ? 1 : 4;
        if (cps.length !== want) throw new Error(`${row.key}: ${cps.length} checkpoints after one invocation, expected ${want}`);
      },
    });
  }
  const res = await interleaved(runs.filter((r) => SIDES.includes(r.key.split(":")[0])), N, round);
  for (const row of TP_ROWS) {
    const o = res[`ec:${row.key}`] ?? { inv_per_s: NaN, median: NaN }, g = res[`lg:${row.key}`];
    log(`  throughput ${row.key}: ours ${o.inv_per_s.toFixed(0)} inv/s (median ${o.median.toFixed(3)} ms)` +
      (g ? `, LangGraph ${g.inv_per_s.toFixed(0)} inv/s (median ${g.median.toFixed(3)} ms) → ×${(o.inv_per_s / g.inv_per_s).toFixed(1)}` : ""));
  }
  return res;
}
function checkEcOut(out) {
  if (out.counter !== 3 || out.log.length !== 4) throw new Error(`effect-checkpoint graph ended at ${JSON.stringify(out)}`);
}

// ---------------------------------------------------------------- section 2: save vs raw driver
// Payloads: our own checkpoint of the throughput graph (its final one), and checkpoints whose stored
// document is as long as the peer's 1 KB / 100 KB / 1 MB payloads (996 / 102372 / 1048548 bytes).
const PEER_PAYLOAD_BYTES = { "1KB": 996, "100KB": 102372, "1MB": 1048548 };
function opsFor(label, backend) {
  const base = { ckpt: 2000, "1KB": 2000, "100KB": 300, "1MB": 60 }[label];
  const quick = { ckpt: 200, "1KB": 200, "100KB": 50, "1MB": 10 }[label];
  let n = QUICK ? quick : base;
  if (backend === "file") n = Math.max(10, Math.round(n / (QUICK ? 2 : 6))); // ~1 ms fsync per op
  return n;
}
async function savePayloads() {
  // the real checkpoint: run the throughput graph once on a Memory store, take its last checkpoint
  const ecMem = await L.openEc("memory", "payload");
  const runnable = await ecMem.compile(L.ecThroughputGraph, {});
  await Effect.runPromise(runnable.invoke(L.throughputInput(), { executionId: "payload" }));
  const cps = await Effect.runPromise(ecMem.store.list("payload"));
  const last = cps[cps.length - 1];
  await ecMem.close();
  const template = (state) => ({ nodeName: last.nodeName, metadata: {}, next: [], state });
  const docBytes = async (t) => Buffer.byteLength(await Effect.runPromise(Checkpoint.encode(await makeCp(t, "x0", 1, undefined))));
  const payloads = [{ label: "ckpt", template: template(last.state) }];
  for (const [label, target] of Object.entries(PEER_PAYLOAD_BYTES)) {
    const overhead = await docBytes(template({ blob: "", counter: 3 }));
    payloads.push({ label, template: template({ blob: L.makeBlob(target - overhead, 3), counter: 3 }) });
  }
  for (const p of payloads) {
    const cp = await makeCp(p.template, "payload-exec", 1, undefined);
    p.document = await Effect.runPromise(Checkpoint.encode(cp));
    p.bytes = Buffer.byteLength(p.document);
    // the object the Memory floor stringifies: the same fields, holding the SAME state value our store
    // stringifies (a string that came out of JSON.parse is not the same for V8's JSON.stringify)
    p.object = { id: cp.id, executionId: cp.executionId, nodeName: cp.nodeName, version: cp.version, timestamp: cp.timestamp.toISOString(), next: cp.next, metadata: cp.metadata, state: p.template.state };
    if (JSON.stringify(p.object).length !== p.document.length) throw new Error("memory floor object differs from the document");
  }
  return payloads;
}
function makeCp(t, executionId, version, parentId) {
  return Effect.runPromise(Checkpoint.make({ executionId, version, nodeName: t.nodeName, state: t.state, metadata: t.metadata, next: t.next, parentId }));
}
// Every version gets its own blob (same length, first characters changed): since v3 a store keeps a
// large value once per execution, so saving the same blob again would write a reference only, not
// "the same bytes" as the floor. With a new blob each time, every save writes the whole value (the
// cost a user sees when the large value changed). The blob is flattened (a Buffer round trip) so
// JSON.stringify inside the timing does not flatten a rope first.
const uniqueBlob = (blob, v) => Buffer.from(`${String(v).padStart(8, "0")}${blob.slice(8)}`, "latin1").toString("latin1");
async function buildCheckpoints(t, executionId, count) {
  const out = [];
  let parentId;
  for (let v = 1; v <= count; v++) {
    const state = t.state && typeof t.state.blob === "string" && t.state.blob.length > 8 ? { ...t.state, blob: uniqueBlob(t.state.blob, v) } : t.state;
    const cp = await makeCp({ ...t, state }, executionId, v, parentId);
    parentId = cp.id;
    out.push(cp);
  }
  return out;
}

// our stores' checkpoint-table row layout (src/internal/sql/schema.ts, backend.ts: 11 columns since v3),
// for the "-cols" diagnostics. A v3 save also upserts the execution's record in the same transaction
// (not in these diagnostics), so they show the checkpoint row's own cost.
const COL_LIST = `id, execution_id, node_name, state, metadata, "timestamp", version, next, parent_id, runtime, refs`;
const COLS_SQLITE = "id TEXT PRIMARY KEY NOT NULL, execution_id TEXT NOT NULL, node_name TEXT NOT NULL, state TEXT NOT NULL, metadata TEXT NOT NULL, " +
  "\"timestamp\" TEXT NOT NULL, version INTEGER NOT NULL, next TEXT NOT NULL, parent_id TEXT, runtime TEXT, refs TEXT, UNIQUE (execution_id, version)";
const COLS_PG = "id TEXT PRIMARY KEY, execution_id TEXT NOT NULL, node_name TEXT NOT NULL, state JSONB NOT NULL, metadata JSONB NOT NULL, " +
  "\"timestamp\" TIMESTAMPTZ NOT NULL, version INTEGER NOT NULL, next JSONB NOT NULL, parent_id TEXT, runtime JSONB, refs JSONB, UNIQUE (execution_id, version)";
// The bound values of a checkpoint row (Checkpoint.toEncoded is gone in v3: the store kit encodes inside save).
const encodeAll = async (cps) => cps.map((cp) => ({
  params: [cp.id, cp.executionId, cp.nodeName, JSON.stringify(cp.state), JSON.stringify(cp.metadata), cp.timestamp.toISOString(), cp.version,
    JSON.stringify(cp.next), cp.parentId ?? null, cp.runtime === undefined ? null : JSON.stringify(cp.runtime), null],
}));
const colParams = (e) => e.params;

async function sectionSave(round, payloads, ecSave) {
  const res = {};
  fs.mkdirSync(L.DATA_DIR, { recursive: true });
  // raw drivers: the peer's statements
  const sqlFile = path.join(L.DATA_DIR, "raw.sqlite");
  const rmSql = () => { for (const s of ["", "-wal", "-shm"]) fs.rmSync(sqlFile + s, { force: true }); };
  const pool = new pg.Pool({ connectionString: L.PG_URL, max: 1, application_name: "ecbench-raw" });
  const client = await pool.connect();
  const rawTable = `"${L.SCHEMAS.raw}".raw`;
  const colsTable = `"${L.SCHEMAS.raw}".cols`;
  await client.query(`CREATE SCHEMA IF NOT EXISTS "${L.SCHEMAS.raw}"`);
  await client.query(`DROP TABLE IF EXISTS ${rawTable}`);
  await client.query(`CREATE TABLE ${rawTable} (thread_id text NOT NULL, step int NOT NULL, payload jsonb NOT NULL, PRIMARY KEY (thread_id, step))`);
  const redis = L.newRedis();
  const RP = `${L.KEY_PREFIX}${L.RUN_ID}:raw:`;
  const fileDir = path.join(L.DATA_DIR, "raw-files");
  const enc = new TextEncoder();
  let sink = 0;

  try {
    for (const p of payloads) {
      for (const backend of L.rotate(SAVE_BACKENDS, round)) {
        const ops = opsFor(p.label, backend);
        const warm = Math.min(50, Math.ceil(ops / 10));
        const t = tid(`raw${round}${p.label}`);
        const b = ecSave[backend];
        if (!b) continue; // skipped (and its raw floor with it)
        await b.reset();
        // our checkpoints: versions 1.. of one execution, built before timing (the engine builds them
        // while nodes run); warm-up ones first
        const cps = await buildCheckpoints(p.template, tid(`save${round}${p.label}`), warm + ops);
        const ours = { key: `ours`, warm, effect: (i) => b.store.save(cps[i + warm]) };
        const raws = [];
        let after = async () => {};
        if (backend === "memory") {
          raws.push({ key: "stringify", warm, promise: async () => { sink += JSON.stringify(p.object).length; } });
          raws.push({ key: "serialize", warm, promise: async () => { sink += enc.encode(JSON.stringify(p.object)).length; } });
        } else if (backend === "file") {
          fs.rmSync(fileDir, { recursive: true, force: true });
          fs.mkdirSync(path.join(fileDir, "s"), { recursive: true });
          fs.mkdirSync(path.join(fileDir, "a"), { recursive: true });
          raws.push({
            key: "fs-sync", warm, promise: async (i) => {
              const fd = fs.openSync(path.join(fileDir, "s", `${t}-${i}.json`), "wx");
              try { fs.writeSync(fd, p.document); fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
            },
          });
          raws.push({
            key: "fs-async", warm, promise: async (i) => {
              const fh = await fs.promises.open(path.join(fileDir, "a", `${t}-${i}.json`), "wx");
              try { await fh.writeFile(p.document); await fh.sync(); } finally { await fh.close(); }
            },
          });
          after = async () => fs.rmSync(fileDir, { recursive: true, force: true });
        } else if (backend === "sqlite") {
          rmSql();
          const db = new Database(sqlFile);
          db.pragma("journal_mode = WAL");
          db.pragma("synchronous = NORMAL");
          db.exec("CREATE TABLE raw (thread_id TEXT NOT NULL, step INTEGER NOT NULL, payload TEXT, PRIMARY KEY (thread_id, step))");
          const st = db.prepare("INSERT INTO raw (thread_id, step, payload) VALUES (?, ?, ?)");
          raws.push({ key: "sqlite", warm, promise: async (i) => { st.run(t, i, p.document); } });
          // diagnostic: our table layout and bound values, straight through better-sqlite3
          db.exec(`CREATE TABLE cols (${COLS_SQLITE})`);
          const encs = await encodeAll(cps);
          const stc = db.prepare(`INSERT INTO cols (${COL_LIST}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
          raws.push({ key: "sqlite-cols", warm, promise: async (i) => { stc.run(...colParams(encs[i + warm])); } });
          after = async () => { db.close(); rmSql(); };
        } else if (backend === "postgres") {
          await client.query(`TRUNCATE ${rawTable}`);
          raws.push({ key: "pg", warm, promise: (i) => client.query(`INSERT INTO ${rawTable} (thread_id, step, payload) VALUES ($1, $2, $3)`, [t, i, p.document]) });
          // diagnostic: our table layout and statement, straight through pg
          await client.query(`DROP TABLE IF EXISTS ${colsTable}`);
          await client.query(`CREATE TABLE ${colsTable} (${COLS_PG})`);
          const encs = await encodeAll(cps);
          const text = `INSERT INTO ${colsTable} (${COL_LIST}) VALUES ($1::text, $2::text, $3::text, $4::jsonb, $5::jsonb, $6::timestamptz, $7::integer, $8::jsonb, $9::text, $10::jsonb, $11::jsonb)`;
          raws.push({ key: "pg-cols", warm, promise: (i) => client.query(text, colParams(encs[i + warm])) });
          after = async () => { await client.query(`DROP TABLE IF EXISTS ${colsTable}`); };
        } else if (backend === "redis") {
          raws.push({ key: "ioredis", warm, promise: (i) => redis.pipeline().set(`${RP}${t}:${i}`, p.document).zadd(`${RP}idx:${t}`, i, String(i)).exec() });
          after = async () => {
            // our own index: the keys are named by (t, i)
            const keys = [`${RP}idx:${t}`];
            for (let i = -warm; i < ops; i++) keys.push(`${RP}${t}:${i}`);
            for (let i = 0; i < keys.length; i += 500) await redis.unlink(...keys.slice(i, i + 500));
          };
        }
        const r = await interleavedOps([...raws, ours], ops, round);
        await after();
        for (const [k, v] of Object.entries(r)) res[`${backend}:${k}:${p.label}`] = { ...v, payload_bytes: p.bytes };
        const floor = r[RAW_FLOOR[backend]];
        log(`  save ${backend} ${p.label} (${p.bytes} B): ours ${r.ours.median_us.toFixed(1)} us, raw ${RAW_FLOOR[backend]} ${floor.median_us.toFixed(1)} us → ×${(r.ours.median_us / floor.median_us).toFixed(2)}`);
      }
    }
  } finally {
    await client.query(`DROP TABLE IF EXISTS ${rawTable}`).catch(() => {});
    client.release();
    await pool.end();
    redis.disconnect();
    if (sink < 0) console.log(sink);
  }
  return res;
}

// ---------------------------------------------------------------- section 3: read paths
async function drain(it) {
  let n = 0;
  for await (const _ of it) n++;
  return n;
}
async function sectionRead(round, lg, ec) {
  const res = {};
  const reps = { latest: QUICK ? 10 : 50, listAll: QUICK ? 2 : 5, list10: QUICK ? 10 : 50 };
  for (const name of L.rotate(READ_BACKENDS, round)) {
    const hasLg = LG_READ_BACKENDS.includes(name) && lg[name] !== undefined;
    const e = ec[name];
    if (!e) continue; // skipped
    await e.reset();
    const out = { ec: {}, lg: {} };
    // build: one execution of LOOP_STEPS steps, every checkpoint kept (maxCheckpoints: 0)
    const runnable = await e.compile(L.ecLoopGraph, { maxCheckpoints: 0, recursionLimit: LOOP_STEPS + 50 });
    const executionId = tid(`read${round}`);
    let s = L.now();
    const final = await Effect.runPromise(runnable.invoke({ counter: 0, target: LOOP_STEPS, note: "" }, { executionId }));
    out.ec.build_ms_per_step = (L.now() - s) / LOOP_STEPS;
    if (final.counter !== LOOP_STEPS) throw new Error(`our loop graph ended at ${final.counter}`);
    const latest = await Effect.runPromise(e.store.latest(executionId));
    const lastVersion = latest.value.version;
    let cfg, nsCfg, g;
    if (hasLg) {
      g = lg[name];
      await g.reset();
      const graph = L.lgLoopGraph(g.saver);
      const thread = tid(`read${round}`);
      cfg = { configurable: { thread_id: thread } };
      nsCfg = { configurable: { thread_id: thread, checkpoint_ns: "" } }; // as getState()/getStateHistory()
      s = L.now();
      const o = await graph.invoke({ counter: 0, target: LOOP_STEPS }, { ...cfg, recursionLimit: LOOP_STEPS + 50 });
      out.lg.build_ms_per_step = (L.now() - s) / LOOP_STEPS;
      if (o.counter !== LOOP_STEPS) throw new Error(`LangGraph loop graph ended at ${o.counter}`);
    }
    L.gc();
    const pair = (lgOp, ecOp) => [...(hasLg ? [{ key: "lg", promise: lgOp }] : []), { key: "ec", effect: ecOp }];
    const latestR = await interleavedOps(pair(() => g.saver.getTuple(nsCfg), () => e.store.latest(executionId)), reps.latest, round, 5);
    const listAllR = await interleavedOps(pair(() => drain(g.saver.list(nsCfg)), () => e.store.list(executionId)), reps.listAll, round, 5);
    // LangGraph's list({limit: 10}) gives the NEWEST 10; ours pages forward, so list({limit: 10}) gives
    // the OLDEST 10, and the newest 10 are list({afterVersion: latest - 10}).
    const list10R = await interleavedOps(pair(() => drain(g.saver.list(nsCfg, { limit: 10 })), () => e.store.list(executionId, { limit: 10 })), reps.list10, round, 5);
    const newest10R = await interleavedOps([{ key: "ec", effect: () => e.store.list(executionId, { afterVersion: lastVersion - 10 }) }], reps.list10, round, 5);
    const counted = hasLg ? await drain(g.saver.list(nsCfg)) : undefined;
    const ours = (await Effect.runPromise(e.store.list(executionId))).length;
    const newest = await Effect.runPromise(e.store.list(executionId, { afterVersion: lastVersion - 10 }));
    if (newest.length !== 10 || newest[9].version !== lastVersion) throw new Error("newest-10 list is wrong");
    out.ec.checkpoints = ours;
    out.ec.latest_ms = latestR.ec.median_us / 1000;
    out.ec.listAll_ms = listAllR.ec.median_us / 1000;
    out.ec.list10_ms = list10R.ec.median_us / 1000;
    out.ec.newest10_ms = newest10R.ec.median_us / 1000;
    if (hasLg) {
      out.lg.checkpoints = counted;
      out.lg.getTuple_ms = latestR.lg.median_us / 1000;
      out.lg.listAll_ms = listAllR.lg.median_us / 1000;
      out.lg.list10_ms = list10R.lg.median_us / 1000;
    } else delete out.lg;
    res[name] = out;
    log(`  read ${name}: ours ${ours} cps, build ${out.ec.build_ms_per_step.toFixed(3)} ms/step, latest ${out.ec.latest_ms.toFixed(3)} ms, list(all) ${out.ec.listAll_ms.toFixed(2)} ms, list(10) ${out.ec.list10_ms.toFixed(3)} ms, newest 10 ${out.ec.newest10_ms.toFixed(3)} ms` +
      (hasLg ? ` | LangGraph ${counted} cps, build ${out.lg.build_ms_per_step.toFixed(3)} ms/step, getTuple ${out.lg.getTuple_ms.toFixed(3)} ms, list(all) ${out.lg.listAll_ms.toFixed(2)} ms, list(10) ${out.lg.list10_ms.toFixed(3)} ms` : ""));
  }
  return res;
}

// ---------------------------------------------------------------- section 4 (optional): state size
// The peer's "new thread, blob in input" mode: state {blob, counter}, nodes change only the counter.
async function sectionSize(round, lg, ec) {
  const res = {};
  for (const size of SIZES) {
    const blob = L.makeBlob(size.bytes, 7 + round);
    const names = SIZE_BACKENDS.filter((name) => lg[name] && ec[name]); // skipped stores are left out
    for (const name of names) { await lg[name].reset(); await ec[name].reset(); }
    const runs = [];
    for (const name of names) {
      const graph = L.lgSizeGraph(lg[name].saver);
      runs.push({
        key: `lg:${name}`, warm: Math.min(WARMUP, size.n),
        arg: (i) => ({ configurable: { thread_id: tid(i < 0 ? "warm" : `sz${round}`) } }),
        call: (cfg) => graph.invoke({ blob, counter: 0 }, cfg),
      });
      const runnable = name === "none" ? await Effect.runPromise(Graph.compile(L.ecSizeGraph)) : await ec[name].compile(L.ecSizeGraph, {});
      runs.push({
        key: `ec:${name}`, warm: Math.min(WARMUP, size.n),
        arg: (i) => tid(i < 0 ? "warm" : `sz${round}`),
        call: name === "none"
          ? () => Effect.runPromise(runnable.invoke({ blob, counter: 0 }))
          : (executionId) => Effect.runPromise(runnable.invoke({ blob, counter: 0 }, { executionId })),
      });
    }
    const r = await interleaved(runs, size.n, round);
    for (const [k, v] of Object.entries(r)) res[`${size.label}:${k}`] = v;
    // "one write of the blob" (issue 14 item 3's second 1 MB target: ours ≤ 1.3 × (our 1 KB time + one
    // write of the blob)): the raw driver writing the input state's JSON once, as the save floors do
    const raw = await rawStateWrites(names, { blob, counter: 0 }, Math.max(5, size.n), round);
    for (const [name, v] of Object.entries(raw)) res[`${size.label}:raw:${name}`] = v;
    for (const name of names) {
      log(`  size ${size.label} ${name}: ours median ${r[`ec:${name}`].median.toFixed(3)} ms, LangGraph ${r[`lg:${name}`].median.toFixed(3)} ms` +
        (raw[name] ? `, one raw write of the state ${raw[name].median.toFixed(3)} ms` : ""));
    }
  }
  return res;
}

/** Median ms of one raw driver write of `state`'s JSON (Memory: JSON.stringify; SQLite: better-sqlite3
 * INSERT, WAL, NORMAL; PostgreSQL: pg INSERT into a jsonb column, autocommit), n writes after 3 warm-ups. */
async function rawStateWrites(names, state, n, round) {
  const out = {};
  for (const name of L.rotate(names, round)) {
    if (name === "none") continue;
    let write, done = async () => {};
    if (name === "memory") {
      let sink = 0;
      write = async () => { sink += JSON.stringify(state).length; };
      done = async () => { if (sink < 0) console.log(sink); };
    } else if (name === "sqlite") {
      fs.mkdirSync(L.DATA_DIR, { recursive: true });
      const file = path.join(L.DATA_DIR, "size-raw.sqlite");
      const rm = () => { for (const suf of ["", "-wal", "-shm"]) fs.rmSync(file + suf, { force: true }); };
      rm();
      const db = new Database(file);
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = NORMAL");
      db.exec("CREATE TABLE raw (thread_id TEXT NOT NULL, step INTEGER NOT NULL, payload TEXT, PRIMARY KEY (thread_id, step))");
      const st = db.prepare("INSERT INTO raw (thread_id, step, payload) VALUES (?, ?, ?)");
      let i = 0;
      write = async () => { st.run("t", i++, JSON.stringify(state)); };
      done = async () => { db.close(); rm(); };
    } else if (name === "postgres") {
      const client = new pg.Client({ connectionString: L.PG_URL, application_name: "ecbench-raw" });
      await client.connect();
      const table = `"${L.SCHEMAS.raw}".size_raw`;
      await client.query(`CREATE SCHEMA IF NOT EXISTS "${L.SCHEMAS.raw}"`);
      await client.query(`DROP TABLE IF EXISTS ${table}`);
      await client.query(`CREATE TABLE ${table} (thread_id text NOT NULL, step int NOT NULL, payload jsonb NOT NULL, PRIMARY KEY (thread_id, step))`);
      let i = 0;
      write = () => client.query(`INSERT INTO ${table} (thread_id, step, payload) VALUES ($1, $2, $3)`, ["t", i++, JSON.stringify(state)]);
      done = async () => { await client.query(`DROP TABLE IF EXISTS ${table}`); await client.end(); };
    } else continue;
    try {
      for (let w = 0; w < 3; w++) await write();
      const samples = [];
      for (let j = 0; j < n; j++) {
        const s = L.now();
        await write();
        samples.push(L.now() - s);
      }
      out[name] = L.summarize(samples);
    } finally {
      await done();
    }
  }
  return out;
}

// ---------------------------------------------------------------- section 5: fan-out
// plan → 8 tasks → join → END (3 supersteps), as 8 parallel edges + a fan-in, and as 8 sends to one
// node (map-reduce); both libraries, interleaved as in `throughput`, new thread / execution per
// invocation. Ours saves 4 checkpoints and the 8 task writes of the parallel superstep; the first
// warm-up invocation of every run checks the final state, and for ours what landed.
async function sectionFanout(round, lg, ec) {
  const runs = [];
  for (const row of FANOUT_ROWS) {
    const g = lg[row.backend];
    if (g) {
      if (row.shape === FANOUT_SHAPES[0]) await g.reset();
      const graph = L.lgFanoutGraph(row.shape, g.saver);
      runs.push({
        key: `lg:${row.key}`,
        warm: WARMUP,
        arg: (i) => ({ configurable: { thread_id: tid(i < 0 ? "warm" : `fo${round}`) } }),
        call: (cfg) => graph.invoke(L.fanoutInput(), cfg),
        check: (out) => L.checkFanout(out, `LangGraph ${row.key}`),
      });
    }
    const b = ec[row.backend];
    if (!b) continue; // skipped
    if (row.shape === FANOUT_SHAPES[0]) await b.reset();
    const graph = L.ecFanoutGraph(row.shape);
    if (row.backend === "none") {
      const floor = await Effect.runPromise(Graph.compile(graph));
      runs.push({
        key: `ec:${row.key}`, warm: WARMUP, arg: () => undefined,
        call: () => Effect.runPromise(floor.invoke(L.fanoutInput())),
        check: (out) => L.checkFanout(out, `ours ${row.key}`),
      });
      continue;
    }
    const runnable = await b.compile(graph, {});
    let lastId;
    runs.push({
      key: `ec:${row.key}`,
      warm: WARMUP,
      arg: (i) => (lastId = tid(i < 0 ? "warm" : `fo${round}`)),
      call: (executionId) => Effect.runPromise(runnable.invoke(L.fanoutInput(), { executionId })),
      check: async (out) => {
        L.checkFanout(out, `ours ${row.key}`);
        const cps = await Effect.runPromise(b.store.list(lastId));
        if (cps.length !== 4) throw new Error(`fanout ${row.key}: ${cps.length} checkpoints after one invocation, expected 4`);
        // Each task's update is handed to the save queue as a task write when it finishes; in "async"
        // durability one whose superstep's checkpoint is queued before it was written is dropped (that
        // checkpoint holds it), so 0…8 land depending on the store's speed (SQLite: 8; PostgreSQL, Redis: 0).
        const writes = await Effect.runPromise(b.store.listWrites(cps[1].id));
        const tasks = new Set(writes.map((w) => w.taskId));
        if (tasks.size > L.FANOUT) throw new Error(`fanout ${row.key}: task writes of ${tasks.size} tasks, expected at most ${L.FANOUT}`);
        log(`  fanout ${row.key}: the writes of ${tasks.size} of ${L.FANOUT} tasks landed in the first warm-up invocation`);
      },
    });
  }
  const res = await interleaved(runs.filter((r) => SIDES.includes(r.key.split(":")[0])), N, round);
  for (const row of FANOUT_ROWS) {
    const o = res[`ec:${row.key}`], g = res[`lg:${row.key}`];
    log(`  fanout ${row.key}: ` + (o ? `ours ${o.inv_per_s.toFixed(0)} inv/s (median ${o.median.toFixed(3)} ms)` : "ours skipped") +
      (g ? `, LangGraph ${g.inv_per_s.toFixed(0)} inv/s (median ${g.median.toFixed(3)} ms)` : "") +
      (o && g ? ` → ×${(o.inv_per_s / g.inv_per_s).toFixed(1)}` : ""));
  }
  return res;
}

// ---------------------------------------------------------------- ratios (within one round)
function roundRatios(r) {
  const out = {};
  if (r.throughput) {
    const tp = r.throughput;
    for (const row of TP_ROWS) {
      const o = tp[`ec:${row.key}`], g = tp[`lg:${row.key}`];
      if (!o) continue; // --sides lg
      if (g) out[`tp_ours_over_lg_invps:${row.key}`] = o.inv_per_s / g.inv_per_s;
      if (g) out[`tp_lg_median_over_ours_median:${row.key}`] = g.median / o.median;
      if (row.key !== "none") {
        out[`tp_ours_ms_over_floor:${row.key}`] = o.median / tp["ec:none"].median;
        out[`tp_ours_overhead_ms:${row.key}`] = o.median - tp["ec:none"].median;
        if (g) out[`tp_lg_ms_over_floor:${row.key}`] = g.median / tp["lg:none"].median;
      }
    }
  }
  if (r.save) {
    for (const backend of SAVE_BACKENDS) {
      for (const label of ["ckpt", "1KB", "100KB", "1MB"]) {
        const o = r.save[`${backend}:ours:${label}`], f = r.save[`${backend}:${RAW_FLOOR[backend]}:${label}`];
        if (o && f) out[`save_ours_over_raw:${backend}:${label}`] = o.median_us / f.median_us;
        // the floors write bytes that are already JSON; a store also has to produce them
        const js = r.save[`memory:stringify:${label}`];
        if (o && f && js && backend !== "memory") out[`save_ours_over_raw_plus_stringify:${backend}:${label}`] = o.median_us / (f.median_us + js.median_us);
      }
    }
  }
  if (r.read) {
    for (const [name, v] of Object.entries(r.read)) {
      if (!v.lg) continue;
      out[`read_lg_over_ours:${name}:latest`] = v.lg.getTuple_ms / v.ec.latest_ms;
      out[`read_lg_over_ours:${name}:listAll`] = v.lg.listAll_ms / v.ec.listAll_ms;
      out[`read_lg_over_ours:${name}:list10`] = v.lg.list10_ms / v.ec.list10_ms;
      out[`read_lg_over_ours:${name}:newest10`] = v.lg.list10_ms / v.ec.newest10_ms;
      out[`read_lg_over_ours:${name}:build`] = v.lg.build_ms_per_step / v.ec.build_ms_per_step;
    }
  }
  if (r.fanout) {
    for (const row of FANOUT_ROWS) {
      const o = r.fanout[`ec:${row.key}`], g = r.fanout[`lg:${row.key}`];
      if (o && g) {
        out[`fanout_ours_over_lg_invps:${row.key}`] = o.inv_per_s / g.inv_per_s;
        out[`fanout_lg_median_over_ours_median:${row.key}`] = g.median / o.median;
      }
    }
  }
  if (r.size) {
    for (const s of SIZES) {
      for (const name of SIZE_BACKENDS) {
        const o = r.size[`${s.label}:ec:${name}`], g = r.size[`${s.label}:lg:${name}`];
        if (o && g) out[`size_lg_over_ours_ms:${s.label}:${name}`] = g.median / o.median;
        const o1 = r.size[`1KB:ec:${name}`], w = r.size[`${s.label}:raw:${name}`];
        if (o && o1 && w) out[`size_ours_over_1kb_plus_write:${s.label}:${name}`] = o.median / (o1.median + w.median);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- summary
const collect = (rounds, pick) => L.spread(rounds.map((r) => { try { return pick(r); } catch { return undefined; } }).filter((x) => x !== undefined));
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
const cell = (s, d = 2) => (Number.isFinite(s.median) ? `${f(s.median, d)} [${f(s.min, d)}–${f(s.max, d)}]` : "–");
const dig = (x) => (x >= 100 ? 0 : x >= 10 ? 1 : x >= 1 ? 2 : 3);
const cellAuto = (s) => (Number.isFinite(s.median) ? `${f(s.median, dig(s.median))} [${f(s.min, dig(s.median))}–${f(s.max, dig(s.median))}]` : "–");
const verdict = (s, ok) => (Number.isFinite(s.median) ? (ok(s.median) ? " ✅" : " ❌") : "");

function summary(rounds, meta) {
  const o = [];
  o.push(`# effect-checkpoint vs LangGraph.js vs raw drivers — summary`);
  o.push("");
  o.push(`rounds=${rounds.length} (+${meta.warmup_rounds} unrecorded warm-up), N=${N}, loop steps=${LOOP_STEPS}; cells are median over rounds [min–max over rounds]; ratios are taken inside each round, then summarised the same way.`);
  if (meta.skipped?.length) {
    o.push("\n**Skipped stores** (could not be opened; their rows show –):\n");
    for (const x of meta.skipped) o.push(`- ${x.side} ${x.store}: ${x.error}`);
  }
  o.push("\n```\n" + JSON.stringify(meta.versions) + (meta.git ? `\ngit ${meta.git.commit}${meta.git.src_dirty ? " (src/ had uncommitted changes)" : ""}` : "") + "\n```");
  if (rounds[0].throughput) {
    o.push("\n## 1. Throughput (3-node linear graph, new execution per invocation; target: ours ≥ 10× LangGraph inv/s)\n");
    o.push("inv/s = N / total time of the N invocations (so it carries the tail); the median ratio is LangGraph's median ms / ours.\n");
    o.push("| backend | LangGraph | effect-checkpoint | LangGraph inv/s | ours inv/s | **ours / LangGraph inv/s** | LangGraph median ms | ours median ms | LangGraph / ours median | LangGraph p99 ms | ours p99 ms |");
    o.push("|---|---|---|---|---|---|---|---|---|---|---|");
    for (const row of TP_ROWS) {
      const lgKey = `lg:${row.key}`, ecKey = `ec:${row.key}`;
      const hasLg = rounds[0].throughput[lgKey] !== undefined;
      const dur = row.durability ? ` durability=${row.durability}` : "";
      const ratio = collect(rounds, (r) => r.ratios[`tp_ours_over_lg_invps:${row.key}`]);
      o.push(`| ${L.backendLabel(row.backend)}${dur} | ${hasLg ? L.lgLabel(row.backend) : L.lgLabel(row.backend)} | ${L.ecLabel(row.backend)} | ` +
        `${hasLg ? cell(collect(rounds, (r) => r.throughput[lgKey].inv_per_s), 0) : "–"} | ${cell(collect(rounds, (r) => r.throughput[ecKey].inv_per_s), 0)} | ` +
        `${hasLg ? `**${cell(ratio, 1)}**${verdict(ratio, (x) => x >= 10)}` : "–"} | ` +
        `${hasLg ? cell(collect(rounds, (r) => r.throughput[lgKey].median), 3) : "–"} | ${cell(collect(rounds, (r) => r.throughput[ecKey].median), 3)} | ` +
        `${hasLg ? cell(collect(rounds, (r) => r.ratios[`tp_lg_median_over_ours_median:${row.key}`]), 1) : "–"} | ` +
        `${hasLg ? cell(collect(rounds, (r) => r.throughput[lgKey].p99), 3) : "–"} | ${cell(collect(rounds, (r) => r.throughput[ecKey].p99), 3)} |`);
    }
    o.push("\nCheckpointing cost per invocation (median ms minus the same side's engine floor, same round) and × engine floor:\n");
    o.push("| backend | ours overhead ms/inv | ours × floor | LangGraph × floor |");
    o.push("|---|---|---|---|");
    for (const row of TP_ROWS) {
      if (row.key === "none") continue;
      o.push(`| ${L.backendLabel(row.backend)}${row.durability ? ` durability=${row.durability}` : ""} | ${cell(collect(rounds, (r) => r.ratios[`tp_ours_overhead_ms:${row.key}`]), 3)} | ` +
        `${cell(collect(rounds, (r) => r.ratios[`tp_ours_ms_over_floor:${row.key}`]), 2)} | ${cell(collect(rounds, (r) => r.ratios[`tp_lg_ms_over_floor:${row.key}`]), 2)} |`);
    }
  }
  if (rounds[0].save) {
    const labels = ["ckpt", "1KB", "100KB", "1MB"];
    const bytes = Object.fromEntries(labels.map((l) => [l, rounds[0].save[`memory:ours:${l}`]?.payload_bytes ?? rounds[0].save[`sqlite:ours:${l}`]?.payload_bytes]));
    o.push("\n## 2. One save vs the raw driver write of the same bytes (median µs per op; target: ours ≤ 1.5× raw)\n");
    o.push("| store | op | " + labels.map((l) => `${l} (${bytes[l] ?? "?"} B)`).join(" | ") + " |");
    o.push("|---|---|" + labels.map(() => "---").join("|") + "|");
    for (const backend of SAVE_BACKENDS) {
      const keys = [...new Set(Object.keys(rounds[0].save).filter((k) => k.startsWith(`${backend}:`)).map((k) => k.split(":")[1]))];
      const order = ["ours", ...keys.filter((k) => k !== "ours")];
      for (const k of order) {
        const lbl = k === "ours" ? `${L.ecLabel(backend)}.save` : `raw ${k}${k === RAW_FLOOR[backend] ? " (floor)" : ""}`;
        o.push(`| ${L.backendLabel(backend)} | ${lbl} | ` + labels.map((l) => cellAuto(collect(rounds, (r) => r.save[`${backend}:${k}:${l}`].median_us))).join(" | ") + " |");
      }
      o.push(`| ${L.backendLabel(backend)} | **ours / floor** | ` + labels.map((l) => {
        const s = collect(rounds, (r) => r.ratios[`save_ours_over_raw:${backend}:${l}`]);
        return `**${cell(s, 2)}**${verdict(s, (x) => x <= 1.5)}`;
      }).join(" | ") + " |");
      if (backend !== "memory") {
        o.push(`| ${L.backendLabel(backend)} | ours / (floor + JSON.stringify) | ` +
          labels.map((l) => cell(collect(rounds, (r) => r.ratios[`save_ours_over_raw_plus_stringify:${backend}:${l}`]), 2)).join(" | ") + " |");
      }
    }
  }
  if (rounds[0].read) {
    o.push(`\n## 3. Read paths (one execution, loop graph, ${LOOP_STEPS} loop steps, every checkpoint kept; median ms)\n`);
    o.push("| backend | side | checkpoints | build ms/step | latest / getTuple | list (all) | list({limit: 10}) | newest 10 |");
    o.push("|---|---|---|---|---|---|---|---|");
    for (const name of READ_BACKENDS) {
      const v0 = rounds[0].read[name];
      if (!v0) continue;
      if (v0.lg) {
        o.push(`| ${L.backendLabel(name)} | LangGraph ${L.lgLabel(name)} | ${v0.lg.checkpoints} | ${cell(collect(rounds, (r) => r.read[name].lg.build_ms_per_step), 3)} | ` +
          `${cell(collect(rounds, (r) => r.read[name].lg.getTuple_ms), 3)} | ${cell(collect(rounds, (r) => r.read[name].lg.listAll_ms), 2)} | ` +
          `${cell(collect(rounds, (r) => r.read[name].lg.list10_ms), 3)} (newest 10) | = list({limit: 10}) |`);
      }
      o.push(`| ${L.backendLabel(name)} | ours ${L.ecLabel(name)} | ${v0.ec.checkpoints} | ${cell(collect(rounds, (r) => r.read[name].ec.build_ms_per_step), 3)} | ` +
        `${cell(collect(rounds, (r) => r.read[name].ec.latest_ms), 3)} | ${cell(collect(rounds, (r) => r.read[name].ec.listAll_ms), 2)} | ` +
        `${cell(collect(rounds, (r) => r.read[name].ec.list10_ms), 3)} (oldest 10) | ${cell(collect(rounds, (r) => r.read[name].ec.newest10_ms), 3)} |`);
      if (v0.lg) {
        o.push(`| ${L.backendLabel(name)} | **LangGraph / ours** | | ${cell(collect(rounds, (r) => r.ratios[`read_lg_over_ours:${name}:build`]), 1)} | ` +
          `${cell(collect(rounds, (r) => r.ratios[`read_lg_over_ours:${name}:latest`]), 1)} | ${cell(collect(rounds, (r) => r.ratios[`read_lg_over_ours:${name}:listAll`]), 1)} | ` +
          `${cell(collect(rounds, (r) => r.ratios[`read_lg_over_ours:${name}:list10`]), 1)} | ${cell(collect(rounds, (r) => r.ratios[`read_lg_over_ours:${name}:newest10`]), 1)} (vs LangGraph's limit 10) |`);
      }
    }
  }
  if (rounds[0].size) {
    o.push("\n## 4. State size (blob in the input, untouched by nodes, new execution per invocation; median ms per invocation)\n");
    o.push("Targets (issue 14 item 3) at 1 MB on PostgreSQL: LangGraph / ours ≥ 1 (at least as fast as PostgresSaver), and ours ≤ 1.3 × (our own 1 KB time + one raw write of the state), both taken inside each round.\n");
    o.push("| backend | side | " + SIZES.map((s) => s.label).join(" | ") + " |");
    o.push("|---|---|" + SIZES.map(() => "---").join("|") + "|");
    for (const name of SIZE_BACKENDS) {
      o.push(`| ${L.backendLabel(name)} | LangGraph ${L.lgLabel(name)} | ` + SIZES.map((s) => cell(collect(rounds, (r) => r.size[`${s.label}:lg:${name}`].median), 3)).join(" | ") + " |");
      o.push(`| ${L.backendLabel(name)} | ours ${L.ecLabel(name)} | ` + SIZES.map((s) => cell(collect(rounds, (r) => r.size[`${s.label}:ec:${name}`].median), 3)).join(" | ") + " |");
      // issue 14 item 3, first target (1 MB, PostgreSQL): LangGraph / ours ≥ 1 and ours / (ours 1 KB + one write) ≤ 1.3
      o.push(`| ${L.backendLabel(name)} | **LangGraph / ours** | ` + SIZES.map((s) => {
        const c = collect(rounds, (r) => r.ratios[`size_lg_over_ours_ms:${s.label}:${name}`]);
        return `${cell(c, 2)}${name === "postgres" && s.label === "1MB" ? verdict(c, (x) => x >= 1) : ""}`;
      }).join(" | ") + " |");
      if (name === "none") continue;
      o.push(`| ${L.backendLabel(name)} | one raw write of the state (${name === "memory" ? "JSON.stringify" : name === "sqlite" ? "better-sqlite3 INSERT" : "pg INSERT jsonb"}) | ` +
        SIZES.map((s) => cell(collect(rounds, (r) => r.size[`${s.label}:raw:${name}`].median), 3)).join(" | ") + " |");
      o.push(`| ${L.backendLabel(name)} | **ours / (ours 1 KB + one write)** | ` + SIZES.map((s) => {
        const c = collect(rounds, (r) => r.ratios[`size_ours_over_1kb_plus_write:${s.label}:${name}`]);
        return `${cell(c, 2)}${name === "postgres" && s.label === "1MB" ? verdict(c, (x) => x <= 1.3) : ""}`;
      }).join(" | ") + " |");
    }
    o.push(`\n(N per size: ${SIZES.map((s) => `${s.label}=${s.n}`).join(", ")})`);
  }
  if (rounds[0].fanout) {
    o.push(`\n## 5. Fan-out (plan → ${L.FANOUT} tasks → join, new execution per invocation; target: ours ≥ 10× LangGraph inv/s)\n`);
    o.push("| shape | backend | LangGraph inv/s | ours inv/s | **ours / LangGraph inv/s** | LangGraph median ms | ours median ms | LangGraph / ours median | LangGraph p99 ms | ours p99 ms |");
    o.push("|---|---|---|---|---|---|---|---|---|---|");
    for (const row of FANOUT_ROWS) {
      const lgKey = `lg:${row.key}`, ecKey = `ec:${row.key}`;
      const ratio = collect(rounds, (r) => r.ratios[`fanout_ours_over_lg_invps:${row.key}`]);
      o.push(`| ${row.shape === "edges" ? `${L.FANOUT} parallel edges + fan-in` : `${L.FANOUT} sends`} | ${L.backendLabel(row.backend)} | ` +
        `${cell(collect(rounds, (r) => r.fanout[lgKey].inv_per_s), 0)} | ${cell(collect(rounds, (r) => r.fanout[ecKey].inv_per_s), 0)} | ` +
        `**${cell(ratio, 1)}**${verdict(ratio, (x) => x >= 10)} | ` +
        `${cell(collect(rounds, (r) => r.fanout[lgKey].median), 3)} | ${cell(collect(rounds, (r) => r.fanout[ecKey].median), 3)} | ` +
        `${cell(collect(rounds, (r) => r.ratios[`fanout_lg_median_over_ours_median:${row.key}`]), 1)} | ` +
        `${cell(collect(rounds, (r) => r.fanout[lgKey].p99), 3)} | ${cell(collect(rounds, (r) => r.fanout[ecKey].p99), 3)} |`);
    }
  }
  if (rounds[0].durable) {
    o.push(durableSummary(rounds, { collect, cell, verdict, executions: DURABLE_EXECUTIONS, recover: DURABLE_RECOVER }));
  }
  if (rounds[0].conversation) {
    o.push(conversationSummary(rounds, { collect, cell, verdict, turns: CONVERSATION_TURNS }));
  }
  return o.join("\n");
}

// ---------------------------------------------------------------- main
const opened = { lg: {}, ec: {}, ecSave: {} };
let cleaning;
async function cleanup() {
  cleaning ??= (async () => {
    for (const group of Object.values(opened)) {
      for (const b of Object.values(group)) await b.close().catch((e) => log("close", b.name, e.message));
    }
    await L.dropSchemas(Object.values(L.SCHEMAS)).catch((e) => log("drop schemas:", e.message));
    // Redis: every store's keys were removed through its own index by close(); raw keys after each batch
    fs.rmSync(L.DATA_DIR, { recursive: true, force: true });
  })();
  return cleaning;
}

async function main() {
  for (const sig of ["SIGINT", "SIGTERM"]) {
    process.once(sig, async () => {
      log(`${sig}: cleaning up (node bench/cleanup.mjs does the same by hand)`);
      process.on("uncaughtException", () => {});
      process.on("unhandledRejection", () => {});
      const t = setTimeout(() => process.exit(130), 15000);
      await cleanup().catch(() => {});
      clearTimeout(t);
      process.exit(130);
    });
  }
  const meta = {
    versions: L.versions(), started: new Date().toISOString(), quick: QUICK, rounds: ROUNDS, warmup_rounds: WARMUP_ROUNDS,
    n: N, loop_steps: LOOP_STEPS, conversation_turns: CONVERSATION_TURNS, sections: SECTIONS, argv, pg_url: L.PG_URL, redis_url: L.REDIS_URL, schemas: L.SCHEMAS,
  };
  try {
    const git = (a) => execFileSync("git", a, { cwd: path.join(L.BENCH_DIR, ".."), encoding: "utf8" }).trim();
    meta.git = { commit: git(["rev-parse", "--short", "HEAD"]), src_dirty: git(["status", "--porcelain", "--", "src"]).length > 0 };
  } catch { /* not a git checkout */ }
  log("versions", JSON.stringify(meta.versions), "git", JSON.stringify(meta.git));
  if (meta.versions.effect_single_copy !== true) throw new Error("effect resolves to two copies: the bench must use the root's (do not add effect to bench/package.json)");
  if (typeof globalThis.gc !== "function") log("note: run with --expose-gc for a gc() between measurements");
  L.writeLedger({ started: meta.started });
  const rounds = [];
  try {
    const needTp = SECTIONS.some((s) => ["throughput", "read", "size", "fanout"].includes(s));
    if (needTp) {
      for (const name of LG_BACKENDS) {
        const b = await openOrSkip("LangGraph", name, () => L.openLg(name));
        if (b) opened.lg[name] = b;
      }
      for (const name of EC_BACKENDS) {
        const b = await openOrSkip("ours", name, () => L.openEc(name, "tp"));
        if (b) opened.ec[name] = b;
      }
      meta.sqlite_saver_pragmas = opened.lg.sqlite?.info;
    }
    let payloads = [];
    if (SECTIONS.includes("save")) {
      for (const name of SAVE_BACKENDS) {
        const b = await openOrSkip("ours", name, () => L.openEc(name, "save"));
        if (b) opened.ecSave[name] = b;
      }
      payloads = await savePayloads();
      meta.save_payload_bytes = Object.fromEntries(payloads.map((p) => [p.label, p.bytes]));
      log("save payloads (bytes of our stored document):", JSON.stringify(meta.save_payload_bytes));
    }
    const runRound = async (round) => {
      const r = { round };
      if (SECTIONS.includes("throughput")) r.throughput = await sectionThroughput(round, opened.lg, opened.ec);
      if (SECTIONS.includes("save")) r.save = await sectionSave(round, payloads, opened.ecSave);
      if (SECTIONS.includes("read")) r.read = await sectionRead(round, opened.lg, opened.ec);
      if (SECTIONS.includes("size")) r.size = await sectionSize(round, opened.lg, opened.ec);
      if (SECTIONS.includes("fanout")) r.fanout = await sectionFanout(round, opened.lg, opened.ec);
      if (SECTIONS.includes("durable")) {
        r.durable = await sectionDurable(round, {
          executions: DURABLE_EXECUTIONS,
          recover: DURABLE_RECOVER,
          reps: DURABLE_REPS,
          stores: DURABLE_STORES,
          recoveryStores: DURABLE_RECOVERY_STORES
        });
      }
      if (SECTIONS.includes("conversation")) r.conversation = await sectionConversation(round, { turns: CONVERSATION_TURNS, openOrSkip });
      return r;
    };
    for (let w = 0; w < WARMUP_ROUNDS; w++) {
      log(`warm-up round ${w + 1}/${WARMUP_ROUNDS} (not recorded)`);
      await runRound(w);
    }
    for (let round = 0; round < ROUNDS; round++) {
      log(`round ${round + 1}/${ROUNDS}`);
      const r = await runRound(round);
      r.ratios = roundRatios(r);
      rounds.push(r);
    }
  } finally {
    await cleanup();
  }
  meta.finished = new Date().toISOString();
  meta.skipped = skipped;
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify({ meta, rounds }, null, 1) + "\n");
  const md = summary(rounds, meta);
  fs.writeFileSync(OUT.replace(/\.json$/, ".md"), md + "\n");
  console.log(md);
  log(`wrote ${path.relative(process.cwd(), OUT)} and ${path.relative(process.cwd(), OUT.replace(/\.json$/, ".md"))}`);
}
main().then(
  () => process.exit(0),
  async (e) => {
    console.error(e);
    await cleanup().catch(() => {});
    process.exit(1);
  }
);
