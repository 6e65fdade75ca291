/**
 * `MockSplitQueue`: a raw, unvalidated driver-side view of one split virtqueue (§2.7) laid
 * out in a {@link GuestMemory}, for tests and benchmarks of every pvkit package. It writes
 * exactly what it is told — including everything a hostile driver could write — so the
 * device side can be tested against well-formed and malformed rings alike.
 *
 * Unlike the real `DriverQueue` it keeps no invariants: descriptors, ring entries and
 * indices are written verbatim. Only {@link MockSplitQueue.addChain} is a convenience
 * that produces a well-formed chain.
 *
 * @module
 */

import type { GuestMemory } from "@pvkit/platform";
import type { VirtioError } from "../errors.js";
import type { DescriptorChain } from "../queue/chain.js";
import type { DeviceVirtqueue } from "../queue/virtqueue.js";
import { loadIndex, storeIndex } from "../ring-access.js";
import {
  availRingBytes,
  descTableBytes,
  usedRingBytes,
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_DESC_ALIGN,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_USED_ALIGN,
} from "../spec.js";

/** A half-open range of guest-physical addresses `[addr, addr + len)`. */
export interface MemoryRange {
  /** First guest-physical address. */
  readonly addr: number;
  /** Length in bytes. */
  readonly len: number;
}

/**
 * One split-ring descriptor as the driver writes it (§2.7.5): `le64 addr; le32 len;
 * le16 flags; le16 next`. Nothing is validated: every value is stored truncated to its
 * field width.
 */
export interface RawDescriptor {
  /** Buffer address; a `bigint` for any 64-bit value, or a non-negative integer `number`. */
  readonly addr: bigint | number;
  /** Buffer length (stored as `len >>> 0`). */
  readonly len: number;
  /** `VIRTQ_DESC_F_*` bits (stored as `flags & 0xffff`); default 0. */
  readonly flags?: number;
  /** Next descriptor index (stored as `next & 0xffff`); default 0. */
  readonly next?: number;
}

/** A descriptor read back from guest memory; `addr` is the full 64-bit value. */
export interface DescriptorFields {
  /** Buffer address (64 bits). */
  readonly addr: bigint;
  /** Buffer length. */
  readonly len: number;
  /** `VIRTQ_DESC_F_*` bits. */
  readonly flags: number;
  /** Next descriptor index. */
  readonly next: number;
}

/** One buffer of a chain built with {@link MockSplitQueue.addChain}. */
export interface ChainBuffer {
  /** Guest-physical address of the buffer. */
  readonly addr: bigint | number;
  /** Length in bytes. */
  readonly len: number;
  /** Device-writable (VIRTQ_DESC_F_WRITE) when true; device-readable otherwise. */
  readonly writable?: boolean;
}

/** Options of {@link MockSplitQueue.addChain}. */
export interface AddChainOptions {
  /**
   * Put the buffers in an indirect table at this guest address (§2.7.5.3); the chain then
   * uses one descriptor of the queue, flagged VIRTQ_DESC_F_INDIRECT.
   */
  readonly indirectTable?: number;
  /**
   * The descriptor indices to use, in chain order (one per buffer, or exactly one with
   * {@link indirectTable}). Default: taken from the mock's free list.
   */
  readonly descriptors?: readonly number[];
  /** Make the chain available (write the avail ring entry and bump avail.idx); default true. */
  readonly makeAvailable?: boolean;
}

/** One element of the used ring (§2.7.8). */
export interface UsedElement {
  /** Head index of the returned chain. */
  readonly id: number;
  /** Bytes the device wrote into the chain's writable buffers. */
  readonly len: number;
}

/** Where the three parts of a split virtqueue live (§2.7). */
export interface SplitQueueLayout {
  /** Descriptor table address (16-byte aligned when computed). */
  readonly desc: number;
  /** Driver (available) ring address (2-byte aligned when computed). */
  readonly avail: number;
  /** Device (used) ring address (4-byte aligned when computed). */
  readonly used: number;
}

