/**
 * `VirtioBlkDevice`: the virtio block device (§5.2, device id 2) over any
 * {@link BlockBackend}. Requests run concurrently (up to a bound per queue) and complete
 * out of order; used entries are written in completion order. A write is acknowledged
 * only after the back-end finished it; FLUSH completes only after every write submitted
 * before it finished and the back-end made it durable; in writethrough mode (WCE = 0, or
 * FLUSH not negotiated) every write is durable before it is acknowledged (§5.2.6.2).
 *
 * @module
 */

import { expectArgument, expectOptions } from "@pvkit/platform";
import {
  type DescriptorChain,
  type DeviceVirtqueue,
  featureMask,
  hasFeature,
  VirtioDeviceBase,
  type VirtioDeviceEvents,
  VirtioDeviceId,
  VirtioError,
  VirtioErrorCode,
} from "@pvkit/virtio-core";
import { type BlockBackend, type BlockResult, isBlockBackend } from "../backend/backend.js";
import {
  blkTypeName,
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
  VirtioBlkStatus,
  VirtioBlkType,
} from "../spec.js";
import { type BlkErrorCode, type BlkLimits, type BlkRequest, parseBlkRequest } from "./request.js";

/** I/O topology hints (§5.2.4, VIRTIO_BLK_F_TOPOLOGY). */
export interface BlkTopology {
  /** log2 of logical blocks per physical block. */
  readonly physicalBlockExp: number;
  /** Offset of the first aligned logical block. */
  readonly alignmentOffset: number;
  /** Suggested minimum I/O size, in blocks. */
  readonly minIoSize: number;
  /** Optimal (suggested maximum) I/O size, in blocks. */
  readonly optIoSize: number;
}

/** Options of {@link VirtioBlkDevice}; every feature is configurable per disk. */
export interface VirtioBlkOptions {
  /** Where the bytes go. */
  readonly backend: BlockBackend;
  /** GET_ID serial (at most 20 bytes of ASCII; default empty). */
  readonly serial?: string;
  /** Offer RO even when the back-end is writable (always offered for a read-only back-end). */
  readonly readOnly?: boolean;
  /** Request queues (MQ is offered when > 1; default 1). */
  readonly numQueues?: number;
  /** QueueNumMax of each request queue (default 256). */
  readonly queueSize?: number;
  /** Requests in flight per queue before the device stops popping (default 64). */
  readonly maxInFlight?: number;
  /** Offer FLUSH (default true). */
  readonly flush?: boolean;
  /** Offer CONFIG_WCE, the guest's writeback toggle (default true; needs FLUSH). */
  readonly configWce?: boolean;
  /** Start in writeback mode (default true). */
  readonly writeback?: boolean;
  /** Offer DISCARD (default true unless read-only). */
  readonly discard?: boolean;
  /** Offer WRITE_ZEROES (default true unless read-only). */
  readonly writeZeroes?: boolean;
  /** Let write-zeroes deallocate (default true). */
  readonly writeZeroesMayUnmap?: boolean;
  /** max_discard_sectors (default 2^22 = 2 GiB). */
  readonly maxDiscardSectors?: number;
  /** max_discard_seg (default 32). */
  readonly maxDiscardSeg?: number;
  /** discard_sector_alignment (default 8 = 4 KiB). */
  readonly discardSectorAlignment?: number;
  /** max_write_zeroes_sectors (default 2^22). */
  readonly maxWriteZeroesSectors?: number;
  /** max_write_zeroes_seg (default 32). */
  readonly maxWriteZeroesSeg?: number;
  /** blk_size, offered as BLK_SIZE (default 512). */
  readonly blockSize?: number;
  /** size_max, offered as SIZE_MAX (default 1 MiB). */
  readonly sizeMax?: number;
  /** seg_max, offered as SEG_MAX (default queueSize − 2). */
  readonly segMax?: number;
  /** Offer TOPOLOGY with these hints (default: 4 KiB physical blocks). */
  readonly topology?: BlkTopology | null;
  /** Offer VIRTIO_F_EVENT_IDX (default true). */
  readonly eventIdx?: boolean;
  /** Offer VIRTIO_F_INDIRECT_DESC (default true). */
  readonly indirectDesc?: boolean;
  /** Offer VIRTIO_F_RING_PACKED (§2.8; default false): packed rings if the driver accepts them. */
  readonly ringPacked?: boolean;
}

