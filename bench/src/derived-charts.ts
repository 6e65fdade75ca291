/**
 * Charts for suites that do not return their own (`SuiteResult.charts`), built from their
 * `data` through the shapes documented in `claims.ts` — today `guest-kernel`,
 * `trap-channel` and `v86-guest`; a suite that starts returning `charts` takes over — and
 * the main job's headline chart, assembled from the charts of the suites that ran.
 *
 * Every builder checks the fields it reads and returns no chart rather than throwing
 * when a suite's data has changed shape.
 *
 * @module
 */

import type { ChartPoint, ChartSeries, ChartSpec, ConfigKey } from "./chart-spec.js";
import { guestKernelRows } from "./claims.js";
import type { SuiteResult } from "./suite.js";

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object";
const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/** The colour family of a guest-kernel configuration name. */
export function configKeyOf(name: string): ConfigKey {
  if (name === "full-emulation" || name === "hw-assist+pv-io" || name === "full-pv") return name;
  if (name.includes("mmu=shadow")) return "emulation-variant";
  if (name.includes("mmu=hap") && name.includes("time=pv")) return "pvhvm";
  if (name.includes("mmu=pv")) return "pv-variant";
  return "other";
}

const CONFIG_LABELS: Readonly<Record<string, string>> = {
  "full-emulation": "full emulation (shadow MMU, HPET, PIC, RTL8139)",
  "hw-assist+pv-io": "hw-assist + PV I/O (EPT-like MMU, LAPIC, virtio)",
  "full-pv": "full PV (PV MMU, PV timer, event channels, virtio)",
};

/** Series for the configurations of some rows, one per colour family (the first name of a family wins). */
function configSeries(names: readonly string[]): {
  series: ChartSeries[];
  keyOf: Map<string, string>;
} {
  const order: ConfigKey[] = [
    "full-emulation",
    "emulation-variant",
    "hw-assist+pv-io",
    "pvhvm",
    "full-pv",
    "pv-variant",
    "other",
  ];
  const series: ChartSeries[] = [];
  const keyOf = new Map<string, string>();
  for (const name of [...new Set(names)]) {
    const config = configKeyOf(name);
    if (series.some((s) => s.config === config)) continue;
    series.push({ key: name, label: CONFIG_LABELS[name] ?? name, config });
    keyOf.set(name, name);
  }
  series.sort((a, b) => order.indexOf(a.config) - order.indexOf(b.config));
  return { series, keyOf };
}

