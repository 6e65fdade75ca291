import {
  ACCESS_WRITE,
  createGuestMmu,
  type Domain,
  type EmulatedGuestMmu,
  FAULT_PROTECTION,
  type GuestMmu,
  type HapMmu,
  Hypervisor,
  PAGE_SIZE,
  PfnPool,
  ShadowMmu,
} from "@pvkit/hypercall";
import fc from "fast-check";
import { describe, expect, test } from "vitest";

const PAGES = 2048;
const TABLE_POOL = 256;

/** One guest of each mode on its own hypervisor, with the same pseudo-physical layout. */
function makeMode(mode: "pv" | "shadow" | "hap"): { mmu: GuestMmu; dom: Domain } {
  const hv = new Hypervisor({ machinePages: PAGES + 600 });
  const pool = new PfnPool(PAGES - 16 - TABLE_POOL, TABLE_POOL);
  const { mmu, domain } = createGuestMmu(hv, mode, { pages: PAGES, scratchPages: 16, pool });
  return { mmu, dom: domain };
}

const MODES = ["pv", "shadow", "hap"] as const;
const BASE = 0x40_0000_0000; // 256 GiB: an L4 slot the guest owns

describe("the three MMU modes agree", () => {
  test("a random address space translates identically (to the frame backing each pfn)", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 4095 }), { minLength: 1, maxLength: 80 }),
        fc.array(fc.integer({ min: 1, max: 1000 }), { minLength: 80, maxLength: 80 }),
        fc.array(fc.boolean(), { minLength: 80, maxLength: 80 }),
        (pages, pfns, writable) => {
          const results = MODES.map((mode) => {
            const { mmu, dom } = makeMode(mode);
            const root = mmu.createAddressSpace();
            expect(root).toBeGreaterThanOrEqual(0);
            expect(mmu.activate(root)).toBe(0);
            for (const [i, p] of pages.entries()) {
              expect(mmu.map(root, BASE + p * PAGE_SIZE, pfns[i]!, writable[i]!)).toBe(0);
            }
            expect(mmu.commit()).toBe(0);
            const out: number[] = [];
            for (let p = 0; p < 4096; p += 7) {
              const va = BASE + p * PAGE_SIZE + 40;
              const i = pages.indexOf(p);
              const r = mmu.translate(va, 0);
              const w = mmu.translate(va, ACCESS_WRITE);
              if (i < 0) {
                expect(r).toBeLessThan(0);
                out.push(-1);
                continue;
              }
              expect(r).toBe(dom.pfnToMfn(pfns[i]!) * PAGE_SIZE + 40);
              expect(w).toBe(writable[i] ? r : FAULT_PROTECTION);
              out.push(pfns[i]!, w === r ? 1 : 0);
            }
            return out;
          });
          expect(results[1]).toEqual(results[0]);
          expect(results[2]).toEqual(results[0]);
        },
      ),
      { seed: 7, numRuns: 15 },
    );
  });

  test("exits per operation: PV batch = 1, trapping = 1 per PTE write, hardware-assisted = 0", () => {
    const N = 300;
    const counts: Record<string, { build: number; links: number }> = {};
    for (const mode of MODES) {
      const { mmu } = makeMode(mode);
      const root = mmu.createAddressSpace();
      mmu.activate(root);
      // Pre-create the tables so the measured phase writes exactly N PTEs.
      expect(mmu.map(root, BASE, 1, true)).toBe(0);
      expect(mmu.map(root, BASE + 511 * PAGE_SIZE, 1, true)).toBe(0);
      mmu.commit();
      const tablesBefore = mmu.tableFrames;
      const e0 = mmu.exits;
      for (let i = 1; i <= N; i++)
        expect(mmu.map(root, BASE + i * PAGE_SIZE, 1 + (i % 50), true)).toBe(0);
      expect(mmu.commit()).toBe(0);
      counts[mode] = { build: mmu.exits - e0, links: mmu.tableFrames - tablesBefore };
    }
    expect(counts.pv!.build).toBe(1);
    expect(counts.shadow!.build).toBe(N);
    expect(counts.hap!.build).toBe(0);
  });

  test("a 2-D walk costs 24 memory references on a TLB miss; a hit costs none", () => {
    const { mmu } = makeMode("hap");
    const root = mmu.createAddressSpace();
    mmu.activate(root);
    mmu.map(root, BASE, 5, true);
    const hap = (mmu as EmulatedGuestMmu).mmu as HapMmu;
    const before = hap.stats.memRefs;
    expect(mmu.translate(BASE, 0)).toBeGreaterThan(0);
    expect(hap.stats.memRefs - before).toBe(24);
    expect(hap.stats.maxWalkRefs).toBe(24);
    const again = hap.stats.memRefs;
    mmu.translate(BASE + 8, 0);
    expect(hap.stats.memRefs).toBe(again);
  });

  test("fork-like copy with copy-on-write: same translations and protections in every mode", () => {
    const N = 200;
    for (const mode of MODES) {
      const { mmu, dom } = makeMode(mode);
      const parent = mmu.createAddressSpace();
      mmu.activate(parent);
      for (let i = 0; i < N; i++) mmu.map(parent, BASE + i * PAGE_SIZE, 10 + i, true);
      expect(mmu.commit()).toBe(0);
      const child = mmu.createAddressSpace();
      for (let i = 0; i < N; i++) {
        expect(mmu.map(child, BASE + i * PAGE_SIZE, 10 + i, false)).toBe(0);
        expect(mmu.protect(parent, BASE + i * PAGE_SIZE, false)).toBe(0);
      }
      expect(mmu.commit()).toBe(0);
      for (let i = 0; i < N; i += 17) {
        const va = BASE + i * PAGE_SIZE;
        expect(mmu.translate(va, ACCESS_WRITE), `${mode} parent write`).toBe(FAULT_PROTECTION);
        expect(mmu.translate(va, 0)).toBe(dom.pfnToMfn(10 + i) * PAGE_SIZE);
      }
      expect(mmu.activate(child)).toBe(0);
      for (let i = 0; i < N; i += 17) {
        const va = BASE + i * PAGE_SIZE;
        expect(mmu.translate(va, 0), `${mode} child read`).toBe(dom.pfnToMfn(10 + i) * PAGE_SIZE);
        expect(mmu.translate(va, ACCESS_WRITE)).toBe(FAULT_PROTECTION);
      }
      expect(mmu.destroy(parent)).toBe(0);
      expect(mmu.destroy(child)).not.toBe(0); // the loaded root cannot be destroyed
    }
  });

  test("unmap removes the translation in every mode after commit", () => {
    for (const mode of MODES) {
      const { mmu } = makeMode(mode);
      const root = mmu.createAddressSpace();
      mmu.activate(root);
      mmu.map(root, BASE, 3, true);
      mmu.commit();
      expect(mmu.translate(BASE, 0)).toBeGreaterThan(0);
      expect(mmu.unmap(root, BASE)).toBe(0);
      expect(mmu.commit()).toBe(0);
      expect(mmu.translate(BASE, 0), mode).toBeLessThan(0);
    }
  });

  test("shadow paging: tables not reachable from CR3 are not write-protected until loaded", () => {
    const { mmu } = makeMode("shadow");
    const shadow = (mmu as EmulatedGuestMmu).mmu as ShadowMmu;
    const a = mmu.createAddressSpace();
    const e0 = mmu.exits;
    for (let i = 0; i < 50; i++) mmu.map(a, BASE + i * PAGE_SIZE, 1, true);
    expect(mmu.exits - e0).toBe(0);
    mmu.activate(a);
    expect(mmu.exits - e0).toBe(1);
    expect(shadow.trackedFrames).toBe(4);
    expect(shadow.stats.shadowEntries).toBe(50);
    mmu.map(a, BASE + 60 * PAGE_SIZE, 1, true);
    expect(mmu.exits - e0).toBe(2);
  });

  test("shadow paging: a hostile self-referencing root does not explode the shadow", () => {
    const hv = new Hypervisor({ machinePages: 600 });
    const dom = hv.createDomain({ pages: 256, kind: "hvm" });
    const shadow = new ShadowMmu(hv, dom);
    // L4 at gfn 1: every entry points back at itself (and one at a frame outside the guest).
    for (let i = 0; i < 512; i++) shadow.guestWrite64(PAGE_SIZE + i * 8, (1 << 12) | 7, 0);
    shadow.guestWrite64(PAGE_SIZE + 8, 0x7fff_f007 >>> 0, 0);
    shadow.loadCr3(1);
    expect(shadow.trackedFrames).toBe(1);
    expect(shadow.stats.shadowEntries).toBe(0);
    expect(shadow.translate(0, 0)).toBeLessThan(0);
  });
});
