import {
  type Bus,
  fillTransportChecksum,
  type GuestMemory,
  type IrqLine,
  type NetBackend,
} from "@pvkit/platform";
import { DriverError, type GuestAllocator, type VirtioDriverTransport } from "@pvkit/virtio-core";
import { deliverInterrupts, type TestTransport, testGuest } from "@pvkit/virtio-core/testing";
import {
  type NetFrameInfo,
  VirtioNetDevice,
  VirtioNetDriver,
  type VirtioNetDriverOptions,
  type VirtioNetOptions,
} from "@pvkit/virtio-net";

export { expectSameBytes } from "../../../test-utils/bytes.js";
export { rng } from "../../../test-utils/random.js";

export type Transport = TestTransport;

/** A received frame, copied. */
export interface Received {
  readonly frame: Uint8Array;
  readonly info: NetFrameInfo;
}

/** One guest: memory, bus, a virtio-net device on `backend`, and its driver. */
export interface NetGuest {
  readonly memory: GuestMemory;
  readonly allocator: GuestAllocator;
  readonly bus: Bus;
  readonly irq: IrqLine;
  readonly device: VirtioNetDevice;
  readonly transport: VirtioDriverTransport;
  readonly driver: VirtioNetDriver;
  readonly received: Received[];
}

/** Wires a device on `backend` to a fresh guest through `transport`, without a driver. */
export function netDevice(
  backend: NetBackend,
  options: {
    transport?: Transport;
    device?: Omit<VirtioNetOptions, "backend">;
    memoryBytes?: number;
  } = {},
) {
  const device = new VirtioNetDevice({ backend, ...options.device });
  const g = testGuest(device, {
    ...(options.transport === undefined ? {} : { transport: options.transport }),
    ...(options.memoryBytes === undefined ? {} : { memoryBytes: options.memoryBytes }),
  });
  return { ...g, device };
}

/** A guest with a virtio-net NIC on `backend`; received frames are copied into `received`. */
export function netGuest(
  backend: NetBackend,
  options: {
    transport?: Transport;
    device?: Omit<VirtioNetOptions, "backend">;
    driver?: Partial<VirtioNetDriverOptions>;
    memoryBytes?: number;
  } = {},
): NetGuest {
  const d = netDevice(backend, options);
  const received: Received[] = [];
  // The handler is installed before the driver probes (as a kernel requests its IRQ
  // first): interrupts raised during probing are delivered once it exists.
  const route = { handler: (): void => {} };
  deliverInterrupts(d.irq, () => route.handler());
  const driver = VirtioNetDriver.create(d.transport, {
    memory: d.memory,
    allocator: d.allocator,
    onFrame: (frame, info) => received.push({ frame: frame.slice(), info: { ...info } }),
    ...options.driver,
  });
  if (driver instanceof DriverError) throw new Error(driver.message);
  route.handler = () => driver.onInterrupt();
  return { ...d, driver, received };
}

/** Lets interrupts, polls and timers run until nothing moves for a few turns. */
export async function settle(turns = 3): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((r) => setImmediate(r));
}

/**
 * An Ethernet + IPv4 + UDP frame of exactly `size` bytes (≥ 42) from `src` to `dst` with
 * random payload and a correct UDP checksum; the first 4 payload bytes carry `seq`.
 */
export function udpFrame(
  src: Uint8Array,
  dst: Uint8Array,
  size: number,
  seq: number,
  sport: number,
  rand: () => number,
  dport = 9000,
): Uint8Array {
  const f = new Uint8Array(size);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = 0x08;
  f[13] = 0x00;
  const ip = 14;
  const total = size - 14;
  f[ip] = 0x45;
  f[ip + 2] = total >> 8;
  f[ip + 3] = total & 0xff;
  f[ip + 8] = 64;
  f[ip + 9] = 17;
  f.set([10, 0, 0, src[5]!], ip + 12);
  f.set([10, 0, 0, dst[5]!], ip + 16);
  const u = ip + 20;
  f[u] = sport >> 8;
  f[u + 1] = sport & 0xff;
  f[u + 2] = dport >> 8;
  f[u + 3] = dport & 0xff;
  const ulen = total - 20;
  f[u + 4] = ulen >> 8;
  f[u + 5] = ulen & 0xff;
  const p = u + 8;
  for (let i = p; i < size; i++) f[i] = rand() & 0xff;
  if (size >= p + 4) new DataView(f.buffer).setUint32(p, seq, true);
  fillTransportChecksum(f);
  return f;
}

/** The sequence number {@link udpFrame} put in a frame. */
export function seqOf(frame: Uint8Array): number {
  return new DataView(frame.buffer, frame.byteOffset).getUint32(42, true);
}

/** Sum of every drop counter. */
export function totalDrops(device: VirtioNetDevice): number {
  return Object.values(device.stats.drops).reduce((a, b) => a + b, 0);
}
