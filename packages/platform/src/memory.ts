/**
 * Guest-physical memory: one flat region or several regions with holes, over an
 * `ArrayBuffer`, a `SharedArrayBuffer` or a `WebAssembly.Memory`.
 *
 * Every access is range-checked with safe-integer arithmetic. Guest addresses are 64-bit;
 * an address at or above 2^53 cannot be represented exactly by a JavaScript number and is
 * out of range, never rounded. A failed access returns a {@link PlatformError} value: it
 * never throws and never reads or writes a wrong byte.
 *
 * @module
 */

import { describeValue, expectArgument, expectOptions } from "./args.js";
import { PlatformError, PlatformErrorCode } from "./errors.js";

/** Storage a region can live in. */
export type MemoryBacking = ArrayBuffer | SharedArrayBuffer | WebAssembly.Memory;

/** Receives `[address, address + length)`, a guest-physical range a device has written. */
export type WriteObserver = (address: number, length: number) => void;

/** How one region of guest-physical memory is placed. */
export interface RegionSpec {
  /** Guest-physical address of the first byte. */
  readonly base: number;
  /** Size in bytes. */
  readonly size: number;
  /** Storage; a fresh `ArrayBuffer` of `size` bytes when omitted. */
  readonly backing?: MemoryBacking;
  /** Byte offset of the region inside `backing` (default 0; must be a multiple of 8). */
  readonly backingOffset?: number;
}

/** One resolved region: its place in guest-physical space and views of its bytes. */
export interface GuestMemoryRegion {
  /** Guest-physical address of the first byte. */
  readonly base: number;
  /** Guest-physical address one past the last byte. */
  readonly end: number;
  /** Size in bytes. */
  readonly size: number;
  /** The region's bytes (zero-copy). Index 0 is guest address `base`. */
  bytes: Uint8Array;
  /** A `DataView` over the same bytes, for little-endian accessors. */
  view: DataView;
}

/** 2^53: the first guest address that is out of range because it is not a safe integer. */
export const ADDRESS_LIMIT = 2 ** 53;

/** True when the host stores multi-byte integers little-endian (checked once). */
export const HOST_LITTLE_ENDIAN: boolean = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Combines the two 32-bit halves of a 64-bit little-endian guest address.
 *
 * @param lo - bits 0..31
 * @param hi - bits 32..63
 * @returns the address, or -1 when it is at or above 2^53 (not representable exactly)
 */
export function combineAddress(lo: number, hi: number): number {
  // 2^53 = 2^21 * 2^32: any high word of 2^21 or more is out of range.
  if (hi >= 0x20_0000) return -1;
  return hi * 0x1_0000_0000 + (lo >>> 0);
}

interface InternalRegion extends GuestMemoryRegion {
  readonly backing: MemoryBacking;
  readonly backingOffset: number;
}

function bufferOf(backing: MemoryBacking): ArrayBuffer | SharedArrayBuffer {
  return backing instanceof WebAssembly.Memory ? backing.buffer : backing;
}

function isSharedBuffer(buffer: ArrayBuffer | SharedArrayBuffer): boolean {
  return typeof SharedArrayBuffer !== "undefined" && buffer instanceof SharedArrayBuffer;
}

/** What {@link isMemoryBacking} accepts, for messages. */
const BACKING_KINDS = "an ArrayBuffer, SharedArrayBuffer or WebAssembly.Memory";

/**
 * Whether `value` can back guest memory. Checked by tag, not `instanceof`, so buffers
 * from another realm (a `vm` context, a worker's transfer) are recognised too.
 */
function isMemoryBacking(value: unknown): value is MemoryBacking {
  const tag = Object.prototype.toString.call(value);
  return (
    tag === "[object ArrayBuffer]" ||
    tag === "[object SharedArrayBuffer]" ||
    tag === "[object WebAssembly.Memory]" ||
    value instanceof WebAssembly.Memory
  );
}

