/**
 * `VirtioPciTransport`: the modern (non-transitional) virtio-pci transport (§4.1) over
 * any {@link VirtioDevice}, as a {@link PciFunction} an emulator hosts.
 *
 * - Configuration space: vendor 0x1AF4, device 0x1040 + virtio id, revision ≥ 1
 *   (§4.1.2), class code per device type, and the vendor capabilities COMMON_CFG,
 *   NOTIFY_CFG, ISR_CFG, DEVICE_CFG (when the device has configuration) and PCI_CFG
 *   (§4.1.4), plus MSI-X when asked for.
 * - Where the structures live is a {@link VirtioPciLayout}: the `"mem64"` preset puts
 *   them in a 64-bit memory BAR (as QEMU does), `"io"` in an I/O BAR (as v86 needs).
 * - Interrupts: INTx through the `IrqLine`, level high while ISR ≠ 0 (§4.1.4.5), or
 *   MSI-X per queue / config vector once the driver enabled it (§4.1.5.1.2).
 *
 * Every guest access is checked; bad ones are ignored (and counted in
 * `stats.ignored`), never thrown.
 *
 * @module
 */

import {
  type AccessSize,
  ADDRESS_LIMIT,
  allOnes,
  combineAddress,
  type GuestMemory,
  IrqLine,
  type MsiMessageHandler,
  MsixController,
  PCI_CAP_ID_VNDR,
  PCI_NUM_BARS,
  type PciBar,
  type PciBarKind,
  PciConfigOffset,
  PciConfigSpace,
  type PciFunction,
} from "@pvkit/platform";
import type { VirtioDevice, VirtioInterrupt } from "../device.js";
import {
  VirtioPciCommonCfg as C,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_LEN,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_CAP_PCI_CFG,
  VIRTIO_PCI_CFG_CAP_LEN,
  VIRTIO_PCI_COMMON_CFG_LEN,
  VIRTIO_PCI_ISR_CONFIG,
  VIRTIO_PCI_ISR_QUEUE,
  VIRTIO_PCI_MODERN_REVISION,
  VIRTIO_PCI_NOTIFY_CAP_LEN,
  VIRTIO_PCI_VENDOR_ID,
  VirtioPciCapOffset,
  virtioPciClassCode,
  virtioPciDeviceId,
} from "../pci-spec.js";
import { hasFeature, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_RING_RESET } from "../spec.js";
import { checkTransportOptions } from "./options.js";

/** §6: VIRTIO_F_NOTIF_CONFIG_DATA (bit 39): `queue_notify_data` is valid. */
const VIRTIO_F_NOTIF_CONFIG_DATA = 39;

/** Where one virtio structure lives: a BAR and an offset inside it. */
export interface VirtioPciRegion {
  /** BAR index (the lower slot of a 64-bit BAR). */
  readonly bar: number;
  /** Byte offset inside the BAR. */
  readonly offset: number;
}

/** One BAR a layout uses. */
export interface VirtioPciBarLayout {
  /** BAR index (0–5; a 64-bit BAR also takes `index + 1`). */
  readonly index: number;
  /** I/O, 32-bit memory or 64-bit memory. */
  readonly kind: PciBarKind;
  /** Bytes (power of two); default: the smallest that holds what is placed in it. */
  readonly size?: number;
  /** Memory BARs: prefetchable bit. */
  readonly prefetchable?: boolean;
  /** Power-on address (e.g. a fixed address for an emulator that cannot move memory BARs). */
  readonly address?: number;
}

/**
 * Where the transport puts its structures (§4.1.4). Emulators differ: v86 needs them in
 * an I/O BAR, others want a 64-bit memory BAR. MSI-X table and PBA must be in memory
 * BARs (PCI 3.0 §6.8.2.4).
 */
export interface VirtioPciLayout {
  /** The BARs used. */
  readonly bars: readonly VirtioPciBarLayout[];
  /** §4.1.4.3 common configuration (4-byte aligned). */
  readonly common: VirtioPciRegion;
  /** §4.1.4.4 notification structure (2-byte aligned). */
  readonly notify: VirtioPciRegion;
  /** §4.1.4.5 ISR status byte. */
  readonly isr: VirtioPciRegion;
  /** §4.1.4.6 device-specific configuration (4-byte aligned; unused when the device has none). */
  readonly device: VirtioPciRegion;
  /** §4.1.4.4 `notify_off_multiplier`: 0 or a power of two ≥ 2. */
  readonly notifyOffMultiplier: number;
  /** MSI-X table (8-byte aligned, memory BAR); needed when MSI-X is configured. */
  readonly msixTable?: VirtioPciRegion;
  /** MSI-X pending-bit array (8-byte aligned, memory BAR). */
  readonly msixPba?: VirtioPciRegion;
}

/** The built-in layouts. */
export type VirtioPciLayoutPreset = "mem64" | "io";

/** What a layout must hold. */
export interface VirtioPciLayoutShape {
  /** Number of virtqueues. */
  readonly numQueues: number;
  /** Bytes of device configuration. */
  readonly configSize: number;
  /** MSI-X table size (0 = no MSI-X). */
  readonly msixVectors: number;
}

