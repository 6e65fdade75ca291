/**
 * `pnpm bench --compare A.json B.json`: what changed between two runs, row by row, with
 * the noise margin each change is judged against — so that a regression is visible at
 * once.
 *
 * The rows are the suites' chart points (`SuiteResult.charts`, or the charts derived from
 * a suite's data, see `derived-charts.ts`): each is one typed measurement with a unit,
 * a direction (higher or lower is better) and a noise estimate. A change is a
 * **regression** or an **improvement** when it is larger than the margin — the larger of
 * the two runs' own noise for that value and the chart's default — and "~" otherwise.
 * Suites without charts (a report written before charts existed) are compared table
 * cell by table cell instead, with {@link TABLE_MARGIN} and no direction.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import { formatValue } from "./chart-spec.js";
import { chartsFor } from "./derived-charts.js";
import type { SuiteResult } from "./suite.js";

/** Margin of a chart that states none. */
export const DEFAULT_MARGIN = 0.05;
/** Margin of table cells (no direction, no noise known). */
export const TABLE_MARGIN = 0.1;

/** The parts of a report `--compare` reads. */
export interface ComparableReport {
  /** When the run started. */
  readonly date?: string;
  /** Machine facts, for the header. */
  readonly environment?: {
    readonly commit?: string;
    readonly loadAverage?: number;
    readonly cpus?: number;
  };
  /** The suites that ran. */
  readonly suites: readonly Pick<SuiteResult, "name" | "data" | "charts" | "tables">[];
}

/** How one row changed. */
export type ChangeVerdict = "regression" | "improvement" | "~" | "changed";

/** One compared measurement. */
export interface CompareRow {
  /** Suite name. */
  readonly suite: string;
  /** What was measured: chart id / panel / category / series (or table / row / column). */
  readonly metric: string;
  /** Unit of {@link a} and {@link b}. */
  readonly unit: string;
  /** Value in the first report. */
  readonly a: number;
  /** Value in the second report. */
  readonly b: number;
  /** Relative change `(b − a) / |a|` (±Infinity from 0). */
  readonly change: number;
  /** Relative margin the change is judged against. */
  readonly margin: number;
  /** The verdict (`"changed"`: beyond the margin, direction unknown). */
  readonly verdict: ChangeVerdict;
}

/** Reads a report written by the runner (`latest.json` or `<suite>.json`). */
export function readReport(file: string): ComparableReport {
  const parsed = JSON.parse(readFileSync(file, "utf8")) as unknown;
  if (
    parsed === null ||
    typeof parsed !== "object" ||
    !Array.isArray((parsed as { suites?: unknown }).suites)
  ) {
    throw new Error(`${file} is not a pvkit bench report (no "suites" array)`);
  }
  return parsed as ComparableReport;
}

const relChange = (a: number, b: number): number => {
  if (Math.abs(b - a) <= 1e-12 * Math.max(1, Math.abs(a))) return 0;
  if (a === 0) return b > 0 ? Number.POSITIVE_INFINITY : Number.NEGATIVE_INFINITY;
  return (b - a) / Math.abs(a);
};

interface Measurement {
  readonly value: number;
  readonly unit: string;
  readonly noise: number;
  readonly better: "higher" | "lower";
}

function chartMeasurements(s: ComparableReport["suites"][number]): Map<string, Measurement> {
  const out = new Map<string, Measurement>();
  for (const chart of chartsFor(s)) {
    const labels = new Map(chart.series.map((x) => [x.key, x.label]));
    for (const p of chart.points) {
      if (!Number.isFinite(p.value)) continue;
      const key = [chart.id, p.facet, p.category, labels.get(p.series) ?? p.series]
        .filter((x) => x !== undefined && x !== "")
        .join(" / ");
      out.set(key, {
        value: p.value,
        unit: chart.value.unit,
        noise: Math.max(p.noise ?? 0, chart.value.noise ?? DEFAULT_MARGIN),
        better: p.better ?? chart.value.better,
      });
    }
  }
  return out;
}

/** Parses a formatted table cell (`"1,234"`, `"5.0×"`, `"99.74 ±0.9%"`, `"12 %"`) into a number and its ± (relative). */
export function parseCell(cellText: string): { value: number; noise: number } | null {
  const m = /^\s*(-?[\d,]*\.?\d+)\s*(?:±\s*([\d.]+)\s*%)?\s*(?:×|%|[a-zA-Z/]+)?\s*$/.exec(cellText);
  if (m === null) return null;
  const value = Number(m[1]!.replace(/,/g, ""));
  if (!Number.isFinite(value)) return null;
  return { value, noise: m[2] === undefined ? 0 : Number(m[2]) / 100 };
}

