import { ACCESS_WRITE, PAGE_SIZE, PTE_A, PTE_P, PTE_RW, PTE_US, pteHi, pteLo } from "@pvkit/hypercall";
import { expect, test } from "vitest";
import { buildSpace, setupPv } from "./helpers.js";

test("smoke: build, map, translate", () => {
  const env = setupPv();
  const t = buildSpace(env);
  const data = env.allocPfn();
  expect(env.update(env.slot(t.l1, 3), env.mfn(data), PTE_P | PTE_RW | PTE_US | PTE_A)).toBe(0);
  expect(env.v.translate(3 * PAGE_SIZE + 5, ACCESS_WRITE)).toBe(env.mfn(data) * PAGE_SIZE + 5);
  expect(env.hv.frames.info(env.mfn(t.l1)).type).toBe(1);
  expect(env.hv.frames.info(env.mfn(data)).typeCount).toBe(1);
  void pteHi; void pteLo;
});
