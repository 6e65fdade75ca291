/**
 * `parseBlkRequest`: the pure parser of one virtio-blk request (§5.2.6). It never
 * touches the disk and never throws: it returns what to do, or which status to complete
 * the request with, or that the chain cannot even carry a status byte (queue corruption).
 *
 * The layout is read as byte streams, not descriptor by descriptor (§2.6.4, message
 * framing): the device-readable stream is the 16-byte header followed by any data going
 * to the disk; the device-writable stream is any data coming from the disk followed by
 * the status byte, which is its last byte.
 *
 * @module
 */

import type { DescriptorChain } from "@pvkit/virtio-core";
import {
  VIRTIO_BLK_HEADER_SIZE,
  VIRTIO_BLK_SECTOR_SHIFT,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_SEGMENT_SIZE,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VirtioBlkStatus,
  VirtioBlkType,
} from "../spec.js";

/** Why a request was refused. Each names the rule of §5.2.6 it breaks. */
export const BlkErrorCode = {
  /** The chain has no device-writable byte for the status: queue corruption (§5.2.6.1). */
  NO_STATUS_BYTE: "NO_STATUS_BYTE",
  /** Fewer than 16 device-readable bytes: the header is missing or writable (§5.2.6). */
  SHORT_HEADER: "SHORT_HEADER",
  /** Data in the wrong direction for the request type (§5.2.6.1). */
  DATA_DIRECTION: "DATA_DIRECTION",
  /** A data length that is not a multiple of 512 (§5.2.6.1). */
  UNALIGNED_LENGTH: "UNALIGNED_LENGTH",
  /** Sector + length beyond the capacity, or overflowing (§5.2.6.2). */
  OUT_OF_RANGE: "OUT_OF_RANGE",
  /** A write, discard or write-zeroes on a read-only disk (§5.2.6.2: IOERR). */
  READ_ONLY: "READ_ONLY",
  /** A type the device does not support or did not offer (§5.2.6.2: UNSUPP). */
  UNSUPPORTED: "UNSUPPORTED",
  /** More discard / write-zeroes segments than max_*_seg (§5.2.6.2). */
  TOO_MANY_SEGMENTS: "TOO_MANY_SEGMENTS",
  /** A segment larger than max_*_sectors (§5.2.6.2). */
  SEGMENT_TOO_LARGE: "SEGMENT_TOO_LARGE",
  /** Reserved segment flag bits, or UNMAP on a discard (§5.2.6.2: UNSUPP). */
  BAD_SEGMENT_FLAGS: "BAD_SEGMENT_FLAGS",
  /** Segment data that is empty or not a multiple of 16 bytes (§5.2.6.1). */
  BAD_SEGMENT_LAYOUT: "BAD_SEGMENT_LAYOUT",
  /** The back-end failed with EIO. */
  BACKEND_EIO: "BACKEND_EIO",
  /** The back-end ran out of space (ENOSPC). */
  BACKEND_ENOSPC: "BACKEND_ENOSPC",
  /** The back-end refused a write (EROFS). */
  BACKEND_EROFS: "BACKEND_EROFS",
  // ── driver side (`BlkRequestError.code` of `VirtioBlkDriver`) ──
  /**
   * The driver refused the request before putting it on a ring: it breaks a rule of
   * §5.2.6 (`BlkRequestError.rule` says which, the message names it). The device would
   * have refused it too; the driver says why.
   */
  INVALID_REQUEST: "INVALID_REQUEST",
  /** The device completed the request with IOERR or UNSUPP (`BlkRequestError.status`). */
  DEVICE_ERROR: "DEVICE_ERROR",
  /** The driver could not post the request: no guest memory, or the queue is broken. */
  NOT_POSTED: "NOT_POSTED",
} as const;

/** One of the {@link BlkErrorCode} values. */
export type BlkErrorCode = (typeof BlkErrorCode)[keyof typeof BlkErrorCode];

