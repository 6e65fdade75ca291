/**
 * The trapping MMU (shadow paging, reference §6 "Shadow paging vs EPT/NPT"): an unmodified
 * guest keeps its own 4-level tables in guest-physical memory (entries hold guest frames).
 * The hypervisor write-protects every guest frame in use as a page table; each write to one
 * traps (one exit), is validated and applied to the shadow the hardware really walks.
 * Loading CR3, INVLPG and #PF are intercepted too (one exit each).
 *
 * Model decisions (documented so the numbers can be judged):
 * - The shadow follows CR3: loading a root shadows the tree reachable from it, eagerly, in
 *   that one exit; the shadow of the previous root is dropped (a one-entry root cache).
 * - A table linked below a tracked table is shadowed when the linking write traps.
 * - The shadow is kept as `vpn → (machine frame, permissions)`; a hardware walk of it costs
 *   four memory references on a TLB miss.
 * - A guest frame is shadowed at one level only, with at most {@link MAX_POSITIONS} places in
 *   the tree; entries beyond that (or to frames outside the guest) stay unshadowed, so the
 *   guest faults on them — a bound on the work a hostile guest can cause per exit.
 * - D is emulated exactly (the first write to a clean page is a hidden fault: one exit);
 *   A is set in the guest entry when the TLB is filled, without an exit.
 *
 * @module
 */

import { PAGE_SIZE, PTE_A, PTE_D, PTE_HI_NX, PTE_P, PTE_PS, PTE_RW, PTE_US } from "../abi.js";
import type { Domain } from "../domain.js";
import type { Hypervisor } from "../hypervisor.js";
import {
  ACCESS_WRITE,
  checkPerms,
  FAULT_NOT_PRESENT,
  isCanonical,
  pteFrame,
  TLB_D,
  TLB_MISS,
  TLB_U,
  TLB_W,
  TLB_X,
  Tlb,
  tlbTranslate,
  vaTo48,
} from "../paging.js";

/** Most places one guest table may occupy in the shadowed tree. */
export const MAX_POSITIONS = 64;

/** Counters of the trapping MMU. */
export interface ShadowStats {
  /** Exits of every kind. */
  exits: number;
  /** Guest writes to write-protected page-table frames. */
  trappedWrites: number;
  /** Intercepted CR3 loads. */
  cr3Loads: number;
  /** Intercepted INVLPG / flushes. */
  flushes: number;
  /** Intercepted page faults (hidden faults and faults reflected to the guest). */
  pageFaults: number;
  /** Memory references made by hardware walks of the shadow. */
  memRefs: number;
  /** Shadow entries currently installed. */
  shadowEntries: number;
}

const SPAN = [0, PAGE_SIZE, PAGE_SIZE * 512, PAGE_SIZE * 512 * 512, PAGE_SIZE * 512 ** 3];

/** Shadow paging for one vCPU of an HVM-style domain. */
export class ShadowMmu {
  /** Counters. */
  readonly stats: ShadowStats = {
    exits: 0,
    trappedWrites: 0,
    cr3Loads: 0,
    flushes: 0,
    pageFaults: 0,
    memRefs: 0,
    shadowEntries: 0,
  };
  /** The hardware TLB. */
  readonly tlb: Tlb;
  /** Guest frame of the loaded root, or -1. */
  root = -1;
  private readonly levelOf = new Map<number, number>();
  private readonly positions = new Map<number, number[]>();
  /** vpn → machine frame × 16 + TLB permission bits. */
  private readonly shadow = new Map<number, number>();
  /** vpn → machine address of the guest L1 entry (for A/D propagation). */
  private readonly guestPte = new Map<number, number>();
  private readonly view: DataView;

  /**
   * @param hv - the hypervisor (machine memory)
   * @param domain - the guest (its p2m)
   * @param tlbEntries - TLB size
   */
  constructor(
    readonly hv: Hypervisor,
    readonly domain: Domain,
    tlbEntries = 1024,
  ) {
    this.view = hv.machineView;
    this.tlb = new Tlb(tlbEntries);
  }

  /** Whether a guest frame is write-protected as a page table. */
  isTracked(gfn: number): boolean {
    return this.levelOf.has(gfn);
  }

  /** Number of tracked guest page-table frames. */
  get trackedFrames(): number {
    return this.levelOf.size;
  }

  // ---------------------------------------------------------------------------------------
  // Guest actions

