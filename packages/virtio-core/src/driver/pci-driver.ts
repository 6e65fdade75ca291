/**
 * `VirtioPciDriverTransport`: the guest side of modern virtio-pci (§4.1), the way Linux's
 * `virtio_pci_modern_dev.c` / `virtio_pci_modern.c` probe and drive it. Configuration
 * cycles go through a {@link PciConfigAccess} (e.g. ports 0xCF8/0xCFC on a `Bus`) and
 * structure accesses through the `Bus` at the BAR addresses, so every access is an exit.
 *
 * Probe (as `vp_modern_probe`): check the vendor and device id (§4.1.2), size the BARs
 * (the PCI core's job), walk the capability list once per `cfg_type` as
 * `virtio_pci_find_capability` does (vendor capabilities only, reserved BARs skipped,
 * first match wins), check every structure's length and alignment as
 * `vp_modern_map_capability` does, then enable decode and bus mastering.
 *
 * Interrupts: INTx by default (`ackInterrupt` reads the ISR, one exit). After
 * {@link VirtioPciDriverTransport.enableMsix}, each queue (or all queues together) and
 * configuration changes get their own MSI-X vector; the emulator's message goes to
 * {@link VirtioPciDriverTransport.handleMsixMessage}, and `ackInterrupt` then returns
 * the collected bits without touching the device (no exit), like Linux's per-vector
 * handlers that never read the ISR.
 *
 * @module
 */

import {
  type AccessSize,
  type AddressSpace,
  type Bus,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_VNDR,
  PCI_CAP_START,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_MSIX_ENTRY_CTRL_MASKBIT,
  PCI_MSIX_ENTRY_DATA,
  PCI_MSIX_ENTRY_LOWER_ADDR,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_ENTRY_UPPER_ADDR,
  PCI_MSIX_ENTRY_VECTOR_CTRL,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_FLAGS_QSIZE,
  PCI_MSIX_TABLE,
  PCI_NUM_BARS,
  PCI_STATUS_CAP_LIST,
  type PciBarInfo,
  type PciConfigAccess,
  PciConfigOffset,
  probePciBars,
  unbindDriver,
} from "@pvkit/platform";
import { DriverError, VirtioErrorCode } from "../errors.js";
import {
  VirtioPciCommonCfg as C,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_COMMON_CFG_LEN,
  VIRTIO_PCI_COMMON_CFG_MIN_LEN,
  VIRTIO_PCI_DEVICE_ID_LAST,
  VIRTIO_PCI_ISR_CONFIG,
  VIRTIO_PCI_ISR_QUEUE,
  VIRTIO_PCI_MODERN_DEVICE_ID_BASE,
  VIRTIO_PCI_VENDOR_ID,
  VirtioPciCapOffset,
} from "../pci-spec.js";
import { type VirtioDeviceLocation, virtioDeviceName } from "./binding.js";
import type { RingAddresses } from "./driver-queue.js";
import type { ConfigAccessSize, VirtioDriverTransport } from "./transport.js";

const TWO_32 = 0x1_0000_0000;
/** Linux `PCI_FIND_CAP_TTL`: at most 48 capabilities are walked. */
const PCI_FIND_CAP_TTL = 48;
/** Linux maps at most a page of device configuration. */
const PAGE_SIZE = 4096;
/** How often `reset` re-reads device_status waiting for 0 (§4.1.4.3.2). */
const RESET_POLL_LIMIT = 1000;
/** x86 MSI address (LAPIC window, destination 0) used by default. */
const DEFAULT_MSI_ADDRESS = 0xfee0_0000;
/** The legacy PCI device id range starts here (§4.1.2). */
const VIRTIO_PCI_DEVICE_ID_FIRST = 0x1000;

/** A virtio structure the probe found and mapped. */
export interface VirtioPciMappedRegion {
  /** Offset of its capability in configuration space. */
  readonly capOffset: number;
  /** BAR index. */
  readonly bar: number;
  /** Offset inside the BAR (cap.offset). */
  readonly offset: number;
  /** Bytes mapped (cap.length, capped like Linux does). */
  readonly length: number;
  /** Address space of the BAR. */
  readonly space: AddressSpace;
  /** Bus address of the structure. */
  readonly address: number;
}

