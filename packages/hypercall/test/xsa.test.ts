/**
 * Hostile-guest cases derived from the Xen Security Advisories in the reference (§3). Each
 * test is named after the advisory whose missing check it exercises.
 */
import {
  ACCESS_WRITE,
  FAULT_PROTECTION,
  GuestPhys,
  Hypercall,
  HypercallClient,
  HypercallPort,
  IretContextLayout,
  MMU_MACHPHYS_UPDATE,
  MMU_PT_UPDATE_PRESERVE_AD,
  MMU_UPDATE_PREEMPTED,
  MMUEXT_CLEAR_PAGE,
  MMUEXT_COPY_PAGE,
  MMUEXT_INVLPG_MULTI,
  MMUEXT_MARK_SUPER,
  MMUEXT_TLB_FLUSH_MULTI,
  MMUEXT_UNMARK_SUPER,
  PAGE_SIZE,
  PGT_l2_page_table,
  PTE_D,
  PTE_P,
  PTE_PS,
  PTE_RW,
  PTE_US,
  pteHi,
  pteLo,
  UVMF_INVLPG,
  UVMF_TLB_FLUSH,
  XENVER_version,
  XenErrno,
} from "@pvkit/hypercall";
import { describe, expect, test } from "vitest";
import { buildSpace, LINK, LINK_RO, type PvEnv, RO, RW, setupPv } from "./helpers.js";

/** Validated, linked L2 tables under the environment's L3 (slots 1..n). */
function extraL2s(env: PvEnv, l3: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const l2 = env.allocPfn();
    expect(env.update(env.slot(l3, i + 1), env.mfn(l2), LINK)).toBe(0);
    out.push(l2);
  }
  return out;
}