  /**
   * A guest store of a 64-bit entry to guest-physical memory. Plain memory (no exit) unless
   * the frame is a tracked page table; then one exit, validation and a shadow update.
   *
   * @returns 0, or -1 when the address is not the guest's
   */
  guestWrite64(gpa: number, lo: number, hi: number): number {
    const ma = this.domain.gpaToMa(gpa);
    if (ma < 0 || gpa % 8 !== 0) return -1;
    const gfn = Math.floor(gpa / PAGE_SIZE);
    const level = this.levelOf.get(gfn);
    if (level === undefined) {
      this.view.setUint32(ma, lo >>> 0, true);
      this.view.setUint32(ma + 4, hi >>> 0, true);
      return 0;
    }
    this.stats.exits++;
    this.stats.trappedWrites++;
    const index = (gpa % PAGE_SIZE) / 8;
    const olo = this.view.getUint32(ma, true);
    const ohi = this.view.getUint32(ma + 4, true);
    const bases = (this.positions.get(gfn) ?? []).slice();
    for (const base of bases) this.dropEntry(level, olo, ohi, base + index * SPAN[level]!);
    this.view.setUint32(ma, lo >>> 0, true);
    this.view.setUint32(ma + 4, hi >>> 0, true);
    for (const base of bases) this.addEntry(level, lo, hi, ma, base + index * SPAN[level]!);
    return 0;
  }

  /** Zeroes a guest page with plain stores (each store to a tracked table would trap). */
  guestZeroPage(gfn: number): number {
    if (this.levelOf.has(gfn)) {
      for (let i = 0; i < 512; i++) this.guestWrite64(gfn * PAGE_SIZE + i * 8, 0, 0);
      return 0;
    }
    const mfn = this.domain.pfnToMfn(gfn);
    if (mfn < 0) return -1;
    this.hv.machineBytes.fill(0, mfn * PAGE_SIZE, (mfn + 1) * PAGE_SIZE);
    return 0;
  }

  /**
   * MOV to CR3 (intercepted: one exit). Drops the old shadow and shadows the new tree.
   *
   * @param rootGfn - guest frame of the L4, or -1 to unload
   */
  loadCr3(rootGfn: number): void {
    this.stats.exits++;
    this.stats.cr3Loads++;
    if (this.root >= 0) this.unshadowTable(this.root, 4, 0);
    this.levelOf.clear();
    this.positions.clear();
    this.shadow.clear();
    this.guestPte.clear();
    this.stats.shadowEntries = 0;
    this.tlb.flushAll();
    this.root = rootGfn >= 0 && this.domain.pfnToMfn(rootGfn) >= 0 ? rootGfn : -1;
    if (this.root >= 0) this.shadowTable(this.root, 4, 0);
  }

  /** INVLPG (intercepted: one exit). */
  invlpg(va: number): void {
    this.stats.exits++;
    this.stats.flushes++;
    if (isCanonical(va)) this.tlb.flushPage(Math.floor(vaTo48(va) / PAGE_SIZE));
  }

  /** A full TLB flush by reloading CR3 with the same value (intercepted: one exit). */
  flushTlb(): void {
    this.stats.exits++;
    this.stats.flushes++;
    this.tlb.flushAll();
  }

  /**
   * Translates through the TLB and the shadow. A miss in the shadow is an intercepted page
   * fault (one exit) reflected to the guest.
   *
   * @returns the machine address or a negative `FAULT_*`
   */
  translate(va: number, access: number): number {
    const hit = tlbTranslate(this.tlb, va, access);
    if (hit !== TLB_MISS) return hit;
    const lin = vaTo48(va);
    const vpn = Math.floor(lin / PAGE_SIZE);
    const off = lin - vpn * PAGE_SIZE;
    this.stats.memRefs += 4;
    const packed = this.shadow.get(vpn);
    if (packed === undefined) {
      this.stats.exits++;
      this.stats.pageFaults++;
      return FAULT_NOT_PRESENT;
    }
    let perms = packed % 16;
    const frame = (packed - perms) / 16;
    const pteMa = this.guestPte.get(vpn)!;
    let lo = this.view.getUint32(pteMa, true);
    if ((access & ACCESS_WRITE) !== 0 && (perms & TLB_W) !== 0 && (lo & PTE_D) === 0) {
      // Hidden fault: the shadow maps a clean page read-only until the guest's D is set.
      this.stats.exits++;
      this.stats.pageFaults++;
      lo |= PTE_D;
      perms |= TLB_D;
      this.shadow.set(vpn, frame * 16 + perms);
    }
    if ((lo & PTE_A) === 0) lo |= PTE_A;
    this.view.setUint32(pteMa, lo >>> 0, true);
    const c = checkPerms(perms, access);
    if (c < 0) {
      this.stats.exits++;
      this.stats.pageFaults++;
      return c;
    }
    this.tlb.insert(vpn, frame, perms);
    return frame * PAGE_SIZE + off;
  }

