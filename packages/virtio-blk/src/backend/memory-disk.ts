/**
 * `MemoryDisk`: a disk held in memory. Every operation completes synchronously; "durable"
 * means "in the buffer" (it lives as long as the process).
 *
 * @module
 */

import { describeValue, expectOptions } from "@pvkit/platform";
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
  /** Reads and writes finish before they return: the device may pass guest-memory views. */
  readonly synchronous = true;

  /**
   * @param sizeOrBytes - size in bytes (a multiple of 512), or the bytes to use
   * @param options - read-only
   * @throws TypeError when `sizeOrBytes` is neither a number nor a `Uint8Array`, or
   *   `options` is not an object; RangeError when the size is not a non-negative
   *   multiple of 512 (§5.2.4: capacity is counted in 512-byte sectors)
   */
  constructor(sizeOrBytes: number | Uint8Array, options: MemoryDiskOptions = {}) {
    if (typeof sizeOrBytes !== "number" && !(sizeOrBytes instanceof Uint8Array)) {
      throw new TypeError(
        `new MemoryDisk expects a size in bytes (a multiple of 512) or a Uint8Array, got ${describeValue(sizeOrBytes)}`,
      );
    }
    expectOptions("new MemoryDisk", options, "{ readOnly? }");
    const size = typeof sizeOrBytes === "number" ? sizeOrBytes : sizeOrBytes.length;
    if (!Number.isSafeInteger(size) || size < 0 || size % 512 !== 0)
      throw new RangeError(
        `new MemoryDisk: a disk's size must be a non-negative multiple of 512 bytes (§5.2.4: capacity is in 512-byte sectors), got ${size}`,
      );
    this.bytes = typeof sizeOrBytes === "number" ? new Uint8Array(sizeOrBytes) : sizeOrBytes;
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
