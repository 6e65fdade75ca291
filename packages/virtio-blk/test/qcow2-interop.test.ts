import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Qcow2Disk, Qcow2Incompatible } from "@pvkit/virtio-blk";
import { createQcow2, FileDisk, openQcow2 } from "@pvkit/virtio-blk/node";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { blkRig, expectSameBytes, pattern } from "./harness.js";
import { compressible, qemuCheck, qemuCompare, qemuContents, qemuImg, qemuIo } from "./qcow2.js";

const dir = mkdtempSync(join(tmpdir(), "pvkit-qcow2-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;
const tmp = (name: string): string => join(dir, `${serial++}-${name}`);

/** A raw image of `size` bytes: random runs, text runs and zero runs (holes). */
function mixedRaw(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  const chunk = 48 * 1024; // not a cluster multiple: runs straddle clusters
  for (let at = 0, k = 0; at < size; at += chunk, k++) {
    const n = Math.min(chunk, size - at);
    if (k % 3 === 0) out.set(pattern(seed + k, n), at);
    else if (k % 3 === 1) out.set(compressible(n, seed + k), at);
  }
  return out;
}

/** Reads the whole disk through the guest driver (VirtioBlkDriver → device → Qcow2Disk). */
async function readThroughGuest(disk: Qcow2Disk): Promise<Uint8Array> {
  const rig = blkRig(disk, { memoryBytes: 32 << 20 });
  const out = new Uint8Array(disk.byteLength);
  const step = 1 << 20;
  for (let at = 0; at < out.length; at += step) {
    const n = Math.min(step, out.length - at);
    out.set(await rig.driver.read(at / 512, n), at);
  }
  expect(rig.device.stats.errors).toEqual({});
  return out;
}

describe("qcow2 images made by qemu-img read byte-exact through the guest driver", () => {
  const SIZE = 3 << 20;
  const cases: Array<{ name: string; convert: string[]; compressed?: boolean }> = [
    { name: "version 3, 64 KiB clusters", convert: [] },
    {
      name: "version 2 (compat=0.10), 512-byte clusters",
      convert: ["-o", "compat=0.10,cluster_size=512"],
    },
    { name: "version 3, 2 MiB clusters", convert: ["-o", "cluster_size=2M"] },
    {
      name: "version 3, 1-bit refcounts, 4 KiB clusters",
      convert: ["-o", "refcount_bits=1,cluster_size=4k"],
    },
    { name: "compressed (-c), 64 KiB clusters", convert: ["-c"], compressed: true },
    {
      name: "compressed (-c), 4 KiB clusters, version 2",
      convert: ["-c", "-o", "compat=0.10,cluster_size=4k"],
      compressed: true,
    },
  ];
  it.each(cases)("$name", async ({ convert, compressed }) => {
    const raw = tmp("src.raw");
    const image = tmp("img.qcow2");
    const data = mixedRaw(SIZE, 11);
    writeFileSync(raw, data);
    qemuImg("convert", "-f", "raw", "-O", "qcow2", ...convert, raw, image);
    const disk = await openQcow2(image, { readOnly: true });
    expect(disk.byteLength).toBe(SIZE);
    expectSameBytes(await readThroughGuest(disk), data);
    if (compressed) expect(disk.stats.decompressed).toBeGreaterThan(0);
    expect(disk.corruption).toBeUndefined();
    await disk.close();
  });

  it("an overlay on a raw backing file, with data, zero clusters and a discard written by qemu-io", async () => {
    const base = tmp("base.raw");
    writeFileSync(base, pattern(21, SIZE));
    const top = tmp("top.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", top, String(SIZE + (1 << 20)));
    const io = qemuIo(top, [
      "write -P 0xab 100k 8k",
      "write -z 1M 128k", // zero clusters over backing data
      "write -P 0x11 2047k 3k",
      "discard 2560k 64k",
      "write -P 0x22 3200k 64k", // beyond the backing file's end
    ]);
    expect(io.status).toBe(0);
    const expected = qemuContents(top, tmp("expect.raw"));
    const disk = await openQcow2(top, { readOnly: true });
    expect(disk.backing).toBeInstanceOf(FileDisk);
    expectSameBytes(await readThroughGuest(disk), expected);
    expectSameBytes(expected.subarray(1 << 20, (1 << 20) + 4096), new Uint8Array(4096));
    await disk.close();
  });

  it("a chain of three qcow2 images (compressed base, relative backing names)", async () => {
    const raw = tmp("chain.raw");
    writeFileSync(raw, mixedRaw(SIZE, 31));
    const base = tmp("base.qcow2");
    qemuImg("convert", "-c", "-f", "raw", "-O", "qcow2", raw, base);
    const mid = tmp("mid.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", "-b", base.split("/").pop()!, "-F", "qcow2", mid);
    expect(qemuIo(mid, ["write -P 0x33 64k 192k", "write -z 512k 64k"]).status).toBe(0);
    const top = tmp("top.qcow2");
    qemuImg(
      "create",
      "-q",
      "-f",
      "qcow2",
      "-o",
      "cluster_size=4k",
      "-b",
      mid.split("/").pop()!,
      "-F",
      "qcow2",
      top,
    );
    expect(qemuIo(top, ["write -P 0x44 100k 4k", "write -P 0x55 600k 100k"]).status).toBe(0);
    const expected = qemuContents(top, tmp("chain-expect.raw"));
    const disk = await openQcow2(top, { readOnly: true });
    expect(disk.backing).toBeInstanceOf(Qcow2Disk);
    expectSameBytes(await readThroughGuest(disk), expected);
    await disk.close();
  });
});

type Op =
  | { kind: "write"; sector: number; sectors: number; seed: number }
  | { kind: "discard" | "zero"; sector: number; sectors: number }
  | { kind: "flush" };

const SIZE = 2 << 20;
const SECTORS = SIZE / 512;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("write" as const),
      sector: fc.nat(SECTORS - 1),
      sectors: fc.integer({ min: 1, max: 300 }),
      seed: fc.nat(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constantFrom("discard" as const, "zero" as const),
      sector: fc.nat(SECTORS - 1),
      sectors: fc.integer({ min: 1, max: 600 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "flush" as const }) },
);

interface Variant {
  name: string;
  /** Makes the image at `path`; the guest-visible contents it starts with. */
  make: (path: string) => Promise<Uint8Array>;
}

const variants: Variant[] = [
  {
    name: "pvkit-created, version 3, 64 KiB clusters",
    make: async (path) => {
      await createQcow2(path, { size: SIZE });
      return new Uint8Array(SIZE);
    },
  },
  {
    name: "pvkit-created, version 2, 512-byte clusters",
    make: async (path) => {
      await createQcow2(path, { size: SIZE, version: 2, clusterBits: 9 });
      return new Uint8Array(SIZE);
    },
  },
  {
    name: "pvkit-created, 1-bit refcounts, 512-byte clusters (refcount table growth)",
    make: async (path) => {
      await createQcow2(path, { size: SIZE, clusterBits: 9, refcountOrder: 0 });
      return new Uint8Array(SIZE);
    },
  },
  {
    name: "qemu-img create, lazy_refcounts, 4 KiB clusters, 64-bit refcounts",
    make: async (path) => {
      qemuImg(
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "lazy_refcounts=on,cluster_size=4k,refcount_bits=64",
        path,
        String(SIZE),
      );
      return new Uint8Array(SIZE);
    },
  },
  {
    name: "qemu-img convert -c (writes over compressed clusters), 8 KiB clusters",
    make: async (path) => {
      const raw = `${path}.src`;
      const data = mixedRaw(SIZE, 41);
      writeFileSync(raw, data);
      qemuImg("convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=8k", raw, path);
      return data;
    },
  },
  {
    name: "qemu-img create over a raw backing file, version 2",
    make: async (path) => {
      const base = `${path}.base`;
      const data = pattern(51, SIZE - 64 * 1024); // shorter than the overlay
      writeFileSync(base, data);
      qemuImg(
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10,cluster_size=4k",
        "-b",
        base,
        "-F",
        "raw",
        path,
        String(SIZE),
      );
      const initial = new Uint8Array(SIZE);
      initial.set(data);
      return initial;
    },
  },
  {
    name: "pvkit-created over a qcow2 backing file, version 3",
    make: async (path) => {
      const raw = `${path}.src`;
      const data = mixedRaw(SIZE, 61);
      writeFileSync(raw, data);
      qemuImg("convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=16k", raw, `${path}.base`);
      await createQcow2(path, {
        size: SIZE,
        clusterBits: 12,
        backingFile: `${path}.base`,
        backingFormat: "qcow2",
      });
      return data;
    },
  },
];

describe.each(variants)("qcow2 images pvkit wrote: $name", ({ make }) => {
  it("random guest writes, discards and write-zeroes: qemu-img check is clean and compare is equal", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(opArb, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 5 }),
        async (batches) => {
          const path = tmp("rw.qcow2");
          const model = await make(path);
          const disk = await openQcow2(path);
          const rig = blkRig(disk, { memoryBytes: 32 << 20, device: { maxInFlight: 8 } });
          for (const batch of batches) {
            // Ops of one batch run concurrently: keep their ranges disjoint so the model is exact.
            const taken = new Uint8Array(SECTORS);
            const ops = batch.filter((op) => {
              if (op.kind === "flush") return true;
              const end = Math.min(op.sector + op.sectors, SECTORS);
              op.sectors = end - op.sector;
              if (taken.subarray(op.sector, end).some((t) => t !== 0)) return false;
              taken.fill(1, op.sector, end);
              return true;
            });
            await Promise.all(
              ops.map((op) => {
                if (op.kind === "write")
                  return rig.driver.write(op.sector, pattern(op.seed, op.sectors * 512));
                if (op.kind === "flush") return rig.driver.flush();
                const range = [{ sector: op.sector, sectors: op.sectors }];
                return op.kind === "discard"
                  ? rig.driver.discard(range)
                  : rig.driver.writeZeroes(range, true);
              }),
            );
            for (const op of ops) {
              if (op.kind === "write")
                model.set(pattern(op.seed, op.sectors * 512), op.sector * 512);
              else if (op.kind !== "flush")
                model.fill(0, op.sector * 512, (op.sector + op.sectors) * 512);
            }
            expectSameBytes(await rig.driver.read(0, SIZE), model);
          }
          expect(rig.device.stats.errors).toEqual({});
          expect(disk.corruption).toBeUndefined();
          await disk.close();
          const check = qemuCheck(path);
          expect(check.out).toContain("No errors were found on the image.");
          expect(check.status).toBe(0);
          writeFileSync(`${path}.expect`, model);
          expect(qemuCompare(path, `${path}.expect`)).toMatchObject({ status: 0 });
        },
      ),
      { seed: 0x9c02, numRuns: 3 },
    );
  });
});

