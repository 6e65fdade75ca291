import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { FileDisk } from "@pvkit/virtio-blk/node";
import { afterAll, describe, expect, it } from "vitest";
import { pattern } from "./harness.js";

const root = fileURLToPath(new URL("../../..", import.meta.url));
const child = fileURLToPath(new URL("./fixtures/durability-child.ts", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "pvkit-durability-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const DISK = 2 << 20;

interface Write {
  round: number;
  sector: number;
  sectors: number;
  seed: number;
}

/** Runs the child until it reports the FLUSH of round `killAfter`, then SIGKILLs it. */
function runAndKill(image: string, seed: number, killAfter: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      ["--conditions=@pvkit/source", "--import", "tsx", child, image, String(seed), "1000"],
      {
        cwd: root,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const lines: string[] = [];
    let buffered = "";
    let killed = false;
    let stderr = "";
    proc.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    proc.stdout.on("data", (d: Buffer) => {
      buffered += d.toString();
      const parts = buffered.split("\n");
      buffered = parts.pop() ?? "";
      for (const line of parts) {
        lines.push(line);
        if (!killed && line === `F ${killAfter}`) {
          killed = true;
          proc.kill("SIGKILL"); // right after the FLUSH completed
        }
      }
    });
    proc.on("exit", (_code, signal) => {
      if (signal !== "SIGKILL") reject(new Error(`child exited without being killed: ${stderr}`));
      else resolve(lines);
    });
  });
}

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
      const parse = (l: string): Write => {
        const [, round, sector, sectors, s] = l.split(" ").map(Number);
        return { round: round!, sector: sector!, sectors: sectors!, seed: s! };
      };
      const flushAt = lines.indexOf(`F ${killAfter}`);
      expect(flushAt).toBeGreaterThan(0);
      const acked = lines
        .slice(0, flushAt)
        .filter((l) => l.startsWith("A "))
        .map(parse);
      const issuedAll = lines.filter((l) => l.startsWith("I ")).map(parse);
      expect(acked.length).toBe(issuedAll.filter((w) => w.round <= killAfter).length); // all rounds up to the flush were acknowledged
      // The model: acknowledged writes in round order (disjoint within a round).
      const model = new Uint8Array(DISK);
      const owner = new Int32Array(DISK / 512).fill(-1);
      acked.sort((a, b) => a.round - b.round);
      for (const w of acked) model.set(pattern(w.seed, w.sectors * 512), w.sector * 512);
      // Writes issued after the flush may or may not have landed, sector by sector.
      const later = issuedAll.filter((w) => w.round > killAfter);
      later.forEach((w, i) => {
        owner.fill(i, w.sector, w.sector + w.sectors);
      });
      const reopened = await FileDisk.open(image, { readOnly: true });
      const onDisk = new Uint8Array(DISK);
      expect(await reopened.readv(0, [onDisk])).toBeUndefined();
      await reopened.close();
      let lost = 0;
      for (let s = 0; s < DISK / 512; s++) {
        const got = Buffer.from(onDisk.subarray(s * 512, s * 512 + 512));
        if (got.equals(Buffer.from(model.subarray(s * 512, s * 512 + 512)))) continue;
        const o = owner[s]!;
        if (o >= 0) {
          const w = later[o]!;
          const newer = pattern(w.seed, w.sectors * 512).subarray(
            (s - w.sector) * 512,
            (s - w.sector + 1) * 512,
          );
          if (got.equals(Buffer.from(newer))) continue;
        }
        lost++;
      }
      expect(lost).toBe(0);
      expect(acked.length).toBeGreaterThan(10);
    },
  );
});