describe("writable mapping of a page-table frame, through every path", () => {
  test("XSA-182: the fast path cannot flip RW on an existing read-only mapping of a page table", () => {
    const env = setupPv();
    const t = buildSpace(env);
    expect(env.update(env.slot(t.l1, 7), env.mfn(t.l1), RO)).toBe(0);
    const before = env.snap();
    // Only RW differs from the existing entry: must take the slow path and fail.
    expect(env.update(env.slot(t.l1, 7), env.mfn(t.l1), RO | PTE_RW)).toBe(-XenErrno.EBUSY);
    expect(env.snap()).toEqual(before);
    // Same for the L2 level: a read-only link cannot be upgraded to a writable linear one.
    expect(env.update(env.slot(t.l2, 9), env.mfn(t.l2), LINK_RO)).toBe(0);
    expect(env.update(env.slot(t.l2, 9), env.mfn(t.l2), LINK)).toBe(-XenErrno.EINVAL);
  });

  test("XSA-182 via update_va_mapping, PRESERVE_AD and MMU_PT_UPDATE_NO_TRANSLATE", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const pt = env.mfn(t.l2);
    const before = env.snap();
    expect(env.client.updateVaMapping(3 * PAGE_SIZE, pteLo(pt, RW), pteHi(pt), 0)).toBe(
      -XenErrno.EBUSY,
    );
    expect(env.update(env.slot(t.l1, 3), pt, RW, MMU_PT_UPDATE_PRESERVE_AD)).toBe(-XenErrno.EBUSY);
    expect(env.update(env.slot(t.l1, 3), pt, RW, 3)).toBe(-XenErrno.EBUSY);
    expect(env.snap()).toEqual(before);
  });

  test("XSA-182: a page table reached through a table being validated is refused RW (pin path)", () => {
    const env = setupPv();
    const l1 = env.allocPfn();
    // The guest pre-fills an L1 with a RW entry mapping the L1 itself, then pins it.
    expect(env.phys.writeU64(l1 * PAGE_SIZE, pteLo(env.mfn(l1), RW), pteHi(env.mfn(l1)))).toBe(0);
    const before = env.snap();
    expect(env.client.pin(1, env.mfn(l1))).toBe(-XenErrno.EBUSY);
    expect(env.snap()).toEqual(before);
  });

  test("XSA-401/408: a stale writable TLB entry is flushed when the frame becomes a page table", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const f = env.allocPfn();
    const va = 4 * PAGE_SIZE;
    expect(env.update(env.slot(t.l1, 4), env.mfn(f), RW)).toBe(0);
    // The writable translation is now in the TLB (0x1000: a not-present entry, valid in an L1).
    expect(env.v.storeU32(va, 0x1000)).toBe(0);
    // Unmap without any flush (legal: L1 changes are the guest's to flush)...
    expect(env.update(env.slot(t.l1, 4), 0, 0)).toBe(0);
    expect(env.v.tlb.has(va / PAGE_SIZE)).toBe(true);
    // ...then promote the frame to a page table: Xen must flush before it is one.
    expect(env.client.pin(1, env.mfn(f))).toBe(0);
    expect(env.hv.mm.stats.typeChangeFlushes).toBeGreaterThan(0);
    expect(env.v.tlb.has(va / PAGE_SIZE)).toBe(false);
    expect(env.v.storeU32(va, 2)).toBeLessThan(0);
    expect(env.hv.machineView.getUint32(env.mfn(f) * PAGE_SIZE, true)).toBe(0x1000);
  });

  test("MMUEXT_CLEAR_PAGE / COPY_PAGE cannot write into a page table or the shared-info page", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const before = env.snap();
    expect(env.client.mmuext(MMUEXT_CLEAR_PAGE, env.mfn(t.l1))).toBe(-XenErrno.EINVAL);
    expect(env.client.mmuext(MMUEXT_COPY_PAGE, env.mfn(t.l2), env.mfn(t.l1))).toBe(
      -XenErrno.EINVAL,
    );
    expect(env.snap()).toEqual(before);
    // The shared-info page is mappable writable but can never become a page table.
    expect(env.client.pin(1, env.dom.sharedInfoMfn)).toBe(-XenErrno.EINVAL);
    expect(env.update(env.slot(t.l2, 5), env.dom.sharedInfoMfn, LINK)).toBe(-XenErrno.EINVAL);
    expect(env.update(env.slot(t.l1, 5), env.dom.sharedInfoMfn, RW)).toBe(0);
    // A plain page can be cleared and copied.
    const a = env.mfn(env.allocPfn());
    const b = env.mfn(env.allocPfn());
    env.hv.machineBytes[b * PAGE_SIZE] = 9;
    expect(env.client.mmuext(MMUEXT_COPY_PAGE, a, b)).toBe(0);
    expect(env.hv.machineBytes[a * PAGE_SIZE]).toBe(9);
    expect(env.client.mmuext(MMUEXT_CLEAR_PAGE, a)).toBe(0);
    expect(env.hv.machineBytes[a * PAGE_SIZE]).toBe(0);
  });

  test("UVMF_MULTI and the *_MULTI flushes read a vCPU mask; a bad mask pointer is refused", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const a = env.mfn(env.allocPfn());
    const maskGpa = env.allocPfn() * PAGE_SIZE;
    env.phys.writeU32(maskGpa, 1);
    env.v.translate(0, 0);
    const flushes = env.v.tlb.pageFlushes;
    expect(env.client.updateVaMapping(0, pteLo(a, RW), pteHi(a), maskGpa | UVMF_INVLPG)).toBe(0);
    expect(env.v.tlb.pageFlushes).toBe(flushes + 1);
    expect(env.client.updateVaMapping(0, pteLo(a, RO), pteHi(a), 2 ** 40 + UVMF_INVLPG)).toBe(
      -XenErrno.EFAULT,
    );
    expect(env.hv.machineView.getUint32(env.slot(t.l1, 0), true) & PTE_RW).toBe(PTE_RW);
    expect(env.client.mmuext(MMUEXT_TLB_FLUSH_MULTI, 0, 2 ** 40)).toBe(-XenErrno.EINVAL);
    expect(env.client.mmuext(MMUEXT_INVLPG_MULTI, 0, maskGpa)).toBe(0);
  });

  test("XSA-224 class: every writable mapping is counted; one unmap does not free the type", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const f = env.mfn(env.allocPfn());
    expect(env.update(env.slot(t.l1, 1), f, RW)).toBe(0);
    expect(env.update(env.slot(t.l1, 2), f, RW)).toBe(0);
    expect(env.hv.frames.info(f).typeCount).toBe(2);
    expect(env.update(env.slot(t.l1, 1), 0, 0)).toBe(0);
    expect(env.client.pin(1, f)).toBe(-XenErrno.EINVAL);
    expect(env.update(env.slot(t.l1, 2), 0, 0)).toBe(0);
    expect(env.client.pin(1, f)).toBe(0);
  });
});

