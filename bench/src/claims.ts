/**
 * The lecture's claims, checked against the numbers: one row per claim with the measured
 * figure and a verdict — `holds`, `fails`, or `not measured yet` — computed from the
 * latest result of whichever suites measured it (`results/<suite>.json`), with the
 * threshold of each verdict in {@link THRESHOLDS}.
 *
 * ## The data each claim reads
 *
 * Suites are read through small documented shapes, checked field by field; a result that
 * is missing, or does not have its shape, makes the claim "not measured yet" (saying why)
 * rather than an error:
 *
 * - `nic-compare`: `data` = `{ "<tx|rx>-<bytes>-b<burst>": { rtl8139, virtio } }`, each
 *   `{ frames, exits }` ({@link NicCompareData}).
 * - `hypercall-mmu`: `data` = `[{ mode: "pv"|"shadow"|"hap", pages, build|fork|teardown:
 *   { exits } }]` ({@link MmuData}).
 * - `timers`: `data` = `[{ operation, mechanism, exits, ops }]` ({@link TimerData}).
 * - `guest-kernel`: `data.rows` = {@link GuestKernelRow}[] — the shape this module and
 *   the guest-kernel suite agree on: one row per (workload, configuration, runtime) with
 *   `exitsPerOp`, `opsPerSec.median` and optionally `nsPerOp`; configurations
 *   `full-emulation`, `hw-assist+pv-io`, `full-pv` (others are ignored); runtime
 *   `in-process` or `threaded`. Rows of the threaded runtime, when they appear, decide
 *   "exits are expensive".
 * - `trap-channel`: `data` = `[{ runtime, host, spin, medianNs }]` (context for "exits are
 *   expensive": the cost of one exit as a cross-thread round trip).
 * - `v86-guest`: `data.disk` = `[{ disk: "ide"|"virtio-blk", op, bytes, exits }]`,
 *   `data.net.{rtl8139,virtio}.{flood,bulk}` = `{ exits, txFrames, rxFrames }`.
 *
 * @module
 */

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { formatValue } from "./chart-spec.js";
import type { SuiteResult } from "./suite.js";

/** One suite's latest result: its name, the date of its run and its raw data. */
export interface SuiteSnapshot {
  /** Suite name. */
  readonly name: string;
  /** When that run started (ISO 8601). */
  readonly date: string;
  /** The suite's `data`. */
  readonly data: unknown;
}

/** A claim's verdict. */
export type Verdict = "holds" | "fails" | "not measured yet";

/** One row of the claims table. */
export interface ClaimRow {
  /** Stable id (for tests and links). */
  readonly id: string;
  /** The claim, as the lecture puts it. */
  readonly claim: string;
  /** The measured figure (or why there is none). */
  readonly measured: string;
  /** When the verdict is "holds". */
  readonly criterion: string;
  /** The verdict. */
  readonly verdict: Verdict;
  /** Where the figure comes from: suite name(s) and run date(s). */
  readonly source: string;
}

/** The thresholds of the verdicts. */
export interface Thresholds {
  /** virtio-net needs at least this many times fewer exits per frame than the RTL8139, in every nic-compare row. */
  readonly pvIoExitRatio: number;
  /** The trapping MMU needs at least this many times more exits than the PV MMU, in every phase and size. */
  readonly pvMmuExitRatio: number;
  /** Most exits a pvclock read may cost. */
  readonly pvclockExits: number;
  /** Least extra time per exit (ns) the threaded runtime must cost over in-process. */
  readonly exitCostNs: number;
  /** hw-assist + PV I/O needs at least this many times fewer exits than full emulation on I/O. */
  readonly combinedIoVsEmulation: number;
  /** hw-assist + PV I/O needs at most this many times full PV's exits on I/O. */
  readonly combinedIoVsPv: number;
  /** Median ops/s gain of EPT-like over shadow paging on MMU-heavy work must exceed this many times the gain on the rest. */
  readonly eptGainMargin: number;
  /** Emulated devices in a real Linux guest need at least this many times the exits of virtio. */
  readonly guestIoExitRatio: number;
}

/** The thresholds in force. */
export const THRESHOLDS: Thresholds = {
  pvIoExitRatio: 2,
  pvMmuExitRatio: 10,
  pvclockExits: 0,
  exitCostNs: 100,
  combinedIoVsEmulation: 2,
  combinedIoVsPv: 1.5,
  eptGainMargin: 1,
  guestIoExitRatio: 2,
};

