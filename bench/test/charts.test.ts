import { DOMParser, type Element } from "@xmldom/xmldom";
import { describe, expect, it } from "vitest";
import {
  type ChartSpec,
  CONFIGS,
  chartPath,
  formatValue,
  validateChart,
} from "../src/chart-spec.js";
import { renderChart, textWidth, vegaLiteSpec } from "../src/charts.js";
import {
  chartsFor,
  guestKernelCharts,
  headlineChart,
  trapChannelCharts,
  v86GuestCharts,
} from "../src/derived-charts.js";
import type { SuiteResult } from "../src/suite.js";

/** Parses an SVG document strictly: any XML error fails the test. */
function parseSvg(svg: string): Element {
  const problems: string[] = [];
  const doc = new DOMParser({
    onError: (level, message) => {
      if (level !== "warning") problems.push(`${level}: ${message}`);
    },
  }).parseFromString(svg, "image/svg+xml");
  expect(problems).toEqual([]);
  const root = doc.documentElement;
  if (root === null) throw new Error("no root element");
  return root;
}

const all = (root: Element, tag: string): Element[] =>
  Array.from(root.getElementsByTagName(tag) as unknown as ArrayLike<Element>);
/** Whether `e` lies inside a facet's header or title group. */
function inHeader(e: Element): boolean {
  for (
    let p = e.parentNode as Element | null;
    p !== null && p.getAttribute !== undefined;
    p = p.parentNode as Element | null
  ) {
    if (/column-title|column_header|row_header|column_footer/.test(p.getAttribute("class") ?? ""))
      return true;
  }
  return false;
}

/**
 * The text of every `<text>` in a group whose class contains `role`, inside groups of
 * class `within` (the chart's own title: `"mark-group role-title"` outside the facet
 * headers, which hold title groups of their own).
 */
function textsOf(root: Element, role: string, within?: string): string[] {
  const scopes =
    within === undefined
      ? [root]
      : all(root, "g").filter(
          (g) =>
            g.getAttribute("class") === within &&
            (within !== "mark-group role-title" || !inHeader(g)),
        );
  return scopes.flatMap((scope) =>
    all(scope, "g")
      .filter((g) => (g.getAttribute("class") ?? "").includes(role))
      .flatMap((g) => all(g, "text").map((t) => t.textContent ?? "")),
  );
}
/** The bars: `[series label, fill]` from each bar's accessible label. */
function bars(root: Element): { series: string; fill: string; label: string }[] {
  return all(root, "path")
    .filter((p) => p.getAttribute("aria-roledescription") === "bar")
    .map((p) => {
      const label = p.getAttribute("aria-label") ?? "";
      return {
        series: /series: (.*)$/.exec(label)?.[1] ?? "",
        fill: p.getAttribute("fill") ?? "",
        label,
      };
    });
}

const spec: ChartSpec = {
  id: "exits",
  title: "Exits per frame: emulated vs PV",
  subtitle: ["how it was measured"],
  category: { title: "frame size" },
  facet: { title: "direction", order: ["TX", "RX"] },
  value: { title: "exits per frame", unit: "exits/frame", scale: "log", better: "lower" },
  series: [
    { key: "emu", label: "RTL8139 (emulated)", config: "full-emulation" },
    { key: "pv", label: "virtio-net (PV)", config: "full-pv" },
  ],
  points: [
    { series: "emu", category: "64 B", facet: "TX", value: 5 },
    { series: "pv", category: "64 B", facet: "TX", value: 0.004 },
    { series: "emu", category: "64 B", facet: "RX", value: 12 },
    { series: "pv", category: "64 B", facet: "RX", value: 0 },
  ],
  rules: [{ value: 1, label: "1 exit/frame" }],
};

