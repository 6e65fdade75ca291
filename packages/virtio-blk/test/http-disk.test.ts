import { readFileSync } from "node:fs";
import {
  HttpDisk,
  HttpDiskError,
  HttpDiskErrorCode,
  type HttpDiskOptions,
  MemoryDisk,
  OverlayDisk,
  VirtioBlkStatus,
} from "@pvkit/virtio-blk";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { blkRig, expectSameBytes, pattern } from "./harness.js";
import { type ImageServer, serveImage } from "./http-server.js";

const SIZE = 1 << 20; // 1 MiB image
const CHUNK = 64 << 10;
const IMAGE = pattern(41, SIZE);
/** Fast retries so the failure tests take milliseconds. */
const QUICK: HttpDiskOptions = {
  chunkSize: CHUNK,
  retries: 3,
  retryDelayMs: 1,
  maxRetryDelayMs: 4,
};

let server: ImageServer;
beforeAll(async () => {
  server = await serveImage(IMAGE);
});
afterEach(() => {
  // Every test starts from a well-behaved server with the original file.
  server.image = IMAGE;
  server.etag = '"v1"';
  server.lastModified = "Tue, 01 Dec 2026 10:00:00 GMT";
  server.honourIfRange = true;
  server.misbehave = () => undefined;
  server.seen.length = 0;
});
afterAll(() => server.close());

async function read(disk: HttpDisk, offset: number, length: number): Promise<Uint8Array | string> {
  const out = new Uint8Array(length);
  const r = await disk.readv(offset, [out]);
  return r ?? out;
}

const ranges = (): (string | undefined)[] => server.seen.map((s) => s.range);

