/**
 * PV MMU vs trapping (shadow) MMU vs hardware-assisted (EPT/NPT-like) MMU: build an
 * address space of N pages, touch every page once, make a fork-like copy (child mappings
 * read-only, parent write-protected for copy-on-write), then tear the mappings down — the
 * same guest workload through the three `GuestMmu` modes of `@pvkit/hypercall`.
 *
 * Exits are counted by the model (hypercalls, trapped page-table writes, intercepted
 * CR3/INVLPG/#PF); memory references are those of hardware walks on TLB misses. Times are
 * in-process wall time of the simulation, best of the rounds.
 *
 * @module
 */

import {
  ACCESS_WRITE,
  createGuestMmu,
  type GuestMmu,
  Hypervisor,
  type MmuMode,
  PAGE_SIZE,
  PfnPool,
} from "@pvkit/hypercall";
import type { ChartPoint, ChartSpec } from "../chart-spec.js";
import type { ResultCheck, ResultTable, Suite, SuiteOptions, SuiteResult } from "../suite.js";

/** Address-space sizes (pages). */
export const SIZES = [1_000, 10_000, 100_000] as const;
/** Distinct data frames the N pages map (cyclically). */
export const DATA_FRAMES = 1024;
/** `mmu_update` batch: two scratch pages of 16-byte requests. */
export const PV_SCRATCH_PAGES = 4;
/** Target: PV exits × this ≤ trapping exits for the build. */
export const EXIT_RATIO_TARGET = 10;
const BASE = 0x40_0000_0000;
const MODES: readonly MmuMode[] = ["pv", "shadow", "hap"];

/** One phase's measurement. */
export interface PhaseResult {
  readonly exits: number;
  readonly memRefs: number;
  readonly ms: number;
}

/** Everything measured for one (mode, N). */
export interface MmuRun {
  readonly mode: MmuMode;
  readonly pages: number;
  readonly build: PhaseResult;
  readonly touch: PhaseResult;
  readonly fork: PhaseResult;
  readonly teardown: PhaseResult;
}

/** Creates one guest of a mode with room for `pages` mapped pages (and their copy). */
export function makeGuest(mode: MmuMode, pages: number): GuestMmu {
  const tablePool = Math.ceil((2 * pages) / 512) + 64;
  const domPages = DATA_FRAMES + tablePool + PV_SCRATCH_PAGES + 1;
  const hv = new Hypervisor({ machinePages: domPages + 128 });
  const pool = new PfnPool(DATA_FRAMES + 1, tablePool);
  return createGuestMmu(hv, mode, { pages: domPages, scratchPages: PV_SCRATCH_PAGES, pool }).mmu;
}

function phase(mmu: GuestMmu, body: () => void): PhaseResult {
  const e0 = mmu.exits;
  const r0 = mmu.memRefs;
  const t0 = performance.now();
  body();
  return { exits: mmu.exits - e0, memRefs: mmu.memRefs - r0, ms: performance.now() - t0 };
}

function check(rc: number, what: string): void {
  if (rc < 0) throw new Error(`${what} failed with ${rc}`);
}

/** Runs the whole workload once. */
export function runMmu(mode: MmuMode, pages: number): MmuRun {
  const mmu = makeGuest(mode, pages);
  const parent = mmu.createAddressSpace();
  check(parent, "createAddressSpace");
  let child = -1;
  const build = phase(mmu, () => {
    check(mmu.activate(parent), "activate");
    for (let i = 0; i < pages; i++)
      check(mmu.map(parent, BASE + i * PAGE_SIZE, 1 + (i % DATA_FRAMES), true), "map");
    check(mmu.commit(), "commit");
  });
  const touch = phase(mmu, () => {
    for (let i = 0; i < pages; i++)
      if (mmu.translate(BASE + i * PAGE_SIZE, ACCESS_WRITE) < 0) throw new Error("touch");
  });
  const fork = phase(mmu, () => {
    child = mmu.createAddressSpace();
    check(child, "createAddressSpace(child)");
    for (let i = 0; i < pages; i++) {
      const va = BASE + i * PAGE_SIZE;
      check(mmu.map(child, va, 1 + (i % DATA_FRAMES), false), "map(child)");
      check(mmu.protect(parent, va, false), "protect");
    }
    check(mmu.commit(), "commit(fork)");
  });
  const teardown = phase(mmu, () => {
    for (let i = 0; i < pages; i++) check(mmu.unmap(parent, BASE + i * PAGE_SIZE), "unmap");
    check(mmu.commit(), "commit(teardown)");
    check(mmu.destroy(child), "destroy(child)");
  });
  return { mode, pages, build, touch, fork, teardown };
}

