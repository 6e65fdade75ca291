/**
 * `@pvkit/virtio-blk/node`: back-ends that need Node.js (`node:fs`).
 *
 * @packageDocumentation
 */

export { FileDisk, type FileDiskOptions } from "./backend/file-disk.js";
