/**
 * What a suite says about a chart, without drawing it: a small, typed description
 * ({@link ChartSpec}) of horizontal grouped bars — categories down the side, one bar per
 * series, optional column panels — that the runner renders to SVG (`charts.ts`) and that
 * `--compare` reads as typed measurements.
 *
 * Colours are not the suite's choice: every series names a {@link ConfigKey}, and
 * {@link CONFIGS} fixes one colour per configuration for every chart of every suite, so
 * that "full emulation" is the same red in the NIC chart, the MMU chart and the headline.
 *
 * This module has no dependencies, so suites can import it without loading the renderer.
 *
 * @module
 */

/** How one configuration (or peer) is drawn. */
export interface ConfigStyle {
  /** Default legend label. */
  readonly label: string;
  /** Fill colour (CSS hex). */
  readonly color: string;
}

/**
 * The fixed palette: one colour per configuration of the lecture's taxonomy, per peer and
 * per runtime, the same in every chart. The first three follow the lecture: full
 * emulation (red), hardware assist with PV I/O (purple), full paravirtualization (blue);
 * a "variant" is a lighter shade of its family (full emulation with the PIT instead of
 * the HPET, virtio-net without EVENT_IDX, …).
 */
export const CONFIGS = {
  /** Full emulation / an emulated device (RTL8139, trapping MMU, LAPIC/PIT/HPET, IDE). */
  "full-emulation": { label: "full emulation", color: "#d62728" },
  /** A variant of full emulation (another emulated timer, …). */
  "emulation-variant": { label: "full emulation (variant)", color: "#f5a3a0" },
  /** Hardware assist (EPT-like MMU) with PV I/O (virtio). */
  "hw-assist+pv-io": { label: "hw-assist + PV I/O", color: "#8e44ad" },
  /** A PVHVM-like mix: hardware-assisted MMU with PV timer, event channels and virtio. */
  pvhvm: { label: "PVHVM-like mix", color: "#16a5a5" },
  /** Full paravirtualization / a PV device (virtio, PV MMU, PV timer, pvclock); pvkit's own virtqueue. */
  "full-pv": { label: "full PV", color: "#1f6fb4" },
  /** A variant of a PV configuration (virtio-net without EVENT_IDX, …). */
  "pv-variant": { label: "PV (variant)", color: "#8fc1e9" },
  /** The bare, unvalidated loop a virtqueue is compared with. */
  bare: { label: "bare loop", color: "#6e6e6e" },
  /** v86's own virtqueue from the published debug build (`libv86-debug.mjs`). */
  v86: { label: "v86 (debug build)", color: "#8c564b" },
  /** v86's own virtqueue from the published release build (`libv86.mjs`). */
  "v86-release": { label: "v86 (release build)", color: "#d4a373" },
  /** An exit that is a function call in the same thread. */
  "in-process": { label: "in-process", color: "#2ca02c" },
  /** An exit that is a round trip to another thread. */
  threaded: { label: "threaded", color: "#ff7f0e" },
  /** A variant of the threaded runtime (another wait strategy). */
  "threaded-variant": { label: "threaded (variant)", color: "#ffc285" },
  /** Anything else (a configuration the palette does not know yet). */
  other: { label: "other", color: "#b5b52a" },
} as const satisfies Record<string, ConfigStyle>;

/** A configuration (or peer) with a fixed colour. */
export type ConfigKey = keyof typeof CONFIGS;

/** One bar series of a chart. */
export interface ChartSeries {
  /** What points refer to. */
  readonly key: string;
  /** Legend label (specific to the chart, e.g. `"RTL8139 (emulated)"`). */
  readonly label: string;
  /** The configuration, which decides the colour. At most one series per configuration. */
  readonly config: ConfigKey;
}

/** One measured value: a bar. */
export interface ChartPoint {
  /** {@link ChartSeries.key} of the bar's series. */
  readonly series: string;
  /** The category (a row of bars), e.g. `"TX 1514 B, burst 32"`. */
  readonly category: string;
  /** The column panel, when the chart has {@link ChartSpec.facet}. */
  readonly facet?: string;
  /** The value, in {@link ChartValueAxis.unit}; 0 is drawn as "0" at the axis start on a log scale. */
  readonly value: number;
  /**
   * Relative noise of this value (0.05 = ±5%) when the suite measured it (benchmark.js's
   * margin of error, half the range of rounds); `--compare` uses the larger of this and
   * {@link ChartValueAxis.noise}.
   */
  readonly noise?: number;
  /** Which direction is an improvement for this point, when it differs from the axis's (a ratio chart with an exits panel and a rate panel). */
  readonly better?: "higher" | "lower";
}

