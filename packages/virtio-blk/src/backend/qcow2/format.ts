/**
 * The qcow2 on-disk format (QEMU's docs/interop/qcow2.txt): header layout, feature bits,
 * table-entry flags, and {@link parseQcow2Header}, which validates every header field
 * against the file's length and QEMU's implementation limits before anything is
 * allocated or read from the tables. All numbers in qcow2 are big-endian.
 *
 * Pure logic (no `node:fs`): usable in browsers.
 *
 * @module
 */

/** `"QFI\xfb"` (qcow2.txt "Header", bytes 0-3). */
export const QCOW2_MAGIC = 0x514649fb;
/** Smallest cluster_bits (512-byte clusters; qcow2.txt "Header", bytes 20-23). */
export const QCOW2_MIN_CLUSTER_BITS = 9;
/** Largest cluster_bits QEMU opens (2 MiB clusters; qcow2.txt "Header", bytes 20-23). */
export const QCOW2_MAX_CLUSTER_BITS = 21;
/** QEMU's cap on the L1 table: 32 MiB (qcow2.txt "Header", bytes 24-31 note). */
export const QCOW2_MAX_L1_BYTES = 32 << 20;
/** QEMU's cap on the refcount table: 8 MiB (qcow2.txt "Host cluster management"). */
export const QCOW2_MAX_REFTABLE_BYTES = 8 << 20;
/** QEMU's cap on internal snapshots (QCOW_MAX_SNAPSHOTS). */
export const QCOW2_MAX_SNAPSHOTS = 65536;
/** Longest backing file name (qcow2.txt "Header", bytes 16-19). */
export const QCOW2_MAX_BACKING_NAME = 1023;
/** Size of the version 2 header (qcow2.txt "Header"). */
export const QCOW2_V2_HEADER_LENGTH = 72;
/** Smallest version 3 header (qcow2.txt "Header"). */
export const QCOW2_V3_HEADER_LENGTH = 104;

/** incompatible_features bits (qcow2.txt "Header", bytes 72-79). */
export const Qcow2Incompatible = {
  /** Bit 0: refcounts may be inconsistent; repair before writing. */
  DIRTY: 1,
  /** Bit 1: any structure may be corrupt; do not write. */
  CORRUPT: 2,
  /** Bit 2: guest data lives in an external data file. */
  DATA_FILE: 4,
  /** Bit 3: compression_type is not zlib. */
  COMPRESSION: 8,
  /** Bit 4: extended (128-bit) L2 entries with subclusters. */
  EXTL2: 16,
} as const;

/** compatible_features bits (qcow2.txt "Header", bytes 80-87). */
export const Qcow2Compatible = {
  /** Bit 0: lazy refcounts (mark dirty, postpone refcount updates). */
  LAZY_REFCOUNTS: 1,
} as const;

/** Header extension types (qcow2.txt "Header extensions"). */
export const Qcow2Extension = {
  END: 0,
  BACKING_FORMAT: 0xe2792aca,
  FEATURE_TABLE: 0x6803f857,
  BITMAPS: 0x23852875,
  CRYPTO: 0x0537be77,
  DATA_FILE: 0x44415441,
} as const;

/** Flags in the high word of an L1 or L2 entry (qcow2.txt "Cluster mapping"). */
export const Qcow2EntryFlag = {
  /** Bit 63: refcount is exactly one (writes may go in place). */
  COPIED: 0x8000_0000,
  /** Bit 62 (L2): the cluster is compressed. */
  COMPRESSED: 0x4000_0000,
} as const;

/** Bit 0 of a standard cluster descriptor (low word): reads as zeroes (version 3). */
export const QCOW2_ZERO_FLAG = 1;
/** Mask of the host offset in the high word of an L1 / standard L2 entry (bits 32-55). */
export const QCOW2_OFFSET_HI_MASK = 0x00ff_ffff;
/** Mask of the host offset in the low word of an L1 / standard L2 entry (bits 9-31). */
export const QCOW2_OFFSET_LO_MASK = 0xffff_fe00;

