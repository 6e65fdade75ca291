import { describe, expect, it } from "vitest";
import { DISK_WORKLOADS, diskImagesSuite } from "../src/suites/disk-images.js";
import { suites } from "../src/suites/index.js";

describe("disk-images suite", () => {
  it("is registered, runs only when named, and measures every back-end on every workload", async () => {
    expect(suites).toContain(diskImagesSuite);
    expect(diskImagesSuite.main).toBeUndefined(); // not in the main job
    const lines: string[] = [];
    const r = await diskImagesSuite.run({
      maxTime: 0.2,
      minSamples: 1,
      quick: true,
      log: (l) => lines.push(l),
    });
    expect(r.name).toBe("disk-images");
    expect(r.tables[0]!.columns).toEqual([
      "workload",
      "raw",
      "qcow2",
      "overlay",
      "persistent overlay",
      "raw MB/s",
    ]);
    expect(r.tables[0]!.rows.map((row) => row[0])).toEqual(DISK_WORKLOADS.map((w) => w.label));
    expect(r.checks).toHaveLength(DISK_WORKLOADS.length);
    const data = r.data as Record<
      string,
      Record<string, { requestsPerSecond: number; ofRaw: number }>
    >;
    for (const w of DISK_WORKLOADS) {
      for (const k of ["raw", "qcow2", "overlay", "persistent"]) {
        expect(data[w.key]![k]!.requestsPerSecond).toBeGreaterThan(0);
      }
      expect(data[w.key]!.raw!.ofRaw).toBe(1);
    }
    expect(lines.length).toBe(1 + DISK_WORKLOADS.length);
  }, 60_000);
});
