/**
 * The PV MMU: `mmu_update`, `mmuext_op` and `update_va_mapping`, validating every change the
 * way Xen's xen/arch/x86/mm.c does (reference §2): a guest maps only frames it owns; every
 * RW L1 mapping holds a `PGT_writable_page` type reference, every table entry holds a type
 * reference of the level below, and a frame has one type at a time — so no page-table frame
 * is ever mapped writable and no writably-mapped frame becomes a page table. PS is refused
 * above L1, Xen's L4 slots are untouchable, linear page tables follow the XSA-240 rules,
 * and L2+ changes flush TLBs before returning (XSA-286). A rejected request changes nothing.
 *
 * @module
 */

import {
  BASE_DISALLOW_LO,
  DOMID_IO,
  DOMID_SELF,
  FASTPATH_WHITELIST_HI,
  FASTPATH_WHITELIST_LO,
  L1_DISALLOW_LO,
  LINEAR_PT_XEN_SLOT,
  MMU_MACHPHYS_UPDATE,
  MMU_NORMAL_PT_UPDATE,
  MMU_PT_UPDATE_NO_TRANSLATE,
  MMU_PT_UPDATE_PRESERVE_AD,
  MMU_UPDATE_PREEMPTED,
  MMUEXT_CLEAR_PAGE,
  MMUEXT_COPY_PAGE,
  MMUEXT_FLUSH_CACHE,
  MMUEXT_FLUSH_CACHE_GLOBAL,
  MMUEXT_INVLPG_ALL,
  MMUEXT_INVLPG_LOCAL,
  MMUEXT_INVLPG_MULTI,
  MMUEXT_MARK_SUPER,
  MMUEXT_NEW_BASEPTR,
  MMUEXT_NEW_USER_BASEPTR,
  MMUEXT_PIN_L1_TABLE,
  MMUEXT_PIN_L2_TABLE,
  MMUEXT_PIN_L3_TABLE,
  MMUEXT_PIN_L4_TABLE,
  MMUEXT_SET_LDT,
  MMUEXT_TLB_FLUSH_ALL,
  MMUEXT_TLB_FLUSH_LOCAL,
  MMUEXT_TLB_FLUSH_MULTI,
  MMUEXT_UNMARK_SUPER,
  MMUEXT_UNPIN_TABLE,
  MmuextOpLayout,
  MmuUpdateLayout,
  PAGE_SIZE,
  PGT_l1_page_table,
  PGT_l4_page_table,
  PGT_writable_page,
  PTE_A,
  PTE_D,
  PTE_P,
  PTE_RW,
  ROOT_PAGETABLE_FIRST_XEN_SLOT,
  ROOT_PAGETABLE_LAST_XEN_SLOT,
  UVMF_ALL,
  UVMF_FLUSHTYPE_MASK,
  UVMF_INVLPG,
  UVMF_TLB_FLUSH,
} from "./abi.js";
import type { Domain, Vcpu } from "./domain.js";
import { XenErrno } from "./errors.js";
import {
  COUNT_MAX,
  FRAME_PINNED,
  FRAME_SPECIAL,
  FRAME_VALIDATED,
  isPageTableType,
  type PageTypeTable,
} from "./frames.js";
import type { HypervisorCore } from "./hv/core.js";
import { isCanonical, pteFrame, pteHi, pteLo, ptIndex, vaTo48 } from "./paging.js";

const EINVAL = -XenErrno.EINVAL;
const EBUSY = -XenErrno.EBUSY;
const EPERM = -XenErrno.EPERM;
const EFAULT = -XenErrno.EFAULT;
const ESRCH = -XenErrno.ESRCH;
const ENOSYS = -XenErrno.ENOSYS;
const EACCES = -XenErrno.EACCES;
const EOPNOTSUPP = -XenErrno.EOPNOTSUPP;
const ERESTART = -XenErrno.ERESTART;

/** The decoded arguments of a batched MMU hypercall (`mmu_update`, `mmuext_op`). */
interface MmuBatch {
  /** Guest address of the first request of this run. */
  readonly list: number;
  /** Requests in this run (`MMU_UPDATE_PREEMPTED` stripped). */
  readonly count: number;
  /** Guest address of the done counter, or 0 for none. */
  readonly pdone: number;
  /** The `foreigndom` argument as passed. */
  readonly foreigndom: number;
  /** Requests done by the earlier, preempted runs of this batch (read from `*pdone`). */
  readonly done: number;
}

/**
 * Whether an L4 slot belongs to Xen in a 64-bit PV L4 (`!is_guest_l4_slot`).
 *
 * @param slot - 0..511
 * @returns true for slots 256..271
 */
export function isXenL4Slot(slot: number): boolean {
  return slot >= ROOT_PAGETABLE_FIRST_XEN_SLOT && slot <= ROOT_PAGETABLE_LAST_XEN_SLOT;
}

/** Counters of the PV MMU. */
export interface PvMmStats {
  /** `mmu_update` entries applied. */
  updates: number;
  /** Entries refused (each stops its batch). */
  rejected: number;
  /** Page-table validations (promotions) run. */
  validations: number;
  /** Devalidations (type count of a table dropped to zero). */
  devalidations: number;
  /** TLB flushes forced by L2+ updates (XSA-286). */
  linearFlushes: number;
  /** TLB flushes forced by a frame leaving the writable type (XSA-401/408). */
  typeChangeFlushes: number;
}