/** Byte offsets of the header fields (qcow2.txt "Header"). */
export const Qcow2HeaderField = {
  magic: 0,
  version: 4,
  backing_file_offset: 8,
  backing_file_size: 16,
  cluster_bits: 20,
  size: 24,
  crypt_method: 32,
  l1_size: 36,
  l1_table_offset: 40,
  refcount_table_offset: 48,
  refcount_table_clusters: 56,
  nb_snapshots: 60,
  snapshots_offset: 64,
  incompatible_features: 72,
  compatible_features: 80,
  autoclear_features: 88,
  refcount_order: 96,
  header_length: 100,
  compression_type: 104,
} as const;

/** The header fields, validated (qcow2.txt "Header"). */
export interface Qcow2Header {
  readonly version: 2 | 3;
  readonly backingFileOffset: number;
  readonly backingFileSize: number;
  readonly clusterBits: number;
  /** Virtual disk size in bytes. */
  readonly size: number;
  readonly cryptMethod: number;
  readonly l1Size: number;
  readonly l1TableOffset: number;
  readonly refcountTableOffset: number;
  readonly refcountTableClusters: number;
  readonly nbSnapshots: number;
  readonly snapshotsOffset: number;
  readonly incompatibleFeatures: number;
  readonly compatibleFeatures: number;
  readonly autoclearFeatures: number;
  readonly refcountOrder: number;
  readonly headerLength: number;
  /** The backing file name, when there is one. */
  readonly backingFile: string | undefined;
  /** The backing file format from the header extension (e.g. `"raw"`, `"qcow2"`). */
  readonly backingFormat: string | undefined;
}

/**
 * A qcow2 image that cannot be opened: `field` names the header field or table, `rule`
 * the rule of qcow2.txt (or QEMU's limit) it breaks.
 */
export class Qcow2FormatError extends Error {
  override readonly name = "Qcow2FormatError";
  /**
   * @param field - the header field or structure at fault (e.g. `"cluster_bits"`)
   * @param rule - the rule it breaks, as a sentence fragment
   * @param detail - what the image holds
   */
  constructor(
    readonly field: string,
    readonly rule: string,
    detail: string,
  ) {
    super(`qcow2 ${field}: ${rule} (${detail})`);
  }
}

const TWO32 = 2 ** 32;

/** Reads a big-endian u64 as a number; values above 2^53 become `Infinity`. */
export function readU64(view: DataView, at: number): number {
  const hi = view.getUint32(at);
  const lo = view.getUint32(at + 4);
  return hi >= 0x20_0000 ? Number.POSITIVE_INFINITY : hi * TWO32 + lo;
}

/** Writes a non-negative integer below 2^53 as a big-endian u64. */
export function writeU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, Math.floor(value / TWO32));
  view.setUint32(at + 4, value >>> 0);
}

/** Whether `[a, a + al)` and `[b, b + bl)` share a byte. */
export function overlaps(a: number, al: number, b: number, bl: number): boolean {
  return al > 0 && bl > 0 && a < b + bl && b < a + al;
}

/** Number of guest clusters one L2 table maps (qcow2.txt "Cluster mapping"). */
export function l2Entries(clusterBits: number): number {
  return 2 ** (clusterBits - 3);
}

/** The L1 size needed to map `size` bytes with `clusterBits` (qcow2.txt "Cluster mapping"). */
export function l1EntriesFor(size: number, clusterBits: number): number {
  return Math.ceil(size / 2 ** (clusterBits * 2 - 3));
}

/**
 * Parses and validates the header (and its extensions) in the image's first cluster.
 * Every size and offset is checked against `fileLength` and QEMU's limits, so opening
 * a hostile image never allocates more than the file holds nor loops.
 *
 * @param head - the first bytes of the file: at least the first cluster, or the whole
 *   file when it is shorter (read 2 MiB, the largest cluster, or less)
 * @param fileLength - the image file's length in bytes
 * @throws Qcow2FormatError naming the field and the rule it breaks
 */
