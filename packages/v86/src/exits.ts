/**
 * Counts every exit a v86 guest takes to a JavaScript device — port I/O and MMIO — per
 * port and per MMIO address, whoever the device is (v86's own IDE disk and NICs included).
 * pvkit devices are also counted by their {@link Bus}; this counter puts v86's emulated
 * devices on the same scale for side-by-side comparisons.
 *
 * @module
 */

import type { V86Cpu } from "./v86-types.js";

type Fn = (...args: number[]) => number | undefined;

/** Exit counts of a range of ports or addresses. */
export interface ExitCount {
  /** Reads. */
  readonly reads: number;
  /** Writes. */
  readonly writes: number;
  /** Reads + writes. */
  readonly total: number;
}

/**
 * Wraps v86's port and MMIO dispatch (`cpu.io.port_*`, `cpu.mmap_*`) with counters.
 * Install it once per emulator; counting costs a few nanoseconds per exit.
 *
 * @example
 * ```ts
 * const exits = new V86ExitCounter(emulator.v86.cpu);
 * const before = exits.ports(0x1f0, 8);
 * // … the guest reads from its IDE disk …
 * exits.ports(0x1f0, 8).total - before.total;
 * ```
 */
export class V86ExitCounter {
  private readonly portReads = new Float64Array(0x1_0000);
  private readonly portWrites = new Float64Array(0x1_0000);
  private readonly mmio = new Map<number, { reads: number; writes: number }>();

  private readonly cpu: V86Cpu;

  /** @param cpu - the emulator's CPU (`emulator.v86.cpu`) */
  constructor(cpu: V86Cpu) {
    this.cpu = cpu;
    const io = cpu.io as unknown as Record<string, Fn>;
    for (const name of ["port_read8", "port_read16", "port_read32"]) {
      const f = io[name]!.bind(io);
      io[name] = (port: number) => {
        this.portReads[port & 0xffff]!++;
        return f(port);
      };
    }
    for (const name of ["port_write8", "port_write16", "port_write32"]) {
      const f = io[name]!.bind(io);
      io[name] = (port: number, value: number) => {
        this.portWrites[port & 0xffff]!++;
        return f(port, value);
      };
    }
    const c = cpu as unknown as Record<string, Fn>;
    for (const name of ["mmap_read8", "mmap_read32"]) {
      const f = c[name]!.bind(cpu);
      c[name] = (addr: number) => {
        this.mmioEntry(addr >>> 0).reads++;
        return f(addr);
      };
    }
    for (const name of [
      "mmap_write8",
      "mmap_write16",
      "mmap_write32",
      "mmap_write64",
      "mmap_write128",
    ]) {
      const f = c[name]!.bind(cpu);
      c[name] = (addr: number, ...values: number[]) => {
        this.mmioEntry(addr >>> 0).writes++;
        return f(addr, ...values);
      };
    }
  }

  private mmioEntry(addr: number): { reads: number; writes: number } {
    let e = this.mmio.get(addr);
    if (e === undefined) {
      e = { reads: 0, writes: 0 };
      this.mmio.set(addr, e);
    }
    return e;
  }

  /** Exits to ports `[first, first + count)` so far. */
  ports(first: number, count = 1): ExitCount {
    let reads = 0;
    let writes = 0;
    for (let p = first; p < first + count && p < 0x1_0000; p++) {
      reads += this.portReads[p]!;
      writes += this.portWrites[p]!;
    }
    return { reads, writes, total: reads + writes };
  }

  /** Exits to MMIO addresses `[first, first + length)` so far. */
  mmioRange(first: number, length: number): ExitCount {
    let reads = 0;
    let writes = 0;
    for (const [addr, e] of this.mmio) {
      if (addr >= first && addr < first + length) {
        reads += e.reads;
        writes += e.writes;
      }
    }
    return { reads, writes, total: reads + writes };
  }

  /**
   * Exits to the BARs of PCI function `devfn` on bus 0 (`slot << 3 | function`), at the
   * addresses its configuration space holds now (PCI Local Bus 3.0 §6.2.5.1: bit 0 set is
   * an I/O BAR), e.g. v86's own NE2000 (slot 5) or virtio-net (slot 10) wherever firmware
   * put them. BAR sizes come from the device's `pci_bars`.
   */
  pciFunction(devfn: number): ExitCount {
    const pci = this.cpu.devices.pci;
    const space = pci.device_spaces[devfn];
    const dev = pci.devices[devfn] as { pci_bars?: ({ size: number } | undefined)[] } | undefined;
    let reads = 0;
    let writes = 0;
    if (space === undefined || dev === undefined) return { reads, writes, total: 0 };
    (dev.pci_bars ?? []).forEach((bar, i) => {
      if (bar === undefined || i > 5) return;
      const v = space[4 + i]! >>> 0;
      const c =
        v & 1 ? this.ports(v & 0xfffc, bar.size) : this.mmioRange(v & 0xffff_fff0, bar.size);
      reads += c.reads;
      writes += c.writes;
    });
    return { reads, writes, total: reads + writes };
  }

  /** Every port and MMIO exit so far. */
  all(): ExitCount {
    const p = this.ports(0, 0x1_0000);
    let reads = p.reads;
    let writes = p.writes;
    for (const e of this.mmio.values()) {
      reads += e.reads;
      writes += e.writes;
    }
    return { reads, writes, total: reads + writes };
  }
}
