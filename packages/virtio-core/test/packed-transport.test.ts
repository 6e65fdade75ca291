/**
 * Packed rings through both transports (§2.8, §4.1.4.3, §4.2.2): VIRTIO_F_RING_PACKED is
 * offered only with `ringPacked: true`, the queue layout follows the negotiated features,
 * a queue size that is not a power of two is accepted for a packed ring, and a reset goes
 * back to split rings.
 */
import {
  featureMask,
  hasFeature,
  PackedDeviceQueue,
  PackedDriverQueue,
  packedQueueLayout,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VirtioRngDevice,
  VirtioRngDriver,
} from "@pvkit/virtio-core";
import { testGuest } from "@pvkit/virtio-core/testing";
import { describe, expect, it } from "vitest";

describe.each(["mmio", "pci"] as const)("packed rings over %s", (transport) => {
  it("the bit is offered only with ringPacked; default devices are unchanged", () => {
    expect(hasFeature(new VirtioRngDevice().deviceFeatures, VIRTIO_F_RING_PACKED)).toBe(false);
    const dev = new VirtioRngDevice({ ringPacked: true });
    const g = testGuest(dev, { transport });
    expect(hasFeature(g.transport.readDeviceFeatures(), VIRTIO_F_RING_PACKED)).toBe(true);
  });

  it("a 5-slot packed queue (not a power of two) serves entropy; a reset restores split rings", () => {
    const dev = new VirtioRngDevice({ ringPacked: true, queueSize: 8 });
    const g = testGuest(dev, { transport });
    const t = g.transport;
    t.reset();
    t.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    t.writeDriverFeatures(featureMask(VIRTIO_F_VERSION_1, VIRTIO_F_RING_PACKED));
    const s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
    t.setStatus(s);
    expect(t.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK).toBe(VIRTIO_CONFIG_S_FEATURES_OK);
    expect(dev.queues[0]).toBeInstanceOf(PackedDeviceQueue);
    const layout = packedQueueLayout(0x10000, 5);
    expect(t.setupQueue(0, 5, layout)).toBeUndefined();
    t.setStatus(s | VIRTIO_CONFIG_S_DRIVER_OK);
    expect(dev.isLive).toBe(true);
    expect(dev.queues[0]!.size).toBe(5);
    const q = new PackedDriverQueue<number>({
      memory: g.memory,
      index: 0,
      size: 5,
      layout,
      notify: () => t.notify(0),
    });
    const buf = 0x20000;
    g.memory.fill(buf, 64, 0);
    let got = 0;
    // Three laps of a 5-slot ring, one 64-byte buffer at a time.
    for (let i = 0; i < 15; i++) {
      expect(q.add([], [{ addr: buf, len: 64 }], i)).toBeTypeOf("number");
      expect(q.kick()).toBe(true);
      const u = q.getUsed();
      expect(u).toEqual({ token: i, len: 64 });
      got++;
    }
    expect(got).toBe(15);
    expect(q.broken).toBe(false);
    expect((g.memory.slice(buf, 64) as Uint8Array).some((b) => b !== 0)).toBe(true);
    t.reset();
    expect(dev.ringPacked).toBe(false);
    // After the reset the stock driver negotiates packed rings again (it wants them when offered).
    const drv = VirtioRngDriver.create(t, { memory: g.memory, allocator: g.allocator });
    expect(drv).toBeInstanceOf(VirtioRngDriver);
    expect(dev.ringPacked).toBe(true);
  });
});
