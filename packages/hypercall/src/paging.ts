/**
 * The simulated x86-64 MMU: canonical addresses, a 4-level walk over 8-byte entries
 * (P, RW, US, A, D, PS, NX), and a direct-mapped TLB with per-page and full flushes.
 * The same walk serves the PV MMU (tables hold machine frames), the shadow MMU's guest walk
 * and the hardware-assisted model (tables hold guest frames, each table reached through a
 * nested walk).
 *
 * @module
 */

import {
  PAGE_SIZE,
  PTE_A,
  PTE_ADDR_LO,
  PTE_D,
  PTE_HI_ADDR,
  PTE_HI_NX,
  PTE_P,
  PTE_PS,
  PTE_RW,
  PTE_US,
} from "./abi.js";

/** Access kind bits (the x86 #PF error-code bits W=1, U=4, I/D=16). A read is 0. */
export const ACCESS_READ = 0;
/** A write. */
export const ACCESS_WRITE = 1;
/** A user-mode (CPL 3) access. */
export const ACCESS_USER = 4;
/** An instruction fetch. */
export const ACCESS_EXEC = 16;

/** Translation faults (negative results of a translate). */
export const FAULT_NOT_PRESENT = -1;
/** A present mapping that forbids the access (RW, US or NX). */
export const FAULT_PROTECTION = -2;
/** The virtual address is not canonical (bits 63..47 not a sign extension). */
export const FAULT_NON_CANONICAL = -3;
/** The address is reserved to the hypervisor (Xen's L4 slots 256..271 for a PV guest). */
export const FAULT_RESERVED = -4;
/** A table or frame outside guest/machine memory (a broken or hostile table). */
export const FAULT_BAD_FRAME = -5;

/** 2^47: canonical addresses are `[-2^47, 2^47)` in the signed register model. */
export const VA_HALF = 2 ** 47;
/** 2^48. */
const VA_SPAN = 2 ** 48;

/**
 * Whether a virtual address (signed register value) is canonical.
 *
 * @param va - the address
 * @returns true for integers in `[-2^47, 2^47)`
 */
export function isCanonical(va: number): boolean {
  return va >= -VA_HALF && va < VA_HALF && Math.floor(va) === va;
}

/**
 * Maps a canonical address to its 48-bit linear form (`va & (2^48 - 1)`).
 *
 * @param va - a canonical address
 * @returns a value in `[0, 2^48)`
 */
export function vaTo48(va: number): number {
  return va < 0 ? va + VA_SPAN : va;
}

/**
 * Inverse of {@link vaTo48}: sign-extends bit 47.
 *
 * @param linear - a 48-bit linear address
 * @returns the canonical address
 */
export function linearToVa(linear: number): number {
  return linear >= VA_HALF ? linear - VA_SPAN : linear;
}

/**
 * Index of the entry that maps `linear` at a level.
 *
 * @param linear - 48-bit linear address
 * @param level - 1..4
 * @returns 0..511
 */
export function ptIndex(linear: number, level: number): number {
  return Math.floor(linear / 2 ** (12 + 9 * (level - 1))) % 512;
}

/**
 * Frame number held by an entry.
 *
 * @param lo - low 32 bits
 * @param hi - high 32 bits
 * @returns bits 12..51 as a frame number
 */
export function pteFrame(lo: number, hi: number): number {
  return (hi & PTE_HI_ADDR) * 0x10_0000 + ((lo & PTE_ADDR_LO) >>> 12);
}

/**
 * Low word of an entry mapping `frame` with `flags`.
 *
 * @param frame - frame number
 * @param flags - low-word flag bits (`PTE_*`)
 * @returns the low 32 bits
 */
export function pteLo(frame: number, flags: number): number {
  return (((frame % 0x10_0000) << 12) | (flags & 0xfff)) >>> 0;
}

/**
 * High word of an entry mapping `frame`.
 *
 * @param frame - frame number
 * @param hiFlags - high-word bits (`PTE_HI_NX`, `PTE_HI_AVAIL`)
 * @returns the high 32 bits
 */
export function pteHi(frame: number, hiFlags = 0): number {
  return ((Math.floor(frame / 0x10_0000) & PTE_HI_ADDR) | hiFlags) >>> 0;
}

