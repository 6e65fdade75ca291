/**
 * `PackedDriverQueue`: the driver side of a packed virtqueue (§2.8, VIRTIO_F_RING_PACKED),
 * what Linux's `virtqueue_add_packed` / `virtqueue_get_buf_ctx_packed` do for a guest
 * kernel. Buffers take consecutive ring slots from the driver's next avail position (a
 * list linked with NEXT, or one INDIRECT descriptor), every descriptor carries the buffer
 * ID, and the head's flags — AVAIL = the avail wrap counter, USED = its inverse — are
 * written last, with release ordering (§2.8.21.1). Completions are read at the driver's
 * next used position and validated, because the device is not trusted (Linux's `BAD_RING`
 * checks: a bad ID or length marks the queue broken; nothing throws).
 *
 * The driver keeps a shadow of everything it needs to free a buffer (its ring slots, its
 * writable total), so a device that scribbles on the ring cannot corrupt the free state.
 *
 * @example
 * ```ts
 * const layout = packedQueueLayout(0x10000, 256);
 * const q = new PackedDriverQueue<number>({ memory, index: 0, size: 256, layout, eventIdx: true });
 * const id = q.add([{ addr: req, len: 16 }], [{ addr: resp, len: 512 }], 42);
 * if (q.kickPrepare()) transport.notify(0);
 * for (let u; (u = q.getUsed()) !== null; ) complete(u.token, u.len);
 * ```
 *
 * @module
 */

import { type GuestMemory, HOST_LITTLE_ENDIAN } from "@pvkit/platform";
import { DriverError, VirtioErrorCode } from "../errors.js";
import { loadIndex, storeIndex, wordsOver } from "../ring-access.js";
import {
  isValidPackedQueueSize,
  packedRingBytes,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_MAX_CHAIN_BYTES,
  VRING_PACKED_DESC_ALIGN,
  VRING_PACKED_EVENT_ALIGN,
  VRING_PACKED_EVENT_BYTES,
  VRING_PACKED_EVENT_FLAG_DESC,
  VRING_PACKED_EVENT_FLAG_DISABLE,
  VRING_PACKED_EVENT_FLAG_ENABLE,
  vringNeedEvent,
} from "../spec.js";
import {
  type DriverQueueOptions,
  type DriverQueueStats,
  type GuestBuffer,
  guestBufferLength,
  type RingAddresses,
  type UsedBuffer,
} from "./driver-queue.js";
import type { DriverVirtqueue } from "./driver-virtqueue.js";

const EMPTY_VIEW = new DataView(new ArrayBuffer(0));
const TWO_32 = 0x1_0000_0000;

/** Guest-physical addresses of a packed virtqueue's parts (§2.8.10.1). */
export interface PackedQueueLayout extends RingAddresses {
  /** One past the last byte of the device event suppression structure. */
  readonly end: number;
}

/**
 * Lays out a packed virtqueue of `size` descriptors at (or just after) `base`: the
 * descriptor ring (16-byte aligned), then the driver and the device event suppression
 * structures (4 bytes each, 4-byte aligned), §2.8.10.1.
 *
 * @param base - the first guest-physical address that may be used (rounded up to 16)
 * @param size - the queue size, an integer in [1, 32768] (§2.8: no power of two needed)
 * @throws RangeError when `size` or `base` is invalid (a driver programming error)
 */
export function packedQueueLayout(base: number, size: number): PackedQueueLayout {
  if (!isValidPackedQueueSize(size))
    throw new RangeError(`packed queue size ${size} is not an integer in [1, 32768] (§2.8)`);
  if (!Number.isSafeInteger(base) || base < 0)
    throw new RangeError(`ring base ${base} is not a guest address`);
  const desc = Math.ceil(base / VRING_PACKED_DESC_ALIGN) * VRING_PACKED_DESC_ALIGN;
  const driver = desc + packedRingBytes(size);
  const device = driver + VRING_PACKED_EVENT_BYTES;
  const end = device + VRING_PACKED_EVENT_BYTES;
  if (end > Number.MAX_SAFE_INTEGER) throw new RangeError("ring does not fit below 2^53");
  return { desc, driver, device, end };
}