export function parseQcow2Header(head: Uint8Array, fileLength: number): Qcow2Header {
  const fail = (field: string, rule: string, detail: string): never => {
    throw new Qcow2FormatError(field, rule, detail);
  };
  if (head.length < QCOW2_V2_HEADER_LENGTH)
    fail("header", "the file must hold at least the 72-byte header", `${head.length} bytes`);
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const magic = v.getUint32(0);
  if (magic !== QCOW2_MAGIC)
    fail("magic", 'must be "QFI\\xfb" (0x514649fb)', `0x${magic.toString(16)}`);
  const version = v.getUint32(4);
  if (version !== 2 && version !== 3) fail("version", "must be 2 or 3", String(version));
  const clusterBits = v.getUint32(20);
  if (clusterBits < QCOW2_MIN_CLUSTER_BITS || clusterBits > QCOW2_MAX_CLUSTER_BITS)
    fail(
      "cluster_bits",
      `must be ${QCOW2_MIN_CLUSTER_BITS}..${QCOW2_MAX_CLUSTER_BITS} (512 B to QEMU's limit of 2 MiB clusters)`,
      String(clusterBits),
    );
  const cs = 2 ** clusterBits;
  const headerLength = version === 2 ? QCOW2_V2_HEADER_LENGTH : v.getUint32(100);
  if (version === 3) {
    if (head.length < QCOW2_V3_HEADER_LENGTH)
      fail("header", "a version 3 file must hold at least the 104-byte header", `${head.length}`);
    if (headerLength < QCOW2_V3_HEADER_LENGTH || headerLength % 8 !== 0 || headerLength > cs)
      fail(
        "header_length",
        "must be at least 104, a multiple of 8, and within the first cluster",
        `${headerLength} with ${cs}-byte clusters`,
      );
  }
  if (head.length < Math.min(cs, fileLength))
    fail("header", "the first cluster must be readable", `${head.length} of ${cs} bytes`);
  const size = readU64(v, 24);
  // A virtual disk past 2^53 bytes cannot be addressed exactly in JavaScript.
  if (!Number.isSafeInteger(size))
    fail("size", "must be below 2^53 bytes", `0x${v.getUint32(24).toString(16)}...`);
  const cryptMethod = v.getUint32(32);
  if (cryptMethod !== 0)
    fail("crypt_method", "encrypted images are not supported (must be 0)", String(cryptMethod));
  const l1Size = v.getUint32(36);
  if (l1Size * 8 > QCOW2_MAX_L1_BYTES)
    fail("l1_size", "must be at most 4 Mi entries (QEMU's 32 MiB L1 limit)", String(l1Size));
  const needL1 = l1EntriesFor(size, clusterBits);
  if (l1Size < needL1)
    fail("l1_size", "must cover the virtual size", `${l1Size} entries, ${needL1} needed`);
  const l1TableOffset = readU64(v, 40);
  const refcountTableOffset = readU64(v, 48);
  const refcountTableClusters = v.getUint32(56);
  const nbSnapshots = v.getUint32(60);
  const snapshotsOffset = readU64(v, 64);
  const inFile = (field: string, offset: number, length: number): void => {
    if (!Number.isSafeInteger(offset) || offset % cs !== 0)
      fail(field, "must be aligned to a cluster boundary", String(offset));
    // qemu-img leaves an all-zero table unwritten at the end of the file: a table may
    // start at the end (and read as zeroes), but not past it.
    if (offset > Math.ceil(fileLength / cs) * cs)
      fail(
        field,
        "the table must start within the file",
        `${length} bytes at ${offset}, file is ${fileLength} bytes`,
      );
  };
  if (l1Size > 0) inFile("l1_table_offset", l1TableOffset, l1Size * 8);
  if (refcountTableClusters === 0)
    fail("refcount_table_clusters", "must be at least 1 (the image needs a refcount table)", "0");
  if (refcountTableClusters * cs > QCOW2_MAX_REFTABLE_BYTES)
    fail(
      "refcount_table_clusters",
      "must be at most 8 MiB of table (QEMU's limit)",
      `${refcountTableClusters} clusters of ${cs} bytes`,
    );
  inFile("refcount_table_offset", refcountTableOffset, refcountTableClusters * cs);
  if (nbSnapshots > QCOW2_MAX_SNAPSHOTS)
    fail("nb_snapshots", "must be at most 65536 (QEMU's limit)", String(nbSnapshots));
  if (nbSnapshots > 0) inFile("snapshots_offset", snapshotsOffset, 40 * nbSnapshots);
  // Tables may not overlap the header cluster or each other (CVE-2014-0144 class).
  const l1Bytes = l1Size * 8;
  const rtBytes = refcountTableClusters * cs;
  if (overlaps(l1TableOffset, l1Bytes, 0, cs))
    fail(
      "l1_table_offset",
      "the L1 table must not overlap the header cluster",
      String(l1TableOffset),
    );
  if (overlaps(refcountTableOffset, rtBytes, 0, cs))
    fail(
      "refcount_table_offset",
      "the refcount table must not overlap the header cluster",
      String(refcountTableOffset),
    );
  if (overlaps(l1TableOffset, l1Bytes, refcountTableOffset, rtBytes))
    fail(
      "l1_table_offset",
      "the L1 table must not overlap the refcount table",
      `L1 at ${l1TableOffset}, refcount table at ${refcountTableOffset}`,
    );
  if (nbSnapshots > 0 && overlaps(snapshotsOffset, 40 * nbSnapshots, 0, cs))
    fail(
      "snapshots_offset",
      "the snapshot table must not overlap the header cluster",
      String(snapshotsOffset),
    );

  let incompatibleFeatures = 0;
  let compatibleFeatures = 0;
  let autoclearFeatures = 0;
  let refcountOrder = 4;
  if (version === 3) {
    if (v.getUint32(72) !== 0 || v.getUint32(76) >= 32)
      fail(
        "incompatible_features",
        "unknown bits (5-63) are set; an implementation must fail to open such an image",
        `0x${v.getUint32(72).toString(16)}${v.getUint32(76).toString(16).padStart(8, "0")}`,
      );
    incompatibleFeatures = v.getUint32(76);
    if (incompatibleFeatures & Qcow2Incompatible.DATA_FILE)
      fail("incompatible_features", "external data files (bit 2) are not supported", "bit 2 set");
    if (incompatibleFeatures & Qcow2Incompatible.EXTL2)
      fail("incompatible_features", "extended L2 entries (bit 4) are not supported", "bit 4 set");
    if (incompatibleFeatures & Qcow2Incompatible.COMPRESSION) {
      const type = headerLength > 104 ? head[104]! : 0;
      if (type !== 0) fail("compression_type", "only zlib (0) is supported", String(type));
    }
    compatibleFeatures = v.getUint32(84);
    autoclearFeatures = v.getUint32(92);
    refcountOrder = v.getUint32(96);
    if (refcountOrder > 6)
      fail("refcount_order", "must be at most 6 (64-bit refcounts)", String(refcountOrder));
  }

  // Backing file name: within the first cluster, after the header (QEMU's checks).
  const backingFileOffset = readU64(v, 8);
  const backingFileSize = v.getUint32(16);
  let backingFile: string | undefined;
  if (backingFileOffset !== 0) {
    if (backingFileSize > QCOW2_MAX_BACKING_NAME)
      fail("backing_file_size", "must not be longer than 1023 bytes", String(backingFileSize));
    if (
      !Number.isSafeInteger(backingFileOffset) ||
      backingFileOffset < headerLength ||
      backingFileOffset + backingFileSize > Math.min(cs, head.length)
    )
      fail(
        "backing_file_offset",
        "the backing file name must lie in the first cluster, after the header",
        `${backingFileSize} bytes at ${backingFileOffset}`,
      );
    backingFile = new TextDecoder().decode(
      head.subarray(backingFileOffset, backingFileOffset + backingFileSize),
    );
    if (backingFile.length === 0)
      fail("backing_file_size", "a backing file name must not be empty", "0");
  }

  // Header extensions: from header_length to the backing name (or the cluster's end).
  let backingFormat: string | undefined;
  const extEnd = Math.min(backingFileOffset !== 0 ? backingFileOffset : cs, head.length);
  let at = headerLength;
  while (at + 8 <= extEnd) {
    const type = v.getUint32(at);
    const len = v.getUint32(at + 4);
    if (type === Qcow2Extension.END) break;
    if (at + 8 + len > extEnd)
      fail(
        "header extension",
        "must end within the first cluster (before the backing file name)",
        `type 0x${type.toString(16)}, ${len} bytes at ${at}`,
      );
    if (type === Qcow2Extension.BACKING_FORMAT) {
      backingFormat = new TextDecoder().decode(head.subarray(at + 8, at + 8 + len));
    } else if (type === Qcow2Extension.CRYPTO || type === Qcow2Extension.DATA_FILE) {
      fail(
        "header extension",
        "encryption and external data files are not supported",
        `type 0x${type.toString(16)}`,
      );
    }
    at += 8 + Math.ceil(len / 8) * 8; // always advances: the walk ends within the cluster
  }
  return {
    version: version as 2 | 3,
    backingFileOffset,
    backingFileSize,
    clusterBits,
    size,
    cryptMethod,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    nbSnapshots,
    snapshotsOffset,
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    backingFile,
    backingFormat,
  };
}

