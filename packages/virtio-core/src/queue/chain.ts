/**
 * `DescriptorChain`: one request popped from a split virtqueue, already walked and
 * validated, with its device-readable and device-writable buffers as zero-copy views of
 * guest memory and helpers that copy across descriptor boundaries.
 *
 * Chain objects are owned by their `DeviceQueue`: a chain returned with `addUsed` is
 * reused (last in, first out) by a later pop, so popping allocates nothing once the queue
 * is warm and the few chains in use stay in cache. A chain is valid until its head is
 * returned with `addUsed` (or the queue is reset); do not keep it after that.
 *
 * Views of guest memory (`readable`, `writable`, `bufferBytes`, `bufferView`) are valid
 * until control returns to the event loop: growing a `WebAssembly.Memory` (v86's RAM
 * grows when v86's own allocator needs room) detaches every view of its old buffer. A
 * device that finishes a request asynchronously takes its views again when it finishes;
 * the chain's copy methods and view getters find the current buffer themselves.
 *
 * @module
 */

import type { GuestMemory, GuestMemoryRegion } from "@pvkit/platform";

const INITIAL_CAPACITY = 4;

/**
 * A buffer table of `n` zeros as a plain array of unboxed doubles (offsets may pass 2^31):
 * unlike a typed array, reading it needs no detached-buffer check.
 */
function newBufferTable(n: number): number[] {
  const a = new Array<number>(n).fill(0.5); // doubles from the start: the kind never changes
  return a.fill(0);
}

/**
 * A validated descriptor chain (§2.7.5, §2.7.13.2). Readable buffers always precede
 * writable ones (a chain that breaks §2.7.4.2 never reaches a device).
 */
export class DescriptorChain {
  /** Head descriptor index: what `addUsed` takes back. */
  head = 0;
  /** Number of non-empty device-readable buffers. */
  readableCount = 0;
  /** Number of non-empty device-writable buffers. */
  writableCount = 0;
  /** Total bytes of the device-readable buffers. */
  readableLength = 0;
  /** Total bytes of the device-writable buffers. */
  writableLength = 0;
  /** Descriptors walked, including zero-length ones and the indirect descriptor itself. */
  descriptorCount = 0;
  /** Whether the chain went through an indirect table. */
  indirect = false;
  // Created on first use: most devices never need them, and every chain object costs cache.
  private readerObj: ChainReader | null = null;
  private writerObj: ChainWriter | null = null;

  /**
   * @internal per buffer (readable buffers first) three numbers: region index, byte
   * offset inside the region, byte length. One array keeps a chain compact.
   */
  buf: number[] = newBufferTable(3 * INITIAL_CAPACITY);

  /** The guest memory's regions (buffers are stored as region + offset). */
  readonly regions: readonly GuestMemoryRegion[];
  private readonly growable: boolean;

  /**
   * @param memory - the guest memory the chain's buffers lie in
   * @internal created by `DeviceQueue`
   */
  constructor(private readonly memory: GuestMemory) {
    this.regions = memory.regions;
    this.growable = memory.growable;
  }

  /** Region `k` with current views (a grown `WebAssembly.Memory` detached the old ones). */
  private region(k: number): GuestMemoryRegion {
    const r = this.regions[k]!;
    if (this.growable && r.bytes.length === 0) this.memory.refresh();
    return r;
  }

  /** A reader over the readable bytes, rewound at every pop. */
  get reader(): ChainReader {
    if (this.readerObj === null) this.readerObj = new ChainReader(this);
    return this.readerObj;
  }

  /** A writer over the writable bytes, rewound at every pop. */
  get writer(): ChainWriter {
    if (this.writerObj === null) this.writerObj = new ChainWriter(this);
    return this.writerObj;
  }

  /** @internal rewinds the chain for a new walk */
  begin(head: number): void {
    this.head = head;
    this.readableCount = 0;
    this.writableCount = 0;
    this.readableLength = 0;
    this.writableLength = 0;
    this.descriptorCount = 0;
    this.indirect = false;
    if (this.readerObj !== null) this.readerObj.position = 0;
    if (this.writerObj !== null) this.writerObj.position = 0;
  }

  /**
   * @internal completes a direct chain whose buffers the caller wrote into {@link buf}
   * itself (the split ring's fast path), readable buffers first
   */
  setDirect(
    head: number,
    descriptors: number,
    readable: number,
    writable: number,
    readableLength: number,
    writableLength: number,
  ): void {
    this.head = head;
    this.descriptorCount = descriptors;
    this.indirect = false;
    this.readableCount = readable;
    this.writableCount = writable;
    this.readableLength = readableLength;
    this.writableLength = writableLength;
    if (this.readerObj !== null) this.readerObj.position = 0;
    if (this.writerObj !== null) this.writerObj.position = 0;
  }