/** The MSI-X capability as the probe found it. */
export interface VirtioPciMsixInfo {
  /** Capability offset. */
  readonly capOffset: number;
  /** Table size. */
  readonly tableSize: number;
  /** Bus address of the table. */
  readonly tableAddress: number;
}

/** How interrupts are delivered. */
export type VirtioPciIrqMode = "intx" | "msix-per-queue" | "msix-shared";

/** Options of {@link VirtioPciDriverTransport.enableMsix}. */
export interface VirtioPciMsixOptions {
  /** Queues that will be set up (vectors needed for per-queue mode: 1 + this). */
  readonly numQueues: number;
  /** Message address written to each entry (default 0xFEE00000). */
  readonly address?: number;
  /** Message data of vector 0; vector v sends `dataBase + v`. */
  readonly dataBase: number;
  /** Try one vector per queue first (default true), as Linux's `vp_find_vqs` does. */
  readonly perQueue?: boolean;
}

/**
 * The driver side of a modern virtio-pci function.
 *
 * @example
 * ```ts
 * const cfg = new PciConfigPortAccess(bus, 3);
 * assignPciBars(cfg, { io: 0xc000, mem32: 0xfe00_0000 }); // firmware
 * const t = VirtioPciDriverTransport.probe(bus, cfg);
 * if (t instanceof DriverError) throw new Error(t.message);
 * const rng = VirtioRngDriver.create(t, { memory, allocator });
 * ```
 */
export class VirtioPciDriverTransport implements VirtioDriverTransport {
  /** §5 device id (PCI device id − 0x1040, or the subsystem id for a transitional id). */
  readonly deviceId: number;
  /** PCI Device ID. */
  readonly pciDeviceId: number;
  /** PCI Revision ID. */
  readonly revision: number;
  /** The BARs as sized at probe time. */
  readonly bars: readonly PciBarInfo[];
  /** Common configuration. */
  readonly common: VirtioPciMappedRegion;
  /** ISR status. */
  readonly isr: VirtioPciMappedRegion;
  /** Notification area. */
  readonly notifyArea: VirtioPciMappedRegion;
  /** Device configuration, or null when the device has none. */
  readonly device: VirtioPciMappedRegion | null;
  /** §4.1.4.4 notify_off_multiplier. */
  readonly notifyOffMultiplier: number;
  /** MSI-X capability, or null. */
  readonly msix: VirtioPciMsixInfo | null;
  /** The bus and the common configuration's address, shared by every transport probed at this function. */
  readonly location: VirtioDeviceLocation;
  /** How interrupts arrive now. */
  irqMode: VirtioPciIrqMode = "intx";

  private readonly notifyAddr: number[] = [];
  private selected = -1;
  private msiDataBase = 0;
  private msiVectors = 0;
  private configVectorSet = false;
  private softIsr = 0;

  private constructor(
    private readonly bus: Bus,
    /** Configuration access used for the probe and MSI-X control. */
    readonly config: PciConfigAccess,
    init: {
      deviceId: number;
      pciDeviceId: number;
      revision: number;
      bars: PciBarInfo[];
      common: VirtioPciMappedRegion;
      isr: VirtioPciMappedRegion;
      notify: VirtioPciMappedRegion;
      device: VirtioPciMappedRegion | null;
      mult: number;
      msix: VirtioPciMsixInfo | null;
    },
  ) {
    this.deviceId = init.deviceId;
    this.pciDeviceId = init.pciDeviceId;
    this.revision = init.revision;
    this.bars = init.bars;
    this.common = init.common;
    this.isr = init.isr;
    this.notifyArea = init.notify;
    this.device = init.device;
    this.notifyOffMultiplier = init.mult;
    this.msix = init.msix;
    const key = `${init.common.space} 0x${init.common.address.toString(16)}`;
    this.location = {
      scope: bus,
      key,
      device: `${virtioDeviceName(init.deviceId)} PCI device with common_cfg at ${key}`,
    };
  }