/** Events of {@link VirtioBlkDevice}. */
export type VirtioBlkEvents = VirtioDeviceEvents & {
  /** A request completed with `status`; `bytes` of data moved. */
  completed: (type: number, status: number, bytes: number) => void;
  /** A request was refused or failed, with the reason. */
  requestError: (code: BlkErrorCode, message: string) => void;
};

/** Per-device counters. */
export interface VirtioBlkStats {
  /** Requests completed, by request type number. */
  readonly byType: Record<number, number>;
  /** Failed requests, by {@link BlkErrorCode}. */
  readonly errors: Record<string, number>;
  /** Bytes read from the disk into the guest. */
  bytesRead: number;
  /** Bytes written from the guest to the disk. */
  bytesWritten: number;
}

const BACKEND_ERROR: Record<string, BlkErrorCode> = {
  EIO: "BACKEND_EIO",
  ENOSPC: "BACKEND_ENOSPC",
  EROFS: "BACKEND_EROFS",
};

interface Pending {
  readonly queue: DeviceVirtqueue;
  readonly chain: DescriptorChain;
  readonly epoch: number;
}

/** The virtio block device. */
export class VirtioBlkDevice extends VirtioDeviceBase<VirtioBlkEvents> {
  /** The disk. */
  readonly backend: BlockBackend;
  /** Counters. */
  readonly stats: VirtioBlkStats = { byType: {}, errors: {}, bytesRead: 0, bytesWritten: 0 };

  private readonly serial: Uint8Array;
  private readonly maxInFlight: number;
  private readonly inFlight: Uint32Array;
  private readonly offered: bigint;
  private limits: BlkLimits;
  private writebackMode: boolean;
  // Negotiated FLUSH / CONFIG_WCE, cached at DRIVER_OK (checked on every write).
  private flushNegotiated = false;
  private wceNegotiated = false;
  private epoch = 0;
  private readonly writes = new Set<Promise<unknown>>();
  private readonly flushScheduled: boolean[];
  private readonly statusScratch = new Uint8Array(1);

