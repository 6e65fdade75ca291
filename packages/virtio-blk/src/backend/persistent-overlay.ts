/**
 * A persistent {@link OverlayDisk}: the top's bytes in a sparse raw file `<path>` and the
 * allocation map in `<path>.map`, so the overlay survives a restart or a crash.
 *
 * Map file layout (little-endian): two copies ("slots") of
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 8 | magic `PVKOVMAP` |
 * | 8 | 4 | format version (1) |
 * | 12 | 4 | header size (512) |
 * | 16 | 8 | generation (grows by one per stored map) |
 * | 24 | 8 | the disk's size in bytes (the base's `byteLength`) |
 * | 32 | 4 | cluster size in bytes |
 * | 36 | 4 | number of clusters |
 * | 40 | 4 | CRC-32 (IEEE) of the slot with this field zeroed |
 * | 44 | 4 | base identity length in bytes (UTF-8, ≤ 256) |
 * | 48 | 8 | the data file's size in bytes |
 * | 64 | 256 | base identity (e.g. an image's ETag or path), zero-padded |
 * | 512 | clusters | one {@link ClusterState} per cluster |
 *
 * Slot `g % 2` holds generation `g`; a save writes the older slot and `fdatasync`s it, so
 * the newest valid slot is always a map that was stored whole. The overlay's FLUSH syncs
 * the data file first and the map second (see {@link OverlayDisk.flush}): a SIGKILL or a
 * power cut after an acknowledged FLUSH loses nothing.
 *
 * Reopening checks both slots (magic, version, CRC) and takes the newest valid one, then
 * checks it against the base (size, identity), the options (cluster size) and the data
 * file (size); any mismatch is a {@link OverlayMapError}, never a silently wrong disk.
 *
 * Node-only (it imports `node:fs`); import it from `@pvkit/virtio-blk/node`.
 *
 * @module
 */

import * as fs from "node:fs";
import { dirname } from "node:path";
import * as zlib from "node:zlib";
import type { BlockBackend, BlockResult } from "./backend.js";
import { errnoOf } from "./backend.js";
import { FileDisk } from "./file-disk.js";
import { ClusterState, OverlayDisk, type OverlayMapStore } from "./overlay-disk.js";

const MAGIC = "PVKOVMAP";
const VERSION = 1;
const HEADER = 512;
const BASE_ID_AT = 64;
const BASE_ID_MAX = 256;
const CRC_AT = 40;

/** Why a persistent overlay's map cannot be used. */
export const OverlayMapErrorCode = {
  /** Neither copy of the map is whole (bad magic, version or CRC). */
  CORRUPT: "CORRUPT",
  /** The map was made for a base of another size or identity. */
  BASE_MISMATCH: "BASE_MISMATCH",
  /** The map's cluster size is not the one asked for. */
  CLUSTER_SIZE_MISMATCH: "CLUSTER_SIZE_MISMATCH",
  /** The data file is missing or not the size the map recorded. */
  DATA_MISMATCH: "DATA_MISMATCH",
} as const;

/** A value of {@link OverlayMapErrorCode}. */
export type OverlayMapErrorCode = (typeof OverlayMapErrorCode)[keyof typeof OverlayMapErrorCode];

/** A map file that does not fit its data file or base. */
export class OverlayMapError extends Error {
  override readonly name = "OverlayMapError";

