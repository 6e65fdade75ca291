/**
 * The hardware-assisted MMU model (EPT / NPT; reference §6): the guest owns its 4-level
 * tables in guest-physical memory and writes them freely — no exit for page-table writes,
 * CR3 loads or INVLPG. The cost moves to the TLB miss: a two-dimensional walk in which every
 * guest table access is itself translated through the hypervisor's 4-level nested table.
 * With 4×4 levels that is up to 24 memory references (4 guest entries + 4 × 4 nested
 * entries for the tables + 4 for the final guest-physical address); they are counted.
 *
 * The nested table is real: 4-level EPT-format tables (R=bit 0, W=bit 1, X=bit 2) built from
 * the domain's p2m in hypervisor-owned frames. Paging-structure caches are not modelled.
 *
 * @module
 */

import { DOMID_XEN, PAGE_SIZE } from "../abi.js";
import type { Domain } from "../domain.js";
import type { Hypervisor } from "../hypervisor.js";
import {
  type FrameResolver,
  isCanonical,
  pteFrame,
  pteHi,
  pteLo,
  TLB_MISS,
  Tlb,
  tlbTranslate,
  vaTo48,
  type WalkOut,
  walk,
} from "../paging.js";

/** EPT entry permission bits. */
export const EPT_R = 1;
/** Writable. */
export const EPT_W = 2;
/** Executable. */
export const EPT_X = 4;

/** Counters of the hardware-assisted model. */
export interface HapStats {
  /** Exits (always 0 for page-table work; EPT violations would count here). */
  exits: number;
  /** EPT violations (a guest frame with no nested mapping). */
  eptViolations: number;
  /** Memory references made by 2-D walks. */
  memRefs: number;
  /** TLB misses that walked. */
  walks: number;
  /** Largest single walk seen (references). */
  maxWalkRefs: number;
}

/** EPT/NPT model for one vCPU of a domain. */
export class HapMmu {
  /** Counters. */
  readonly stats: HapStats = { exits: 0, eptViolations: 0, memRefs: 0, walks: 0, maxWalkRefs: 0 };
  /** The TLB (caches guest-virtual → machine). */
  readonly tlb: Tlb;
  /** Guest frame of the guest's L4 (guest CR3), or -1. */
  root = -1;
  /** Machine frame of the nested (EPT) root. */
  readonly eptRoot: number;
  private readonly view: DataView;
  private readonly out: WalkOut = { frame: 0, perms: 0, refs: 0 };
  private nestedRefs = 0;
  private readonly resolver: FrameResolver;

  /**
   * Builds the nested table for every page of the domain.
   *
   * @param hv - the hypervisor
   * @param domain - the guest
   * @param tlbEntries - TLB size
   * @throws Error when machine memory cannot hold the nested table
   */
  constructor(
    readonly hv: Hypervisor,
    readonly domain: Domain,
    tlbEntries = 1024,
  ) {
    this.view = hv.machineView;
    this.tlb = new Tlb(tlbEntries);
    this.eptRoot = this.allocTable();
    for (let gfn = 0; gfn < domain.nrPages; gfn++) this.mapNested(gfn, domain.p2m[gfn]!);
    this.resolver = (frame) => this.nested(frame);
  }

  private allocTable(): number {
    const mfn = this.hv.allocFrame(DOMID_XEN);
    if (mfn < 0) throw new Error("out of machine memory for the nested page table");
    return mfn;
  }

  private mapNested(gfn: number, mfn: number): void {
    let table = this.eptRoot;
    for (let level = 4; level >= 2; level--) {
      const ea = table * PAGE_SIZE + (Math.floor(gfn / 512 ** (level - 1)) % 512) * 8;
      const lo = this.view.getUint32(ea, true);
      if ((lo & EPT_R) === 0) {
        const next = this.allocTable();
        this.view.setUint32(ea, pteLo(next, EPT_R | EPT_W | EPT_X), true);
        this.view.setUint32(ea + 4, pteHi(next), true);
        table = next;
      } else {
        table = pteFrame(lo, this.view.getUint32(ea + 4, true));
      }
    }
    const ea = table * PAGE_SIZE + (gfn % 512) * 8;
    this.view.setUint32(ea, pteLo(mfn, EPT_R | EPT_W | EPT_X), true);
    this.view.setUint32(ea + 4, pteHi(mfn), true);
  }

  /**
   * Translates a guest frame through the nested table (4 memory references).
   *
   * @returns the machine frame, or -1 (EPT violation)
   */
  nested(gfn: number): number {
    let table = this.eptRoot;
    for (let level = 4; level >= 1; level--) {
      const ea = table * PAGE_SIZE + (Math.floor(gfn / 512 ** (level - 1)) % 512) * 8;
      this.nestedRefs++;
      if (ea + 8 > this.view.byteLength || gfn < 0 || gfn >= 512 ** 4) return -1;
      const lo = this.view.getUint32(ea, true);
      if ((lo & EPT_R) === 0) return -1;
      table = pteFrame(lo, this.view.getUint32(ea + 4, true));
    }
    return table;
  }

  /** A guest store of a 64-bit entry: plain memory, no exit. @returns 0 or -1 */
  guestWrite64(gpa: number, lo: number, hi: number): number {
    const ma = this.domain.gpaToMa(gpa);
    if (ma < 0 || gpa % 8 !== 0) return -1;
    this.view.setUint32(ma, lo >>> 0, true);
    this.view.setUint32(ma + 4, hi >>> 0, true);
    return 0;
  }

  /** Zeroes a guest page (no exit). @returns 0 or -1 */
  guestZeroPage(gfn: number): number {
    const mfn = this.domain.pfnToMfn(gfn);
    if (mfn < 0) return -1;
    this.hv.machineBytes.fill(0, mfn * PAGE_SIZE, (mfn + 1) * PAGE_SIZE);
    return 0;
  }

  /** MOV to CR3: no exit; flushes this context's TLB. */
  loadCr3(rootGfn: number): void {
    this.root = rootGfn;
    this.tlb.flushAll();
  }

  /** INVLPG: no exit. */
  invlpg(va: number): void {
    if (isCanonical(va)) this.tlb.flushPage(Math.floor(vaTo48(va) / PAGE_SIZE));
  }

  /** Full flush: no exit. */
  flushTlb(): void {
    this.tlb.flushAll();
  }

  /**
   * Translates through the TLB or, on a miss, the 2-D walk.
   *
   * @returns the machine address or a negative `FAULT_*`
   */
  translate(va: number, access: number): number {
    const hit = tlbTranslate(this.tlb, va, access);
    if (hit !== TLB_MISS) return hit;
    const lin = vaTo48(va);
    const vpn = Math.floor(lin / PAGE_SIZE);
    const off = lin - vpn * PAGE_SIZE;
    this.nestedRefs = 0;
    const rootMfn = this.root >= 0 ? this.nested(this.root) : -1;
    if (rootMfn < 0) {
      this.stats.eptViolations++;
      return -1;
    }
    const rc = walk(this.view, rootMfn, lin, access, this.resolver, this.out);
    const refs = this.out.refs + this.nestedRefs;
    this.stats.walks++;
    this.stats.memRefs += refs;
    if (refs > this.stats.maxWalkRefs) this.stats.maxWalkRefs = refs;
    if (rc < 0) return rc;
    this.tlb.insert(vpn, this.out.frame, this.out.perms);
    return this.out.frame * PAGE_SIZE + off;
  }
}
