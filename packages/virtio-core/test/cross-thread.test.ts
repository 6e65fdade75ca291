import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { bundleWorker } from "../../../test-utils/bundle-worker.js";
import { runCrossThreadStress } from "./fixtures/cross-thread-device.js";

const workerFile = bundleWorker(
  fileURLToPath(new URL("./fixtures/driver-worker.ts", import.meta.url)),
);

describe("DriverQueue in a worker ↔ DeviceQueue in the main thread over a SharedArrayBuffer", () => {
  it.each([
    [70_000, 128], // more than 65536: ring indices wrap
    [5_000, 8],
  ])(
    "returns every one of %i buffers exactly once, intact (queue size %i)",
    async (count, queueSize) => {
      const r = await runCrossThreadStress({ count, queueSize, workerFile, deadlineMs: 30_000 });
      expect(r.device.workerError).toBeNull();
      expect(r.device.timedOut).toBe(false);
      expect(r.device.error).toBeNull();
      expect(r.driver).not.toBeNull();
      const d = r.driver!;
      expect(d.errors).toEqual([]);
      expect(d.completed).toBe(count);
      expect(r.device.served).toBe(count);
      // Every notification the device saw was a kick the driver decided on (plus the final "done").
      expect(r.device.notificationsSeen).toBe(d.kicks + 1);
      // Event suppression works across threads: far fewer doorbells than buffers.
      expect(d.kicks).toBeLessThan(count);
      expect(d.indirect).toBeGreaterThan(0);
    },
  );
});