describe("HttpDisk reads with range requests (RFC 9110 §14)", () => {
  it("opens with one ranged GET, learns the size and ETag, and serves reads through the guest driver", async () => {
    const disk = await HttpDisk.open(server.url, { chunkSize: CHUNK });
    expect(disk.byteLength).toBe(SIZE);
    expect(disk.etag).toBe('"v1"');
    expect(disk.readOnly).toBe(true);
    expect(ranges()).toEqual([`bytes=0-${CHUNK - 1}`]);
    const rig = blkRig(disk);
    expect(rig.driver.info.readOnly).toBe(true);
    expect(rig.driver.info.capacity).toBe(SIZE / 512);
    // Chunk 0 was kept from the probe: no request.
    expectSameBytes(await rig.driver.read(8, 4096), IMAGE.subarray(4096, 8192));
    expect(server.seen.length).toBe(1);
    // Sectors spanning chunks 2 and 3.
    const at = 3 * CHUNK - 2048;
    expectSameBytes(await rig.driver.read(at / 512, 8192), IMAGE.subarray(at, at + 8192));
    expect(ranges().slice(1).sort()).toEqual([
      `bytes=${2 * CHUNK}-${3 * CHUNK - 1}`,
      `bytes=${3 * CHUNK}-${4 * CHUNK - 1}`,
    ]);
    // Every later request carries the pinned ETag as If-Range (§13.1.5).
    expect(server.seen.slice(1).every((s) => s.ifRange === '"v1"')).toBe(true);
    expect(disk.stats).toMatchObject({ requests: 3, misses: 2, bytesFetched: 3 * CHUNK });
    await rig.driver.read(at / 512, 8192);
    expect(server.seen.length).toBe(3); // cached
    await disk.close();
  });

  it("refuses writes with EROFS and the guest's writes fail with IOERR", async () => {
    const disk = await HttpDisk.open(server.url, QUICK);
    expect(disk.writev()).toBe("EROFS");
    expect(disk.discard()).toBe("EROFS");
    expect(disk.writeZeroes()).toBe("EROFS");
    const rig = blkRig(disk);
    await expect(rig.driver.write(0, pattern(1, 512))).rejects.toMatchObject({
      status: VirtioBlkStatus.IOERR,
    });
    expect(server.seen.every((s) => s.status === 206)).toBe(true);
    await disk.close();
  });

  it("merges concurrent reads of the same chunk into one request", async () => {
    const disk = await HttpDisk.open(server.url, QUICK);
    const k = 5 * CHUNK;
    const reads = Array.from({ length: 8 }, (_, i) => read(disk, k + i * 4096, 4096));
    const got = await Promise.all(reads);
    got.forEach((g, i) => {
      expectSameBytes(g as Uint8Array, IMAGE.subarray(k + i * 4096, k + (i + 1) * 4096));
    });
    expect(ranges().filter((r) => r === `bytes=${k}-${k + CHUNK - 1}`)).toHaveLength(1);
    expect(disk.stats.merged).toBe(7);
    await disk.close();
  });

  it("keeps the cache within its byte budget, evicting the least recently used chunk", async () => {
    const disk = await HttpDisk.open(server.url, { ...QUICK, cacheBytes: 3 * CHUNK });
    for (let k = 1; k <= 6; k++) await read(disk, k * CHUNK, 512);
    expect(disk.cachedByteCount).toBeLessThanOrEqual(3 * CHUNK);
    expect(disk.cachedChunks).toBe(3); // chunks 4, 5, 6
    await read(disk, 4 * CHUNK, 512); // 4 becomes most recent
    const before = server.seen.length;
    await read(disk, 7 * CHUNK, 512); // evicts 5
    await read(disk, 4 * CHUNK, 512); // still cached
    expect(server.seen.length).toBe(before + 1);
    await read(disk, 5 * CHUNK, 512); // evicted: fetched again
    expect(server.seen.length).toBe(before + 2);
    expect(disk.stats.evictions).toBeGreaterThanOrEqual(4);
    await disk.close();
  });

  it("with a zero cache still serves a read spanning many chunks from one fetch each", async () => {
    const disk = await HttpDisk.open(server.url, { ...QUICK, chunkSize: 4096, cacheBytes: 0 });
    const bufs = [new Uint8Array(1536), new Uint8Array(8192), new Uint8Array(512)];
    expect(await disk.readv(4096 + 512, bufs)).toBeUndefined();
    const all = new Uint8Array(10240);
    let at = 0;
    for (const b of bufs) {
      all.set(b, at);
      at += b.length;
    }
    expectSameBytes(all, IMAGE.subarray(4608, 4608 + 10240));
    expect(disk.cachedByteCount).toBe(0);
    expect(disk.stats.misses).toBe(3);
    await disk.close();
  });

  it("sizes the disk in whole sectors and reads the last partial chunk exactly", async () => {
    const odd = pattern(9, 3 * CHUNK + 1536 + 100); // a 100-byte tail past the last sector
    const s = await serveImage(odd);
    try {
      const disk = await HttpDisk.open(s.url, QUICK);
      expect(disk.fileSize).toBe(odd.length);
      expect(disk.byteLength).toBe(3 * CHUNK + 1536);
      const got = await read(disk, 3 * CHUNK, 1536);
      expectSameBytes(got as Uint8Array, odd.subarray(3 * CHUNK, 3 * CHUNK + 1536));
      expect(s.seen.at(-1)?.range).toBe(`bytes=${3 * CHUNK}-${3 * CHUNK + 1535}`);
      expect(await read(disk, 3 * CHUNK, 2048)).toBe("EIO"); // past the end
      await disk.close();
    } finally {
      await s.close();
    }
  });

  it("opens an empty file as a zero-sized disk (416 with bytes */0)", async () => {
    const s = await serveImage(new Uint8Array(0));
    try {
      const disk = await HttpDisk.open(s.url, QUICK);
      expect(disk.byteLength).toBe(0);
      expect(s.seen.map((r) => r.status)).toEqual([416]);
    } finally {
      await s.close();
    }
  });

  it("pins Last-Modified for If-Range when the ETag is weak", async () => {
    server.etag = 'W/"weak"';
    const disk = await HttpDisk.open(server.url, QUICK);
    expect(disk.etag).toBeNull();
    await read(disk, 2 * CHUNK, 512);
    expect(server.seen.at(-1)?.ifRange).toBe("Tue, 01 Dec 2026 10:00:00 GMT");
    server.lastModified = "Wed, 02 Dec 2026 10:00:00 GMT";
    expect(await read(disk, 3 * CHUNK, 512)).toBe("EIO");
    expect(disk.lastError?.code).toBe(HttpDiskErrorCode.CHANGED);
    await disk.close();
  });

  it("is browser-safe: the module imports nothing from Node and uses the global fetch", () => {
    const source = readFileSync(new URL("../src/backend/http-disk.ts", import.meta.url), "utf8");
    const imports = [...source.matchAll(/^import .* from "([^"]+)";$/gm)].map((m) => m[1]);
    expect(imports).toEqual(["@pvkit/platform", "./backend.js", "./backend.js"]);
    expect(source).toContain("globalThis.fetch(");
  });

  it("checks its options", async () => {
    const bad: [unknown, unknown, RegExp][] = [
      ["not a url", {}, /url must be a URL/],
      [server.url, { chunkSize: 1000 }, /chunkSize must be a power of two/],
      [server.url, { chunkSize: 256 }, /chunkSize/],
      [server.url, { cacheBytes: -1 }, /cacheBytes/],
      [server.url, { retries: 1.5 }, /retries/],
      [server.url, { timeoutMs: 0 }, /timeoutMs/],
      [server.url, { headers: { a: 1 } }, /headers/],
      [server.url, { fetch: 3 }, /fetch/],
      [server.url, null, /options object/],
    ];
    for (const [url, options, message] of bad) {
      await expect(HttpDisk.open(url as string, options as HttpDiskOptions)).rejects.toThrow(
        message,
      );
    }
    expect(server.seen.length).toBe(0);
  });
});