/**
 * The validating PV MMU of a {@link Hypervisor} — the page-type rules of xen/arch/x86/mm.c.
 * The `mmu_update` / `mmuext_op` / `update_va_mapping` hypercall handlers (`hv/mm.ts`) decode
 * the registers and call {@link mmuUpdate}, {@link mmuextOp} and {@link updateVaMapping}.
 * It reaches the hypervisor only through {@link HypervisorCore} (frames, memory, domains,
 * guest-memory helpers), so this file does not depend on `hypervisor.ts`.
 */
export class PvMm {
  /** Counters. */
  readonly stats: PvMmStats = {
    updates: 0,
    rejected: 0,
    validations: 0,
    devalidations: 0,
    linearFlushes: 0,
    typeChangeFlushes: 0,
  };
  private readonly f: PageTypeTable;
  private readonly view: DataView;
  private readonly pair = new Uint32Array(2);
  private readonly pair2 = new Uint32Array(2);
  private flushLinear = false;

  /** @param hv - the hypervisor whose frames and memory this MMU manages */
  constructor(private readonly hv: HypervisorCore) {
    this.f = hv.frames;
    this.view = hv.machineView;
  }

  // ---------------------------------------------------------------------------------------
  // Type and general references (`get_page_type`, `put_page_type`; mm.c, reference §2.4)

  /**
   * `_get_page_type`: takes a type reference, changing the type when the count is zero
   * (flushing TLBs when the frame stops being writable — XSA-401/408) and validating a
   * page-table type. On failure nothing changes.
   *
   * @param mfn - the frame (must be valid)
   * @param type - `PGT_*`
   * @returns 0 or `-errno`
   */
  getPageType(mfn: number, type: number): number {
    const f = this.f;
    const tc = f.typeCount[mfn]!;
    if (tc === 0) {
      const oldType = f.type[mfn]!;
      const oldFlags = f.flags[mfn]!;
      if ((oldFlags & FRAME_SPECIAL) !== 0 && type !== PGT_writable_page) {
        return this.hv.fail(EINVAL, `frame ${mfn} is a Xen heap page and cannot change type`);
      }
      if (oldType === type && (oldFlags & FRAME_VALIDATED) !== 0) {
        f.typeCount[mfn] = 1;
        return 0;
      }
      f.type[mfn] = type;
      f.flags[mfn] = oldFlags & ~FRAME_VALIDATED;
      f.typeCount[mfn] = 1;
      if (oldType === PGT_writable_page && type !== PGT_writable_page) {
        // After the type is committed, never before (XSA-401): no CPU may keep a stale
        // writable TLB entry for a frame about to become a page table.
        this.hv.flushAllTlbs();
        this.stats.typeChangeFlushes++;
      }
      if (isPageTableType(type)) {
        const rc = this.validate(mfn, type);
        if (rc < 0) {
          f.typeCount[mfn] = 0;
          f.type[mfn] = oldType;
          f.flags[mfn] = oldFlags;
          return rc;
        }
      }
      f.flags[mfn] = f.flags[mfn]! | FRAME_VALIDATED;
      return 0;
    }
    if (f.type[mfn] !== type) {
      return this.hv.fail(
        EINVAL,
        `bad type: frame ${mfn} is ${f.typeName(mfn)} (count ${tc}), wanted ${type}`,
      );
    }
    if ((f.flags[mfn]! & FRAME_VALIDATED) === 0) {
      return this.hv.fail(EINVAL, `frame ${mfn} is being validated (a loop in the tables)`);
    }
    if (tc >= COUNT_MAX) return this.hv.fail(EINVAL, `type count overflow on frame ${mfn}`);
    f.typeCount[mfn] = tc + 1;
    return 0;
  }

  /**
   * `put_page_type`: drops a type reference; when the last reference of a page-table type
   * goes, the table is devalidated and the references its entries held are dropped.
   */
  putPageType(mfn: number): void {
    const f = this.f;
    const tc = f.typeCount[mfn]!;
    if (tc === 0) return;
    if (tc === 1 && isPageTableType(f.type[mfn]!) && (f.flags[mfn]! & FRAME_VALIDATED) !== 0) {
      f.typeCount[mfn] = 0;
      f.flags[mfn] = f.flags[mfn]! & ~FRAME_VALIDATED;
      this.devalidate(mfn, f.type[mfn]!);
      return;
    }
    f.typeCount[mfn] = tc - 1;
  }

  /**
   * `get_page_and_type`: a general reference plus a type reference.
   *
   * @returns 0, `-EINVAL` when `owner` does not own the frame, or the type error
   */
  getPageAndType(mfn: number, type: number, owner: number): number {
    if (!this.f.getPage(mfn, owner)) {
      return this.hv.fail(EINVAL, `frame ${mfn} is not owned by d${owner}`);
    }
    const rc = this.getPageType(mfn, type);
    if (rc < 0) this.f.putPage(mfn);
    return rc;
  }

  /** `put_page_and_type`. */
  putPageAndType(mfn: number): void {
    this.putPageType(mfn);
    this.f.putPage(mfn);
  }

  // ---------------------------------------------------------------------------------------
  // Validation (`promote_lN_table` / `free_lN_table`)

