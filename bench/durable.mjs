// The `durable` section of the benchmark: the execution records a worker lives on.
//
// - listExecutions: a page of 100 (newest first), and a page of 100 `pending` ones, with
//   `--durable-executions` executions in the store (default 10,000; the issue's target table has
//   100,000: pass `--durable-executions 100000`). Target on PostgreSQL: ≤ 5 ms whatever the size.
// - claim: `claim({ limit: 10 })` from the same store (each claim takes 10 pending ones). Target on
//   PostgreSQL: ≤ 5 ms.
// - recovery: `--durable-recover` (default 1,000) crashed 3-node executions — their input saved,
//   nothing run — finished by ONE worker (concurrency 10), against LangGraph.js re-invoking the same
//   threads from their checkpoints (`invoke(null, { thread_id })`, 10 at a time) on the same backend.
//   Target: ≥ 5× faster. LangGraph has no worker and no record of unfinished threads: the bench
//   gives it the list of thread ids for free.
//
// Every store is opened fresh for the section and removed after it (lib.mjs's openEc/openLg).
import { Effect, Fiber } from "effect";
import { Graph } from "effect-checkpoint";
import * as L from "./lib.mjs";

export const DURABLE_BACKENDS = ["memory", "file", "sqlite", "postgres", "redis"];
export const RECOVERY_BACKENDS = ["memory", "sqlite", "postgres"]; // where LangGraph has a saver to compare with

const time = async (fn) => {
  const t0 = L.now();
  await fn();
  return L.now() - t0;
};

/** Saves `count` pending executions (their input checkpoint) with `start`, 50 at a time. */
async function seed(b, runnable, count, prefix) {
  const ids = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
  for (let i = 0; i < ids.length; i += 50) {
    await b.runtime.runPromise(Effect.forEach(ids.slice(i, i + 50), (id) =>
      runnable.start(L.throughputInput(), { executionId: id }), { concurrency: 10 }));
  }
  return ids;
}

/** listExecutions and claim latency on one of our stores. */
async function recordsOn(name, { executions, reps }) {
  const b = await L.openEc(name, "durable");
  try {
    const runnable = await b.compile(L.ecThroughputGraph, {});
    const t0 = L.now();
    await seed(b, runnable, executions, "rec");
    const seedMs = L.now() - t0;
    const page = [];
    const pendingPage = [];
    const claim = [];
    for (let i = 0; i < reps; i++) {
      page.push(await time(() => b.runtime.runPromise(b.store.listExecutions({ limit: 100 }))));
      pendingPage.push(await time(() => b.runtime.runPromise(b.store.listExecutions({ status: "pending", limit: 100 }))));
      claim.push(await time(() => b.runtime.runPromise(b.store.claim({ owner: "bench-claimer", ttl: "1 hour", limit: 10 }))));
    }
    return {
      executions,
      seed_ms: seedMs,
      list100_ms: L.summarize(page),
      list100_pending_ms: L.summarize(pendingPage),
      claim10_ms: L.summarize(claim),
    };
  } finally {
    await b.close();
  }
}

/** Recovery of `count` crashed executions by one worker, on one of our stores. */
async function recoverOurs(name, count) {
  const b = await L.openEc(name, "recover");
  try {
    const runnable = await b.compile(L.ecThroughputGraph, {});
    const ids = await seed(b, runnable, count, "crashed");
    const ms = await time(() => b.runtime.runPromise(Effect.gen(function*() {
      const worker = yield* Effect.fork(Graph.worker(runnable, { concurrency: 10, pollInterval: "5 millis", owner: "bench-worker" }));
      // Finished when none is left pending or running: one indexed page of 1 per poll (the count is checked after).
      for (;;) {
        const left = yield* b.store.listExecutions({ status: ["pending", "running"], limit: 1 });
        if (left.executions.length === 0) break;
        yield* Effect.sleep("5 millis");
      }
      yield* Fiber.interrupt(worker);
    })));
    let done = 0;
    let cursor;
    do {
      const p = await b.runtime.runPromise(b.store.listExecutions({ status: "done", limit: 10000, cursor }));
      done += p.executions.length;
      cursor = p.cursor;
    } while (cursor !== undefined);
    if (done !== ids.length) throw new Error(`recovery on ${name}: ${done} of ${ids.length} executions done`);
    return { count, ms, per_execution_ms: ms / count };
  } finally {
    await b.close();
  }
}

