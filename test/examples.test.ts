import { describe, expect, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import { existsSync } from "node:fs"
import { dirname } from "node:path"

/**
 * Runs an example the way the README does (against the built package, like a user). Asynchronously:
 * a synchronous child blocks this worker's event loop, and vitest's channel to it times out.
 */
const run = (file: string, timeout = 60_000): Promise<string> =>
  new Promise((resolve, reject) => {
    execFile("npx", ["tsx", file], { encoding: "utf8", timeout, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(Object.assign(error, { stdout, stderr }))
      else resolve(stdout)
    })
  })

describe("examples", { timeout: 150_000 }, () => {
  it("basic.ts prints the run, its four checkpoints and the resumed result", async () => {
    const out = await run("examples/basic.ts")
    expect(out).toContain("Final data:    Start → Step1 → Step2 → Step3")
    expect(out).toContain("=== 4 checkpoints ===")
    for (const [v, node] of [[1, "__input__"], [2, "step1"], [3, "step2"], [4, "step3"]] as const) {
      expect(out).toMatch(new RegExp(`#${v} ${node}\\s+id=[0-9a-f-]{36} `))
    }
    expect(out).toMatch(/=== Resume from checkpoint #2 \(step1\)/)
    // The resumed run executes only step2 and step3 again.
    const resumedPart = out.slice(out.indexOf("=== Resume"))
    expect(resumedPart).not.toContain("Running step 1")
    expect(resumedPart).toContain("Running step 2")
    expect(resumedPart).toContain("Resumed data:  Start → Step1 → Step2 → Step3")
  })

  it("research.ts fans out five searches, is killed after three, and the resume runs only the two missing ones", async () => {
    const out = await run("examples/research.ts", 90_000)
    const killedAt = out.indexOf("SIGKILL the child")
    const resumedAt = out.indexOf("=== Resume in this process")
    expect(killedAt).toBeGreaterThan(0)
    expect(resumedAt).toBeGreaterThan(killedAt)
    const before = out.slice(0, killedAt)
    const after = out.slice(resumedAt)
    // The child planned and finished searches 1-3; 4 and 5 hung when it was killed.
    expect(before).toMatch(/\[child \d+\] plan: 5 topics/)
    for (const n of [1, 2, 3]) expect(before).toMatch(new RegExp(`\\[child \\d+\\] search #${n} .*: 1 note`))
    expect(before).not.toMatch(/search #[45] .*: 1 note/)
    expect(out).toContain("3 of 5 searches are saved (tasks 0000, 0001, 0002)")
    // The resume ran searches 4 and 5 and the summary, nothing else.
    expect(after.match(/\[parent \d+\] [a-z]+/g)).toEqual(
      [expect.stringMatching(/search$/), expect.stringMatching(/search$/), expect.stringMatching(/summarise$/)]
    )
    expect(after).toMatch(/search #4 .*: 1 note/)
    expect(after).toMatch(/search #5 .*: 1 note/)
    expect(after).toContain("summarise: 5 notes from 5 sources")
    // The notes are in task order, whatever order the searches finished in, and whichever process ran them.
    expect(after).toMatch(/1\. what source-1 says[^]*2\. what source-2[^]*3\. what source-3[^]*4\. what source-4[^]*5\. what source-5/)
    expect(after).toContain("#2 plan       next=[search,search,search,search,search]")
    expect(after).toContain("#3 search     next=[summarise]")
    expect(after).toContain("#4 summarise  next=[]")
    // Both processes used one SQLite file, in a temp directory that is gone.
    const filename = /SQLite store in (.+\.db)\) ===/.exec(out)?.[1]
    expect(filename).toBeDefined()
    expect(existsSync(dirname(filename!))).toBe(false)
  }, 120_000)

  it("observability.ts prints the run's events, its span tree, a debug log and the metrics", async () => {
    const out = await run("examples/observability.ts")
    // Events in causal order; the two parallel tasks start in task order.
    const events = out.slice(0, out.indexOf("=== Spans"))
    const order = [
      "checkpoint #1 saved (__input__)",
      "superstep 1: plan started (task 0000)",
      "checkpoint #2 saved (plan)",
      "superstep 2: search started (task 0000)",
      "superstep 2: lookup started (task 0001)",
      "checkpoint #3 saved (search+lookup)",
      "superstep 3: write finished:",
      "checkpoint #4 saved (write)",
      "finished: topic: checkpoints; found 3 papers; found 1 definition"
    ].map((line) => events.indexOf(line))
    expect(order.every((at) => at >= 0)).toBe(true)
    expect([...order].sort((a, b) => a - b)).toEqual(order)
    // The span tree: run → node / superstep → task → store operation.
    const spans = out.slice(out.indexOf("=== Spans"), out.indexOf("=== Debug")).split("\n").slice(1)
      .filter((l) => l.trim() !== "")
      .map((l) => l.replace(/ [0-9.]+ ms$/, "").replace(/ bytes=\d+/, ""))
    expect(spans).toEqual([
      "checkpoint.run",
      "  checkpoint.save [node=__input__ version=1]",
      "  checkpoint.node [node=plan]",
      "  checkpoint.save [node=plan version=2]",
      "  checkpoint.superstep [node=search+lookup]",
      "    checkpoint.task [node=search task_id=0000]",
      "      checkpoint.saveWrites [task_id=0000]",
      "    checkpoint.task [node=lookup task_id=0001]",
      "      checkpoint.saveWrites [task_id=0001]",
      "  checkpoint.save [node=search+lookup version=3]",
      "  checkpoint.node [node=write]",
      "  checkpoint.save [node=write version=4]"
    ])
    expect(out).toMatch(/level=DEBUG .*message="saved 1 checkpoint\(s\)".*checkpoint\.execution_id=research-3/)
    // 4 + 4 checkpoints of the two runs, and the manual one.
    expect(out).toMatch(/effect_checkpoint_saves_total\{backend=memory\}\s+9\n/)
    expect(out).toMatch(/effect_checkpoint_save_duration_ms\{backend=memory\}\s+count=9\n/)
  })

  it("custom-store.ts runs on a store written outside the library and resumes from its file in a new layer", async () => {
    const out = await run("examples/custom-store.ts")
    expect(out).toContain("paused: Execution \"order-1\" paused before node \"ship\"")
    expect(out).toContain("final: {\"item\":\"book\",\"approved\":true,\"shipped\":true}")
    expect(out).toMatch(/#1 __input__\n#2 check\n#3 __update__\n#4 ship\n/)
    expect(out.match(/checking book/g)?.length).toBe(1)
  })

  it("worker.ts: a worker process is killed mid-run; a second worker finishes every execution, each node's update once", async () => {
    const out = await run("examples/worker.ts")
    expect(out).toContain("Started 8 executions")
    expect(out).toContain("=== The worker process was killed (SIGKILL) ===")
    // The kill hit work in progress: an execution part-way, leased by the dead worker.
    expect(out).toMatch(/order-\d: running after [1-3] of 4 nodes, leased by worker-pid-\d+, which is dead/)
    const finished = out.slice(out.indexOf("=== All done ==="))
    for (let i = 1; i <= 8; i++) {
      expect(finished).toContain(`order-${i}: reserve → charge → pack → ship (5 checkpoints)`)
    }
  })

  it("approval.ts: the draft step runs once; the interrupt is answered from another process", async () => {
    const out = await run("examples/approval.ts")
    expect(out.match(/calling the LLM/g)?.length).toBe(1)
    expect(out).toMatch(/Interrupted in node "write" \(interrupt [0-9a-f-]{36}\/0000\/0\)/)
    expect(out).toContain("Execution status: interrupted")
    const resumed = out.slice(out.indexOf("=== Resume in another process"))
    expect(resumed).toContain("approved by ada at 2026-12-05T18:00:00.000Z")
    expect(resumed).not.toContain("calling the LLM")
    expect(resumed).toContain(`"status":"published"`)
    expect(resumed).toContain("Execution status: done")
  })
})