/** Bytes a packed virtqueue of `size` needs from a 16-byte aligned address. */
export function packedQueueBytes(size: number): number {
  return packedQueueLayout(0, size).end;
}

/** `count` u32 words at `offset` of `bytes`, or null on a big-endian host or unaligned offset. */
function u32View(bytes: Uint8Array, offset: number, count: number): Uint32Array | null {
  const abs = bytes.byteOffset + offset;
  return HOST_LITTLE_ENDIAN && abs % 4 === 0 ? new Uint32Array(bytes.buffer, abs, count) : null;
}

/**
 * Writes one packed descriptor (§2.8.13) `rel` bytes into an area whose words are `words`
 * (or, when null, which starts `base` bytes into `view`).
 */
function writeDescBody(
  words: Uint32Array | null,
  view: DataView,
  base: number,
  rel: number,
  addr: number,
  len: number,
  id: number,
  flags: number,
): void {
  if (words !== null) {
    const w = rel >>> 2;
    words[w] = addr >>> 0;
    words[w + 1] = Math.floor(addr / TWO_32);
    words[w + 2] = len;
    words[w + 3] = (id & 0xffff) | (flags << 16);
  } else {
    const off = base + rel;
    view.setUint32(off, addr >>> 0, true);
    view.setUint32(off + 4, Math.floor(addr / TWO_32), true);
    view.setUint32(off + 8, len, true);
    view.setUint16(off + 12, id, true);
    view.setUint16(off + 14, flags, true);
  }
}

/**
 * The driver side of one packed virtqueue.
 *
 * @typeParam T - what the caller attaches to each buffer and gets back on completion
 */
export class PackedDriverQueue<T> implements DriverVirtqueue<T> {
  /** Queue index. */
  readonly index: number;
  /** Queue size (any integer in [1, 32768], §2.8). */
  readonly size: number;
  /** Descriptor ring, driver and device event suppression addresses. */
  readonly layout: RingAddresses;
  /** VIRTIO_F_EVENT_IDX in use (descriptor-position events, §2.8.10). */
  readonly eventIdx: boolean;
  /** Indirect tables in use (negotiated and an area was given). */
  readonly indirectDesc: boolean;
  /** Descriptors per indirect table (0 without indirect). */
  readonly indirectEntries: number;
  /** Counters. */
  readonly stats: DriverQueueStats = {
    added: 0,
    indirect: 0,
    used: 0,
    kicks: 0,
    kicksSuppressed: 0,
    full: 0,
  };
  /** The device fault that broke the queue, or `null`. */
  error: DriverError | null = null;

  private readonly memory: GuestMemory;
  private readonly shared: boolean;
  private readonly indirectAddr: number;
  private readonly threshold: number;
  private readonly notifyFn: (() => void) | null;
  private epoch = -1;

  private ringHalves: Uint16Array = new Uint16Array(0);
  private ringWords: Uint32Array | null = null;
  private ringView: DataView = EMPTY_VIEW;
  private ringBase = 0;
  private driverEvent: Uint16Array = new Uint16Array(2); // ours: [off_wrap, flags]
  private deviceEvent: Uint16Array = new Uint16Array(2); // the device's: [off_wrap, flags]
  private indView: DataView = EMPTY_VIEW;
  private indWords: Uint32Array | null = null;
  private indBase = 0;

  // Driver-private shadow state (never read back from guest memory).
  private nextAvail = 0;
  private availWrap = 1;
  private lastUsed = 0;
  private usedWrap = 1;
  private free: number;
  private freeId = 0;
  private readonly nextFreeId: Uint16Array;
  private readonly idSlots: Uint16Array; // ring slots of each outstanding buffer ID (0: free)
  private readonly idWritable: Float64Array;
  private readonly tokens: (T | undefined)[];
  private outstanding = 0;
  private numAdded = 0;
  private eventFlags = VRING_PACKED_EVENT_FLAG_ENABLE;
  private lastLen = 0;