describe("HttpDisk against hostile or failing servers", () => {
  it("retries a connection dropped mid-body and then returns the right bytes", async () => {
    const disk = await HttpDisk.open(server.url, QUICK);
    server.misbehave = (n) => (n < 3 ? { kind: "drop" } : undefined);
    const got = await read(disk, 4 * CHUNK, 8192);
    expectSameBytes(got as Uint8Array, IMAGE.subarray(4 * CHUNK, 4 * CHUNK + 8192));
    expect(disk.stats.retries).toBe(2);
    expect(disk.lastError?.code).toBe(HttpDiskErrorCode.NETWORK);
    await disk.close();
  });

  it("gives up after the retries: the guest's read completes with IOERR, it does not hang", async () => {
    const disk = await HttpDisk.open(server.url, QUICK);
    const rig = blkRig(disk);
    server.misbehave = () => ({ kind: "drop" });
    const before = server.seen.length;
    await expect(rig.driver.read((6 * CHUNK) / 512, 4096)).rejects.toMatchObject({
      status: VirtioBlkStatus.IOERR,
    });
    expect(server.seen.length - before).toBe(4); // one try + 3 retries
    expect(disk.lastError?.code).toBe(HttpDiskErrorCode.NETWORK);
    expect(rig.device.stats.errors.BACKEND_EIO).toBe(1);
    // Not a permanent failure: the next read works once the server does.
    server.misbehave = () => undefined;
    expectSameBytes(
      await rig.driver.read((6 * CHUNK) / 512, 4096),
      IMAGE.subarray(6 * CHUNK, 6 * CHUNK + 4096),
    );
    await disk.close();
  });

  it("backs off exponentially up to the cap between tries", async () => {
    const disk = await HttpDisk.open(server.url, {
      chunkSize: CHUNK,
      retries: 4,
      retryDelayMs: 20,
      maxRetryDelayMs: 50,
    });
    const times: number[] = [];
    server.misbehave = () => {
      times.push(performance.now());
      return { kind: "status", status: 503 };
    };
    expect(await read(disk, 2 * CHUNK, 512)).toBe("EIO");
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps).toHaveLength(4);
    // 20, 40, 50 (capped), 50 ms, give or take the timer's slack.
    for (const [i, want] of [20, 40, 50, 50].entries()) {
      expect(gaps[i]!).toBeGreaterThanOrEqual(want - 2);
      expect(gaps[i]!).toBeLessThan(want + 100);
    }
    expect(disk.lastError).toMatchObject({ code: HttpDiskErrorCode.HTTP_STATUS, status: 503 });
    await disk.close();
  });

  it("does not retry a 404", async () => {
    const disk = await HttpDisk.open(server.url, QUICK);
    server.misbehave = () => ({ kind: "status", status: 404 });
    expect(await read(disk, 2 * CHUNK, 512)).toBe("EIO");
    expect(server.seen.length).toBe(2);
    expect(disk.lastError).toMatchObject({ code: HttpDiskErrorCode.HTTP_STATUS, status: 404 });
    await disk.close();
  });

  it("refuses to open a server that ignores Range, with a clear error", async () => {
    server.misbehave = () => ({ kind: "ignore-range" });
    const e = await HttpDisk.open(server.url, QUICK).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(HttpDiskError);
    expect(e).toMatchObject({ code: HttpDiskErrorCode.RANGE_IGNORED, status: 200 });
    expect((e as Error).message).toMatch(/ignores Range.*200 with the whole file/);
    expect(server.seen.length).toBe(1); // not retried
  });

  it("a server that starts ignoring Range fails the read and every later one, never returning whole-file bytes", async () => {
    const disk = await HttpDisk.open(server.url, QUICK);
    const rig = blkRig(disk);
    server.misbehave = () => ({ kind: "ignore-range" });
    await expect(rig.driver.read((2 * CHUNK) / 512, 512)).rejects.toMatchObject({
      status: VirtioBlkStatus.IOERR,
    });
    expect(disk.failed?.code).toBe(HttpDiskErrorCode.RANGE_IGNORED);
    server.misbehave = () => undefined;
    const n = server.seen.length;
    // Even the cached chunk 0 is refused now, and nothing is sent.
    await expect(rig.driver.read(0, 512)).rejects.toMatchObject({ status: VirtioBlkStatus.IOERR });
    expect(server.seen.length).toBe(n);
    await disk.close();
  });

  it("detects a file changed mid-way: If-Range makes the server send the new file, which is refused", async () => {
    const disk = await HttpDisk.open(server.url, QUICK);
    await read(disk, 2 * CHUNK, 512);
    server.image = pattern(77, SIZE);
    server.etag = '"v2"';
    expect(await read(disk, 3 * CHUNK, 512)).toBe("EIO");
    expect(disk.failed?.code).toBe(HttpDiskErrorCode.CHANGED);
    expect(disk.failed?.message).toMatch(/ETag "v2", was "v1"/);
    expect(server.seen.at(-1)).toMatchObject({ ifRange: '"v1"', status: 200 });
    expect(await read(disk, 2 * CHUNK, 512)).toBe("EIO"); // cached, but the disk is poisoned
  });

  it("detects a changed ETag even from a server that ignores If-Range", async () => {
    const disk = await HttpDisk.open(server.url, QUICK);
    server.honourIfRange = false;
    server.etag = '"v2"';
    expect(await read(disk, 3 * CHUNK, 512)).toBe("EIO");
    expect(disk.failed?.code).toBe(HttpDiskErrorCode.CHANGED);
    expect(server.seen.at(-1)?.status).toBe(206);
    expect(server.seen.length).toBe(2); // not retried
  });

  it("detects a changed size in Content-Range", async () => {
    const disk = await HttpDisk.open(server.url, QUICK);
    server.honourIfRange = false;
    server.image = pattern(41, 2 * SIZE);
    expect(await read(disk, 3 * CHUNK, 512)).toBe("EIO");
    expect(disk.failed?.code).toBe(HttpDiskErrorCode.CHANGED);
    expect(disk.failed?.message).toMatch(/now 2097152 bytes, it was 1048576/);
  });

  it("refuses a Content-Range that is not the range asked for (shifted data or a lying header)", async () => {
    for (const how of [{ kind: "shift-range", by: 512 }, { kind: "lie-range" }] as const) {
      const disk = await HttpDisk.open(server.url, QUICK);
      server.misbehave = () => how;
      const before = server.seen.length;
      expect(await read(disk, 2 * CHUNK, 512)).toBe("EIO");
      expect(disk.lastError?.code).toBe(HttpDiskErrorCode.BAD_CONTENT_RANGE);
      expect(disk.lastError?.message).toMatch(/is not the range asked for/);
      expect(server.seen.length - before).toBe(1);
      expect(disk.cachedChunks).toBe(1); // only chunk 0 from the probe
      server.misbehave = () => undefined;
      await disk.close();
    }
  });

  it("refuses a short body and retries it", async () => {
    const disk = await HttpDisk.open(server.url, QUICK);
    server.misbehave = (n) => (n === 1 ? { kind: "short-body" } : undefined);
    const got = await read(disk, 2 * CHUNK, 4096);
    expectSameBytes(got as Uint8Array, IMAGE.subarray(2 * CHUNK, 2 * CHUNK + 4096));
    expect(disk.lastError?.code).toBe(HttpDiskErrorCode.SHORT_BODY);
    expect(disk.lastError?.message).toMatch(/ended after 32768 of 65536 bytes/);
    expect(disk.stats.retries).toBe(1);
    await disk.close();
  });

  it("times out a slow server, retries, and then fails the guest's read with IOERR", async () => {
    const disk = await HttpDisk.open(server.url, { ...QUICK, retries: 1, timeoutMs: 50 });
    const rig = blkRig(disk);
    server.misbehave = () => ({ kind: "delay", ms: 2000 });
    const t0 = performance.now();
    await expect(rig.driver.read((2 * CHUNK) / 512, 512)).rejects.toMatchObject({
      status: VirtioBlkStatus.IOERR,
    });
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(disk.lastError?.code).toBe(HttpDiskErrorCode.TIMEOUT);
    expect(disk.stats.retries).toBe(1);
    await disk.close();
  });

  it("close() aborts a read in flight: it fails at once with EIO", async () => {
    const disk = await HttpDisk.open(server.url, { ...QUICK, timeoutMs: 10_000 });
    server.misbehave = () => ({ kind: "delay", ms: 2000 });
    const pending = read(disk, 2 * CHUNK, 512);
    await new Promise((r) => setTimeout(r, 20));
    const t0 = performance.now();
    disk.close();
    expect(await pending).toBe("EIO");
    expect(performance.now() - t0).toBeLessThan(500);
    expect(await read(disk, 0, 512)).toBe("EIO");
  });
});

