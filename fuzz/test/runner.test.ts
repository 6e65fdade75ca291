import { describe, expect, it } from "vitest";
import {
  caseSeed,
  formatSeed,
  generateCase,
  playCase,
  replayCommand,
  runFuzz,
} from "../src/runner.js";
import { targets } from "../src/targets/index.js";
import { toyBroken, toyHang, toyThrows } from "./toy-targets.js";

const REGISTRY = new URL("./toy-targets.ts", import.meta.url).href;
const SEED = 0x00c0ffee;

describe("the fuzz runner", () => {
  it("derives one seed per (seed, target, case) and regenerates the same case", () => {
    expect(caseSeed(SEED, "ring", 7)).toBe(caseSeed(SEED, "ring", 7));
    expect(caseSeed(SEED, "ring", 7)).not.toBe(caseSeed(SEED, "ring", 8));
    expect(caseSeed(SEED, "ring", 7)).not.toBe(caseSeed(SEED, "pci-config", 7));
    expect(generateCase(toyBroken, SEED, 3)).toEqual(generateCase(toyBroken, SEED, 3));
    expect(replayCommand("ring", SEED, 42)).toBe(
      "npx --yes pnpm@12.4.2 fuzz ring --seed 00c0ffee --case 42",
    );
  });

  it("reports a planted bug from a worker with its seed, case, replay command and shrunk case", async () => {
    const [r] = await runFuzz({
      registry: REGISTRY,
      targets: ["toy-broken"],
      seed: SEED,
      cases: 200,
      workers: 1,
      maxFindings: 1,
    });
    expect(r!.findings).toHaveLength(1);
    const f = r!.findings[0]!;
    expect(f.invariant).toBe("model");
    expect(f.seed).toBe(SEED);
    expect(f.replay).toBe(
      `npx --yes pnpm@12.4.2 fuzz toy-broken --seed ${formatSeed(SEED)} --case ${f.caseIndex}`,
    );
    expect(f.shrunk).toMatch(/^\[900\]/); // fast-check's shrinking from the same seed
    // The first failing case is the one reported, and it replays.
    for (let i = 0; i < f.caseIndex; i++)
      expect(await playCase(toyBroken, SEED, i, { shrink: false })).toBeNull();
    const again = await playCase(toyBroken, SEED, f.caseIndex, { shrink: false });
    expect(again?.invariant).toBe("model");
  }, 60_000);

  it("turns an escaped exception into a finding", async () => {
    const [r] = await runFuzz({
      registry: REGISTRY,
      targets: ["toy-throws"],
      seed: SEED,
      cases: 50,
      workers: 1,
      maxFindings: 1,
    });
    expect(r!.findings[0]?.invariant).toBe("escaped-exception");
    expect(r!.findings[0]?.message).toContain("TypeError");
  }, 60_000);

  it("catches a hanging case with the watchdog and names its seed and case", async () => {
    let firstHang = 0;
    while ((generateCase(toyHang, SEED, firstHang) as number) < 90) firstHang++;
    const t0 = Date.now();
    const [r] = await runFuzz({
      registry: REGISTRY,
      targets: ["toy-hang"],
      seed: SEED,
      cases: 1000,
      workers: 1,
      hangMs: 1000,
    });
    expect(Date.now() - t0).toBeLessThan(40_000);
    expect(r!.findings).toHaveLength(1);
    const f = r!.findings[0]!;
    expect(f.invariant).toBe("hang");
    expect(f.caseIndex).toBe(firstHang);
    expect(f.replay).toContain(`--case ${firstHang}`);
    expect(r!.cases).toBe(firstHang);
  }, 60_000);

  it("runs targets in parallel workers and counts cases per target", async () => {
    const rs = await runFuzz({
      registry: REGISTRY,
      targets: ["toy-broken", "toy-throws"],
      seed: SEED,
      cases: 5,
      workers: 2,
      maxFindings: 100,
    });
    expect(rs.map((r) => r.target)).toEqual(["toy-broken", "toy-throws"]);
    for (const r of rs) expect(r.cases).toBe(5);
    void toyThrows;
  }, 60_000);
});

describe("every registered target", () => {
  it("has a unique kebab-case name", () => {
    const names = targets.map((t) => t.name);
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^[a-z0-9]+(-[a-z0-9]+)*$/);
  });

  it.each(targets.map((t) => [t.name, t] as const))(
    "%s: 25 cases with a fixed seed find nothing",
    async (_name, target) => {
      for (let i = 0; i < 25; i++) {
        const f = await playCase(target, 0x17, i, { shrinkMs: 5000 });
        expect(
          f === null ? null : `${f.invariant}: ${f.message}\n${f.replay}\n${f.shrunk ?? ""}`,
        ).toBeNull();
      }
    },
    120_000,
  );
});