  /**
   * Probes the function behind `config` as Linux's `vp_modern_probe` does.
   *
   * @returns the transport, or `NO_DEVICE` with the reason (not a virtio id, a missing
   *   capability, a structure that is too short, misaligned or outside its BAR)
   */
  static probe(bus: Bus, config: PciConfigAccess): VirtioPciDriverTransport | DriverError {
    const noDevice = (msg: string) => new DriverError(VirtioErrorCode.NO_DEVICE, msg);
    const vendor = config.read(PciConfigOffset.VENDOR_ID, 2);
    const pciDeviceId = config.read(PciConfigOffset.DEVICE_ID, 2);
    if (vendor !== VIRTIO_PCI_VENDOR_ID)
      return noDevice(`PCI vendor 0x${vendor.toString(16)} is not virtio (0x1af4, §4.1.2)`);
    if (pciDeviceId < VIRTIO_PCI_DEVICE_ID_FIRST || pciDeviceId > VIRTIO_PCI_DEVICE_ID_LAST) {
      return noDevice(
        `PCI device id 0x${pciDeviceId.toString(16)} is outside 0x1000–0x107f (§4.1.2)`,
      );
    }
    // §4.1.2: transitional ids carry the virtio id in the subsystem id.
    const deviceId =
      pciDeviceId < VIRTIO_PCI_MODERN_DEVICE_ID_BASE
        ? config.read(PciConfigOffset.SUBSYSTEM_ID, 2)
        : pciDeviceId - VIRTIO_PCI_MODERN_DEVICE_ID_BASE;
    const revision = config.read(PciConfigOffset.REVISION_ID, 1);
    const bars = probePciBars(config);
    const barOf = (i: number) => bars.find((b) => b.index === i);

    const common = findVirtioCap(config, bars, VIRTIO_PCI_CAP_COMMON_CFG);
    if (common === 0)
      return noDevice(
        "no VIRTIO_PCI_CAP_COMMON_CFG capability: leaving for the legacy driver (§4.1.4.3)",
      );
    const isr = findVirtioCap(config, bars, VIRTIO_PCI_CAP_ISR_CFG);
    const notify = findVirtioCap(config, bars, VIRTIO_PCI_CAP_NOTIFY_CFG);
    if (isr === 0 || notify === 0) {
      return noDevice(
        `missing capabilities: common ${common}, isr ${isr}, notify ${notify} (§4.1.4)`,
      );
    }
    const device = findVirtioCap(config, bars, VIRTIO_PCI_CAP_DEVICE_CFG);

    const map = (
      off: number,
      minlen: number,
      alignment: number,
      size: number,
    ): VirtioPciMappedRegion | DriverError => {
      const bar = config.read(off + VirtioPciCapOffset.BAR, 1);
      const offset = config.read(off + VirtioPciCapOffset.OFFSET, 4);
      let length = config.read(off + VirtioPciCapOffset.LENGTH, 4);
      const b = barOf(bar);
      if (b === undefined)
        return noDevice(`capability at 0x${off.toString(16)}: BAR ${bar} unexpectedly changed`);
      if (length === 0 || length < minlen) {
        return noDevice(
          `capability at 0x${off.toString(16)}: bad length ${length} (≥${Math.max(minlen, 1)} expected)`,
        );
      }
      if (offset % alignment !== 0)
        return noDevice(
          `capability at 0x${off.toString(16)}: offset ${offset} not aligned to ${alignment}`,
        );
      if (length > size) length = size;
      if (minlen + offset > b.size) {
        return noDevice(
          `capability at 0x${off.toString(16)}: map ${minlen}@${offset} out of range on BAR ${bar} of ${b.size} bytes`,
        );
      }
      if (b.address === 0) return noDevice(`BAR ${bar} has no address assigned`);
      return {
        capOffset: off,
        bar,
        offset,
        length: Math.min(length, b.size - offset),
        space: b.kind === "io" ? "pio" : "mmio",
        address: b.address + offset,
      };
    };

    const commonMap = map(common, VIRTIO_PCI_COMMON_CFG_MIN_LEN, 4, VIRTIO_PCI_COMMON_CFG_LEN);
    if (commonMap instanceof DriverError) return commonMap;
    const isrMap = map(isr, 1, 1, 1);
    if (isrMap instanceof DriverError) return isrMap;
    const mult = config.read(notify + VirtioPciCapOffset.NOTIFY_OFF_MULTIPLIER, 4);
    const notifyLength = config.read(notify + VirtioPciCapOffset.LENGTH, 4);
    // Each queue's notify_off is checked against this length at setup (Linux `vp_modern_map_vq_notify`).
    const notifyMap = map(notify, 2, 2, notifyLength);
    if (notifyMap instanceof DriverError) return notifyMap;
    let deviceMap: VirtioPciMappedRegion | null = null;
    if (device !== 0) {
      const m = map(device, 0, 4, PAGE_SIZE);
      if (m instanceof DriverError) return m;
      deviceMap = m;
    }

    // MSI-X, found as the PCI core does (pci_find_capability).
    let msix: VirtioPciMsixInfo | null = null;
    const mpos = findCapability(config, PCI_CAP_ID_MSIX, 0);
    if (mpos !== 0) {
      const ctl = config.read(mpos + PCI_MSIX_FLAGS, 2);
      const tbl = config.read(mpos + PCI_MSIX_TABLE, 4);
      const b = barOf(tbl & 0x7);
      if (b !== undefined && b.kind !== "io" && b.address !== 0) {
        msix = {
          capOffset: mpos,
          tableSize: (ctl & PCI_MSIX_FLAGS_QSIZE) + 1,
          tableAddress: b.address + (tbl & ~0x7),
        };
      }
    }

    // pci_enable_device + pci_set_master.
    let needs = PCI_COMMAND_MASTER;
    for (const r of [
      commonMap,
      isrMap,
      notifyMap,
      deviceMap,
      msix === null ? null : { space: "mmio" },
    ]) {
      if (r !== null) needs |= r.space === "pio" ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
    }
    const cmd = config.read(PciConfigOffset.COMMAND, 2);
    if ((cmd & needs) !== needs) config.write(PciConfigOffset.COMMAND, 2, cmd | needs);

    return new VirtioPciDriverTransport(bus, config, {
      deviceId,
      pciDeviceId,
      revision,
      bars,
      common: commonMap,
      isr: isrMap,
      notify: notifyMap,
      device: deviceMap,
      mult,
      msix,
    });
  }

