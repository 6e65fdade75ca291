/**
 * A virtio-blk disk, host side and guest side, on each transport.
 *
 * The host side is what an emulator adds to its machine: a `VirtioBlkDevice` over a
 * `MemoryDisk`, behind virtio-mmio or virtio-pci, on the `Bus` the CPU's register
 * accesses go through, with an `IrqLine` towards the interrupt controller.
 *
 * The guest side is pvkit's own TypeScript driver, `VirtioBlkDriver`, which reaches the
 * device only the way a guest kernel would: register accesses (exits) through a
 * guest-side transport, rings and buffers in guest memory, completions on an interrupt.
 * A toy CPU loop connects the two and delivers the interrupt.
 *
 * The guest writes, flushes and reads back sectors, checks the bytes, and the example
 * prints what it did and the exit counts the `Bus` recorded.
 *
 * Run: `npx tsx --conditions=@pvkit/source examples/block-device.ts [mmio|pci]`
 * (without `--conditions` it runs against the built packages, after `pnpm build`).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import {
  assignPciBars,
  Bus,
  GuestMemory,
  IrqLine,
  PciConfigPortAccess,
  PciHost,
} from "@pvkit/platform";
import { MemoryDisk, VirtioBlkDevice, VirtioBlkDriver, VirtioBlkType } from "@pvkit/virtio-blk";
import {
  DriverError,
  GuestAllocator,
  VIRTIO_MMIO_WINDOW,
  type VirtioDriverTransport,
  VirtioMmioDriverTransport,
  VirtioMmioTransport,
  VirtioPciDriverTransport,
  VirtioPciTransport,
} from "@pvkit/virtio-core";

/** The two transports a virtio device can sit behind. */
export type BlockTransport = "mmio" | "pci";

/** What one run did; the tests assert on it. */
export interface BlockDeviceResult {
  /** The transport used. */
  readonly transport: BlockTransport;
  /** The disk serial the driver read with GET_ID. */
  readonly serial: string;
  /** The capacity the driver read from the device's configuration space, in 512-byte sectors. */
  readonly capacitySectors: number;
  /** The bytes the guest wrote (two requests, at sectors 0 and 100, back to back). */
  readonly written: Uint8Array;
  /** The same ranges as the guest read them back through the driver. */
  readonly readBack: Uint8Array;
  /** The same ranges as they are in the disk image on the host (the `MemoryDisk`). */
  readonly onDisk: Uint8Array;
  /** Requests the device completed, by kind. */
  readonly requests: {
    readonly write: number;
    readonly flush: number;
    readonly read: number;
    readonly getId: number;
  };
  /** Exits while the guest probed and initialised the device. */
  readonly setupExits: number;
  /** Exits during the I/O that followed. */
  readonly ioExits: number;
  /** Exits per `Bus` mapping name, setup and I/O together. */
  readonly exitsByDevice: Readonly<Record<string, number>>;
  /** Interrupts the CPU delivered to the driver. */
  readonly interrupts: number;
  /** Bytes of the guest heap the driver held once bound (rings, indirect tables, request headers). */
  readonly heapAtSetup: number;
  /** Bytes of the guest heap held after the I/O: the same, as every bounce buffer was freed. */
  readonly heapInUse: number;
}

/** Options of {@link runBlockDevice}. */
export interface BlockDeviceOptions {
  /** Where the lines of the report go (default `console.log`). */
  readonly log?: (line: string) => void;
  /**
   * Leave the driver's interrupt handler unconnected, to see what that does: nothing
   * fails, the first request just never completes, and the toy CPU gives up.
   */
  readonly forgetInterrupts?: boolean;
}

// ── The guest's physical memory map ─────────────────────────────────────────────────
//
// 8 MiB of RAM at guest-physical address 0. The first MiB stands for what the guest
// kernel keeps for itself (on x86: the real-mode vectors, the BIOS data area, the kernel
// image...). From 1 MiB on, the kernel hands memory to its drivers: that range is the
// driver heap, the `GuestAllocator`. Rings, indirect tables, request headers and bounce
// buffers all come out of it, and the device reaches them by guest-physical address.
//
// The heap must lie inside guest RAM (the driver checks, and fails with OUT_OF_MEMORY
// otherwise) and must not overlap anything else the guest uses: the allocator only does
// bookkeeping and cannot know. The device registers are *not* RAM: they sit in the MMIO
// hole (0xfeb0_0000 for virtio-mmio, the BAR addresses for PCI), far above the heap.
// A real guest OS (Linux on v86, say) brings its own virtio drivers and its own memory
// management; the allocator is for guests written in TypeScript, like this one.

