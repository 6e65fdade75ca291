/**
 * `DriverQueue`: the driver side of a split virtqueue (§2.7), what Linux's `virtio_ring.c`
 * does for a guest kernel. It owns the descriptor free list, writes chains (readable
 * buffers first, then writable, §2.7.4.2), publishes them in the available ring, decides
 * whether the device wants a notification (§2.7.10), and takes completions from the used
 * ring — validating every used element, because the device is not trusted either
 * (Linux's `BAD_RING` checks: a bad id or length marks the queue broken; nothing throws).
 *
 * The driver keeps its own shadow of everything it needs to free a chain (next links,
 * chain lengths, writable totals), so a device that scribbles on the descriptor table
 * cannot redirect the free list.
 *
 * Ring indices go through {@link loadIndex}/{@link storeIndex} (Atomics in shared
 * memory); descriptors and ring entries are plain little-endian writes through region
 * `DataView`s resolved once. Adding and completing allocate nothing per descriptor.
 *
 * @example
 * ```ts
 * const layout = splitQueueLayout(0x10000, 256);
 * const q = new DriverQueue<number>({ memory, index: 0, size: 256, layout, eventIdx: true });
 * const head = q.add([{ addr: req, len: 16 }], [{ addr: resp, len: 512 }], 42);
 * if (q.kickPrepare()) transport.notify(0);
 * // … on interrupt:
 * for (let u; (u = q.getUsed()) !== null; ) complete(u.token, u.len);
 * ```
 *
 * @module
 */

import { type GuestMemory, HOST_LITTLE_ENDIAN } from "@pvkit/platform";
import { DriverError, VirtioErrorCode } from "../errors.js";
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
  VIRTQ_DESC_SIZE,
  VIRTQ_MAX_CHAIN_BYTES,
  VIRTQ_MAX_SIZE,
  VIRTQ_USED_ALIGN,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "../spec.js";

/** One guest buffer: a guest-physical address and a length in bytes. */
export interface GuestBuffer {
  /** Guest-physical address. */
  readonly addr: number;
  /** Length in bytes (< 2^32). */
  readonly len: number;
}

/** Where the three ring parts are (see `splitQueueLayout`). */
export interface RingAddresses {
  /** §2.7.5 descriptor table (16-byte aligned). */
  readonly desc: number;
  /** §2.7.6 driver area / available ring (2-byte aligned). */
  readonly driver: number;
  /** §2.7.8 device area / used ring (4-byte aligned). */
  readonly device: number;
}

/** A preallocated area of indirect tables: one table of `entries` descriptors per head slot. */
export interface IndirectArea {
  /** Guest-physical address of table 0 (16-byte aligned); table `h` is at `addr + h × entries × 16`. */
  readonly addr: number;
  /** Descriptors per table (clamped to the queue size, §2.7.5.3.1). */
  readonly entries: number;
}

/** How to build a {@link DriverQueue}. */
export interface DriverQueueOptions {
  /** Guest memory holding the rings and buffers. */
  readonly memory: GuestMemory;
  /** The queue's index in its device. */
  readonly index: number;
  /** Queue size: a power of two ≤ 32768 (§2.7). */
  readonly size: number;
  /** Ring addresses. */
  readonly layout: RingAddresses;
  /** VIRTIO_F_EVENT_IDX was negotiated (§2.7.10). */
  readonly eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC was negotiated (§2.7.5.3). Without {@link indirect} it has no effect. */
  readonly indirectDesc?: boolean;
  /** Indirect-table area (`size × entries × 16` bytes), so no allocation happens at runtime. */
  readonly indirect?: IndirectArea;
  /**
   * Chains with more than this many buffers go indirect (when negotiated and they fit a
   * table); shorter multi-buffer chains also go indirect when the free list is too short
   * for them. Default 1: every multi-buffer chain goes indirect, as in Linux.
   */
  readonly indirectThreshold?: number;
  /** Called by {@link DriverQueue.kick} when the device wants a notification. */
  readonly notify?: () => void;
}