/** Options of the {@link MockSplitQueue} constructor. */
export interface MockQueueOptions {
  /** Where to start the computed layout (default 0); rounded up to 16. */
  readonly base?: number;
  /** Descriptor table address, raw (default: computed from {@link base}). */
  readonly desc?: number;
  /** Available ring address, raw (default: right after the descriptor table). */
  readonly avail?: number;
  /** Used ring address, raw (default: after the available ring, 4-byte aligned). */
  readonly used?: number;
  /** Zero the parts of the rings that lie inside guest memory (default true). */
  readonly zero?: boolean;
}

/** Options of {@link MockSplitQueue.configure}. */
export interface ConfigureOptions {
  /** Activate with VIRTIO_F_EVENT_IDX negotiated (default false). */
  readonly eventIdx?: boolean;
  /** Activate with VIRTIO_F_INDIRECT_DESC negotiated (default false). */
  readonly indirect?: boolean;
}

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

function toU64(addr: bigint | number): bigint {
  if (typeof addr === "bigint") return BigInt.asUintN(64, addr);
  if (!Number.isInteger(addr)) throw new RangeError(`descriptor address ${addr} is not an integer`);
  return BigInt.asUintN(64, BigInt(addr));
}

/**
 * A driver-side builder over one split virtqueue in guest memory — the analogue of
 * rust-vmm's `MockSplitQueue`. Methods that write guest memory throw a `RangeError` when
 * the target is not inside guest memory: that is a mistake in the test, not guest input.
 *
 * @example
 * ```ts
 * const mem = GuestMemory.create(1 << 20);
 * const mock = new MockSplitQueue(mem, 256);
 * const queue = new DeviceQueue(0, 256);
 * mock.configure(queue, { eventIdx: true });
 * const head = mock.addChain([{ addr: 0x10000, len: 64 }, { addr: 0x20000, len: 512, writable: true }]);
 * const chain = queue.popChain()!; // chain.head === head
 * queue.addUsed(chain.head, 512);
 * queue.publishUsed();
 * mock.readUsed(); // [{ id: head, len: 512 }]
 * ```
 */
export class MockSplitQueue {
  /** Queue size (number of descriptors and ring slots), as written to the device. */
  readonly size: number;
  /** Guest-physical address of the descriptor table. */
  readonly descAddr: number;
  /** Guest-physical address of the driver (available) ring. */
  readonly availAddr: number;
  /** Guest-physical address of the device (used) ring. */
  readonly usedAddr: number;

  private availShadow = 0;
  private lastUsedSeen = 0;
  private readonly free: number[] = [];
  private readonly chainDescs = new Map<number, readonly number[]>();

  /**
   * @param memory - the guest memory the rings live in
   * @param size - the queue size; any value is accepted (a hostile size is a test case),
   *   but descriptor bookkeeping needs a positive integer
   * @param options - ring addresses; missing ones follow {@link MockSplitQueue.layout}
   */
  constructor(
    readonly memory: GuestMemory,
    size: number,
    options: MockQueueOptions = {},
  ) {
    this.size = size;
    const computed = MockSplitQueue.layout(size, options.base ?? 0);
    this.descAddr = options.desc ?? computed.desc;
    this.availAddr =
      options.avail ??
      (options.desc === undefined ? computed.avail : this.descAddr + descTableBytes(size));
    this.usedAddr =
      options.used ??
      (options.desc === undefined && options.avail === undefined
        ? computed.used
        : alignUp(this.availAddr + availRingBytes(size), VIRTQ_USED_ALIGN));
    const n = Number.isInteger(size) && size > 0 ? size : 0;
    for (let i = 0; i < n; i++) this.free.push(i);
    if (options.zero ?? true) this.clearRings();
  }

  /**
   * A correctly aligned, contiguous layout for a queue of `size` starting at `base`
   * (§2.7 "Virtqueue Part Alignment": descriptor table 16, available ring 2, used ring 4).
   *
   * @returns the three addresses and `end`, one past the used ring
   */
  static layout(size: number, base = 0): SplitQueueLayout & { readonly end: number } {
    const desc = alignUp(base, VIRTQ_DESC_ALIGN);
    const avail = alignUp(desc + descTableBytes(size), VIRTQ_AVAIL_ALIGN);
    const used = alignUp(avail + availRingBytes(size), VIRTQ_USED_ALIGN);
    return { desc, avail, used, end: used + usedRingBytes(size) };
  }