  /**
   * @param code - what does not fit
   * @param message - which file, and what was expected and found
   */
  constructor(
    readonly code: OverlayMapErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Options of {@link openPersistentOverlay}. */
export interface PersistentOverlayOptions {
  /** Cluster size for a new overlay (a power of two ≥ 512; default 65536); checked on reopen. */
  readonly clusterSize?: number;
  /**
   * The base's identity (UTF-8, ≤ 256 bytes; e.g. `HttpDisk.etag` or an image path),
   * recorded in a new map and checked on reopen.
   */
  readonly baseId?: string;
}

/** The stored geometry of a map. */
interface MapHeader {
  generation: number;
  byteLength: number;
  clusterSize: number;
  clusters: number;
  dataBytes: number;
  baseId: string;
}

function crc32(bytes: Uint8Array): number {
  const f = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;
  if (typeof f !== "function")
    throw new Error("persistent overlays need zlib.crc32 (Node.js ≥ 20.15 or ≥ 22.2)");
  return f(bytes) >>> 0;
}

/** One slot's bytes: header, then the map. */
function encodeSlot(h: MapHeader, map: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER + map.length);
  const v = new DataView(out.buffer);
  out.set(new TextEncoder().encode(MAGIC), 0);
  v.setUint32(8, VERSION, true);
  v.setUint32(12, HEADER, true);
  v.setBigUint64(16, BigInt(h.generation), true);
  v.setBigUint64(24, BigInt(h.byteLength), true);
  v.setUint32(32, h.clusterSize, true);
  v.setUint32(36, h.clusters, true);
  const id = new TextEncoder().encode(h.baseId);
  v.setUint32(44, id.length, true);
  v.setBigUint64(48, BigInt(h.dataBytes), true);
  out.set(id, BASE_ID_AT);
  out.set(map, HEADER);
  v.setUint32(CRC_AT, crc32(out), true);
  return out;
}

/** A slot's header and map, or why it is not whole. */
function decodeSlot(bytes: Uint8Array): { header: MapHeader; map: Uint8Array } | string {
  if (bytes.length < HEADER) return "too short";
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) return "bad magic";
  if (v.getUint32(8, true) !== VERSION) return `unknown version ${v.getUint32(8, true)}`;
  if (v.getUint32(12, true) !== HEADER) return "bad header size";
  const clusters = v.getUint32(36, true);
  if (HEADER + clusters > bytes.length) return "map longer than the slot";
  const idLength = v.getUint32(44, true);
  if (idLength > BASE_ID_MAX) return "base identity too long";
  const whole = bytes.slice(0, HEADER + clusters);
  const stored = v.getUint32(CRC_AT, true);
  new DataView(whole.buffer).setUint32(CRC_AT, 0, true);
  if (crc32(whole) !== stored) return "CRC mismatch";
  const map = whole.subarray(HEADER);
  if (map.some((s) => s > ClusterState.ZERO)) return "unknown cluster state";
  return {
    header: {
      generation: Number(v.getBigUint64(16, true)),
      byteLength: Number(v.getBigUint64(24, true)),
      clusterSize: v.getUint32(32, true),
      clusters,
      dataBytes: Number(v.getBigUint64(48, true)),
      baseId: new TextDecoder().decode(bytes.subarray(BASE_ID_AT, BASE_ID_AT + idLength)),
    },
    map,
  };
}

/** Bytes one slot occupies in the file (header plus map, rounded up to 4 KiB). */
function slotBytes(clusters: number): number {
  return Math.ceil((HEADER + clusters) / 4096) * 4096;
}

/** The map file: two slots written alternately, each `fdatasync`ed. */
class MapFile implements OverlayMapStore {
  private closed = false;

  constructor(
    private readonly fd: number,
    private readonly header: MapHeader,
  ) {}

  /** Writes `map` as the next generation into the older slot and syncs it. */
  async save(map: Uint8Array): Promise<BlockResult> {
    if (this.closed) return "EIO";
    const h = { ...this.header, generation: this.header.generation + 1 };
    const slot = encodeSlot(h, map);
    try {
      await writeAll(this.fd, slot, (h.generation % 2) * slotBytes(h.clusters));
      await new Promise<void>((resolve, reject) =>
        fs.fdatasync(this.fd, (e) => (e ? reject(e) : resolve())),
      );
    } catch (err) {
      return errnoOf(err);
    }
    this.header.generation = h.generation;
    return undefined;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => fs.close(this.fd, () => resolve()));
  }
}

async function writeAll(fd: number, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const n = await new Promise<number>((resolve, reject) =>
      fs.write(fd, bytes, done, bytes.length - done, position + done, (e, w) =>
        e ? reject(e) : resolve(w),
      ),
    );
    if (n === 0) throw Object.assign(new Error("write made no progress"), { code: "EIO" });
    done += n;
  }
}

/**
 * Opens the persistent overlay at `path` over `base`, creating `path` (a sparse data file
 * of the base's size) and `path.map` when neither exists.
 *
 * @param base - the base disk (never written; e.g. a read-only `FileDisk` or an `HttpDisk`)
 * @param path - the data file; the map is `path + ".map"`
 * @param options - cluster size and base identity
 * @returns the overlay; its FLUSH persists data then map, its `close()` stores the map
 * @throws {@link OverlayMapError} when an existing map is corrupt or does not fit the
 *   base, the options or the data file; an `Error` when only one of the two files exists
 */
