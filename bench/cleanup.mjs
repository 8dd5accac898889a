// Removes what an interrupted benchmark run left behind — and nothing else:
//   - PostgreSQL (database `test`, or ECBENCH_PG_URL): the schemas ecbench_<pid>_lg / _ec / _raw / _conv
//   - Redis (db 14, or ECBENCH_REDIS_URL): keys under ecbench:<pid>: — first through each store's own
//     index ({prefix}|executions → {prefix}|x|{id} → {prefix}|c|{id}, …: the v3 layout), then a
//     SCAN sweep of the same prefix for what the index no longer names (raw-floor keys of a cut batch)
//   - $TMPDIR/ecbench-<pid>/ (SQLite files, File stores, the run's ledger.json)
// Only runs whose process is gone are touched (pass --force to include live ones).
// Never drops a database, never FLUSHDB.
//
//   node bench/cleanup.mjs [--force]
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as L from "./lib.mjs";

const FORCE = process.argv.includes("--force");
const alive = (pid) => {
  if (pid === process.pid) return false;
  try { process.kill(pid, 0); return true; } catch (e) { return e.code === "EPERM"; }
};
const pids = new Set();

// 1. temp dirs (and their ledgers)
for (const d of fs.readdirSync(os.tmpdir())) {
  const m = /^ecbench-(\d+)$/.exec(d);
  if (m) pids.add(Number(m[1]));
}
// 2. PostgreSQL schemas
let schemas = [];
try {
  schemas = await L.pgAdmin(async (c) => (await c.query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ecbench\\_%'")).rows.map((r) => r.nspname));
} catch (e) {
  console.log(`PostgreSQL not reachable (${e.message}); skipping schemas`);
}
for (const s of schemas) {
  const m = /^ecbench_(\d+)_/.exec(s);
  if (m) pids.add(Number(m[1]));
}
// 3. Redis prefixes (index roots)
let redis;
try {
  redis = L.newRedis();
  await redis.ping();
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${L.KEY_PREFIX}*`, "COUNT", 1000);
    cursor = next;
    for (const k of keys) {
      const m = /^ecbench:(\d+):/.exec(k);
      if (m) pids.add(Number(m[1]));
    }
  } while (cursor !== "0");
} catch (e) {
  console.log(`Redis not reachable (${e.message}); skipping keys`);
  redis?.disconnect();
  redis = undefined;
}

for (const pid of [...pids].sort((a, b) => a - b)) {
  if (!FORCE && alive(pid)) {
    console.log(`run ${pid} is still running: left alone (--force to clean it anyway)`);
    continue;
  }
  const mine = schemas.filter((s) => s.startsWith(`ecbench_${pid}_`));
  if (mine.length) {
    await L.dropSchemas(mine);
    console.log(`dropped schemas ${mine.join(", ")}`);
  }
  if (redis) {
    const base = `${L.KEY_PREFIX}${pid}:`;
    // stores: every index root under the run's prefix
    const roots = [];
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${base}*|executions`, "COUNT", 1000);
      cursor = next;
      roots.push(...keys);
    } while (cursor !== "0");
    let n = 0;
    for (const root of roots) n += await L.removeRedisStoreKeys(redis, root.slice(0, -"|executions".length));
    n += await L.sweepRedisPrefix(redis, `${base}*`);
    if (n) console.log(`deleted ${n} redis keys under ${base}`);
  }
  const dir = path.join(os.tmpdir(), `ecbench-${pid}`);
  if (fs.existsSync(dir)) {
    fs.rmSync(dir, { recursive: true, force: true });
    console.log(`removed ${dir}`);
  }
}
redis?.disconnect();
console.log("cleanup done");
