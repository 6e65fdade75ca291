/**
 * Unit and hostile-guest tests of `attachPvkit` against a real v86 that is loaded but never
 * run: the test plays the guest by calling v86's own dispatch — `cpu.io.port_*` for port
 * I/O and configuration mechanism #1 (0xCF8/0xCFC), `cpu.mmap_*` for MMIO — exactly the
 * functions the wasm CPU calls on an exit. The virtio drivers of `@pvkit/virtio-core` run
 * on top of that dispatch (see {@link CpuBus}), so a virtio device is probed, initialised
 * and used the way Linux does it, through v86's real routing.
 */

import { readFile } from "node:fs/promises";
import { RTL_IMR, RTL_ISR, RTL_ISR_PUN_LINKCHG, Rtl8139 } from "@pvkit/emulated-rtl8139";
import {
  type AccessSize,
  type AddressSpace,
  Bus,
  EthernetSwitch,
  GuestMemory,
  PCI_CAP_ID_VNDR,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  type PciConfigAccess,
  PciConfigOffset,
} from "@pvkit/platform";
import { MemoryDisk, VirtioBlkDevice } from "@pvkit/virtio-blk";
import {
  DriverError,
  findVirtioCap,
  GuestAllocator,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_VERSION,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  type VirtioDevice,
  VirtioMmio,
  VirtioMmioDriverTransport,
  VirtioPciCapOffset,
  VirtioPciCommonCfg,
  VirtioPciDriverTransport,
  VirtioRngDevice,
  VirtioRngDriver,
} from "@pvkit/virtio-core";
import { MockSplitQueue } from "@pvkit/virtio-core/testing";
import fc from "fast-check";
import { V86 } from "v86/build/libv86-debug.mjs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type AttachPvkitOptions,
  attachPvkit,
  DEFAULT_V86_MMIO_BASE,
  type PvkitV86,
  planVirtioMmio,
  pvkitAcpiInitrd,
  V86_VIRTIO_MMIO_OFFSET,
} from "../src/attach.js";
import { V86ExitCounter } from "../src/exits.js";
import type { V86Cpu, V86Emulator, V86Io, V86Pci } from "../src/v86-types.js";
import { ensureFixture } from "./fixture.js";

const FIXTURE_TIMEOUT = 600_000;
const MEMORY_SIZE = 128 << 20;
const VGA_START = 0xa_0000;
const VGA_END = 0xc_0000;
const MAC = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
/** Where `attachPvkit` puts the first memory BAR (the RTL8139's BAR1). */
const RTL_MMIO = DEFAULT_V86_MMIO_BASE;
/** Where the first virtio-mmio device goes. */
const VMMIO = DEFAULT_V86_MMIO_BASE + V86_VIRTIO_MMIO_OFFSET;
/** First I/O BAR port `attachPvkit` hands out, before firmware would move it. */
const FIRST_PORT = 0xe800;
/** Size of the virtio-pci I/O BAR and of the RTL8139's BARs. */
const VIRTIO_IO_SIZE = 128;
const RTL_BAR_SIZE = 256;
/** PCI_COMMAND for a function firmware has enabled. */
const DECODE = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
/** v86's i440FX host bridge (devfn 0) and PIIX3 ISA bridge (devfn 8). */
const HOST_BRIDGE_IDS = 0x1237_8086;
const ISA_BRIDGE_IDS = 0x7000_8086;
const ISA_BRIDGE_DEVFN = 1 << 3;
/** PIIX PIRQA–D routing registers in the ISA bridge (0x80 = disabled). */
const PIRQ_ROUTE = 0x60;
const PIRQ_DISABLED = 0x80;

// ── v86 as the test sees it ──────────────────────────────────────────────────────────

/** v86's port dispatch, the entry points the wasm CPU calls for `in`/`out`. */
interface TestIo extends V86Io {
  port_read8(port: number): number;
  port_read16(port: number): number;
  port_read32(port: number): number;
  port_write8(port: number, value: number): void;
  port_write16(port: number, value: number): void;
  port_write32(port: number, value: number): void;
}

/** The CPU with the MMIO entry points the wasm CPU calls and v86's MMIO dispatch table. */
interface TestCpu extends V86Cpu {
  readonly io: TestIo;
  readonly devices: { readonly pci: V86Pci & { raise_irq(pciId: number): void } };
  mmap_read8(addr: number): number;
  mmap_read32(addr: number): number;
  mmap_write8(addr: number, value: number): void;
  mmap_write32(addr: number, value: number): void;
  /** Byte-write handlers per 128 KiB granule (what v86's own `mmap_write16` splits into). */
  readonly memory_map_write8: ((addr: number, value: number) => void)[];
}

let images: { wasm: string; bios: ArrayBuffer; vgaBios: ArrayBuffer };