/** Bytes of guest RAM. */
const RAM_BYTES = 8 << 20;
/** First address of the driver heap (above what the guest kernel keeps). */
const HEAP_BASE = 0x10_0000;
/** Bytes in the driver heap: everything from 1 MiB to the end of RAM. */
const HEAP_BYTES = RAM_BYTES - HEAP_BASE;
/** Where the virtio-mmio register window is mapped (in the MMIO hole below 4 GiB). */
const MMIO_BASE = 0xfeb0_0000;
/** PCI slot (device number on bus 0) of the virtio-pci function. */
const PCI_SLOT = 3;
/** Size of the disk image. */
const DISK_BYTES = 1 << 20;

/**
 * A stand-in for an emulator's CPU loop.
 *
 * A real emulator executes guest instructions in slices and, between two instructions,
 * looks at its interrupt pin: when it is high (and the guest has interrupts enabled) it
 * jumps to the handler the guest kernel registered. Here the guest is TypeScript (an
 * async function calling the driver), one slice is one turn of the host's event loop, in
 * which the guest's promise continuations and the device's deferred work run, and the
 * handler is what the guest registered with {@link ToyCpu.requestIrq}: the driver's
 * `onInterrupt()`.
 *
 * The line is level-triggered: it stays high until the handler acknowledges the device
 * (a register access), so the CPU calls the handler while it is high. The CPU looks at
 * the line between slices rather than calling the handler from `irq.onChange`, because
 * the line often rises in the middle of an exit (the device completes a request during
 * the guest's notify write) and a CPU takes an interrupt only once the instruction that
 * caused it has finished.
 */
class ToyCpu {
  /** Slices run. */
  slices = 0;
  /** Interrupts delivered to the guest. */
  interrupts = 0;
  private handler: () => void = () => {};

  /**
   * @param irq - the interrupt line the CPU watches (in a real machine: its interrupt
   *   controller's output)
   * @param maxSlices - slices without the guest finishing before giving up
   */
  constructor(
    private readonly irq: IrqLine,
    private readonly maxSlices = 10_000,
  ) {}

  /** The guest kernel's `request_irq`: what runs when the CPU takes the interrupt. */
  requestIrq(handler: () => void): void {
    this.handler = handler;
  }

  /** Runs the guest program until it settles; rejects when it stops making progress. */
  async run<T>(guest: () => Promise<T>): Promise<T> {
    let finished = false;
    const result = guest().finally(() => {
      finished = true;
    });
    result.catch(() => {}); // the caller sees the rejection through the returned promise
    while (!finished) {
      if (++this.slices > this.maxSlices) {
        throw new Error(
          `the guest made no progress in ${this.maxSlices} slices: a request is still ` +
            "pending. Is the driver's onInterrupt() called when the IRQ line rises?",
        );
      }
      await nextSlice();
      for (let n = 0; this.irq.level && n < 64; n++) {
        this.interrupts++;
        this.handler();
      }
    }
    return result;
  }
}

