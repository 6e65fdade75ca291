import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  type ClaimRow,
  claimsMarkdown,
  claimsTable,
  evaluateClaims,
  guestKernelRows,
  loadSnapshots,
  type SuiteSnapshot,
  THRESHOLDS,
  type Verdict,
} from "../src/claims.js";
import type { SuiteResult } from "../src/suite.js";

const snap = (name: string, data: unknown): [string, SuiteSnapshot] => [
  name,
  { name, date: "2026-01-02T03:04:05.000Z", data },
];
const verdict = (snapshots: [string, SuiteSnapshot][], id: string): ClaimRow => {
  const row = evaluateClaims(new Map(snapshots)).find((r) => r.id === id);
  if (row === undefined) throw new Error(`no claim ${id}`);
  return row;
};
const v = (snapshots: [string, SuiteSnapshot][], id: string): Verdict =>
  verdict(snapshots, id).verdict;

/** nic-compare data whose worst row needs `ratio`× fewer exits with virtio. */
const nic = (ratio: number) =>
  snap("nic-compare", {
    "tx-64-b1": {
      rtl8139: { frames: 1000, exits: 5000 },
      virtio: { frames: 1000, exits: 5000 / ratio },
    },
    "rx-64-b32": { rtl8139: { frames: 1000, exits: 3000 }, virtio: { frames: 1000, exits: 30 } },
  });

/** hypercall-mmu data where trapping needs `ratio`× PV's exits in the worst phase. */
const mmu = (ratio: number) =>
  snap("hypercall-mmu", [
    { mode: "pv", pages: 1000, build: { exits: 3 }, fork: { exits: 100 }, teardown: { exits: 3 } },
    {
      mode: "shadow",
      pages: 1000,
      build: { exits: 1000 },
      fork: { exits: 100 * ratio },
      teardown: { exits: 1000 },
    },
    { mode: "hap", pages: 1000, build: { exits: 0 }, fork: { exits: 0 }, teardown: { exits: 0 } },
  ]);

const timers = (pvclockExits: number) =>
  snap("timers", [
    {
      operation: "clock read",
      mechanism: "pvclock (shared memory)",
      exits: pvclockExits,
      ops: 100_000,
    },
    {
      operation: "clock read",
      mechanism: "HPET main counter (MMIO)",
      exits: 100_000,
      ops: 100_000,
    },
  ]);

interface Row {
  workload: string;
  config: string;
  runtime: string;
  exitsPerOp: number;
  opsPerSec: { median: number };
  nsPerOp?: number;
}
const row = (
  workload: string,
  config: string,
  exitsPerOp: number,
  ops: number,
  runtime = "in-process",
): Row => ({
  workload,
  config,
  runtime,
  exitsPerOp,
  opsPerSec: { median: ops },
});

/** A guest kernel where every claim on it holds exactly at its threshold. */
function kernelRows(over: Partial<Record<string, number>> = {}): Row[] {
  const o = (k: string, d: number): number => over[k] ?? d;
  return [
    // MMU-heavy: hw-assist has the fewest exits (0); its gain is 3× (+200%).
    row("fork-exit", "full-emulation", 25, 1000),
    row("fork-exit", "hw-assist+pv-io", o("forkHw", 0), 3000),
    row("fork-exit", "full-pv", 17, 1200),
    row("mmap", "full-emulation", 64, 1000),
    row("mmap", "hw-assist+pv-io", 0, o("mmapHwOps", 3000)),
    row("mmap", "full-pv", 33, 1500),
    // I/O: hw-assist needs 2× fewer exits than full emulation and 1.5× full PV's.
    row("net-rr", "full-emulation", 12, 1000),
    row("net-rr", "hw-assist+pv-io", o("netHw", 6), 1100),
    row("net-rr", "full-pv", o("netPv", 4), 1200),
    // Others: gain +100% (< +200%).
    row("gettimeofday", "full-emulation", 1, 1000),
    row("gettimeofday", "hw-assist+pv-io", 0, o("gtodHwOps", 2000)),
    row("gettimeofday", "full-pv", 0, 2100),
  ];
}
const kernel = (rows: Row[]) => snap("guest-kernel", { exitCycles: 1360, rows });

