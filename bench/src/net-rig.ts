/**
 * Shared pieces of the network benchmarks: the discard/inject back-end and the two
 * in-process NIC rigs (virtio-net and the emulated RTL8139), each a guest with its driver
 * on a PCI function behind a `Bus`, interrupts delivered a microtask after the exit that
 * raised them.
 *
 * @module
 */

import { Rtl8139, Rtl8139Driver, Rtl8139DriverError } from "@pvkit/emulated-rtl8139";
import {
  assignPciBars,
  Bus,
  GuestMemory,
  type IrqLine,
  type NetBackend,
  type NetEndpoint,
  newNetBackendStats,
  PciConfigPortAccess,
  PciHost,
} from "@pvkit/platform";
import { DriverError, featureMask, GuestAllocator, VIRTIO_F_EVENT_IDX } from "@pvkit/virtio-core";
import { deliverInterrupts, type TestTransport, testGuest } from "@pvkit/virtio-core/testing";
import { VirtioNetDevice, VirtioNetDriver } from "@pvkit/virtio-net";

/** A back-end that discards what it is sent and hands the NIC what the bench injects. */
export class BenchBackend implements NetBackend {
  readonly name = "bench";
  readonly checksumOffload = true;
  readonly linkUp = true;
  readonly stats = newNetBackendStats();
  endpoint: NetEndpoint | null = null;
  attach(e: NetEndpoint): void {
    this.endpoint = e;
  }
  detach(): void {
    this.endpoint = null;
  }
  send(frame: Uint8Array): "sent" {
    this.stats.txFrames++;
    this.stats.txBytes += frame.length;
    return "sent";
  }
}

/** What a NIC rig offers a benchmark loop. */
export interface NicRig {
  readonly bus: Bus;
  readonly irq: IrqLine;
  readonly backend: BenchBackend;
  /** The NIC's MAC (frames to it pass its filter). */
  readonly mac: Uint8Array;
  /** Queues one frame for transmit; false when the NIC has no room now. */
  enqueue(frame: Uint8Array): boolean;
  /** Ends a burst of {@link enqueue} calls (virtio: one kick if the device wants one). */
  commit(): void;
  /** Frames the guest received. */
  received(): number;
  /** Frames the device dropped. */
  drops(): number;
  /** Queue notifications the device received (virtio; 0 for a NIC without them). */
  notifications(): number;
}

/** Frames held by a device while the guest has no room (the same for both NICs). */
export const RX_PENDING = 1024;

/** virtio-net: one queue pair of 256, EVENT_IDX as asked, on `transport` (default virtio-pci). */
export function virtioNetRig(eventIdx: boolean, transport: TestTransport = "pci"): NicRig {
  const backend = new BenchBackend();
  const device = new VirtioNetDevice({ backend, queueSize: 256, rxPending: RX_PENDING });
  const {
    memory,
    allocator,
    bus,
    irq,
    transport: t,
  } = testGuest(device, {
    memoryBytes: 32 << 20,
    transport,
  });
  let received = 0;
  const route = { handler: (): void => {} };
  deliverInterrupts(irq, () => route.handler());
  const driver = VirtioNetDriver.create(t, {
    memory,
    allocator,
    queueSize: 256,
    withoutFeatures: eventIdx ? 0n : featureMask(VIRTIO_F_EVENT_IDX),
    onFrame: () => {
      received++;
    },
  });
  if (driver instanceof DriverError) throw new Error(driver.message);
  route.handler = () => driver.onInterrupt();
  return {
    bus,
    irq,
    backend,
    mac: device.mac,
    enqueue: (f) => driver.enqueue(f, { pair: 0 }),
    commit: () => driver.commit(),
    received: () => received,
    drops: () => Object.values(device.stats.drops).reduce((a, b) => a + b, 0),
    notifications: () => device.notifications,
  };
}

/** The emulated RTL8139 with the 8139too-like driver on its MMIO BAR (8139too's default). */
export function rtl8139Rig(options: { useIo?: boolean } = {}): NicRig {
  const backend = new BenchBackend();
  const memory = GuestMemory.create(32 << 20);
  const allocator = new GuestAllocator(0x1000, memory.end - 0x1000);
  const bus = new Bus();
  const nic = new Rtl8139({ backend, memory, rxPending: RX_PENDING });
  const host = new PciHost(bus);
  host.attach(nic, 4);
  host.mapConfigPorts();
  const cfg = new PciConfigPortAccess(bus, 4);
  assignPciBars(cfg, { io: 0xc000, mem32: 0xfe00_0000 });
  let received = 0;
  const route = { handler: (): void => {} };
  deliverInterrupts(nic.irq, () => route.handler());
  const driver = Rtl8139Driver.open({
    bus,
    memory,
    allocator,
    config: cfg,
    useIo: options.useIo ?? false,
    onFrame: () => {
      received++;
    },
  });
  if (driver instanceof Rtl8139DriverError) throw new Error(driver.message);
  route.handler = () => {
    driver.onInterrupt();
  };
  return {
    bus,
    irq: nic.irq,
    backend,
    mac: nic.mac,
    enqueue: (f) => driver.send(f),
    commit: () => {},
    received: () => received,
    drops: () => Object.values(nic.stats.drops).reduce((a, b) => a + b, 0),
    notifications: () => 0,
  };
}

/** A few microtask turns: the guest "returns to the scheduler" so interrupts and polls run. */
export async function yieldTurns(): Promise<void> {
  for (let i = 0; i < 4; i++) await null;
}
