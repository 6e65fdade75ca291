/**
 * `@pvkit/virtio-blk`: the virtio block device, its guest driver and disk back-ends.
 * `FileDisk` (Node-only) is exported from `@pvkit/virtio-blk/node`.
 *
 * @packageDocumentation
 * @module @pvkit/virtio-blk
 */

export {
  type BlockBackend,
  type BlockErrno,
  type BlockResult,
  errnoOf,
  iovLength,
  iovSlice,
  isBlockBackend,
  type MaybePromise,
} from "./backend/backend.js";
export {
  HttpDisk,
  HttpDiskError,
  HttpDiskErrorCode,
  type HttpDiskOptions,
  type HttpDiskStats,
  type HttpFetch,
} from "./backend/http-disk.js";
export { MemoryDisk, type MemoryDiskOptions } from "./backend/memory-disk.js";
export {
  ClusterState,
  OverlayDisk,
  type OverlayDiskOptions,
  type OverlayMapStore,
} from "./backend/overlay-disk.js";
export {
  encodeQcow2Header,
  parseQcow2Header,
  QCOW2_MAGIC,
  QCOW2_MAX_CLUSTER_BITS,
  QCOW2_MAX_L1_BYTES,
  QCOW2_MAX_REFTABLE_BYTES,
  QCOW2_MIN_CLUSTER_BITS,
  Qcow2Compatible,
  Qcow2EntryFlag,
  Qcow2FormatError,
  type Qcow2Header,
  Qcow2HeaderField,
  type Qcow2HeaderInit,
  Qcow2Incompatible,
} from "./backend/qcow2/format.js";
export {
  formatQcow2,
  type ImageFile,
  type InflateRaw,
  MemoryImageFile,
  type OpenBacking,
  QCOW2_MAX_BACKING_DEPTH,
  Qcow2Disk,
  type Qcow2FormatOptions,
  type Qcow2OpenOptions,
  type Qcow2Stats,
} from "./backend/qcow2/qcow2-disk.js";
export {
  type BlkTopology,
  VirtioBlkDevice,
  type VirtioBlkEvents,
  type VirtioBlkOptions,
  type VirtioBlkStats,
} from "./device/blk-device.js";
export {
  type BlkCorrupt,
  BlkErrorCode,
  type BlkLimits,
  type BlkParseResult,
  type BlkRejected,
  type BlkRequest,
  type BlkSegment,
  parseBlkRequest,
} from "./device/request.js";
export {
  type BlkCallback,
  type BlkDiskInfo,
  type BlkRange,
  BlkRequestError,
  VirtioBlkDriver,
  type VirtioBlkDriverOptions,
} from "./driver/blk-driver.js";
export * from "./spec.js";
