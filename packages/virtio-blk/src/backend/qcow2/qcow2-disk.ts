/**
 * `Qcow2Disk`: a {@link BlockBackend} over a qcow2 image (versions 2 and 3, QEMU's
 * docs/interop/qcow2.txt), held in any {@link ImageFile} — a `FileDisk` in Node, a
 * {@link MemoryImageFile} anywhere. Pure logic: no Node built-ins (compressed clusters
 * need an `inflateRaw` function, which `@pvkit/virtio-blk/node` supplies from zlib).
 *
 * What it does:
 * - reads and writes through L1/L2 tables with an LRU cache of L2 tables;
 * - allocates clusters through the refcount table and blocks (growing the table when
 *   needed), and keeps refcounts exact, so `qemu-img check` finds no leak or error;
 * - zero clusters (version 3), compressed clusters (read; a write copies them out),
 *   backing files (any back-end as the base, opened through a hook with loop and depth
 *   checks), discard returning clusters to the free pool;
 * - the dirty bit and lazy_refcounts as QEMU does: a lazy-refcount image is marked
 *   dirty before its first metadata change and clean at close; a dirty image opened for
 *   writing gets its refcounts rebuilt from the L1/L2 tables first.
 *
 * Crash ordering (what FLUSH does): data clusters and refcount increments are written
 * first and synced; then the L2 tables that point at them; then (after another sync) the
 * L1 entries that point at new L2 tables; then a final sync. Frees go the other way: a
 * cluster's refcount drops only after the L2 entry that dropped it is durable, and a
 * freed cluster is reused only after that. A crash between FLUSHes therefore leaves at
 * worst leaked clusters (refcount above use), which `qemu-img check -r leaks` repairs
 * without touching data; every write acknowledged before a FLUSH survives.
 *
 * Hostile images: the header, the L1 table and the refcount table are validated at open
 * (sizes against the file and QEMU's limits, alignment, overlaps with the header and
 * each other, duplicates), each L2 table when it is loaded; a bad table fails the
 * requests that need it with EIO, never a hang or an allocation beyond the file's size.
 *
 * @module
 */

import type { BlockBackend, BlockErrno, BlockResult, MaybePromise } from "../backend.js";
import { iovLength, iovSlice } from "../backend.js";
import {
  encodeQcow2Header,
  l1EntriesFor,
  overlaps,
  parseQcow2Header,
  QCOW2_MAX_CLUSTER_BITS,
  QCOW2_MAX_REFTABLE_BYTES,
  QCOW2_MIN_CLUSTER_BITS,
  QCOW2_OFFSET_HI_MASK,
  QCOW2_OFFSET_LO_MASK,
  QCOW2_ZERO_FLAG,
  Qcow2Compatible,
  Qcow2EntryFlag,
  Qcow2FormatError,
  type Qcow2Header,
  Qcow2HeaderField,
  Qcow2Incompatible,
  writeU64,
} from "./format.js";
import { Mutex, SharedLock } from "./locks.js";
import { getRefcount, maxRefcount, planRefcounts, setRefcount } from "./refcount.js";

/**
 * The file a qcow2 image lives in. `FileDisk` and {@link MemoryImageFile} fit. Reads past
 * the end must give zeroes; writes past the end must extend the file.
 */
export interface ImageFile {
  /** The file's length when it was opened. */
  readonly byteLength: number;
  /** Whether writes are refused. */
  readonly readOnly: boolean;
  /** Reads `buffers` from `offset` (zeroes past the end). */
  readv(offset: number, buffers: readonly Uint8Array[]): MaybePromise<BlockResult>;
  /** Writes `buffers` at `offset` (extending the file). */
  writev(offset: number, buffers: readonly Uint8Array[]): MaybePromise<BlockResult>;
  /** Makes every completed write durable (`fdatasync`). */
  flush(): MaybePromise<BlockResult>;
  /** Releases the file. */
  close(): MaybePromise<void>;
}

/** Raw-deflate decompression of `input` to exactly `outputLength` bytes, or `undefined`. */
export type InflateRaw = (input: Uint8Array, outputLength: number) => Uint8Array | undefined;

/** Opens a backing file by the name in the image header (read-only). */
export type OpenBacking = (
  /** The name stored in the header (often relative to the image's directory). */
  name: string,
  /** The backing format header extension (`"raw"`, `"qcow2"`), if any. */
  format: string | undefined,
  /** Identities of the images opened so far, outermost first (pass on for loop checks). */
  chain: readonly string[],
) => MaybePromise<BlockBackend>;

/** Options of {@link Qcow2Disk.open}. */
export interface Qcow2OpenOptions {
  /** Open read-only (also forced by a read-only file, the corrupt bit, or snapshots). */
  readonly readOnly?: boolean;
  /** Opens the backing file named in the header. Required when there is one. */
  readonly openBacking?: OpenBacking;
  /** A base to use instead of opening the header's backing file. */
  readonly backing?: BlockBackend;
  /** Decompressor for compressed clusters; without it they read as EIO. */
  readonly inflateRaw?: InflateRaw;
  /** Bytes of L2 tables to cache (default: enough for 8 GiB of guest disk, at least 8 tables). */
  readonly l2CacheBytes?: number;
  /** This image's identity (e.g. its real path), for backing-chain loop checks. */
  readonly identity?: string;
  /** Identities of the images that have this one as their backing file, outermost first. */
  readonly chain?: readonly string[];
}

/** Options of {@link formatQcow2}. */
export interface Qcow2FormatOptions {
  /** Virtual size in bytes (rounded up to 512). */
  readonly size: number;
  /** qcow2 version (default 3). */
  readonly version?: 2 | 3;
  /** log2 of the cluster size, 9..21 (default 16: 64 KiB). */
  readonly clusterBits?: number;
  /** log2 of the refcount width in bits, 0..6 (default 4: 16 bits; always 4 for version 2). */
  readonly refcountOrder?: number;
  /** Set the lazy_refcounts compatible feature (version 3). */
  readonly lazyRefcounts?: boolean;
  /** Backing file name to store in the header. */
  readonly backingFile?: string;
  /** Backing file format to store in the header extension (e.g. `"raw"`, `"qcow2"`). */
  readonly backingFormat?: string;
}

/** Longest backing chain {@link Qcow2Disk.open} follows. */
export const QCOW2_MAX_BACKING_DEPTH = 32;

/** Counters of a {@link Qcow2Disk}. */
export interface Qcow2Stats {
  /** Clusters allocated (data, L2 tables, refcount blocks). */
  allocatedClusters: number;
  /** Clusters whose refcount dropped to zero (discard, overwrite of shared data). */
  freedClusters: number;
  /** Partial writes to clusters that had to be copied (from the backing file, zeroes, compressed). */
  copyOnWrite: number;
  /** Compressed clusters inflated. */
  decompressed: number;
  /** L2 table reads from the file (cache misses). */
  l2Misses: number;
  /** Syncs of the file. */
  syncs: number;
  /** Refcount table relocations (growth). */
  refcountTableGrowths: number;
}

/** A cached table cluster. */
interface Table {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  dirty: boolean;
}

/** What an L2 entry says (qcow2.txt "Cluster mapping"). */
const Kind = {
  UNALLOCATED: 0,
  ZERO: 1,
  NORMAL: 2,
  COMPRESSED: 3,
} as const;

