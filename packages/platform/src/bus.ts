/**
 * The `Bus`: where an emulator's CPU sends every MMIO and port-I/O access. It dispatches
 * by address range to device handlers and counts each access as one *exit* — the unit
 * pvkit's benchmarks measure (DESIGN.md, "An exit").
 *
 * @module
 */

/** Width of one register access in bytes. */
export type AccessSize = 1 | 2 | 4;

/** Mask of all-ones for an access size: what an unclaimed read returns (as on real buses). */
export function allOnes(size: AccessSize): number {
  return size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff;
}

/** A device's register window: offsets are relative to the start of the mapping. */
export interface IoHandler {
  /**
   * A read of `size` bytes at `offset` inside the window.
   * @returns the value, zero-extended to 32 bits
   */
  read(offset: number, size: AccessSize): number;
  /** A write of `size` bytes at `offset` inside the window (`value` holds the low `size` bytes). */
  write(offset: number, size: AccessSize, value: number): void;
}

/** The two address spaces an x86-style CPU reaches devices through. */
export type AddressSpace = "mmio" | "pio";

/** A live mapping, as returned by {@link Bus.map}; pass it to {@link Bus.unmap} or move it. */
export interface BusMapping {
  /** Which address space it is in. */
  readonly space: AddressSpace;
  /** Name used in exit statistics (e.g. `"virtio-mmio@0xfeb00000"`). */
  readonly name: string;
  /** First address. */
  base: number;
  /** Size in bytes. */
  readonly size: number;
  /** The device's handler. */
  readonly handler: IoHandler;
  /** Accesses counted since the last {@link Bus.resetStats}. */
  exits: number;
  /** Reads counted. */
  reads: number;
  /** Writes counted. */
  writes: number;
  /** Per-offset access counts when the window is at most 4 KiB, else `null`. */
  readonly perOffset: Uint32Array | null;
}

/** A snapshot of exit counts. */
export interface ExitStats {
  /** All accesses, claimed or not. */
  readonly total: number;
  /** Accesses that hit no mapping. */
  readonly unclaimed: number;
  /** Handler exceptions caught by the bus (a device bug; the access read as all-ones). */
  readonly handlerFaults: number;
  /** Per mapping name. */
  readonly byDevice: Readonly<Record<string, { exits: number; reads: number; writes: number }>>;
}

const PER_OFFSET_LIMIT = 4096;

/**
 * Dispatches MMIO and port-I/O accesses and counts them as exits.
 *
 * @example
 * ```ts
 * const bus = new Bus();
 * bus.map("mmio", 0xfeb0_0000, 0x200, transport, "virtio-rng");
 * bus.read("mmio", 0xfeb0_0000, 4); // 0x74726976 ("virt")
 * bus.stats().byDevice["virtio-rng"].exits; // 1
 * ```
 */
export class Bus {
  private readonly spaces: Record<AddressSpace, BusMapping[]> = { mmio: [], pio: [] };
  private total = 0;
  private unclaimed = 0;
  private handlerFaults = 0;
  private lastHit: Record<AddressSpace, BusMapping | null> = { mmio: null, pio: null };

  /**
   * Maps a device window.
   *
   * @param space - `"mmio"` or `"pio"`
   * @param base - first address
   * @param size - window size in bytes
   * @param handler - the device
   * @param name - name in statistics
   * @returns the mapping
   * @throws Error when it overlaps an existing mapping (a host configuration error)
   */
  map(
    space: AddressSpace,
    base: number,
    size: number,
    handler: IoHandler,
    name: string,
  ): BusMapping {
    const mapping: BusMapping = {
      space,
      name,
      base,
      size,
      handler,
      exits: 0,
      reads: 0,
      writes: 0,
      perOffset: size <= PER_OFFSET_LIMIT ? new Uint32Array(size) : null,
    };
    this.assertFree(space, base, size, null);
    this.spaces[space].push(mapping);
    this.spaces[space].sort((a, b) => a.base - b.base);
    return mapping;
  }

