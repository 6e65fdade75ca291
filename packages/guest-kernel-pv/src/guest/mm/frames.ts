/**
 * The physical page allocator and page database (Linux's buddy allocator and `struct page`,
 * much reduced): a stack of free guest frames, a use per frame (free, user data, page
 * table, kernel, the shared zero page) and a map count for user data frames, which makes
 * copy-on-write possible (a frame mapped by two processes is copied on the first write).
 * Frames are zeroed when handed out, through the kernel's direct map — which may never
 * write a frame in use as a page table (Xen keeps those read-only, reference §2.4).
 *
 * @module
 */

import type { GuestMemory } from "@pvkit/platform";
import { panic } from "../panic.js";

/** Frame uses. */
export const FrameUse = {
  /** On the free list. */
  FREE: 0,
  /** Mapped into user address spaces (counted). */
  DATA: 1,
  /** A page table. */
  TABLE: 2,
  /** Kernel memory (scratch, buffers, carved at boot). */
  KERNEL: 3,
  /** The shared zero page (mapped read-only everywhere, never freed). */
  ZERO: 4,
} as const;

const PAGE = 4096;

/** The page database. */
export class FrameTable {
  /** Use of each frame ({@link FrameUse}). */
  readonly use: Uint8Array;
  /** Mappings of each data frame. */
  readonly maps: Uint32Array;
  /** Frames handed out since boot. */
  allocations = 0;
  private readonly stack: Int32Array;
  private top = 0;
  private next: number;
  private readonly bytes: Uint8Array;

  /**
   * @param ram - guest RAM
   * @param pages - frames of RAM
   * @param firstFree - first frame not reserved by the host
   */
  constructor(
    ram: GuestMemory,
    readonly pages: number,
    firstFree: number,
  ) {
    this.use = new Uint8Array(pages).fill(FrameUse.KERNEL);
    this.maps = new Uint32Array(pages);
    this.stack = new Int32Array(pages);
    this.next = firstFree;
    this.bytes = ram.regions[0]!.bytes;
  }

  /**
   * Takes `count` contiguous frames for the kernel (boot only, before {@link online}).
   *
   * @returns the first frame
   */
  carve(count: number): number {
    const first = this.next;
    if (this.top !== 0 || first + count > this.pages)
      panic("mm/carve", `no room for ${count} boot frames`);
    this.next += count;
    return first;
  }

  /** Puts every frame not carved on the free list (end of boot). */
  online(): void {
    for (let pfn = this.pages - 1; pfn >= this.next; pfn--) {
      this.use[pfn] = FrameUse.FREE;
      this.stack[this.top++] = pfn;
    }
  }

  /** Free frames. */
  get free(): number {
    return this.top;
  }

  /**
   * A zeroed frame.
   *
   * @param use - what it will be ({@link FrameUse})
   * @returns the frame, or -1 when memory is exhausted
   */
  alloc(use: number): number {
    if (this.top === 0) return -1;
    const pfn = this.stack[--this.top]!;
    this.use[pfn] = use;
    this.maps[pfn] = use === FrameUse.DATA ? 1 : 0;
    this.bytes.fill(0, pfn * PAGE, (pfn + 1) * PAGE);
    this.allocations++;
    return pfn;
  }

  /** Returns a frame to the free list. */
  release(pfn: number): void {
    const u = this.use[pfn];
    if (u === FrameUse.FREE || u === FrameUse.ZERO || u === undefined)
      panic(
        "mm/free",
        `freeing frame ${pfn}, which is ${u === undefined ? "not RAM" : "free or the zero page"}`,
      );
    this.use[pfn] = FrameUse.FREE;
    this.maps[pfn] = 0;
    this.stack[this.top++] = pfn;
  }

  /** One more mapping of a data frame (fork). */
  get(pfn: number): void {
    if (this.use[pfn] === FrameUse.ZERO) return;
    if (this.use[pfn] !== FrameUse.DATA) panic("mm/get_page", `frame ${pfn} is not a data frame`);
    this.maps[pfn]!++;
  }

  /**
   * One mapping fewer; the frame is freed with its last one.
   *
   * @returns whether the frame was freed
   */
  put(pfn: number): boolean {
    if (this.use[pfn] === FrameUse.ZERO) return false;
    if (this.use[pfn] !== FrameUse.DATA || this.maps[pfn] === 0)
      panic("mm/put_page", `frame ${pfn} has no mapping to drop`);
    if (--this.maps[pfn]! > 0) return false;
    this.release(pfn);
    return true;
  }

  /** Copies a frame's bytes (copy-on-write) through the direct map. */
  copy(src: number, dst: number): void {
    if (this.use[dst] === FrameUse.TABLE) panic("mm/copy", `frame ${dst} is a page table`);
    this.bytes.copyWithin(dst * PAGE, src * PAGE, (src + 1) * PAGE);
  }

  /** The bytes of a frame (kernel direct map; must not be a page table when written). */
  frameBytes(pfn: number): Uint8Array {
    return this.bytes.subarray(pfn * PAGE, (pfn + 1) * PAGE);
  }
}
