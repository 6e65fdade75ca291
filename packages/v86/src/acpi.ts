/**
 * ACPI tables built in TypeScript, without `iasl` at run time: an SSDT that declares
 * virtio-mmio devices (so Linux's `virtio_mmio` driver binds them through ACPI, `_HID
 * "LNRO0005"`), and the early cpio that hands such tables to Linux's ACPI table upgrade
 * (`CONFIG_ACPI_TABLE_UPGRADE`, Documentation/admin-guide/acpi/initrd_table_override.rst).
 *
 * The AML is encoded by hand following ACPI 6.x §20 (AML encoding) and §6.4 (resource
 * descriptors), choosing the same encodings ACPICA's `iasl` does, so an `iasl`-compiled
 * source of the same table has the same body bytes.
 *
 * @module
 */

import type { CpioEntry } from "./cpio.js";
import { CpioMode, cpioNewc, parentDirs } from "./cpio.js";

/** One virtio-mmio device to declare: its register window and its interrupt line. */
export interface VirtioMmioAcpiDevice {
  /** Guest-physical base of the register window (u32). */
  readonly address: number;
  /** Size of the register window in bytes (1 to 2^32 - 1; virtio-mmio uses 0x200). */
  readonly size: number;
  /** ISA / IO-APIC line (global system interrupt, 0 to 255), level-triggered, active-high. */
  readonly irq: number;
}

/** Options of {@link virtioMmioSsdt}. */
export interface VirtioMmioSsdtOptions {
  /**
   * OEM Table ID of the header (§5.2.6), 1 to 8 printable ASCII characters without `"` or
   * `\`; default `"VIRTMMIO"`. Linux's table upgrade installs an SSDT next to the firmware's
   * tables unless one with the same OEM ID and OEM Table ID exists, which it replaces, so
   * two tables loaded together need different IDs.
   */
  readonly oemTableId?: string;
}

/** One table file for {@link acpiEarlyCpio}. */
export interface AcpiTableFile {
  /**
   * File name without `.aml`: 1 to 64 of `A-Z a-z 0-9 _ -`. Keep it to 12 characters:
   * Linux's early cpio reader (lib/earlycpio.c, MAX_CPIO_FILE_NAME) still loads a table with
   * a longer file name but logs "File ... exceeding MAX_CPIO_FILE_NAME" and a cut name.
   */
  readonly name: string;
  /** The complete table, header included (§5.2.6). */
  readonly data: Uint8Array;
}

/** OEM ID of the tables built here (§5.2.6, six bytes, NUL-padded). */
const OEM_ID = "PVKIT";
/** Creator ID: the "compiler" that produced the AML. */
const CREATOR_ID = "PVKT";
/** Creator revision: bump when the encoding of {@link virtioMmioSsdt} changes. */
const CREATOR_REVISION = 1;
/** OEM revision of the SSDT. */
const OEM_REVISION = 1;
/** Default OEM Table ID. */
const DEFAULT_TABLE_ID = "VIRTMMIO";
/** `_HID` Linux's virtio_mmio driver matches (drivers/virtio/virtio_mmio.c). */
const VIRTIO_MMIO_HID = "LNRO0005";
/** Length of the System Description Table Header, §5.2.6. */
const HEADER_LENGTH = 36;
/** Largest number of devices: the names VR00..VRFF. */
const MAX_DEVICES = 256;
/** Largest number of tables Linux's table upgrade reads (ACPI_OVERRIDE_TABLES). */
const MAX_UPGRADE_TABLES = 64;

// AML opcodes, ACPI 6.x §20.3 (opcode summary).
const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const NAME_OP = 0x08;
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d;
const SCOPE_OP = 0x10;
const BUFFER_OP = 0x11;
const EXT_OP_PREFIX = 0x5b;
const DEVICE_OP = 0x82;
const ROOT_CHAR = 0x5c;

// Resource descriptor tags, ACPI 6.x §6.4.
const MEMORY32_FIXED_TAG = 0x86; // large item 0x06, §6.4.3.4
const EXTENDED_INTERRUPT_TAG = 0x89; // large item 0x09, §6.4.3.6
const END_TAG = 0x79; // small item 0x0F, length 1, §6.4.2.9

const MAX_PKG_LENGTH = 0x0fffffff;

