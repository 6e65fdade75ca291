/**
 * `attachPvkit`: puts pvkit devices into a running v86 emulator — PCI functions on its
 * PCI bus (virtio-pci with any virtio device, the RTL8139, any {@link PciFunction}) and
 * virtio-mmio devices at fixed MMIO addresses — and hands them a {@link GuestMemory}
 * over v86's RAM.
 *
 * How it fits v86 0.5.462 (see the package README for the whole story):
 * - Configuration space: v86 keeps the BAR registers (it moves I/O BARs' port handlers
 *   itself and ignores moves of memory BARs); everything else is the function's own
 *   configuration space, so Command, Interrupt Line, capabilities and status behave as
 *   the device defines them.
 * - Every register access goes through a pvkit {@link Bus}, so exits are counted per
 *   device and register exactly as in pvkit's own runtimes.
 * - Interrupts: INTx follows v86's PIIX PIRQ routing; lines shared by several pvkit
 *   devices are or'ed (v86's own raise/lower calls are not counted).
 * - DMA writes report their range to v86's JIT (`jit_dirty_cache`), keeping compiled code
 *   coherent with what devices write.
 * - 16-bit MMIO writes, which v86 splits into two byte writes, reach the device whole.
 * - Wake-ups: an interrupt raised on a halted CPU is taken inside `device_raise_irq` and
 *   v86 schedules the next slice with `setImmediate` (`stop_idling`); the adapter counts
 *   slices and such raises in {@link PvkitV86.wakeups}.
 *
 * @module
 */

import {
  type AccessSize,
  allOnes,
  Bus,
  GuestMemory,
  IrqLine,
  PCI_NUM_BARS,
  PciConfigOffset,
  type PciFunction,
  PciHost,
} from "@pvkit/platform";
import {
  VIRTIO_MMIO_WINDOW,
  type VirtioDevice,
  VirtioMmioTransport,
  VirtioPciTransport,
} from "@pvkit/virtio-core";
import { acpiEarlyCpio, type VirtioMmioAcpiDevice, virtioMmioSsdt } from "./acpi.js";
import type { V86Cpu, V86Emulator, V86Pci, V86PciDevice } from "./v86-types.js";

/** v86 maps MMIO in 128 KiB granules (`mmap_register` needs aligned address and size). */
export const V86_MMIO_GRANULE = 0x2_0000;

/**
 * Default start of the MMIO window pvkit uses: inside the ACPI PCI hole
 * (0x80000000–0xFEBFFFFF), below the IO-APIC at 0xFEC00000.
 */
export const DEFAULT_V86_MMIO_BASE = 0xfe80_0000;

/** virtio-mmio windows start this far above the MMIO base (0xFE840000 by default). */
export const V86_VIRTIO_MMIO_OFFSET = 0x4_0000;

/** Bytes of memory BARs the window holds below the virtio-mmio devices. */
const BAR_SPACE = V86_VIRTIO_MMIO_OFFSET;

/**
 * Interrupt lines given to virtio-mmio devices when none is named: 3 and 5 (free ISA
 * lines in v86: COM2 and LPT2 are off by default), then IO-APIC inputs 16–23.
 */
export const DEFAULT_V86_MMIO_IRQS: readonly number[] = [3, 5, 16, 17, 18, 19, 20, 21, 22, 23];

/** First I/O port tried for I/O BARs before firmware moves them (v86 moves only ports ≥ 0x1000). */
const FIRST_IO_PORT = 0xe800;

/** First PCI slot tried for devices with no slot named. */
const FIRST_SLOT = 8;

/** A virtio device behind a virtio-pci transport (modern, structures in an I/O BAR, INTx). */
export interface V86VirtioPciSpec {
  /** Discriminator. */
  readonly kind: "virtio-pci";
  /** The device. */
  readonly device: VirtioDevice;
  /** PCI slot on bus 0 (default: the first free slot from 8). */
  readonly slot?: number;
  /** Name for the bus mappings (default `virtio-pci-<device id>`). */
  readonly name?: string;
}

/** A virtio device behind a virtio-mmio transport, declared to the guest in an ACPI SSDT. */
export interface V86VirtioMmioSpec {
  /** Discriminator. */
  readonly kind: "virtio-mmio";
  /** The device. */
  readonly device: VirtioDevice;
  /** Interrupt line (default: the next of {@link DEFAULT_V86_MMIO_IRQS}). */
  readonly irq?: number;
  /** Name for the bus mapping (default `virtio-mmio-<n>`). */
  readonly name?: string;
}

