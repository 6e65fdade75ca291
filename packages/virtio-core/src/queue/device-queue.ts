/**
 * `DeviceQueue`: the device side of a split virtqueue (§2.7), hardened against a hostile
 * driver. Every descriptor is read once (no time-of-check/time-of-use gap), every buffer
 * is range-checked against guest memory, every loop is bounded by the queue size, and any
 * corruption stops the queue and reports a {@link VirtioError} so the device can enter
 * DEVICE_NEEDS_RESET (DESIGN.md, "A hostile guest").
 *
 * The device loop, as in rust-vmm and Linux:
 * ```ts
 * do {
 *   queue.disableNotification();
 *   for (let chain; (chain = queue.popChain()) !== null; ) queue.addUsed(chain.head, serve(chain));
 * } while (queue.enableNotification());
 * if (queue.needsNotification()) interrupt();
 * ```
 *
 * @module
 */

import { combineAddress, type GuestMemory, HOST_LITTLE_ENDIAN } from "@pvkit/platform";
import { VirtioError, VirtioErrorCode } from "../errors.js";
import { loadIndex, storeIndex, wordsOver } from "../ring-access.js";
import {
  availRingBytes,
  descTableBytes,
  usedRingBytes,
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_ALIGN,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_MAX_CHAIN_BYTES,
  VIRTQ_MAX_SIZE,
  VIRTQ_USED_ALIGN,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "../spec.js";
import { DescriptorChain } from "./chain.js";
import type { DeviceVirtqueue } from "./virtqueue.js";

/** Receives the queue-corruption error that stopped a queue. */
export type QueueErrorHandler = (error: VirtioError) => void;

/** Counters a benchmark or test can read. */
export interface DeviceQueueStats {
  /** Chains popped. */
  popped: number;
  /** Used entries written. */
  used: number;
  /** Times `avail.idx` was read from guest memory. */
  availReads: number;
  /** `needsNotification` calls that answered true. */
  notificationsNeeded: number;
  /** `needsNotification` calls that answered false (interrupt suppressed). */
  notificationsSuppressed: number;
}

/**
 * Whether `n` is a valid split-queue size: a power of two in [1, 32768] (§2.7).
 */
export function isValidQueueSize(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= VIRTQ_MAX_SIZE && (n & (n - 1)) === 0;
}

/**
 * `count` little-endian u32 words at `offset` of `bytes`, for the hot paths; `null` on a
 * big-endian host or when the host buffer offset is not 4-byte aligned (a region placed at
 * an odd guest address), in which case the `DataView` path is used.
 */
function wordView(bytes: Uint8Array, offset: number, count: number): Uint32Array | null {
  const abs = bytes.byteOffset + offset;
  return HOST_LITTLE_ENDIAN && abs % 4 === 0 ? new Uint32Array(bytes.buffer, abs, count) : null;
}

/**
 * The device side of one split virtqueue.
 */
export class DeviceQueue implements DeviceVirtqueue {
  /** Queue size the driver configured (QueueNum / queue_size); starts at {@link maxSize}. */
  size: number;
  /** Guest-physical address of the descriptor table. */
  descAddr = 0;
  /** Guest-physical address of the driver (available) ring. */
  driverAddr = 0;
  /** Guest-physical address of the device (used) ring. */
  deviceAddr = 0;
  /** Whether VIRTIO_F_EVENT_IDX was negotiated (set by the device at activation). */
  eventIdx = false;
  /** Whether VIRTIO_F_INDIRECT_DESC was negotiated (set by the device at activation). */
  indirectDesc = false;
  /** The error that stopped this queue, or `null` while healthy. */
  error: VirtioError | null = null;
  /** Counters. */
  readonly stats: DeviceQueueStats = {
    popped: 0,
    used: 0,
    availReads: 0,
    notificationsNeeded: 0,
    notificationsSuppressed: 0,
  };

  private memory: GuestMemory | null = null;
  private enabled = false;
  private active = false;
  private shared = false;
  private epoch = -1;
  // The views resolved for non-growable memory stay current (its epoch never moves).
  private stable = false;
  // One-region growable memory: the views are current while they still have bytes.
  private viewCheck = false;

  // Resolved ring areas (valid while enabled).
  private descView: DataView = new DataView(new ArrayBuffer(0));
  private descBase = 0;
  // One-region memory as little-endian u32 words (null otherwise), for indirect tables.
  private flatWords: Uint32Array | null = null;
  // The used ring as little-endian u32 words (null on a big-endian host).
  private usedDwords: Uint32Array | null = null;
  // The descriptor table as little-endian u32 words (null on a big-endian host).
  private descWords: Uint32Array | null = null;
  private availWords: Uint16Array = new Uint16Array(0);
  private usedWords: Uint16Array = new Uint16Array(0);
  private usedView: DataView = new DataView(new ArrayBuffer(0));
  private usedBase = 0;
  // Bounds of guest memory when it is one region (flatEnd -1 otherwise).
  private flatBase = 0;
  private flatEnd = -1;

  // Ring state.
  private nextAvail = 0;
  private availIdxSeen = 0;
  private nextUsed = 0;
  private publishedUsed = 0;
  private signalledUsed = 0;
  private notifyEnabled = true;
  private usedFlags = 0;
  private inFlightCount = 0;
  // Chain objects, created on demand (at most one per head in flight). The hot path stores
  // only numbers: no object pointer is written per chain, so no write barrier runs.
  private readonly pool: DescriptorChain[] = [];
  // Per head: 0 = the driver's, k > 0 = in flight as pool[k - 1], -1 = in flight with its
  // chain dropped (a re-bind to other memory; it is returned with used length 0).
  private readonly slotOf: number[];
  // Pool indices of the spare chains, reused last-in first-out: the few in use stay in
  // cache however many heads the driver cycles through.
  private readonly spareIds: number[];
  private spareCount = 0;

  /**
   * @param index - the queue's index in its device
   * @param maxSize - the largest size the device supports (QueueNumMax); a power of two ≤ 32768
   * @param onError - told once when the guest corrupts the queue
   */
  constructor(
    readonly index: number,
    readonly maxSize: number,
    private readonly onError: QueueErrorHandler = () => {},
  ) {
    if (!isValidQueueSize(maxSize))
      throw new Error(`queue max size ${maxSize} is not a power of two ≤ 32768`);
    this.size = maxSize;
    // Plain arrays of small integers, filled up front so they keep packed elements: their
    // reads skip the detached-buffer check every typed-array access makes.
    this.slotOf = new Array<number>(maxSize).fill(0);
    this.spareIds = new Array<number>(maxSize).fill(0);
  }

  /** Hands the queue the guest memory its rings and buffers live in. */
  bind(memory: GuestMemory): void {
    this.memory = memory;
    this.shared = memory.shared;
    this.stable = false;
    this.viewCheck = false;
  }

  /** Whether the driver enabled the queue (QueueReady / queue_enable). */
  get ready(): boolean {
    return this.enabled;
  }

  /** Whether the queue serves buffers (enabled, DRIVER_OK, not broken). */
  get isActive(): boolean {
    return this.active && this.error === null;
  }

  /** Chains popped and not yet returned with {@link addUsed}. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  /**
   * Enables the queue after the driver set its size and addresses (§4.2.3.2 / §4.1.5.1.3).
   * Checks size (§2.7), alignment (§2.7 "Virtqueue Part Alignment") and that every ring
   * lies inside guest memory; on failure the queue stays disabled and the error is
   * reported (the device then needs a reset).
   *
   * @returns `undefined`, or the error
   */
  enable(): VirtioError | undefined {
    const err = this.resolve();
    if (err !== undefined) {
      this.fail(err);
      return err;
    }
    this.enabled = true;
    return undefined;
  }

  /**
   * Starts serving buffers (at DRIVER_OK, or when enabled after it).
   *
   * @param eventIdx - VIRTIO_F_EVENT_IDX negotiated
   * @param indirectDesc - VIRTIO_F_INDIRECT_DESC negotiated
   */
  activate(eventIdx: boolean, indirectDesc: boolean): void {
    if (!this.enabled) return;
    this.eventIdx = eventIdx;
    this.indirectDesc = indirectDesc;
    this.active = true;
  }

  /** Back to the reset state: disabled, indices zero, nothing in flight, size = max. */
  reset(): void {
    this.enabled = false;
    this.active = false;
    this.error = null;
    this.size = this.maxSize;
    this.descAddr = 0;
    this.driverAddr = 0;
    this.deviceAddr = 0;
    this.eventIdx = false;
    this.indirectDesc = false;
    this.nextAvail = 0;
    this.availIdxSeen = 0;
    this.nextUsed = 0;
    this.publishedUsed = 0;
    this.signalledUsed = 0;
    this.notifyEnabled = true;
    this.usedFlags = 0;
    this.slotOf.fill(0);
    // Chains are dropped, not reused: a device may still hold one from before.
    this.pool.length = 0;
    this.spareCount = 0;
    this.inFlightCount = 0;
    this.epoch = -1;
  }

  private resolve(): VirtioError | undefined {
    const mem = this.memory;
    const q = this.index;
    if (mem === null)
      return new VirtioError(VirtioErrorCode.DEVICE_FAILURE, "queue has no guest memory", q);
    const n = this.size;
    if (!isValidQueueSize(n) || n > this.maxSize) {
      return new VirtioError(
        VirtioErrorCode.BAD_QUEUE_SIZE,
        `driver set queue size ${n}; it must be a power of two ≤ ${this.maxSize} (§2.7)`,
        q,
      );
    }
    if (
      this.descAddr % VIRTQ_DESC_ALIGN ||
      this.driverAddr % VIRTQ_AVAIL_ALIGN ||
      this.deviceAddr % VIRTQ_USED_ALIGN
    ) {
      return new VirtioError(
        VirtioErrorCode.RING_MISALIGNED,
        `rings at desc 0x${this.descAddr.toString(16)} / avail 0x${this.driverAddr.toString(16)} / used 0x${this.deviceAddr.toString(16)} break the 16/2/4 alignment of §2.7`,
        q,
      );
    }
    const d = mem.locate(this.descAddr, descTableBytes(n));
    const a = mem.locate(this.driverAddr, availRingBytes(n));
    const u = mem.locate(this.deviceAddr, usedRingBytes(n));
    if (d < 0 || a < 0 || u < 0) {
      const which = d < 0 ? "descriptor table" : a < 0 ? "available ring" : "used ring";
      return new VirtioError(
        VirtioErrorCode.RING_OUT_OF_RANGE,
        `the ${which} of queue ${q} (size ${n}) is outside guest memory`,
        q,
      );
    }
    const dr = mem.regions[d]!;
    const ar = mem.regions[a]!;
    const ur = mem.regions[u]!;
    this.descView = dr.view;
    this.descBase = this.descAddr - dr.base;
    this.descWords = wordView(dr.bytes, this.descBase, 4 * n);
    const availWords = wordsOver(ar.bytes, this.driverAddr - ar.base, availRingBytes(n));
    const usedWords = wordsOver(ur.bytes, this.deviceAddr - ur.base, usedRingBytes(n));
    if (availWords === null || usedWords === null) {
      return new VirtioError(
        VirtioErrorCode.RING_MISALIGNED,
        "ring not 2-byte aligned in host memory",
        q,
      );
    }
    this.availWords = availWords;
    this.usedWords = usedWords;
    this.usedView = ur.view;
    this.usedBase = this.deviceAddr - ur.base;
    this.usedDwords = wordView(ur.bytes, this.usedBase, (usedRingBytes(n) - 2) >>> 2);
    const only = mem.regions.length === 1 ? mem.regions[0]! : null;
    this.flatBase = only === null ? 0 : only.base;
    this.flatEnd = only === null ? -1 : only.end;
    this.flatWords = only === null ? null : wordView(only.bytes, 0, Math.floor(only.size / 4));
    this.epoch = mem.epoch;
    this.stable = !mem.growable;
    this.viewCheck = mem.growable && only !== null;
    // Chains of another memory (a re-bind) are dropped: their heads stay in flight without
    // a chain, and their pool entries are replaced. Chains of this memory stay valid (its
    // region objects are refreshed in place), so in-flight heads keep their writable length.
    const pool = this.pool;
    const slotOf = this.slotOf;
    for (let h = 0; h < slotOf.length; h++) {
      const k = slotOf[h]!;
      if (k > 0 && pool[k - 1]!.regions !== mem.regions) {
        slotOf[h] = -1;
        this.spareIds[this.spareCount++] = k - 1;
      }
    }
    for (let i = 0; i < pool.length; i++)
      if (pool[i]!.regions !== mem.regions) pool[i] = new DescriptorChain(mem);
    return undefined;
  }

  /**
   * Re-resolves the rings when the guest memory's views were re-created (a
   * `WebAssembly.Memory` grew and detached its buffer); a no-op for other memory.
   *
   * @returns false when the rings can no longer be resolved (the queue is then stopped)
   */
  /**
   * The region holding `[addr, addr + len)` (§2.7.5: every buffer must be guest memory),
   * or -1. `addr` is -1 or a safe integer and `len` a u32, so one-region memory needs
   * only two comparisons (subtracting, never adding, so nothing rounds near 2^53).
   */
  private regionOf(addr: number, len: number, mem: GuestMemory): number {
    if (addr < 0) return -1;
    if (this.flatEnd >= 0) return addr >= this.flatBase && len <= this.flatEnd - addr ? 0 : -1;
    return mem.locate(addr, len);
  }

  /**
   * Whether the cached ring views are current (small enough for V8 to inline). Views of
   * non-growable memory always are; views of one-region growable (`WebAssembly.Memory`)
   * memory are while the available-ring view still has elements: growing detaches the
   * region's one buffer, which empties that view and every other view of it, so no call
   * into `GuestMemory.refresh` is needed per pop.
   */
  private sync(): boolean {
    // A detached view reads `undefined` (its length is 0): an element read is inlined by
    // the JIT, where `byteLength` on a view of Wasm memory calls a builtin.
    return this.stable || (this.viewCheck && this.availWords[0] !== undefined) || this.syncSlow();
  }

  private syncSlow(): boolean {
    const mem = this.memory;
    if (mem === null) return false;
    if (!mem.growable && mem.epoch === this.epoch) return true;
    return this.resync(mem);
  }

  /** Refreshes views after a `WebAssembly.Memory` grew; a failure stops the queue. */
  private resync(mem: GuestMemory): boolean {
    mem.refresh();
    if (mem.epoch === this.epoch) return true;
    const err = this.resolve();
    if (err === undefined) return true;
    this.fail(err);
    return false;
  }

  private fail(error: VirtioError): null {
    if (this.error === null) {
      this.error = error;
      this.onError(error);
    }
    return null;
  }

  private corrupt(code: VirtioErrorCode, message: string): null {
    return this.fail(new VirtioError(code, message, this.index));
  }

  private reject(code: VirtioErrorCode, message: string): false {
    this.fail(new VirtioError(code, message, this.index));
    return false;
  }

  /** Whether the driver has made buffers available that were not popped yet. */
  hasAvailable(): boolean {
    if (!this.isActive || !this.sync()) return false;
    return loadIndex(this.availWords, 1, this.shared) !== this.nextAvail;
  }

  /**
   * Takes the next available chain, walks and validates it (§2.7.13.2).
   *
   * @returns the chain, or `null` when none is available or the queue is stopped (a
   *   corruption found here stops it and reports the error)
   */
  popChain(): DescriptorChain | null {
    // Kept small (cold paths in helpers) so the JIT inlines it into a device's loop.
    if (!this.active || this.error !== null || !this.sync()) return null;
    const next = this.nextAvail;
    if (next === this.availIdxSeen && !this.fetchAvail()) return null;
    const size = this.size;
    // The ring entry is a payload (plain read, §2.7.13); byte-swapped on a big-endian host.
    // (`descWords` is non-null only on a little-endian host.)
    const entry = 2 + (next & (size - 1));
    const head =
      this.descWords !== null ? this.availWords[entry]! : loadIndex(this.availWords, entry, false);
    this.nextAvail = (next + 1) & 0xffff;
    if (this.eventIdx && this.notifyEnabled) {
      // §2.7.10: tell the driver which index we will look at next.
      this.storeUsed(2 + 4 * size, this.nextAvail);
    }
    if (head >= size || this.slotOf[head] !== 0) return this.badHead(head);
    const id = this.spareCount > 0 ? this.spareIds[--this.spareCount]! : this.newChain();
    const chain = this.pool[id]!;
    if (!this.walkShort(head, chain) && !this.walk(head, chain, this.memory!)) {
      this.spareIds[this.spareCount++] = id;
      return null;
    }
    this.slotOf[head] = id + 1;
    this.inFlightCount++;
    this.stats.popped++;
    return chain;
  }

  /**
   * Reads `avail.idx` when every entry seen so far was popped (§2.7.13.3: it may run ahead
   * of the device by at most the queue size, as rust-vmm and QEMU check).
   *
   * @returns whether an entry is pending (false also when the jump stopped the queue)
   */
  private fetchAvail(): boolean {
    const idx = loadIndex(this.availWords, 1, this.shared);
    this.stats.availReads++;
    const pending = (idx - this.nextAvail) & 0xffff;
    if (pending > this.size) {
      return this.reject(
        VirtioErrorCode.AVAIL_IDX_JUMP,
        `avail.idx moved from ${this.nextAvail} to ${idx}: ${pending} buffers on a queue of ${this.size}`,
      );
    }
    if (pending === 0) return false;
    this.availIdxSeen = idx;
    return true;
  }

  /** Adds a chain to the pool (none is spare). @returns its pool index */
  private newChain(): number {
    return this.pool.push(new DescriptorChain(this.memory!)) - 1;
  }

  /** Reports a head the avail ring may not name (§2.7.6): out of range, or in flight. */
  private badHead(head: number): null {
    if (head >= this.size) {
      return this.corrupt(
        VirtioErrorCode.HEAD_OUT_OF_RANGE,
        `avail ring names head ${head} on a queue of ${this.size}`,
      );
    }
    return this.corrupt(
      VirtioErrorCode.HEAD_IN_USE,
      `head ${head} made available again while the device still owns it`,
    );
  }

  /**
   * The fast path for the common chain: one or two direct descriptors in one-region
   * memory, below 4 GiB, on a little-endian host. It only ever accepts: it applies the
   * same checks as {@link walk} (§2.7.5 buffer inside guest memory and total ≤ 2^32,
   * §2.7.4.2 readable before writable, §2.7.5.3.1 next < size and no chain longer than the
   * queue) and, for anything it does not take (an indirect descriptor, a third descriptor,
   * an address above 4 GiB, or any check failing), returns false having changed nothing
   * but `chain`, so that {@link walk} re-reads the chain and accepts it or reports the
   * corruption. Each descriptor word is read once.
   */
  private walkShort(head: number, chain: DescriptorChain): boolean {
    const words = this.descWords;
    const flatEnd = this.flatEnd;
    if (words === null || flatEnd < 0) return false;
    const flatBase = this.flatBase;
    const size = this.size;
    // Flag bits and the 2^32 limit are literals here (VIRTQ_DESC_F_INDIRECT 4, _WRITE 2,
    // _NEXT 1, VIRTQ_MAX_CHAIN_BYTES; §2.7.5): an imported binding costs a load and a
    // hole check per use in optimized code. The test suite checks they match spec.ts.
    const b = chain.buf; // room for at least two buffers (DescriptorChain's initial capacity)
    let idx = head; // < size: checked by popChain, and below for `next`
    let count = 0;
    let n = 0;
    let readable = 0;
    let readableBytes = 0;
    let writableBytes = 0;
    let writing = false;
    for (;;) {
      const w = idx * 4;
      const lo = words[w]!;
      const len = words[w + 2]!;
      const flagsNext = words[w + 3]!;
      if ((flagsNext & 4) !== 0 || words[w + 1] !== 0) return false;
      count++;
      if ((flagsNext & 2) !== 0) writing = true;
      else if (writing) return false; // §2.7.4.2
      if (len !== 0) {
        if (lo < flatBase || len > flatEnd - lo) return false; // §2.7.5: inside guest memory
        b[3 * n] = 0;
        b[3 * n + 1] = lo - flatBase;
        b[3 * n + 2] = len;
        n++;
        if (writing) writableBytes += len;
        else {
          readable++;
          readableBytes += len;
        }
      }
      if ((flagsNext & 1) === 0) break;
      // A third descriptor, or a second on a queue of one (§2.7.5.3.1), is the walk's.
      if (count === 2 || count >= size) return false;
      idx = flagsNext >>> 16;
      if (idx >= size) return false;
    }
    // §2.7.5.2: two u32 lengths can pass 2^32 together.
    if (readableBytes + writableBytes > 0x1_0000_0000) return false;
    chain.setDirect(head, count, readable, n - readable, readableBytes, writableBytes);
    return true;
  }

  /** Walks a chain from `head` into `chain`; on corruption reports it and returns false. */
  private walk(head: number, chain: DescriptorChain, mem: GuestMemory): boolean {
    chain.begin(head);
    const flatBase = this.flatBase;
    const flatEnd = this.flatEnd;
    const flatWords = this.flatWords;
    let words = this.descWords; // u32 words of the current table, or null: use the DataView
    let wbase = 0; // index of the current table's first word in `words`
    let view = this.descView;
    let base = this.descBase;
    let tableSize = this.size;
    let limit = this.size; // §2.7.5.3.1: no chain longer than the queue size (this also stops loops)
    let inIndirect = false;
    let seenWritable = false;
    let total = 0;
    let idx = head;
    let count = 0;
    for (;;) {
      if (count >= limit) {
        return this.reject(
          VirtioErrorCode.CHAIN_TOO_LONG,
          `chain from head ${head} has more than ${limit} descriptors (a loop, or longer than the queue)`,
        );
      }
      count++;
      // Each field is read once (no time-of-check/time-of-use gap with a racing driver).
      let lo: number;
      let hi: number;
      let len: number;
      let flags: number;
      let next: number;
      if (words !== null) {
        const w = wbase + idx * 4;
        lo = words[w]!;
        hi = words[w + 1]!;
        len = words[w + 2]!;
        const flagsNext = words[w + 3]!;
        flags = flagsNext & 0xffff;
        next = flagsNext >>> 16;
      } else {
        const off = base + idx * 16;
        lo = view.getUint32(off, true);
        hi = view.getUint32(off + 4, true);
        len = view.getUint32(off + 8, true);
        flags = view.getUint16(off + 12, true);
        next = view.getUint16(off + 14, true);
      }
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirectDesc) {
          return this.reject(
            VirtioErrorCode.INDIRECT_NOT_NEGOTIATED,
            `descriptor ${idx} is INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated`,
          );
        }
        if (inIndirect) {
          return this.reject(
            VirtioErrorCode.NESTED_INDIRECT,
            `indirect table entry ${idx} is itself INDIRECT (§2.7.5.3.1)`,
          );
        }
        if (flags & VIRTQ_DESC_F_NEXT) {
          return this.reject(
            VirtioErrorCode.INDIRECT_WITH_NEXT,
            `descriptor ${idx} sets both INDIRECT and NEXT (§2.7.5.3.1)`,
          );
        }
        if (len === 0 || len % 16 !== 0) {
          return this.reject(
            VirtioErrorCode.BAD_INDIRECT_LENGTH,
            `indirect table length ${len} is not a non-zero multiple of 16 (§2.7.5.3)`,
          );
        }
        const entries = len / 16;
        if (entries > this.size) {
          return this.reject(
            VirtioErrorCode.INDIRECT_TOO_LONG,
            `indirect table of ${entries} entries exceeds queue size ${this.size} (§2.7.5.3.1)`,
          );
        }
        const addr = combineAddress(lo, hi);
        const r = this.regionOf(addr, len, mem);
        if (r < 0) {
          return this.reject(
            VirtioErrorCode.BUFFER_OUT_OF_RANGE,
            `indirect table at 0x${hi.toString(16)}${lo.toString(16).padStart(8, "0")}+${len} is outside guest memory`,
          );
        }
        const region = mem.regions[r]!;
        view = region.view;
        base = addr - region.base;
        // A 4-byte aligned table in one-region memory is read as words of the whole region;
        // any other (no alignment is required of indirect tables) through the DataView.
        words = flatWords !== null && base % 4 === 0 ? flatWords : null;
        wbase = base / 4;
        tableSize = entries;
        limit = count + entries;
        inIndirect = true;
        chain.indirect = true;
        idx = 0;
        continue;
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (writable) seenWritable = true;
      else if (seenWritable) {
        return this.reject(
          VirtioErrorCode.READABLE_AFTER_WRITABLE,
          `device-readable descriptor ${idx} follows a device-writable one in chain ${head} (§2.7.4.2)`,
        );
      }
      if (len !== 0) {
        total += len;
        if (total > VIRTQ_MAX_CHAIN_BYTES) {
          return this.reject(
            VirtioErrorCode.CHAIN_TOO_BIG,
            `chain from head ${head} is longer than 2^32 bytes (§2.7.5.2)`,
          );
        }
        const addr = hi === 0 ? lo : combineAddress(lo, hi);
        // One-region memory (the common case) is checked inline; see regionOf.
        const r =
          flatEnd >= 0 && addr >= flatBase && len <= flatEnd - addr
            ? 0
            : this.regionOf(addr, len, mem);
        if (r < 0) {
          return this.reject(
            VirtioErrorCode.BUFFER_OUT_OF_RANGE,
            `descriptor ${idx} of chain ${head} points at 0x${hi.toString(16)}${lo.toString(16).padStart(8, "0")}+${len}, outside guest memory`,
          );
        }
        chain.push(r, addr - mem.regions[r]!.base, len, writable);
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      if (next >= tableSize) {
        return this.reject(
          VirtioErrorCode.NEXT_OUT_OF_RANGE,
          `descriptor ${idx} of chain ${head} has next ${next} ≥ ${tableSize}`,
        );
      }
      idx = next;
    }
    chain.descriptorCount = count;
    return true;
  }

  /**
   * Returns a chain to the driver (§2.7.8): writes the used element. The used index is
   * published by {@link publishUsed} (or {@link needsNotification}), once per batch.
   *
   * @param head - the chain's head
   * @param len - bytes written into its writable buffers (clamped to their total)
   * @returns false when `head` is not in flight (a device bug, or a completion from
   *   before a reset); nothing is written then
   */
  addUsed(head: number, len: number): boolean {
    // `!(head < size)` also refuses NaN; `slotOf[head]` is undefined for a negative or
    // fractional head. (Kept small so the JIT inlines it into a device's loop.)
    if (!this.enabled || !(head < this.size)) return false;
    const k = this.slotOf[head];
    if (k === undefined || k === 0 || !this.sync()) return false;
    this.slotOf[head] = 0;
    this.inFlightCount--;
    let max = 0;
    if (k > 0) {
      max = this.pool[k - 1]!.writableLength;
      this.spareIds[this.spareCount++] = k - 1;
    }
    // Clamped to [0, max]; NaN (a device bug) counts as 0.
    const used = !(len > 0) ? 0 : Math.min(len, max);
    const slot = this.nextUsed & (this.size - 1);
    const dwords = this.usedDwords;
    if (dwords !== null) {
      dwords[1 + 2 * slot] = head;
      dwords[2 + 2 * slot] = used;
    } else this.writeUsedElement(slot, head, used);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    this.stats.used++;
    if (this.memory!.writeObserver !== null) this.noteUsedWrites(k, used, slot);
    return true;
  }

  /** Writes used element `slot` through the `DataView` (big-endian host or odd placement). */
  private writeUsedElement(slot: number, head: number, used: number): void {
    const off = this.usedBase + 4 + 8 * slot;
    this.usedView.setUint32(off, head, true);
    this.usedView.setUint32(off + 4, used, true);
  }

  /** Reports what returning a chain wrote: its writable bytes up to `used`, and the used element. */
  private noteUsedWrites(k: number, used: number, slot: number): void {
    const mem = this.memory!;
    const chain = k > 0 ? this.pool[k - 1]! : null; // just returned, not reused yet
    if (chain !== null) {
      let left = used;
      for (let i = chain.readableCount; left > 0 && i < chain.bufferCount; i++) {
        const n = Math.min(left, chain.bufferLength(i));
        mem.noteWrite(chain.regions[chain.buf[3 * i]!]!.base + chain.bufferOffset(i), n);
        left -= n;
      }
    }
    mem.noteWrite(this.deviceAddr + 4 + 8 * slot, 8);
  }

  /** Stores 16-bit word `word` of the used ring (flags, idx or avail_event). */
  private storeUsed(word: number, value: number): void {
    storeIndex(this.usedWords, word, value, this.shared);
    const mem = this.memory!;
    if (mem.writeObserver !== null) mem.noteWrite(this.deviceAddr + 2 * word, 2);
  }

  /** Makes every used element written so far visible to the driver (one store of used.idx). */
  publishUsed(): void {
    if (this.publishedUsed === this.nextUsed || !this.enabled || !this.sync()) return;
    // §2.7.8.2: len is set before idx; the store orders the element writes before it.
    this.storeUsed(1, this.nextUsed);
    this.publishedUsed = this.nextUsed;
  }

  /**
   * Publishes pending used elements and says whether the driver wants an interrupt for
   * them (§2.7.10): with EVENT_IDX, whether used.idx crossed `used_event`; without, unless
   * the driver set VIRTQ_AVAIL_F_NO_INTERRUPT.
   */
  needsNotification(): boolean {
    this.publishUsed();
    if (this.enabled && !this.sync()) return false;
    const now = this.nextUsed;
    const old = this.signalledUsed;
    this.signalledUsed = now;
    let need: boolean;
    if (now === old) need = false;
    else if (this.eventIdx) {
      const usedEvent = loadIndex(this.availWords, 2 + this.size, this.shared);
      need = vringNeedEvent(usedEvent, now, old);
    } else {
      need = (loadIndex(this.availWords, 0, this.shared) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    if (need) this.stats.notificationsNeeded++;
    else this.stats.notificationsSuppressed++;
    return need;
  }

  /**
   * Asks the driver to stop notifying (§2.7.10): sets VIRTQ_USED_F_NO_NOTIFY, or with
   * EVENT_IDX simply stops moving `avail_event`.
   */
  disableNotification(): void {
    if (!this.enabled || !this.sync()) return;
    this.notifyEnabled = false;
    if (!this.eventIdx) {
      this.usedFlags |= VIRTQ_USED_F_NO_NOTIFY;
      this.storeUsed(0, this.usedFlags);
    }
  }

  /**
   * Asks the driver to notify again, then re-checks the ring, closing the race with a
   * driver that added buffers while notifications were off.
   *
   * @returns true when buffers are available (the caller should keep processing)
   */
  enableNotification(): boolean {
    if (!this.enabled || !this.sync()) return false;
    this.notifyEnabled = true;
    if (this.eventIdx) {
      this.storeUsed(2 + 4 * this.size, this.nextAvail);
    } else {
      this.usedFlags &= ~VIRTQ_USED_F_NO_NOTIFY;
      this.storeUsed(0, this.usedFlags);
    }
    return this.hasAvailable();
  }

  /** The next avail index the device will read (for tests and diagnostics). */
  get nextAvailIndex(): number {
    return this.nextAvail;
  }

  /** The next used index the device will write (for tests and diagnostics). */
  get nextUsedIndex(): number {
    return this.nextUsed;
  }
}