describe("ownership", () => {
  test("XSA-109: a privileged domain's MMU op on an HVM domain's tables is refused", () => {
    const env = setupPv();
    const hvm = env.hv.createDomain({ pages: 8, kind: "hvm" });
    const dom0 = env.hv.createDomain({ pages: 64, privileged: true });
    const port = new HypercallPort(env.hv, dom0.vcpus[0]!);
    const client = new HypercallClient(port, new GuestPhys(env.hv, dom0), 56 * PAGE_SIZE, 8);
    const before = env.snap();
    client.queueUpdate(hvm.p2m[0]! * PAGE_SIZE, 0, 0);
    expect(client.flushUpdates((hvm.id + 1) << 16)).toBe(-XenErrno.EINVAL);
    // A non-privileged guest naming it gets -EPERM.
    env.client.queueUpdate(hvm.p2m[0]! * PAGE_SIZE, 0, 0);
    expect(env.client.flushUpdates((hvm.id + 1) << 16)).toBe(-XenErrno.EPERM);
    expect(env.hv.frames.info(hvm.p2m[0]!).count).toBe(1);
    void before;
  });

  test("XSA-113: MACHPHYS_UPDATE against a translated guest is refused without leaking a reference", () => {
    const env = setupPv();
    const hvm = env.hv.createDomain({ pages: 8, kind: "hvm" });
    const dom0 = env.hv.createDomain({ pages: 64, privileged: true });
    const port = new HypercallPort(env.hv, dom0.vcpus[0]!);
    const client = new HypercallClient(port, new GuestPhys(env.hv, dom0), 56 * PAGE_SIZE, 8);
    const m = hvm.p2m[3]!;
    const count = env.hv.frames.info(m).count;
    client.queueUpdate(m * PAGE_SIZE + MMU_MACHPHYS_UPDATE, 1, 0);
    expect(client.flushUpdates(hvm.id)).toBe(-XenErrno.EINVAL);
    expect(env.hv.frames.info(m).count).toBe(count);
    expect(env.hv.m2p[m]).toBe(3);
  });

  test("foreign frames: mapping another guest's memory is refused in L1 and as a table", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const victim = env.hv.createDomain({ pages: 8 });
    const before = env.snap();
    expect(env.update(env.slot(t.l1, 1), victim.p2m[2]!, RO)).toBe(-XenErrno.EBUSY);
    expect(env.update(env.slot(t.l2, 1), victim.p2m[2]!, LINK)).toBe(-XenErrno.EINVAL);
    expect(env.client.pin(1, victim.p2m[2]!)).toBe(-XenErrno.EINVAL);
    expect(env.snap()).toEqual(before);
  });
});

