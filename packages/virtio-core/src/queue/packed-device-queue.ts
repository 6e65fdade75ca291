/**
 * `PackedDeviceQueue`: the device side of a packed virtqueue (§2.8, VIRTIO_F_RING_PACKED),
 * hardened against a hostile driver like {@link DeviceQueue}: every descriptor is read
 * once, every buffer is range-checked against guest memory, every walk is bounded by the
 * queue size, and any corruption stops the queue and reports a {@link VirtioError} so the
 * device enters DEVICE_NEEDS_RESET.
 *
 * One ring of 16-byte descriptors (`addr`, `len`, `id`, `flags`) carries both directions
 * (§2.8.1): the driver makes a descriptor available by writing AVAIL = its avail wrap
 * counter and USED = the inverse; the device returns a buffer by writing a used descriptor
 * (the buffer ID, the length written, AVAIL = USED = its used wrap counter) at its next
 * used position, which then skips as many ring slots as the buffer took (§2.8.7, §2.8.21).
 * Buffers may complete in any order: the buffer ID, not the position, names them.
 *
 * The driver area is the driver event suppression structure (when to interrupt), the
 * device area the device event suppression structure (when to notify), §2.8.10.
 *
 * Chains are the same {@link DescriptorChain} objects the split ring pops, so a device
 * serves either layout with the same code (see {@link DeviceVirtqueue}).
 *
 * @module
 */

import { combineAddress, type GuestMemory, HOST_LITTLE_ENDIAN } from "@pvkit/platform";
import { VirtioError, VirtioErrorCode } from "../errors.js";
import { loadIndex, storeIndex, wordsOver } from "../ring-access.js";
import {
  isValidPackedQueueSize,
  packedRingBytes,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_MAX_CHAIN_BYTES,
  VRING_PACKED_DESC_ALIGN,
  VRING_PACKED_EVENT_ALIGN,
  VRING_PACKED_EVENT_BYTES,
  VRING_PACKED_EVENT_FLAG_DESC,
  VRING_PACKED_EVENT_FLAG_DISABLE,
  VRING_PACKED_EVENT_FLAG_ENABLE,
  vringNeedEvent,
} from "../spec.js";
import { DescriptorChain } from "./chain.js";
import type { DeviceQueueStats, QueueErrorHandler } from "./device-queue.js";
import type { DeviceVirtqueue } from "./virtqueue.js";

const EMPTY_VIEW = new DataView(new ArrayBuffer(0));
const EMPTY_WORDS = new Uint16Array(2);

/** `count` little-endian u32 words at `offset` of `bytes`, or null (big-endian host, unaligned). */
function u32Over(bytes: Uint8Array, offset: number, count: number): Uint32Array | null {
  const abs = bytes.byteOffset + offset;
  return HOST_LITTLE_ENDIAN && abs % 4 === 0 ? new Uint32Array(bytes.buffer, abs, count) : null;
}

/** Hex of a 64-bit address given as two u32 halves (for messages). */
function hex64(lo: number, hi: number): string {
  return `0x${hi === 0 ? lo.toString(16) : hi.toString(16) + lo.toString(16).padStart(8, "0")}`;
}

/**
 * The device side of one packed virtqueue (§2.8).
 */
export class PackedDeviceQueue implements DeviceVirtqueue {
  /** Queue size the driver configured; starts at {@link maxSize}. Any value in [1, maxSize] (§2.8). */
  size: number;
  /** Guest-physical address of the descriptor ring (§2.8.10.1, 16-byte aligned). */
  descAddr = 0;
  /** Guest-physical address of the driver event suppression structure (4-byte aligned). */
  driverAddr = 0;
  /** Guest-physical address of the device event suppression structure (4-byte aligned). */
  deviceAddr = 0;
  /** Whether VIRTIO_F_EVENT_IDX was negotiated (descriptor-position events, §2.8.10). */
  eventIdx = false;
  /** Whether VIRTIO_F_INDIRECT_DESC was negotiated (§2.8.19). */
  indirectDesc = false;
  /** The error that stopped this queue, or `null` while healthy. */
  error: VirtioError | null = null;
  /** Counters (`availReads` counts reads of a head descriptor's flags). */
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