  /**
   * @param options - as for `DriverQueue`; `size` may be any integer in [1, 32768] and
   *   `layout` names the descriptor ring (`desc`) and the driver/device event suppression
   *   structures (`driver`, `device`), see {@link packedQueueLayout}
   * @throws RangeError when the size is invalid or an area is misaligned or outside guest
   *   memory — a driver programming error, not device input
   */
  constructor(options: DriverQueueOptions) {
    const { memory, size, layout } = options;
    if (!isValidPackedQueueSize(size))
      throw new RangeError(`packed queue size ${size} is not an integer in [1, 32768] (§2.8)`);
    this.memory = memory;
    this.shared = memory.shared;
    this.index = options.index;
    this.size = size;
    this.layout = { desc: layout.desc, driver: layout.driver, device: layout.device };
    this.eventIdx = options.eventIdx ?? false;
    const area = options.indirect;
    const useIndirect = (options.indirectDesc ?? false) && area !== undefined && area.entries >= 2;
    this.indirectDesc = useIndirect;
    this.indirectEntries = useIndirect ? Math.min(area.entries, size) : 0;
    this.indirectAddr = useIndirect ? area.addr : 0;
    this.threshold = Math.max(1, options.indirectThreshold ?? 1);
    this.notifyFn = options.notify ?? null;
    this.free = size;
    this.nextFreeId = new Uint16Array(size);
    this.idSlots = new Uint16Array(size);
    this.idWritable = new Float64Array(size);
    this.tokens = new Array<T | undefined>(size).fill(undefined);
    const err = this.resolve();
    if (err !== undefined) throw new RangeError(err);
    this.initRing();
  }

  /** Free ring slots. */
  get numFree(): number {
    return this.free;
  }

  /** Buffers added and not yet returned by the device. */
  get inFlight(): number {
    return this.outstanding;
  }

  /** Whether a device fault broke the queue. */
  get broken(): boolean {
    return this.error !== null;
  }

  /** The next avail position, with the avail wrap counter in bit 15. */
  get availIndex(): number {
    return this.nextAvail | (this.availWrap << 15);
  }

  /** The next used position the driver reads, with the used wrap counter in bit 15. */
  get lastUsedIndex(): number {
    return this.lastUsed | (this.usedWrap << 15);
  }

  /** Whether used-buffer notifications are enabled (driver event flags not DISABLE). */
  get callbacksEnabled(): boolean {
    return this.eventFlags !== VRING_PACKED_EVENT_FLAG_DISABLE;
  }

  private resolve(): string | undefined {
    const mem = this.memory;
    const { desc, driver, device } = this.layout;
    const n = this.size;
    if (
      desc % VRING_PACKED_DESC_ALIGN ||
      driver % VRING_PACKED_EVENT_ALIGN ||
      device % VRING_PACKED_EVENT_ALIGN
    ) {
      return `packed ring 0x${desc.toString(16)} / events 0x${driver.toString(16)}, 0x${device.toString(16)} break the 16/4/4 alignment of §2.8.10.1`;
    }
    const d = mem.locate(desc, packedRingBytes(n));
    const a = mem.locate(driver, VRING_PACKED_EVENT_BYTES);
    const u = mem.locate(device, VRING_PACKED_EVENT_BYTES);
    if (d < 0 || a < 0 || u < 0)
      return `an area of packed queue ${this.index} (size ${n}) is outside guest memory`;
    const dr = mem.regions[d]!;
    const ar = mem.regions[a]!;
    const ur = mem.regions[u]!;
    const halves = wordsOver(dr.bytes, desc - dr.base, packedRingBytes(n));
    const drv = wordsOver(ar.bytes, driver - ar.base, VRING_PACKED_EVENT_BYTES);
    const dev = wordsOver(ur.bytes, device - ur.base, VRING_PACKED_EVENT_BYTES);
    if (halves === null || drv === null || dev === null)
      return "packed ring not 2-byte aligned in host memory";
    this.ringHalves = halves;
    this.ringView = dr.view;
    this.ringBase = desc - dr.base;
    this.ringWords = u32View(dr.bytes, this.ringBase, 4 * n);
    this.driverEvent = drv;
    this.deviceEvent = dev;
    if (this.indirectDesc) {
      const bytes = n * this.indirectEntries * VIRTQ_DESC_SIZE;
      if (this.indirectAddr % VRING_PACKED_DESC_ALIGN)
        return "indirect area is not 16-byte aligned (§2.8.19)";
      const r = mem.locate(this.indirectAddr, bytes);
      if (r < 0)
        return `indirect area 0x${this.indirectAddr.toString(16)}+${bytes} is outside guest memory`;
      const ir = mem.regions[r]!;
      this.indView = ir.view;
      this.indBase = this.indirectAddr - ir.base;
      this.indWords = u32View(ir.bytes, this.indBase, bytes / 4);
    }
    this.epoch = mem.epoch;
    return undefined;
  }

