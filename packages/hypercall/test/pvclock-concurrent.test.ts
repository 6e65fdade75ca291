import { Worker } from "node:worker_threads";
import { PVCLOCK_GAVE_UP, PvClockReader, PvClockWriter, pvclockScale } from "@pvkit/hypercall";
import { expect, test } from "vitest";
import { bundleWorker } from "../../../test-utils/bundle-worker.js";

test("pvclock: a reader racing a writer thread never returns a torn value", async () => {
  const file = bundleWorker(new URL("./fixtures/pvclock-writer.ts", import.meta.url));
  const buffer = new SharedArrayBuffer(4096);
  const words = new Int32Array(buffer);
  const offset = 64; // vcpu_time_info inside a "shared page"
  const stopIndex = 512;
  const step = 4_294_967_311; // > 2^32: every record changes both halves of each u64
  const maxRecords = 1_000_000;
  const T = 2 ** 52; // the guest's TSC, beyond every record's timestamp
  new PvClockWriter(words, offset).publish(0, 7, pvclockScale(1e9), 0);
  // A bounded retry budget: if the writer thread is descheduled mid-update for longer than
  // the budget, read() gives up (PVCLOCK_GAVE_UP) rather than spinning forever.
  const reader = new PvClockReader(words, offset, () => T, 10_000_000);
  const worker = new Worker(file, { workerData: { buffer, offset, stopIndex, maxRecords, step } });
  try {
    // Wait until the writer is running.
    const start = Date.now();
    while (Atomics.load(words, offset / 4) < 4 && Date.now() - start < 10_000)
      await new Promise((r) => setTimeout(r, 1));
    const v0 = Atomics.load(words, offset / 4);
    let bad = 0;
    let gaveUp = 0;
    const badValues: number[] = [];
    let reads = 0;
    // Read until both sides did enough work concurrently (a count, not a time window, so a
    // loaded machine only makes it slower); the deadline only guards against a dead writer.
    const deadline = Date.now() + 20_000;
    const advanced = (): number => (Atomics.load(words, offset / 4) - v0) / 2;
    while ((reads < 50_000 || advanced() < 2000) && Date.now() < deadline) {
      for (let i = 0; i < 1000; i++) {
        const t = reader.read();
        reads++;
        if (t === PVCLOCK_GAVE_UP) {
          gaveUp++;
          continue;
        }
        if (t !== T + 7) {
          bad++;
          if (badValues.length < 5) badValues.push(t);
        }
      }
    }
    const v1 = Atomics.load(words, offset / 4);
    expect(badValues).toEqual([]);
    expect(bad).toBe(0);
    expect(gaveUp).toBeLessThan(reads / 100);
    expect(reads).toBeGreaterThanOrEqual(50_000);
    // The writer really ran concurrently with the reads (versions advanced by thousands).
    expect((v1 - v0) / 2).toBeGreaterThanOrEqual(2000);
  } finally {
    Atomics.store(words, stopIndex, 1);
    await worker.terminate();
  }
}, 60_000);
