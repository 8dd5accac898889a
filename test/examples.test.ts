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
})
