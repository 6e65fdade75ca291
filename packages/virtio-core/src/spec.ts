/**
 * Numbers from the Virtual I/O Device (VIRTIO) specification, version 1.2 (cs01). Each
 * group cites the section it comes from. Names keep the spec's spelling.
 *
 * @module
 */

// ── §2.1 Device Status Field ────────────────────────────────────────────────────────

/** §2.1: the guest OS has noticed the device. */
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
/** §2.1: the guest OS knows how to drive the device. */
export const VIRTIO_CONFIG_S_DRIVER = 2;
/** §2.1: the driver is set up and ready to drive the device. */
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
/** §2.1: the driver has acknowledged the features it understands; negotiation is complete. */
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
/** §2.1: the device hit an error it cannot recover from. */
export const VIRTIO_CONFIG_S_NEEDS_RESET = 64;
/** §2.1: something went wrong in the guest; it has given up on the device. */
export const VIRTIO_CONFIG_S_FAILED = 128;

// ── §6 Reserved Feature Bits (bit numbers) ──────────────────────────────────────────

/** §6: the driver can use descriptors with VIRTQ_DESC_F_INDIRECT (bit 28). */
export const VIRTIO_F_INDIRECT_DESC = 28;
/** §6: the used_event / avail_event fields are enabled (bit 29). */
export const VIRTIO_F_EVENT_IDX = 29;
/** §6: compliance with virtio 1.x (bit 32); pvkit devices are modern-only and require it. */
export const VIRTIO_F_VERSION_1 = 32;
/** §6: the device is behind an IOMMU / platform-specific access (bit 33). */
export const VIRTIO_F_ACCESS_PLATFORM = 33;
/** §6: packed virtqueue layout (bit 34), offered when a device is built with `ringPacked`. */
export const VIRTIO_F_RING_PACKED = 34;
/** §6: buffers are used in the order they are made available (bit 35). */
export const VIRTIO_F_IN_ORDER = 35;
/** §6: the driver passes extra data in its notifications (bit 38). */
export const VIRTIO_F_NOTIFICATION_DATA = 38;
/** §6: individual virtqueues can be reset (bit 40). */
export const VIRTIO_F_RING_RESET = 40;

/**
 * Turns feature bit numbers into a 64-bit feature mask.
 *
 * @param bits - feature bit numbers (0..63)
 * @returns the mask
 */
export function featureMask(...bits: number[]): bigint {
  let mask = 0n;
  for (const b of bits) mask |= 1n << BigInt(b);
  return mask;
}

/**
 * Whether a feature mask has a bit.
 *
 * @param features - the mask
 * @param bit - the bit number
 */
export function hasFeature(features: bigint, bit: number): boolean {
  return ((features >> BigInt(bit)) & 1n) === 1n;
}

// ── §5 Device Types (device ids) ────────────────────────────────────────────────────

/** §5: virtio device ids pvkit knows. */
export const VirtioDeviceId = {
  /** §5.1 network card. */
  NET: 1,
  /** §5.2 block device. */
  BLOCK: 2,
  /** §5.3 console. */
  CONSOLE: 3,
  /** §5.4 entropy source. */
  ENTROPY: 4,
  /** §5.5 memory balloon (traditional). */
  BALLOON: 5,
  /** §5.6 SCSI host. */
  SCSI: 8,
  /** 9P transport. */
  NINEP: 9,
} as const;

// ── §2.7 Split Virtqueues ──────────────────────────────────────────────────────────

/** §2.7.5: this descriptor continues via the `next` field. */
export const VIRTQ_DESC_F_NEXT = 1;
/** §2.7.5: the buffer is device write-only (otherwise device read-only). */
export const VIRTQ_DESC_F_WRITE = 2;
/** §2.7.5.3: the buffer holds a table of indirect descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;

/** §2.7.6: the driver asks the device not to interrupt (ignored with EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** §2.7.8: the device asks the driver not to notify (ignored with EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** §2.7: the largest queue size a split virtqueue may have. */
export const VIRTQ_MAX_SIZE = 32768;
/** §2.7.5: bytes per descriptor. */
export const VIRTQ_DESC_SIZE = 16;
/** §2.7: alignment of the descriptor table. */
export const VIRTQ_DESC_ALIGN = 16;
/** §2.7: alignment of the available (driver) ring. */
export const VIRTQ_AVAIL_ALIGN = 2;
/** §2.7: alignment of the used (device) ring. */
export const VIRTQ_USED_ALIGN = 4;
/** §2.7.5.2: the largest total length of one descriptor chain (2^32 bytes). */
export const VIRTQ_MAX_CHAIN_BYTES = 0x1_0000_0000;