  /**
   * @param options - the back-end and what to offer
   * @throws TypeError when `options` is not an object or `options.backend` is not a
   *   {@link BlockBackend} (the message names the option, the type expected and the
   *   value given)
   */
  constructor(options: VirtioBlkOptions) {
    expectOptions("new VirtioBlkDevice", options, "{ backend, serial?, readOnly?, … }");
    expectArgument(
      "new VirtioBlkDevice",
      "options.backend",
      options.backend,
      "a BlockBackend (e.g. new MemoryDisk(1 << 20); byteLength, readOnly, readv, writev, flush, discard, writeZeroes, close)",
      isBlockBackend,
    );
    const backend = options.backend;
    const readOnly = backend.readOnly || (options.readOnly ?? false);
    const numQueues = options.numQueues ?? 1;
    const queueSize = options.queueSize ?? 256;
    const flush = options.flush ?? true;
    const configWce = flush && (options.configWce ?? true);
    const discard = !readOnly && (options.discard ?? true);
    const writeZeroes = !readOnly && (options.writeZeroes ?? true);
    const topology =
      options.topology === undefined
        ? { physicalBlockExp: 3, alignmentOffset: 0, minIoSize: 1, optIoSize: 0 }
        : options.topology;
    const bits = [VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE];
    if (topology !== null) bits.push(VIRTIO_BLK_F_TOPOLOGY);
    if (flush) bits.push(VIRTIO_BLK_F_FLUSH);
    if (configWce) bits.push(VIRTIO_BLK_F_CONFIG_WCE);
    if (readOnly) bits.push(VIRTIO_BLK_F_RO);
    if (numQueues > 1) bits.push(VIRTIO_BLK_F_MQ);
    if (discard) bits.push(VIRTIO_BLK_F_DISCARD);
    if (writeZeroes) bits.push(VIRTIO_BLK_F_WRITE_ZEROES);
    super({
      deviceId: VirtioDeviceId.BLOCK,
      features: featureMask(...bits),
      queueSizes: Array.from({ length: numQueues }, () => queueSize),
      configSize: C.SIZE,
      ...(options.eventIdx === undefined ? {} : { eventIdx: options.eventIdx }),
      ...(options.indirectDesc === undefined ? {} : { indirectDesc: options.indirectDesc }),
      ...(options.ringPacked === undefined ? {} : { ringPacked: options.ringPacked }),
    });
    this.backend = backend;
    this.offered = this.deviceFeatures;
    this.maxInFlight = options.maxInFlight ?? 64;
    this.inFlight = new Uint32Array(numQueues);
    this.flushScheduled = new Array<boolean>(numQueues).fill(false);
    this.serial = new TextEncoder().encode(options.serial ?? "").subarray(0, VIRTIO_BLK_ID_BYTES);
    this.writebackMode = options.writeback ?? true;
    const capacity = Math.floor(backend.byteLength / 512);
    this.limits = {
      capacity,
      readOnly,
      flush,
      getId: true,
      discard,
      maxDiscardSectors: options.maxDiscardSectors ?? 1 << 22,
      maxDiscardSeg: options.maxDiscardSeg ?? 32,
      writeZeroes,
      maxWriteZeroesSectors: options.maxWriteZeroesSectors ?? 1 << 22,
      maxWriteZeroesSeg: options.maxWriteZeroesSeg ?? 32,
      writeZeroesMayUnmap: options.writeZeroesMayUnmap ?? true,
    };
    // §5.2.4: the configuration layout.
    const v = this.configView;
    v.setUint32(C.CAPACITY, capacity >>> 0, true);
    v.setUint32(C.CAPACITY + 4, Math.floor(capacity / 0x1_0000_0000), true);
    v.setUint32(C.SIZE_MAX, options.sizeMax ?? 1 << 20, true);
    v.setUint32(C.SEG_MAX, options.segMax ?? queueSize - 2, true);
    v.setUint32(C.BLK_SIZE, options.blockSize ?? 512, true);
    if (topology !== null) {
      v.setUint8(C.PHYSICAL_BLOCK_EXP, topology.physicalBlockExp);
      v.setUint8(C.ALIGNMENT_OFFSET, topology.alignmentOffset);
      v.setUint16(C.MIN_IO_SIZE, topology.minIoSize, true);
      v.setUint32(C.OPT_IO_SIZE, topology.optIoSize, true);
    }
    v.setUint8(C.WRITEBACK, this.writebackMode ? 1 : 0);
    v.setUint16(C.NUM_QUEUES, numQueues, true);
    v.setUint32(C.MAX_DISCARD_SECTORS, discard ? this.limits.maxDiscardSectors : 0, true);
    v.setUint32(C.MAX_DISCARD_SEG, discard ? this.limits.maxDiscardSeg : 0, true);
    v.setUint32(
      C.DISCARD_SECTOR_ALIGNMENT,
      discard ? (options.discardSectorAlignment ?? 8) : 0,
      true,
    );
    v.setUint32(
      C.MAX_WRITE_ZEROES_SECTORS,
      writeZeroes ? this.limits.maxWriteZeroesSectors : 0,
      true,
    );
    v.setUint32(C.MAX_WRITE_ZEROES_SEG, writeZeroes ? this.limits.maxWriteZeroesSeg : 0, true);
    v.setUint8(C.WRITE_ZEROES_MAY_UNMAP, writeZeroes && this.limits.writeZeroesMayUnmap ? 1 : 0);
  }

