/**
 * The guest's view of the bus: every register access is one exit record through the
 * `Cpu`. It implements `BusAccess` of `@pvkit/platform`, so the existing guest-side
 * drivers (`VirtioMmioDriverTransport`, `Rtl8139Driver`, `EmulatedTimerGuest`) run on it
 * unchanged — a port or MMIO instruction of theirs becomes a `PIO_*` / `MMIO_*` exit.
 *
 * @module
 */

import type { AccessSize, AddressSpace, BusAccess } from "@pvkit/platform";
import { type Cpu, ExitOp } from "../../exit.js";

/** `BusAccess` over the `Cpu`'s exits. */
export class CpuBus implements BusAccess {
  /** @param cpu - the guest's CPU */
  constructor(private readonly cpu: Cpu) {}

  /** An `IN` or an MMIO load: one exit. */
  read(space: AddressSpace, address: number, size: AccessSize): number {
    const op = space === "pio" ? ExitOp.PIO_READ : ExitOp.MMIO_READ;
    const v = this.cpu.exit(op, address, size, 0, 0, 0, 0);
    // A refused access reads as all-ones, as an access nothing decodes does on x86.
    return v < 0 ? (size === 1 ? 0xff : size === 2 ? 0xffff : 0xffff_ffff) : v;
  }

  /** An `OUT` or an MMIO store: one exit. */
  write(space: AddressSpace, address: number, size: AccessSize, value: number): void {
    const op = space === "pio" ? ExitOp.PIO_WRITE : ExitOp.MMIO_WRITE;
    this.cpu.exit(op, address, size, value >>> 0, 0, 0, 0);
  }
}
