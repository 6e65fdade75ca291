import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BlkRequestError,
  type BlockBackend,
  MemoryDisk,
  OverlayDisk,
  VirtioBlkStatus,
  VirtioBlkType,
} from "@pvkit/virtio-blk";
import { FileDisk } from "@pvkit/virtio-blk/node";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { blkRig, expectSameBytes, pattern } from "./harness.js";

const DISK = 4 << 20; // 4 MiB, 8192 sectors
const SECTORS = DISK / 512;
const dir = mkdtempSync(join(tmpdir(), "pvkit-blk-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Op =
  | { kind: "read"; sector: number; sectors: number }
  | { kind: "write"; sector: number; sectors: number; seed: number }
  | { kind: "discard" | "zero"; sector: number; sectors: number }
  | { kind: "flush" };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("read" as const),
      sector: fc.nat(SECTORS - 1),
      sectors: fc.integer({ min: 1, max: 64 }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("write" as const),
      sector: fc.nat(SECTORS - 1),
      sectors: fc.integer({ min: 1, max: 64 }),
      seed: fc.nat(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constantFrom("discard" as const, "zero" as const),
      sector: fc.nat(SECTORS - 1),
      sectors: fc.integer({ min: 1, max: 256 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "flush" as const }) },
);

/** Ops of one batch may run concurrently: keep their ranges disjoint so the model is exact. */
function disjoint(ops: Op[]): Op[] {
  const taken = new Uint8Array(SECTORS);
  const out: Op[] = [];
  for (const op of ops) {
    if (op.kind === "flush") {
      out.push(op);
      continue;
    }
    const end = Math.min(op.sector + op.sectors, SECTORS);
    const clipped = { ...op, sectors: end - op.sector };
    if (taken.subarray(op.sector, end).some((t) => t !== 0)) continue;
    taken.fill(1, op.sector, end);
    out.push(clipped);
  }
  return out;
}

interface Backend {
  name: string;
  make: () => Promise<{
    backend: BlockBackend;
    initial: Uint8Array;
    raw: () => Promise<Uint8Array>;
  }>;
}

const backends: Backend[] = [
  {
    name: "MemoryDisk",
    make: async () => {
      const d = new MemoryDisk(DISK);
      d.bytes.set(pattern(1, DISK));
      return { backend: d, initial: d.bytes.slice(), raw: async () => d.bytes.slice() };
    },
  },
  {
    name: "FileDisk",
    make: async () => {
      const path = join(dir, `disk-${Math.random().toString(36).slice(2)}.img`);
      const d = await FileDisk.open(path, { create: DISK });
      const initial = pattern(2, DISK);
      await d.writev(0, [initial]);
      return {
        backend: d,
        initial,
        raw: async () => {
          const out = new Uint8Array(DISK);
          await d.readv(0, [out]);
          return out;
        },
      };
    },
  },
  {
    name: "OverlayDisk",
    make: async () => {
      const base = new MemoryDisk(pattern(3, DISK), { readOnly: true });
      const o = new OverlayDisk(base, new MemoryDisk(DISK), { clusterSize: 4096 });
      const baseCopy = base.bytes.slice();
      return {
        backend: o,
        initial: base.bytes.slice(),
        raw: async () => {
          expectSameBytes(base.bytes, baseCopy); // the shared base is never written
          const out = new Uint8Array(DISK);
          await o.readv(0, [out]);
          return out;
        },
      };
    },
  },
];

const matrix = (["mmio", "pci"] as const).flatMap((transport) =>
  backends.map((b) => ({ ...b, transport })),
);

describe.each(matrix)("virtio-blk end to end over $transport with $name", ({ make, transport }) => {
  it("serves random batches of concurrent requests byte-exact against a model", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(opArb, { minLength: 1, maxLength: 24 }), { minLength: 1, maxLength: 6 }),
        async (batches) => {
          const { backend, initial, raw } = await make();
          const rig = blkRig(backend, {
            transport,
            device: { serial: "pvkit-disk-0001", maxInFlight: 8, numQueues: 2 },
          });
          const model = initial.slice();
          for (const batch of batches) {
            const ops = disjoint(batch);
            const results = await Promise.all(
              ops.map(async (op) => {
                switch (op.kind) {
                  case "read":
                    return { op, data: await rig.driver.read(op.sector, op.sectors * 512) };
                  case "write":
                    await rig.driver.write(op.sector, pattern(op.seed, op.sectors * 512));
                    return { op };
                  case "discard":
                    await rig.driver.discard([{ sector: op.sector, sectors: op.sectors }]);
                    return { op };
                  case "zero":
                    await rig.driver.writeZeroes(
                      [{ sector: op.sector, sectors: op.sectors }],
                      true,
                    );
                    return { op };
                  case "flush":
                    await rig.driver.flush();
                    return { op };
                }
              }),
            );
            for (const r of results) {
              const op = r.op;
              if (op.kind === "read")
                expectSameBytes(
                  r.data!,
                  model.subarray(op.sector * 512, (op.sector + op.sectors) * 512),
                );
              if (op.kind === "write")
                model.set(pattern(op.seed, op.sectors * 512), op.sector * 512);
              if (op.kind === "discard" || op.kind === "zero")
                model.fill(0, op.sector * 512, (op.sector + op.sectors) * 512);
            }
          }
          expectSameBytes(await rig.driver.read(0, DISK), model);
          expectSameBytes(await raw(), model);
          expect(await rig.driver.getId()).toBe("pvkit-disk-0001");
          expect(rig.device.stats.errors).toEqual({});
          await backend.close();
        },
      ),
      { seed: 0x5eed, numRuns: 8 },
    );
  });
});