  /** @internal appends one validated buffer */
  push(region: number, offset: number, length: number, writable: boolean): void {
    const n = this.readableCount + this.writableCount;
    if (3 * n === this.buf.length) this.grow();
    const b = this.buf;
    b[3 * n] = region;
    b[3 * n + 1] = offset;
    b[3 * n + 2] = length;
    if (writable) {
      this.writableCount++;
      this.writableLength += length;
    } else {
      this.readableCount++;
      this.readableLength += length;
    }
  }

  private grow(): void {
    const b = newBufferTable(this.buf.length * 2);
    for (let i = 0; i < this.buf.length; i++) b[i] = this.buf[i]!;
    this.buf = b;
  }

  /** Total buffers (readable + writable). */
  get bufferCount(): number {
    return this.readableCount + this.writableCount;
  }

  /**
   * The bytes of a whole region and where buffer `i` lies in it — the allocation-free way
   * to reach a buffer (`bytes.subarray(offset, offset + length)` is the same view).
   * Buffers are numbered readable first, then writable.
   */
  bufferBytes(i: number): Uint8Array {
    return this.region(this.buf[3 * i]!).bytes;
  }
  /**
   * A `DataView` over the same region as {@link bufferBytes}, for little-endian fields
   * inside buffer `i` (at {@link bufferOffset}) without copying or allocating.
   */
  bufferView(i: number): DataView {
    return this.region(this.buf[3 * i]!).view;
  }
  /** Offset of buffer `i` inside {@link bufferBytes}. */
  bufferOffset(i: number): number {
    return this.buf[3 * i + 1]!;
  }
  /** Length of buffer `i`. */
  bufferLength(i: number): number {
    return this.buf[3 * i + 2]!;
  }

  /**
   * Zero-copy view of device-readable buffer `i` (0 ≤ i < readableCount).
   * The view aliases guest memory: the guest may change it while the device reads.
   */
  readable(i: number): Uint8Array {
    if (i < 0 || i >= this.readableCount)
      throw new RangeError(`readable buffer ${i} does not exist`);
    return this.view(i);
  }

  /** Zero-copy view of device-writable buffer `i` (0 ≤ i < writableCount). */
  writable(i: number): Uint8Array {
    if (i < 0 || i >= this.writableCount)
      throw new RangeError(`writable buffer ${i} does not exist`);
    return this.view(this.readableCount + i);
  }

  private view(n: number): Uint8Array {
    const b = this.buf;
    const off = b[3 * n + 1]!;
    return this.region(b[3 * n]!).bytes.subarray(off, off + b[3 * n + 2]!);
  }

  /**
   * Copies readable bytes, starting `position` bytes into the readable data, into `dst`,
   * across descriptor boundaries.
   *
   * @returns bytes copied (less than asked when the readable data ends first)
   */
  copyFromReadable(
    position: number,
    dst: Uint8Array,
    dstOffset = 0,
    length = dst.length - dstOffset,
  ): number {
    return this.copy(0, this.readableCount, position, dst, dstOffset, length, false);
  }

  /**
   * Copies `src` into the writable buffers, starting `position` bytes into the writable
   * data, across descriptor boundaries.
   *
   * @returns bytes copied (less than asked when the writable buffers end first)
   */
  copyToWritable(
    position: number,
    src: Uint8Array,
    srcOffset = 0,
    length = src.length - srcOffset,
  ): number {
    return this.copy(this.readableCount, this.bufferCount, position, src, srcOffset, length, true);
  }

  /** @internal copies between a run of buffers [first, last) and `buf` */
  copy(
    first: number,
    last: number,
    position: number,
    buf: Uint8Array,
    bufOffset: number,
    length: number,
    toGuest: boolean,
  ): number {
    let done = 0;
    let skip = position;
    for (let i = first; i < last && done < length; i++) {
      const len = this.buf[3 * i + 2]!;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = Math.min(len - skip, length - done);
      const bytes = this.region(this.buf[3 * i]!).bytes;
      const off = this.buf[3 * i + 1]! + skip;
      copyBytes(
        toGuest ? buf : bytes,
        toGuest ? bufOffset + done : off,
        toGuest ? bytes : buf,
        toGuest ? off : bufOffset + done,
        n,
      );
      done += n;
      skip = 0;
    }
    return done;
  }
}

/** Copies `n` bytes; short runs byte by byte to avoid allocating a view. */
function copyBytes(
  src: Uint8Array,
  srcOff: number,
  dst: Uint8Array,
  dstOff: number,
  n: number,
): void {
  if (n <= 32) {
    for (let k = 0; k < n; k++) dst[dstOff + k] = src[srcOff + k]!;
  } else {
    dst.set(src.subarray(srcOff, srcOff + n), dstOff);
  }
}

