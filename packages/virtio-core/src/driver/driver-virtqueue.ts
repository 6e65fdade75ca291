/**
 * `DriverVirtqueue`: what a guest driver sees of one of its virtqueues, whatever the ring
 * layout — the split ring ({@link DriverQueue}, §2.7) or the packed ring
 * ({@link PackedDriverQueue}, §2.8). `initVirtioDevice` creates the one the negotiated
 * features select; drivers are written against this interface.
 *
 * @module
 */

import type { DriverError } from "../errors.js";
import type { DriverQueueStats, GuestBuffer, RingAddresses } from "./driver-queue.js";

/**
 * The driver side of one virtqueue, split or packed (Linux's `struct virtqueue` API).
 *
 * @typeParam T - what the caller attaches to each chain and gets back on completion
 */
export interface DriverVirtqueue<T> {
  /** Queue index. */
  readonly index: number;
  /** Queue size. */
  readonly size: number;
  /** Ring addresses (packed: descriptor ring, driver and device event suppression). */
  readonly layout: RingAddresses;
  /** VIRTIO_F_EVENT_IDX in use. */
  readonly eventIdx: boolean;
  /** Indirect tables in use. */
  readonly indirectDesc: boolean;
  /** Descriptors per indirect table (0 without indirect). */
  readonly indirectEntries: number;
  /** Counters. */
  readonly stats: DriverQueueStats;
  /** The device fault that broke the queue, or `null`. */
  readonly error: DriverError | null;
  /** Free descriptors in the ring. */
  readonly numFree: number;
  /** Chains added and not yet returned by the device. */
  readonly inFlight: number;
  /** Whether a device fault broke the queue. */
  readonly broken: boolean;
  /** Whether used-buffer notifications are enabled. */
  readonly callbacksEnabled: boolean;
  /**
   * Makes a chain available: `out` device-readable, `inBufs` device-writable buffers.
   * @returns the head (split) or buffer ID (packed), or a {@link DriverError}
   */
  add(out: readonly GuestBuffer[], inBufs: readonly GuestBuffer[], token: T): number | DriverError;
  /** After a batch of adds: whether the device wants a notification. */
  kickPrepare(): boolean;
  /** {@link kickPrepare}, then notify when wanted. @returns whether a notification was sent */
  kick(): boolean;
  /** Whether the device returned buffers not taken yet. */
  hasUsed(): boolean;
  /** Takes the next completion (validated), or `null`. */
  getUsed(): { readonly token: T; readonly len: number } | null;
  /** Takes up to `budget` completions, calling `fn(token, len)` for each. @returns completions taken */
  drainUsed(fn: (token: T, len: number) => void, budget?: number): number;
  /** Asks the device not to interrupt. */
  disableCallbacks(): void;
  /** Asks for interrupts again. @returns false when completions are already pending */
  enableCallbacks(): boolean;
  /** Asks for an interrupt after about 3/4 of the outstanding buffers. @returns false when already that many are pending */
  enableCallbacksDelayed(): boolean;
  /** After a device reset: takes back every outstanding chain's token and re-initialises the ring. */
  detachUnused(): T[];
}