  /** Capacity in 512-byte sectors. */
  get capacity(): number {
    return this.limits.capacity;
  }

  /** Whether completed writes may still sit in a volatile cache (§5.2.6.2). */
  get writeback(): boolean {
    if (!this.flushNegotiated) return false;
    return this.wceNegotiated ? this.writebackMode : true;
  }

  protected override onActivate(features: bigint): VirtioError | undefined {
    const has = (bit: number): boolean => hasFeature(features, bit);
    this.flushNegotiated = has(VIRTIO_BLK_F_FLUSH);
    this.wceNegotiated = has(VIRTIO_BLK_F_CONFIG_WCE);
    this.limits = {
      ...this.limits,
      flush: has(VIRTIO_BLK_F_FLUSH),
      discard: has(VIRTIO_BLK_F_DISCARD),
      writeZeroes: has(VIRTIO_BLK_F_WRITE_ZEROES),
    };
    return undefined;
  }

  protected override onReset(): void {
    // Completions of requests from before the reset are dropped (never acknowledged).
    this.epoch++;
    this.flushNegotiated = false;
    this.wceNegotiated = false;
    this.inFlight.fill(0);
    this.flushScheduled.fill(false);
    const offered = this.offered;
    this.limits = {
      ...this.limits,
      flush: hasFeature(offered, VIRTIO_BLK_F_FLUSH),
      discard: hasFeature(offered, VIRTIO_BLK_F_DISCARD),
      writeZeroes: hasFeature(offered, VIRTIO_BLK_F_WRITE_ZEROES),
    };
  }

