import { describe, expect, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"

/** Runs an example the way the README does (against the built package, like a user). */
const run = (file: string): string =>
  execFileSync("npx", ["tsx", file], { encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "pipe"] })

describe("examples", () => {
  it("basic.ts prints the run, its four checkpoints and the resumed result", () => {
    const out = run("examples/basic.ts")
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

  it("worker.ts: a worker process is killed mid-run; a second worker finishes every execution, each node's update once", () => {
    const out = run("examples/worker.ts")
    expect(out).toContain("Started 8 executions")
    expect(out).toContain("=== The worker process was killed (SIGKILL) ===")
    // The kill hit work in progress: an execution part-way, leased by the dead worker.
    expect(out).toMatch(/order-\d: running after [1-3] of 4 nodes, leased by worker-pid-\d+, which is dead/)
    const finished = out.slice(out.indexOf("=== All done ==="))
    for (let i = 1; i <= 8; i++) {
      expect(finished).toContain(`order-${i}: reserve → charge → pack → ship (5 checkpoints)`)
    }
  })

  it("approval.ts: the draft step runs once; the interrupt is answered from another process", () => {
    const out = run("examples/approval.ts")
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