/** VMware's published gain from EPT on MMU-intensive benchmarks (Intel EPT evaluation, 2009). */
export const VMWARE_EPT_GAIN = 0.48;

/** Guest-kernel workloads that are page-table heavy (under shadow paging every one traps). */
export const MMU_WORKLOADS = ["fork-exit", "exec", "mmap", "pagefault", "pipe"] as const;
/** Guest-kernel workloads that are device I/O. */
export const IO_WORKLOADS = ["net-rr", "net-stream", "disk-rand", "disk-seq"] as const;

// ── the documented shapes ────────────────────────────────────────────────────────────

/** nic-compare's counts for one NIC in one row. */
export interface NicCounts {
  /** Frames moved. */
  readonly frames: number;
  /** Exits taken. */
  readonly exits: number;
}
/** nic-compare's data: rows keyed `<tx|rx>-<bytes>-b<burst>`. */
export type NicCompareData = Readonly<
  Record<string, { readonly rtl8139: NicCounts; readonly virtio: NicCounts }>
>;

/** One hypercall-mmu phase. */
export interface MmuPhase {
  /** Exits of the phase. */
  readonly exits: number;
}
/** One hypercall-mmu run. */
export interface MmuRunData {
  /** `"pv"`, `"shadow"` or `"hap"`. */
  readonly mode: string;
  /** Address-space size. */
  readonly pages: number;
  /** Mapping N pages. */
  readonly build: MmuPhase;
  /** Mapping N pages read-only in a child and write-protecting N (2N operations). */
  readonly fork: MmuPhase;
  /** Unmapping N pages. */
  readonly teardown: MmuPhase;
}
/** hypercall-mmu's data. */
export type MmuData = readonly MmuRunData[];

/** One timers row. */
export interface TimerRowData {
  /** `"reprogram"` or `"clock read"`. */
  readonly operation: string;
  /** The mechanism, e.g. `"pvclock (shared memory)"`. */
  readonly mechanism: string;
  /** Exits over {@link ops}. */
  readonly exits: number;
  /** Operations. */
  readonly ops: number;
}
/** timers' data. */
export type TimerData = readonly TimerRowData[];

/**
 * One row of the guest-kernel suite (`data.rows`), the shape the claims read: the same
 * workload under one configuration and runtime.
 */