  private fresh(): boolean {
    const mem = this.memory;
    mem.refresh();
    if (mem.epoch === this.epoch) return true;
    const err = this.resolve();
    if (err === undefined) return true;
    this.error = new DriverError(VirtioErrorCode.QUEUE_BROKEN, err, this.index);
    return false;
  }

  /** Zeroes the ring and both event structures and frees every buffer ID (§2.8.21). */
  private initRing(): void {
    const n = this.size;
    const mem = this.memory;
    mem.fill(this.layout.desc, packedRingBytes(n), 0);
    mem.fill(this.layout.driver, VRING_PACKED_EVENT_BYTES, 0);
    mem.fill(this.layout.device, VRING_PACKED_EVENT_BYTES, 0);
    for (let i = 0; i < n - 1; i++) this.nextFreeId[i] = i + 1;
    this.nextFreeId[n - 1] = 0;
    this.freeId = 0;
    this.free = n;
    this.idSlots.fill(0);
    this.idWritable.fill(0);
    this.tokens.fill(undefined);
    this.outstanding = 0;
    this.nextAvail = 0;
    this.availWrap = 1;
    this.lastUsed = 0;
    this.usedWrap = 1;
    this.numAdded = 0;
    this.eventFlags = VRING_PACKED_EVENT_FLAG_ENABLE;
    storeIndex(this.driverEvent, 1, VRING_PACKED_EVENT_FLAG_ENABLE, this.shared);
  }

  private bad(code: VirtioErrorCode, message: string): DriverError {
    return new DriverError(code, message, this.index);
  }