  private validate(mfn: number, level: number): number {
    this.stats.validations++;
    const d = this.hv.domainById(this.f.owner[mfn]!);
    if (d === null) return EINVAL;
    const base = mfn * PAGE_SIZE;
    const view = this.view;
    for (let i = 0; i < 512; i++) {
      if (level === PGT_l4_page_table && isXenL4Slot(i)) continue;
      const lo = view.getUint32(base + i * 8, true);
      if ((lo & PTE_P) === 0) continue;
      const hi = view.getUint32(base + i * 8 + 4, true);
      const rc =
        level === PGT_l1_page_table
          ? this.getPageFromL1e(lo, hi, d, d)
          : this.getPageFromLNe(level, lo, hi, mfn, d);
      if (rc < 0) {
        // Roll back every entry validated so far: a failed promotion leaves no reference.
        for (let j = i - 1; j >= 0; j--) {
          if (level === PGT_l4_page_table && isXenL4Slot(j)) continue;
          const plo = view.getUint32(base + j * 8, true);
          const phi = view.getUint32(base + j * 8 + 4, true);
          this.putPageFromEntry(level, plo, phi, mfn);
        }
        return this.hv.fail(rc, `validation of frame ${mfn} as L${level} failed at slot ${i}`);
      }
    }
    if (level === PGT_l4_page_table) {
      // init_xen_l4_slots: Xen owns slots 256..271 and overwrites whatever the guest left.
      for (let s = ROOT_PAGETABLE_FIRST_XEN_SLOT; s <= ROOT_PAGETABLE_LAST_XEN_SLOT; s++) {
        const ea = base + s * 8;
        if (s === LINEAR_PT_XEN_SLOT) {
          view.setUint32(ea, pteLo(mfn, PTE_P | PTE_RW | PTE_A | PTE_D), true);
          view.setUint32(ea + 4, pteHi(mfn), true);
        } else {
          view.setUint32(ea, 0, true);
          view.setUint32(ea + 4, 0, true);
        }
      }
    }
    return 0;
  }

  private devalidate(mfn: number, level: number): void {
    this.stats.devalidations++;
    const base = mfn * PAGE_SIZE;
    const view = this.view;
    for (let i = 0; i < 512; i++) {
      if (level === PGT_l4_page_table && isXenL4Slot(i)) continue;
      const lo = view.getUint32(base + i * 8, true);
      if ((lo & PTE_P) === 0) continue;
      const hi = view.getUint32(base + i * 8 + 4, true);
      this.putPageFromEntry(level, lo, hi, mfn);
    }
  }

  /** Drops the references an entry of the level-`level` table `mfn` holds. */
  private putPageFromEntry(level: number, lo: number, hi: number, mfn: number): void {
    if (level === PGT_l1_page_table) this.putPageFromL1e(lo, hi);
    else this.putPageFromLNe(lo, hi, mfn);
  }

  /**
   * `get_page_from_l1e`: flags, ownership (`-EBUSY` for a frame the page owner does not
   * own), MMIO (`-EPERM` without I/O memory permission), and the writable type reference
   * for an RW mapping (`-EBUSY` when the frame is a page table).
   */
  private getPageFromL1e(lo: number, hi: number, l1eOwner: Domain, pgOwner: Domain): number {
    if ((lo & L1_DISALLOW_LO) !== 0) {
      return this.hv.fail(EINVAL, `bad L1 flags 0x${(lo & L1_DISALLOW_LO).toString(16)}`);
    }
    const mfn = pteFrame(lo, hi);
    if (!this.f.valid(mfn)) {
      return this.hv.fail(EPERM, `d${l1eOwner.id} non-privileged attempt to map MMIO ${mfn}`);
    }
    const owner = this.f.owner[mfn]!;
    if (owner !== pgOwner.id || !this.f.getPage(mfn, owner)) {
      return this.hv.fail(
        EBUSY,
        `mfn ${mfn} owned by d${owner}, mapped by d${l1eOwner.id} for d${pgOwner.id}`,
      );
    }
    if ((lo & PTE_RW) !== 0 && this.getPageType(mfn, PGT_writable_page) < 0) {
      this.f.putPage(mfn);
      return this.hv.fail(EBUSY, `could not get PGT_writable_page on frame ${mfn}`);
    }
    return 0;
  }

  private putPageFromL1e(lo: number, hi: number): void {
    if ((lo & PTE_P) === 0) return;
    const mfn = pteFrame(lo, hi);
    if (!this.f.valid(mfn)) return;
    if ((lo & PTE_RW) !== 0) this.putPageType(mfn);
    this.f.putPage(mfn);
  }

  /**
   * `get_page_from_l{2,3,4}e`: flags (PS, G, PWT, PCD refused above L1 — no PV superpages),
   * a type reference of the level below, or a linear (recursive) reference under Xen's rules.
   *
   * @param level - level of the table holding the entry (2..4)
   */
  private getPageFromLNe(
    level: number,
    lo: number,
    hi: number,
    tableMfn: number,
    d: Domain,
  ): number {
    if ((lo & BASE_DISALLOW_LO) !== 0) {
      return this.hv.fail(EINVAL, `bad L${level} flags 0x${(lo & BASE_DISALLOW_LO).toString(16)}`);
    }
    const target = pteFrame(lo, hi);
    if (!this.f.valid(target)) return this.hv.fail(EINVAL, `L${level} entry to invalid ${target}`);
    const rc = this.getPageAndType(target, level - 1, d.id);
    if (rc === EINVAL && this.getLinear(level, lo, target, tableMfn, d)) return 0;
    return rc;
  }