/** guest-kernel: exits/op (log), ops/s (log) and configuration ÷ full emulation. */
export function guestKernelCharts(data: unknown): ChartSpec[] {
  const rows = guestKernelRows(data);
  if (rows.length === 0) return [];
  const { series, keyOf } = configSeries(rows.map((r) => r.config));
  const runtimes = [...new Set(rows.map((r) => r.runtime))];
  const facet = runtimes.length > 1 ? { title: "runtime", order: runtimes } : undefined;
  const workloads = [...new Set(rows.map((r) => r.workload))];
  const exits: ChartPoint[] = [];
  const rates: ChartPoint[] = [];
  const ratios: ChartPoint[] = [];
  const raw = isObject(data) && Array.isArray(data.rows) ? (data.rows as unknown[]) : [];
  for (const r of rows) {
    const key = keyOf.get(r.config);
    if (key === undefined) continue;
    const f = facet === undefined ? {} : { facet: r.runtime };
    const full = raw.find(
      (q) =>
        isObject(q) &&
        q.workload === r.workload &&
        q.config === r.config &&
        q.runtime === r.runtime,
    ) as Record<string, unknown> | undefined;
    const ops = full?.opsPerSec as Record<string, unknown> | undefined;
    const noise =
      ops !== undefined && isNum(ops.min) && isNum(ops.max) && r.opsPerSec.median > 0
        ? (ops.max - ops.min) / 2 / r.opsPerSec.median
        : undefined;
    exits.push({ series: key, category: r.workload, value: r.exitsPerOp, ...f });
    rates.push({
      series: key,
      category: r.workload,
      value: r.opsPerSec.median,
      ...f,
      ...(noise === undefined ? {} : { noise }),
    });
    const emu = rows.find(
      (q) => q.workload === r.workload && q.runtime === r.runtime && q.config === "full-emulation",
    );
    if (emu === undefined || r.config === "full-emulation") continue;
    const category = runtimes.length > 1 ? `${r.workload} (${r.runtime})` : r.workload;
    if (emu.exitsPerOp > 0)
      ratios.push({
        series: key,
        category,
        facet: "exits per operation",
        value: r.exitsPerOp / emu.exitsPerOp,
      });
    ratios.push({
      series: key,
      category,
      facet: "ops/s (measured)",
      value: r.opsPerSec.median / emu.opsPerSec.median,
      better: "higher",
    });
    const modelled = full?.modelledOpsPerSec;
    const emuFull = raw.find(
      (q) =>
        isObject(q) &&
        q.workload === r.workload &&
        q.config === "full-emulation" &&
        q.runtime === r.runtime,
    ) as Record<string, unknown> | undefined;
    if (isNum(modelled) && isNum(emuFull?.modelledOpsPerSec) && emuFull.modelledOpsPerSec > 0)
      ratios.push({
        series: key,
        category,
        facet: "ops/s (modelled exit cost)",
        value: modelled / emuFull.modelledOpsPerSec,
        better: "higher",
      });
  }
  const how =
    "one guest kernel (@pvkit/guest-kernel-pv), lmbench-style workloads; exits counted exactly";
  const category = { title: "workload", order: workloads };
  return [
    {
      id: "exits",
      title: "Guest kernel: exits per operation under the three configurations",
      subtitle: [how, "fewer is better; 0 = no exit; no bar = not run (no emulated disk)"],
      category,
      ...(facet === undefined ? {} : { facet }),
      value: {
        title: "exits per operation",
        unit: "exits/op",
        scale: "log",
        better: "lower",
        noise: 0.02,
      },
      series,
      points: exits,
      rules: [{ value: 1, label: "1 exit/op" }],
    },
    {
      id: "rate",
      title: "Guest kernel: operations per second under the three configurations",
      subtitle: [
        `${how}; in-process an exit is a function call, threaded a round trip to the host's thread`,
        "more is better",
      ],
      category,
      ...(facet === undefined ? {} : { facet }),
      value: {
        title: "operations per second",
        unit: "ops/s",
        scale: "log",
        better: "higher",
        noise: 0.1,
      },
      series,
      points: rates,
    },
    {
      id: "ratio",
      title: "Guest kernel: each configuration ÷ full emulation",
      subtitle: [
        "exits: below 1× = fewer exits than full emulation (0 = none); ops/s: above 1× = faster",
        "modelled = measured time + every exit priced at the suite's published VM-exit cost (labelled, not measured)",
      ],
      category: { title: "workload" },
      facet: {
        title: "metric",
        order: ["exits per operation", "ops/s (measured)", "ops/s (modelled exit cost)"],
      },
      value: { title: "÷ full emulation", unit: "×", scale: "log", better: "lower", noise: 0.1 },
      legendTitle: "numerator",
      series: series.filter((s) => s.config !== "full-emulation"),
      points: ratios,
      rules: [{ value: 1, label: "1×" }],
    },
  ];
}

