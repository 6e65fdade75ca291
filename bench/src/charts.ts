/**
 * Draws a {@link ChartSpec} as SVG, headless: the spec becomes a Vega-Lite specification
 * (horizontal bars grouped by series, a value label at the end of every bar, dashed
 * reference lines, column panels for facets), Vega-Lite compiles it to Vega, and a Vega
 * `View` with no renderer writes the SVG string — no browser, no canvas, no native code.
 *
 * Log scales cannot show 0, which is a common and important value here (pvclock reads,
 * EPT-like page-table updates): a zero is drawn as an empty bar at the start of the axis
 * with the label "0".
 *
 * @module
 */

import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import { type ChartSpec, CONFIGS, formatValue, validateChart } from "./chart-spec.js";

/** Width of the plot area of a chart without facets, in pixels. */
export const CHART_WIDTH = 560;
/** Height of one bar, in pixels. */
const BAR = 13;
/** Font family of every chart (present on every machine that renders SVG). */
const FONT = "Helvetica, Arial, sans-serif";

/**
 * Advance widths of Helvetica (and Arial, which shares them) for ASCII 32–126, in
 * thousandths of an em, from the font's published metrics.
 */
const HELVETICA = [
  278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
  556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
  611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
  667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
  222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];
const OTHER_WIDTHS: Readonly<Record<string, number>> = {
  "×": 584,
  "÷": 584,
  "–": 556,
  "—": 1000,
  "·": 278,
  "…": 1000,
  "≥": 549,
  "≤": 549,
  "±": 584,
  µ: 556,
};

/** Width of `text` in Helvetica at `size` px (bold ≈ 7% wider). */
export function textWidth(text: string, size: number, bold = false): number {
  let em = 0;
  for (const ch of text) {
    const c = ch.codePointAt(0) ?? 0;
    em += c >= 32 && c <= 126 ? HELVETICA[c - 32]! : (OTHER_WIDTHS[ch] ?? 600);
  }
  return (em / 1000) * size * (bold ? 1.07 : 1);
}

/**
 * Without a canvas, Vega guesses every string to be 0.8 em per character — twice the real
 * width of most labels — and truncates axis labels and reserves margins by that guess.
 * Vega lets a user-defined measure take over (as vl-convert does); this one sums the
 * font's character widths.
 */
const metrics = (
  vega as unknown as {
    textMetrics: { width: (item: Record<string, unknown>, text?: unknown) => number };
  }
).textMetrics;
metrics.width = (item, text) => {
  const s = text == null ? "" : String(text).trim();
  const size = typeof item.fontSize === "number" ? item.fontSize : 11;
  const bold = item.fontWeight === "bold" || Number(item.fontWeight) >= 600;
  const w = textWidth(s, size, bold);
  const limit = Number(item.limit);
  return limit > 0 && w > limit ? limit : w;
};

/** One row of the data handed to Vega-Lite. */
interface Row {
  category: string;
  facet: string;
  series: string;
  /** Where the bar ends (the axis start for 0 on a log scale). */
  plotted: number;
  /** The label at the end of the bar. */
  text: string;
  /** An exact zero (drawn as a marker at the axis start: a log scale has no bar for it). */
  zero: boolean;
}

const firstSeen = (xs: readonly string[]): string[] => [...new Set(xs)];

/** The value domain: whole decades on a log scale, room for the bar labels on the right. */
function valueDomain(spec: ChartSpec, values: readonly number[]): [number, number] {
  const rules = (spec.rules ?? []).map((r) => r.value);
  if (spec.value.scale === "linear") {
    const max = Math.max(0, ...values, ...rules);
    return [0, max > 0 ? max * 1.18 : 1];
  }
  const positive = [...values, ...rules].filter((v) => v > 0);
  if (positive.length === 0) return [0.1, 10];
  // Strictly below the smallest value, so that its bar has a length.
  const lo = Math.ceil(Math.log10(Math.min(...positive))) - 1;
  const top = Math.log10(Math.max(...positive));
  // Leave room after the longest bar for its label (a sixth of the axis, at least ×2.2).
  const hi = Math.max(lo + 1, top + Math.max(0.35, (top - lo) * 0.16));
  return [10 ** lo, 10 ** hi];
}

/**
 * Builds the Vega-Lite specification of a chart (exported for tests and for anyone who
 * wants to restyle a chart).
 *
 * @throws Error when the spec does not validate ({@link validateChart})
 */