  // ── structure accessors (one exit each) ─────────────────────────────────────────

  private cr(off: number, size: AccessSize): number {
    return this.bus.read(this.common.space, this.common.address + off, size);
  }

  private cw(off: number, size: AccessSize, value: number): void {
    this.bus.write(this.common.space, this.common.address + off, size, value >>> 0);
  }

  /** Linux `vp_iowrite64_twopart`: low half, then high half. */
  private cw64(off: number, value: number): void {
    this.cw(off, 4, value % TWO_32);
    this.cw(off + 4, 4, Math.floor(value / TWO_32));
  }

  private select(index: number): void {
    if (this.selected === index) return;
    this.cw(C.QUEUE_SELECT, 2, index);
    this.selected = index;
  }

  /** num_queues (one exit). */
  numQueues(): number {
    return this.cr(C.NUM_QUEUES, 2);
  }

  /**
   * §4.1.4.3.2: writes 0 to device_status and re-reads it until the device reports 0
   * (Linux `vp_reset`). The device forgets its MSI-X vector mapping too, and its driver
   * binding ends.
   */
  reset(): void {
    this.cw(C.DEVICE_STATUS, 1, 0);
    for (let i = 0; i < RESET_POLL_LIMIT && this.cr(C.DEVICE_STATUS, 1) !== 0; i++) {
      // bounded: a device that never clears is reported by the next status read
    }
    this.selected = -1;
    this.configVectorSet = false;
    this.softIsr = 0;
    this.notifyAddr.length = 0;
    unbindDriver(this.location.scope, this.location.key); // the device forgot its driver
  }

