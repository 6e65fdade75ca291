import { type AccessSize, allOnes, Bus, type IoHandler } from "@pvkit/platform";
import { describe, expect, it } from "vitest";

interface Access {
  op: "r" | "w";
  offset: number;
  size: AccessSize;
  value?: number;
}

/** A register file that records every access and reads back what was written. */
class Recorder implements IoHandler {
  readonly log: Access[] = [];
  readonly regs = new Map<number, number>();
  read(offset: number, size: AccessSize): number {
    this.log.push({ op: "r", offset, size });
    return this.regs.get(offset) ?? offset + 0x100;
  }
  write(offset: number, size: AccessSize, value: number): void {
    this.log.push({ op: "w", offset, size, value });
    this.regs.set(offset, value);
  }
}

describe("Bus", () => {
  it("dispatches by space and address with window-relative offsets", () => {
    const bus = new Bus();
    const a = new Recorder();
    const b = new Recorder();
    const p = new Recorder();
    bus.map("mmio", 0x1000, 0x100, a, "a");
    bus.map("mmio", 0x2000, 0x100, b, "b");
    bus.map("pio", 0x1000, 0x20, p, "p");
    bus.write("mmio", 0x1010, 4, 0xdead_beef);
    expect(bus.read("mmio", 0x1010, 4)).toBe(0xdead_beef);
    expect(bus.read("mmio", 0x20ff, 1)).toBe(0xff + 0x100);
    bus.write("pio", 0x1004, 2, 0x1234);
    expect(a.log).toEqual([
      { op: "w", offset: 0x10, size: 4, value: 0xdead_beef },
      { op: "r", offset: 0x10, size: 4 },
    ]);
    expect(b.log).toEqual([{ op: "r", offset: 0xff, size: 1 }]);
    expect(p.log).toEqual([{ op: "w", offset: 4, size: 2, value: 0x1234 }]);
    // The same address in the other space is a different device.
    expect(a.regs.has(4)).toBe(false);
  });

  it("counts exits per device, per direction and per offset", () => {
    const bus = new Bus();
    const dev = new Recorder();
    const m = bus.map("mmio", 0xfeb0_0000, 0x200, dev, "virtio-mmio");
    for (let i = 0; i < 3; i++) bus.read("mmio", 0xfeb0_0000, 4);
    bus.write("mmio", 0xfeb0_0050, 4, 0);
    bus.write("mmio", 0xfeb0_0050, 4, 1);
    expect(bus.exits).toBe(5);
    expect(m.exits).toBe(5);
    expect(m.reads).toBe(3);
    expect(m.writes).toBe(2);
    expect(m.perOffset![0]).toBe(3);
    expect(m.perOffset![0x50]).toBe(2);
    expect(m.perOffset![0x4]).toBe(0);
    const s = bus.stats();
    expect(s.total).toBe(5);
    expect(s.unclaimed).toBe(0);
    expect(s.byDevice["virtio-mmio"]).toEqual({ exits: 5, reads: 3, writes: 2 });
    bus.resetStats();
    expect(bus.exits).toBe(0);
    expect(m.exits + m.reads + m.writes).toBe(0);
    expect(m.perOffset!.every((n) => n === 0)).toBe(true);
    expect(bus.stats().byDevice["virtio-mmio"]).toEqual({ exits: 0, reads: 0, writes: 0 });
  });

  it("keeps per-offset counts only for windows of at most 4 KiB", () => {
    const bus = new Bus();
    expect(bus.map("mmio", 0, 4096, new Recorder(), "small").perOffset).toHaveLength(4096);
    expect(bus.map("mmio", 0x10000, 4097, new Recorder(), "big").perOffset).toBeNull();
    bus.read("mmio", 0x10000 + 4096, 1);
    expect(bus.stats().byDevice.big!.exits).toBe(1);
  });

  it("sums devices that share a name", () => {
    const bus = new Bus();
    bus.map("pio", 0x60, 1, new Recorder(), "kbd");
    bus.map("pio", 0x64, 1, new Recorder(), "kbd");
    bus.read("pio", 0x60, 1);
    bus.read("pio", 0x64, 1);
    bus.write("pio", 0x64, 1, 0xd1);
    expect(bus.stats().byDevice.kbd).toEqual({ exits: 3, reads: 2, writes: 1 });
  });

  it("unclaimed reads return all-ones, unclaimed writes are dropped, both are exits", () => {
    const bus = new Bus();
    const dev = new Recorder();
    bus.map("mmio", 0x1000, 0x10, dev, "d");
    expect(bus.read("mmio", 0x0fff, 1)).toBe(0xff);
    expect(bus.read("mmio", 0x1010, 2)).toBe(0xffff);
    expect(bus.read("pio", 0x1000, 4)).toBe(0xffff_ffff);
    bus.write("mmio", 0x2000, 4, 5);
    expect(dev.log).toHaveLength(0);
    expect(bus.stats().unclaimed).toBe(4);
    expect(bus.exits).toBe(4);
    expect([allOnes(1), allOnes(2), allOnes(4)]).toEqual([0xff, 0xffff, 0xffff_ffff]);
  });

  it("rejects overlapping maps in the same space and allows adjacent ones", () => {
    const bus = new Bus();
    bus.map("mmio", 0x1000, 0x100, new Recorder(), "first");
    expect(() => bus.map("mmio", 0x10ff, 1, new Recorder(), "tail")).toThrow(/overlaps "first"/);
    expect(() => bus.map("mmio", 0x0f00, 0x101, new Recorder(), "head")).toThrow(/overlaps/);
    expect(() => bus.map("mmio", 0x1040, 0x10, new Recorder(), "inside")).toThrow(/overlaps/);
    expect(() => bus.map("mmio", 0x0800, 0x1000, new Recorder(), "around")).toThrow(/overlaps/);
    const after = new Recorder();
    bus.map("mmio", 0x1100, 0x100, after, "after");
    bus.map("mmio", 0x0f00, 0x100, new Recorder(), "before");
    bus.map("pio", 0x1000, 0x100, new Recorder(), "other space");
    bus.read("mmio", 0x1100, 1);
    expect(after.log).toHaveLength(1);
    // A rejected map leaves no trace.
    expect(Object.keys(bus.stats().byDevice).sort()).toEqual([
      "after",
      "before",
      "first",
      "other space",
    ]);
  });

  it("moves a mapping (BAR reprogramming) unless the new place overlaps", () => {
    const bus = new Bus();
    const dev = new Recorder();
    const m = bus.map("mmio", 0x1000, 0x100, dev, "bar0");
    bus.map("mmio", 0x3000, 0x100, new Recorder(), "other");
    bus.read("mmio", 0x1000, 4); // warms the last-hit cache
    expect(bus.move(m, 0x2000)).toBe(true);
    expect(m.base).toBe(0x2000);
    expect(bus.read("mmio", 0x1000, 4)).toBe(0xffff_ffff);
    expect(bus.read("mmio", 0x2004, 4)).toBe(0x104);
    expect(bus.move(m, 0x2f80)).toBe(false);
    expect(m.base).toBe(0x2000);
    expect(bus.read("mmio", 0x2f80, 4)).toBe(0xffff_ffff);
    expect(bus.read("mmio", 0x2000, 1)).toBe(0x100);
    // Moving onto its own current place (overlapping only itself) is fine.
    expect(bus.move(m, 0x2080)).toBe(true);
    expect(bus.read("mmio", 0x2080, 1)).toBe(0x100);
  });

  it("unmaps: the window reads as all-ones afterwards and the address can be reused", () => {
    const bus = new Bus();
    const dev = new Recorder();
    const m = bus.map("pio", 0xc000, 0x20, dev, "nic");
    expect(bus.read("pio", 0xc000, 1)).toBe(0x100);
    bus.unmap(m);
    expect(bus.read("pio", 0xc000, 1)).toBe(0xff);
    bus.write("pio", 0xc001, 1, 1);
    expect(dev.log).toHaveLength(1);
    bus.unmap(m); // twice is harmless
    const again = new Recorder();
    bus.map("pio", 0xc000, 0x20, again, "nic2");
    bus.read("pio", 0xc010, 2);
    expect(again.log).toEqual([{ op: "r", offset: 0x10, size: 2 }]);
  });

  it("contains a throwing handler: all-ones for reads, counted as a fault and as an exit", () => {
    const bus = new Bus();
    const bad: IoHandler = {
      read() {
        throw new Error("device bug");
      },
      write() {
        throw new TypeError("device bug");
      },
    };
    const m = bus.map("mmio", 0x1000, 0x10, bad, "buggy");
    expect(bus.read("mmio", 0x1004, 2)).toBe(0xffff);
    expect(() => bus.write("mmio", 0x1004, 4, 1)).not.toThrow();
    expect(bus.read("mmio", 0x1000, 4)).toBe(0xffff_ffff);
    const s = bus.stats();
    expect(s.handlerFaults).toBe(3);
    expect(s.total).toBe(3);
    expect(m.exits).toBe(3);
    expect(m.perOffset![4]).toBe(2);
    bus.resetStats();
    expect(bus.stats().handlerFaults).toBe(0);
  });

  it("returns handler values zero-extended to 32 bits and passes writes unsigned", () => {
    const bus = new Bus();
    const seen: number[] = [];
    bus.map(
      "mmio",
      0,
      0x10,
      {
        read: () => -1,
        write: (_o, _s, v) => {
          seen.push(v);
        },
      },
      "signed",
    );
    expect(bus.read("mmio", 0, 4)).toBe(0xffff_ffff);
    bus.write("mmio", 0, 4, -2);
    expect(seen).toEqual([0xffff_fffe]);
  });
});
