/**
 * `VirtioBlkDriver`: the guest side of virtio-blk (§5.2), doing what Linux's
 * `virtio_blk` does: negotiate, read the configuration, post requests (header, data,
 * status) on every request queue with many in flight, and complete them from the
 * interrupt handler with callbacks disabled while draining.
 *
 * Two ways to move data: the convenient one copies between host arrays and guest bounce
 * buffers (`read`, `write`), the zero-copy one takes buffers already in guest memory
 * (`readGuest`, `writeGuest`), as a guest kernel's page cache would.
 *
 * @module
 */

import type { GuestMemory } from "@pvkit/platform";
import {
  DriverError,
  type DriverQueue,
  featureMask,
  type GuestAllocator,
  type GuestBuffer,
  hasFeature,
  initVirtioDevice,
  readConfigStable,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VirtioDeviceId,
  type VirtioDriverTransport,
  VirtioErrorCode,
} from "@pvkit/virtio-core";
import {
  VirtioBlkConfig as C,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_HEADER_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_SEGMENT_SIZE,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VirtioBlkStatus,
  VirtioBlkType,
} from "../spec.js";

function statusName(status: number): string {
  if (status === VirtioBlkStatus.UNSUPP) return "UNSUPP";
  if (status === VirtioBlkStatus.IOERR) return "IOERR";
  return status < 0 ? "not posted (queue broken)" : `status ${status}`;
}

/** A request that completed with a status other than OK. */
export class BlkRequestError extends Error {
  /**
   * @param type - the request type
   * @param status - IOERR or UNSUPP (or a driver-side failure: -1)
   */
  constructor(
    readonly type: number,
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "BlkRequestError";
  }
}

/**
 * Called when a request completes: `status` is the device's status byte (§5.2.6; 0 = OK),
 * or -1 when the driver could not post the request; `bytes` is the data the device wrote.
 */
export type BlkCallback = (status: number, bytes: number) => void;

/** A discard / write-zeroes range, in 512-byte sectors. */
export interface BlkRange {
  readonly sector: number;
  readonly sectors: number;
}

/** What the device told the driver in its configuration (§5.2.4). */
export interface BlkDiskInfo {
  /** Capacity in 512-byte sectors. */
  readonly capacity: number;
  /** Read-only disk. */
  readonly readOnly: boolean;
  /** Logical block size. */
  readonly blockSize: number;
  /** Largest segment and most segments per request. */
  readonly sizeMax: number;
  readonly segMax: number;
  /** Request queues in use. */
  readonly numQueues: number;
  /** Discard / write-zeroes limits (0 when not negotiated). */
  readonly maxDiscardSectors: number;
  readonly maxDiscardSeg: number;
  readonly maxWriteZeroesSectors: number;
  readonly maxWriteZeroesSeg: number;
  readonly writeZeroesMayUnmap: boolean;
}

/** Options of {@link VirtioBlkDriver.create}. */
export interface VirtioBlkDriverOptions {
  /** Guest memory. */
  readonly memory: GuestMemory;
  /** Guest allocator for rings, request headers and bounce buffers. */
  readonly allocator: GuestAllocator;
  /** Queue size to ask for (0 = the device's maximum). */
  readonly queueSize?: number;
  /** Most request queues to use with MQ (default 4). */
  readonly maxQueues?: number;
  /** Feature bits to leave out of negotiation (e.g. to test without EVENT_IDX). */
  readonly withoutFeatures?: bigint;
}

interface Token {
  /** Device-readable data after the header. */
  out: GuestBuffer[];
  /** Device-writable data before the status byte. */
  inBufs: GuestBuffer[];
  type: number;
  sector: number;
  slot: number;
  queue: number;
  /** Host array to copy read data into (bounce mode), else null. */
  dst: Uint8Array | null;
  /** Bounce buffer to free, or -1. */
  bounce: number;
  dataLength: number;
  done: BlkCallback;
}

const SLOT_BYTES = 32; // 16-byte header + status byte, 16-aligned

