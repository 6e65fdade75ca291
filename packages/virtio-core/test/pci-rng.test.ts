import {
  type AccessSize,
  type AddressSpace,
  assignPciBars,
  Bus,
  GuestMemory,
  PciConfigPortAccess,
  PciHost,
} from "@pvkit/platform";
import {
  DRIVER_OK_STATUS,
  DriverError,
  GuestAllocator,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_MSI_NO_VECTOR,
  VirtioErrorCode,
  VirtioPciDriverTransport,
  type VirtioPciLayoutPreset,
  VirtioPciTransport,
  VirtioRngDevice,
  VirtioRngDriver,
} from "@pvkit/virtio-core";
import { describe, expect, it } from "vitest";

const SLOT = 4;
const MSI_DATA_BASE = 0x40;

function counterSource() {
  let next = 0;
  return {
    source: (buf: Uint8Array) => {
      for (let i = 0; i < buf.length; i++) buf[i] = next++ & 0xff;
    },
    expected: (from: number, n: number) =>
      Uint8Array.from({ length: n }, (_, i) => (from + i) & 0xff),
  };
}

/** v86's MMIO path: a 16-bit write reaches the device as two 8-bit writes (low byte first). */
class SplittingBus extends Bus {
  override write(space: AddressSpace, address: number, size: AccessSize, value: number): void {
    if (space === "mmio" && size === 2) {
      super.write(space, address, 1, value & 0xff);
      super.write(space, address + 1, 1, (value >>> 8) & 0xff);
      return;
    }
    super.write(space, address, size, value);
  }
}

interface RigOptions {
  readonly msix?: boolean;
  readonly layout?: VirtioPciLayoutPreset;
  readonly split?: boolean;
  readonly queueSize?: number;
}

function rig(opts: RigOptions = {}) {
  const memory = GuestMemory.create(1 << 20);
  const allocator = new GuestAllocator(0x1_0000, 0xf_0000);
  const bus = opts.split ? new SplittingBus() : new Bus();
  const src = counterSource();
  const device = new VirtioRngDevice({ queueSize: opts.queueSize ?? 64, source: src.source });
  // The guest's interrupt controller: MSI-X messages are queued, then handled like an IRQ.
  const messages: Array<{ address: bigint; data: number }> = [];
  let onMsi: (data: number) => void = () => {};
  const pci = new VirtioPciTransport({
    device,
    memory,
    name: "rng",
    layout: opts.layout ?? "mem64",
    ...(opts.msix
      ? {
          msix: {
            vectors: 4,
            onMessage: (address: bigint, data: number) => {
              messages.push({ address, data });
              onMsi(data);
            },
          },
        }
      : {}),
  });
  const host = new PciHost(bus);
  host.attach(pci, SLOT);
  host.mapConfigPorts();
  const cfg = new PciConfigPortAccess(bus, SLOT);
  // Firmware: size and place the BARs, enable decode.
  assignPciBars(cfg, { io: 0xc000, mem32: 0xfe00_0000, mem64: 0x8_0000_0000 });
  const t = VirtioPciDriverTransport.probe(bus, cfg);
  if (t instanceof DriverError) throw new Error(t.message);
  if (opts.msix)
    expect(t.enableMsix({ numQueues: 1, dataBase: MSI_DATA_BASE })).toBe("msix-per-queue");
  const driver = VirtioRngDriver.create(t, { memory, allocator });
  if (driver instanceof DriverError) throw new Error(driver.message);
  // Which driver instance handles this device's interrupts (Linux re-probes after firmware).
  const route = { handler: (): unknown => driver.onInterrupt() };
  if (opts.msix) {
    onMsi = (data) => {
      if (t.handleMsixMessage(data) !== 0) route.handler();
    };
  } else {
    pci.irq.onChange((high) => high && route.handler());
  }
  const structExits = () => {
    const s = bus.stats().byDevice;
    let n = 0;
    for (const [name, v] of Object.entries(s)) if (name.startsWith("rng.bar")) n += v.exits;
    return n;
  };
  return {
    memory,
    allocator,
    bus,
    device,
    pci,
    host,
    cfg,
    t,
    driver,
    src,
    messages,
    structExits,
    route,
  };
}

