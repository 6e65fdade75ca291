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

import { describeValue, type GuestMemory } from "@pvkit/platform";
import {
  bindVirtioDriver,
  checkDriverArguments,
  checkVirtioUnbound,
  DriverError,
  type DriverVirtqueue,
  featureMask,
  type GuestAllocator,
  type GuestBuffer,
  hasFeature,
  initVirtioDevice,
  readConfigStable,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VirtioDeviceId,
  type VirtioDriverTransport,
  VirtioErrorCode,
} from "@pvkit/virtio-core";
import { BlkErrorCode } from "../device/request.js";
import {
  blkStatusName,
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
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_SEGMENT_SIZE,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VirtioBlkStatus,
  VirtioBlkType,
} from "../spec.js";

/** 2^53: sectors at or above it cannot be represented exactly (the header holds a le64). */
const SECTOR_LIMIT = "2^53";

/**
 * Names a request for messages: `"VIRTIO_BLK_T_IN (read) of 100 bytes at sector 0"`,
 * `"VIRTIO_BLK_T_DISCARD of 2 ranges"`, `"VIRTIO_BLK_T_FLUSH"`.
 */
function describeRequest(type: number, sector: number, bytes: number): string {
  const name = blkTypeName(type);
  if (type === VirtioBlkType.IN || type === VirtioBlkType.OUT)
    return `${name} of ${String(bytes)} bytes at sector ${String(sector)}`;
  if (type === VirtioBlkType.DISCARD || type === VirtioBlkType.WRITE_ZEROES) {
    const n = Math.floor(bytes / VIRTIO_BLK_SEGMENT_SIZE);
    return `${name} of ${n} range${n === 1 ? "" : "s"}`;
  }
  return name;
}

/**
 * A request that failed: refused by the driver before it reached the ring
 * (`code` INVALID_REQUEST, `rule` says which §5.2.6 rule it breaks), completed by the
 * device with IOERR or UNSUPP (`code` DEVICE_ERROR), or never posted (`code`
 * NOT_POSTED). The message names the request type as §5.2.6 spells it.
 */
export class BlkRequestError extends Error {
  /**
   * @param type - the request type (§5.2.6)
   * @param status - the device's IOERR or UNSUPP; for a request the driver refused, the
   *   status the device would have answered (§5.2.6.2); -1 when it was never posted
   * @param message - what failed, naming the request and the rule
   * @param code - INVALID_REQUEST, DEVICE_ERROR or NOT_POSTED (default: from `status`)
   * @param rule - for INVALID_REQUEST: the rule broken (e.g. UNALIGNED_LENGTH), else null
   */
  constructor(
    readonly type: number,
    readonly status: number,
    message: string,
    readonly code: BlkErrorCode = status < 0 ? BlkErrorCode.NOT_POSTED : BlkErrorCode.DEVICE_ERROR,
    readonly rule: BlkErrorCode | null = null,
  ) {
    super(message);
    this.name = "BlkRequestError";
  }
}

/** A refusal by the driver (cold path): INVALID_REQUEST with the rule and the would-be status. */
function refused(
  type: number,
  status: number,
  rule: BlkErrorCode,
  message: string,
): BlkRequestError {
  return new BlkRequestError(type, status, message, BlkErrorCode.INVALID_REQUEST, rule);
}

/**
 * Called when a request completes: `status` is the device's status byte (§5.2.6; 0 = OK),
 * or -1 when the driver could not post the request; `bytes` is the data the device wrote.
 */
export type BlkCallback = (status: number, bytes: number) => void;

