/**
 * `@pvkit/virtio-blk/node`: back-ends that need Node.js (`node:fs`).
 *
 * @packageDocumentation
 * @module @pvkit/virtio-blk/node
 */

export { FileDisk, type FileDiskOptions } from "./backend/file-disk.js";
export {
  OverlayMapError,
  OverlayMapErrorCode,
  openPersistentOverlay,
  type PersistentOverlayOptions,
} from "./backend/persistent-overlay.js";
export {
  createQcow2,
  inflateRawZlib,
  openQcow2,
  type Qcow2FileOptions,
} from "./backend/qcow2/node.js";
