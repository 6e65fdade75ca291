/**
 * `VirtioMmioDriverTransport`: the guest side of virtio-mmio version 2 (§4.2), the way
 * Linux's `virtio_mmio.c` talks to the register window. Every register access goes
 * through a `Bus`, so each one is counted as an exit.
 *
 * @module
 */

import { type BusAccess, unbindDriver } from "@pvkit/platform";
import { DriverError, VirtioErrorCode } from "../errors.js";
import { VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VERSION, VirtioMmio } from "../spec.js";
import { type VirtioDeviceLocation, virtioDeviceName } from "./binding.js";
import type { RingAddresses } from "./driver-queue.js";
import type { ConfigAccessSize, VirtioDriverTransport } from "./transport.js";

const TWO_32 = 0x1_0000_0000;

/**
 * The driver side of a virtio-mmio device at `base` on a bus (a `Bus`, or any `BusAccess`).
 *
 * @example
 * ```ts
 * const t = VirtioMmioDriverTransport.probe(bus, 0xfeb0_0000);
 * if (t instanceof DriverError) return t;
 * const dev = initVirtioDevice(t, { wanted, memory, allocator });
 * ```
 */
export class VirtioMmioDriverTransport implements VirtioDriverTransport {
  /** §5 device id read at probe time. */
  readonly deviceId: number;
  /** VendorID register read at probe time. */
  readonly vendorId: number;
  /** The bus and the register window, shared by every transport probed at `base`. */
  readonly location: VirtioDeviceLocation;
  private selected = -1;

  private constructor(
    private readonly bus: BusAccess,
    /** Base address of the register window. */
    readonly base: number,
    deviceId: number,
    vendorId: number,
  ) {
    this.deviceId = deviceId;
    this.vendorId = vendorId;
    const key = `mmio 0x${base.toString(16)}`;
    this.location = {
      scope: bus,
      key,
      device: `${virtioDeviceName(deviceId)} device at ${key}`,
    };
  }

  /**
   * Probes the window at `base` like Linux's `virtio_mmio_probe` (§4.2.3.1.1): MagicValue
   * must be "virt", Version must be 2 (legacy version 1 is refused), DeviceID 0 means a
   * placeholder with no device. Four exits.
   *
   * @returns the transport, or `NO_DEVICE` / `UNSUPPORTED_VERSION`
   */
  static probe(bus: BusAccess, base: number): VirtioMmioDriverTransport | DriverError {
    const magic = bus.read("mmio", base + VirtioMmio.MAGIC_VALUE, 4);
    if (magic !== VIRTIO_MMIO_MAGIC) {
      return new DriverError(
        VirtioErrorCode.NO_DEVICE,
        `no virtio-mmio device at 0x${base.toString(16)} (magic 0x${magic.toString(16)})`,
      );
    }
    const version = bus.read("mmio", base + VirtioMmio.VERSION, 4);
    if (version !== VIRTIO_MMIO_VERSION) {
      return new DriverError(
        VirtioErrorCode.UNSUPPORTED_VERSION,
        `virtio-mmio version ${version} at 0x${base.toString(16)}; only version 2 is supported`,
      );
    }
    const deviceId = bus.read("mmio", base + VirtioMmio.DEVICE_ID, 4);
    if (deviceId === 0) {
      return new DriverError(
        VirtioErrorCode.NO_DEVICE,
        `virtio-mmio placeholder (device id 0) at 0x${base.toString(16)}`,
      );
    }
    const vendorId = bus.read("mmio", base + VirtioMmio.VENDOR_ID, 4);
    return new VirtioMmioDriverTransport(bus, base, deviceId, vendorId);
  }

  private r(offset: number): number {
    return this.bus.read("mmio", this.base + offset, 4);
  }

  private w(offset: number, value: number): void {
    this.bus.write("mmio", this.base + offset, 4, value >>> 0);
  }

  /** Selects a queue, skipping the write when it is already selected (the guest remembers what it wrote). */
  private select(index: number): void {
    if (this.selected === index) return;
    this.w(VirtioMmio.QUEUE_SEL, index);
    this.selected = index;
  }