  /**
   * Makes a buffer available (§2.8.21.1): `out` buffers device-readable, `inBufs`
   * device-writable, in that order. The head's flags are written last, so the device
   * sees the whole list or nothing.
   *
   * @returns the buffer ID, or a {@link DriverError} (`NO_SPACE`, `EMPTY_CHAIN`,
   *   `BAD_BUFFER`, `CHAIN_TOO_LONG`, `QUEUE_BROKEN`); nothing is written on failure
   */
  add(out: readonly GuestBuffer[], inBufs: readonly GuestBuffer[], token: T): number | DriverError {
    if (this.error !== null)
      return this.bad(
        VirtioErrorCode.QUEUE_BROKEN,
        `queue ${this.index} is broken: ${this.error.message}`,
      );
    if (!this.fresh()) return this.error!;
    const nOut = out.length;
    const total = nOut + inBufs.length;
    if (total === 0)
      return this.bad(
        VirtioErrorCode.EMPTY_CHAIN,
        "a buffer needs at least one descriptor (§2.8.13)",
      );
    let bytes = 0;
    let writable = 0;
    for (let i = 0; i < total; i++) {
      const len = guestBufferLength(this.memory, i < nOut ? out[i]! : inBufs[i - nOut]!);
      if (len < 0) {
        return this.bad(
          VirtioErrorCode.BAD_BUFFER,
          `buffer ${i} is not a valid guest range below 2^53 with length < 2^32`,
        );
      }
      bytes += len;
      if (i >= nOut) writable += len;
    }
    if (bytes > VIRTQ_MAX_CHAIN_BYTES)
      return this.bad(VirtioErrorCode.CHAIN_TOO_LONG, `buffer of ${bytes} bytes exceeds 2^32`);
    const useIndirect =
      this.indirectDesc &&
      total > 1 &&
      total <= this.indirectEntries &&
      (total > this.threshold || this.free < total);
    if (!useIndirect && total > this.size) {
      return this.bad(
        VirtioErrorCode.CHAIN_TOO_LONG,
        `buffer of ${total} descriptors exceeds queue size ${this.size} (§2.8.6)`,
      );
    }
    const needed = useIndirect ? 1 : total;
    if (this.free < needed) {
      this.stats.full++;
      return this.bad(VirtioErrorCode.NO_SPACE, `${needed} ring slots needed, ${this.free} free`);
    }
    const id = this.freeId;
    this.freeId = this.nextFreeId[id]!;
    const size = this.size;
    const words = this.ringWords;
    const view = this.ringView;
    const head = this.nextAvail;
    let wrap = this.availWrap;
    let p = head;
    let headFlags: number;
    if (useIndirect) {
      // §2.8.19: one INDIRECT descriptor pointing at a table of `total` consecutive
      // descriptors; only WRITE is set in the table.
      const tableOff = id * this.indirectEntries * VIRTQ_DESC_SIZE;
      for (let i = 0; i < total; i++) {
        const b = i < nOut ? out[i]! : inBufs[i - nOut]!;
        const f = i < nOut ? 0 : VIRTQ_DESC_F_WRITE;
        writeDescBody(
          this.indWords,
          this.indView,
          this.indBase,
          tableOff + 16 * i,
          b.addr,
          b.len,
          0,
          f,
        );
      }
      const tableAddr = this.indirectAddr + id * this.indirectEntries * VIRTQ_DESC_SIZE;
      headFlags = VIRTQ_DESC_F_INDIRECT | availBits(wrap);
      writeDescBody(words, view, this.ringBase, 16 * p, tableAddr, total * 16, id, 0);
      p++;
      this.stats.indirect++;
    } else {
      headFlags = 0;
      for (let k = 0; k < total; k++) {
        const b = k < nOut ? out[k]! : inBufs[k - nOut]!;
        let f = (k < nOut ? 0 : VIRTQ_DESC_F_WRITE) | availBits(wrap);
        if (k + 1 < total) f |= VIRTQ_DESC_F_NEXT;
        if (k === 0) {
          headFlags = f;
          f = 0; // written last, below
        }
        writeDescBody(words, view, this.ringBase, 16 * p, b.addr, b.len, id, f);
        p++;
        if (p === size) {
          p = 0;
          wrap ^= 1;
        }
      }
    }
    if (p === size) {
      p = 0;
      wrap ^= 1;
    }
    this.nextAvail = p;
    this.availWrap = wrap;
    this.free -= needed;
    this.idSlots[id] = needed;
    this.idWritable[id] = writable;
    this.tokens[id] = token;
    this.outstanding++;
    this.numAdded += needed;
    this.stats.added++;
    // §2.8.21.1: the head's flags last, with release ordering.
    storeIndex(this.ringHalves, 8 * head + 7, headFlags, this.shared);
    return id;
  }