/** trap-channel: ns per exit (log) and × in-process, per host wait mode and spin policy. */
export function trapChannelCharts(data: unknown): ChartSpec[] {
  const rows = (Array.isArray(data) ? data : []).filter(
    (r): r is Record<string, unknown> & { medianNs: number } =>
      isObject(r) &&
      typeof r.runtime === "string" &&
      typeof r.spin === "string" &&
      isNum(r.medianNs),
  );
  const inproc = rows.find((r) => r.runtime === "in-process");
  if (rows.length === 0) return [];
  const categoryOf = (r: Record<string, unknown>): string =>
    r.runtime === "in-process"
      ? "in-process (a function call)"
      : r.spin === "adaptive"
        ? "spin adaptive (default)"
        : r.spin === "fixed"
          ? "spin fixed"
          : "no spin: futex sleep + wake each way";
  const seriesOf = (r: Record<string, unknown>): string =>
    r.runtime === "in-process" ? "in-process" : r.host === "async" ? "async" : "blocking";
  const series: ChartSeries[] = [
    { key: "in-process", label: "in-process", config: "in-process" },
    { key: "blocking", label: "threaded, host blocks in Atomics.wait", config: "threaded" },
    { key: "async", label: "threaded, host awaits Atomics.waitAsync", config: "threaded-variant" },
  ];
  const noiseOf = (r: (typeof rows)[number]): number | undefined => {
    const xs = Array.isArray(r.nsPerExit) ? (r.nsPerExit as unknown[]).filter(isNum) : [];
    return xs.length > 1 ? (Math.max(...xs) - Math.min(...xs)) / 2 / r.medianNs : undefined;
  };
  const point = (r: (typeof rows)[number], value: number): ChartPoint => {
    const noise = noiseOf(r);
    return {
      series: seriesOf(r),
      category: categoryOf(r),
      value,
      ...(noise === undefined ? {} : { noise }),
    };
  };
  const order = [
    "in-process (a function call)",
    "spin adaptive (default)",
    "spin fixed",
    "no spin: futex sleep + wake each way",
  ];
  const how =
    "guest in a worker_thread, host in the main thread; the guest times its own exits (median over repeats)";
  const charts: ChartSpec[] = [
    {
      id: "ns",
      title: "Cost of one exit: in-process call vs cross-thread round trip",
      subtitle: [how, "less is better"],
      category: { title: "how the two sides wait", order },
      value: {
        title: "time per exit",
        unit: "ns/exit",
        scale: "log",
        better: "lower",
        noise: 0.15,
      },
      series,
      points: rows.map((r) => point(r, r.medianNs)),
    },
  ];
  if (inproc !== undefined && inproc.medianNs > 0) {
    charts.push({
      id: "ratio",
      title: "Cost of one exit ÷ an in-process exit",
      subtitle: [how, "1× = as cheap as a function call"],
      category: { title: "how the two sides wait", order },
      value: { title: "÷ in-process exit", unit: "×", scale: "log", better: "lower", noise: 0.15 },
      series,
      points: rows.filter((r) => r !== inproc).map((r) => point(r, r.medianNs / inproc.medianNs)),
      rules: [{ value: 1, label: "1× (in-process)" }],
    });
  }
  return charts;
}

