/**
 * The error table of `@pvkit/virtio-core`. Every value says what the guest did and which
 * spec section it broke. Errors are values handed to callbacks and events; the device
 * never throws them into an emulator.
 *
 * @module
 */

/**
 * Every error code of `@pvkit/virtio-core`. Queue-corruption codes put the device into
 * DEVICE_NEEDS_RESET (DESIGN.md, "A hostile guest").
 */
export const VirtioErrorCode = {
  /** §2.7.13.3: avail.idx moved ahead of the device by more than the queue size. */
  AVAIL_IDX_JUMP: "AVAIL_IDX_JUMP",
  /** §2.7.13: an avail-ring entry names a head ≥ the queue size. */
  HEAD_OUT_OF_RANGE: "HEAD_OUT_OF_RANGE",
  /** §2.7.13: the driver made a head available while the device still owns it. */
  HEAD_IN_USE: "HEAD_IN_USE",
  /** §2.7.5: a descriptor's `next` is ≥ the queue (or indirect table) size. */
  NEXT_OUT_OF_RANGE: "NEXT_OUT_OF_RANGE",
  /** §2.7.5.2 / §2.7.5.3.1: the chain is longer than the queue size (or loops). */
  CHAIN_TOO_LONG: "CHAIN_TOO_LONG",
  /** §2.7.5.2: the chain's lengths add up to more than 2^32 bytes. */
  CHAIN_TOO_BIG: "CHAIN_TOO_BIG",
  /** §2.7.5.3.1: an indirect descriptor inside an indirect table. */
  NESTED_INDIRECT: "NESTED_INDIRECT",
  /** §2.7.5.3.1: INDIRECT together with NEXT. */
  INDIRECT_WITH_NEXT: "INDIRECT_WITH_NEXT",
  /** §2.7.5.3: an indirect table length that is zero or not a multiple of 16. */
  BAD_INDIRECT_LENGTH: "BAD_INDIRECT_LENGTH",
  /** §2.7.5.3.1: an indirect table with more entries than the queue size. */
  INDIRECT_TOO_LONG: "INDIRECT_TOO_LONG",
  /** §2.7.5.3: INDIRECT used although VIRTIO_F_INDIRECT_DESC was not negotiated. */
  INDIRECT_NOT_NEGOTIATED: "INDIRECT_NOT_NEGOTIATED",
  /** §2.7.4.2: a device-readable descriptor after a device-writable one. */
  READABLE_AFTER_WRITABLE: "READABLE_AFTER_WRITABLE",
  /** §2.7.5: a buffer (or indirect table) that is not inside guest memory. */
  BUFFER_OUT_OF_RANGE: "BUFFER_OUT_OF_RANGE",
  /** §2.7: the descriptor table, avail ring or used ring is not inside guest memory. */
  RING_OUT_OF_RANGE: "RING_OUT_OF_RANGE",
  /** §2.7 table "Virtqueue Part Alignment": a ring address that is not aligned. */
  RING_MISALIGNED: "RING_MISALIGNED",
  /** §2.7: a queue size that is zero, not a power of two, or above the maximum. */
  BAD_QUEUE_SIZE: "BAD_QUEUE_SIZE",
  /** Device-specific: a request too malformed to be answered (e.g. no byte for its status). */
  MALFORMED_REQUEST: "MALFORMED_REQUEST",
  /** §2.1.2 / device-specific: the device itself failed (e.g. activation). */
  DEVICE_FAILURE: "DEVICE_FAILURE",
} as const;

/** One of the {@link VirtioErrorCode} values. */
export type VirtioErrorCode = (typeof VirtioErrorCode)[keyof typeof VirtioErrorCode];

/** A protocol violation by the guest, as a value. */
export class VirtioError {
  /** Discriminant for narrowing. */
  readonly kind = "virtio-error" as const;

  /**
   * @param code - what was violated
   * @param message - what the guest did, with the numbers
   * @param queue - the queue index, or -1 when not about a queue
   */
  constructor(
    readonly code: VirtioErrorCode,
    readonly message: string,
    readonly queue = -1,
  ) {}

  /** `CODE: message` */
  toString(): string {
    return `${this.code}: ${this.message}`;
  }
}