  getStatus(): number {
    return this.cr(C.DEVICE_STATUS, 1);
  }

  setStatus(status: number): void {
    this.cw(C.DEVICE_STATUS, 1, status & 0xff);
  }

  /** Linux `vp_modern_get_features`: four exits. */
  readDeviceFeatures(): bigint {
    this.cw(C.DEVICE_FEATURE_SELECT, 4, 0);
    const lo = this.cr(C.DEVICE_FEATURE, 4);
    this.cw(C.DEVICE_FEATURE_SELECT, 4, 1);
    const hi = this.cr(C.DEVICE_FEATURE, 4);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** Linux `vp_modern_set_features`: four exits. */
  writeDriverFeatures(features: bigint): void {
    this.cw(C.DRIVER_FEATURE_SELECT, 4, 0);
    this.cw(C.DRIVER_FEATURE, 4, Number(features & 0xffff_ffffn));
    this.cw(C.DRIVER_FEATURE_SELECT, 4, 1);
    this.cw(C.DRIVER_FEATURE, 4, Number((features >> 32n) & 0xffff_ffffn));
  }

  /** num_queues, then queue_select + queue_size (0 for a queue that does not exist). */
  queueMaxSize(index: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= this.numQueues()) return 0;
    this.select(index);
    return this.cr(C.QUEUE_SIZE, 2);
  }

  /**
   * §4.1.5.1.3, like Linux `setup_vq` + `vp_modern_set_queue_enable`: select, check the
   * queue exists and is not enabled, write queue_size and the three 64-bit addresses,
   * check queue_notify_off against the notify area, map the MSI-X vector (and check it
   * reads back), then queue_enable = 1.
   */
  setupQueue(index: number, size: number, rings: RingAddresses): DriverError | undefined {
    const unavailable = (msg: string) =>
      new DriverError(VirtioErrorCode.QUEUE_UNAVAILABLE, msg, index);
    this.select(index);
    const max = this.cr(C.QUEUE_SIZE, 2);
    if (max === 0 || this.cr(C.QUEUE_ENABLE, 2) !== 0)
      return unavailable(`queue ${index} is unavailable or already enabled`);
    if ((max & (max - 1)) !== 0) return unavailable(`bad queue size ${max} (§2.7)`);
    if (this.irqMode !== "intx" && !this.configVectorSet) {
      this.cw(C.CONFIG_MSIX_VECTOR, 2, 0);
      if (this.cr(C.CONFIG_MSIX_VECTOR, 2) === VIRTIO_MSI_NO_VECTOR) {
        return unavailable(
          "the device refused MSI-X vector 0 for configuration changes (§4.1.5.1.2)",
        );
      }
      this.configVectorSet = true;
    }
    this.cw(C.QUEUE_SIZE, 2, size);
    this.cw64(C.QUEUE_DESC, rings.desc);
    this.cw64(C.QUEUE_DRIVER, rings.driver);
    this.cw64(C.QUEUE_DEVICE, rings.device);
    const off = this.cr(C.QUEUE_NOTIFY_OFF, 2);
    const at = off * this.notifyOffMultiplier;
    if (at + 2 > this.notifyArea.length) {
      return unavailable(
        `bad notification offset ${off} (x ${this.notifyOffMultiplier}) for queue ${index} > ${this.notifyArea.length}`,
      );
    }
    this.notifyAddr[index] = this.notifyArea.address + at;
    if (this.irqMode !== "intx") {
      const vector = this.queueVector(index);
      this.cw(C.QUEUE_MSIX_VECTOR, 2, vector);
      if (this.cr(C.QUEUE_MSIX_VECTOR, 2) === VIRTIO_MSI_NO_VECTOR) {
        return unavailable(
          `the device refused MSI-X vector ${vector} for queue ${index} (§4.1.5.1.2)`,
        );
      }
    }
    this.cw(C.QUEUE_ENABLE, 2, 1);
    return undefined;
  }