/** v86-guest: exits per unit of work (log), MiB/s as the guest measured it, and virtio ÷ emulated. */
export function v86GuestCharts(data: unknown): ChartSpec[] {
  if (!isObject(data)) return [];
  const disk = Array.isArray(data.disk) ? (data.disk as unknown[]).filter(isObject) : [];
  const net = isObject(data.net) ? data.net : {};
  const exits: ChartPoint[] = [];
  const rates: ChartPoint[] = [];
  const ratios: ChartPoint[] = [];
  const MiB = 1 << 20;
  const pair = (
    what: string,
    emu: number | undefined,
    pv: number | undefined,
    list: ChartPoint[],
    facet: string,
    better: "higher" | "lower",
  ) => {
    if (emu !== undefined) list.push({ series: "emulated", category: what, value: emu });
    if (pv !== undefined) list.push({ series: "pv", category: what, value: pv });
    if (emu !== undefined && pv !== undefined && emu > 0)
      ratios.push({ series: "pv", category: what, facet, value: pv / emu, better });
  };
  for (const op of ["read", "write"]) {
    const perMiB = (d: Record<string, unknown> | undefined): number | undefined =>
      d !== undefined && isNum(d.exits) && isNum(d.bytes) && d.bytes > 0
        ? d.exits / (d.bytes / MiB)
        : undefined;
    const rate = (d: Record<string, unknown> | undefined): number | undefined =>
      d !== undefined && isNum(d.bytes) && isNum(d.seconds) && d.seconds > 0
        ? d.bytes / MiB / d.seconds
        : undefined;
    const ide = disk.find((d) => d.disk === "ide" && d.op === op);
    const vio = disk.find((d) => d.disk === "virtio-blk" && d.op === op);
    pair(`dd ${op} 16 MiB (exits per MiB)`, perMiB(ide), perMiB(vio), exits, "exits", "lower");
    pair(`dd ${op} 16 MiB`, rate(ide), rate(vio), rates, "MiB/s (guest-measured)", "higher");
  }
  const netRun = (nic: string, k: string): Record<string, unknown> | undefined => {
    const n = net[nic];
    return isObject(n) && isObject(n[k]) ? (n[k] as Record<string, unknown>) : undefined;
  };
  const perFrame = (r: Record<string, unknown> | undefined): number | undefined =>
    r !== undefined &&
    isNum(r.exits) &&
    isNum(r.txFrames) &&
    isNum(r.rxFrames) &&
    r.txFrames + r.rxFrames > 0
      ? r.exits / (r.txFrames + r.rxFrames)
      : undefined;
  pair(
    "ping flood (exits per frame)",
    perFrame(netRun("rtl8139", "flood")),
    perFrame(netRun("virtio", "flood")),
    exits,
    "exits",
    "lower",
  );
  pair(
    "TCP 4 MiB (exits per frame)",
    perFrame(netRun("rtl8139", "bulk")),
    perFrame(netRun("virtio", "bulk")),
    exits,
    "exits",
    "lower",
  );
  const tcp = (r: Record<string, unknown> | undefined): number | undefined =>
    r !== undefined && isNum(r.tcpBytes) && isNum(r.seconds) && r.seconds > 0
      ? r.tcpBytes / MiB / r.seconds
      : undefined;
  pair(
    "TCP 4 MiB",
    tcp(netRun("rtl8139", "bulk")),
    tcp(netRun("virtio", "bulk")),
    rates,
    "MiB/s (guest-measured)",
    "higher",
  );
  if (exits.length === 0) return [];
  const series: ChartSeries[] = [
    {
      key: "emulated",
      label: "emulated device (v86's IDE, pvkit's RTL8139)",
      config: "full-emulation",
    },
    { key: "pv", label: "pvkit virtio (virtio-blk, virtio-net)", config: "full-pv" },
  ];
  const how =
    "Debian's i386 Linux in v86 with its own drivers; exits counted on the host, times measured by the guest (10 ms resolution)";
  return [
    {
      id: "exits",
      title: "Inside Linux in v86: exits per unit of I/O, emulated vs virtio",
      subtitle: [how, "fewer is better"],
      category: { title: "workload (unit)" },
      value: {
        title: "exits per unit",
        unit: "exits/unit",
        scale: "log",
        better: "lower",
        noise: 0.05,
      },
      series,
      points: exits,
    },
    {
      id: "rate",
      title: "Inside Linux in v86: throughput as the guest measured it",
      subtitle: [how, "more is better; short runs vary by tens of percent"],
      category: { title: "workload" },
      value: { title: "throughput", unit: "MiB/s", scale: "linear", better: "higher", noise: 0.3 },
      series,
      points: rates,
    },
    {
      id: "ratio",
      title: "Inside Linux in v86: virtio ÷ emulated device",
      subtitle: [how, "exits: below 1× = fewer with virtio; MiB/s: above 1× = faster with virtio"],
      category: { title: "workload" },
      facet: { title: "metric", order: ["exits", "MiB/s (guest-measured)"] },
      value: { title: "virtio ÷ emulated", unit: "×", scale: "log", better: "lower", noise: 0.3 },
      legendTitle: "ratio",
      series: [{ key: "pv", label: "virtio ÷ emulated", config: "full-pv" }],
      points: ratios,
      rules: [{ value: 1, label: "1×" }],
    },
  ];
}

/** Builders for suites that do not return charts themselves, by suite name. */
export const DERIVED_CHARTS: Readonly<Record<string, (data: unknown) => ChartSpec[]>> = {
  "guest-kernel": guestKernelCharts,
  "trap-channel": trapChannelCharts,
  "v86-guest": v86GuestCharts,
};

/** A suite result's charts: its own, else the derived ones, else none. */
export function chartsFor(
  result: Pick<SuiteResult, "name" | "data" | "charts">,
): readonly ChartSpec[] {
  if (result.charts !== undefined && result.charts.length > 0) return result.charts;
  const derive = DERIVED_CHARTS[result.name];
  if (derive === undefined) return [];
  try {
    return derive(result.data);
  } catch {
    return [];
  }
}

/**
 * The main job's headline chart: exits per operation of the emulated and paravirtual
 * ways of doing the same thing, one row per representative operation, taken from the
 * exits charts of nic-compare, hypercall-mmu, timers and guest-kernel (those that ran).
 *
 * @returns the chart, or `null` when none of those suites ran
 */