  /** Removes a mapping (e.g. when a guest disables a BAR). */
  unmap(mapping: BusMapping): void {
    const list = this.spaces[mapping.space];
    const i = list.indexOf(mapping);
    if (i >= 0) list.splice(i, 1);
    this.lastHit[mapping.space] = null;
  }

  /**
   * Moves a mapping to a new base (a guest reprogramming a BAR).
   *
   * @returns false, leaving it where it was, when the new place overlaps another mapping
   */
  move(mapping: BusMapping, base: number): boolean {
    if (this.findOverlap(mapping.space, base, mapping.size, mapping) !== null) return false;
    mapping.base = base;
    this.spaces[mapping.space].sort((a, b) => a.base - b.base);
    this.lastHit[mapping.space] = null;
    return true;
  }

  /**
   * A CPU read: one exit.
   *
   * @returns the device's value, or all-ones when nothing claims the address
   */
  read(space: AddressSpace, address: number, size: AccessSize): number {
    this.total++;
    const m = this.find(space, address);
    if (m === null) {
      this.unclaimed++;
      return allOnes(size);
    }
    const offset = address - m.base;
    m.exits++;
    m.reads++;
    if (m.perOffset !== null) m.perOffset[offset]!++;
    try {
      return m.handler.read(offset, size) >>> 0;
    } catch {
      this.handlerFaults++;
      return allOnes(size);
    }
  }

  /** A CPU write: one exit. Writes nothing claims are dropped. */
  write(space: AddressSpace, address: number, size: AccessSize, value: number): void {
    this.total++;
    const m = this.find(space, address);
    if (m === null) {
      this.unclaimed++;
      return;
    }
    const offset = address - m.base;
    m.exits++;
    m.writes++;
    if (m.perOffset !== null) m.perOffset[offset]!++;
    try {
      m.handler.write(offset, size, value >>> 0);
    } catch {
      this.handlerFaults++;
    }
  }

  /** Total exits since the last reset. */
  get exits(): number {
    return this.total;
  }

  /** A snapshot of the counters. */
  stats(): ExitStats {
    const byDevice: Record<string, { exits: number; reads: number; writes: number }> = {};
    for (const list of [this.spaces.mmio, this.spaces.pio]) {
      for (const m of list) {
        const prev = byDevice[m.name];
        byDevice[m.name] = {
          exits: (prev?.exits ?? 0) + m.exits,
          reads: (prev?.reads ?? 0) + m.reads,
          writes: (prev?.writes ?? 0) + m.writes,
        };
      }
    }
    return {
      total: this.total,
      unclaimed: this.unclaimed,
      handlerFaults: this.handlerFaults,
      byDevice,
    };
  }

  /** Zeroes every counter. */
  resetStats(): void {
    this.total = 0;
    this.unclaimed = 0;
    this.handlerFaults = 0;
    for (const list of [this.spaces.mmio, this.spaces.pio]) {
      for (const m of list) {
        m.exits = 0;
        m.reads = 0;
        m.writes = 0;
        m.perOffset?.fill(0);
      }
    }
  }

  private find(space: AddressSpace, address: number): BusMapping | null {
    const last = this.lastHit[space];
    if (last !== null && address >= last.base && address < last.base + last.size) return last;
    for (const m of this.spaces[space]) {
      if (address >= m.base && address < m.base + m.size) {
        this.lastHit[space] = m;
        return m;
      }
    }
    return null;
  }

  private findOverlap(
    space: AddressSpace,
    base: number,
    size: number,
    except: BusMapping | null,
  ): BusMapping | null {
    for (const m of this.spaces[space]) {
      if (m !== except && base < m.base + m.size && m.base < base + size) return m;
    }
    return null;
  }

  private assertFree(
    space: AddressSpace,
    base: number,
    size: number,
    except: BusMapping | null,
  ): void {
    const other = this.findOverlap(space, base, size, except);
    if (other !== null) {
      throw new Error(
        `${space} window 0x${base.toString(16)}+0x${size.toString(16)} overlaps ${other.name}`,
      );
    }
  }
}