/** LangGraph: the same threads saved up to their input, then re-invoked from their checkpoints, 10 at a time. */
async function recoverLangGraph(name, count) {
  const b = await L.openLg(name);
  try {
    const crashed = L.lgThroughputGraph(b.saver);
    const ids = Array.from({ length: count }, (_, i) => `crashed-${i}`);
    // "Crash" before step1: interruptBefore leaves exactly the input checkpoint, like ours.
    for (const id of ids) {
      await crashed.invoke(L.throughputInput(), { configurable: { thread_id: id }, interruptBefore: ["step1"] });
    }
    const graph = L.lgThroughputGraph(b.saver);
    const ms = await time(async () => {
      for (let i = 0; i < ids.length; i += 10) {
        await Promise.all(ids.slice(i, i + 10).map((id) => graph.invoke(null, { configurable: { thread_id: id } })));
      }
    });
    return { count, ms, per_execution_ms: ms / count };
  } finally {
    await b.close();
  }
}

/** One round of the section. */
export async function sectionDurable(round, { executions, recover, reps, stores, recoveryStores }) {
  const out = { records: {}, recovery: {} };
  for (const name of L.rotate(stores ?? DURABLE_BACKENDS, round)) {
    L.log(`durable: records on ${name} (${executions} executions)`);
    out.records[name] = await recordsOn(name, { executions, reps });
  }
  for (const name of L.rotate(recoveryStores ?? RECOVERY_BACKENDS, round)) {
    L.log(`durable: recovery of ${recover} executions on ${name}`);
    out.recovery[`${name}:ours`] = await recoverOurs(name, recover);
    out.recovery[`${name}:lg`] = await recoverLangGraph(name, recover);
    out.recovery[`${name}:lg_over_ours`] = out.recovery[`${name}:lg`].ms / out.recovery[`${name}:ours`].ms;
  }
  return out;
}

/** The section's tables (markdown), from every recorded round. */
export function durableSummary(rounds, { collect, cell, verdict, executions, recover }) {
  const o = [];
  o.push(`\n## 6. Durable execution: execution records, claim, recovery (median ms over rounds)\n`);
  o.push(`Records: ${executions} executions in the store.\n`);
  o.push("| store | listExecutions page of 100 | page of 100 pending | claim(10) |");
  o.push("|---|---|---|---|");
  const ran = (key, name) => rounds.some((r) => r.durable?.[key]?.[name] !== undefined || r.durable?.[key]?.[`${name}:ours`] !== undefined);
  for (const name of DURABLE_BACKENDS.filter((n) => ran("records", n))) {
    const pick = (k) => collect(rounds, (r) => r.durable.records[name][k].median);
    const target = name === "postgres" ? (s) => `${cell(s, 3)}${verdict(s, (x) => x <= 5)}` : (s) => cell(s, 3);
    o.push(`| ${L.backendLabel(name)} | ${target(pick("list100_ms"))} | ${target(pick("list100_pending_ms"))} | ${target(pick("claim10_ms"))} |`);
  }
  o.push(`\nRecovery of ${recover} crashed 3-node executions (input saved, nothing run): one worker (concurrency 10) vs LangGraph.js re-invoking each thread (10 at a time).\n`);
  o.push("| backend | ours: worker ms | LangGraph ms | **LangGraph / ours** (target ≥ 5) |");
  o.push("|---|---|---|---|");
  for (const name of RECOVERY_BACKENDS.filter((n) => ran("recovery", n))) {
    const ratio = collect(rounds, (r) => r.durable.recovery[`${name}:lg_over_ours`]);
    o.push(`| ${L.backendLabel(name)} | ${cell(collect(rounds, (r) => r.durable.recovery[`${name}:ours`].ms), 1)} | ` +
      `${cell(collect(rounds, (r) => r.durable.recovery[`${name}:lg`].ms), 1)} | **${cell(ratio, 2)}**${verdict(ratio, (x) => x >= 5)} |`);
  }
  return o.join("\n");
}