const TWO32 = 2 ** 32;
const L2_RESERVED_HI = 0x3f00_0000; // bits 56-61
const L2_RESERVED_LO = 0x0000_01fe; // bits 1-8
const L1_RESERVED_HI = 0x7f00_0000; // bits 56-62
const L1_RESERVED_LO = 0x0000_01ff; // bits 0-8

function newTable(bytes: Uint8Array, dirty: boolean): Table {
  return { bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), dirty };
}

function entryOffset(hi: number, lo: number): number {
  return (hi & QCOW2_OFFSET_HI_MASK) * TWO32 + ((lo & QCOW2_OFFSET_LO_MASK) >>> 0);
}

/** Reads `length` bytes at `offset` from the file, or the errno. */
async function readBytes(file: ImageFile, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  const r = await file.readv(offset, [out]);
  if (r !== undefined) throw new Error(`reading ${length} bytes at ${offset} failed: ${r}`);
  return out;
}

async function check(r: MaybePromise<BlockResult>): Promise<void> {
  const e = await r;
  if (e !== undefined) throw new BackendFailure(e);
}

/** A back-end error carried through the metadata code as an exception, caught at the API. */
class BackendFailure extends Error {
  constructor(readonly errno: BlockErrno) {
    super(errno);
  }
}

/** A qcow2 image as a disk. */
export class Qcow2Disk implements BlockBackend {
  readonly byteLength: number;
  readonly readOnly: boolean;
  /** The parsed header as opened. */
  readonly header: Qcow2Header;
  /** Cluster size in bytes. */
  readonly clusterSize: number;
  /** Counters. */
  readonly stats: Qcow2Stats = {
    allocatedClusters: 0,
    freedClusters: 0,
    copyOnWrite: 0,
    decompressed: 0,
    l2Misses: 0,
    syncs: 0,
    refcountTableGrowths: 0,
  };
  /** The first inconsistency found in the image's tables after open (requests then fail with EIO). */
  corruption: string | undefined;

  private readonly clusterBits: number;
  private readonly l2Bits: number;
  private readonly rcOrder: number;
  private readonly rcPerBlock: number;
  private readonly rcMax: number;
  private readonly lazy: boolean;
  private readonly l1: Table;
  private readonly l1Dirty = new Set<number>();
  private reftable: Table;
  private reftableOffset: number;
  private reftableClusters: number;
  private readonly reftableDirty = new Set<number>();
  private readonly l2Cache = new Map<number, Table>();
  private readonly l2Loading = new Map<number, Promise<Table>>();
  private readonly l2Capacity: number;
  private readonly rbCache = new Map<number, Table>();
  private readonly rbCapacity = 64;
  /** Clusters holding metadata (L2 tables, refcount blocks): never handed out as data. */
  private readonly metaClusters = new Set<number>();
  /** First cluster past everything allocated or in the file. */
  private endCluster: number;
  private freeHint = 1;
  /** Host clusters (indices) whose refcount drops at the next FLUSH. */
  private pendingFrees: number[] = [];
  private markedDirty = false;
  private readonly meta = new Mutex();
  private readonly rw = new SharedLock();
  private lastL2 = -1;
  private lastInflated: { offset: number; data: Uint8Array } | undefined;
  private closed = false;

  private constructor(
    private readonly file: ImageFile,
    header: Qcow2Header,
    l1: Uint8Array,
    reftable: Uint8Array,
    readOnly: boolean,
    /** The backing disk, if the image has one. */
    readonly backing: BlockBackend | undefined,
    private readonly ownsBacking: boolean,
    private readonly inflate: InflateRaw | undefined,
    l2CacheBytes: number | undefined,
  ) {
    this.header = header;
    this.clusterBits = header.clusterBits;
    this.clusterSize = 2 ** header.clusterBits;
    this.l2Bits = header.clusterBits - 3;
    this.byteLength = Math.ceil(header.size / 512) * 512;
    this.readOnly = readOnly;
    this.rcOrder = header.refcountOrder;
    this.rcPerBlock = (this.clusterSize * 8) >>> header.refcountOrder;
    this.rcMax = maxRefcount(header.refcountOrder);
    this.lazy =
      header.version === 3 && (header.compatibleFeatures & Qcow2Compatible.LAZY_REFCOUNTS) !== 0;
    this.l1 = newTable(l1, false);
    this.reftable = newTable(reftable, false);
    this.reftableOffset = header.refcountTableOffset;
    this.reftableClusters = header.refcountTableClusters;
    this.endCluster = Math.ceil(file.byteLength / this.clusterSize);
    const defaultCache = Math.ceil((8 * 2 ** 30) / 2 ** (this.clusterBits + this.l2Bits));
    this.l2Capacity = Math.max(
      8,
      Math.floor((l2CacheBytes ?? defaultCache * this.clusterSize) / this.clusterSize),
    );
    for (let i = 0; i < header.l1Size; i++) {
      const off = this.l1Offset(i);
      if (off !== 0) this.metaClusters.add(off / this.clusterSize);
    }
    for (let i = 0; i < this.reftableEntries; i++) {
      const off = this.reftableEntry(i);
      if (off !== 0) this.metaClusters.add(off / this.clusterSize);
    }
  }

  /**
   * Opens a qcow2 image. Validates the header, the L1 table and the refcount table
   * (qcow2.txt "Header", "Host cluster management", "Cluster mapping"), opens the
   * backing file through `options.openBacking` (refusing loops and chains deeper than
   * {@link QCOW2_MAX_BACKING_DEPTH}), clears autoclear features it does not maintain,
   * and rebuilds the refcounts of a dirty image opened for writing.
   *
   * @param file - the image file
   * @param options - see {@link Qcow2OpenOptions}
   * @throws Qcow2FormatError when the image is malformed or uses unsupported features;
   *   Error when the file cannot be read or the backing file cannot be opened
   */
  static async open(file: ImageFile, options: Qcow2OpenOptions = {}): Promise<Qcow2Disk> {
    const fileLength = file.byteLength;
    const head = await readBytes(file, 0, Math.min(fileLength, 2 ** QCOW2_MAX_CLUSTER_BITS));
    const header = parseQcow2Header(head, fileLength);
    const cs = 2 ** header.clusterBits;
    let readOnly = options.readOnly === true || file.readOnly;
    if (!readOnly && header.incompatibleFeatures & Qcow2Incompatible.CORRUPT)
      throw new Qcow2FormatError(
        "incompatible_features",
        "an image marked corrupt (bit 1) must not be written; open it read-only or repair it with qemu-img check -r all",
        "bit 1 set",
      );
    if (!readOnly && header.nbSnapshots > 0)
      throw new Qcow2FormatError(
        "nb_snapshots",
        "writing images with internal snapshots is not supported; open it read-only",
        String(header.nbSnapshots),
      );
    if (header.incompatibleFeatures & Qcow2Incompatible.CORRUPT) readOnly = true;
    const l1 = await readBytes(file, header.l1TableOffset, header.l1Size * 8);
    const reftable = await readBytes(
      file,
      header.refcountTableOffset,
      header.refcountTableClusters * cs,
    );
    validateTables(header, l1, reftable, fileLength);

    // The backing chain: loops and depth are refused before anything is opened.
    const chain = options.chain ?? [];
    if (options.identity !== undefined && chain.includes(options.identity))
      throw new Qcow2FormatError(
        "backing_file_offset",
        "the backing chain must not loop",
        [...chain, options.identity].join(" -> "),
      );
    if (chain.length >= QCOW2_MAX_BACKING_DEPTH)
      throw new Qcow2FormatError(
        "backing_file_offset",
        `the backing chain must be at most ${QCOW2_MAX_BACKING_DEPTH} images deep`,
        `${chain.length + 1} images`,
      );
    let backing = options.backing;
    let ownsBacking = false;
    if (backing === undefined && header.backingFile !== undefined) {
      if (options.openBacking === undefined)
        throw new Qcow2FormatError(
          "backing_file_offset",
          "the image has a backing file: pass openBacking (or backing) to open it",
          header.backingFile,
        );
      const next = options.identity === undefined ? chain : [...chain, options.identity];
      backing = await options.openBacking(header.backingFile, header.backingFormat, next);
      ownsBacking = true;
    }
    const disk = new Qcow2Disk(
      file,
      header,
      l1,
      reftable,
      readOnly,
      backing,
      ownsBacking,
      options.inflateRaw,
      options.l2CacheBytes,
    );
    try {
      if (!readOnly) await disk.prepareForWriting();
    } catch (err) {
      await disk.close();
      throw err;
    }
    return disk;
  }