export function vegaLiteSpec(spec: ChartSpec): TopLevelSpec {
  const problems = validateChart(spec);
  if (problems.length > 0) throw new Error(`chart ${spec.id}: ${problems.join("; ")}`);
  const labelOf = new Map(spec.series.map((s) => [s.key, s.label]));
  const points = spec.points.filter((p) => Number.isFinite(p.value));
  const [lo, hi] = valueDomain(
    spec,
    points.map((p) => p.value),
  );
  const unit = spec.value.unit;
  const suffix = unit === "×" ? "×" : "";
  const rows: Row[] = points.map((p) => ({
    category: p.category,
    facet: p.facet ?? "",
    series: labelOf.get(p.series) ?? p.series,
    plotted: spec.value.scale === "log" && p.value <= 0 ? lo : p.value,
    text: `${formatValue(p.value)}${suffix}`,
    zero: p.value === 0,
  }));
  const categories = spec.category.order ?? firstSeen(points.map((p) => p.category));
  const used = new Set(points.map((p) => p.series));
  const series = spec.series.filter((s) => used.has(s.key));
  const seriesLabels = series.map((s) => s.label);
  const facets =
    spec.facet === undefined ? [] : (spec.facet.order ?? firstSeen(points.map((p) => p.facet!)));
  const panelWidth =
    facets.length <= 1 ? CHART_WIDTH : Math.max(230, Math.floor(900 / facets.length));
  const single = spec.layout === "single";
  const valueTitle = `${spec.value.title} (${unit}${spec.value.scale === "log" ? ", log scale" : ""})`;

  const y = {
    field: "category",
    type: "nominal" as const,
    sort: categories,
    title: spec.category.title,
    // maxExtent: Vega caps an axis's room at 200 px by default, and puts the title there.
    axis: { labelLimit: 420, maxExtent: 440, labelFontSize: 11, titleFontSize: 12, ticks: false },
  };
  const yOffset = { field: "series", type: "nominal" as const, sort: seriesLabels };
  const x = {
    field: "plotted",
    type: "quantitative" as const,
    title: valueTitle,
    scale: {
      type: spec.value.scale,
      domain: [lo, hi],
      ...(spec.value.scale === "linear" ? { nice: false, zero: true } : {}),
    },
    axis: {
      // SI prefixes for large values only: "0.001" must not read as "1m".
      labelExpr: "datum.value >= 1000 ? format(datum.value, '~s') : format(datum.value, '~g')",
      labelFontSize: 11,
      titleFontSize: 12,
      grid: true,
      gridColor: "#e6e6e6",
      ...(spec.value.scale === "log" ? { values: decades(lo, hi) } : { tickCount: 6 }),
    },
  };
  const color = {
    field: "series",
    type: "nominal" as const,
    sort: seriesLabels,
    scale: { domain: seriesLabels, range: series.map((s) => CONFIGS[s.config].color) },
    legend: {
      title: spec.legendTitle ?? "configuration",
      orient: "top" as const,
      direction: "horizontal" as const,
      labelFontSize: 11,
      titleFontSize: 11,
      labelLimit: 300,
      columns: Math.min(4, seriesLabels.length),
    },
  };
  const layers: object[] = [
    {
      // x2 at the axis start: a log scale has no zero for bars to grow from.
      mark: { type: "bar" },
      encoding: { y, ...(single ? {} : { yOffset }), x, x2: { datum: lo }, color },
    },
    {
      // A zero has no bar: a marker in the series' colour at the axis start says whose it is.
      transform: [{ filter: "datum.zero" }],
      mark: { type: "point", shape: "diamond", filled: true, size: 60, opacity: 1, xOffset: 5 },
      encoding: { y, ...(single ? {} : { yOffset }), x, color },
    },
    ...[false, true].map((zero) => ({
      transform: [{ filter: zero ? "datum.zero" : "!datum.zero" }],
      // A zero's label goes past its marker.
      mark: {
        type: "text",
        align: "left",
        baseline: "middle",
        dx: zero ? 11 : 3,
        fontSize: 10,
        color: "#222",
      },
      encoding: { y, ...(single ? {} : { yOffset }), x, text: { field: "text" } },
    })),
  ];
  // One row per panel for the reference lines (not one per data row, drawn on top of each other).
  const one = [{ aggregate: [{ op: "count", as: "n" }] }];
  for (const r of spec.rules ?? []) {
    layers.push({
      transform: one,
      mark: { type: "rule", strokeDash: [5, 3], color: "#333", strokeWidth: 1 },
      encoding: { x: { datum: r.value, type: "quantitative" } },
    });
    layers.push({
      transform: one,
      // The rule's label sits just above the plot, clear of the bars.
      mark: {
        type: "text",
        align: "center",
        baseline: "bottom",
        dy: -3,
        fontSize: 10,
        fontStyle: "italic",
        color: "#333",
      },
      encoding: {
        x: { datum: r.value, type: "quantitative" },
        y: { value: 0 },
        text: { value: r.label },
      },
    });
  }
  const inner = {
    width: panelWidth,
    // One bar per step; grouped categories get their series' bars plus a gap.
    height: single ? { step: BAR + 8 } : { step: BAR, for: "offset" },
    layer: layers,
  };
  const title = {
    text: spec.title,
    subtitle: spec.subtitle === undefined ? undefined : [...spec.subtitle],
    anchor: "start" as const,
    fontSize: 15,
    subtitleFontSize: 11,
    subtitleColor: "#444",
    offset: 10,
  };
  const config = {
    font: FONT,
    view: { stroke: "#ccc" },
    background: "white",
    padding: 12,
  };
  const data = { values: rows };
  if (spec.facet === undefined) {
    return {
      $schema: "https://vega.github.io/schema/vega-lite/v6.json",
      title,
      config,
      data,
      ...inner,
    } as TopLevelSpec;
  }
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title,
    config,
    data,
    facet: {
      column: {
        field: "facet",
        type: "nominal",
        sort: facets,
        title: spec.facet.title,
        header: { labelFontSize: 12, titleFontSize: 12, labelFontWeight: "bold" },
      },
    },
    spacing: 16,
    spec: inner,
  } as TopLevelSpec;
}

/** Powers of ten from `lo` to `hi`. */
function decades(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.round(Math.log10(lo)); e <= Math.floor(Math.log10(hi) + 1e-9); e++)
    out.push(10 ** e);
  return out;
}

/**
 * Renders a chart to an SVG document (a string starting with `<svg`).
 *
 * @throws Error when the spec does not validate
 */
export async function renderChart(spec: ChartSpec): Promise<string> {
  const spec2 = compile(vegaLiteSpec(spec)).spec;
  const view = new vega.View(vega.parse(spec2), { renderer: "none" });
  try {
    const svg = await view.toSVG();
    return `${svg}\n`;
  } finally {
    view.finalize();
  }
}
