import { Bus, type BusMapping, GuestMemory, type IoHandler, IrqLine } from "@pvkit/platform";
import {
  DRIVER_OK_STATUS,
  DriverError,
  featureMask,
  GuestAllocator,
  initVirtioDevice,
  readConfigStable,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_WINDOW,
  VirtioDeviceBase,
  VirtioErrorCode,
  VirtioMmio,
  VirtioMmioDriverTransport,
  VirtioMmioTransport,
  VirtioRngDevice,
  VirtioRngDriver,
} from "@pvkit/virtio-core";
import { describe, expect, it } from "vitest";

const BASE = 0xfeb0_0000;
const NAME = "virtio-rng";

/** Exits of one full initialisation (see `initVirtioDevice`): reset 1, ACK 2, DRIVER 2,
 * features in 4, out 4, FEATURES_OK 2 + re-read 1, queue 0: select + QueueNumMax 2,
 * QueueReady check 1 + QueueNum 1 + 6 address halves + QueueReady 1, DRIVER_OK 2. */
const INIT_EXITS = 1 + 2 + 2 + 4 + 4 + 2 + 1 + 2 + (1 + 1 + 6 + 1) + 2;
/** MagicValue, Version, DeviceID, VendorID. */
const PROBE_EXITS = 4;

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

function rig(
  opts: { deferIrq?: boolean; queueSize?: number; maxBytes?: number; features?: bigint } = {},
) {
  const memory = GuestMemory.create(1 << 20);
  const allocator = new GuestAllocator(0x1_0000, 0xf_0000);
  const bus = new Bus();
  const irq = new IrqLine(NAME);
  const src = counterSource();
  const device = new VirtioRngDevice({
    queueSize: opts.queueSize ?? 64,
    source: src.source,
    ...(opts.maxBytes === undefined ? {} : { maxBytesPerRequest: opts.maxBytes }),
  });
  const transport = new VirtioMmioTransport({ device, memory, irq });
  const mapping: BusMapping = bus.map("mmio", BASE, VIRTIO_MMIO_WINDOW, transport, NAME);
  const exits = () => bus.stats().byDevice[NAME]!.exits;
  const t = VirtioMmioDriverTransport.probe(bus, BASE);
  if (t instanceof DriverError) throw new Error(t.message);
  const driver = VirtioRngDriver.create(t, {
    memory,
    allocator,
    ...(opts.features === undefined ? {} : { features: opts.features }),
  });
  if (driver instanceof DriverError) throw new Error(driver.message);
  if (!opts.deferIrq) irq.onChange((high) => high && driver.onInterrupt());
  return { memory, allocator, bus, irq, device, transport, mapping, exits, t, driver, src };
}