describe("chart specs", () => {
  it("validate: ids, one series per configuration, known series, facets", () => {
    expect(validateChart(spec)).toEqual([]);
    const bad: ChartSpec = {
      ...spec,
      id: "Bad id",
      series: [...spec.series, { key: "pv", label: "again", config: "full-pv" }],
      points: [...spec.points, { series: "nope", category: "x", value: 1 }],
    };
    const problems = validateChart(bad);
    expect(problems.some((p) => p.includes("not [a-z0-9-]+"))).toBe(true);
    expect(problems.some((p) => p.includes("appears twice"))).toBe(true);
    expect(problems.some((p) => p.includes("two series"))).toBe(true);
    expect(problems.some((p) => p.includes("unknown series nope"))).toBe(true);
    expect(problems.some((p) => p.includes("has no facet"))).toBe(true);
    expect(() => vegaLiteSpec(bad)).toThrow(/chart Bad id/);
  });

  it("formats values for labels", () => {
    expect(formatValue(0)).toBe("0");
    expect(formatValue(0.0039383)).toBe("0.00394");
    expect(formatValue(5)).toBe("5");
    expect(formatValue(3.5)).toBe("3.5");
    expect(formatValue(1234)).toBe("1,234");
    expect(formatValue(266_186)).toBe("266 k");
    expect(formatValue(1_719_131)).toBe("1.72 M");
    expect(formatValue(Number.POSITIVE_INFINITY)).toBe("∞");
    expect(chartPath("nic-compare", "exits")).toBe("charts/nic-compare-exits.svg");
  });

  it("measures text with the font's widths rather than Vega's 0.8 em guess", () => {
    expect(textWidth("iiii", 10)).toBeCloseTo(8.88, 2);
    expect(textWidth("MMMM", 10)).toBeCloseTo(33.32, 2);
    expect(textWidth("ab", 10, true)).toBeGreaterThan(textWidth("ab", 10));
  });
});

describe("rendered charts are valid SVG with the expected series", () => {
  it("draws title, subtitle, axis titles with units, legend, bars, zero marker and rule", async () => {
    const root = parseSvg(await renderChart(spec));
    expect(root.tagName).toBe("svg");
    expect(Number(root.getAttribute("width"))).toBeGreaterThan(400);
    expect(textsOf(root, "role-title-text", "mark-group role-title")).toEqual([spec.title]);
    expect(textsOf(root, "role-title-subtitle", "mark-group role-title")).toEqual([
      "how it was measured",
    ]);
    expect(textsOf(root, "role-title-text", "mark-group role-column-title column-title")).toEqual([
      "direction",
    ]);
    const axisTitles = textsOf(root, "role-axis-title");
    expect(axisTitles).toContain("exits per frame (exits/frame, log scale)");
    expect(axisTitles).toContain("frame size");
    expect(textsOf(root, "role-legend-title")).toEqual(["configuration"]);
    expect(textsOf(root, "role-legend-label")).toEqual(["RTL8139 (emulated)", "virtio-net (PV)"]);
    expect(textsOf(root, "role-title-text", "mark-group role-column-header column_header")).toEqual(
      ["TX", "RX"],
    );
    // One bar per point, coloured by its configuration.
    const b = bars(root);
    expect(b).toHaveLength(4);
    for (const x of b) {
      expect(x.fill).toBe(
        x.series === "RTL8139 (emulated)"
          ? CONFIGS["full-emulation"].color
          : CONFIGS["full-pv"].color,
      );
    }
    // Value labels, the zero drawn as "0" with a marker in its series' colour.
    const labels = all(root, "g")
      .filter((g) => (g.getAttribute("class") ?? "").startsWith("mark-text role-mark"))
      .flatMap((g) => all(g, "text").map((t) => t.textContent));
    expect(labels).toEqual(expect.arrayContaining(["5", "0.004", "12", "0", "1 exit/frame"]));
    const markers = all(root, "path").filter(
      (p) => p.getAttribute("aria-roledescription") === "point",
    );
    expect(markers).toHaveLength(1);
    expect(markers[0]!.getAttribute("fill")).toBe(CONFIGS["full-pv"].color);
  });

  it("single layout: one bar per category, coloured by its series", async () => {
    const root = parseSvg(
      await renderChart({
        id: "t",
        title: "Clock reads",
        category: { title: "mechanism" },
        value: { title: "operations per second", unit: "ops/s", scale: "linear", better: "higher" },
        layout: "single",
        series: [
          { key: "e", label: "emulated", config: "full-emulation" },
          { key: "p", label: "paravirtual", config: "full-pv" },
        ],
        points: [
          { series: "e", category: "HPET", value: 13e6 },
          { series: "p", category: "pvclock", value: 8e6 },
          { series: "e", category: "PIT", value: 9e6 },
        ],
      }),
    );
    expect(bars(root).map((x) => [x.series, x.fill])).toEqual([
      ["emulated", CONFIGS["full-emulation"].color],
      ["paravirtual", CONFIGS["full-pv"].color],
      ["emulated", CONFIGS["full-emulation"].color],
    ]);
    expect(textsOf(root, "role-axis-title")).toContain("operations per second (ops/s)");
  });
});

const gkRow = (workload: string, config: string, exitsPerOp: number, ops: number) => ({
  workload,
  config,
  runtime: "in-process",
  exitsPerOp,
  opsPerSec: { median: ops, min: ops * 0.9, max: ops * 1.1 },
  modelledOpsPerSec: ops / (1 + exitsPerOp),
});

