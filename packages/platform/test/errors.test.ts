import {
  type AccessSize,
  alreadyBoundMessage,
  type BadAccess,
  Bus,
  bindDriver,
  boundDriver,
  describeValue,
  EthernetSwitch,
  GuestMemory,
  type IoHandler,
  IrqLine,
  PciConfigSpace,
  unbindDriver,
} from "@pvkit/platform";
import { describe, expect, it } from "vitest";

/** A register file that counts the accesses that reach it. */
class Counter implements IoHandler {
  reads = 0;
  writes = 0;
  read(): number {
    this.reads++;
    return 0x1234;
  }
  write(): void {
    this.writes++;
  }
}

describe("Bus.map: overlapping mappings name both sides", () => {
  it("names the new label and range, the existing label and range, and the space", () => {
    const bus = new Bus();
    bus.map("mmio", 0xfeb0_0000, 0x200, new Counter(), "virtio-rng");
    expect(() => bus.map("mmio", 0xfeb0_0100, 0x200, new Counter(), "virtio-blk")).toThrow(
      'Bus.map: "virtio-blk" at 0xfeb00100–0xfeb002ff overlaps "virtio-rng" at 0xfeb00000–0xfeb001ff in the mmio address space',
    );
    bus.map("pio", 0xc000, 0x100, new Counter(), "rtl8139");
    expect(() => bus.map("pio", 0xc0ff, 1, new Counter(), "late")).toThrow(
      'Bus.map: "late" at 0xc0ff–0xc0ff overlaps "rtl8139" at 0xc000–0xc0ff in the pio address space',
    );
  });

  it("refuses malformed arguments with what was expected and what was given", () => {
    const bus = new Bus();
    expect(() => bus.map("mem" as "mmio", 0, 16, new Counter(), "x")).toThrow(
      'Bus.map: space must be "mmio" or "pio", got string "mem"',
    );
    expect(() => bus.map("mmio", -1, 16, new Counter(), "x")).toThrow(
      "Bus.map: base must be a non-negative safe integer, got number -1",
    );
    expect(() => bus.map("mmio", 0, 0, new Counter(), "x")).toThrow(/size must be a positive/);
    expect(() => bus.map("mmio", 0, 16, {} as IoHandler, "x")).toThrow(
      "Bus.map: handler must be an IoHandler (read and write methods), got an empty object {}",
    );
    expect(bus.stats().byDevice).toEqual({});
  });
});

describe("Bus: accesses of an unsupported size", () => {
  it("counts a 3-byte read, explains it, reads all-ones and never reaches the device", () => {
    const bus = new Bus();
    const dev = new Counter();
    bus.map("mmio", 0xfeb0_0000, 0x200, dev, "virtio-mmio");
    const seen: BadAccess[] = [];
    bus.onBadAccess = (a) => seen.push(a);
    expect(bus.read("mmio", 0xfeb0_0004, 3 as AccessSize)).toBe(0xffff_ffff);
    expect(dev.reads).toBe(0);
    const s = bus.stats();
    expect(s.badAccesses).toBe(1);
    expect(s.total).toBe(1);
    expect(bus.lastBadAccess).toEqual({
      space: "mmio",
      kind: "read",
      address: 0xfeb0_0004,
      size: 3,
      mapping: "virtio-mmio",
      message:
        'bad mmio read of 3 bytes at 0xfeb00004 ("virtio-mmio"): the bus carries accesses of 1, 2 or 4 bytes; read as all-ones',
    });
    expect(seen).toEqual([bus.lastBadAccess]);
  });

  it("drops a write of 8 bytes (or 0) and says so; valid sizes still work", () => {
    const bus = new Bus();
    const dev = new Counter();
    bus.map("pio", 0xc000, 0x100, dev, "rtl8139");
    bus.write("pio", 0xc010, 8 as AccessSize, 1);
    expect(bus.lastBadAccess?.message).toBe(
      'bad pio write of 8 bytes at 0xc010 ("rtl8139"): the bus carries accesses of 1, 2 or 4 bytes; write dropped',
    );
    bus.write("pio", 0xc010, 0 as AccessSize, 1);
    bus.read("pio", 0xd000, 3 as AccessSize); // nothing mapped there: still a bad size
    expect(bus.lastBadAccess?.mapping).toBeNull();
    expect(bus.lastBadAccess?.message).toBe(
      "bad pio read of 3 bytes at 0xd000: the bus carries accesses of 1, 2 or 4 bytes; read as all-ones",
    );
    expect(dev.writes).toBe(0);
    expect(bus.stats().badAccesses).toBe(3);
    expect(bus.stats().unclaimed).toBe(0);
    expect(bus.read("pio", 0xc010, 2)).toBe(0x1234);
    bus.write("pio", 0xc010, 1, 7);
    expect(dev.reads + dev.writes).toBe(2);
    expect(bus.stats().badAccesses).toBe(3);
    bus.resetStats();
    expect(bus.stats().badAccesses).toBe(0);
    expect(bus.lastBadAccess).toBeNull();
  });

  it("keeps a throwing diagnostics hook away from the guest", () => {
    const bus = new Bus();
    bus.onBadAccess = () => {
      throw new Error("hook bug");
    };
    expect(() => bus.read("mmio", 0, 3 as AccessSize)).not.toThrow();
    expect(bus.stats().badAccesses).toBe(1);
  });
});