/** A completed buffer: the token given to `add` and the bytes the device wrote. */
export interface UsedBuffer<T> {
  /** The caller's token. */
  readonly token: T;
  /** §2.7.8: bytes written into the writable buffers (already checked ≤ their total). */
  readonly len: number;
}

/** Counters a benchmark or test can read. */
export interface DriverQueueStats {
  /** Chains added. */
  added: number;
  /** Chains that went through an indirect table. */
  indirect: number;
  /** Completions taken. */
  used: number;
  /** `kickPrepare` calls that answered true. */
  kicks: number;
  /** `kickPrepare` calls, with buffers added, that answered false (notification suppressed). */
  kicksSuppressed: number;
  /** `add` calls refused for lack of descriptors. */
  full: number;
}

function isValidQueueSize(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= VIRTQ_MAX_SIZE && (n & (n - 1)) === 0;
}

const EMPTY_VIEW = new DataView(new ArrayBuffer(0));
const TWO_32 = 0x1_0000_0000;

/**
 * Checks a buffer a driver is about to put on a ring (split or packed): a safe
 * non-negative address, a length below 2^32 (a descriptor's `len` is 32 bits, §2.7.5 /
 * §2.8.13), and, unless empty, inside guest memory.
 *
 * @returns its length, or -1 when it fails a rule
 */
export function guestBufferLength(memory: GuestMemory, b: GuestBuffer): number {
  const { addr, len } = b;
  if (
    !(Number.isSafeInteger(addr) && addr >= 0 && Number.isInteger(len) && len >= 0 && len < TWO_32)
  )
    return -1;
  if (len !== 0 && memory.locate(addr, len) < 0) return -1;
  return len;
}

/**
 * The driver side of one split virtqueue.
 *
 * @typeParam T - what the caller attaches to each chain and gets back on completion
 */
export class DriverQueue<T> {
  /** Queue index. */
  readonly index: number;
  /** Queue size. */
  readonly size: number;
  /** Ring addresses. */
  readonly layout: RingAddresses;
  /** VIRTIO_F_EVENT_IDX in use. */
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

  // Resolved views.
  private descView: DataView = EMPTY_VIEW;
  private descBase = 0;
  private availWords: Uint16Array = new Uint16Array(0);
  private usedWords: Uint16Array = new Uint16Array(0);
  private usedView: DataView = EMPTY_VIEW;
  private usedBase = 0;
  private indView: DataView = EMPTY_VIEW;
  // The descriptor table and the indirect area as little-endian u32 words (null on a
  // big-endian host or an unaligned host offset: the DataView path is used then).
  private descWords: Uint32Array | null = null;
  private indWords: Uint32Array | null = null;
  private indBase = 0;

  // Driver-private shadow state (never read back from guest memory).
  private readonly nextFree: Uint16Array;
  private freeHead = 0;
  private free: number;
  private readonly isHead: Uint8Array;
  private readonly chainDescs: Uint16Array; // ring descriptors the chain holds (1 when indirect)
  private readonly chainTail: Uint16Array;
  private readonly chainWritable: Float64Array;
  private readonly tokens: (T | undefined)[];
  private outstanding = 0;
  private availIdx = 0;
  private numAdded = 0;
  private lastUsed = 0;
  private usedIdxSeen = 0;
  private availFlags = 0;

  /**
   * @param options - see {@link DriverQueueOptions}
   * @throws RangeError when the size is invalid or a ring (or the indirect area) is
   *   misaligned or outside guest memory — a driver programming error, not device input
   */
  constructor(options: DriverQueueOptions) {
    const { memory, size, layout } = options;
    if (!isValidQueueSize(size))
      throw new RangeError(`queue size ${size} is not a power of two ≤ 32768 (§2.7)`);
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
    this.nextFree = new Uint16Array(size);
    this.free = size;
    this.isHead = new Uint8Array(size);
    this.chainDescs = new Uint16Array(size);
    this.chainTail = new Uint16Array(size);
    this.chainWritable = new Float64Array(size);
    this.tokens = new Array<T | undefined>(size).fill(undefined);
    const err = this.resolve();
    if (err !== undefined) throw new RangeError(err);
    this.initRings();
  }

