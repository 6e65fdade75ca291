/**
 * The `Bus`: where an emulator's CPU sends every MMIO and port-I/O access. It dispatches
 * by address range to device handlers and counts each access as one *exit* — the unit
 * pvkit's benchmarks measure (DESIGN.md, "An exit").
 *
 * @module
 */

import { describeValue, hasMethods } from "./args.js";

/** Width of one register access in bytes. */
export type AccessSize = 1 | 2 | 4;

/**
 * Mask of all-ones for an access size: what an unclaimed read returns. On x86 a read
 * nothing decodes ends in a master abort and the host bridge returns all 1s (PCI 3.0
 * §6.1 relies on it: vendor id 0xFFFF means "no function"). Any size other than 1 or 2
 * — including an unsupported one a hostile or buggy caller passed — gives 32 one-bits.
 */
export function allOnes(size: AccessSize): number {
  return size === 1 ? 0xff : size === 2 ? 0xffff : 0xffff_ffff;
}

/** The access sizes the bus carries, for messages. */
const SIZES_ALLOWED = "1, 2 or 4 bytes";

/** Formats an inclusive range `0x…–0x…` for messages. */
function hexRange(base: number, size: number): string {
  return `0x${base.toString(16)}–0x${(base + size - 1).toString(16)}`;
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

/**
 * What a guest-side driver needs of a bus: one register read and one register write.
 * {@link Bus} implements it; so can anything else that carries a guest's accesses to the
 * devices — e.g. a guest kernel's CPU that turns each access into an exit record for a
 * hypervisor in another thread (`@pvkit/guest-kernel-pv`). Drivers written against it
 * (`VirtioMmioDriverTransport`, `Rtl8139Driver`, `EmulatedTimerGuest`) run unchanged on
 * either side of that wall.
 */
export interface BusAccess {
  /** A CPU read of `size` bytes at `address` in `space` (one exit). @returns the value */
  read(space: AddressSpace, address: number, size: AccessSize): number;
  /** A CPU write of the low `size` bytes of `value` at `address` in `space` (one exit). */
  write(space: AddressSpace, address: number, size: AccessSize, value: number): void;
}

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

/**
 * An access the bus refused because of its size (see {@link Bus.read}): what it was and
 * why, for diagnostics. The guest got all-ones (read) or nothing happened (write).
 */
export interface BadAccess {
  /** Address space of the access. */
  readonly space: AddressSpace;
  /** Read or write. */
  readonly kind: "read" | "write";
  /** The address. */
  readonly address: number;
  /** The size asked for (not 1, 2 or 4). */
  readonly size: number;
  /** The mapping the address falls in, or `null`. */
  readonly mapping: string | null;
  /** Says what was accessed, the size used and the sizes allowed. */
  readonly message: string;
}

/** A snapshot of exit counts. */
export interface ExitStats {
  /** All accesses, claimed or not. */
  readonly total: number;
  /** Accesses that hit no mapping. */
  readonly unclaimed: number;
  /** Accesses of an unsupported size (not 1, 2 or 4 bytes), refused before any device saw them. */
  readonly badAccesses: number;
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
export class Bus implements BusAccess {
  private readonly spaces: Record<AddressSpace, BusMapping[]> = { mmio: [], pio: [] };
  private total = 0;
  private unclaimed = 0;
  private handlerFaults = 0;
  private badAccesses = 0;
  /** The last access of an unsupported size (see {@link read}), or `null`. */
  lastBadAccess: BadAccess | null = null;
  /** Told of every access of an unsupported size (diagnostics; must not throw). */
  onBadAccess: ((access: BadAccess) => void) | null = null;
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
   * @throws Error when it overlaps an existing mapping, naming both mappings with their
   *   ranges and the address space; TypeError / RangeError on a malformed argument (a host
   *   configuration error, never guest input)
   */
  map(
    space: AddressSpace,
    base: number,
    size: number,
    handler: IoHandler,
    name: string,
  ): BusMapping {
    if (space !== "mmio" && space !== "pio") {
      throw new TypeError(`Bus.map: space must be "mmio" or "pio", got ${describeValue(space)}`);
    }
    if (!Number.isSafeInteger(base) || base < 0) {
      throw new RangeError(
        `Bus.map: base must be a non-negative safe integer, got ${describeValue(base)}`,
      );
    }
    if (!Number.isSafeInteger(size) || size <= 0 || base + size > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(
        `Bus.map: size must be a positive integer (bytes) that keeps base + size safe, got ${describeValue(size)}`,
      );
    }
    if (!hasMethods(handler, "read", "write")) {
      throw new TypeError(
        `Bus.map: handler must be an IoHandler (read and write methods), got ${describeValue(handler)}`,
      );
    }
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
    this.assertFree(space, base, size, name, null);
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
   * The bus is where the guest's accesses arrive, so it never throws (DESIGN.md, "A
   * hostile guest"). A size other than 1, 2 or 4 bytes — e.g. a 3-byte read, which no
   * x86 instruction issues, or an 8-byte one the CPU model should have split into two
   * 4-byte accesses — is treated as a bad guest access, not a host programming error: it
   * is counted (`stats().badAccesses`), recorded in {@link lastBadAccess} and passed to
   * {@link onBadAccess} with a message naming the size, the address and the sizes
   * allowed, and reads as all-ones (what x86 returns for a read nothing decodes) without
   * reaching the device.
   *
   * @returns the device's value, or all-ones when nothing claims the address or the size
   *   is unsupported
   */
  read(space: AddressSpace, address: number, size: AccessSize): number {
    this.total++;
    if (size !== 1 && size !== 2 && size !== 4) {
      this.badAccess(space, "read", address, size);
      return allOnes(size);
    }
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

  /**
   * A CPU write: one exit. Writes nothing claims are dropped. A size other than 1, 2 or
   * 4 bytes is a bad guest access, counted and recorded like a bad {@link read}, and
   * dropped before the device sees it.
   */
  write(space: AddressSpace, address: number, size: AccessSize, value: number): void {
    this.total++;
    if (size !== 1 && size !== 2 && size !== 4) {
      this.badAccess(space, "write", address, size);
      return;
    }
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
      badAccesses: this.badAccesses,
      handlerFaults: this.handlerFaults,
      byDevice,
    };
  }

  /** Zeroes every counter. */
  resetStats(): void {
    this.total = 0;
    this.unclaimed = 0;
    this.handlerFaults = 0;
    this.badAccesses = 0;
    this.lastBadAccess = null;
    for (const list of [this.spaces.mmio, this.spaces.pio]) {
      for (const m of list) {
        m.exits = 0;
        m.reads = 0;
        m.writes = 0;
        m.perOffset?.fill(0);
      }
    }
  }

  /** Counts and records an access of an unsupported size (the cold path of read/write). */
  private badAccess(
    space: AddressSpace,
    kind: "read" | "write",
    address: number,
    size: number,
  ): void {
    this.badAccesses++;
    const valid = Number.isSafeInteger(address) && address >= 0;
    const m = valid && (space === "mmio" || space === "pio") ? this.find(space, address) : null;
    const at = valid ? `0x${address.toString(16)}` : describeValue(address);
    const where = m === null ? "" : ` ("${m.name}")`;
    const outcome = kind === "read" ? "read as all-ones" : "write dropped";
    const access: BadAccess = {
      space,
      kind,
      address,
      size,
      mapping: m === null ? null : m.name,
      message: `bad ${space} ${kind} of ${typeof size === "number" ? size : describeValue(size)} bytes at ${at}${where}: the bus carries accesses of ${SIZES_ALLOWED}; ${outcome}`,
    };
    this.lastBadAccess = access;
    try {
      this.onBadAccess?.(access);
    } catch {
      // A diagnostics hook must not turn a guest access into a host exception.
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
    name: string,
    except: BusMapping | null,
  ): void {
    const other = this.findOverlap(space, base, size, except);
    if (other !== null) {
      throw new Error(
        `Bus.map: "${name}" at ${hexRange(base, size)} overlaps "${other.name}" at ${hexRange(other.base, other.size)} in the ${space} address space`,
      );
    }
  }
}