describe("VirtioRngDriver ↔ virtio-mmio ↔ VirtioRngDevice through the Bus", () => {
  it("initialises with the Linux sequence and a counted number of exits", () => {
    const { exits, device, t, mapping } = rig();
    expect(t.deviceId).toBe(4);
    expect(exits()).toBe(PROBE_EXITS + INIT_EXITS);
    expect(device.status).toBe(DRIVER_OK_STATUS);
    const want = featureMask(VIRTIO_F_VERSION_1, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC);
    expect(device.negotiatedFeatures).toBe(want);
    expect(device.queues[0]!.isActive).toBe(true);
    expect(device.queues[0]!.size).toBe(64);
    // Status was written 5 times (reset, ACK, DRIVER, FEATURES_OK, DRIVER_OK) and read 5 times.
    expect(mapping.perOffset![VirtioMmio.STATUS]).toBe(10);
    expect(mapping.perOffset![VirtioMmio.QUEUE_SEL]).toBe(1);
    expect(mapping.perOffset![VirtioMmio.QUEUE_NOTIFY]).toBe(0);
  });

  it("reads entropy: one notify exit per kick and one interrupt (2 exits) per batch", async () => {
    const { exits, irq, driver, src, mapping, bus } = rig();
    bus.resetStats();
    irq.resetStats();
    const a = await driver.read(32);
    expect(a).toEqual(src.expected(0, 32));
    expect(exits()).toBe(3); // QueueNotify, InterruptStatus, InterruptACK
    expect(mapping.perOffset![VirtioMmio.QUEUE_NOTIFY]).toBe(1);
    expect(irq.raises).toBe(1);
    // 10000 bytes = 3 buffers of ≤ 4096, added together: still one kick, one interrupt.
    const b = await driver.read(10_000);
    expect(b).toEqual(src.expected(32, 10_000));
    expect(exits()).toBe(6);
    expect(irq.raises).toBe(2);
    expect(driver.stats.kicks).toBe(2);
    expect(driver.stats.completions).toBe(4);
    expect(driver.stats.bytes).toBe(10_032);
    expect(driver.inFlight).toBe(0);
  });

  it("suppresses interrupts while the guest has not consumed completions (EVENT_IDX)", async () => {
    const { exits, irq, driver, device, src, bus } = rig({ deferIrq: true });
    bus.resetStats();
    const reads = [0, 1, 2, 3, 4].map(() => driver.read(16));
    // Each read kicked (the device had caught up) but only the first completion interrupted.
    expect(exits()).toBe(5);
    expect(irq.raises).toBe(1);
    expect(device.queues[0]!.stats.notificationsSuppressed).toBe(4);
    expect(irq.level).toBe(true);
    expect(driver.onInterrupt()).toBe(true);
    expect(exits()).toBe(7);
    expect(irq.level).toBe(false);
    const got = await Promise.all(reads);
    for (const [i, g] of got.entries()) expect(g).toEqual(src.expected(16 * i, 16));
    // A spurious interrupt costs one exit and is reported as not ours.
    expect(driver.onInterrupt()).toBe(false);
    expect(exits()).toBe(8);
    expect(driver.stats.spurious).toBe(1);
  });

  it("raises one interrupt per completion without EVENT_IDX unless callbacks are off", async () => {
    const { exits, irq, driver, bus } = rig({
      deferIrq: true,
      features: featureMask(VIRTIO_F_VERSION_1),
    });
    bus.resetStats();
    const reads = [0, 1, 2].map(() => driver.read(8));
    expect(exits()).toBe(3);
    expect(irq.raises).toBe(1); // the line stayed high: one rising edge
    driver.onInterrupt();
    await Promise.all(reads);
    expect(exits()).toBe(5);
  });

  it("sends no notification while the device polls (VIRTQ_USED_F_NO_NOTIFY), and none is lost", async () => {
    const { exits, driver, device, bus, src } = rig({ features: featureMask(VIRTIO_F_VERSION_1) });
    const q = device.queues[0]!;
    q.disableNotification(); // the device is busy polling the ring
    bus.resetStats();
    const reads = [driver.read(8), driver.read(8), driver.read(8)];
    expect(exits()).toBe(0);
    expect(driver.inFlight).toBe(3);
    // The device stops polling: it re-enables notifications, sees pending work, serves it.
    expect(q.enableNotification()).toBe(true);
    device.notifyQueue(0); // the device's own poll, not a guest exit
    const got = await Promise.all(reads);
    for (const [i, g] of got.entries()) expect(g).toEqual(src.expected(8 * i, 8));
    expect(exits()).toBe(2); // the interrupt: InterruptStatus + InterruptACK
  });

  it("keeps many requests in flight and splits short device reads", async () => {
    const { driver, src, device, allocator } = rig({ maxBytes: 1000 });
    const before = allocator.stats().allocations;
    const sizes = [5000, 1, 4096, 12_345, 999, 70_000];
    const reads = sizes.map((n) => driver.read(n));
    const got = await Promise.all(reads);
    expect(got.map((g) => g.length)).toEqual(sizes);
    // Every byte came from the device exactly once.
    const all = got.reduce((s, g) => s + g.length, 0);
    expect(device.bytesServed).toBe(all);
    const seen = new Uint32Array(256);
    for (const g of got) for (const b of g) seen[b]!++;
    const expected = new Uint32Array(256);
    for (const b of src.expected(0, all)) expected[b]!++;
    expect(seen).toEqual(expected);
    expect(allocator.stats().allocations).toBe(before); // every DMA buffer freed
    expect(await driver.read(0)).toEqual(new Uint8Array(0));
    await expect(driver.read(-1)).rejects.toThrow(RangeError);
  });

  it("fails pending reads on DEVICE_NEEDS_RESET and recovers after a reset", async () => {
    const { driver, memory, t, bus, irq, allocator, device } = rig({ deferIrq: true });
    const q = device.queues[0]!;
    const pending = driver.read(16);
    // Something scribbles avail.idx far ahead: the device sees queue corruption on the next kick.
    memory.writeU16(q.driverAddr + 2, 500);
    t.notify(0);
    expect(device.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(irq.level).toBe(true);
    driver.onInterrupt();
    await expect(pending).rejects.toMatchObject({
      cause: { code: VirtioErrorCode.DEVICE_NEEDS_RESET },
    });
    expect(driver.failure?.code).toBe(VirtioErrorCode.DEVICE_NEEDS_RESET);
    await expect(driver.read(1)).rejects.toThrow(/NEEDS_RESET/);
    driver.reset();
    expect(device.status).toBe(0);
    expect(driver.inFlight).toBe(0);
    // A fresh driver on the same device works again.
    bus.resetStats();
    const again = VirtioRngDriver.create(t, { memory, allocator });
    if (again instanceof DriverError) throw new Error(again.message);
    expect(bus.exits).toBe(INIT_EXITS);
    irq.onChange((high) => high && again.onInterrupt());
    expect((await again.read(4)).length).toBe(4);
  });

  it("treats a device that returns a bad used id as broken: reads reject, nothing throws", async () => {
    const { driver, memory, transport, device } = rig({ deferIrq: true });
    const q = device.queues[0]!;
    q.disableNotification(); // keep the device from serving
    const pending = driver.read(16);
    memory.writeU32(q.deviceAddr + 4, 9999); // used[0].id out of range
    memory.writeU32(q.deviceAddr + 8, 16);
    memory.writeU16(q.deviceAddr + 2, 1);
    transport.signalUsed(0);
    expect(() => driver.onInterrupt()).not.toThrow();
    await expect(pending).rejects.toMatchObject({
      cause: { code: VirtioErrorCode.USED_ID_OUT_OF_RANGE },
    });
  });
});

describe("initVirtioDevice and probing failures", () => {
  class PickyDevice extends VirtioDeviceBase {
    reads = 0;
    constructor(private readonly unstable: number) {
      super({ deviceId: 42, queueSizes: [8], configSize: 8 });
      this.configView.setUint32(0, 0xcafe, true);
    }
    protected override onQueueNotify(): void {}
    protected override validateFeatures(f: bigint): string | undefined {
      return f & featureMask(VIRTIO_F_EVENT_IDX) ? "no EVENT_IDX for me" : undefined;
    }
    protected override beforeConfigRead(): void {
      if (this.reads++ < this.unstable) this.configChanged();
    }
  }

  function mapped(device: VirtioDeviceBase | IoHandler) {
    const memory = GuestMemory.create(1 << 20);
    const bus = new Bus();
    const handler =
      device instanceof VirtioDeviceBase
        ? new VirtioMmioTransport({ device, memory, irq: new IrqLine() })
        : device;
    bus.map("mmio", BASE, VIRTIO_MMIO_WINDOW, handler, "dev");
    return { memory, bus, allocator: new GuestAllocator(0x1_0000, 0x8_0000) };
  }

  it("refuses an empty slot, a legacy device and a placeholder", () => {
    const { bus } = mapped(new PickyDevice(0));
    expect((VirtioMmioDriverTransport.probe(bus, 0x1000) as DriverError).code).toBe(
      VirtioErrorCode.NO_DEVICE,
    );
    const legacy: IoHandler = {
      read: (o) => (o === 0 ? 0x74726976 : o === 4 ? 1 : 3),
      write: () => {},
    };
    const l = mapped(legacy);
    expect((VirtioMmioDriverTransport.probe(l.bus, BASE) as DriverError).code).toBe(
      VirtioErrorCode.UNSUPPORTED_VERSION,
    );
    const empty: IoHandler = {
      read: (o) => (o === 0 ? 0x74726976 : o === 4 ? 2 : 0),
      write: () => {},
    };
    const e = mapped(empty);
    expect((VirtioMmioDriverTransport.probe(e.bus, BASE) as DriverError).code).toBe(
      VirtioErrorCode.NO_DEVICE,
    );
    expect(e.bus.exits).toBe(3); // no VendorID read for a placeholder
  });

  it("gives up with FAILED when the device clears FEATURES_OK, freeing nothing it kept", () => {
    const dev = new PickyDevice(0);
    const { bus, memory, allocator } = mapped(dev);
    const t = VirtioMmioDriverTransport.probe(bus, BASE) as VirtioMmioDriverTransport;
    const all = featureMask(VIRTIO_F_VERSION_1, VIRTIO_F_EVENT_IDX);
    const r = initVirtioDevice(t, { wanted: all, memory, allocator });
    expect((r as DriverError).code).toBe(VirtioErrorCode.FEATURES_REJECTED);
    expect(dev.status & VIRTIO_CONFIG_S_FAILED).toBe(VIRTIO_CONFIG_S_FAILED);
    expect(dev.status & VIRTIO_CONFIG_S_FEATURES_OK).toBe(0);
    expect(allocator.stats().allocations).toBe(0);
    // Without EVENT_IDX it is accepted.
    const ok = initVirtioDevice(t, { wanted: featureMask(VIRTIO_F_VERSION_1), memory, allocator });
    expect(ok).not.toBeInstanceOf(DriverError);
    expect(dev.status).toBe(DRIVER_OK_STATUS);
  });

  it("refuses a feature set without VERSION_1 and a queue that does not exist", () => {
    const dev = new PickyDevice(0);
    const { bus, memory, allocator } = mapped(dev);
    const t = VirtioMmioDriverTransport.probe(bus, BASE) as VirtioMmioDriverTransport;
    expect((initVirtioDevice(t, { wanted: 0n, memory, allocator }) as DriverError).code).toBe(
      VirtioErrorCode.NO_VERSION_1,
    );
    const r = initVirtioDevice(t, {
      wanted: featureMask(VIRTIO_F_VERSION_1),
      memory,
      allocator,
      queueSizes: [4, 4],
    });
    expect((r as DriverError).code).toBe(VirtioErrorCode.QUEUE_UNAVAILABLE);
    expect(dev.status & VIRTIO_CONFIG_S_FAILED).toBe(VIRTIO_CONFIG_S_FAILED);
    expect(allocator.stats().allocations).toBe(0); // queue 0's ring was given back
    const tiny = new GuestAllocator(0x1_0000, 100);
    const oom = initVirtioDevice(t, {
      wanted: featureMask(VIRTIO_F_VERSION_1),
      memory,
      allocator: tiny,
    });
    expect((oom as DriverError).code).toBe(VirtioErrorCode.OUT_OF_MEMORY);
    expect(VirtioRngDriver.create(t, { memory, allocator })).toMatchObject({
      code: VirtioErrorCode.WRONG_DEVICE,
    });
  });

  it("halves a ring that does not fit the allocator, like Linux's vring_create_virtqueue", () => {
    const dev = new VirtioRngDevice({ queueSize: 1024 });
    const { bus, memory } = mapped(dev);
    const t = VirtioMmioDriverTransport.probe(bus, BASE) as VirtioMmioDriverTransport;
    const small = new GuestAllocator(0x1_0000, 0x4000);
    const r = initVirtioDevice(t, {
      wanted: featureMask(VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC),
      memory,
      allocator: small,
    });
    if (r instanceof DriverError) throw new Error(r.message);
    // 1024 and 512 entries need more than 16 KiB page-aligned; 256 fit (no room left for indirect tables).
    expect(r.queues[0]!.size).toBe(256);
    expect(dev.queues[0]!.size).toBe(256);
    expect(r.queues[0]!.indirectDesc).toBe(false);
    expect(dev.status).toBe(DRIVER_OK_STATUS);
  });

  it("reads configuration until the generation is stable (§2.5), within a bound", () => {
    const dev = new PickyDevice(2);
    const { bus } = mapped(dev);
    const t = VirtioMmioDriverTransport.probe(bus, BASE) as VirtioMmioDriverTransport;
    bus.resetStats();
    const v = readConfigStable(t, (tr) => tr.readConfig(0, 4));
    expect(v).toBe(0xcafe);
    expect(bus.exits).toBe(3 * 3); // three attempts of generation + field + generation
    const restless = new PickyDevice(1_000);
    const r = mapped(restless);
    const t2 = VirtioMmioDriverTransport.probe(r.bus, BASE) as VirtioMmioDriverTransport;
    expect((readConfigStable(t2, (tr) => tr.readConfig(0, 4), 5) as DriverError).code).toBe(
      VirtioErrorCode.CONFIG_UNSTABLE,
    );
  });
});
