/**
 * Numbers of the virtio block device, from the virtio 1.2 specification §5.2
 * ("Block Device"). Names keep the spec's spelling.
 *
 * @module
 */

/** §5.2.3: maximum size of any single segment is in `size_max`. */
export const VIRTIO_BLK_F_SIZE_MAX = 1;
/** §5.2.3: maximum number of segments in a request is in `seg_max`. */
export const VIRTIO_BLK_F_SEG_MAX = 2;
/** §5.2.3: disk-style geometry is in `geometry`. */
export const VIRTIO_BLK_F_GEOMETRY = 4;
/** §5.2.3: the device is read-only. */
export const VIRTIO_BLK_F_RO = 5;
/** §5.2.3: the block size of the disk is in `blk_size`. */
export const VIRTIO_BLK_F_BLK_SIZE = 6;
/** §5.2.3: cache flush command support. */
export const VIRTIO_BLK_F_FLUSH = 9;
/** §5.2.3: the device exports information on optimal I/O alignment. */
export const VIRTIO_BLK_F_TOPOLOGY = 10;
/** §5.2.3: the device can toggle its cache between writeback and writethrough. */
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
/** §5.2.3: the device supports more than one virtqueue. */
export const VIRTIO_BLK_F_MQ = 12;
/** §5.2.3: the device can support discard commands. */
export const VIRTIO_BLK_F_DISCARD = 13;
/** §5.2.3: the device can support write zeroes commands. */
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

/** §5.2.6: request types. */
export const VirtioBlkType = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  GET_ID: 8,
  GET_LIFETIME: 10,
  DISCARD: 11,
  WRITE_ZEROES: 13,
  SECURE_ERASE: 14,
} as const;

const TYPE_NAMES: Readonly<Record<number, string>> = {
  [VirtioBlkType.IN]: "VIRTIO_BLK_T_IN (read)",
  [VirtioBlkType.OUT]: "VIRTIO_BLK_T_OUT (write)",
  [VirtioBlkType.FLUSH]: "VIRTIO_BLK_T_FLUSH",
  [VirtioBlkType.GET_ID]: "VIRTIO_BLK_T_GET_ID",
  [VirtioBlkType.GET_LIFETIME]: "VIRTIO_BLK_T_GET_LIFETIME",
  [VirtioBlkType.DISCARD]: "VIRTIO_BLK_T_DISCARD",
  [VirtioBlkType.WRITE_ZEROES]: "VIRTIO_BLK_T_WRITE_ZEROES",
  [VirtioBlkType.SECURE_ERASE]: "VIRTIO_BLK_T_SECURE_ERASE",
};

/**
 * §5.2.6: the spec's name of a request type, for messages: `"VIRTIO_BLK_T_IN (read)"`,
 * `"VIRTIO_BLK_T_OUT (write)"`, `"VIRTIO_BLK_T_FLUSH"`, …
 *
 * @param type - the request type
 * @returns its name, or `"request type <n>"` for a type §5.2.6 does not define
 */
export function blkTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `request type ${type}`;
}

/** §5.2.6: the status byte a request completes with. */
export const VirtioBlkStatus = {
  OK: 0,
  IOERR: 1,
  UNSUPP: 2,
} as const;

/** One of the {@link VirtioBlkStatus} values. */
export type VirtioBlkStatus = (typeof VirtioBlkStatus)[keyof typeof VirtioBlkStatus];

/**
 * §5.2.6: the spec's name of a status byte, for messages.
 *
 * @param status - the status byte
 * @returns `"VIRTIO_BLK_S_OK"`, `"VIRTIO_BLK_S_IOERR"`, `"VIRTIO_BLK_S_UNSUPP"`, or
 *   `"status <n>"`
 */
export function blkStatusName(status: number): string {
  if (status === VirtioBlkStatus.OK) return "VIRTIO_BLK_S_OK";
  if (status === VirtioBlkStatus.IOERR) return "VIRTIO_BLK_S_IOERR";
  if (status === VirtioBlkStatus.UNSUPP) return "VIRTIO_BLK_S_UNSUPP";
  return `status ${status}`;
}

/** §5.2.6: the sector unit is always 512 bytes, whatever `blk_size` says. */
export const VIRTIO_BLK_SECTOR_SIZE = 512;
/** §5.2.6: `log2` of the sector size. */
export const VIRTIO_BLK_SECTOR_SHIFT = 9;
/** §5.2.6: bytes of the request header (`le32 type; le32 reserved; le64 sector`). */
export const VIRTIO_BLK_HEADER_SIZE = 16;
/** §5.2.6: bytes of the GET_ID string (NUL-padded, not NUL-terminated when 20 long). */
export const VIRTIO_BLK_ID_BYTES = 20;
/** §5.2.6: bytes of one discard / write-zeroes segment (`le64 sector; le32 num_sectors; le32 flags`). */
export const VIRTIO_BLK_SEGMENT_SIZE = 16;
/** §5.2.6: segment flag: the device may deallocate (unmap) the range. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

/** §5.2.4: offsets in `struct virtio_blk_config`. */
export const VirtioBlkConfig = {
  CAPACITY: 0,
  SIZE_MAX: 8,
  SEG_MAX: 12,
  GEOMETRY_CYLINDERS: 16,
  GEOMETRY_HEADS: 18,
  GEOMETRY_SECTORS: 19,
  BLK_SIZE: 20,
  PHYSICAL_BLOCK_EXP: 24,
  ALIGNMENT_OFFSET: 25,
  MIN_IO_SIZE: 26,
  OPT_IO_SIZE: 28,
  WRITEBACK: 32,
  NUM_QUEUES: 34,
  MAX_DISCARD_SECTORS: 36,
  MAX_DISCARD_SEG: 40,
  DISCARD_SECTOR_ALIGNMENT: 44,
  MAX_WRITE_ZEROES_SECTORS: 48,
  MAX_WRITE_ZEROES_SEG: 52,
  WRITE_ZEROES_MAY_UNMAP: 56,
  MAX_SECURE_ERASE_SECTORS: 60,
  MAX_SECURE_ERASE_SEG: 64,
  SECURE_ERASE_SECTOR_ALIGNMENT: 68,
  /** Total size of the structure. */
  SIZE: 72,
} as const;