/** §2.7: bytes of the descriptor table for a queue of `size`. */
export function descTableBytes(size: number): number {
  return VIRTQ_DESC_SIZE * size;
}
/** §2.7.6: bytes of the available ring (flags, idx, ring[size], used_event). */
export function availRingBytes(size: number): number {
  return 6 + 2 * size;
}
/** §2.7.8: bytes of the used ring (flags, idx, ring[size] of {id, len}, avail_event). */
export function usedRingBytes(size: number): number {
  return 6 + 8 * size;
}

/**
 * §2.7.10 (virtio-queue.h `vring_need_event`): whether moving an index from `oldIdx` to
 * `newIdx` crosses `eventIdx`, with 16-bit wrap-around.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

// ── §2.8 Packed Virtqueues ─────────────────────────────────────────────────────────

/** §2.8.1: descriptor flag: the driver's avail wrap counter when it made the descriptor available. */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** §2.8.1: descriptor flag: the device's used wrap counter when it used the descriptor. */
export const VIRTQ_DESC_F_USED = 1 << 15;
/** §2.8.10: event suppression flags: notifications enabled. */
export const VRING_PACKED_EVENT_FLAG_ENABLE = 0;
/** §2.8.10: event suppression flags: notifications disabled. */
export const VRING_PACKED_EVENT_FLAG_DISABLE = 1;
/** §2.8.10: event suppression flags: notify at the descriptor named by `desc_event_off_wrap` (EVENT_IDX only). */
export const VRING_PACKED_EVENT_FLAG_DESC = 2;
/** §2.8.10: bit of `desc_event_off_wrap` that holds the wrap counter (bits 0–14 are the offset). */
export const VRING_PACKED_EVENT_F_WRAP_CTR = 15;
/** §2.8.10: bytes of one event suppression structure (`desc_event_off_wrap`, `desc_event_flags`). */
export const VRING_PACKED_EVENT_BYTES = 4;
/** §2.8.10.1 (table "Packed Virtqueue Area Alignment"): alignment of the descriptor ring. */
export const VRING_PACKED_DESC_ALIGN = 16;
/** §2.8.10.1: alignment of the driver and device event suppression structures. */
export const VRING_PACKED_EVENT_ALIGN = 4;

/** §2.8.10.1: bytes of the packed descriptor ring of a queue of `size` (16 × size). */
export function packedRingBytes(size: number): number {
  return VIRTQ_DESC_SIZE * size;
}

/**
 * Whether `n` is a valid packed-queue size: an integer in [1, 32768] (§2.8: unlike the
 * split ring, a packed ring's size need not be a power of two).
 */
export function isValidPackedQueueSize(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= VIRTQ_MAX_SIZE;
}

// ── §4.2.2 MMIO Device Register Layout ─────────────────────────────────────────────

/** §4.2.2: virtio-mmio register offsets (version 2). */
export const VirtioMmio = {
  MAGIC_VALUE: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  SHM_SEL: 0x0ac,
  SHM_LEN_LOW: 0x0b0,
  SHM_LEN_HIGH: 0x0b4,
  SHM_BASE_LOW: 0x0b8,
  SHM_BASE_HIGH: 0x0bc,
  QUEUE_RESET: 0x0c0,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
} as const;

/** §4.2.2: "virt" in little-endian. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** §4.2.2: the register layout version of a modern (non-legacy) device. */
export const VIRTIO_MMIO_VERSION = 2;
/** Vendor id pvkit reports on virtio-mmio ("PVKT" is not registered; QEMU uses "QEMU"). */
export const PVKIT_MMIO_VENDOR_ID = 0x544b5650;

/** §4.2.2 / §4.1.4.5: interrupt-status bit: a used buffer notification. */
export const VIRTIO_INT_VRING = 1;
/** §4.2.2 / §4.1.4.5: interrupt-status bit: a configuration change notification. */
export const VIRTIO_INT_CONFIG = 2;

// ── §5.4 Entropy Device ────────────────────────────────────────────────────────────

/** §5.4.2: the entropy device has one queue, requestq. */
export const VIRTIO_RNG_QUEUE_REQUEST = 0;