/** TLB permission bits. */
export const TLB_W = 1;
/** User accessible. */
export const TLB_U = 2;
/** Executable (NX clear along the walk). */
export const TLB_X = 4;
/** Dirty already set in the leaf entry (a write may hit). */
export const TLB_D = 8;

/**
 * A direct-mapped TLB: `vpn → (frame, permissions)`. Hit/miss/flush counters included.
 */
export class Tlb {
  private readonly tags: Float64Array;
  private readonly frames: Float64Array;
  private readonly perms: Uint8Array;
  private readonly mask: number;
  /** Lookups that hit. */
  hits = 0;
  /** Lookups that missed. */
  misses = 0;
  /** Full flushes. */
  fullFlushes = 0;
  /** Single-page invalidations. */
  pageFlushes = 0;

  /** @param entries - number of entries (rounded up to a power of two, at least 16) */
  constructor(entries = 1024) {
    let n = 16;
    while (n < entries) n *= 2;
    this.tags = new Float64Array(n).fill(-1);
    this.frames = new Float64Array(n);
    this.perms = new Uint8Array(n);
    this.mask = n - 1;
  }

  /**
   * Looks a page up.
   *
   * @param vpn - virtual page number of the 48-bit linear address
   * @returns the slot index on a hit, -1 on a miss
   */
  lookup(vpn: number): number {
    const i = (vpn >>> 0) & this.mask;
    if (this.tags[i] === vpn) {
      this.hits++;
      return i;
    }
    this.misses++;
    return -1;
  }

  /** Frame cached in a slot returned by {@link lookup}. */
  frameAt(slot: number): number {
    return this.frames[slot]!;
  }

  /** Permission bits cached in a slot. */
  permsAt(slot: number): number {
    return this.perms[slot]!;
  }

  /** Caches a translation. */
  insert(vpn: number, frame: number, perms: number): void {
    const i = (vpn >>> 0) & this.mask;
    this.tags[i] = vpn;
    this.frames[i] = frame;
    this.perms[i] = perms;
  }

  /** Whether `vpn` is cached (no counters touched). */
  has(vpn: number): boolean {
    return this.tags[(vpn >>> 0) & this.mask] === vpn;
  }

  /** Drops every entry (a CR3 load or a full flush). */
  flushAll(): void {
    this.tags.fill(-1);
    this.fullFlushes++;
  }

  /** Drops one page (INVLPG). */
  flushPage(vpn: number): void {
    const i = (vpn >>> 0) & this.mask;
    if (this.tags[i] === vpn) this.tags[i] = -1;
    this.pageFlushes++;
  }
}

/**
 * Resolves a frame number found in a table entry to a machine frame, or -1. Returns the
 * machine frame for a table (when `isTable`) or for the final page.
 */
export type FrameResolver = (frame: number, isTable: boolean) => number;

/** Output of {@link walk}: the machine frame of the page and its permission bits. */
export interface WalkOut {
  /** Machine frame of the 4 KiB page holding the address. */
  frame: number;
  /** `TLB_*` permission bits. */
  perms: number;
  /** Memory references made by the walk (entry reads; A/D write-backs not counted). */
  refs: number;
}

/**
 * Walks 4-level tables the way the CPU does: checks P at each level, ANDs RW and US, ORs NX,
 * sets A in every entry used and D in the leaf on a write, follows PS at L3 (1 GiB) and L2
 * (2 MiB). Write access is checked as with CR0.WP = 1.
 *
 * @param view - machine memory
 * @param rootMachineFrame - machine frame of the L4
 * @param linear - 48-bit linear address
 * @param access - `ACCESS_*` bits
 * @param resolve - maps an entry's frame to a machine frame (identity for PV)
 * @param out - receives the result
 * @returns 0, or a `FAULT_*` code
 */
