/**
 * PCI function helpers: a type-0 configuration space with write masks and a capability
 * list, BAR descriptors (I/O, 32-bit and 64-bit memory) with the standard sizing
 * behaviour, an MSI-X controller (table, PBA, masking, pending bits), the
 * {@link PciFunction} interface an emulator hosts, and a small {@link PciHost} (config
 * mechanism #1 at 0xCF8/0xCFC, ECAM, BAR windows kept mapped on a {@link Bus}).
 *
 * The guest-side helpers at the end ({@link PciConfigPortAccess}, {@link probePciBars},
 * {@link assignPciBars}) do what firmware and an OS's PCI core do before a driver runs.
 *
 * References: PCI Local Bus Specification 3.0 (§6.1 configuration header, §6.2.5 base
 * address registers, §6.7 capabilities list, §6.8.2 MSI-X); PCI Express Base 4.0 §7.2.2
 * (ECAM). Register names keep Linux's `pci_regs.h` spelling.
 *
 * Guest input never throws: bad offsets, widths and alignments read as all-ones and are
 * dropped on write, and are counted in `rejected`.
 *
 * @module
 */

import { type AccessSize, allOnes, type Bus, type BusMapping, type IoHandler } from "./bus.js";
import type { IrqLine } from "./irq.js";

// ── PCI 3.0 §6.1: type-0 configuration header ──────────────────────────────────────

/** PCI 3.0 §6.1: byte offsets of the type-0 configuration header fields. */
export const PciConfigOffset = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION_ID: 0x08,
  /** Programming interface (low byte of the 24-bit class code). */
  CLASS_PROG: 0x09,
  /** Sub-class (middle byte of the class code). */
  CLASS_DEVICE: 0x0a,
  /** Base class (high byte of the class code). */
  CLASS: 0x0b,
  CACHE_LINE_SIZE: 0x0c,
  LATENCY_TIMER: 0x0d,
  HEADER_TYPE: 0x0e,
  BIST: 0x0f,
  BASE_ADDRESS_0: 0x10,
  CARDBUS_CIS: 0x28,
  SUBSYSTEM_VENDOR_ID: 0x2c,
  SUBSYSTEM_ID: 0x2e,
  ROM_ADDRESS: 0x30,
  CAPABILITY_LIST: 0x34,
  INTERRUPT_LINE: 0x3c,
  INTERRUPT_PIN: 0x3d,
  MIN_GNT: 0x3e,
  MAX_LAT: 0x3f,
} as const;

/** PCI 3.0 §6.1: size of conventional configuration space. */
export const PCI_CONFIG_SPACE_SIZE = 256;
/** PCI 3.0 §6.7: capabilities start at or above this offset (the header ends at 0x3f). */
export const PCI_CAP_START = 0x40;
/** PCI 3.0 §6.2.5: number of BARs in a type-0 header. */
export const PCI_NUM_BARS = 6;

/** PCI 3.0 §6.2.2: Command register: respond to I/O space accesses. */
export const PCI_COMMAND_IO = 0x0001;
/** PCI 3.0 §6.2.2: Command register: respond to memory space accesses. */
export const PCI_COMMAND_MEMORY = 0x0002;
/** PCI 3.0 §6.2.2: Command register: bus master (DMA and MSI/MSI-X messages). */
export const PCI_COMMAND_MASTER = 0x0004;
/** PCI 3.0 §6.2.2: Command register: parity error response. */
export const PCI_COMMAND_PARITY = 0x0040;
/** PCI 3.0 §6.2.2: Command register: SERR# enable. */
export const PCI_COMMAND_SERR = 0x0100;
/** PCI 3.0 §6.2.2: Command register: INTx emulation disable. */
export const PCI_COMMAND_INTX_DISABLE = 0x0400;

/** PCI 3.0 §6.2.3: Status register: INTx is asserted by the function (read-only). */
export const PCI_STATUS_INTERRUPT = 0x0008;
/** PCI 3.0 §6.2.3: Status register: the capability list pointer at 0x34 is valid. */
export const PCI_STATUS_CAP_LIST = 0x0010;
/** PCI 3.0 §6.2.3: the write-1-to-clear error bits of the Status register. */
export const PCI_STATUS_ERROR_BITS = 0xf900;

/** PCI 3.0 §6.2.5.1: BAR bit 0: the BAR decodes I/O space. */
export const PCI_BASE_ADDRESS_SPACE_IO = 0x1;
/** PCI 3.0 §6.2.5.1: memory BAR type field value for a 64-bit BAR. */
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4;
/** PCI 3.0 §6.2.5.1: memory BAR prefetchable bit. */
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8;

/** PCI Code and ID Assignment: capability id of a vendor-specific capability. */
export const PCI_CAP_ID_VNDR = 0x09;
/** PCI Code and ID Assignment: capability id of MSI-X. */
export const PCI_CAP_ID_MSIX = 0x11;

/** PCI 3.0 §6.8.2.3: offset of Message Control inside the MSI-X capability. */
export const PCI_MSIX_FLAGS = 2;
/** PCI 3.0 §6.8.2.3: Message Control: table size − 1. */
export const PCI_MSIX_FLAGS_QSIZE = 0x07ff;
/** PCI 3.0 §6.8.2.3: Message Control: function mask. */
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;
/** PCI 3.0 §6.8.2.3: Message Control: MSI-X enable. */
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
/** PCI 3.0 §6.8.2.4: offset of the Table Offset/BIR dword. */
export const PCI_MSIX_TABLE = 4;
/** PCI 3.0 §6.8.2.5: offset of the PBA Offset/BIR dword. */
export const PCI_MSIX_PBA = 8;
/** PCI 3.0 §6.8.2: length of the MSI-X capability. */
export const PCI_MSIX_CAP_LEN = 12;
/** PCI 3.0 §6.8.2.6: bytes per MSI-X table entry. */
export const PCI_MSIX_ENTRY_SIZE = 16;
/** PCI 3.0 §6.8.2.6: entry offset of Message Address (low dword). */
export const PCI_MSIX_ENTRY_LOWER_ADDR = 0;
/** PCI 3.0 §6.8.2.7: entry offset of Message Upper Address. */
export const PCI_MSIX_ENTRY_UPPER_ADDR = 4;
/** PCI 3.0 §6.8.2.8: entry offset of Message Data. */
export const PCI_MSIX_ENTRY_DATA = 8;
/** PCI 3.0 §6.8.2.9: entry offset of Vector Control. */
export const PCI_MSIX_ENTRY_VECTOR_CTRL = 12;
/** PCI 3.0 §6.8.2.9: Vector Control: the vector is masked. */
export const PCI_MSIX_ENTRY_CTRL_MASKBIT = 1;
/** PCI 3.0 §6.8.2: the largest MSI-X table (2048 entries). */
export const PCI_MSIX_MAX_VECTORS = 2048;

