/**
 * `VirtioDriverTransport`: the guest's view of any virtio transport (virtio-mmio §4.2,
 * virtio-pci §4.1). Drivers are written against it; every method is one or more register
 * accesses, i.e. exits, on a real transport.
 *
 * @module
 */

import type { DriverError } from "../errors.js";
import type { VirtioDeviceLocation } from "./binding.js";
import type { RingAddresses } from "./driver-queue.js";

/** Width of a configuration-space access. */
export type ConfigAccessSize = 1 | 2 | 4;

/** The guest side of a virtio transport. */
export interface VirtioDriverTransport {
  /** §5: the device id found when probing. */
  readonly deviceId: number;
  /**
   * Where the device is (its bus and register window), so that two transports probed at
   * the same device share one driver binding. Optional: without it the binding is per
   * transport object.
   */
  readonly location?: VirtioDeviceLocation;
  /**
   * §2.4: resets the device (writes status 0). The device forgets its driver: the
   * built-in transports also end the driver binding, so a new driver may bind.
   */
  reset(): void;
  /** §2.1: reads the device status byte. */
  getStatus(): number;
  /** §2.1: writes the device status byte. */
  setStatus(status: number): void;
  /** §2.2: the 64 feature bits the device offers. */
  readDeviceFeatures(): bigint;
  /** §2.2: writes the 64 feature bits the driver accepts. */
  writeDriverFeatures(features: bigint): void;
  /**
   * §4.2.3.2 / §4.1.5.1.3: the largest size queue `index` supports.
   *
   * @returns the size, or 0 when the queue does not exist
   */
  queueMaxSize(index: number): number;
  /**
   * §4.2.3.2 / §4.1.5.1.3: writes the queue size and ring addresses of queue `index`,
   * then enables it.
   *
   * @returns `undefined`, or a `QUEUE_UNAVAILABLE` error when the queue does not exist or
   *   is already enabled
   */
  setupQueue(index: number, size: number, rings: RingAddresses): DriverError | undefined;
  /** §4.2.3.3 / §4.1.5.2: notifies the device that queue `index` has new buffers. */
  notify(index: number): void;
  /** §2.5: reads `size` bytes of device configuration at `offset` (little-endian). */
  readConfig(offset: number, size: ConfigAccessSize): number;
  /** §2.5: writes `size` bytes of device configuration at `offset`. */
  writeConfig(offset: number, size: ConfigAccessSize, value: number): void;
  /** §2.5: the configuration generation counter. */
  configGeneration(): number;
  /**
   * §4.2.3.4 / §4.1.4.5: reads and acknowledges the interrupt status.
   *
   * @returns the bits: bit 0 = used buffer ({@link VIRTIO_INT_VRING}), bit 1 = configuration change
   */
  ackInterrupt(): number;
}
