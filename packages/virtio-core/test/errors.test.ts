import { type AccessSize, GuestMemory, IrqLine } from "@pvkit/platform";
import {
  DRIVER_OK_STATUS,
  DriverError,
  VIRTIO_MMIO_WINDOW,
  VirtioErrorCode,
  VirtioMmio,
  VirtioMmioDriverTransport,
  VirtioMmioTransport,
  VirtioPciTransport,
  VirtioRngDevice,
  VirtioRngDriver,
} from "@pvkit/virtio-core";
import { TEST_MMIO_BASE, testGuest } from "@pvkit/virtio-core/testing";
import { describe, expect, it } from "vitest";

const RELEASE = "reset the device (transport.reset() or the driver's reset(), §2.4) first";

describe("one driver per device", () => {
  it("refuses a second VirtioRngDriver on the same mmio transport, naming device and holder", async () => {
    const device = new VirtioRngDevice();
    const g = testGuest(device);
    const first = VirtioRngDriver.create(g.transport, { memory: g.memory, allocator: g.allocator });
    if (first instanceof DriverError) throw new Error(first.message);
    const before = g.bus.exits;
    const second = VirtioRngDriver.create(g.transport, {
      memory: g.memory,
      allocator: g.allocator,
    });
    expect(second).toBeInstanceOf(DriverError);
    expect((second as DriverError).code).toBe(VirtioErrorCode.ALREADY_BOUND);
    expect((second as DriverError).message).toBe(
      `virtio-rng device at mmio 0xfeb00000 is already driven by VirtioRngDriver; ${RELEASE}`,
    );
    // Refused before touching the device: the first driver keeps it, no exit was spent.
    expect(g.bus.exits).toBe(before);
    expect(device.status).toBe(DRIVER_OK_STATUS);
    g.irq.onChange((high) => high && first.onInterrupt());
    expect((await first.read(8)).length).toBe(8);
  });

  it("sees a second transport probed at the same address as the same device", () => {
    const g = testGuest(new VirtioRngDevice());
    const first = VirtioRngDriver.create(g.transport, { memory: g.memory, allocator: g.allocator });
    expect(first).toBeInstanceOf(VirtioRngDriver);
    const again = VirtioMmioDriverTransport.probe(g.bus, TEST_MMIO_BASE);
    if (again instanceof DriverError) throw new Error(again.message);
    const second = VirtioRngDriver.create(again, { memory: g.memory, allocator: g.allocator });
    expect((second as DriverError).code).toBe(VirtioErrorCode.ALREADY_BOUND);
  });

  it("binds again after the driver's reset() or a transport reset", () => {
    const g = testGuest(new VirtioRngDevice());
    const opts = { memory: g.memory, allocator: g.allocator };
    const first = VirtioRngDriver.create(g.transport, opts) as VirtioRngDriver;
    first.reset();
    const second = VirtioRngDriver.create(g.transport, opts);
    expect(second).toBeInstanceOf(VirtioRngDriver);
    expect((VirtioRngDriver.create(g.transport, opts) as DriverError).code).toBe(
      VirtioErrorCode.ALREADY_BOUND,
    );
    g.transport.reset();
    expect(VirtioRngDriver.create(g.transport, opts)).toBeInstanceOf(VirtioRngDriver);
  });

  it("applies to virtio-pci too, naming the function by its common_cfg address", () => {
    const g = testGuest(new VirtioRngDevice(), { transport: "pci" });
    const opts = { memory: g.memory, allocator: g.allocator };
    expect(VirtioRngDriver.create(g.transport, opts)).toBeInstanceOf(VirtioRngDriver);
    const second = VirtioRngDriver.create(g.transport, opts) as DriverError;
    expect(second.code).toBe(VirtioErrorCode.ALREADY_BOUND);
    expect(second.message).toBe(
      `virtio-rng PCI device with common_cfg at mmio 0x800000000 is already driven by VirtioRngDriver; ${RELEASE}`,
    );
  });
});