  /**
   * `get_lN_linear_pagetable`: a read-only entry pointing at an already validated table of
   * the same level, same domain; since XSA-240 a table either holds linear entries or is
   * the target of some, never both (single-level chains).
   */
  private getLinear(level: number, lo: number, target: number, tableMfn: number, d: Domain) {
    const f = this.f;
    if (!this.hv.options.linearPageTables) {
      this.hv.fail(EINVAL, "linear page tables are disabled (pv-linear-pt=0)");
      return false;
    }
    if ((lo & PTE_RW) !== 0) {
      this.hv.fail(EINVAL, `linear L${level} entry with write permission`);
      return false;
    }
    if (target === tableMfn) return true;
    if (f.owner[tableMfn] !== d.id) return false;
    if (!f.getPage(target, d.id)) return false;
    const entries = f.linear[tableMfn]! + 1;
    if (entries <= 0 || entries > 0x7fff) {
      f.putPage(target);
      this.hv.fail(EINVAL, `L${level} ${tableMfn} is itself a linear target (XSA-240)`);
      return false;
    }
    const uses = f.linear[target]! - 1;
    if (uses >= 0 || uses < -0x8000) {
      f.putPage(target);
      this.hv.fail(EINVAL, `L${level} ${target} has linear entries of its own (XSA-240)`);
      return false;
    }
    const tc = f.typeCount[target]!;
    if (
      tc === 0 ||
      tc >= COUNT_MAX ||
      f.type[target] !== level ||
      (f.flags[target]! & FRAME_VALIDATED) === 0
    ) {
      f.putPage(target);
      this.hv.fail(EINVAL, `linear target ${target} is not a validated L${level}`);
      return false;
    }
    f.linear[tableMfn] = entries;
    f.linear[target] = uses;
    f.typeCount[target] = tc + 1;
    return true;
  }

  /** `put_page_from_lNe`: a same-level target is a linear reference (`put_pt_page`). */
  private putPageFromLNe(lo: number, hi: number, tableMfn: number): void {
    if ((lo & PTE_P) === 0) return;
    const target = pteFrame(lo, hi);
    if (target === tableMfn || !this.f.valid(target)) return;
    const f = this.f;
    if (f.type[target] === f.type[tableMfn]) {
      f.linear[target] = f.linear[target]! + 1;
      f.linear[tableMfn] = f.linear[tableMfn]! - 1;
    }
    this.putPageType(target);
    f.putPage(target);
  }

  // ---------------------------------------------------------------------------------------
  // Entry updates (`mod_lN_entry`)

  private writeEntry(ma: number, lo: number, hi: number, preserveAd: boolean, olo: number): void {
    const v = preserveAd ? (lo | (olo & (PTE_A | PTE_D))) >>> 0 : lo;
    this.view.setUint32(ma, v, true);
    this.view.setUint32(ma + 4, hi, true);
  }

  /**
   * `mod_l1_entry`.
   *
   * @param ma - machine address of the entry (8-aligned, inside an L1)
   * @returns 0 or `-errno`
   */
  modL1Entry(
    ma: number,
    lo: number,
    hi: number,
    preserveAd: boolean,
    ptOwner: Domain,
    pgOwner: Domain,
  ): number {
    const olo = this.view.getUint32(ma, true);
    const ohi = this.view.getUint32(ma + 4, true);
    if ((lo & PTE_P) !== 0) {
      if ((lo & L1_DISALLOW_LO) !== 0) {
        return this.hv.fail(EINVAL, `bad L1 flags 0x${(lo & L1_DISALLOW_LO).toString(16)}`);
      }
      if ((olo & PTE_P) !== 0 && !changed(olo, ohi, lo, hi)) {
        this.writeEntry(ma, lo, hi, preserveAd, olo);
        return 0;
      }
      const rc = this.getPageFromL1e(lo, hi, ptOwner, pgOwner);
      if (rc < 0) return rc;
    }
    this.writeEntry(ma, lo, hi, preserveAd, olo);
    this.putPageFromL1e(olo, ohi);
    return 0;
  }

  /**
   * `mod_l2_entry` / `mod_l3_entry` / `mod_l4_entry`.
   *
   * @param level - 2..4
   * @param ma - machine address of the entry
   * @returns 0 or `-errno`
   */
  modLNEntry(
    level: number,
    ma: number,
    lo: number,
    hi: number,
    preserveAd: boolean,
    d: Domain,
  ): number {
    const tableMfn = Math.floor(ma / PAGE_SIZE);
    const slot = (ma - tableMfn * PAGE_SIZE) / 8;
    if (level === PGT_l4_page_table && isXenL4Slot(slot)) {
      return this.hv.fail(EINVAL, `L4 update in Xen-private area, slot ${slot}`);
    }
    const olo = this.view.getUint32(ma, true);
    const ohi = this.view.getUint32(ma + 4, true);
    if ((lo & PTE_P) !== 0) {
      if ((lo & BASE_DISALLOW_LO) !== 0) {
        return this.hv.fail(
          EINVAL,
          `bad L${level} flags 0x${(lo & BASE_DISALLOW_LO).toString(16)}`,
        );
      }
      if ((olo & PTE_P) !== 0 && !changed(olo, ohi, lo, hi)) {
        this.writeEntry(ma, lo, hi, preserveAd, olo);
        this.flushLinear = true;
        return 0;
      }
      const rc = this.getPageFromLNe(level, lo, hi, tableMfn, d);
      if (rc < 0) return rc;
    }
    this.writeEntry(ma, lo, hi, preserveAd, olo);
    this.putPageFromLNe(olo, ohi, tableMfn);
    this.flushLinear = true;
    return 0;
  }

