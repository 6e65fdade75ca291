/**
 * The `ring` fuzz target: a fixed-seed run, the case CI found at seed cbb0cdf0, and proof
 * that its canaries and its used-ring model fail on a broken device.
 */
import { type DeviceVirtqueue, VirtioRngDevice } from "@pvkit/virtio-core";
import * as fc from "fast-check";
import { afterEach, describe, expect, test, vi } from "vitest";
import { type RingCase, type RingStep, ringTarget } from "../src/targets/ring.js";
import { findingOf } from "./finding.js";

const base = {
  device: "rng",
  transport: "mmio",
  eventIdx: false,
  indirect: true,
  mrgRxbuf: false,
  size: 8,
  serveCheck: false,
} as const;

const good = (write: (RingStep & { k: "good" })["write"], indirect = false): RingStep => ({
  k: "good",
  q: 0,
  read: [],
  write,
  indirect,
  type: 0,
  sector: 0,
});

/** One 16-byte random request into the data area. */
const oneRequest: RingCase = {
  ...base,
  steps: [good([{ kind: "data", off: 0x100, len: 16 }]), { k: "kick", q: 0 }],
};

/**
 * `ring` seed cbb0cdf0, case 43499, shrunk: the first request's writable buffer ends on the
 * first byte of the indirect table the second request uses. The device fills it with random
 * bytes as asked, so the second request's only entry points somewhere new, and the device
 * writes there: what the guest asked for, not a device fault.
 */
const rewritesItsIndirectTable: RingCase = {
  ...base,
  steps: [
    good([{ kind: "ring", off: 2355, len: 1742 }]),
    good([{ kind: "data", off: 0, len: 1 }], true),
    { k: "kick", q: 0 },
    good([]),
  ],
};

afterEach(() => {
  vi.restoreAllMocks();
});

describe("ring", () => {
  test("a fixed-seed run finds nothing", async () => {
    await fc.assert(
      fc.asyncProperty(ringTarget.arbitrary, async (c) => ringTarget.run(c)),
      { seed: 4242, numRuns: 300 },
    );
  });

  test("the hand-written request passes on the real device", async () => {
    expect(await findingOf(() => ringTarget.run(oneRequest))).toBeNull();
  });

  test("a device that rewrites an indirect table it was handed as a buffer is not a finding", async () => {
    expect(await findingOf(() => ringTarget.run(rewritesItsIndirectTable))).toBeNull();
  });

  test("detects a device that writes one byte outside the buffers it was given", async () => {
    const fill = Reflect.get(VirtioRngDevice.prototype, "fill") as (c: unknown) => number;
    vi.spyOn(
      VirtioRngDevice.prototype as unknown as { fill: typeof fill },
      "fill",
    ).mockImplementation(function (this: VirtioRngDevice, chain: unknown) {
      this.memory?.writeU8(0x7ff0, 0);
      return fill.call(this, chain);
    });
    expect((await findingOf(() => ringTarget.run(oneRequest)))?.invariant).toBe("canary");
  });

  test("detects a device that publishes a used entry it was never given", async () => {
    type Notify = (index: number, queue: DeviceVirtqueue) => void;
    const notify = Reflect.get(VirtioRngDevice.prototype, "onQueueNotify") as Notify;
    vi.spyOn(
      VirtioRngDevice.prototype as unknown as { onQueueNotify: Notify },
      "onQueueNotify",
    ).mockImplementation(function (this: VirtioRngDevice, index, queue) {
      notify.call(this, index, queue);
      // One more used entry than chains made available (used.idx += 1).
      const idx = this.memory?.readU16(queue.deviceAddr + 2);
      if (typeof idx === "number") this.memory?.writeU16(queue.deviceAddr + 2, idx + 1);
    });
    expect((await findingOf(() => ringTarget.run(oneRequest)))?.invariant).toBe("model");
  });
});
