/**
 * The kernel's network device: a thin adapter (Linux's `net_device`) over the existing
 * pvkit guest drivers — `VirtioNetDriver` on virtio-mmio, or the 8139too-like
 * `Rtl8139Driver` on its MMIO window — so the network stack above sees one interface.
 * Their register accesses go through the `CpuBus` (one exit each); their NAPI polls run as
 * the kernel's soft interrupts.
 *
 * @module
 */

import { Rtl8139Driver, Rtl8139DriverError } from "@pvkit/emulated-rtl8139";
import type { GuestMemory } from "@pvkit/platform";
import { DriverError, type GuestAllocator, VirtioMmioDriverTransport } from "@pvkit/virtio-core";
import { VirtioNetDriver } from "@pvkit/virtio-net";
import type { NetMode } from "../../config.js";
import type { CpuBus } from "../arch/cpu-bus.js";
import { panic } from "../panic.js";

/** What the network stack needs of a NIC. */
export interface NetDevice {
  /** Which NIC. */
  readonly kind: NetMode;
  /** Its MAC address. */
  readonly mac: Uint8Array;
  /** Queues a frame for transmit. @returns false when the NIC has no room now */
  enqueue(frame: Uint8Array): boolean;
  /** Ends a batch of {@link enqueue}s (virtio: one notification if the device wants it). */
  commit(): void;
  /** The interrupt handler. */
  onInterrupt(): void;
  /** Called for each received frame (a view valid during the call). */
  onFrame: (frame: Uint8Array) => void;
  /** Called when transmit room appears after {@link enqueue} answered false. */
  onWritable: () => void;
  /** Queue notifications sent to the device so far (virtio kicks; 0 for the RTL8139). */
  kicks(): number;
}

/**
 * Probes and opens the NIC.
 *
 * @param schedule - queues a soft interrupt (NAPI poll)
 */
export function openNetDevice(
  kind: NetMode,
  base: number,
  bus: CpuBus,
  memory: GuestMemory,
  heap: GuestAllocator,
  schedule: (task: () => void) => void,
): NetDevice {
  const dev: NetDevice = {
    kind,
    mac: new Uint8Array(6),
    enqueue: () => false,
    commit: () => {},
    onInterrupt: () => {},
    onFrame: () => {},
    onWritable: () => {},
    kicks: () => 0,
  };
  if (kind === "virtio") {
    const t = VirtioMmioDriverTransport.probe(bus, base);
    if (t instanceof DriverError) panic("drivers/virtio_net", t.message);
    const d = VirtioNetDriver.create(t, {
      memory,
      allocator: heap,
      queueSize: 256,
      schedule,
      onFrame: (frame) => dev.onFrame(frame),
    });
    if (d instanceof DriverError) panic("drivers/virtio_net", d.message);
    d.on("writable", () => dev.onWritable());
    dev.mac.set(d.mac);
    dev.enqueue = (f) => d.enqueue(f, { pair: 0 });
    dev.commit = () => d.commit();
    dev.kicks = () => d.stats.kicks;
    dev.onInterrupt = () => {
      d.onInterrupt();
    };
    return dev;
  }
  const d = Rtl8139Driver.open({
    bus,
    memory,
    allocator: heap,
    registers: { space: "mmio", base },
    schedule,
    onFrame: (frame) => dev.onFrame(frame),
  });
  if (d instanceof Rtl8139DriverError) panic("drivers/8139too", d.message);
  d.on("writable", () => dev.onWritable());
  dev.mac.set(d.mac);
  dev.enqueue = (f) => d.send(f);
  dev.onInterrupt = () => {
    d.onInterrupt();
  };
  return dev;
}
