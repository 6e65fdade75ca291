import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type BlockBackend,
  MemoryDisk,
  OverlayDisk,
  type VirtioBlkDriver,
} from "@pvkit/virtio-blk";
import { FileDisk } from "@pvkit/virtio-blk/node";
import { afterAll, describe, expect, it } from "vitest";
import { blkRig, expectSameBytes, pattern } from "./harness.js";

/** e2fsprogs (installed by .ci/run when missing): the tools live in /sbin on Debian. */
function tool(name: string): string {
  for (const d of ["/usr/sbin", "/sbin", "/usr/bin"])
    if (existsSync(join(d, name))) return join(d, name);
  throw new Error(`${name} not found: install Debian's e2fsprogs`);
}

const dir = mkdtempSync(join(tmpdir(), "pvkit-ext4-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const IMAGE_BYTES = 24 << 20;
const files: Record<string, Uint8Array> = {
  "/hello.txt": new TextEncoder().encode("hello from a pvkit virtio-blk disk\n"),
  "/big.bin": pattern(1, 3 * 1024 * 1024 + 123),
  "/etc/config.json": new TextEncoder().encode(JSON.stringify({ name: "pvkit", sectors: 512 })),
  "/deep/a/b/c/leaf.dat": pattern(2, 70_001),
  "/empty": new Uint8Array(0),
  "/sparse-ish.bin": (() => {
    const b = new Uint8Array(1 << 20);
    b.set(pattern(3, 4096), 512 * 1024);
    return b;
  })(),
};

/** Copies the whole source disk to the destinations in random chunk order, many requests in flight. */
async function copyImage(
  src: VirtioBlkDriver,
  dsts: VirtioBlkDriver[],
  bytes: number,
  seed: number,
): Promise<void> {
  const chunks: Array<[number, number]> = [];
  for (let sector = 0; sector < bytes / 512; ) {
    const n = Math.min(8 + ((sector * 7919 + seed) % 248), bytes / 512 - sector);
    chunks.push([sector, n]);
    sector += n;
  }
  let x = seed;
  for (let i = chunks.length - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const j = x % (i + 1);
    [chunks[i], chunks[j]] = [chunks[j]!, chunks[i]!];
  }
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < chunks.length) {
      const [sector, n] = chunks[next++]!;
      const data = await src.read(sector, n * 512);
      await Promise.all(dsts.map((d) => d.write(sector, data)));
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  await Promise.all(dsts.map((d) => d.flush()));
}

function fsck(image: string): { status: number | null; output: string } {
  const r = spawnSync(tool("e2fsck"), ["-f", "-n", image], { encoding: "utf8" });
  return { status: r.status, output: r.stdout + r.stderr };
}

function cat(image: string, path: string): Buffer {
  return execFileSync(tool("debugfs"), ["-R", `cat ${path}`, image], {
    maxBuffer: 64 << 20,
    stdio: ["ignore", "pipe", "ignore"],
  });
}

describe("a real ext4 file system through virtio-blk, checked by e2fsprogs", () => {
  it("copies an ext4 image through the driver into a FileDisk and an OverlayDisk; e2fsck and debugfs agree", async () => {
    const tree = join(dir, "tree");
    for (const [path, bytes] of Object.entries(files)) {
      const full = join(tree, path);
      mkdirSync(join(full, ".."), { recursive: true });
      writeFileSync(full, bytes);
    }
    const source = join(dir, "source.img");
    execFileSync(
      tool("mkfs.ext4"),
      ["-q", "-F", "-b", "4096", "-d", tree, source, `${IMAGE_BYTES / 1024}k`],
      { stdio: "ignore" },
    );
    expect(fsck(source).status).toBe(0);

    const src = await FileDisk.open(source, { readOnly: true });
    const copyPath = join(dir, "copy.img");
    const copy = await FileDisk.open(copyPath, { create: IMAGE_BYTES });
    const overlay = new OverlayDisk(
      new MemoryDisk(IMAGE_BYTES, { readOnly: true }),
      new MemoryDisk(IMAGE_BYTES),
      { clusterSize: 16384 },
    );
    const rigs = [src, copy, overlay].map((b: BlockBackend, i) =>
      blkRig(b, {
        device: { numQueues: 2, maxInFlight: 32 },
        memoryBytes: 64 << 20,
        shared: i === 1,
      }),
    );
    const [rs, rc, ro] = rigs as [
      ReturnType<typeof blkRig>,
      ReturnType<typeof blkRig>,
      ReturnType<typeof blkRig>,
    ];
    await copyImage(rs.driver, [rc.driver, ro.driver], IMAGE_BYTES, 42);
    expect(rc.device.stats.bytesWritten).toBe(IMAGE_BYTES);

    // The overlay's contents, written out for the tools.
    const overlayBytes = new Uint8Array(IMAGE_BYTES);
    expect(await overlay.readv(0, [overlayBytes])).toBeUndefined();
    const overlayPath = join(dir, "overlay.img");
    writeFileSync(overlayPath, overlayBytes);
    await Promise.all([src.close(), copy.close()]);

    for (const image of [copyPath, overlayPath]) {
      const r = fsck(image);
      expect(r.status, r.output).toBe(0);
      for (const [path, bytes] of Object.entries(files)) expectSameBytes(cat(image, path), bytes);
    }
  });
});
