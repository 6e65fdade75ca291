/**
 * Failures of the guest-side (driver) half of virtio-core, as values. These are not
 * guest violations (those are {@link VirtioErrorCode}s the device reports) but what a
 * driver meets: a full ring, a device that breaks the ring protocol (Linux's `BAD_RING`),
 * a device that refuses features during initialisation (§3.1.1).
 *
 * @module
 */

/** Every failure code of the driver side. */
export const DriverErrorCode = {
  /** Not enough free descriptors for the chain (Linux `-ENOSPC`); retry after `getUsed`. */
  NO_SPACE: "NO_SPACE",
  /** `add` was given no buffers at all (§2.7.13.1: a chain has at least one descriptor). */
  EMPTY_CHAIN: "EMPTY_CHAIN",
  /** A buffer address or length cannot be described (not an integer, length ≥ 2^32, outside guest memory). */
  BAD_BUFFER: "BAD_BUFFER",
  /** §2.7.5.2: the chain is longer than the queue size or than 2^32 bytes in total; it can never be added. */
  CHAIN_TOO_LONG: "CHAIN_TOO_LONG",
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
} as const;

/** One of the {@link DriverErrorCode} values. */
export type DriverErrorCode = (typeof DriverErrorCode)[keyof typeof DriverErrorCode];

/** A driver-side failure, as a value (never thrown by the driver-side primitives). */
export class DriverError {
  /** Discriminant for narrowing. */
  readonly kind = "driver-error" as const;

  /**
   * @param code - what went wrong
   * @param message - what happened, with the numbers
   * @param queue - the queue index, or -1 when not about a queue
   */
  constructor(
    readonly code: DriverErrorCode,
    readonly message: string,
    readonly queue = -1,
  ) {}

  /** `CODE: message` */
  toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

/**
 * Type guard for results that may be a {@link DriverError}.
 *
 * @param value - a result of a driver-side call
 */
export function isDriverError(value: unknown): value is DriverError {
  return value instanceof DriverError;
}
