/**
 * `GuestAllocator`: the guest's own allocator for the memory its drivers hand to devices
 * (rings, indirect tables, DMA buffers) — the analogue of the guest kernel's page and
 * `kmalloc` allocators. First fit over an address-ordered free list, with coalescing of
 * neighbours on free.
 *
 * It only does bookkeeping: it never touches guest memory.
 *
 * @module
 */

/** A snapshot of an allocator's state. */
export interface GuestAllocatorStats {
  /** Bytes handed out (sum of live allocation sizes). */
  readonly allocatedBytes: number;
  /** Bytes on the free list. */
  readonly freeBytes: number;
  /** Live allocations. */
  readonly allocations: number;
  /** Free extents (1 when nothing is allocated). */
  readonly freeExtents: number;
  /** The largest free extent. */
  readonly largestFree: number;
}

/**
 * A first-fit allocator over the guest-physical range `[base, base + size)`.
 *
 * @example
 * ```ts
 * const heap = new GuestAllocator(0x10_0000, 0x40_0000);
 * const ring = heap.alloc(splitQueueBytes(256), 4096); // -1 when full
 * heap.free(ring);
 * ```
 */
export class GuestAllocator {
  /** First address managed. */
  readonly base: number;
  /** Bytes managed. */
  readonly size: number;
  // Free extents, sorted by start, never adjacent (coalesced), never empty.
  private starts: number[] = [];
  private ends: number[] = [];
  private readonly live = new Map<number, number>();
  private allocated = 0;

  /**
   * @param base - first guest-physical address of the heap
   * @param size - bytes in the heap
   * @throws RangeError when the range is not made of safe non-negative integers (a
   *   configuration error)
   */
  constructor(base: number, size: number) {
    if (!Number.isSafeInteger(base) || base < 0 || !Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`allocator range ${base}+${size} is invalid`);
    }
    if (!Number.isSafeInteger(base + size)) throw new RangeError("allocator range passes 2^53");
    this.base = base;
    this.size = size;
    this.reset();
  }

  /** Frees everything. */
  reset(): void {
    this.starts = this.size > 0 ? [this.base] : [];
    this.ends = this.size > 0 ? [this.base + this.size] : [];
    this.live.clear();
    this.allocated = 0;
  }

  /**
   * Allocates `size` bytes at an address that is a multiple of `align`.
   *
   * @param size - bytes (a positive integer)
   * @param align - a power of two (default 8)
   * @returns the address, or -1 when no free extent fits (or the arguments are invalid)
   */
  alloc(size: number, align = 8): number {
    if (!Number.isSafeInteger(size) || size <= 0) return -1;
    if (!Number.isSafeInteger(align) || align <= 0 || align > 2 ** 52) return -1;
    if (Math.log2(align) % 1 !== 0) return -1;
    const starts = this.starts;
    const ends = this.ends;
    for (let i = 0; i < starts.length; i++) {
      const start = starts[i]!;
      const end = ends[i]!;
      const at = Math.ceil(start / align) * align;
      if (at + size > end) continue;
      // Carve [at, at + size) out of [start, end): keep the head and tail fragments.
      const headFree = at > start;
      const tailFree = at + size < end;
      if (headFree && tailFree) {
        ends[i] = at;
        starts.splice(i + 1, 0, at + size);
        ends.splice(i + 1, 0, end);
      } else if (headFree) {
        ends[i] = at;
      } else if (tailFree) {
        starts[i] = at + size;
      } else {
        starts.splice(i, 1);
        ends.splice(i, 1);
      }
      this.live.set(at, size);
      this.allocated += size;
      return at;
    }
    return -1;
  }

  /**
   * Returns an allocation and merges it with free neighbours.
   *
   * @param address - an address {@link alloc} returned
   * @returns false (changing nothing) when `address` is not a live allocation — a double
   *   free or a wild pointer
   */
  free(address: number): boolean {
    const size = this.live.get(address);
    if (size === undefined) return false;
    this.live.delete(address);
    this.allocated -= size;
    const end = address + size;
    const starts = this.starts;
    const ends = this.ends;
    // First extent starting after the freed block.
    let lo = 0;
    let hi = starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[mid]! < address) lo = mid + 1;
      else hi = mid;
    }
    const prev = lo - 1;
    const joinPrev = prev >= 0 && ends[prev] === address;
    const joinNext = lo < starts.length && starts[lo] === end;
    if (joinPrev && joinNext) {
      ends[prev] = ends[lo]!;
      starts.splice(lo, 1);
      ends.splice(lo, 1);
    } else if (joinPrev) {
      ends[prev] = end;
    } else if (joinNext) {
      starts[lo] = address;
    } else {
      starts.splice(lo, 0, address);
      ends.splice(lo, 0, end);
    }
    return true;
  }

  /**
   * The size of a live allocation.
   *
   * @returns the size, or -1 when `address` is not a live allocation
   */
  sizeOf(address: number): number {
    return this.live.get(address) ?? -1;
  }

  /** Current counters. */
  stats(): GuestAllocatorStats {
    let largest = 0;
    for (let i = 0; i < this.starts.length; i++) {
      const n = this.ends[i]! - this.starts[i]!;
      if (n > largest) largest = n;
    }
    return {
      allocatedBytes: this.allocated,
      freeBytes: this.size - this.allocated,
      allocations: this.live.size,
      freeExtents: this.starts.length,
      largestFree: largest,
    };
  }

  /** The free extents as `[start, end)` pairs, in address order (for tests and diagnostics). */
  freeList(): Array<readonly [number, number]> {
    return this.starts.map((s, i) => [s, this.ends[i]!] as const);
  }
}
