/**
 * Property: random register writes (TSD, TSAD, RBSTART, CAPR, CR, RCR, TCR, IMR/ISR,
 * 9346CR, anything) interleaved with frames from the wire never throw, never touch guest
 * memory outside the programmed ring (+ pad), and after a reset the chip serves a driver.
 */

import { Rtl8139Driver, Rtl8139DriverError } from "@pvkit/emulated-rtl8139";
import { LoopbackBackend } from "@pvkit/platform";
import { checkCanary, fillCanary, type MemoryRange } from "@pvkit/virtio-core/testing";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { expectSameBytes, frameOf, rng, rtlDevice, seqOf } from "./harness.js";

const MEM = 1 << 20;
const RING = 0x4_0000; // the only in-RAM ring address the guest may program
const PROGRAMMED: MemoryRange = { addr: RING, len: 65536 + 1536 };
const MAC = new Uint8Array([0x02, 0, 0, 0, 0x81, 0x39]);
const PEER = new Uint8Array([0x02, 0, 0, 0, 0, 0x01]);

type Cmd =
  | { kind: "w"; off: number; size: 1 | 2 | 4; value: number }
  | { kind: "r"; off: number; size: 1 | 2 | 4 }
  | { kind: "rx"; size: number; dst: number };

const size = fc.constantFrom<1 | 2 | 4>(1, 2, 4);
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const addr = fc.oneof(
  fc.constant(RING),
  fc.constantFrom(MEM, MEM - 4, MEM - 1600, 0xffff_fff0, 0xfe00_0000, 0x8000_0000),
);
const txAddr = fc.oneof(fc.integer({ min: 0, max: MEM + 4096 }), u32);
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  // TSD0–3: sizes around the limits, OWN bit random.
  fc.record({
    kind: fc.constant("w" as const),
    off: fc.constantFrom(0x10, 0x14, 0x18, 0x1c),
    size: fc.constant(4 as const),
    value: fc.oneof(fc.integer({ min: 0, max: 0x3fff }), u32),
  }),
  fc.record({
    kind: fc.constant("w" as const),
    off: fc.constantFrom(0x20, 0x24, 0x28, 0x2c),
    size: fc.constant(4 as const),
    value: txAddr,
  }),
  fc.record({
    kind: fc.constant("w" as const),
    off: fc.constant(0x30),
    size: fc.constant(4 as const),
    value: addr,
  }),
  fc.record({ kind: fc.constant("w" as const), off: fc.constant(0x38), size, value: u32 }),
  fc.record({
    kind: fc.constant("w" as const),
    off: fc.constantFrom(0x37, 0x3c, 0x3e, 0x40, 0x44, 0x48, 0x4c, 0x50, 0x54, 0x5b, 0x62),
    size,
    value: u32,
  }),
  // Anything else, except byte writes that would move RBSTART (0x30–0x33) off the plan.
  fc
    .record({
      kind: fc.constant("w" as const),
      off: fc.integer({ min: 0, max: 255 }),
      size,
      value: u32,
    })
    .filter((c) => c.off + c.size <= 0x30 || c.off >= 0x34),
  fc.record({ kind: fc.constant("r" as const), off: fc.integer({ min: 0, max: 255 }), size }),
  fc.record({
    kind: fc.constant("rx" as const),
    size: fc.oneof(fc.integer({ min: 0, max: 1600 }), fc.constantFrom(60, 1514, 1518, 1519, 65536)),
    dst: fc.integer({ min: 0, max: 3 }),
  }),
);

describe("property: random register traffic", () => {
  it("never throws, never writes outside the programmed ring, and the chip serves after a reset", () => {
    fc.assert(
      fc.property(fc.array(cmd, { minLength: 1, maxLength: 200 }), fc.integer(), (cmds, seed) => {
        const backend = new LoopbackBackend({ mode: "sink" });
        let t = 0;
        const d = rtlDevice(backend, { mac: MAC, memoryBytes: MEM, now: () => t, rxPending: 8 });
        const keep = [PROGRAMMED];
        fillCanary(d.memory, keep);
        const rand = rng(seed);
        const dsts = [
          MAC,
          PEER,
          new Uint8Array(6).fill(0xff),
          new Uint8Array([1, 0, 0x5e, 0, 0, 1]),
        ];
        for (const c of cmds) {
          t += 0.01;
          if (c.kind === "w") d.bus.write("mmio", d.mmio + c.off, c.size, c.value);
          else if (c.kind === "r") d.bus.read("mmio", d.mmio + c.off, c.size);
          else {
            const f = new Uint8Array(c.size);
            for (let i = 0; i < f.length; i++) f[i] = rand() & 0xff;
            if (c.size >= 6) f.set(dsts[c.dst]!, 0);
            backend.inject(f);
          }
        }
        expect(d.bus.stats().handlerFaults).toBe(0);
        expect(checkCanary(d.memory, keep)).toEqual([]);
        // Reset and serve: a fresh driver exchanges frames both ways.
        d.nic.reset();
        const got: Uint8Array[] = [];
        const drv = Rtl8139Driver.open({
          bus: d.bus,
          memory: d.memory,
          allocator: d.allocator,
          config: d.cfg,
          onFrame: (f) => got.push(f.slice()),
          schedule: (task) => task(),
        });
        expect(drv).not.toBeInstanceOf(Rtl8139DriverError);
        const driver = drv as Rtl8139Driver;
        const sentBefore = backend.sent.length;
        const out = frameOf(MAC, PEER, 200, 1, rand);
        expect(driver.send(out)).toBe(true);
        expect(backend.sent.length).toBe(sentBefore + 1);
        expectSameBytes(backend.sent.at(-1)!.frame, out);
        const inn = frameOf(PEER, MAC, 300, 2, rand);
        backend.inject(inn);
        while (d.irq.level) driver.onInterrupt();
        expect(got.length).toBe(1);
        expect(seqOf(got[0]!)).toBe(2);
        expectSameBytes(got[0]!, inn);
      }),
      { seed: 0x8139, numRuns: 150 },
    );
  });
});