  // ---------------------------------------------------------------------------------------
  // Hypercalls

  /**
   * Resolves `foreigndom` into page owner and page-table owner (`get_pg_owner`).
   *
   * @returns 0 or `-errno`; the owners in `this.pgOwner` / `this.ptOwner`
   */
  private resolveOwners(d: Domain, foreigndom: number): number {
    const fd = foreigndom & 0xffff;
    const pfd = (foreigndom >>> 16) & 0xffff;
    this.pgOwner = d;
    this.ptOwner = d;
    if (fd !== DOMID_SELF && fd !== d.id) {
      if (fd === DOMID_IO) {
        if (!d.privileged) return this.hv.fail(EPERM, `d${d.id} may not use DOMID_IO`);
      } else {
        const other = this.hv.domainById(fd);
        if (other === null) return this.hv.fail(ESRCH, `foreign domain ${fd} does not exist`);
        if (!d.privileged) return this.hv.fail(EPERM, `d${d.id} may not map d${fd}'s frames`);
        this.pgOwner = other;
      }
    }
    if (pfd !== 0) {
      const other = this.hv.domainById(pfd - 1);
      if (other === null) return this.hv.fail(ESRCH, `page-table domain ${pfd - 1} does not exist`);
      if (other !== d) {
        if (!d.privileged)
          return this.hv.fail(EPERM, `d${d.id} may not edit d${other.id}'s tables`);
        // XSA-109: page-table operations only on PV domains.
        if (other.kind !== "pv") return this.hv.fail(EINVAL, `d${other.id} is not a PV domain`);
        this.ptOwner = other;
      }
    }
    return 0;
  }

  private pgOwner: Domain | null = null;
  private ptOwner: Domain | null = null;

  /**
   * `HYPERVISOR_mmu_update(reqs, count, pdone, foreigndom)`: a batch of `{ptr, val}`
   * requests; processing stops at the first failure, `*pdone` counts successes.
   */
  mmuUpdate(v: Vcpu): number {
    const hv = this.hv;
    const d = v.domain;
    const batch = this.readBatch(v);
    let rc = this.resolveOwners(d, batch.foreigndom);
    if (rc < 0) return rc;
    const ptOwner = this.ptOwner!;
    const pgOwner = this.pgOwner!;
    this.flushLinear = false;
    const req = this.pair;
    const val = this.pair2;
    let i = 0;
    for (; i < batch.count; i++) {
      if (i > 0 && hv.preemptCheck(v)) {
        this.preemptBatch(v, batch, i, MmuUpdateLayout.size);
        this.finishBatch(ptOwner);
        return ERESTART;
      }
      const at = batch.list + i * MmuUpdateLayout.size;
      if (
        hv.readGuestU64(d, at + MmuUpdateLayout.ptr, req) < 0 ||
        hv.readGuestU64(d, at + MmuUpdateLayout.val, val) < 0
      ) {
        rc = hv.fail(EFAULT, `mmu_update request ${i} at 0x${at.toString(16)} is unreadable`);
        break;
      }
      const cmd = req[0]! & 7;
      const ptr = req[1]! * 2 ** 32 + (req[0]! - cmd);
      rc = this.oneUpdate(cmd, ptr, val[0]!, val[1]!, d, ptOwner, pgOwner);
      if (rc < 0) break;
      this.stats.updates++;
    }
    if (rc < 0) this.stats.rejected++;
    this.finishBatch(ptOwner);
    return this.endBatch(v, batch, i, rc);
  }

  /**
   * Decodes the `(list, count, pdone, foreigndom)` arguments shared by `mmu_update` and
   * `mmuext_op`. A `count` carrying {@link MMU_UPDATE_PREEMPTED} is a continuation: the flag
   * is stripped and the requests already done are read back from `*pdone`.
   */
  private readBatch(v: Vcpu): MmuBatch {
    const hv = this.hv;
    const regs = v.regs;
    const list = hv.regNum(v, 0);
    let count = regs[2]!;
    const pdone = hv.regNum(v, 2);
    const foreigndom = regs[6]!;
    let done = 0;
    if ((count & MMU_UPDATE_PREEMPTED) !== 0) {
      count = (count & ~MMU_UPDATE_PREEMPTED) >>> 0;
      if (pdone !== 0) {
        const prev = hv.readGuestU32(v.domain, pdone);
        if (prev >= 0) done = prev;
      }
    }
    return { list, count, pdone, foreigndom, done };
  }

