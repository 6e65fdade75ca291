/**
 * The CPU's MMU as the guest kernel's "hardware": a TLB and the 4-level x86-64 page walk
 * over the tables in guest RAM. User-memory accesses of a process go through it (the
 * kernel simulates the CPU running the process), so a missing or read-only translation is
 * a real page fault into the kernel's handler, and a TLB entry the kernel forgot to flush
 * is really stale.
 *
 * Entries are created by the kernel with A (and D when writable) already set — as Linux's
 * anonymous-fault path does (`pte_mkyoung`, `pte_mkdirty`) — so the walk never writes
 * them, and shadow paging never takes a hidden dirty-bit fault. In PV mode the tables hold
 * machine frames; the walk maps them back with the machine-to-phys table.
 *
 * Cost model: a TLB miss costs 4 memory references on a native 4-level walk (PV and
 * shadow paging: the hardware walks a real table) and 24 on a two-dimensional EPT/NPT walk
 * (`@pvkit/hypercall` `HapMmu`; reference §6, "up to twenty-four sequential memory
 * accesses").
 *
 * @module
 */

import {
  ACCESS_USER,
  ACCESS_WRITE,
  FAULT_BAD_FRAME,
  FAULT_NON_CANONICAL,
  FAULT_NOT_PRESENT,
  FAULT_PROTECTION,
  PTE_P,
  PTE_RW,
  PTE_US,
  pteFrame,
} from "@pvkit/hypercall";

/** TLB entries (direct-mapped). */
const TLB_SIZE = 256;
/** Memory references of a native 4-level walk. */
export const WALK_REFS_NATIVE = 4;
/** Memory references of a 2-D walk (4 guest levels, each and the final address through 4 nested levels). */
export const WALK_REFS_NESTED = 24;

const PAGE = 4096;
const VA_HALF = 2 ** 47;

/** Converts the frame number in an entry to a guest frame (identity, or PV's M2P). */
export type FrameToGfn = (frame: number) => number;

/** The MMU: CR3, a TLB and the walk. */
export class PagingUnit {
  /** Guest frame of the loaded root (CR3), or -1. */
  cr3 = -1;
  /** TLB misses. */
  misses = 0;
  /** Memory references made by walks. */
  walkRefs = 0;
  private readonly tags = new Float64Array(TLB_SIZE).fill(-1);
  private readonly frames = new Float64Array(TLB_SIZE);
  private readonly writable = new Uint8Array(TLB_SIZE);
  private readonly refsPerWalk: number;

  /**
   * @param ram - guest RAM (guest frame `n` at byte `n × 4096`)
   * @param ramPages - pages of RAM
   * @param toGfn - maps an entry's frame to a guest frame
   * @param nested - two-dimensional walks (EPT/NPT)
   */
  constructor(
    private readonly ram: DataView,
    private readonly ramPages: number,
    private readonly toGfn: FrameToGfn,
    nested: boolean,
  ) {
    this.refsPerWalk = nested ? WALK_REFS_NESTED : WALK_REFS_NATIVE;
  }

  /**
   * Translates a user access.
   *
   * @param va - virtual address (non-negative, below 2^47)
   * @param write - a store
   * @returns the guest-physical address, or a negative `FAULT_*` of `@pvkit/hypercall`
   */
  translate(va: number, write: boolean): number {
    if (!(va >= 0 && va < VA_HALF)) return FAULT_NON_CANONICAL;
    const vpn = Math.floor(va / PAGE);
    const slot = vpn & (TLB_SIZE - 1);
    if (this.tags[slot] === vpn && (!write || this.writable[slot] === 1)) {
      return this.frames[slot]! * PAGE + (va - vpn * PAGE);
    }
    this.misses++;
    this.walkRefs += this.refsPerWalk;
    let table = this.cr3;
    if (table < 0) return FAULT_NOT_PRESENT;
    let rw = true;
    for (let level = 4; level >= 1; level--) {
      const ea = table * PAGE + (Math.floor(vpn / 512 ** (level - 1)) % 512) * 8;
      const lo = this.ram.getUint32(ea, true);
      if ((lo & PTE_P) === 0) return FAULT_NOT_PRESENT;
      if ((lo & PTE_US) === 0) return FAULT_PROTECTION;
      rw &&= (lo & PTE_RW) !== 0;
      const next = this.toGfn(pteFrame(lo, this.ram.getUint32(ea + 4, true)));
      if (next < 0 || next >= this.ramPages) return FAULT_BAD_FRAME;
      table = next;
    }
    if (write && !rw) return FAULT_PROTECTION;
    this.tags[slot] = vpn;
    this.frames[slot] = table;
    this.writable[slot] = rw ? 1 : 0;
    return table * PAGE + (va - vpn * PAGE);
  }

  /** Drops every TLB entry (CR3 load, full flush). */
  flushAll(): void {
    this.tags.fill(-1);
  }

  /** Drops one page's entry (`INVLPG`). */
  flushPage(va: number): void {
    const vpn = Math.floor(va / PAGE);
    const slot = vpn & (TLB_SIZE - 1);
    if (this.tags[slot] === vpn) this.tags[slot] = -1;
  }
}

/** Access bits of a user access (the x86 #PF error code bits), for `PAGE_FAULT` exits. */
export function faultAccess(write: boolean): number {
  return ACCESS_USER | (write ? ACCESS_WRITE : 0);
}