  // ── geometry helpers ────────────────────────────────────────────────────

  private get reftableEntries(): number {
    return (this.reftableClusters * this.clusterSize) / 8;
  }

  private l1Offset(i: number): number {
    return entryOffset(this.l1.view.getUint32(i * 8), this.l1.view.getUint32(i * 8 + 4));
  }

  private reftableEntry(i: number): number {
    return entryOffset(
      this.reftable.view.getUint32(i * 8),
      this.reftable.view.getUint32(i * 8 + 4),
    );
  }

  /** Whether cluster `c` is the header, the L1 table, the refcount table, an L2 table or a refcount block. */
  private isMetadata(c: number): boolean {
    const cs = this.clusterSize;
    if (c === 0) return true;
    const at = c * cs;
    if (overlaps(at, cs, this.header.l1TableOffset, this.header.l1Size * 8)) return true;
    if (overlaps(at, cs, this.reftableOffset, this.reftableClusters * cs)) return true;
    return this.metaClusters.has(c);
  }

  private corrupt(what: string): BlockErrno {
    this.corruption ??= what;
    return "EIO";
  }

  // ── L2 tables ───────────────────────────────────────────────────────────

  /** The L2 table of L1 entry `i`: cached, loading, or `undefined` when unallocated. */
  private l2Table(i: number): Table | undefined | Promise<Table> {
    const off = this.l1Offset(i);
    if (off === 0) return undefined;
    const hit = this.l2Cache.get(off);
    if (hit !== undefined) {
      this.l2Cache.delete(off); // LRU: most recent last
      this.l2Cache.set(off, hit);
      return hit;
    }
    let loading = this.l2Loading.get(off);
    if (loading === undefined) {
      loading = this.loadL2(off);
      this.l2Loading.set(off, loading);
      const done = (): void => {
        this.l2Loading.delete(off);
      };
      loading.then(done, done);
    }
    return loading;
  }

  private async loadL2(off: number): Promise<Table> {
    this.stats.l2Misses++;
    const bytes = new Uint8Array(this.clusterSize);
    await check(this.file.readv(off, [bytes]));
    const table = newTable(bytes, false);
    const bad = this.validateL2(table);
    if (bad !== undefined) {
      this.corrupt(`L2 table at ${off}: ${bad}`);
      throw new BackendFailure("EIO");
    }
    this.evictL2();
    this.l2Cache.set(off, table);
    return table;
  }

  /** Checks every entry of a freshly read L2 table; the reason it is bad, or undefined. */
  private validateL2(t: Table): string | undefined {
    const cs = this.clusterSize;
    const limit = this.endCluster * cs;
    for (let i = 0; i < cs / 8; i++) {
      const hi = t.view.getUint32(i * 8);
      const lo = t.view.getUint32(i * 8 + 4);
      if (hi === 0 && lo === 0) continue;
      if (hi & Qcow2EntryFlag.COMPRESSED) {
        const { offset, length } = this.compressedSpan(hi, lo);
        if (offset + length > limit + 512 || offset < cs)
          return `entry ${i}: compressed data at ${offset} (+${length}) is outside the file`;
        continue;
      }
      if (hi & L2_RESERVED_HI || lo & L2_RESERVED_LO)
        return `entry ${i}: reserved bits are set (qcow2.txt "Cluster mapping")`;
      const off = entryOffset(hi, lo);
      if (off === 0) {
        if (hi & Qcow2EntryFlag.COPIED) return `entry ${i}: offset 0 with the copied flag`;
        continue;
      }
      if (off + cs > limit) return `entry ${i}: data cluster at ${off} is past the end of the file`;
      if (this.isMetadata(off / cs)) return `entry ${i}: data cluster at ${off} overlaps metadata`;
    }
    return undefined;
  }

  /** Evicts clean L2 tables beyond the capacity (dirty ones wait for a FLUSH). */
  private evictL2(): void {
    if (this.l2Cache.size < this.l2Capacity) return;
    for (const [off, t] of this.l2Cache) {
      if (this.l2Cache.size < this.l2Capacity) break;
      if (!t.dirty) this.l2Cache.delete(off);
    }
  }

  /** Host offset and byte length of a compressed cluster (qcow2.txt "Compressed Clusters Descriptor"). */
  private compressedSpan(hi: number, lo: number): { offset: number; length: number } {
    const x = 62 - (this.clusterBits - 8); // always ≥ 49, so the split is in the high word
    const hiBits = x - 32;
    const offset = (hi & ((1 << hiBits) - 1)) * TWO32 + lo;
    const sectors = ((hi & 0x3fff_ffff) >>> hiBits) + 1;
    return { offset, length: sectors * 512 - (offset % 512) };
  }

  // ── reads ───────────────────────────────────────────────────────────────

  readv(offset: number, buffers: readonly Uint8Array[]): MaybePromise<BlockResult> {
    if (this.rw.tryShared()) {
      const host = this.directRun(offset, iovLength(buffers), false);
      if (host >= 0) return this.released(this.file.readv(host, buffers));
      this.rw.release();
    }
    return this.readSlow(offset, buffers);
  }

  private async readSlow(offset: number, buffers: readonly Uint8Array[]): Promise<BlockResult> {
    const wait = this.rw.shared();
    if (wait !== undefined) await wait;
    try {
      return await this.readLocked(offset, buffers);
    } catch (err) {
      return failure(err);
    } finally {
      this.rw.release();
    }
  }

  /**
   * The hot path of reads and in-place writes: when `[offset, offset + total)` maps to
   * one contiguous run of data clusters whose L2 tables are cached (for a write: all
   * with refcount one), the host offset of the run; else -1. Synchronous: no metadata I/O.
   */
  private directRun(offset: number, total: number, write: boolean): number {
    const cs = this.clusterSize;
    let host = -1;
    let next = -1;
    for (let pos = 0; pos < total; ) {
      const g = offset + pos;
      const gc = Math.floor(g / cs);
      const off = this.l1Offset(Math.floor(gc / 2 ** this.l2Bits));
      if (off === 0) return -1;
      const t = this.l2Cache.get(off);
      if (t === undefined) return -1;
      if (off !== this.lastL2) {
        this.l2Cache.delete(off); // LRU: most recent last
        this.l2Cache.set(off, t);
        this.lastL2 = off;
      }
      const j = (gc % 2 ** this.l2Bits) * 8;
      const hi = t.view.getUint32(j);
      const lo = t.view.getUint32(j + 4);
      if (classify(hi, lo) !== Kind.NORMAL || (write && !(hi & Qcow2EntryFlag.COPIED))) return -1;
      const inCluster = g % cs;
      const h = entryOffset(hi, lo) + inCluster;
      if (host < 0) host = h;
      else if (h !== next) return -1;
      const n = Math.min(cs - inCluster, total - pos);
      next = h + n;
      pos += n;
    }
    return host;
  }