/** Any PCI function, built once the guest memory exists (e.g. the RTL8139). */
export interface V86PciFunctionSpec {
  /** Discriminator. */
  readonly kind: "pci";
  /** Builds the function over the guest memory the adapter provides. */
  readonly create: (memory: GuestMemory) => PciFunction;
  /** PCI slot on bus 0 (default: the first free slot from 8). */
  readonly slot?: number;
}

/** One device to attach. */
export type V86DeviceSpec = V86VirtioPciSpec | V86VirtioMmioSpec | V86PciFunctionSpec;

/** Options of {@link attachPvkit} (and of {@link pvkitAcpiInitrd}, which must see the same ones). */
export interface AttachPvkitOptions {
  /** The devices, in order. */
  readonly devices: readonly V86DeviceSpec[];
  /** 128 KiB-aligned start of the MMIO window (default {@link DEFAULT_V86_MMIO_BASE}). */
  readonly mmioBase?: number;
  /** The bus every register access goes through (default: a new one). */
  readonly bus?: Bus;
}

/** A PCI function as attached. */
export interface AttachedPciFunction {
  /** The function. */
  readonly fn: PciFunction;
  /** Its slot on bus 0. */
  readonly slot: number;
  /** The spec it came from. */
  readonly spec: V86VirtioPciSpec | V86PciFunctionSpec;
}

/** A virtio-mmio device as attached. */
export interface AttachedMmioDevice extends VirtioMmioAcpiDevice {
  /** Its transport (mapped on the bus at `address`). */
  readonly transport: VirtioMmioTransport;
  /** The spec it came from. */
  readonly spec: V86VirtioMmioSpec;
}

/** What {@link attachPvkit} returns. */
export interface PvkitV86 {
  /** Guest RAM as devices see it (the legacy VGA window 0xA0000–0xBFFFF excluded). */
  readonly memory: GuestMemory;
  /** The bus with every device's registers: its statistics are the exit counts. */
  readonly bus: Bus;
  /** The PCI host bridge view of the attached functions. */
  readonly pciHost: PciHost;
  /** Attached PCI functions, in spec order. */
  readonly pci: readonly AttachedPciFunction[];
  /** Attached virtio-mmio devices, in spec order. */
  readonly mmio: readonly AttachedMmioDevice[];
  /** How interrupts from pvkit devices reached this CPU (halted or not, at once or not). */
  readonly wakeups: V86WakeupStats;
}

/**
 * How interrupts from pvkit devices reached this v86 CPU (see {@link attachPvkit}), for
 * tests and traces. Counters only grow.
 */
export interface V86WakeupStats {
  /** Slices of v86's CPU loop run so far (`main_loop` calls: guest code between two event-loop turns). */
  slices: number;
  /** Interrupts pvkit raised on this CPU while it was halted. */
  haltedRaises: number;
  /**
   * Of those, how many left the CPU still halted: the interrupt did not reach the guest at
   * once (masked, or the line routed nowhere). v86 takes an interrupt raised on a halted CPU
   * inside `device_raise_irq` and schedules the next slice with `setImmediate`.
   */
  stillHalted: number;
  /**
   * Of {@link haltedRaises}, how many were raised while another v86 CPU on this thread was
   * executing (a frame from that guest, through a switch): this guest runs once that
   * guest's slice ends.
   */
  crossGuest: number;
}

/**
 * Where the virtio-mmio devices of `options` go: address, window size and interrupt,
 * in spec order. {@link attachPvkit} places them the same way.
 *
 * @throws Error on a misaligned base, too many devices or a duplicate interrupt line
 */
export function planVirtioMmio(options: AttachPvkitOptions): VirtioMmioAcpiDevice[] {
  const base = options.mmioBase ?? DEFAULT_V86_MMIO_BASE;
  if (!Number.isInteger(base) || base % V86_MMIO_GRANULE !== 0 || base < 0 || base >= 2 ** 32) {
    throw new Error(`mmioBase 0x${base.toString(16)} is not a 128 KiB-aligned 32-bit address`);
  }
  const out: VirtioMmioAcpiDevice[] = [];
  const defaults = DEFAULT_V86_MMIO_IRQS.filter(
    (irq) => !options.devices.some((d) => d.kind === "virtio-mmio" && d.irq === irq),
  );
  let next = 0;
  for (const d of options.devices) {
    if (d.kind !== "virtio-mmio") continue;
    const irq = d.irq ?? defaults[next++];
    if (irq === undefined) throw new Error("out of interrupt lines for virtio-mmio devices");
    if (out.some((o) => o.irq === irq))
      throw new Error(`interrupt ${irq} is given to two virtio-mmio devices`);
    const address = base + V86_VIRTIO_MMIO_OFFSET + out.length * VIRTIO_MMIO_WINDOW;
    if (address + VIRTIO_MMIO_WINDOW > 0xfec0_0000) throw new Error("too many virtio-mmio devices");
    out.push({ address, size: VIRTIO_MMIO_WINDOW, irq });
  }
  return out;
}