describe("virtio-blk configuration and negotiation", () => {
  it("reports capacity, limits and queues from the config space", () => {
    const rig = blkRig(new MemoryDisk(DISK), { device: { numQueues: 3, maxDiscardSeg: 5 } });
    expect(rig.driver.info.capacity).toBe(SECTORS);
    expect(rig.driver.info.numQueues).toBe(3);
    expect(rig.driver.info.maxDiscardSeg).toBe(5);
    expect(rig.driver.info.blockSize).toBe(512);
    expect(rig.driver.info.readOnly).toBe(false);
    expect(rig.driver.info.segMax).toBe(254);
  });

  it("reports a capacity above 2^32 sectors through both config words", () => {
    // A back-end that claims 3 TiB; never touched.
    const huge: BlockBackend = {
      byteLength: 3 * 2 ** 40,
      readOnly: true,
      readv: () => "EIO",
      writev: () => "EROFS",
      flush: () => undefined,
      discard: () => "EROFS",
      writeZeroes: () => "EROFS",
      close: () => {},
    };
    const rig = blkRig(huge);
    expect(rig.driver.info.capacity).toBe((3 * 2 ** 40) / 512);
  });

  it("toggles writeback from the guest (CONFIG_WCE) and flushes when switching to writethrough", async () => {
    let flushes = 0;
    const disk = new MemoryDisk(DISK);
    disk.flush = () => {
      flushes++;
      return undefined;
    };
    const rig = blkRig(disk);
    expect(rig.driver.writeback).toBe(true);
    await rig.driver.write(0, pattern(9, 512));
    expect(flushes).toBe(0);
    expect(rig.driver.setWriteback(false)).toBe(true);
    expect(flushes).toBe(1);
    await rig.driver.write(8, pattern(10, 512)); // writethrough: flushed before the ack
    expect(flushes).toBe(2);
    expect(rig.device.writeback).toBe(false);
  });

  it("makes every write durable before its ack when FLUSH is not negotiated", async () => {
    const order: string[] = [];
    const disk = new MemoryDisk(DISK);
    const writev = disk.writev.bind(disk);
    disk.writev = (o, b) => {
      order.push("write");
      return writev(o, b);
    };
    disk.flush = () => {
      order.push("flush");
      return undefined;
    };
    const rig = blkRig(disk, { device: { flush: false } });
    await rig.driver.write(0, pattern(1, 1024));
    expect(order).toEqual(["write", "flush"]);
    await expect(rig.driver.flush()).rejects.toMatchObject({ status: VirtioBlkStatus.UNSUPP });
  });

  it("FLUSH waits for every earlier write to finish before flushing the back-end", async () => {
    const events: string[] = [];
    const release: Array<() => void> = [];
    const disk: BlockBackend & { bytes: Uint8Array } = new MemoryDisk(DISK);
    const writev = disk.writev.bind(disk);
    disk.writev = (o, b) =>
      new Promise((resolve) => {
        release.push(() => {
          events.push(`write@${o}`);
          resolve(writev(o, b));
        });
      });
    disk.flush = () => {
      events.push("flush");
      return undefined;
    };
    const rig = blkRig(disk);
    const w1 = rig.driver.write(0, pattern(1, 512));
    const w2 = rig.driver.write(100, pattern(2, 512));
    await new Promise((r) => setTimeout(r, 5));
    const f = rig.driver.flush();
    await new Promise((r) => setTimeout(r, 5));
    expect(events).toEqual([]); // the flush is held back by the two writes
    release[1]?.();
    release[0]?.();
    await Promise.all([w1, w2, f]);
    expect(events).toEqual(["write@51200", "write@0", "flush"]);
  });

  it("completes requests out of order, in completion order in the used ring", async () => {
    const release = new Map<number, () => void>();
    const disk: BlockBackend = new MemoryDisk(DISK);
    const readv = disk.readv.bind(disk);
    disk.readv = (o, b) =>
      new Promise((resolve) => {
        release.set(o / 512, () => resolve(readv(o, b)));
      });
    const rig = blkRig(disk);
    const done: number[] = [];
    const reads = [10, 20, 30].map((s) => rig.driver.read(s, 512).then(() => done.push(s)));
    await new Promise((r) => setTimeout(r, 5));
    release.get(30)?.();
    await new Promise((r) => setTimeout(r, 5));
    release.get(10)?.();
    await new Promise((r) => setTimeout(r, 5));
    release.get(20)?.();
    await Promise.all(reads);
    expect(done).toEqual([30, 10, 20]);
  });

  it("turns back-end errors into IOERR for that request and keeps serving", async () => {
    const disk = new MemoryDisk(DISK);
    const writev = disk.writev.bind(disk);
    let fail: "EIO" | "ENOSPC" | "EROFS" | undefined;
    disk.writev = (o, b) => fail ?? writev(o, b);
    const rig = blkRig(disk);
    for (const errno of ["EIO", "ENOSPC", "EROFS"] as const) {
      fail = errno;
      const err = await rig.driver.write(0, pattern(1, 512)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BlkRequestError);
      expect((err as BlkRequestError).status).toBe(VirtioBlkStatus.IOERR);
    }
    expect(rig.device.stats.errors).toEqual({
      BACKEND_EIO: 1,
      BACKEND_ENOSPC: 1,
      BACKEND_EROFS: 1,
    });
    fail = undefined;
    await rig.driver.write(0, pattern(7, 512));
    expectSameBytes(disk.bytes.subarray(0, 512), pattern(7, 512));
    expect(rig.device.stats.byType[VirtioBlkType.OUT]).toBe(4);
  });

  it("refuses writes, discards and write-zeroes on a read-only disk with IOERR, leaving it unchanged", async () => {
    const disk = new MemoryDisk(pattern(5, DISK), { readOnly: true });
    const before = disk.bytes.slice();
    const rig = blkRig(disk);
    expect(rig.driver.info.readOnly).toBe(true);
    await expect(rig.driver.write(0, pattern(1, 512))).rejects.toMatchObject({
      status: VirtioBlkStatus.IOERR,
    });
    // DISCARD / WRITE_ZEROES are not offered on a read-only disk: UNSUPP.
    await expect(rig.driver.discard([{ sector: 0, sectors: 8 }])).rejects.toMatchObject({
      status: VirtioBlkStatus.UNSUPP,
    });
    await expect(rig.driver.writeZeroes([{ sector: 0, sectors: 8 }])).rejects.toMatchObject({
      status: VirtioBlkStatus.UNSUPP,
    });
    expectSameBytes(disk.bytes, before);
    expectSameBytes(await rig.driver.read(0, 4096), before.subarray(0, 4096));
  });
});