describe("the lecture's claims flip at their thresholds", () => {
  it("paravirtual I/O cuts exits per packet (nic-compare)", () => {
    expect(THRESHOLDS.pvIoExitRatio).toBe(2);
    expect(v([nic(2)], "pv-io-exits")).toBe("holds");
    expect(v([nic(1.99)], "pv-io-exits")).toBe("fails");
    expect(v([], "pv-io-exits")).toBe("not measured yet");
    expect(verdict([nic(2)], "pv-io-exits").measured).toContain(
      "2× fewer in the worst row (tx-64-b1",
    );
    expect(verdict([nic(2)], "pv-io-exits").source).toBe("nic-compare (2026-01-02)");
  });

  it("a PV MMU needs far fewer exits than trapping page-table writes (hypercall-mmu)", () => {
    expect(v([mmu(10)], "pv-mmu-exits")).toBe("holds");
    expect(v([mmu(9.99)], "pv-mmu-exits")).toBe("fails");
    expect(v([snap("hypercall-mmu", { wrong: true })], "pv-mmu-exits")).toBe("not measured yet");
  });

  it("pvclock reads need no exit (timers)", () => {
    expect(v([timers(0)], "pvclock-no-exit")).toBe("holds");
    expect(v([timers(1)], "pvclock-no-exit")).toBe("fails");
    expect(verdict([timers(0)], "pvclock-no-exit").measured).toContain("HPET main counter 1");
    expect(v([snap("timers", [])], "pvclock-no-exit")).toBe("not measured yet");
  });

  it("exits are expensive: threaded rows of the guest kernel, else not measured yet", () => {
    const inproc = { ...row("fork-exit", "full-emulation", 2, 1000), nsPerOp: 1000 };
    const threaded = (ns: number) => ({
      ...row("fork-exit", "full-emulation", 2, 1e9 / ns, "threaded"),
      nsPerOp: ns,
    });
    // 2 exits per op: +200 ns per op = +100 ns per exit, the threshold.
    expect(v([kernel([inproc, threaded(1200)])], "exits-expensive")).toBe("holds");
    expect(verdict([kernel([inproc, threaded(1200)])], "exits-expensive").measured).toMatch(
      /^100 ns more per exit threaded than in-process \(extra time per operation ÷ exits per operation, median of 1 workload × configuration pairs; least 100 ns, fork-exit under full-emulation\); fork-exit under full-emulation takes 1\.2× the in-process time$/,
    );
    expect(verdict([kernel([inproc, threaded(81_000)])], "exits-expensive").measured).toContain(
      "40 µs more per exit",
    );
    expect(v([kernel([inproc, threaded(1199)])], "exits-expensive")).toBe("fails");
    const none = verdict(
      [
        kernel([inproc]),
        snap("trap-channel", [
          { runtime: "in-process", host: "—", spin: "none", medianNs: 10 },
          { runtime: "threaded", host: "blocking", spin: "adaptive", medianNs: 800 },
        ]),
      ],
      "exits-expensive",
    );
    expect(none.verdict).toBe("not measured yet");
    expect(none.measured).toContain("no threaded-runtime rows");
    expect(none.measured).toContain("800 ns as a cross-thread round trip vs 10 ns in-process (80×");
    expect(v([], "exits-expensive")).toBe("not measured yet");
  });

  it("combined virtualization is the best of both worlds (guest-kernel)", () => {
    expect(v([kernel(kernelRows())], "combined-best")).toBe("holds");
    // MMU half: hw-assist must not exceed the better of the other two.
    expect(v([kernel(kernelRows({ forkHw: 17 }))], "combined-best")).toBe("holds");
    expect(v([kernel(kernelRows({ forkHw: 17.01 }))], "combined-best")).toBe("fails");
    // I/O half: ≥ 2× fewer exits than full emulation …
    expect(v([kernel(kernelRows({ netHw: 6.01, netPv: 6 }))], "combined-best")).toBe("fails");
    // … and ≤ 1.5× full PV's.
    expect(v([kernel(kernelRows({ netPv: 3.99 }))], "combined-best")).toBe("fails");
    expect(v([kernel(kernelRows().filter((r) => r.workload !== "net-rr"))], "combined-best")).toBe(
      "not measured yet",
    );
    expect(v([], "combined-best")).toBe("not measured yet");
  });

  it("EPT-like assist helps MMU-heavy work most (guest-kernel)", () => {
    // MMU-heavy median gain +200% vs +100% for the rest.
    expect(v([kernel(kernelRows())], "ept-mmu-most")).toBe("holds");
    // The rest gains as much: no longer "most".
    expect(v([kernel(kernelRows({ gtodHwOps: 3000 }))], "ept-mmu-most")).toBe("fails");
    expect(v([kernel(kernelRows({ gtodHwOps: 2999 }))], "ept-mmu-most")).toBe("holds");
    const m = verdict([kernel(kernelRows())], "ept-mmu-most").measured;
    expect(m).toContain("MMU-heavy median +200%");
    expect(m).toContain("+100% median for the rest");
    expect(m).toContain("VMware: up to +48%");
    expect(
      v([kernel(kernelRows().filter((r) => r.workload === "gettimeofday"))], "ept-mmu-most"),
    ).toBe("not measured yet");
  });

  it("PV drivers cut exits inside Linux in v86 (v86-guest)", () => {
    const guest = (ratio: number) =>
      snap("v86-guest", {
        disk: [
          { disk: "ide", op: "read", bytes: 1 << 24, exits: 200 * ratio },
          { disk: "virtio-blk", op: "read", bytes: 1 << 24, exits: 200 },
        ],
        net: {
          virtio: { flood: { exits: 600, txFrames: 300, rxFrames: 300 } },
          rtl8139: { flood: { exits: 6600, txFrames: 300, rxFrames: 300 } },
        },
      });
    expect(v([guest(2)], "guest-io-exits")).toBe("holds");
    expect(v([guest(1.99)], "guest-io-exits")).toBe("fails");
    expect(verdict([guest(2)], "guest-io-exits").measured).toBe(
      "emulated ÷ virtio exits: dd read 2×, ping flood 11×",
    );
  });

  it("thresholds can be moved, and every claim is evaluated", () => {
    const rows = evaluateClaims(new Map([nic(3)]), { ...THRESHOLDS, pvIoExitRatio: 4 });
    expect(rows.find((r) => r.id === "pv-io-exits")?.verdict).toBe("fails");
    expect(rows.map((r) => r.id)).toEqual([
      "pv-io-exits",
      "guest-io-exits",
      "pv-mmu-exits",
      "pvclock-no-exit",
      "exits-expensive",
      "combined-best",
      "ept-mmu-most",
    ]);
  });
});