/**
 * The early initrd (an uncompressed cpio to put in front of the real initramfs) holding
 * the SSDT that declares the virtio-mmio devices of `options` (ACPI table upgrade,
 * Linux Documentation/admin-guide/acpi/initrd_table_override.rst). Empty when there are
 * no virtio-mmio devices. Boot with v86 `acpi: true` (and `acpiphp.disable=1` on the
 * kernel command line, see the README).
 *
 * @param options - the same options later given to {@link attachPvkit}
 * @returns the cpio bytes
 */
export function pvkitAcpiInitrd(options: AttachPvkitOptions): Uint8Array {
  const plan = planVirtioMmio(options);
  if (plan.length === 0) return new Uint8Array(0);
  return acpiEarlyCpio([{ name: "pvkit-vmmio", data: virtioMmioSsdt(plan) }]);
}

const attachedCpus = new WeakSet<object>();

/**
 * Attaches pvkit devices to a v86 emulator. Call it in the `emulator-loaded` event, before
 * `emulator.run()`, so firmware sees the devices.
 *
 * @example
 * ```ts
 * const options = { devices: [{ kind: "virtio-pci", device: new VirtioBlkDevice({ backend }) }] };
 * const emulator = new V86({ ...settings, initrd: { buffer: concat(pvkitAcpiInitrd(options), initramfs) } });
 * emulator.add_listener("emulator-loaded", () => {
 *   const pv = attachPvkit(emulator, options);
 *   emulator.run();
 * });
 * ```
 *
 * @param emulator - the v86 emulator (`new V86(...)`)
 * @param options - the devices
 * @returns the memory, bus and attached devices
 * @throws Error when the emulator already has pvkit attached, or a slot, port range or
 *   MMIO range is unavailable (host configuration mistakes)
 */
