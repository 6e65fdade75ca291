/**
 * `pv_ops.mmu` (Linux `struct pv_mmu_ops`): the privileged half of memory management — how
 * a page-table entry is made and stored, how TLBs are flushed and address spaces switched.
 * The generic `mm` code above it is the same in every configuration; the choice is made
 * once at boot:
 *
 * - {@link NativeMmuOps}: an unmodified kernel's operations — plain stores to its tables,
 *   `MOV CR3`, `INVLPG`. Whether they exit is the host's business (shadow paging
 *   write-protects the tables and intercepts CR3/INVLPG; EPT/NPT intercepts nothing): the
 *   guest kernel cannot tell, only its CPU's execution controls know.
 * - {@link PvMmuOps}: Xen PV (arch/x86/xen/mmu_pv.c): entries hold machine frames
 *   (`xen_make_pte`), stores are `mmu_update` requests queued in lazy-MMU batches, roots
 *   are pinned (`MMUEXT_PIN_L4_TABLE`) and loaded with `MMUEXT_NEW_BASEPTR`, flushes are
 *   `MMUEXT_TLB_FLUSH_LOCAL` riding in the batch's multicall.
 *
 * @module
 */

import {
  MMU_NORMAL_PT_UPDATE,
  MMUEXT_NEW_BASEPTR,
  MMUEXT_PIN_L4_TABLE,
  MMUEXT_TLB_FLUSH_LOCAL,
  MMUEXT_UNPIN_TABLE,
  pteFrame,
  pteHi,
  pteLo,
} from "@pvkit/hypercall";
import { type Cpu, ExitOp } from "../../exit.js";
import type { PagingUnit } from "../arch/paging.js";
import type { XenHypercalls } from "../arch/xen.js";
import { panic } from "../panic.js";

const PAGE = 4096;

/** The MMU operations. */
export interface MmuOps {
  /** `"native"` (shadow and hap look the same to the guest) or `"pv"`. */
  readonly kind: "native" | "pv";
  /** The CPU's MMU (CR3, TLB). */
  readonly paging: PagingUnit;
  /** Low word of an entry mapping guest frame `gfn` with `flags` (`pfn_pte`). */
  entryLo(gfn: number, flags: number): number;
  /** High word of an entry mapping guest frame `gfn`. */
  entryHi(gfn: number): number;
  /** Guest frame an entry maps (`pte_pfn`). */
  entryGfn(lo: number, hi: number): number;
  /** A zeroed root table was allocated (`pgd_alloc`; PV pins it). */
  rootCreated(root: number): void;
  /** A root table that is not loaded is being freed (`pgd_free`; PV unpins it). */
  rootReleased(root: number): void;
  /** Stores entry `index` of table `table` (`set_pte`, `set_pmd`, …). */
  setEntry(table: number, index: number, lo: number, hi: number): void;
  /** `flush_tlb_one_user`. */
  flushPage(va: number): void;
  /** `flush_tlb_local`. */
  flushAll(): void;
  /** Makes every queued store and flush take effect (`arch_leave_lazy_mmu_mode`). */
  commit(): void;
  /** Loads an address space (`switch_mm` → `write_cr3`). */
  activate(root: number): void;
  /**
   * A table link stored but not yet applied (PV lazy mode queues it in the batch): the
   * child table's guest frame, or -1. Walks look here before reading the table.
   */
  pendingLink(table: number, index: number): number;
  /** Remembers a queued table link (see {@link pendingLink}). */
  notePendingLink(table: number, index: number, child: number): void;
}

/** An unmodified kernel's MMU operations. */
export class NativeMmuOps implements MmuOps {
  readonly kind = "native" as const;
  private readonly view: DataView;

  /**
   * @param cpu - the CPU
   * @param paging - its MMU
   * @param ram - guest RAM as a `DataView` (frame `n` at byte `n × 4096`)
   */
  constructor(
    private readonly cpu: Cpu,
    readonly paging: PagingUnit,
    ram: DataView,
  ) {
    this.view = ram;
  }

  entryLo(gfn: number, flags: number): number {
    return pteLo(gfn, flags);
  }
  entryHi(gfn: number): number {
    return pteHi(gfn);
  }
  entryGfn(lo: number, hi: number): number {
    return pteFrame(lo, hi);
  }
  rootCreated(_root: number): void {}
  rootReleased(_root: number): void {}

  /** A `MOV` to the entry: it traps when the host write-protects the frame. */
  setEntry(table: number, index: number, lo: number, hi: number): void {
    const gpa = table * PAGE + index * 8;
    const wp = this.cpu.controls.writeProtect;
    if (wp !== null && wp[table] !== 0) {
      const rc = this.cpu.exit(ExitOp.PTE_WRITE, gpa, lo >>> 0, hi >>> 0, 0, 0, 0);
      if (rc < 0)
        panic("mm/set_pte", `trapped page-table store at 0x${gpa.toString(16)} refused (${rc})`);
      return;
    }
    this.view.setUint32(gpa, lo >>> 0, true);
    this.view.setUint32(gpa + 4, hi >>> 0, true);
  }