describe("PciConfigSpace: refused accesses are explained", () => {
  it("records the size, offset and rule of the last refused access", () => {
    const c = new PciConfigSpace({ vendorId: 0x1af4, deviceId: 0x1044, classCode: 0xff0000 });
    expect(c.read(4, 3 as AccessSize)).toBe(0xffff_ffff);
    expect(c.lastRejected).toBe(
      "configuration read of 3 bytes at 0x4 refused: unsupported size 3; configuration accesses are 1, 2 or 4 bytes; read as all-ones",
    );
    c.write(2, 4, 0);
    expect(c.lastRejected).toBe(
      "configuration write of 4 bytes at 0x2 refused: not aligned to its 4-byte size; write dropped",
    );
    c.read(0xfe, 4);
    expect(c.lastRejected).toBe(
      "configuration read of 4 bytes at 0xfe refused: outside the 256-byte configuration space; read as all-ones",
    );
    expect(c.rejected).toBe(3);
  });
});

describe("GuestMemory: argument errors say what was expected and what was given", () => {
  it("GuestMemory.over over a number", () => {
    expect(() => GuestMemory.over(4096 as unknown as ArrayBuffer)).toThrow(TypeError);
    expect(() => GuestMemory.over(4096 as unknown as ArrayBuffer)).toThrow(
      "GuestMemory.over expects an ArrayBuffer, SharedArrayBuffer or WebAssembly.Memory, got number 4096 (for fresh RAM of a size use GuestMemory.create(4096))",
    );
    expect(() => GuestMemory.over(new Uint8Array(16) as unknown as ArrayBuffer)).toThrow(
      "GuestMemory.over expects an ArrayBuffer, SharedArrayBuffer or WebAssembly.Memory, got a Uint8Array",
    );
    expect(GuestMemory.over(new ArrayBuffer(4096)).end).toBe(4096);
    expect(GuestMemory.over(new WebAssembly.Memory({ initial: 1 })).end).toBe(65536);
  });

  it("the constructor with a number, a region without size, or a bad backing", () => {
    expect(() => new GuestMemory(4096 as unknown as [])).toThrow(
      "new GuestMemory expects an array of regions [{ base, size, backing? }], got number 4096 (for flat RAM of 4096 bytes use GuestMemory.create(4096))",
    );
    expect(() => new GuestMemory([{ base: 0 } as unknown as { base: 0; size: 0 }])).toThrow(
      "new GuestMemory: regions[0].size must be a number (bytes), got undefined",
    );
    expect(
      () => new GuestMemory([{ base: 0, size: 16, backing: "ram" as unknown as ArrayBuffer }]),
    ).toThrow(
      'new GuestMemory: regions[0].backing must be an ArrayBuffer, SharedArrayBuffer or WebAssembly.Memory, got string "ram"',
    );
    expect(() => new GuestMemory([{ base: 0, size: 1.5 }])).toThrow(
      "new GuestMemory: region size 1.5 at base 0x0 is invalid: it must be a positive safe integer with base + size ≤ 2^53",
    );
  });

  it("GuestMemory.create with a size that is not a number of bytes", () => {
    expect(() => GuestMemory.create("16M" as unknown as number)).toThrow(
      'GuestMemory.create: size must be a positive integer number of bytes, got string "16M"',
    );
    expect(() => GuestMemory.create(0)).toThrow(/got number 0/);
    expect(() => GuestMemory.create(4096, null as unknown as { shared?: boolean })).toThrow(
      "GuestMemory.create expects an options object { shared? }, got null",
    );
  });
});