describe("FileDisk", () => {
  it("punches holes for discard so the image stays sparse", async () => {
    const path = join(dir, "sparse.img");
    const disk = await FileDisk.open(path, { create: DISK });
    const rig = blkRig(disk);
    await rig.driver.write(0, pattern(1, DISK));
    await rig.driver.flush();
    const full = statSync(path).blocks;
    await rig.driver.discard([{ sector: 0, sectors: SECTORS / 2 }]);
    await rig.driver.flush();
    const after = statSync(path).blocks;
    if (disk.holesPunched > 0) expect(after).toBeLessThan(full);
    else expect(after).toBe(full); // no hole punching here: zero writes keep the blocks
    expectSameBytes(await rig.driver.read(0, 4096), new Uint8Array(4096));
    expectSameBytes(
      await rig.driver.read(SECTORS / 2, 512),
      pattern(1, DISK).subarray(DISK / 2, DISK / 2 + 512),
    );
    expect(statSync(path).size).toBe(DISK);
    await disk.close();
  });

  it("opens read-only images read-only and offers RO", async () => {
    const path = join(dir, "ro.img");
    const w = await FileDisk.open(path, { create: 8192 });
    await w.writev(0, [pattern(4, 8192)]);
    await w.close();
    const disk = await FileDisk.open(path, { readOnly: true });
    const rig = blkRig(disk);
    expect(rig.driver.info.readOnly).toBe(true);
    expectSameBytes(await rig.driver.read(0, 8192), pattern(4, 8192));
    await expect(rig.driver.write(0, pattern(1, 512))).rejects.toBeInstanceOf(BlkRequestError);
    expect(await disk.writev(0, [pattern(1, 512)])).toBe("EROFS");
    await disk.close();
  });
});