/** Lets the host's event loop run once (device work, back-end I/O), as between two CPU slices. */
function nextSlice(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** The machine the emulator builds, and the guest-side transport its firmware/OS probes. */
interface Machine {
  readonly bus: Bus;
  readonly irq: IrqLine;
  readonly transport: VirtioDriverTransport;
}

/**
 * Host side plus probe, virtio-mmio: the device's 0x200-byte register window is mapped at
 * a fixed address (a real machine tells the guest where, in the device tree or ACPI), and
 * the device gets its own interrupt line.
 */
function mmioMachine(device: VirtioBlkDevice, memory: GuestMemory): Machine {
  const bus = new Bus();
  const irq = new IrqLine("virtio-blk");
  bus.map(
    "mmio",
    MMIO_BASE,
    VIRTIO_MMIO_WINDOW,
    new VirtioMmioTransport({ device, memory, irq }),
    "virtio-blk",
  );
  // Guest side: the guest-side transport is a different object from the device-side one.
  // It knows nothing of the device; it reads and writes the register window through the
  // Bus, so every access it makes is an exit (four for the probe: magic, version, ids).
  const transport = VirtioMmioDriverTransport.probe(bus, MMIO_BASE);
  if (transport instanceof DriverError) throw new Error(transport.message);
  return { bus, irq, transport };
}

/**
 * Host side plus probe, virtio-pci: the device is a PCI function on pvkit's host bridge
 * (an emulator with its own PCI code hosts the `VirtioPciTransport` itself, as a
 * `PciFunction`), with its registers in a memory BAR and INTx as its interrupt.
 */
function pciMachine(device: VirtioBlkDevice, memory: GuestMemory): Machine {
  const bus = new Bus();
  const pci = new VirtioPciTransport({ device, memory, name: "virtio-blk" });
  const host = new PciHost(bus);
  host.attach(pci, PCI_SLOT);
  host.mapConfigPorts(); // configuration mechanism #1: ports 0xCF8 / 0xCFC
  // What firmware does at boot: size each BAR and give it an address (a 64-bit BAR here,
  // placed above 4 GiB), then enable decoding and bus mastering.
  const config = new PciConfigPortAccess(bus, PCI_SLOT);
  assignPciBars(config, { io: 0xc000, mem32: 0xfe00_0000, mem64: 0x8_0000_0000 });
  // Guest side: walks the capability list to find the common, ISR, notify and device
  // configuration structures, all through configuration cycles and BAR accesses (exits).
  const transport = VirtioPciDriverTransport.probe(bus, config);
  if (transport instanceof DriverError) throw new Error(transport.message);
  return { bus, irq: pci.irq, transport };
}

/** Exits per mapping name, from the Bus's statistics. */
function exitsByDevice(bus: Bus): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, s] of Object.entries(bus.stats().byDevice)) out[name] = s.exits;
  return out;
}

/** A recognisable pattern: a text header, then bytes that depend on `seed` and the position. */
function sectorPattern(text: string, length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  out.set(new TextEncoder().encode(text).subarray(0, length));
  return out;
}

/** Concatenates byte arrays. */
function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Builds a machine with one virtio-blk disk on `transport`, binds `VirtioBlkDriver` to it
 * and runs a guest that writes, flushes, reads back and checks.
 *
 * @returns what happened
 * @throws Error when the guest reads back different bytes, or stops making progress
 */
