/**
 * Turns suite results into a report: a plain-text table for the terminal, and a JSON and
 * a Markdown file with a fixed layout (keys in a fixed order, numbers already rounded by
 * the suites) so that a committed report diffs cleanly against the next run.
 *
 * @module
 */

import { execFileSync } from "node:child_process";
import os from "node:os";
import { chartPath } from "./chart-spec.js";
import { type ClaimRow, claimsTable } from "./claims.js";
import { chartsFor } from "./derived-charts.js";
import type { ResultTable, SuiteResult } from "./suite.js";

/** Where and on what the benchmark ran. */
export interface Environment {
  /** Node.js version (`process.version`). */
  readonly node: string;
  /** V8 version. */
  readonly v8: string;
  /** `platform arch`. */
  readonly os: string;
  /** CPU model as the OS names it. */
  readonly cpu: string;
  /** Logical CPUs. */
  readonly cpus: number;
  /** Total RAM in GiB. */
  readonly memoryGiB: number;
  /** 1-minute load average when the run started (a busy machine makes every number slower and noisier). */
  readonly loadAverage: number;
  /** The checkout's commit (`git describe --always --dirty`), or `"unknown"`. */
  readonly commit: string;
}

/** The whole report as written to `latest.json`. */
export interface Report {
  /** Format version of this file. */
  readonly schema: 1;
  /** When the run started (ISO 8601, UTC). */
  readonly date: string;
  /** Machine and runtime. */
  readonly environment: Environment;
  /** Runner options. */
  readonly options: {
    readonly maxTimeSeconds: number;
    readonly minSamples: number;
    readonly quick: boolean;
  };
  /** Checks passed / total over every suite. */
  readonly summary: { readonly checks: number; readonly passed: number };
  /** One entry per suite that ran, in run order. */
  readonly suites: readonly SuiteResult[];
}

/** Describes the machine and runtime this process runs on. */
export function describeEnvironment(cwd: string): Environment {
  let commit = "unknown";
  try {
    commit = execFileSync("git", ["describe", "--always", "--dirty"], {
      cwd,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    // not a git checkout, or no git: leave "unknown"
  }
  const cpus = os.cpus();
  return {
    node: process.version,
    v8: process.versions.v8,
    os: `${os.platform()} ${os.arch()}`,
    cpu: cpus[0]?.model.trim() ?? "unknown",
    cpus: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadAverage: Math.round((os.loadavg()[0] ?? 0) * 100) / 100,
    commit,
  };
}

/** Formats a table as aligned plain text (for the terminal). */
export function textTable(table: ResultTable): string {
  const widths = table.columns.map((c, i) =>
    Math.max(c.length, ...table.rows.map((r) => (r[i] ?? "").length)),
  );
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [table.title, line(table.columns), rule, ...table.rows.map(line)].join("\n");
}

const cell = (s: string): string => s.replace(/\|/g, "\\|");

/** Formats a table as GitHub Markdown. */
export function markdownTable(table: ResultTable): string {
  const head = `| ${table.columns.map(cell).join(" | ")} |`;
  const sep = `| ${table.columns.map(() => "---").join(" | ")} |`;
  const rows = table.rows.map((r) => `| ${r.map(cell).join(" | ")} |`);
  return [head, sep, ...rows].join("\n");
}

/** The terminal summary of one suite: its tables and checks. */
export function textSuite(result: SuiteResult): string {
  const parts = [`== ${result.name}: ${result.title}`];
  for (const t of result.tables) parts.push(textTable(t));
  if (result.checks.length > 0) {
    parts.push(
      [
        "checks",
        ...result.checks.map(
          (c) =>
            `  [${c.pass ? "pass" : "FAIL"}] ${c.name}: ${c.value} ${c.unit} (limit ${c.limit} ${c.unit})`,
        ),
      ].join("\n"),
    );
  }
  return parts.join("\n\n");
}

/** What the Markdown report adds to the suites' own results. */
export interface MarkdownExtras {
  /** Embed each suite's charts (`charts/<suite>-<id>.svg`, written by the runner); default true. */
  readonly charts?: boolean;
  /** The claims table, as a section after the header. */
  readonly claims?: readonly ClaimRow[];
  /** Path of the headline chart relative to the report, shown first. */
  readonly headline?: string;
}

/** The whole report as Markdown. */
export function markdownReport(report: Report, extras: MarkdownExtras = {}): string {
  const env = report.environment;
  const out: string[] = [
    "# pvkit benchmark report",
    "",
    "| | |",
    "| --- | --- |",
    `| date | ${report.date} |`,
    `| commit | ${cell(env.commit)} |`,
    `| node | ${env.node} (V8 ${env.v8}) |`,
    `| os | ${env.os} |`,
    `| cpu | ${cell(env.cpu)} × ${env.cpus} |`,
    `| memory | ${env.memoryGiB} GiB |`,
    `| load average at start | ${env.loadAverage} (on ${env.cpus} CPUs) |`,
    `| options | maxTime ${report.options.maxTimeSeconds} s, minSamples ${report.options.minSamples}${report.options.quick ? ", quick" : ""} |`,
    `| checks | ${report.summary.passed} of ${report.summary.checks} passed |`,
  ];
  if (extras.headline !== undefined) {
    out.push(
      "",
      `![exits per operation: full emulation vs hardware assist + PV I/O vs full PV](${extras.headline})`,
    );
  }
  if (extras.claims !== undefined && extras.claims.length > 0) {
    out.push(
      "",
      "## The lecture's claims",
      "",
      "Computed from the latest result of each suite in this directory (see `claims.md`; the source column names the run).",
      "",
      claimsTable(extras.claims),
    );
  }
  for (const s of report.suites) {
    out.push("", `## ${s.name}: ${s.title}`, "", s.description);
    const charts = extras.charts === false ? [] : chartsFor(s);
    if (charts.length > 0) {
      out.push("", "### charts", "");
      for (const c of charts) out.push(`![${cell(c.title)}](${chartPath(s.name, c.id)})`, "");
      out.pop();
    }
    for (const t of s.tables) out.push("", `### ${t.title}`, "", markdownTable(t));
    if (s.checks.length > 0) {
      out.push(
        "",
        "### checks",
        "",
        "| check | value | limit | result |",
        "| --- | --- | --- | --- |",
      );
      for (const c of s.checks) {
        out.push(
          `| ${cell(c.name)} | ${c.value} ${c.unit} | ${c.limit} ${c.unit} | ${c.pass ? "pass" : "**FAIL**"} |`,
        );
      }
    }
    if (s.notes.length > 0) {
      out.push("", "### notes", "");
      for (const n of s.notes) out.push(`- ${n}`);
    }
  }
  return `${out.join("\n")}\n`;
}

/** The whole report as JSON (2-space indent, trailing newline). */
export function jsonReport(report: Report): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}
