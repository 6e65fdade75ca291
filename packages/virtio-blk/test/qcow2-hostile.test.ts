import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  Qcow2HeaderField as F,
  formatQcow2,
  MemoryImageFile,
  QCOW2_MAX_BACKING_DEPTH,
  Qcow2Disk,
  Qcow2FormatError,
  Qcow2Incompatible,
  type Qcow2OpenOptions,
  VirtioBlkStatus,
} from "@pvkit/virtio-blk";
import { createQcow2, inflateRawZlib, openQcow2 } from "@pvkit/virtio-blk/node";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { blkRig, expectSameBytes, pattern } from "./harness.js";

const CS = 4096;
const SIZE = 1 << 20;

/**
 * A valid image (4 KiB clusters, 1 MiB): header at cluster 0, L1 at 1, refcount table at
 * 2, refcount block at 3, then the L2 table at 4 and data clusters from 5 on.
 */
async function validImage(): Promise<{ bytes: Uint8Array; contents: Uint8Array }> {
  const file = new MemoryImageFile();
  await formatQcow2(file, { size: SIZE, clusterBits: 12 });
  const disk = await Qcow2Disk.open(file);
  const contents = new Uint8Array(SIZE);
  for (const [at, seed] of [
    [0, 1],
    [40960, 2],
    [SIZE - 8192, 3],
  ] as const) {
    const data = pattern(seed, 8192);
    expect(await disk.writev(at, [data])).toBeUndefined();
    contents.set(data, at);
  }
  await disk.close();
  return { bytes: file.toBytes(), contents };
}

const base = await validImage();

function mutate(edit: (v: DataView, b: Uint8Array) => void): Uint8Array {
  const b = base.bytes.slice();
  edit(new DataView(b.buffer), b);
  return b;
}

function open(bytes: Uint8Array, options: Qcow2OpenOptions = {}): Promise<Qcow2Disk> {
  return Qcow2Disk.open(new MemoryImageFile(bytes), options);
}

const u32 = (at: number, value: number) => (v: DataView) => v.setUint32(at, value);
/** Sets the u64 at `at` to `hi`·2^32 + `lo` (flags in `hi` stay exact). */
const hl = (at: number, hi: number, lo: number) => (v: DataView) => {
  v.setUint32(at, hi);
  v.setUint32(at + 4, lo);
};
const u64 = (at: number, value: number) => (v: DataView) => {
  v.setUint32(at, Math.floor(value / 2 ** 32));
  v.setUint32(at + 4, value >>> 0);
};

