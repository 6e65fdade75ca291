/**
 * `pnpm fuzz [target…] [--seconds N] [--seed S] [--case N] [--cases N] [--workers W]
 * [--hang-ms T] [--list]` — see fuzz/README.md.
 *
 * Without `--case`: fuzzes the targets (default all) in worker threads for `--seconds`
 * (default 60) of wall-clock time in total, or `--cases` cases each; prints every finding
 * with its replay command and shrunk case, then one summary line per target and the
 * totals; exits 1 on any finding or hang.
 *
 * With `--case N` (one target): replays case N of seed S in this thread, prints it and
 * what happened, shrinks a failure; exits 1 when it fails.
 *
 * @module
 */

import { execFileSync } from "node:child_process";
import { parseArgs } from "node:util";
import {
  describeCase,
  findingReport,
  formatSeed,
  generateCase,
  playCase,
  runFuzz,
  summaryLine,
} from "./runner.js";
import { targets } from "./targets/index.js";

/** The default seed: the commit (first 8 hex digits of HEAD), else the time. */
function defaultSeed(): number {
  try {
    const head = execFileSync("git", ["rev-parse", "HEAD"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    return Number.parseInt(head.trim().slice(0, 8), 16) >>> 0;
  } catch {
    return Date.now() >>> 0;
  }
}

function parseSeed(s: string): number {
  const v = Number.parseInt(s.replace(/^0x/i, ""), 16);
  if (!Number.isFinite(v)) throw new Error(`--seed expects hex digits, got ${s}`);
  return v >>> 0;
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      seconds: { type: "string" },
      seed: { type: "string" },
      case: { type: "string" },
      cases: { type: "string" },
      workers: { type: "string" },
      "hang-ms": { type: "string" },
      list: { type: "boolean" },
    },
  });
  if (values.list) {
    for (const t of targets) console.log(`${t.name.padEnd(18)} [${t.kind}] ${t.description}`);
    return 0;
  }
  const names = positionals.length > 0 ? positionals : targets.map((t) => t.name);
  for (const n of names) {
    if (!targets.some((t) => t.name === n)) {
      console.error(`no fuzz target named ${n}; known: ${targets.map((t) => t.name).join(", ")}`);
      return 2;
    }
  }
  const seed = values.seed === undefined ? defaultSeed() : parseSeed(values.seed);

  if (values.case !== undefined) {
    if (names.length !== 1) {
      console.error("--case replays one case of one target: name the target");
      return 2;
    }
    const target = targets.find((t) => t.name === names[0])!;
    const index = Number(values.case);
    console.log(`replaying ${target.name} case ${index} (seed ${formatSeed(seed)})`);
    console.log(`case: ${describeCase(generateCase(target, seed, index))}`);
    const f = await playCase(target, seed, index);
    if (f === null) {
      console.log("no finding");
      return 0;
    }
    console.log(findingReport(f));
    return 1;
  }

  const seconds = values.seconds === undefined ? 60 : Number(values.seconds);
  const cases = values.cases === undefined ? undefined : Number(values.cases);
  const weights: Record<string, number> = {};
  for (const t of targets) weights[t.name] = t.weight ?? 1;
  console.log(
    `fuzzing ${names.join(", ")} with seed ${formatSeed(seed)} (${cases !== undefined ? `${cases} cases each` : `${seconds} s`})`,
  );
  const results = await runFuzz({
    targets: names,
    seed,
    ...(cases === undefined ? { seconds } : { cases }),
    workers: values.workers === undefined ? 2 : Number(values.workers),
    hangMs: values["hang-ms"] === undefined ? 10_000 : Number(values["hang-ms"]),
    weights,
    log: (line) => console.log(line),
  });
  let findings = 0;
  for (const r of results) {
    for (const f of r.findings) {
      console.log(findingReport(f));
      findings++;
    }
  }
  console.log("── summary");
  for (const r of results) console.log(summaryLine(r));
  const total = results.reduce((a, r) => a + r.cases, 0);
  const ring = results.filter((r) => r.kind === "ring").reduce((a, r) => a + r.cases, 0);
  console.log(
    `total: ${total} cases (${ring} ring cases), ${findings} finding(s), seed ${formatSeed(seed)}`,
  );
  return findings > 0 ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(e);
    process.exitCode = 2;
  },
);