  /** Releases the shared hold when `r` settles; `r`'s result. */
  private released(r: MaybePromise<BlockResult>): MaybePromise<BlockResult> {
    if (!(r instanceof Promise)) {
      this.rw.release();
      return r;
    }
    return r.then(
      (v) => {
        this.rw.release();
        return v;
      },
      () => {
        this.rw.release();
        return "EIO" as const;
      },
    );
  }

  private async readLocked(offset: number, buffers: readonly Uint8Array[]): Promise<BlockResult> {
    const total = iovLength(buffers);
    const cs = this.clusterSize;
    const pending: Array<MaybePromise<BlockResult>> = [];
    let runHost = -1; // host offset where the current run of data continues
    let runStart = 0; // iov position where the run starts
    let pos = 0;
    const endRun = (): void => {
      if (runHost >= 0) {
        const len = pos - runStart;
        pending.push(this.file.readv(runHost - len, iovSlice(buffers, runStart, pos)));
        runHost = -1;
      }
    };
    while (pos < total) {
      const g = offset + pos;
      const inCluster = g % cs;
      const n = Math.min(cs - inCluster, total - pos);
      const gc = Math.floor(g / cs);
      const i = Math.floor(gc / 2 ** this.l2Bits);
      let t = this.l2Table(i);
      if (t instanceof Promise) t = await t;
      let hi = 0;
      let lo = 0;
      if (t !== undefined) {
        const j = (gc % 2 ** this.l2Bits) * 8;
        hi = t.view.getUint32(j);
        lo = t.view.getUint32(j + 4);
      }
      const kind = classify(hi, lo);
      if (kind === Kind.NORMAL) {
        const host = entryOffset(hi, lo) + inCluster;
        if (runHost !== host) {
          endRun();
          runStart = pos;
        }
        runHost = host + n;
        pos += n;
        continue;
      }
      endRun();
      const part = iovSlice(buffers, pos, pos + n);
      if (kind === Kind.ZERO || (kind === Kind.UNALLOCATED && this.backing === undefined)) {
        for (const b of part) b.fill(0);
      } else if (kind === Kind.UNALLOCATED) {
        pending.push(this.readBacking(g, part, n));
      } else {
        const data = await this.inflateCluster(hi, lo);
        let at = inCluster;
        for (const b of part) {
          b.set(data.subarray(at, at + b.length));
          at += b.length;
        }
      }
      pos += n;
    }
    endRun();
    for (const p of pending) {
      const r = await p;
      if (r !== undefined) return r;
    }
    return undefined;
  }

  /** Reads guest range `[g, g + n)` from the backing disk; zeroes past its end. */
  private readBacking(g: number, part: Uint8Array[], n: number): MaybePromise<BlockResult> {
    const backing = this.backing!;
    const have = Math.max(0, Math.min(n, backing.byteLength - g));
    if (have < n) for (const b of iovSlice(part, have, n)) b.fill(0);
    if (have === 0) return undefined;
    return backing.readv(g, have === n ? part : iovSlice(part, 0, have));
  }

  /** The guest bytes of a compressed cluster. */
  private async inflateCluster(hi: number, lo: number): Promise<Uint8Array> {
    const { offset, length } = this.compressedSpan(hi, lo);
    if (this.lastInflated?.offset === offset) return this.lastInflated.data;
    if (this.inflate === undefined) {
      this.corrupt("a compressed cluster, but no inflateRaw was given");
      throw new BackendFailure("EIO");
    }
    const input = new Uint8Array(length);
    await check(this.file.readv(offset, [input]));
    const data = this.inflate(input, this.clusterSize);
    if (data === undefined || data.length !== this.clusterSize) {
      this.corrupt(`compressed cluster at ${offset} does not inflate to ${this.clusterSize} bytes`);
      throw new BackendFailure("EIO");
    }
    this.stats.decompressed++;
    this.lastInflated = { offset, data };
    return data;
  }

  /** The current guest bytes of cluster `gc` whose entry is `(hi, lo)`: for copy-on-write. */
  private async clusterContents(gc: number, hi: number, lo: number): Promise<Uint8Array> {
    const cs = this.clusterSize;
    const kind = classify(hi, lo);
    if (kind === Kind.COMPRESSED) return (await this.inflateCluster(hi, lo)).slice();
    const out = new Uint8Array(cs);
    if (kind === Kind.NORMAL) await check(this.file.readv(entryOffset(hi, lo), [out]));
    else if (kind === Kind.UNALLOCATED && this.backing !== undefined)
      await check(this.readBacking(gc * cs, [out], cs));
    return out;
  }

  // ── writes ──────────────────────────────────────────────────────────────

  writev(offset: number, buffers: readonly Uint8Array[]): MaybePromise<BlockResult> {
    if (this.readOnly) return "EROFS";
    if (this.rw.tryShared()) {
      const host = this.directRun(offset, iovLength(buffers), true);
      if (host >= 0) return this.released(this.file.writev(host, buffers));
      this.rw.release();
    }
    return this.writeSlow(offset, buffers);
  }

  private async writeSlow(offset: number, buffers: readonly Uint8Array[]): Promise<BlockResult> {
    const wait = this.rw.shared();
    if (wait !== undefined) await wait;
    let done: BlockResult | false;
    try {
      done = await this.overwrite(offset, buffers);
    } catch (err) {
      return failure(err);
    } finally {
      this.rw.release();
    }
    if (done !== false) return done;
    return this.metaTask(false, () => this.writeLocked(offset, buffers));
  }

  /**
   * The fast path: when every cluster touched is allocated with refcount one (the
   * copied flag), writes in place without touching metadata; `false` otherwise.
   */
  private async overwrite(
    offset: number,
    buffers: readonly Uint8Array[],
  ): Promise<BlockResult | false> {
    const total = iovLength(buffers);
    const cs = this.clusterSize;
    let first = -1;
    let contiguous = true;
    let expect = -1;
    const hosts: number[] = [];
    for (let pos = 0; pos < total; ) {
      const g = offset + pos;
      const n = Math.min(cs - (g % cs), total - pos);
      const gc = Math.floor(g / cs);
      let t = this.l2Table(Math.floor(gc / 2 ** this.l2Bits));
      if (t instanceof Promise) t = await t;
      if (t === undefined) return false;
      const j = (gc % 2 ** this.l2Bits) * 8;
      const hi = t.view.getUint32(j);
      const lo = t.view.getUint32(j + 4);
      if (!(hi & Qcow2EntryFlag.COPIED) || classify(hi, lo) !== Kind.NORMAL) return false;
      const host = entryOffset(hi, lo) + (g % cs);
      if (first < 0) first = host;
      else if (host !== expect) contiguous = false;
      expect = host + n;
      hosts.push(host, pos, n);
      pos += n;
    }
    if (contiguous) return this.file.writev(first, buffers);
    const writes: Array<MaybePromise<BlockResult>> = [];
    for (let k = 0; k < hosts.length; k += 3) {
      const at = hosts[k + 1]!;
      writes.push(this.file.writev(hosts[k]!, iovSlice(buffers, at, at + hosts[k + 2]!)));
    }
    let result: BlockResult;
    for (const w of writes) result = (await w) ?? result;
    return result;
  }

