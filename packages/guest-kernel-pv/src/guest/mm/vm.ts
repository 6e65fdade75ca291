/**
 * Address spaces and the generic memory manager (Linux `mm/`): 4-level page tables in
 * guest RAM built through `pv_ops.mmu`, virtual memory areas, demand-zero faults (a read
 * maps the shared zero page, a write a fresh zeroed frame), copy-on-write after `fork`
 * with per-frame map counts, `mmap`/`munmap` with deferred frame freeing after the TLB
 * flush (Linux's `mmu_gather`), and an exec-like build of a new address space from an
 * image. The same code runs in every configuration; only the `MmuOps` differ.
 *
 * User layout (x86-64 lower half): text/data at 4 MiB, `mmap` areas from
 * {@link MMAP_BASE} up (L4 slot 254), the stack below 2^47 (slot 255).
 *
 * @module
 */

import { PTE_A, PTE_D, PTE_P, PTE_RW, PTE_US } from "@pvkit/hypercall";
import { panic } from "../panic.js";
import { type FrameTable, FrameUse } from "./frames.js";
import type { MmuOps } from "./mmu-ops.js";

const PAGE = 4096;
const SPAN_L1 = PAGE * 512;
/** Linux's `tlb_single_page_flush_ceiling`: above this many pages a range flush is a full flush. */
export const TLB_SINGLE_PAGE_FLUSH_CEILING = 33;
/** Where text starts. */
export const USER_TEXT_BASE = 0x40_0000;
/** Where `mmap` areas start (L4 slot 254). */
export const MMAP_BASE = 0x7f00_0000_0000;
/** One past the top of the stack (2^47, the end of the canonical lower half). */
export const STACK_TOP = 2 ** 47;

/** A link to a lower table. */
const LINK = PTE_P | PTE_RW | PTE_US | PTE_A;
/** A read-only user page. */
const LEAF_RO = PTE_P | PTE_US | PTE_A;
/** A writable user page (created dirty: no hidden D-bit fault). */
const LEAF_RW = LEAF_RO | PTE_RW | PTE_D;

/** A virtual memory area. */
export interface Vma {
  /** First address (page-aligned). */
  start: number;
  /** One past the last address (page-aligned). */
  end: number;
  /** Writable (private: copy-on-write after fork). */
  readonly writable: boolean;
  /** What it is (`"text"`, `"data"`, `"bss"`, `"stack"`, `"mmap"`). */
  readonly name: string;
}

/** A process's address space. */
export class AddressSpace {
  /** Its areas, sorted by address, not overlapping. */
  vmas: Vma[] = [];
  /** Table frames (root included). */
  tables = 1;

  /** @param root - guest frame of the L4 */
  constructor(readonly root: number) {}

  /**
   * The area holding `va`.
   *
   * @returns the area, or undefined
   */
  find(va: number): Vma | undefined {
    for (const v of this.vmas) if (va >= v.start && va < v.end) return v;
    return undefined;
  }

  /** Inserts an area (keeps the order). */
  insert(vma: Vma): void {
    let i = 0;
    while (i < this.vmas.length && this.vmas[i]!.start < vma.start) i++;
    this.vmas.splice(i, 0, vma);
  }
}

/** An image an exec-like build maps: text (read-only), data (writable), bss and stack. */
export interface ExecImage {
  /** Name (for messages). */
  readonly name: string;
  /** Text bytes, mapped read-only at {@link USER_TEXT_BASE}. */
  readonly text: Uint8Array;
  /** Data bytes, mapped writable after the text. */
  readonly data: Uint8Array;
  /** Zero-filled pages after the data (demand-zero). */
  readonly bssPages: number;
  /** Stack pages below {@link STACK_TOP} (demand-zero). */
  readonly stackPages: number;
}

/** Where an image's parts land. */
export interface ImageLayout {
  readonly textStart: number;
  readonly dataStart: number;
  readonly bssStart: number;
  readonly stackStart: number;
}

/**
 * Layout of an image in a fresh address space.
 *
 * @param image - the image
 * @returns its addresses
 */
export function imageLayout(image: ExecImage): ImageLayout {
  const textStart = USER_TEXT_BASE;
  const dataStart = textStart + pagesOf(image.text.length) * PAGE;
  const bssStart = dataStart + pagesOf(image.data.length) * PAGE;
  return { textStart, dataStart, bssStart, stackStart: STACK_TOP - image.stackPages * PAGE };
}

function pagesOf(bytes: number): number {
  return Math.ceil(bytes / PAGE);
}