function notifyBytes(numQueues: number, mult: number): number {
  // §4.1.4.4: cap.length ≥ queue_notify_off × multiplier + 2 for every queue; room for a
  // 32-bit write at the last slot.
  return mult === 0 ? 4 : (Math.max(numQueues, 1) - 1) * mult + 4;
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function msixPart(
  shape: VirtioPciLayoutShape,
  bars: VirtioPciBarLayout[],
): Partial<VirtioPciLayout> {
  if (shape.msixVectors <= 0) return {};
  bars.push({ index: 1, kind: "mem32" });
  const tableBytes = shape.msixVectors * 16;
  return {
    msixTable: { bar: 1, offset: 0 },
    msixPba: { bar: 1, offset: align(Math.max(0x800, tableBytes), 8) },
  };
}

/**
 * A built-in layout.
 *
 * - `"mem64"` (QEMU's arrangement): BAR 4, 64-bit prefetchable memory: common 0x0000,
 *   ISR 0x1000, device 0x2000, notify 0x3000 with multiplier 4.
 * - `"io"` (for v86, which hosts I/O BARs only): BAR 0, I/O: common 0x00, ISR 0x40,
 *   notify 0x44 (multiplier 4), device configuration right after the notify slots.
 *
 * Either way MSI-X (when `msixVectors > 0`) goes in BAR 1, 32-bit memory: table at 0, PBA at 0x800.
 */
export function virtioPciLayout(
  preset: VirtioPciLayoutPreset,
  shape: VirtioPciLayoutShape,
): VirtioPciLayout {
  const bars: VirtioPciBarLayout[] = [];
  if (preset === "io") {
    bars.push({ index: 0, kind: "io" });
    const notifyEnd = 0x44 + notifyBytes(shape.numQueues, 4);
    return {
      bars,
      common: { bar: 0, offset: 0x00 },
      isr: { bar: 0, offset: 0x40 },
      notify: { bar: 0, offset: 0x44 },
      device: { bar: 0, offset: align(notifyEnd, 4) },
      notifyOffMultiplier: 4,
      ...msixPart(shape, bars),
    };
  }
  bars.push({ index: 4, kind: "mem64", prefetchable: true });
  return {
    bars,
    common: { bar: 4, offset: 0x0000 },
    isr: { bar: 4, offset: 0x1000 },
    device: { bar: 4, offset: 0x2000 },
    notify: { bar: 4, offset: 0x3000 },
    notifyOffMultiplier: 4,
    ...msixPart(shape, bars),
  };
}

/** How to build a {@link VirtioPciTransport}. */
export interface VirtioPciTransportOptions {
  /** The device behind the transport. */
  readonly device: VirtioDevice;
  /** Guest memory its queues live in. */
  readonly memory: GuestMemory;
  /** The INTx line (default: a new line). */
  readonly irq?: IrqLine;
  /** MSI-X: table size and the callback the emulator turns into an interrupt message. */
  readonly msix?: { readonly vectors: number; readonly onMessage: MsiMessageHandler };
  /** Where the structures live (default `"mem64"`). */
  readonly layout?: VirtioPciLayoutPreset | VirtioPciLayout;
  /** Name for bus mappings and diagnostics. */
  readonly name?: string;
  /** PCI Revision ID (default 1, §4.1.2.1). */
  readonly revision?: number;
  /** Subsystem Vendor ID (default 0x1AF4). */
  readonly subsystemVendorId?: number;
  /** Subsystem ID (default 0x1100; §4.1.2.1 asks for ≥ 0x40). */
  readonly subsystemId?: number;
  /** Class code override (default per device type, see `virtioPciClassCode`). */
  readonly classCode?: number;
  /** Interrupt Pin (default 1 = INTA#). */
  readonly interruptPin?: number;
  /** Told why a guest access was ignored (diagnostics). */
  readonly onIgnored?: (reason: string) => void;
}

/** Counters of a {@link VirtioPciTransport}. */
export interface VirtioPciStats {
  /** Guest accesses ignored (bad width/offset, read-only field, out-of-range queue, …). */
  ignored: number;
  /** Queue notifications passed to the device. */
  notifications: number;
  /** ISR reads (each one clears it). */
  isrReads: number;
}

/** Offsets of the capabilities in configuration space (-1 when absent). */
export interface VirtioPciCapabilityOffsets {
  /** COMMON_CFG. */
  readonly common: number;
  /** NOTIFY_CFG. */
  readonly notify: number;
  /** ISR_CFG. */
  readonly isr: number;
  /** DEVICE_CFG (-1 when the device has no configuration). */
  readonly device: number;
  /** PCI_CFG. */
  readonly pciCfg: number;
  /** MSI-X (-1 without MSI-X). */
  readonly msix: number;
}

const enum Kind {
  COMMON = 1,
  NOTIFY = 2,
  ISR = 3,
  DEVICE = 4,
  MSIX_TABLE = 6,
  MSIX_PBA = 7,
}

interface Region {
  readonly start: number;
  readonly end: number;
  readonly kind: Kind;
}

// §4.1.4.3: the common configuration split into access units: each 16/32-bit field is a
// unit, a 64-bit field two 32-bit units (§4.1.3.1: "the driver MAY access each of the
// high and low 32-bit parts … independently").
const UNIT_START = new Uint8Array(VIRTIO_PCI_COMMON_CFG_LEN);
const UNIT_WIDTH = new Uint8Array(VIRTIO_PCI_COMMON_CFG_LEN);
const UNIT_READONLY = new Uint8Array(VIRTIO_PCI_COMMON_CFG_LEN);
{
  const units: Array<[number, number, boolean]> = [
    [C.DEVICE_FEATURE_SELECT, 4, false],
    [C.DEVICE_FEATURE, 4, true],
    [C.DRIVER_FEATURE_SELECT, 4, false],
    [C.DRIVER_FEATURE, 4, false],
    [C.CONFIG_MSIX_VECTOR, 2, false],
    [C.NUM_QUEUES, 2, true],
    [C.DEVICE_STATUS, 1, false],
    [C.CONFIG_GENERATION, 1, true],
    [C.QUEUE_SELECT, 2, false],
    [C.QUEUE_SIZE, 2, false],
    [C.QUEUE_MSIX_VECTOR, 2, false],
    [C.QUEUE_ENABLE, 2, false],
    [C.QUEUE_NOTIFY_OFF, 2, true],
    [C.QUEUE_DESC, 4, false],
    [C.QUEUE_DESC + 4, 4, false],
    [C.QUEUE_DRIVER, 4, false],
    [C.QUEUE_DRIVER + 4, 4, false],
    [C.QUEUE_DEVICE, 4, false],
    [C.QUEUE_DEVICE + 4, 4, false],
    [C.QUEUE_NOTIFY_DATA, 2, true],
    [C.QUEUE_RESET, 2, false],
  ];
  for (const [start, width, ro] of units) {
    for (let i = 0; i < width; i++) UNIT_START[start + i] = start;
    UNIT_WIDTH[start] = width;
    UNIT_READONLY[start] = ro ? 1 : 0;
  }
}

const SIZE_MASK = [0, 0xff, 0xffff, 0, 0xffff_ffff] as const;

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * The device side of modern virtio-pci.
 *
 * @example
 * ```ts
 * const rng = new VirtioRngDevice();
 * const pci = new VirtioPciTransport({ device: rng, memory, layout: "io" });
 * // v86: copy pci.configRead(…) into pci_space, route port accesses to pci.barRead/barWrite(0, …),
 * // and pci.irq.onChange(level => level ? pci_raise_irq(id) : pci_lower_irq(id)).
 * const host = new PciHost(bus); host.attach(pci, 3); // or pvkit's own host bridge
 * ```
 */
export class VirtioPciTransport implements PciFunction, VirtioInterrupt {
  /** Name used for mappings. */
  readonly name: string;
  /** The device. */
  readonly device: VirtioDevice;
  /** INTx line: high while ISR ≠ 0, MSI-X is off and Interrupt Disable is clear. */
  readonly irq: IrqLine;
  /** The configuration space. */
  readonly config: PciConfigSpace;
  /** The MSI-X controller, or null without MSI-X. */
  readonly msix: MsixController | null;
  /** The resolved layout. */
  readonly layout: VirtioPciLayout;
  /** Where each capability is. */
  readonly capabilities: VirtioPciCapabilityOffsets;
  /** Counters. */
  readonly stats: VirtioPciStats = { ignored: 0, notifications: 0, isrReads: 0 };
  /** Why the last ignored guest access was ignored, or `null` (see `onIgnored`). */
  lastIgnored: string | null = null;

  private readonly onIgnored: ((reason: string) => void) | undefined;
  private readonly regions: (Region[] | undefined)[] = [
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
  ];
  private readonly numQueues: number;
  private isrStatus = 0;
  private deviceFeatureSelect = 0;
  private driverFeatureSelect = 0;
  private queueSelect = 0;
  private configVector = VIRTIO_MSI_NO_VECTOR;
  private readonly queueVectors: Uint16Array;
  private readonly addrHalves: Uint32Array;
  private readonly addrWritten: Uint8Array;
  private readonly latch = new Uint8Array(VIRTIO_PCI_COMMON_CFG_LEN);
  private readonly latched = new Uint8Array(VIRTIO_PCI_COMMON_CFG_LEN);

  /**
   * @throws TypeError when `options`, `device` or `memory` is missing or of the wrong
   *   type, or `irq` is given but not an IrqLine (the message names the option, the type
   *   expected and the value given); Error when the layout is inconsistent (a host
   *   configuration mistake)
   */
  constructor(options: VirtioPciTransportOptions) {
    checkTransportOptions("new VirtioPciTransport", options, false);
    const device = options.device;
    this.device = device;
    this.numQueues = device.numQueues;
    this.name = options.name ?? `virtio-pci-${device.deviceId}`;
    this.irq = options.irq ?? new IrqLine(this.name);
    this.onIgnored = options.onIgnored;
    const vectors = options.msix?.vectors ?? 0;
    const shape = {
      numQueues: device.numQueues,
      configSize: device.configSize,
      msixVectors: vectors,
    };
    const layout =
      typeof options.layout === "object"
        ? options.layout
        : virtioPciLayout(options.layout ?? "mem64", shape);
    this.layout = layout;
    this.queueVectors = new Uint16Array(this.numQueues).fill(VIRTIO_MSI_NO_VECTOR);
    this.addrHalves = new Uint32Array(this.numQueues * 6);
    this.addrWritten = new Uint8Array(this.numQueues);

    const cfg = new PciConfigSpace({
      vendorId: VIRTIO_PCI_VENDOR_ID,
      deviceId: virtioPciDeviceId(device.deviceId),
      revision: options.revision ?? VIRTIO_PCI_MODERN_REVISION,
      classCode: options.classCode ?? virtioPciClassCode(device.deviceId),
      subsystemVendorId: options.subsystemVendorId ?? VIRTIO_PCI_VENDOR_ID,
      subsystemId: options.subsystemId ?? 0x1100,
      interruptPin: options.interruptPin ?? 1,
    });
    this.config = cfg;

    // Regions, checked and sized.
    const mult = layout.notifyOffMultiplier;
    if (!(mult === 0 || (isPow2(mult) && mult >= 2))) {
      throw new Error(`notify_off_multiplier ${mult} must be 0 or a power of two ≥ 2 (§4.1.4.4)`);
    }
    const wanted: Array<[VirtioPciRegion, number, Kind, number]> = [
      [layout.common, VIRTIO_PCI_COMMON_CFG_LEN, Kind.COMMON, 4],
      [layout.notify, notifyBytes(this.numQueues, mult), Kind.NOTIFY, 2],
      [layout.isr, 1, Kind.ISR, 1],
    ];
    if (device.configSize > 0) wanted.push([layout.device, device.configSize, Kind.DEVICE, 4]);
    let msix: MsixController | null = null;
    if (options.msix !== undefined) {
      msix = new MsixController(options.msix.vectors, options.msix.onMessage);
      if (layout.msixTable === undefined || layout.msixPba === undefined) {
        throw new Error("MSI-X needs msixTable and msixPba in the layout");
      }
      wanted.push([layout.msixTable, msix.tableBytes, Kind.MSIX_TABLE, 8]);
      wanted.push([layout.msixPba, msix.pbaBytes, Kind.MSIX_PBA, 8]);
    }
    this.msix = msix;
    for (const b of layout.bars) {
      if (!Number.isInteger(b.index) || b.index < 0 || b.index >= PCI_NUM_BARS)
        throw new Error(`BAR index ${b.index} is not 0–5`);
      this.regions[b.index] = [];
    }
    for (const [where, length, kind, alignment] of wanted) {
      const bar = layout.bars.find((b) => b.index === where.bar);
      if (bar === undefined)
        throw new Error(
          `structure ${kind} is placed in BAR ${where.bar}, which the layout does not declare`,
        );
      if (!Number.isInteger(where.offset) || where.offset < 0 || where.offset % alignment !== 0) {
        throw new Error(
          `structure ${kind} at offset ${where.offset} is not ${alignment}-byte aligned`,
        );
      }
      if ((kind === Kind.MSIX_TABLE || kind === Kind.MSIX_PBA) && bar.kind === "io") {
        throw new Error("the MSI-X table and PBA must be in a memory BAR (PCI 3.0 §6.8.2.4)");
      }
      const list = this.regions[where.bar];
      if (list === undefined) throw new Error(`BAR ${where.bar} is not declared`);
      const start = where.offset;
      const end = start + length;
      for (const r of list) {
        if (start < r.end && r.start < end)
          throw new Error(`structures ${kind} and ${r.kind} overlap in BAR ${where.bar}`);
      }
      list.push({ start, end, kind });
    }
    for (const b of layout.bars) {
      const list = this.regions[b.index] ?? [];
      const need = list.reduce((m, r) => Math.max(m, r.end), 0);
      const size = b.size ?? Math.max(nextPow2(need), b.kind === "io" ? 4 : 0x1000);
      if (size < need)
        throw new Error(`BAR ${b.index} (${size} bytes) is too small for its structures (${need})`);
      cfg.defineBar(b.index, {
        kind: b.kind,
        size,
        ...(b.prefetchable === undefined ? {} : { prefetchable: b.prefetchable }),
        ...(b.address === undefined ? {} : { address: b.address }),
      });
    }

    // §4.1.4: the vendor capabilities.
    const common = this.addVirtioCap(
      VIRTIO_PCI_CAP_COMMON_CFG,
      layout.common,
      VIRTIO_PCI_COMMON_CFG_LEN,
      VIRTIO_PCI_CAP_LEN,
    );
    const notify = this.addVirtioCap(
      VIRTIO_PCI_CAP_NOTIFY_CFG,
      layout.notify,
      notifyBytes(this.numQueues, mult),
      VIRTIO_PCI_NOTIFY_CAP_LEN,
    );
    cfg.setU32(notify + VirtioPciCapOffset.NOTIFY_OFF_MULTIPLIER, mult);
    const isr = this.addVirtioCap(VIRTIO_PCI_CAP_ISR_CFG, layout.isr, 1, VIRTIO_PCI_CAP_LEN);
    const dev =
      device.configSize > 0
        ? this.addVirtioCap(
            VIRTIO_PCI_CAP_DEVICE_CFG,
            layout.device,
            device.configSize,
            VIRTIO_PCI_CAP_LEN,
          )
        : -1;
    // §4.1.4.9: the PCI configuration access window: bar, offset, length and data writable.
    // Points at the common configuration until the driver aims it elsewhere.
    const pciCfg = this.addVirtioCap(
      VIRTIO_PCI_CAP_PCI_CFG,
      { bar: layout.common.bar, offset: 0 },
      0,
      VIRTIO_PCI_CFG_CAP_LEN,
    );
    cfg.setWriteMask(pciCfg + VirtioPciCapOffset.BAR, 1, 0xff);
    cfg.setWriteMask(pciCfg + VirtioPciCapOffset.OFFSET, 4, 0xffff_ffff);
    cfg.setWriteMask(pciCfg + VirtioPciCapOffset.LENGTH, 4, 0xffff_ffff);
    cfg.setWriteMask(pciCfg + VirtioPciCapOffset.PCI_CFG_DATA, 4, 0xffff_ffff);
    cfg.hookRead(pciCfg + VirtioPciCapOffset.PCI_CFG_DATA, 4, () => this.pciCfgAccess(false));
    cfg.hookWrite(pciCfg + VirtioPciCapOffset.PCI_CFG_DATA, 4, () => this.pciCfgAccess(true));
    let msixCap = -1;
    if (msix !== null && layout.msixTable !== undefined && layout.msixPba !== undefined) {
      msixCap = msix.install(cfg, layout.msixTable, layout.msixPba);
      msix.onChange(() => this.updateIntx());
    }
    cfg.hookWrite(PciConfigOffset.COMMAND, 2, () => this.updateIntx());
    this.capabilities = { common, notify, isr, device: dev, pciCfg, msix: msixCap };

    device.bind(options.memory, this);
  }

  private addVirtioCap(
    type: number,
    where: VirtioPciRegion,
    length: number,
    capLen: number,
  ): number {
    const cfg = this.config;
    const p = cfg.addCapability(PCI_CAP_ID_VNDR, capLen);
    cfg.setU8(p + VirtioPciCapOffset.CAP_LEN, capLen);
    cfg.setU8(p + VirtioPciCapOffset.CFG_TYPE, type);
    cfg.setU8(p + VirtioPciCapOffset.BAR, where.bar);
    cfg.setU8(p + VirtioPciCapOffset.ID, 0);
    cfg.setU32(p + VirtioPciCapOffset.OFFSET, where.offset);
    cfg.setU32(p + VirtioPciCapOffset.LENGTH, length);
    return p;
  }

  /** The six BAR slots. */
  get bars(): readonly (PciBar | undefined)[] {
    return this.config.bars;
  }

  /** Interrupt Pin. */
  get interruptPin(): number {
    return this.config.getU8(PciConfigOffset.INTERRUPT_PIN);
  }

  /** The ISR status byte (§4.1.4.5), without clearing it. */
  get isr(): number {
    return this.isrStatus;
  }

  /** The MSI-X vector mapped to configuration changes (NO_VECTOR when none). */
  get configMsixVector(): number {
    return this.configVector;
  }

  /** The MSI-X vector mapped to queue `index` (NO_VECTOR when none or no such queue). */
  queueMsixVector(index: number): number {
    return this.queueVectors[index] ?? VIRTIO_MSI_NO_VECTOR;
  }

  private ignore(reason: string): void {
    this.stats.ignored++;
    this.lastIgnored = reason;
    try {
      this.onIgnored?.(reason);
    } catch {
      // Diagnostics must not turn a guest access into a host exception.
    }
  }

  // ── PciFunction ─────────────────────────────────────────────────────────────────

  configRead(offset: number, size: AccessSize): number {
    return this.config.read(offset, size);
  }

  configWrite(offset: number, size: AccessSize, value: number): void {
    this.config.write(offset, size, value);
  }

  private region(bar: number, offset: number, size: AccessSize): Region | null {
    if (!(size === 1 || size === 2 || size === 4) || !Number.isInteger(offset) || offset < 0) {
      this.ignore(
        `${size}-byte access at BAR ${bar} offset ${Number.isInteger(offset) ? `0x${offset.toString(16)}` : offset}: virtio-pci structures take 1-, 2- or 4-byte accesses at non-negative offsets (§4.1.3.1)`,
      );
      return null;
    }
    const list = this.regions[bar];
    if (list === undefined) {
      this.ignore(`access to BAR ${bar}, which does not exist`);
      return null;
    }
    if (offset % size !== 0) {
      this.ignore(
        `unaligned ${size}-byte access at BAR ${bar} offset 0x${offset.toString(16)} (§4.1.3.1)`,
      );
      return null;
    }
    for (const r of list) {
      if (offset >= r.start && offset + size <= r.end) return r;
      if (offset < r.end && r.start < offset + size) break;
    }
    this.ignore(`access at BAR ${bar} offset 0x${offset.toString(16)} outside any structure`);
    return null;
  }

  barRead(bar: number, offset: number, size: AccessSize): number {
    const r = this.region(bar, offset, size);
    if (r === null) return this.regions[bar] === undefined ? allOnes(size) : 0;
    const off = offset - r.start;
    switch (r.kind) {
      case Kind.COMMON:
        return this.readCommon(off, size);
      case Kind.NOTIFY:
        return 0; // §4.1.4.4: the notification area is write-only
      case Kind.ISR:
        return this.readIsr(off);
      case Kind.DEVICE:
        return this.device.readConfig(off, size) >>> 0;
      case Kind.MSIX_TABLE:
        return this.msix?.readTable(off, size) ?? 0;
      case Kind.MSIX_PBA:
        return this.msix?.readPba(off, size) ?? 0;
    }
  }

  barWrite(bar: number, offset: number, size: AccessSize, value: number): void {
    const r = this.region(bar, offset, size);
    if (r === null) return;
    const off = offset - r.start;
    value = (value & SIZE_MASK[size]) >>> 0;
    switch (r.kind) {
      case Kind.COMMON:
        this.writeCommon(off, size, value);
        return;
      case Kind.NOTIFY:
        this.writeNotify(off, value);
        return;
      case Kind.ISR:
        this.ignore("write to the read-only ISR status (§4.1.4.5)");
        return;
      case Kind.DEVICE:
        this.device.writeConfig(off, size, value);
        return;
      case Kind.MSIX_TABLE:
        this.msix?.writeTable(off, size, value);
        return;
      case Kind.MSIX_PBA:
        this.ignore("write to the read-only MSI-X PBA");
        return;
    }
  }

  // ── §4.1.4.3 common configuration ───────────────────────────────────────────────

  private readUnit(start: number): number {
    const d = this.device;
    const i = this.queueSelect;
    const q = d.queues[i];
    switch (start) {
      case C.DEVICE_FEATURE_SELECT:
        return this.deviceFeatureSelect;
      case C.DEVICE_FEATURE:
        return d.readDeviceFeatures(this.deviceFeatureSelect) >>> 0;
      case C.DRIVER_FEATURE_SELECT:
        return this.driverFeatureSelect;
      case C.DRIVER_FEATURE:
        return d.readDriverFeatures(this.driverFeatureSelect) >>> 0;
      case C.CONFIG_MSIX_VECTOR:
        return this.configVector;
      case C.NUM_QUEUES:
        return this.numQueues;
      case C.DEVICE_STATUS:
        return d.status & 0xff;
      case C.CONFIG_GENERATION:
        return d.configGeneration & 0xff;
      case C.QUEUE_SELECT:
        return i;
      case C.QUEUE_SIZE:
        return q === undefined ? 0 : q.size; // §4.1.4.3.1: 0 = queue unavailable
      case C.QUEUE_MSIX_VECTOR:
        return this.queueVectors[i] ?? VIRTIO_MSI_NO_VECTOR;
      case C.QUEUE_ENABLE:
        return q?.ready ? 1 : 0;
      case C.QUEUE_NOTIFY_OFF:
        return q === undefined ? 0 : i;
      case C.QUEUE_NOTIFY_DATA:
        return q !== undefined && hasFeature(d.deviceFeatures, VIRTIO_F_NOTIF_CONFIG_DATA) ? i : 0;
      case C.QUEUE_RESET:
        return 0; // queue resets complete synchronously (§4.1.4.3.2)
      default: // the six address halves
        return q === undefined ? 0 : (this.addrHalves[i * 6 + ((start - C.QUEUE_DESC) >>> 2)] ?? 0);
    }
  }

  private readCommon(off: number, size: AccessSize): number {
    const start = UNIT_START[off]!;
    const width = UNIT_WIDTH[start]!;
    if (off === start && size === width) return this.readUnit(start) >>> 0;
    if (off + size <= start + width)
      return ((this.readUnit(start) >>> (8 * (off - start))) & SIZE_MASK[size]) >>> 0;
    // A read spanning fields (the driver should not, §4.1.3.1): answer byte by byte.
    let v = 0;
    for (let b = off + size - 1; b >= off; b--) {
      const s = UNIT_START[b]!;
      v = v * 256 + ((this.readUnit(s) >>> (8 * (b - s))) & 0xff);
    }
    return v >>> 0;
  }

  private writeCommon(off: number, size: AccessSize, value: number): void {
    const start = UNIT_START[off]!;
    const width = UNIT_WIDTH[start]!;
    if (off + size > start + width) {
      this.ignore(`${size}-byte write at common_cfg 0x${off.toString(16)} spans fields (§4.1.3.1)`);
      return;
    }
    if (UNIT_READONLY[start]) {
      this.ignore(`write to read-only common_cfg field at 0x${start.toString(16)} (§4.1.4.3)`);
      return;
    }
    if (size === width) {
      for (let i = 0; i < width; i++) this.latched[start + i] = 0;
      this.commitUnit(start, value);
      return;
    }
    // A narrower write (v86 splits a 16-bit MMIO write into two byte writes): collect the
    // bytes and commit the field when all of them arrived.
    for (let i = 0; i < size; i++) {
      this.latch[off + i] = (value >>> (8 * i)) & 0xff;
      this.latched[off + i] = 1;
    }
    let assembled = 0;
    for (let i = width - 1; i >= 0; i--) {
      if (!this.latched[start + i]) return;
      assembled = assembled * 256 + this.latch[start + i]!;
    }
    for (let i = 0; i < width; i++) this.latched[start + i] = 0;
    this.commitUnit(start, assembled >>> 0);
  }

  private mapVector(value: number, what: string): number {
    if (value === VIRTIO_MSI_NO_VECTOR) return VIRTIO_MSI_NO_VECTOR;
    const m = this.msix;
    if (m !== null && value < m.vectors) return value;
    // §4.1.5.1.2.1: a mapping that cannot be satisfied reads back as NO_VECTOR.
    this.ignore(`${what} vector ${value} is not in the MSI-X table (${m?.vectors ?? 0} entries)`);
    return VIRTIO_MSI_NO_VECTOR;
  }

  private commitUnit(start: number, value: number): void {
    const d = this.device;
    const i = this.queueSelect;
    const q = d.queues[i];
    switch (start) {
      case C.DEVICE_FEATURE_SELECT:
        this.deviceFeatureSelect = value;
        return;
      case C.DRIVER_FEATURE_SELECT:
        this.driverFeatureSelect = value;
        return;
      case C.DRIVER_FEATURE:
        d.writeDriverFeatures(this.driverFeatureSelect, value);
        return;
      case C.CONFIG_MSIX_VECTOR:
        this.configVector = this.mapVector(value, "config_msix_vector");
        return;
      case C.DEVICE_STATUS:
        d.setStatus(value & 0xff);
        // §4.1.4.3.2 / §2.4: writing 0 resets the device; the transport forgets everything too.
        if ((value & 0xff) === 0) this.resetTransport();
        return;
      case C.QUEUE_SELECT:
        // Stored as written: an absent queue reads queue_size 0 (§4.1.4.3.1).
        this.queueSelect = value & 0xffff;
        return;
      case C.QUEUE_RESET:
        this.writeQueueReset(value);
        return;
    }
    // Per-queue fields.
    if (q === undefined) {
      this.ignore(
        `common_cfg 0x${start.toString(16)} written with queue_select ${i} out of range (${this.numQueues} queues)`,
      );
      return;
    }
    switch (start) {
      case C.QUEUE_MSIX_VECTOR:
        this.queueVectors[i] = this.mapVector(value, `queue ${i} msix`);
        return;
      case C.QUEUE_ENABLE:
        this.writeQueueEnable(i, value);
        return;
    }
    if (q.ready) {
      this.ignore(
        `queue ${i} field 0x${start.toString(16)} written while the queue is enabled (§4.1.4.3.2)`,
      );
      return;
    }
    if (start === C.QUEUE_SIZE) {
      // queue_size is a plain read-write register (§4.1.4.3: "can be modified by the
      // driver"): it stores and reads back what the driver wrote, like virtio-mmio's
      // QueueNum (§4.2.2). The value is validated when the queue is enabled: a size that
      // is 0, not a power of two (§2.7) or above the maximum the device offered makes
      // queue_enable put the device in DEVICE_NEEDS_RESET (§2.1.2) with the queue left
      // disabled — exactly what virtio-mmio does on QueueReady. Dropping the write instead
      // (the old behaviour) made the device enable a ring of the *old* size under a driver
      // that laid out rings for the new one: both sides would then read each other's
      // rings at the wrong offsets without any error. Linux writes the size, then the
      // ring addresses, then enables (vp_modern_set_queue_size / vm_setup_vq) and never
      // reads the size back, so only NEEDS_RESET tells it something went wrong.
      q.size = value & 0xffff;
      return;
    }
    // Address halves.
    const k = (start - C.QUEUE_DESC) >>> 2; // 0..5: desc lo/hi, driver lo/hi, device lo/hi
    const base = i * 6;
    this.addrHalves[base + k] = value;
    this.addrWritten[i] = this.addrWritten[i]! | (1 << (k >>> 1));
    const pair = base + (k & ~1);
    const addr = combineAddress(this.addrHalves[pair]!, this.addrHalves[pair + 1]!);
    const a = addr < 0 ? ADDRESS_LIMIT : addr; // ≥ 2^53: outside any guest memory, refused at enable
    if (k < 2) q.descAddr = a;
    else if (k < 4) q.driverAddr = a;
    else q.deviceAddr = a;
  }

  private writeQueueEnable(i: number, value: number): void {
    const q = this.device.queues[i]!;
    if (value !== 1) {
      this.ignore(`queue ${i}: queue_enable written with ${value}; only 1 is allowed (§4.1.4.3.2)`);
      return;
    }
    if (q.ready) {
      this.ignore(`queue ${i} is already enabled`);
      return;
    }
    if (this.addrWritten[i] !== 0b111) {
      this.ignore(
        `queue ${i} enabled before its descriptor, driver and device addresses were written (§4.1.5.1.3)`,
      );
      return;
    }
    // The device checks size, alignment and ranges; a bad ring makes it NEEDS_RESET.
    this.device.enableQueue(i);
  }

  private writeQueueReset(value: number): void {
    const i = this.queueSelect;
    const d = this.device;
    if (d.queues[i] === undefined) {
      this.ignore(`queue_reset with queue_select ${i} out of range`);
      return;
    }
    // §4.1.4.3: the field exists only once VIRTIO_F_RING_RESET has been negotiated.
    if (
      !(d.status & VIRTIO_CONFIG_S_FEATURES_OK) ||
      !hasFeature(d.driverFeatures, VIRTIO_F_RING_RESET)
    ) {
      this.ignore("queue_reset written without VIRTIO_F_RING_RESET negotiated (§4.1.4.3)");
      return;
    }
    if (value !== 1) {
      this.ignore(`queue_reset written with ${value}; only 1 resets`);
      return;
    }
    d.resetQueue(i);
    this.clearQueue(i);
  }

  private clearQueue(i: number): void {
    this.addrHalves.fill(0, i * 6, i * 6 + 6);
    this.addrWritten[i] = 0;
    this.queueVectors[i] = VIRTIO_MSI_NO_VECTOR;
  }

  private resetTransport(): void {
    this.deviceFeatureSelect = 0;
    this.driverFeatureSelect = 0;
    this.queueSelect = 0;
    this.configVector = VIRTIO_MSI_NO_VECTOR;
    this.queueVectors.fill(VIRTIO_MSI_NO_VECTOR);
    this.addrHalves.fill(0);
    this.addrWritten.fill(0);
    this.latched.fill(0);
    this.isrStatus = 0;
    this.msix?.clearPending();
    this.updateIntx();
  }

  // ── §4.1.4.4 notifications, §4.1.4.5 ISR ────────────────────────────────────────

  private writeNotify(off: number, value: number): void {
    const mult = this.layout.notifyOffMultiplier;
    let index: number;
    if (mult === 0) {
      index = value & 0xffff; // one shared address: the value is the queue index (§4.1.5.2)
    } else {
      if (off % mult !== 0) {
        // E.g. the high byte of a 16-bit write split in two: the low byte already notified.
        this.ignore(`notify write at 0x${off.toString(16)}, not at a queue's notify address`);
        return;
      }
      index = off / mult;
    }
    if (index >= this.numQueues) {
      this.ignore(`notification for queue ${index}, which does not exist`);
      return;
    }
    this.stats.notifications++;
    this.device.notifyQueue(index);
  }

  private readIsr(off: number): number {
    if (off !== 0) return 0;
    // §4.1.4.5: reading the ISR status clears it and de-asserts INTx.
    const v = this.isrStatus;
    this.stats.isrReads++;
    this.isrStatus = 0;
    this.updateIntx();
    return v;
  }

  private updateIntx(): void {
    const pending = this.isrStatus !== 0;
    this.config.setInterruptStatus(pending);
    const msixOn = this.msix?.enabled ?? false;
    // PCI 3.0 §6.8.2: with MSI-X enabled the function must not use INTx.
    this.irq.set(pending && !msixOn && !this.config.intxDisabled);
  }

  // ── §4.1.4.9 PCI configuration access ───────────────────────────────────────────

  private pciCfgAccess(write: boolean): void {
    const cfg = this.config;
    const p = this.capabilities.pciCfg;
    const bar = cfg.getU8(p + VirtioPciCapOffset.BAR);
    const offset = cfg.getU32(p + VirtioPciCapOffset.OFFSET);
    const length = cfg.getU32(p + VirtioPciCapOffset.LENGTH);
    const data = p + VirtioPciCapOffset.PCI_CFG_DATA;
    if (!(length === 1 || length === 2 || length === 4) || offset % length !== 0) {
      this.ignore(`PCI_CFG window access with length ${length} at offset ${offset} (§4.1.4.9.1)`);
      return;
    }
    if (write) {
      this.barWrite(bar, offset, length, cfg.getU32(data) & SIZE_MASK[length]);
      return;
    }
    const v = this.barRead(bar, offset, length);
    for (let i = 0; i < length; i++) cfg.setU8(data + i, (v >>> (8 * i)) & 0xff);
  }

  // ── VirtioInterrupt ─────────────────────────────────────────────────────────────

  /** §4.1.5.3: a used-buffer notification for `queue`: its MSI-X vector, or ISR bit 0 + INTx. */
  signalUsed(queue: number): void {
    const m = this.msix;
    if (m?.enabled) {
      const v = this.queueVectors[queue] ?? VIRTIO_MSI_NO_VECTOR;
      if (v !== VIRTIO_MSI_NO_VECTOR) m.signal(v);
      return;
    }
    this.isrStatus |= VIRTIO_PCI_ISR_QUEUE;
    this.updateIntx();
  }

  /** §4.1.5.4: a configuration-change notification: config vector, or ISR bit 1 + INTx. */
  signalConfig(): void {
    const m = this.msix;
    if (m?.enabled) {
      if (this.configVector !== VIRTIO_MSI_NO_VECTOR) m.signal(this.configVector);
      return;
    }
    this.isrStatus |= VIRTIO_PCI_ISR_CONFIG;
    this.updateIntx();
  }

  /**
   * A PCI function-level reset (system reset, not a virtio reset): header and BARs back
   * to power-on values, MSI-X disabled and masked, the PCI_CFG window cleared, and the
   * device reset.
   */
  pciReset(): void {
    this.config.reset();
    this.msix?.reset();
    const p = this.capabilities.pciCfg;
    this.config.setU8(p + VirtioPciCapOffset.BAR, this.layout.common.bar);
    this.config.setU32(p + VirtioPciCapOffset.OFFSET, 0);
    this.config.setU32(p + VirtioPciCapOffset.LENGTH, 0);
    this.config.setU32(p + VirtioPciCapOffset.PCI_CFG_DATA, 0);
    this.device.reset();
    this.resetTransport();
  }
}
