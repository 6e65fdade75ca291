/**
 * What a benchmark suite is to the runner (`main.ts`): a name to pick it by, a `run`
 * that measures and returns its results as tables, pass/fail checks and raw data, which
 * the runner prints and writes to `bench/results/`.
 *
 * @module
 */

import type { ChartSpec } from "./chart-spec.js";

/** Options the runner hands every suite. */
export interface SuiteOptions {
  /** Longest time benchmark.js may spend sampling one benchmark, in seconds. */
  readonly maxTime: number;
  /** Fewest samples benchmark.js takes of one benchmark. */
  readonly minSamples: number;
  /** A shortened run (smoke test of the suite itself; numbers are rough). */
  readonly quick: boolean;
  /** Prints one progress line. */
  readonly log: (line: string) => void;
  /**
   * Reports how far the suite is: `done` of `total` steps (any unit the suite likes, e.g.
   * measurements). The runner draws a progress bar from it on a terminal; without these
   * calls the bar estimates from the suite's previous run time. Optional: a suite run
   * from a test gets none.
   */
  readonly progress?: (done: number, total: number) => void;
}

/** A table of results: one header row, then rows of already formatted cells. */
export interface ResultTable {
  /** Heading shown above the table. */
  readonly title: string;
  /** Column headings. */
  readonly columns: readonly string[];
  /** Cells, one array per row, as long as {@link columns}. */
  readonly rows: readonly (readonly string[])[];
}

/** A target a suite checks its measurement against. */
export interface ResultCheck {
  /** What was checked, e.g. `"a / ArrayBuffer / zero-copy: pvkit ≤ 3× bare"`. */
  readonly name: string;
  /** The measured value. */
  readonly value: number;
  /** The limit the value must not exceed. */
  readonly limit: number;
  /** Unit of {@link value} and {@link limit}, e.g. `"×"` or `"B/chain"`. */
  readonly unit: string;
  /** Whether `value ≤ limit`. */
  readonly pass: boolean;
}

/** What one suite run produces. */
export interface SuiteResult {
  /** The suite's name (as picked on the command line). */
  readonly name: string;
  /** A one-line title for the report. */
  readonly title: string;
  /** What is measured and how, for the report (Markdown allowed). */
  readonly description: string;
  /** Tables to print and report. */
  readonly tables: readonly ResultTable[];
  /** Targets and whether they were met. */
  readonly checks: readonly ResultCheck[];
  /** Notes for the report (one paragraph each). */
  readonly notes: readonly string[];
  /** Raw measurements (JSON-serialisable, keys in a fixed order). */
  readonly data: unknown;
  /**
   * Charts of the results, as typed series: the runner renders each to
   * `results/charts/<suite>-<id>.svg` and embeds it in the reports, and `--compare` reads
   * them as measurements. See `chart-spec.ts` (colours are fixed per configuration).
   */
  readonly charts?: readonly ChartSpec[];
  /** Wall time of the run in seconds (set by the runner). */
  readonly seconds?: number;
}

/** A registered benchmark suite. */
export interface Suite {
  /** Short name used on the command line (`pnpm bench split-queue`). */
  readonly name: string;
  /** One line saying what the suite measures. */
  readonly summary: string;
  /**
   * Part of the main job: what `pnpm bench` runs when no suite is named (the
   * emulated-vs-paravirtual comparisons, short enough to finish in about a minute).
   * The others run when named, or all with `--all`.
   */
  readonly main?: boolean;
  /** Runs the suite. */
  run(options: SuiteOptions): Promise<SuiteResult>;
}