export interface GuestKernelRow {
  /** Workload id, e.g. `"fork-exit"`, `"net-stream"` ({@link MMU_WORKLOADS}, {@link IO_WORKLOADS}). */
  readonly workload: string;
  /** `"full-emulation"`, `"hw-assist+pv-io"`, `"full-pv"` or another mix (ignored by the claims). */
  readonly config: string;
  /** `"in-process"` or `"threaded"`. */
  readonly runtime: string;
  /** Exits per operation. */
  readonly exitsPerOp: number;
  /** Operations per second (median of the rounds). */
  readonly opsPerSec: { readonly median: number };
  /** Nanoseconds per operation (default `1e9 / opsPerSec.median`). */
  readonly nsPerOp?: number;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object";
const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/** The guest-kernel rows of a snapshot that have the documented shape (others are dropped). */
export function guestKernelRows(data: unknown): GuestKernelRow[] {
  const rows = isObject(data) && Array.isArray(data.rows) ? data.rows : [];
  return rows.filter(
    (r): r is GuestKernelRow =>
      isObject(r) &&
      typeof r.workload === "string" &&
      typeof r.config === "string" &&
      typeof r.runtime === "string" &&
      isNum(r.exitsPerOp) &&
      isObject(r.opsPerSec) &&
      isNum(r.opsPerSec.median) &&
      (r.nsPerOp === undefined || isNum(r.nsPerOp)),
  );
}

const nsOf = (r: GuestKernelRow): number => r.nsPerOp ?? 1e9 / r.opsPerSec.median;

// ── reading results ──────────────────────────────────────────────────────────────────

/**
 * Reads the latest result of each named suite from `dir/<suite>.json` (a report of the
 * runner's format), then lays `fresh` (this run's results, not yet on disk) over them.
 */
export function loadSnapshots(
  dir: string,
  names: readonly string[],
  fresh: readonly SuiteResult[] = [],
  freshDate = "",
): Map<string, SuiteSnapshot> {
  const out = new Map<string, SuiteSnapshot>();
  for (const name of names) {
    const file = path.join(dir, `${name}.json`);
    if (!existsSync(file)) continue;
    try {
      const report = JSON.parse(readFileSync(file, "utf8")) as {
        date?: unknown;
        suites?: { name?: unknown; data?: unknown }[];
      };
      const s = report.suites?.find((x) => x.name === name);
      if (s !== undefined)
        out.set(name, { name, date: String(report.date ?? "unknown"), data: s.data });
    } catch {
      // unreadable: the claims that need it say "not measured yet"
    }
  }
  for (const r of fresh) out.set(r.name, { name: r.name, date: freshDate, data: r.data });
  return out;
}

/** The suites the claims read. */
export const CLAIM_SOURCES = [
  "nic-compare",
  "hypercall-mmu",
  "timers",
  "guest-kernel",
  "trap-channel",
  "v86-guest",
] as const;

// ── the claims ───────────────────────────────────────────────────────────────────────

const x = (r: number): string => `${formatValue(r)}×`;
const ns = (n: number): string =>
  n >= 1e6
    ? `${formatValue(n / 1e6)} ms`
    : n >= 1e3
      ? `${formatValue(n / 1e3)} µs`
      : `${formatValue(n)} ns`;
const sourceOf = (s: SuiteSnapshot | undefined, name: string): string =>
  s === undefined ? `${name} (no result)` : `${name} (${s.date.slice(0, 10) || "this run"})`;
const notMeasured = (
  id: string,
  claim: string,
  criterion: string,
  why: string,
  source: string,
): ClaimRow => ({ id, claim, measured: why, criterion, verdict: "not measured yet", source });
const verdictOf = (ok: boolean): Verdict => (ok ? "holds" : "fails");
const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >>> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const pct = (g: number): string =>
  `${g >= 0 ? "+" : ""}${Math.round(g * 100).toLocaleString("en-US")}%`;

function pvIo(s: SuiteSnapshot | undefined, t: Thresholds): ClaimRow {
  const id = "pv-io-exits";
  const claim = "Paravirtual I/O cuts exits per packet";
  const criterion = `virtio-net needs ≥ ${t.pvIoExitRatio}× fewer exits per frame than the emulated RTL8139 in every row (TX/RX, 64/1514 B, bursts 1/32/256)`;
  const source = sourceOf(s, "nic-compare");
  const rows: { key: string; ratio: number; emu: number; pv: number }[] = [];
  if (s !== undefined && isObject(s.data)) {
    for (const [key, v] of Object.entries(s.data)) {
      if (!isObject(v) || !isObject(v.rtl8139) || !isObject(v.virtio)) continue;
      const { rtl8139: r, virtio: p } = v as {
        rtl8139: Record<string, unknown>;
        virtio: Record<string, unknown>;
      };
      if (!isNum(r.exits) || !isNum(r.frames) || !isNum(p.exits) || !isNum(p.frames)) continue;
      if (r.frames <= 0 || p.frames <= 0) continue;
      const emu = r.exits / r.frames;
      const pv = p.exits / p.frames;
      rows.push({ key, emu, pv, ratio: pv === 0 ? Number.POSITIVE_INFINITY : emu / pv });
    }
  }
  if (rows.length === 0)
    return notMeasured(id, claim, criterion, "not measured yet: no nic-compare result", source);
  const worst = rows.reduce((a, b) => (b.ratio < a.ratio ? b : a));
  const batched = rows.filter((r) => !/-b1$/.test(r.key));
  const lo = Math.min(...batched.map((r) => r.ratio));
  const hi = Math.max(...batched.map((r) => r.ratio));
  const single = rows.filter((r) => /-b1$/.test(r.key)).map((r) => r.ratio);
  const measured =
    `${x(worst.ratio)} fewer in the worst row (${worst.key}: ${formatValue(worst.emu)} vs ${formatValue(worst.pv)} exits/frame)` +
    (single.length > 0
      ? `; one frame at a time ${x(Math.min(...single))}–${x(Math.max(...single))}`
      : "") +
    (batched.length > 0 ? `; in bursts of 32–256 ${x(lo)}–${x(hi)}` : "");
  return {
    id,
    claim,
    measured,
    criterion,
    verdict: verdictOf(worst.ratio >= t.pvIoExitRatio),
    source,
  };
}

function pvMmu(s: SuiteSnapshot | undefined, t: Thresholds): ClaimRow {
  const id = "pv-mmu-exits";
  const claim = "A PV MMU needs far fewer exits than trapping page-table writes";
  const criterion = `the trapping (shadow) MMU takes ≥ ${t.pvMmuExitRatio}× the PV MMU's exits in every phase that exits (build, fork, teardown) and size`;
  const source = sourceOf(s, "hypercall-mmu");
  const runs = s !== undefined && Array.isArray(s.data) ? (s.data as unknown[]) : [];
  const phaseExits = (r: unknown, p: string): number | undefined => {
    if (!isObject(r) || !isObject(r[p])) return undefined;
    const e = (r[p] as Record<string, unknown>).exits;
    return isNum(e) ? e : undefined;
  };
  const found: { what: string; ratio: number; sh: number; pv: number }[] = [];
  for (const r of runs) {
    if (!isObject(r) || r.mode !== "pv" || !isNum(r.pages)) continue;
    const sh = runs.find((q) => isObject(q) && q.mode === "shadow" && q.pages === r.pages);
    for (const p of ["build", "fork", "teardown"]) {
      const a = phaseExits(sh, p);
      const b = phaseExits(r, p);
      if (a === undefined || b === undefined) continue;
      found.push({
        what: `${p}, N=${r.pages.toLocaleString("en-US")}`,
        sh: a,
        pv: b,
        ratio: b === 0 ? Number.POSITIVE_INFINITY : a / b,
      });
    }
  }
  if (found.length === 0)
    return notMeasured(id, claim, criterion, "not measured yet: no hypercall-mmu result", source);
  const worst = found.reduce((a, b) => (b.ratio < a.ratio ? b : a));
  const best = found.reduce((a, b) => (b.ratio > a.ratio ? b : a));
  const measured = `${x(worst.ratio)} fewer exits at worst (${worst.what}: ${worst.sh.toLocaleString("en-US")} trapping vs ${worst.pv.toLocaleString("en-US")} PV exits), up to ${x(best.ratio)} (${best.what})`;
  return {
    id,
    claim,
    measured,
    criterion,
    verdict: verdictOf(worst.ratio >= t.pvMmuExitRatio),
    source,
  };
}

function pvclock(s: SuiteSnapshot | undefined, t: Thresholds): ClaimRow {
  const id = "pvclock-no-exit";
  const claim = "pvclock reads need no exit";
  const criterion = `a pvclock read costs ≤ ${t.pvclockExits} exits`;
  const source = sourceOf(s, "timers");
  const rows = (s !== undefined && Array.isArray(s.data) ? (s.data as unknown[]) : []).filter(
    (r): r is TimerRowData =>
      isObject(r) &&
      typeof r.operation === "string" &&
      typeof r.mechanism === "string" &&
      isNum(r.exits) &&
      isNum(r.ops) &&
      r.ops > 0,
  );
  const pv = rows.find((r) => r.operation === "clock read" && r.mechanism.startsWith("pvclock"));
  if (pv === undefined)
    return notMeasured(
      id,
      claim,
      criterion,
      "not measured yet: no timers result with a pvclock row",
      source,
    );
  const others = rows
    .filter((r) => r.operation === "clock read" && r !== pv)
    .map((r) => `${r.mechanism.replace(/ \(.*\)$/, "")} ${formatValue(r.exits / r.ops)}`);
  const perRead = pv.exits / pv.ops;
  const measured = `pvclock ${formatValue(perRead)} exits/read over ${pv.ops.toLocaleString("en-US")} reads${others.length > 0 ? `; emulated clocks: ${others.join(", ")}` : ""}`;
  return { id, claim, measured, criterion, verdict: verdictOf(perRead <= t.pvclockExits), source };
}

function exitsExpensive(
  gk: SuiteSnapshot | undefined,
  trap: SuiteSnapshot | undefined,
  t: Thresholds,
): ClaimRow {
  const id = "exits-expensive";
  const claim = "Exits are expensive: the same work costs more time when exits cost a round trip";
  const criterion = `in the guest kernel, the threaded runtime costs ≥ ${t.exitCostNs} ns more per exit than in-process (median over workload × configuration pairs with ≥ 0.5 exits/op)`;
  const source = [
    sourceOf(gk, "guest-kernel"),
    ...(trap !== undefined ? [sourceOf(trap, "trap-channel")] : []),
  ].join("; ");
  let context = "";
  if (trap !== undefined && Array.isArray(trap.data)) {
    const rows = (trap.data as unknown[]).filter(isObject);
    const inproc = rows.find((r) => r.runtime === "in-process" && isNum(r.medianNs));
    const threaded = rows.find(
      (r) => r.runtime === "threaded" && r.spin === "adaptive" && isNum(r.medianNs),
    );
    if (inproc !== undefined && threaded !== undefined) {
      const a = inproc.medianNs as number;
      const b = threaded.medianNs as number;
      context = `one exit: ${ns(b)} as a cross-thread round trip vs ${ns(a)} in-process (${x(b / a)}, trap-channel)`;
    }
  }
  const rows = guestKernelRows(gk?.data);
  const pairs: { w: string; c: string; extra: number; slow: number }[] = [];
  for (const th of rows.filter((r) => r.runtime === "threaded")) {
    const ip = rows.find(
      (r) => r.runtime === "in-process" && r.workload === th.workload && r.config === th.config,
    );
    if (ip === undefined || ip.exitsPerOp < 0.5) continue;
    pairs.push({
      w: th.workload,
      c: th.config,
      extra: (nsOf(th) - nsOf(ip)) / ip.exitsPerOp,
      slow: nsOf(th) / nsOf(ip),
    });
  }
  if (pairs.length === 0) {
    const why = `not measured yet: the guest kernel has no threaded-runtime rows${gk === undefined ? " (no guest-kernel result)" : ""}`;
    return notMeasured(id, claim, criterion, context === "" ? why : `${why}; ${context}`, source);
  }
  const m = median(pairs.map((p) => p.extra));
  const worst = pairs.reduce((a, b) => (b.slow > a.slow ? b : a));
  const least = pairs.reduce((a, b) => (b.extra < a.extra ? b : a));
  const measured = `${ns(m)} more per exit threaded than in-process (extra time per operation ÷ exits per operation, median of ${pairs.length} workload × configuration pairs; least ${ns(least.extra)}, ${least.w} under ${least.c}); ${worst.w} under ${worst.c} takes ${x(worst.slow)} the in-process time${context === "" ? "" : `; ${context}`}`;
  return { id, claim, measured, criterion, verdict: verdictOf(m >= t.exitCostNs), source };
}

function combined(gk: SuiteSnapshot | undefined, t: Thresholds): ClaimRow {
  const id = "combined-best";
  const claim = "Combined virtualization (hardware assist + PV I/O) is the best of both worlds";
  const criterion = `hw-assist+pv-io has the fewest exits/op (ties count) on every MMU-heavy workload, ≥ ${t.combinedIoVsEmulation}× fewer than full emulation and ≤ ${t.combinedIoVsPv}× full PV's on every I/O workload`;
  const source = sourceOf(gk, "guest-kernel");
  const rows = guestKernelRows(gk?.data).filter((r) => r.runtime === "in-process");
  const get = (w: string, c: string): GuestKernelRow | undefined =>
    rows.find((r) => r.workload === w && r.config === c);
  const mmu: { w: string; hw: number; best: number; ok: boolean }[] = [];
  for (const w of MMU_WORKLOADS) {
    const hw = get(w, "hw-assist+pv-io");
    const emu = get(w, "full-emulation");
    const pv = get(w, "full-pv");
    if (hw === undefined || emu === undefined || pv === undefined) continue;
    const best = Math.min(emu.exitsPerOp, pv.exitsPerOp);
    mmu.push({ w, hw: hw.exitsPerOp, best, ok: hw.exitsPerOp <= best + 1e-9 });
  }
  const io: { w: string; vsEmu: number | undefined; vsPv: number | undefined; ok: boolean }[] = [];
  for (const w of IO_WORKLOADS) {
    const hw = get(w, "hw-assist+pv-io");
    if (hw === undefined) continue;
    const emu = get(w, "full-emulation");
    const pv = get(w, "full-pv");
    const vsEmu =
      emu === undefined
        ? undefined
        : hw.exitsPerOp === 0
          ? Number.POSITIVE_INFINITY
          : emu.exitsPerOp / hw.exitsPerOp;
    const vsPv =
      pv === undefined
        ? undefined
        : pv.exitsPerOp === 0
          ? hw.exitsPerOp === 0
            ? 1
            : Number.POSITIVE_INFINITY
          : hw.exitsPerOp / pv.exitsPerOp;
    if (vsEmu === undefined && vsPv === undefined) continue;
    io.push({
      w,
      vsEmu,
      vsPv,
      ok:
        (vsEmu === undefined || vsEmu >= t.combinedIoVsEmulation) &&
        (vsPv === undefined || vsPv <= t.combinedIoVsPv),
    });
  }
  if (mmu.length === 0 || io.length === 0) {
    return notMeasured(
      id,
      claim,
      criterion,
      `not measured yet: ${gk === undefined ? "no guest-kernel result" : "the guest-kernel result lacks MMU-heavy or I/O workloads under all three configurations"}`,
      source,
    );
  }
  const mmuPart = `MMU-heavy: ${mmu.map((m) => `${m.w} ${formatValue(m.hw)} vs ${formatValue(m.best)}`).join(", ")} exits/op (hw-assist+pv-io vs the better of the other two)`;
  const ioPart = `I/O: ${io
    .map(
      (i) =>
        `${i.w} ${[i.vsEmu === undefined ? "" : `${x(i.vsEmu)} fewer than full emulation`, i.vsPv === undefined ? "" : `${x(i.vsPv)} full PV's`].filter(Boolean).join(", ")}`,
    )
    .join("; ")}`;
  const failed = [
    ...mmu.filter((m) => !m.ok).map((m) => m.w),
    ...io.filter((i) => !i.ok).map((i) => i.w),
  ];
  const measured = `${mmuPart}. ${ioPart}${failed.length > 0 ? `. Misses: ${failed.join(", ")}` : ""}`;
  return { id, claim, measured, criterion, verdict: verdictOf(failed.length === 0), source };
}

function eptMost(gk: SuiteSnapshot | undefined, t: Thresholds): ClaimRow {
  const id = "ept-mmu-most";
  const claim = "EPT-like hardware assist helps MMU-heavy work most (VMware measured up to 48%)";
  const criterion = `the median ops/s gain of hw-assist+pv-io over full emulation (shadow paging) on MMU-heavy workloads is > ${t.eptGainMargin === 1 ? "" : `${t.eptGainMargin}× `}the median gain on the other workloads (I/O workloads left out: their NIC and disk change too)`;
  const source = sourceOf(gk, "guest-kernel");
  const rows = guestKernelRows(gk?.data).filter((r) => r.runtime === "in-process");
  const gains: { w: string; g: number; mmu: boolean }[] = [];
  for (const hw of rows.filter((r) => r.config === "hw-assist+pv-io")) {
    if ((IO_WORKLOADS as readonly string[]).includes(hw.workload)) continue;
    const emu = rows.find((r) => r.workload === hw.workload && r.config === "full-emulation");
    if (emu === undefined || emu.opsPerSec.median <= 0) continue;
    gains.push({
      w: hw.workload,
      g: hw.opsPerSec.median / emu.opsPerSec.median - 1,
      mmu: (MMU_WORKLOADS as readonly string[]).includes(hw.workload),
    });
  }
  const mmu = gains.filter((g) => g.mmu);
  const rest = gains.filter((g) => !g.mmu);
  if (mmu.length === 0 || rest.length === 0) {
    return notMeasured(
      id,
      claim,
      criterion,
      `not measured yet: ${gk === undefined ? "no guest-kernel result" : "the guest-kernel result lacks MMU-heavy or other workloads under both configurations"}`,
      source,
    );
  }
  const mMmu = median(mmu.map((g) => g.g));
  const mRest = median(rest.map((g) => g.g));
  const measured = `EPT-like vs shadow paging, in-process ops/s: MMU-heavy median ${pct(mMmu)} (${mmu.map((g) => `${g.w} ${pct(g.g)}`).join(", ")}) vs ${pct(mRest)} median for the rest (${rest.map((g) => `${g.w} ${pct(g.g)}`).join(", ")}, whose timer differs too); VMware: up to ${pct(VMWARE_EPT_GAIN)} on MMU-intensive benchmarks`;
  const ok = mMmu > 0 && mMmu > t.eptGainMargin * mRest;
  return { id, claim, measured, criterion, verdict: verdictOf(ok), source };
}

function guestIo(s: SuiteSnapshot | undefined, t: Thresholds): ClaimRow {
  const id = "guest-io-exits";
  const claim =
    "Paravirtual drivers cut exits inside a real Linux guest too (block and network I/O in v86)";
  const criterion = `Linux's drivers on emulated IDE / RTL8139 take ≥ ${t.guestIoExitRatio}× the exits of virtio-blk / virtio-net for the same dd and network transfers`;
  const source = sourceOf(s, "v86-guest");
  const found: { what: string; ratio: number }[] = [];
  if (s !== undefined && isObject(s.data)) {
    const disk = Array.isArray(s.data.disk) ? (s.data.disk as unknown[]).filter(isObject) : [];
    for (const op of ["read", "write"]) {
      const ide = disk.find((d) => d.disk === "ide" && d.op === op);
      const vio = disk.find((d) => d.disk === "virtio-blk" && d.op === op);
      if (ide && vio && isNum(ide.exits) && isNum(vio.exits) && vio.exits > 0)
        found.push({ what: `dd ${op}`, ratio: ide.exits / vio.exits });
    }
    const net = isObject(s.data.net) ? s.data.net : {};
    for (const [k, label] of [
      ["flood", "ping flood"],
      ["bulk", "TCP transfer"],
    ] as const) {
      const r =
        isObject(net.rtl8139) && isObject(net.rtl8139[k])
          ? (net.rtl8139[k] as Record<string, unknown>)
          : undefined;
      const v =
        isObject(net.virtio) && isObject(net.virtio[k])
          ? (net.virtio[k] as Record<string, unknown>)
          : undefined;
      if (r && v && isNum(r.exits) && isNum(v.exits) && v.exits > 0)
        found.push({ what: label, ratio: r.exits / v.exits });
    }
  }
  if (found.length === 0)
    return notMeasured(id, claim, criterion, "not measured yet: no v86-guest result", source);
  const worst = Math.min(...found.map((f) => f.ratio));
  return {
    id,
    claim,
    measured: `emulated ÷ virtio exits: ${found.map((f) => `${f.what} ${x(f.ratio)}`).join(", ")}`,
    criterion,
    verdict: verdictOf(worst >= t.guestIoExitRatio),
    source,
  };
}

/**
 * Evaluates every claim against the snapshots at hand.
 *
 * @param snapshots - suite results by name ({@link loadSnapshots})
 * @param t - thresholds (tests move them)
 */
export function evaluateClaims(
  snapshots: ReadonlyMap<string, SuiteSnapshot>,
  t: Thresholds = THRESHOLDS,
): ClaimRow[] {
  const gk = snapshots.get("guest-kernel");
  return [
    pvIo(snapshots.get("nic-compare"), t),
    guestIo(snapshots.get("v86-guest"), t),
    pvMmu(snapshots.get("hypercall-mmu"), t),
    pvclock(snapshots.get("timers"), t),
    exitsExpensive(gk, snapshots.get("trap-channel"), t),
    combined(gk, t),
    eptMost(gk, t),
  ];
}

const cell = (s: string): string => s.replace(/\|/g, "\\|").replace(/\n/g, " ");
const verdictCell = (v: Verdict): string =>
  v === "holds" ? "**holds**" : v === "fails" ? "**FAILS**" : "not measured yet";

/** The claims as a Markdown table (one row per claim). */
export function claimsTable(rows: readonly ClaimRow[]): string {
  return [
    "| # | claim | measured | holds when | verdict | source |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows.map(
      (r, i) =>
        `| ${i + 1} | ${cell(r.claim)} | ${cell(r.measured)} | ${cell(r.criterion)} | ${verdictCell(r.verdict)} | ${cell(r.source)} |`,
    ),
  ].join("\n");
}

/** `bench/results/claims.md`: the table with a short preface. */
export function claimsMarkdown(rows: readonly ClaimRow[], date: string): string {
  const count = (v: Verdict): number => rows.filter((r) => r.verdict === v).length;
  return `${[
    "# The lecture's claims, measured",
    "",
    `Written ${date} from the latest result of each suite in this directory (\`<suite>.json\`; the source column gives each suite and the date of its run). ` +
      'Each verdict is computed from those numbers against the threshold in the "holds when" column (`bench/src/claims.ts`); a claim whose suite has not measured it yet says so.',
    "",
    `${count("holds")} hold, ${count("fails")} fail, ${count("not measured yet")} not measured yet.`,
    "",
    claimsTable(rows),
  ].join("\n")}\n`;
}
