/**
 * The benchmark runner: `pnpm bench [suite…] [options]`.
 *
 * Runs the main-job suites by default (the emulated-vs-PV comparisons), the suites named
 * on the command line, or every suite with `--all`,
 * prints their tables, and writes `latest.json` and `latest.md` (this run) and
 * `<suite>.json` / `<suite>.md` (each suite's last run) to `bench/results/`.
 *
 * Options:
 * - `--list`: print the suites and exit (`*` marks the main job)
 * - `--all`: run every suite
 * - `--quick`: short sampling (a smoke run; numbers are rough)
 * - `--max-time <s>`: benchmark.js sampling time per benchmark, split over a suite's rounds (default 2, quick 0.3)
 * - `--min-samples <n>`: benchmark.js `minSamples` (default 10, quick 5)
 * - `--out <dir>`: where to write the report (default `bench/results`)
 * - `--dry-run`: write no files
 * - `--strict`: exit 1 when a check misses its target (with `--compare`: when a row regressed)
 * - `--compare A.json B.json`: print what changed from report A to report B, row by row,
 *   with the noise margin (see `compare.ts`); runs nothing
 *
 * Besides the tables, every run renders each suite's charts to `charts/<suite>-<id>.svg`
 * and embeds them in the Markdown, re-evaluates the lecture's claims from the latest
 * result of every suite into `claims.md` (and a section of `latest.md`), and, when the
 * whole main job ran, draws the headline chart `charts/headline.svg`.
 *
 * @module
 */

import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chartPath } from "./chart-spec.js";
import { renderChart } from "./charts.js";
import { CLAIM_SOURCES, claimsMarkdown, evaluateClaims, loadSnapshots } from "./claims.js";
import { compareReports, formatCompare, readReport } from "./compare.js";
import { chartsFor, headlineChart } from "./derived-charts.js";
import { startProgress } from "./progress.js";
import {
  describeEnvironment,
  jsonReport,
  markdownReport,
  type Report,
  textSuite,
} from "./report.js";
import type { SuiteOptions, SuiteResult } from "./suite.js";

const HELP = `usage: pnpm bench [suite...] [--all] [--list] [--quick] [--max-time s] [--min-samples n] [--out dir] [--dry-run] [--strict]
       pnpm bench --compare A.json B.json [--strict]`;

/** A path given on the command line: relative to where `pnpm bench` was typed (pnpm runs the script in bench/). */
function userPath(p: string): string {
  const base = process.env.INIT_CWD ?? process.cwd();
  const fromUser = path.resolve(base, p);
  return existsSync(fromUser) ? fromUser : path.resolve(p);
}

/** The run time of a suite's previous run, from its `<suite>.json`, if recorded. */
function previousSeconds(outDir: string, name: string): number | undefined {
  try {
    const r = JSON.parse(readFileSync(path.join(outDir, `${name}.json`), "utf8")) as {
      suites?: { seconds?: unknown }[];
    };
    const s = r.suites?.[0]?.seconds;
    return typeof s === "number" && s > 0 ? s : undefined;
  } catch {
    return undefined;
  }
}

