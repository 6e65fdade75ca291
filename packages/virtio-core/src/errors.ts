/**
 * The error table of `@pvkit/virtio-core`. Every value says what the guest did and which
 * spec section it broke. Errors are values handed to callbacks and events; the device
 * never throws them into an emulator.
 *
 * @module
 */

/**
 * Every error code of `@pvkit/virtio-core`, one table for both sides. Device side: what
 * a hostile guest did; the queue-corruption codes put the device into DEVICE_NEEDS_RESET
 * (DESIGN.md, "A hostile guest"). Driver side: what a driver meets — a full ring, a
 * device that breaks the ring protocol (Linux's `BAD_RING`), a device that refuses
 * features during initialisation (§3.1.1).
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
  /**
   * §2.7.5.2 / §2.7.5.3.1: the chain is longer than the queue size (or loops); on the
   * driver side, a chain that could never be added (too many buffers or over 2^32 bytes).
   */
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
  // ── driver side ──
  /** Not enough free descriptors for the chain (Linux `-ENOSPC`); retry after `getUsed`. */
  NO_SPACE: "NO_SPACE",
  /** `add` was given no buffers at all (§2.7.13.1: a chain has at least one descriptor). */
  EMPTY_CHAIN: "EMPTY_CHAIN",
  /** A buffer address or length cannot be described (not an integer, length ≥ 2^32, outside guest memory). */
  BAD_BUFFER: "BAD_BUFFER",
  /** The queue was marked broken by an earlier device fault; reset the device. */
  QUEUE_BROKEN: "QUEUE_BROKEN",
  /** §2.7.8: the device returned a used id ≥ the queue size. */
  USED_ID_OUT_OF_RANGE: "USED_ID_OUT_OF_RANGE",
  /** §2.7.8: the device returned a used id that is not the head of an outstanding chain. */
  USED_ID_NOT_HEAD: "USED_ID_NOT_HEAD",
  /** §2.7.8.1: the device reported more bytes written than the chain's writable buffers hold. */
  USED_LEN_TOO_BIG: "USED_LEN_TOO_BIG",
  /** §2.7.8: used.idx moved ahead by more buffers than the driver has outstanding. */
  USED_IDX_JUMP: "USED_IDX_JUMP",
  /** §4.2.3.1.1: no virtio-mmio device at that address (bad magic or device id 0). */
  NO_DEVICE: "NO_DEVICE",
  /** §4.2.3.1.1: a virtio-mmio register layout version other than 2. */
  UNSUPPORTED_VERSION: "UNSUPPORTED_VERSION",
  /** §6.1: VIRTIO_F_VERSION_1 was not both offered and wanted. */
  NO_VERSION_1: "NO_VERSION_1",
  /** §3.1.1 step 6: the device cleared FEATURES_OK (it refused the feature subset). */
  FEATURES_REJECTED: "FEATURES_REJECTED",
  /** §4.2.3.2: the queue does not exist (QueueNumMax 0) or is already live. */
  QUEUE_UNAVAILABLE: "QUEUE_UNAVAILABLE",
  /** The guest allocator has no room for the rings. */
  OUT_OF_MEMORY: "OUT_OF_MEMORY",
  /** §2.5: the configuration generation kept changing; no consistent snapshot was read. */
  CONFIG_UNSTABLE: "CONFIG_UNSTABLE",
  /** §2.1.2: the device set DEVICE_NEEDS_RESET. */
  DEVICE_NEEDS_RESET: "DEVICE_NEEDS_RESET",
  /** The transport talks to a device of a different type than the driver drives. */
  WRONG_DEVICE: "WRONG_DEVICE",
  /**
   * Another driver already drives the device (a device has at most one driver, as in
   * Linux's driver core); reset the device (§2.4) before binding a new one.
   */
  ALREADY_BOUND: "ALREADY_BOUND",
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

/**
 * A failure of the guest-side (driver) half, as a value: driver-side primitives return
 * it, never throw it. Its code comes from the same {@link VirtioErrorCode} table.
 */
export class DriverError extends VirtioError {}

/**
 * Type guard for results that may be a {@link DriverError}.
 *
 * @param value - a result of a driver-side call
 */
export function isDriverError(value: unknown): value is DriverError {
  return value instanceof DriverError;
}
