/**
 * Where the three parts of a split virtqueue go in guest memory (§2.7, table
 * "Virtqueue Part Alignment"): the descriptor table on a 16-byte boundary, the driver
 * (available) ring on a 2-byte boundary, the device (used) ring on a 4-byte boundary.
 *
 * @module
 */

import {
  availRingBytes,
  descTableBytes,
  usedRingBytes,
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_DESC_ALIGN,
  VIRTQ_MAX_SIZE,
  VIRTQ_USED_ALIGN,
} from "../spec.js";

/** Guest-physical addresses of a split virtqueue's parts. */
export interface SplitQueueLayout {
  /** §2.7.5: descriptor table (16 × size bytes, 16-byte aligned). */
  readonly desc: number;
  /** §2.7.6: driver area, the available ring (6 + 2 × size bytes, 2-byte aligned). */
  readonly driver: number;
  /** §2.7.8: device area, the used ring (6 + 8 × size bytes, 4-byte aligned). */
  readonly device: number;
  /** One past the last byte of the used ring. */
  readonly end: number;
}

/** Options of {@link splitQueueLayout}. */
export interface SplitQueueLayoutOptions {
  /**
   * Put the used ring on its own page boundary (the legacy §2.7.2 layout, `QueueAlign`
   * = 4096), so the device's writes never share a page with the driver's.
   */
  readonly pageAligned?: boolean;
  /** The page size for {@link pageAligned} (a power of two; default 4096). */
  readonly pageSize?: number;
}

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

function checkSize(size: number): void {
  if (!Number.isInteger(size) || size < 1 || size > VIRTQ_MAX_SIZE || (size & (size - 1)) !== 0) {
    throw new RangeError(
      `queue size ${size} is not a power of two in [1, ${VIRTQ_MAX_SIZE}] (§2.7)`,
    );
  }
}

/**
 * Lays out a split virtqueue of `size` entries starting at (or just after) `base`.
 * Parts are packed tightly, honouring the §2.7 alignments; with `pageAligned` the used
 * ring starts on the next page boundary.
 *
 * @param base - the first guest-physical address that may be used (rounded up to 16)
 * @param size - the queue size, a power of two ≤ 32768
 * @returns the addresses
 * @throws RangeError when `size` or `base` is invalid (a driver programming error)
 */
export function splitQueueLayout(
  base: number,
  size: number,
  options: SplitQueueLayoutOptions = {},
): SplitQueueLayout {
  checkSize(size);
  if (!Number.isSafeInteger(base) || base < 0)
    throw new RangeError(`ring base ${base} is not a guest address`);
  const desc = alignUp(base, VIRTQ_DESC_ALIGN);
  const driver = alignUp(desc + descTableBytes(size), VIRTQ_AVAIL_ALIGN);
  const availEnd = driver + availRingBytes(size);
  let align = VIRTQ_USED_ALIGN;
  if (options.pageAligned) {
    const page = options.pageSize ?? 4096;
    if (!Number.isInteger(page) || page < VIRTQ_USED_ALIGN || (page & (page - 1)) !== 0) {
      throw new RangeError(`page size ${page} is not a power of two ≥ 4`);
    }
    align = page;
  }
  const device = alignUp(availEnd, align);
  const end = device + usedRingBytes(size);
  if (end > Number.MAX_SAFE_INTEGER) throw new RangeError("ring does not fit below 2^53");
  return { desc, driver, device, end };
}

/**
 * Bytes a split virtqueue of `size` entries needs when it starts at a 16-byte (or, with
 * `pageAligned`, page) aligned address: what to ask an allocator for.
 *
 * @param size - the queue size, a power of two ≤ 32768
 * @throws RangeError when `size` is invalid
 */
export function splitQueueBytes(size: number, options: SplitQueueLayoutOptions = {}): number {
  return splitQueueLayout(0, size, options).end;
}