  /**
   * Leaves the continuation of a batch preempted before request `i`: the list pointer moves
   * to request `i`, `count` holds the rest with {@link MMU_UPDATE_PREEMPTED}, and `*pdone`
   * the requests done so far.
   */
  private preemptBatch(v: Vcpu, batch: MmuBatch, i: number, size: number): void {
    const hv = this.hv;
    const regs = v.regs;
    hv.setRegNum(v, 0, batch.list + i * size);
    regs[2] = ((batch.count - i) | MMU_UPDATE_PREEMPTED) >>> 0;
    regs[3] = 0;
    if (batch.pdone !== 0) hv.writeGuestU32(v.domain, batch.pdone, batch.done + i);
  }

  /**
   * Ends a batch that stopped after `i` requests: writes `*pdone`.
   *
   * @returns `rc`, or `-EFAULT` when `rc` is 0 and `*pdone` cannot be written
   */
  private endBatch(v: Vcpu, batch: MmuBatch, i: number, rc: number): number {
    const done = batch.done + i;
    if (batch.pdone !== 0 && this.hv.writeGuestU32(v.domain, batch.pdone, done) < 0 && rc === 0) {
      return EFAULT;
    }
    return rc;
  }

  private finishBatch(ptOwner: Domain): void {
    if (this.flushLinear) {
      // XSA-286: any L2+ change flushes the page-table owner's TLBs before returning.
      this.hv.flushDomainTlbs(ptOwner);
      this.stats.linearFlushes++;
      this.flushLinear = false;
    }
  }

  private oneUpdate(
    cmd: number,
    ptr: number,
    lo: number,
    hi: number,
    d: Domain,
    ptOwner: Domain,
    pgOwner: Domain,
  ): number {
    const f = this.f;
    const mfn = Math.floor(ptr / PAGE_SIZE);
    switch (cmd) {
      case MMU_NORMAL_PT_UPDATE:
      case MMU_PT_UPDATE_PRESERVE_AD:
      case MMU_PT_UPDATE_NO_TRANSLATE: {
        if (!f.getPage(mfn, ptOwner.id)) {
          return this.hv.fail(EINVAL, `could not get page ${mfn} for normal update`);
        }
        const preserveAd = cmd === MMU_PT_UPDATE_PRESERVE_AD;
        let rc = EINVAL;
        const type = f.type[mfn]!;
        if (f.typeCount[mfn]! > 0 && (f.flags[mfn]! & FRAME_VALIDATED) !== 0) {
          if (type === PGT_l1_page_table) {
            rc = this.modL1Entry(ptr, lo, hi, preserveAd, ptOwner, pgOwner);
          } else if (isPageTableType(type)) {
            if (pgOwner === ptOwner) rc = this.modLNEntry(type, ptr, lo, hi, preserveAd, d);
            else this.hv.fail(EINVAL, "L2+ update with a foreign page owner");
          } else if (type === PGT_writable_page) {
            this.writeEntry(ptr, lo, hi, false, 0);
            rc = 0;
          } else {
            this.hv.fail(EINVAL, `frame ${mfn} has type ${f.typeName(mfn)}`);
          }
        } else if (this.getPageType(mfn, PGT_writable_page) === 0) {
          this.writeEntry(ptr, lo, hi, false, 0);
          this.putPageType(mfn);
          rc = 0;
        }
        f.putPage(mfn);
        return rc;
      }
      case MMU_MACHPHYS_UPDATE: {
        if (ptOwner !== d) return this.hv.fail(EPERM, "MACHPHYS_UPDATE for a foreign pt owner");
        if (pgOwner.kind !== "pv")
          return this.hv.fail(EINVAL, "MACHPHYS_UPDATE on a translated guest");
        if (!f.getPage(mfn, pgOwner.id)) {
          return this.hv.fail(
            EINVAL,
            `MACHPHYS_UPDATE of frame ${mfn} not owned by d${pgOwner.id}`,
          );
        }
        this.hv.m2p[mfn] = hi * 2 ** 32 + lo;
        f.putPage(mfn);
        return 0;
      }
      default:
        return this.hv.fail(ENOSYS, `unknown mmu_update command ${cmd}`);
    }
  }

  /** `HYPERVISOR_mmuext_op(ops, count, pdone, foreigndom)`. */
  mmuextOp(v: Vcpu): number {
    const hv = this.hv;
    const d = v.domain;
    const batch = this.readBatch(v);
    let rc = this.resolveOwners(d, batch.foreigndom & 0xffff);
    if (rc < 0) return rc;
    const pgOwner = this.pgOwner!;
    const a1 = this.pair;
    const a2 = this.pair2;
    let i = 0;
    for (; i < batch.count; i++) {
      if (i > 0 && hv.preemptCheck(v)) {
        this.preemptBatch(v, batch, i, MmuextOpLayout.size);
        return ERESTART;
      }
      const at = batch.list + i * MmuextOpLayout.size;
      const cmd = hv.readGuestU32(d, at + MmuextOpLayout.cmd);
      if (
        cmd < 0 ||
        hv.readGuestU64(d, at + MmuextOpLayout.arg1, a1) < 0 ||
        hv.readGuestU64(d, at + MmuextOpLayout.arg2, a2) < 0
      ) {
        rc = hv.fail(EFAULT, `mmuext_op ${i} at 0x${at.toString(16)} is unreadable`);
        break;
      }
      rc = this.oneExt(v, cmd, a1[1]! * 2 ** 32 + a1[0]!, a2[1]! * 2 ** 32 + a2[0]!, pgOwner);
      if (rc < 0) break;
    }
    return this.endBatch(v, batch, i, rc);
  }