/** What {@link encodeQcow2Header} writes (a fresh image's header). */
export interface Qcow2HeaderInit {
  readonly version: 2 | 3;
  readonly clusterBits: number;
  readonly size: number;
  readonly l1Size: number;
  readonly l1TableOffset: number;
  readonly refcountTableOffset: number;
  readonly refcountTableClusters: number;
  readonly compatibleFeatures: number;
  readonly refcountOrder: number;
  readonly backingFile?: string | undefined;
  readonly backingFormat?: string | undefined;
}

/**
 * Encodes a header cluster: the header, a backing format extension when given, the end
 * extension, and the backing file name after it (qcow2.txt "Header", "Header extensions").
 *
 * @throws RangeError when the extensions and name do not fit in the first cluster
 */
export function encodeQcow2Header(init: Qcow2HeaderInit): Uint8Array {
  const cs = 2 ** init.clusterBits;
  const out = new Uint8Array(cs);
  const v = new DataView(out.buffer);
  const hl = init.version === 2 ? QCOW2_V2_HEADER_LENGTH : QCOW2_V3_HEADER_LENGTH;
  v.setUint32(0, QCOW2_MAGIC);
  v.setUint32(4, init.version);
  v.setUint32(20, init.clusterBits);
  writeU64(v, 24, init.size);
  v.setUint32(36, init.l1Size);
  writeU64(v, 40, init.l1TableOffset);
  writeU64(v, 48, init.refcountTableOffset);
  v.setUint32(56, init.refcountTableClusters);
  if (init.version === 3) {
    writeU64(v, 80, init.compatibleFeatures);
    v.setUint32(96, init.refcountOrder);
    v.setUint32(100, hl);
  }
  let at = hl;
  const enc = new TextEncoder();
  if (init.backingFormat !== undefined) {
    const f = enc.encode(init.backingFormat);
    v.setUint32(at, Qcow2Extension.BACKING_FORMAT);
    v.setUint32(at + 4, f.length);
    out.set(f, at + 8);
    at += 8 + Math.ceil(f.length / 8) * 8;
  }
  at += 8; // the end-of-extensions marker (zeroes)
  if (init.backingFile !== undefined) {
    const name = enc.encode(init.backingFile);
    if (name.length === 0 || name.length > QCOW2_MAX_BACKING_NAME || at + name.length > cs)
      throw new RangeError(
        `qcow2 backing file name must be 1..1023 bytes and fit in the first cluster, got ${name.length}`,
      );
    writeU64(v, 8, at);
    v.setUint32(16, name.length);
    out.set(name, at);
    at += name.length;
  }
  if (at > cs) throw new RangeError("qcow2 header extensions do not fit in the first cluster");
  return out;
}