  /** Runs a metadata-changing task: under the metadata mutex, holding `rw` shared or exclusive. */
  private metaTask(exclusive: boolean, task: () => Promise<BlockResult>): Promise<BlockResult> {
    return this.meta.run(async () => {
      if (this.closed) return "EIO";
      if (exclusive) await this.rw.exclusive();
      else {
        const wait = this.rw.shared();
        if (wait !== undefined) await wait;
      }
      try {
        return await task();
      } catch (err) {
        return failure(err);
      } finally {
        this.rw.release();
      }
    });
  }

  /** The slow path of a write: per cluster, in place or into a freshly allocated cluster. */
  private async writeLocked(offset: number, buffers: readonly Uint8Array[]): Promise<BlockResult> {
    const total = iovLength(buffers);
    const cs = this.clusterSize;
    for (let pos = 0; pos < total; ) {
      const g = offset + pos;
      const inCluster = g % cs;
      const n = Math.min(cs - inCluster, total - pos);
      const gc = Math.floor(g / cs);
      const part = iovSlice(buffers, pos, pos + n);
      const { table, j } = await this.l2ForWrite(gc);
      const hi = table.view.getUint32(j);
      const lo = table.view.getUint32(j + 4);
      const kind = classify(hi, lo);
      let inPlace = kind === Kind.NORMAL && (hi & Qcow2EntryFlag.COPIED) !== 0;
      if (
        kind === Kind.NORMAL &&
        !inPlace &&
        (await this.refcount(entryOffset(hi, lo) / cs)) === 1
      ) {
        // Refcount one without the flag: set the flag and write in place.
        table.view.setUint32(j, hi | Qcow2EntryFlag.COPIED);
        table.dirty = true;
        inPlace = true;
      }
      if (inPlace) {
        await check(this.file.writev(entryOffset(hi, lo) + inCluster, part));
      } else {
        let data: readonly Uint8Array[] = part;
        if (n !== cs) {
          const merged = await this.clusterContents(gc, hi, lo);
          let at = inCluster;
          for (const b of part) {
            merged.set(b, at);
            at += b.length;
          }
          data = [merged];
          this.stats.copyOnWrite++;
        }
        const host = await this.allocCluster();
        await check(this.file.writev(host, data));
        this.setL2(table, j, Qcow2EntryFlag.COPIED | Math.floor(host / TWO32), host >>> 0, hi, lo);
      }
      pos += n;
    }
    if (this.l2Cache.size > 2 * this.l2Capacity) {
      // Dirty tables wait for a FLUSH; a guest that never flushes must not grow the cache forever.
      await this.writeMetadata();
      this.evictL2();
    }
    return undefined;
  }

  /** Replaces L2 entry `j` of `table`; the old entry's host clusters are freed at the next FLUSH. */
  private setL2(
    table: Table,
    j: number,
    hi: number,
    lo: number,
    oldHi: number,
    oldLo: number,
  ): void {
    table.view.setUint32(j, hi);
    table.view.setUint32(j + 4, lo);
    table.dirty = true;
    const cs = this.clusterSize;
    if (oldHi & Qcow2EntryFlag.COMPRESSED) {
      const { offset, length } = this.compressedSpan(oldHi, oldLo);
      const from = Math.floor(offset / cs);
      const to = Math.floor((offset + length - 1) / cs);
      for (let c = from; c <= to; c++) this.pendingFrees.push(c);
      if (this.lastInflated?.offset === offset) this.lastInflated = undefined;
    } else {
      const old = entryOffset(oldHi, oldLo);
      if (old !== 0) this.pendingFrees.push(old / cs);
    }
  }

  /** The L2 table mapping guest cluster `gc`, allocated if needed, and the entry's byte index. */
  private async l2ForWrite(gc: number): Promise<{ table: Table; j: number }> {
    const i = Math.floor(gc / 2 ** this.l2Bits);
    const j = (gc % 2 ** this.l2Bits) * 8;
    let t = this.l2Table(i);
    if (t instanceof Promise) t = await t;
    if (t !== undefined) {
      const hi = this.l1.view.getUint32(i * 8);
      if (!(hi & Qcow2EntryFlag.COPIED)) {
        const off = this.l1Offset(i);
        if ((await this.refcount(off / this.clusterSize)) !== 1) {
          this.corrupt(`L2 table at ${off} is shared (refcount ≠ 1) without snapshots`);
          throw new BackendFailure("EIO");
        }
        await this.beforeMetadataChange();
        this.l1.view.setUint32(i * 8, hi | Qcow2EntryFlag.COPIED);
        this.l1Dirty.add(i);
      }
      return { table: t, j };
    }
    const host = await this.allocCluster();
    const table = newTable(new Uint8Array(this.clusterSize), true);
    this.metaClusters.add(host / this.clusterSize);
    this.evictL2();
    this.l2Cache.set(host, table);
    this.l1.view.setUint32(i * 8, Qcow2EntryFlag.COPIED | Math.floor(host / TWO32));
    this.l1.view.setUint32(i * 8 + 4, host >>> 0);
    this.l1Dirty.add(i);
    return { table, j };
  }

  // ── zeroes and discard ──────────────────────────────────────────────────

  discard(offset: number, length: number): Promise<BlockResult> {
    return this.writeZeroes(offset, length, true);
  }

  /**
   * Whole clusters become unallocated (no backing file) or zero clusters (version 3
   * with a backing file), their host clusters returned at the next FLUSH; partial
   * clusters are written with zeroes. Version 2 with a backing file writes zeroes.
   * Whole clusters are always deallocated, whatever `_unmap` says (the interface allows it).
   */
  async writeZeroes(offset: number, length: number, _unmap = true): Promise<BlockResult> {
    if (this.readOnly) return "EROFS";
    if (length === 0) return undefined;
    return this.metaTask(false, async () => {
      const cs = this.clusterSize;
      const end = offset + length;
      for (let g = offset; g < end; ) {
        const gc = Math.floor(g / cs);
        const cEnd = Math.min((gc + 1) * cs, end);
        const whole = g % cs === 0 && (cEnd - g === cs || cEnd >= this.byteLength);
        const i = Math.floor(gc / 2 ** this.l2Bits);
        let t = this.l2Table(i);
        if (t instanceof Promise) t = await t;
        const j = (gc % 2 ** this.l2Bits) * 8;
        const hi = t === undefined ? 0 : t.view.getUint32(j);
        const lo = t === undefined ? 0 : t.view.getUint32(j + 4);
        const kind = classify(hi, lo);
        const readsZero =
          kind === Kind.ZERO || (kind === Kind.UNALLOCATED && this.backing === undefined);
        if (readsZero && (kind === Kind.UNALLOCATED || !whole || entryOffset(hi, lo) === 0)) {
          g = cEnd;
          continue;
        }
        const canMark = this.backing === undefined || this.header.version === 3;
        if (whole && canMark) {
          await this.beforeMetadataChange();
          const { table } = await this.l2ForWrite(gc);
          const zero = this.backing === undefined ? 0 : QCOW2_ZERO_FLAG;
          this.setL2(table, j, 0, zero, hi, lo);
        } else {
          await this.writeLocked(g, [new Uint8Array(cEnd - g)]);
        }
        g = cEnd;
      }
      return undefined;
    });
  }

  // ── refcounts and allocation ────────────────────────────────────────────