/**
 * Encodes an AML PkgLength (ACPI 6.x §20.2.4) for an object whose contents after the
 * PkgLength are `bodyLength` bytes. The encoded value counts the PkgLength bytes themselves,
 * so the shortest form that fits is chosen: one byte up to 63 in total, two bytes up to
 * 4095, three up to 2^20 - 1, four up to 2^28 - 1.
 *
 * @param bodyLength - bytes that follow the PkgLength inside the object
 * @returns the 1 to 4 PkgLength bytes
 * @throws Error if the object would exceed 2^28 - 1 bytes
 */
export function amlPkgLength(bodyLength: number): Uint8Array {
  if (!Number.isInteger(bodyLength) || bodyLength < 0) {
    throw new Error(`AML body length ${bodyLength} must be a non-negative integer`);
  }
  if (bodyLength + 1 <= 0x3f) return Uint8Array.of(bodyLength + 1);
  for (let extra = 1; extra <= 3; extra++) {
    const total = bodyLength + 1 + extra;
    if (total < 2 ** (4 + 8 * extra)) {
      const out = new Uint8Array(1 + extra);
      out[0] = (extra << 6) | (total & 0x0f);
      for (let i = 1; i <= extra; i++) out[i] = (total >>> (4 + 8 * (i - 1))) & 0xff;
      return out;
    }
  }
  throw new Error(
    `AML object of ${bodyLength} bytes exceeds the PkgLength limit ${MAX_PKG_LENGTH}`,
  );
}

/**
 * Encodes an integer constant as AML's shortest ComputationalData (ACPI 6.x §20.2.3):
 * ZeroOp, OneOp, then BytePrefix, WordPrefix or DWordPrefix with a little-endian value.
 * OnesOp is never used: in a revision-2 table it means 2^64 - 1, not 2^32 - 1.
 *
 * @param value - an integer from 0 to 2^32 - 1
 * @returns the encoded constant
 * @throws Error on a value outside that range
 */
export function amlInteger(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new Error(`AML integer ${value} must be an integer from 0 to 0xFFFFFFFF`);
  }
  if (value === 0) return Uint8Array.of(ZERO_OP);
  if (value === 1) return Uint8Array.of(ONE_OP);
  if (value <= 0xff) return Uint8Array.of(BYTE_PREFIX, value);
  if (value <= 0xffff) return Uint8Array.of(WORD_PREFIX, value & 0xff, value >>> 8);
  return Uint8Array.of(DWORD_PREFIX, ...le32(value));
}

function le32(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff];
}

function ascii(text: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) out.push(text.charCodeAt(i));
  return out;
}

/** A 4-character NameSeg (§20.2.2): a lead character `A-Z _`, then `A-Z 0-9 _`. */
function nameSeg(seg: string): number[] {
  if (!/^[A-Z_][A-Z0-9_]{3}$/.test(seg)) throw new Error(`"${seg}" is not an AML NameSeg`);
  return ascii(seg);
}

/** A length-prefixed object: the opcode bytes, a PkgLength, then `body`. */
function withPkgLength(opcode: readonly number[], body: readonly number[]): number[] {
  return [...opcode, ...amlPkgLength(body.length), ...body];
}

/** DefName := NameOp NameString DataRefObject (§20.2.5.1). */
function defName(seg: string, value: readonly number[]): number[] {
  return [NAME_OP, ...nameSeg(seg), ...value];
}

/** String := StringPrefix AsciiCharList NullChar (§20.2.3). */
function amlString(text: string): number[] {
  return [STRING_PREFIX, ...ascii(text), 0];
}

/** DefBuffer := BufferOp PkgLength BufferSize ByteList (§20.2.5.4). */
function defBuffer(bytes: readonly number[]): number[] {
  return withPkgLength([BUFFER_OP], [...amlInteger(bytes.length), ...bytes]);
}

/**
 * The `_CRS` ResourceTemplate of one device (§6.4): Memory32Fixed (ReadWrite), Interrupt
 * (ResourceConsumer, Level, ActiveHigh, Exclusive), End Tag. The End Tag's checksum byte is
 * 0, which §6.4.2.9 defines as "treat the checksum as valid" (and which `iasl` writes too).
 */
