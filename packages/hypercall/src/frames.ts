/**
 * Per-machine-frame bookkeeping, as Xen keeps it in `struct page_info`
 * (xen/arch/x86/include/asm/mm.h; mm.c header comment; reference §2.4): owner, a general
 * reference count (`count_info`), a type (`PGT_*`), a type count and the
 * `PGT_validated` / `PGT_pinned` flags, and the XSA-240 `linear_pt_count`.
 *
 * Structure-of-arrays over typed arrays: no allocation per frame or per update.
 *
 * @module
 */

import { PGT_l1_page_table, PGT_l4_page_table, PGT_none } from "./abi.js";

/** `owner` value of a frame nobody owns. */
export const OWNER_NONE = -1;

/** Frame flag: the type has been validated (`PGT_validated`). */
export const FRAME_VALIDATED = 1;
/** Frame flag: pinned (`PGT_pinned`): holds one type reference until unpinned. */
export const FRAME_PINNED = 2;
/** Frame flag: a Xen heap page shared with the guest (e.g. `shared_info`): never a page table. */
export const FRAME_SPECIAL = 4;

/** Largest type or general count before Xen's "count overflow" refusal (`PGT_count_mask`). */
export const COUNT_MAX = 0x7fff_ffff;

/** A snapshot of one frame's bookkeeping (for tests and diagnostics). */
export interface FrameInfo {
  /** Owning domain id, or {@link OWNER_NONE}. */
  readonly owner: number;
  /** General reference count. */
  readonly count: number;
  /** `PGT_*` type. */
  readonly type: number;
  /** Type reference count. */
  readonly typeCount: number;
  /** `PGT_validated`. */
  readonly validated: boolean;
  /** `PGT_pinned`. */
  readonly pinned: boolean;
  /** XSA-240 `linear_pt_count`: > 0 holds linear entries, < 0 is the target of some. */
  readonly linear: number;
}

/** Names of the page types, indexed by `PGT_*`. */
export const PAGE_TYPE_NAMES = [
  "none",
  "l1",
  "l2",
  "l3",
  "l4",
  "seg_desc",
  "shared",
  "writable",
] as const;

/**
 * Whether a type is a page-table type (`PGT_l1..l4_page_table`).
 *
 * @param type - a `PGT_*` value
 * @returns true for L1–L4
 */
export function isPageTableType(type: number): boolean {
  return type >= PGT_l1_page_table && type <= PGT_l4_page_table;
}

/** The per-frame table (Xen's frame table). */
export class PageTypeTable {
  /** Owning domain id per frame. */
  readonly owner: Int32Array;
  /** General reference count per frame. */
  readonly count: Uint32Array;
  /** `PGT_*` type per frame. */
  readonly type: Uint8Array;
  /** Type count per frame. */
  readonly typeCount: Uint32Array;
  /** `FRAME_*` flags per frame. */
  readonly flags: Uint8Array;
  /** XSA-240 linear_pt_count per frame. */
  readonly linear: Int16Array;

  /** @param frames - number of machine frames */
  constructor(readonly frames: number) {
    this.owner = new Int32Array(frames).fill(OWNER_NONE);
    this.count = new Uint32Array(frames);
    this.type = new Uint8Array(frames);
    this.typeCount = new Uint32Array(frames);
    this.flags = new Uint8Array(frames);
    this.linear = new Int16Array(frames);
  }

  /**
   * Whether `mfn` is a frame of RAM (`mfn_valid`).
   *
   * @param mfn - machine frame number
   * @returns true when it indexes the table
   */
  valid(mfn: number): boolean {
    return mfn >= 0 && mfn < this.frames && Math.floor(mfn) === mfn;
  }

  /**
   * Assigns a free frame to a domain with the allocation reference (`PGC_allocated`).
   *
   * @param mfn - the frame
   * @param owner - domain id
   */
  assign(mfn: number, owner: number): void {
    this.owner[mfn] = owner;
    this.count[mfn] = 1;
    this.type[mfn] = PGT_none;
    this.typeCount[mfn] = 0;
    this.flags[mfn] = 0;
    this.linear[mfn] = 0;
  }

  /**
   * `get_page(page, d)`: takes a general reference when `d` owns the frame.
   *
   * @returns false when the frame is invalid, owned by someone else, or the count would overflow
   */
  getPage(mfn: number, owner: number): boolean {
    if (!this.valid(mfn) || this.owner[mfn] !== owner) return false;
    const c = this.count[mfn]!;
    if (c === 0 || c >= COUNT_MAX) return false;
    this.count[mfn] = c + 1;
    return true;
  }

  /** `put_page`: drops a general reference. */
  putPage(mfn: number): void {
    const c = this.count[mfn]!;
    if (c > 0) this.count[mfn] = c - 1;
  }

  /** A snapshot of one frame. */
  info(mfn: number): FrameInfo {
    const f = this.flags[mfn] ?? 0;
    return {
      owner: this.owner[mfn] ?? OWNER_NONE,
      count: this.count[mfn] ?? 0,
      type: this.type[mfn] ?? PGT_none,
      typeCount: this.typeCount[mfn] ?? 0,
      validated: (f & FRAME_VALIDATED) !== 0,
      pinned: (f & FRAME_PINNED) !== 0,
      linear: this.linear[mfn] ?? 0,
    };
  }

  /**
   * Human-readable type name of a frame.
   *
   * @param mfn - the frame
   * @returns e.g. `"l1"` or `"writable"`
   */
  typeName(mfn: number): string {
    return PAGE_TYPE_NAMES[this.type[mfn] ?? 0] ?? "?";
  }
}