describe("virtio-rng end to end through modern virtio-pci", () => {
  it("initialises over a 64-bit memory BAR and reads entropy with INTx (ISR read per interrupt)", async () => {
    const { device, pci, driver, src, bus, structExits, t } = rig();
    expect(t.deviceId).toBe(4);
    expect(device.status).toBe(DRIVER_OK_STATUS);
    expect(device.queues[0]!.isActive).toBe(true);
    expect(t.common.address).toBe(0x8_0000_0000); // BAR 4 placed above 4 GiB
    expect(t.irqMode).toBe("intx");
    bus.resetStats();
    pci.irq.resetStats();
    const a = await driver.read(32);
    expect(a).toEqual(src.expected(0, 32));
    // One notify write + one ISR read (read-to-clear: no acknowledge write on PCI).
    expect(structExits()).toBe(2);
    expect(pci.stats.notifications).toBe(1);
    expect(pci.stats.isrReads).toBe(1);
    expect(pci.irq.raises).toBe(1);
    expect(pci.irq.level).toBe(false);
    const b = await driver.read(10_000);
    expect(b).toEqual(src.expected(32, 10_000));
    expect(structExits()).toBe(4);
    expect(driver.stats.bytes).toBe(10_032);
  });

  it("reads entropy with MSI-X per-queue vectors: no ISR read, the line never rises", async () => {
    const { pci, driver, src, bus, structExits, messages, t } = rig({ msix: true });
    expect(t.irqMode).toBe("msix-per-queue");
    expect(pci.configMsixVector).toBe(0);
    expect(pci.queueMsixVector(0)).toBe(1);
    bus.resetStats();
    const a = await driver.read(48);
    expect(a).toEqual(src.expected(0, 48));
    expect(structExits()).toBe(1); // the notify write only
    expect(pci.stats.isrReads).toBe(0);
    expect(messages).toEqual([{ address: 0xfee0_0000n, data: MSI_DATA_BASE + 1 }]);
    expect(pci.irq.raises).toBe(0);
    expect(pci.isr).toBe(0);
    const b = await driver.read(9000);
    expect(b).toEqual(src.expected(48, 9000));
    expect(messages.length).toBe(2);
    expect(driver.stats.interrupts).toBe(2);
  });

  it("falls back to INTx when the driver turns MSI-X off", async () => {
    const { pci, driver, src, t, messages } = rig({ msix: true });
    await driver.read(8);
    expect(messages.length).toBe(1);
    t.disableMsix();
    expect(pci.msix!.enabled).toBe(false);
    pci.irq.onChange((high) => high && driver.onInterrupt());
    const got = await driver.read(8);
    expect(got).toEqual(src.expected(8, 8));
    expect(messages.length).toBe(1);
    expect(pci.irq.raises).toBe(1);
    expect(pci.stats.isrReads).toBe(1);
  });

  it("works through an I/O BAR (v86's arrangement)", async () => {
    const { driver, src, t, bus, structExits } = rig({ layout: "io" });
    expect(t.common.space).toBe("pio");
    expect(t.common.address).toBe(0xc000);
    bus.resetStats();
    expect(await driver.read(100)).toEqual(src.expected(0, 100));
    expect(bus.stats().byDevice["rng.bar0"]!.exits).toBe(2);
    expect(structExits()).toBe(2);
  });

  it("works when 16-bit MMIO writes arrive as two byte writes (v86 mmap_write16)", async () => {
    const { driver, src, device, pci, structExits, bus } = rig({ split: true });
    expect(device.status).toBe(DRIVER_OK_STATUS);
    expect(device.queues[0]!.size).toBe(64);
    bus.resetStats();
    expect(await driver.read(64)).toEqual(src.expected(0, 64));
    // The notify write came as two bytes: exactly one notification, the high byte ignored.
    expect(pci.stats.notifications).toBe(1);
    expect(structExits()).toBe(3);
  });

  it("survives a firmware-style init, use and reset before the real driver (SeaBIOS then Linux)", async () => {
    const { device, pci, driver, src, t, memory, allocator, messages, route } = rig({ msix: true });
    const firstRings = device.queues[0]!.descAddr;
    expect(firstRings).not.toBe(0);
    expect(await driver.read(16)).toEqual(src.expected(0, 16));
    driver.reset();
    expect(device.status).toBe(0);
    expect(device.queues[0]!.descAddr).toBe(0);
    expect(device.queues[0]!.ready).toBe(false);
    expect(pci.queueMsixVector(0)).toBe(VIRTIO_MSI_NO_VECTOR);
    expect(pci.configMsixVector).toBe(VIRTIO_MSI_NO_VECTOR);
    // Linux probes again, with a smaller queue this time.
    const again = VirtioRngDriver.create(t, { memory, allocator, queueSize: 16 });
    if (again instanceof DriverError) throw new Error(again.message);
    route.handler = () => again.onInterrupt();
    expect(device.queues[0]!.size).toBe(16);
    expect(pci.queueMsixVector(0)).toBe(1);
    const before = messages.length;
    expect(await again.read(20)).toEqual(src.expected(16, 20));
    expect(messages.length).toBe(before + 1);
    expect(again.stats.interrupts).toBe(1);
  });

  it("holds a masked queue vector in the PBA and reports DEVICE_NEEDS_RESET on the config vector", async () => {
    const { device, pci, driver, t, memory, messages, src } = rig({ msix: true });
    const q = device.queues[0]!;
    expect(await driver.read(16)).toEqual(src.expected(0, 16));
    t.maskMsixVector(1, true);
    const before = messages.length;
    const next = driver.read(16); // served at once, but its message stays pending
    expect(messages.length).toBe(before);
    expect(pci.msix!.isPending(1)).toBe(true);
    memory.writeU16(q.driverAddr + 2, 999); // corrupt avail.idx
    t.notify(0);
    expect(device.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(messages.at(-1)!.data).toBe(MSI_DATA_BASE); // vector 0: configuration change
    await expect(next).rejects.toMatchObject({
      cause: { code: VirtioErrorCode.DEVICE_NEEDS_RESET },
    });
    driver.reset();
    expect(device.status).toBe(0);
    // The reset dropped the undelivered queue event: unmasking sends nothing.
    expect(pci.msix!.isPending(1)).toBe(false);
    t.maskMsixVector(1, false);
    expect(messages.at(-1)!.data).toBe(MSI_DATA_BASE);
    expect(t.getStatus()).toBe(0);
    expect(t.queueMaxSize(0)).toBe(64);
  });
});
