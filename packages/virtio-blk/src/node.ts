/**
 * `@pvkit/virtio-blk/node`: back-ends that need Node.js (`node:fs`).
 *
 * @packageDocumentation
 * @module @pvkit/virtio-blk/node
 */

export { FileDisk, type FileDiskOptions } from "./backend/file-disk.js";