  /** The refcount block covering cluster `c`, or `undefined` when none is allocated. */
  private async refblock(c: number): Promise<Table | undefined> {
    const b = Math.floor(c / this.rcPerBlock);
    if (b >= this.reftableEntries) return undefined;
    const off = this.reftableEntry(b);
    if (off === 0) return undefined;
    const hit = this.rbCache.get(off);
    if (hit !== undefined) return hit;
    const bytes = new Uint8Array(this.clusterSize);
    await check(this.file.readv(off, [bytes]));
    await this.evictRefblocks();
    const t = newTable(bytes, false);
    this.rbCache.set(off, t);
    return t;
  }

  private async evictRefblocks(): Promise<void> {
    while (this.rbCache.size >= this.rbCapacity) {
      const [off, t] = this.rbCache.entries().next().value as [number, Table];
      if (t.dirty) await check(this.file.writev(off, [t.bytes]));
      this.rbCache.delete(off);
    }
  }

  private async refcount(c: number): Promise<number> {
    const t = await this.refblock(c);
    return t === undefined ? 0 : getRefcount(t.view, this.rcOrder, c % this.rcPerBlock);
  }

  private async changeRefcount(c: number, delta: number): Promise<void> {
    const t = await this.refblock(c);
    if (t === undefined) {
      if (delta < 0) return; // nothing to drop (already free)
      throw new Error("internal: no refcount block for an allocated cluster");
    }
    const i = c % this.rcPerBlock;
    const v = getRefcount(t.view, this.rcOrder, i) + delta;
    if (v < 0) {
      this.corrupt(`refcount of cluster ${c} would drop below zero`);
      return;
    }
    if (v > this.rcMax) {
      this.corrupt(`refcount of cluster ${c} would exceed ${this.rcMax}`);
      throw new BackendFailure("EIO");
    }
    setRefcount(t.view, this.rcOrder, i, v);
    t.dirty = true;
    if (v === 0) {
      this.stats.freedClusters++;
      if (c < this.freeHint) this.freeHint = c;
    }
  }

  /**
   * Allocates one cluster (refcount 0 → 1), creating refcount blocks and growing the
   * refcount table as needed; the host offset.
   */
  private async allocCluster(): Promise<number> {
    await this.beforeMetadataChange();
    for (let c = Math.max(this.freeHint, 1); ; c++) {
      if (c < this.endCluster && (this.isMetadata(c) || (await this.refcount(c)) !== 0)) continue;
      if (c >= this.endCluster && this.isMetadata(c)) continue;
      const b = Math.floor(c / this.rcPerBlock);
      if (b >= this.reftableEntries) {
        await this.growRefcountTable(b);
        c = Math.max(this.freeHint, 1) - 1; // rescan: the table and blocks took clusters
        continue;
      }
      if (this.reftableEntry(b) === 0) {
        // No block covers c (so every cluster it covers is free): put the block at c.
        const block = newTable(new Uint8Array(this.clusterSize), true);
        setRefcount(block.view, this.rcOrder, c % this.rcPerBlock, 1);
        await this.evictRefblocks();
        this.rbCache.set(c * this.clusterSize, block);
        writeU64(this.reftable.view, b * 8, c * this.clusterSize);
        this.reftableDirty.add(b);
        this.metaClusters.add(c);
        this.endCluster = Math.max(this.endCluster, c + 1);
        this.stats.allocatedClusters++;
        continue;
      }
      const t = await this.refblock(c);
      setRefcount(t!.view, this.rcOrder, c % this.rcPerBlock, 1);
      t!.dirty = true;
      this.freeHint = c + 1;
      this.endCluster = Math.max(this.endCluster, c + 1);
      this.stats.allocatedClusters++;
      return c * this.clusterSize;
    }
  }

  /**
   * Moves the refcount table to the end of the file with room for block `need`, with
   * new refcount blocks for the clusters the move takes; the header switches to the new
   * table only once it is durable, then the old table's clusters are freed.
   */
  private async growRefcountTable(need: number): Promise<void> {
    const cs = this.clusterSize;
    const per = this.rcPerBlock;
    await this.writeRefcounts();
    const oldEntries = this.reftableEntries;
    const start = this.endCluster;
    let entries = Math.max(need + 1, oldEntries * 2);
    let n = 0;
    let newBlocks: number[] = [];
    for (;;) {
      n = Math.ceil((entries * 8) / cs);
      const end = start + n + newBlocks.length;
      const lastBlock = Math.floor((end - 1) / per);
      if (lastBlock >= entries) {
        entries = lastBlock + 1;
        continue;
      }
      const missing: number[] = [];
      for (let b = Math.floor(start / per); b <= lastBlock; b++)
        if (b >= oldEntries || this.reftableEntry(b) === 0) missing.push(b);
      if (missing.length === newBlocks.length) break;
      newBlocks = missing;
    }
    if (n * cs > QCOW2_MAX_REFTABLE_BYTES) throw new BackendFailure("ENOSPC");
    const end = start + n + newBlocks.length;
    const table = newTable(new Uint8Array(n * cs), false);
    table.bytes.set(this.reftable.bytes);
    for (const [k, b] of newBlocks.entries()) writeU64(table.view, b * 8, (start + n + k) * cs);
    // New blocks: written now, with the refcounts of the clusters the move takes.
    for (const [k, b] of newBlocks.entries()) {
      const block = newTable(new Uint8Array(cs), false);
      for (let c = Math.max(start, b * per); c < Math.min(end, (b + 1) * per); c++)
        setRefcount(block.view, this.rcOrder, c % per, 1);
      await check(this.file.writev((start + n + k) * cs, [block.bytes]));
    }
    // Existing blocks covering part of the new range.
    for (let c = start; c < end; c++) {
      const b = Math.floor(c / per);
      if (b < oldEntries && this.reftableEntry(b) !== 0) await this.changeRefcount(c, 1);
    }
    await this.writeRefcounts();
    await check(this.file.writev(start * cs, [table.bytes]));
    await this.sync();
    const hdr = new Uint8Array(12);
    const hv = new DataView(hdr.buffer);
    writeU64(hv, 0, start * cs);
    hv.setUint32(8, n);
    await check(this.file.writev(Qcow2HeaderField.refcount_table_offset, [hdr]));
    await this.sync();
    const oldOffset = this.reftableOffset;
    const oldClusters = this.reftableClusters;
    this.reftable = table;
    this.reftableOffset = start * cs;
    this.reftableClusters = n;
    this.reftableDirty.clear();
    newBlocks.forEach((_, k) => {
      this.metaClusters.add(start + n + k);
    });
    this.endCluster = end;
    this.stats.allocatedClusters += n + newBlocks.length;
    this.stats.refcountTableGrowths++;
    for (let c = oldOffset / cs; c < oldOffset / cs + oldClusters; c++)
      await this.changeRefcount(c, -1);
  }

  /** Writes dirty refcount blocks, then dirty refcount table entries. */
  private async writeRefcounts(): Promise<void> {
    for (const [off, t] of this.rbCache) {
      if (!t.dirty) continue;
      await check(this.file.writev(off, [t.bytes]));
      t.dirty = false;
    }
    for (const b of this.reftableDirty)
      await check(
        this.file.writev(this.reftableOffset + b * 8, [
          this.reftable.bytes.subarray(b * 8, b * 8 + 8),
        ]),
      );
    this.reftableDirty.clear();
  }

  private async sync(): Promise<void> {
    this.stats.syncs++;
    await check(this.file.flush());
  }

