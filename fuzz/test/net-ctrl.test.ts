/**
 * The `net-ctrl` fuzz target: a fixed-seed run, and proof that both its canary and its
 * model checks fail on a broken device.
 */
import { VirtioNetDevice, type VirtioNetOptions } from "@pvkit/virtio-net";
import * as fc from "fast-check";
import { describe, expect, test } from "vitest";
import { makeNetCtrlTarget, type NetCtrlCase, netCtrlTarget } from "../src/targets/net-ctrl.js";
import { findingOf } from "./finding.js";

/** Promiscuous off, then one frame to the device's own MAC into one big buffer. */
const oneFrame: NetCtrlCase = {
  mrg: false,
  maxPairs: 1,
  steps: [
    { k: "rx", cmd: 0, data: [0] },
    {
      k: "frame",
      dst: "own",
      pick: 0,
      len: 100,
      seed: 3,
      bufs: [{ sizes: [2048], hostile: "none" }],
    },
  ],
};

describe("net-ctrl", () => {
  test("a fixed-seed run finds nothing", async () => {
    await fc.assert(
      fc.asyncProperty(netCtrlTarget.arbitrary, async (c) => netCtrlTarget.run(c)),
      { seed: 4242, numRuns: 150 },
    );
  });

  test("the hand-written case passes on the real device", async () => {
    expect(await findingOf(() => netCtrlTarget.run(oneFrame))).toBeNull();
  });

  test("detects a device that writes one byte past the buffer it filled", async () => {
    class Overrun extends VirtioNetDevice {
      constructor(o: VirtioNetOptions) {
        super(o);
        this.on("frame", (dir) => {
          // The frame went into the buffer at 0x20000 (12-byte header + 100 bytes): poke past 2048.
          if (dir === "rx") this.memory?.writeU8(0x20000 + 2048, 0);
        });
      }
    }
    const f = await findingOf(() =>
      makeNetCtrlTarget({ device: (o) => new Overrun(o) }).run(oneFrame),
    );
    expect(f?.invariant).toBe("canary");
  });

  test("detects a device whose filter state drifts from the model (a wrong ack effect)", async () => {
    class StickyPromisc extends VirtioNetDevice {
      constructor(o: VirtioNetOptions) {
        super(o);
        // Answers the RX-mode command but then changes the MAC: the model must notice.
        this.on("control", (cls) => {
          if (cls === 0) this.config[5] = this.config[5]! ^ 1;
        });
      }
    }
    const f = await findingOf(() =>
      makeNetCtrlTarget({ device: (o) => new StickyPromisc(o) }).run(oneFrame),
    );
    expect(f?.invariant).toBe("model");
  });
});