// ── BARs ────────────────────────────────────────────────────────────────────────────

/** How a BAR decodes: I/O ports, 32-bit memory, or 64-bit memory (two BAR slots). */
export type PciBarKind = "io" | "mem32" | "mem64";

/** What a function declares for one BAR. */
export interface PciBarSpec {
  /** Address space and width. */
  readonly kind: PciBarKind;
  /** Bytes decoded: a power of two, ≥ 4 for I/O and ≥ 16 for memory, ≤ 2^31. */
  readonly size: number;
  /** Memory BARs only: the prefetchable bit (PCI 3.0 §6.2.5.1). */
  readonly prefetchable?: boolean;
  /**
   * Power-on address (default 0 = unassigned). Emulators that cannot relocate memory
   * BARs (v86) give a fixed address here.
   */
  readonly address?: number;
}

const TWO_32 = 0x1_0000_0000;

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/**
 * One declared BAR, reading its current address out of configuration space (PCI 3.0
 * §6.2.5). Decode is on when the Command register enables the BAR's address space.
 */
export class PciBar {
  /**
   * @param config - the configuration space holding the BAR register
   * @param index - BAR number (0–5); a 64-bit BAR also uses `index + 1`
   * @param kind - decode type
   * @param size - bytes decoded
   * @param prefetchable - memory prefetchable bit
   * @param initialAddress - power-on address
   */
  constructor(
    private readonly config: PciConfigSpace,
    readonly index: number,
    readonly kind: PciBarKind,
    readonly size: number,
    readonly prefetchable: boolean,
    readonly initialAddress: number,
  ) {}

  /** The bus address space the BAR decodes in. */
  get space(): "pio" | "mmio" {
    return this.kind === "io" ? "pio" : "mmio";
  }

  /** The read-only low bits of the BAR register (type, prefetch). */
  get typeBits(): number {
    if (this.kind === "io") return PCI_BASE_ADDRESS_SPACE_IO;
    return (
      (this.kind === "mem64" ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) |
      (this.prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0)
    );
  }

  /** The base address the guest programmed (for a 64-bit BAR both dwords combined). */
  get address(): number {
    const off = PciConfigOffset.BASE_ADDRESS_0 + 4 * this.index;
    const lo = this.config.getU32(off);
    if (this.kind === "io") return (lo & ~0x3) >>> 0;
    const base = (lo & ~0xf) >>> 0;
    if (this.kind === "mem32") return base;
    return this.config.getU32(off + 4) * TWO_32 + base;
  }

  /** Whether the Command register enables decode of this BAR's address space. */
  get decodeEnabled(): boolean {
    const cmd = this.config.command;
    return (cmd & (this.kind === "io" ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY)) !== 0;
  }
}

// ── Configuration space ─────────────────────────────────────────────────────────────

/** Identity of a PCI function: what goes into the read-only header fields. */
export interface PciIdentity {
  /** Vendor ID. */
  readonly vendorId: number;
  /** Device ID. */
  readonly deviceId: number;
  /** Revision ID (default 0). */
  readonly revision?: number;
  /** 24-bit class code: base class << 16 | sub-class << 8 | programming interface. */
  readonly classCode: number;
  /** Subsystem Vendor ID (default 0). */
  readonly subsystemVendorId?: number;
  /** Subsystem ID (default 0). */
  readonly subsystemId?: number;
  /** Interrupt Pin: 0 = none, 1–4 = INTA#–INTD# (default 1). */
  readonly interruptPin?: number;
  /** Header type bit 7: the device has more functions (default false). */
  readonly multiFunction?: boolean;
}

/** Called before a read that overlaps a hooked range (it may refresh the bytes). */
export type PciConfigReadHook = (offset: number, size: AccessSize) => void;
/** Called after a write that overlaps a hooked range was stored (masks applied). */
export type PciConfigWriteHook = (offset: number, size: AccessSize, value: number) => void;

interface HookRange<F> {
  readonly start: number;
  readonly end: number;
  readonly fn: F;
}

/** A capability found by walking the list (see {@link PciConfigSpace.capabilities}). */
export interface PciCapabilityEntry {
  /** Capability id. */
  readonly id: number;
  /** Offset in configuration space. */
  readonly offset: number;
}

/**
 * A 256-byte type-0 configuration space (PCI 3.0 §6.1) with per-byte write masks and
 * write-1-to-clear masks, BARs (§6.2.5) and a capability-list builder (§6.7).
 *
 * Host code sets fields with the raw `setU8/16/32` accessors (no masks); the guest goes
 * through {@link read}/{@link write}, which apply the masks: read-only fields stay
 * read-only, and writing all-ones to a BAR reads back its size mask.
 *
 * @example
 * ```ts
 * const cfg = new PciConfigSpace({ vendorId: 0x1af4, deviceId: 0x1044, classCode: 0xff0000, revision: 1 });
 * cfg.defineBar(4, { kind: "mem64", size: 0x4000 });
 * const cap = cfg.addCapability(PCI_CAP_ID_VNDR, 16);
 * cfg.write(0x20, 4, 0xffff_ffff);
 * cfg.read(0x20, 4); // 0xffffc00c: size mask | 64-bit | prefetchable
 * ```
 */
export class PciConfigSpace {
  /** The bytes, little-endian. */
  readonly bytes = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  /** Guest accesses refused (bad offset, width or alignment). */
  rejected = 0;
  /**
   * Why the last refused access was refused (size, offset and what is allowed), or
   * `null`. Guest accesses never throw; this is how a refusal is explained.
   */
  lastRejected: string | null = null;

  private readonly view = new DataView(this.bytes.buffer);
  private readonly wmask = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly w1cmask = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly barSlots: (PciBar | undefined)[] = [
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
  ];
  private readonly readHooks: HookRange<PciConfigReadHook>[] = [];
  private readonly writeHooks: HookRange<PciConfigWriteHook>[] = [];
  private lastCap = 0;
  private nextFree = PCI_CAP_START;