  protected override onConfigWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    // §5.2.5: only `writeback` is writable, and only with CONFIG_WCE negotiated.
    if (
      offset !== C.WRITEBACK ||
      size !== 1 ||
      !hasFeature(this.negotiatedFeatures, VIRTIO_BLK_F_CONFIG_WCE)
    )
      return;
    const on = (value & 1) === 1;
    if (on === this.writebackMode) return;
    this.writebackMode = on;
    this.config[C.WRITEBACK] = on ? 1 : 0;
    if (!on) this.track(this.backend.flush()); // switching to writethrough: commit the cache
  }

  protected onQueueNotify(_index: number, queue: DeviceVirtqueue): void {
    this.pump(queue);
  }

  /** Pops and starts requests while the queue has them and the in-flight bound allows. */
  private pump(queue: DeviceVirtqueue): void {
    const qi = queue.index;
    for (;;) {
      queue.disableNotification();
      while (this.inFlight[qi]! < this.maxInFlight && this.isLive) {
        const chain = queue.popChain();
        if (chain === null) break;
        this.inFlight[qi]!++;
        this.begin({ queue, chain, epoch: this.epoch });
      }
      // At the bound: notifications stay off; completions call pump again.
      if (this.inFlight[qi]! >= this.maxInFlight || !this.isLive) break;
      if (!queue.enableNotification()) break;
    }
    this.interruptIfNeeded(queue);
  }

  private begin(p: Pending): void {
    const req = parseBlkRequest(p.chain, this.limits);
    if (!req.ok) {
      if (req.fatal) {
        // DESIGN (issue 17): a chain with no device-writable status byte is queue
        // corruption, not a per-request fault — §5.2.6 requires the status as the chain's
        // last writable byte (§5.2.6.1), so the device has no way to answer it. The device
        // enters DEVICE_NEEDS_RESET (§2.1.2, with the config-change notification) and
        // does NOT return the head: a used element would tell the driver the request
        // completed, and the driver would then read a status byte the device never wrote
        // (Linux's virtblk_done reads it from its own buffer, usually a stale 0 = OK), so
        // a write that never reached the disk could be acknowledged. A broken device
        // completes nothing: QEMU's virtio_error() marks it broken and virtio_blk detaches
        // the element without pushing it to the used ring (virtio_blk_handle_vq), then
        // stops the queue. The head is not leaked: the driver must reset the device, and
        // a reset returns every buffer to the driver (§2.4).
        this.inFlight[p.queue.index]!--;
        this.needsReset(
          new VirtioError(VirtioErrorCode.MALFORMED_REQUEST, req.message, p.queue.index),
        );
        return;
      }
      this.fail(req.code, req.message);
      this.finish(p, req.type, req.status, 0, req.statusOffset);
      return;
    }
    const result = this.execute(p.chain, req, p.epoch);
    if (result instanceof Promise) {
      result.then(
        (r) => this.settle(p, req, r),
        () => this.settle(p, req, "EIO"),
      );
    } else this.settle(p, req, result);
  }

  private execute(
    chain: DescriptorChain,
    req: BlkRequest,
    epoch: number,
  ): BlockResult | Promise<BlockResult> {
    const b = this.backend;
    const offset = req.sector * 512;
    switch (req.type) {
      case VirtioBlkType.IN: {
        if (req.dataLength === 0) return undefined;
        if (b.synchronous === true)
          return b.readv(offset, this.views(chain, true, 0, req.dataLength));
        // Asynchronous back-end (issue 17, found by `pnpm fuzz blk-inflight`): read into
        // host memory and copy into the guest's buffers only if the device was not reset
        // meanwhile — after a reset the guest owns that memory again (§2.4). The copy goes
        // through the chain when the data lands, not through views taken now: a
        // `WebAssembly.Memory` that grew meanwhile (v86's RAM) detached them.
        const bounce = new Uint8Array(req.dataLength);
        const land = (r: BlockResult): BlockResult => {
          if (r === undefined && epoch === this.epoch) chain.copyToWritable(0, bounce);
          return r;
        };
        const r = b.readv(offset, [bounce]);
        return r instanceof Promise ? r.then(land) : land(r);
      }
      case VirtioBlkType.OUT: {
        if (req.dataLength === 0) return undefined;
        const views = this.views(chain, false, VIRTIO_BLK_HEADER_SIZE, req.dataLength);
        // Asynchronous back-end: write a copy taken now, so a reset and the guest reusing
        // its buffers cannot change what reaches the disk (issue 17, `blk-inflight`).
        const data = b.synchronous === true ? views : [gather(views, req.dataLength)];
        const done = this.durable(b.writev(offset, data));
        return this.track(done);
      }
      case VirtioBlkType.FLUSH: {
        // §5.2.6.2: every write completed before the FLUSH is durable when it completes.
        const earlier = [...this.writes];
        return earlier.length === 0 ? b.flush() : Promise.all(earlier).then(() => b.flush());
      }
      case VirtioBlkType.GET_ID: {
        const n = Math.min(req.dataLength, VIRTIO_BLK_ID_BYTES);
        const id = new Uint8Array(n);
        id.set(this.serial.subarray(0, n));
        chain.copyToWritable(0, id);
        return undefined;
      }
      default:
        return this.track(this.durable(this.segments(req)));
    }
  }

  private async segments(req: BlkRequest): Promise<BlockResult> {
    const discard = req.type === VirtioBlkType.DISCARD;
    for (const s of req.segments) {
      const off = s.sector * 512;
      const len = s.sectors * 512;
      const r = await (discard
        ? this.backend.discard(off, len)
        : this.backend.writeZeroes(off, len, s.unmap));
      if (r !== undefined) return r;
    }
    return undefined;
  }

  /** In writethrough mode, a write is acknowledged only once flushed. */
  private durable(r: BlockResult | Promise<BlockResult>): BlockResult | Promise<BlockResult> {
    if (this.writeback) return r;
    const flushAfter = (res: BlockResult): BlockResult | Promise<BlockResult> =>
      res === undefined ? this.backend.flush() : res;
    return r instanceof Promise ? r.then(flushAfter) : flushAfter(r);
  }

  /** Remembers an unfinished write so a later FLUSH waits for it. */
  private track<T>(r: T | Promise<T>): T | Promise<T> {
    if (!(r instanceof Promise)) return r;
    const p = r.finally(() => this.writes.delete(p));
    this.writes.add(p);
    return p;
  }

  private settle(p: Pending, req: BlkRequest, r: BlockResult): void {
    if (r !== undefined) {
      const code = BACKEND_ERROR[r] ?? "BACKEND_EIO";
      this.fail(code, `back-end ${r} on ${blkTypeName(req.type)} at sector ${req.sector}`);
      this.finish(p, req.type, VirtioBlkStatus.IOERR, 0, req.statusOffset);
      return;
    }
    let bytes = 0;
    if (req.type === VirtioBlkType.IN) {
      bytes = req.dataLength;
      this.stats.bytesRead += bytes;
    } else if (req.type === VirtioBlkType.OUT) this.stats.bytesWritten += req.dataLength;
    else if (req.type === VirtioBlkType.GET_ID)
      bytes = Math.min(req.dataLength, VIRTIO_BLK_ID_BYTES);
    this.finish(p, req.type, VirtioBlkStatus.OK, bytes, req.statusOffset);
  }

  /** Writes the status byte and returns the chain; `bytes` of data were written before it. */
  private finish(
    p: Pending,
    type: number,
    status: number,
    bytes: number,
    statusOffset: number,
  ): void {
    if (p.epoch !== this.epoch) return; // the device was reset meanwhile: nothing to acknowledge
    const q = p.queue;
    this.statusScratch[0] = status;
    p.chain.copyToWritable(statusOffset, this.statusScratch);
    // §5.2.6: the used length counts the bytes written: data (for reads) plus the status byte.
    q.addUsed(p.chain.head, bytes + 1);
    this.inFlight[q.index]!--;
    this.stats.byType[type] = (this.stats.byType[type] ?? 0) + 1;
    this.emit("completed", type, status, bytes);
    this.afterCompletion(q);
  }

  /** Batches the interrupt of completions finishing in the same tick, and refills. */
  private afterCompletion(queue: DeviceVirtqueue): void {
    const qi = queue.index;
    if (this.flushScheduled[qi]) return;
    this.flushScheduled[qi] = true;
    queueMicrotask(() => {
      this.flushScheduled[qi] = false;
      if (!this.isLive || !queue.isActive) return;
      this.pump(queue);
    });
  }

  private fail(code: BlkErrorCode, message: string): void {
    this.stats.errors[code] = (this.stats.errors[code] ?? 0) + 1;
    this.emit("requestError", code, message);
  }

  /** Views of the chain's data: readable (after `skip` header bytes) or writable. */
  private views(
    chain: DescriptorChain,
    writable: boolean,
    skip: number,
    length: number,
  ): Uint8Array[] {
    const out: Uint8Array[] = [];
    const first = writable ? chain.readableCount : 0;
    const last = writable ? chain.bufferCount : chain.readableCount;
    let toSkip = skip;
    let left = length;
    for (let i = first; i < last && left > 0; i++) {
      const len = chain.bufferLength(i);
      if (toSkip >= len) {
        toSkip -= len;
        continue;
      }
      const n = Math.min(len - toSkip, left);
      const off = chain.bufferOffset(i) + toSkip;
      out.push(chain.bufferBytes(i).subarray(off, off + n));
      left -= n;
      toSkip = 0;
    }
    return out;
  }
}

/** Copies `views` (in order) into one new host buffer of `length` bytes. */
function gather(views: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const v of views) {
    out.set(v, at);
    at += v.length;
  }
  return out;
}