/** The value axis of a chart. */
export interface ChartValueAxis {
  /** What is measured, e.g. `"exits per frame"`. */
  readonly title: string;
  /** Unit, e.g. `"exits/frame"`, `"frames/s"`, `"×"`. */
  readonly unit: string;
  /** `"log"` for values spanning decades (exits, rates); `"linear"` otherwise. */
  readonly scale: "log" | "linear";
  /** Which direction is an improvement (for `--compare`). */
  readonly better: "higher" | "lower";
  /**
   * Relative change below which `--compare` calls two runs equal (default 0.05): small for
   * counted values (exits are exact), larger for timed ones.
   */
  readonly noise?: number;
}

/** A dashed reference line across the value axis, e.g. "1× = no change" or a target. */
export interface ChartRule {
  /** Where on the value axis. */
  readonly value: number;
  /** Its label. */
  readonly label: string;
}

/** A chart as a suite describes it: horizontal grouped bars, optionally in column panels. */
export interface ChartSpec {
  /** File-name part: the chart is written to `charts/<suite>-<id>.svg`. Lowercase, digits and `-`. */
  readonly id: string;
  /** Title (say what is compared). */
  readonly title: string;
  /** Subtitle lines (how it was measured, what a missing bar means). */
  readonly subtitle?: readonly string[];
  /** The category axis (rows of bars). */
  readonly category: {
    /** Axis title. */
    readonly title: string;
    /** Order of the categories (default: first appearance in {@link points}). */
    readonly order?: readonly string[];
  };
  /** Column panels, one per facet value. */
  readonly facet?: {
    /** Header title. */
    readonly title: string;
    /** Order of the panels (default: first appearance). */
    readonly order?: readonly string[];
  };
  /** The value axis. */
  readonly value: ChartValueAxis;
  /**
   * `"grouped"` (default): one bar per series in every category, side by side.
   * `"single"`: one bar per category, coloured by its series (categories that are each
   * one configuration's mechanism, e.g. "LAPIC TMICT" or "pvclock").
   */
  readonly layout?: "grouped" | "single";
  /** Legend title (default `"configuration"`). */
  readonly legendTitle?: string;
  /** The series, in legend order. */
  readonly series: readonly ChartSeries[];
  /** The bars. Non-finite values are left out. */
  readonly points: readonly ChartPoint[];
  /** Reference lines. */
  readonly rules?: readonly ChartRule[];
}

/** A chart id is safe in a file name. */
const ID = /^[a-z0-9][a-z0-9-]*$/;

/**
 * Checks that a spec can be drawn: a file-safe id, distinct series keys and
 * configurations, and points that name a known series.
 *
 * @returns the problems found (empty when the spec is fine)
 */
export function validateChart(spec: ChartSpec): string[] {
  const problems: string[] = [];
  if (!ID.test(spec.id)) problems.push(`id ${JSON.stringify(spec.id)} is not [a-z0-9-]+`);
  const keys = new Set<string>();
  const configs = new Set<ConfigKey>();
  for (const s of spec.series) {
    if (keys.has(s.key)) problems.push(`series key ${s.key} appears twice`);
    if (configs.has(s.config))
      problems.push(
        `configuration ${s.config} has two series (colours must stay one per configuration)`,
      );
    if (!(s.config in CONFIGS)) problems.push(`unknown configuration ${s.config}`);
    keys.add(s.key);
    configs.add(s.config);
  }
  const cells = new Set<string>();
  for (const p of spec.points) {
    if (!keys.has(p.series)) problems.push(`point of unknown series ${p.series}`);
    if (spec.facet !== undefined && p.facet === undefined)
      problems.push(`point ${p.category} has no facet`);
    const cell = `${p.facet ?? ""}\u0000${p.category}\u0000${spec.layout === "single" ? "" : p.series}`;
    if (cells.has(cell)) problems.push(`two bars for ${p.category} / ${p.series}`);
    cells.add(cell);
  }
  return problems;
}

/**
 * Formats a value for a bar label or a table: 3 significant digits, thousands as `k` and
 * millions as `M`, exact zero as `0`.
 */
export function formatValue(v: number): string {
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "n/a";
  if (v === 0) return "0";
  const a = Math.abs(v);
  const sig = (x: number): string => {
    const s = x.toPrecision(3);
    return s.includes("e") ? String(Number(s)) : s.includes(".") ? s.replace(/\.?0+$/, "") : s;
  };
  if (a >= 1e9) return `${sig(v / 1e9)} G`;
  if (a >= 1e6) return `${sig(v / 1e6)} M`;
  if (a >= 1e4) return `${sig(v / 1e3)} k`;
  if (a >= 1000) return Math.round(v).toLocaleString("en-US");
  return sig(v);
}

/** File name of a suite's chart, relative to the results directory. */
export function chartPath(suite: string, id: string): string {
  return `charts/${suite}-${id}.svg`;
}