async function main(argv: readonly string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      list: { type: "boolean", default: false },
      all: { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
      "max-time": { type: "string" },
      "min-samples": { type: "string" },
      out: { type: "string" },
      "dry-run": { type: "boolean", default: false },
      strict: { type: "boolean", default: false },
      compare: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (values.compare) {
    if (positionals.length !== 2) {
      console.error("--compare takes two report files: pnpm bench --compare A.json B.json");
      return 2;
    }
    const [fa, fb] = positionals.map(userPath) as [string, string];
    const a = readReport(fa);
    const b = readReport(fb);
    const rows = compareReports(a, b);
    console.log(formatCompare(rows, a, b, [path.basename(fa), path.basename(fb)]));
    return values.strict && rows.some((r) => r.verdict === "regression") ? 1 : 0;
  }
  // Loaded here, not at the top: --compare needs none of the suites' packages.
  const { suites } = await import("./suites/index.js");
  if (values.list) {
    for (const s of suites) console.log(`${s.main ? "*" : " "} ${s.name.padEnd(16)} ${s.summary}`);
    return 0;
  }
  const unknown = positionals.filter((n) => !suites.some((s) => s.name === n));
  if (unknown.length > 0) {
    console.error(
      `unknown suite(s): ${unknown.join(", ")}; known: ${suites.map((s) => s.name).join(", ")}`,
    );
    return 2;
  }
  const picked =
    positionals.length > 0
      ? suites.filter((s) => positionals.includes(s.name))
      : values.all
        ? suites
        : suites.filter((s) => s.main === true);
  const quick = values.quick;
  const maxTime = Number(values["max-time"] ?? (quick ? 0.3 : 2));
  const minSamples = Number(values["min-samples"] ?? (quick ? 5 : 10));
  if (!(maxTime > 0) || !(Number.isInteger(minSamples) && minSamples > 0)) {
    console.error(
      "--max-time must be a positive number of seconds and --min-samples a positive integer",
    );
    return 2;
  }
  if (typeof (globalThis as { gc?: unknown }).gc !== "function") {
    console.warn(
      "warning: run node with --expose-gc (as `pnpm bench` does) to measure allocation per operation",
    );
  }

  const here = path.dirname(fileURLToPath(import.meta.url));
  const outDir = path.resolve(values.out ?? path.join(here, "..", "results"));
  const date = new Date().toISOString();
  const environment = describeEnvironment(here);
  console.log(
    `pvkit bench — ${environment.cpu} × ${environment.cpus}, node ${environment.node}, ${date}`,
  );
  const results: SuiteResult[] = [];
  for (const suite of picked) {
    const started = performance.now();
    const bar = startProgress(suite.name, previousSeconds(outDir, suite.name));
    const options: SuiteOptions = {
      maxTime,
      minSamples,
      quick,
      log: (line) => bar.log(line),
      progress: (done, total) => bar.progress(done, total),
    };
    let result: SuiteResult;
    try {
      result = await suite.run(options);
    } finally {
      bar.stop();
    }
    const seconds = Math.round((performance.now() - started) / 100) / 10;
    results.push({ ...result, seconds });
    console.log(`\n${textSuite(result)}\n`);
    console.log(`(${suite.name} took ${seconds.toFixed(1)} s)\n`);
  }

  const makeReport = (suiteResults: readonly SuiteResult[]): Report => {
    const checks = suiteResults.flatMap((r) => r.checks);
    return {
      schema: 1,
      date,
      environment,
      options: { maxTimeSeconds: maxTime, minSamples, quick },
      summary: { checks: checks.length, passed: checks.filter((c) => c.pass).length },
      suites: suiteResults,
    };
  };
  const report = makeReport(results);
  console.log(`checks: ${report.summary.passed} of ${report.summary.checks} passed`);

  // The claims: this run's results over the latest result of every other suite on disk.
  const claims = evaluateClaims(loadSnapshots(outDir, CLAIM_SOURCES, results, date));
  console.log("\nthe lecture's claims:");
  for (const c of claims) console.log(`  [${c.verdict}] ${c.claim}: ${c.measured}`);

  // The headline chart, when the whole main job ran.
  const mainJob = suites.filter((s) => s.main === true).every((s) => picked.includes(s));
  const headline = mainJob ? headlineChart(results, date) : null;

  if (!values["dry-run"]) {
    mkdirSync(path.join(outDir, "charts"), { recursive: true });
    const t0 = performance.now();
    const charts: [string, ReturnType<typeof chartsFor>[number]][] = results.flatMap((r) =>
      chartsFor(r).map((c) => [chartPath(r.name, c.id), c] as [string, typeof c]),
    );
    if (headline !== null) charts.push(["charts/headline.svg", headline]);
    for (const [file, spec] of charts) {
      try {
        writeFileSync(path.join(outDir, file), await renderChart(spec));
      } catch (e) {
        console.warn(`warning: chart ${file} was not drawn: ${(e as Error).message}`);
      }
    }
    console.log(
      `drew ${charts.length} charts in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    // latest.* = this run; <suite>.* = that suite's last run (kept when other suites run alone).
    writeFileSync(path.join(outDir, "latest.json"), jsonReport(report));
    writeFileSync(
      path.join(outDir, "latest.md"),
      markdownReport(report, {
        claims,
        ...(headline !== null ? { headline: "charts/headline.svg" } : {}),
      }),
    );
    for (const r of results) {
      const one = makeReport([r]);
      writeFileSync(path.join(outDir, `${r.name}.json`), jsonReport(one));
      writeFileSync(path.join(outDir, `${r.name}.md`), markdownReport(one));
    }
    writeFileSync(path.join(outDir, "claims.md"), claimsMarkdown(claims, date));
    console.log(
      `wrote ${path.join(outDir, "latest.json")}, latest.md, claims.md, charts/ and ${results.map((r) => `${r.name}.{json,md}`).join(", ")}`,
    );
  }
  return values.strict && report.summary.passed < report.summary.checks ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  },
);