  /** Free descriptors in the ring. */
  get numFree(): number {
    return this.free;
  }

  /** Chains added and not yet returned by the device. */
  get inFlight(): number {
    return this.outstanding;
  }

  /** Whether a device fault broke the queue ({@link error} says which). */
  get broken(): boolean {
    return this.error !== null;
  }

  /** The driver's avail index (next slot it will fill), for tests and diagnostics. */
  get availIndex(): number {
    return this.availIdx;
  }

  /** The next used index the driver will consume, for tests and diagnostics. */
  get lastUsedIndex(): number {
    return this.lastUsed;
  }

  /** Whether used-buffer notifications are enabled (§2.7.10). */
  get callbacksEnabled(): boolean {
    return (this.availFlags & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  private resolve(): string | undefined {
    const mem = this.memory;
    const { desc, driver, device } = this.layout;
    const n = this.size;
    if (desc % VIRTQ_DESC_ALIGN || driver % VIRTQ_AVAIL_ALIGN || device % VIRTQ_USED_ALIGN) {
      return `rings desc 0x${desc.toString(16)} / avail 0x${driver.toString(16)} / used 0x${device.toString(16)} break the 16/2/4 alignment of §2.7`;
    }
    const d = mem.locate(desc, descTableBytes(n));
    const a = mem.locate(driver, availRingBytes(n));
    const u = mem.locate(device, usedRingBytes(n));
    if (d < 0 || a < 0 || u < 0)
      return `a ring of queue ${this.index} (size ${n}) is outside guest memory`;
    const dr = mem.regions[d]!;
    const ar = mem.regions[a]!;
    const ur = mem.regions[u]!;
    const availWords = wordsOver(ar.bytes, driver - ar.base, availRingBytes(n));
    const usedWords = wordsOver(ur.bytes, device - ur.base, usedRingBytes(n));
    if (availWords === null || usedWords === null) return "ring not 2-byte aligned in host memory";
    this.descView = dr.view;
    this.descBase = desc - dr.base;
    this.descWords = u32View(dr.bytes, this.descBase, 4 * n);
    this.availWords = availWords;
    this.usedWords = usedWords;
    this.usedView = ur.view;
    this.usedBase = device - ur.base;
    if (this.indirectDesc) {
      const bytes = n * this.indirectEntries * VIRTQ_DESC_SIZE;
      if (this.indirectAddr % VIRTQ_DESC_ALIGN)
        return "indirect area is not 16-byte aligned (§2.7.5.3)";
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

  /** Re-resolves views when a `WebAssembly.Memory` grew (epoch changed). */
  private fresh(): boolean {
    const mem = this.memory;
    mem.refresh();
    if (mem.epoch === this.epoch) return true;
    const err = this.resolve();
    if (err === undefined) return true;
    this.error = new DriverError(VirtioErrorCode.QUEUE_BROKEN, err, this.index);
    return false;
  }

  /** Zeroes the rings and rebuilds the free list (construction and {@link detachUnused}). */
  private initRings(): void {
    const n = this.size;
    const mem = this.memory;
    mem.fill(this.layout.desc, descTableBytes(n), 0);
    mem.fill(this.layout.driver, availRingBytes(n), 0);
    mem.fill(this.layout.device, usedRingBytes(n), 0);
    for (let i = 0; i < n - 1; i++) this.nextFree[i] = i + 1;
    this.nextFree[n - 1] = 0;
    this.freeHead = 0;
    this.free = n;
    this.isHead.fill(0);
    this.chainDescs.fill(0);
    this.chainTail.fill(0);
    this.chainWritable.fill(0);
    this.tokens.fill(undefined);
    this.outstanding = 0;
    this.availIdx = 0;
    this.numAdded = 0;
    this.lastUsed = 0;
    this.usedIdxSeen = 0;
    this.availFlags = 0;
    storeIndex(this.availWords, 0, 0, this.shared);
    storeIndex(this.availWords, 1, 0, this.shared);
    storeIndex(this.availWords, 2 + n, 0, this.shared);
  }

  private bad(code: VirtioErrorCode, message: string): DriverError {
    return new DriverError(code, message, this.index);
  }

  /**
   * Makes a chain available (§2.7.13): `out` buffers are device-readable, `in` buffers
   * device-writable, in that order (§2.7.4.2). Publishes the new avail index at once;
   * call {@link kickPrepare} (or {@link kick}) after a batch.
   *
   * @param out - device-readable buffers
   * @param inBufs - device-writable buffers
   * @param token - given back by {@link getUsed} when the device is done with the chain
   * @returns the head descriptor index, or a {@link DriverError}: `NO_SPACE` when the ring
   *   is full (retry after completions), `EMPTY_CHAIN`, `BAD_BUFFER`, `CHAIN_TOO_LONG`,
   *   `QUEUE_BROKEN`. Nothing is written on failure.
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
      return this.bad(VirtioErrorCode.EMPTY_CHAIN, "a chain needs at least one buffer (§2.7.13.1)");
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
    if (bytes > VIRTQ_MAX_CHAIN_BYTES) {
      return this.bad(
        VirtioErrorCode.CHAIN_TOO_LONG,
        `chain of ${bytes} bytes exceeds 2^32 (§2.7.5.2)`,
      );
    }
    const useIndirect =
      this.indirectDesc &&
      total > 1 &&
      total <= this.indirectEntries &&
      (total > this.threshold || this.free < total);
    if (!useIndirect && total > this.size) {
      return this.bad(
        VirtioErrorCode.CHAIN_TOO_LONG,
        `chain of ${total} descriptors exceeds queue size ${this.size} (§2.7.5.2)`,
      );
    }
    const needed = useIndirect ? 1 : total;
    if (this.free < needed) {
      this.stats.full++;
      return this.bad(VirtioErrorCode.NO_SPACE, `${needed} descriptors needed, ${this.free} free`);
    }

    const head = this.freeHead;
    const view = this.descView;
    const base = this.descBase;
    if (useIndirect) {
      // §2.7.5.3: the table holds the whole chain, linked 0 → 1 → … ; the ring holds one
      // INDIRECT descriptor pointing at it.
      const iv = this.indView;
      const iw = this.indWords;
      const tableOff = this.indBase + head * this.indirectEntries * VIRTQ_DESC_SIZE;
      const tableWord = head * this.indirectEntries * 4;
      for (let i = 0; i < total; i++) {
        const b = i < nOut ? out[i]! : inBufs[i - nOut]!;
        let flags = i < nOut ? 0 : VIRTQ_DESC_F_WRITE;
        if (i + 1 < total) flags |= VIRTQ_DESC_F_NEXT;
        const next = i + 1 < total ? i + 1 : 0;
        if (iw !== null) writeDescWords(iw, tableWord + 4 * i, b.addr, b.len, flags, next);
        else writeDesc(iv, tableOff + i * VIRTQ_DESC_SIZE, b.addr, b.len, flags, next);
      }
      const tableAddr = this.indirectAddr + head * this.indirectEntries * VIRTQ_DESC_SIZE;
      const dw = this.descWords;
      if (dw !== null) {
        writeDescWords(dw, 4 * head, tableAddr, total * VIRTQ_DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
      } else {
        writeDesc(
          view,
          base + head * VIRTQ_DESC_SIZE,
          tableAddr,
          total * VIRTQ_DESC_SIZE,
          VIRTQ_DESC_F_INDIRECT,
          0,
        );
      }
      this.chainTail[head] = head;
      this.freeHead = this.nextFree[head]!;
      this.stats.indirect++;
    } else {
      // Descriptors come off the free list in its order; the free-list links become the
      // chain's `next` links, and freeing the chain splices it back in one step.
      const dw = this.descWords;
      let i = head;
      let last = head;
      for (let k = 0; k < total; k++) {
        const b = k < nOut ? out[k]! : inBufs[k - nOut]!;
        const nxt = this.nextFree[i]!;
        let flags = k < nOut ? 0 : VIRTQ_DESC_F_WRITE;
        if (k + 1 < total) flags |= VIRTQ_DESC_F_NEXT;
        const next = k + 1 < total ? nxt : 0;
        if (dw !== null) writeDescWords(dw, 4 * i, b.addr, b.len, flags, next);
        else writeDesc(view, base + i * VIRTQ_DESC_SIZE, b.addr, b.len, flags, next);
        last = i;
        i = nxt;
      }
      this.chainTail[head] = last;
      this.freeHead = i;
    }
    this.free -= needed;
    this.chainDescs[head] = needed;
    this.chainWritable[head] = writable;
    this.isHead[head] = 1;
    this.tokens[head] = token;
    this.outstanding++;

    // §2.7.13.2: ring entry first, then (with release ordering) the index.
    storeIndex(this.availWords, 2 + (this.availIdx & (this.size - 1)), head, false);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    storeIndex(this.availWords, 1, this.availIdx, this.shared);
    this.numAdded++;
    this.stats.added++;
    return head;
  }

  /**
   * After a batch of {@link add}s: whether the device wants a notification (§2.7.10,
   * Linux `virtqueue_kick_prepare`). With EVENT_IDX, whether the new avail index crossed
   * the device's `avail_event`; without, unless the device set VIRTQ_USED_F_NO_NOTIFY.
   * Answers false when nothing was added since the last call.
   */
  kickPrepare(): boolean {
    const added = this.numAdded;
    if (added === 0) return false;
    this.numAdded = 0;
    const now = this.availIdx;
    let need: boolean;
    if (added >= 0xffff) {
      need = true; // the 16-bit window would hide the crossing; Linux forces a kick here too
    } else if (this.eventIdx) {
      // The avail.idx store above and this load are sequentially consistent in shared memory.
      const availEvent = loadIndex(this.usedWords, 2 + 4 * this.size, this.shared);
      need = vringNeedEvent(availEvent, now, (now - added) & 0xffff);
    } else {
      need = (loadIndex(this.usedWords, 0, this.shared) & VIRTQ_USED_F_NO_NOTIFY) === 0;
    }
    if (need) this.stats.kicks++;
    else this.stats.kicksSuppressed++;
    return need;
  }

  /**
   * {@link kickPrepare}, then the `notify` callback when the device wants it.
   *
   * @returns whether a notification was sent
   */
  kick(): boolean {
    if (!this.kickPrepare()) return false;
    this.notifyFn?.();
    return true;
  }

  /**
   * Whether the device has returned buffers the driver has not taken yet (Linux
   * `virtqueue_poll` / `more_used`).
   */
  hasUsed(): boolean {
    if (this.error !== null) return false;
    if (this.lastUsed !== this.usedIdxSeen) return true;
    return loadIndex(this.usedWords, 1, this.shared) !== this.lastUsed;
  }

  private breakQueue(code: VirtioErrorCode, message: string): null {
    if (this.error === null) this.error = this.bad(code, message);
    return null;
  }

  /**
   * Takes the next completion (§2.7.8, §2.7.14), validating it like Linux's `BAD_RING`:
   * the id must be < size and the head of an outstanding chain, the length must not
   * exceed the chain's writable bytes, and used.idx may not run ahead of what is
   * outstanding. A violation marks the queue broken (see {@link error}) and returns null.
   *
   * @returns the token and used length, or `null` when nothing is pending (or broken)
   */
  getUsed(): UsedBuffer<T> | null {
    const head = this.nextUsedHead();
    if (head < 0) return null;
    const len = this.lastLen;
    return { token: this.release(head), len };
  }

  /**
   * Takes up to `budget` completions, calling `fn(token, len)` for each, without
   * allocating per completion.
   *
   * @returns completions taken
   */
  drainUsed(fn: (token: T, len: number) => void, budget = this.size): number {
    let n = 0;
    while (n < budget) {
      const head = this.nextUsedHead();
      if (head < 0) break;
      const len = this.lastLen;
      fn(this.release(head), len);
      n++;
    }
    return n;
  }

  private lastLen = 0;

  /** Validates the next used element; returns its head (len in lastLen) or -1. */
  private nextUsedHead(): number {
    if (this.error !== null) return -1;
    if (this.lastUsed === this.usedIdxSeen) {
      if (!this.fresh()) return -1;
      const idx = loadIndex(this.usedWords, 1, this.shared);
      if (idx === this.lastUsed) return -1;
      const pending = (idx - this.lastUsed) & 0xffff;
      if (pending > this.outstanding) {
        this.breakQueue(
          VirtioErrorCode.USED_IDX_JUMP,
          `used.idx moved from ${this.lastUsed} to ${idx}: ${pending} completions with ${this.outstanding} outstanding`,
        );
        return -1;
      }
      this.usedIdxSeen = idx;
    }
    const off = this.usedBase + 4 + 8 * (this.lastUsed & (this.size - 1));
    const id = this.usedView.getUint32(off, true);
    const len = this.usedView.getUint32(off + 4, true);
    if (id >= this.size) {
      this.breakQueue(
        VirtioErrorCode.USED_ID_OUT_OF_RANGE,
        `used id ${id} out of range (queue size ${this.size})`,
      );
      return -1;
    }
    if (this.isHead[id] === 0) {
      this.breakQueue(
        VirtioErrorCode.USED_ID_NOT_HEAD,
        `used id ${id} is not the head of an outstanding chain`,
      );
      return -1;
    }
    if (len > this.chainWritable[id]!) {
      this.breakQueue(
        VirtioErrorCode.USED_LEN_TOO_BIG,
        `used len ${len} for id ${id} exceeds its ${this.chainWritable[id]} writable bytes`,
      );
      return -1;
    }
    this.lastLen = len;
    return id;
  }

  /** Frees chain `head`, advances last_used, updates used_event; returns the token. */
  private release(head: number): T {
    const token = this.tokens[head] as T;
    this.detach(head);
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    this.stats.used++;
    if (this.eventIdx && (this.availFlags & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0) {
      // §2.7.10: ask to be interrupted when the device passes what we consumed.
      storeIndex(this.availWords, 2 + this.size, this.lastUsed, this.shared);
    }
    return token;
  }

  private detach(head: number): void {
    this.nextFree[this.chainTail[head]!] = this.freeHead;
    this.freeHead = head;
    this.free += this.chainDescs[head]!;
    this.isHead[head] = 0;
    this.tokens[head] = undefined;
    this.outstanding--;
  }

  /**
   * Asks the device not to interrupt (§2.7.10, Linux `virtqueue_disable_cb`): sets
   * VIRTQ_AVAIL_F_NO_INTERRUPT, or with EVENT_IDX stops moving `used_event` (the driver
   * MUST leave avail.flags 0 then).
   */
  disableCallbacks(): void {
    if (this.availFlags & VIRTQ_AVAIL_F_NO_INTERRUPT) return;
    this.availFlags |= VIRTQ_AVAIL_F_NO_INTERRUPT;
    if (!this.eventIdx) storeIndex(this.availWords, 0, this.availFlags, this.shared);
  }

  /**
   * Asks for interrupts again (Linux `virtqueue_enable_cb`): clears the flag, or writes
   * `used_event` = the last consumed index, then re-reads used.idx.
   *
   * @returns false when completions are already pending (the caller should drain again
   *   instead of waiting for an interrupt that may not come)
   */
  enableCallbacks(): boolean {
    this.setCallbacksOn();
    if (this.eventIdx) storeIndex(this.availWords, 2 + this.size, this.lastUsed, this.shared);
    return !this.hasUsed();
  }

  /**
   * Like {@link enableCallbacks} but asks for the interrupt only after about 3/4 of the
   * outstanding buffers are used (Linux `virtqueue_enable_cb_delayed`; EVENT_IDX only,
   * otherwise the same as {@link enableCallbacks}).
   *
   * @returns false when that many completions are already pending
   */
  enableCallbacksDelayed(): boolean {
    this.setCallbacksOn();
    if (!this.eventIdx) return !this.hasUsed();
    const bufs = (((this.availIdx - this.lastUsed) & 0xffff) * 3) >>> 2;
    storeIndex(this.availWords, 2 + this.size, this.lastUsed + bufs, this.shared);
    if (this.error !== null) return true;
    const idx = loadIndex(this.usedWords, 1, this.shared);
    return ((idx - this.lastUsed) & 0xffff) <= bufs;
  }

  private setCallbacksOn(): void {
    if ((this.availFlags & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0) return;
    this.availFlags &= ~VIRTQ_AVAIL_F_NO_INTERRUPT;
    if (!this.eventIdx) storeIndex(this.availWords, 0, this.availFlags, this.shared);
  }

  /**
   * After the device was reset (§2.4, Linux `virtqueue_detach_unused_buf` + reinit):
   * takes back every outstanding chain and returns its token, then puts the ring back in
   * its initial state (zeroed rings, full free list, indices 0, not broken) so it can be
   * set up on the device again.
   *
   * @returns the tokens of chains the device never returned, in head order
   */
  detachUnused(): T[] {
    const tokens: T[] = [];
    for (let h = 0; h < this.size; h++) {
      if (this.isHead[h] !== 0) tokens.push(this.tokens[h] as T);
    }
    this.error = null;
    this.memory.refresh();
    const err = this.resolve();
    if (err !== undefined) this.error = this.bad(VirtioErrorCode.QUEUE_BROKEN, err);
    else this.initRings();
    return tokens;
  }
}

/** Writes one 16-byte descriptor (§2.7.5), little-endian. */
/** Writes one descriptor (§2.7.5) as four little-endian u32 words starting at word `w`. */
function writeDescWords(
  words: Uint32Array,
  w: number,
  addr: number,
  len: number,
  flags: number,
  next: number,
): void {
  words[w] = addr >>> 0;
  words[w + 1] = Math.floor(addr / TWO_32);
  words[w + 2] = len;
  words[w + 3] = (flags & 0xffff) | (next << 16);
}

/** `count` u32 words at `offset` of `bytes`, or null on a big-endian host or unaligned offset. */
function u32View(bytes: Uint8Array, offset: number, count: number): Uint32Array | null {
  const abs = bytes.byteOffset + offset;
  return HOST_LITTLE_ENDIAN && abs % 4 === 0 ? new Uint32Array(bytes.buffer, abs, count) : null;
}

function writeDesc(
  view: DataView,
  off: number,
  addr: number,
  len: number,
  flags: number,
  next: number,
): void {
  view.setUint32(off, addr >>> 0, true); // the low word (addr < 2^53 is an integer)
  view.setUint32(off + 4, Math.floor(addr / TWO_32), true);
  view.setUint32(off + 8, len, true);
  view.setUint16(off + 12, flags, true);
  view.setUint16(off + 14, next, true);
}