  /** Lazy refcounts: marks the image dirty (durably) before its first metadata change. */
  private async beforeMetadataChange(): Promise<void> {
    if (!this.lazy || this.markedDirty) return;
    await this.setIncompatible(this.header.incompatibleFeatures | Qcow2Incompatible.DIRTY);
    this.markedDirty = true;
  }

  private async setIncompatible(bits: number): Promise<void> {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setUint32(4, bits);
    await check(this.file.writev(Qcow2HeaderField.incompatible_features, [b]));
    await this.sync();
  }

  // ── flush and close ─────────────────────────────────────────────────────

  flush(): Promise<BlockResult> {
    if (this.readOnly) return Promise.resolve(undefined);
    return this.metaTask(true, () => this.flushLocked());
  }

  /** The FLUSH ordering of the module comment. */
  private async flushLocked(): Promise<BlockResult> {
    await this.writeMetadata();
    await this.sync();
    // The entries that dropped these clusters are durable: their refcounts may drop now.
    const frees = this.pendingFrees;
    this.pendingFrees = [];
    for (const c of frees) await this.changeRefcount(c, -1);
    this.evictL2();
    return undefined;
  }

  /**
   * Writes dirty metadata in dependency order (refcounts, sync, L2 tables, sync, L1
   * entries), without the final sync and without releasing freed clusters: also used
   * when too many dirty L2 tables pile up between FLUSHes.
   */
  private async writeMetadata(): Promise<void> {
    await this.writeRefcounts();
    let anyL2 = false;
    for (const t of this.l2Cache.values()) anyL2 ||= t.dirty;
    if (anyL2 || this.l1Dirty.size > 0) {
      await this.sync(); // data and refcount increments before the tables that use them
      for (const [off, t] of this.l2Cache) {
        if (!t.dirty) continue;
        await check(this.file.writev(off, [t.bytes]));
        t.dirty = false;
      }
      if (this.l1Dirty.size > 0) {
        await this.sync(); // new L2 tables before the L1 entries that point at them
        for (const i of this.l1Dirty)
          await check(
            this.file.writev(this.header.l1TableOffset + i * 8, [
              this.l1.bytes.subarray(i * 8, i * 8 + 8),
            ]),
          );
        this.l1Dirty.clear();
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (!this.readOnly) {
      await this.metaTask(true, async () => {
        const r = await this.flushLocked();
        if (r !== undefined) return r;
        await this.writeRefcounts();
        await this.sync();
        if (this.markedDirty) {
          await this.setIncompatible(this.header.incompatibleFeatures & ~Qcow2Incompatible.DIRTY);
          this.markedDirty = false;
        }
        return undefined;
      });
    }
    this.closed = true;
    await this.file.close();
    if (this.ownsBacking) await this.backing?.close();
  }

  // ── open for writing: autoclear bits and the repair of a dirty image ────

  private async prepareForWriting(): Promise<void> {
    const h = this.header;
    if (h.version === 3 && h.autoclearFeatures !== 0) {
      // Bitmaps and raw-data consistency are not maintained here: clear their bits.
      await check(this.file.writev(Qcow2HeaderField.autoclear_features, [new Uint8Array(8)]));
      await this.sync();
    }
    if (h.incompatibleFeatures & Qcow2Incompatible.DIRTY) {
      await this.rebuildRefcounts();
      await this.setIncompatible(h.incompatibleFeatures & ~Qcow2Incompatible.DIRTY);
    }
  }

  /**
   * Rebuilds the refcount structure from the L1/L2 tables (what `qemu-img check -r all`
   * does for a dirty image): counts every cluster in use, writes a fresh table and
   * blocks after the end of the file, and switches the header to them once durable.
   */
  private async rebuildRefcounts(): Promise<void> {
    const cs = this.clusterSize;
    const fileClusters = this.endCluster;
    const counts = new Uint32Array(fileClusters);
    const use = (c: number, what: string): void => {
      if (c >= fileClusters || c < 0)
        throw new Qcow2FormatError(
          "refcount repair",
          "every cluster in use must lie within the file",
          `${what} at cluster ${c}`,
        );
      counts[c]!++;
    };
    use(0, "header");
    const l1c = Math.ceil((this.header.l1Size * 8) / cs);
    for (let k = 0; k < l1c; k++) use(this.header.l1TableOffset / cs + k, "L1 table");
    for (let i = 0; i < this.header.l1Size; i++) {
      const off = this.l1Offset(i);
      if (off === 0) continue;
      use(off / cs, "L2 table");
      let t = this.l2Table(i);
      if (t instanceof Promise) t = await t.catch(() => undefined);
      if (t === undefined)
        throw new Qcow2FormatError(
          "L2 table",
          "must be valid to repair a dirty image",
          String(this.corruption),
        );
      for (let j = 0; j < cs; j += 8) {
        const hi = t.view.getUint32(j);
        const lo = t.view.getUint32(j + 4);
        if (hi & Qcow2EntryFlag.COMPRESSED) {
          const { offset, length } = this.compressedSpan(hi, lo);
          for (let c = Math.floor(offset / cs); c <= Math.floor((offset + length - 1) / cs); c++)
            use(Math.min(c, fileClusters - 1), "compressed data");
        } else if (entryOffset(hi, lo) !== 0) use(entryOffset(hi, lo) / cs, "data cluster");
      }
    }
    for (let c = 0; c < fileClusters; c++)
      if (counts[c]! > this.rcMax)
        throw new Qcow2FormatError(
          "refcount repair",
          `refcounts must fit in ${1 << this.rcOrder} bits`,
          `cluster ${c} is used ${counts[c]} times`,
        );
    const per = this.rcPerBlock;
    const used = (b: number): boolean => {
      for (let c = b * per; c < Math.min(fileClusters, (b + 1) * per); c++)
        if (counts[c]) return true;
      return false;
    };
    const plan = planRefcounts(fileClusters, used, this.clusterBits, per);
    if (plan.tableClusters * cs > QCOW2_MAX_REFTABLE_BYTES)
      throw new Qcow2FormatError(
        "refcount repair",
        "the rebuilt refcount table must fit in 8 MiB",
        `${plan.tableClusters} clusters`,
      );
    const table = await writeRefcountStructure(this.file, plan, cs, this.rcOrder, per, (c) =>
      c < fileClusters ? counts[c]! : 1,
    );
    await this.sync();
    const hdr = new Uint8Array(12);
    const hv = new DataView(hdr.buffer);
    writeU64(hv, 0, plan.tableCluster * cs);
    hv.setUint32(8, plan.tableClusters);
    await check(this.file.writev(Qcow2HeaderField.refcount_table_offset, [hdr]));
    await this.sync();
    for (let i = 0; i < this.reftableEntries; i++) {
      const off = this.reftableEntry(i);
      if (off !== 0) this.metaClusters.delete(off / cs);
    }
    this.reftable = newTable(table, false);
    this.reftableOffset = plan.tableCluster * cs;
    this.reftableClusters = plan.tableClusters;
    this.rbCache.clear();
    for (const c of plan.blocks.values()) this.metaClusters.add(c);
    this.endCluster = plan.end;
    this.freeHint = 1;
  }
}

/** The kind of an L2 entry. */
function classify(hi: number, lo: number): number {
  if (hi & Qcow2EntryFlag.COMPRESSED) return Kind.COMPRESSED;
  if (lo & QCOW2_ZERO_FLAG) return Kind.ZERO;
  return entryOffset(hi, lo) === 0 ? Kind.UNALLOCATED : Kind.NORMAL;
}

function failure(err: unknown): BlockErrno {
  return err instanceof BackendFailure ? err.errno : "EIO";
}

/** Checks the L1 and refcount table entries against the file (QEMU's open-time checks). */
function validateTables(
  h: Qcow2Header,
  l1: Uint8Array,
  reftable: Uint8Array,
  fileLength: number,
): void {
  const cs = 2 ** h.clusterBits;
  const seen = new Set<number>();
  const fixed = (off: number): boolean =>
    off < cs ||
    overlaps(off, cs, h.l1TableOffset, h.l1Size * 8) ||
    overlaps(off, cs, h.refcountTableOffset, h.refcountTableClusters * cs);
  const walk = (name: string, bytes: Uint8Array, resHi: number, resLo: number): void => {
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < bytes.length / 8; i++) {
      const hi = v.getUint32(i * 8);
      const lo = v.getUint32(i * 8 + 4);
      if (hi === 0 && lo === 0) continue;
      const off = entryOffset(hi, lo);
      const fail = (rule: string): never => {
        throw new Qcow2FormatError(
          `${name} entry ${i}`,
          rule,
          `0x${hi.toString(16).padStart(8, "0")}${lo.toString(16).padStart(8, "0")}`,
        );
      };
      if (hi & resHi || lo & resLo) fail("reserved bits must be zero");
      if (off === 0) {
        if (name === "L1 table" && hi === Qcow2EntryFlag.COPIED) continue;
        fail("an entry with flags must have an offset");
      }
      if (off % cs !== 0) fail("must be aligned to a cluster boundary");
      if (off + cs > fileLength) fail(`the table must lie within the file (${fileLength} bytes)`);
      if (fixed(off)) fail("must not overlap the header, the L1 table or the refcount table");
      if (seen.has(off)) fail("must not point at a cluster another table entry uses");
      seen.add(off);
    }
  };
  walk("L1 table", l1, L1_RESERVED_HI, L1_RESERVED_LO);
  walk("refcount table", reftable, 0xffff_ffff & ~QCOW2_OFFSET_HI_MASK, L1_RESERVED_LO);
}

/** Writes the blocks and table of `plan`; the table's bytes. */
async function writeRefcountStructure(
  file: ImageFile,
  plan: ReturnType<typeof planRefcounts>,
  cs: number,
  order: number,
  per: number,
  countOf: (c: number) => number,
): Promise<Uint8Array> {
  const table = new Uint8Array(plan.tableClusters * cs);
  const tv = new DataView(table.buffer);
  for (const [b, c] of plan.blocks) {
    writeU64(tv, b * 8, c * cs);
    const block = new Uint8Array(cs);
    const bv = new DataView(block.buffer);
    for (let k = 0; k < per; k++) {
      const cluster = b * per + k;
      if (cluster >= plan.end) break;
      const v = countOf(cluster);
      if (v !== 0) setRefcount(bv, order, k, v);
    }
    await check(file.writev(c * cs, [block]));
  }
  await check(file.writev(plan.tableCluster * cs, [table]));
  return table;
}

/**
 * Writes a fresh, empty qcow2 image into `file` (which should be empty): the header
 * (with the backing file name and format, if given), an all-zero L1 table covering the
 * size, and a refcount table and blocks counting all of it — what `qemu-img create -f
 * qcow2` makes. Syncs before returning.
 *
 * @param file - where to write the image
 * @param options - see {@link Qcow2FormatOptions}
 * @throws RangeError for a cluster size, refcount order or size out of range
 */
export async function formatQcow2(file: ImageFile, options: Qcow2FormatOptions): Promise<void> {
  const version = options.version ?? 3;
  const clusterBits = options.clusterBits ?? 16;
  const order = version === 2 ? 4 : (options.refcountOrder ?? 4);
  if (
    !Number.isInteger(clusterBits) ||
    clusterBits < QCOW2_MIN_CLUSTER_BITS ||
    clusterBits > QCOW2_MAX_CLUSTER_BITS
  )
    throw new RangeError(`formatQcow2: clusterBits must be 9..21, got ${clusterBits}`);
  if (!Number.isInteger(order) || order < 0 || order > 6)
    throw new RangeError(`formatQcow2: refcountOrder must be 0..6, got ${order}`);
  if (!Number.isSafeInteger(options.size) || options.size < 0)
    throw new RangeError(`formatQcow2: size must be a non-negative integer, got ${options.size}`);
  if (version === 2 && options.lazyRefcounts)
    throw new RangeError("formatQcow2: lazy refcounts need version 3");
  const size = Math.ceil(options.size / 512) * 512;
  const cs = 2 ** clusterBits;
  const l1Size = l1EntriesFor(size, clusterBits);
  if (l1Size * 8 > 32 << 20) throw new RangeError("formatQcow2: the L1 table would exceed 32 MiB");
  const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / cs));
  const start = 1 + l1Clusters;
  const per = (cs * 8) >>> order;
  const plan = planRefcounts(start, (b) => b * per < start, clusterBits, per);
  await writeRefcountStructure(file, plan, cs, order, per, () => 1);
  await check(file.writev(cs, [new Uint8Array(l1Clusters * cs)]));
  const header = encodeQcow2Header({
    version,
    clusterBits,
    size,
    l1Size,
    l1TableOffset: cs,
    refcountTableOffset: plan.tableCluster * cs,
    refcountTableClusters: plan.tableClusters,
    compatibleFeatures: options.lazyRefcounts ? Qcow2Compatible.LAZY_REFCOUNTS : 0,
    refcountOrder: order,
    backingFile: options.backingFile,
    backingFormat: options.backingFormat,
  });
  await check(file.writev(0, [header]));
  await check(file.flush());
}

