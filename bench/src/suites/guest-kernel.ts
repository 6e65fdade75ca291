/**
 * The guest kernel of `@pvkit/guest-kernel-pv` running the same lmbench-style workloads
 * under the lecture's three configurations — full emulation (shadow paging, HPET, emulated
 * PIC, RTL8139), hardware assist with PV I/O (EPT-like paging, LAPIC timer, virtio) and
 * full paravirtualization (PV MMU, PV timer and pvclock, event channels, virtio) — with
 * operations/s, exits, interrupts and notifications per operation, ratios against full
 * emulation, and a **modelled** time that prices every exit at a published VM-exit cost.
 *
 * Measurement: each (workload, configuration) runs once untimed (warm-up: V8 compiles the
 * paths), then `rounds` times; ops/s is the median with the range. Only the part of each
 * workload between its `measureStart`/`measureStop` is counted (setup such as ARP, the
 * partner process of the pipe test or the first touch of buffers is not). Time runs on a
 * `WarpClock`: real while the guest works, skipping its idle periods.
 *
 * Threaded rows: the same workloads and configurations in the threaded runtime
 * (`bootThreaded`: the guest kernel in a worker, every exit a trap-channel round trip to
 * the host thread), with the threaded parameters below (shorter: a cross-thread exit costs
 * about a microsecond), one warm-up and 3 timed repeats, plus a direct measurement of the
 * round trip per exit and the guest's allocation per exit.
 *
 * @module
 */

import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import {
  bootInProcess,
  CONFIG_NAMES,
  ExitOp,
  type GuestVm,
  HostMachine,
  InProcessCpu,
  type KernelConfig,
  resolveConfig,
  SharedClock,
  type WorkloadResult,
} from "@pvkit/guest-kernel-pv";
import { bootThreaded } from "@pvkit/guest-kernel-pv/node";
import { runTrapWorker } from "@pvkit/platform/node";
import { bundleWorker } from "../../../test-utils/bundle-worker.js";
import type { ResultCheck, ResultTable, Suite, SuiteOptions, SuiteResult } from "../suite.js";
import type { ExitProbeConfig, ExitProbeReport } from "./guest-kernel-exit-worker.js";
import { allocationPerChain } from "./split-queue.js";

/**
 * Cycles per exit for the modelled column: the VMRUN→post-VMRUN round trip measured on AMD
 * SVM under KVM, 1,344–1,376 cycles (LKML, Dec 2020, lkml.iu.edu/hypermail/linux/kernel/
 * 2012.2/00527.html; reference `xen-pv.md` §6, there called anecdotal). The same message
 * puts a whole `KVM_RUN` round trip to a user-space VMM at 2,528–2,576 cycles.
 */
export const EXIT_CYCLES = 1_360;
/** Clock of the modelled CPU (an assumption of the model, not a measurement). */
export const MODEL_GHZ = 3.0;
/** Modelled cost of one exit, ns. */
export const EXIT_NS = EXIT_CYCLES / MODEL_GHZ;

/** Targets of the issue. */
export const TARGETS = {
  /** full-pv exits/op × this ≤ full-emulation exits/op, for the MMU workloads. */
  pvMmuExitRatio: 10,
  /** full-pv frames/s ≥ this × full-emulation frames/s, 1514-byte bulk stream. */
  streamRatio: 20,
} as const;

/** One workload of the suite with its parameters. */
interface Item {
  readonly workload: string;
  readonly label: string;
  readonly params: Readonly<Record<string, number>>;
  readonly quick: Readonly<Record<string, number>>;
  /** Parameters of the threaded rows (defaults to `quick`). */
  readonly threaded?: Readonly<Record<string, number>>;
}

const ITEMS: readonly Item[] = [
  {
    workload: "fork-exit",
    label: "fork+exit (16 pages, 2+4 COW writes)",
    params: { iterations: 60 },
    quick: { iterations: 10 },
  },
  {
    workload: "exec",
    label: "exec-like build (8+2 pages)",
    params: { iterations: 60 },
    quick: { iterations: 10 },
  },
  {
    workload: "mmap",
    label: "mmap+touch+munmap 16 pages",
    params: { iterations: 60 },
    quick: { iterations: 10 },
  },
  {
    workload: "pagefault",
    label: "page-fault storm",
    params: { pages: 1024 },
    quick: { pages: 128 },
  },
  {
    workload: "pipe",
    label: "pipe ping-pong (64 B)",
    params: { roundTrips: 800 },
    quick: { roundTrips: 100 },
  },
  {
    workload: "gettimeofday",
    label: "gettimeofday",
    params: { iterations: 20_000 },
    quick: { iterations: 2_000 },
    threaded: { iterations: 2_000 },
  },
  {
    workload: "sleep",
    label: "sleep 50 µs",
    params: { iterations: 300 },
    quick: { iterations: 40 },
  },
  {
    workload: "net-rr",
    label: "net request/response (56 B echo)",
    params: { iterations: 300 },
    quick: { iterations: 40 },
  },
  {
    workload: "net-stream",
    label: "net bulk 1514 B frames",
    params: { frames: 3000, batch: 32 },
    quick: { frames: 400, batch: 32 },
    threaded: { frames: 1000, batch: 32 },
  },
  {
    workload: "disk-rand",
    label: "disk 4 KiB random r/w",
    params: { requests: 300 },
    quick: { requests: 40 },
  },
  {
    workload: "disk-seq",
    label: "disk 64 KiB sequential + flush",
    params: { blocks: 16 },
    quick: { blocks: 4 },
  },
];

