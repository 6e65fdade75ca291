/**
 * `FileDisk`: a disk over a raw image file. Positioned scatter/gather reads and writes
 * (`preadv`/`pwritev` through libuv's thread pool, so requests run concurrently and
 * finish out of order), `fdatasync` for FLUSH, read-only opening for RO, and DISCARD /
 * unmapping WRITE_ZEROES as hole punching (`fallocate --punch-hole`, util-linux) where the
 * file system allows it, else as zero writes.
 *
 * Node-only (it imports `node:fs`); import it from `@pvkit/virtio-blk/node` in code that
 * must also run in a browser.
 *
 * @module
 */

import { execFile } from "node:child_process";
import * as fs from "node:fs";
import type { BlockBackend, BlockResult } from "./backend.js";
import { errnoOf, iovLength } from "./backend.js";

/** Options of {@link FileDisk.open}. */
export interface FileDiskOptions {
  /** Open read-only (writes then fail with EROFS and the device offers RO). */
  readonly readOnly?: boolean;
  /** Create (or truncate to) a sparse file of this many bytes. */
  readonly create?: number;
  /** Use hole punching for discard (default true; falls back to zero writes when refused). */
  readonly punchHoles?: boolean;
}

const ZERO_CHUNK = new Uint8Array(1 << 20);

function preadv(fd: number, buffers: Uint8Array[], position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.readv(fd, buffers, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function pwritev(fd: number, buffers: Uint8Array[], position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.writev(fd, buffers, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) =>
    fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())),
  );
}

/** Drops the first `n` bytes of a scatter/gather list. */
function advance(buffers: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = n;
  for (const b of buffers) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}

/** A disk over a raw image file. */
export class FileDisk implements BlockBackend {
  /** Hole punches done (DISCARD / unmapping WRITE_ZEROES served by deallocation). */
  holesPunched = 0;
  private punch: boolean;
  private closed = false;

  private constructor(
    /** The image file's path. */
    readonly path: string,
    private readonly fd: number,
    readonly byteLength: number,
    readonly readOnly: boolean,
    punchHoles: boolean,
  ) {
    this.punch = punchHoles;
  }

  /**
   * Opens (or creates) an image file. The disk's size is the file's size rounded down to
   * a multiple of 512.
   *
   * @param path - the image file
   * @param options - read-only, create-with-size, hole punching
   */
  static async open(path: string, options: FileDiskOptions = {}): Promise<FileDisk> {
    const readOnly = options.readOnly ?? false;
    if (options.create !== undefined) {
      if (readOnly) throw new Error("cannot create a read-only image");
      await fs.promises.writeFile(path, new Uint8Array(0));
      await fs.promises.truncate(path, options.create);
    }
    const fd = await new Promise<number>((resolve, reject) =>
      fs.open(path, readOnly ? "r" : "r+", (err, f) => (err ? reject(err) : resolve(f))),
    );
    const size = (await fs.promises.stat(path)).size;
    return new FileDisk(path, fd, size - (size % 512), readOnly, options.punchHoles ?? true);
  }

  readv(offset: number, buffers: readonly Uint8Array[]): Promise<BlockResult> {
    // Past the end of a shorter file the rest reads as zeroes (a sparse tail).
    return this.transfer(preadv, offset, buffers, (rest) => {
      for (const b of rest) b.fill(0);
      return undefined;
    });
  }

  writev(offset: number, buffers: readonly Uint8Array[]): Promise<BlockResult> {
    if (this.readOnly) return Promise.resolve("EROFS");
    return this.transfer(pwritev, offset, buffers, () => "EIO");
  }

  /**
   * Runs a positioned scatter/gather call until every byte moved (the OS may move fewer
   * than asked); `stalled` decides what a call that moved nothing means.
   */
  private async transfer(
    io: (fd: number, buffers: Uint8Array[], position: number) => Promise<number>,
    offset: number,
    buffers: readonly Uint8Array[],
    stalled: (rest: Uint8Array[]) => BlockResult,
  ): Promise<BlockResult> {
    try {
      let todo = [...buffers];
      let pos = offset;
      let left = iovLength(todo);
      while (left > 0) {
        const n = await io(this.fd, todo, pos);
        if (n === 0) return stalled(todo);
        left -= n;
        pos += n;
        todo = advance(todo, n);
      }
      return undefined;
    } catch (err) {
      return errnoOf(err);
    }
  }

  async flush(): Promise<BlockResult> {
    if (this.readOnly) return undefined;
    try {
      await fdatasync(this.fd);
      return undefined;
    } catch (err) {
      return errnoOf(err);
    }
  }

  discard(offset: number, length: number): Promise<BlockResult> {
    return this.writeZeroes(offset, length, true);
  }

  async writeZeroes(offset: number, length: number, unmap: boolean): Promise<BlockResult> {
    if (this.readOnly) return "EROFS";
    if (length === 0) return undefined;
    if (unmap && this.punch && (await this.punchHole(offset, length))) return undefined;
    for (let pos = offset; pos < offset + length; pos += ZERO_CHUNK.length) {
      const n = Math.min(ZERO_CHUNK.length, offset + length - pos);
      const r = await this.writev(pos, [ZERO_CHUNK.subarray(0, n)]);
      if (r !== undefined) return r;
    }
    return undefined;
  }

  /** Deallocates a range with util-linux's `fallocate`; false (and no more tries) when refused. */
  private punchHole(offset: number, length: number): Promise<boolean> {
    const args = [
      "--punch-hole",
      "--keep-size",
      "--offset",
      String(offset),
      "--length",
      String(length),
      this.path,
    ];
    return new Promise((resolve) => {
      execFile("fallocate", args, (err) => {
        if (err) {
          this.punch = false; // no fallocate, or the file system refuses: zero writes from now on
          resolve(false);
        } else {
          this.holesPunched++;
          resolve(true);
        }
      });
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => fs.close(this.fd, () => resolve()));
  }
}
