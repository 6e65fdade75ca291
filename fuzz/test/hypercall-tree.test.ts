/**
 * The `hypercall-tree` fuzz target: a fixed-seed run that exercises success paths, and
 * proof that the model catches a hypervisor that lets a page-table frame be mapped
 * writable (the PV MMU's central rule, reference/xen-pv.md §2).
 */
import type { Hypervisor } from "@pvkit/hypercall";
import * as fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  type HypercallCase,
  hypercallTreeOutcomes,
  hypercallTreeTarget,
  makeHypercallTreeTarget,
} from "../src/targets/hypercall-tree.js";
import { findingOf } from "./finding.js";

/** On the prebuilt tree (L4 1, L3 2, L2 3, L1 4): map the L2 frame writable through the L1. */
const writableL2: HypercallCase = {
  prebuilt: true,
  steps: [
    {
      k: "batch",
      updates: [{ table: 4, slot: 1, target: 3, rw: true, extra: 0, cmd: 0 }],
      foreigndom: null,
    },
  ],
};

describe("hypercall-tree", () => {
  test("a fixed-seed run finds nothing and succeeds as well as refuses", async () => {
    hypercallTreeOutcomes.clear();
    await fc.assert(
      fc.asyncProperty(hypercallTreeTarget.arbitrary, async (c) => hypercallTreeTarget.run(c)),
      { seed: 2024, numRuns: 400 },
    );
    for (const kind of ["batch", "pin", "unpin", "uvm", "baseptr"]) {
      expect(hypercallTreeOutcomes.get(`${kind}:0`) ?? 0).toBeGreaterThan(0);
    }
    expect(hypercallTreeOutcomes.get("batch:-16") ?? 0).toBeGreaterThan(0); // EBUSY seen
  });

  test("the hostile step gets -EBUSY from the real hypervisor", async () => {
    expect(await findingOf(() => hypercallTreeTarget.run(writableL2))).toBeNull();
  });

  test("detects a hypervisor that grants a writable type to a page-table frame", async () => {
    const target = makeHypercallTreeTarget({
      mutate: (hv: Hypervisor) => {
        const mm = (hv as unknown as { mm: { getPageType(m: number, t: number): number } }).mm;
        const real = mm.getPageType.bind(mm);
        mm.getPageType = (m, t) => (t === 7 ? 0 : real(m, t));
      },
    });
    expect((await findingOf(() => target.run(writableL2)))?.invariant).toBe("model");
  });
});