describe("derived charts", () => {
  const gk = {
    rows: [
      gkRow("fork-exit", "full-emulation", 25, 3000),
      gkRow("fork-exit", "hw-assist+pv-io", 0, 15000),
      gkRow("fork-exit", "full-pv", 17, 4000),
      gkRow("gettimeofday", "full-emulation", 1, 3e6),
      gkRow("gettimeofday", "mmu=shadow,time=pit,irq=pic,net=rtl8139", 3, 4e6),
      gkRow("gettimeofday", "full-pv", 0, 7e6),
    ],
  };

  it("guest-kernel: exits, rate and ratio charts, one colour per configuration family", async () => {
    const charts = guestKernelCharts(gk);
    expect(charts.map((c) => c.id)).toEqual(["exits", "rate", "ratio"]);
    const exits = charts[0]!;
    expect(exits.series.map((s) => s.config)).toEqual([
      "full-emulation",
      "emulation-variant",
      "hw-assist+pv-io",
      "full-pv",
    ]);
    expect(exits.points).toHaveLength(6);
    const ratio = charts[2]!;
    expect(ratio.series.some((s) => s.config === "full-emulation")).toBe(false);
    const forkPv = ratio.points.find(
      (p) =>
        p.category === "fork-exit" && p.series === "full-pv" && p.facet === "exits per operation",
    );
    expect(forkPv?.value).toBeCloseTo(17 / 25);
    for (const c of charts) {
      const root = parseSvg(await renderChart(c));
      const fills = new Set(bars(root).map((b) => b.fill));
      for (const f of fills) expect(Object.values(CONFIGS).some((x) => x.color === f)).toBe(true);
    }
  });

  it("returns no chart for data of another shape, and prefers a suite's own charts", () => {
    expect(guestKernelCharts({ rows: [{ workload: 1 }] })).toEqual([]);
    expect(trapChannelCharts("nonsense")).toEqual([]);
    expect(v86GuestCharts(null)).toEqual([]);
    const own: SuiteResult = {
      name: "guest-kernel",
      title: "",
      description: "",
      tables: [],
      checks: [],
      notes: [],
      data: gk,
      charts: [spec],
    };
    expect(chartsFor(own)).toEqual([spec]);
    const { charts: _, ...without } = own;
    expect(chartsFor(without).map((c) => c.id)).toEqual(["exits", "rate", "ratio"]);
    expect(chartsFor({ ...without, name: "unknown" })).toEqual([]);
  });

  it("trap-channel: ns per exit and × in-process", () => {
    const charts = trapChannelCharts([
      { runtime: "in-process", host: "—", spin: "none", medianNs: 10, nsPerExit: [9, 10, 12] },
      {
        runtime: "threaded",
        host: "blocking",
        spin: "adaptive",
        medianNs: 800,
        nsPerExit: [700, 800, 900],
      },
      { runtime: "threaded", host: "async", spin: "none", medianNs: 24000 },
    ]);
    expect(charts.map((c) => c.id)).toEqual(["ns", "ratio"]);
    expect(charts[0]!.points.map((p) => p.series)).toEqual(["in-process", "blocking", "async"]);
    expect(charts[0]!.points[1]!.noise).toBeCloseTo(100 / 800);
    expect(charts[1]!.points.map((p) => p.value)).toEqual([80, 2400]);
  });

  it("the headline takes the emulated and PV exits of each main-job suite", () => {
    const suite = (name: string, charts: ChartSpec[]): SuiteResult => ({
      name,
      title: "",
      description: "",
      tables: [],
      checks: [],
      notes: [],
      data: null,
      charts,
    });
    const nic: ChartSpec = {
      ...spec,
      points: [
        { series: "emu", category: "1514 B, burst 32", facet: "TX", value: 3.5 },
        { series: "pv", category: "1514 B, burst 32", facet: "TX", value: 0.03 },
        { series: "emu", category: "64 B, burst 1", facet: "TX", value: 5 },
      ],
    };
    const h = headlineChart([suite("nic-compare", [nic])], "2026-01-01T00:00:00Z")!;
    expect(h.points).toEqual([
      { series: "full-emulation", category: "NIC: send a 1514 B frame (bursts of 32)", value: 3.5 },
      { series: "full-pv", category: "NIC: send a 1514 B frame (bursts of 32)", value: 0.03 },
    ]);
    expect(headlineChart([], "2026-01-01")).toBeNull();
  });
});