describe("superpages and reserved slots", () => {
  test("XSA-148: PSE cannot be slipped into an existing L2 entry through the fast path", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const before = env.snap();
    // Same frame, same flags, plus PS: PS is not in the fast-path whitelist.
    expect(env.update(env.slot(t.l2, 0), env.mfn(t.l1), LINK | PTE_PS)).toBe(-XenErrno.EINVAL);
    expect(env.update(env.slot(t.l3, 0), env.mfn(t.l2), LINK | PTE_PS)).toBe(-XenErrno.EINVAL);
    expect(env.snap()).toEqual(before);
  });

  test("XSA-167: MMUEXT_[UN]MARK_SUPER with an invalid MFN never indexes anything", () => {
    const env = setupPv();
    const before = env.snap();
    expect(env.client.mmuext(MMUEXT_MARK_SUPER, 2 ** 40)).toBe(-XenErrno.EOPNOTSUPP);
    expect(env.client.mmuext(MMUEXT_UNMARK_SUPER, -1)).toBe(-XenErrno.EOPNOTSUPP);
    expect(env.snap()).toEqual(before);
  });

  test("Xen L4 slots: a guest pre-filling slots 256..271 before pinning gets Xen's entries instead", () => {
    const env = setupPv();
    const l4 = env.allocPfn();
    const victim = env.hv.createDomain({ pages: 4 });
    for (let s = 256; s <= 271; s++) {
      env.phys.writeU64(l4 * PAGE_SIZE + s * 8, pteLo(victim.p2m[0]!, LINK), pteHi(victim.p2m[0]!));
    }
    expect(env.client.pin(4, env.mfn(l4))).toBe(0);
    expect(env.hv.frames.info(victim.p2m[0]!).count).toBe(1); // no reference taken
    const view = env.hv.machineView;
    expect(view.getUint32(env.mfn(l4) * PAGE_SIZE + 256 * 8, true)).toBe(0);
    expect(view.getUint32(env.mfn(l4) * PAGE_SIZE + 258 * 8, true) >>> 12).toBe(
      env.mfn(l4) & 0xfffff,
    );
    expect(env.client.newBaseptr(env.mfn(l4))).toBe(0);
    // The guest cannot reach Xen's range.
    expect(env.v.translate(-(2 ** 47), 0)).toBeLessThan(0);
  });
});

describe("linear (recursive) page tables", () => {
  test("XSA-240: single-level linear entries are allowed, chains are refused", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const [a, b, c] = extraL2s(env, t.l3, 3) as [number, number, number];
    // A → B (linear, read-only): allowed.
    expect(env.update(env.slot(a, 10), env.mfn(b), LINK_RO)).toBe(0);
    expect(env.hv.frames.info(env.mfn(a)).linear).toBe(1);
    expect(env.hv.frames.info(env.mfn(b)).linear).toBe(-1);
    const before = env.snap();
    // B → C: B is already a linear target, so it may not hold linear entries.
    expect(env.update(env.slot(b, 10), env.mfn(c), LINK_RO)).toBe(-XenErrno.EINVAL);
    // C → A: A already holds linear entries, so it may not become a target.
    expect(env.update(env.slot(c, 10), env.mfn(a), LINK_RO)).toBe(-XenErrno.EINVAL);
    expect(env.snap()).toEqual(before);
    // Tearing the link down restores the counts.
    expect(env.update(env.slot(a, 10), 0, 0)).toBe(0);
    expect(env.hv.frames.info(env.mfn(a)).linear).toBe(0);
    expect(env.hv.frames.info(env.mfn(b)).linear).toBe(0);
  });

  test("XSA-240/185: a writable linear entry, or one to a non-validated table, is refused", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const [a, b] = extraL2s(env, t.l3, 2) as [number, number];
    const before = env.snap();
    expect(env.update(env.slot(a, 11), env.mfn(b), LINK)).toBe(-XenErrno.EINVAL);
    expect(env.update(env.slot(t.l3, 20), env.mfn(t.l3), LINK)).toBe(-XenErrno.EINVAL);
    expect(env.snap()).toEqual(before);
    // The classic read-only self map at L4 is fine and takes no reference.
    const tc = env.hv.frames.info(env.mfn(t.l4)).typeCount;
    expect(env.update(env.slot(t.l4, 300), env.mfn(t.l4), LINK_RO)).toBe(0);
    expect(env.hv.frames.info(env.mfn(t.l4)).typeCount).toBe(tc);
  });

  test("pv-linear-pt=0 refuses linear entries altogether", () => {
    const env = setupPv({ linearPageTables: false });
    const t = buildSpace(env);
    const [a, b] = extraL2s(env, t.l3, 2) as [number, number];
    expect(env.update(env.slot(a, 10), env.mfn(b), LINK_RO)).toBe(-XenErrno.EINVAL);
  });

  test("XSA-242/299/309 class: interleaved pin/unpin/link of linear tables leaves exact counts", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const [a, b] = extraL2s(env, t.l3, 2) as [number, number];
    expect(env.client.pin(2, env.mfn(b))).toBe(0);
    expect(env.update(env.slot(a, 5), env.mfn(b), LINK_RO)).toBe(0);
    expect(env.update(env.slot(t.l3, 2), 0, 0)).toBe(0); // unlink B from L3; pin + linear remain
    expect(env.hv.frames.info(env.mfn(b))).toMatchObject({ typeCount: 2, type: PGT_l2_page_table });
    expect(env.client.unpin(env.mfn(b))).toBe(0);
    expect(env.hv.frames.info(env.mfn(b)).typeCount).toBe(1);
    expect(env.update(env.slot(t.l3, 1), 0, 0)).toBe(0); // drop A: its linear entry goes with it
    expect(env.hv.frames.info(env.mfn(a))).toMatchObject({ typeCount: 0, linear: 0 });
    expect(env.hv.frames.info(env.mfn(b))).toMatchObject({ typeCount: 0, linear: 0, count: 1 });
  });
});

