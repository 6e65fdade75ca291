/**
 * The write-protect bitmap of shadow paging: one byte per guest frame, non-zero where the
 * hypervisor has write-protected the frame because it shadows it as a page table. It is
 * the hardware's view of the shadow's permissions — the guest's CPU model consults it on
 * every page-table store, so only stores to protected frames become `PTE_WRITE` exits, as
 * on real hardware. It mirrors `ShadowMmu.isTracked` of `@pvkit/hypercall` (which decides),
 * updated after each exit that can change what is shadowed: a CR3 load (the shadow follows
 * CR3) and a trapped store to a table above L1 (a table linked or unlinked).
 *
 * @module
 */

import { PTE_P, PTE_PS, pteFrame, type ShadowMmu } from "@pvkit/hypercall";

const PAGE = 4096;

/** The bitmap and its upkeep. */
export class WriteProtectMirror {
  /** One byte per guest frame (the {@link CpuControls.writeProtect} the guest sees). */
  readonly bits: Uint8Array;
  private readonly level: Uint8Array;
  private readonly set: number[] = [];

  /**
   * @param shadow - the shadow MMU that decides what is tracked
   * @param ram - the guest's RAM as the host sees it (guest frame `n` at byte `n × 4096`)
   * @param bits - where to keep the bitmap (a `SharedArrayBuffer`-backed view in the threaded runtime)
   */
  constructor(
    private readonly shadow: ShadowMmu,
    private readonly ram: DataView,
    bits: Uint8Array,
  ) {
    this.bits = bits;
    this.level = new Uint8Array(bits.length);
  }

  /** After a CR3 load: the shadowed tree is the new root's. */
  afterCr3Load(root: number): void {
    for (const gfn of this.set) {
      this.bits[gfn] = 0;
      this.level[gfn] = 0;
    }
    this.set.length = 0;
    this.protect(root, 4);
  }

  /**
   * Level of a protected frame (1–4), or 0.
   *
   * @param gfn - guest frame
   */
  levelOf(gfn: number): number {
    return gfn >= 0 && gfn < this.level.length ? this.level[gfn]! : 0;
  }

  /**
   * After a trapped store of an entry of a protected table: a link changed, so the tables
   * below the old and the new entry may have stopped or started being shadowed.
   *
   * @param tableGfn - the table written
   * @param oldLo - the entry before the store (low word)
   * @param oldHi - the entry before the store (high word)
   * @param newLo - the entry stored (low word)
   * @param newHi - the entry stored (high word)
   */
  afterTableWrite(
    tableGfn: number,
    oldLo: number,
    oldHi: number,
    newLo: number,
    newHi: number,
  ): void {
    const level = this.levelOf(tableGfn);
    if (level <= 1) return;
    if ((oldLo & PTE_P) !== 0 && (oldLo & PTE_PS) === 0)
      this.unprotect(pteFrame(oldLo, oldHi), level - 1);
    if ((newLo & PTE_P) !== 0 && (newLo & PTE_PS) === 0)
      this.protect(pteFrame(newLo, newHi), level - 1);
  }

  private protect(gfn: number, level: number): void {
    if (gfn < 0 || gfn >= this.bits.length || !this.shadow.isTracked(gfn)) return;
    if (this.bits[gfn] !== 0) return;
    this.bits[gfn] = 1;
    this.level[gfn] = level;
    this.set.push(gfn);
    if (level === 1) return;
    const base = gfn * PAGE;
    for (let i = 0; i < 512; i++) {
      const lo = this.ram.getUint32(base + i * 8, true);
      if ((lo & PTE_P) === 0 || (lo & PTE_PS) !== 0) continue;
      this.protect(pteFrame(lo, this.ram.getUint32(base + i * 8 + 4, true)), level - 1);
    }
  }

  private unprotect(gfn: number, level: number): void {
    if (gfn < 0 || gfn >= this.bits.length || this.bits[gfn] === 0) return;
    if (this.shadow.isTracked(gfn)) return;
    this.bits[gfn] = 0;
    this.level[gfn] = 0;
    const at = this.set.indexOf(gfn);
    if (at >= 0) {
      this.set[at] = this.set[this.set.length - 1]!;
      this.set.pop();
    }
    if (level === 1) return;
    const base = gfn * PAGE;
    for (let i = 0; i < 512; i++) {
      const lo = this.ram.getUint32(base + i * 8, true);
      if ((lo & PTE_P) === 0 || (lo & PTE_PS) !== 0) continue;
      this.unprotect(pteFrame(lo, this.ram.getUint32(base + i * 8 + 4, true)), level - 1);
    }
  }
}