function best(runs: MmuRun[]): MmuRun {
  const pick = (k: "build" | "touch" | "fork" | "teardown") =>
    runs.reduce((a, b) => (b[k].ms < a[k].ms ? b : a))[k];
  const r = runs[0]!;
  return {
    ...r,
    build: pick("build"),
    touch: pick("touch"),
    fork: pick("fork"),
    teardown: pick("teardown"),
  };
}

const fmt = (x: number, d = 2) => (Number.isInteger(x) ? String(x) : x.toFixed(d));
const rate = (ops: number, ms: number) =>
  ms > 0 ? `${Math.round((ops / ms) * 1000).toLocaleString("en-US")}` : "∞";

async function run(options: SuiteOptions): Promise<SuiteResult> {
  const sizes = options.quick ? SIZES.slice(0, 2) : SIZES;
  const rounds = options.quick ? 1 : 3;
  const results: MmuRun[] = [];
  for (const pages of sizes) {
    for (const mode of MODES) {
      const runs: MmuRun[] = [];
      for (let r = 0; r < rounds; r++) runs.push(runMmu(mode, pages));
      const b = best(runs);
      results.push(b);
      options.progress?.(results.length, sizes.length * MODES.length);
      options.log(
        `hypercall-mmu ${mode} N=${pages}: build ${b.build.exits} exits, fork ${b.fork.exits} exits`,
      );
    }
  }
  const rows: string[][] = [];
  for (const r of results) {
    for (const [name, p] of [
      ["build", r.build],
      ["touch", r.touch],
      ["fork", r.fork],
      ["teardown", r.teardown],
    ] as const) {
      const ops = name === "fork" ? 2 * r.pages : r.pages;
      rows.push([
        String(r.pages),
        name,
        r.mode,
        String(p.exits),
        fmt(p.exits / ops, 4),
        fmt(p.memRefs / ops, 2),
        rate(ops, p.ms),
      ]);
    }
  }
  const tables: ResultTable[] = [
    {
      title: "Address space of N pages: exits and memory references per page-table operation",
      columns: ["N", "phase", "MMU", "exits", "exits/op", "walk refs/op", "ops/s"],
      rows,
    },
  ];
  const checks: ResultCheck[] = [];
  for (const pages of sizes) {
    const pv = results.find((r) => r.mode === "pv" && r.pages === pages)!;
    const sh = results.find((r) => r.mode === "shadow" && r.pages === pages)!;
    const ratio = (pv.build.exits * EXIT_RATIO_TARGET) / Math.max(1, sh.build.exits);
    checks.push({
      name: `N=${pages}: PV build exits × ${EXIT_RATIO_TARGET} ≤ trapping build exits`,
      value: Number(ratio.toFixed(4)),
      limit: 1,
      unit: "×",
      pass: ratio <= 1,
    });
  }
  return {
    name: "hypercall-mmu",
    title: "PV MMU vs trapping (shadow) MMU vs hardware-assisted MMU",
    description:
      "Build (map N pages with the root loaded), touch every page once (TLB misses), fork-like copy " +
      "(child maps every page read-only, parent write-protects it: 2N operations) and teardown " +
      "(unmap N, destroy the child) through the same guest code in three modes. PV: `mmu_update` " +
      `batches of ${((PV_SCRATCH_PAGES - 2) * PAGE_SIZE) / 16} requests, TLB flush folded into the batch by a multicall; ` +
      "trapping: every write to a write-protected page-table frame, CR3 load, INVLPG and #PF is an exit; " +
      "hardware-assisted: no exit, a TLB miss costs a 2-D walk (up to 24 references). ops/s is wall time of the simulation.",
    tables,
    checks,
    notes: [
      "Exits are the unit of cost here; ops/s measures this JavaScript model, not a CPU. A real exit costs hundreds to thousands of cycles (reference §6), a modelled-time column is not shown.",
      "Shadow model: the shadow follows CR3 (a child built while not loaded is shadowed in the one exit of its first CR3 load); A bits are propagated without exits, D bits by a hidden fault.",
    ],
    data: results,
    charts: mmuCharts(results),
  };
}