  /**
   * @param identity - vendor/device/class/subsystem ids and the interrupt pin
   * @throws Error on an out-of-range identity value (a host configuration mistake)
   */
  constructor(identity: PciIdentity) {
    const pin = identity.interruptPin ?? 1;
    if (!Number.isInteger(pin) || pin < 0 || pin > 4)
      throw new Error(`interrupt pin ${pin} is not 0–4`);
    const o = PciConfigOffset;
    this.setU16(o.VENDOR_ID, identity.vendorId);
    this.setU16(o.DEVICE_ID, identity.deviceId);
    this.setU8(o.REVISION_ID, identity.revision ?? 0);
    this.setU8(o.CLASS_PROG, identity.classCode & 0xff);
    this.setU8(o.CLASS_DEVICE, (identity.classCode >>> 8) & 0xff);
    this.setU8(o.CLASS, (identity.classCode >>> 16) & 0xff);
    this.setU8(o.HEADER_TYPE, identity.multiFunction ? 0x80 : 0x00);
    this.setU16(o.SUBSYSTEM_VENDOR_ID, identity.subsystemVendorId ?? 0);
    this.setU16(o.SUBSYSTEM_ID, identity.subsystemId ?? 0);
    this.setU8(o.INTERRUPT_PIN, pin);
    // PCI 3.0 §6.2.2: the bits of Command a function implements are read/write.
    this.setWriteMask(
      o.COMMAND,
      2,
      PCI_COMMAND_IO |
        PCI_COMMAND_MEMORY |
        PCI_COMMAND_MASTER |
        PCI_COMMAND_PARITY |
        PCI_COMMAND_SERR |
        PCI_COMMAND_INTX_DISABLE,
    );
    // §6.2.3: the error bits of Status are write-1-to-clear; the rest is read-only.
    this.setClearMask(o.STATUS, 2, PCI_STATUS_ERROR_BITS);
    // §6.2.4: scratch registers software owns.
    this.setWriteMask(o.CACHE_LINE_SIZE, 1, 0xff);
    this.setWriteMask(o.LATENCY_TIMER, 1, 0xff);
    this.setWriteMask(o.INTERRUPT_LINE, 1, 0xff);
  }

  // Raw host-side accessors (no masks, no hooks).

  /** Host-side raw read of a byte. */
  getU8(offset: number): number {
    return this.view.getUint8(offset);
  }
  /** Host-side raw read of a little-endian 16-bit field. */
  getU16(offset: number): number {
    return this.view.getUint16(offset, true);
  }
  /** Host-side raw read of a little-endian 32-bit field. */
  getU32(offset: number): number {
    return this.view.getUint32(offset, true);
  }
  /** Host-side raw write of a byte (ignores write masks). */
  setU8(offset: number, value: number): void {
    this.view.setUint8(offset, value & 0xff);
  }
  /** Host-side raw write of a little-endian 16-bit field (ignores write masks). */
  setU16(offset: number, value: number): void {
    this.view.setUint16(offset, value & 0xffff, true);
  }
  /** Host-side raw write of a little-endian 32-bit field (ignores write masks). */
  setU32(offset: number, value: number): void {
    this.view.setUint32(offset, value >>> 0, true);
  }

  /** Sets which bits of `size` bytes at `offset` the guest may write (1 = writable). */
  setWriteMask(offset: number, size: 1 | 2 | 4, mask: number): void {
    for (let i = 0; i < size; i++) this.wmask[offset + i] = (mask >>> (8 * i)) & 0xff;
  }

  /** Sets which bits of `size` bytes at `offset` are write-1-to-clear. */
  setClearMask(offset: number, size: 1 | 2 | 4, mask: number): void {
    for (let i = 0; i < size; i++) this.w1cmask[offset + i] = (mask >>> (8 * i)) & 0xff;
  }

  /** The Command register. */
  get command(): number {
    return this.getU16(PciConfigOffset.COMMAND);
  }

  /** Whether the driver set Interrupt Disable (PCI 3.0 §6.2.2): INTx must stay deasserted. */
  get intxDisabled(): boolean {
    return (this.command & PCI_COMMAND_INTX_DISABLE) !== 0;
  }

  /** Whether the driver enabled bus mastering. */
  get busMaster(): boolean {
    return (this.command & PCI_COMMAND_MASTER) !== 0;
  }

  /** Sets the read-only Interrupt Status bit (§6.2.3), which follows the INTx condition. */
  setInterruptStatus(pending: boolean): void {
    const s = this.getU16(PciConfigOffset.STATUS);
    this.setU16(
      PciConfigOffset.STATUS,
      pending ? s | PCI_STATUS_INTERRUPT : s & ~PCI_STATUS_INTERRUPT,
    );
  }

  /**
   * Declares a BAR (PCI 3.0 §6.2.5.1). Its register then reads back `~(size − 1)` after
   * an all-ones write; the type bits are read-only. A 64-bit BAR also takes slot
   * `index + 1` for the high dword.
   *
   * @returns the descriptor
   * @throws Error on a bad index, size or overlap with another BAR (host configuration)
   */
  defineBar(index: number, spec: PciBarSpec): PciBar {
    const { kind, size } = spec;
    const slots = kind === "mem64" ? 2 : 1;
    if (!Number.isInteger(index) || index < 0 || index + slots > PCI_NUM_BARS) {
      throw new Error(`BAR ${index} (${kind}) does not fit the six BAR slots`);
    }
    if (
      this.barSlots[index] !== undefined ||
      (slots === 2 && this.barSlots[index + 1] !== undefined)
    ) {
      throw new Error(`BAR slot ${index} is already used`);
    }
    const min = kind === "io" ? 4 : 16;
    if (!isPow2(size) || size < min || size > 0x8000_0000) {
      throw new Error(`BAR ${index} size ${size} must be a power of two in [${min}, 2^31]`);
    }
    const bar = new PciBar(
      this,
      index,
      kind,
      size,
      kind !== "io" && spec.prefetchable === true,
      spec.address ?? 0,
    );
    this.barSlots[index] = bar;
    if (slots === 2) this.barSlots[index + 1] = bar;
    const off = PciConfigOffset.BASE_ADDRESS_0 + 4 * index;
    const lowMask = kind === "io" ? ~(size - 1) & ~0x3 : ~(size - 1) & ~0xf;
    this.setWriteMask(off, 4, lowMask >>> 0);
    if (slots === 2) this.setWriteMask(off + 4, 4, 0xffff_ffff);
    this.resetBar(bar);
    return bar;
  }

  private resetBar(bar: PciBar): void {
    const off = PciConfigOffset.BASE_ADDRESS_0 + 4 * bar.index;
    const a = bar.initialAddress;
    const align = bar.kind === "io" ? ~0x3 : ~0xf;
    this.setU32(off, ((a % TWO_32) & align & ~(bar.size - 1)) | bar.typeBits);
    if (bar.kind === "mem64") this.setU32(off + 4, Math.floor(a / TWO_32));
  }