describe("OverlayDisk", () => {
  it("copies up partial clusters, shares the base between overlays, and zeroes discarded clusters", async () => {
    const base = new MemoryDisk(pattern(8, 1 << 20), { readOnly: true });
    const a = new OverlayDisk(base, new MemoryDisk(1 << 20), { clusterSize: 4096 });
    const b = new OverlayDisk(base, new MemoryDisk(1 << 20), { clusterSize: 4096 });
    const ra = blkRig(a);
    const rb = blkRig(b);
    await ra.driver.write(1, pattern(20, 512)); // partial cluster 0: copy-up
    expect(a.copyUps).toBe(1);
    await ra.driver.write(8, pattern(21, 4096)); // whole cluster 1: no copy-up
    expect(a.copyUps).toBe(1);
    expect(a.allocatedClusters).toBe(2);
    const expectA = pattern(8, 1 << 20);
    expectA.set(pattern(20, 512), 512);
    expectA.set(pattern(21, 4096), 4096);
    expectSameBytes(await ra.driver.read(0, 16384), expectA.subarray(0, 16384));
    expectSameBytes(await rb.driver.read(0, 16384), pattern(8, 1 << 20).subarray(0, 16384)); // b is untouched
    await ra.driver.discard([{ sector: 8, sectors: 8 }]);
    expect(a.allocatedClusters).toBe(1);
    expectSameBytes(await ra.driver.read(8, 4096), new Uint8Array(4096));
  });

  it("serialises concurrent partial writes to one cluster without losing either", async () => {
    const base = new MemoryDisk(pattern(9, 65536), { readOnly: true });
    const top = new MemoryDisk(65536);
    const o = new OverlayDisk(base, top, { clusterSize: 8192 });
    const rig = blkRig(o);
    await Promise.all([
      rig.driver.write(0, pattern(30, 512)),
      rig.driver.write(3, pattern(31, 512)),
      rig.driver.write(15, pattern(32, 512)),
    ]);
    const want = pattern(9, 65536).subarray(0, 8192).slice();
    want.set(pattern(30, 512), 0);
    want.set(pattern(31, 512), 1536);
    want.set(pattern(32, 512), 7680);
    expectSameBytes(await rig.driver.read(0, 8192), want);
  });
});