/** Checks the regions given to the constructor: an array of `{ base, size, backing? }`. */
function checkRegionSpecs(specs: unknown): asserts specs is readonly RegionSpec[] {
  if (!Array.isArray(specs)) {
    const hint =
      typeof specs === "number"
        ? ` (for flat RAM of ${specs} bytes use GuestMemory.create(${specs}))`
        : isMemoryBacking(specs)
          ? " (to wrap existing storage use GuestMemory.over(backing))"
          : "";
    throw new TypeError(
      `new GuestMemory expects an array of regions [{ base, size, backing? }], got ${describeValue(specs)}${hint}`,
    );
  }
  specs.forEach((spec: unknown, i) => {
    const where = "new GuestMemory";
    expectArgument(
      where,
      `regions[${i}]`,
      spec,
      "an object { base, size, backing? }",
      (v) => v !== null && typeof v === "object",
    );
    const r = spec as Record<string, unknown>;
    expectArgument(
      where,
      `regions[${i}].base`,
      r.base,
      "a number (guest-physical address)",
      (v) => typeof v === "number",
    );
    expectArgument(
      where,
      `regions[${i}].size`,
      r.size,
      "a number (bytes)",
      (v) => typeof v === "number",
    );
    if (r.backing !== undefined)
      expectArgument(where, `regions[${i}].backing`, r.backing, BACKING_KINDS, isMemoryBacking);
  });
}

/**
 * Guest-physical memory as the host sees it. Devices receive one and never touch
 * anything else of the guest.
 *
 * @example
 * ```ts
 * const mem = GuestMemory.create(16 << 20, { shared: true });
 * mem.writeU32(0x1000, 0xdeadbeef);
 * mem.readU32(0x1000); // 0xdeadbeef
 * mem.readU32(16 << 20); // PlatformError OUT_OF_RANGE
 * ```
 */
export class GuestMemory {
  /** Regions sorted by base address. */
  readonly regions: readonly GuestMemoryRegion[];
  /** True when the storage can be seen by another thread (ring indices then go through `Atomics`). */
  readonly shared: boolean;
  /** One past the highest guest-physical address that is backed. */
  readonly end: number;
  /**
   * Increments whenever region views are re-created (a `WebAssembly.Memory` grew and
   * detached its old buffer). Holders of cached views compare it to know when to refresh.
   */
  epoch = 0;

  /**
   * Told of every range a device wrote: by this object's write methods, and by device
   * code that writes through zero-copy views (virtqueue chains report their writable
   * bytes when returned). An emulator with a code cache (v86's JIT) invalidates the range
   * here. `null` (the default) costs one comparison per write.
   */
  writeObserver: WriteObserver | null = null;

  private readonly internal: InternalRegion[];
  /**
   * True when a region lives in a `WebAssembly.Memory`, whose views must be refreshed
   * (see {@link refresh}) after it grows; holders of cached views check it.
   */
  readonly growable: boolean;
  private readonly single: InternalRegion | null;

  /**
   * @param specs - the regions; they must not overlap
   * @throws TypeError when `specs` is not an array of `{ base, size, backing? }` (the
   *   message names the argument, what was expected and what was given); Error when the
   *   layout itself is invalid (a host configuration mistake, not guest input)
   */
  constructor(specs: readonly RegionSpec[]) {
    checkRegionSpecs(specs);
    if (specs.length === 0) throw new Error("GuestMemory needs at least one region");
    const sorted = [...specs].sort((a, b) => a.base - b.base);
    const regions: InternalRegion[] = [];
    let prevEnd = 0;
    let shared = false;
    let hasWasm = false;
    for (const spec of sorted) {
      const offset = spec.backingOffset ?? 0;
      if (!Number.isSafeInteger(spec.base) || spec.base < 0 || spec.base < prevEnd) {
        throw new Error(`region base 0x${spec.base.toString(16)} overlaps or is invalid`);
      }
      if (
        !Number.isSafeInteger(spec.size) ||
        spec.size <= 0 ||
        spec.base + spec.size > ADDRESS_LIMIT
      ) {
        throw new RangeError(
          `new GuestMemory: region size ${spec.size} at base 0x${spec.base.toString(16)} is invalid: it must be a positive safe integer with base + size ≤ 2^53`,
        );
      }
      if (offset % 8 !== 0) throw new Error("backingOffset must be a multiple of 8");
      const backing = spec.backing ?? new ArrayBuffer(spec.size);
      const buffer = bufferOf(backing);
      if (offset + spec.size > buffer.byteLength) {
        throw new Error(`region of ${spec.size} bytes does not fit its backing`);
      }
      shared ||= isSharedBuffer(buffer);
      hasWasm ||= backing instanceof WebAssembly.Memory;
      const bytes = new Uint8Array(buffer, offset, spec.size);
      regions.push({
        base: spec.base,
        end: spec.base + spec.size,
        size: spec.size,
        bytes,
        view: new DataView(buffer, offset, spec.size),
        backing,
        backingOffset: offset,
      });
      prevEnd = spec.base + spec.size;
    }
    this.internal = regions;
    this.regions = regions;
    this.shared = shared;
    this.growable = hasWasm;
    this.end = prevEnd;
    this.single = regions.length === 1 ? (regions[0] ?? null) : null;
  }