/**
 * A cursor over a chain's readable bytes: little-endian integers and byte runs that may
 * straddle descriptors (e.g. a request header split over two buffers).
 */
export class ChainReader {
  /** Bytes consumed so far. */
  position = 0;
  private readonly scratch = new Uint8Array(8);

  /** @internal */
  constructor(private readonly chain: DescriptorChain) {}

  /** Moves back to the first readable byte. */
  rewind(): void {
    this.position = 0;
  }

  /** Readable bytes not consumed yet. */
  get remaining(): number {
    return this.chain.readableLength - this.position;
  }

  /** Skips `n` bytes. @returns false (not moving) when fewer than `n` remain */
  skip(n: number): boolean {
    if (n > this.remaining) return false;
    this.position += n;
    return true;
  }

  /**
   * Copies the next bytes into `dst`.
   * @returns bytes copied; fewer than `dst.length` only at the end of the readable data
   */
  read(dst: Uint8Array, dstOffset = 0, length = dst.length - dstOffset): number {
    const n = this.chain.copyFromReadable(this.position, dst, dstOffset, length);
    this.position += n;
    return n;
  }

  /** @returns the next byte, or -1 at the end */
  readU8(): number {
    return this.fixed(1) ? this.scratch[0]! : -1;
  }
  /** @returns the next little-endian u16, or -1 when fewer than 2 bytes remain */
  readU16(): number {
    return this.fixed(2) ? this.scratch[0]! | (this.scratch[1]! << 8) : -1;
  }
  /** @returns the next little-endian u32, or -1 when fewer than 4 bytes remain */
  readU32(): number {
    if (!this.fixed(4)) return -1;
    const s = this.scratch;
    return (s[0]! | (s[1]! << 8) | (s[2]! << 16) | (s[3]! << 24)) >>> 0;
  }
  /** @returns the next little-endian u64, or -1n when fewer than 8 bytes remain */
  readU64(): bigint {
    if (!this.fixed(8)) return -1n;
    const s = this.scratch;
    const lo = (s[0]! | (s[1]! << 8) | (s[2]! << 16) | (s[3]! << 24)) >>> 0;
    const hi = (s[4]! | (s[5]! << 8) | (s[6]! << 16) | (s[7]! << 24)) >>> 0;
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  private fixed(n: number): boolean {
    if (this.remaining < n) return false;
    this.read(this.scratch, 0, n);
    return true;
  }
}

/** A cursor over a chain's writable bytes. {@link bytesWritten} is what `addUsed` reports. */
export class ChainWriter {
  /** Bytes written so far (the used length, §2.7.8). */
  position = 0;
  private readonly scratch = new Uint8Array(8);

  /** @internal */
  constructor(private readonly chain: DescriptorChain) {}

  /** Moves back to the first writable byte. */
  rewind(): void {
    this.position = 0;
  }

  /** Bytes written so far. */
  get bytesWritten(): number {
    return this.position;
  }

  /** Writable bytes left. */
  get remaining(): number {
    return this.chain.writableLength - this.position;
  }

  /** Skips `n` writable bytes (leaving them as they are). @returns false when fewer remain */
  skip(n: number): boolean {
    if (n > this.remaining) return false;
    this.position += n;
    return true;
  }

  /**
   * Copies `src` into the next writable bytes.
   * @returns bytes copied; fewer than asked only when the writable buffers are full
   */
  write(src: Uint8Array, srcOffset = 0, length = src.length - srcOffset): number {
    const n = this.chain.copyToWritable(this.position, src, srcOffset, length);
    this.position += n;
    return n;
  }

  /** Writes one byte. @returns false when the buffers are full */
  writeU8(value: number): boolean {
    this.scratch[0] = value;
    return this.fixed(1);
  }
  /** Writes a little-endian u16. @returns false (writing nothing) when fewer than 2 bytes remain */
  writeU16(value: number): boolean {
    this.scratch[0] = value;
    this.scratch[1] = value >>> 8;
    return this.fixed(2);
  }
  /** Writes a little-endian u32. @returns false (writing nothing) when fewer than 4 bytes remain */
  writeU32(value: number): boolean {
    const s = this.scratch;
    s[0] = value;
    s[1] = value >>> 8;
    s[2] = value >>> 16;
    s[3] = value >>> 24;
    return this.fixed(4);
  }

  private fixed(n: number): boolean {
    if (this.remaining < n) return false;
    this.write(this.scratch, 0, n);
    return true;
  }
}
