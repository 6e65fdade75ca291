/**
 * `VirtioMmioTransport`: the virtio-mmio transport, register layout version 2 (§4.2.2),
 * over any {@link VirtioDevice}. Map it on a `Bus` (it is an `IoHandler`) at the address
 * the guest was told about (device tree or ACPI), and wire its `IrqLine`.
 *
 * Control registers (0x000–0x0fc) take 32-bit aligned accesses only (§4.2.2.2); other
 * widths read as 0 and writes are dropped, as QEMU's `virtio_mmio_read` does ("wrong
 * size access to register!"). The device configuration space (0x100+) takes 8-, 16- and
 * 32-bit accesses (§4.2.2.2); any other width is refused the same way. Every refused
 * access is counted in `badAccesses` and explained (`lastIgnored`, `onIgnored`).
 *
 * @module
 */

import {
  type AccessSize,
  combineAddress,
  type GuestMemory,
  type IoHandler,
  type IrqLine,
} from "@pvkit/platform";
import type { VirtioDevice, VirtioInterrupt } from "../device.js";
import {
  hasFeature,
  PVKIT_MMIO_VENDOR_ID,
  VIRTIO_F_RING_RESET,
  VIRTIO_INT_CONFIG,
  VIRTIO_INT_VRING,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_VERSION,
  VirtioMmio,
} from "../spec.js";
import { checkTransportOptions } from "./options.js";

/** Size of the register window a virtio-mmio device occupies (registers + config space). */
export const VIRTIO_MMIO_WINDOW = 0x200;

/** How to build a {@link VirtioMmioTransport}. */
export interface VirtioMmioTransportOptions {
  /** The device behind the transport. */
  readonly device: VirtioDevice;
  /** Guest memory the device's queues live in. */
  readonly memory: GuestMemory;
  /** The interrupt line (level: high while InterruptStatus ≠ 0). */
  readonly irq: IrqLine;
  /** VendorID register value (default "PVKT"). */
  readonly vendorId?: number;
  /** Told why a guest access was ignored (diagnostics; must not throw). */
  readonly onIgnored?: (reason: string) => void;
}

/**
 * The device side of virtio-mmio v2.
 *
 * @example
 * ```ts
 * const rng = new VirtioRngDevice();
 * const mmio = new VirtioMmioTransport({ device: rng, memory, irq: new IrqLine("rng") });
 * bus.map("mmio", 0xfeb0_0000, VIRTIO_MMIO_WINDOW, mmio, "virtio-rng");
 * ```
 */
export class VirtioMmioTransport implements IoHandler, VirtioInterrupt {
  /** The device behind this transport. */
  readonly device: VirtioDevice;
  /** The interrupt line. */
  readonly irq: IrqLine;
  /** Accesses the transport ignored (wrong width, unaligned, read-only register, …). */
  badAccesses = 0;
  /**
   * Why the last access of a wrong width or alignment was ignored (offset, size and the
   * sizes allowed), or `null`.
   */
  lastIgnored: string | null = null;
  private readonly onIgnored: ((reason: string) => void) | undefined;

  private readonly vendorId: number;
  private interruptStatus = 0;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private queueSel = 0;
  private readonly lo: Uint32Array;
  private readonly hi: Uint32Array;

  /**
   * @param options - the device, guest memory and interrupt line
   * @throws TypeError when `options`, `device`, `memory` or `irq` is missing or of the
   *   wrong type (the message names the option, the type expected and the value given)
   */
  constructor(options: VirtioMmioTransportOptions) {
    checkTransportOptions("new VirtioMmioTransport", options, true);
    this.onIgnored = options.onIgnored;
    this.device = options.device;
    this.irq = options.irq;
    this.vendorId = options.vendorId ?? PVKIT_MMIO_VENDOR_ID;
    // Per queue: desc, driver, device address halves.
    this.lo = new Uint32Array(options.device.numQueues * 3);
    this.hi = new Uint32Array(options.device.numQueues * 3);
    options.device.bind(options.memory, this);
  }

  /** The InterruptStatus register (§4.2.2): bit 0 used buffer, bit 1 configuration change. */
  get isr(): number {
    return this.interruptStatus;
  }