describe("pinning and base pointers", () => {
  test("XSA-58: a pin that fails half-way through validation leaks no reference", () => {
    const env = setupPv();
    const l2 = env.allocPfn();
    const l1ok = env.allocPfn();
    const l1bad = env.allocPfn();
    const victim = env.hv.createDomain({ pages: 4 });
    const data = env.mfn(env.allocPfn());
    env.phys.writeU64(l1ok * PAGE_SIZE, pteLo(data, RW), pteHi(data));
    env.phys.writeU64(l1bad * PAGE_SIZE + 16, pteLo(victim.p2m[1]!, RO), pteHi(victim.p2m[1]!));
    env.phys.writeU64(l2 * PAGE_SIZE, pteLo(env.mfn(l1ok), LINK), pteHi(env.mfn(l1ok)));
    env.phys.writeU64(l2 * PAGE_SIZE + 8, pteLo(env.mfn(l1bad), LINK), pteHi(env.mfn(l1bad)));
    const before = env.snap();
    expect(env.client.pin(2, env.mfn(l2))).toBe(-XenErrno.EBUSY);
    expect(env.snap()).toEqual(before);
    expect(env.hv.frames.info(data).typeCount).toBe(0);
  });

  test("pin/unpin races: double pin, unpin of the loaded root, then reuse", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const root = env.mfn(t.l4);
    expect(env.client.pin(4, root)).toBe(-XenErrno.EINVAL);
    // Unpinning the loaded root keeps it valid: CR3 still holds a reference.
    expect(env.client.unpin(root)).toBe(0);
    expect(env.hv.frames.info(root)).toMatchObject({ typeCount: 1, validated: true });
    expect(env.client.unpin(root)).toBe(-XenErrno.EINVAL);
    // It still cannot be mapped writable while loaded.
    expect(env.update(env.slot(t.l1, 1), root, RW)).toBe(-XenErrno.EBUSY);
  });

  test("NEW_BASEPTR to an unvalidatable table (Xen mode) changes nothing", () => {
    const env = setupPv({ strictBasePtr: false });
    const l4 = env.allocPfn();
    const victim = env.hv.createDomain({ pages: 4 });
    env.phys.writeU64(l4 * PAGE_SIZE + 8, pteLo(victim.p2m[0]!, LINK), pteHi(victim.p2m[0]!));
    const before = env.snap();
    expect(env.client.newBaseptr(env.mfn(l4))).toBe(-XenErrno.EINVAL);
    expect(env.snap()).toEqual(before);
    expect(env.v.cr3).toBe(-1);
  });
});

