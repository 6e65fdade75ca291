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
 * - `--strict`: exit 1 when a check misses its target
 *
 * @module
 */

import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  describeEnvironment,
  jsonReport,
  markdownReport,
  type Report,
  textSuite,
} from "./report.js";
import type { SuiteOptions, SuiteResult } from "./suite.js";
import { suites } from "./suites/index.js";

const HELP = `usage: pnpm bench [suite...] [--all] [--list] [--quick] [--max-time s] [--min-samples n] [--out dir] [--dry-run] [--strict]`;

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
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
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
  const options: SuiteOptions = { maxTime, minSamples, quick, log: (line) => console.log(line) };

  const results: SuiteResult[] = [];
  for (const suite of picked) {
    const started = performance.now();
    const result = await suite.run(options);
    results.push(result);
    console.log(`\n${textSuite(result)}\n`);
    console.log(`(${suite.name} took ${((performance.now() - started) / 1000).toFixed(1)} s)\n`);
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
  if (!values["dry-run"]) {
    mkdirSync(outDir, { recursive: true });
    // latest.* = this run; <suite>.* = that suite's last run (kept when other suites run alone).
    writeFileSync(path.join(outDir, "latest.json"), jsonReport(report));
    writeFileSync(path.join(outDir, "latest.md"), markdownReport(report));
    for (const r of results) {
      const one = makeReport([r]);
      writeFileSync(path.join(outDir, `${r.name}.json`), jsonReport(one));
      writeFileSync(path.join(outDir, `${r.name}.md`), markdownReport(one));
    }
    console.log(
      `wrote ${path.join(outDir, "latest.json")}, latest.md and ${results.map((r) => `${r.name}.{json,md}`).join(", ")}`,
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