/** Raised inside the memory manager when no frame is left (callers turn it into -ENOMEM). */
export class OutOfMemory extends Error {
  constructor() {
    super("out of guest memory");
    this.name = "OutOfMemory";
  }
}

/** Outcome of a page fault. */
export type FaultResult = "mapped" | "cow" | "spurious" | "segv" | "oom";

/** Counters. */
export interface MmStats {
  faults: number;
  demandZero: number;
  cowCopies: number;
  cowReuses: number;
  segv: number;
}

/** The memory manager. */
export class Mm {
  /** Counters. */
  readonly stats: MmStats = { faults: 0, demandZero: 0, cowCopies: 0, cowReuses: 0, segv: 0 };
  /** The shared zero page. */
  readonly zeroPage: number;
  private readonly gather: number[] = [];

  /**
   * @param ops - `pv_ops.mmu`
   * @param frames - the page database
   * @param ram - guest RAM as a `DataView` (to read tables)
   */
  constructor(
    readonly ops: MmuOps,
    readonly frames: FrameTable,
    private readonly ram: DataView,
  ) {
    const z = frames.alloc(FrameUse.KERNEL);
    if (z < 0) panic("mm/init", "no frame for the zero page");
    frames.use[z] = FrameUse.ZERO;
    this.zeroPage = z;
  }

  // ---------------------------------------------------------------------------------------
  // Tables

  /** A new, empty address space (`pgd_alloc`). @throws OutOfMemory */
  create(): AddressSpace {
    const root = this.frames.alloc(FrameUse.TABLE);
    if (root < 0) throw new OutOfMemory();
    this.ops.rootCreated(root);
    return new AddressSpace(root);
  }

  private lo(table: number, index: number): number {
    return this.ram.getUint32(table * PAGE + index * 8, true);
  }
  private hi(table: number, index: number): number {
    return this.ram.getUint32(table * PAGE + index * 8 + 4, true);
  }

  /** The table below entry `index` of `table`, or -1. */
  private child(table: number, index: number): number {
    const pending = this.ops.pendingLink(table, index);
    if (pending >= 0) return pending;
    const lo = this.lo(table, index);
    if ((lo & PTE_P) === 0) return -1;
    return this.ops.entryGfn(lo, this.hi(table, index));
  }

  /**
   * The L1 table covering `va`.
   *
   * @param create - allocate and link missing tables
   * @returns the L1's guest frame, or -1 when missing and not created
   * @throws OutOfMemory when a table cannot be allocated
   */
  l1(as: AddressSpace, va: number, create: boolean): number {
    let table = as.root;
    for (let level = 4; level >= 2; level--) {
      const index = Math.floor(va / PAGE / 512 ** (level - 1)) % 512;
      let next = this.child(table, index);
      if (next < 0) {
        if (!create) return -1;
        next = this.frames.alloc(FrameUse.TABLE);
        if (next < 0) throw new OutOfMemory();
        this.ops.setEntry(table, index, this.ops.entryLo(next, LINK), this.ops.entryHi(next));
        this.ops.notePendingLink(table, index, next);
        as.tables++;
      }
      table = next;
    }
    return table;
  }

  private setLeaf(l1: number, index: number, gfn: number, writable: boolean): void {
    const o = this.ops;
    o.setEntry(l1, index, o.entryLo(gfn, writable ? LEAF_RW : LEAF_RO), o.entryHi(gfn));
  }

  // ---------------------------------------------------------------------------------------
  // Faults

  /**
   * The page-fault handler (`handle_mm_fault`): demand-zero and copy-on-write.
   *
   * @param va - faulting address
   * @param write - a store
   * @returns what was done; `"segv"` when no area allows the access, `"oom"` when no frame
   */
  fault(as: AddressSpace, va: number, write: boolean): FaultResult {
    this.stats.faults++;
    const vma = as.find(va);
    if (vma === undefined || (write && !vma.writable)) {
      this.stats.segv++;
      return "segv";
    }
    const page = va - (va % PAGE);
    let l1: number;
    try {
      l1 = this.l1(as, page, true);
    } catch (e) {
      if (e instanceof OutOfMemory) return "oom";
      throw e;
    }
    const index = Math.floor(page / PAGE) % 512;
    const lo = this.lo(l1, index);
    const o = this.ops;
    if ((lo & PTE_P) === 0) {
      if (write) {
        const f = this.frames.alloc(FrameUse.DATA);
        if (f < 0) return "oom";
        this.setLeaf(l1, index, f, true);
        this.stats.demandZero++;
      } else {
        this.setLeaf(l1, index, this.zeroPage, false);
      }
      o.commit();
      return "mapped";
    }
    if (!write || (lo & PTE_RW) !== 0) {
      // Present and allowed: a stale TLB entry (another path changed the entry).
      o.flushPage(page);
      o.commit();
      return "spurious";
    }
    // Copy-on-write.
    const old = o.entryGfn(lo, this.hi(l1, index));
    if (old === this.zeroPage || this.frames.maps[old]! > 1) {
      const f = this.frames.alloc(FrameUse.DATA);
      if (f < 0) return "oom";
      if (old !== this.zeroPage) this.frames.copy(old, f);
      this.setLeaf(l1, index, f, true);
      o.flushPage(page);
      o.commit();
      this.frames.put(old);
      this.stats.cowCopies++;
    } else {
      this.setLeaf(l1, index, old, true);
      o.flushPage(page);
      o.commit();
      this.stats.cowReuses++;
    }
    return "cow";
  }