  // Resolved areas (valid while enabled).
  private ringHalves: Uint16Array = EMPTY_WORDS; // the descriptor ring as u16 (flags, id)
  private ringWords: Uint32Array | null = null; // the descriptor ring as u32 (addr, len)
  private ringView: DataView = EMPTY_VIEW;
  private ringBase = 0;
  private driverEvent: Uint16Array = EMPTY_WORDS; // [off_wrap, flags]
  private deviceEvent: Uint16Array = EMPTY_WORDS; // [off_wrap, flags]
  private flatWords: Uint32Array | null = null;
  private flatBase = 0;
  private flatEnd = -1;

  // Ring state (§2.8.1: both wrap counters start at 1).
  private nextAvail = 0;
  private availWrap = 1;
  private nextUsed = 0;
  private usedWrap = 1;
  private outstanding = 0; // ring slots popped and not yet skipped by a used descriptor
  private usedSinceSignal = 0; // ring slots the used position moved since needsNotification
  private signalledOnce = false;
  private notifyEnabled = true;
  private inFlightCount = 0;
  private stable = false; // memory that never moves: sync() has nothing to check
  private readonly slots: number[]; // per buffer ID: ring slots the buffer took
  // Chain objects as the split ring keeps them: the hot path stores only numbers (no
  // object pointer written per chain, so no write barrier runs).
  private readonly pool: DescriptorChain[] = [];
  // Per buffer ID: 0 = the driver's, k > 0 = in flight as pool[k - 1], -1 = in flight with
  // its chain dropped (a re-bind to other memory; it is returned with used length 0).
  private readonly slotOf: number[];
  // Pool indices of the spare chains, reused last-in first-out.
  private readonly spareIds: number[];
  private spareCount = 0;

  /**
   * @param index - the queue's index in its device
   * @param maxSize - the largest size the device supports, in [1, 32768]
   * @param onError - told once when the guest corrupts the queue
   */
  constructor(
    readonly index: number,
    readonly maxSize: number,
    private readonly onError: QueueErrorHandler = () => {},
  ) {
    if (!isValidPackedQueueSize(maxSize))
      throw new Error(`packed queue max size ${maxSize} is not an integer in [1, 32768]`);
    this.size = maxSize;
    // Plain arrays of small integers, filled up front so they keep packed elements.
    this.slots = new Array<number>(maxSize).fill(0);
    this.slotOf = new Array<number>(maxSize).fill(0);
    this.spareIds = new Array<number>(maxSize).fill(0);
  }

  /** Hands the queue the guest memory its ring and buffers live in. */
  bind(memory: GuestMemory): void {
    this.memory = memory;
    this.shared = memory.shared;
    this.stable = false;
  }

  /** Whether the driver enabled the queue. */
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

  /** The next ring position the device reads, with the avail wrap counter in bit 15. */
  get nextAvailIndex(): number {
    return this.nextAvail | (this.availWrap << 15);
  }

  /** The next ring position the device writes, with the used wrap counter in bit 15. */
  get nextUsedIndex(): number {
    return this.nextUsed | (this.usedWrap << 15);
  }