  /**
   * One flat region at guest-physical address 0.
   *
   * @param size - bytes of guest RAM
   * @param options - `shared: true` backs it with a `SharedArrayBuffer`
   * @returns the memory
   * @throws TypeError when `size` is not a positive safe integer or `options` not an object
   */
  static create(size: number, options: { shared?: boolean } = {}): GuestMemory {
    expectArgument(
      "GuestMemory.create",
      "size",
      size,
      "a positive integer number of bytes",
      (v) => typeof v === "number" && Number.isSafeInteger(v) && v > 0,
    );
    expectOptions("GuestMemory.create", options, "{ shared? }");
    const backing = options.shared ? new SharedArrayBuffer(size) : new ArrayBuffer(size);
    return new GuestMemory([{ base: 0, size, backing }]);
  }

  /**
   * One flat region at address 0 over existing storage (all of it).
   *
   * @param backing - the storage, e.g. an emulator's RAM buffer or a `WebAssembly.Memory`
   * @returns the memory
   * @throws TypeError when `backing` is none of those (e.g. a number: use
   *   {@link GuestMemory.create} for fresh RAM of a size)
   */
  static over(backing: MemoryBacking): GuestMemory {
    if (!isMemoryBacking(backing)) {
      const hint =
        typeof backing === "number"
          ? ` (for fresh RAM of a size use GuestMemory.create(${backing}))`
          : "";
      throw new TypeError(
        `GuestMemory.over expects ${BACKING_KINDS}, got ${describeValue(backing)}${hint}`,
      );
    }
    return new GuestMemory([{ base: 0, size: bufferOf(backing).byteLength, backing }]);
  }

  /**
   * Re-creates the views of regions whose `WebAssembly.Memory` grew (growing detaches the
   * old buffer). Called automatically by every lookup when Wasm memory is present.
   */
  refresh(): void {
    if (!this.growable) return;
    let changed = false;
    for (const r of this.internal) {
      // Growing a non-shared Wasm memory detaches its old buffer, which empties every view
      // of it; a view that still has bytes is current (a shared memory's old buffer stays
      // valid for the region's fixed size). This check avoids `memory.buffer`, a call into
      // the engine, on every lookup.
      if (r.bytes.byteLength !== 0) continue;
      const buffer = bufferOf(r.backing);
      if (r.bytes.buffer !== buffer) {
        r.bytes = new Uint8Array(buffer, r.backingOffset, r.size);
        r.view = new DataView(buffer, r.backingOffset, r.size);
        changed = true;
      }
    }
    if (changed) this.epoch++;
  }