  signalUsed(_queue: number): void {
    this.interruptStatus |= VIRTIO_INT_VRING;
    this.irq.raise();
  }

  signalConfig(): void {
    this.interruptStatus |= VIRTIO_INT_CONFIG;
    this.irq.raise();
  }

  read(offset: number, size: AccessSize): number {
    if (offset >= VirtioMmio.CONFIG) {
      if (size !== 1 && size !== 2 && size !== 4) {
        this.badWidth("read", offset, size);
        return 0;
      }
      return this.device.readConfig(offset - VirtioMmio.CONFIG, size);
    }
    if (size !== 4 || offset % 4 !== 0) {
      this.badWidth("read", offset, size);
      return 0;
    }
    const d = this.device;
    const q = d.queues[this.queueSel];
    switch (offset) {
      case VirtioMmio.MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
      case VirtioMmio.VERSION:
        return VIRTIO_MMIO_VERSION;
      case VirtioMmio.DEVICE_ID:
        return d.deviceId;
      case VirtioMmio.VENDOR_ID:
        return this.vendorId;
      case VirtioMmio.DEVICE_FEATURES:
        return d.readDeviceFeatures(this.deviceFeaturesSel);
      case VirtioMmio.QUEUE_NUM_MAX:
        return q === undefined ? 0 : q.maxSize; // §4.2.2: 0 = queue not available
      case VirtioMmio.QUEUE_READY:
        return q?.ready ? 1 : 0;
      case VirtioMmio.INTERRUPT_STATUS:
        return this.interruptStatus;
      case VirtioMmio.STATUS:
        return d.status;
      case VirtioMmio.QUEUE_RESET:
        return 0; // resets complete synchronously
      case VirtioMmio.SHM_LEN_LOW:
      case VirtioMmio.SHM_LEN_HIGH:
      case VirtioMmio.SHM_BASE_LOW:
      case VirtioMmio.SHM_BASE_HIGH:
        return 0xffff_ffff; // §4.2.2: no shared memory regions: length reads as -1
      case VirtioMmio.CONFIG_GENERATION:
        return d.configGeneration;
      case VirtioMmio.QUEUE_DESC_LOW:
      case VirtioMmio.QUEUE_DRIVER_LOW:
      case VirtioMmio.QUEUE_DEVICE_LOW:
        return this.lo[this.addrSlot(offset)] ?? 0;
      case VirtioMmio.QUEUE_DESC_HIGH:
      case VirtioMmio.QUEUE_DRIVER_HIGH:
      case VirtioMmio.QUEUE_DEVICE_HIGH:
        return this.hi[this.addrSlot(offset)] ?? 0;
      default:
        this.badAccesses++; // write-only or reserved register
        return 0;
    }
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset >= VirtioMmio.CONFIG) {
      if (size !== 1 && size !== 2 && size !== 4) this.badWidth("write", offset, size);
      else this.device.writeConfig(offset - VirtioMmio.CONFIG, size, value);
      return;
    }
    if (size !== 4 || offset % 4 !== 0) {
      this.badWidth("write", offset, size);
      return;
    }
    const d = this.device;
    const q = d.queues[this.queueSel];
    switch (offset) {
      case VirtioMmio.DEVICE_FEATURES_SEL:
        this.deviceFeaturesSel = value;
        return;
      case VirtioMmio.DRIVER_FEATURES:
        d.writeDriverFeatures(this.driverFeaturesSel, value);
        return;
      case VirtioMmio.DRIVER_FEATURES_SEL:
        this.driverFeaturesSel = value;
        return;
      case VirtioMmio.QUEUE_SEL:
        this.queueSel = value; // an absent queue reads QueueNumMax 0 (§4.2.3.2)
        return;
      case VirtioMmio.QUEUE_NUM:
        // §4.2.2: queue registers are written only while QueueReady is 0; later writes are dropped.
        if (q === undefined || q.ready) this.badAccesses++;
        // Stored verbatim and validated when the queue is enabled: 0, not a power of two
        // (§2.7) or above QueueNumMax makes QueueReady set DEVICE_NEEDS_RESET (§2.1.2) and
        // leaves the queue disabled. virtio-pci's queue_size does the same (see
        // VirtioPciTransport): both transports agree on an invalid size.
        else q.size = value;
        return;
      case VirtioMmio.QUEUE_READY:
        if (q === undefined) this.badAccesses++;
        else if (value & 1) d.enableQueue(this.queueSel);
        else if (q.ready) {
          d.resetQueue(this.queueSel); // Linux writes 0 to tear a queue down and reads it back
          this.clearAddresses(this.queueSel);
        }
        return;
      case VirtioMmio.QUEUE_NOTIFY:
        d.notifyQueue(value & 0xffff); // without NOTIFICATION_DATA the value is the queue index
        return;
      case VirtioMmio.INTERRUPT_ACK:
        this.interruptStatus &= ~value;
        if (this.interruptStatus === 0) this.irq.lower();
        return;
      case VirtioMmio.STATUS:
        d.setStatus(value);
        if ((value & 0xff) === 0) this.resetTransport();
        return;
      case VirtioMmio.QUEUE_RESET:
        if (q !== undefined && value === 1 && hasFeature(this.negotiated(), VIRTIO_F_RING_RESET)) {
          d.resetQueue(this.queueSel);
          this.clearAddresses(this.queueSel);
        } else this.badAccesses++;
        return;
      case VirtioMmio.QUEUE_DESC_LOW:
      case VirtioMmio.QUEUE_DRIVER_LOW:
      case VirtioMmio.QUEUE_DEVICE_LOW:
      case VirtioMmio.QUEUE_DESC_HIGH:
      case VirtioMmio.QUEUE_DRIVER_HIGH:
      case VirtioMmio.QUEUE_DEVICE_HIGH:
        this.writeAddress(offset, value);
        return;
      case VirtioMmio.SHM_SEL:
        return; // no shared memory regions; selecting one is harmless
      default:
        this.badAccesses++; // read-only or reserved register
    }
  }

  /** Counts and explains an access of the wrong width or alignment (§4.2.2.2; cold path). */
  private badWidth(kind: "read" | "write", offset: number, size: number): void {
    this.badAccesses++;
    const at = `0x${offset.toString(16)}`;
    const rule =
      offset >= VirtioMmio.CONFIG
        ? "the device configuration space takes 1-, 2- or 4-byte accesses (§4.2.2.2)"
        : "control registers take 4-byte accesses at 4-byte-aligned offsets (§4.2.2.2)";
    const outcome = kind === "read" ? "read as 0" : "write dropped";
    const reason = `virtio-mmio ${kind} of ${size} bytes at offset ${at} ignored: ${rule}; ${outcome}`;
    this.lastIgnored = reason;
    try {
      this.onIgnored?.(reason);
    } catch {
      // Diagnostics must not turn a guest access into a host exception.
    }
  }

  private negotiated(): bigint {
    const d = this.device;
    return (BigInt(d.readDriverFeatures(1)) << 32n) | BigInt(d.readDriverFeatures(0));
  }

  private addrSlot(offset: number): number {
    const which =
      offset < VirtioMmio.QUEUE_DRIVER_LOW ? 0 : offset < VirtioMmio.QUEUE_DEVICE_LOW ? 1 : 2;
    return this.queueSel * 3 + which;
  }

  private writeAddress(offset: number, value: number): void {
    const q = this.device.queues[this.queueSel];
    if (q === undefined || q.ready) {
      this.badAccesses++;
      return;
    }
    const slot = this.addrSlot(offset);
    if (offset % 8 === 0) this.lo[slot] = value;
    else this.hi[slot] = value;
    const addr = combineAddress(this.lo[slot]!, this.hi[slot]!);
    // An address ≥ 2^53 becomes -1, which the queue rejects when it is enabled.
    if (slot % 3 === 0) q.descAddr = addr;
    else if (slot % 3 === 1) q.driverAddr = addr;
    else q.deviceAddr = addr;
  }

  private clearAddresses(queue: number): void {
    this.lo.fill(0, queue * 3, queue * 3 + 3);
    this.hi.fill(0, queue * 3, queue * 3 + 3);
  }

  private resetTransport(): void {
    this.interruptStatus = 0;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.queueSel = 0;
    this.lo.fill(0);
    this.hi.fill(0);
    this.irq.lower();
  }
}