  /** The six BAR slots (a 64-bit BAR appears in both of its slots). */
  get bars(): readonly (PciBar | undefined)[] {
    return this.barSlots;
  }

  /**
   * Appends a capability to the list (PCI 3.0 §6.7): allocates `length` bytes at the next
   * dword-aligned free offset ≥ 0x40, writes the id, links it from the previous
   * capability (or the Capabilities Pointer) and sets Status.CAP_LIST. The body is
   * read-only until the caller sets write masks.
   *
   * @returns the capability's offset
   * @throws Error when it does not fit in 256 bytes (host configuration)
   */
  addCapability(id: number, length: number): number {
    if (!Number.isInteger(length) || length < 2) throw new Error(`capability length ${length} < 2`);
    const offset = (this.nextFree + 3) & ~3;
    if (offset + length > PCI_CONFIG_SPACE_SIZE) {
      throw new Error(
        `capability 0x${id.toString(16)} (${length} bytes) does not fit in configuration space`,
      );
    }
    this.setU8(offset, id);
    this.setU8(offset + 1, 0);
    if (this.lastCap === 0) this.setU8(PciConfigOffset.CAPABILITY_LIST, offset);
    else this.setU8(this.lastCap + 1, offset);
    this.setU16(PciConfigOffset.STATUS, this.getU16(PciConfigOffset.STATUS) | PCI_STATUS_CAP_LIST);
    this.lastCap = offset;
    this.nextFree = offset + length;
    return offset;
  }

  /** Host-side walk of the capability list (bounded: at most 48 entries, like Linux). */
  capabilities(): PciCapabilityEntry[] {
    const out: PciCapabilityEntry[] = [];
    if (!(this.getU16(PciConfigOffset.STATUS) & PCI_STATUS_CAP_LIST)) return out;
    let pos = this.getU8(PciConfigOffset.CAPABILITY_LIST) & ~3;
    for (let ttl = 48; ttl > 0 && pos >= PCI_CAP_START; ttl--) {
      out.push({ id: this.getU8(pos), offset: pos });
      pos = this.getU8(pos + 1) & ~3;
    }
    return out;
  }

  /** Runs `fn` before any guest read overlapping `[start, start + length)`. */
  hookRead(start: number, length: number, fn: PciConfigReadHook): void {
    this.readHooks.push({ start, end: start + length, fn });
  }

  /** Runs `fn` after any guest write overlapping `[start, start + length)` was stored. */
  hookWrite(start: number, length: number, fn: PciConfigWriteHook): void {
    this.writeHooks.push({ start, end: start + length, fn });
  }

  private valid(offset: number, size: AccessSize): boolean {
    return (
      Number.isInteger(offset) &&
      (size === 1 || size === 2 || size === 4) &&
      offset >= 0 &&
      offset + size <= PCI_CONFIG_SPACE_SIZE &&
      offset % size === 0
    );
  }

  /** Counts a refused guest access and records why (cold path). */
  private refuse(kind: "read" | "write", offset: number, size: number): void {
    this.rejected++;
    const at = Number.isInteger(offset) ? `0x${offset.toString(16)}` : String(offset);
    const why =
      size !== 1 && size !== 2 && size !== 4
        ? `unsupported size ${size}; configuration accesses are 1, 2 or 4 bytes`
        : !Number.isInteger(offset) || offset < 0 || offset + size > PCI_CONFIG_SPACE_SIZE
          ? `outside the ${PCI_CONFIG_SPACE_SIZE}-byte configuration space`
          : `not aligned to its ${size}-byte size`;
    const outcome = kind === "read" ? "read as all-ones" : "write dropped";
    this.lastRejected = `configuration ${kind} of ${size} bytes at ${at} refused: ${why}; ${outcome}`;
  }

  /**
   * A guest configuration read. Unaligned, wrong-width (not 1, 2 or 4 bytes) or
   * out-of-range accesses read as all-ones (nothing decodes them, as a master abort on
   * x86), are counted in {@link rejected} and explained in {@link lastRejected}.
   */
  read(offset: number, size: AccessSize): number {
    if (!this.valid(offset, size)) {
      this.refuse("read", offset, size);
      return allOnes(size);
    }
    const end = offset + size;
    for (const h of this.readHooks) if (offset < h.end && h.start < end) h.fn(offset, size);
    const v = this.view;
    return size === 1
      ? v.getUint8(offset)
      : size === 2
        ? v.getUint16(offset, true)
        : v.getUint32(offset, true);
  }

  /**
   * A guest configuration write: each byte changes only in its writable bits, and
   * write-1-to-clear bits clear where a 1 is written. Invalid accesses are dropped,
   * counted in {@link rejected} and explained in {@link lastRejected}.
   */
  write(offset: number, size: AccessSize, value: number): void {
    if (!this.valid(offset, size)) {
      this.refuse("write", offset, size);
      return;
    }
    const b = this.bytes;
    for (let i = 0; i < size; i++) {
      const o = offset + i;
      const byte = (value >>> (8 * i)) & 0xff;
      const m = this.wmask[o]!;
      b[o] = ((b[o]! & ~m) | (byte & m)) & ~(byte & this.w1cmask[o]!);
    }
    const end = offset + size;
    for (const h of this.writeHooks)
      if (offset < h.end && h.start < end) h.fn(offset, size, value >>> 0);
  }

  /**
   * Function-level reset of the header (PCI 3.0 §6.2): Command, Status error bits,
   * cache line, latency and interrupt line cleared; BARs back to their power-on address.
   * Capability owners reset their own state.
   */
  reset(): void {
    const o = PciConfigOffset;
    this.setU16(o.COMMAND, 0);
    this.setU16(o.STATUS, this.getU16(o.STATUS) & ~(PCI_STATUS_ERROR_BITS | PCI_STATUS_INTERRUPT));
    this.setU8(o.CACHE_LINE_SIZE, 0);
    this.setU8(o.LATENCY_TIMER, 0);
    this.setU8(o.INTERRUPT_LINE, 0);
    for (let i = 0; i < PCI_NUM_BARS; i++) {
      const bar = this.barSlots[i];
      if (bar !== undefined && bar.index === i) this.resetBar(bar);
    }
  }
}

// ── MSI-X ───────────────────────────────────────────────────────────────────────────

/** Receives an MSI-X message: the emulator turns it into an interrupt (e.g. a LAPIC write). */
export type MsiMessageHandler = (address: bigint, data: number) => void;