export async function runBlockDevice(
  transport: BlockTransport,
  options: BlockDeviceOptions = {},
): Promise<BlockDeviceResult> {
  const log = options.log ?? console.log;

  // ── Host side: guest RAM, the disk, the device ──
  // An emulator passes its own RAM: GuestMemory.over(ramBuffer) with an ArrayBuffer,
  // SharedArrayBuffer or WebAssembly.Memory. The device reads and writes guest memory
  // only through this object, and only at the addresses the guest's rings name.
  const memory = GuestMemory.create(RAM_BYTES);
  const disk = new MemoryDisk(DISK_BYTES);
  const device = new VirtioBlkDevice({ backend: disk, serial: `pvkit-${transport}` });
  const machine = transport === "mmio" ? mmioMachine(device, memory) : pciMachine(device, memory);
  const { bus, irq } = machine;
  const cpu = new ToyCpu(irq);

  // ── Guest side: the driver ──
  // `create` runs the virtio initialisation (reset, feature negotiation, one ring per
  // request queue allocated from the heap and handed to the device, DRIVER_OK) and
  // reads the disk's configuration. Every step is a register access, i.e. an exit.
  const allocator = new GuestAllocator(HEAP_BASE, HEAP_BYTES);
  const driver = VirtioBlkDriver.create(machine.transport, { memory, allocator });
  if (driver instanceof DriverError) throw new Error(driver.message);
  // The guest's interrupt handler. Without it nothing fails: requests go out, the device
  // completes them and raises the line, and the driver's promises simply never settle,
  // because the driver learns of completions only in onInterrupt() (it acknowledges the
  // device and drains the used ring). Try `forgetInterrupts: true`.
  if (!options.forgetInterrupts) cpu.requestIrq(() => driver.onInterrupt());
  const setupExits = bus.exits;
  const heapAtSetup = allocator.stats().allocatedBytes;

  // ── The guest program ──
  const first = sectorPattern(`pvkit ${transport}: sectors 0-7`, 4096, 1);
  const second = sectorPattern(`pvkit ${transport}: sector 100`, 512, 2);
  const run = await cpu.run(async () => {
    const serial = await driver.getId();
    // Two writes in flight at once. Each is a chain on the ring (header, data, status
    // byte); the data goes through a bounce buffer from the heap, freed on completion
    // (`writeGuest` / `readGuest` take buffers already in guest memory instead). Each
    // call notifies the device (an exit) unless the device said it needs no notification;
    // for one per batch, see the driver's `enqueue` and `commit`. Completions that finish
    // together share one interrupt.
    await Promise.all([driver.write(0, first), driver.write(100, second)]);
    // FLUSH completes only once every write acknowledged before it is durable.
    await driver.flush();
    const back = await Promise.all([driver.read(0, first.length), driver.read(100, 512)]);
    return { serial, readBack: concat(back) };
  });

  const written = concat([first, second]);
  const onDisk = concat([disk.bytes.slice(0, 4096), disk.bytes.slice(100 * 512, 101 * 512)]);
  const same = (a: Uint8Array, b: Uint8Array) =>
    a.length === b.length && a.every((x, i) => x === b[i]);
  if (!same(run.readBack, written)) throw new Error(`${transport}: read back differs from written`);
  if (!same(onDisk, written)) throw new Error(`${transport}: the disk image differs from written`);

  const byType = device.stats.byType;
  const result: BlockDeviceResult = {
    transport,
    serial: run.serial,
    capacitySectors: driver.info.capacity,
    written,
    readBack: run.readBack,
    onDisk,
    requests: {
      write: byType[VirtioBlkType.OUT] ?? 0,
      flush: byType[VirtioBlkType.FLUSH] ?? 0,
      read: byType[VirtioBlkType.IN] ?? 0,
      getId: byType[VirtioBlkType.GET_ID] ?? 0,
    },
    setupExits,
    ioExits: bus.exits - setupExits,
    exitsByDevice: exitsByDevice(bus),
    interrupts: cpu.interrupts,
    heapAtSetup,
    heapInUse: allocator.stats().allocatedBytes,
  };

  log(
    `virtio-blk over virtio-${transport}: disk "${result.serial}", ${result.capacitySectors} sectors`,
  );
  log(`  wrote ${written.length} bytes (sectors 0-7 and 100), flushed, read them back: identical`);
  log(
    `  requests: ${result.requests.write} writes, ${result.requests.flush} flush, ` +
      `${result.requests.read} reads, ${result.requests.getId} GET_ID`,
  );
  const requests = Object.values(result.requests).reduce((a, b) => a + b, 0);
  log(
    `  exits: ${setupExits} to set up (firmware, probe, initialisation), ${result.ioExits} for the I/O ` +
      `(${(result.ioExits / requests).toFixed(1)} per request); interrupts: ${result.interrupts}`,
  );
  log(`  exits by Bus mapping: ${JSON.stringify(result.exitsByDevice)}`);
  log(`  guest heap: ${heapAtSetup} bytes held by the driver (rings, tables, headers)`);
  return result;
}

/**
 * Runs the example on virtio-mmio, then on virtio-pci.
 *
 * @param transports - which transports to run (default both)
 * @param options - where to log, and the failure demonstration
 * @returns one result per transport
 */
export async function main(
  transports: readonly BlockTransport[] = ["mmio", "pci"],
  options: BlockDeviceOptions = {},
): Promise<BlockDeviceResult[]> {
  const results: BlockDeviceResult[] = [];
  for (const t of transports) results.push(await runBlockDevice(t, options));
  return results;
}

// Run when executed directly (`tsx examples/block-device.ts [mmio|pci]`), not when imported.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = process.argv[2];
  if (arg !== undefined && arg !== "mmio" && arg !== "pci") {
    console.error(`usage: block-device.ts [mmio|pci] (got ${arg})`);
    process.exit(2);
  }
  await main(arg === undefined ? undefined : [arg]);
}
