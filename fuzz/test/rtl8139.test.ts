/**
 * The `rtl8139` fuzz target: a fixed-seed run, and proof that its EEPROM model, its DMA
 * canaries and its transmit model fail on a broken chip.
 */
import { Rtl8139, type Rtl8139Options } from "@pvkit/emulated-rtl8139";
import * as fc from "fast-check";
import { describe, expect, test } from "vitest";
import { makeRtl8139Target, type Rtl8139Case, rtl8139Target } from "../src/targets/rtl8139.js";
import { findingOf } from "./finding.js";

const readMac: Rtl8139Case = {
  steps: [{ k: "eeprom", cmds: [{ op: 2, addr: 7, extra: 16, dropCs: true }] }],
};
const rxOne: Rtl8139Case = {
  steps: [
    {
      k: "rx",
      rblen: 0,
      wrap: true,
      base: 0x4000,
      rcr: 0x0a,
      mar: [0, 0, 0, 0, 0, 0, 0, 0],
      frames: [{ dst: "own", len: 100, seed: 1, consume: true }],
    },
  ],
};

describe("rtl8139", () => {
  test("a fixed-seed run finds nothing", async () => {
    await fc.assert(
      fc.asyncProperty(rtl8139Target.arbitrary, async (c) => rtl8139Target.run(c)),
      { seed: 8139, numRuns: 200 },
    );
  });

  test("hand-written EEPROM and receive cases pass on the real chip", async () => {
    expect(await findingOf(() => rtl8139Target.run(readMac))).toBeNull();
    expect(await findingOf(() => rtl8139Target.run(rxOne))).toBeNull();
  });

  test("a ring filled without CAPR moves overflows exactly as the model says (RXOVW, MPC)", async () => {
    const frames = Array.from({ length: 10 }, (_, i) => ({
      dst: "own" as const,
      len: 1500,
      seed: i,
      consume: false,
    }));
    const fill: Rtl8139Case = {
      steps: [
        {
          k: "rx",
          rblen: 0,
          wrap: false,
          base: 0x4000,
          rcr: 0x0f,
          mar: [0, 0, 0, 0, 0, 0, 0, 0],
          frames,
        },
      ],
    };
    const chips: Rtl8139[] = [];
    const target = makeRtl8139Target({
      device: (o: Rtl8139Options) => {
        const d = new Rtl8139(o);
        chips.push(d);
        return d;
      },
    });
    expect(await findingOf(() => target.run(fill))).toBeNull();
    expect(chips[0]!.stats.drops.rxOverflow).toBeGreaterThan(0);
  });

  test("detects an EEPROM whose contents differ from what it should hold", async () => {
    const target = makeRtl8139Target({
      device: (o: Rtl8139Options) => {
        const d = new Rtl8139(o);
        d.eeprom.words[7] = d.eeprom.words[7]! ^ 0x0100; // a flipped bit
        return d;
      },
    });
    expect((await findingOf(() => target.run(readMac)))?.invariant).toBe("model");
  });

  test("detects a receive DMA that writes past the ring's pad", async () => {
    const target = makeRtl8139Target({
      device: (o: Rtl8139Options) => {
        const d = new Rtl8139(o);
        d.on("frame", (dir) => {
          if (dir === "rx") o.memory.writeU8(0x4000 + 8192 + 1536 + 4, 0);
        });
        return d;
      },
    });
    expect((await findingOf(() => target.run(rxOne)))?.invariant).toBe("canary");
  });
});