  /** `INVLPG`. */
  flushPage(va: number): void {
    this.paging.flushPage(va);
    if (this.cpu.controls.tlbFlushExits) this.cpu.exit(ExitOp.INVLPG, va, 0, 0, 0, 0, 0);
  }

  /** A CR3 reload. */
  flushAll(): void {
    this.paging.flushAll();
    if (this.cpu.controls.tlbFlushExits) this.cpu.exit(ExitOp.TLB_FLUSH, 0, 0, 0, 0, 0, 0);
  }

  commit(): void {}

  /** `MOV CR3`. */
  activate(root: number): void {
    this.paging.cr3 = root;
    this.paging.flushAll();
    if (this.cpu.controls.cr3LoadExits) this.cpu.exit(ExitOp.CR3_LOAD, root, 0, 0, 0, 0, 0);
  }

  /** Native stores take effect at once: nothing is pending. */
  pendingLink(_table: number, _index: number): number {
    return -1;
  }
  notePendingLink(_table: number, _index: number, _child: number): void {}
}

/** Xen PV MMU operations. */
export class PvMmuOps implements MmuOps {
  readonly kind = "pv" as const;
  private flushPending = false;
  private readonly links = new Map<number, number>();

  /**
   * @param xen - the hypercall library
   * @param paging - the CPU's MMU
   * @param p2m - guest frame → machine frame (`start_info.mfn_list`)
   * @param m2p - machine frame → guest frame (Xen's read-only M2P table), -1 for others
   */
  constructor(
    private readonly xen: XenHypercalls,
    readonly paging: PagingUnit,
    private readonly p2m: Int32Array,
    private readonly m2p: Int32Array,
  ) {}

  private mfn(gfn: number): number {
    const m = this.p2m[gfn];
    if (m === undefined || m < 0) panic("mm/pfn_to_mfn", `guest frame ${gfn} has no machine frame`);
    return m;
  }

  private check(rc: number, where: string): void {
    if (rc >= 0) return;
    const f = this.xen.lastFailure;
    panic(where, `${f?.call ?? "hypercall"} failed with ${rc}`);
  }

  /** `xen_make_pte`: the machine frame goes in the entry. */
  entryLo(gfn: number, flags: number): number {
    return pteLo(this.mfn(gfn), flags);
  }
  entryHi(gfn: number): number {
    return pteHi(this.mfn(gfn));
  }
  /** `xen_pte_val` → `mfn_to_pfn`. */
  entryGfn(lo: number, hi: number): number {
    const m = pteFrame(lo, hi);
    return m < this.m2p.length ? this.m2p[m]! : -1;
  }

  /** `xen_pgd_pin`: `MMUEXT_PIN_L4_TABLE` validates the (empty) root. */
  rootCreated(root: number): void {
    this.check(this.xen.mmuext(MMUEXT_PIN_L4_TABLE, this.mfn(root)), "mm/pgd_alloc");
    this.links.clear();
  }

  /** `xen_pgd_unpin`: Xen drops the tree's types; it must not be loaded. */
  rootReleased(root: number): void {
    this.check(this.xen.mmuext(MMUEXT_UNPIN_TABLE, this.mfn(root)), "mm/pgd_free");
    this.links.clear();
  }

  /** `xen_set_pte` in lazy mode: one queued `mmu_update` request. */
  setEntry(table: number, index: number, lo: number, hi: number): void {
    const ptr = this.mfn(table) * PAGE + index * 8 + MMU_NORMAL_PT_UPDATE;
    this.check(this.xen.queueUpdate(ptr, lo, hi), "mm/set_pte (mmu_update batch)");
  }

  flushPage(_va: number): void {
    this.flushPending = true;
  }

  flushAll(): void {
    this.flushPending = true;
  }

  /** Sends the batch; a pending flush rides in the same multicall (one exit). */
  commit(): void {
    const flush = this.flushPending;
    this.flushPending = false;
    this.check(this.xen.flush(flush ? MMUEXT_TLB_FLUSH_LOCAL : -1, 0), "mm/lazy_mmu_flush");
    this.links.clear();
    if (flush) this.paging.flushAll();
  }

  /** `xen_write_cr3`: `MMUEXT_NEW_BASEPTR`, pending stores in the same multicall. */
  activate(root: number): void {
    this.flushPending = false;
    this.check(this.xen.flush(MMUEXT_NEW_BASEPTR, this.mfn(root)), "mm/write_cr3");
    this.links.clear();
    this.paging.cr3 = root;
    this.paging.flushAll();
  }

  pendingLink(table: number, index: number): number {
    if (this.xen.queued === 0) return -1;
    return this.links.get(table * 512 + index) ?? -1;
  }

  notePendingLink(table: number, index: number, child: number): void {
    this.links.set(table * 512 + index, child);
  }
}
