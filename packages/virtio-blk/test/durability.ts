/**
 * Helpers of the SIGKILL-after-FLUSH tests (§5.2.6.2 FLUSH): run the durability child
 * (fixtures/durability-child.ts) until it reports a FLUSH, kill it, and compare what the
 * image holds with the writes it acknowledged.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { pattern } from "./harness.js";

const root = fileURLToPath(new URL("../../..", import.meta.url));
const child = fileURLToPath(new URL("./fixtures/durability-child.ts", import.meta.url));

/** One write the child issued or acknowledged. */
export interface Write {
  round: number;
  sector: number;
  sectors: number;
  seed: number;
}

/**
 * Runs the child on `image` until it reports the FLUSH of round `killAfter`, then
 * SIGKILLs it; the lines it printed.
 *
 * @param format - `"raw"` (FileDisk), `"qcow2"` (openQcow2) or `"overlay"`
 *   (openPersistentOverlay at `image` over the read-only raw base `image.base`, 4 KiB clusters)
 */
export function runAndKill(
  image: string,
  seed: number,
  killAfter: number,
  format: "raw" | "qcow2" | "overlay" = "raw",
): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      ["--conditions=@pvkit/source", "--import", "tsx", child, image, String(seed), "1000", format],
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

/** What a killed run left: the acknowledged writes and the sectors that lost them. */
export interface DurabilityVerdict {
  /** Writes acknowledged before the FLUSH of round `killAfter` completed. */
  readonly acked: readonly Write[];
  /** Writes issued up to that round. */
  readonly issuedBefore: number;
  /** Sectors holding neither the acknowledged data nor a later write's data. */
  readonly lost: number;
}

/**
 * Compares `onDisk` (the whole disk after the kill) with the child's report: every
 * sector must hold the last acknowledged write before the FLUSH, or the data of a write
 * issued after it (which may or may not have landed). `initial` is the disk before the
 * child ran (zeroes by default).
 */
export function checkDurability(
  lines: readonly string[],
  killAfter: number,
  onDisk: Uint8Array,
  initial: Uint8Array = new Uint8Array(onDisk.length),
): DurabilityVerdict {
  const parse = (l: string): Write => {
    const [, round, sector, sectors, s] = l.split(" ").map(Number);
    return { round: round!, sector: sector!, sectors: sectors!, seed: s! };
  };
  const flushAt = lines.indexOf(`F ${killAfter}`);
  const acked = lines
    .slice(0, Math.max(flushAt, 0))
    .filter((l) => l.startsWith("A "))
    .map(parse);
  const issuedAll = lines.filter((l) => l.startsWith("I ")).map(parse);
  // The model: acknowledged writes in round order (disjoint within a round).
  const size = onDisk.length;
  const model = initial.slice();
  const owner = new Int32Array(size / 512).fill(-1);
  acked.sort((a, b) => a.round - b.round);
  for (const w of acked) model.set(pattern(w.seed, w.sectors * 512), w.sector * 512);
  // Writes issued after the flush may or may not have landed, sector by sector.
  const later = issuedAll.filter((w) => w.round > killAfter);
  later.forEach((w, i) => {
    owner.fill(i, w.sector, w.sector + w.sectors);
  });
  let lost = 0;
  for (let s = 0; s < size / 512; s++) {
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
  return {
    acked,
    issuedBefore: issuedAll.filter((w) => w.round <= killAfter).length,
    lost,
  };
}
