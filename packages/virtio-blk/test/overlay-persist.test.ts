import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type BlockBackend,
  type BlockResult,
  ClusterState,
  HttpDisk,
  MemoryDisk,
  OverlayDisk,
  type OverlayMapStore,
} from "@pvkit/virtio-blk";
import {
  FileDisk,
  OverlayMapError,
  OverlayMapErrorCode,
  openPersistentOverlay,
} from "@pvkit/virtio-blk/node";
import { afterAll, describe, expect, it } from "vitest";
import { checkDurability, runAndKill } from "./durability.js";
import { blkRig, expectSameBytes, pattern } from "./harness.js";
import { serveImage } from "./http-server.js";

const dir = mkdtempSync(join(tmpdir(), "pvkit-overlay-persist-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const DISK = 2 << 20;
let n = 0;
/** A fresh base image file with a pattern; its path and bytes. */
function baseImage(seed: number, size = DISK): { path: string; bytes: Uint8Array } {
  const path = join(dir, `img-${n++}`);
  const bytes = pattern(seed, size);
  writeFileSync(`${path}.base`, bytes);
  return { path, bytes };
}

async function readAll(disk: BlockBackend): Promise<Uint8Array> {
  const out = new Uint8Array(disk.byteLength);
  expect(await disk.readv(0, [out])).toBeUndefined();
  return out;
}

describe("persistent OverlayDisk durability across SIGKILL (§5.2.6.2 FLUSH)", () => {
  it.each([
    [1, 2],
    [2, 5],
    [3, 0],
  ])(
    "seed %i: every write acknowledged before the FLUSH of round %i is in the overlay after a SIGKILL",
    async (seed, killAfter) => {
      const { path, bytes } = baseImage(seed + 10);
      const lines = await runAndKill(path, seed, killAfter, "overlay");
      const base = await FileDisk.open(`${path}.base`, { readOnly: true });
      const overlay = await openPersistentOverlay(base, path, { clusterSize: 4096 });
      expect(overlay.allocatedClusters).toBeGreaterThan(0);
      const v = checkDurability(lines, killAfter, await readAll(overlay), bytes);
      expect(v.acked.length).toBe(v.issuedBefore); // every write up to the flush acknowledged
      expect(v.acked.length).toBeGreaterThan(10);
      expect(v.lost).toBe(0);
      await overlay.close();
      await base.close();
      // The base file was never written.
      expectSameBytes(new Uint8Array(readFileSync(`${path}.base`)), bytes);
    },
  );
});

describe("persistent OverlayDisk across a restart", () => {
  it("keeps written, copied-up and zeroed clusters through the guest driver after close and reopen", async () => {
    const { path, bytes } = baseImage(5);
    const base = await FileDisk.open(`${path}.base`, { readOnly: true });
    const model = bytes.slice();
    let overlay = await openPersistentOverlay(base, path, { clusterSize: 4096, baseId: "base-5" });
    let rig = blkRig(overlay);
    const w = pattern(6, 3 * 4096 + 1024); // partial clusters at the end: a copy-up
    await rig.driver.write(16, w);
    model.set(w, 16 * 512);
    await rig.driver.writeZeroes([{ sector: 256, sectors: 64 }]); // 8 whole clusters
    model.fill(0, 256 * 512, 320 * 512);
    await rig.driver.flush();
    const map = overlay.map.slice();
    expect(map[2]).toBe(ClusterState.TOP);
    expect(map[32]).toBe(ClusterState.ZERO);
    await overlay.close();

    overlay = await openPersistentOverlay(base, path, { clusterSize: 4096, baseId: "base-5" });
    expectSameBytes(overlay.map, map);
    rig = blkRig(overlay);
    expectSameBytes(await rig.driver.read(0, DISK), model);
    // A write after the reopen, stored by close() alone (no FLUSH from the guest).
    const w2 = pattern(7, 4096);
    await rig.driver.write(2048, w2);
    model.set(w2, 2048 * 512);
    await overlay.close();
    overlay = await openPersistentOverlay(base, path);
    expect(overlay.clusterSize).toBe(4096); // taken from the map
    expectSameBytes(await readAll(overlay), model);
    await overlay.close();
    await base.close();
  });

  it("persists an overlay over an HttpDisk base, pinned to the image's ETag", async () => {
    const image = pattern(8, 1 << 20);
    const server = await serveImage(image);
    try {
      const path = join(dir, "http-overlay");
      const http = await HttpDisk.open(server.url, { chunkSize: 65536 });
      let overlay = await openPersistentOverlay(http, path, { baseId: http.etag ?? "" });
      const w = pattern(9, 8192);
      expect(await overlay.writev(65536 + 512, [w])).toBeUndefined();
      expect(await overlay.flush()).toBeUndefined();
      await overlay.close();
      overlay = await openPersistentOverlay(http, path, { baseId: '"v1"' });
      const model = image.slice();
      model.set(w, 65536 + 512);
      expectSameBytes(await readAll(overlay), model);
      await overlay.close();
      // The image changed: its new ETag does not match the overlay's base.
      await expect(openPersistentOverlay(http, path, { baseId: '"v2"' })).rejects.toMatchObject({
        code: OverlayMapErrorCode.BASE_MISMATCH,
      });
      await http.close();
    } finally {
      await server.close();
    }
  });
});

describe("persistent OverlayDisk refuses a map that does not fit", () => {
  /** An overlay at a fresh path with one flushed write (generation 2 in slot 0). */
  async function made(): Promise<{ path: string; base: FileDisk }> {
    const { path } = baseImage(20, 1 << 20);
    const base = await FileDisk.open(`${path}.base`, { readOnly: true });
    const overlay = await openPersistentOverlay(base, path, { clusterSize: 4096, baseId: "b" });
    expect(await overlay.writev(0, [pattern(1, 4096)])).toBeUndefined();
    expect(await overlay.flush()).toBeUndefined();
    await overlay.close();
    return { path, base };
  }
  const SLOT = 4096; // 512-byte header + 256 clusters, rounded up to 4 KiB
  const flip = (b: Buffer, at: number, bits: number): void => {
    b[at] = (b[at] ?? 0) ^ bits;
  };

  it("falls back to the other copy when the newest is damaged, and fails when both are", async () => {
    const { path, base } = await made();
    const map = readFileSync(`${path}.map`);
    expect(map.length).toBe(2 * SLOT);
    flip(map, 512, 0xff); // slot 0 (generation 2): its first cluster's state
    writeFileSync(`${path}.map`, map);
    const older = await openPersistentOverlay(base, path);
    expect(older.map[0]).toBe(ClusterState.BASE); // generation 1: before the write
    await older.close(); // nothing changed since the open: nothing stored
    const again = readFileSync(`${path}.map`);
    flip(again, SLOT + 40, 1); // slot 1's CRC
    flip(again, 12, 1); // slot 0's header size
    writeFileSync(`${path}.map`, again);
    const e = await openPersistentOverlay(base, path).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(OverlayMapError);
    expect(e).toMatchObject({ code: OverlayMapErrorCode.CORRUPT });
    expect((e as Error).message).toMatch(/neither copy of the map is whole.*CRC mismatch/);
    await base.close();
  });

  it("a base of another size, another identity, another cluster size, a resized or missing data file", async () => {
    const { path, base } = await made();
    const smaller = new MemoryDisk(512 << 10);
    await expect(openPersistentOverlay(smaller, path)).rejects.toMatchObject({
      code: OverlayMapErrorCode.BASE_MISMATCH,
      message: expect.stringMatching(/base of 1048576 bytes, this base has 524288/),
    });
    await expect(openPersistentOverlay(base, path, { baseId: "other" })).rejects.toMatchObject({
      code: OverlayMapErrorCode.BASE_MISMATCH,
    });
    await expect(openPersistentOverlay(base, path, { clusterSize: 65536 })).rejects.toMatchObject({
      code: OverlayMapErrorCode.CLUSTER_SIZE_MISMATCH,
    });
    truncateSync(path, 4096);
    await expect(openPersistentOverlay(base, path)).rejects.toMatchObject({
      code: OverlayMapErrorCode.DATA_MISMATCH,
      message: expect.stringMatching(/is 4096 bytes, its map .* expects 1048576/),
    });
    rmSync(path);
    await expect(openPersistentOverlay(base, path)).rejects.toMatchObject({
      code: OverlayMapErrorCode.DATA_MISMATCH,
    });
    rmSync(`${path}.map`);
    writeFileSync(path, new Uint8Array(1 << 20));
    await expect(openPersistentOverlay(base, path)).rejects.toMatchObject({
      code: OverlayMapErrorCode.DATA_MISMATCH,
      message: expect.stringMatching(/map .* does not/),
    });
    await base.close();
  });
});

describe("OverlayDisk FLUSH ordering with a map store", () => {
  /** A top whose flush waits until released, logging calls. */
  function slowTop(size: number, log: string[]) {
    const mem = new MemoryDisk(size);
    let release = (): void => {};
    const top: BlockBackend = {
      byteLength: size,
      readOnly: false,
      readv: (o, b) => mem.readv(o, b),
      writev: (o, b) => mem.writev(o, b),
      discard: (o, l) => mem.discard(o, l),
      writeZeroes: (o, l) => mem.writeZeroes(o, l),
      close: () => {},
      flush: () => {
        log.push("top.flush");
        return new Promise<BlockResult>((r) => {
          release = () => r(undefined);
        });
      },
    };
    return { top, release: () => release() };
  }

  it("syncs the data before storing the map, and stores only the map as the FLUSH began", async () => {
    const log: string[] = [];
    const saved: Uint8Array[] = [];
    const store: OverlayMapStore = {
      save: (m) => {
        log.push("map.save");
        saved.push(m.slice());
        return undefined;
      },
      close: () => {},
    };
    const { top, release } = slowTop(8192, log);
    const overlay = new OverlayDisk(new MemoryDisk(8192), top, {
      clusterSize: 4096,
      mapStore: store,
    });
    expect(await overlay.writev(0, [pattern(1, 4096)])).toBeUndefined();
    const flushed = overlay.flush();
    await Promise.resolve();
    // A write completing while the data sync runs is not in this FLUSH's map.
    expect(await overlay.writev(4096, [pattern(2, 4096)])).toBeUndefined();
    expect(log).toEqual(["top.flush"]);
    release();
    expect(await flushed).toBeUndefined();
    expect(log).toEqual(["top.flush", "map.save"]);
    expect([...saved[0]!]).toEqual([ClusterState.TOP, ClusterState.BASE]);
    // The next FLUSH stores it; a FLUSH with nothing changed stores nothing.
    const f2 = overlay.flush();
    await new Promise((r) => setTimeout(r, 0));
    release();
    expect(await f2).toBeUndefined();
    expect([...saved[1]!]).toEqual([ClusterState.TOP, ClusterState.TOP]);
    const f3 = overlay.flush();
    await new Promise((r) => setTimeout(r, 0));
    release();
    expect(await f3).toBeUndefined();
    expect(saved).toHaveLength(2);
  });

  it("a failed data sync stores no map and fails the FLUSH; a failed map store fails it too", async () => {
    let saves = 0;
    let saveResult: BlockResult = "EIO";
    const store: OverlayMapStore = {
      save: () => {
        saves++;
        return saveResult;
      },
      close: () => {},
    };
    const top = new MemoryDisk(8192);
    const failing = Object.assign(Object.create(top) as MemoryDisk, {
      flush: () => "EIO" as const,
    });
    const o1 = new OverlayDisk(new MemoryDisk(8192), failing, {
      clusterSize: 4096,
      mapStore: store,
    });
    await o1.writev(0, [pattern(1, 4096)]);
    expect(await o1.flush()).toBe("EIO");
    expect(saves).toBe(0);
    const o2 = new OverlayDisk(new MemoryDisk(8192), top, { clusterSize: 4096, mapStore: store });
    await o2.writev(0, [pattern(1, 4096)]);
    expect(await o2.flush()).toBe("EIO");
    saveResult = undefined;
    expect(await o2.flush()).toBeUndefined(); // tried again: the map was not stored
    expect(saves).toBe(2);
  });

  it("rejects an initial map of the wrong length or with unknown states", () => {
    const base = new MemoryDisk(8192);
    expect(
      () =>
        new OverlayDisk(base, new MemoryDisk(8192), { clusterSize: 4096, map: new Uint8Array(3) }),
    ).toThrow(/initial map must hold 2 cluster states/);
    expect(
      () =>
        new OverlayDisk(base, new MemoryDisk(8192), {
          clusterSize: 4096,
          map: Uint8Array.of(0, 3),
        }),
    ).toThrow(/initial map/);
  });
});