/** Where an MSI-X structure lives: a memory BAR and an 8-byte aligned offset in it. */
export interface MsixPlacement {
  /** BAR index (its BIR). */
  readonly bar: number;
  /** Offset inside the BAR. */
  readonly offset: number;
}

/** What {@link MsixController.signal} did. */
export type MsixSignalResult = "sent" | "pending" | "disabled" | "invalid";

/**
 * MSI-X (PCI 3.0 §6.8.2): the capability, the vector table and the pending-bit array.
 * A signal on a masked vector (entry mask or function mask) sets its pending bit; the
 * message goes out when the vector is unmasked. While MSI-X is disabled, signals report
 * `"disabled"` so the caller uses INTx instead.
 *
 * @example
 * ```ts
 * const msix = new MsixController(3, (addr, data) => lapic.deliver(addr, data));
 * msix.install(config, { bar: 1, offset: 0 }, { bar: 1, offset: 0x800 });
 * msix.signal(1); // "sent" | "pending" | "disabled"
 * ```
 */
export class MsixController {
  /** Table size (number of vectors). */
  readonly vectors: number;
  /** The table: `vectors` entries of 16 bytes (address lo, address hi, data, vector control). */
  readonly table: Uint8Array;
  /** The pending-bit array (one bit per vector, in 64-bit QWORDs). */
  readonly pba: Uint8Array;
  /** Messages sent. */
  messages = 0;
  /** Signals that found their vector masked and set a pending bit. */
  pendings = 0;
  /** Offset of the capability in configuration space (-1 before {@link install}). */
  capOffset = -1;

  private readonly tableView: DataView;
  private config: PciConfigSpace | null = null;
  private enable = false;
  private maskAll = false;
  private readonly listeners = new Set<() => void>();

  /**
   * @param vectors - table size, 1–2048
   * @param onMessage - delivers a message
   * @throws Error on a bad vector count (host configuration)
   */
  constructor(
    vectors: number,
    private readonly onMessage: MsiMessageHandler,
  ) {
    if (!Number.isInteger(vectors) || vectors < 1 || vectors > PCI_MSIX_MAX_VECTORS) {
      throw new Error(`MSI-X vector count ${vectors} is not in 1–${PCI_MSIX_MAX_VECTORS}`);
    }
    this.vectors = vectors;
    this.table = new Uint8Array(vectors * PCI_MSIX_ENTRY_SIZE);
    this.tableView = new DataView(this.table.buffer);
    this.pba = new Uint8Array(Math.ceil(vectors / 64) * 8);
    this.resetTable();
  }

  /** Bytes the table occupies in its BAR. */
  get tableBytes(): number {
    return this.table.length;
  }

  /** Bytes the PBA occupies in its BAR. */
  get pbaBytes(): number {
    return this.pba.length;
  }