function resourceTemplate(dev: VirtioMmioAcpiDevice): number[] {
  const memory = [MEMORY32_FIXED_TAG, 9, 0, 0x01 /* read-write */, ...le32(dev.address)];
  memory.push(...le32(dev.size));
  // Flags: bit 0 consumer = 1; bit 1 level = 0; bit 2 active-high = 0; bit 3 exclusive = 0.
  const interrupt = [EXTENDED_INTERRUPT_TAG, 6, 0, 0x01, 1 /* table length */, ...le32(dev.irq)];
  return [...memory, ...interrupt, END_TAG, 0];
}

/** Device (VRxx) { _HID, _UID, _CCA, _CRS } (DefDevice, §20.2.5.2). */
function defDevice(index: number, dev: VirtioMmioAcpiDevice): number[] {
  const body = [
    ...nameSeg(deviceName(index)),
    ...defName("_HID", amlString(VIRTIO_MMIO_HID)),
    ...defName("_UID", [...amlInteger(index)]),
    ...defName("_CCA", [ONE_OP]),
    ...defName("_CRS", defBuffer(resourceTemplate(dev))),
  ];
  return withPkgLength([EXT_OP_PREFIX, DEVICE_OP], body);
}

/** The ACPI name of device `index`: `VR00` to `VRFF`. */
function deviceName(index: number): string {
  return `VR${index.toString(16).toUpperCase().padStart(2, "0")}`;
}

function checkU32(what: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new Error(`${what} ${value} must be an integer from 0 to 0xFFFFFFFF`);
  }
}

function checkDevices(devices: readonly VirtioMmioAcpiDevice[]): void {
  if (devices.length === 0) throw new Error("virtio-mmio SSDT needs at least one device");
  if (devices.length > MAX_DEVICES) {
    throw new Error(`virtio-mmio SSDT holds at most ${MAX_DEVICES} devices, got ${devices.length}`);
  }
  const irqs = new Set<number>();
  devices.forEach((d, i) => {
    const where = `virtio-mmio device ${i}`;
    checkU32(`${where}: address`, d.address);
    checkU32(`${where}: size`, d.size);
    if (d.size === 0) throw new Error(`${where}: size must not be 0`);
    if (d.address + d.size > 2 ** 32) {
      throw new Error(`${where}: window ${hex(d.address)}+${hex(d.size)} passes 4 GiB`);
    }
    if (!Number.isInteger(d.irq) || d.irq < 0 || d.irq > 255) {
      throw new Error(`${where}: irq ${d.irq} must be an integer from 0 to 255`);
    }
    // The descriptor says Exclusive, so two devices must not share a line.
    if (irqs.has(d.irq)) throw new Error(`${where}: irq ${d.irq} is used by another device`);
    irqs.add(d.irq);
  });
  const sorted = [...devices].sort((a, b) => a.address - b.address);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (prev.address + prev.size > cur.address) {
      throw new Error(
        `virtio-mmio windows at ${hex(prev.address)} and ${hex(cur.address)} overlap`,
      );
    }
  }
}

function hex(n: number): string {
  return `0x${n.toString(16).toUpperCase()}`;
}

/**
 * Wraps an AML body in a System Description Table Header (ACPI 6.x §5.2.6) and sets the
 * checksum so that all bytes of the table sum to 0 modulo 256.
 */
function definitionBlock(
  signature: string,
  revision: number,
  tableId: string,
  body: readonly number[],
): Uint8Array {
  const length = HEADER_LENGTH + body.length;
  const out = new Uint8Array(length);
  const view = new DataView(out.buffer);
  out.set(ascii(signature), 0);
  view.setUint32(4, length, true);
  out[8] = revision;
  // out[9], the checksum, is filled in last.
  out.set(ascii(OEM_ID), 10); // six bytes, NUL-padded
  out.set(ascii(tableId), 16); // eight bytes, NUL-padded
  view.setUint32(24, OEM_REVISION, true);
  out.set(ascii(CREATOR_ID), 28);
  view.setUint32(32, CREATOR_REVISION, true);
  out.set(body, HEADER_LENGTH);
  let sum = 0;
  for (const b of out) sum += b;
  out[9] = (256 - (sum & 0xff)) & 0xff;
  return out;
}