describe("qcow2 allocation details", () => {
  it("grows the refcount table when the image outgrows it, and qemu-img agrees", async () => {
    const path = tmp("grow.qcow2");
    await createQcow2(path, { size: 8 << 20, clusterBits: 9, refcountOrder: 6 });
    const disk = await openQcow2(path);
    const data = pattern(71, 8 << 20);
    expect(await disk.writev(0, [data])).toBeUndefined();
    expect(await disk.flush()).toBeUndefined();
    expect(disk.stats.refcountTableGrowths).toBeGreaterThan(0);
    await disk.close();
    expect(qemuCheck(path)).toMatchObject({ status: 0 });
    writeFileSync(`${path}.expect`, data);
    expect(qemuCompare(path, `${path}.expect`)).toMatchObject({ status: 0 });
  });

  it("discard returns clusters: rewriting the same amount after a FLUSH does not grow the file", async () => {
    const path = tmp("reuse.qcow2");
    await createQcow2(path, { size: 4 << 20, clusterBits: 16 });
    const disk = await openQcow2(path);
    const rig = blkRig(disk, { memoryBytes: 16 << 20 });
    await rig.driver.write(0, pattern(1, 2 << 20));
    await rig.driver.flush();
    const allocated = disk.stats.allocatedClusters;
    await rig.driver.discard([{ sector: 0, sectors: (2 << 20) / 512 }]);
    await rig.driver.flush(); // the L2 entries are durable: the clusters return to the pool
    expect(disk.stats.freedClusters).toBe(32);
    await rig.driver.write(4096, pattern(2, 2 << 20));
    await rig.driver.flush();
    expect(disk.stats.allocatedClusters - allocated).toBe(32 + 0); // reused, no new L2 table needed
    await disk.close();
    const size = readFileSync(path).length;
    expect(size).toBeLessThanOrEqual((2 << 20) + 6 * 65536); // header, L1, refcounts, L2, data
    expect(qemuCheck(path)).toMatchObject({ status: 0 });
  });

  it("a partial write over the backing file copies the rest of the cluster from it", async () => {
    const base = tmp("cow.raw");
    writeFileSync(base, pattern(81, 1 << 20));
    const path = tmp("cow.qcow2");
    await createQcow2(path, { size: 1 << 20, backingFile: base, backingFormat: "raw" });
    const disk = await openQcow2(path);
    const rig = blkRig(disk);
    await rig.driver.write(3, pattern(82, 1024));
    expect(disk.stats.copyOnWrite).toBe(1);
    const want = pattern(81, 1 << 20);
    want.set(pattern(82, 1024), 1536);
    expectSameBytes(await rig.driver.read(0, 1 << 20), want);
    await disk.close();
    expect(qemuCheck(path)).toMatchObject({ status: 0 });
    expectSameBytes(qemuContents(path, tmp("cow-out.raw")), want);
  });
});