  /**
   * Adds the MSI-X capability to `config` (PCI 3.0 §6.8.2.3): table size, table and PBA
   * BIR/offset (read-only), and Message Control's enable and function-mask bits writable.
   *
   * @returns the capability offset
   * @throws Error when the offsets are not 8-byte aligned or the BIR is not 0–5
   */
  install(config: PciConfigSpace, table: MsixPlacement, pba: MsixPlacement): number {
    for (const p of [table, pba]) {
      if (
        !Number.isInteger(p.bar) ||
        p.bar < 0 ||
        p.bar >= PCI_NUM_BARS ||
        p.offset % 8 !== 0 ||
        p.offset < 0
      ) {
        throw new Error(
          `MSI-X structure at BAR ${p.bar} offset ${p.offset} is not a valid BIR/8-byte offset`,
        );
      }
    }
    const cap = config.addCapability(PCI_CAP_ID_MSIX, PCI_MSIX_CAP_LEN);
    config.setU16(cap + PCI_MSIX_FLAGS, this.vectors - 1);
    config.setU32(cap + PCI_MSIX_TABLE, table.offset | table.bar);
    config.setU32(cap + PCI_MSIX_PBA, pba.offset | pba.bar);
    config.setWriteMask(cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    config.hookWrite(cap + PCI_MSIX_FLAGS, 2, () => this.controlWritten());
    this.config = config;
    this.capOffset = cap;
    return cap;
  }

  private controlWritten(): void {
    const cfg = this.config;
    if (cfg === null) return;
    const ctl = cfg.getU16(this.capOffset + PCI_MSIX_FLAGS);
    this.setControl((ctl & PCI_MSIX_FLAGS_ENABLE) !== 0, (ctl & PCI_MSIX_FLAGS_MASKALL) !== 0);
  }

  /**
   * Sets the enable and function-mask bits (the capability hook calls this; use it
   * directly when the controller is not installed in a configuration space).
   */
  setControl(enable: boolean, maskAll: boolean): void {
    if (enable === this.enable && maskAll === this.maskAll) return;
    this.enable = enable;
    this.maskAll = maskAll;
    const cfg = this.config;
    if (cfg !== null) {
      const off = this.capOffset + PCI_MSIX_FLAGS;
      const ctl = cfg.getU16(off) & ~(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
      cfg.setU16(
        off,
        ctl | (enable ? PCI_MSIX_FLAGS_ENABLE : 0) | (maskAll ? PCI_MSIX_FLAGS_MASKALL : 0),
      );
    }
    if (enable && !maskAll) this.deliverPending();
    for (const l of this.listeners) l();
  }

  /** Whether the driver enabled MSI-X. */
  get enabled(): boolean {
    return this.enable;
  }

  /** Whether the function mask is set. */
  get functionMasked(): boolean {
    return this.maskAll;
  }

  /** Runs `listener` whenever the enable or function-mask bit changes. @returns unsubscribe */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Whether entry `vector`'s own mask bit is set. */
  isVectorMasked(vector: number): boolean {
    return (
      (this.tableView.getUint32(vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, true) &
        PCI_MSIX_ENTRY_CTRL_MASKBIT) !==
      0
    );
  }

  /** Whether `vector`'s pending bit is set. */
  isPending(vector: number): boolean {
    if (!(vector >= 0 && vector < this.vectors)) return false;
    return ((this.pba[vector >>> 3]! >>> (vector & 7)) & 1) === 1;
  }

  /** The message address programmed in entry `vector`. */
  messageAddress(vector: number): bigint {
    const base = vector * PCI_MSIX_ENTRY_SIZE;
    const lo = this.tableView.getUint32(base + PCI_MSIX_ENTRY_LOWER_ADDR, true);
    const hi = this.tableView.getUint32(base + PCI_MSIX_ENTRY_UPPER_ADDR, true);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** The message data programmed in entry `vector`. */
  messageData(vector: number): number {
    return this.tableView.getUint32(vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_DATA, true);
  }

  /**
   * Signals `vector` (PCI 3.0 §6.8.2.9): sends its message, or sets its pending bit when
   * it or the function is masked.
   *
   * @returns what happened; `"disabled"` means MSI-X is off and INTx applies
   */
  signal(vector: number): MsixSignalResult {
    if (!this.enable) return "disabled";
    if (!(Number.isInteger(vector) && vector >= 0 && vector < this.vectors)) return "invalid";
    if (this.maskAll || this.isVectorMasked(vector)) {
      this.pba[vector >>> 3]! |= 1 << (vector & 7);
      this.pendings++;
      return "pending";
    }
    this.send(vector);
    return "sent";
  }

  private send(vector: number): void {
    this.messages++;
    this.onMessage(this.messageAddress(vector), this.messageData(vector));
  }

  private deliverPending(): void {
    for (let v = 0; v < this.vectors; v++) {
      if (this.isPending(v) && !this.isVectorMasked(v)) {
        this.pba[v >>> 3]! &= ~(1 << (v & 7));
        this.send(v);
      }
    }
  }

  private validAccess(offset: number, size: AccessSize, length: number): boolean {
    return (
      Number.isInteger(offset) &&
      (size === 1 || size === 2 || size === 4) &&
      offset >= 0 &&
      offset + size <= length &&
      offset % size === 0
    );
  }

  /** A read of the table (PCI 3.0 §6.8.2: DWORD accesses; narrower aligned ones are served too). */
  readTable(offset: number, size: AccessSize): number {
    if (!this.validAccess(offset, size, this.table.length)) return 0;
    const v = this.tableView;
    return size === 1
      ? v.getUint8(offset)
      : size === 2
        ? v.getUint16(offset, true)
        : v.getUint32(offset, true);
  }

  /**
   * A write to the table. Vector Control keeps only its mask bit (the rest is reserved);
   * unmasking a vector with its pending bit set sends the message (§6.8.2.9).
   */
  writeTable(offset: number, size: AccessSize, value: number): void {
    if (!this.validAccess(offset, size, this.table.length)) return;
    const ctlByte = offset % PCI_MSIX_ENTRY_SIZE;
    for (let i = 0; i < size; i++) {
      const o = offset + i;
      let byte = (value >>> (8 * i)) & 0xff;
      const inEntry = o % PCI_MSIX_ENTRY_SIZE;
      if (inEntry >= PCI_MSIX_ENTRY_VECTOR_CTRL)
        byte = inEntry === PCI_MSIX_ENTRY_VECTOR_CTRL ? byte & PCI_MSIX_ENTRY_CTRL_MASKBIT : 0;
      this.table[o] = byte;
    }
    if (ctlByte + size > PCI_MSIX_ENTRY_VECTOR_CTRL) {
      const v = Math.floor(offset / PCI_MSIX_ENTRY_SIZE);
      if (this.enable && !this.maskAll && this.isPending(v) && !this.isVectorMasked(v)) {
        this.pba[v >>> 3]! &= ~(1 << (v & 7));
        this.send(v);
      }
    }
  }

  /** A read of the PBA (read-only). */
  readPba(offset: number, size: AccessSize): number {
    if (!this.validAccess(offset, size, this.pba.length)) return 0;
    let value = 0;
    for (let i = size - 1; i >= 0; i--) value = (value << 8) | this.pba[offset + i]!;
    return value >>> 0;
  }

  /** Clears every pending bit (a device reset forgets undelivered events). */
  clearPending(): void {
    this.pba.fill(0);
  }

  private resetTable(): void {
    this.table.fill(0);
    for (let v = 0; v < this.vectors; v++) {
      this.tableView.setUint32(
        v * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL,
        PCI_MSIX_ENTRY_CTRL_MASKBIT,
        true,
      );
    }
    this.pba.fill(0);
  }

  /** Function reset (PCI 3.0 §6.8.2.9): every vector masked, nothing pending, MSI-X disabled. */
  reset(): void {
    this.resetTable();
    this.setControl(false, false);
  }
}

// ── The function an emulator hosts ─────────────────────────────────────────────────

/**
 * A PCI function any emulator can host: configuration-space accessors, BAR accessors
 * (offsets relative to the BAR), the BAR descriptors, and its INTx line.
 */
export interface PciFunction {
  /** Name used for bus mappings and diagnostics. */
  readonly name: string;
  /** A configuration read (PCI 3.0 §6.1). */
  configRead(offset: number, size: AccessSize): number;
  /** A configuration write. */
  configWrite(offset: number, size: AccessSize, value: number): void;
  /** A read at `offset` inside BAR `bar`. */
  barRead(bar: number, offset: number, size: AccessSize): number;
  /** A write at `offset` inside BAR `bar`. */
  barWrite(bar: number, offset: number, size: AccessSize, value: number): void;
  /** The six BAR slots (a 64-bit BAR occupies two). */
  readonly bars: readonly (PciBar | undefined)[];
  /** The INTx line (level-triggered). */
  readonly irq: IrqLine;
  /** Interrupt Pin: 0 none, 1–4 INTA#–INTD#. */
  readonly interruptPin: number;
}

/** An {@link IoHandler} forwarding to BAR `bar` of `fn`, to map on a {@link Bus}. */
export function pciBarHandler(fn: PciFunction, bar: number): IoHandler {
  return {
    read: (offset, size) => fn.barRead(bar, offset, size),
    write: (offset, size, value) => fn.barWrite(bar, offset, size, value),
  };
}

// ── A minimal host bridge ───────────────────────────────────────────────────────────

/** The configuration address port of config mechanism #1 (PCI 3.0 §3.2.2.3.2). */
export const PCI_CONFIG_ADDRESS_PORT = 0xcf8;
/** The configuration data port of config mechanism #1. */
export const PCI_CONFIG_DATA_PORT = 0xcfc;
/** Config mechanism #1: the enable bit of CONFIG_ADDRESS. */
export const PCI_CONFIG_ENABLE = 0x8000_0000;
/** PCIe 4.0 §7.2.2: bytes of ECAM space per bus (32 devices × 8 functions × 4 KiB). */
export const PCI_ECAM_BUS_SIZE = 0x10_0000;

interface Attached {
  readonly fn: PciFunction;
  readonly mappings: (BusMapping | null)[];
  readonly handlers: IoHandler[];
}

/**
 * A bus-0 host bridge: forwards configuration cycles (mechanism #1 on ports
 * 0xCF8–0xCFF, or ECAM on an MMIO window) to attached functions, and keeps each
 * function's BARs mapped on the {@link Bus} where the guest programmed them, while the
 * Command register enables decode. An emulator with its own PCI code (v86) only needs
 * {@link PciFunction}; this host is for pvkit's own runtimes and tests.
 *
 * @example
 * ```ts
 * const host = new PciHost(bus);
 * host.attach(transport, 3);
 * host.mapConfigPorts();
 * ```
 */
export class PciHost {
  /** BAR mappings that could not be placed because they overlap another mapping. */
  conflicts = 0;
  private readonly slots: (Attached | undefined)[] = new Array(256).fill(undefined);
  private address = 0;

  /** @param bus - where BAR windows and the config ports are mapped */
  constructor(readonly bus: Bus) {}

  /**
   * Attaches `fn` at device `device`, function `func` of bus 0.
   *
   * @throws Error when the slot is taken or out of range (host configuration)
   */
  attach(fn: PciFunction, device: number, func = 0): void {
    if (
      !Number.isInteger(device) ||
      device < 0 ||
      device > 31 ||
      !Number.isInteger(func) ||
      func < 0 ||
      func > 7
    ) {
      throw new Error(`PCI slot ${device}.${func} is out of range`);
    }
    const devfn = (device << 3) | func;
    if (this.slots[devfn] !== undefined) throw new Error(`PCI slot ${device}.${func} is taken`);
    const handlers: IoHandler[] = [];
    for (let i = 0; i < PCI_NUM_BARS; i++) handlers.push(pciBarHandler(fn, i));
    const entry: Attached = { fn, mappings: [null, null, null, null, null, null], handlers };
    this.slots[devfn] = entry;
    this.sync(entry);
  }

  /** The function at `devfn` (device << 3 | function), if any. */
  functionAt(devfn: number): PciFunction | undefined {
    return this.slots[devfn]?.fn;
  }

  /** The current bus mapping of BAR `bar` of the function at `devfn`, or null. */
  barMapping(devfn: number, bar: number): BusMapping | null {
    return this.slots[devfn]?.mappings[bar] ?? null;
  }

  /** A configuration read on bus 0; absent functions read as all-ones. */
  configRead(devfn: number, offset: number, size: AccessSize): number {
    const e = this.slots[devfn];
    return e === undefined ? allOnes(size) : e.fn.configRead(offset, size);
  }

  /** A configuration write on bus 0; BAR windows follow. */
  configWrite(devfn: number, offset: number, size: AccessSize, value: number): void {
    const e = this.slots[devfn];
    if (e === undefined) return;
    e.fn.configWrite(offset, size, value);
    this.sync(e);
  }

  /** The handler for ports 0xCF8–0xCFF (config mechanism #1). */
  readonly configPorts: IoHandler = {
    read: (offset, size) => {
      if (offset === 0 && size === 4) return this.address >>> 0;
      if (offset < 4) return allOnes(size);
      const addr = this.address;
      if (!(addr & PCI_CONFIG_ENABLE) || ((addr >>> 16) & 0xff) !== 0) return allOnes(size);
      return this.configRead((addr >>> 8) & 0xff, (addr & 0xfc) + (offset - 4), size);
    },
    write: (offset, size, value) => {
      if (offset === 0 && size === 4) {
        this.address = (value & 0x80ff_fffc) >>> 0;
        return;
      }
      if (offset < 4) return;
      const addr = this.address;
      if (!(addr & PCI_CONFIG_ENABLE) || ((addr >>> 16) & 0xff) !== 0) return;
      this.configWrite((addr >>> 8) & 0xff, (addr & 0xfc) + (offset - 4), size, value);
    },
  };

  /** The handler for an ECAM window of bus 0 (1 MiB). */
  readonly ecam: IoHandler = {
    read: (offset, size) => {
      const reg = offset & 0xfff;
      if (offset >= PCI_ECAM_BUS_SIZE || reg >= PCI_CONFIG_SPACE_SIZE) return allOnes(size);
      return this.configRead(offset >>> 12, reg, size);
    },
    write: (offset, size, value) => {
      const reg = offset & 0xfff;
      if (offset >= PCI_ECAM_BUS_SIZE || reg >= PCI_CONFIG_SPACE_SIZE) return;
      this.configWrite(offset >>> 12, reg, size, value);
    },
  };

  /** Maps {@link configPorts} at 0xCF8 in port space. */
  mapConfigPorts(): BusMapping {
    return this.bus.map("pio", PCI_CONFIG_ADDRESS_PORT, 8, this.configPorts, "pci-conf1");
  }

  /** Maps {@link ecam} at `base` in memory space. */
  mapEcam(base: number): BusMapping {
    return this.bus.map("mmio", base, PCI_ECAM_BUS_SIZE, this.ecam, "pci-ecam");
  }

  private sync(e: Attached): void {
    const bars = e.fn.bars;
    for (let i = 0; i < PCI_NUM_BARS; i++) {
      const bar = bars[i];
      const current = e.mappings[i] ?? null;
      const owner = bar !== undefined && bar.index === i;
      const addr = owner ? bar.address : 0;
      const limit = owner && bar.kind === "io" ? 0x1_0000 : 2 ** 53;
      const want = owner && bar.decodeEnabled && addr !== 0 && addr + bar.size <= limit;
      if (!want) {
        if (current !== null) {
          this.bus.unmap(current);
          e.mappings[i] = null;
        }
        continue;
      }
      if (current !== null) {
        if (current.base === addr) continue;
        if (this.bus.move(current, addr)) continue;
        this.bus.unmap(current);
        e.mappings[i] = null;
        this.conflicts++;
        continue;
      }
      try {
        e.mappings[i] = this.bus.map(
          bar.space,
          addr,
          bar.size,
          e.handlers[i]!,
          `${e.fn.name}.bar${i}`,
        );
      } catch {
        this.conflicts++; // overlaps another window: the BAR stays unreachable, as on hardware
      }
    }
  }
}

// ── Guest side: what firmware and an OS's PCI core do ───────────────────────────────

/** Guest-side access to one function's configuration space. */
export interface PciConfigAccess {
  /** A configuration read. */
  read(offset: number, size: AccessSize): number;
  /** A configuration write. */
  write(offset: number, size: AccessSize, value: number): void;
}

/**
 * Configuration access through mechanism #1 (what Linux's `pci_conf1_read` does): an
 * `outl` of the address to 0xCF8, then an access at 0xCFC + (offset & 3). Two exits.
 */
export class PciConfigPortAccess implements PciConfigAccess {
  private readonly base: number;

  /**
   * @param bus - the CPU's bus
   * @param device - device number 0–31
   * @param func - function number 0–7
   * @param busNumber - bus number (default 0)
   */
  constructor(
    private readonly bus: Bus,
    device: number,
    func = 0,
    busNumber = 0,
  ) {
    this.base = (PCI_CONFIG_ENABLE | (busNumber << 16) | (device << 11) | (func << 8)) >>> 0;
  }

  read(offset: number, size: AccessSize): number {
    this.bus.write("pio", PCI_CONFIG_ADDRESS_PORT, 4, (this.base | (offset & 0xfc)) >>> 0);
    return this.bus.read("pio", PCI_CONFIG_DATA_PORT + (offset & 3), size);
  }

  write(offset: number, size: AccessSize, value: number): void {
    this.bus.write("pio", PCI_CONFIG_ADDRESS_PORT, 4, (this.base | (offset & 0xfc)) >>> 0);
    this.bus.write("pio", PCI_CONFIG_DATA_PORT + (offset & 3), size, value);
  }
}

/** Configuration access through an ECAM window (PCIe 4.0 §7.2.2): one exit per access. */
export class PciConfigEcamAccess implements PciConfigAccess {
  private readonly base: number;

  /**
   * @param bus - the CPU's bus
   * @param ecamBase - the ECAM window's base address
   * @param device - device number 0–31
   * @param func - function number 0–7
   */
  constructor(
    private readonly bus: Bus,
    ecamBase: number,
    device: number,
    func = 0,
  ) {
    this.base = ecamBase + ((device << 15) | (func << 12));
  }

  read(offset: number, size: AccessSize): number {
    return this.bus.read("mmio", this.base + offset, size);
  }

  write(offset: number, size: AccessSize, value: number): void {
    this.bus.write("mmio", this.base + offset, size, value);
  }
}

/** A BAR as the guest found it by sizing (Linux `__pci_read_base`). */
export interface PciBarInfo {
  /** BAR index (the lower slot for a 64-bit BAR). */
  readonly index: number;
  /** Decode type. */
  readonly kind: PciBarKind;
  /** Bytes decoded. */
  readonly size: number;
  /** Prefetchable (memory only). */
  readonly prefetchable: boolean;
  /** Address programmed when it was read. */
  readonly address: number;
}

/**
 * Sizes every BAR like Linux's `__pci_read_base` (PCI 3.0 §6.2.5.1): with decode turned
 * off in Command, write all-ones, read the size mask back, restore the original value.
 *
 * @returns the implemented BARs (a 64-bit BAR once, at its lower index)
 */
export function probePciBars(access: PciConfigAccess): PciBarInfo[] {
  const out: PciBarInfo[] = [];
  const cmd = access.read(PciConfigOffset.COMMAND, 2);
  access.write(PciConfigOffset.COMMAND, 2, cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
  for (let i = 0; i < PCI_NUM_BARS; i++) {
    const off = PciConfigOffset.BASE_ADDRESS_0 + 4 * i;
    const orig = access.read(off, 4);
    access.write(off, 4, 0xffff_ffff);
    const mask = access.read(off, 4);
    access.write(off, 4, orig);
    if (mask === 0 || mask === 0xffff_ffff) continue;
    if (mask & PCI_BASE_ADDRESS_SPACE_IO) {
      const m = (mask & ~0x3) | 0xffff_0000; // I/O decode may implement only 16 bits
      out.push({
        index: i,
        kind: "io",
        size: (~m + 1) >>> 0,
        prefetchable: false,
        address: (orig & ~0x3) >>> 0,
      });
      continue;
    }
    const prefetchable = (mask & PCI_BASE_ADDRESS_MEM_PREFETCH) !== 0;
    if ((mask & 0x6) === PCI_BASE_ADDRESS_MEM_TYPE_64 && i + 1 < PCI_NUM_BARS) {
      const origHi = access.read(off + 4, 4);
      access.write(off + 4, 4, 0xffff_ffff);
      const maskHi = access.read(off + 4, 4);
      access.write(off + 4, 4, origHi);
      const lo = (mask & ~0xf) >>> 0;
      const size = lo !== 0 ? (~lo + 1) >>> 0 : ((~maskHi + 1) >>> 0) * TWO_32;
      out.push({
        index: i,
        kind: "mem64",
        size,
        prefetchable,
        address: origHi * TWO_32 + ((orig & ~0xf) >>> 0),
      });
      i++;
      continue;
    }
    out.push({
      index: i,
      kind: "mem32",
      size: (~(mask & ~0xf) + 1) >>> 0,
      prefetchable,
      address: (orig & ~0xf) >>> 0,
    });
  }
  access.write(PciConfigOffset.COMMAND, 2, cmd);
  return out;
}

/** Where {@link assignPciBars} places BARs; it advances the fields as it allocates. */
export interface PciResourceWindows {
  /** Next free I/O port. */
  io: number;
  /** Next free 32-bit memory address. */
  mem32: number;
  /** Next free address for 64-bit BARs (default: the 32-bit window). */
  mem64?: number;
}

/**
 * What firmware (SeaBIOS `pci_bios_init`) does: sizes every BAR, gives each a naturally
 * aligned address from `windows`, programs it, and enables I/O, memory and bus
 * mastering in Command.
 *
 * @returns the BARs with their new addresses
 */
export function assignPciBars(access: PciConfigAccess, windows: PciResourceWindows): PciBarInfo[] {
  const found = probePciBars(access);
  const out: PciBarInfo[] = [];
  for (const b of found) {
    const off = PciConfigOffset.BASE_ADDRESS_0 + 4 * b.index;
    const field: "io" | "mem32" | "mem64" =
      b.kind === "mem64" && windows.mem64 !== undefined
        ? "mem64"
        : b.kind === "io"
          ? "io"
          : "mem32";
    const next = windows[field] ?? windows.mem32;
    const addr = Math.ceil(next / b.size) * b.size;
    windows[field] = addr + b.size;
    access.write(off, 4, addr % TWO_32);
    if (b.kind === "mem64") access.write(off + 4, 4, Math.floor(addr / TWO_32));
    out.push({ ...b, address: addr });
  }
  const cmd = access.read(PciConfigOffset.COMMAND, 2);
  access.write(
    PciConfigOffset.COMMAND,
    2,
    cmd | PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER,
  );
  return out;
}