  private oneExt(v: Vcpu, cmd: number, arg1: number, arg2: number, pgOwner: Domain): number {
    const hv = this.hv;
    const f = this.f;
    const d = v.domain;
    switch (cmd) {
      case MMUEXT_PIN_L1_TABLE:
      case MMUEXT_PIN_L2_TABLE:
      case MMUEXT_PIN_L3_TABLE:
      case MMUEXT_PIN_L4_TABLE: {
        const type = cmd - MMUEXT_PIN_L1_TABLE + PGT_l1_page_table;
        if (!f.valid(arg1)) return hv.fail(EINVAL, `pin of invalid mfn ${arg1}`);
        const rc = this.getPageAndType(arg1, type, pgOwner.id);
        if (rc < 0) return hv.fail(rc, `error ${rc} while pinning mfn ${arg1} as L${type}`);
        if ((f.flags[arg1]! & FRAME_PINNED) !== 0) {
          this.putPageAndType(arg1);
          return hv.fail(EINVAL, `mfn ${arg1} already pinned`);
        }
        f.flags[arg1] = f.flags[arg1]! | FRAME_PINNED;
        return 0;
      }
      case MMUEXT_UNPIN_TABLE: {
        if (!f.getPage(arg1, pgOwner.id)) return hv.fail(EINVAL, `unpin of foreign mfn ${arg1}`);
        if ((f.flags[arg1]! & FRAME_PINNED) === 0) {
          f.putPage(arg1);
          return hv.fail(EINVAL, `mfn ${arg1} not pinned`);
        }
        f.flags[arg1] = f.flags[arg1]! & ~FRAME_PINNED;
        this.putPageAndType(arg1);
        f.putPage(arg1);
        return 0;
      }
      case MMUEXT_NEW_BASEPTR:
      case MMUEXT_NEW_USER_BASEPTR: {
        if (pgOwner !== d) return hv.fail(EPERM, "NEW_BASEPTR for a foreign domain");
        const user = cmd === MMUEXT_NEW_USER_BASEPTR;
        const old = user ? v.cr3User : v.cr3;
        if (user && arg1 === 0) {
          if (old >= 0) this.putPageAndType(old);
          v.cr3User = -1;
          return 0;
        }
        if (arg1 === old) return 0;
        if (!f.valid(arg1)) return hv.fail(EINVAL, `base pointer to invalid mfn ${arg1}`);
        if (
          hv.options.strictBasePtr &&
          (f.type[arg1] !== PGT_l4_page_table ||
            (f.flags[arg1]! & (FRAME_PINNED | FRAME_VALIDATED)) !==
              (FRAME_PINNED | FRAME_VALIDATED))
        ) {
          return hv.fail(EINVAL, `base pointer ${arg1} is not a pinned, validated L4`);
        }
        const rc = this.getPageAndType(arg1, PGT_l4_page_table, d.id);
        if (rc < 0) return hv.fail(rc, `base pointer ${arg1} failed L4 validation`);
        if (user) v.cr3User = arg1;
        else {
          v.cr3 = arg1;
          v.tlb.flushAll();
        }
        if (old >= 0) this.putPageAndType(old);
        return 0;
      }
      case MMUEXT_TLB_FLUSH_LOCAL:
        if (pgOwner !== d) return hv.fail(EPERM, "TLB flush for a foreign domain");
        v.tlb.flushAll();
        return 0;
      case MMUEXT_INVLPG_LOCAL:
        if (pgOwner !== d) return hv.fail(EPERM, "INVLPG for a foreign domain");
        if (isCanonical(arg1)) v.tlb.flushPage(Math.floor(vaTo48(arg1) / PAGE_SIZE));
        return 0;
      case MMUEXT_TLB_FLUSH_MULTI:
      case MMUEXT_INVLPG_MULTI: {
        if (pgOwner !== d) return hv.fail(EPERM, "TLB flush for a foreign domain");
        const mask = hv.readGuestU32(d, arg2);
        if (mask < 0) return hv.fail(EINVAL, "bad vCPU mask pointer");
        for (const w of d.vcpus) {
          if (w.id >= 32 || (mask & (1 << w.id)) === 0) continue;
          if (cmd === MMUEXT_TLB_FLUSH_MULTI) w.tlb.flushAll();
          else if (isCanonical(arg1)) w.tlb.flushPage(Math.floor(vaTo48(arg1) / PAGE_SIZE));
        }
        return 0;
      }
      case MMUEXT_TLB_FLUSH_ALL:
        if (pgOwner !== d) return hv.fail(EPERM, "TLB flush for a foreign domain");
        hv.flushDomainTlbs(d);
        return 0;
      case MMUEXT_INVLPG_ALL:
        if (pgOwner !== d) return hv.fail(EPERM, "INVLPG for a foreign domain");
        if (isCanonical(arg1)) {
          for (const w of d.vcpus) w.tlb.flushPage(Math.floor(vaTo48(arg1) / PAGE_SIZE));
        }
        return 0;
      case MMUEXT_FLUSH_CACHE:
      case MMUEXT_FLUSH_CACHE_GLOBAL:
        return hv.fail(EACCES, "cache flush not permitted");
      case MMUEXT_SET_LDT:
        if (arg2 > 8192 || arg1 % PAGE_SIZE !== 0 || !isCanonical(arg1)) {
          return hv.fail(EINVAL, `bad LDT ${arg1} / ${arg2} entries`);
        }
        return 0;
      case MMUEXT_CLEAR_PAGE:
      case MMUEXT_COPY_PAGE: {
        const rc = this.getPageAndType(arg1, PGT_writable_page, pgOwner.id);
        if (rc < 0) return hv.fail(EINVAL, `destination ${arg1} is not a writable page`);
        let out = 0;
        if (cmd === MMUEXT_CLEAR_PAGE) {
          hv.machineBytes.fill(0, arg1 * PAGE_SIZE, (arg1 + 1) * PAGE_SIZE);
        } else if (!f.getPage(arg2, pgOwner.id)) {
          out = hv.fail(EINVAL, `copy source ${arg2} is not owned`);
        } else {
          hv.machineBytes.copyWithin(arg1 * PAGE_SIZE, arg2 * PAGE_SIZE, (arg2 + 1) * PAGE_SIZE);
          f.putPage(arg2);
        }
        this.putPageAndType(arg1);
        return out;
      }
      case MMUEXT_MARK_SUPER:
      case MMUEXT_UNMARK_SUPER:
        return hv.fail(EOPNOTSUPP, "PV superpages were removed (commit 56fff3e5e9)");
      default:
        return hv.fail(ENOSYS, `unknown mmuext_op command ${cmd}`);
    }
  }