  /** One past the highest ring byte (where a test may start placing buffers). */
  get end(): number {
    return Math.max(
      this.descAddr + descTableBytes(this.size),
      this.availAddr + availRingBytes(this.size),
      this.usedAddr + usedRingBytes(this.size),
    );
  }

  /** The three ring areas, for {@link fillCanary} / {@link checkCanary}. */
  ringRanges(): MemoryRange[] {
    return [
      { addr: this.descAddr, len: descTableBytes(this.size) },
      { addr: this.availAddr, len: availRingBytes(this.size) },
      { addr: this.usedAddr, len: usedRingBytes(this.size) },
    ];
  }

  /** Zeroes the parts of the three rings that lie inside guest memory, and forgets all state. */
  clearRings(): void {
    for (const r of this.ringRanges()) {
      if (!(r.len > 0)) continue;
      if (this.memory.check(r.addr, r.len) === undefined) this.memory.fill(r.addr, r.len, 0);
    }
    this.availShadow = 0;
    this.lastUsedSeen = 0;
    this.chainDescs.clear();
    this.free.length = 0;
    const n = Number.isInteger(this.size) && this.size > 0 ? this.size : 0;
    for (let i = 0; i < n; i++) this.free.push(i);
  }

  // ── raw memory helpers ──────────────────────────────────────────────────────────

  private must(err: { message: string } | undefined): void {
    if (err !== undefined) throw new RangeError(`MockSplitQueue: ${err.message}`);
  }

  /** Stores a ring index field, through `Atomics` when aligned in shared memory. */
  private putIndex(addr: number, value: number): void {
    const words = this.wordsAt(addr);
    if (words === null) this.must(this.memory.writeU16(addr, value & 0xffff));
    else storeIndex(words.array, words.index, value, this.memory.shared);
  }

  /** Loads a ring index field, through `Atomics` when aligned in shared memory. */
  private getIndex(addr: number): number {
    const words = this.wordsAt(addr);
    if (words !== null) return loadIndex(words.array, words.index, this.memory.shared);
    const v = this.memory.readU16(addr);
    if (typeof v !== "number") throw new RangeError(`MockSplitQueue: ${v.message}`);
    return v;
  }

  private wordsAt(addr: number): { array: Uint16Array; index: number } | null {
    const r = this.memory.locate(addr, 2);
    if (r < 0) return null;
    const region = this.memory.regions[r]!;
    const abs = region.bytes.byteOffset + (addr - region.base);
    if (abs % 2 !== 0) return null;
    return { array: new Uint16Array(region.bytes.buffer, abs, 1), index: 0 };
  }

  private getU32(addr: number): number {
    const v = this.memory.readU32(addr);
    if (typeof v !== "number") throw new RangeError(`MockSplitQueue: ${v.message}`);
    return v;
  }

  // ── descriptors ─────────────────────────────────────────────────────────────────

  /**
   * Writes descriptor `index` of the queue's table verbatim (§2.7.5). `index` is not
   * checked against the size: writing past the table is allowed when memory is there.
   */
  writeDescriptor(index: number, desc: RawDescriptor): void {
    MockSplitQueue.writeDescriptorAt(this.memory, this.descAddr + VIRTQ_DESC_SIZE * index, desc);
  }

  /** Reads descriptor `index` of the queue's table back. */
  readDescriptor(index: number): DescriptorFields {
    return MockSplitQueue.readDescriptorAt(this.memory, this.descAddr + VIRTQ_DESC_SIZE * index);
  }

  /**
   * Writes an indirect descriptor table (§2.7.5.3) of `descs.length` entries at `addr`,
   * verbatim. Point a descriptor at it with `len = 16 * descs.length` and
   * `flags = VIRTQ_DESC_F_INDIRECT`.
   *
   * @returns the table's byte length
   */
  writeIndirectTable(addr: number, descs: readonly RawDescriptor[]): number {
    for (let i = 0; i < descs.length; i++) {
      MockSplitQueue.writeDescriptorAt(this.memory, addr + VIRTQ_DESC_SIZE * i, descs[i]!);
    }
    return VIRTQ_DESC_SIZE * descs.length;
  }

