/**
 * Cross-thread split-virtqueue stress run: a `DriverQueue` in a worker thread against a
 * `DeviceQueue` in this thread over one `SharedArrayBuffer`, doorbells as
 * `Atomics.notify`/`wait`. Every buffer is checked to come back exactly once, with the
 * right length and bytes.
 *
 * Usage (from the repository root):
 *   node --conditions=@pvkit/source --import tsx packages/virtio-core/scripts/stress-cross-thread.ts [count=1000000] [queueSize=256]
 *
 * Exits 1 when any buffer is lost, duplicated or corrupted, or the run times out.
 */

import { fileURLToPath } from "node:url";
import { bundleWorker } from "../../../test-utils/bundle-worker.js";
import { runCrossThreadStress } from "../test/fixtures/cross-thread-device.js";

const count = Number(process.argv[2] ?? 1_000_000);
const queueSize = Number(process.argv[3] ?? 256);
if (!Number.isSafeInteger(count) || count <= 0) {
  console.error(`bad count ${process.argv[2]}`);
  process.exit(2);
}
if (
  !Number.isInteger(queueSize) ||
  queueSize < 1 ||
  queueSize > 32768 ||
  (queueSize & (queueSize - 1)) !== 0
) {
  console.error(`bad queue size ${process.argv[3]}`);
  process.exit(2);
}

const workerFile = bundleWorker(
  fileURLToPath(new URL("../test/fixtures/driver-worker.ts", import.meta.url)),
);
const r = await runCrossThreadStress({
  count,
  queueSize,
  workerFile,
  deadlineMs: Math.max(60_000, count / 10),
});
const d = r.driver;
const secs = r.elapsedMs / 1000;
console.log(
  JSON.stringify(
    {
      count,
      queueSize,
      seconds: Number(secs.toFixed(3)),
      buffersPerSecond: Math.round(count / secs),
      driver: d,
      device: { ...r.device, error: r.device.error?.toString() ?? null },
      kicksPerBuffer: d ? d.kicks / count : null,
      interruptsPerBuffer: r.device.interrupts / count,
    },
    null,
    2,
  ),
);
const ok =
  d !== null &&
  d.errors.length === 0 &&
  d.completed === count &&
  r.device.served === count &&
  r.device.error === null &&
  !r.device.timedOut &&
  r.device.workerError === null;
console.log(ok ? "OK: every buffer came back exactly once, intact" : "FAILED");
process.exit(ok ? 0 : 1);