describe("TLB flushing", () => {
  test("XSA-286: an L2+ update flushes the TLB before returning", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const a = env.mfn(env.allocPfn());
    const b = env.mfn(env.allocPfn());
    const l1b = env.allocPfn();
    expect(env.update(env.slot(t.l1, 0), a, RW)).toBe(0);
    expect(env.update(env.slot(l1b, 0), b, RW)).toBe(0); // plain write: l1b is untyped
    expect(env.v.translate(0, 0)).toBe(a * PAGE_SIZE);
    // Replace the L2 entry: the VA must now resolve through the new L1, no guest flush.
    expect(env.update(env.slot(t.l2, 0), env.mfn(l1b), LINK)).toBe(0);
    expect(env.v.translate(0, 0)).toBe(b * PAGE_SIZE);
    expect(env.hv.mm.stats.linearFlushes).toBeGreaterThan(0);
  });

  test("L1 updates are the guest's to flush (Xen does not), so the TLB keeps the old entry", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const a = env.mfn(env.allocPfn());
    const b = env.mfn(env.allocPfn());
    expect(env.update(env.slot(t.l1, 0), a, RO)).toBe(0);
    expect(env.v.translate(0, 0)).toBe(a * PAGE_SIZE);
    expect(env.update(env.slot(t.l1, 0), b, RO)).toBe(0);
    expect(env.v.translate(0, 0)).toBe(a * PAGE_SIZE);
    expect(env.client.invlpg(0)).toBe(0);
    expect(env.v.translate(0, 0)).toBe(b * PAGE_SIZE);
  });

  test("XSA-279: update_va_mapping with a non-canonical VA fails and skips the flush", () => {
    const env = setupPv();
    buildSpace(env);
    const a = env.mfn(env.allocPfn());
    expect(env.v.translate(0, 0)).toBeLessThan(0);
    const flushes = env.v.tlb.fullFlushes + env.v.tlb.pageFlushes;
    const before = env.snap();
    for (const va of [2 ** 47, -(2 ** 47) - PAGE_SIZE, 2 ** 52]) {
      expect(env.client.updateVaMapping(va, pteLo(a, RW), pteHi(a), UVMF_INVLPG)).toBe(
        -XenErrno.EINVAL,
      );
      expect(env.client.updateVaMapping(va, pteLo(a, RW), pteHi(a), UVMF_TLB_FLUSH)).toBe(
        -XenErrno.EINVAL,
      );
    }
    expect(env.v.tlb.fullFlushes + env.v.tlb.pageFlushes).toBe(flushes);
    expect(env.snap()).toEqual(before);
  });

  test("preserve-A/D misuse: PRESERVE_AD cannot preserve RW or turn a page table writable", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const data = env.mfn(env.allocPfn());
    expect(env.update(env.slot(t.l1, 2), data, RW | PTE_D)).toBe(0);
    // Re-point the entry at a page table, read-only, preserving A/D: RW must not survive.
    expect(
      env.update(env.slot(t.l1, 2), env.mfn(t.l2), PTE_P | PTE_US, MMU_PT_UPDATE_PRESERVE_AD),
    ).toBe(0);
    const lo = env.hv.machineView.getUint32(env.slot(t.l1, 2), true);
    expect(lo & PTE_RW).toBe(0);
    expect(lo & PTE_D).toBe(PTE_D);
    expect(env.v.translate(2 * PAGE_SIZE, ACCESS_WRITE)).toBe(FAULT_PROTECTION);
    expect(env.update(env.slot(t.l1, 2), env.mfn(t.l2), RW, MMU_PT_UPDATE_PRESERVE_AD)).toBe(
      -XenErrno.EBUSY,
    );
  });
});

