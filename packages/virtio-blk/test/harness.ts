import { Bus, GuestMemory, IrqLine } from "@pvkit/platform";
import {
  type BlockBackend,
  VirtioBlkDevice,
  VirtioBlkDriver,
  type VirtioBlkDriverOptions,
  type VirtioBlkOptions,
} from "@pvkit/virtio-blk";
import {
  DriverError,
  GuestAllocator,
  VIRTIO_MMIO_WINDOW,
  VirtioMmioDriverTransport,
  VirtioMmioTransport,
} from "@pvkit/virtio-core";
import { expect } from "vitest";

/** A guest with one virtio-blk disk, driver and device wired through a transport. */
export interface BlkRig {
  readonly memory: GuestMemory;
  readonly bus: Bus;
  readonly irq: IrqLine;
  readonly device: VirtioBlkDevice;
  readonly driver: VirtioBlkDriver;
}

export type Transport = "mmio";

const MMIO_BASE = 0xfeb0_0000;

/**
 * Delivers the interrupt the way a CPU would: after the exit that raised it returns
 * (a microtask later), calling the handler while the line stays high.
 */
export function deliverInterrupts(irq: IrqLine, handler: () => void): void {
  let scheduled = false;
  irq.onChange((high) => {
    if (!high || scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      for (let i = 0; i < 1000 && irq.level; i++) handler();
    });
  });
}

/** Builds a guest (16 MiB RAM by default) with a virtio-blk disk over `backend`. */
export function blkRig(
  backend: BlockBackend,
  options: {
    device?: Omit<VirtioBlkOptions, "backend">;
    driver?: Partial<VirtioBlkDriverOptions>;
    memoryBytes?: number;
    shared?: boolean;
  } = {},
): BlkRig {
  const memory = GuestMemory.create(options.memoryBytes ?? 16 << 20, {
    shared: options.shared ?? false,
  });
  const allocator = new GuestAllocator(0x1000, memory.end - 0x1000);
  const irq = new IrqLine("virtio-blk");
  const device = new VirtioBlkDevice({ backend, ...options.device });
  const bus = new Bus();
  bus.map(
    "mmio",
    MMIO_BASE,
    VIRTIO_MMIO_WINDOW,
    new VirtioMmioTransport({ device, memory, irq }),
    "virtio-blk",
  );
  const t = VirtioMmioDriverTransport.probe(bus, MMIO_BASE);
  if (t instanceof DriverError) throw new Error(t.message);
  const driver = VirtioBlkDriver.create(t, { memory, allocator, ...options.driver });
  if (driver instanceof DriverError) throw new Error(driver.message);
  deliverInterrupts(irq, () => driver.onInterrupt());
  return { memory, bus, irq, device, driver };
}

/** A deterministic pseudo-random byte pattern for `(seed, length)`. */
export function pattern(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * Asserts two byte arrays are equal, quickly (vitest's deep equality walks every index
 * as a property, which takes minutes on a disk image). On a mismatch, reports the first
 * differing offset and the bytes around it.
 */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const b = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.equals(b)) return;
  let i = 0;
  while (i < Math.min(a.length, b.length) && a[i] === b[i]) i++;
  expect({ length: a.length, at: i, bytes: [...a.subarray(i, i + 16)] }).toEqual({
    length: b.length,
    at: i,
    bytes: [...b.subarray(i, i + 16)],
  });
}
