import { execFileSync, spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { compareReports, formatCompare, parseCell, readReport } from "../src/compare.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const fixture = (name: string): string => path.join(here, "fixtures", name);
const benchDir = path.join(here, "..");

describe("--compare", () => {
  const a = readReport(fixture("compare-a.json"));
  const b = readReport(fixture("compare-b.json"));

  it("gives one row per measurement present in both reports, judged against its noise margin", () => {
    const rows = compareReports(a, b).map((r) => ({
      ...r,
      change: Math.round(r.change * 1000) / 1000,
    }));
    expect(rows).toEqual([
      // Chart points: exits are lower-is-better with a 2% margin …
      {
        suite: "nic-compare",
        metric: "exits / 64 B / RTL8139",
        unit: "exits/frame",
        a: 5,
        b: 5,
        change: 0,
        margin: 0.02,
        verdict: "~",
      },
      {
        suite: "nic-compare",
        metric: "exits / 64 B / virtio-net",
        unit: "exits/frame",
        a: 1,
        b: 1.5,
        change: 0.5,
        margin: 0.02,
        verdict: "regression",
      },
      // … rates higher-is-better, margin = the larger of either run's noise and the chart's 10%.
      {
        suite: "nic-compare",
        metric: "rate / 64 B / RTL8139",
        unit: "frames/s",
        a: 100000,
        b: 120000,
        change: 0.2,
        margin: 0.15,
        verdict: "improvement",
      },
      {
        suite: "nic-compare",
        metric: "rate / 64 B / virtio-net",
        unit: "frames/s",
        a: 200000,
        b: 190000,
        change: -0.05,
        margin: 0.1,
        verdict: "~",
      },
      // A suite without charts: its table cells, 10% margin (or the cell's ±), no direction.
      {
        suite: "old-suite",
        metric: "t / a, x / ns/chain",
        unit: "",
        a: 100,
        b: 120,
        change: 0.2,
        margin: 0.1,
        verdict: "changed",
      },
      {
        suite: "old-suite",
        metric: "t / b, y / ns/chain",
        unit: "",
        a: 50,
        b: 52,
        change: 0.04,
        margin: 0.1,
        verdict: "~",
      },
    ]);
  });

  it("prints the rows with the margin and marks the regression", () => {
    const text = formatCompare(compareReports(a, b), a, b, ["compare-a.json", "compare-b.json"]);
    const lines = text.split("\n");
    expect(lines[0]).toBe("compare-a.json: 2026-01-01T00:00:00.000Z (commit aaa1111, load 0.5)");
    expect(lines[1]).toBe("compare-b.json: 2026-01-02T00:00:00.000Z (commit bbb2222, load 1.5)");
    const row = (metric: string): string => lines.find((l) => l.includes(metric)) ?? "";
    expect(row("exits / 64 B / virtio-net")).toMatch(
      /1 exits\/frame\s+1\.5 exits\/frame\s+\+50\.0%\s+±2\.0%\s+REGRESSION$/,
    );
    expect(row("rate / 64 B / RTL8139")).toMatch(
      /100 k frames\/s\s+120 k frames\/s\s+\+20\.0%\s+±15\.0%\s+improved$/,
    );
    expect(row("rate / 64 B / virtio-net")).toMatch(/-5\.0%\s+±10\.0%\s+~$/);
    const busy = formatCompare([], { ...a, environment: { loadAverage: 4.5, cpus: 2 } }, b);
    expect(busy.split("\n")[0]).toContain("busy machine (load above its CPU count)");
    expect(lines.at(-1)).toBe(
      "6 rows: 1 regression(s), 1 improvement(s), 1 changed (no direction), 3 within the noise margin",
    );
  });

  it("parses formatted table cells", () => {
    expect(parseCell("1,234")).toEqual({ value: 1234, noise: 0 });
    expect(parseCell("99.74 ±0.9%")?.value).toBe(99.74);
    expect(parseCell("99.74 ±0.9%")?.noise).toBeCloseTo(0.009, 12);
    expect(parseCell("5.0×")).toEqual({ value: 5, noise: 0 });
    expect(parseCell("72.9 %")).toEqual({ value: 72.9, noise: 0 });
    expect(parseCell("ArrayBuffer")).toBeNull();
    expect(parseCell("613.5–957.8")).toBeNull();
  });

  it("runs from the command line, and --strict fails on a regression", () => {
    const args = [
      "--conditions=@pvkit/source",
      "--import",
      "tsx",
      "src/main.ts",
      "--compare",
      "test/fixtures/compare-a.json",
      "test/fixtures/compare-b.json",
    ];
    const out = execFileSync(process.execPath, args, { cwd: benchDir, encoding: "utf8" });
    expect(out).toContain("REGRESSION");
    expect(out).toContain("6 rows: 1 regression(s)");
    const strict = spawnSync(process.execPath, [...args, "--strict"], {
      cwd: benchDir,
      encoding: "utf8",
    });
    expect(strict.status).toBe(1);
    expect(() => readReport(fixture("../charts.test.ts"))).toThrow();
  }, 60_000);
});
