/**
 * `BlockBackend`: where a virtio-blk device's bytes go. Small on purpose: positioned
 * scatter/gather reads and writes, flush, discard and write-zeroes. A method may finish
 * synchronously (return the result) or asynchronously (return a promise); the device
 * handles both. Failures are values (`"EIO"`, `"ENOSPC"`, `"EROFS"`), never exceptions.
 *
 * @module
 */

/** How a back-end operation failed. */
export type BlockErrno = "EIO" | "ENOSPC" | "EROFS";

/** `undefined` when the operation succeeded, else how it failed. */
export type BlockResult = BlockErrno | undefined;

/** A result now or later. */
export type MaybePromise<T> = T | Promise<T>;

/**
 * A disk. Offsets and lengths are in bytes and always multiples of 512; the device
 * checks them against {@link byteLength} before calling.
 */
export interface BlockBackend {
  /** Size of the disk in bytes (a multiple of 512). */
  readonly byteLength: number;
  /** Whether writes are refused (the device then offers VIRTIO_BLK_F_RO). */
  readonly readOnly: boolean;
  /**
   * `true` when `readv`/`writev` are done with their buffers before they return (e.g.
   * `MemoryDisk`). The device then hands them views of guest memory (zero-copy). Otherwise
   * (default) the device passes host copies, because a reset may come while the operation
   * is in flight: after it the guest owns that memory again (§2.4), so a late read must
   * not land in it and a late write must not take its data from it.
   */
  readonly synchronous?: boolean;
  /** Reads `sum(buffers.length)` bytes from `offset` into `buffers`, in order. */
  readv(offset: number, buffers: readonly Uint8Array[]): MaybePromise<BlockResult>;
  /** Writes `buffers`, in order, at `offset`. Done means visible to later reads (not yet durable). */
  writev(offset: number, buffers: readonly Uint8Array[]): MaybePromise<BlockResult>;
  /** Makes every write that completed before this call durable. */
  flush(): MaybePromise<BlockResult>;
  /** Drops `[offset, offset + length)`; it may read back as zeroes or as old data. */
  discard(offset: number, length: number): MaybePromise<BlockResult>;
  /** Makes `[offset, offset + length)` read as zeroes; `unmap` allows deallocating it. */
  writeZeroes(offset: number, length: number, unmap: boolean): MaybePromise<BlockResult>;
  /** Releases the back-end (closes files). */
  close(): MaybePromise<void>;
}

/**
 * Whether `value` looks like a {@link BlockBackend}: a numeric `byteLength` and the
 * `readv`, `writev`, `flush`, `discard`, `writeZeroes` and `close` methods. For argument
 * checks in constructors (not a guarantee of behaviour).
 *
 * @param value - the candidate
 */
export function isBlockBackend(value: unknown): value is BlockBackend {
  if (value === null || typeof value !== "object") return false;
  const b = value as Record<string, unknown>;
  return (
    typeof b.byteLength === "number" &&
    ["readv", "writev", "flush", "discard", "writeZeroes", "close"].every(
      (m) => typeof b[m] === "function",
    )
  );
}

/**
 * Maps a Node.js error to a {@link BlockErrno}: ENOSPC and EROFS are kept, everything
 * else is an I/O error.
 */
export function errnoOf(error: unknown): BlockErrno {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "ENOSPC" || code === "EDQUOT") return "ENOSPC";
  if (code === "EROFS" || code === "EBADF" || code === "EPERM" || code === "EACCES") return "EROFS";
  return "EIO";
}

/** Total bytes of a scatter/gather list. */
export function iovLength(buffers: readonly Uint8Array[]): number {
  let n = 0;
  for (const b of buffers) n += b.length;
  return n;
}

/**
 * The part `[start, end)` of a scatter/gather list (byte positions in the list), as
 * views of the same memory.
 */
export function iovSlice(buffers: readonly Uint8Array[], start: number, end: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let pos = 0;
  for (const b of buffers) {
    const bEnd = pos + b.length;
    if (bEnd > start && pos < end) {
      out.push(b.subarray(Math.max(start, pos) - pos, Math.min(end, bEnd) - pos));
    }
    pos = bEnd;
    if (pos >= end) break;
  }
  return out;
}