/** What the parser needs to know about the disk and the negotiated features. */
export interface BlkLimits {
  /** Capacity in 512-byte sectors. */
  readonly capacity: number;
  /** The disk is read-only (VIRTIO_BLK_F_RO offered). */
  readonly readOnly: boolean;
  /** FLUSH accepted (VIRTIO_BLK_F_FLUSH negotiated). */
  readonly flush: boolean;
  /** GET_ID accepted (always, in pvkit; the id may be empty). */
  readonly getId: boolean;
  /** DISCARD accepted (negotiated), with its limits. */
  readonly discard: boolean;
  readonly maxDiscardSectors: number;
  readonly maxDiscardSeg: number;
  /** WRITE_ZEROES accepted (negotiated), with its limits. */
  readonly writeZeroes: boolean;
  readonly maxWriteZeroesSectors: number;
  readonly maxWriteZeroesSeg: number;
  /** The device offered `write_zeroes_may_unmap`. */
  readonly writeZeroesMayUnmap: boolean;
}

/** A discard / write-zeroes range. */
export interface BlkSegment {
  /** First sector. */
  readonly sector: number;
  /** Number of sectors. */
  readonly sectors: number;
  /** The driver allows deallocation (write-zeroes only). */
  readonly unmap: boolean;
}

/** A request that can go to the back-end. */
export interface BlkRequest {
  readonly ok: true;
  /** The request type (§5.2.6). */
  readonly type: number;
  /** First sector (IN/OUT). */
  readonly sector: number;
  /** Bytes of data: readable for OUT, writable for IN and GET_ID. */
  readonly dataLength: number;
  /** Discard / write-zeroes ranges, else empty. */
  readonly segments: readonly BlkSegment[];
  /** Position of the status byte in the writable stream. */
  readonly statusOffset: number;
}

/** A request to complete at once with an error status. */
export interface BlkRejected {
  readonly ok: false;
  /** False: the chain carries a status byte; the queue goes on. */
  readonly fatal: false;
  /** The request type as the guest wrote it (-1 when the header was unreadable). */
  readonly type: number;
  /** IOERR or UNSUPP. */
  readonly status: VirtioBlkStatus;
  /** Why. */
  readonly code: BlkErrorCode;
  /** What the guest did. */
  readonly message: string;
  /** Position of the status byte in the writable stream. */
  readonly statusOffset: number;
}

/** A chain that cannot carry a status byte: queue corruption, the device needs a reset. */
export interface BlkCorrupt {
  readonly ok: false;
  readonly fatal: true;
  readonly code: typeof BlkErrorCode.NO_STATUS_BYTE;
  readonly message: string;
}

/** What {@link parseBlkRequest} returns. */
export type BlkParseResult = BlkRequest | BlkRejected | BlkCorrupt;

const NO_SEGMENTS: readonly BlkSegment[] = Object.freeze([]);

/**
 * Parses and validates one request chain (§5.2.6) against the disk's limits.
 * Pure: reads the chain's readable bytes only; the guest memory the chain refers to is
 * already range-checked by the queue.
 *
 * @param chain - a validated descriptor chain from a request queue
 * @param limits - capacity, read-only flag and negotiated capabilities
 * @returns the request, a rejection with its status, or corruption
 */