/** Bytes of a buffer list. */
function totalLength(buffers: readonly GuestBuffer[]): number {
  let n = 0;
  for (const b of buffers) n += b.len;
  return n;
}

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
  VIRTIO_F_RING_PACKED, // §2.8: packed rings when the device offers them
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
  /** Counters (`refused`: requests the driver rejected before they reached a ring). */
  readonly stats = {
    submitted: 0,
    completed: 0,
    interrupts: 0,
    kicks: 0,
    backlogged: 0,
    refused: 0,
  };

  // The request slots (header and status per slot) as views of guest memory, taken again
  // when a growing `WebAssembly.Memory` detached them (see {@link slots}).
  private slotBytes: Uint8Array = new Uint8Array(0);
  private slotView: DataView = new DataView(new ArrayBuffer(0));
  private readonly slotsLength: number;
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
    private readonly queues: DriverVirtqueue<Token>[],
    features: bigint,
    info: BlkDiskInfo,
    private readonly slotsAddr: number,
    slotCount: number,
  ) {
    this.features = features;
    this.info = info;
    this.slotsLength = slotCount * SLOT_BYTES;
    this.takeSlots();
    this.dirty = new Uint8Array(queues.length);
    for (let i = slotCount - 1; i >= 0; i--) this.freeSlots.push(i);
    for (let i = 0; i < slotCount; i++) {
      const hdr = slotsAddr + i * SLOT_BYTES;
      this.headerBufs.push({ addr: hdr, len: VIRTIO_BLK_HEADER_SIZE });
      this.statusBufs.push({ addr: hdr + VIRTIO_BLK_HEADER_SIZE, len: 1 });
    }
  }

  /**
   * Probes and initialises a virtio-blk device (§3.1.1, §5.2.5).
   *
   * @returns the driver, or why it could not bind (`ALREADY_BOUND` when another driver
   *   drives the device and it was not reset since)
   * @throws TypeError when `transport` is not a driver-side transport (e.g. the
   *   device-side `VirtioMmioTransport`, or a `DriverError` from `probe`) or `options`
   *   lacks `memory` / `allocator`
   */
  static create(
    transport: VirtioDriverTransport,
    options: VirtioBlkDriverOptions,
  ): VirtioBlkDriver | DriverError {
    checkDriverArguments("VirtioBlkDriver.create", transport, options);
    if (transport.deviceId !== VirtioDeviceId.BLOCK) {
      return new DriverError(
        VirtioErrorCode.WRONG_DEVICE,
        `device id ${transport.deviceId} is not virtio-blk (2)`,
      );
    }
    const busy = checkVirtioUnbound(transport);
    if (busy !== undefined) return busy;
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
    const taken = bindVirtioDriver(transport, "VirtioBlkDriver");
    if (taken !== undefined) {
      options.allocator.free(slots);
      return taken;
    }
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

  /**
   * Reads `length` bytes (a multiple of 512) at `sector` into a new array.
   *
   * @returns the bytes; rejects with a {@link BlkRequestError}: INVALID_REQUEST (nothing
   *   was posted) when `sector` is not a non-negative integer below 2^53, `length` is not
   *   a positive multiple of 512 (§5.2.6) or the range passes the capacity (§5.2.6.1);
   *   DEVICE_ERROR when the device answers IOERR/UNSUPP
   */
  async read(sector: number, length: number): Promise<Uint8Array> {
    const bad = this.checkTransfer(VirtioBlkType.IN, sector, length);
    if (bad !== undefined) throw bad;
    const dst = new Uint8Array(length);
    const bounce = this.bounce(length);
    await this.submit(VirtioBlkType.IN, sector, [], [{ addr: bounce, len: length }], dst, bounce);
    return dst;
  }

  /**
   * Writes `data` (a multiple of 512 bytes) at `sector`; resolves once the device
   * acknowledged it. Rejects like {@link read}, and with INVALID_REQUEST (rule
   * READ_ONLY) on a disk that offered VIRTIO_BLK_F_RO.
   */
  async write(sector: number, data: Uint8Array): Promise<void> {
    if (!(data instanceof Uint8Array))
      throw new TypeError(
        `VirtioBlkDriver.write: data must be a Uint8Array, got ${describeValue(data)}`,
      );
    const bad = this.checkTransfer(VirtioBlkType.OUT, sector, data.length);
    if (bad !== undefined) throw bad;
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

  /** Reads into guest buffers (zero-copy); checked like {@link read}. @returns bytes read */
  readGuest(sector: number, buffers: readonly GuestBuffer[]): Promise<number> {
    const bad = this.checkTransfer(VirtioBlkType.IN, sector, totalLength(buffers));
    if (bad !== undefined) return Promise.reject(bad);
    return this.submit(VirtioBlkType.IN, sector, [], [...buffers], null, -1);
  }

  /** Writes guest buffers (zero-copy); checked like {@link write}. */
  async writeGuest(sector: number, buffers: readonly GuestBuffer[]): Promise<void> {
    const bad = this.checkTransfer(VirtioBlkType.OUT, sector, totalLength(buffers));
    if (bad !== undefined) throw bad;
    await this.submit(VirtioBlkType.OUT, sector, [...buffers], [], null, -1);
  }

  /**
   * FLUSH: resolves when every write acknowledged before it is durable. Rejects with
   * INVALID_REQUEST (rule UNSUPPORTED) when VIRTIO_BLK_F_FLUSH was not negotiated.
   */
  async flush(): Promise<void> {
    const bad = this.checkType(VirtioBlkType.FLUSH, 0);
    if (bad !== undefined) throw bad;
    await this.submit(VirtioBlkType.FLUSH, 0, [], [], null, -1);
  }

  /**
   * DISCARD the ranges. Rejects with INVALID_REQUEST when DISCARD was not negotiated,
   * or the ranges break the limits the device reported (`max_discard_seg`,
   * `max_discard_sectors`, capacity; §5.2.4).
   */
  async discard(ranges: readonly BlkRange[]): Promise<void> {
    const bad = this.checkRanges(VirtioBlkType.DISCARD, ranges);
    if (bad !== undefined) throw bad;
    await this.segments(VirtioBlkType.DISCARD, ranges, false);
  }

  /**
   * WRITE_ZEROES over the ranges; `unmap` lets the device deallocate them. Checked like
   * {@link discard} against the write-zeroes limits.
   */
  async writeZeroes(ranges: readonly BlkRange[], unmap = false): Promise<void> {
    const bad = this.checkRanges(VirtioBlkType.WRITE_ZEROES, ranges);
    if (bad !== undefined) throw bad;
    await this.segments(VirtioBlkType.WRITE_ZEROES, ranges, unmap);
  }

  // ── Driver-side checks (§5.2.6): an honest caller learns what is wrong before anything
  // reaches a ring. The device still checks everything itself (a guest may be hostile).

  /** Counts a refusal and returns it. */
  private refuse(err: BlkRequestError): BlkRequestError {
    this.stats.refused++;
    return err;
  }

  /** Checks an IN/OUT transfer of `length` bytes at `sector`. */
  private checkTransfer(type: number, sector: number, length: number): BlkRequestError | undefined {
    const what = describeRequest(type, sector, length);
    const IOERR = VirtioBlkStatus.IOERR;
    if (!Number.isSafeInteger(sector) || sector < 0) {
      return this.refuse(
        refused(
          type,
          IOERR,
          BlkErrorCode.OUT_OF_RANGE,
          `${what}: sector must be a non-negative integer below ${SECTOR_LIMIT} (§5.2.6)`,
        ),
      );
    }
    if (!Number.isSafeInteger(length) || length <= 0 || length % VIRTIO_BLK_SECTOR_SIZE !== 0) {
      return this.refuse(
        refused(
          type,
          IOERR,
          BlkErrorCode.UNALIGNED_LENGTH,
          `${what}: length must be a positive multiple of ${VIRTIO_BLK_SECTOR_SIZE} (§5.2.6)`,
        ),
      );
    }
    const end = sector + length / VIRTIO_BLK_SECTOR_SIZE;
    const capacity = this.info.capacity;
    if (end > capacity) {
      return this.refuse(
        refused(
          type,
          IOERR,
          BlkErrorCode.OUT_OF_RANGE,
          `${what}: request must lie within the capacity of ${capacity} sectors the device reported (§5.2.4, §5.2.6.1), but covers sectors ${sector} to ${end - 1}`,
        ),
      );
    }
    return this.checkType(type, sector, length);
  }

  /** Checks that the device takes requests of `type` at all (features, read-only). */
  private checkType(type: number, sector: number, bytes = 0): BlkRequestError | undefined {
    const f = this.features;
    let feature: string | null = null;
    if (type === VirtioBlkType.FLUSH && !hasFeature(f, VIRTIO_BLK_F_FLUSH))
      feature = "VIRTIO_BLK_F_FLUSH";
    else if (type === VirtioBlkType.DISCARD && !hasFeature(f, VIRTIO_BLK_F_DISCARD))
      feature = "VIRTIO_BLK_F_DISCARD";
    else if (type === VirtioBlkType.WRITE_ZEROES && !hasFeature(f, VIRTIO_BLK_F_WRITE_ZEROES))
      feature = "VIRTIO_BLK_F_WRITE_ZEROES";
    const what = describeRequest(type, sector, bytes);
    if (feature !== null) {
      return this.refuse(
        refused(
          type,
          VirtioBlkStatus.UNSUPP,
          BlkErrorCode.UNSUPPORTED,
          `${what}: needs ${feature}, which was not negotiated (§5.2.3); the device would answer VIRTIO_BLK_S_UNSUPP`,
        ),
      );
    }
    const writes =
      type === VirtioBlkType.OUT ||
      type === VirtioBlkType.DISCARD ||
      type === VirtioBlkType.WRITE_ZEROES;
    if (writes && this.info.readOnly) {
      return this.refuse(
        refused(
          type,
          VirtioBlkStatus.IOERR,
          BlkErrorCode.READ_ONLY,
          `${what}: the device is read-only (VIRTIO_BLK_F_RO, §5.2.3) and answers writes with VIRTIO_BLK_S_IOERR (§5.2.6.2)`,
        ),
      );
    }
    return undefined;
  }

  /** Checks DISCARD / WRITE_ZEROES ranges against the limits the device reported (§5.2.4). */
  private checkRanges(type: number, ranges: readonly BlkRange[]): BlkRequestError | undefined {
    if (!Array.isArray(ranges))
      throw new TypeError(
        `VirtioBlkDriver: ranges must be an array of { sector, sectors }, got ${describeValue(ranges)}`,
      );
    const bad = this.checkType(type, 0, ranges.length * VIRTIO_BLK_SEGMENT_SIZE);
    if (bad !== undefined) return bad;
    const what = describeRequest(type, 0, ranges.length * VIRTIO_BLK_SEGMENT_SIZE);
    const discard = type === VirtioBlkType.DISCARD;
    const maxSeg = discard ? this.info.maxDiscardSeg : this.info.maxWriteZeroesSeg;
    const maxSectors = discard ? this.info.maxDiscardSectors : this.info.maxWriteZeroesSectors;
    const field = discard ? "max_discard" : "max_write_zeroes";
    const IOERR = VirtioBlkStatus.IOERR;
    if (ranges.length === 0) {
      return this.refuse(
        refused(
          type,
          IOERR,
          BlkErrorCode.BAD_SEGMENT_LAYOUT,
          `${what}: at least one range is needed (§5.2.6)`,
        ),
      );
    }
    if (ranges.length > maxSeg) {
      return this.refuse(
        refused(
          type,
          IOERR,
          BlkErrorCode.TOO_MANY_SEGMENTS,
          `${what}: at most ${maxSeg} ranges per request (${field}_seg, §5.2.4)`,
        ),
      );
    }
    const capacity = this.info.capacity;
    for (let i = 0; i < ranges.length; i++) {
      const r = ranges[i]!;
      const sector: unknown = r?.sector;
      const sectors: unknown = r?.sectors;
      if (!Number.isSafeInteger(sector) || (sector as number) < 0) {
        return this.refuse(
          refused(
            type,
            IOERR,
            BlkErrorCode.OUT_OF_RANGE,
            `${what}: range ${i} sector must be a non-negative integer below ${SECTOR_LIMIT} (§5.2.6), got ${describeValue(sector)}`,
          ),
        );
      }
      if (
        !Number.isSafeInteger(sectors) ||
        (sectors as number) <= 0 ||
        (sectors as number) > maxSectors
      ) {
        return this.refuse(
          refused(
            type,
            IOERR,
            BlkErrorCode.SEGMENT_TOO_LARGE,
            `${what}: range ${i} must cover 1 to ${maxSectors} sectors (${field}_sectors, §5.2.4), got ${describeValue(sectors)}`,
          ),
        );
      }
      const end = (sector as number) + (sectors as number);
      if (end > capacity) {
        return this.refuse(
          refused(
            type,
            IOERR,
            BlkErrorCode.OUT_OF_RANGE,
            `${what}: range ${i} must lie within the capacity of ${capacity} sectors the device reported (§5.2.4, §5.2.6.1), but covers sectors ${String(sector)} to ${end - 1}`,
          ),
        );
      }
    }
    return undefined;
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
        else {
          const what = describeRequest(
            type,
            sector,
            totalLength(type === VirtioBlkType.OUT || inBufs.length === 0 ? out : inBufs),
          );
          reject(
            new BlkRequestError(
              type,
              status,
              status < 0
                ? `${what}: not posted (the queue is broken; reset the device)`
                : `${what}: the device answered ${blkStatusName(status)}`,
            ),
          );
        }
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
   * @returns `undefined` when the request was queued; a {@link BlkRequestError}
   *   (INVALID_REQUEST) when the driver refused it — then nothing was posted and `done`
   *   is never called. IN/OUT are checked like {@link read}/{@link write} (plus the data
   *   direction, §5.2.6.1), FLUSH/DISCARD/WRITE_ZEROES against the negotiated features;
   *   discard segments in guest memory are left to the device.
   */
  enqueue(
    type: number,
    sector: number,
    out: GuestBuffer[],
    inBufs: GuestBuffer[],
    done: BlkCallback,
  ): BlkRequestError | undefined {
    const bad = this.checkEnqueue(type, sector, out, inBufs);
    if (bad !== undefined) return bad;
    this.post(type, sector, out, inBufs, null, -1, done);
    return undefined;
  }

  private checkEnqueue(
    type: number,
    sector: number,
    out: readonly GuestBuffer[],
    inBufs: readonly GuestBuffer[],
  ): BlkRequestError | undefined {
    if (type !== VirtioBlkType.IN && type !== VirtioBlkType.OUT)
      return this.checkType(type, sector, totalLength(out));
    const read = type === VirtioBlkType.IN;
    const wrong = read ? out : inBufs;
    if (wrong.length > 0) {
      const what = describeRequest(type, sector, totalLength(read ? inBufs : out));
      return this.refuse(
        refused(
          type,
          VirtioBlkStatus.IOERR,
          BlkErrorCode.DATA_DIRECTION,
          `${what}: its data must be device-${read ? "writable (inBufs)" : "readable (out)"}, but ${wrong.length} buffer${wrong.length === 1 ? " is" : "s are"} device-${read ? "readable" : "writable"} (§5.2.6.1)`,
        ),
      );
    }
    return this.checkTransfer(type, sector, totalLength(read ? inBufs : out));
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
    const v = this.slots();
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

  /** The request slots' view, current after a `WebAssembly.Memory` grew and detached it. */
  private slots(): DataView {
    if (this.slotBytes.length === 0) this.takeSlots();
    return this.slotView;
  }

  private takeSlots(): void {
    const area = this.memory.slice(this.slotsAddr, this.slotsLength);
    if (!(area instanceof Uint8Array)) throw new Error(area.message);
    this.slotBytes = area;
    this.slotView = new DataView(area.buffer, area.byteOffset, area.byteLength);
  }

  private complete(t: Token, len: number): void {
    const status = this.slots().getUint8(t.slot * SLOT_BYTES + VIRTIO_BLK_HEADER_SIZE);
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
