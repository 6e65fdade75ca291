/**
 * Regressions found by the `net-ctrl` fuzz target (issue 17).
 */
import { LoopbackBackend } from "@pvkit/platform";
import { rawMmioGuest } from "@pvkit/virtio-core/testing";
import { VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_SIZE, VirtioNetDevice } from "@pvkit/virtio-net";
import { describe, expect, test } from "vitest";

describe("MRG_RXBUF: buffers too small for a header", () => {
  test("are returned (used length 0) and published at once even when the frame must wait", () => {
    const backend = new LoopbackBackend({ mode: "sink" });
    const device = new VirtioNetDevice({ backend, queueSize: 16, ctrlVq: false, eventIdx: false });
    const g = rawMmioGuest(device, {
      memoryBytes: 1 << 18,
      features: 1n << BigInt(VIRTIO_NET_F_MRG_RXBUF),
      queues: [
        { base: 0, size: 16 },
        { base: 0x1000, size: 16 },
      ],
    });
    const rx = g.queues[0]!;
    // §5.1.6.3.1: every merged buffer must hold a header; these two cannot.
    const a = rx.addChain([{ addr: 0x8000, len: VIRTIO_NET_HDR_SIZE - 1, writable: true }]);
    const b = rx.addChain([{ addr: 0x9000, len: 1, writable: true }]);
    g.notify(0);
    const frame = new Uint8Array(60);
    frame.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    backend.inject(frame);
    // The frame waits for usable buffers, but the two unusable ones went back to the
    // driver: published in the used ring and signalled, not left invisible.
    expect(device.pendingFrames(0)).toBe(1);
    expect(rx.readUsed()).toEqual([
      { id: a, len: 0 },
      { id: b, len: 0 },
    ]);
    expect(g.irq.level).toBe(true);
    // A usable buffer then takes the waiting frame.
    const c = rx.addChain([{ addr: 0xa000, len: 2048, writable: true }]);
    g.notify(0);
    expect(rx.readUsed()).toEqual([{ id: c, len: VIRTIO_NET_HDR_SIZE + 60 }]);
    expect(device.pendingFrames(0)).toBe(0);
  });
});