describe("qcow2 metadata under pressure and crashes", () => {
  it("a small L2 cache: dirty tables are written back in order without a FLUSH, and reloaded", async () => {
    const path = tmp("small-cache.qcow2");
    await createQcow2(path, { size: SIZE, clusterBits: 9 }); // 64 L2 tables of 32 KiB each
    const disk = await openQcow2(path, { l2CacheBytes: 0 }); // the minimum: 8 tables
    const rig = blkRig(disk);
    const model = new Uint8Array(SIZE);
    for (let k = 0; k < 64; k++) {
      const data = pattern(k, 1024);
      await rig.driver.write(k * 64 + 3, data);
      model.set(data, (k * 64 + 3) * 512);
    }
    expect(disk.stats.syncs).toBeGreaterThan(0); // metadata went out before any FLUSH
    const misses = disk.stats.l2Misses;
    expectSameBytes(await rig.driver.read(0, SIZE), model);
    expect(disk.stats.l2Misses).toBeGreaterThan(misses);
    await disk.close();
    expect(qemuCheck(path)).toMatchObject({ status: 0 });
    writeFileSync(`${path}.expect`, model);
    expect(qemuCompare(path, `${path}.expect`)).toMatchObject({ status: 0 });
  });

  it("a crash (the file closed under the disk) after writes, discards and FLUSHes leaves at most leaks", async () => {
    const path = tmp("crash.qcow2");
    await createQcow2(path, { size: SIZE, clusterBits: 12 });
    const file = await FileDisk.open(path);
    const disk = await Qcow2Disk.open(file);
    const rig = blkRig(disk);
    const flushed = new Uint8Array(SIZE);
    for (let round = 0; round < 4; round++) {
      const data = pattern(round, 256 << 10);
      await rig.driver.write(round * 512, data);
      flushed.set(data, round * 512 * 512);
      await rig.driver.discard([{ sector: round * 512 + 64, sectors: 64 }]); // frees 8 clusters
      flushed.fill(0, (round * 512 + 64) * 512, (round * 512 + 128) * 512);
      await rig.driver.flush();
    }
    // Unflushed work: new clusters, and a discard whose frees are still pending.
    await rig.driver.write(3000, pattern(9, 64 << 10));
    await rig.driver.discard([{ sector: 0, sectors: 256 }]);
    await file.close(); // the process "dies": no FLUSH, no clean close
    const check = qemuCheck(path);
    expect([0, 3]).toContain(check.status); // leaks at most, never a refcount below its use
    expect(qemuCheck(path, "leaks").status).toBe(0);
    expect(qemuCheck(path)).toMatchObject({ status: 0 });
    const after = qemuContents(path, tmp("crash.raw"));
    // Everything flushed is there, except what the later (unflushed) ops may have changed.
    expectSameBytes(after.subarray(256 << 10, 1500 * 512), flushed.subarray(256 << 10, 1500 * 512));
  });
});