  /** Writes one 16-byte descriptor at any guest address (little-endian, §2.4). */
  static writeDescriptorAt(memory: GuestMemory, at: number, desc: RawDescriptor): void {
    const fail = (e: { message: string } | undefined): void => {
      if (e !== undefined) throw new RangeError(`MockSplitQueue: ${e.message}`);
    };
    fail(memory.check(at, VIRTQ_DESC_SIZE));
    fail(memory.writeU64(at, toU64(desc.addr)));
    fail(memory.writeU32(at + 8, desc.len >>> 0));
    fail(memory.writeU16(at + 12, (desc.flags ?? 0) & 0xffff));
    fail(memory.writeU16(at + 14, (desc.next ?? 0) & 0xffff));
  }

  /** Reads one 16-byte descriptor at any guest address. */
  static readDescriptorAt(memory: GuestMemory, at: number): DescriptorFields {
    const addr = memory.readU64(at);
    const len = memory.readU32(at + 8);
    const flags = memory.readU16(at + 12);
    const next = memory.readU16(at + 14);
    if (
      typeof addr !== "bigint" ||
      typeof len !== "number" ||
      typeof flags !== "number" ||
      typeof next !== "number"
    ) {
      throw new RangeError(
        `MockSplitQueue: descriptor at 0x${at.toString(16)} is outside guest memory`,
      );
    }
    return { addr, len, flags, next };
  }

  /**
   * Writes a well-formed chain (§2.7.5, §2.7.13.1): readable buffers must come first,
   * which is the caller's job — the order given is the order written. With
   * `indirectTable` the buffers go into an indirect table and one queue descriptor points
   * at it. Then, unless `makeAvailable` is false, the head is made available.
   *
   * @returns the head index
   * @throws RangeError when there are no buffers or not enough free descriptors
   */
  addChain(buffers: readonly ChainBuffer[], options: AddChainOptions = {}): number {
    if (buffers.length === 0)
      throw new RangeError("MockSplitQueue.addChain: a chain needs at least one buffer");
    const indirect = options.indirectTable;
    const needed = indirect === undefined ? buffers.length : 1;
    const descs = options.descriptors ?? this.allocate(needed);
    if (descs.length !== needed) {
      throw new RangeError(
        `MockSplitQueue.addChain: ${needed} descriptor indices needed, ${descs.length} given`,
      );
    }
    if (options.descriptors !== undefined) {
      for (const d of descs) {
        const k = this.free.indexOf(d);
        if (k >= 0) this.free.splice(k, 1);
      }
    }
    if (indirect === undefined) {
      for (let i = 0; i < buffers.length; i++) {
        const b = buffers[i]!;
        const last = i === buffers.length - 1;
        this.writeDescriptor(descs[i]!, {
          addr: b.addr,
          len: b.len,
          flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          next: last ? 0 : descs[i + 1]!,
        });
      }
    } else {
      const table = buffers.map((b, i) => ({
        addr: b.addr,
        len: b.len,
        flags:
          (b.writable ? VIRTQ_DESC_F_WRITE : 0) |
          (i === buffers.length - 1 ? 0 : VIRTQ_DESC_F_NEXT),
        next: i === buffers.length - 1 ? 0 : i + 1,
      }));
      const bytes = this.writeIndirectTable(indirect, table);
      this.writeDescriptor(descs[0]!, {
        addr: indirect,
        len: bytes,
        flags: VIRTQ_DESC_F_INDIRECT,
        next: 0,
      });
    }
    const head = descs[0]!;
    this.chainDescs.set(head, descs);
    if (options.makeAvailable ?? true) this.pushAvail(head);
    return head;
  }

  /** Descriptors {@link addChain} can still take without explicit indices. */
  get freeDescriptors(): number {
    return this.free.length;
  }

  private allocate(n: number): number[] {
    if (this.free.length < n) {
      throw new RangeError(
        `MockSplitQueue.addChain: ${n} descriptors needed, ${this.free.length} free`,
      );
    }
    return this.free.splice(0, n);
  }

  // ── available ring (driver → device) ────────────────────────────────────────────

  /**
   * Writes `head` (raw, any u16) into the next available-ring slot and publishes it by
   * incrementing avail.idx (§2.7.13.1–§2.7.13.2).
   */
  pushAvail(head: number): void {
    this.setAvailEntry(this.availShadow, head);
    this.setAvailIdx(this.availShadow + 1);
  }