export async function openPersistentOverlay(
  base: BlockBackend,
  path: string,
  options: PersistentOverlayOptions = {},
): Promise<OverlayDisk> {
  const mapPath = `${path}.map`;
  const baseId = options.baseId ?? "";
  if (new TextEncoder().encode(baseId).length > BASE_ID_MAX)
    throw new RangeError(`openPersistentOverlay: baseId must be at most ${BASE_ID_MAX} bytes`);
  const dataExists = fs.existsSync(path);
  const mapExists = fs.existsSync(mapPath);
  if (!mapExists && !dataExists)
    return create(base, path, mapPath, options.clusterSize ?? 65536, baseId);
  if (!mapExists)
    throw new OverlayMapError(
      OverlayMapErrorCode.DATA_MISMATCH,
      `${path} exists but its map ${mapPath} does not: refusing to guess which clusters it holds`,
    );
  if (!dataExists)
    throw new OverlayMapError(
      OverlayMapErrorCode.DATA_MISMATCH,
      `${mapPath} exists but its data file ${path} does not`,
    );
  const bytes = new Uint8Array(await fs.promises.readFile(mapPath));
  const h0 = decodeSlot(bytes);
  const firstLength =
    typeof h0 === "string" ? slotBytesFromFile(bytes) : slotBytes(h0.header.clusters);
  const h1 = firstLength === undefined ? "missing" : decodeSlot(bytes.subarray(firstLength));
  const slots = [h0, h1].filter((s) => typeof s !== "string");
  if (slots.length === 0)
    throw new OverlayMapError(
      OverlayMapErrorCode.CORRUPT,
      `${mapPath}: neither copy of the map is whole (first: ${h0 as string}; second: ${h1 as string})`,
    );
  const newest = slots.reduce((a, b) => (b.header.generation > a.header.generation ? b : a));
  const h = newest.header;
  if (h.byteLength !== base.byteLength)
    throw new OverlayMapError(
      OverlayMapErrorCode.BASE_MISMATCH,
      `${mapPath}: the overlay was made over a base of ${h.byteLength} bytes, this base has ${base.byteLength}`,
    );
  if (options.baseId !== undefined && h.baseId !== baseId)
    throw new OverlayMapError(
      OverlayMapErrorCode.BASE_MISMATCH,
      `${mapPath}: the overlay was made over base ${JSON.stringify(h.baseId)}, not ${JSON.stringify(baseId)}`,
    );
  if (options.clusterSize !== undefined && h.clusterSize !== options.clusterSize)
    throw new OverlayMapError(
      OverlayMapErrorCode.CLUSTER_SIZE_MISMATCH,
      `${mapPath}: the map has ${h.clusterSize}-byte clusters, ${options.clusterSize} were asked for`,
    );
  if (
    h.clusterSize < 512 ||
    (h.clusterSize & (h.clusterSize - 1)) !== 0 ||
    h.clusters !== Math.ceil(h.byteLength / h.clusterSize)
  )
    throw new OverlayMapError(
      OverlayMapErrorCode.CORRUPT,
      `${mapPath}: ${h.clusters} clusters of ${h.clusterSize} bytes do not cover ${h.byteLength} bytes`,
    );
  const dataBytes = (await fs.promises.stat(path)).size;
  if (dataBytes !== h.dataBytes)
    throw new OverlayMapError(
      OverlayMapErrorCode.DATA_MISMATCH,
      `${path} is ${dataBytes} bytes, its map ${mapPath} expects ${h.dataBytes}`,
    );
  const top = await FileDisk.open(path);
  const mapFd = await openFd(mapPath);
  return new OverlayDisk(base, top, {
    clusterSize: h.clusterSize,
    map: newest.map,
    mapStore: new MapFile(mapFd, h),
  });
}

/** Where the second slot starts when the first is unreadable: from the file's length. */
function slotBytesFromFile(bytes: Uint8Array): number | undefined {
  return bytes.length >= 2 * 4096 && bytes.length % 2 === 0 ? bytes.length / 2 : undefined;
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.promises.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function openFd(path: string): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.open(path, "r+", (e, fd) => (e ? reject(e) : resolve(fd))),
  );
}

/** Creates the data file (sparse) and a map of generation 1, all BASE, synced before use. */
async function create(
  base: BlockBackend,
  path: string,
  mapPath: string,
  clusterSize: number,
  baseId: string,
): Promise<OverlayDisk> {
  if (clusterSize < 512 || (clusterSize & (clusterSize - 1)) !== 0 || clusterSize > 2 ** 30)
    throw new RangeError("openPersistentOverlay: clusterSize must be a power of two ≥ 512");
  const top = await FileDisk.open(path, { create: base.byteLength });
  const clusters = Math.ceil(base.byteLength / clusterSize);
  const header: MapHeader = {
    generation: 1,
    byteLength: base.byteLength,
    clusterSize,
    clusters,
    dataBytes: base.byteLength,
    baseId,
  };
  const map = new Uint8Array(clusters);
  await fs.promises.writeFile(mapPath, new Uint8Array(0));
  await fs.promises.truncate(mapPath, 2 * slotBytes(clusters));
  const fd = await openFd(mapPath);
  try {
    await writeAll(fd, encodeSlot(header, map), slotBytes(clusters)); // slot 1 = generation 1
    await new Promise<void>((resolve, reject) => fs.fsync(fd, (e) => (e ? reject(e) : resolve())));
    await top.flush();
    await syncDirectory(dirname(path)); // the two new names survive a power cut too
  } catch (err) {
    fs.closeSync(fd);
    await top.close();
    throw err;
  }
  return new OverlayDisk(base, top, { clusterSize, mapStore: new MapFile(fd, header) });
}
