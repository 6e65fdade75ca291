/**
 * The `VirtioDevice` interface every transport drives, and `VirtioDeviceBase`, which
 * implements the device-status state machine (§2.1, §3.1), 64-bit feature negotiation
 * (§2.2), the config-generation counter (§2.5) and NEEDS_RESET handling once for every
 * device.
 *
 * @module
 */

import { defer, Emitter, type GuestMemory } from "@pvkit/platform";
import type { VirtioError } from "./errors.js";
import type { DescriptorChain } from "./queue/chain.js";
import { DeviceQueue } from "./queue/device-queue.js";
import { PackedDeviceQueue } from "./queue/packed-device-queue.js";
import type { DeviceVirtqueue } from "./queue/virtqueue.js";
import {
  featureMask,
  hasFeature,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from "./spec.js";

/** How a device tells its transport to interrupt the driver (§2.3, §4.1.4.5, §4.2.3.4). */
export interface VirtioInterrupt {
  /** A used-buffer notification for queue `queue`. */
  signalUsed(queue: number): void;
  /** A configuration-change notification. */
  signalConfig(): void;
}

/**
 * What a transport (virtio-mmio, virtio-pci) needs from a device. Implemented once by
 * {@link VirtioDeviceBase}; device authors extend that.
 */
export interface VirtioDevice {
  /** §5: the virtio device id. */
  readonly deviceId: number;
  /** §2.2: every feature bit the device offers (VERSION_1 always included). */
  readonly deviceFeatures: bigint;
  /** Number of virtqueues. */
  readonly numQueues: number;
  /**
   * The virtqueues, indexed by queue number: split rings (§2.7), or packed rings (§2.8)
   * once the driver negotiated VIRTIO_F_RING_PACKED (FEATURES_OK) until the next reset.
   */
  readonly queues: readonly DeviceVirtqueue[];
  /** Bytes of device-specific configuration space. */
  readonly configSize: number;
  /** §2.5: changes whenever the configuration space changes. */
  readonly configGeneration: number;
  /** §2.1: the device status byte. */
  readonly status: number;
  /** Feature bits the driver wrote (not yet validated before FEATURES_OK). */
  readonly driverFeatures: bigint;
  /** Connects the device to guest memory and its transport's interrupt. */
  bind(memory: GuestMemory, interrupt: VirtioInterrupt): void;
  /** 32 bits of the offered features: page 0 = bits 0..31, page 1 = bits 32..63. */
  readDeviceFeatures(page: number): number;
  /** Reads back 32 bits of the driver's features. */
  readDriverFeatures(page: number): number;
  /** The driver writes 32 bits of its features (ignored once FEATURES_OK is set). */
  writeDriverFeatures(page: number, value: number): void;
  /** The driver writes the status byte (§2.1; 0 resets). */
  setStatus(value: number): void;
  /** A read of the device configuration space; out-of-range bytes read as 0. */
  readConfig(offset: number, size: 1 | 2 | 4): number;
  /** A write to the device configuration space. */
  writeConfig(offset: number, size: 1 | 2 | 4, value: number): void;
  /** The driver enabled queue `index` (QueueReady / queue_enable = 1). */
  enableQueue(index: number): void;
  /** The driver notified queue `index` (QueueNotify / notify region write). */
  notifyQueue(index: number): void;
  /** §2.6.1 VIRTIO_F_RING_RESET: resets one queue. */
  resetQueue(index: number): void;
  /** §2.4: device reset (the driver wrote status 0). */
  reset(): void;
}

/** Events every device emits. */
export type VirtioDeviceEvents = {
  /** The device entered DEVICE_NEEDS_RESET because of `error`. */
  needsReset: (error: VirtioError) => void;
  /** The status byte changed. */
  status: (status: number) => void;
  /** DRIVER_OK: the device started, with these negotiated features. */
  activate: (features: bigint) => void;
  /** The driver reset the device. */
  reset: () => void;
  /** The driver broke the status protocol (cleared a bit, skipped a step); ignored. */
  protocolError: (message: string) => void;
};

/** Options common to every device. */
export interface VirtioDeviceOptions {
  /** §5 device id. */
  readonly deviceId: number;
  /** Device-specific feature bits offered (VERSION_1 is added). */
  readonly features?: bigint;
  /** Maximum size of each queue; the array length is the number of queues. */
  readonly queueSizes: readonly number[];
  /** Bytes of configuration space. */
  readonly configSize?: number;
  /** Offer VIRTIO_F_EVENT_IDX (default true). */
  readonly eventIdx?: boolean;
  /** Offer VIRTIO_F_INDIRECT_DESC (default true). */
  readonly indirectDesc?: boolean;
  /**
   * Offer VIRTIO_F_RING_PACKED (§2.8; default false). A driver that accepts it gets packed
   * rings, served by the same device code as split rings.
   */
  readonly ringPacked?: boolean;
}

const NO_INTERRUPT: VirtioInterrupt = { signalUsed() {}, signalConfig() {} };

/**
 * The base every pvkit device extends. Subclasses fill {@link config}, implement
 * {@link onQueueNotify}, and may override {@link onActivate}, {@link onReset},
 * {@link onConfigWrite} and {@link validateFeatures}.
 */
export abstract class VirtioDeviceBase<E extends VirtioDeviceEvents = VirtioDeviceEvents>
  extends Emitter<E>
  implements VirtioDevice
{
  readonly deviceId: number;
  readonly deviceFeatures: bigint;
  readonly configSize: number;
  /** The configuration space, little-endian, as the spec lays it out for this device. */
  protected readonly config: Uint8Array;
  /** A DataView over {@link config}. */
  protected readonly configView: DataView;
  /** Guest memory (set by {@link bind}). */
  protected memory: GuestMemory | null = null;
  /** The transport's interrupt (set by {@link bind}). */
  protected interrupt: VirtioInterrupt = NO_INTERRUPT;

  private deviceStatus = 0;
  private driverFeaturesValue = 0n;
  private generation = 0;
  private negotiated = 0n;
  // One queue object per layout; `queues` is whichever the negotiated features select.
  private readonly splitQueues: readonly DeviceQueue[];
  private readonly packedQueues: readonly PackedDeviceQueue[];
  private ringQueues: readonly DeviceVirtqueue[];
  /** Queue notifications received from the driver. */
  notifications = 0;

  constructor(options: VirtioDeviceOptions) {
    super();
    this.deviceId = options.deviceId;
    let features = (options.features ?? 0n) | featureMask(VIRTIO_F_VERSION_1);
    if (options.eventIdx ?? true) features |= featureMask(VIRTIO_F_EVENT_IDX);
    if (options.indirectDesc ?? true) features |= featureMask(VIRTIO_F_INDIRECT_DESC);
    if (options.ringPacked ?? false) features |= featureMask(VIRTIO_F_RING_PACKED);
    this.deviceFeatures = features;
    this.splitQueues = options.queueSizes.map(
      (max, i) => new DeviceQueue(i, max, (err) => this.needsReset(err)),
    );
    this.packedQueues = hasFeature(features, VIRTIO_F_RING_PACKED)
      ? options.queueSizes.map(
          (max, i) => new PackedDeviceQueue(i, max, (err) => this.needsReset(err)),
        )
      : [];
    this.ringQueues = this.splitQueues;
    this.configSize = options.configSize ?? 0;
    this.config = new Uint8Array(this.configSize);
    this.configView = new DataView(this.config.buffer);
  }

  /** This emitter, typed with the events every device has (`E` only adds to them). */
  private events(): Emitter<VirtioDeviceEvents> {
    return this as unknown as Emitter<VirtioDeviceEvents>;
  }

  /**
   * The virtqueues, indexed by queue number: split rings (§2.7), or packed rings (§2.8)
   * from the FEATURES_OK that accepted VIRTIO_F_RING_PACKED until the next reset.
   */
  get queues(): readonly DeviceVirtqueue[] {
    return this.ringQueues;
  }
  /** Whether the queues are packed rings (VIRTIO_F_RING_PACKED negotiated). */
  get ringPacked(): boolean {
    return this.ringQueues !== this.splitQueues;
  }
  get numQueues(): number {
    return this.splitQueues.length;
  }
  get status(): number {
    return this.deviceStatus;
  }
  get configGeneration(): number {
    return this.generation;
  }
  get driverFeatures(): bigint {
    return this.driverFeaturesValue;
  }
  /** Features in force after FEATURES_OK (0 before). */
  get negotiatedFeatures(): bigint {
    return this.negotiated;
  }
  /** Whether the driver set DRIVER_OK and the device is not waiting for a reset. */
  get isLive(): boolean {
    return (
      (this.deviceStatus & (VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_NEEDS_RESET)) ===
      VIRTIO_CONFIG_S_DRIVER_OK
    );
  }

  bind(memory: GuestMemory, interrupt: VirtioInterrupt): void {
    this.memory = memory;
    this.interrupt = interrupt;
    for (const q of this.splitQueues) q.bind(memory);
    for (const q of this.packedQueues) q.bind(memory);
  }

  readDeviceFeatures(page: number): number {
    if (page !== 0 && page !== 1) return 0; // §2.2: only 64 bits are defined
    return Number((this.deviceFeatures >> BigInt(32 * page)) & 0xffff_ffffn);
  }

  readDriverFeatures(page: number): number {
    if (page !== 0 && page !== 1) return 0;
    return Number((this.driverFeaturesValue >> BigInt(32 * page)) & 0xffff_ffffn);
  }

  writeDriverFeatures(page: number, value: number): void {
    // §2.2.1 / §3.1.1: features are fixed once FEATURES_OK is set.
    if (this.deviceStatus & VIRTIO_CONFIG_S_FEATURES_OK) {
      this.protocolError(`driver wrote features page ${page} after FEATURES_OK`);
      return;
    }
    if (page !== 0 && page !== 1) return;
    const shift = BigInt(32 * page);
    const cleared = this.driverFeaturesValue & ~(0xffff_ffffn << shift);
    this.driverFeaturesValue = cleared | (BigInt(value >>> 0) << shift);
  }

  /**
   * The status state machine (§2.1, §3.1.1). 0 resets. The driver may only add bits, in
   * order: ACKNOWLEDGE, DRIVER, FEATURES_OK (accepted only for a valid feature set),
   * DRIVER_OK (activates the queues). FAILED is accepted at any time. A write that clears
   * bits or skips a step is ignored and reported as a protocol error.
   */
  setStatus(value: number): void {
    value &= 0xff;
    if (value === 0) {
      this.reset();
      return;
    }
    const old = this.deviceStatus;
    // NEEDS_RESET belongs to the device; what the driver writes there is ignored.
    const wanted = (value & ~VIRTIO_CONFIG_S_NEEDS_RESET) | (old & VIRTIO_CONFIG_S_NEEDS_RESET);
    if ((old & ~wanted) !== 0) {
      this.protocolError(`driver cleared status bits 0x${(old & ~wanted).toString(16)} (§2.1.2)`);
      return;
    }
    let next = old;
    const added = wanted & ~old;
    if (added & VIRTIO_CONFIG_S_FAILED) next |= VIRTIO_CONFIG_S_FAILED;
    if (added & VIRTIO_CONFIG_S_ACKNOWLEDGE) next |= VIRTIO_CONFIG_S_ACKNOWLEDGE;
    if (added & VIRTIO_CONFIG_S_DRIVER) next |= VIRTIO_CONFIG_S_DRIVER;
    if (added & VIRTIO_CONFIG_S_FEATURES_OK) {
      const reason = this.featuresProblem(next);
      if (reason === undefined) {
        next |= VIRTIO_CONFIG_S_FEATURES_OK;
        this.negotiated = this.driverFeaturesValue;
        this.selectLayout(hasFeature(this.negotiated, VIRTIO_F_RING_PACKED));
      } else {
        // §3.1.1: the device leaves FEATURES_OK clear; the driver re-reads and gives up.
        this.protocolError(reason);
      }
    }
    if (added & VIRTIO_CONFIG_S_DRIVER_OK) {
      if (next & VIRTIO_CONFIG_S_FEATURES_OK) next |= VIRTIO_CONFIG_S_DRIVER_OK;
      else this.protocolError("driver set DRIVER_OK without FEATURES_OK (§3.1.1)");
    }
    if (next === old) return;
    this.deviceStatus = next;
    this.events().emit("status", next);
    if (next & VIRTIO_CONFIG_S_DRIVER_OK && !(old & VIRTIO_CONFIG_S_DRIVER_OK)) this.startQueues();
  }

  private featuresProblem(status: number): string | undefined {
    const needed = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
    if ((status & needed) !== needed)
      return "driver set FEATURES_OK before ACKNOWLEDGE and DRIVER (§3.1.1)";
    const f = this.driverFeaturesValue;
    const extra = f & ~this.deviceFeatures;
    if (extra !== 0n)
      return `driver accepted features 0x${extra.toString(16)} that were not offered (§2.2.1)`;
    if (!hasFeature(f, VIRTIO_F_VERSION_1))
      return "driver did not accept VIRTIO_F_VERSION_1 (§6.1)";
    return this.validateFeatures(f);
  }

  /**
   * Switches `queues` to the layout negotiated at FEATURES_OK (§2.8). A driver sets up its
   * queues after FEATURES_OK (§3.1.1 step 7); whatever it wrote before carries over.
   */
  private selectLayout(packed: boolean): void {
    const next = packed && this.packedQueues.length > 0 ? this.packedQueues : this.splitQueues;
    if (next === this.ringQueues) return;
    const prev = this.ringQueues;
    for (let i = 0; i < next.length; i++) {
      const from = prev[i]!;
      const to = next[i]!;
      if (to.ready) continue;
      to.size = from.size;
      to.descAddr = from.descAddr;
      to.driverAddr = from.driverAddr;
      to.deviceAddr = from.deviceAddr;
    }
    this.ringQueues = next;
  }

  private startQueues(): void {
    const f = this.negotiated;
    const eventIdx = hasFeature(f, VIRTIO_F_EVENT_IDX);
    const indirect = hasFeature(f, VIRTIO_F_INDIRECT_DESC);
    for (const q of this.queues) q.activate(eventIdx, indirect);
    const err = this.onActivate(f);
    if (err !== undefined) {
      this.needsReset(err);
      return;
    }
    this.events().emit("activate", f);
  }

  readConfig(offset: number, size: 1 | 2 | 4): number {
    if (offset < 0 || offset + size > this.configSize) return 0;
    this.beforeConfigRead(offset, size);
    const v = this.configView;
    return size === 1
      ? v.getUint8(offset)
      : size === 2
        ? v.getUint16(offset, true)
        : v.getUint32(offset, true);
  }

  writeConfig(offset: number, size: 1 | 2 | 4, value: number): void {
    if (offset < 0 || offset + size > this.configSize) return;
    this.onConfigWrite(offset, size, value);
  }

  enableQueue(index: number): void {
    const q = this.queues[index];
    if (q === undefined || q.ready) return;
    if (q.enable() !== undefined) return; // reported through the queue's error handler
    if (this.deviceStatus & VIRTIO_CONFIG_S_DRIVER_OK) {
      const f = this.negotiated;
      q.activate(hasFeature(f, VIRTIO_F_EVENT_IDX), hasFeature(f, VIRTIO_F_INDIRECT_DESC));
    }
  }

  notifyQueue(index: number): void {
    this.notifications++;
    const q = this.queues[index];
    // §2.7.13: nothing is consumed before DRIVER_OK, nor after NEEDS_RESET.
    if (q === undefined || !this.isLive || !q.isActive) return;
    this.onQueueNotify(index, q);
  }

  resetQueue(index: number): void {
    const q = this.queues[index];
    if (q === undefined) return;
    q.reset();
    this.onQueueReset(index);
  }

  reset(): void {
    this.deviceStatus = 0;
    this.driverFeaturesValue = 0n;
    this.negotiated = 0n;
    for (const q of this.splitQueues) q.reset();
    for (const q of this.packedQueues) q.reset();
    this.ringQueues = this.splitQueues;
    this.onReset();
    this.events().emit("reset");
  }

  /**
   * Enters DEVICE_NEEDS_RESET (§2.1.2): stops every queue and, once the driver is live,
   * sends a configuration-change notification.
   */
  needsReset(error: VirtioError): void {
    if (this.deviceStatus & VIRTIO_CONFIG_S_NEEDS_RESET) return;
    this.deviceStatus |= VIRTIO_CONFIG_S_NEEDS_RESET;
    this.events().emit("needsReset", error);
    this.events().emit("status", this.deviceStatus);
    if (this.deviceStatus & VIRTIO_CONFIG_S_DRIVER_OK) this.interrupt.signalConfig();
  }

  /** Call after changing {@link config}: bumps the generation and notifies a live driver (§2.5). */
  protected configChanged(): void {
    this.generation = (this.generation + 1) & 0xffff_ffff;
    if (this.deviceStatus & VIRTIO_CONFIG_S_DRIVER_OK) this.interrupt.signalConfig();
  }

  /**
   * The standard drain: pops up to one queue-size of chains (so a driver that keeps
   * adding cannot hold the device forever), hands each to `serve`, returns it with the
   * length `serve` reports (or keeps it when `serve` returns -1, for asynchronous
   * completion), re-enables notifications and interrupts the driver if it asked for it.
   * When the budget runs out with work left, another pass is scheduled.
   *
   * @returns chains served
   */
  protected serveQueue(queue: DeviceVirtqueue, serve: (chain: DescriptorChain) => number): number {
    let budget = queue.size;
    let served = 0;
    for (;;) {
      queue.disableNotification();
      while (budget > 0) {
        const chain = queue.popChain();
        if (chain === null) break;
        budget--;
        served++;
        const len = serve(chain);
        if (len >= 0) queue.addUsed(chain.head, len);
      }
      const more = queue.enableNotification();
      if (!more) break;
      if (budget === 0) {
        this.schedule(() => this.notifyQueue(queue.index));
        break;
      }
    }
    this.interruptIfNeeded(queue);
    return served;
  }

  /** Publishes used entries and interrupts the driver if it asked for it (§2.7.10). */
  protected interruptIfNeeded(queue: DeviceVirtqueue): void {
    if (queue.needsNotification()) this.interrupt.signalUsed(queue.index);
  }

  /**
   * Runs `task` later (used to continue a drain after one queue-size of chains) through
   * `@pvkit/platform`'s `defer`: the next macrotask, never a clamped `setTimeout`, so a burst
   * longer than the queue costs one event-loop turn per pass, not 1–4 ms. Override to plug
   * into an emulator's own loop.
   */
  protected schedule(task: () => void): void {
    defer(task);
  }

  private protocolError(message: string): void {
    this.events().emit("protocolError", message);
  }

  /** A device-specific check of the features the driver accepted. @returns a reason to refuse, or undefined */
  protected validateFeatures(_features: bigint): string | undefined {
    return undefined;
  }
  /** DRIVER_OK: start serving. @returns an error to enter NEEDS_RESET instead */
  protected onActivate(_features: bigint): VirtioError | undefined {
    return undefined;
  }
  /** The device was reset: forget all in-flight work. */
  protected onReset(): void {}
  /** One queue was reset (VIRTIO_F_RING_RESET). */
  protected onQueueReset(_index: number): void {}
  /** Refresh {@link config} before the driver reads it, if it is computed lazily. */
  protected beforeConfigRead(_offset: number, _size: 1 | 2 | 4): void {}
  /** The driver wrote configuration space (most fields are read-only: ignore by default). */
  protected onConfigWrite(_offset: number, _size: 1 | 2 | 4, _value: number): void {}
  /** The driver notified `queue`, which is active. */
  protected abstract onQueueNotify(index: number, queue: DeviceVirtqueue): void;
}