describe("virtio-mmio transport: accesses of the wrong width are explained", () => {
  it("counts a 3-byte config read, reads 0 (as QEMU) and says why", () => {
    const memory = GuestMemory.create(1 << 20);
    const reasons: string[] = [];
    const t = new VirtioMmioTransport({
      device: new VirtioRngDevice(),
      memory,
      irq: new IrqLine("rng"),
      onIgnored: (r) => reasons.push(r),
    });
    expect(t.read(VirtioMmio.CONFIG, 3 as AccessSize)).toBe(0);
    expect(t.badAccesses).toBe(1);
    expect(t.lastIgnored).toBe(
      "virtio-mmio read of 3 bytes at offset 0x100 ignored: the device configuration space takes 1-, 2- or 4-byte accesses (§4.2.2.2); read as 0",
    );
    t.write(VirtioMmio.STATUS, 2, 1);
    expect(t.lastIgnored).toBe(
      "virtio-mmio write of 2 bytes at offset 0x70 ignored: control registers take 4-byte accesses at 4-byte-aligned offsets (§4.2.2.2); write dropped",
    );
    expect(reasons).toHaveLength(2);
    expect(t.badAccesses).toBe(2);
    // A proper access still works.
    expect(t.read(VirtioMmio.MAGIC_VALUE, 4)).toBe(0x7472_6976);
    expect(VIRTIO_MMIO_WINDOW).toBe(0x200);
  });
});

describe("virtio-pci transport: bad widths are explained", () => {
  it("records the size, BAR, offset and the rule", () => {
    const memory = GuestMemory.create(1 << 20);
    const pci = new VirtioPciTransport({ device: new VirtioRngDevice(), memory });
    expect(pci.barRead(4, 0, 3 as AccessSize)).toBe(0);
    expect(pci.stats.ignored).toBe(1);
    expect(pci.lastIgnored).toBe(
      "3-byte access at BAR 4 offset 0x0: virtio-pci structures take 1-, 2- or 4-byte accesses at non-negative offsets (§4.1.3.1)",
    );
  });
});

describe("transport constructors name the option, the type expected and the value given", () => {
  const memory = GuestMemory.create(1 << 16);
  const device = new VirtioRngDevice();

  it("VirtioMmioTransport", () => {
    const New = VirtioMmioTransport as unknown as new (o?: unknown) => VirtioMmioTransport;
    expect(() => new New()).toThrow(
      "new VirtioMmioTransport expects an options object { device, memory, irq }, got undefined",
    );
    expect(() => new New({ device, memory })).toThrow(TypeError);
    expect(() => new New({ device, memory })).toThrow(
      "new VirtioMmioTransport: options.irq must be an IrqLine (new IrqLine(name)), got undefined",
    );
    expect(() => new New({ device, memory: new ArrayBuffer(16), irq: new IrqLine() })).toThrow(
      "new VirtioMmioTransport: options.memory must be a GuestMemory (e.g. GuestMemory.create(16 << 20)), got an ArrayBuffer",
    );
    expect(() => new New({ memory, irq: new IrqLine() })).toThrow(
      "new VirtioMmioTransport: options.device must be a VirtioDevice (e.g. new VirtioRngDevice()), got undefined",
    );
  });

  it("VirtioPciTransport", () => {
    const New = VirtioPciTransport as unknown as new (o?: unknown) => VirtioPciTransport;
    expect(() => new New({ device: {}, memory })).toThrow(
      "new VirtioPciTransport: options.device must be a VirtioDevice (e.g. new VirtioRngDevice()), got an empty object {}",
    );
    expect(() => new New({ device, memory, irq: 5 })).toThrow(
      "new VirtioPciTransport: options.irq must be an IrqLine (new IrqLine(name)), got number 5",
    );
    expect(new New({ device, memory }).irq).toBeInstanceOf(IrqLine);
  });
});