/** The legacy-timer variant measured for the time workloads only (PIT instead of HPET). */
const PIT_CONFIG: KernelConfig = { mmu: "shadow", time: "pit", irq: "pic", net: "rtl8139" };
/**
 * A PVHVM-like mix (Linux on Xen HVM with PV drivers): EPT-like paging with the PV timer
 * and event channels, measured where hw-assist+pv-io still has emulated pieces.
 */
const PVHVM_CONFIG: KernelConfig = {
  mmu: "hap",
  time: "pv",
  irq: "evtchn",
  net: "virtio",
  blk: "virtio",
};
/** Which workloads the extra configurations run. */
const EXTRA: readonly { readonly config: KernelConfig; readonly workloads: readonly string[] }[] = [
  { config: PIT_CONFIG, workloads: ["gettimeofday", "sleep"] },
  { config: PVHVM_CONFIG, workloads: ["gettimeofday", "sleep", "net-rr", "disk-rand", "disk-seq"] },
];

/** One measured row. */
export interface Row {
  readonly workload: string;
  readonly config: string;
  readonly runtime: string;
  readonly ops: number;
  readonly opsPerSec: { readonly median: number; readonly min: number; readonly max: number };
  readonly nsPerOp: number;
  readonly exitsPerOp: number;
  readonly exitsByKindPerOp: Readonly<Record<string, number>>;
  readonly hypercallsPerOp: Readonly<Record<string, number>>;
  readonly interruptsPerOp: number;
  readonly notificationsPerOp: number;
  readonly contextSwitchesPerOp: number;
  readonly walkRefsPerOp: number;
  readonly modelledNsPerOp: number;
  readonly modelledOpsPerSec: number;
  readonly results: Readonly<Record<string, number | string | boolean>>;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1
    ? s[(s.length - 1) / 2]!
    : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const per = (n: number, ops: number): number => (ops > 0 ? n / ops : 0);
const round = (x: number, d: number): number => Number(x.toFixed(d));
const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n)
    ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : "∞";
const ratio = (a: number, b: number): number =>
  b === 0 ? (a === 0 ? 1 : Number.POSITIVE_INFINITY) : a / b;
const fmtRatio = (x: number): string =>
  Number.isFinite(x) ? `${fmt(x, x >= 10 ? 0 : 2)}×` : "∞ (0 exits)";

/** The page-table exits of a result (what EPT-like hardware removes). */
function mmuExits(r: Row): number {
  const k = r.exitsByKindPerOp;
  const h = r.hypercallsPerOp;
  return (
    (k.pte_write ?? 0) +
    (k.cr3_load ?? 0) +
    (k.invlpg ?? 0) +
    (k.tlb_flush ?? 0) +
    (k.page_fault ?? 0) +
    (h.mmu_update ?? 0) +
    (h.mmuext_op ?? 0) +
    (h.multicall ?? 0)
  );
}

async function measure(
  vm: GuestVm,
  item: Item,
  params: Readonly<Record<string, number>>,
  rounds: number,
): Promise<Row> {
  await vm.run(item.workload, params); // warm-up, untimed
  const runs: WorkloadResult[] = [];
  for (let i = 0; i < rounds; i++) runs.push(await vm.run(item.workload, params));
  const rates = runs.map((r) => r.ops / (r.elapsedNs / 1e9));
  const r = runs[0]!;
  const ops = r.ops;
  const byKind: Record<string, number> = {};
  for (const [k, n] of Object.entries(r.exitsByKind)) byKind[k] = round(per(n, ops), 4);
  const hc: Record<string, number> = {};
  for (const [k, n] of Object.entries(r.hypercalls)) hc[k] = round(per(n, ops), 4);
  const nsPerOp = median(runs.map((x) => x.elapsedNs / x.ops));
  const exitsPerOp = per(r.exits, ops);
  const modelledNsPerOp = nsPerOp + exitsPerOp * EXIT_NS;
  return {
    workload: item.workload,
    config: vm.config.name,
    runtime: vm.runtime,
    ops,
    opsPerSec: {
      median: Math.round(median(rates)),
      min: Math.round(Math.min(...rates)),
      max: Math.round(Math.max(...rates)),
    },
    nsPerOp: round(nsPerOp, 1),
    exitsPerOp: round(exitsPerOp, 4),
    exitsByKindPerOp: byKind,
    hypercallsPerOp: hc,
    interruptsPerOp: round(per(r.interrupts, ops), 4),
    notificationsPerOp: round(per(r.notifications, ops), 4),
    contextSwitchesPerOp: round(per(r.contextSwitches, ops), 4),
    walkRefsPerOp: round(per(r.walkRefs, ops), 2),
    modelledNsPerOp: round(modelledNsPerOp, 1),
    modelledOpsPerSec: Math.round(1e9 / modelledNsPerOp),
    results: r.results,
  };
}