/**
 * Builds the SSDT that declares virtio-mmio devices to Linux, the AML equivalent of
 *
 * ```
 * DefinitionBlock ("", "SSDT", 2, "PVKIT", "<oemTableId>", 1) {
 *   Scope (\_SB) {
 *     Device (VR00) {
 *       Name (_HID, "LNRO0005")
 *       Name (_UID, 0)
 *       Name (_CCA, One)
 *       Name (_CRS, ResourceTemplate () {
 *         Memory32Fixed (ReadWrite, <address>, <size>)
 *         Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { <irq> }
 *       })
 *     }
 *     Device (VR01) { ... _UID 1 ... }
 *   }
 * }
 * ```
 *
 * Device `i` is named `VR` plus `i` in two upper-case hex digits and has `_UID` `i`. Header
 * (§5.2.6): OEM ID `PVKIT`, Creator ID `PVKT`, Creator Revision 1, OEM Revision 1.
 * Linux's virtio_mmio driver matches `_HID` and takes the first memory and interrupt
 * resource of `_CRS` (§6.2.2). Load the table with {@link acpiEarlyCpio}; the guest needs
 * ACPI enabled (v86 `acpi: true`).
 *
 * @param devices - 1 to 256 devices, with non-overlapping windows and distinct IRQs
 * @param options - see {@link VirtioMmioSsdtOptions}
 * @returns the complete table, checksummed
 * @throws Error on a device list or an option that cannot be described (a host mistake)
 */
export function virtioMmioSsdt(
  devices: readonly VirtioMmioAcpiDevice[],
  options: VirtioMmioSsdtOptions = {},
): Uint8Array {
  const tableId = options.oemTableId ?? DEFAULT_TABLE_ID;
  if (!/^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,8}$/.test(tableId)) {
    throw new Error(`OEM Table ID "${tableId}" must be 1 to 8 printable ASCII characters`);
  }
  checkDevices(devices);
  const scopeBody = [ROOT_CHAR, ...nameSeg("_SB_")];
  devices.forEach((d, i) => {
    for (const b of defDevice(i, d)) scopeBody.push(b);
  });
  return definitionBlock("SSDT", 2, tableId, withPkgLength([SCOPE_OP], scopeBody));
}

/**
 * Builds the early cpio that Linux's ACPI table upgrade reads
 * (Documentation/admin-guide/acpi/initrd_table_override.rst): an uncompressed newc archive
 * holding `kernel/firmware/acpi/<name>.aml` for each table, after the directories
 * `kernel`, `kernel/firmware` and `kernel/firmware/acpi`. It must be the first part of
 * the initrd, uncompressed; the usual (compressed) initramfs may follow it directly.
 *
 * Each table is checked the way the kernel checks it (length field equal to the data
 * length, bytes summing to 0), because the kernel only logs and skips a bad table.
 *
 * @param tables - 1 to 64 tables (Linux reads at most 64), names unique
 * @returns the archive
 * @throws Error on a bad name, a duplicate name, or a table the kernel would reject
 */
export function acpiEarlyCpio(tables: readonly AcpiTableFile[]): Uint8Array {
  if (tables.length === 0) throw new Error("ACPI early cpio needs at least one table");
  if (tables.length > MAX_UPGRADE_TABLES) {
    throw new Error(
      `Linux upgrades at most ${MAX_UPGRADE_TABLES} ACPI tables, got ${tables.length}`,
    );
  }
  const dir = "kernel/firmware/acpi";
  const entries: CpioEntry[] = [
    ...parentDirs(`${dir}/x`).map((name) => ({ name, mode: CpioMode.DIR | 0o755 })),
  ];
  const seen = new Set<string>();
  for (const t of tables) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(t.name)) {
      throw new Error(`ACPI table file name "${t.name}" must be 1 to 64 of A-Z a-z 0-9 _ -`);
    }
    if (seen.has(t.name)) throw new Error(`ACPI table file name "${t.name}" is used twice`);
    seen.add(t.name);
    checkTable(t);
    entries.push({ name: `${dir}/${t.name}.aml`, mode: CpioMode.FILE | 0o644, data: t.data });
  }
  return cpioNewc(entries);
}

function checkTable(t: AcpiTableFile): void {
  const d = t.data;
  if (d.length < HEADER_LENGTH) {
    throw new Error(`ACPI table "${t.name}" is ${d.length} bytes, shorter than its header`);
  }
  const length = new DataView(d.buffer, d.byteOffset, d.byteLength).getUint32(4, true);
  if (length !== d.length) {
    throw new Error(`ACPI table "${t.name}" has length field ${length} but ${d.length} bytes`);
  }
  let sum = 0;
  for (const b of d) sum += b;
  if ((sum & 0xff) !== 0) throw new Error(`ACPI table "${t.name}" has a bad checksum`);
}