describe("claims table and sources", () => {
  it("writes one Markdown row per claim with its verdict", () => {
    const rows = evaluateClaims(new Map([nic(100), timers(1)]));
    const table = claimsTable(rows).split("\n");
    expect(table).toHaveLength(2 + rows.length);
    expect(table[2]).toContain("| **holds** |");
    expect(table.find((l) => l.includes("pvclock reads"))).toContain("| **FAILS** |");
    expect(table.find((l) => l.includes("best of both worlds"))).toContain("| not measured yet |");
    const md = claimsMarkdown(rows, "2026-01-02T00:00:00.000Z");
    expect(md).toContain("1 hold, 1 fail, 5 not measured yet.");
    expect(md.endsWith("\n")).toBe(true);
  });

  it("keeps only guest-kernel rows of the documented shape", () => {
    expect(
      guestKernelRows({ rows: [row("a", "full-pv", 1, 2), { workload: "b" }, null] }),
    ).toHaveLength(1);
    expect(guestKernelRows(undefined)).toEqual([]);
  });

  it("reads each suite's latest JSON and lays this run's results over them", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "pvkit-claims-"));
    try {
      const report = (name: string, data: unknown) =>
        JSON.stringify({ schema: 1, date: "2025-05-05T00:00:00.000Z", suites: [{ name, data }] });
      writeFileSync(path.join(dir, "timers.json"), report("timers", timers(0)[1].data));
      writeFileSync(path.join(dir, "nic-compare.json"), report("nic-compare", nic(1)[1].data));
      writeFileSync(path.join(dir, "guest-kernel.json"), "{ not json");
      const fresh = { name: "nic-compare", data: nic(50)[1].data } as unknown as SuiteResult;
      const snaps = loadSnapshots(
        dir,
        ["timers", "nic-compare", "guest-kernel", "v86-guest"],
        [fresh],
        "2026-06-06T00:00:00.000Z",
      );
      expect([...snaps.keys()].sort()).toEqual(["nic-compare", "timers"]);
      expect(snaps.get("timers")?.date).toBe("2025-05-05T00:00:00.000Z");
      expect(snaps.get("nic-compare")?.date).toBe("2026-06-06T00:00:00.000Z");
      const rows = evaluateClaims(snaps);
      expect(rows.find((r) => r.id === "pv-io-exits")?.verdict).toBe("holds");
      expect(rows.find((r) => r.id === "pvclock-no-exit")?.source).toBe("timers (2025-05-05)");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