  /**
   * Finds the region holding the whole range `[address, address + length)`.
   * A range that spans two regions, touches a hole or passes the end is not held.
   *
   * @param address - guest-physical address
   * @param length - bytes (0 is allowed: an empty range at a backed address)
   * @returns the index into {@link regions}, or -1
   */
  locate(address: number, length: number): number {
    if (this.growable) this.refresh();
    // Safe-integer checks: NaN, fractions, negatives and values >= 2^53 all fail here.
    if (!(address >= 0 && address < ADDRESS_LIMIT && length >= 0 && length <= ADDRESS_LIMIT))
      return -1;
    // Math.floor, not `% 1`: a floating-point remainder is a slow runtime call in V8.
    if (Math.floor(address) !== address || Math.floor(length) !== length) return -1;
    // Compare without adding first: a sum above 2^53 may round down onto 2^53 itself.
    if (length > ADDRESS_LIMIT - address) return -1;
    const last = address + length; // exact: at most 2^53
    const single = this.single;
    if (single !== null) return address >= single.base && last <= single.end ? 0 : -1;
    const regions = this.internal;
    // Binary search for the last region whose base <= address.
    let lo = 0;
    let hi = regions.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (regions[mid]!.base <= address) lo = mid;
      else hi = mid - 1;
    }
    const r = regions[lo]!;
    if (address < r.base || last > r.end) return -1;
    return lo;
  }

  /**
   * Checks that `[address, address + length)` lies inside one region.
   *
   * @returns `undefined` when it does, else the error
   */
  check(address: number, length: number): PlatformError | undefined {
    return this.locate(address, length) < 0 ? this.fault(address, length) : undefined;
  }

  /**
   * A zero-copy view of guest memory. Writes through it are writes to the guest.
   *
   * @param address - guest-physical address
   * @param length - bytes
   * @returns the view, or the error when the range is not inside one region
   */
  slice(address: number, length: number): Uint8Array | PlatformError {
    const i = this.locate(address, length);
    if (i < 0) return this.fault(address, length);
    const r = this.internal[i]!;
    const off = address - r.base;
    return r.bytes.subarray(off, off + length);
  }

  /** Reads a byte. @returns the value, or the error */
  readU8(address: number): number | PlatformError {
    const i = this.locate(address, 1);
    if (i < 0) return this.fault(address, 1);
    const r = this.internal[i]!;
    return r.bytes[address - r.base]!;
  }

  /** Reads a little-endian u16 (any alignment). @returns the value, or the error */
  readU16(address: number): number | PlatformError {
    const i = this.locate(address, 2);
    if (i < 0) return this.fault(address, 2);
    const r = this.internal[i]!;
    return r.view.getUint16(address - r.base, true);
  }

  /** Reads a little-endian u32 (any alignment). @returns the value, or the error */
  readU32(address: number): number | PlatformError {
    const i = this.locate(address, 4);
    if (i < 0) return this.fault(address, 4);
    const r = this.internal[i]!;
    return r.view.getUint32(address - r.base, true);
  }

  /** Reads a little-endian u64 (any alignment). @returns the value as a bigint, or the error */
  readU64(address: number): bigint | PlatformError {
    const i = this.locate(address, 8);
    if (i < 0) return this.fault(address, 8);
    const r = this.internal[i]!;
    return r.view.getBigUint64(address - r.base, true);
  }

  /** Writes a byte (`value & 0xff`). @returns `undefined`, or the error */
  writeU8(address: number, value: number): PlatformError | undefined {
    const i = this.locate(address, 1);
    if (i < 0) return this.fault(address, 1);
    const r = this.internal[i]!;
    r.bytes[address - r.base] = value;
    this.noteWrite(address, 1);
    return undefined;
  }

  /** Writes a little-endian u16. @returns `undefined`, or the error */
  writeU16(address: number, value: number): PlatformError | undefined {
    const i = this.locate(address, 2);
    if (i < 0) return this.fault(address, 2);
    const r = this.internal[i]!;
    r.view.setUint16(address - r.base, value, true);
    this.noteWrite(address, 2);
    return undefined;
  }

  /** Writes a little-endian u32. @returns `undefined`, or the error */
  writeU32(address: number, value: number): PlatformError | undefined {
    const i = this.locate(address, 4);
    if (i < 0) return this.fault(address, 4);
    const r = this.internal[i]!;
    r.view.setUint32(address - r.base, value >>> 0, true);
    this.noteWrite(address, 4);
    return undefined;
  }

  /** Writes a little-endian u64. @returns `undefined`, or the error */
  writeU64(address: number, value: bigint): PlatformError | undefined {
    const i = this.locate(address, 8);
    if (i < 0) return this.fault(address, 8);
    const r = this.internal[i]!;
    r.view.setBigUint64(address - r.base, BigInt.asUintN(64, value), true);
    this.noteWrite(address, 8);
    return undefined;
  }

  /**
   * Reports a device write done through a view (see {@link writeObserver}). Cheap when no
   * observer is set.
   *
   * @param address - guest-physical address of the first byte written
   * @param length - bytes written
   */
  noteWrite(address: number, length: number): void {
    const o = this.writeObserver;
    if (o !== null && length > 0) o(address, length);
  }

  /**
   * Copies guest memory out into `dst`. The range may span adjacent regions but not holes.
   *
   * @param address - guest-physical source address
   * @param dst - destination; `dst.length` bytes are copied
   * @returns `undefined`, or the error (then nothing was copied)
   */
  read(address: number, dst: Uint8Array): PlatformError | undefined {
    const i = this.locate(address, dst.length);
    if (i >= 0) {
      const r = this.internal[i]!;
      const off = address - r.base;
      dst.set(r.bytes.subarray(off, off + dst.length));
      return undefined;
    }
    return this.spanning(address, dst, false);
  }

  /**
   * Copies `src` into guest memory. The range may span adjacent regions but not holes.
   *
   * @param address - guest-physical destination address
   * @param src - the bytes
   * @returns `undefined`, or the error (then nothing was written)
   */
  write(address: number, src: Uint8Array): PlatformError | undefined {
    const i = this.locate(address, src.length);
    if (i >= 0) {
      const r = this.internal[i]!;
      r.bytes.set(src, address - r.base);
      this.noteWrite(address, src.length);
      return undefined;
    }
    return this.spanning(address, src, true);
  }

  /**
   * Fills `[address, address + length)` with `byte`.
   *
   * @returns `undefined`, or the error (then nothing was written)
   */
  fill(address: number, length: number, byte: number): PlatformError | undefined {
    const i = this.locate(address, length);
    if (i < 0) return this.fault(address, length);
    const r = this.internal[i]!;
    const off = address - r.base;
    r.bytes.fill(byte, off, off + length);
    this.noteWrite(address, length);
    return undefined;
  }

  /** Copies across contiguous regions; checks the whole range before touching anything. */
  private spanning(address: number, buf: Uint8Array, toGuest: boolean): PlatformError | undefined {
    const length = buf.length;
    if (this.single !== null || this.locate(address, 0) < 0) return this.fault(address, length);
    // Validate: walk regions from `address` and require them to be contiguous.
    let cursor = address;
    if (length > ADDRESS_LIMIT - address) return this.fault(address, length);
    const end = address + length;
    while (cursor < end) {
      const i = this.locate(cursor, 1);
      if (i < 0) return this.fault(address, length);
      cursor = Math.min(this.internal[i]!.end, end);
    }
    cursor = address;
    while (cursor < end) {
      const r = this.internal[this.locate(cursor, 1)]!;
      const n = Math.min(r.end, end) - cursor;
      const off = cursor - r.base;
      const at = cursor - address;
      if (toGuest) r.bytes.set(buf.subarray(at, at + n), off);
      else buf.set(r.bytes.subarray(off, off + n), at);
      cursor += n;
    }
    if (toGuest) this.noteWrite(address, length);
    return undefined;
  }

  private fault(address: number, length: number): PlatformError {
    if (!(address >= 0 && address < ADDRESS_LIMIT) || address % 1 !== 0) {
      return new PlatformError(PlatformErrorCode.BAD_ADDRESS, address, length);
    }
    if (!(length >= 0) || length % 1 !== 0 || length > ADDRESS_LIMIT - address) {
      return new PlatformError(PlatformErrorCode.BAD_LENGTH, address, length);
    }
    return new PlatformError(PlatformErrorCode.OUT_OF_RANGE, address, length);
  }
}
