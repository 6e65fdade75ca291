import { Rtl8139, Rtl8139Driver, Rtl8139DriverError } from "@pvkit/emulated-rtl8139";
import { type AccessSize, GuestMemory, LoopbackBackend } from "@pvkit/platform";
import { describe, expect, it } from "vitest";
import { rtlDevice, rtlGuest } from "./harness.js";

describe("RTL8139 register file: accesses of an unsupported size", () => {
  it("refuses a 3-byte read at the chip, reads all-ones and says why", () => {
    const d = rtlDevice(new LoopbackBackend());
    expect(d.nic.read(0x00, 3 as AccessSize)).toBe(0xffff_ffff);
    expect(d.nic.stats.badAccesses).toBe(1);
    expect(d.nic.lastBadAccess).toBe(
      "rtl8139: register read of 3 bytes at offset 0x0 refused: the register file takes 1-, 2- or 4-byte accesses; read as all-ones",
    );
    const idr0 = d.nic.read(0x00, 4);
    d.nic.write(0x00, 8 as AccessSize, 0);
    expect(d.nic.lastBadAccess).toBe(
      "rtl8139: register write of 8 bytes at offset 0x0 refused: the register file takes 1-, 2- or 4-byte accesses; write dropped",
    );
    expect(d.nic.read(0x00, 4)).toBe(idr0); // the dropped write changed nothing
    expect(d.nic.stats.badAccesses).toBe(2);
  });

  it("through the Bus, the bus refuses it before the chip sees it", () => {
    const d = rtlDevice(new LoopbackBackend());
    expect(d.bus.read("pio", d.io + 0x37, 3 as AccessSize)).toBe(0xffff_ffff);
    expect(d.bus.stats().badAccesses).toBe(1);
    expect(d.bus.lastBadAccess?.message).toMatch(
      /^bad pio read of 3 bytes at 0xc037 \(".*"\): the bus carries accesses of 1, 2 or 4 bytes; read as all-ones$/,
    );
    expect(d.nic.stats.badAccesses).toBe(0);
  });
});

describe("one Rtl8139Driver per chip", () => {
  it("refuses a second open on the same chip and binds again after close()", () => {
    const g = rtlGuest(new LoopbackBackend());
    const again = () =>
      Rtl8139Driver.open({ bus: g.bus, memory: g.memory, allocator: g.allocator, config: g.cfg });
    const second = again();
    expect(second).toBeInstanceOf(Rtl8139DriverError);
    expect((second as Rtl8139DriverError).code).toBe("alreadyBound");
    expect((second as Rtl8139DriverError).message).toBe(
      "RTL8139 at mmio 0xfe000000 is already driven by Rtl8139Driver; close() that driver first",
    );
    // The same chip reached through its register window directly is the same device.
    const direct = Rtl8139Driver.open({
      bus: g.bus,
      memory: g.memory,
      allocator: g.allocator,
      registers: { space: "mmio", base: g.mmio },
    });
    expect((direct as Rtl8139DriverError).code).toBe("alreadyBound");
    g.driver.close();
    const third = again();
    expect(third).toBeInstanceOf(Rtl8139Driver);
    // A stale close() of the first driver does not release the new one.
    g.driver.close();
    expect((again() as Rtl8139DriverError).code).toBe("alreadyBound");
  });
});

describe("constructor and open() arguments", () => {
  it("new Rtl8139 names the missing option", () => {
    const New = Rtl8139 as unknown as new (o?: unknown) => Rtl8139;
    expect(() => new New()).toThrow(
      "new Rtl8139 expects an options object { backend, memory, mac?, irq?, … }, got undefined",
    );
    expect(() => new New({ memory: GuestMemory.create(4096) })).toThrow(TypeError);
    expect(() => new New({ memory: GuestMemory.create(4096) })).toThrow(
      "new Rtl8139: options.backend must be a NetBackend (e.g. new LoopbackBackend() or switch.createPort(name); attach, detach and send methods), got undefined",
    );
    expect(() => new New({ backend: new LoopbackBackend(), memory: 4096 })).toThrow(
      "new Rtl8139: options.memory must be a GuestMemory (e.g. GuestMemory.create(16 << 20)), got number 4096",
    );
  });

  it("Rtl8139Driver.open without a bus", () => {
    const open = Rtl8139Driver.open as (o: unknown) => unknown;
    expect(() => open({ memory: GuestMemory.create(4096), allocator: { alloc: () => 0 } })).toThrow(
      "Rtl8139Driver.open: options.bus must be a Bus (read and write methods), got undefined",
    );
  });
});
