/**
 * `MemoryDisk`: a disk held in memory. Every operation completes synchronously; "durable"
 * means "in the buffer" (it lives as long as the process).
 *
 * @module
 */

import type { BlockBackend, BlockResult } from "./backend.js";

/** Options of {@link MemoryDisk}. */
export interface MemoryDiskOptions {
  /** Refuse writes. */
  readonly readOnly?: boolean;
}

/** A disk in a `Uint8Array` (fresh and zeroed, or the caller's bytes). */
export class MemoryDisk implements BlockBackend {
  /** The disk's bytes (zero-copy: tests and tools may inspect or prefill them). */
  readonly bytes: Uint8Array;
  readonly readOnly: boolean;

  /**
   * @param sizeOrBytes - size in bytes (a multiple of 512), or the bytes to use
   * @param options - read-only
   */
  constructor(sizeOrBytes: number | Uint8Array, options: MemoryDiskOptions = {}) {
    this.bytes = typeof sizeOrBytes === "number" ? new Uint8Array(sizeOrBytes) : sizeOrBytes;
    if (this.bytes.length % 512 !== 0)
      throw new Error("a disk's size must be a multiple of 512 bytes");
    this.readOnly = options.readOnly ?? false;
  }

  get byteLength(): number {
    return this.bytes.length;
  }

  readv(offset: number, buffers: readonly Uint8Array[]): BlockResult {
    let pos = offset;
    for (const b of buffers) {
      b.set(this.bytes.subarray(pos, pos + b.length));
      pos += b.length;
    }
    return undefined;
  }

  writev(offset: number, buffers: readonly Uint8Array[]): BlockResult {
    if (this.readOnly) return "EROFS";
    let pos = offset;
    for (const b of buffers) {
      this.bytes.set(b, pos);
      pos += b.length;
    }
    return undefined;
  }

  flush(): BlockResult {
    return undefined;
  }

  discard(offset: number, length: number): BlockResult {
    return this.writeZeroes(offset, length);
  }

  writeZeroes(offset: number, length: number): BlockResult {
    if (this.readOnly) return "EROFS";
    this.bytes.fill(0, offset, offset + length);
    return undefined;
  }

  close(): void {}
}
