/**
 * Pipes (Linux `fs/pipe.c`, much reduced): a one-page ring buffer in a kernel frame of
 * guest RAM, a reader and a writer end, and wait queues for both. Data is copied from the
 * writer's address space into the frame and from the frame into the reader's, each by the
 * process itself while it runs.
 *
 * @module
 */

import { WaitQueue } from "../sched/task.js";

/** Capacity of a pipe (one page). */
export const PIPE_BYTES = 4096;

/** A pipe. */
export class Pipe {
  /** Woken when data arrives or the last writer closes. */
  readonly readWait = new WaitQueue();
  /** Woken when room appears or the last reader closes. */
  readonly writeWait = new WaitQueue();
  /** Open reader ends. */
  readers = 1;
  /** Open writer ends. */
  writers = 1;
  private head = 0;
  private count = 0;

  /**
   * @param frame - the kernel frame holding the data
   * @param buf - that frame's bytes
   */
  constructor(
    readonly frame: number,
    private readonly buf: Uint8Array,
  ) {}

  /** Bytes buffered. */
  get used(): number {
    return this.count;
  }

  /** Room left. */
  get room(): number {
    return PIPE_BYTES - this.count;
  }

  /** Appends up to `src.length` bytes. @returns bytes taken */
  push(src: Uint8Array): number {
    const n = Math.min(src.length, this.room);
    for (let i = 0; i < n; i++) this.buf[(this.head + this.count + i) % PIPE_BYTES] = src[i]!;
    this.count += n;
    return n;
  }

  /** Removes up to `dst.length` bytes into `dst`. @returns bytes taken */
  pull(dst: Uint8Array): number {
    const n = Math.min(dst.length, this.count);
    for (let i = 0; i < n; i++) dst[i] = this.buf[(this.head + i) % PIPE_BYTES]!;
    this.head = (this.head + n) % PIPE_BYTES;
    this.count -= n;
    return n;
  }
}

/** One end of a pipe, as a file descriptor refers to it. */
export class PipeEnd {
  /**
   * @param pipe - the pipe
   * @param write - the writer end
   */
  constructor(
    readonly pipe: Pipe,
    readonly write: boolean,
  ) {}
}
