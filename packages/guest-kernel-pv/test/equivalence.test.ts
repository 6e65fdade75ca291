/**
 * The same guest code gives the same guest-visible results — checksums, bytes received,
 * exit statuses — whatever the pv_ops underneath.
 */

import { describe, expect, it } from "vitest";
import { CONFIG_NAMES, type ReportValue, WORKLOAD_NAMES } from "../src/index.js";
import { boot, MIXED, SMALL } from "./helpers.js";

const configs = [...CONFIG_NAMES, ...MIXED];

interface Seen {
  readonly status: number;
  readonly results: Readonly<Record<string, ReportValue>>;
  readonly host: Readonly<Record<string, number>>;
}

async function runAll(config: (typeof configs)[number]): Promise<Map<string, Seen>> {
  const vm = await boot(config);
  const seen = new Map<string, Seen>();
  for (const w of WORKLOAD_NAMES) {
    const r = await vm.run(w, SMALL[w]).catch((e: unknown) => e as Error);
    if (r instanceof Error) {
      expect((r as { code?: string }).code, `${vm.config.name} / ${w}: ${r.message}`).toBe(
        "MISSING_DEVICE",
      );
      continue;
    }
    expect(r.processErrors, `${vm.config.name} / ${w}`).toEqual([]);
    seen.set(w, { status: r.exitStatus, results: r.results, host: r.hostResults });
  }
  return seen;
}

describe("same workload, same guest-visible results, every configuration", () => {
  it("every workload exits 0 and reports identical results across presets and mixed configurations", async () => {
    const all = new Map<string, Map<string, Seen>>();
    for (const c of configs)
      all.set(typeof c === "string" ? c : JSON.stringify(c), await runAll(c));
    for (const w of WORKLOAD_NAMES) {
      const reference = all.get("full-pv")!.get(w)!;
      expect(reference.status, w).toBe(0);
      expect(reference.results.ops, w).toBeGreaterThan(0);
      for (const [name, seen] of all) {
        const s = seen.get(w);
        if (s === undefined) {
          // Only the disk workloads may be missing, and only where there is no disk.
          expect(["disk-rand", "disk-seq"], `${name} lacks ${w}`).toContain(w);
          continue;
        }
        expect(s.status, `${name} / ${w}`).toBe(0);
        expect(s.results, `${name} / ${w}`).toEqual(reference.results);
      }
    }
    // Results that prove the work was done, not just equal.
    const pv = all.get("full-pv")!;
    expect(pv.get("net-rr")!.results).toMatchObject({ bytesReceived: 5 * 64, mismatches: 0 });
    expect(pv.get("net-stream")!.host.udpBytes).toBe(70 * 1472);
    expect(all.get("full-emulation")!.get("net-stream")!.host.udpBytes).toBe(70 * 1472);
    expect(pv.get("disk-seq")!.results.verified).toBe(true);
    expect(pv.get("gettimeofday")!.results.monotonic).toBe(true);
    expect(pv.get("sleep")!.results.shortSleeps).toBe(0);
    expect(pv.get("pipe")!.results.childStatus).toBe(0);
  }, 120_000);

  it("a second run on the same guest gives the same results (state is cleaned up)", async () => {
    for (const c of CONFIG_NAMES) {
      const vm = await boot(c);
      const a = await vm.run("fork-exit", SMALL["fork-exit"]);
      const b = await vm.run("fork-exit", SMALL["fork-exit"]);
      expect(b.results).toEqual(a.results);
      expect(b.exits, c).toBe(a.exits);
      const free0 = vm.kernel.frames.free;
      for (const w of ["fork-exit", "mmap", "exec", "pipe", "pagefault", "sleep", "net-rr"]) {
        await vm.run(w, SMALL[w]);
        expect(vm.kernel.frames.free, `${c}: ${w} leaked frames`).toBe(free0);
      }
    }
  });
});