  /**
   * Enables the queue after the driver set its size and addresses. Checks the size (§2.8),
   * the alignment (§2.8.10.1) and that the ring and both event structures lie inside guest
   * memory; on failure the queue stays disabled and the error is reported.
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

  /** Back to the reset state: disabled, positions 0, wrap counters 1, nothing in flight. */
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
    this.availWrap = 1;
    this.nextUsed = 0;
    this.usedWrap = 1;
    this.outstanding = 0;
    this.usedSinceSignal = 0;
    this.signalledOnce = false;
    this.notifyEnabled = true;
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
    if (!isValidPackedQueueSize(n) || n > this.maxSize) {
      return new VirtioError(
        VirtioErrorCode.BAD_QUEUE_SIZE,
        `driver set packed queue size ${n}; it must be an integer in [1, ${this.maxSize}] (§2.8)`,
        q,
      );
    }
    if (
      this.descAddr % VRING_PACKED_DESC_ALIGN ||
      this.driverAddr % VRING_PACKED_EVENT_ALIGN ||
      this.deviceAddr % VRING_PACKED_EVENT_ALIGN
    ) {
      return new VirtioError(
        VirtioErrorCode.RING_MISALIGNED,
        `packed ring at 0x${this.descAddr.toString(16)}, event structures at 0x${this.driverAddr.toString(16)} / 0x${this.deviceAddr.toString(16)} break the 16/4/4 alignment of §2.8.10.1`,
        q,
      );
    }
    const d = mem.locate(this.descAddr, packedRingBytes(n));
    const a = mem.locate(this.driverAddr, VRING_PACKED_EVENT_BYTES);
    const u = mem.locate(this.deviceAddr, VRING_PACKED_EVENT_BYTES);
    if (d < 0 || a < 0 || u < 0) {
      const which =
        d < 0
          ? "descriptor ring"
          : a < 0
            ? "driver event suppression structure"
            : "device event suppression structure";
      return new VirtioError(
        VirtioErrorCode.RING_OUT_OF_RANGE,
        `the ${which} of packed queue ${q} (size ${n}) is outside guest memory`,
        q,
      );
    }
    const dr = mem.regions[d]!;
    const ar = mem.regions[a]!;
    const ur = mem.regions[u]!;
    const halves = wordsOver(dr.bytes, this.descAddr - dr.base, packedRingBytes(n));
    const drv = wordsOver(ar.bytes, this.driverAddr - ar.base, VRING_PACKED_EVENT_BYTES);
    const dev = wordsOver(ur.bytes, this.deviceAddr - ur.base, VRING_PACKED_EVENT_BYTES);
    if (halves === null || drv === null || dev === null) {
      return new VirtioError(
        VirtioErrorCode.RING_MISALIGNED,
        "packed ring not 2-byte aligned in host memory",
        q,
      );
    }
    this.ringHalves = halves;
    this.ringView = dr.view;
    this.ringBase = this.descAddr - dr.base;
    this.ringWords = u32Over(dr.bytes, this.ringBase, 4 * n);
    this.driverEvent = drv;
    this.deviceEvent = dev;
    const only = mem.regions.length === 1 ? mem.regions[0]! : null;
    this.flatBase = only === null ? 0 : only.base;
    this.flatEnd = only === null ? -1 : only.end;
    this.flatWords = only === null ? null : u32Over(only.bytes, 0, Math.floor(only.size / 4));
    this.epoch = mem.epoch;
    this.stable = !mem.growable;
    // Chains of another memory (a re-bind) are dropped, as in the split ring.
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

  private regionOf(addr: number, len: number, mem: GuestMemory): number {
    if (addr < 0) return -1;
    if (this.flatEnd >= 0) return addr >= this.flatBase && len <= this.flatEnd - addr ? 0 : -1;
    return mem.locate(addr, len);
  }

  private sync(): boolean {
    return this.stable || this.syncSlow();
  }

