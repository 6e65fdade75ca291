/**
 * A transmit drain longer than the queue continues in a later macrotask through
 * `@pvkit/platform`'s `defer`, never behind a clamped `setTimeout` (DESIGN.md, "Hot paths").
 * Asserted in events: the continuations happen, every frame goes out in order, and no
 * timer is ever set.
 */

import { LoopbackBackend } from "@pvkit/platform";
import { afterEach, describe, expect, it, vi } from "vitest";
import { netGuest } from "./harness.js";

const QUEUE = 64;

describe("virtio-net transmit drain continuation", () => {
  afterEach(() => vi.restoreAllMocks());

  it("serves a burst of 4× the queue in budgeted passes continued without a timer", async () => {
    const backend = new LoopbackBackend();
    const sent: number[] = [];
    backend.send = (frame: Uint8Array) => {
      sent.push(frame[14]! | (frame[15]! << 8));
      return "sent";
    };
    const g = netGuest(backend, { device: { queueSize: QUEUE }, driver: { queueSize: QUEUE } });
    await new Promise<void>((r) => setImmediate(r));
    const total = 4 * QUEUE;
    const frame = new Uint8Array(60);
    frame.set([0x02, 0, 0, 0, 0, 2], 0);
    let added = 0;
    const add = (most: number): number => {
      let n = 0;
      for (; n < most && added < total; n++) {
        frame[14] = added & 0xff;
        frame[15] = added >> 8;
        if (!g.driver.enqueue(frame, { pair: 0 })) break;
        added++;
      }
      return n;
    };
    // A guest adding concurrently (another thread or vCPU): whenever the device re-enables
    // notifications, it reclaims what was returned and adds more before the device re-checks.
    const tx = g.device.queues[1]!;
    const enable = tx.enableNotification.bind(tx);
    tx.enableNotification = () => {
      const more = enable();
      tx.publishUsed();
      if (more || add(QUEUE / 4) === 0) return more;
      return enable();
    };
    const schedule = vi.spyOn(
      g.device as unknown as { schedule(task: () => void): void },
      "schedule",
    );
    const timer = vi.spyOn(globalThis, "setTimeout");
    add(QUEUE);
    g.driver.commit();
    for (let turns = 0; sent.length < total && turns < 100; turns++) {
      await new Promise<void>((r) => setImmediate(r));
    }
    expect(sent).toEqual(Array.from({ length: total }, (_, i) => i));
    // Each pass stops at the queue size; the rest was continued through `defer`.
    expect(schedule.mock.calls.length).toBeGreaterThanOrEqual(3);
    expect(timer).not.toHaveBeenCalled();
  });
});
