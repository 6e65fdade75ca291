import {
  Rtl8139,
  Rtl8139Driver,
  Rtl8139DriverError,
  type Rtl8139DriverOptions,
  type Rtl8139Options,
} from "@pvkit/emulated-rtl8139";
import {
  assignPciBars,
  Bus,
  GuestMemory,
  type NetBackend,
  PciConfigPortAccess,
  PciHost,
} from "@pvkit/platform";
import { GuestAllocator } from "@pvkit/virtio-core";
import { deliverInterrupts } from "@pvkit/virtio-core/testing";

export { expectSameBytes } from "../../../test-utils/bytes.js";
export { rng } from "../../../test-utils/random.js";

/** PCI slot of the test NIC. */
export const RTL_SLOT = 4;
/** Where firmware puts the I/O BAR. */
export const IO_WINDOW = 0xc000;
/** Where firmware puts the memory BAR. */
export const MMIO_WINDOW = 0xfe00_0000;

export type DeviceOptions = Omit<Rtl8139Options, "backend" | "memory"> & { memoryBytes?: number };

/** A guest with an RTL8139 on `backend`, PCI-probed by "firmware", without a driver. */
export function rtlDevice(backend: NetBackend, options: DeviceOptions = {}) {
  const { memoryBytes, ...nicOptions } = options;
  const memory = GuestMemory.create(memoryBytes ?? 4 << 20);
  const allocator = new GuestAllocator(0x1000, memory.end - 0x1000);
  const bus = new Bus();
  const nic = new Rtl8139({ backend, memory, ...nicOptions });
  const host = new PciHost(bus);
  host.attach(nic, RTL_SLOT);
  host.mapConfigPorts();
  const cfg = new PciConfigPortAccess(bus, RTL_SLOT);
  const bars = assignPciBars(cfg, { io: IO_WINDOW, mem32: MMIO_WINDOW });
  const io = bars.find((b) => b.kind === "io")!.address;
  const mmio = bars.find((b) => b.kind === "mem32")!.address;
  return { memory, allocator, bus, nic, host, cfg, io, mmio, irq: nic.irq };
}

export type RtlDevice = ReturnType<typeof rtlDevice>;

/** A guest with an RTL8139 and the 8139too-like driver; received frames are copied. */
export function rtlGuest(
  backend: NetBackend,
  options: DeviceOptions & { driver?: Partial<Rtl8139DriverOptions> } = {},
) {
  const { driver: driverOptions, ...devOptions } = options;
  const d = rtlDevice(backend, devOptions);
  const received: Uint8Array[] = [];
  const route = { handler: (): void => {} };
  deliverInterrupts(d.irq, () => route.handler());
  const driver = Rtl8139Driver.open({
    bus: d.bus,
    memory: d.memory,
    allocator: d.allocator,
    config: d.cfg,
    onFrame: (f) => received.push(f.slice()),
    ...driverOptions,
  });
  if (driver instanceof Rtl8139DriverError) throw new Error(driver.message);
  route.handler = () => {
    driver.onInterrupt();
  };
  return { ...d, driver, received };
}

export type RtlGuest = ReturnType<typeof rtlGuest>;

/** Lets interrupts, polls and timers run. */
export async function settle(turns = 3): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((r) => setImmediate(r));
}

/** Sends `frame`, waiting for a free slot (bounded). */
export async function sendWait(g: RtlGuest, frame: Uint8Array): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (g.driver.send(frame)) return;
    await settle(1);
  }
  throw new Error("transmit never got a free slot");
}

/** A frame of `size` bytes from `src` to `dst` (EtherType 0x88b5), `seq` at offset 14. */
export function frameOf(
  src: Uint8Array,
  dst: Uint8Array,
  size: number,
  seq: number,
  rand: () => number,
): Uint8Array {
  const f = new Uint8Array(size);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let i = 14; i < size; i++) f[i] = rand() & 0xff;
  if (size >= 18) new DataView(f.buffer).setUint32(14, seq, true);
  return f;
}

/** The sequence number {@link frameOf} put in a frame. */
export function seqOf(f: Uint8Array): number {
  return new DataView(f.buffer, f.byteOffset).getUint32(14, true);
}

/** Bitwise IEEE CRC-32 (independent of the package's table-driven one). */
export function crc32Reference(bytes: Uint8Array): number {
  let c = 0xffff_ffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb8_8320 : c >>> 1;
  }
  return (c ^ 0xffff_ffff) >>> 0;
}

/** Sum of every drop counter. */
export function totalDrops(nic: Rtl8139): number {
  return Object.values(nic.stats.drops).reduce((a, b) => a + b, 0);
}