const WANTED = featureMask(
  VIRTIO_F_VERSION_1,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_WRITE_ZEROES,
);

/** The guest's virtio-blk driver. */
export class VirtioBlkDriver {
  /** What the device reported. */
  readonly info: BlkDiskInfo;
  /** Negotiated features. */
  readonly features: bigint;
  /** Counters. */
  readonly stats = { submitted: 0, completed: 0, interrupts: 0, kicks: 0, backlogged: 0 };

  private readonly slotView: DataView;
  private readonly dirty: Uint8Array;
  private readonly freeSlots: number[] = [];
  private readonly waiting: Token[] = [];
  // Per slot: the header and status buffers (their addresses never change).
  private readonly headerBufs: GuestBuffer[] = [];
  private readonly statusBufs: GuestBuffer[] = [];

  private nextQueue = 0;
  private readonly drainFn = (t: Token, len: number): void => this.complete(t, len);

  private constructor(
    private readonly transport: VirtioDriverTransport,
    private readonly memory: GuestMemory,
    private readonly allocator: GuestAllocator,
    private readonly queues: DriverQueue<Token>[],
    features: bigint,
    info: BlkDiskInfo,
    slots: number,
    slotCount: number,
  ) {
    this.features = features;
    this.info = info;
    const area = memory.slice(slots, slotCount * SLOT_BYTES);
    if (!(area instanceof Uint8Array)) throw new Error(area.message);
    this.slotView = new DataView(area.buffer, area.byteOffset, area.byteLength);
    this.dirty = new Uint8Array(queues.length);
    for (let i = slotCount - 1; i >= 0; i--) this.freeSlots.push(i);
    for (let i = 0; i < slotCount; i++) {
      const hdr = slots + i * SLOT_BYTES;
      this.headerBufs.push({ addr: hdr, len: VIRTIO_BLK_HEADER_SIZE });
      this.statusBufs.push({ addr: hdr + VIRTIO_BLK_HEADER_SIZE, len: 1 });
    }
  }

  /**
   * Probes and initialises a virtio-blk device (§3.1.1, §5.2.5).
   *
   * @returns the driver, or why it could not bind
   */
  static create(
    transport: VirtioDriverTransport,
    options: VirtioBlkDriverOptions,
  ): VirtioBlkDriver | DriverError {
    if (transport.deviceId !== VirtioDeviceId.BLOCK) {
      return new DriverError(
        VirtioErrorCode.WRONG_DEVICE,
        `device id ${transport.deviceId} is not virtio-blk (2)`,
      );
    }
    const wanted = WANTED & ~(options.withoutFeatures ?? 0n);
    // MQ: how many queues the device has (read before FEATURES_OK is fine: config is readable after DRIVER).
    const offered = transport.readDeviceFeatures();
    const devQueues = hasFeature(offered & wanted, VIRTIO_BLK_F_MQ)
      ? Math.max(1, transport.readConfig(C.NUM_QUEUES, 2))
      : 1;
    const numQueues = Math.min(devQueues, options.maxQueues ?? 4);
    const size = options.queueSize ?? 0;
    const dev = initVirtioDevice<Token>(transport, {
      wanted,
      memory: options.memory,
      allocator: options.allocator,
      queueSizes: Array.from({ length: numQueues }, () => size),
    });
    if (dev instanceof DriverError) return dev;
    const f = dev.features;
    const info = readConfigStable(transport, (t) => {
      const has = (bit: number): boolean => hasFeature(f, bit);
      const u32 = (off: number): number => t.readConfig(off, 4);
      return {
        capacity: u32(C.CAPACITY) + u32(C.CAPACITY + 4) * 0x1_0000_0000,
        readOnly: has(VIRTIO_BLK_F_RO),
        blockSize: has(VIRTIO_BLK_F_BLK_SIZE) ? u32(C.BLK_SIZE) : 512,
        sizeMax: has(VIRTIO_BLK_F_SIZE_MAX) ? u32(C.SIZE_MAX) : 0,
        segMax: has(VIRTIO_BLK_F_SEG_MAX) ? u32(C.SEG_MAX) : 0,
        numQueues,
        maxDiscardSectors: has(VIRTIO_BLK_F_DISCARD) ? u32(C.MAX_DISCARD_SECTORS) : 0,
        maxDiscardSeg: has(VIRTIO_BLK_F_DISCARD) ? u32(C.MAX_DISCARD_SEG) : 0,
        maxWriteZeroesSectors: has(VIRTIO_BLK_F_WRITE_ZEROES) ? u32(C.MAX_WRITE_ZEROES_SECTORS) : 0,
        maxWriteZeroesSeg: has(VIRTIO_BLK_F_WRITE_ZEROES) ? u32(C.MAX_WRITE_ZEROES_SEG) : 0,
        writeZeroesMayUnmap:
          has(VIRTIO_BLK_F_WRITE_ZEROES) && t.readConfig(C.WRITE_ZEROES_MAY_UNMAP, 1) !== 0,
      } satisfies BlkDiskInfo;
    });
    if (info instanceof DriverError) return info;
    let slotCount = 0;
    for (const q of dev.queues) slotCount += q.size;
    const slots = options.allocator.alloc(slotCount * SLOT_BYTES, 16);
    if (slots < 0)
      return new DriverError(VirtioErrorCode.OUT_OF_MEMORY, "no guest memory for request headers");
    return new VirtioBlkDriver(
      transport,
      options.memory,
      options.allocator,
      dev.queues,
      f,
      info,
      slots,
      slotCount,
    );
  }

