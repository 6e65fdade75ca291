/**
 * `DeviceVirtqueue`: what a device sees of one of its virtqueues, whatever the ring
 * layout the driver negotiated — the split ring (§2.7, {@link DeviceQueue}) or the packed
 * ring (§2.8, {@link PackedDeviceQueue}, VIRTIO_F_RING_PACKED). Devices are written
 * against this interface only, so the same device code serves either layout; the
 * transport and `VirtioDeviceBase` pick the implementation from the negotiated features.
 *
 * @module
 */

import type { GuestMemory } from "@pvkit/platform";
import type { VirtioError } from "../errors.js";
import type { DescriptorChain } from "./chain.js";
import type { DeviceQueueStats } from "./device-queue.js";

/**
 * The device side of one virtqueue, split (§2.7) or packed (§2.8). The device loop is the
 * same for both:
 * ```ts
 * do {
 *   queue.disableNotification();
 *   for (let chain; (chain = queue.popChain()) !== null; ) queue.addUsed(chain.head, serve(chain));
 * } while (queue.enableNotification());
 * if (queue.needsNotification()) interrupt();
 * ```
 * `chain.head` is what {@link addUsed} takes back: the head descriptor index on a split
 * ring, the buffer ID on a packed ring (§2.8.6).
 */
export interface DeviceVirtqueue {
  /** The queue's index in its device. */
  readonly index: number;
  /** The largest size the device supports (QueueNumMax / queue_size read before setup). */
  readonly maxSize: number;
  /** Queue size the driver configured; starts at {@link maxSize}. */
  size: number;
  /** Split: descriptor table; packed: descriptor ring (QueueDesc / queue_desc). */
  descAddr: number;
  /** Split: available ring; packed: driver event suppression (QueueDriver / queue_driver). */
  driverAddr: number;
  /** Split: used ring; packed: device event suppression (QueueDevice / queue_device). */
  deviceAddr: number;
  /** Whether VIRTIO_F_EVENT_IDX was negotiated. */
  eventIdx: boolean;
  /** Whether VIRTIO_F_INDIRECT_DESC was negotiated. */
  indirectDesc: boolean;
  /** The error that stopped this queue, or `null` while healthy. */
  error: VirtioError | null;
  /** Counters. */
  readonly stats: DeviceQueueStats;
  /** Whether the driver enabled the queue. */
  readonly ready: boolean;
  /** Whether the queue serves buffers (enabled, DRIVER_OK, not broken). */
  readonly isActive: boolean;
  /** Chains popped and not yet returned. */
  readonly inFlight: number;
  /** The next ring position the device will read (packed: bit 15 is the wrap counter). */
  readonly nextAvailIndex: number;
  /** The next ring position the device will write (packed: bit 15 is the wrap counter). */
  readonly nextUsedIndex: number;
  /** Hands the queue the guest memory its rings and buffers live in. */
  bind(memory: GuestMemory): void;
  /** The driver enabled the queue: checks size, alignment and ranges. @returns the error, if any */
  enable(): VirtioError | undefined;
  /** Starts serving buffers (DRIVER_OK) with the negotiated EVENT_IDX / INDIRECT_DESC. */
  activate(eventIdx: boolean, indirectDesc: boolean): void;
  /** Back to the reset state. */
  reset(): void;
  /** Whether buffers are available that were not popped yet. */
  hasAvailable(): boolean;
  /** Takes and validates the next available chain; `null` when none (or the queue stopped). */
  popChain(): DescriptorChain | null;
  /** Returns chain `head` with `len` bytes written. @returns false when `head` is not in flight */
  addUsed(head: number, len: number): boolean;
  /** Makes every used element written so far visible to the driver. */
  publishUsed(): void;
  /** Publishes used elements and says whether the driver wants an interrupt for them. */
  needsNotification(): boolean;
  /** Asks the driver to stop notifying. */
  disableNotification(): void;
  /** Asks the driver to notify again and re-checks the ring. @returns true when buffers are available */
  enableNotification(): boolean;
}