describe("qcow2 refuses hostile headers at open, naming the field and the rule", () => {
  it("opens the unmodified image and reads it back", async () => {
    const disk = await open(base.bytes);
    const out = new Uint8Array(SIZE);
    expect(await disk.readv(0, [out])).toBeUndefined();
    expectSameBytes(out, base.contents);
    await disk.close();
  });

  const cases: Array<[string, (v: DataView, b: Uint8Array) => void, string, RegExp]> = [
    ["a bad magic", u32(F.magic, 0x514649fa), "magic", /QFI/],
    ["version 4", u32(F.version, 4), "version", /must be 2 or 3/],
    ["cluster_bits 8", u32(F.cluster_bits, 8), "cluster_bits", /9\.\.21/],
    ["cluster_bits 22", u32(F.cluster_bits, 22), "cluster_bits", /9\.\.21/],
    ["cluster_bits 2^32-1", u32(F.cluster_bits, 0xffffffff), "cluster_bits", /9\.\.21/],
    ["a size of 2^60", u64(F.size, 2 ** 60), "size", /2\^53/],
    ["an L1 table of 2^31 entries", u32(F.l1_size, 0x8000_0000), "l1_size", /32 MiB/],
    ["an L1 table too small for the size", u32(F.l1_size, 0), "l1_size", /cover the virtual size/],
    ["an unaligned L1 table", u64(F.l1_table_offset, CS + 8), "l1_table_offset", /aligned/],
    [
      "an L1 table past the file",
      u64(F.l1_table_offset, 2 ** 40),
      "l1_table_offset",
      /within the file/,
    ],
    ["an L1 table over the header", u64(F.l1_table_offset, 0), "l1_table_offset", /header cluster/],
    [
      "an L1 table over the refcount table",
      u64(F.l1_table_offset, 2 * CS),
      "l1_table_offset",
      /refcount table/,
    ],
    [
      "no refcount table",
      u32(F.refcount_table_clusters, 0),
      "refcount_table_clusters",
      /at least 1/,
    ],
    [
      "a 2^20-cluster refcount table",
      u32(F.refcount_table_clusters, 1 << 20),
      "refcount_table_clusters",
      /8 MiB/,
    ],
    [
      "a refcount table past the file",
      u64(F.refcount_table_offset, 2 ** 45),
      "refcount_table_offset",
      /within the file/,
    ],
    [
      "a refcount table over the header",
      u64(F.refcount_table_offset, 0),
      "refcount_table_offset",
      /header cluster/,
    ],
    ["refcount_order 7", u32(F.refcount_order, 7), "refcount_order", /at most 6/],
    [
      "an unknown incompatible bit (5)",
      u32(F.incompatible_features + 4, 32),
      "incompatible_features",
      /unknown bits/,
    ],
    [
      "an unknown incompatible bit (40)",
      u32(F.incompatible_features, 0x100),
      "incompatible_features",
      /unknown bits/,
    ],
    [
      "an external data file",
      u32(F.incompatible_features + 4, Qcow2Incompatible.DATA_FILE),
      "incompatible_features",
      /external data/,
    ],
    [
      "extended L2 entries",
      u32(F.incompatible_features + 4, Qcow2Incompatible.EXTL2),
      "incompatible_features",
      /extended L2/,
    ],
    [
      "zstd compression",
      (v, b) => {
        v.setUint32(F.incompatible_features + 4, Qcow2Incompatible.COMPRESSION);
        v.setUint32(F.header_length, 112);
        b[104] = 1;
      },
      "compression_type",
      /zlib/,
    ],
    ["encryption", u32(F.crypt_method, 1), "crypt_method", /encrypted/],
    ["header_length 100", u32(F.header_length, 100), "header_length", /at least 104/],
    [
      "header_length past the cluster",
      u32(F.header_length, CS + 8),
      "header_length",
      /first cluster/,
    ],
    [
      "a 2000-byte backing file name",
      (v) => {
        v.setUint32(F.backing_file_offset + 4, 512);
        v.setUint32(F.backing_file_size, 2000);
      },
      "backing_file_size",
      /1023/,
    ],
    [
      "a backing file name past the first cluster",
      (v) => {
        v.setUint32(F.backing_file_offset + 4, CS - 10);
        v.setUint32(F.backing_file_size, 100);
      },
      "backing_file_offset",
      /first cluster/,
    ],
    [
      "a header extension overrunning the cluster",
      (v) => {
        v.setUint32(104, 0x12345678);
        v.setUint32(108, 0xffff_fff0);
      },
      "header extension",
      /first cluster/,
    ],
    ["70000 snapshots", u32(F.nb_snapshots, 70000), "nb_snapshots", /65536/],
    ["an L1 entry past the file", hl(CS, 0x8000_0100, 0), "L1 table entry 0", /within the file/],
    ["an L1 entry on the L1 table itself", u64(CS, CS), "L1 table entry 0", /must not overlap/],
    ["an L1 entry on the refcount table", u64(CS, 2 * CS), "L1 table entry 0", /must not overlap/],
    ["an unaligned L1 entry", u64(CS, 4 * CS + 512), "L1 table entry 0", /aligned/],
    ["an L1 entry with reserved bits", u64(CS, 4 * CS + 1), "L1 table entry 0", /reserved/],
    [
      "two L1 entries sharing an L2 table",
      (v) => {
        v.setUint32(F.l1_size, 2);
        v.setUint32(CS + 8, v.getUint32(CS));
        v.setUint32(CS + 12, v.getUint32(CS + 4));
      },
      "L1 table entry 1",
      /another table entry/,
    ],
    [
      "a refcount block on the L1 table",
      u64(2 * CS, CS),
      "refcount table entry 0",
      /must not overlap/,
    ],
    [
      "a refcount block on an L2 table",
      u64(2 * CS, 4 * CS),
      "refcount table entry 0",
      /another table entry/,
    ],
  ];

  it.each(cases)("%s", async (_name, edit, field, rule) => {
    const err = await open(mutate(edit)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Qcow2FormatError);
    expect((err as Qcow2FormatError).field).toBe(field);
    expect((err as Qcow2FormatError).message).toMatch(rule);
  });

  it("an L1 entry of 0 with only flags is accepted as unallocated only when it is the copied flag", async () => {
    const disk = await open(mutate(hl(CS, 0x8000_0000, 0)));
    const out = new Uint8Array(4096);
    expect(await disk.readv(0, [out])).toBeUndefined();
    expectSameBytes(out, new Uint8Array(4096));
    await disk.close();
  });

  it("a corrupt-marked image opens read-only only", async () => {
    const bytes = mutate(u32(F.incompatible_features + 4, Qcow2Incompatible.CORRUPT));
    await expect(open(bytes)).rejects.toMatchObject({
      field: "incompatible_features",
      message: expect.stringMatching(/corrupt/),
    });
    const disk = await open(bytes, { readOnly: true });
    expect(disk.readOnly).toBe(true);
    expect(await disk.writev(0, [new Uint8Array(512)])).toBe("EROFS");
    await disk.close();
  });

  it("an image with snapshots opens read-only only", async () => {
    const bytes = mutate((v) => {
      v.setUint32(F.nb_snapshots, 1);
      v.setUint32(F.snapshots_offset + 4, 5 * CS);
    });
    await expect(open(bytes)).rejects.toMatchObject({ field: "nb_snapshots" });
    const disk = await open(bytes, { readOnly: true });
    const out = new Uint8Array(8192);
    expect(await disk.readv(0, [out])).toBeUndefined();
    expectSameBytes(out, pattern(1, 8192));
    await disk.close();
  });

  it("a backing file without an opener", async () => {
    const bytes = mutate((v, b) => {
      v.setUint32(F.backing_file_offset + 4, 1024);
      v.setUint32(F.backing_file_size, 4);
      b.set(new TextEncoder().encode("base"), 1024);
    });
    await expect(open(bytes)).rejects.toMatchObject({
      field: "backing_file_offset",
      message: expect.stringMatching(/openBacking/),
    });
  });
});