/** Windows of the allocation measurement (32 rounds of 6 exits each, see `allocationPerChain`). */
const ALLOC_WINDOWS = 15;

/**
 * Bytes allocated per exit on the host's exit path (`InProcessCpu.exit` →
 * `HostMachine.exit`, the handler the threaded runtime's trap server will call), measured
 * as the split-queue suite measures allocation per chain (`allocationPerChain`: windows
 * below a scavenge, medians, the empty-window baseline subtracted): HPET counter reads, PIC
 * register writes, HLTs, #PF exits and page-table stores under shadow paging, and
 * `sched_op` hypercalls under PV; the best of three measurements after a long warm-up. An
 * object allocated per exit would show as ≥ 16 bytes/exit in every one of them.
 *
 * @returns bytes per exit, or null without `--expose-gc`
 */
function allocationPerExit(): { bytesPerExit: number | null; exitsPerRound: number } {
  const emu = new InProcessCpu(
    new HostMachine({ config: resolveConfig("full-emulation"), ramBytes: 16 << 20 }),
  );
  const pv = new InProcessCpu(
    new HostMachine({ config: resolveConfig("full-pv"), ramBytes: 16 << 20 }),
  );
  let i = 0;
  const round6 = (): void => {
    i = (i + 1) & 511;
    emu.exit(ExitOp.MMIO_READ, 0xfed0_00f0, 4, 0, 0, 0, 0); // HPET main counter
    emu.exit(ExitOp.PIO_WRITE, 0x21, 1, 0, 0, 0, 0); // PIC mask register
    emu.exit(ExitOp.HALT, 0, 0, 0, 0, 0, 0);
    emu.exit(ExitOp.PAGE_FAULT, 4096, 4, 0, 0, 0, 0);
    emu.exit(ExitOp.PTE_WRITE, 40 * 4096 + i * 8, i, 0, 0, 0, 0); // a store to a frame not shadowed
    pv.exit(ExitOp.HYPERCALL, 29, 0, 0, 0, 0, 0); // sched_op(SCHEDOP_yield)
  };
  // Warm well past tier-up (a loaded machine delays the optimizing compiler, whose code
  // would otherwise land on the heap inside the windows), then keep the best of 3.
  for (let k = 0; k < 200_000; k++) round6();
  let best: number | null = null;
  for (let k = 0; k < 3; k++) {
    const b = allocationPerChain(round6, 6, 6 * 32 * ALLOC_WINDOWS);
    if (b !== null) best = best === null ? b : Math.min(best, b);
  }
  return { bytesPerExit: best === null ? null : round(best, 4), exitsPerRound: 6 };
}

/** The threaded round trip per exit, measured directly (see `guest-kernel-exit-worker.ts`). */
interface ThreadedExitProbe {
  /** ns per HPET-read exit: median of the repeats. */
  readonly medianNs: number;
  /** Range of the repeats. */
  readonly minNs: number;
  readonly maxNs: number;
  /** Guest heap bytes per exit, or null. */
  readonly bytesPerExit: number | null;
  /** Load average (1 min) when measured. */
  readonly loadAverage: number;
}

/**
 * Round trip per exit in the threaded runtime: `ThreadedCpu.exit` in a worker reading the
 * HPET counter of a real full-emulation `HostMachine` served on this thread (async mode,
 * as `bootThreaded` serves), and the guest side's allocation per exit.
 */
async function threadedExitProbe(quick: boolean): Promise<ThreadedExitProbe> {
  const script = bundleWorker(
    fileURLToPath(new URL("./guest-kernel-exit-worker.ts", import.meta.url)),
  );
  const clock = SharedClock.create("manual");
  const host = new HostMachine({
    config: resolveConfig("full-emulation"),
    ramBytes: 16 << 20,
    shared: true,
    clock,
  });
  const cfg: ExitProbeConfig = {
    clock: clock.buffer,
    tscKhz: host.bootInfo.tscKhz,
    address: 0xfed0_00f0,
    calls: quick ? 5_000 : 10_000,
    repeats: 3,
    allocCalls: quick ? 4_096 : 8_192,
  };
  const loadAverage = loadavg()[0]!;
  let report: ExitProbeReport | null = null;
  const r = await runTrapWorker({
    script,
    handler: (op, a) => host.exit(op, a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!),
    mode: "async",
    workerData: cfg,
    stallMs: 30_000,
    budgetMs: 120_000,
    onMessage: (m) => {
      report = m as ExitProbeReport;
    },
  });
  if (r.error !== null) throw r.error;
  const rep = report as ExitProbeReport | null;
  if (rep === null) throw new Error("the exit probe sent no measurement");
  return {
    medianNs: round(median(rep.nsPerExit), 1),
    minNs: round(Math.min(...rep.nsPerExit), 1),
    maxNs: round(Math.max(...rep.nsPerExit), 1),
    bytesPerExit: rep.bytesPerExit === null ? null : round(rep.bytesPerExit, 4),
    loadAverage: round(loadAverage, 2),
  };
}