async function load(path: string): Promise<ArrayBuffer> {
  const b = await readFile(path);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

beforeAll(async () => {
  const f = await ensureFixture();
  images = { wasm: f.wasm, bios: await load(f.bios), vgaBios: await load(f.vgaBios) };
}, FIXTURE_TIMEOUT);

/** A loaded, never-started v86 and what the test records of it. */
interface Machine {
  readonly emulator: V86;
  readonly cpu: TestCpu;
  /** `raise <line>` / `lower <line>` for every `device_raise_irq` / `device_lower_irq`. */
  readonly irqs: string[];
  /** Every `jit_dirty_cache(start, end)`. */
  readonly jit: [number, number][];
  /** Interrupt handlers by line, run like a CPU taking a level-triggered interrupt. */
  readonly handlers: Map<number, () => void>;
}

const live = new Set<V86>();

/** Destroys a machine a `describe` shares (per-test machines go in `afterEach`). */
async function destroyMachine(m: Machine | undefined): Promise<void> {
  if (m === undefined) return;
  live.delete(m.emulator);
  await m.emulator.destroy();
}

afterEach(async () => {
  for (const e of [...live]) {
    live.delete(e);
    await e.destroy();
  }
});

/** A fresh v86 (128 MiB, ACPI, no disks), loaded and not started, with IRQ and JIT taps. */
async function newMachine(keep = false): Promise<Machine> {
  const emulator = new V86({
    wasm_path: images.wasm,
    memory_size: MEMORY_SIZE,
    bios: { buffer: images.bios.slice(0) },
    vga_bios: { buffer: images.vgaBios.slice(0) },
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
    log_level: 0,
    acpi: true,
  });
  if (!keep) live.add(emulator);
  await new Promise<void>((resolve) => emulator.add_listener("emulator-loaded", () => resolve()));
  const cpu = (emulator as unknown as V86Emulator).v86.cpu as TestCpu;
  const irqs: string[] = [];
  const jit: [number, number][] = [];
  const handlers = new Map<number, () => void>();
  const level = new Map<number, boolean>();
  const raise = cpu.device_raise_irq.bind(cpu);
  const lower = cpu.device_lower_irq.bind(cpu);
  const dirty = cpu.jit_dirty_cache.bind(cpu);
  cpu.device_raise_irq = (line) => {
    irqs.push(`raise ${line}`);
    level.set(line, true);
    raise(line);
    const h = handlers.get(line);
    // The CPU takes the interrupt after the exit that raised it, and again while the
    // level-triggered line stays high (bounded).
    if (h !== undefined) {
      queueMicrotask(() => {
        for (let i = 0; i < 100 && level.get(line) === true; i++) h();
      });
    }
  };
  cpu.device_lower_irq = (line) => {
    irqs.push(`lower ${line}`);
    level.set(line, false);
    lower(line);
  };
  cpu.jit_dirty_cache = (start, end) => {
    jit.push([start, end]);
    dirty(start, end);
  };
  return { emulator, cpu, irqs, jit, handlers };
}

function attach(m: Machine, options: AttachPvkitOptions): PvkitV86 {
  return attachPvkit(m.emulator as unknown as V86Emulator, options);
}

// ── the guest: configuration cycles, port I/O and MMIO through v86's dispatch ────────

/** CONFIG_ADDRESS for bus 0 (configuration mechanism #1, PCI 3.0 §3.2.2.3.2). */
function configAddress(devfn: number, offset: number): number {
  return (0x8000_0000 | (devfn << 8) | (offset & 0xfc)) >>> 0;
}

/** A configuration read as Linux's `pci_conf1_read` does it: `outl` 0xCF8, then 0xCFC + n. */
function cfgRead(cpu: TestCpu, devfn: number, offset: number, size: AccessSize): number {
  cpu.io.port_write32(0xcf8, configAddress(devfn, offset));
  const port = 0xcfc + (offset & 3);
  const v =
    size === 1
      ? cpu.io.port_read8(port)
      : size === 2
        ? cpu.io.port_read16(port)
        : cpu.io.port_read32(port);
  return v >>> 0;
}

/** A configuration write as Linux's `pci_conf1_write` does it. */
function cfgWrite(cpu: TestCpu, devfn: number, offset: number, size: AccessSize, value: number) {
  cpu.io.port_write32(0xcf8, configAddress(devfn, offset));
  const port = 0xcfc + (offset & 3);
  if (size === 1) cpu.io.port_write8(port, value & 0xff);
  else if (size === 2) cpu.io.port_write16(port, value & 0xffff);
  else cpu.io.port_write32(port, value | 0);
}

/** {@link PciConfigAccess} for the virtio-core drivers, over 0xCF8/0xCFC. */
function configAccess(cpu: TestCpu, devfn: number): PciConfigAccess {
  return {
    read: (offset, size) => cfgRead(cpu, devfn, offset, size),
    write: (offset, size, value) => cfgWrite(cpu, devfn, offset, size, value),
  };
}

/**
 * The CPU side of the drivers' `Bus`: every access is the call the wasm CPU makes on an
 * exit. Addresses reach v86 as signed int32 like they do from wasm; 16-bit MMIO reads are
 * two byte reads (v86 has no 16-bit MMIO read import), 16-bit MMIO writes go to
 * `mmap_write16`.
 */
class CpuBus extends Bus {
  constructor(private readonly cpu: TestCpu) {
    super();
  }

  override read(space: AddressSpace, address: number, size: AccessSize): number {
    const { cpu } = this;
    if (space === "pio") {
      const v =
        size === 1
          ? cpu.io.port_read8(address)
          : size === 2
            ? cpu.io.port_read16(address)
            : cpu.io.port_read32(address);
      return v >>> 0;
    }
    const a = address | 0;
    if (size === 1) return cpu.mmap_read8(a);
    if (size === 2) return cpu.mmap_read8(a) | (cpu.mmap_read8((a + 1) | 0) << 8);
    return cpu.mmap_read32(a) >>> 0;
  }

  override write(space: AddressSpace, address: number, size: AccessSize, value: number): void {
    const { cpu } = this;
    if (space === "pio") {
      if (size === 1) cpu.io.port_write8(address, value & 0xff);
      else if (size === 2) cpu.io.port_write16(address, value & 0xffff);
      else cpu.io.port_write32(address, value | 0);
      return;
    }
    const a = address | 0;
    if (size === 1) cpu.mmap_write8(a, value & 0xff);
    else if (size === 2) cpu.mmap_write16(a, value & 0xffff);
    else cpu.mmap_write32(a, value | 0);
  }
}

/**
 * Guest RAM as the guest's own driver sees it: the same bytes as `cpu.mem8`, without the
 * device-side write observer, so `jit_dirty_cache` records only what devices wrote.
 */
function driverMemory(cpu: TestCpu): GuestMemory {
  const offset = cpu.mem8.byteOffset;
  return new GuestMemory([
    { base: 0, size: VGA_START, backing: cpu.wasm_memory, backingOffset: offset },
    {
      base: VGA_END,
      size: cpu.mem8.length - VGA_END,
      backing: cpu.wasm_memory,
      backingOffset: offset + VGA_END,
    },
  ]);
}

/** Sets PIRQ routing register `index` (0–3) the way SeaBIOS does: a byte write to the ISA bridge. */
function routePirq(cpu: TestCpu, index: number, line: number): void {
  cfgWrite(cpu, ISA_BRIDGE_DEVFN, PIRQ_ROUTE + index, 1, line);
}

/** The PIRQ register a function's INTx goes through (PIIX: (pin − 1 + slot − 1) mod 4). */
function pirqIndex(slot: number, pin: number): number {
  return (pin - 1 + slot - 1) & 3;
}

/** Entropy 0, 1, 2, … so the bytes a read returns are known. */
function counterSource(): { source: (buf: Uint8Array) => void; expected: (n: number) => number[] } {
  let next = 0;
  return {
    source: (buf) => {
      for (let i = 0; i < buf.length; i++) buf[i] = next++ & 0xff;
    },
    expected: (n) => Array.from({ length: n }, (_, i) => i & 0xff),
  };
}

function rtl(memory: GuestMemory, sw = new EthernetSwitch()): Rtl8139 {
  return new Rtl8139({ backend: sw.createPort("rtl"), memory, mac: Uint8Array.from(MAC) });
}

function blk(): VirtioBlkDevice {
  return new VirtioBlkDevice({ backend: new MemoryDisk(1 << 20) });
}

/** Fills `cpu.mem8[start, end)` with a pattern. */
function canary(cpu: TestCpu, start: number, end: number): void {
  for (let a = start; a < end; a++) cpu.mem8[a] = (a * 7 + 0x5a) & 0xff;
}

/** The first address in `[start, end)` whose canary changed, or -1. */
function canaryBroken(cpu: TestCpu, start: number, end: number): number {
  for (let a = start; a < end; a++) if (cpu.mem8[a] !== ((a * 7 + 0x5a) & 0xff)) return a;
  return -1;
}

/** The capability list (id and offset of each entry), walked like Linux's `pci_find_capability`. */
function walkCapabilities(cfg: PciConfigAccess): { id: number; offset: number }[] {
  const out: { id: number; offset: number }[] = [];
  if (!(cfg.read(PciConfigOffset.STATUS, 2) & 0x10)) return out;
  let pos = cfg.read(PciConfigOffset.CAPABILITY_LIST, 1);
  for (let ttl = 48; ttl > 0 && pos >= 0x40; ttl--) {
    pos &= ~3;
    const ent = cfg.read(pos, 2);
    out.push({ id: ent & 0xff, offset: pos });
    pos = ent >>> 8;
  }
  return out;
}

// ── 1. configuration space ───────────────────────────────────────────────────────────

describe("configuration space through 0xCF8/0xCFC", () => {
  let m: Machine;
  let pv: PvkitV86;
  let rng: VirtioRngDevice;

  beforeAll(async () => {
    m = await newMachine(true);
    rng = new VirtioRngDevice();
    pv = attach(m, {
      devices: [
        { kind: "virtio-pci", device: rng },
        { kind: "pci", create: (memory) => rtl(memory) },
        { kind: "virtio-pci", device: blk(), slot: 20 },
      ],
    });
  });
  afterAll(async () => destroyMachine(m));

  it("vendor, device, class and pin read back as each function's own, in every access width", () => {
    expect(pv.pci.map((p) => p.slot)).toEqual([8, 9, 20]);
    const ids = pv.pci.map((p) => cfgRead(m.cpu, p.slot << 3, 0, 4));
    expect(ids).toEqual([0x1044_1af4, 0x8139_10ec, 0x1042_1af4]);
    for (const p of pv.pci) {
      const d = p.slot << 3;
      expect(cfgRead(m.cpu, d, 0, 2)).toBe(p.fn.configRead(0, 2));
      expect(cfgRead(m.cpu, d, 2, 2)).toBe(p.fn.configRead(2, 2));
      expect(cfgRead(m.cpu, d, 0x08, 4)).toBe(p.fn.configRead(0x08, 4)); // revision + class
      expect(cfgRead(m.cpu, d, 0x2c, 4)).toBe(p.fn.configRead(0x2c, 4)); // subsystem
      expect(cfgRead(m.cpu, d, 0x3d, 1)).toBe(1); // INTA#
      expect(cfgRead(m.cpu, d, 0x0b, 1)).toBe(p.fn.configRead(0x0b, 1));
    }
    expect(cfgRead(m.cpu, 9 << 3, 0x08, 1)).toBe(0x10); // RTL8139 rev 0x10 (8139too)
    // v86's own functions still answer from v86.
    expect(cfgRead(m.cpu, 0, 0, 4)).toBe(HOST_BRIDGE_IDS);
    expect(cfgRead(m.cpu, ISA_BRIDGE_DEVFN, 0, 4)).toBe(ISA_BRIDGE_IDS);
    // An empty slot reads all-ones.
    expect(cfgRead(m.cpu, 21 << 3, 0, 4)).toBe(0xffff_ffff);
  });

  it("the capability list walks like Linux's: the virtio structures live in I/O BAR0", () => {
    for (const [index, withDeviceCfg] of [
      [0, false], // virtio-rng has no device configuration
      [2, true], // virtio-blk has
    ] as const) {
      const p = pv.pci[index]!;
      const cfg = configAccess(m.cpu, p.slot << 3);
      const caps = walkCapabilities(cfg);
      // The list the function holds, id for id.
      const own = walkCapabilities({ read: (o, s) => p.fn.configRead(o, s), write() {} });
      expect(caps).toEqual(own);
      expect(caps.filter((c) => c.id === PCI_CAP_ID_VNDR).length).toBeGreaterThanOrEqual(3);
      const bar0 = cfgRead(m.cpu, p.slot << 3, 0x10, 4);
      expect(bar0 & 1).toBe(1);
      const size = p.fn.bars[0]!.size;
      const bars = [
        { index: 0, kind: "io", size, prefetchable: false, address: bar0 & ~3 },
      ] as const;
      const types = [VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_CAP_ISR_CFG];
      if (withDeviceCfg) types.push(VIRTIO_PCI_CAP_DEVICE_CFG);
      else expect(findVirtioCap(cfg, bars, VIRTIO_PCI_CAP_DEVICE_CFG)).toBe(0);
      for (const type of types) {
        const pos = findVirtioCap(cfg, bars, type);
        expect(pos, `cfg_type ${type}`).toBeGreaterThanOrEqual(0x40);
        expect(cfg.read(pos, 1)).toBe(PCI_CAP_ID_VNDR);
        expect(cfg.read(pos + VirtioPciCapOffset.BAR, 1)).toBe(0);
        const off = cfg.read(pos + VirtioPciCapOffset.OFFSET, 4);
        const len = cfg.read(pos + VirtioPciCapOffset.LENGTH, 4);
        expect(len).toBeGreaterThan(0);
        expect(off + len).toBeLessThanOrEqual(size);
      }
    }
  });

  it("Command and Interrupt Line writes reach the function, read-only fields stay", () => {
    const d = 9 << 3;
    const fn = pv.pci[1]!.fn;
    cfgWrite(m.cpu, d, PciConfigOffset.COMMAND, 2, DECODE);
    expect(fn.configRead(PciConfigOffset.COMMAND, 2)).toBe(DECODE);
    expect(cfgRead(m.cpu, d, PciConfigOffset.COMMAND, 2)).toBe(DECODE);
    cfgWrite(m.cpu, d, PciConfigOffset.COMMAND, 2, PCI_COMMAND_MEMORY);
    expect(fn.configRead(PciConfigOffset.COMMAND, 2)).toBe(PCI_COMMAND_MEMORY);
    cfgWrite(m.cpu, d, PciConfigOffset.INTERRUPT_LINE, 1, 11);
    expect(fn.configRead(PciConfigOffset.INTERRUPT_LINE, 1)).toBe(11);
    expect(cfgRead(m.cpu, d, PciConfigOffset.INTERRUPT_LINE, 1)).toBe(11);
    // A 32-bit write of 0x3C..0x3F: the line changes, the pin does not.
    cfgWrite(m.cpu, d, 0x3c, 4, 0xffff_ff0a);
    expect(fn.configRead(0x3c, 2)).toBe(0x010a);
    cfgWrite(m.cpu, d, 0, 4, 0);
    expect(cfgRead(m.cpu, d, 0, 4)).toBe(0x8139_10ec);
  });
});

// ── 2. BARs ──────────────────────────────────────────────────────────────────────────

describe("BARs", () => {
  async function rig() {
    const m = await newMachine();
    const rng = new VirtioRngDevice();
    let nic: Rtl8139 | undefined;
    const pv = attach(m, {
      devices: [
        { kind: "virtio-pci", device: rng },
        {
          kind: "pci",
          create: (memory) => {
            nic = rtl(memory);
            return nic;
          },
        },
      ],
    });
    return { m, pv, rng, nic: nic!, cpu: m.cpu, vdev: 8 << 3, ndev: 9 << 3 };
  }

  it("start at the ports and MMIO address attachPvkit gave them", async () => {
    const { cpu, vdev, ndev, pv } = await rig();
    expect(cfgRead(cpu, vdev, 0x10, 4)).toBe(FIRST_PORT | 1);
    expect(cfgRead(cpu, ndev, 0x10, 4)).toBe((FIRST_PORT + 0x100) | 1);
    expect(cfgRead(cpu, ndev, 0x14, 4)).toBe(RTL_MMIO);
    // Decode is off until firmware enables it.
    expect(pv.pciHost.barMapping(vdev, 0)).toBeNull();
    expect(cpu.io.port_read32(FIRST_PORT + VirtioPciCommonCfg.DEVICE_FEATURE) >>> 0).toBe(
      0xffff_ffff,
    );
  });

  it("sizing: all-ones reads back size mask | type, restoring brings the device back", async () => {
    const { cpu, vdev, ndev } = await rig();
    cfgWrite(cpu, vdev, PciConfigOffset.COMMAND, 2, DECODE);
    cfgWrite(cpu, ndev, PciConfigOffset.COMMAND, 2, DECODE);
    cfgWrite(cpu, vdev, 0x10, 4, 0xffff_ffff);
    expect(cfgRead(cpu, vdev, 0x10, 4)).toBe((~(VIRTIO_IO_SIZE - 1) | 1) >>> 0);
    cfgWrite(cpu, ndev, 0x14, 4, 0xffff_ffff);
    expect(cfgRead(cpu, ndev, 0x14, 4)).toBe(~(RTL_BAR_SIZE - 1) >>> 0);
    cfgWrite(cpu, vdev, 0x10, 4, FIRST_PORT | 1);
    cfgWrite(cpu, ndev, 0x14, 4, RTL_MMIO);
    expect(cfgRead(cpu, vdev, 0x10, 4)).toBe(FIRST_PORT | 1);
    expect(cfgRead(cpu, ndev, 0x14, 4)).toBe(RTL_MMIO);
    expect(cpu.io.port_read16(FIRST_PORT + VirtioPciCommonCfg.NUM_QUEUES)).toBe(1);
    expect(cpu.mmap_read8(RTL_MMIO | 0)).toBe(MAC[0]);
  });

  it("moving the I/O BAR to 0xC000 moves the device; the old ports read all-ones", async () => {
    const { cpu, vdev, pv, rng } = await rig();
    cfgWrite(cpu, vdev, PciConfigOffset.COMMAND, 2, DECODE);
    cfgWrite(cpu, vdev, 0x10, 4, 0xc000);
    expect(cfgRead(cpu, vdev, 0x10, 4)).toBe(0xc001);
    expect(pv.pciHost.barMapping(vdev, 0)?.base).toBe(0xc000);
    const C = VirtioPciCommonCfg;
    cpu.io.port_write32(0xc000 + C.DEVICE_FEATURE_SELECT, 1);
    const hi = cpu.io.port_read32(0xc000 + C.DEVICE_FEATURE) >>> 0;
    expect(hi).toBe(Number(rng.deviceFeatures >> 32n));
    expect(hi & (1 << (VIRTIO_F_VERSION_1 - 32))).not.toBe(0);
    cpu.io.port_write32(0xc000 + C.DEVICE_FEATURE_SELECT, 0);
    expect(cpu.io.port_read32(0xc000 + C.DEVICE_FEATURE) >>> 0).toBe(
      Number(rng.deviceFeatures & 0xffff_ffffn),
    );
    expect(cpu.io.port_read32(FIRST_PORT + C.DEVICE_FEATURE) >>> 0).toBe(0xffff_ffff);
    expect(cpu.io.port_read8(FIRST_PORT + C.DEVICE_STATUS)).toBe(0xff);
    // A write to the old place does not reach the device.
    cpu.io.port_write8(FIRST_PORT + C.DEVICE_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    expect(rng.status).toBe(0);
    cpu.io.port_write8(0xc000 + C.DEVICE_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    expect(rng.status).toBe(VIRTIO_CONFIG_S_ACKNOWLEDGE);
  });

  it("an unaligned or over-wide I/O BAR value lands where the BAR then reads", async () => {
    const { cpu, vdev, ndev, pv } = await rig();
    cfgWrite(cpu, vdev, PciConfigOffset.COMMAND, 2, DECODE);
    cfgWrite(cpu, ndev, PciConfigOffset.COMMAND, 2, DECODE);
    // Low bits below the BAR size are not implemented (PCI 3.0 §6.2.5.1).
    cfgWrite(cpu, vdev, 0x10, 4, 0xc005);
    const bar = cfgRead(cpu, vdev, 0x10, 4);
    expect(bar).toBe(0xc001);
    expect(pv.pciHost.barMapping(vdev, 0)?.base).toBe(0xc000);
    expect(cpu.io.port_read16(0xc000 + VirtioPciCommonCfg.NUM_QUEUES)).toBe(1);
    expect(cpu.io.port_read8(0xc000 + VirtioPciCommonCfg.DEVICE_STATUS)).toBe(0);
    // Near the top of the port space: the whole BAR stays below 0x10000.
    cfgWrite(cpu, ndev, 0x10, 4, 0xfff1);
    expect(cfgRead(cpu, ndev, 0x10, 4)).toBe(0xff01);
    expect(cpu.io.port_read8(0xff00)).toBe(MAC[0]);
    expect(cpu.io.port_read8(0xff05)).toBe(MAC[5]);
  });

  it("byte writes to a BAR neither crash v86 nor desynchronise it from the function", async () => {
    const { cpu, vdev, ndev, pv } = await rig();
    cfgWrite(cpu, vdev, PciConfigOffset.COMMAND, 2, DECODE);
    cfgWrite(cpu, ndev, PciConfigOffset.COMMAND, 2, DECODE);
    // Byte 1 of BAR0: 0xE801 → 0xD001.
    expect(() => cfgWrite(cpu, vdev, 0x11, 1, 0xd0)).not.toThrow();
    expect(cfgRead(cpu, vdev, 0x10, 4)).toBe(0xd001);
    expect(cpu.io.port_read16(0xd000 + VirtioPciCommonCfg.NUM_QUEUES)).toBe(1);
    // A byte write into the memory BAR is refused like a dword write.
    expect(() => cfgWrite(cpu, ndev, 0x17, 1, 0x12)).not.toThrow();
    expect(cfgRead(cpu, ndev, 0x14, 4)).toBe(RTL_MMIO);
    expect(cpu.mmap_read8(RTL_MMIO | 0)).toBe(MAC[0]);
    // Expansion ROM and CardBus CIS, bytes and words.
    expect(() => cfgWrite(cpu, ndev, 0x31, 1, 0xff)).not.toThrow();
    expect(() => cfgWrite(cpu, ndev, 0x32, 2, 0xffff)).not.toThrow();
    expect(() => cfgWrite(cpu, ndev, 0x29, 1, 0xff)).not.toThrow();
    expect(cfgRead(cpu, ndev, 0x30, 4)).toBe(0);
    expect(pv.bus.stats().handlerFaults).toBe(0);
  });

  it("a memory BAR move is refused: the BAR keeps its address and MMIO there reaches the RTL8139", async () => {
    const { cpu, ndev, nic, pv } = await rig();
    cfgWrite(cpu, ndev, PciConfigOffset.COMMAND, 2, DECODE);
    cfgWrite(cpu, ndev, 0x14, 4, 0xfd00_0000);
    expect(cfgRead(cpu, ndev, 0x14, 4)).toBe(RTL_MMIO);
    expect(nic.bars[1]!.address).toBe(RTL_MMIO);
    expect(pv.pciHost.barMapping(ndev, 1)?.base).toBe(RTL_MMIO);
    const mac = [0, 1, 2, 3, 4, 5].map((i) => cpu.mmap_read8((RTL_MMIO + i) | 0));
    expect(mac).toEqual(MAC);
    const lo = MAC[0]! | (MAC[1]! << 8) | (MAC[2]! << 16) | (MAC[3]! << 24);
    expect(cpu.mmap_read32(RTL_MMIO | 0) >>> 0).toBe(lo >>> 0);
    const before = pv.bus.exits;
    cpu.mmap_read32(0xfd00_0000 | 0);
    expect(pv.bus.exits).toBe(before); // not pvkit's: v86 answered it
  });

  it("decode off (Command.IO/MEM = 0): reads are all-ones, writes are dropped", async () => {
    const { cpu, vdev, ndev, rng, pv } = await rig();
    const status = FIRST_PORT + VirtioPciCommonCfg.DEVICE_STATUS;
    cfgWrite(cpu, vdev, PciConfigOffset.COMMAND, 2, DECODE);
    expect(cpu.io.port_read16(FIRST_PORT + VirtioPciCommonCfg.NUM_QUEUES)).toBe(1);
    cfgWrite(cpu, vdev, PciConfigOffset.COMMAND, 2, PCI_COMMAND_MEMORY);
    expect(pv.pciHost.barMapping(vdev, 0)).toBeNull();
    expect(cpu.io.port_read16(FIRST_PORT + VirtioPciCommonCfg.NUM_QUEUES)).toBe(0xffff);
    expect(cpu.io.port_read32(FIRST_PORT) >>> 0).toBe(0xffff_ffff);
    cpu.io.port_write8(status, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    expect(rng.status).toBe(0);
    cfgWrite(cpu, vdev, PciConfigOffset.COMMAND, 2, PCI_COMMAND_IO);
    cpu.io.port_write8(status, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    expect(rng.status).toBe(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    // The RTL8139's memory BAR with Command.MEM clear.
    cfgWrite(cpu, ndev, PciConfigOffset.COMMAND, 2, PCI_COMMAND_IO);
    expect(cpu.mmap_read8(RTL_MMIO | 0)).toBe(0xff);
    expect(cpu.mmap_read32(RTL_MMIO | 0) >>> 0).toBe(0xffff_ffff);
    cfgWrite(cpu, ndev, PciConfigOffset.COMMAND, 2, PCI_COMMAND_MEMORY);
    expect(cpu.mmap_read8(RTL_MMIO | 0)).toBe(MAC[0]);
  });
});

// ── 3. 16-bit MMIO writes ────────────────────────────────────────────────────────────

describe("16-bit MMIO writes", () => {
  it("reach a pvkit register as one 16-bit access; elsewhere they take v86's byte path", async () => {
    const m = await newMachine();
    let nic: Rtl8139 | undefined;
    const pv = attach(m, {
      devices: [
        {
          kind: "pci",
          create: (memory) => {
            nic = rtl(memory);
            return nic;
          },
        },
      ],
    });
    const { cpu } = m;
    const d = 8 << 3;
    cfgWrite(cpu, d, PciConfigOffset.COMMAND, 2, DECODE);
    const exits = new V86ExitCounter(cpu);
    const mapping = pv.pciHost.barMapping(d, 1)!;
    expect(mapping.name).toBe("rtl8139.bar1");
    pv.bus.resetStats();
    mapping.perOffset!.fill(0);
    cpu.mmap_write16((RTL_MMIO + RTL_IMR) | 0, 0xe07f);
    expect(nic!.registers.read(RTL_IMR, 2)).toBe(0xe07f);
    expect(pv.bus.exits).toBe(1);
    expect(mapping.perOffset![RTL_IMR]).toBe(1);
    expect(mapping.perOffset![RTL_IMR + 1]).toBe(0);
    expect(exits.mmioRange(RTL_MMIO + RTL_IMR, 2)).toEqual({ reads: 0, writes: 1, total: 1 });

    // Outside pvkit's granules v86's own handler gets the two byte writes it always did.
    const vga = VGA_START >>> 17;
    const seen: [number, number][] = [];
    const original = cpu.memory_map_write8[vga]!;
    cpu.memory_map_write8[vga] = (addr, value) => {
      seen.push([addr >>> 0, value]);
      original(addr, value);
    };
    cpu.mmap_write16(VGA_START + 0x10, 0xbeef);
    cpu.memory_map_write8[vga] = original;
    expect(seen).toEqual([
      [VGA_START + 0x10, 0xef],
      [VGA_START + 0x11, 0xbe],
    ]);
    expect(pv.bus.exits).toBe(1);
  });
});

describe("V86ExitCounter.pciFunction", () => {
  it("counts the exits to v86's own NE2000 at its I/O BAR, and nothing for an empty slot", async () => {
    const m = await newMachine();
    const { cpu } = m;
    const exits = new V86ExitCounter(cpu);
    const ne2k = 5 << 3; // v86's default NIC (net_device ne2k), I/O BAR0 at 0x300
    const bar0 = cpu.devices.pci.device_spaces[ne2k]![4]! & 0xfffc;
    expect(bar0).toBe(0x300);
    cpu.io.port_read8(bar0 + 0x07);
    cpu.io.port_write8(bar0, 0x21);
    cpu.io.port_read8(bar0 + 0x40); // past its 32-byte BAR
    expect(exits.pciFunction(ne2k)).toEqual({ reads: 1, writes: 1, total: 2 });
    expect(exits.pciFunction(31 << 3)).toEqual({ reads: 0, writes: 0, total: 0 });
  });
});

// ── 4. INTx ──────────────────────────────────────────────────────────────────────────

describe("INTx through the PIIX PIRQ routing", () => {
  async function rig() {
    const m = await newMachine();
    let nic: Rtl8139 | undefined;
    // Slots 8 and 12 share PIRQD for INTA#; slot 9 uses PIRQA.
    const pv = attach(m, {
      devices: [
        { kind: "virtio-pci", device: new VirtioRngDevice(), slot: 8 },
        {
          kind: "pci",
          slot: 12,
          create: (memory) => {
            nic = rtl(memory);
            return nic;
          },
        },
        { kind: "virtio-pci", device: blk(), slot: 9 },
      ],
    });
    for (const s of [8, 9, 12]) cfgWrite(m.cpu, s << 3, PciConfigOffset.COMMAND, 2, DECODE);
    return { m, pv, nic: nic!, cpu: m.cpu };
  }

  it("a device's interrupt raises the line its PIRQ register routes to, as v86's own devices do", async () => {
    const { m, pv, nic, cpu } = await rig();
    expect(pirqIndex(8, 1)).toBe(3);
    expect(pirqIndex(12, 1)).toBe(3);
    routePirq(cpu, 3, 11);
    routePirq(cpu, 0, 10);
    expect(cpu.devices.pci.isa_bridge_space8[PIRQ_ROUTE + 3]).toBe(11);
    // v86's own PCI INTx for the same function picks the same line.
    cpu.devices.pci.raise_irq(12 << 3);
    expect(m.irqs).toEqual(["raise 11"]);
    m.irqs.length = 0;
    // The RTL8139 raises INTA# when ISR & IMR ≠ 0: unmask link change, pull the cable.
    cpu.mmap_write16((RTL_MMIO + RTL_IMR) | 0, RTL_ISR_PUN_LINKCHG);
    expect(m.irqs).toEqual([]);
    nic.setLinkUp(!nic.linkUp);
    expect(nic.irq.level).toBe(true);
    expect(m.irqs).toEqual(["raise 11"]);
    // Write-1-to-clear ISR: the line drops.
    cpu.mmap_write16((RTL_MMIO + RTL_ISR) | 0, RTL_ISR_PUN_LINKCHG);
    expect(nic.irq.level).toBe(false);
    expect(m.irqs).toEqual(["raise 11", "lower 11"]);
    // Slot 9 goes through PIRQA.
    pv.pci[2]!.fn.irq.raise();
    pv.pci[2]!.fn.irq.lower();
    expect(m.irqs.slice(2)).toEqual(["raise 10", "lower 10"]);
  });

  it("two pvkit devices on one line: one raise, and the lower only when both are low", async () => {
    const { m, pv, nic, cpu } = await rig();
    routePirq(cpu, 3, 11);
    const rngIrq = pv.pci[0]!.fn.irq;
    cpu.mmap_write16((RTL_MMIO + RTL_IMR) | 0, RTL_ISR_PUN_LINKCHG);
    nic.setLinkUp(!nic.linkUp);
    rngIrq.raise();
    expect(m.irqs).toEqual(["raise 11"]);
    cpu.mmap_write16((RTL_MMIO + RTL_ISR) | 0, RTL_ISR_PUN_LINKCHG);
    expect(nic.irq.level).toBe(false);
    expect(m.irqs).toEqual(["raise 11"]);
    rngIrq.lower();
    expect(m.irqs).toEqual(["raise 11", "lower 11"]);
    // Other order.
    rngIrq.raise();
    nic.setLinkUp(!nic.linkUp);
    rngIrq.lower();
    expect(m.irqs.slice(2)).toEqual(["raise 11"]);
    cpu.mmap_write16((RTL_MMIO + RTL_ISR) | 0, RTL_ISR_PUN_LINKCHG);
    expect(m.irqs.slice(2)).toEqual(["raise 11", "lower 11"]);
  });

  it("a disabled route (0x80) raises nothing, and the lower then sends nothing either", async () => {
    const { m, pv, cpu } = await rig();
    routePirq(cpu, 3, PIRQ_DISABLED | 11);
    const irq = pv.pci[0]!.fn.irq;
    irq.raise();
    irq.lower();
    expect(m.irqs).toEqual([]);
    // Routed again: the next interrupt goes out.
    routePirq(cpu, 3, 11);
    irq.raise();
    expect(m.irqs).toEqual(["raise 11"]);
    // The lower goes to the line that was raised even if the route changed meanwhile.
    routePirq(cpu, 3, 10);
    irq.lower();
    expect(m.irqs).toEqual(["raise 11", "lower 11"]);
  });
});

// ── 5 + 6. data paths: virtio-rng over virtio-pci and virtio-mmio ───────────────────

describe("virtio-rng driven through v86's dispatch", () => {
  it("virtio-pci: Linux-style probe, 32 bytes, INTx on the PIRQ line, JIT told of exactly the DMA", async () => {
    const m = await newMachine();
    const { cpu } = m;
    const src = counterSource();
    const rng = new VirtioRngDevice({ source: src.source, queueSize: 64 });
    const pv = attach(m, { devices: [{ kind: "virtio-pci", device: rng }] });
    routePirq(cpu, pirqIndex(8, 1), 11);
    const memory = driverMemory(cpu);
    const allocator = new GuestAllocator(0x10_0000, 0x20_0000);
    const t = VirtioPciDriverTransport.probe(new CpuBus(cpu), configAccess(cpu, 8 << 3));
    if (t instanceof DriverError) throw new Error(t.message);
    expect(t.common.space).toBe("pio");
    expect(t.common.address).toBe(FIRST_PORT);
    expect(t.irqMode).toBe("intx");
    const driver = VirtioRngDriver.create(t, { memory, allocator });
    if (driver instanceof DriverError) throw new Error(driver.message);
    m.handlers.set(11, () => driver.onInterrupt());
    m.irqs.length = 0;
    m.jit.length = 0;
    pv.bus.resetStats();

    const bytes = await driver.read(32);
    expect([...bytes]).toEqual(src.expected(32));
    expect(m.irqs).toEqual(["raise 11", "lower 11"]);
    expect(pv.bus.stats().byDevice["virtio-pci-4.bar0"]?.exits).toBe(2); // notify + ISR read
    // The device's writes: the buffer (exactly its 32 bytes) and the used ring.
    const buffer = m.jit.filter(([s, e]) => e - s === 32);
    expect(buffer.length).toBe(1);
    const [start, end] = buffer[0]!;
    expect([...cpu.mem8.subarray(start, end)]).toEqual(src.expected(32));
    for (const [s, e] of m.jit) {
      expect(e).toBeGreaterThan(s);
      expect(s >= 0x10_0000 && e <= 0x20_0000, `range ${s}-${e} inside the driver's area`).toBe(
        true,
      );
    }
  });

  it("virtio-mmio: magic, version and ids at the planned addresses, IRQ on the planned line", async () => {
    const m = await newMachine();
    const { cpu } = m;
    const src = counterSource();
    const options: AttachPvkitOptions = {
      devices: [
        { kind: "virtio-mmio", device: new VirtioRngDevice({ source: src.source }) },
        { kind: "virtio-mmio", device: blk() },
        { kind: "virtio-mmio", device: new VirtioRngDevice(), irq: 16 },
      ],
    };
    const plan = planVirtioMmio(options);
    expect(plan).toEqual([
      { address: VMMIO, size: 0x200, irq: 3 },
      { address: VMMIO + 0x200, size: 0x200, irq: 5 },
      { address: VMMIO + 0x400, size: 0x200, irq: 16 },
    ]);
    const pv = attach(m, options);
    expect(pv.mmio.map((d) => [d.address, d.irq])).toEqual(plan.map((d) => [d.address, d.irq]));
    const ids = plan.map((d) => [
      cpu.mmap_read32((d.address + VirtioMmio.MAGIC_VALUE) | 0) >>> 0,
      cpu.mmap_read32((d.address + VirtioMmio.VERSION) | 0),
      cpu.mmap_read32((d.address + VirtioMmio.DEVICE_ID) | 0),
    ]);
    expect(ids).toEqual([
      [VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VERSION, 4],
      [VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VERSION, 2],
      [VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VERSION, 4],
    ]);
    // Nothing is mapped between the windows' end and the granule's end.
    expect(cpu.mmap_read32((VMMIO + 0x600) | 0) >>> 0).toBe(0xffff_ffff);

    const memory = driverMemory(cpu);
    const t = VirtioMmioDriverTransport.probe(new CpuBus(cpu), VMMIO);
    if (t instanceof DriverError) throw new Error(t.message);
    const driver = VirtioRngDriver.create(t, {
      memory,
      allocator: new GuestAllocator(0x30_0000, 0x40_0000),
    });
    if (driver instanceof DriverError) throw new Error(driver.message);
    m.handlers.set(3, () => driver.onInterrupt());
    m.irqs.length = 0;
    m.jit.length = 0;
    const bytes = await driver.read(48);
    expect([...bytes]).toEqual(src.expected(48));
    expect(m.irqs).toEqual(["raise 3", "lower 3"]);
    const buffer = m.jit.filter(([s, e]) => e - s === 48);
    expect(buffer.length).toBe(1);
    expect([...cpu.mem8.subarray(buffer[0]![0], buffer[0]![1])]).toEqual(src.expected(48));
    expect(pv.mmio[0]!.transport.device.status & VIRTIO_CONFIG_S_DRIVER_OK).toBe(
      VIRTIO_CONFIG_S_DRIVER_OK,
    );
  });

  it("the SSDT in pvkitAcpiInitrd names the planned windows and interrupts", () => {
    const options: AttachPvkitOptions = {
      devices: [
        { kind: "virtio-pci", device: new VirtioRngDevice() },
        { kind: "virtio-mmio", device: new VirtioRngDevice(), irq: 5 },
        { kind: "virtio-mmio", device: new VirtioRngDevice() },
      ],
      mmioBase: 0xfe00_0000,
    };
    const plan = planVirtioMmio(options);
    // The default list skips 5, which the first device named.
    expect(plan).toEqual([
      { address: 0xfe04_0000, size: 0x200, irq: 5 },
      { address: 0xfe04_0200, size: 0x200, irq: 3 },
    ]);
    const cpio = pvkitAcpiInitrd(options);
    const text = new TextDecoder("latin1").decode(cpio);
    expect(text).toContain("kernel/firmware/acpi/pvkit-vmmio.aml");
    expect(text).toContain("SSDT");
    expect(text).toContain("LNRO0005");
    const le32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
    for (const d of plan) {
      // Memory32Fixed (ReadWrite, address, size) and Interrupt (…) { irq } (ACPI 6.4 §6.4.3).
      const memory = [0x86, 9, 0, 1, ...le32(d.address), ...le32(d.size)];
      const irq = [0x89, 6, 0, 1, 1, ...le32(d.irq)];
      expect(indexOf(cpio, memory), `Memory32Fixed ${d.address.toString(16)}`).toBeGreaterThan(0);
      expect(indexOf(cpio, irq), `Interrupt ${d.irq}`).toBeGreaterThan(0);
    }
    expect(indexOf(cpio, [0x86, 9, 0, 1, ...le32(VMMIO)])).toBe(-1);
    expect(pvkitAcpiInitrd({ devices: [{ kind: "virtio-pci", device: blk() }] }).length).toBe(0);
  });

  it("refuses duplicate interrupts and bad MMIO bases", async () => {
    const dev = (irq?: number) =>
      ({
        kind: "virtio-mmio",
        device: new VirtioRngDevice() as VirtioDevice,
        ...(irq === undefined ? {} : { irq }),
      }) as const;
    expect(() => planVirtioMmio({ devices: [dev(5), dev(5)] })).toThrow(/interrupt 5/);
    expect(() => planVirtioMmio({ devices: [dev(), dev(3)] })).not.toThrow();
    expect(() => planVirtioMmio({ devices: [dev()], mmioBase: 0xfe81_0000 })).toThrow(/128 KiB/);
    expect(() => planVirtioMmio({ devices: [dev()], mmioBase: 2 ** 32 })).toThrow(/128 KiB/);
    expect(() => planVirtioMmio({ devices: [dev()], mmioBase: -0x2_0000 })).toThrow(/128 KiB/);
    expect(() => pvkitAcpiInitrd({ devices: [dev(7), dev(7)] })).toThrow(/interrupt 7/);
    const m = await newMachine();
    expect(() => attach(m, { devices: [dev(9), dev(9)] })).toThrow(/interrupt 9/);
    const m2 = await newMachine();
    expect(() => attach(m2, { devices: [dev()], mmioBase: 0x1234 })).toThrow(/128 KiB/);
  });
});

function indexOf(haystack: Uint8Array, needle: readonly number[]): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

// ── 6. guest memory ──────────────────────────────────────────────────────────────────

describe("guest memory", () => {
  it("is RAM without the VGA window; writes land in cpu.mem8 and are reported to the JIT", async () => {
    const m = await newMachine();
    const { cpu } = m;
    const pv = attach(m, { devices: [] });
    expect(pv.memory.regions.map((r) => [r.base, r.end])).toEqual([
      [0, VGA_START],
      [VGA_END, MEMORY_SIZE],
    ]);
    const data = Uint8Array.from({ length: 40 }, (_, i) => 0xc0 ^ i);
    expect(pv.memory.write(0x12_3456, data)).toBeUndefined();
    expect(m.jit).toEqual([[0x12_3456, 0x12_3456 + 40]]);
    expect([...cpu.mem8.subarray(0x12_3456, 0x12_3456 + 40)]).toEqual([...data]);
    expect(pv.memory.writeU32(0xc_0000, 0xdead_beef)).toBeUndefined();
    expect(m.jit[1]).toEqual([0xc_0000, 0xc_0004]);
    expect(cpu.mem8[0xc_0000]).toBe(0xef);
    // The VGA window, a write crossing into it, and past the end: refused, nothing written.
    canary(cpu, VGA_START - 0x100, VGA_END + 0x100);
    m.jit.length = 0;
    expect(pv.memory.write(VGA_START, data)).toBeDefined();
    expect(pv.memory.write(VGA_START - 16, data)).toBeDefined();
    expect(pv.memory.write(VGA_END - 16, data)).toBeDefined();
    expect(pv.memory.write(MEMORY_SIZE - 16, data)).toBeDefined();
    expect(pv.memory.writeU8(0xb_8000, 1)).toBeDefined();
    expect(canaryBroken(cpu, VGA_START - 0x100, VGA_END + 0x100)).toBe(-1);
    expect(m.jit).toEqual([]);
  });
});

// ── 7. hostile guest ─────────────────────────────────────────────────────────────────

describe("hostile guest", () => {
  const OK = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;

  async function rig() {
    const m = await newMachine();
    const rng = new VirtioRngDevice({ queueSize: 16 });
    const pv = attach(m, { devices: [{ kind: "virtio-pci", device: rng }] });
    routePirq(m.cpu, pirqIndex(8, 1), 11);
    const t = VirtioPciDriverTransport.probe(new CpuBus(m.cpu), configAccess(m.cpu, 8 << 3));
    if (t instanceof DriverError) throw new Error(t.message);
    /** Brings the device up to DRIVER_OK with requestq's rings where the test says. */
    const init = (rings: { desc: number; driver: number; device: number }) => {
      t.reset();
      t.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
      t.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
      t.writeDriverFeatures(1n << BigInt(VIRTIO_F_VERSION_1));
      t.setStatus(OK);
      expect(t.setupQueue(0, 16, rings)).toBeUndefined();
      t.setStatus(OK | VIRTIO_CONFIG_S_DRIVER_OK);
    };
    return { m, pv, rng, t, init, cpu: m.cpu, memory: driverMemory(m.cpu) };
  }

  it.each([
    ["in the VGA window", 0xa_0000],
    ["straddling the start of the VGA window", 0x9_ff80],
    ["at the end of the VGA window", 0xb_ff80],
    ["past the end of RAM", MEMORY_SIZE - 0x80],
    ["above 4 GiB", 2 ** 32],
  ])("rings %s: NEEDS_RESET, nothing written", async (_, base) => {
    const { t, init, cpu, rng, m } = await rig();
    const layout = MockSplitQueue.layout(16, base);
    const lo = VGA_START - 0x1000;
    const hi = VGA_END + 0x1000;
    canary(cpu, lo, hi);
    canary(cpu, MEMORY_SIZE - 0x1000, MEMORY_SIZE);
    init({ desc: layout.desc, driver: layout.avail, device: layout.used });
    t.notify(0);
    expect(t.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(rng.queues[0]!.isActive).toBe(false);
    expect(canaryBroken(cpu, lo, hi)).toBe(-1);
    expect(canaryBroken(cpu, MEMORY_SIZE - 0x1000, MEMORY_SIZE)).toBe(-1);
    expect(m.jit.filter(([s, e]) => e > lo && s < hi)).toEqual([]);
  });

  it.each([
    ["in the VGA window", 0xb_0000, 64],
    ["straddling the start of the VGA window", VGA_START - 16, 64],
    ["straddling the end of the VGA window", VGA_END - 16, 64],
    ["straddling the end of RAM", MEMORY_SIZE - 16, 64],
  ])("a buffer %s: NEEDS_RESET, no byte of RAM or the window written", async (_, addr, len) => {
    const { t, init, cpu, memory, m } = await rig();
    const q = new MockSplitQueue(memory, 16, { base: 0x20_0000 });
    init({ desc: q.descAddr, driver: q.availAddr, device: q.usedAddr });
    const lo = VGA_START - 0x1000;
    const hi = VGA_END + 0x1000;
    canary(cpu, lo, hi);
    canary(cpu, MEMORY_SIZE - 0x1000, MEMORY_SIZE);
    m.irqs.length = 0;
    m.jit.length = 0;
    q.addChain([{ addr, len, writable: true }]);
    t.notify(0);
    expect(t.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(q.usedIdx()).toBe(0);
    expect(canaryBroken(cpu, lo, hi)).toBe(-1);
    expect(canaryBroken(cpu, MEMORY_SIZE - 0x1000, MEMORY_SIZE)).toBe(-1);
    // The device wrote (and reported) ring bytes only: used.flags, nothing of the buffer.
    for (const [start, end] of m.jit) {
      expect(start >= q.usedAddr && end <= q.end, `${start}-${end}`).toBe(true);
    }
    // The configuration-change interrupt reaches v86 on the PIRQ line.
    expect(m.irqs).toEqual(["raise 11"]);
    // A reset and a well-formed request work again.
    init({ desc: q.descAddr, driver: q.availAddr, device: q.usedAddr });
    q.clearRings();
    q.addChain([{ addr: 0x20_8000, len: 16, writable: true }]);
    t.notify(0);
    expect(t.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
    expect(q.readUsed()).toEqual([{ id: 0, len: 16 }]);
    expect(m.jit).toContainEqual([0x20_8000, 0x20_8010]);
  });
});

describe("hostile configuration writes (fast-check, one emulator)", () => {
  const vdev = 8 << 3;
  const ndev = 9 << 3;
  let m: Machine;
  let pv: PvkitV86;
  let nic: Rtl8139 | undefined;
  let theirs: () => string;
  let before: string;

  beforeAll(async () => {
    m = await newMachine(true);
    pv = attach(m, {
      devices: [
        { kind: "virtio-pci", device: new VirtioRngDevice() },
        {
          kind: "pci",
          create: (memory) => {
            nic = rtl(memory);
            return nic;
          },
        },
      ],
    });
    const pci = m.cpu.devices.pci;
    theirs = () =>
      pci.device_spaces
        .map((s, d) => (s === undefined || d === vdev || d === ndev ? "" : `${d}:${[...s]}`))
        .join(";");
    before = theirs();
  });
  afterAll(async () => destroyMachine(m));

  /**
   * What firmware does to put both I/O BARs at 0xC000 / 0xC100, take the memory BAR out of
   * sizing and turn decode on. The virtio BAR is written again last: v86 empties a BAR's
   * old port range when it moves it, whoever else was placed there meanwhile, so the
   * RTL8139's move may have emptied it.
   */
  function canonical(): void {
    const { cpu } = m;
    cfgWrite(cpu, vdev, PciConfigOffset.COMMAND, 2, DECODE);
    cfgWrite(cpu, ndev, PciConfigOffset.COMMAND, 2, DECODE);
    cfgWrite(cpu, vdev, 0x10, 4, 0xc001);
    cfgWrite(cpu, ndev, 0x10, 4, 0xc101);
    cfgWrite(cpu, vdev, 0x10, 4, 0xc001);
    // Any value that is not all-ones puts the memory BAR back at its fixed address.
    cfgWrite(cpu, ndev, 0x14, 4, 0);
  }

  /**
   * Identity intact; the memory BAR at its address or in sizing (nowhere else); v86's
   * functions untouched; after {@link canonical} both devices work.
   */
  function checkIntact(): void {
    const { cpu } = m;
    expect(cfgRead(cpu, vdev, 0, 4)).toBe(0x1044_1af4);
    expect(cfgRead(cpu, ndev, 0, 4)).toBe(0x8139_10ec);
    expect([RTL_MMIO, ~(RTL_BAR_SIZE - 1) >>> 0]).toContain(cfgRead(cpu, ndev, 0x14, 4));
    expect(cfgRead(cpu, 0, 0, 4)).toBe(HOST_BRIDGE_IDS);
    expect(cfgRead(cpu, ISA_BRIDGE_DEVFN, 0, 4)).toBe(ISA_BRIDGE_IDS);
    expect(theirs()).toBe(before);
    canonical();
    expect(cfgRead(cpu, ndev, 0x14, 4)).toBe(RTL_MMIO);
    expect(nic!.bars[1]!.address).toBe(RTL_MMIO);
    expect(cpu.io.port_read16(0xc000 + VirtioPciCommonCfg.NUM_QUEUES)).toBe(1);
    expect(cpu.io.port_read8(0xc100)).toBe(MAC[0]);
    expect(cpu.mmap_read8((RTL_MMIO + 5) | 0)).toBe(MAC[5]);
  }

  const value = fc.oneof(
    fc.integer({ min: 0, max: 0xffff_ffff }),
    fc.integer({ min: 0x1000, max: 0xffff }),
    fc.constantFrom(0xffff_ffff, 0xfff1, 0xc005, 0xfd00_0000, 0x1_c001, 0),
  );
  const size = fc.constantFrom<AccessSize>(1, 2, 4);

  it("any sequence never throws, keeps ids and the memory BAR, and leaves v86's devices alone", () => {
    canonical();
    const write = fc.record({
      devfn: fc.constantFrom(vdev, ndev),
      offset: fc.oneof(
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0x00, max: 0x3f }),
        fc.constantFrom(0x04, 0x10, 0x11, 0x12, 0x14, 0x15, 0x17, 0x30, 0x3c),
      ),
      size,
      value,
    });
    fc.assert(
      fc.property(fc.array(write, { minLength: 1, maxLength: 12 }), (writes) => {
        // Naturally aligned, as Linux's pci_conf1_write issues them (v86 itself asserts on
        // e.g. an `outl` to 0xCFD, whatever the device).
        for (const w of writes) {
          cfgWrite(m.cpu, w.devfn, w.offset & ~(w.size - 1), w.size, w.value);
        }
        checkIntact();
      }),
      { seed: 0x86_7e57, numRuns: 150, endOnFailure: true },
    );
    expect(pv.bus.stats().handlerFaults).toBe(0);
  });

  it("one write to a BAR leaves it decoded exactly where it then reads", () => {
    canonical();
    const write = fc.record({
      devfn: fc.constantFrom(vdev, ndev),
      offset: fc.integer({ min: 0x10, max: 0x17 }),
      size,
      value,
    });
    fc.assert(
      fc.property(write, (w) => {
        const { cpu } = m;
        cfgWrite(cpu, w.devfn, w.offset & ~(w.size - 1), w.size, w.value);
        const vbar = (cfgRead(cpu, vdev, 0x10, 4) & ~3) >>> 0;
        const nbar = (cfgRead(cpu, ndev, 0x10, 4) & ~3) >>> 0;
        expect(vbar % VIRTIO_IO_SIZE).toBe(0);
        expect(nbar % RTL_BAR_SIZE).toBe(0);
        const apart = vbar + VIRTIO_IO_SIZE <= nbar || nbar + RTL_BAR_SIZE <= vbar;
        if (apart && vbar >= 0x1000 && vbar < 0x1_0000) {
          expect(pv.pciHost.barMapping(vdev, 0)?.base).toBe(vbar);
          expect(cpu.io.port_read16(vbar + VirtioPciCommonCfg.NUM_QUEUES)).toBe(1);
          expect(cpu.io.port_read8(vbar + VirtioPciCommonCfg.DEVICE_STATUS)).toBe(0);
        }
        if (apart && nbar >= 0x1000 && nbar < 0x1_0000) {
          expect(pv.pciHost.barMapping(ndev, 0)?.base).toBe(nbar);
          expect(cpu.io.port_read8(nbar)).toBe(MAC[0]);
          expect(cpu.io.port_read8(nbar + 5)).toBe(MAC[5]);
        }
        checkIntact();
      }),
      { seed: 0x86_ba25, numRuns: 200, endOnFailure: true },
    );
  });
});

// ── 8. attach errors ─────────────────────────────────────────────────────────────────

describe("attachPvkit refuses", () => {
  it("a second attach on the same emulator", async () => {
    const m = await newMachine();
    attach(m, { devices: [{ kind: "virtio-pci", device: new VirtioRngDevice() }] });
    expect(() => attach(m, { devices: [] })).toThrow(/already attached/);
  });

  it.each([
    ["v86's host bridge", 0],
    ["v86's ISA bridge", 1],
    ["v86's NE2000", 5],
    ["a slot out of range", 32],
  ])("%s as a slot", async (_, slot) => {
    const m = await newMachine();
    expect(() =>
      attach(m, { devices: [{ kind: "virtio-pci", device: new VirtioRngDevice(), slot }] }),
    ).toThrow(/slot/);
  });

  it("a slot two specs both name", async () => {
    const m = await newMachine();
    expect(() =>
      attach(m, {
        devices: [
          { kind: "virtio-pci", device: new VirtioRngDevice(), slot: 10 },
          { kind: "virtio-pci", device: new VirtioRngDevice(), slot: 10 },
        ],
      }),
    ).toThrow(/slot 10/);
  });
});
