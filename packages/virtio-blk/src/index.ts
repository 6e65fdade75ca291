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
export { MemoryDisk, type MemoryDiskOptions } from "./backend/memory-disk.js";
export { ClusterState, OverlayDisk, type OverlayDiskOptions } from "./backend/overlay-disk.js";
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