describe("qcow2 refuses bad tables met while serving: IOERR for that request, nothing else touched", () => {
  async function guestWith(edit: (v: DataView, b: Uint8Array) => void) {
    const bytes = mutate(edit);
    const file = new MemoryImageFile(bytes);
    const disk = await Qcow2Disk.open(file, { inflateRaw: inflateRawZlib });
    return { disk, file, rig: blkRig(disk), before: file.toBytes() };
  }
  const L2 = 4 * CS;

  it.each<[string, (v: DataView) => void, RegExp]>([
    ["a data cluster past the end of the file", hl(L2, 0x8000_0100, 0), /past the end/],
    ["a data cluster on the L1 table", hl(L2, 0x8000_0000, CS), /overlaps metadata/],
    ["reserved bits in an L2 entry", hl(L2, 0x8000_0000, 5 * CS + 2), /reserved bits/],
    ["compressed data outside the file", hl(L2, 0x4000_2000, 0), /outside the file/],
  ])("%s", async (_name, edit, why) => {
    const { disk, file, rig, before } = await guestWith(edit);
    await expect(rig.driver.read(0, 4096)).rejects.toMatchObject({ status: VirtioBlkStatus.IOERR });
    await expect(rig.driver.write(16, pattern(9, 4096))).rejects.toMatchObject({
      status: VirtioBlkStatus.IOERR,
    });
    expect(disk.corruption).toMatch(why);
    await rig.driver.flush();
    expectSameBytes(file.toBytes().subarray(0, before.length), before);
    await disk.close();
  });

  it("compressed data that does not inflate", async () => {
    // Entry 0 → a compressed cluster at the start of data cluster 5 (random bytes), 1 sector.
    const { disk, rig } = await guestWith(hl(L2, 0x4000_0000, 5 * CS));
    await expect(rig.driver.read(0, 4096)).rejects.toMatchObject({ status: VirtioBlkStatus.IOERR });
    expect(disk.corruption).toMatch(/does not inflate/);
    // The rest of the disk still reads.
    expectSameBytes(await rig.driver.read(80, 8192), base.contents.subarray(40960, 49152));
    await disk.close();
  });
});