  /** Whether the disk caches writes (CONFIG_WCE writeback byte, or FLUSH without CONFIG_WCE). */
  get writeback(): boolean {
    if (!hasFeature(this.features, VIRTIO_BLK_F_FLUSH)) return false;
    if (!hasFeature(this.features, VIRTIO_BLK_F_CONFIG_WCE)) return true;
    return this.transport.readConfig(C.WRITEBACK, 1) !== 0;
  }

  /** Switches the device cache between writeback and writethrough (needs CONFIG_WCE). @returns whether it took */
  setWriteback(on: boolean): boolean {
    if (!hasFeature(this.features, VIRTIO_BLK_F_CONFIG_WCE)) return false;
    this.transport.writeConfig(C.WRITEBACK, 1, on ? 1 : 0);
    return this.writeback === on;
  }

  /** Requests posted and not completed. */
  get inFlight(): number {
    let n = 0;
    for (const q of this.queues) n += q.inFlight;
    return n + this.waiting.length;
  }

  /** Reads `length` bytes (a multiple of 512) at `sector` into a new array. */
  async read(sector: number, length: number): Promise<Uint8Array> {
    const dst = new Uint8Array(length);
    const bounce = this.bounce(length);
    await this.submit(VirtioBlkType.IN, sector, [], [{ addr: bounce, len: length }], dst, bounce);
    return dst;
  }

  /** Writes `data` (a multiple of 512 bytes) at `sector`; resolves once the device acknowledged it. */
  async write(sector: number, data: Uint8Array): Promise<void> {
    const bounce = this.bounce(data.length);
    this.memory.write(bounce, data);
    await this.submit(
      VirtioBlkType.OUT,
      sector,
      [{ addr: bounce, len: data.length }],
      [],
      null,
      bounce,
    );
  }

  /** Reads into guest buffers (zero-copy). @returns bytes read */
  readGuest(sector: number, buffers: readonly GuestBuffer[]): Promise<number> {
    return this.submit(VirtioBlkType.IN, sector, [], [...buffers], null, -1);
  }

  /** Writes guest buffers (zero-copy). */
  async writeGuest(sector: number, buffers: readonly GuestBuffer[]): Promise<void> {
    await this.submit(VirtioBlkType.OUT, sector, [...buffers], [], null, -1);
  }

  /** FLUSH: resolves when every write acknowledged before it is durable. */
  async flush(): Promise<void> {
    await this.submit(VirtioBlkType.FLUSH, 0, [], [], null, -1);
  }

