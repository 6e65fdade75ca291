// Issue 17: an invalid queue size written and then enabled. virtio-mmio used to set
// DEVICE_NEEDS_RESET while virtio-pci dropped the write and enabled the queue with its old
// size. Both transports now store the size (§4.1.4.3 queue_size, §4.2.2 QueueNum) and
// refuse it at enable with DEVICE_NEEDS_RESET (§2.1.2, §2.7), leaving the queue disabled.

import {
  DriverError,
  GuestAllocator,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VirtioRngDevice,
  VirtioRngDriver,
} from "@pvkit/virtio-core";
import { testGuest } from "@pvkit/virtio-core/testing";
import { describe, expect, it } from "vitest";

const MAX = 16;
const RINGS = { desc: 0x10000, driver: 0x11000, device: 0x12000 };

describe.each(["mmio", "pci"] as const)("an invalid queue size over virtio-%s", (transport) => {
  it.each([
    ["zero", 0],
    ["not a power of two", 6],
    ["above the maximum", 2 * MAX],
    ["not a power of two, above the maximum", 0xffff],
  ])("%s (%d), written then enabled → DEVICE_NEEDS_RESET, queue left disabled", (_n, size) => {
    const device = new VirtioRngDevice({ queueSize: MAX });
    const g = testGuest(device, { transport, memoryBytes: 1 << 20 });
    const t = g.transport;
    t.reset();
    t.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    t.writeDriverFeatures(1n << BigInt(VIRTIO_F_VERSION_1));
    const ok = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
    t.setStatus(ok);
    expect(t.setupQueue(0, size, RINGS)).toBeUndefined(); // size, addresses, then enable
    expect(t.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(device.queues[0]!.ready).toBe(false);
    expect(g.bus.stats().handlerFaults).toBe(0);

    // A reset clears it and a real driver is served again (§2.4).
    t.reset();
    expect(t.getStatus()).toBe(0);
    const drv = VirtioRngDriver.create(t, {
      memory: g.memory,
      allocator: new GuestAllocator(0x1000, 0xf_0000),
    });
    if (drv instanceof DriverError) throw new Error(drv.message);
    expect(device.queues[0]!.size).toBe(MAX);
    expect(t.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
  });

  it("a valid smaller size is taken as written", () => {
    const device = new VirtioRngDevice({ queueSize: MAX });
    const g = testGuest(device, { transport, memoryBytes: 1 << 20 });
    const drv = VirtioRngDriver.create(g.transport, {
      memory: g.memory,
      allocator: new GuestAllocator(0x1000, 0xf_0000),
      queueSize: 4,
    });
    if (drv instanceof DriverError) throw new Error(drv.message);
    expect(device.queues[0]!.size).toBe(4);
    expect(device.queues[0]!.ready).toBe(true);
  });
});