describe("qcow2 backing chains: loops and depth are refused at open", () => {
  const dir = mkdtempSync(join(tmpdir(), "pvkit-qcow2-chain-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("an image that is its own backing file", async () => {
    const a = join(dir, "self.qcow2");
    await createQcow2(a, { size: SIZE, backingFile: "self.qcow2", backingFormat: "qcow2" });
    await expect(openQcow2(a)).rejects.toMatchObject({
      field: "backing_file_offset",
      message: expect.stringMatching(/must not loop/),
    });
  });

  it("a → b → a, through a relative name and no format (probed)", async () => {
    const a = join(dir, "a.qcow2");
    const b = join(dir, "b.qcow2");
    await createQcow2(a, { size: SIZE, backingFile: "b.qcow2" });
    await createQcow2(b, { size: SIZE, backingFile: `../${dir.split("/").pop()}/a.qcow2` });
    const err = await openQcow2(a).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Qcow2FormatError);
    expect((err as Error).message).toMatch(/a\.qcow2 -> .*b\.qcow2 -> .*a\.qcow2/);
  });

  it(`a chain deeper than ${QCOW2_MAX_BACKING_DEPTH} images`, async () => {
    await createQcow2(join(dir, "d0.qcow2"), { size: SIZE });
    for (let i = 1; i <= QCOW2_MAX_BACKING_DEPTH + 1; i++)
      await createQcow2(join(dir, `d${i}.qcow2`), {
        size: SIZE,
        backingFile: `d${i - 1}.qcow2`,
        backingFormat: "qcow2",
      });
    const ok = await openQcow2(join(dir, `d${QCOW2_MAX_BACKING_DEPTH - 1}.qcow2`), {
      readOnly: true,
    });
    await ok.close();
    await expect(
      openQcow2(join(dir, `d${QCOW2_MAX_BACKING_DEPTH + 1}.qcow2`), { readOnly: true }),
    ).rejects.toMatchObject({ message: expect.stringMatching(/at most 32 images deep/) });
  });
});

describe("qcow2 under random header and table corruption (property)", () => {
  /** Interesting values for 32-bit fields. */
  const values = fc.constantFrom(
    0,
    1,
    7,
    9,
    12,
    21,
    22,
    0x1ff,
    CS,
    2 * CS,
    4 * CS,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    base.bytes.length,
  );
  const edit = fc.oneof(
    fc.record({ at: fc.constantFrom(...Object.values(F)), value: values, wide: fc.constant(true) }),
    fc.record({ at: fc.nat(8 * CS - 4), value: values, wide: fc.constant(true) }),
    fc.record({ at: fc.nat(8 * CS - 1), value: fc.nat(255), wide: fc.constant(false) }),
  );

  it("open fails with Qcow2FormatError or the disk answers every request with a result, in bounded space", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(edit, { minLength: 1, maxLength: 6 }),
        fc.array(fc.tuple(fc.nat(SIZE / 512 - 16), fc.integer({ min: 1, max: 16 })), {
          maxLength: 4,
        }),
        async (edits, writes) => {
          const bytes = mutate((v, b) => {
            for (const e of edits) {
              if (e.wide) v.setUint32(e.at, e.value);
              else b[e.at] = e.value;
            }
          });
          const file = new MemoryImageFile(bytes);
          let disk: Qcow2Disk;
          try {
            disk = await Qcow2Disk.open(file, { inflateRaw: inflateRawZlib });
          } catch (err) {
            expect(err).toBeInstanceOf(Qcow2FormatError);
            return;
          }
          const out = new Uint8Array(Math.min(disk.byteLength, 4 << 20));
          expect([undefined, "EIO"]).toContain(await disk.readv(0, [out]));
          for (const [sector, n] of writes) {
            if ((sector + n) * 512 > disk.byteLength) continue;
            expect([undefined, "EIO", "ENOSPC"]).toContain(
              await disk.writev(sector * 512, [pattern(sector, n * 512)]),
            );
          }
          expect([undefined, "EIO", "ENOSPC"]).toContain(await disk.flush());
          await disk.close();
          // Bounded: a handful of writes never grows the file by more than they need.
          // (at most 2 data clusters, an L2 table and a refcount block per write, and one
          // refcount table move of at most 8 MiB with its blocks).
          expect(file.byteLength).toBeLessThanOrEqual(
            bytes.length + 32 * disk.clusterSize + (16 << 20),
          );
        },
      ),
      { seed: 0x0bad, numRuns: 400 },
    );
  });
});