describe("OverlayDisk over HttpDisk", () => {
  it("makes a writable disk end to end through the guest driver; the server only sees reads", async () => {
    const base = await HttpDisk.open(server.url, QUICK);
    const overlay = new OverlayDisk(base, new MemoryDisk(SIZE), { clusterSize: 4096 });
    const rig = blkRig(overlay);
    expect(rig.driver.info.readOnly).toBe(false);
    const model = IMAGE.slice();
    const w1 = pattern(3, 6144); // partial clusters at both ends: copy-ups from the HTTP base
    await rig.driver.write((3 * CHUNK + 1024) / 512, w1);
    model.set(w1, 3 * CHUNK + 1024);
    const w2 = pattern(4, 512);
    await rig.driver.write(1, w2);
    model.set(w2, 512);
    await rig.driver.flush();
    expect(overlay.copyUps).toBe(3);
    expectSameBytes(await rig.driver.read(0, 8 * CHUNK), model.subarray(0, 8 * CHUNK));
    expectSameBytes(await rig.driver.read(0, SIZE), model);
    expect(server.seen.every((s) => s.status === 206 && s.range?.startsWith("bytes="))).toBe(true);
    // The base is untouched: a fresh HttpDisk reads the original bytes.
    const fresh = await HttpDisk.open(server.url, QUICK);
    expectSameBytes((await read(fresh, 0, 1024)) as Uint8Array, IMAGE.subarray(0, 1024));
    await fresh.close();
    await overlay.close();
    await base.close();
  });
});

