import { describe, expect, it } from "vitest";
import {
  describeEnvironment,
  jsonReport,
  markdownReport,
  markdownTable,
  type Report,
  textSuite,
  textTable,
} from "../src/report.js";
import type { ResultTable, SuiteResult } from "../src/suite.js";

const table: ResultTable = {
  title: "t",
  columns: ["name", "value"],
  rows: [
    ["a|b", "1"],
    ["longer name", "22"],
  ],
};

const suite: SuiteResult = {
  name: "s",
  title: "A suite",
  description: "What it does.",
  tables: [table],
  checks: [
    { name: "fast enough", value: 2.5, limit: 3, unit: "×", pass: true },
    { name: "too slow", value: 4, limit: 3, unit: "×", pass: false },
  ],
  notes: ["a note"],
  data: { z: 1, a: [1, 2] },
};

function report(): Report {
  return {
    schema: 1,
    date: "2025-01-01T00:00:00.000Z",
    environment: {
      node: "v20.0.0",
      v8: "11",
      os: "linux x64",
      cpu: "CPU | model",
      cpus: 2,
      memoryGiB: 24,
      loadAverage: 0.5,
      commit: "abc",
    },
    options: { maxTimeSeconds: 3, minSamples: 10, quick: false },
    summary: { checks: 2, passed: 1 },
    suites: [suite],
  };
}

describe("report formatting", () => {
  it("aligns plain-text columns", () => {
    const lines = textTable(table).split("\n");
    expect(lines[0]).toBe("t");
    expect(lines[1]).toBe("name         value");
    expect(lines[3]).toBe("a|b          1");
    expect(lines[4]).toBe("longer name  22");
  });

  it("escapes pipes in Markdown cells and keeps one row per result", () => {
    const md = markdownTable(table).split("\n");
    expect(md[0]).toBe("| name | value |");
    expect(md[1]).toBe("| --- | --- |");
    expect(md[2]).toBe("| a\\|b | 1 |");
    expect(md).toHaveLength(4);
  });

  it("prints pass and FAIL for checks", () => {
    const text = textSuite(suite);
    expect(text).toContain("[pass] fast enough: 2.5 × (limit 3 ×)");
    expect(text).toContain("[FAIL] too slow: 4 × (limit 3 ×)");
  });

  it("writes the Markdown report with environment, tables, checks and notes", () => {
    const md = markdownReport(report());
    expect(md).toContain("| cpu | CPU \\| model × 2 |");
    expect(md).toContain("| checks | 1 of 2 passed |");
    expect(md).toContain("| load average at start | 0.5 (on 2 CPUs) |");
    expect(md).toContain("## s: A suite");
    expect(md).toContain("| too slow | 4 × | 3 × | **FAIL** |");
    expect(md).toContain("- a note");
    expect(md.endsWith("\n")).toBe(true);
  });

  it("embeds each suite's charts, the headline and the claims when asked", () => {
    const withCharts: Report = {
      ...report(),
      suites: [
        {
          ...suite,
          charts: [
            {
              id: "exits",
              title: "Exits | per frame",
              category: { title: "c" },
              value: { title: "v", unit: "u", scale: "log", better: "lower" },
              series: [{ key: "a", label: "a", config: "full-pv" }],
              points: [{ series: "a", category: "x", value: 1 }],
            },
          ],
        },
      ],
    };
    const md = markdownReport(withCharts, {
      headline: "charts/headline.svg",
      claims: [
        {
          id: "c",
          claim: "PV wins",
          measured: "2×",
          criterion: "≥ 2×",
          verdict: "holds",
          source: "s (2025-01-01)",
        },
      ],
    });
    expect(md).toContain(
      "![exits per operation: full emulation vs hardware assist + PV I/O vs full PV](charts/headline.svg)",
    );
    expect(md).toContain("## The lecture's claims");
    expect(md).toContain("| 1 | PV wins | 2× | ≥ 2× | **holds** | s (2025-01-01) |");
    expect(md).toContain("### charts\n\n![Exits \\| per frame](charts/s-exits.svg)");
    expect(md.indexOf("## The lecture's claims")).toBeLessThan(md.indexOf("## s: A suite"));
    expect(markdownReport(withCharts, { charts: false })).not.toContain("### charts");
  });

  it("writes the same JSON for the same report, and it parses back", () => {
    const a = jsonReport(report());
    expect(jsonReport(report())).toBe(a);
    expect(JSON.parse(a)).toEqual(report());
    expect(a.endsWith("}\n")).toBe(true);
  });

  it("describes the environment it runs in", () => {
    const env = describeEnvironment(process.cwd());
    expect(env.node).toBe(process.version);
    expect(env.cpus).toBeGreaterThan(0);
    expect(env.loadAverage).toBeGreaterThanOrEqual(0);
    expect(env.cpu.length).toBeGreaterThan(0);
    expect(env.commit.length).toBeGreaterThan(0);
  });
});
