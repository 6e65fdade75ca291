/**
 * A minimal guest for tests and benchmarks of any virtio device: guest memory with an
 * allocator, a `Bus`, and the device behind virtio-mmio or virtio-pci, probed the way
 * Linux probes it — everything a device package needs before its own driver takes over.
 *
 * @module
 */

import {
  assignPciBars,
  Bus,
  GuestMemory,
  IrqLine as Irq,
  type IrqLine,
  PciConfigPortAccess,
  PciHost,
} from "@pvkit/platform";
import type { VirtioDevice } from "../device.js";
import { GuestAllocator } from "../driver/allocator.js";
import { VirtioMmioDriverTransport } from "../driver/mmio-driver.js";
import { VirtioPciDriverTransport } from "../driver/pci-driver.js";
import type { VirtioDriverTransport } from "../driver/transport.js";
import { DriverError } from "../errors.js";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_VERSION_1,
  VirtioMmio,
} from "../spec.js";
import { VIRTIO_MMIO_WINDOW, VirtioMmioTransport } from "../transport/mmio.js";
import { VirtioPciTransport } from "../transport/pci.js";
import { MockSplitQueue } from "./mock-queue.js";

/** Which virtio transport the test guest uses. */
export type TestTransport = "mmio" | "pci";

/** Where the test guest puts its device. */
export const TEST_MMIO_BASE = 0xfeb0_0000;
/** PCI slot of the test guest's device (bus 0). */
export const TEST_PCI_SLOT = 3;

/** Options of {@link testGuest}. */
export interface TestGuestOptions {
  /** virtio-mmio (default) or virtio-pci (64-bit memory BAR, INTx). */
  readonly transport?: TestTransport;
  /** Guest RAM in bytes (default 16 MiB). */
  readonly memoryBytes?: number;
  /** Back guest RAM with a `SharedArrayBuffer`. */
  readonly shared?: boolean;
  /**
   * Use this guest memory instead of creating one (`memoryBytes` and `shared` are then
   * ignored) — e.g. a fuzzer's memory with canary guards around it.
   */
  readonly memory?: GuestMemory;
}

/** A guest with one virtio device probed on its transport, before any device driver. */
export interface TestGuest {
  readonly memory: GuestMemory;
  /** Allocator over all guest RAM above the first page. */
  readonly allocator: GuestAllocator;
  readonly bus: Bus;
  /** The device's interrupt line (INTx for PCI). */
  readonly irq: IrqLine;
  /** The driver-side transport, probed. */
  readonly transport: VirtioDriverTransport;
}

/**
 * Builds a guest around `device`: memory, allocator, bus, the device-side transport and
 * the probed driver-side transport.
 *
 * @throws Error when probing fails (a broken test setup, not guest input)
 */
export function testGuest(device: VirtioDevice, options: TestGuestOptions = {}): TestGuest {
  const memory =
    options.memory ??
    GuestMemory.create(options.memoryBytes ?? 16 << 20, {
      shared: options.shared ?? false,
    });
  const allocator = new GuestAllocator(0x1000, memory.end - 0x1000);
  const bus = new Bus();
  let irq: IrqLine;
  let transport: VirtioDriverTransport | DriverError;
  if ((options.transport ?? "mmio") === "mmio") {
    irq = new Irq("virtio-mmio");
    bus.map(
      "mmio",
      TEST_MMIO_BASE,
      VIRTIO_MMIO_WINDOW,
      new VirtioMmioTransport({ device, memory, irq }),
      "virtio-mmio",
    );
    transport = VirtioMmioDriverTransport.probe(bus, TEST_MMIO_BASE);
  } else {
    const pci = new VirtioPciTransport({ device, memory, name: "virtio-pci", layout: "mem64" });
    const host = new PciHost(bus);
    host.attach(pci, TEST_PCI_SLOT);
    host.mapConfigPorts();
    const cfg = new PciConfigPortAccess(bus, TEST_PCI_SLOT);
    assignPciBars(cfg, { io: 0xc000, mem32: 0xfe00_0000, mem64: 0x8_0000_0000 });
    transport = VirtioPciDriverTransport.probe(bus, cfg);
    irq = pci.irq;
  }
  if (transport instanceof DriverError) throw new Error(transport.message);
  return { memory, allocator, bus, irq, transport };
}