  // ---------------------------------------------------------------------------------------
  // mmap / munmap

  /**
   * Creates an anonymous private area of `length` bytes (no page is mapped yet).
   *
   * @returns its address, or -EINVAL / -ENOMEM
   */
  mmap(as: AddressSpace, length: number, writable: boolean): number {
    if (!Number.isSafeInteger(length) || length <= 0 || length > 2 ** 40) return -22;
    const size = pagesOf(length) * PAGE;
    let start = MMAP_BASE;
    for (const v of as.vmas) {
      if (v.end <= start) continue;
      if (v.start >= start + size) break;
      start = v.end;
    }
    if (start + size > STACK_TOP - 2 ** 32) return -12;
    as.insert({ start, end: start + size, writable, name: "mmap" });
    return start;
  }

  /**
   * Removes `[va, va + length)` from the areas and unmaps its pages; frames are freed after
   * the TLB flush (per-page `INVLPG` up to {@link TLB_SINGLE_PAGE_FLUSH_CEILING} pages, else a
   * full flush).
   *
   * @returns pages unmapped, or -EINVAL
   */
  munmap(as: AddressSpace, va: number, length: number): number {
    if (
      !Number.isSafeInteger(va) ||
      va % PAGE !== 0 ||
      !Number.isSafeInteger(length) ||
      length <= 0
    )
      return -22;
    const end = va + pagesOf(length) * PAGE;
    if (end > STACK_TOP) return -22;
    const keep: Vma[] = [];
    for (const v of as.vmas) {
      if (v.end <= va || v.start >= end) keep.push(v);
      else {
        if (v.start < va) keep.push({ ...v, end: va });
        if (v.end > end) keep.push({ ...v, start: end });
      }
    }
    as.vmas = keep;
    const cleared = this.unmapRange(as, va, end);
    const o = this.ops;
    if (cleared.length > TLB_SINGLE_PAGE_FLUSH_CEILING) o.flushAll();
    else for (const p of cleared) o.flushPage(p);
    o.commit();
    this.releaseGathered();
    return cleared.length;
  }

  /** Clears the present leaves of a range; their frames go to the gather list. @returns the pages */
  private unmapRange(as: AddressSpace, start: number, end: number): number[] {
    const cleared: number[] = [];
    for (let va = start; va < end; ) {
      const l1 = this.l1(as, va, false);
      const l1End = Math.min(end, va - (va % SPAN_L1) + SPAN_L1);
      if (l1 < 0) {
        va = l1End;
        continue;
      }
      for (; va < l1End; va += PAGE) {
        const index = Math.floor(va / PAGE) % 512;
        const lo = this.lo(l1, index);
        if ((lo & PTE_P) === 0) continue;
        this.gather.push(this.ops.entryGfn(lo, this.hi(l1, index)));
        this.ops.setEntry(l1, index, 0, 0);
        cleared.push(va);
      }
    }
    return cleared;
  }

  private releaseGathered(): void {
    for (const f of this.gather) this.frames.put(f);
    this.gather.length = 0;
  }

  // ---------------------------------------------------------------------------------------
  // fork, exec, exit