const PHASES = ["build", "touch", "fork", "teardown"] as const;
/** Page-table operations of a phase (the fork maps and write-protects: 2N). */
const opsOf = (r: MmuRun, phase: (typeof PHASES)[number]): number =>
  phase === "fork" ? 2 * r.pages : r.pages;

/**
 * The suite's charts: exits per page-table operation (log), operations/s, and PV or
 * EPT-like ÷ trapping for both, per phase and address-space size.
 */
function mmuCharts(results: readonly MmuRun[]): ChartSpec[] {
  const exits: ChartPoint[] = [];
  const rates: ChartPoint[] = [];
  const ratios: ChartPoint[] = [];
  const n = (pages: number): string => `N = ${pages.toLocaleString("en-US")} pages`;
  for (const r of results) {
    for (const phase of PHASES) {
      const p = r[phase];
      const ops = opsOf(r, phase);
      exits.push({ series: r.mode, category: phase, facet: n(r.pages), value: p.exits / ops });
      rates.push({
        series: r.mode,
        category: phase,
        facet: n(r.pages),
        value: (ops / p.ms) * 1000,
      });
      if (r.mode === "shadow") continue;
      const sh = results.find((x) => x.mode === "shadow" && x.pages === r.pages);
      if (sh === undefined) continue;
      const category = `${phase}, ${n(r.pages)}`;
      if (sh[phase].exits > 0) {
        ratios.push({
          series: r.mode,
          category,
          facet: "exits per operation",
          value: p.exits / sh[phase].exits,
        });
      }
      ratios.push({
        series: r.mode,
        category,
        facet: "operations/s",
        value: sh[phase].ms / p.ms,
        better: "higher",
      });
    }
  }
  const series = [
    {
      key: "shadow",
      label: "trapping (shadow) MMU — full emulation",
      config: "full-emulation" as const,
    },
    { key: "hap", label: "EPT-like MMU — hardware assist", config: "hw-assist+pv-io" as const },
    { key: "pv", label: "PV MMU (mmu_update batches)", config: "full-pv" as const },
  ];
  const how =
    "build = map N pages, touch = one access per page, fork = map read-only in a child + write-protect the parent (2N ops), teardown = unmap N";
  const facetOrder = [...new Set(results.map((r) => n(r.pages)))];
  return [
    {
      id: "exits",
      title: "Exits per page-table operation: trapping vs EPT-like vs PV MMU",
      subtitle: [
        how,
        "fewer is better; 0 = no exit (EPT-like hardware takes none, nobody exits on a TLB miss)",
      ],
      category: { title: "phase", order: [...PHASES] },
      facet: { title: "address-space size", order: facetOrder },
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
      title: "Page-table operations per second (wall time of the in-process model)",
      subtitle: [
        how,
        "more is better; an exit is a function call here, so exits/op is the figure that carries to hardware",
      ],
      category: { title: "phase", order: [...PHASES] },
      facet: { title: "address-space size", order: facetOrder },
      value: {
        title: "operations per second",
        unit: "ops/s",
        scale: "log",
        better: "higher",
        noise: 0.15,
      },
      series,
      points: rates,
    },
    {
      id: "ratio",
      title: "PV MMU and EPT-like MMU ÷ trapping MMU",
      subtitle: [
        "exits: below 1× = fewer exits than trapping (0 = none); operations/s: above 1× = faster than trapping",
        "touch is left out of the exits panel: no mode exits on it",
      ],
      category: { title: "phase, address-space size" },
      facet: { title: "metric", order: ["exits per operation", "operations/s"] },
      value: { title: "÷ trapping MMU", unit: "×", scale: "log", better: "lower", noise: 0.15 },
      legendTitle: "numerator",
      series: series.slice(1),
      points: ratios,
      rules: [{ value: 1, label: "1× (same as trapping)" }],
    },
  ];
}

/** The registered suite. */
export const hypercallMmuSuite: Suite = {
  name: "hypercall-mmu",
  main: true,
  summary:
    "address-space build/touch/fork/teardown: PV MMU vs trapping MMU vs EPT-like MMU, exits per operation",
  run,
};