describe("HttpDisk property: any readv equals the image", () => {
  it("random chunk sizes, cache budgets, offsets, lengths and buffer splits", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 9, max: 16 }), // chunk 512 B … 64 KiB
        fc.integer({ min: 0, max: 6 }), // cache: 0 … 6 chunks
        fc.array(
          fc.record({
            sector: fc.nat(SIZE / 512 - 1),
            sectors: fc.integer({ min: 1, max: 300 }),
            cuts: fc.array(fc.nat(300), { maxLength: 4 }),
          }),
          { minLength: 1, maxLength: 6 },
        ),
        async (chunkLog, cacheChunks, reads) => {
          const chunkSize = 2 ** chunkLog;
          const disk = await HttpDisk.open(server.url, {
            ...QUICK,
            chunkSize,
            cacheBytes: cacheChunks * chunkSize,
          });
          try {
            // Run the reads concurrently, as a queue of requests would.
            await Promise.all(
              reads.map(async ({ sector, sectors, cuts }) => {
                const n = Math.min(sectors, SIZE / 512 - sector);
                const points = [...new Set(cuts.map((c) => (c % n) * 512))].sort((a, b) => a - b);
                const bounds = [...points.filter((p) => p > 0), n * 512];
                const bufs: Uint8Array[] = [];
                let prev = 0;
                for (const b of bounds) {
                  bufs.push(new Uint8Array(b - prev));
                  prev = b;
                }
                expect(await disk.readv(sector * 512, bufs)).toBeUndefined();
                let at = sector * 512;
                for (const b of bufs) {
                  expectSameBytes(b, IMAGE.subarray(at, at + b.length));
                  at += b.length;
                }
              }),
            );
            expect(disk.cachedByteCount).toBeLessThanOrEqual(cacheChunks * chunkSize);
          } finally {
            await disk.close();
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});