export function attachPvkit(emulator: V86Emulator, options: AttachPvkitOptions): PvkitV86 {
  const cpu = emulator.v86.cpu;
  if (attachedCpus.has(cpu)) throw new Error("pvkit is already attached to this emulator");
  attachedCpus.add(cpu);
  const pciBus = cpu.devices.pci;
  const bus = options.bus ?? new Bus();
  const memory = v86GuestMemory(cpu);
  const host = new PciHost(bus);
  const slice = watchSlices(cpu);
  const lines = new SharedLines(cpu, slice);
  const mmioBase = options.mmioBase ?? DEFAULT_V86_MMIO_BASE;
  const granules = new Set<number>();
  let nextBar = mmioBase;
  let nextPort = FIRST_IO_PORT;

  const ours = new Map<number, PciFunction>();
  const pci: AttachedPciFunction[] = [];
  for (const spec of options.devices) {
    if (spec.kind === "virtio-mmio") continue;
    const fn =
      spec.kind === "virtio-pci"
        ? new VirtioPciTransport({
            device: spec.device,
            memory,
            layout: "io",
            ...(spec.name === undefined ? {} : { name: spec.name }),
          })
        : spec.create(memory);
    const slot = spec.slot ?? freeSlot(pciBus, ours);
    const devfn = slot << 3;
    if (!Number.isInteger(slot) || slot < 1 || slot > 31 || pciBus.devices[devfn] !== undefined) {
      throw new Error(`PCI slot ${slot} is not free on v86's bus 0`);
    }
    host.attach(fn, slot);
    ours.set(devfn, fn);
    const barSizes: ({ size: number } | undefined)[] = [];
    const device = { name: fn.name };
    for (let i = 0; i < PCI_NUM_BARS; i++) {
      const bar = fn.bars[i];
      if (bar === undefined || bar.index !== i) {
        barSizes.push(undefined);
        continue;
      }
      barSizes.push({ size: bar.size });
      const reg = PciConfigOffset.BASE_ADDRESS_0 + 4 * i;
      if (bar.kind === "io") {
        const port = allocPorts(cpu, nextPort, bar.size);
        nextPort = port + bar.size;
        fn.configWrite(reg, 4, port);
        registerIoBar(cpu, device, host, bus, devfn, i, port, bar.size);
      } else {
        const address = alignUp(nextBar, bar.size);
        if (address + bar.size > mmioBase + BAR_SPACE) {
          throw new Error(`memory BAR ${i} of ${fn.name} does not fit the MMIO window`);
        }
        nextBar = address + bar.size;
        fn.configWrite(reg, 4, address);
        if (bar.kind === "mem64") fn.configWrite(reg + 4, 4, 0);
        for (let g = address; g < address + bar.size; g += V86_MMIO_GRANULE)
          granules.add(Math.floor(g / V86_MMIO_GRANULE));
      }
    }
    const space: number[] = [];
    for (let o = 0; o < 256; o++) space.push(fn.configRead(o, 1));
    const v86dev: V86PciDevice = {
      name: fn.name,
      pci_id: devfn,
      pci_space: space,
      pci_bars: barSizes,
    };
    pciBus.register_device(v86dev);
    fn.irq.onChange(lines.pciListener(pciBus, devfn, fn.interruptPin));
    pci.push({ fn, slot, spec });
  }
  if (ours.size > 0) routeConfigCycles(pciBus, host, ours);

  const mmio: AttachedMmioDevice[] = [];
  const plan = planVirtioMmio(options);
  let n = 0;
  for (const spec of options.devices) {
    if (spec.kind !== "virtio-mmio") continue;
    const place = plan[n]!;
    const name = spec.name ?? `virtio-mmio-${n}`;
    n++;
    const irq = new IrqLine(name);
    const transport = new VirtioMmioTransport({ device: spec.device, memory, irq });
    bus.map("mmio", place.address, place.size, transport, name);
    irq.onChange(lines.lineListener(place.irq));
    granules.add(Math.floor(place.address / V86_MMIO_GRANULE));
    mmio.push({ ...place, transport, spec });
  }
  if (granules.size > 0) mapMmio(cpu, bus, granules);

  return { memory, bus, pciHost: host, pci, mmio, wakeups: slice.stats };
}

/** A CPU's wake-up accounting. */
interface SliceWatch {
  readonly cpu: V86Cpu;
  readonly stats: V86WakeupStats;
}

/** The CPU whose slice is executing now (its `main_loop` is on the stack), if pvkit watches it. */
let runningSlice: SliceWatch | null = null;

/**
 * Counts the CPU's slices and notes which CPU is executing (several emulators can share one
 * JavaScript thread; only one runs at a time) by wrapping `main_loop`. A test double
 * without it gets zero slices.
 */
function watchSlices(cpu: V86Cpu): SliceWatch {
  const watch: SliceWatch = {
    cpu,
    stats: { slices: 0, haltedRaises: 0, stillHalted: 0, crossGuest: 0 },
  };
  const mainLoop = cpu.main_loop;
  if (mainLoop === undefined) return watch;
  cpu.main_loop = () => {
    const outer = runningSlice;
    runningSlice = watch;
    watch.stats.slices++;
    try {
      return mainLoop.call(cpu);
    } finally {
      runningSlice = outer;
    }
  };
  return watch;
}

/** Accounts for an interrupt pvkit raised on `target` while it was halted. */
function noteHaltedRaise(target: SliceWatch): void {
  target.stats.haltedRaises++;
  if (target.cpu.in_hlt?.[0]) target.stats.stillHalted++;
  if (runningSlice !== null && runningSlice !== target) target.stats.crossGuest++;
}

/**
 * Guest RAM of a v86 CPU as a {@link GuestMemory}: two regions, below 640 KiB and from
 * 768 KiB to the end, so devices can never DMA into the legacy VGA window (0xA0000–0xBFFFF,
 * memory-mapped I/O in v86). The ROM shadow above it is RAM, as with PAM shadowing on a
 * PIIX: SeaBIOS keeps its virtio rings and buffers in the E-segment. Writes are reported
 * to v86's JIT.
 */