  /**
   * `HYPERVISOR_update_va_mapping(va, val, flags)`: finds the L1 entry mapping `va` through
   * the current tables, requires an L1 page table there, applies `mod_l1_entry`, and only on
   * success flushes as `flags` asks (XSA-279: no flush on error).
   *
   * @param v - the calling vCPU
   * @param va - virtual address (signed register)
   * @param lo - low word of the new entry
   * @param hi - high word of the new entry
   * @param flags - `UVMF_*` (MULTI: the upper bits are a vCPU-mask pointer)
   */
  updateVaMapping(v: Vcpu, va: number, lo: number, hi: number, flags: number): number {
    const hv = this.hv;
    const d = v.domain;
    if (!isCanonical(va)) return hv.fail(EINVAL, `update_va_mapping of non-canonical ${va}`);
    const lin = vaTo48(va);
    if (v.cr3 < 0) return hv.fail(EINVAL, "update_va_mapping without a base pointer");
    const l4slot = ptIndex(lin, 4);
    if (isXenL4Slot(l4slot)) return hv.fail(EINVAL, "update_va_mapping in Xen's range");
    let table = v.cr3;
    for (let level = 4; level >= 2; level--) {
      const ea = table * PAGE_SIZE + ptIndex(lin, level) * 8;
      const elo = this.view.getUint32(ea, true);
      const ehi = this.view.getUint32(ea + 4, true);
      if ((elo & PTE_P) === 0) return hv.fail(EINVAL, `no L${level - 1} table maps ${va}`);
      table = pteFrame(elo, ehi);
      if (!this.f.valid(table)) return hv.fail(EINVAL, "broken table chain");
    }
    const f = this.f;
    if (
      f.type[table] !== PGT_l1_page_table ||
      f.typeCount[table] === 0 ||
      f.owner[table] !== d.id
    ) {
      return hv.fail(EINVAL, `frame ${table} mapping ${va} is not an L1 page table of d${d.id}`);
    }
    const kind = flags & UVMF_FLUSHTYPE_MASK;
    const scope = flags - kind;
    // The vCPU mask is read before anything changes, so a bad pointer leaves the entry alone.
    let mask = 0;
    if (kind !== 0 && scope !== 0 && scope !== UVMF_ALL) {
      mask = hv.readGuestU32(d, scope);
      if (mask < 0) return hv.fail(EFAULT, "bad vCPU mask for UVMF_MULTI");
    }
    const rc = this.modL1Entry(table * PAGE_SIZE + ptIndex(lin, 1) * 8, lo, hi, false, d, d);
    if (rc < 0) return rc;
    const vpn = Math.floor(lin / PAGE_SIZE);
    if (kind === 0) return 0;
    const apply = (w: Vcpu) => {
      if (kind === UVMF_TLB_FLUSH) w.tlb.flushAll();
      else if (kind === UVMF_INVLPG) w.tlb.flushPage(vpn);
    };
    if (scope === 0) apply(v);
    else if (scope === UVMF_ALL) for (const w of d.vcpus) apply(w);
    else for (const w of d.vcpus) if (w.id < 32 && (mask & (1 << w.id)) !== 0) apply(w);
    return 0;
  }
}

/** `lN_has_changed(old, new, ~FASTPATH_FLAG_WHITELIST)`: address or a non-whitelisted bit. */
function changed(olo: number, ohi: number, lo: number, hi: number): boolean {
  return ((olo ^ lo) & ~FASTPATH_WHITELIST_LO) !== 0 || ((ohi ^ hi) & ~FASTPATH_WHITELIST_HI) !== 0;
}
