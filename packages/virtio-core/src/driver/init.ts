/**
 * Device initialisation from the driver side (§3.1.1), in the order Linux's
 * `virtio_dev_probe` follows, and consistent configuration reads (§2.5).
 *
 * @module
 */

import type { GuestMemory } from "@pvkit/platform";
import { DriverError, VirtioErrorCode } from "../errors.js";
import {
  hasFeature,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from "../spec.js";
import type { GuestAllocator } from "./allocator.js";
import { DriverQueue, type DriverQueueOptions, type IndirectArea } from "./driver-queue.js";
import type { DriverVirtqueue } from "./driver-virtqueue.js";
import { splitQueueBytes, splitQueueLayout } from "./layout.js";
import { PackedDriverQueue, packedQueueBytes, packedQueueLayout } from "./packed-driver-queue.js";
import type { VirtioDriverTransport } from "./transport.js";

/** Options of {@link initVirtioDevice}. */
export interface InitVirtioOptions {
  /** Features the driver understands; the negotiated set is `wanted & offered` and must hold VIRTIO_F_VERSION_1. */
  readonly wanted: bigint;
  /** Guest memory the rings live in. */
  readonly memory: GuestMemory;
  /** Where rings and indirect tables are allocated. */
  readonly allocator: GuestAllocator;
  /**
   * One entry per queue to set up: the size wanted (rounded down to a power of two and
   * capped at the device's QueueNumMax; 0 = the device's maximum). Default `[0]`.
   */
  readonly queueSizes?: readonly number[];
  /** Descriptors per preallocated indirect table (default 32; 0 disables indirect tables). */
  readonly indirectEntries?: number;
  /** Passed to every `DriverQueue` (see `DriverQueueOptions.indirectThreshold`). */
  readonly indirectThreshold?: number;
  /**
   * Driver-specific check between reading the device's features and FEATURES_OK (like a
   * Linux driver's `validate`). @returns a reason to give up, or undefined
   */
  readonly validate?: (offered: bigint) => string | undefined;
}

/** A device that reached DRIVER_OK. */
export interface VirtioDriverDevice<T> {
  /** The negotiated features. */
  readonly features: bigint;
  /**
   * One queue per requested queue — a `DriverQueue` (split ring), or a `PackedDriverQueue`
   * when VIRTIO_F_RING_PACKED was negotiated (§2.8); `kick()` notifies through the transport.
   */
  readonly queues: DriverVirtqueue<T>[];
  /** Guest addresses the rings (and tables) occupy in the allocator, to free after a reset. */
  readonly allocations: readonly number[];
}

function floorPow2(n: number): number {
  let p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

/**
 * Brings a device to DRIVER_OK (§3.1.1), as Linux does: reset; ACKNOWLEDGE; DRIVER;
 * read the offered features; write `wanted & offered`; FEATURES_OK; re-read the status
 * and give up if FEATURES_OK did not stick; set up every queue (rings from the
 * allocator, zeroed, §2.7); DRIVER_OK. Each status bit is added by read-modify-write.
 * On failure the FAILED status bit is set (§3.1.1 "if any of these steps go
 * irrecoverably wrong"), the rings are freed, and the error is returned.
 *
 * @typeParam T - the token type of the queues
 * @returns the negotiated features and the queues, or the reason it failed
 */
export function initVirtioDevice<T = unknown>(
  transport: VirtioDriverTransport,
  options: InitVirtioOptions,
): VirtioDriverDevice<T> | DriverError {
  const { memory, allocator } = options;
  const allocations: number[] = [];
  const fail = (err: DriverError): DriverError => {
    addStatus(transport, VIRTIO_CONFIG_S_FAILED);
    for (const a of allocations) allocator.free(a);
    return err;
  };

  transport.reset();
  addStatus(transport, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  addStatus(transport, VIRTIO_CONFIG_S_DRIVER);
  const offered = transport.readDeviceFeatures();
  const features = options.wanted & offered;
  if (!hasFeature(features, VIRTIO_F_VERSION_1)) {
    return fail(
      new DriverError(
        VirtioErrorCode.NO_VERSION_1,
        hasFeature(offered, VIRTIO_F_VERSION_1)
          ? "the driver did not ask for VIRTIO_F_VERSION_1 (§6.1)"
          : "the device does not offer VIRTIO_F_VERSION_1; legacy devices are not supported (§6.1)",
      ),
    );
  }
  const reason = options.validate?.(offered);
  if (reason !== undefined) return fail(new DriverError(VirtioErrorCode.WRONG_DEVICE, reason));
  transport.writeDriverFeatures(features);
  addStatus(transport, VIRTIO_CONFIG_S_FEATURES_OK);
  if ((transport.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK) === 0) {
    return fail(
      new DriverError(
        VirtioErrorCode.FEATURES_REJECTED,
        `the device refused features 0x${features.toString(16)} (FEATURES_OK cleared, §3.1.1)`,
      ),
    );
  }

  const eventIdx = hasFeature(features, VIRTIO_F_EVENT_IDX);
  const indirectWanted =
    hasFeature(features, VIRTIO_F_INDIRECT_DESC) && (options.indirectEntries ?? 32) >= 2;
  const packed = hasFeature(features, VIRTIO_F_RING_PACKED);
  const queues: DriverVirtqueue<T>[] = [];
  const sizes = options.queueSizes ?? [0];
  for (let i = 0; i < sizes.length; i++) {
    const max = transport.queueMaxSize(i);
    if (max === 0) {
      return fail(
        new DriverError(
          VirtioErrorCode.QUEUE_UNAVAILABLE,
          `queue ${i} does not exist (QueueNumMax 0, §4.2.3.2)`,
          i,
        ),
      );
    }
    const want = sizes[i]!;
    let size = floorPow2(Math.min(want > 0 ? want : max, max, 32768));
    // Like Linux's vring_create_virtqueue: halve the ring until it fits.
    let ringAddr = -1;
    for (; size >= 1; size >>>= 1) {
      const bytes = packed ? packedQueueBytes(size) : splitQueueBytes(size, { pageAligned: true });
      ringAddr = allocator.alloc(bytes, 4096);
      if (ringAddr >= 0) break;
    }
    if (ringAddr < 0) {
      return fail(
        new DriverError(
          VirtioErrorCode.OUT_OF_MEMORY,
          `no guest memory for the rings of queue ${i}`,
          i,
        ),
      );
    }
    allocations.push(ringAddr);
    // §2.8.10.1: a packed ring is the descriptor ring and two 4-byte event structures.
    const layout = packed
      ? packedQueueLayout(ringAddr, size)
      : splitQueueLayout(ringAddr, size, { pageAligned: true });
    let indirect: IndirectArea | undefined;
    if (indirectWanted && size >= 2) {
      const entries = Math.min(options.indirectEntries ?? 32, size);
      const addr = allocator.alloc(size * entries * 16, 16);
      if (addr >= 0) {
        allocations.push(addr);
        indirect = { addr, entries };
      } // without room for tables the queue simply runs without indirect descriptors
    }
    if (
      memory.locate(ringAddr, layout.end - ringAddr) < 0 ||
      (indirect && memory.locate(indirect.addr, size * indirect.entries * 16) < 0)
    ) {
      return fail(
        new DriverError(
          VirtioErrorCode.OUT_OF_MEMORY,
          `the allocator handed out memory outside guest RAM for queue ${i}`,
          i,
        ),
      );
    }
    const index = i;
    const queueOptions: DriverQueueOptions = {
      memory,
      index,
      size,
      layout,
      eventIdx,
      indirectDesc: indirect !== undefined,
      ...(indirect === undefined ? {} : { indirect }),
      ...(options.indirectThreshold === undefined
        ? {}
        : { indirectThreshold: options.indirectThreshold }),
      notify: () => transport.notify(index),
    };
    const queue: DriverVirtqueue<T> = packed
      ? new PackedDriverQueue<T>(queueOptions)
      : new DriverQueue<T>(queueOptions);
    const err = transport.setupQueue(i, size, layout);
    if (err !== undefined) return fail(err);
    queues.push(queue);
  }
  addStatus(transport, VIRTIO_CONFIG_S_DRIVER_OK);
  return { features, queues, allocations };
}

/** Linux `virtio_add_status`: read the status, write it back with `bit` added (two exits). */
function addStatus(transport: VirtioDriverTransport, bit: number): void {
  transport.setStatus(transport.getStatus() | bit);
}

/**
 * Reads configuration fields consistently (§2.5 "Device Configuration Space"):
 * reads the generation, runs `read`, reads the generation again, and retries until both
 * match — as Linux's `virtio_cread_*` helpers do — at most `maxTries` times.
 *
 * @param read - reads the fields through the transport (several accesses, e.g. a 64-bit field as two halves)
 * @returns what `read` returned, or `CONFIG_UNSTABLE` when the generation never settled
 */
export function readConfigStable<R>(
  transport: VirtioDriverTransport,
  read: (t: VirtioDriverTransport) => R,
  maxTries = 64,
): R | DriverError {
  for (let i = 0; i < maxTries; i++) {
    const before = transport.configGeneration();
    const value = read(transport);
    if (transport.configGeneration() === before) return value;
  }
  return new DriverError(
    VirtioErrorCode.CONFIG_UNSTABLE,
    `configuration generation changed on each of ${maxTries} reads (§2.5)`,
  );
}

/** §3.1.1: the status byte of a device that completed initialisation. */
export const DRIVER_OK_STATUS =
  VIRTIO_CONFIG_S_ACKNOWLEDGE |
  VIRTIO_CONFIG_S_DRIVER |
  VIRTIO_CONFIG_S_FEATURES_OK |
  VIRTIO_CONFIG_S_DRIVER_OK;
