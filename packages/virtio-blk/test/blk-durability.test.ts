import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileDisk } from "@pvkit/virtio-blk/node";
import { afterAll, describe, expect, it } from "vitest";
import { checkDurability, runAndKill } from "./durability.js";

const dir = mkdtempSync(join(tmpdir(), "pvkit-durability-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const DISK = 2 << 20;

describe("FileDisk durability across SIGKILL (§5.2.6.2 FLUSH)", () => {
  it.each([
    [1, 2],
    [2, 5],
    [3, 0],
  ])(
    "seed %i: every write acknowledged before the FLUSH of round %i is on disk after a SIGKILL",
    async (seed, killAfter) => {
      const image = join(dir, `durable-${seed}.img`);
      const disk = await FileDisk.open(image, { create: DISK });
      await disk.close();
      const lines = await runAndKill(image, seed, killAfter);
      expect(lines.indexOf(`F ${killAfter}`)).toBeGreaterThan(0);
      const reopened = await FileDisk.open(image, { readOnly: true });
      const onDisk = new Uint8Array(DISK);
      expect(await reopened.readv(0, [onDisk])).toBeUndefined();
      await reopened.close();
      const { acked, issuedBefore, lost } = checkDurability(lines, killAfter, onDisk);
      expect(acked.length).toBe(issuedBefore); // all rounds up to the flush were acknowledged
      expect(lost).toBe(0);
      expect(acked.length).toBeGreaterThan(10);
    },
  );
});