export function headlineChart(results: readonly SuiteResult[], date: string): ChartSpec | null {
  const points: ChartPoint[] = [];
  const byName = new Map(results.map((r) => [r.name, r]));
  const exitsChart = (name: string): ChartSpec | undefined => {
    const r = byName.get(name);
    return r === undefined ? undefined : chartsFor(r).find((c) => c.id === "exits");
  };
  const take = (
    chart: ChartSpec | undefined,
    pick: { facet?: string; category: string; label: string }[],
  ) => {
    if (chart === undefined) return;
    for (const p of pick) {
      for (const pt of chart.points) {
        if (pt.category !== p.category || (p.facet !== undefined && pt.facet !== p.facet)) continue;
        const s = chart.series.find((x) => x.key === pt.series);
        if (s === undefined || !["full-emulation", "hw-assist+pv-io", "full-pv"].includes(s.config))
          continue;
        points.push({ series: s.config, category: p.label, value: pt.value });
      }
    }
  };
  take(exitsChart("nic-compare"), [
    { facet: "TX", category: "1514 B, burst 32", label: "NIC: send a 1514 B frame (bursts of 32)" },
    {
      facet: "RX",
      category: "1514 B, burst 32",
      label: "NIC: receive a 1514 B frame (bursts of 32)",
    },
  ]);
  take(exitsChart("hypercall-mmu"), [
    {
      facet: "N = 10,000 pages",
      category: "build",
      label: "MMU: map a page (10,000-page address space)",
    },
    { facet: "N = 10,000 pages", category: "fork", label: "MMU: fork, per page-table update" },
  ]);
  const timers = exitsChart("timers");
  if (timers !== undefined) {
    for (const [category, label] of [
      ["reprogram: HPET (read, write CMP, read)", "timer: reprogram (HPET vs set_timer_op)"],
      ["reprogram: PV set_timer_op (hypercall)", "timer: reprogram (HPET vs set_timer_op)"],
      ["clock read: HPET main counter (MMIO)", "clock: read the time (HPET vs pvclock)"],
      ["clock read: pvclock (shared memory)", "clock: read the time (HPET vs pvclock)"],
    ] as const) {
      const pt = timers.points.find((p) => p.category === category);
      const s = timers.series.find((x) => x.key === pt?.series);
      if (pt !== undefined && s !== undefined)
        points.push({ series: s.config, category: label, value: pt.value });
    }
  }
  const gk = exitsChart("guest-kernel");
  if (gk !== undefined) {
    for (const [w, label] of [
      ["fork-exit", "guest kernel: fork + exit"],
      ["pagefault", "guest kernel: page fault"],
      ["pipe", "guest kernel: pipe round trip"],
      ["gettimeofday", "guest kernel: gettimeofday"],
      ["net-stream", "guest kernel: bulk network frame"],
    ] as const) {
      for (const pt of gk.points) {
        if (pt.category !== w || (pt.facet !== undefined && pt.facet !== "in-process")) continue;
        const s = gk.series.find((x) => x.key === pt.series);
        if (s !== undefined && ["full-emulation", "hw-assist+pv-io", "full-pv"].includes(s.config))
          points.push({ series: s.config, category: label, value: pt.value });
      }
    }
  }
  if (points.length === 0) return null;
  const series: ChartSeries[] = [
    {
      key: "full-emulation",
      label: "full emulation (emulated device, trapping MMU, HPET)",
      config: "full-emulation",
    },
    {
      key: "hw-assist+pv-io",
      label: "hardware assist + PV I/O (EPT-like MMU, virtio)",
      config: "hw-assist+pv-io",
    },
    {
      key: "full-pv",
      label: "full paravirtualization (virtio, PV MMU, PV timer, pvclock)",
      config: "full-pv",
    },
  ];
  return {
    id: "headline",
    title:
      "Exits per operation: full emulation vs hardware assist + PV I/O vs full paravirtualization",
    subtitle: [
      `pvkit bench main job, ${date.slice(0, 10)}: every exit is a VM exit on real hardware (hundreds to thousands of cycles)`,
      "fewer is better; 0 = no exit; a missing bar = that configuration is not measured for that operation",
    ],
    category: { title: "operation" },
    value: {
      title: "exits per operation",
      unit: "exits/op",
      scale: "log",
      better: "lower",
      noise: 0.02,
    },
    series,
    points,
    rules: [{ value: 1, label: "1 exit" }],
  };
}