  private syncSlow(): boolean {
    const mem = this.memory;
    if (mem === null) return false;
    if (!mem.growable && mem.epoch === this.epoch) return true;
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

  private reject(code: VirtioErrorCode, message: string): false {
    this.fail(new VirtioError(code, message, this.index));
    return false;
  }

  /** Whether the descriptor at `pos` is available in wrap `wrap` (§2.8.1), read once. */
  private isAvail(flags: number, wrap: number): boolean {
    return ((flags >>> 7) & 1) === wrap && ((flags >>> 15) & 1) !== wrap;
  }

  /** Whether the driver has made a buffer available that was not popped yet. */
  hasAvailable(): boolean {
    if (!this.isActive || !this.sync()) return false;
    return this.isAvail(
      loadIndex(this.ringHalves, 8 * this.nextAvail + 7, this.shared),
      this.availWrap,
    );
  }

  /**
   * Takes the next available buffer, walks and validates it (§2.8.6, §2.8.8, §2.8.19).
   *
   * @returns the chain (`head` is its buffer ID), or `null` when none is available or the
   *   queue is stopped (a corruption found here stops it and reports the error)
   */
  popChain(): DescriptorChain | null {
    if (!this.active || this.error !== null) return null;
    if (!this.sync()) return null;
    const pos = this.nextAvail;
    // §2.8.21.1: the head's flags are read with acquire ordering before the rest.
    const flags = loadIndex(this.ringHalves, 8 * pos + 7, this.shared);
    this.stats.availReads++;
    if (!this.isAvail(flags, this.availWrap)) return null;
    const k = this.spareCount > 0 ? this.spareIds[--this.spareCount]! : this.newChain();
    const chain = this.pool[k]!;
    let slots = this.walkShort(pos, flags, chain);
    if (slots === 0) slots = this.walk(pos, flags, chain, this.memory!);
    if (slots < 0) {
      this.spareIds[this.spareCount++] = k;
      return null;
    }
    const id = chain.head;
    this.slotOf[id] = k + 1;
    this.slots[id] = slots;
    this.outstanding += slots;
    this.inFlightCount++;
    this.stats.popped++;
    let next = pos + slots;
    if (next >= this.size) {
      next -= this.size;
      this.availWrap ^= 1;
    }
    this.nextAvail = next;
    if (this.eventIdx && this.notifyEnabled) this.storeDeviceEvent(VRING_PACKED_EVENT_FLAG_DESC);
    return chain;
  }

  /** Adds a chain to the pool (none is spare). @returns its pool index */
  private newChain(): number {
    return this.pool.push(new DescriptorChain(this.memory!)) - 1;
  }

  /**
   * The fast path for the common buffer: one or two direct descriptors in one-region
   * memory, below 4 GiB, on a little-endian host (as the split ring's `walkShort`). It only
   * ever accepts: it applies the checks of {@link walk} (§2.8.4 no more slots than the
   * driver owns, §2.8.6 each descriptor available in its lap, §2.8.13 readable before
   * writable, buffers inside guest memory and at most 2^32 bytes, §2.8.6 buffer ID below
   * the size and not in flight) and returns 0, having
   * changed nothing but `chain`, for anything else (an indirect descriptor, a third
   * descriptor, an address above 4 GiB, a failed check), so that {@link walk} re-reads the
   * buffer and accepts it or reports the corruption. Each descriptor word is read once.
   *
   * @returns ring slots the buffer takes (1 or 2), or 0
   */
  private walkShort(pos: number, headFlags: number, chain: DescriptorChain): number {
    const words = this.ringWords;
    const flatEnd = this.flatEnd;
    if (words === null || flatEnd < 0) return 0;
    const flatBase = this.flatBase;
    const size = this.size;
    const free = size - this.outstanding;
    // Flag bits and the 2^32 limit are literals (VIRTQ_DESC_F_INDIRECT 4, _WRITE 2, _NEXT 1,
    // VIRTQ_MAX_CHAIN_BYTES), as in the split ring's fast path; tests check them.
    const b = chain.buf; // room for at least two buffers (DescriptorChain's initial capacity)
    let p = pos;
    let wrap = this.availWrap;
    let flags = headFlags;
    let count = 0;
    let n = 0;
    let readable = 0;
    let readableBytes = 0;
    let writableBytes = 0;
    let writing = false;
    let id = 0;
    for (;;) {
      if (count >= free) return 0;
      const w = 4 * p;
      const lo = words[w]!;
      const len = words[w + 2]!;
      const idFlags = words[w + 3]!;
      if (count > 0) {
        flags = idFlags >>> 16;
        // Not available in its lap (AVAIL 0x80 = wrap, USED 0x8000 != wrap): the walk's.
        if (((flags >>> 7) & 1) !== wrap || ((flags >>> 15) & 1) === wrap) return 0;
      }
      if ((flags & 4) !== 0 || words[w + 1] !== 0) return 0;
      id = idFlags & 0xffff;
      count++;
      if ((flags & 2) !== 0) writing = true;
      else if (writing) return 0; // §2.8.13
      if (len !== 0) {
        if (lo < flatBase || len > flatEnd - lo) return 0;
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
      if ((flags & 1) === 0) break;
      if (count === 2) return 0; // a third descriptor is the walk's
      if (p + 1 === size) {
        p = 0;
        wrap ^= 1;
      } else p++;
    }
    if (readableBytes + writableBytes > 0x1_0000_0000) return 0;
    // §2.8.6: the buffer ID is in the last descriptor.
    if (id >= size || this.slotOf[id] !== 0) return 0;
    chain.setDirect(id, count, readable, n - readable, readableBytes, writableBytes);
    return count;
  }

  /**
   * Walks the buffer whose first descriptor is at ring position `pos` (head flags already
   * read) into `chain`. @returns ring slots it takes, or -1 after reporting a corruption
   */
  private walk(pos: number, headFlags: number, chain: DescriptorChain, mem: GuestMemory): number {
    chain.begin(0);
    const size = this.size;
    const words = this.ringWords;
    const view = this.ringView;
    const base = this.ringBase;
    const halves = this.ringHalves;
    const flatBase = this.flatBase;
    const flatEnd = this.flatEnd;
    const free = size - this.outstanding;
    let seenWritable = false;
    let total = 0;
    let count = 0; // descriptors walked (ring + indirect table)
    let slots = 0; // ring slots
    let p = pos;
    let wrap = this.availWrap; // the lap of position p
    let flags = headFlags;
    for (;;) {
      // §2.8.4 / §2.8.6: a buffer takes at most the free part of the ring (this also bounds
      // a ring whose every descriptor sets NEXT: the walk never passes its own start).
      if (slots >= free) {
        return this.walkFail(
          slots >= size ? VirtioErrorCode.CHAIN_TOO_LONG : VirtioErrorCode.AVAIL_IDX_JUMP,
          slots >= size
            ? `buffer at ring position ${pos} has more than ${size} descriptors (§2.8.6)`
            : `buffer at ring position ${pos} runs past the ${free} ring slots the driver owns (${this.outstanding} still held by the device, §2.8.4)`,
        );
      }
      // Each field is read once (no time-of-check/time-of-use gap with a racing driver).
      let lo: number;
      let hi: number;
      let len: number;
      let id: number;
      if (words !== null) {
        lo = words[4 * p]!;
        hi = words[4 * p + 1]!;
        len = words[4 * p + 2]!;
        const idFlags = words[4 * p + 3]!;
        id = idFlags & 0xffff;
        if (slots > 0) flags = idFlags >>> 16;
      } else {
        const off = base + 16 * p;
        lo = view.getUint32(off, true);
        hi = view.getUint32(off + 4, true);
        len = view.getUint32(off + 8, true);
        id = loadIndex(halves, 8 * p + 6, false);
        if (slots > 0) flags = loadIndex(halves, 8 * p + 7, false);
      }
      // §2.8.6 / §2.8.21.1: the driver writes every descriptor of a buffer with the AVAIL
      // and USED bits of its lap (Linux's virtqueue_add_packed does); one that is not
      // available is a slot the driver did not hand over — a used descriptor, or one of an
      // earlier lap — and the device must not take it (nor write where it points).
      if (slots > 0 && !this.isAvail(flags, wrap)) {
        return this.walkFail(
          VirtioErrorCode.AVAIL_IDX_JUMP,
          `buffer at ring position ${pos} continues at position ${p}, which is not available in this lap (flags 0x${flags.toString(16)}, §2.8.6)`,
        );
      }
      slots++;
      count++;
      if (p + 1 === size) {
        p = 0;
        wrap ^= 1;
      } else p++;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirectDesc) {
          return this.walkFail(
            VirtioErrorCode.INDIRECT_NOT_NEGOTIATED,
            `descriptor at ring position ${(p + size - 1) % size} is INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated (§2.8.19)`,
          );
        }
        if (flags & VIRTQ_DESC_F_NEXT || slots > 1) {
          return this.walkFail(
            VirtioErrorCode.INDIRECT_WITH_NEXT,
            `an INDIRECT descriptor is part of a NEXT-linked list in the buffer at ring position ${pos} (§2.8.19)`,
          );
        }
        if (!this.walkIndirect(lo, hi, len, chain, mem)) return -1;
        chain.head = id;
        count += chain.descriptorCount;
        break;
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (writable) seenWritable = true;
      else if (seenWritable) {
        return this.walkFail(
          VirtioErrorCode.READABLE_AFTER_WRITABLE,
          `a device-readable descriptor follows a device-writable one in the buffer at ring position ${pos} (§2.8.13)`,
        );
      }
      if (len !== 0) {
        total += len;
        if (total > VIRTQ_MAX_CHAIN_BYTES) {
          return this.walkFail(
            VirtioErrorCode.CHAIN_TOO_BIG,
            `buffer at ring position ${pos} is longer than 2^32 bytes`,
          );
        }
        const addr = hi === 0 ? lo : combineAddress(lo, hi);
        const r =
          flatEnd >= 0 && addr >= flatBase && len <= flatEnd - addr
            ? 0
            : this.regionOf(addr, len, mem);
        if (r < 0) {
          return this.walkFail(
            VirtioErrorCode.BUFFER_OUT_OF_RANGE,
            `descriptor of the buffer at ring position ${pos} points at ${hex64(lo, hi)}+${len}, outside guest memory`,
          );
        }
        chain.push(r, addr - mem.regions[r]!.base, len, writable);
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) {
        chain.head = id; // §2.8.6: the buffer ID is in the last descriptor of the list
        break;
      }
    }
    chain.descriptorCount = count;
    const id = chain.head;
    if (id >= size) {
      return this.walkFail(
        VirtioErrorCode.HEAD_OUT_OF_RANGE,
        `buffer at ring position ${pos} has buffer ID ${id} on a queue of ${size} (§2.8.6)`,
      );
    }
    if (this.slotOf[id] !== 0) {
      return this.walkFail(
        VirtioErrorCode.HEAD_IN_USE,
        `buffer ID ${id} made available again while the device still holds it (§2.8.6)`,
      );
    }
    return slots;
  }

  private walkFail(code: VirtioErrorCode, message: string): number {
    this.reject(code, message);
    return -1;
  }

  /**
   * Reads an indirect table (§2.8.19): `len / 16` consecutive descriptors; only WRITE is
   * meaningful in them (NEXT and the buffer ID are ignored), INDIRECT is refused.
   */
  private walkIndirect(
    lo: number,
    hi: number,
    len: number,
    chain: DescriptorChain,
    mem: GuestMemory,
  ): boolean {
    if (len === 0 || len % 16 !== 0) {
      return this.reject(
        VirtioErrorCode.BAD_INDIRECT_LENGTH,
        `indirect table length ${len} is not a non-zero multiple of 16 (§2.8.19)`,
      );
    }
    const entries = len / 16;
    if (entries > this.size) {
      return this.reject(
        VirtioErrorCode.INDIRECT_TOO_LONG,
        `indirect table of ${entries} entries exceeds queue size ${this.size} (§2.8.19)`,
      );
    }
    const addr = combineAddress(lo, hi);
    const r = this.regionOf(addr, len, mem);
    if (r < 0) {
      return this.reject(
        VirtioErrorCode.BUFFER_OUT_OF_RANGE,
        `indirect table at ${hex64(lo, hi)}+${len} is outside guest memory`,
      );
    }
    chain.indirect = true;
    const region = mem.regions[r]!;
    const view = region.view;
    const base = addr - region.base;
    const words = this.flatWords !== null && base % 4 === 0 ? this.flatWords : null;
    const wbase = base / 4;
    let seenWritable = false;
    let total = 0;
    for (let i = 0; i < entries; i++) {
      let dlo: number;
      let dhi: number;
      let dlen: number;
      let flags: number;
      if (words !== null) {
        const w = wbase + 4 * i;
        dlo = words[w]!;
        dhi = words[w + 1]!;
        dlen = words[w + 2]!;
        flags = words[w + 3]! >>> 16;
      } else {
        const off = base + 16 * i;
        dlo = view.getUint32(off, true);
        dhi = view.getUint32(off + 4, true);
        dlen = view.getUint32(off + 8, true);
        flags = view.getUint16(off + 14, true);
      }
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        return this.reject(
          VirtioErrorCode.NESTED_INDIRECT,
          `indirect table entry ${i} is itself INDIRECT (§2.8.19)`,
        );
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (writable) seenWritable = true;
      else if (seenWritable) {
        return this.reject(
          VirtioErrorCode.READABLE_AFTER_WRITABLE,
          `device-readable indirect entry ${i} follows a device-writable one (§2.8.13)`,
        );
      }
      if (dlen === 0) continue;
      total += dlen;
      if (total > VIRTQ_MAX_CHAIN_BYTES) {
        return this.reject(
          VirtioErrorCode.CHAIN_TOO_BIG,
          "indirect buffer is longer than 2^32 bytes",
        );
      }
      const a = dhi === 0 ? dlo : combineAddress(dlo, dhi);
      const rr = this.regionOf(a, dlen, mem);
      if (rr < 0) {
        return this.reject(
          VirtioErrorCode.BUFFER_OUT_OF_RANGE,
          `indirect entry ${i} points at ${hex64(dlo, dhi)}+${dlen}, outside guest memory`,
        );
      }
      chain.push(rr, a - mem.regions[rr]!.base, dlen, writable);
    }
    chain.descriptorCount = entries;
    return true;
  }

  /**
   * Returns a buffer to the driver (§2.8.7, §2.8.21.2): writes a used descriptor (the
   * buffer ID, the length written, then — last, with release ordering — the flags with
   * AVAIL = USED = the used wrap counter) at the next used position, which then skips the
   * ring slots the buffer took. Buffers may be returned in any order.
   *
   * @param head - the chain's buffer ID (`chain.head`)
   * @param len - bytes written into its writable buffers (clamped to their total)
   * @returns false when `head` is not in flight; nothing is written then
   */
  addUsed(head: number, len: number): boolean {
    // `!(head < size)` also refuses NaN; `slotOf[head]` is undefined for a negative or
    // fractional head.
    if (!this.enabled || !(head < this.size)) return false;
    const k = this.slotOf[head];
    if (k === undefined || k === 0 || !this.sync()) return false;
    this.slotOf[head] = 0;
    this.inFlightCount--;
    let max = 0;
    let writes = false;
    const chain = k > 0 ? this.pool[k - 1]! : null; // stays unused until the next pop
    if (chain !== null) {
      max = chain.writableLength;
      writes = chain.writableCount > 0;
      this.spareIds[this.spareCount++] = k - 1;
    }
    const used = Math.max(0, Math.min(len, max));
    const p = this.nextUsed;
    const words = this.ringWords;
    if (words !== null) words[4 * p + 2] = used;
    else this.ringView.setUint32(this.ringBase + 16 * p + 8, used, true);
    // §2.8.7: len is meaningful to the driver only with WRITE set, as QEMU writes it.
    const flags =
      (this.usedWrap === 1 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0) |
      (writes ? VIRTQ_DESC_F_WRITE : 0);
    if (words !== null && !this.shared) {
      words[4 * p + 3] = head | (flags << 16); // id and flags in one store (no other thread)
    } else {
      storeIndex(this.ringHalves, 8 * p + 6, head, false);
      storeIndex(this.ringHalves, 8 * p + 7, flags, this.shared); // flags last (release)
    }
    const slots = this.slots[head]!;
    this.outstanding -= slots;
    this.usedSinceSignal += slots;
    let next = p + slots;
    if (next >= this.size) {
      next -= this.size;
      this.usedWrap ^= 1;
    }
    this.nextUsed = next;
    this.stats.used++;
    const mem = this.memory!;
    if (mem.writeObserver !== null) {
      if (chain !== null) {
        let left = used;
        for (let i = chain.readableCount; left > 0 && i < chain.bufferCount; i++) {
          const n = Math.min(left, chain.bufferLength(i));
          mem.noteWrite(chain.regions[chain.buf[3 * i]!]!.base + chain.bufferOffset(i), n);
          left -= n;
        }
      }
      mem.noteWrite(this.descAddr + 16 * p + 8, 8);
    }
    return true;
  }

  /** Used descriptors are visible as soon as {@link addUsed} writes their flags: nothing to do. */
  publishUsed(): void {}

  /**
   * Says whether the driver wants an interrupt for the buffers used since the last call
   * (§2.8.10): never with DISABLE, always with ENABLE, and with DESC (EVENT_IDX) when the
   * used position passed the driver's `desc_event_off_wrap`.
   */
  needsNotification(): boolean {
    if (!this.enabled || !this.sync()) return false;
    const moved = this.usedSinceSignal;
    this.usedSinceSignal = 0;
    if (moved === 0) return false;
    const first = !this.signalledOnce;
    this.signalledOnce = true;
    const flags = loadIndex(this.driverEvent, 1, this.shared) & 3;
    let need: boolean;
    if (flags === VRING_PACKED_EVENT_FLAG_DISABLE) need = false;
    else if (flags === VRING_PACKED_EVENT_FLAG_DESC && this.eventIdx) {
      if (first || moved >= this.size) need = true;
      else {
        const offWrap = loadIndex(this.driverEvent, 0, this.shared);
        const size = this.size;
        let event = offWrap & 0x7fff;
        // An event in the previous lap sits `size` positions back (Linux virtio_ring.c).
        if (offWrap >>> 15 !== this.usedWrap) event = (event - size) & 0xffff;
        const now = this.nextUsed;
        need = vringNeedEvent(event, now, (now - moved) & 0xffff);
      }
    } else need = true; // ENABLE (a reserved value, or DESC without EVENT_IDX, counts as ENABLE)
    if (need) this.stats.notificationsNeeded++;
    else this.stats.notificationsSuppressed++;
    return need;
  }

  /** Writes the device event suppression structure: off_wrap (the next avail position), then flags. */
  private storeDeviceEvent(flags: number): void {
    if (flags === VRING_PACKED_EVENT_FLAG_DESC)
      storeIndex(this.deviceEvent, 0, this.nextAvail | (this.availWrap << 15), this.shared);
    storeIndex(this.deviceEvent, 1, flags, this.shared);
    const mem = this.memory!;
    if (mem.writeObserver !== null) mem.noteWrite(this.deviceAddr, VRING_PACKED_EVENT_BYTES);
  }

  /** Asks the driver to stop notifying (§2.8.10: device event flags DISABLE). */
  disableNotification(): void {
    if (!this.enabled || !this.sync()) return;
    this.notifyEnabled = false;
    this.storeDeviceEvent(VRING_PACKED_EVENT_FLAG_DISABLE);
  }

  /**
   * Asks the driver to notify again (ENABLE, or with EVENT_IDX a DESC event at the next
   * position the device will read), then re-checks the ring, closing the race with a
   * driver that made buffers available while notifications were off.
   *
   * @returns true when a buffer is available (the caller should keep processing)
   */
  enableNotification(): boolean {
    if (!this.enabled || !this.sync()) return false;
    this.notifyEnabled = true;
    this.storeDeviceEvent(
      this.eventIdx ? VRING_PACKED_EVENT_FLAG_DESC : VRING_PACKED_EVENT_FLAG_ENABLE,
    );
    return this.hasAvailable();
  }
}