/** Threaded rows: every workload × preset in the threaded runtime. */
async function threadedRows(
  quick: boolean,
  log: (line: string) => void,
): Promise<{ rows: Row[]; seconds: number; loadAverage: number }> {
  const t0 = performance.now();
  const loadAverage = round(loadavg()[0]!, 2);
  const script = bundleWorker(
    fileURLToPath(new URL("../../../packages/guest-kernel-pv/src/worker.ts", import.meta.url)),
  );
  const rows: Row[] = [];
  for (const name of CONFIG_NAMES) {
    const vm = await bootThreaded({ config: name, clock: "warp", workerScript: script });
    try {
      for (const item of ITEMS) {
        if (item.workload.startsWith("disk-") && vm.config.blk === undefined) continue;
        const params = item.threaded ?? item.quick;
        const row = await measure(vm, item, params, quick ? 1 : THREADED_ROUNDS);
        rows.push(row);
        log(
          `guest-kernel ${item.workload} ${row.config} threaded: ${fmt(row.opsPerSec.median)} ops/s, ${fmt(row.exitsPerOp, 3)} exits/op`,
        );
      }
    } finally {
      await vm.close();
    }
  }
  return { rows, seconds: round((performance.now() - t0) / 1000, 2), loadAverage };
}

/** Timed repeats of each threaded row. */
const THREADED_ROUNDS = 3;