/**
 * A growable in-memory {@link ImageFile}: a qcow2 image without a file system (browsers,
 * tests). Reads past the end give zeroes; writes past the end extend it.
 */
export class MemoryImageFile implements ImageFile {
  private buf: Uint8Array;
  private length: number;
  readonly readOnly: boolean;

  /**
   * @param bytes - initial contents (copied; default empty)
   * @param options - read-only
   */
  constructor(bytes: Uint8Array = new Uint8Array(0), options: { readOnly?: boolean } = {}) {
    this.buf = bytes.slice();
    this.length = bytes.length;
    this.readOnly = options.readOnly ?? false;
  }

  get byteLength(): number {
    return this.length;
  }

  /** A copy of the file's bytes. */
  toBytes(): Uint8Array {
    return this.buf.slice(0, this.length);
  }

  readv(offset: number, buffers: readonly Uint8Array[]): BlockResult {
    let pos = offset;
    for (const b of buffers) {
      const have = Math.max(0, Math.min(b.length, this.length - pos));
      if (have > 0) b.set(this.buf.subarray(pos, pos + have));
      if (have < b.length) b.fill(0, have);
      pos += b.length;
    }
    return undefined;
  }

  writev(offset: number, buffers: readonly Uint8Array[]): BlockResult {
    if (this.readOnly) return "EROFS";
    const end = offset + iovLength(buffers);
    if (end > this.buf.length) {
      const grown = new Uint8Array(Math.max(end, this.buf.length * 2));
      grown.set(this.buf.subarray(0, this.length));
      this.buf = grown;
    }
    let pos = offset;
    for (const b of buffers) {
      this.buf.set(b, pos);
      pos += b.length;
    }
    this.length = Math.max(this.length, end);
    return undefined;
  }

  flush(): BlockResult {
    return undefined;
  }

  close(): void {}
}