function tableMeasurements(s: ComparableReport["suites"][number]): Map<string, Measurement> {
  const out = new Map<string, Measurement>();
  for (const t of s.tables ?? []) {
    for (const row of t.rows) {
      const parsed = row.map(parseCell);
      const key = row.filter((_, i) => parsed[i] === null).join(", ");
      row.forEach((_, i) => {
        const p = parsed[i];
        if (p === null || p === undefined) return;
        out.set([t.title, key, t.columns[i] ?? `column ${i + 1}`].join(" / "), {
          value: p.value,
          unit: "",
          noise: Math.max(p.noise, TABLE_MARGIN),
          better: "higher",
        });
      });
    }
  }
  return out;
}

/**
 * Compares two reports: every measurement present in both, in the order of `b`.
 *
 * @param a - the baseline
 * @param b - the run to judge
 */
export function compareReports(a: ComparableReport, b: ComparableReport): CompareRow[] {
  const rows: CompareRow[] = [];
  for (const sb of b.suites) {
    const sa = a.suites.find((s) => s.name === sb.name);
    if (sa === undefined) continue;
    let ma = chartMeasurements(sa);
    let mb = chartMeasurements(sb);
    const byCharts = ma.size > 0 && mb.size > 0;
    if (!byCharts) {
      ma = tableMeasurements(sa);
      mb = tableMeasurements(sb);
    }
    for (const [metric, vb] of mb) {
      const va = ma.get(metric);
      if (va === undefined) continue;
      const change = relChange(va.value, vb.value);
      const margin = Math.max(va.noise, vb.noise);
      let verdict: ChangeVerdict = "~";
      if (Math.abs(change) > margin) {
        if (!byCharts) verdict = "changed";
        else {
          const worse = vb.better === "lower" ? change > 0 : change < 0;
          verdict = worse ? "regression" : "improvement";
        }
      }
      rows.push({
        suite: sb.name,
        metric,
        unit: vb.unit,
        a: va.value,
        b: vb.value,
        change,
        margin,
        verdict,
      });
    }
  }
  return rows;
}

const pctText = (x: number): string =>
  Number.isFinite(x) ? `${x > 0 ? "+" : ""}${(x * 100).toFixed(1)}%` : x > 0 ? "+∞" : "−∞";

/** Formats the comparison for the terminal: a header, one line per row, and a summary. */
export function formatCompare(
  rows: readonly CompareRow[],
  a: ComparableReport,
  b: ComparableReport,
  names: readonly [string, string] = ["A", "B"],
): string {
  const head = (r: ComparableReport, n: string): string => {
    const env = r.environment;
    const busy =
      env?.loadAverage !== undefined && env.cpus !== undefined && env.loadAverage > env.cpus
        ? " — busy machine (load above its CPU count): timed rows of this run are not comparable"
        : "";
    return `${n}: ${r.date ?? "?"} (commit ${env?.commit ?? "?"}, load ${env?.loadAverage ?? "?"})${busy}`;
  };
  const table = [
    ["suite", "metric", names[0], names[1], "change", "margin", ""],
    ...rows.map((r) => [
      r.suite,
      r.metric,
      `${formatValue(r.a)} ${r.unit}`.trim(),
      `${formatValue(r.b)} ${r.unit}`.trim(),
      pctText(r.change),
      `±${(r.margin * 100).toFixed(1)}%`,
      r.verdict === "regression"
        ? "REGRESSION"
        : r.verdict === "improvement"
          ? "improved"
          : r.verdict === "changed"
            ? "changed"
            : "~",
    ]),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => (r[i] ?? "").length)));
  const right = new Set([2, 3, 4, 5]);
  const lines = table.map((r) =>
    r
      .map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd(),
  );
  const count = (v: ChangeVerdict): number => rows.filter((r) => r.verdict === v).length;
  const summary = `${rows.length} rows: ${count("regression")} regression(s), ${count("improvement")} improvement(s), ${count("changed")} changed (no direction), ${count("~")} within the noise margin`;
  return [head(a, names[0]), head(b, names[1]), "", lines[0]!, ...lines.slice(1), "", summary].join(
    "\n",
  );
}