  /** DISCARD the ranges. */
  async discard(ranges: readonly BlkRange[]): Promise<void> {
    await this.segments(VirtioBlkType.DISCARD, ranges, false);
  }

  /** WRITE_ZEROES over the ranges; `unmap` lets the device deallocate them. */
  async writeZeroes(ranges: readonly BlkRange[], unmap = false): Promise<void> {
    await this.segments(VirtioBlkType.WRITE_ZEROES, ranges, unmap);
  }

  /** GET_ID: the device's serial string (up to 20 bytes, NUL padding removed). */
  async getId(): Promise<string> {
    const dst = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    const bounce = this.bounce(VIRTIO_BLK_ID_BYTES);
    await this.submit(
      VirtioBlkType.GET_ID,
      0,
      [],
      [{ addr: bounce, len: VIRTIO_BLK_ID_BYTES }],
      dst,
      bounce,
    );
    const end = dst.indexOf(0);
    return new TextDecoder().decode(end < 0 ? dst : dst.subarray(0, end));
  }

  private async segments(type: number, ranges: readonly BlkRange[], unmap: boolean): Promise<void> {
    const bytes = ranges.length * VIRTIO_BLK_SEGMENT_SIZE;
    const bounce = this.bounce(bytes);
    ranges.forEach((r, i) => {
      const at = bounce + i * VIRTIO_BLK_SEGMENT_SIZE;
      this.memory.writeU32(at, r.sector >>> 0);
      this.memory.writeU32(at + 4, Math.floor(r.sector / 0x1_0000_0000));
      this.memory.writeU32(at + 8, r.sectors);
      this.memory.writeU32(at + 12, unmap ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0);
    });
    await this.submit(type, 0, [{ addr: bounce, len: bytes }], [], null, bounce);
  }

  private bounce(length: number): number {
    const addr = this.allocator.alloc(Math.max(length, 1), 64);
    if (addr < 0) throw new BlkRequestError(-1, -1, `no guest memory for a ${length}-byte buffer`);
    return addr;
  }

