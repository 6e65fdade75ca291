import { Bus } from "@pvkit/platform";
import { MemoryDisk, VirtioBlkDevice } from "@pvkit/virtio-blk";
import { testGuest } from "@pvkit/virtio-core/testing";
import { describe, expect, it } from "vitest";
import {
  expectNoBusFaults,
  expectServesAfterReset,
  GuardedMemory,
  noThrow,
} from "../src/guards.js";
import { FuzzFinding } from "../src/target.js";

const finding = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    if (e instanceof FuzzFinding) return e.invariant;
    throw e;
  }
  return "none";
};

describe("the shared guards", () => {
  it("GuardedMemory sees writes before and after guest RAM and outside the writable ranges", () => {
    const g = new GuardedMemory(0x1000, { guard: 64 });
    g.arm([{ addr: 0x100, len: 0x10 }]);
    g.memory.fill(0x100, 0x10, 1); // allowed
    expect(finding(() => g.check("t"))).toBe("none");
    g.host[63] = 0; // one byte before guest address 0
    expect(finding(() => g.check("t"))).toBe("canary");
    expect(finding(() => g.check("t"))).toBe("none"); // the guard is restored after a finding
    g.host[64 + 0x1000] = 0; // one byte past the end
    expect(finding(() => g.check("t"))).toBe("canary");
    g.memory.fill(0x200, 1, 0); // guest RAM outside what the device may write
    expect(finding(() => g.check("t"))).toBe("canary");
    expect(finding(() => g.check("t", [{ addr: 0x200, len: 1 }]))).toBe("none");
    // checkOutside leaves guest RAM alone and still sees the guards.
    expect(finding(() => g.checkOutside("t"))).toBe("none");
    g.host[64 + 0x1000 + 5] = 0;
    expect(finding(() => g.checkOutside("t"))).toBe("canary");
  });

  it("noThrow turns an escaped exception into a finding and keeps findings as they are", () => {
    expect(
      finding(() =>
        noThrow("x", () => {
          throw new RangeError("boom");
        }),
      ),
    ).toBe("escaped-exception");
    expect(
      finding(() =>
        noThrow("x", () => {
          throw new FuzzFinding("model", "m");
        }),
      ),
    ).toBe("model");
  });

  it("expectNoBusFaults reports a handler that threw on a guest access", () => {
    const bus = new Bus();
    bus.map(
      "pio",
      0x10,
      4,
      {
        read: () => {
          throw new Error("device bug");
        },
        write: () => {},
      },
      "bad",
    );
    expect(finding(() => expectNoBusFaults(bus, "t"))).toBe("none");
    bus.read("pio", 0x10, 1);
    expect(finding(() => expectNoBusFaults(bus, "t"))).toBe("contained-fault");
  });

  it("expectServesAfterReset passes a healthy disk and catches one that answers wrongly", async () => {
    for (const transport of ["mmio", "pci"] as const) {
      const disk = new MemoryDisk(16 * 512);
      disk.bytes.fill(0x42);
      const g = testGuest(new VirtioBlkDevice({ backend: disk }), {
        transport,
        memoryBytes: 1 << 20,
      });
      const rig = {
        transport: g.transport,
        memory: g.memory,
        scratch: { addr: 0x1_0000, len: 0xf_0000 },
      };
      await expectServesAfterReset(
        rig,
        { kind: "blk", sector: 1, expected: disk.bytes.slice(512, 1024) },
        transport,
      );
      const wrong = new Uint8Array(512).fill(0x43);
      await expect(
        expectServesAfterReset(rig, { kind: "blk", sector: 1, expected: wrong }, transport),
      ).rejects.toThrow(/serve-after-reset/);
    }
  });
});
