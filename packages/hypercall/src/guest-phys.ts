/**
 * `GuestPhys`: a guest kernel's view of its own pseudo-physical memory (its direct map).
 * Reads are free; for a PV guest, a write to a frame that currently is a page table
 * (type L1–L4 with a type reference) is refused — Xen guarantees no writable mapping of a
 * page-table frame exists, so the guest's direct map of it is read-only (reference §2.4).
 * No exits: this is plain guest memory.
 *
 * @module
 */

import { PAGE_SIZE } from "./abi.js";
import type { Domain } from "./domain.js";
import { isPageTableType } from "./frames.js";
import type { Hypervisor } from "./hypervisor.js";
import { FAULT_BAD_FRAME, FAULT_PROTECTION } from "./paging.js";

/** The guest's direct map of its pseudo-physical memory. */
export class GuestPhys {
  /** Writes refused because the frame is a page table. */
  deniedWrites = 0;
  private readonly view: DataView;
  private readonly bytes: Uint8Array;

  /**
   * @param hypervisor - the hypervisor (machine memory, frame types)
   * @param domain - whose memory this is
   */
  constructor(
    readonly hypervisor: Hypervisor,
    readonly domain: Domain,
  ) {
    this.view = hypervisor.machineView;
    this.bytes = hypervisor.machineBytes;
  }

  /**
   * Machine address of a guest-physical address for a write of `size` bytes.
   *
   * @returns the address, or a negative `FAULT_*`
   */
  private writeTarget(gpa: number, size: number): number {
    const ma = this.domain.gpaToMa(gpa);
    if (ma < 0 || (gpa % PAGE_SIZE) + size > PAGE_SIZE) return FAULT_BAD_FRAME;
    if (this.domain.kind === "pv") {
      const f = this.hypervisor.frames;
      const mfn = Math.floor(ma / PAGE_SIZE);
      if (isPageTableType(f.type[mfn]!) && f.typeCount[mfn]! > 0) {
        this.deniedWrites++;
        return FAULT_PROTECTION;
      }
    }
    return ma;
  }

  /** Reads a u32. @returns the value or a negative fault */
  readU32(gpa: number): number {
    const ma = this.domain.gpaToMa(gpa);
    if (ma < 0 || (gpa % PAGE_SIZE) + 4 > PAGE_SIZE) return FAULT_BAD_FRAME;
    return this.view.getUint32(ma, true);
  }

  /**
   * Reads a u64 into `out` (low, high).
   *
   * @returns 0 or a negative fault
   */
  readU64(gpa: number, out: Uint32Array): number {
    const ma = this.domain.gpaToMa(gpa);
    if (ma < 0 || (gpa % PAGE_SIZE) + 8 > PAGE_SIZE) return FAULT_BAD_FRAME;
    out[0] = this.view.getUint32(ma, true);
    out[1] = this.view.getUint32(ma + 4, true);
    return 0;
  }

  /** Writes a u32. @returns 0 or a negative fault */
  writeU32(gpa: number, value: number): number {
    const ma = this.writeTarget(gpa, 4);
    if (ma < 0) return ma;
    this.view.setUint32(ma, value >>> 0, true);
    return 0;
  }

  /** Writes a u64 as two words. @returns 0 or a negative fault */
  writeU64(gpa: number, lo: number, hi: number): number {
    const ma = this.writeTarget(gpa, 8);
    if (ma < 0) return ma;
    this.view.setUint32(ma, lo >>> 0, true);
    this.view.setUint32(ma + 4, hi >>> 0, true);
    return 0;
  }

  /** Writes bytes inside one page. @returns 0 or a negative fault */
  writeBytes(gpa: number, src: Uint8Array): number {
    const ma = this.writeTarget(gpa, src.length);
    if (ma < 0) return ma;
    this.bytes.set(src, ma);
    return 0;
  }

  /** Zeroes a page. @returns 0 or a negative fault */
  zeroPage(pfn: number): number {
    const ma = this.writeTarget(pfn * PAGE_SIZE, PAGE_SIZE);
    if (ma < 0) return ma;
    this.bytes.fill(0, ma, ma + PAGE_SIZE);
    return 0;
  }
}