  /**
   * Writes avail-ring entry for index `idx` (slot `idx mod size`) without touching
   * avail.idx.
   */
  setAvailEntry(idx: number, head: number): void {
    const slot = this.size > 0 ? (idx & 0xffff) % this.size : 0;
    this.putIndex(this.availAddr + 4 + 2 * slot, head);
  }

  /** Writes avail.idx verbatim (to simulate jumps and wrap-around); later pushes continue from it. */
  setAvailIdx(idx: number): void {
    this.availShadow = idx & 0xffff;
    this.putIndex(this.availAddr + 2, this.availShadow);
  }

  /** The avail.idx the mock last wrote. */
  availIdx(): number {
    return this.availShadow;
  }

  /** Writes avail.flags verbatim (§2.7.6: VIRTQ_AVAIL_F_NO_INTERRUPT = 1). */
  setAvailFlags(flags: number): void {
    this.putIndex(this.availAddr, flags);
  }

  /** Writes `used_event` at avail + 4 + 2·size (§2.7.10, VIRTIO_F_EVENT_IDX). */
  setUsedEvent(idx: number): void {
    this.putIndex(this.availAddr + 4 + 2 * this.size, idx);
  }

  // ── used ring (device → driver) ─────────────────────────────────────────────────

  /** used.idx as the device last published it. */
  usedIdx(): number {
    return this.getIndex(this.usedAddr + 2);
  }

  /** used.flags (§2.7.8: VIRTQ_USED_F_NO_NOTIFY = 1). */
  usedFlags(): number {
    return this.getIndex(this.usedAddr);
  }

  /** `avail_event` at used + 4 + 8·size (§2.7.10, VIRTIO_F_EVENT_IDX). */
  availEvent(): number {
    return this.getIndex(this.usedAddr + 4 + 8 * this.size);
  }

  /** The used element for used index `idx` (slot `idx mod size`), published or not. */
  usedElem(idx: number): UsedElement {
    const slot = (idx & 0xffff) % this.size;
    const at = this.usedAddr + 4 + 8 * slot;
    return { id: this.getU32(at), len: this.getU32(at + 4) };
  }

  /**
   * The used elements published since the previous call (at most `size`, even if the
   * device moved used.idx further), returning their chains' descriptors to the free
   * list.
   */
  readUsed(): UsedElement[] {
    const idx = this.usedIdx();
    let n = (idx - this.lastUsedSeen) & 0xffff;
    if (n > this.size) n = this.size;
    const out: UsedElement[] = [];
    for (let k = 0; k < n; k++) {
      const e = this.usedElem(this.lastUsedSeen + k);
      out.push(e);
      const descs = this.chainDescs.get(e.id);
      if (descs !== undefined) {
        this.chainDescs.delete(e.id);
        this.free.push(...descs);
      }
    }
    this.lastUsedSeen = idx;
    return out;
  }

  // ── the device's view ───────────────────────────────────────────────────────────

  /**
   * Writes this mock's size and ring addresses into `queue`, as a driver does through the
   * transport's queue registers (§4.2.3.2), without enabling it — for tests that go on
   * through a device's `enableQueue`.
   */
  applyLayout(queue: DeviceVirtqueue): void {
    queue.size = this.size;
    queue.descAddr = this.descAddr;
    queue.driverAddr = this.availAddr;
    queue.deviceAddr = this.usedAddr;
  }

  /**
   * Binds `queue` to this mock's memory, applies the layout, calls `enable()` and, when
   * that succeeds, `activate(eventIdx, indirect)` — the queue is then live.
   *
   * @returns the error `enable()` reported, or `undefined`
   */
  configure(queue: DeviceVirtqueue, options: ConfigureOptions = {}): VirtioError | undefined {
    queue.bind(this.memory);
    this.applyLayout(queue);
    const err = queue.enable();
    if (err !== undefined) return err;
    queue.activate(options.eventIdx ?? false, options.indirect ?? false);
    return undefined;
  }
}

/** A chain's buffers as guest-physical ranges, in chain order. */
export interface ChainRanges {
  /** The head index. */
  readonly head: number;
  /** Device-readable buffers (zero-length descriptors are not listed). */
  readonly readable: MemoryRange[];
  /** Device-writable buffers. */
  readonly writable: MemoryRange[];
}