  /** Posts one request and kicks; resolves with the data bytes the device wrote, rejects on a bad status. */
  private submit(
    type: number,
    sector: number,
    out: GuestBuffer[],
    inBufs: GuestBuffer[],
    dst: Uint8Array | null,
    bounce: number,
  ): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.post(type, sector, out, inBufs, dst, bounce, (status, bytes) => {
        if (status === VirtioBlkStatus.OK) resolve(bytes);
        else
          reject(
            new BlkRequestError(type, status, `request type ${type} failed: ${statusName(status)}`),
          );
      });
      this.commit();
    });
  }

  /**
   * The low-level path (what a block layer's queue_rq does): puts a request on the next
   * request queue (round robin) without notifying the device, so a batch costs one
   * notification; call {@link commit} after the batch. Buffers are in guest memory.
   *
   * @param type - the request type (§5.2.6)
   * @param sector - first sector (IN/OUT)
   * @param out - device-readable data after the header (OUT data, discard segments)
   * @param inBufs - device-writable data before the status byte (IN data, GET_ID)
   * @param done - called once with the status and the data bytes written
   */
  enqueue(
    type: number,
    sector: number,
    out: GuestBuffer[],
    inBufs: GuestBuffer[],
    done: BlkCallback,
  ): void {
    this.post(type, sector, out, inBufs, null, -1, done);
  }

  /** Notifies every queue that got requests since the last commit (if the device wants it). */
  commit(): void {
    for (let i = 0; i < this.queues.length; i++) {
      if (this.dirty[i] === 0) continue;
      this.dirty[i] = 0;
      if (this.queues[i]!.kick()) this.stats.kicks++;
    }
  }

  private post(
    type: number,
    sector: number,
    out: GuestBuffer[],
    inBufs: GuestBuffer[],
    dst: Uint8Array | null,
    bounce: number,
    done: BlkCallback,
  ): void {
    const queue = this.nextQueue;
    this.nextQueue = (this.nextQueue + 1) % this.queues.length;
    let dataLength = 0;
    for (const b of type === VirtioBlkType.OUT ? out : inBufs) dataLength += b.len;
    const token: Token = {
      out,
      inBufs,
      type,
      sector,
      slot: -1,
      queue,
      dst,
      bounce,
      dataLength,
      done,
    };
    this.stats.submitted++;
    this.place(token);
  }

  /** Puts a request on its ring, or in the backlog when the ring (or the slots) are full. */
  private place(t: Token): boolean {
    const q = this.queues[t.queue]!;
    const slot = this.freeSlots.pop();
    if (slot === undefined) {
      this.waiting.push(t);
      this.stats.backlogged++;
      return false;
    }
    const v = this.slotView;
    const at = slot * SLOT_BYTES;
    v.setUint32(at, t.type, true);
    v.setUint32(at + 4, 0, true);
    v.setUint32(at + 8, t.sector >>> 0, true);
    v.setUint32(at + 12, Math.floor(t.sector / 0x1_0000_0000), true);
    v.setUint8(at + VIRTIO_BLK_HEADER_SIZE, 0xff); // status: not yet written
    t.slot = slot;
    // §5.2.6: header, data out, data in, status (the common shapes without spreading).
    const header = this.headerBufs[slot]!;
    const status = this.statusBufs[slot]!;
    const out = t.out.length === 0 ? [header] : [header, ...t.out];
    const inBufs =
      t.inBufs.length === 0
        ? [status]
        : t.inBufs.length === 1
          ? [t.inBufs[0]!, status]
          : [...t.inBufs, status];
    const head = q.add(out, inBufs, t);
    if (head instanceof DriverError) {
      this.freeSlots.push(slot);
      t.slot = -1;
      if (head.code === VirtioErrorCode.NO_SPACE) {
        this.waiting.push(t);
        this.stats.backlogged++;
        return false;
      }
      this.finishToken(t);
      t.done(-1, 0);
      return false;
    }
    this.dirty[t.queue] = 1;
    return true;
  }

  /**
   * The interrupt handler: acknowledges the transport's interrupt and drains every queue
   * with callbacks disabled, re-enabling them and draining again until no completion is
   * left (the race Linux's `virtblk_done` closes). Then posts backlogged requests.
   *
   * @returns whether the interrupt was ours (any cause bit set)
   */
  onInterrupt(): boolean {
    const cause = this.transport.ackInterrupt();
    this.stats.interrupts++;
    this.poll();
    return cause !== 0;
  }

  /** Drains completions without an interrupt (polling mode). @returns completions taken */
  poll(): number {
    let n = 0;
    for (const q of this.queues) {
      do {
        q.disableCallbacks();
        n += q.drainUsed(this.drainFn);
      } while (!q.enableCallbacks());
    }
    this.refill();
    return n;
  }

  private refill(): void {
    while (this.waiting.length > 0) {
      const t = this.waiting.shift()!;
      if (!this.place(t)) {
        // Still no room: it went back to the end of the backlog; keep the order by stopping.
        this.waiting.unshift(this.waiting.pop()!);
        break;
      }
    }
    this.commit();
  }

  private complete(t: Token, len: number): void {
    const status = this.slotView.getUint8(t.slot * SLOT_BYTES + VIRTIO_BLK_HEADER_SIZE);
    let bytes = Math.max(0, len - 1);
    if (status === VirtioBlkStatus.OK && t.dst !== null && t.bounce >= 0) {
      bytes = Math.min(bytes, t.dst.length);
      this.memory.read(t.bounce, t.dst.subarray(0, bytes));
    }
    this.finishToken(t);
    this.stats.completed++;
    t.done(status, bytes);
  }

  private finishToken(t: Token): void {
    if (t.slot >= 0) this.freeSlots.push(t.slot);
    t.slot = -1;
    if (t.bounce >= 0) this.allocator.free(t.bounce);
    t.bounce = -1;
  }
}