  /**
   * After a batch of {@link add}s: whether the device wants a notification (§2.8.10,
   * Linux `virtqueue_kick_prepare_packed`): never with DISABLE, always with ENABLE, and
   * with DESC (EVENT_IDX) when the avail position passed the device's event position.
   */
  kickPrepare(): boolean {
    const added = this.numAdded;
    if (added === 0) return false;
    this.numAdded = 0;
    const flags = loadIndex(this.deviceEvent, 1, this.shared) & 3;
    let need: boolean;
    if (flags === VRING_PACKED_EVENT_FLAG_DISABLE) need = false;
    else if (flags === VRING_PACKED_EVENT_FLAG_DESC && this.eventIdx) {
      if (added >= this.size) need = true;
      else {
        const offWrap = loadIndex(this.deviceEvent, 0, this.shared);
        let event = offWrap & 0x7fff;
        if (offWrap >>> 15 !== this.availWrap) event = (event - this.size) & 0xffff;
        const now = this.nextAvail;
        need = vringNeedEvent(event, now, (now - added) & 0xffff);
      }
    } else need = true;
    if (need) this.stats.kicks++;
    else this.stats.kicksSuppressed++;
    return need;
  }

  /** {@link kickPrepare}, then the `notify` callback when the device wants it. */
  kick(): boolean {
    if (!this.kickPrepare()) return false;
    this.notifyFn?.();
    return true;
  }

  /** Whether the descriptor at `pos` is used in lap `wrap` (§2.8.1: AVAIL = USED = wrap). */
  private isUsed(pos: number, wrap: number): boolean {
    const f = loadIndex(this.ringHalves, 8 * pos + 7, this.shared);
    const a = (f >>> 7) & 1;
    return a === ((f >>> 15) & 1) && a === wrap;
  }

  /** Whether the device has returned buffers the driver has not taken yet. */
  hasUsed(): boolean {
    if (this.error !== null) return false;
    return this.isUsed(this.lastUsed, this.usedWrap);
  }

  private breakQueue(code: VirtioErrorCode, message: string): -1 {
    if (this.error === null) this.error = this.bad(code, message);
    return -1;
  }

  /** Validates the used descriptor at the next used position; its ID (len in lastLen) or -1. */
  private nextUsedId(): number {
    if (this.error !== null) return -1;
    if (!this.fresh()) return -1;
    const p = this.lastUsed;
    // The flags load orders the reads of id and len after it (§2.8.21.2).
    const f = loadIndex(this.ringHalves, 8 * p + 7, this.shared);
    const a = (f >>> 7) & 1;
    if (a !== ((f >>> 15) & 1) || a !== this.usedWrap) return -1;
    const id = loadIndex(this.ringHalves, 8 * p + 6, false);
    const words = this.ringWords;
    const rawLen =
      words !== null
        ? words[4 * p + 2]!
        : this.ringView.getUint32(this.ringBase + 16 * p + 8, true);
    // §2.8.7: len is reserved unless the device set WRITE.
    const len = f & VIRTQ_DESC_F_WRITE ? rawLen : 0;
    if (id >= this.size)
      return this.breakQueue(
        VirtioErrorCode.USED_ID_OUT_OF_RANGE,
        `used buffer ID ${id} out of range (queue size ${this.size})`,
      );
    if (this.idSlots[id] === 0)
      return this.breakQueue(
        VirtioErrorCode.USED_ID_NOT_HEAD,
        `used buffer ID ${id} is not outstanding`,
      );
    if (len > this.idWritable[id]!)
      return this.breakQueue(
        VirtioErrorCode.USED_LEN_TOO_BIG,
        `used len ${len} for buffer ID ${id} exceeds its ${this.idWritable[id]} writable bytes`,
      );
    this.lastLen = len;
    return id;
  }

  /** Frees buffer `id`, moves the used position past its slots, updates the event; returns the token. */
  private release(id: number): T {
    const token = this.tokens[id] as T;
    const slots = this.idSlots[id]!;
    this.idSlots[id] = 0;
    this.tokens[id] = undefined;
    this.nextFreeId[id] = this.freeId;
    this.freeId = id;
    this.free += slots;
    this.outstanding--;
    let p = this.lastUsed + slots;
    if (p >= this.size) {
      p -= this.size;
      this.usedWrap ^= 1;
    }
    this.lastUsed = p;
    this.stats.used++;
    if (this.eventFlags === VRING_PACKED_EVENT_FLAG_DESC) {
      // §2.8.10: ask to be interrupted when the device passes what we consumed.
      storeIndex(this.driverEvent, 0, p | (this.usedWrap << 15), this.shared);
    }
    return token;
  }