export function v86GuestMemory(cpu: V86Cpu): GuestMemory {
  const size = cpu.mem8.length;
  const backing = cpu.wasm_memory;
  const offset = cpu.mem8.byteOffset;
  const memory = new GuestMemory([
    { base: 0, size: 0xa_0000, backing, backingOffset: offset },
    { base: 0xc_0000, size: size - 0xc_0000, backing, backingOffset: offset + 0xc_0000 },
  ]);
  memory.writeObserver = (address, length) => cpu.jit_dirty_cache(address, address + length);
  return memory;
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function freeSlot(pciBus: V86Pci, ours: Map<number, PciFunction>): number {
  for (let slot = FIRST_SLOT; slot < 32; slot++) {
    if (pciBus.devices[slot << 3] === undefined && !ours.has(slot << 3)) return slot;
  }
  throw new Error("no free PCI slot on v86's bus 0");
}

/** The first naturally aligned range of `size` free ports at or above `from`. */
function allocPorts(cpu: V86Cpu, from: number, size: number): number {
  const empty = cpu.io.empty_port_read8;
  for (let port = alignUp(from, size); port + size <= 0x1_0000; port += size) {
    let free = true;
    for (let p = port; p < port + size && free; p++) free = cpu.io.ports[p]!.read8 === empty;
    if (free) return port;
  }
  throw new Error(`no free range of ${size} I/O ports`);
}

/**
 * Installs v86 port handlers for an I/O BAR. Each handler knows its offset inside the
 * BAR, so it keeps working when v86 moves the entries after the guest moves the BAR; the
 * access goes to the bus at the BAR's current mapping (none while decode is off).
 */
function registerIoBar(
  cpu: V86Cpu,
  device: object,
  host: PciHost,
  bus: Bus,
  devfn: number,
  bar: number,
  port: number,
  size: number,
): void {
  const read = (offset: number, width: AccessSize): number => {
    const m = host.barMapping(devfn, bar);
    return m === null ? allOnes(width) : bus.read("pio", m.base + offset, width);
  };
  const write = (offset: number, width: AccessSize, value: number): void => {
    const m = host.barMapping(devfn, bar);
    if (m !== null) bus.write("pio", m.base + offset, width, value);
  };
  for (let k = 0; k < size; k++) {
    cpu.io.register_read(
      port + k,
      device,
      () => read(k, 1),
      () => read(k, 2),
      () => read(k, 4) | 0,
    );
    cpu.io.register_write(
      port + k,
      device,
      (v) => write(k, 1, v & 0xff),
      (v) => write(k, 2, v & 0xffff),
      (v) => write(k, 4, v >>> 0),
    );
  }
}

/** First byte past the six BAR registers (0x28). */
const BAR_END = PciConfigOffset.BASE_ADDRESS_0 + 4 * PCI_NUM_BARS;

/**
 * Routes configuration cycles for pvkit's functions: reads come from the function's
 * configuration space. Writes to the BAR registers go to v86 first (it owns them:
 * sizing, I/O moves, refused memory moves), always as one aligned 32-bit write, then to
 * the function as v86 left them; every other write goes to the function only (v86's copy
 * of the rest is never read back for these functions).
 *
 * Two things keep a hostile guest from hurting v86 here:
 * - v86's `pci_write8` (and `pci_write16` on the ROM BAR) asserts on sub-dword BAR writes
 *   and throws in the debug build, out of the CPU loop. A byte or word write to a BAR is
 *   merged into the current dword instead (what the bytes mean on hardware, PCI 3.0
 *   §6.2.5), and other offsets never reach v86.
 * - v86 moves an I/O BAR's port handlers to the written value as is. The function masks
 *   the bits below the BAR size, so an unaligned value would place the handlers off the
 *   BAR's decoded address (and one near 0xFFFF runs past the port table, another assert).
 *   I/O BAR values are aligned to the BAR size and limited to 16 address bits (x86 port
 *   space; Linux's `__pci_read_base` accepts upper bits that read 0) before v86 sees
 *   them; sizing writes pass unchanged.
 */
function routeConfigCycles(pciBus: V86Pci, host: PciHost, ours: Map<number, PciFunction>): void {
  const query = pciBus.pci_query.bind(pciBus);
  pciBus.pci_query = () => {
    query();
    const a = pciBus.pci_addr;
    const bdf = (a[2]! << 8) | a[1]!;
    if (ours.has(bdf)) pciBus.pci_response32[0] = host.configRead(bdf, a[0]! & 0xfc, 4) | 0;
  };
  const w8 = pciBus.pci_write8.bind(pciBus);
  const w16 = pciBus.pci_write16.bind(pciBus);
  const w32 = pciBus.pci_write32.bind(pciBus);
  /** @returns whether the write was for one of pvkit's functions (and handled) */
  const ourWrite = (address: number, size: AccessSize, value: number): boolean => {
    const bdf = (address >> 8) & 0xffff;
    const fn = ours.get(bdf);
    if (fn === undefined) return false;
    const off = address & 0xff;
    if (off < PciConfigOffset.BASE_ADDRESS_0 || off >= BAR_END) {
      host.configWrite(bdf, off, size, value);
      return true;
    }
    const dword = off & ~3;
    const space = pciBus.device_spaces[bdf]!;
    const shift = 8 * (off & 3);
    const mask = size === 4 ? 0xffff_ffff : (allOnes(size) << shift) >>> 0;
    let v = ((space[dword >> 2]! & ~mask) | ((value << shift) & mask)) >>> 0;
    const bar = fn.bars[(dword - PciConfigOffset.BASE_ADDRESS_0) >> 2];
    const sizing = (v | 3 | ((bar?.size ?? 1) - 1)) >>> 0 === 0xffff_ffff;
    if (bar?.kind === "io" && !sizing) v = (v & 0xffff & ~(bar.size - 1)) | 1;
    w32((address & ~0xff) | dword, v);
    host.configWrite(bdf, dword, 4, space[dword >> 2]! >>> 0);
    return true;
  };
  pciBus.pci_write8 = (address, value) => {
    if (!ourWrite(address, 1, value & 0xff)) w8(address, value);
  };
  pciBus.pci_write16 = (address, value) => {
    if (!ourWrite(address, 2, value & 0xffff)) w16(address, value);
  };
  pciBus.pci_write32 = (address, value) => {
    if (!ourWrite(address, 4, value >>> 0)) w32(address, value);
  };
}

/**
 * Maps the 128 KiB granules holding pvkit MMIO to the bus, and makes v86's 16-bit MMIO
 * writes (otherwise two byte writes) arrive as one 16-bit access there.
 */
function mapMmio(cpu: V86Cpu, bus: Bus, granules: Set<number>): void {
  for (const g of granules) {
    cpu.io.mmap_register(
      g * V86_MMIO_GRANULE,
      V86_MMIO_GRANULE,
      (a) => bus.read("mmio", a >>> 0, 1),
      (a, v) => bus.write("mmio", a >>> 0, 1, v & 0xff),
      (a) => bus.read("mmio", a >>> 0, 4) | 0,
      (a, v) => bus.write("mmio", a >>> 0, 4, v >>> 0),
    );
  }
  const split = cpu.mmap_write16.bind(cpu);
  cpu.mmap_write16 = (addr, value) => {
    if (granules.has(addr >>> 17)) bus.write("mmio", addr >>> 0, 2, value & 0xffff);
    else split(addr, value);
  };
}

/**
 * Level-triggered lines shared by pvkit devices: a line is raised in v86 while any pvkit
 * source on it is high.
 */
class SharedLines {
  private readonly high = new Map<number, number>();

  constructor(
    private readonly cpu: V86Cpu,
    private readonly slice: SliceWatch,
  ) {}

  private set(line: number, level: boolean): void {
    const count = this.high.get(line) ?? 0;
    const next = level ? count + 1 : Math.max(0, count - 1);
    this.high.set(line, next);
    if (count === 0 && next > 0) {
      const halted = this.cpu.in_hlt?.[0] !== undefined && this.cpu.in_hlt[0] !== 0;
      this.cpu.device_raise_irq(line);
      if (halted) noteHaltedRaise(this.slice);
    } else if (count > 0 && next === 0) this.cpu.device_lower_irq(line);
  }

  /** A listener for a source on a fixed line. */
  lineListener(line: number): (level: boolean) => void {
    return (level) => this.set(line, level);
  }

  /**
   * A listener for a PCI function's INTx: the line is looked up in the PIIX PIRQ routing
   * registers (0x60–0x63 of the ISA bridge, as firmware programmed them) when the source
   * rises, and the same line is lowered when it falls.
   */
  pciListener(pciBus: V86Pci, devfn: number, pin: number): (level: boolean) => void {
    let asserted = -1;
    return (level) => {
      if (level && asserted < 0 && pin >= 1) {
        const route = pciBus.isa_bridge_space8[0x60 + ((pin - 1 + (devfn >> 3) - 1) & 3)]!;
        if (route & 0x80) return; // routing disabled: the interrupt goes nowhere
        asserted = route & 0x0f;
        this.set(asserted, true);
      } else if (!level && asserted >= 0) {
        this.set(asserted, false);
        asserted = -1;
      }
    };
  }
}