async function run(options: SuiteOptions): Promise<SuiteResult> {
  const rounds = options.quick ? 1 : 5;
  // Measured first, on a fresh heap: the workloads' guests make later heap readings noisy.
  const alloc = allocationPerExit();
  const rows: Row[] = [];
  const vms = new Map<string, GuestVm>();
  for (const name of CONFIG_NAMES)
    vms.set(name, await bootInProcess({ config: name, clock: "warp" }));
  const extras: { vm: GuestVm; workloads: readonly string[] }[] = [];
  for (const e of EXTRA) {
    extras.push({
      vm: await bootInProcess({ config: e.config, clock: "warp" }),
      workloads: e.workloads,
    });
  }
  for (const item of ITEMS) {
    const params = options.quick ? item.quick : item.params;
    const targets = [...vms.values()];
    for (const e of extras) if (e.workloads.includes(item.workload)) targets.push(e.vm);
    for (const vm of targets) {
      const needsBlk = item.workload.startsWith("disk-");
      if (needsBlk && vm.config.blk === undefined) continue;
      const row = await measure(vm, item, params, rounds);
      rows.push(row);
      options.log(
        `guest-kernel ${item.workload} ${row.config}: ${fmt(row.opsPerSec.median)} ops/s, ${fmt(row.exitsPerOp, 3)} exits/op`,
      );
    }
  }
  const probe = await threadedExitProbe(options.quick);
  options.log(
    `guest-kernel threaded exit: ${fmt(probe.medianNs, 0)} ns/exit, ${probe.bytesPerExit ?? "?"} B/exit (guest side)`,
  );
  const threaded = await threadedRows(options.quick, options.log);
  rows.push(...threaded.rows);
  const find = (w: string, c: string, runtime = "in-process"): Row | undefined =>
    rows.find((r) => r.workload === w && r.config === c && r.runtime === runtime);

  const label = (w: string): string => ITEMS.find((i) => i.workload === w)?.label ?? w;
  const mainRows: string[][] = [];
  for (const r of rows) {
    const base = find(r.workload, "full-emulation", r.runtime);
    mainRows.push([
      label(r.workload),
      r.config,
      r.runtime,
      fmt(r.opsPerSec.median),
      `${fmt(r.opsPerSec.min)}–${fmt(r.opsPerSec.max)}`,
      fmt(r.exitsPerOp, 3),
      fmt(r.interruptsPerOp, 3),
      fmt(r.notificationsPerOp, 3),
      base === undefined
        ? "n/a (no emulated disk)"
        : fmtRatio(ratio(base.exitsPerOp, r.exitsPerOp)),
      base === undefined ? "n/a" : `${fmt(ratio(r.opsPerSec.median, base.opsPerSec.median), 2)}×`,
      fmt(r.modelledOpsPerSec),
      base === undefined ? "n/a" : `${fmt(ratio(r.modelledOpsPerSec, base.modelledOpsPerSec), 2)}×`,
    ]);
  }
  const breakdown: string[][] = rows.map((r) => [
    label(r.workload),
    `${r.config}${r.runtime === "threaded" ? " (threaded)" : ""}`,
    Object.entries(r.exitsByKindPerOp)
      .map(([k, n]) => `${k} ${fmt(n, 3)}`)
      .join(", ") || "—",
    Object.entries(r.hypercallsPerOp)
      .map(([k, n]) => `${k} ${fmt(n, 3)}`)
      .join(", ") || "—",
    fmt(r.contextSwitchesPerOp, 2),
    fmt(r.walkRefsPerOp, 1),
  ]);
  const tables: ResultTable[] = [
    {
      title:
        "Workload × configuration × runtime: ops/s (median of rounds, range), exits, interrupts and notifications per operation, ratios vs full-emulation, and modelled ops/s",
      columns: [
        "workload",
        "configuration",
        "runtime",
        "ops/s",
        "range",
        "exits/op",
        "intr/op",
        "notif/op",
        "exits: × fewer than full-emu",
        "ops/s vs full-emu",
        `modelled ops/s (${EXIT_CYCLES} cyc/exit @ ${MODEL_GHZ} GHz)`,
        "modelled vs full-emu",
      ],
      rows: mainRows,
    },
    {
      title:
        "Where the exits come from (per operation): exit kinds, hypercalls, context switches, page-walk memory references",
      columns: [
        "workload",
        "configuration",
        "exits by kind",
        "hypercalls",
        "ctx sw/op",
        "walk refs/op",
      ],
      rows: breakdown,
    },
  ];

  const checks: ResultCheck[] = [];
  for (const w of ["fork-exit", "mmap", "pagefault"]) {
    const emu = find(w, "full-emulation")!;
    const pv = find(w, "full-pv")!;
    const hap = find(w, "hw-assist+pv-io")!;
    const x = (pv.exitsPerOp * TARGETS.pvMmuExitRatio) / Math.max(emu.exitsPerOp, 1e-9);
    checks.push({
      name: `${w}: full-pv exits/op × ${TARGETS.pvMmuExitRatio} ≤ full-emulation exits/op`,
      value: round(x, 3),
      limit: 1,
      unit: "×",
      pass: x <= 1,
    });
    checks.push({
      name: `${w}: hw-assist+pv-io makes no page-table exit`,
      value: round(mmuExits(hap), 4),
      limit: 0,
      unit: "exits/op",
      pass: mmuExits(hap) === 0,
    });
  }
  const gtodPv = find("gettimeofday", "full-pv")!;
  checks.push({
    name: "gettimeofday: pvclock exits/op",
    value: gtodPv.exitsPerOp,
    limit: 0,
    unit: "exits/op",
    pass: gtodPv.exitsPerOp === 0,
  });
  for (const c of ["full-emulation", resolveConfig(PIT_CONFIG).name]) {
    const r = find("gettimeofday", c)!;
    // "≥ 1 exit per read" as a ceiling: 1 − exits/op must not exceed 0.
    const v = round(1 - r.exitsPerOp, 4);
    checks.push({
      name: `gettimeofday: 1 − ${c === "full-emulation" ? "HPET" : "PIT"} exits/op ≤ 0 (at least one exit per read)`,
      value: v,
      limit: 0,
      unit: "exits/op",
      pass: v <= 0,
    });
  }
  const sEmu = find("net-stream", "full-emulation")!;
  const sPv = find("net-stream", "full-pv")!;
  const inproc = (TARGETS.streamRatio * sEmu.opsPerSec.median) / sPv.opsPerSec.median;
  checks.push({
    name: `net bulk 1514 B: ${TARGETS.streamRatio} × full-emulation frames/s ≤ full-pv frames/s (measured in-process; the issue sets this target for the threaded runtime)`,
    value: round(inproc, 3),
    limit: 1,
    unit: "×",
    pass: inproc <= 1,
  });
  const tEmu = find("net-stream", "full-emulation", "threaded");
  const tPv = find("net-stream", "full-pv", "threaded");
  let streamThreaded = Number.NaN;
  if (tEmu !== undefined && tPv !== undefined) {
    streamThreaded = (TARGETS.streamRatio * tEmu.opsPerSec.median) / tPv.opsPerSec.median;
    checks.push({
      name: `threaded runtime, net bulk 1514 B: ${TARGETS.streamRatio} × full-emulation (RTL8139) frames/s ≤ full-pv frames/s`,
      value: round(streamThreaded, 3),
      limit: 1,
      unit: "×",
      pass: streamThreaded <= 1,
    });
  }
  if (probe.bytesPerExit !== null) {
    checks.push({
      name: "threaded runtime: the guest's exit path (ThreadedCpu → TrapPort.call) allocates nothing per exit",
      value: probe.bytesPerExit,
      limit: 1,
      unit: "bytes/exit",
      pass: probe.bytesPerExit <= 1,
    });
  }
  if (alloc.bytesPerExit !== null) {
    checks.push({
      name: "host exit path allocates nothing per exit (6 kinds of exit; one object per exit would be ≥ 16 B)",
      value: alloc.bytesPerExit,
      limit: 1,
      unit: "bytes/exit",
      pass: alloc.bytesPerExit <= 1,
    });
  }

  const notes = lectureNotes(rows, find);
  notes.push(threadedNote(find, probe, threaded, streamThreaded));
  if (alloc.bytesPerExit === null) {
    notes.push(
      "Allocation per exit was not measured: run node with --expose-gc (as `pnpm bench` does).",
    );
  }
  return {
    name: "guest-kernel",
    title:
      "One guest kernel, three configurations: full emulation vs hardware assist + PV I/O vs full PV",
    description:
      "The same guest kernel code (`@pvkit/guest-kernel-pv`: page allocator, 4-level page tables, fork with copy-on-write, exec-like builds, mmap, demand faults, a tickless scheduler, pipes, a small IPv4 stack, block I/O) runs lmbench-style workloads with its `pv_ops` chosen at boot: **full-emulation** = shadow paging (every store to a shadowed table, CR3 load, INVLPG and #PF exits), HPET, an emulated 8259 PIC with an EOI per interrupt, the RTL8139 with an 8139too-like driver, no disk (there is no emulated disk yet); **hw-assist+pv-io** = an EPT-like MMU (no page-table exit; a TLB miss walks two dimensions, 24 references), LAPIC timer with the TSC as clocksource, the PIC, virtio-net and virtio-blk on virtio-mmio; **full-pv** = Xen PV MMU (`mmu_update` batches of 32 requests, Linux's `MC_ARGS`, flushes riding in multicalls), `set_timer_op` + pvclock, event channels (no EOI), virtio. " +
      `A page fault exits under shadow paging (the #PF intercept) and under PV (Xen bounces every guest #PF, SOSP'03 §3.3), not with hardware assist. The gettimeofday and sleep rows add ${resolveConfig(PIT_CONFIG).name} (the i8254 PIT as clocksource and clock event). ` +
      `Runtime: in-process (an exit is a function call: counts are exact, time is optimistic), and threaded (\`bootThreaded\`: the kernel in a worker thread, guest RAM in a SharedArrayBuffer, every exit a synchronous trap-channel round trip to the host thread; its rows use the shorter threaded parameters, 1 warm-up + ${THREADED_ROUNDS} repeats, and their ratios are against threaded full-emulation). **Modelled** ops/s adds ${EXIT_CYCLES} cycles per exit at an assumed ${MODEL_GHZ} GHz (${fmt(EXIT_NS, 0)} ns) to the measured in-process time per operation: the VMRUN→post-VMRUN round trip of 1,344–1,376 cycles measured under KVM on AMD SVM (LKML, Dec 2020, lkml.iu.edu/hypermail/linux/kernel/2012.2/00527.html, cited in shared/reference/xen-pv.md §6 as anecdotal); a whole exit to a user-space VMM (KVM_RUN round trip) was 2,528–2,576 cycles in the same measurement, so device exits are under-priced here. ` +
      `Ratios are full-emulation ÷ this configuration ("× fewer"), and this configuration ÷ full-emulation for ops/s. Each workload runs once untimed, then ${rounds} time(s); ops/s is the median with the range.`,
    tables,
    checks,
    notes,
    data: {
      exitCycles: EXIT_CYCLES,
      modelGhz: MODEL_GHZ,
      rounds,
      rows,
      allocation: alloc,
      threaded: {
        rounds: options.quick ? 1 : THREADED_ROUNDS,
        seconds: threaded.seconds,
        loadAverage: threaded.loadAverage,
        exitProbe: probe,
      },
    },
  };
}