describe("batches, continuations and multicalls", () => {
  test("XSA-45: a huge batch is preemptible; the guest re-enters it transparently", () => {
    const env = setupPv({ preemptAfter: 16 });
    const t = buildSpace(env);
    const data = env.mfn(env.allocPfn());
    env.port.resetStats();
    for (let i = 0; i < 200; i++)
      env.client.queueUpdate(env.slot(t.l1, i), pteLo(data, RO), pteHi(data));
    expect(env.client.flushUpdates()).toBe(0);
    expect(env.client.lastDone).toBe(200);
    expect(env.port.continuations).toBeGreaterThan(5);
    expect(env.port.exits).toBe(1 + env.port.continuations);
    expect(env.hv.frames.info(data).count).toBe(201);
  });

  test("XSA-45: a forged MMU_UPDATE_PREEMPTED only changes what *pdone reports", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const data = env.mfn(env.allocPfn());
    env.client.queueUpdate(env.slot(t.l1, 1), pteLo(data, RO), pteHi(data));
    env.phys.writeU32(env.client.doneGpa, 1000);
    const rc = env.port.call(
      Hypercall.mmu_update,
      env.client.batchGpa,
      (1 | MMU_UPDATE_PREEMPTED) >>> 0,
      env.client.doneGpa,
      0x7ff0,
    );
    env.client.discardUpdates();
    expect(rc).toBe(0);
    expect(env.phys.readU32(env.client.doneGpa)).toBe(1001);
    expect(env.hv.frames.info(data).count).toBe(2);
  });

  test("nested multicall is refused (-EINVAL in that entry) and the batch continues", () => {
    const env = setupPv();
    const c = env.client;
    c.mcQueue(Hypercall.xen_version, XENVER_version, 0);
    c.mcQueue(Hypercall.multicall, c.mcEntryGpa(0), 1);
    c.mcQueue(Hypercall.mmu_update, 2 ** 40, 1, 0, 0x7ff0); // -EFAULT; the batch continues
    c.mcQueue(Hypercall.xen_version, XENVER_version, 0);
    expect(c.mcFlush()).toBe(0);
    expect(c.mcResult(0)).toBe((4 << 16) | 20);
    expect(c.mcResult(1)).toBe(-XenErrno.EINVAL);
    expect(c.mcResult(2)).toBe(-XenErrno.EFAULT);
    expect(c.mcResult(3)).toBe((4 << 16) | 20);
    expect(env.v.inMulticall).toBe(false);
  });

  test("XSA-213: iret inside a multicall ends the batch; later entries do not run in user mode", () => {
    const env = setupPv();
    const t = buildSpace(env);
    const data = env.mfn(env.allocPfn());
    const c = env.client;
    const frame = env.allocPfn() * PAGE_SIZE;
    env.phys.writeU64(frame + IretContextLayout.cs, 0x33, 0); // RPL 3: return to user mode
    c.queueUpdate(env.slot(t.l1, 1), pteLo(data, RW), pteHi(data));
    c.discardUpdates();
    c.mcQueue(Hypercall.xen_version, XENVER_version, 0);
    c.mcQueue(Hypercall.iret, frame);
    c.mcQueue(Hypercall.mmu_update, c.batchGpa, 1, 0, 0x7ff0);
    const rc = c.mcFlush();
    expect(rc).toBe(0);
    expect(env.v.kernelMode).toBe(false);
    expect(env.hv.frames.info(data).typeCount).toBe(0); // the mmu_update entry never ran
    expect(env.hv.machineView.getUint32(env.slot(t.l1, 1), true)).toBe(0);
    // And user mode cannot issue hypercalls at all.
    expect(env.port.call(Hypercall.xen_version, XENVER_version, 0)).toBe(-XenErrno.EPERM);
    env.v.enterKernel();
    expect(env.port.call(Hypercall.xen_version, XENVER_version, 0)).toBe((4 << 16) | 20);
  });

  test("XSA-212 class: guest arrays out of range are refused up front (-EFAULT), not partly used", () => {
    const env = setupPv();
    const before = env.snap();
    const end = env.dom.nrPages * PAGE_SIZE;
    expect(env.port.call(Hypercall.multicall, end - 64, 2)).toBe(-XenErrno.EFAULT);
    expect(env.port.call(Hypercall.multicall, 0, 2 ** 50)).toBe(-XenErrno.EFAULT);
    expect(env.port.call(Hypercall.multicall, 0, -1)).toBe(-XenErrno.EFAULT);
    expect(env.snap()).toEqual(before);
  });
});