  /** The MSI-X vector queue `index` uses in the current mode (NO_VECTOR with INTx). */
  queueVector(index: number): number {
    if (this.irqMode === "msix-per-queue") return 1 + index;
    if (this.irqMode === "msix-shared") return 1;
    return VIRTIO_MSI_NO_VECTOR;
  }

  /** §4.1.5.2: writes the queue index to the queue's notify address (one exit). */
  notify(index: number): void {
    const addr = this.notifyAddr[index];
    if (addr === undefined) return; // not set up: nothing to notify
    this.bus.write(this.notifyArea.space, addr, 2, index);
  }

  readConfig(offset: number, size: ConfigAccessSize): number {
    const d = this.device;
    if (d === null || offset < 0 || offset + size > d.length) return 0;
    return this.bus.read(d.space, d.address + offset, size);
  }

  writeConfig(offset: number, size: ConfigAccessSize, value: number): void {
    const d = this.device;
    if (d === null || offset < 0 || offset + size > d.length) return;
    this.bus.write(d.space, d.address + offset, size, value);
  }

  configGeneration(): number {
    return this.cr(C.CONFIG_GENERATION, 1);
  }

  /**
   * With INTx: reads the ISR, which clears it (§4.1.4.5, Linux `vp_interrupt`): one exit.
   * With MSI-X: returns the bits collected by {@link handleMsixMessage}, no exit.
   */
  ackInterrupt(): number {
    if (this.irqMode !== "intx") {
      const v = this.softIsr;
      this.softIsr = 0;
      return v;
    }
    return this.bus.read(this.isr.space, this.isr.address, 1);
  }