describe("the dirty bit and lazy_refcounts, as QEMU does", () => {
  it("marks a lazy-refcount image dirty while writing and clean at close", async () => {
    const path = tmp("lazy.qcow2");
    await createQcow2(path, { size: 1 << 20, lazyRefcounts: true });
    const disk = await openQcow2(path);
    const dirty = (): number => readFileSync(path).readUInt32BE(76);
    expect(dirty() & Qcow2Incompatible.DIRTY).toBe(0);
    await disk.writev(0, [pattern(1, 65536)]);
    expect(dirty() & Qcow2Incompatible.DIRTY).toBe(Qcow2Incompatible.DIRTY);
    await disk.close();
    expect(dirty() & Qcow2Incompatible.DIRTY).toBe(0);
    expect(qemuCheck(path)).toMatchObject({ status: 0 });
  });

  it("repairs the refcounts of an image QEMU left dirty (qemu-io abort with lazy_refcounts) before writing", async () => {
    const path = tmp("qemu-dirty.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", path, String(4 << 20));
    const io = qemuIo(path, ["write -P 0x5a 0 256k", "write -P 0x6b 1M 64k", "abort"]);
    expect(io.signal).toBe("SIGABRT");
    expect(qemuCheck(path).status).toBe(2); // refcounts are behind: QEMU calls them errors
    const disk = await openQcow2(path);
    const rig = blkRig(disk);
    await rig.driver.write(2048, pattern(5, 65536)); // 1 MiB: over QEMU's unaccounted cluster
    await rig.driver.write(4096, pattern(6, 65536)); // 2 MiB: a new cluster
    await disk.close();
    expect(qemuCheck(path)).toMatchObject({ status: 0 });
    const want = new Uint8Array(4 << 20);
    want.fill(0x5a, 0, 256 << 10);
    want.set(pattern(5, 65536), 1 << 20);
    want.set(pattern(6, 65536), 2 << 20);
    writeFileSync(`${path}.expect`, want);
    expect(qemuCompare(path, `${path}.expect`)).toMatchObject({ status: 0 });
  });

  it("reads a dirty image opened read-only without touching it", async () => {
    const path = tmp("ro-dirty.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", path, String(1 << 20));
    expect(qemuIo(path, ["write -P 0x77 0 64k", "abort"]).signal).toBe("SIGABRT");
    const before = readFileSync(path);
    const disk = await openQcow2(path, { readOnly: true });
    const got = await readThroughGuest(disk);
    expectSameBytes(got.subarray(0, 65536), new Uint8Array(65536).fill(0x77));
    await disk.close();
    expectSameBytes(readFileSync(path), before);
  });
});