/**
 * Delivers an interrupt the way a CPU takes it: after the exit that raised it returns
 * (a microtask later), calling `handler` while the line stays high (bounded).
 * Install it before the driver probes, as a kernel requests its IRQ first: a line raised
 * during probing stays high and would otherwise never be seen to rise again.
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

/** Options of {@link rawMmioGuest}. */
export interface RawMmioGuestOptions {
  /** Guest RAM in bytes (default 1 MiB). */
  readonly memoryBytes?: number;
  /** Guest RAM to use instead of a new buffer of `memoryBytes` (e.g. a growable `WebAssembly.Memory`). */
  readonly memory?: GuestMemory;
  /** Feature bits the raw driver accepts (VERSION_1 is added). */
  readonly features?: bigint;
  /** One ring per queue to set up: where its raw rings live and its size. */
  readonly queues: readonly { readonly base: number; readonly size: number }[];
}

/** A device behind virtio-mmio driven by raw, unvalidated rings (see {@link rawMmioGuest}). */
export interface RawMmioGuest {
  readonly memory: GuestMemory;
  readonly bus: Bus;
  readonly irq: IrqLine;
  /** A 32-bit register read of the device's window. */
  read(offset: number): number;
  /** A 32-bit register write to the device's window. */
  write(offset: number, value: number): void;
  /** The raw rings, one per configured queue (replaced by {@link init}). */
  queues: MockSplitQueue[];
  /** Resets the device and brings it to DRIVER_OK again with fresh rings (§3.1.1). */
  init(): void;
  /** Writes QueueNotify for queue `index`. */
  notify(index: number): void;
}

/**
 * A guest whose "driver" is a test: the device is negotiated to exactly `features` and
 * its queues are set up on {@link MockSplitQueue}s through raw virtio-mmio register
 * writes, so a test can then put any chain, well-formed or hostile, on a ring.
 *
 * @throws Error when the device does not reach DRIVER_OK (a broken test setup)
 */
export function rawMmioGuest(device: VirtioDevice, options: RawMmioGuestOptions): RawMmioGuest {
  const memory = options.memory ?? GuestMemory.create(options.memoryBytes ?? 1 << 20);
  const irq = new Irq("virtio-mmio");
  const bus = new Bus();
  bus.map(
    "mmio",
    TEST_MMIO_BASE,
    VIRTIO_MMIO_WINDOW,
    new VirtioMmioTransport({ device, memory, irq }),
    "virtio-mmio",
  );
  const read = (offset: number): number => bus.read("mmio", TEST_MMIO_BASE + offset, 4);
  const write = (offset: number, value: number): void =>
    bus.write("mmio", TEST_MMIO_BASE + offset, 4, value >>> 0);
  const features = (options.features ?? 0n) | (1n << BigInt(VIRTIO_F_VERSION_1));
  const guest: RawMmioGuest = {
    memory,
    bus,
    irq,
    read,
    write,
    queues: [],
    init() {
      const ok = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
      write(VirtioMmio.STATUS, 0);
      write(VirtioMmio.STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
      write(VirtioMmio.STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
      for (const page of [0, 1]) {
        write(VirtioMmio.DRIVER_FEATURES_SEL, page);
        write(VirtioMmio.DRIVER_FEATURES, Number((features >> BigInt(32 * page)) & 0xffff_ffffn));
      }
      write(VirtioMmio.STATUS, ok);
      guest.queues = options.queues.map(({ base, size }, i) => {
        const mock = new MockSplitQueue(memory, size, { base });
        write(VirtioMmio.QUEUE_SEL, i);
        write(VirtioMmio.QUEUE_NUM, size);
        write(VirtioMmio.QUEUE_DESC_LOW, mock.descAddr);
        write(VirtioMmio.QUEUE_DRIVER_LOW, mock.availAddr);
        write(VirtioMmio.QUEUE_DEVICE_LOW, mock.usedAddr);
        write(VirtioMmio.QUEUE_READY, 1);
        return mock;
      });
      write(VirtioMmio.STATUS, ok | VIRTIO_CONFIG_S_DRIVER_OK);
      const status = read(VirtioMmio.STATUS);
      if (status !== (ok | VIRTIO_CONFIG_S_DRIVER_OK))
        throw new Error(`device did not reach DRIVER_OK (status 0x${status.toString(16)})`);
    },
    notify(index: number) {
      write(VirtioMmio.QUEUE_NOTIFY, index);
    },
  };
  guest.init();
  return guest;
}
