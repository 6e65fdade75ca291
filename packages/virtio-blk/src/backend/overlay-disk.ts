/**
 * `OverlayDisk`: copy-on-write over a read-only base disk. Writes go to a private top
 * disk of the same size (sparse: a `MemoryDisk`, or a `FileDisk` on a sparse file); a
 * per-cluster allocation map says, for each cluster, whether it is still the base's, has
 * been written to the top, or reads as zeroes. Many guests can share one base image,
 * each with its own overlay.
 *
 * A partial write to a base cluster copies the cluster up (read base, merge, write the
 * whole cluster to the top) before the map says "top"; writes touching the same cluster
 * are serialised so two copy-ups never race. The map changes only after the top write
 * completed, so a read never sees a half-copied cluster.
 *
 * With a {@link OverlayMapStore} the map survives a restart: FLUSH first makes the top's
 * data durable, then stores the map as it was when the FLUSH began (data before map, so a
 * stored map never points at clusters whose bytes could be lost); a crash after an
 * acknowledged FLUSH loses nothing. `openPersistentOverlay` (from `@pvkit/virtio-blk/node`)
 * keeps the data and the map in two files.
 *
 * @module
 */

import type { BlockBackend, BlockErrno, BlockResult, MaybePromise } from "./backend.js";
import { iovLength, iovSlice } from "./backend.js";

/** Where a cluster's bytes are. */
export const ClusterState = {
  /** Unchanged: read from the base. */
  BASE: 0,
  /** Written: read from the top. */
  TOP: 1,
  /** Discarded / zeroed: reads as zeroes, nothing stored. */
  ZERO: 2,
} as const;

/**
 * Where an {@link OverlayDisk} keeps its allocation map between runs.
 * `openPersistentOverlay` (Node) provides one backed by a map file.
 */
export interface OverlayMapStore {
  /**
   * Stores `map` (one {@link ClusterState} per cluster) durably: once this succeeds the
   * map survives a crash, and a crash before leaves the previously stored map intact.
   */
  save(map: Uint8Array): MaybePromise<BlockResult>;
  /** Releases the store (closes files). */
  close(): MaybePromise<void>;
}

/** Options of {@link OverlayDisk}. */
export interface OverlayDiskOptions {
  /** Cluster size in bytes (a power of two ≥ 512; default 65536). */
  readonly clusterSize?: number;
  /**
   * The map to start from (a map stored by an earlier run), one {@link ClusterState} per
   * cluster; default all BASE. Copied.
   */
  readonly map?: Uint8Array;
  /** Stores the map at each FLUSH (and at close), so the overlay survives a restart. */
  readonly mapStore?: OverlayMapStore;
}

/** Copy-on-write over a read-only base. */
export class OverlayDisk implements BlockBackend {
  readonly readOnly = false;
  readonly byteLength: number;
  /** The allocation map, one {@link ClusterState} per cluster. */
  readonly map: Uint8Array;
  /** Cluster size in bytes. */
  readonly clusterSize: number;
  /** Clusters copied up from the base by partial writes. */
  copyUps = 0;
  private readonly locks = new Map<number, Promise<void>>();
  private readonly mapStore: OverlayMapStore | undefined;
  /** The map as last stored (to skip storing an unchanged map). */
  private storedMap: Uint8Array | undefined;
  /** The last FLUSH in the chain (FLUSHes store their maps in order). */
  private flushing: Promise<BlockResult> = Promise.resolve(undefined);

  /**
   * @param base - the shared base disk (never written)
   * @param top - private storage of the same size (only written clusters are touched)
   */
  constructor(
    readonly base: BlockBackend,
    readonly top: BlockBackend,
    options: OverlayDiskOptions = {},
  ) {
    this.clusterSize = options.clusterSize ?? 65536;
    const c = this.clusterSize;
    if (c < 512 || (c & (c - 1)) !== 0)
      throw new Error("cluster size must be a power of two ≥ 512");
    if (top.byteLength < base.byteLength || top.readOnly) {
      throw new Error("the top disk must be writable and at least as large as the base");
    }
    this.byteLength = base.byteLength;
    this.map = new Uint8Array(Math.ceil(this.byteLength / c));
    if (options.map !== undefined) {
      if (options.map.length !== this.map.length || options.map.some((s) => s > ClusterState.ZERO))
        throw new Error(
          `the initial map must hold ${this.map.length} cluster states (0 BASE, 1 TOP, 2 ZERO)`,
        );
      this.map.set(options.map);
    }
    this.mapStore = options.mapStore;
    if (this.mapStore !== undefined) this.storedMap = this.map.slice();
  }

  /** Number of clusters held by the top disk. */
  get allocatedClusters(): number {
    let n = 0;
    for (const s of this.map) if (s === ClusterState.TOP) n++;
    return n;
  }

  async readv(offset: number, buffers: readonly Uint8Array[]): Promise<BlockResult> {
    const total = iovLength(buffers);
    const c = this.clusterSize;
    let pos = 0;
    while (pos < total) {
      // One run of clusters in the same state.
      const cluster = Math.floor((offset + pos) / c);
      const state = this.map[cluster]!;
      let runEnd = (cluster + 1) * c - offset;
      while (runEnd < total && this.map[Math.floor((offset + runEnd) / c)] === state) runEnd += c;
      runEnd = Math.min(runEnd, total);
      const part = iovSlice(buffers, pos, runEnd);
      if (state === ClusterState.ZERO) for (const b of part) b.fill(0);
      else {
        const r = await (state === ClusterState.TOP ? this.top : this.base).readv(
          offset + pos,
          part,
        );
        if (r !== undefined) return r;
      }
      pos = runEnd;
    }
    return undefined;
  }

