import { LoopbackBackend } from "@pvkit/platform";
import { DriverError, VirtioErrorCode } from "@pvkit/virtio-core";
import { VirtioNetDevice, VirtioNetDriver } from "@pvkit/virtio-net";
import { describe, expect, it } from "vitest";
import { netGuest } from "./harness.js";

describe("one VirtioNetDriver per device", () => {
  it("refuses a second driver on the same transport until the device is reset", () => {
    for (const transport of ["mmio", "pci"] as const) {
      const g = netGuest(new LoopbackBackend(), { transport });
      const opts = { memory: g.memory, allocator: g.allocator };
      const second = VirtioNetDriver.create(g.transport, opts);
      expect(second).toBeInstanceOf(DriverError);
      expect((second as DriverError).code).toBe(VirtioErrorCode.ALREADY_BOUND);
      expect((second as DriverError).message).toMatch(
        /^virtio-net (PCI )?device .* is already driven by VirtioNetDriver; reset the device \(transport\.reset\(\) or the driver's reset\(\), §2\.4\) first$/,
      );
      g.transport.reset();
      expect(VirtioNetDriver.create(g.transport, opts)).toBeInstanceOf(VirtioNetDriver);
    }
  });

  it("names the device by its register window", () => {
    const g = netGuest(new LoopbackBackend());
    const second = VirtioNetDriver.create(g.transport, {
      memory: g.memory,
      allocator: g.allocator,
    }) as DriverError;
    expect(second.message).toBe(
      "virtio-net device at mmio 0xfeb00000 is already driven by VirtioNetDriver; reset the device (transport.reset() or the driver's reset(), §2.4) first",
    );
  });
});

describe("VirtioNetDevice constructor arguments", () => {
  it("names the option, the type expected and the value given", () => {
    const New = VirtioNetDevice as unknown as new (o?: unknown) => VirtioNetDevice;
    expect(() => new New()).toThrow(
      "new VirtioNetDevice expects an options object { backend, mac?, mtu?, … }, got undefined",
    );
    expect(() => new New({ mtu: 1500 })).toThrow(TypeError);
    expect(() => new New({ mtu: 1500 })).toThrow(
      "new VirtioNetDevice: options.backend must be a NetBackend (e.g. new LoopbackBackend() or switch.createPort(name); attach, detach and send methods), got undefined",
    );
    expect(() => new New({ backend: "tap0" })).toThrow(/got string "tap0"$/);
    expect(new New({ backend: new LoopbackBackend() })).toBeInstanceOf(VirtioNetDevice);
  });

  it("VirtioNetDriver.create without memory", () => {
    const g = netGuest(new LoopbackBackend());
    expect(() => VirtioNetDriver.create(g.transport, { allocator: g.allocator } as never)).toThrow(
      "VirtioNetDriver.create: options.memory must be a GuestMemory, got undefined",
    );
  });
});
