/**
 * The `ring` and `ring-packed` fuzz targets: fixed-seed runs, the case CI found at seed
 * cbb0cdf0, and proof that their canaries and used-ring models fail on a broken device.
 */

import type { GuestMemory } from "@pvkit/platform";
import {
  type DeviceVirtqueue,
  PackedDeviceQueue,
  VirtioError,
  VirtioErrorCode,
  VirtioRngDevice,
} from "@pvkit/virtio-core";
import * as fc from "fast-check";
import { afterEach, describe, expect, test, vi } from "vitest";
import { type RingCase, type RingStep, ringPackedTarget, ringTarget } from "../src/targets/ring.js";
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

type Notify = (index: number, queue: DeviceVirtqueue) => void;

/** The guest memory a device was bound to (a protected field). */
function memoryOf(device: VirtioRngDevice): GuestMemory | null {
  return Reflect.get(device, "memory") as GuestMemory | null;
}

/** Wraps `VirtioRngDevice#fill`: `before` runs first, on each call. */
function onFill(before: (device: VirtioRngDevice) => void): void {
  const fill = Reflect.get(VirtioRngDevice.prototype, "fill") as (c: unknown) => number;
  vi.spyOn(
    VirtioRngDevice.prototype as unknown as { fill: typeof fill },
    "fill",
  ).mockImplementation(function (this: VirtioRngDevice, chain: unknown) {
    before(this);
    return fill.call(this, chain);
  });
}

/** Wraps `VirtioRngDevice#onQueueNotify`: `around` gets the device, the queue and the real call. */
function onNotify(
  around: (device: VirtioRngDevice, queue: DeviceVirtqueue, serve: () => void) => void,
): void {
  const notify = Reflect.get(VirtioRngDevice.prototype, "onQueueNotify") as Notify;
  vi.spyOn(
    VirtioRngDevice.prototype as unknown as { onQueueNotify: Notify },
    "onQueueNotify",
  ).mockImplementation(function (this: VirtioRngDevice, index, queue) {
    around(this, queue, () => notify.call(this, index, queue));
  });
}

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
    onFill((d) => memoryOf(d)?.writeU8(0x7ff0, 0));
    expect((await findingOf(() => ringTarget.run(oneRequest)))?.invariant).toBe("canary");
  });

  test("detects a device that publishes a used entry it was never given", async () => {
    onNotify((d, queue, serve) => {
      serve();
      // One more used entry than chains made available (used.idx += 1).
      const idx = memoryOf(d)?.readU16(queue.deviceAddr + 2);
      if (typeof idx === "number") memoryOf(d)?.writeU16(queue.deviceAddr + 2, idx + 1);
    });
    expect((await findingOf(() => ringTarget.run(oneRequest)))?.invariant).toBe("model");
  });
});

/** {@link oneRequest} on a packed ring. */
const onePacked: RingCase = { ...oneRequest, layout: "packed" };

describe("ring-packed", () => {
  test("a fixed-seed run finds nothing", async () => {
    await fc.assert(
      fc.asyncProperty(ringPackedTarget.arbitrary, async (c) => ringPackedTarget.run(c)),
      { seed: 4242, numRuns: 300 },
    );
  });

  test("every case negotiates the packed ring", () => {
    fc.assert(
      fc.property(ringPackedTarget.arbitrary, (c) => c.layout === "packed"),
      { seed: 7, numRuns: 50 },
    );
  });

  test("the hand-written request passes on the real device, and the device took a packed ring", async () => {
    const seen: boolean[] = [];
    onNotify((_d, queue, serve) => {
      seen.push(queue instanceof PackedDeviceQueue);
      serve();
    });
    expect(await findingOf(() => ringPackedTarget.run(onePacked))).toBeNull();
    expect(seen).toEqual([true]);
  });

  test("detects a device that writes one byte outside the buffers it was given", async () => {
    onFill((d) => memoryOf(d)?.writeU8(0x7ff0, 0));
    expect((await findingOf(() => ringPackedTarget.run(onePacked)))?.invariant).toBe("canary");
  });

  test("detects a used descriptor longer than the buffer's writable bytes", async () => {
    onNotify((d, queue, serve) => {
      serve();
      // The used descriptor went into ring slot 0: claim 4096 bytes for a 16-byte buffer.
      memoryOf(d)?.writeU32(queue.descAddr + 8, 4096);
    });
    const f = await findingOf(() => ringPackedTarget.run(onePacked));
    expect(f?.invariant).toBe("model");
    expect(f?.message).toMatch(/used length 4096 > 16/);
  });

  test("detects a device that returns a buffer after DEVICE_NEEDS_RESET", async () => {
    // The device breaks while serving the first buffer (a back-end failure, say); the
    // buffer made available afterwards must not be returned.
    const twoRequests: RingCase = {
      ...onePacked,
      steps: [
        ...onePacked.steps,
        good([{ kind: "data", off: 0x400, len: 16 }]),
        { k: "kick", q: 0 },
      ],
    };
    let calls = 0;
    onFill((d) => {
      // Only the case's first buffer: the serve check after the reset must succeed.
      if (calls++ === 0)
        d.needsReset(new VirtioError(VirtioErrorCode.MALFORMED_REQUEST, "broken on purpose", 0));
    });
    expect(await findingOf(() => ringPackedTarget.run(twoRequests))).toBeNull();
    calls = 0;
    // The broken device: it goes on serving its queue after DEVICE_NEEDS_RESET.
    vi.spyOn(VirtioRngDevice.prototype, "notifyQueue").mockImplementation(function (
      this: VirtioRngDevice,
      index,
    ) {
      Reflect.get(VirtioRngDevice.prototype, "onQueueNotify").call(this, index, this.queues[index]);
    });
    const f = await findingOf(() => ringPackedTarget.run(twoRequests));
    expect(f?.invariant).toBe("model");
    expect(f?.message).toMatch(/returned buffers after DEVICE_NEEDS_RESET/);
  });
});
