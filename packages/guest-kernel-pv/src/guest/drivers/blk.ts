/**
 * The kernel's block device: a thin adapter over `VirtioBlkDriver` (virtio-blk on
 * virtio-mmio, §5.2) — requests are posted with buffers already in guest memory (the
 * kernel's bounce pages), one notification per batch, completed from the interrupt.
 *
 * @module
 */

import type { GuestMemory } from "@pvkit/platform";
import { VirtioBlkDriver, VirtioBlkType } from "@pvkit/virtio-blk";
import { DriverError, type GuestAllocator, VirtioMmioDriverTransport } from "@pvkit/virtio-core";
import type { CpuBus } from "../arch/cpu-bus.js";
import { panic } from "../panic.js";

/** Completion: the device's status (0 = OK) or -1 when the request could not be posted. */
export type BlockDone = (status: number) => void;

/** What the kernel needs of a disk. */
export interface BlockDevice {
  /** Capacity in 512-byte sectors. */
  readonly sectors: number;
  /** Posts a read of `len` bytes at `sector` into guest memory at `gpa`. */
  read(sector: number, gpa: number, len: number, done: BlockDone): void;
  /** Posts a write of `len` bytes at `sector` from guest memory at `gpa`. */
  write(sector: number, gpa: number, len: number, done: BlockDone): void;
  /** Posts a cache flush. */
  flush(done: BlockDone): void;
  /** Notifies the device of what was posted. */
  commit(): void;
  /** The interrupt handler. */
  onInterrupt(): void;
  /** Queue notifications sent to the device so far. */
  kicks(): number;
}

/** Probes and opens the disk. */
export function openBlockDevice(
  base: number,
  bus: CpuBus,
  memory: GuestMemory,
  heap: GuestAllocator,
): BlockDevice {
  const t = VirtioMmioDriverTransport.probe(bus, base);
  if (t instanceof DriverError) panic("drivers/virtio_blk", t.message);
  const d = VirtioBlkDriver.create(t, { memory, allocator: heap, queueSize: 128, maxQueues: 1 });
  if (d instanceof DriverError) panic("drivers/virtio_blk", d.message);
  const post = (type: number, sector: number, gpa: number, len: number, done: BlockDone): void => {
    const buf = [{ addr: gpa, len }];
    const refused =
      type === VirtioBlkType.IN
        ? d.enqueue(type, sector, [], buf, (s) => done(s))
        : type === VirtioBlkType.OUT
          ? d.enqueue(type, sector, buf, [], (s) => done(s))
          : d.enqueue(type, 0, [], [], (s) => done(s));
    if (refused !== undefined) done(-1);
  };
  return {
    sectors: d.info.capacity,
    read: (sector, gpa, len, done) => post(VirtioBlkType.IN, sector, gpa, len, done),
    write: (sector, gpa, len, done) => post(VirtioBlkType.OUT, sector, gpa, len, done),
    flush: (done) => post(VirtioBlkType.FLUSH, 0, 0, 0, done),
    commit: () => d.commit(),
    kicks: () => d.stats.kicks,
    onInterrupt: () => {
      d.onInterrupt();
    },
  };
}
