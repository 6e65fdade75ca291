import { describe, expect, it } from "vitest";
import { guestKernelSuite, type Row } from "../src/suites/guest-kernel.js";

describe("guest-kernel suite (quick smoke run)", () => {
  it("measures every workload in every configuration that has its devices, and checks the targets", async () => {
    const r = await guestKernelSuite.run({
      maxTime: 0.3,
      minSamples: 5,
      quick: true,
      log: () => {},
    });
    const rows = (r.data as { rows: Row[] }).rows;
    const presets = ["full-emulation", "hw-assist+pv-io", "full-pv"];
    for (const w of [
      "fork-exit",
      "exec",
      "mmap",
      "pagefault",
      "pipe",
      "gettimeofday",
      "sleep",
      "net-rr",
      "net-stream",
    ]) {
      for (const c of presets)
        expect(
          rows.some((x) => x.workload === w && x.config === c),
          `${w} / ${c}`,
        ).toBe(true);
    }
    // No emulated disk: the disk workloads have no full-emulation row.
    expect(rows.some((x) => x.workload === "disk-rand" && x.config === "full-emulation")).toBe(
      false,
    );
    expect(
      rows.every(
        (x) => (x.runtime === "in-process" || x.runtime === "threaded") && x.opsPerSec.median > 0,
      ),
    ).toBe(true);
    // The threaded runtime measures the same workloads × presets.
    for (const c of presets)
      expect(
        rows.some((x) => x.runtime === "threaded" && x.config === c && x.workload === "net-stream"),
      ).toBe(true);
    const pass = (prefix: string): boolean[] =>
      r.checks.filter((c) => c.name.startsWith(prefix)).map((c) => c.pass);
    expect(pass("gettimeofday")).toEqual([true, true, true]);
    expect(
      r.checks
        .filter((c) => c.name.includes("hw-assist+pv-io makes no page-table exit"))
        .every((c) => c.pass),
    ).toBe(true);
    // Modelled time is never faster than the measured one.
    for (const x of rows) expect(x.modelledNsPerOp).toBeGreaterThanOrEqual(x.nsPerOp);
    expect(r.tables[0]!.columns).toContain("runtime");
    expect(r.notes.join(" ")).toMatch(/Paravirtual devices cut I\/O cost/);
  }, 60_000);
});