export function walk(
  view: DataView,
  rootMachineFrame: number,
  linear: number,
  access: number,
  resolve: FrameResolver,
  out: WalkOut,
): number {
  let table = rootMachineFrame;
  let rw = true;
  let us = true;
  let nx = false;
  out.refs = 0;
  const limit = view.byteLength;
  for (let level = 4; level >= 1; level--) {
    const ea = table * PAGE_SIZE + ptIndex(linear, level) * 8;
    if (ea + 8 > limit) return FAULT_BAD_FRAME;
    let lo = view.getUint32(ea, true);
    const hi = view.getUint32(ea + 4, true);
    out.refs++;
    if ((lo & PTE_P) === 0) return FAULT_NOT_PRESENT;
    rw &&= (lo & PTE_RW) !== 0;
    us &&= (lo & PTE_US) !== 0;
    nx ||= (hi & PTE_HI_NX) !== 0;
    const leaf = level === 1 || ((level === 2 || level === 3) && (lo & PTE_PS) !== 0);
    if ((access & ACCESS_WRITE) !== 0 && !rw) return FAULT_PROTECTION;
    if ((access & ACCESS_USER) !== 0 && !us) return FAULT_PROTECTION;
    if ((access & ACCESS_EXEC) !== 0 && nx) return FAULT_PROTECTION;
    let set = PTE_A;
    if (leaf && (access & ACCESS_WRITE) !== 0) set |= PTE_D;
    if ((lo & set) !== set) {
      lo = (lo | set) >>> 0;
      view.setUint32(ea, lo, true);
    }
    let frame = pteFrame(lo, hi);
    if (leaf) {
      if (level > 1) {
        // Superpage: the low bits of the frame come from the address.
        const pagesPer = 512 ** (level - 1);
        frame = frame - (frame % pagesPer) + (Math.floor(linear / PAGE_SIZE) % pagesPer);
      }
      const m = resolve(frame, false);
      if (m < 0) return FAULT_BAD_FRAME;
      out.frame = m;
      out.perms =
        (rw ? TLB_W : 0) | (us ? TLB_U : 0) | (nx ? 0 : TLB_X) | ((lo & PTE_D) !== 0 ? TLB_D : 0);
      return 0;
    }
    const next = resolve(frame, true);
    if (next < 0) return FAULT_BAD_FRAME;
    table = next;
  }
  return FAULT_NOT_PRESENT;
}

/**
 * Checks a cached translation against an access.
 *
 * @param perms - `TLB_*` bits
 * @param access - `ACCESS_*` bits
 * @returns 0 when allowed, {@link FAULT_PROTECTION} when forbidden, 1 when a write needs the
 *   walk to set D first
 */
export function checkPerms(perms: number, access: number): number {
  if ((access & ACCESS_WRITE) !== 0) {
    if ((perms & TLB_W) === 0) return FAULT_PROTECTION;
    if ((perms & TLB_D) === 0) return 1;
  }
  if ((access & ACCESS_USER) !== 0 && (perms & TLB_U) === 0) return FAULT_PROTECTION;
  if ((access & ACCESS_EXEC) !== 0 && (perms & TLB_X) === 0) return FAULT_PROTECTION;
  return 0;
}

/** Result of {@link tlbTranslate} when the walk must run (a miss, or a write that must set D). */
export const TLB_MISS = -256;

/**
 * The TLB-hit path of a translation: checks that `va` is canonical, looks its page up in
 * `tlb` and checks the cached permissions against the access.
 *
 * @param tlb - the TLB
 * @param va - the virtual address (signed register model)
 * @param access - `ACCESS_*` bits
 * @returns the machine address on a hit, {@link FAULT_NON_CANONICAL}, {@link FAULT_PROTECTION}
 *   when the cached permissions forbid the access, or {@link TLB_MISS} when the caller must
 *   walk
 */
export function tlbTranslate(tlb: Tlb, va: number, access: number): number {
  if (!isCanonical(va)) return FAULT_NON_CANONICAL;
  const linear = vaTo48(va);
  const vpn = Math.floor(linear / PAGE_SIZE);
  const slot = tlb.lookup(vpn);
  if (slot < 0) return TLB_MISS;
  const c = checkPerms(tlb.permsAt(slot), access);
  if (c < 0) return c;
  if (c === 0) return tlb.frameAt(slot) * PAGE_SIZE + (linear - vpn * PAGE_SIZE);
  return TLB_MISS;
}