/**
 * Maps a popped chain's buffers back to guest-physical addresses — what a test compares
 * with the descriptors it wrote (§2.7.5).
 *
 * @param chain - a chain returned by `DeviceQueue.popChain`
 * @returns its head and buffer ranges
 */
export function chainRanges(chain: DescriptorChain): ChainRanges {
  const readable: MemoryRange[] = [];
  const writable: MemoryRange[] = [];
  for (let i = 0; i < chain.bufferCount; i++) {
    const region = chain.regions[chain.buf[3 * i]!]!;
    const range = { addr: region.base + chain.bufferOffset(i), len: chain.bufferLength(i) };
    (i < chain.readableCount ? readable : writable).push(range);
  }
  return { head: chain.head, readable, writable };
}

// ── canaries ──────────────────────────────────────────────────────────────────────

/** For each region, the sub-ranges (region-relative [start, end)) not covered by `keep`. */
function uncovered(
  base: number,
  size: number,
  keep: readonly MemoryRange[],
): Array<readonly [number, number]> {
  const cuts: Array<readonly [number, number]> = [];
  for (const r of keep) {
    const s = Math.max(r.addr - base, 0);
    const e = Math.min(r.addr + r.len - base, size);
    if (e > s) cuts.push([s, e]);
  }
  cuts.sort((a, b) => a[0] - b[0]);
  const out: Array<readonly [number, number]> = [];
  let cursor = 0;
  for (const [s, e] of cuts) {
    if (s > cursor) out.push([cursor, s]);
    if (e > cursor) cursor = e;
  }
  if (cursor < size) out.push([cursor, size]);
  return out;
}

/**
 * Fills every byte of guest memory outside `keep` with `byte`, so that {@link checkCanary}
 * can later prove that nothing wrote there.
 *
 * @param memory - the guest memory
 * @param keep - ranges left alone (rings, buffers the device may write, tables)
 * @param byte - the canary pattern (default 0xa5)
 */
export function fillCanary(memory: GuestMemory, keep: readonly MemoryRange[], byte = 0xa5): void {
  for (const region of memory.regions) {
    for (const [s, e] of uncovered(region.base, region.size, keep)) region.bytes.fill(byte, s, e);
  }
}

/**
 * Lists the guest addresses outside `keep` whose byte is no longer `byte`.
 *
 * @param memory - the guest memory given to {@link fillCanary}
 * @param keep - the same ranges
 * @param byte - the same pattern (default 0xa5)
 * @param limit - stop after this many addresses (default 4096)
 * @returns changed addresses in ascending order (empty when untouched)
 */
export function checkCanary(
  memory: GuestMemory,
  keep: readonly MemoryRange[],
  byte = 0xa5,
  limit = 4096,
): number[] {
  const changed: number[] = [];
  memory.refresh();
  for (const region of memory.regions) {
    const bytes = region.bytes;
    for (const [s, e] of uncovered(region.base, region.size, keep)) {
      for (
        let i = firstChanged(bytes, s, e, byte);
        i < e;
        i = firstChanged(bytes, i + 1, e, byte)
      ) {
        changed.push(region.base + i);
        if (changed.length >= limit) return changed;
      }
    }
  }
  return changed;
}

/** The first index in `[s, e)` whose byte is not `byte`, or `e`; four bytes per compare. */
function firstChanged(bytes: Uint8Array, s: number, e: number, byte: number): number {
  let i = s;
  const head = Math.min(e, s + ((4 - ((bytes.byteOffset + s) & 3)) & 3));
  for (; i < head; i++) if (bytes[i] !== byte) return i;
  const words = (e - i) >>> 2;
  if (words > 0) {
    const w = new Int32Array(bytes.buffer, bytes.byteOffset + i, words);
    const pattern = byte * 0x01010101;
    let k = 0;
    while (k < words && w[k] === (pattern | 0)) k++;
    i += 4 * k;
    // A word that differs holds the byte to report.
    const stop = k < words ? i + 4 : e;
    for (; i < stop; i++) if (bytes[i] !== byte) return i;
    return e;
  }
  for (; i < e; i++) if (bytes[i] !== byte) return i;
  return e;
}