  /**
   * Takes the next completion (§2.8.7), validating it like Linux's `BAD_RING`: the ID must
   * be outstanding and the length must not exceed its writable bytes. A violation marks
   * the queue broken and returns null.
   */
  getUsed(): UsedBuffer<T> | null {
    const id = this.nextUsedId();
    if (id < 0) return null;
    const len = this.lastLen;
    return { token: this.release(id), len };
  }

  /** Takes up to `budget` completions, calling `fn(token, len)` for each, without allocating. */
  drainUsed(fn: (token: T, len: number) => void, budget = this.size): number {
    let n = 0;
    while (n < budget) {
      const id = this.nextUsedId();
      if (id < 0) break;
      const len = this.lastLen;
      fn(this.release(id), len);
      n++;
    }
    return n;
  }

  private storeDriverEvent(flags: number, offWrap: number): void {
    if (flags === VRING_PACKED_EVENT_FLAG_DESC)
      storeIndex(this.driverEvent, 0, offWrap, this.shared);
    this.eventFlags = flags;
    storeIndex(this.driverEvent, 1, flags, this.shared);
  }

  /** Asks the device not to interrupt (§2.8.10: driver event flags DISABLE). */
  disableCallbacks(): void {
    if (this.eventFlags === VRING_PACKED_EVENT_FLAG_DISABLE) return;
    this.storeDriverEvent(VRING_PACKED_EVENT_FLAG_DISABLE, 0);
  }

  /**
   * Asks for interrupts again (Linux `virtqueue_enable_cb_prepare_packed`): ENABLE, or with
   * EVENT_IDX a DESC event at the next used position, then re-checks the ring.
   *
   * @returns false when completions are already pending
   */
  enableCallbacks(): boolean {
    if (this.eventIdx)
      this.storeDriverEvent(VRING_PACKED_EVENT_FLAG_DESC, this.lastUsed | (this.usedWrap << 15));
    else this.storeDriverEvent(VRING_PACKED_EVENT_FLAG_ENABLE, 0);
    return !this.hasUsed();
  }

  /**
   * Like {@link enableCallbacks} but asks for the interrupt only after about 3/4 of the
   * outstanding ring slots are used (Linux `virtqueue_enable_cb_delayed_packed`; EVENT_IDX
   * only, otherwise the same as {@link enableCallbacks}).
   *
   * @returns false when the descriptor at that position is already used
   */
  enableCallbacksDelayed(): boolean {
    if (!this.eventIdx) return this.enableCallbacks();
    const bufs = ((this.size - this.free) * 3) >>> 2;
    let p = this.lastUsed + bufs;
    let wrap = this.usedWrap;
    if (p >= this.size) {
      p -= this.size;
      wrap ^= 1;
    }
    this.storeDriverEvent(VRING_PACKED_EVENT_FLAG_DESC, p | (wrap << 15));
    if (this.error !== null) return true;
    return !this.isUsed(p, wrap);
  }

  /**
   * After the device was reset: takes back every outstanding buffer and returns its token
   * (in buffer-ID order), then puts the ring back in its initial state.
   */
  detachUnused(): T[] {
    const tokens: T[] = [];
    for (let id = 0; id < this.size; id++) {
      if (this.idSlots[id] !== 0) tokens.push(this.tokens[id] as T);
    }
    this.error = null;
    this.memory.refresh();
    const err = this.resolve();
    if (err !== undefined) this.error = this.bad(VirtioErrorCode.QUEUE_BROKEN, err);
    else this.initRing();
    return tokens;
  }
}

/** §2.8.1: the AVAIL/USED bits that make a descriptor available in lap `wrap`. */
function availBits(wrap: number): number {
  return wrap === 1 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
}
