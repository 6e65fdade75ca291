import type { Bus, GuestMemory, IrqLine } from "@pvkit/platform";
import {
  type BlockBackend,
  VirtioBlkDevice,
  VirtioBlkDriver,
  type VirtioBlkDriverOptions,
  type VirtioBlkOptions,
} from "@pvkit/virtio-blk";
import { DriverError } from "@pvkit/virtio-core";
import { deliverInterrupts, type TestTransport, testGuest } from "@pvkit/virtio-core/testing";

export { expectSameBytes } from "../../../test-utils/bytes.js";

/** A guest with one virtio-blk disk, driver and device wired through a transport. */
export interface BlkRig {
  readonly memory: GuestMemory;
  readonly bus: Bus;
  readonly irq: IrqLine;
  readonly device: VirtioBlkDevice;
  readonly driver: VirtioBlkDriver;
}

/** Builds a guest (16 MiB RAM by default) with a virtio-blk disk over `backend`. */
export function blkRig(
  backend: BlockBackend,
  options: {
    transport?: TestTransport;
    device?: Omit<VirtioBlkOptions, "backend">;
    driver?: Partial<VirtioBlkDriverOptions>;
    memoryBytes?: number;
    shared?: boolean;
  } = {},
): BlkRig {
  const device = new VirtioBlkDevice({ backend, ...options.device });
  const g = testGuest(device, {
    ...(options.transport === undefined ? {} : { transport: options.transport }),
    ...(options.memoryBytes === undefined ? {} : { memoryBytes: options.memoryBytes }),
    ...(options.shared === undefined ? {} : { shared: options.shared }),
  });
  const route = { handler: (): void => {} };
  deliverInterrupts(g.irq, () => route.handler());
  const driver = VirtioBlkDriver.create(g.transport, {
    memory: g.memory,
    allocator: g.allocator,
    ...options.driver,
  });
  if (driver instanceof DriverError) throw new Error(driver.message);
  route.handler = () => driver.onInterrupt();
  return { memory: g.memory, bus: g.bus, irq: g.irq, device, driver };
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