  async writev(offset: number, buffers: readonly Uint8Array[]): Promise<BlockResult> {
    const total = iovLength(buffers);
    const c = this.clusterSize;
    const first = Math.floor(offset / c);
    const last = Math.floor((offset + total - 1) / c);
    return this.locked(first, last, async () => {
      for (let k = first; k <= last; k++) {
        const cStart = k * c;
        const from = Math.max(offset, cStart);
        const to = Math.min(offset + total, cStart + c, this.byteLength);
        const part = iovSlice(buffers, from - offset, to - offset);
        const whole = from === cStart && to === Math.min(cStart + c, this.byteLength);
        const r =
          whole || this.map[k] === ClusterState.TOP
            ? await this.top.writev(from, part)
            : await this.copyUp(k, from, part);
        if (r !== undefined) return r;
        this.map[k] = ClusterState.TOP;
      }
      return undefined;
    });
  }

  /** Writes a partial cluster: base (or zero) contents merged with the new bytes. */
  private async copyUp(k: number, from: number, part: Uint8Array[]): Promise<BlockResult> {
    const c = this.clusterSize;
    const cStart = k * c;
    const len = Math.min(c, this.byteLength - cStart);
    const merged = new Uint8Array(len);
    if (this.map[k] === ClusterState.BASE) {
      const r = await this.base.readv(cStart, [merged]);
      if (r !== undefined) return r;
    }
    let at = from - cStart;
    for (const b of part) {
      merged.set(b, at);
      at += b.length;
    }
    this.copyUps++;
    return this.top.writev(cStart, [merged]);
  }

  /**
   * Makes every completed write durable (§5.2.6.2). With a map store: flushes the top,
   * then stores the map as it was when this FLUSH began (data before map).
   */
  flush(): Promise<BlockResult> | BlockResult {
    const store = this.mapStore;
    if (store === undefined) return this.top.flush();
    const run = async (): Promise<BlockResult> => {
      // Every cluster marked TOP here had its top write completed: the flush below covers it.
      const snapshot = this.map.slice();
      const r = await this.top.flush();
      if (r !== undefined) return r;
      if (sameBytes(snapshot, this.storedMap)) return undefined;
      const s = await store.save(snapshot);
      if (s !== undefined) return s;
      this.storedMap = snapshot;
      return undefined;
    };
    const p = this.flushing.then(run, run);
    this.flushing = p;
    return p;
  }

  discard(offset: number, length: number): Promise<BlockResult> {
    return this.writeZeroes(offset, length);
  }

  /** Whole clusters become ZERO in the map (their top bytes dropped); partial ones are written with zeroes. */
  async writeZeroes(offset: number, length: number): Promise<BlockResult> {
    if (length === 0) return undefined;
    const c = this.clusterSize;
    const first = Math.floor(offset / c);
    const last = Math.floor((offset + length - 1) / c);
    return this.locked(first, last, async () => {
      for (let k = first; k <= last; k++) {
        const cStart = k * c;
        const cEnd = Math.min(cStart + c, this.byteLength);
        const from = Math.max(offset, cStart);
        const to = Math.min(offset + length, cEnd);
        if (from === cStart && to === cEnd) {
          if (this.map[k] === ClusterState.TOP) {
            const r = await this.top.discard(cStart, cEnd - cStart);
            if (r !== undefined) return r;
          }
          this.map[k] = ClusterState.ZERO;
          continue;
        }
        if (this.map[k] === ClusterState.ZERO) continue; // already zero
        const zeros = new Uint8Array(to - from);
        const r =
          this.map[k] === ClusterState.TOP
            ? await this.top.writev(from, [zeros])
            : await this.copyUp(k, from, [zeros]);
        if (r !== undefined) return r;
        this.map[k] = ClusterState.TOP;
      }
      return undefined;
    });
  }

  /** Runs `task` with clusters [first, last] locked against other writers. */
  private async locked(
    first: number,
    last: number,
    task: () => Promise<BlockResult>,
  ): Promise<BlockResult> {
    for (;;) {
      const waits: Promise<void>[] = [];
      for (let k = first; k <= last; k++) {
        const l = this.locks.get(k);
        if (l !== undefined) waits.push(l);
      }
      if (waits.length === 0) break;
      await Promise.all(waits);
    }
    let release!: () => void;
    const lock = new Promise<void>((r) => {
      release = r;
    });
    for (let k = first; k <= last; k++) this.locks.set(k, lock);
    try {
      return await task();
    } catch {
      return "EIO" satisfies BlockErrno;
    } finally {
      for (let k = first; k <= last; k++) this.locks.delete(k);
      release();
    }
  }

  /** Closes the top (after storing the map, when there is a map store). */
  async close(): Promise<void> {
    if (this.mapStore !== undefined) {
      await this.flush();
      await this.mapStore.close();
    }
    await this.top.close();
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array | undefined): boolean {
  if (b === undefined || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