  // ---------------------------------------------------------------------------------------
  // Shadow maintenance

  private shadowTable(gfn: number, level: number, base: number): void {
    const known = this.levelOf.get(gfn);
    if (known !== undefined && known !== level) return;
    const list = this.positions.get(gfn) ?? [];
    if (list.length >= MAX_POSITIONS) return;
    list.push(base);
    this.positions.set(gfn, list);
    this.levelOf.set(gfn, level);
    const mfn = this.domain.pfnToMfn(gfn);
    for (let i = 0; i < 512; i++) {
      const ea = mfn * PAGE_SIZE + i * 8;
      const lo = this.view.getUint32(ea, true);
      if ((lo & PTE_P) === 0) continue;
      this.addEntry(level, lo, this.view.getUint32(ea + 4, true), ea, base + i * SPAN[level]!);
    }
  }

  private unshadowTable(gfn: number, level: number, base: number): void {
    const list = this.positions.get(gfn);
    if (list === undefined || this.levelOf.get(gfn) !== level) return;
    const at = list.indexOf(base);
    if (at < 0) return;
    list.splice(at, 1);
    const mfn = this.domain.pfnToMfn(gfn);
    for (let i = 0; i < 512; i++) {
      const ea = mfn * PAGE_SIZE + i * 8;
      const lo = this.view.getUint32(ea, true);
      if ((lo & PTE_P) === 0) continue;
      this.dropEntry(level, lo, this.view.getUint32(ea + 4, true), base + i * SPAN[level]!);
    }
    if (list.length === 0) {
      this.positions.delete(gfn);
      this.levelOf.delete(gfn);
    }
  }

  /** Applies one present guest entry found at `level` for the range starting at `lin`. */
  private addEntry(level: number, lo: number, hi: number, entryMa: number, lin: number): void {
    if ((lo & PTE_P) === 0) return;
    const target = pteFrame(lo, hi);
    if (level === 1) {
      const mfn = this.domain.pfnToMfn(target);
      if (mfn < 0) return;
      const vpn = lin / PAGE_SIZE;
      const perms = this.permsFor(lin, lo, hi);
      if (!this.shadow.has(vpn)) this.stats.shadowEntries++;
      this.shadow.set(vpn, mfn * 16 + perms);
      this.guestPte.set(vpn, entryMa);
      return;
    }
    if ((lo & PTE_PS) !== 0) return; // guest superpages are not shadowed (the guest faults)
    if (this.domain.pfnToMfn(target) < 0) return;
    this.shadowTable(target, level - 1, lin);
  }

  private dropEntry(level: number, lo: number, hi: number, lin: number): void {
    if ((lo & PTE_P) === 0) return;
    if (level === 1) {
      const vpn = lin / PAGE_SIZE;
      if (this.shadow.delete(vpn)) this.stats.shadowEntries--;
      this.guestPte.delete(vpn);
      return;
    }
    if ((lo & PTE_PS) !== 0) return;
    this.unshadowTable(pteFrame(lo, hi), level - 1, lin);
  }

  /**
   * Effective permissions of a leaf: the AND of RW/US and OR of NX along the guest's path.
   * The path is re-read from the guest tables (the entries above are tracked, so current).
   */
  private permsFor(lin: number, lo: number, hi: number): number {
    let rw = (lo & PTE_RW) !== 0;
    let us = (lo & PTE_US) !== 0;
    let nx = (hi & PTE_HI_NX) !== 0;
    let table = this.root;
    for (let level = 4; level >= 2 && table >= 0; level--) {
      const mfn = this.domain.pfnToMfn(table);
      if (mfn < 0) break;
      const ea = mfn * PAGE_SIZE + (Math.floor(lin / SPAN[level]!) % 512) * 8;
      const elo = this.view.getUint32(ea, true);
      const ehi = this.view.getUint32(ea + 4, true);
      if ((elo & PTE_P) === 0) break;
      rw &&= (elo & PTE_RW) !== 0;
      us &&= (elo & PTE_US) !== 0;
      nx ||= (ehi & PTE_HI_NX) !== 0;
      table = pteFrame(elo, ehi);
    }
    return (
      (rw ? TLB_W : 0) | (us ? TLB_U : 0) | (nx ? 0 : TLB_X) | ((lo & PTE_D) !== 0 ? TLB_D : 0)
    );
  }
}