export function parseBlkRequest(chain: DescriptorChain, limits: BlkLimits): BlkParseResult {
  const writable = chain.writableLength;
  if (writable < 1) {
    return {
      ok: false,
      fatal: true,
      code: BlkErrorCode.NO_STATUS_BYTE,
      message: `request ${chain.head} has no device-writable byte for its status (§5.2.6)`,
    };
  }
  const statusOffset = writable - 1;
  const inData = writable - 1; // writable bytes before the status byte
  const readable = chain.readableLength;

  if (readable < VIRTIO_BLK_HEADER_SIZE) {
    return reject(
      statusOffset,
      -1,
      VirtioBlkStatus.IOERR,
      BlkErrorCode.SHORT_HEADER,
      `only ${readable} device-readable bytes; the 16-byte header must be device-readable`,
    );
  }
  const r = chain.reader;
  let type: number;
  let lo: number;
  let hi: number;
  if (chain.bufferLength(0) >= VIRTIO_BLK_HEADER_SIZE) {
    // The usual layout: the whole header in the first descriptor. Read it in place.
    const v = chain.bufferView(0);
    const at = chain.bufferOffset(0);
    type = v.getUint32(at, true);
    lo = v.getUint32(at + 8, true);
    hi = v.getUint32(at + 12, true);
    r.position = VIRTIO_BLK_HEADER_SIZE;
  } else {
    // A header split over descriptors (§2.6.4: no framing may be assumed).
    r.rewind();
    type = r.readU32();
    r.skip(4); // reserved
    lo = r.readU32();
    hi = r.readU32();
  }
  // Sectors at or above 2^53 cannot be in range; keep them exact-or-infinite.
  const sector = hi >= 0x20_0000 ? Number.POSITIVE_INFINITY : hi * 0x1_0000_0000 + lo;
  const outData = readable - VIRTIO_BLK_HEADER_SIZE;

  switch (type) {
    case VirtioBlkType.IN:
    case VirtioBlkType.OUT: {
      const isRead = type === VirtioBlkType.IN;
      // §5.2.6.1: IN data is device-writable, OUT data is device-readable.
      if (isRead ? outData !== 0 : inData !== 0) {
        return reject(
          statusOffset,
          type,
          VirtioBlkStatus.IOERR,
          BlkErrorCode.DATA_DIRECTION,
          `${isRead ? "IN" : "OUT"} request with ${isRead ? outData : inData} bytes of data in the wrong direction`,
        );
      }
      const length = isRead ? inData : outData;
      if (length % VIRTIO_BLK_SECTOR_SIZE !== 0) {
        return reject(
          statusOffset,
          type,
          VirtioBlkStatus.IOERR,
          BlkErrorCode.UNALIGNED_LENGTH,
          `data length ${length} is not a multiple of 512`,
        );
      }
      if (!isRead && limits.readOnly) {
        return reject(
          statusOffset,
          type,
          VirtioBlkStatus.IOERR,
          BlkErrorCode.READ_ONLY,
          "write to a read-only disk",
        );
      }
      const sectors = length >>> VIRTIO_BLK_SECTOR_SHIFT;
      if (!(sector + sectors <= limits.capacity)) {
        return reject(
          statusOffset,
          type,
          VirtioBlkStatus.IOERR,
          BlkErrorCode.OUT_OF_RANGE,
          `sectors [${sector}, +${sectors}) beyond capacity ${limits.capacity}`,
        );
      }
      return { ok: true, type, sector, dataLength: length, segments: NO_SEGMENTS, statusOffset };
    }
    case VirtioBlkType.FLUSH:
      if (!limits.flush)
        return reject(
          statusOffset,
          type,
          VirtioBlkStatus.UNSUPP,
          BlkErrorCode.UNSUPPORTED,
          "FLUSH without VIRTIO_BLK_F_FLUSH",
        );
      if (outData !== 0 || inData !== 0) {
        return reject(
          statusOffset,
          type,
          VirtioBlkStatus.IOERR,
          BlkErrorCode.DATA_DIRECTION,
          "FLUSH carries no data",
        );
      }
      return { ok: true, type, sector: 0, dataLength: 0, segments: NO_SEGMENTS, statusOffset };
    case VirtioBlkType.GET_ID:
      if (!limits.getId)
        return reject(
          statusOffset,
          type,
          VirtioBlkStatus.UNSUPP,
          BlkErrorCode.UNSUPPORTED,
          "GET_ID not supported",
        );
      if (outData !== 0) {
        return reject(
          statusOffset,
          type,
          VirtioBlkStatus.IOERR,
          BlkErrorCode.DATA_DIRECTION,
          "GET_ID data must be device-writable",
        );
      }
      return { ok: true, type, sector: 0, dataLength: inData, segments: NO_SEGMENTS, statusOffset };
    case VirtioBlkType.DISCARD:
    case VirtioBlkType.WRITE_ZEROES:
      return parseSegments(chain, limits, type, outData, inData, statusOffset);
    default:
      return reject(
        statusOffset,
        type,
        VirtioBlkStatus.UNSUPP,
        BlkErrorCode.UNSUPPORTED,
        `request type ${type} is not supported`,
      );
  }
}

