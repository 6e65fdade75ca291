/**
 * The `sab-cross-thread` fuzz target: a fixed-seed run, a clean run that must lose
 * nothing, and proof that the canary check catches a device writing outside its buffers.
 */
import { VirtioNetDevice, type VirtioNetOptions } from "@pvkit/virtio-net";
import * as fc from "fast-check";
import { describe, expect, test } from "vitest";
import { FuzzFinding } from "../src/target.js";
import { makeSabCrossThreadTarget, sabCrossThreadTarget } from "../src/targets/sab-cross-thread.js";

describe("sab-cross-thread", () => {
  test("a fixed-seed run finds nothing", async () => {
    await fc.assert(
      fc.asyncProperty(sabCrossThreadTarget.arbitrary, (c) => sabCrossThreadTarget.run(c)),
      { seed: 1717, numRuns: 6 },
    );
  });

  test("a clean run (no scribbles) passes every frame through both threads", async () => {
    await sabCrossThreadTarget.run({ seed: 5, frames: 40, scribbles: 0, parts: 7, mrg: true });
  });

  test("detects a device that writes outside the buffers it was given", async () => {
    /** After each frame it delivers, also writes a byte into receive slot 0's canary half. */
    class LeakyInGap extends VirtioNetDevice {
      constructor(o: VirtioNetOptions) {
        super(o);
        this.on("frame", (dir) => {
          if (dir === "rx") this.memory?.writeU8(0x1_0900, 0x42);
        });
      }
    }
    const target = makeSabCrossThreadTarget({ device: (o) => new LeakyInGap(o) });
    const err = await Promise.resolve(
      target.run({ seed: 9, frames: 3, scribbles: 0, parts: 1, mrg: false }),
    ).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(FuzzFinding);
    expect((err as FuzzFinding).invariant).toBe("canary");
  });
});