function pvhvmNote(
  lost: readonly string[],
  find: (w: string, c: string) => Row | undefined,
): string {
  const name = resolveConfig(PVHVM_CONFIG).name;
  const parts = lost
    .map((w) => [w, find(w, name), find(w, "full-pv")] as const)
    .filter((x): x is readonly [string, Row, Row] => x[1] !== undefined && x[2] !== undefined)
    .map(([w, h, p]) => `${w} ${fmt(h.exitsPerOp, 2)} (full-pv ${fmt(p.exitsPerOp, 2)})`);
  if (parts.length === 0) return "";
  return `The PVHVM-like mix ${name} — EPT-like paging with the PV timer and event channels — closes that gap: ${parts.join(", ")} exits/op, with no page-table exit.`;
}

function lectureNotes(
  rows: readonly Row[],
  find: (w: string, c: string) => Row | undefined,
): string[] {
  const notes: string[] = [];
  const io = ["net-rr", "net-stream"].map((w) => {
    const emu = find(w, "full-emulation")!;
    const vio = find(w, "hw-assist+pv-io")!;
    return `${w}: ${fmt(emu.exitsPerOp, 2)} → ${fmt(vio.exitsPerOp, 3)} exits/op (${fmtRatio(ratio(emu.exitsPerOp, vio.exitsPerOp))} fewer), ${fmt(ratio(vio.opsPerSec.median, emu.opsPerSec.median), 2)}× ops/s in-process, ${fmt(ratio(vio.modelledOpsPerSec, emu.modelledOpsPerSec), 2)}× modelled`;
  });
  notes.push(
    `**"Paravirtual devices cut I/O cost" — holds.** Same kernel, RTL8139 → virtio: ${io.join("; ")}. The disk half cannot be compared: there is no emulated disk (virtio-blk costs ${fmt(find("disk-rand", "full-pv")?.exitsPerOp ?? 0, 2)} exits per 4 KiB request with event channels, ${fmt(find("disk-rand", "hw-assist+pv-io")?.exitsPerOp ?? 0, 2)} with the PIC's EOI), so the "≥ 10× fewer exits per 4 KiB request" target is not evaluated.`,
  );
  const mmuW = ["fork-exit", "exec", "mmap", "pagefault", "pipe"];
  const workloads = [...new Set(rows.map((r) => r.workload))];
  const presets: readonly string[] = CONFIG_NAMES;
  const fewest = (w: string): number =>
    Math.min(
      ...rows
        .filter((r) => r.workload === w && presets.includes(r.config))
        .map((r) => r.exitsPerOp),
    );
  const hwBest = workloads.filter((w) => find(w, "hw-assist+pv-io")!.exitsPerOp <= fewest(w));
  const lost = workloads.filter((w) => !hwBest.includes(w));
  const why = (w: string): string =>
    `${w} ${fmt(find(w, "hw-assist+pv-io")!.exitsPerOp, 2)} vs full-pv ${fmt(find(w, "full-pv")?.exitsPerOp ?? 0, 2)}`;
  const timerLost = lost.filter((w) => w === "sleep");
  const eoiLost = lost.filter((w) => w !== "sleep");
  notes.push(
    `**"Combined virtualization takes the best of both worlds" — holds for the MMU and the I/O data path, not for what stays emulated.** hw-assist+pv-io has the fewest exits/op (or ties) in ${hwBest.length} of ${workloads.length} workloads (${hwBest.join(", ")}): no page-table exit at all, and virtio's notifications. It loses to full PV only where an emulated piece remains: ${
      [
        ...(timerLost.length > 0
          ? [
              `the LAPIC timer (${timerLost.map(why).join("; ")}: a TMICT write, HLT and a LAPIC EOI against set_timer_op + SCHEDOP_block)`,
            ]
          : []),
        ...(eoiLost.length > 0
          ? [
              `the interrupt controller's EOI, one exit per interrupt that event channels do not need (${eoiLost.map(why).join("; ")})`,
            ]
          : []),
      ].join("; and ") || "nowhere"
    }. ${pvhvmNote(lost, find)}`,
  );
  const gainOf = (w: string, modelled: boolean): number => {
    const sh = find(w, "full-emulation");
    const hap = find(w, "hw-assist+pv-io");
    if (sh === undefined || hap === undefined) return Number.NaN;
    return modelled
      ? ratio(hap.modelledOpsPerSec, sh.modelledOpsPerSec) - 1
      : ratio(hap.opsPerSec.median, sh.opsPerSec.median) - 1;
  };
  const others = workloads.filter(
    (w) => !mmuW.includes(w) && find(w, "full-emulation") !== undefined,
  );
  const meanGain = (ws: readonly string[], modelled: boolean): number =>
    ws.reduce((acc, w) => acc + gainOf(w, modelled), 0) / Math.max(1, ws.length);
  const gains = mmuW.map(
    (w) => `${w} +${fmt(gainOf(w, false) * 100, 0)}% (modelled +${fmt(gainOf(w, true) * 100, 0)}%)`,
  );
  notes.push(
    `**"MMU-heavy tests gain most from EPT-like hardware assist (up to 48% in VMware's study)" — holds: the MMU workloads gain the most.** EPT-like vs shadow paging, ops/s: ${gains.join("; ")}; mean +${fmt(meanGain(mmuW, false) * 100, 0)}% (modelled +${fmt(meanGain(mmuW, true) * 100, 0)}%) against +${fmt(meanGain(others, false) * 100, 0)}% (modelled +${fmt(meanGain(others, true) * 100, 0)}%) for the other workloads, whose difference comes from the timer and the NIC instead. VMware measured up to 48% on MMU-intensive benchmarks and up to 600% on MMU-intensive microbenchmarks (Intel EPT, 2009; reference §6). These are microbenchmarks and in-process times are this JavaScript model's: shadow paging pays for every trapped store and for re-shadowing the whole tree on each CR3 load, while EPT's cost — a two-dimensional walk of 24 memory references per TLB miss instead of 4 (the walk refs/op column) — is counted but not priced.`,
  );
  const ratios = ["fork-exit", "mmap", "pagefault"].map(
    (w) =>
      `${w} ${fmtRatio(ratio(find(w, "full-emulation")!.exitsPerOp, find(w, "full-pv")!.exitsPerOp))}`,
  );
  notes.push(
    `**Where the "full-pv ≥ 10× fewer exits than full-emulation" target fails, and why** (${ratios.join(", ")}): PV batching wins only where many entries change at once — write-protecting a parent at fork, a munmap (32 clears per mmu_update against one trap each). A demand fault costs two exits in both (PV: Xen's #PF bounce + one mmu_update; shadow: the #PF intercept + one trapped store, + an INVLPG on copy-on-write), and this shadow MMU shadows a new address space in the one exit of its first CR3 load, so building a child or an exec image is free of traps. The work hidden in that exit shows in ops/s instead (shadow's re-shadowing on every CR3 load).`,
  );
  return notes;
}

function threadedNote(
  find: (w: string, c: string, runtime?: string) => Row | undefined,
  probe: ThreadedExitProbe,
  threaded: { readonly seconds: number; readonly loadAverage: number },
  streamThreaded: number,
): string {
  const rate = (w: string, c: string, rt: string): string => {
    const r = find(w, c, rt);
    return r === undefined ? "n/a" : fmt(r.opsPerSec.median);
  };
  const emu = find("net-stream", "full-emulation", "threaded");
  const pv = find("net-stream", "full-pv", "threaded");
  const gtodIn = find("gettimeofday", "full-emulation");
  const gtodTh = find("gettimeofday", "full-emulation", "threaded");
  const perExit =
    gtodIn !== undefined && gtodTh !== undefined && gtodTh.exitsPerOp > 0
      ? (gtodTh.nsPerOp - gtodIn.nsPerOp) / gtodTh.exitsPerOp
      : Number.NaN;
  const stream =
    emu !== undefined && pv !== undefined
      ? `full-emulation (RTL8139) ${fmt(emu.opsPerSec.median)} frames/s at ${fmt(emu.exitsPerOp, 2)} exits/frame, full-pv (virtio) ${fmt(pv.opsPerSec.median)} frames/s at ${fmt(pv.exitsPerOp, 3)} exits/frame: ${fmt(ratio(pv.opsPerSec.median, emu.opsPerSec.median), 1)}× (in-process ${rate("net-stream", "full-pv", "in-process")} vs ${rate("net-stream", "full-emulation", "in-process")} frames/s)`
      : "not measured";
  return (
    `**Threaded runtime** (${fmt(threaded.seconds, 1)} s for its rows, load average ${threaded.loadAverage} on 2 CPUs at their start). ` +
    `A cross-thread exit measured directly — ThreadedCpu.exit in the worker reading the HPET counter of a full-emulation HostMachine served on this thread in async mode — costs ${fmt(probe.medianNs, 0)} ns (range ${fmt(probe.minNs, 0)}–${fmt(probe.maxNs, 0)}, load ${probe.loadAverage}), ` +
    `${probe.bytesPerExit === null ? "allocation not measured" : `${probe.bytesPerExit} B allocated per exit on the guest side`}; within the workloads, gettimeofday under full-emulation (1 HPET read per call) costs ${Number.isFinite(perExit) ? fmt(perExit, 0) : "n/a"} ns more per exit than in-process. ` +
    `Exit, interrupt and notification counts do not depend on the runtime (the package's tests assert equal counts for equal parameters; the threaded rows here use shorter parameters, so per-operation figures may differ where setup is amortized). ` +
    `**"Threaded, net bulk 1514 B: full-pv frames/s ≥ ${TARGETS.streamRatio}× full-emulation" — ${Number.isFinite(streamThreaded) ? (streamThreaded <= 1 ? "holds" : "misses") : "not measured"}:** ${stream}. ` +
    "Every RTL8139 frame costs its port and register exits (TSD/TSAD writes, ISR reads and acknowledgements, the PIC's EOI), each now a real round trip, while virtio batches frames per notification; where the ratio stays under the target, the JavaScript device models and the network stack still dominate a virtio frame's time, not its exits. " +
    `**"Disk 4 KiB: ≥ 10× fewer exits per request with virtio" — not evaluated:** there is no emulated disk to compare against (virtio-blk 4 KiB requests cost ${fmt(find("disk-rand", "full-pv", "threaded")?.exitsPerOp ?? Number.NaN, 2)} exits each with event channels and ${fmt(find("disk-rand", "hw-assist+pv-io", "threaded")?.exitsPerOp ?? Number.NaN, 2)} with the PIC, threaded as in-process).`
  );
}

/** The registered suite. */
export const guestKernelSuite: Suite = {
  name: "guest-kernel",
  main: true,
  summary:
    "one guest kernel under full emulation, hw-assist + PV I/O and full PV: ops/s, exits/interrupts/notifications per op, modelled time",
  run,
};