  /** §4.2.3.1: writes 0 to Status (one exit). Ends the driver binding of the device. */
  reset(): void {
    this.w(VirtioMmio.STATUS, 0);
    this.selected = -1; // the device resets QueueSel
    unbindDriver(this.location.scope, this.location.key);
  }

  getStatus(): number {
    return this.r(VirtioMmio.STATUS) & 0xff;
  }

  setStatus(status: number): void {
    this.w(VirtioMmio.STATUS, status & 0xff);
  }

  /** Four exits: select page 1, read, select page 0, read (as Linux does). */
  readDeviceFeatures(): bigint {
    this.w(VirtioMmio.DEVICE_FEATURES_SEL, 1);
    const hi = this.r(VirtioMmio.DEVICE_FEATURES);
    this.w(VirtioMmio.DEVICE_FEATURES_SEL, 0);
    const lo = this.r(VirtioMmio.DEVICE_FEATURES);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** Four exits: select page 1, write, select page 0, write. */
  writeDriverFeatures(features: bigint): void {
    this.w(VirtioMmio.DRIVER_FEATURES_SEL, 1);
    this.w(VirtioMmio.DRIVER_FEATURES, Number((features >> 32n) & 0xffff_ffffn));
    this.w(VirtioMmio.DRIVER_FEATURES_SEL, 0);
    this.w(VirtioMmio.DRIVER_FEATURES, Number(features & 0xffff_ffffn));
  }

  /** QueueSel (when not selected yet) + QueueNumMax: at most two exits. */
  queueMaxSize(index: number): number {
    this.select(index);
    return this.r(VirtioMmio.QUEUE_NUM_MAX);
  }

  /**
   * §4.2.3.2, like Linux `vm_setup_vq`: select the queue, check QueueReady reads 0, write
   * QueueNum and the six address halves, then QueueReady = 1. Nine exits when the queue
   * is already selected.
   */
  setupQueue(index: number, size: number, rings: RingAddresses): DriverError | undefined {
    this.select(index);
    if (this.r(VirtioMmio.QUEUE_READY) !== 0) {
      return new DriverError(
        VirtioErrorCode.QUEUE_UNAVAILABLE,
        `queue ${index} is already enabled (§4.2.3.2)`,
        index,
      );
    }
    this.w(VirtioMmio.QUEUE_NUM, size);
    this.writeAddr(VirtioMmio.QUEUE_DESC_LOW, rings.desc);
    this.writeAddr(VirtioMmio.QUEUE_DRIVER_LOW, rings.driver);
    this.writeAddr(VirtioMmio.QUEUE_DEVICE_LOW, rings.device);
    this.w(VirtioMmio.QUEUE_READY, 1);
    return undefined;
  }

  private writeAddr(lowOffset: number, addr: number): void {
    this.w(lowOffset, addr % TWO_32);
    this.w(lowOffset + 4, Math.floor(addr / TWO_32));
  }

  /** §4.2.3.3: one exit, writing the queue index to QueueNotify. */
  notify(index: number): void {
    this.w(VirtioMmio.QUEUE_NOTIFY, index);
  }

  readConfig(offset: number, size: ConfigAccessSize): number {
    return this.bus.read("mmio", this.base + VirtioMmio.CONFIG + offset, size);
  }

  writeConfig(offset: number, size: ConfigAccessSize, value: number): void {
    this.bus.write("mmio", this.base + VirtioMmio.CONFIG + offset, size, value);
  }

  configGeneration(): number {
    return this.r(VirtioMmio.CONFIG_GENERATION);
  }

  /**
   * §4.2.3.4 (Linux `vm_interrupt`): reads InterruptStatus and writes the bits back to
   * InterruptACK. One exit for a spurious interrupt (status 0), two otherwise.
   */
  ackInterrupt(): number {
    const status = this.r(VirtioMmio.INTERRUPT_STATUS);
    if (status !== 0) this.w(VirtioMmio.INTERRUPT_ACK, status);
    return status;
  }
}