  /**
   * Sets up MSI-X like Linux's `vp_find_vqs`: one vector for configuration changes plus
   * one per queue when the table is big enough, else one shared queue vector, else INTx.
   * Programs the table entries (address, data = `dataBase + vector`, unmasked) with the
   * function masked, then enables MSI-X and clears the function mask. Vectors are mapped
   * in the device by the next {@link setupQueue} calls (after the device reset).
   *
   * @returns the mode chosen
   */
  enableMsix(options: VirtioPciMsixOptions): VirtioPciIrqMode {
    const m = this.msix;
    if (m === null) {
      this.irqMode = "intx";
      return this.irqMode;
    }
    let vectors: number;
    let mode: VirtioPciIrqMode;
    if (options.perQueue !== false && m.tableSize >= 1 + options.numQueues) {
      vectors = 1 + options.numQueues;
      mode = "msix-per-queue";
    } else if (m.tableSize >= 2) {
      vectors = 2;
      mode = "msix-shared";
    } else {
      this.irqMode = "intx";
      return this.irqMode;
    }
    const ctlOff = m.capOffset + PCI_MSIX_FLAGS;
    const ctl = this.config.read(ctlOff, 2);
    this.config.write(ctlOff, 2, ctl | PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    const address = options.address ?? DEFAULT_MSI_ADDRESS;
    for (let v = 0; v < vectors; v++) {
      const e = m.tableAddress + v * PCI_MSIX_ENTRY_SIZE;
      this.bus.write("mmio", e + PCI_MSIX_ENTRY_LOWER_ADDR, 4, address % TWO_32);
      this.bus.write("mmio", e + PCI_MSIX_ENTRY_UPPER_ADDR, 4, Math.floor(address / TWO_32));
      this.bus.write("mmio", e + PCI_MSIX_ENTRY_DATA, 4, options.dataBase + v);
      this.bus.write("mmio", e + PCI_MSIX_ENTRY_VECTOR_CTRL, 4, 0);
    }
    this.config.write(ctlOff, 2, (ctl | PCI_MSIX_FLAGS_ENABLE) & ~PCI_MSIX_FLAGS_MASKALL);
    this.msiDataBase = options.dataBase;
    this.msiVectors = vectors;
    this.configVectorSet = false;
    this.irqMode = mode;
    return mode;
  }

  /** Masks (or unmasks) one MSI-X table entry (one exit). */
  maskMsixVector(vector: number, masked: boolean): void {
    if (this.msix === null || vector < 0 || vector >= this.msix.tableSize) return;
    const e = this.msix.tableAddress + vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL;
    this.bus.write("mmio", e, 4, masked ? PCI_MSIX_ENTRY_CTRL_MASKBIT : 0);
  }

  /** Turns MSI-X off in the capability; interrupts fall back to INTx. */
  disableMsix(): void {
    const m = this.msix;
    this.irqMode = "intx";
    this.softIsr = 0;
    if (m === null) return;
    const ctlOff = m.capOffset + PCI_MSIX_FLAGS;
    this.config.write(
      ctlOff,
      2,
      this.config.read(ctlOff, 2) & ~(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL),
    );
  }

  /**
   * The guest's interrupt controller received an MSI-X message with `data`: maps it to
   * this device's vector and records what it means (config vector 0 → configuration
   * change; a queue vector → used buffers).
   *
   * @returns the ISR-style bits it stands for, or 0 when the message is not this device's
   */
  handleMsixMessage(data: number): number {
    if (this.irqMode === "intx") return 0;
    const v = data - this.msiDataBase;
    if (!(v >= 0 && v < this.msiVectors)) return 0;
    const bits = v === 0 ? VIRTIO_PCI_ISR_CONFIG : VIRTIO_PCI_ISR_QUEUE;
    this.softIsr |= bits;
    return bits;
  }
}

/**
 * Linux `pci_find_capability` / `pci_find_next_capability`: walks the list from the
 * Capabilities Pointer (or after `from`), at most 48 entries, stopping at offsets below
 * 0x40 and at id 0xff.
 *
 * @returns the offset of the next capability with id `id`, or 0
 */
export function findCapability(config: PciConfigAccess, id: number, from: number): number {
  let pos: number;
  if (from === 0) {
    if (!(config.read(PciConfigOffset.STATUS, 2) & PCI_STATUS_CAP_LIST)) return 0;
    pos = config.read(PciConfigOffset.CAPABILITY_LIST, 1);
  } else {
    pos = config.read(from + 1, 1);
  }
  for (let ttl = PCI_FIND_CAP_TTL; ttl > 0; ttl--) {
    if (pos < PCI_CAP_START) break;
    pos &= ~3;
    const ent = config.read(pos, 2);
    const capId = ent & 0xff;
    if (capId === 0xff) break;
    if (capId === id) return pos;
    pos = ent >>> 8;
  }
  return 0;
}

/**
 * Linux `virtio_pci_find_capability`: the first vendor capability of `cfgType` whose BAR
 * is a real (0–5), implemented BAR. Structures with reserved BAR values are skipped.
 * Unlike Linux, the walk is bounded even when vendor capabilities form a cycle.
 *
 * @returns its offset, or 0
 */
export function findVirtioCap(
  config: PciConfigAccess,
  bars: readonly PciBarInfo[],
  cfgType: number,
): number {
  // Linux's loop restarts `pci_find_next_capability` from each match, so a list whose
  // vendor capabilities point back at each other would spin forever; bound it.
  let ttl = PCI_FIND_CAP_TTL;
  for (
    let pos = findCapability(config, PCI_CAP_ID_VNDR, 0);
    pos > 0 && ttl > 0;
    pos = findCapability(config, PCI_CAP_ID_VNDR, pos), ttl--
  ) {
    const type = config.read(pos + VirtioPciCapOffset.CFG_TYPE, 1);
    const bar = config.read(pos + VirtioPciCapOffset.BAR, 1);
    if (bar >= PCI_NUM_BARS) continue;
    if (type === cfgType && bars.some((b) => b.index === bar && b.size > 0)) return pos;
  }
  return 0;
}