describe("IrqLine and EthernetSwitch: constructor arguments", () => {
  it("IrqLine names must be strings", () => {
    expect(() => new IrqLine(5 as unknown as string)).toThrow(
      "new IrqLine: name must be a string, got number 5",
    );
    expect(new IrqLine().name).toBe("irq");
  });

  it("EthernetSwitch options and connect() check their types", () => {
    expect(() => new EthernetSwitch({ ageingMs: "5m" as unknown as number })).toThrow(
      'new EthernetSwitch: options.ageingMs must be a number of milliseconds ≥ 0, got string "5m"',
    );
    expect(() => new EthernetSwitch({ now: 0 as unknown as () => number })).toThrow(
      "new EthernetSwitch: options.now must be a function returning milliseconds, got number 0",
    );
    const sw = new EthernetSwitch();
    expect(() => sw.connect(undefined as never)).toThrow(
      "EthernetSwitch.connect: backend must be a NetBackend (attach, detach and send methods), got undefined",
    );
    expect(() => sw.createPort(7 as unknown as string)).toThrow(
      "EthernetSwitch.createPort: name must be a string, got number 7",
    );
  });
});

describe("describeValue", () => {
  it("names the type and, for primitives, the value", () => {
    expect(describeValue(4096)).toBe("number 4096");
    expect(describeValue("x")).toBe('string "x"');
    expect(describeValue(null)).toBe("null");
    expect(describeValue([1, 2])).toBe("an array of 2 items");
    expect(describeValue({ memory: 1, irq: 2 })).toBe("an object { memory, irq }");
    expect(describeValue(new ArrayBuffer(1))).toBe("an ArrayBuffer");
    expect(describeValue(3n)).toBe("bigint 3n");
  });
});

describe("driver bindings", () => {
  it("refuses a second driver on a device and names the holder; unbinding frees it", () => {
    const bus = new Bus();
    const first = { device: "NIC at pio 0xc000", driver: "DriverA", release: "call its close()" };
    expect(bindDriver(bus, "pio 0xc000", first)).toBeUndefined();
    const second = { device: "NIC at pio 0xc000", driver: "DriverB", release: "close it" };
    const held = bindDriver(bus, "pio 0xc000", second);
    expect(held).toBe(first);
    expect(alreadyBoundMessage(held!)).toBe(
      "NIC at pio 0xc000 is already driven by DriverA; call its close() first",
    );
    // Another bus, another address: independent.
    expect(bindDriver(new Bus(), "pio 0xc000", second)).toBeUndefined();
    expect(bindDriver(bus, "pio 0xd000", second)).toBeUndefined();
    // A stale driver's release does not unbind the current one.
    unbindDriver(bus, "pio 0xc000", second);
    expect(boundDriver(bus, "pio 0xc000")).toBe(first);
    unbindDriver(bus, "pio 0xc000", first);
    expect(boundDriver(bus, "pio 0xc000")).toBeUndefined();
    expect(bindDriver(bus, "pio 0xc000", second)).toBeUndefined();
    unbindDriver(bus, "pio 0xc000"); // a device reset ends any binding
    expect(boundDriver(bus, "pio 0xc000")).toBeUndefined();
  });
});