  /**
   * Copies an address space for `fork` (`dup_mmap` + `copy_page_range`): the child gets
   * the same areas and every present page mapped read-only; the parent's writable pages
   * become read-only too (copy-on-write), then its TLB is flushed.
   *
   * @throws OutOfMemory (the half-built child is freed)
   */
  fork(parent: AddressSpace): AddressSpace {
    const child = this.create();
    child.vmas = parent.vmas.map((v) => ({ ...v }));
    let wrprotected = 0;
    try {
      for (const vma of parent.vmas) {
        for (let va = vma.start; va < vma.end; ) {
          const l1 = this.l1(parent, va, false);
          const l1End = Math.min(vma.end, va - (va % SPAN_L1) + SPAN_L1);
          if (l1 < 0) {
            va = l1End;
            continue;
          }
          let childL1 = -1;
          for (; va < l1End; va += PAGE) {
            const index = Math.floor(va / PAGE) % 512;
            const lo = this.lo(l1, index);
            if ((lo & PTE_P) === 0) continue;
            const gfn = this.ops.entryGfn(lo, this.hi(l1, index));
            if ((lo & PTE_RW) !== 0) {
              this.setLeaf(l1, index, gfn, false);
              wrprotected++;
            }
            if (childL1 < 0) childL1 = this.l1(child, va, true);
            this.setLeaf(childL1, index, gfn, false);
            this.frames.get(gfn);
          }
        }
      }
    } catch (e) {
      if (wrprotected > 0) this.ops.flushAll();
      this.ops.commit();
      this.destroy(child);
      throw e;
    }
    if (wrprotected > 0) this.ops.flushAll();
    this.ops.commit();
    return child;
  }

  /**
   * Builds a new address space from an image (`load_elf_binary`, much reduced): text
   * copied into frames and mapped read-only, data copied and mapped writable, bss and
   * stack as demand-zero areas.
   *
   * @throws OutOfMemory (the half-built space is freed)
   */
  exec(image: ExecImage): AddressSpace {
    const as = this.create();
    const l = imageLayout(image);
    try {
      this.populate(as, l.textStart, image.text, false, "text");
      this.populate(as, l.dataStart, image.data, true, "data");
      if (image.bssPages > 0) {
        as.insert({
          start: l.bssStart,
          end: l.bssStart + image.bssPages * PAGE,
          writable: true,
          name: "bss",
        });
      }
      if (image.stackPages > 0)
        as.insert({ start: l.stackStart, end: STACK_TOP, writable: true, name: "stack" });
      this.ops.commit();
    } catch (e) {
      this.ops.commit();
      this.destroy(as);
      throw e;
    }
    return as;
  }

  private populate(
    as: AddressSpace,
    start: number,
    bytes: Uint8Array,
    writable: boolean,
    name: string,
  ): void {
    const pages = pagesOf(bytes.length);
    if (pages === 0) return;
    as.insert({ start, end: start + pages * PAGE, writable, name });
    let l1 = -1;
    for (let i = 0; i < pages; i++) {
      const va = start + i * PAGE;
      if (l1 < 0 || va % SPAN_L1 === 0) l1 = this.l1(as, va, true);
      const f = this.frames.alloc(FrameUse.DATA);
      if (f < 0) throw new OutOfMemory();
      this.frames
        .frameBytes(f)
        .set(bytes.subarray(i * PAGE, Math.min(bytes.length, (i + 1) * PAGE)));
      this.setLeaf(l1, Math.floor(va / PAGE) % 512, f, writable);
    }
  }

  /**
   * Frees an address space that is not loaded (`exit_mmap` + `pgd_free`): every mapping
   * dropped, every table freed. PV unpins the root first (Xen drops the tree's types).
   */
  destroy(as: AddressSpace): void {
    this.ops.commit();
    const tables: number[] = [];
    this.collect(as.root, 4, tables);
    this.ops.rootReleased(as.root);
    for (const t of tables) this.frames.release(t);
  }

  private collect(table: number, level: number, tables: number[]): void {
    tables.push(table);
    // Only the user half (L4 slots 0–255) is ever used.
    const limit = level === 4 ? 256 : 512;
    for (let i = 0; i < limit; i++) {
      const lo = this.lo(table, i);
      if ((lo & PTE_P) === 0) continue;
      const gfn = this.ops.entryGfn(lo, this.hi(table, i));
      if (level === 1) this.frames.put(gfn);
      else this.collect(gfn, level - 1, tables);
    }
  }

  /**
   * The guest frame mapped at `va`, or -1 (a software walk, for tests and the COW checks).
   */
  lookup(as: AddressSpace, va: number): number {
    const l1 = this.l1(as, va, false);
    if (l1 < 0) return -1;
    const index = Math.floor(va / PAGE) % 512;
    const lo = this.lo(l1, index);
    return (lo & PTE_P) === 0 ? -1 : this.ops.entryGfn(lo, this.hi(l1, index));
  }
}