function reject(
  statusOffset: number,
  type: number,
  status: VirtioBlkStatus,
  code: BlkErrorCode,
  message: string,
): BlkRejected {
  return { ok: false, fatal: false, type, status, code, message, statusOffset };
}

function parseSegments(
  chain: DescriptorChain,
  limits: BlkLimits,
  type: number,
  outData: number,
  inData: number,
  statusOffset: number,
): BlkParseResult {
  const discard = type === VirtioBlkType.DISCARD;
  const name = discard ? "DISCARD" : "WRITE_ZEROES";
  if (!(discard ? limits.discard : limits.writeZeroes)) {
    return reject(
      statusOffset,
      type,
      VirtioBlkStatus.UNSUPP,
      BlkErrorCode.UNSUPPORTED,
      `${name} was not negotiated`,
    );
  }
  if (inData !== 0 || outData === 0 || outData % VIRTIO_BLK_SEGMENT_SIZE !== 0) {
    return reject(
      statusOffset,
      type,
      VirtioBlkStatus.IOERR,
      BlkErrorCode.BAD_SEGMENT_LAYOUT,
      `${name} with ${outData} readable and ${inData} writable data bytes; segments are 16 device-readable bytes each`,
    );
  }
  if (limits.readOnly)
    return reject(
      statusOffset,
      type,
      VirtioBlkStatus.IOERR,
      BlkErrorCode.READ_ONLY,
      `${name} on a read-only disk`,
    );
  const count = outData / VIRTIO_BLK_SEGMENT_SIZE;
  const maxSeg = discard ? limits.maxDiscardSeg : limits.maxWriteZeroesSeg;
  const maxSectors = discard ? limits.maxDiscardSectors : limits.maxWriteZeroesSectors;
  if (count > maxSeg) {
    return reject(
      statusOffset,
      type,
      VirtioBlkStatus.IOERR,
      BlkErrorCode.TOO_MANY_SEGMENTS,
      `${count} segments, more than the ${maxSeg} allowed`,
    );
  }
  const r = chain.reader; // positioned after the header
  const segments: BlkSegment[] = [];
  for (let i = 0; i < count; i++) {
    const lo = r.readU32();
    const hi = r.readU32();
    const sectors = r.readU32();
    const flags = r.readU32();
    const sector = hi >= 0x20_0000 ? Number.POSITIVE_INFINITY : hi * 0x1_0000_0000 + lo;
    // §5.2.6.2: UNMAP is meaningless for DISCARD and reserved bits must be zero: UNSUPP.
    const allowed = discard ? 0 : VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
    if ((flags & ~allowed) !== 0) {
      return reject(
        statusOffset,
        type,
        VirtioBlkStatus.UNSUPP,
        BlkErrorCode.BAD_SEGMENT_FLAGS,
        `segment ${i} has flags 0x${flags.toString(16)}`,
      );
    }
    if (sectors > maxSectors) {
      return reject(
        statusOffset,
        type,
        VirtioBlkStatus.IOERR,
        BlkErrorCode.SEGMENT_TOO_LARGE,
        `segment ${i} of ${sectors} sectors exceeds ${maxSectors}`,
      );
    }
    if (!(sector + sectors <= limits.capacity)) {
      return reject(
        statusOffset,
        type,
        VirtioBlkStatus.IOERR,
        BlkErrorCode.OUT_OF_RANGE,
        `segment ${i} [${sector}, +${sectors}) beyond capacity ${limits.capacity}`,
      );
    }
    segments.push({
      sector,
      sectors,
      unmap: !discard && (flags & 1) === 1 && limits.writeZeroesMayUnmap,
    });
  }
  return { ok: true, type, sector: 0, dataLength: 0, segments, statusOffset };
}
