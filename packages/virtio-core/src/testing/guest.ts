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
import { VIRTIO_MMIO_WINDOW, VirtioMmioTransport } from "../transport/mmio.js";
import { VirtioPciTransport } from "../transport/pci.js";

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
  const memory = GuestMemory.create(options.memoryBytes ?? 16 << 20, {
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
