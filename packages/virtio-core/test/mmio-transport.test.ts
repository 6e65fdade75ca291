import { Bus, GuestMemory, IrqLine } from "@pvkit/platform";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VIRTIO_CONFIG_S_DRIVER as DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED as FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
  VirtioMmio as R,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_WINDOW,
  VirtioDeviceBase,
  type VirtioError,
  VirtioMmioTransport,
  VirtioRngDevice,
} from "@pvkit/virtio-core";
import { describe, expect, it } from "vitest";

const BASE = 0xd000_0000;
const DESC = 0x1000;
const AVAIL = 0x2000;
const USED = 0x3000;

/** A device with 2 queues and an 8-byte config space that counts config writes. */
class ConfigDevice extends VirtioDeviceBase {
  configWrites: Array<[number, number, number]> = [];
  constructor() {
    super({ deviceId: 42, queueSizes: [8, 16], configSize: 8, features: 1n << 3n });
    this.configView.setUint32(0, 0x11223344, true);
    this.configView.setUint16(4, 0xbeef, true);
  }
  protected override onQueueNotify(): void {}
  protected override onConfigWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    this.configWrites.push([offset, size, value]);
  }
  bump(): void {
    this.config[6] = (this.config[6] ?? 0) + 1;
    this.configChanged();
  }
}

function setup<D extends VirtioDeviceBase>(device: D) {
  const memory = GuestMemory.create(1 << 20);
  const irq = new IrqLine("t");
  const transport = new VirtioMmioTransport({ device, memory, irq });
  const bus = new Bus();
  bus.map("mmio", BASE, VIRTIO_MMIO_WINDOW, transport, "dev");
  const r = (off: number, size: 1 | 2 | 4 = 4) => bus.read("mmio", BASE + off, size);
  const w = (off: number, value: number, size: 1 | 2 | 4 = 4) =>
    bus.write("mmio", BASE + off, size, value);
  const negotiate = (hi: number, lo: number) => {
    w(R.STATUS, 0);
    w(R.STATUS, ACK);
    w(R.STATUS, ACK | DRIVER);
    w(R.DRIVER_FEATURES_SEL, 1);
    w(R.DRIVER_FEATURES, hi);
    w(R.DRIVER_FEATURES_SEL, 0);
    w(R.DRIVER_FEATURES, lo);
    w(R.STATUS, ACK | DRIVER | FEATURES_OK);
    return r(R.STATUS);
  };
  const setupQueue = (q: number, size: number) => {
    w(R.QUEUE_SEL, q);
    w(R.QUEUE_NUM, size);
    w(R.QUEUE_DESC_LOW, DESC);
    w(R.QUEUE_DESC_HIGH, 0);
    w(R.QUEUE_DRIVER_LOW, AVAIL);
    w(R.QUEUE_DRIVER_HIGH, 0);
    w(R.QUEUE_DEVICE_LOW, USED);
    w(R.QUEUE_DEVICE_HIGH, 0);
    w(R.QUEUE_READY, 1);
  };
  return { device, memory, irq, transport, bus, r, w, negotiate, setupQueue };
}

describe("virtio-mmio v2 registers (§4.2.2)", () => {
  it("identifies itself and reports 64-bit features through the select register", () => {
    const { r, w, device } = setup(new ConfigDevice());
    expect(r(R.MAGIC_VALUE)).toBe(0x74726976);
    expect(r(R.VERSION)).toBe(2);
    expect(r(R.DEVICE_ID)).toBe(42);
    w(R.DEVICE_FEATURES_SEL, 0);
    const lo = r(R.DEVICE_FEATURES);
    w(R.DEVICE_FEATURES_SEL, 1);
    const hi = r(R.DEVICE_FEATURES);
    const offered = (BigInt(hi) << 32n) | BigInt(lo);
    expect(offered).toBe(device.deviceFeatures);
    expect(offered & (1n << BigInt(VIRTIO_F_VERSION_1))).not.toBe(0n);
    expect(offered & (1n << 3n)).not.toBe(0n);
    expect(offered & (1n << BigInt(VIRTIO_F_EVENT_IDX))).not.toBe(0n);
    expect(offered & (1n << BigInt(VIRTIO_F_INDIRECT_DESC))).not.toBe(0n);
    w(R.DEVICE_FEATURES_SEL, 2);
    expect(r(R.DEVICE_FEATURES)).toBe(0);
  });

  it("reports QueueNumMax per queue and 0 for a queue that does not exist", () => {
    const { r, w } = setup(new ConfigDevice());
    w(R.QUEUE_SEL, 0);
    expect(r(R.QUEUE_NUM_MAX)).toBe(8);
    w(R.QUEUE_SEL, 1);
    expect(r(R.QUEUE_NUM_MAX)).toBe(16);
    w(R.QUEUE_SEL, 2);
    expect(r(R.QUEUE_NUM_MAX)).toBe(0);
    w(R.QUEUE_SEL, 0xffff_ffff);
    expect(r(R.QUEUE_NUM_MAX)).toBe(0);
    expect(r(R.QUEUE_READY)).toBe(0);
  });

  it("reads config space at 0x100 with 8/16/32-bit widths and passes writes to the device", () => {
    const { r, w, device } = setup(new ConfigDevice());
    expect(r(R.CONFIG, 4)).toBe(0x11223344);
    expect(r(R.CONFIG + 1, 1)).toBe(0x33);
    expect(r(R.CONFIG + 4, 2)).toBe(0xbeef);
    expect(r(R.CONFIG + 6, 4)).toBe(0); // runs past the 8-byte config: reads as 0
    w(R.CONFIG + 2, 0x55, 1);
    expect(device.configWrites).toEqual([[2, 1, 0x55]]);
    expect(r(R.CONFIG, 4)).toBe(0x11223344); // the device ignored it: read-only field
  });

  it("bumps ConfigGeneration and raises a config interrupt only once the driver is live", () => {
    const { r, w, device, irq, negotiate } = setup(new ConfigDevice());
    const g0 = r(R.CONFIG_GENERATION);
    device.bump();
    expect(r(R.CONFIG_GENERATION)).toBe(g0 + 1);
    expect(irq.level).toBe(false);
    const v1 = 1;
    expect(negotiate(v1, 0) & FEATURES_OK).toBe(FEATURES_OK);
    w(R.STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    device.bump();
    expect(r(R.INTERRUPT_STATUS)).toBe(2);
    expect(irq.level).toBe(true);
    w(R.INTERRUPT_ACK, 2);
    expect(irq.level).toBe(false);
    expect(r(R.INTERRUPT_STATUS)).toBe(0);
  });

  it("ignores control-register accesses that are not 32-bit aligned, without throwing", () => {
    const { r, w, transport, bus } = setup(new ConfigDevice());
    expect(r(R.MAGIC_VALUE, 2)).toBe(0);
    expect(r(R.VERSION + 1, 1)).toBe(0);
    w(R.STATUS, ACK, 1);
    expect(r(R.STATUS)).toBe(0);
    w(R.QUEUE_SEL + 2, 1, 2);
    expect(transport.badAccesses).toBe(4);
    expect(bus.stats().handlerFaults).toBe(0);
  });

  it("drops writes to read-only registers and reads of write-only ones", () => {
    const { r, w, transport } = setup(new ConfigDevice());
    w(R.MAGIC_VALUE, 0);
    w(R.DEVICE_ID, 7);
    w(R.QUEUE_NUM_MAX, 1024);
    w(R.CONFIG_GENERATION, 9);
    expect(r(R.MAGIC_VALUE)).toBe(0x74726976);
    expect(r(R.DEVICE_ID)).toBe(42);
    expect(r(R.QUEUE_NUM_MAX)).toBe(8);
    expect(r(R.QUEUE_NOTIFY)).toBe(0);
    expect(transport.badAccesses).toBeGreaterThanOrEqual(4);
  });
});

describe("device status state machine (§2.1, §3.1.1)", () => {
  it("accepts FEATURES_OK for an offered set that includes VERSION_1", () => {
    const { negotiate, device } = setup(new ConfigDevice());
    expect(negotiate(1, 1 << 3)).toBe(ACK | DRIVER | FEATURES_OK);
    expect(device.negotiatedFeatures).toBe((1n << 32n) | (1n << 3n));
  });

  it("refuses FEATURES_OK when the driver acks a bit that was not offered", () => {
    const { negotiate, device } = setup(new ConfigDevice());
    const errors: string[] = [];
    device.on("protocolError", (m) => errors.push(m));
    expect(negotiate(1, 1 << 4) & FEATURES_OK).toBe(0);
    expect(errors.join()).toMatch(/not offered/);
  });

  it("refuses FEATURES_OK without VERSION_1", () => {
    const { negotiate } = setup(new ConfigDevice());
    expect(negotiate(0, 1 << 3) & FEATURES_OK).toBe(0);
  });

  it("refuses DRIVER_OK without FEATURES_OK and ignores writes that clear bits", () => {
    const { r, w, negotiate } = setup(new ConfigDevice());
    w(R.STATUS, ACK);
    w(R.STATUS, ACK | DRIVER | DRIVER_OK);
    expect(r(R.STATUS)).toBe(ACK | DRIVER);
    expect(negotiate(1, 0)).toBe(ACK | DRIVER | FEATURES_OK);
    w(R.STATUS, ACK | FEATURES_OK); // clears DRIVER: ignored
    expect(r(R.STATUS)).toBe(ACK | DRIVER | FEATURES_OK);
    w(R.STATUS, ACK | DRIVER | FEATURES_OK | FAILED);
    expect(r(R.STATUS)).toBe(ACK | DRIVER | FEATURES_OK | FAILED);
  });

  it("freezes the driver features once FEATURES_OK is set", () => {
    const { w, negotiate, device } = setup(new ConfigDevice());
    negotiate(1, 0);
    w(R.DRIVER_FEATURES_SEL, 0);
    w(R.DRIVER_FEATURES, 1 << 3);
    expect(device.driverFeatures).toBe(1n << 32n);
  });

  it("resets everything on status 0: queues, interrupt status, selectors, IRQ line", () => {
    const { r, w, negotiate, setupQueue, device, irq } = setup(new ConfigDevice());
    negotiate(1, 0);
    setupQueue(1, 16);
    w(R.STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    device.bump();
    expect(irq.level).toBe(true);
    w(R.STATUS, 0);
    expect(r(R.STATUS)).toBe(0);
    expect(irq.level).toBe(false);
    expect(r(R.INTERRUPT_STATUS)).toBe(0);
    w(R.QUEUE_SEL, 1);
    expect(r(R.QUEUE_READY)).toBe(0);
    expect(r(R.QUEUE_DESC_LOW)).toBe(0);
    expect(device.queues[1]?.size).toBe(16);
    expect(device.queues[1]?.descAddr).toBe(0);
    expect(device.driverFeatures).toBe(0n);
  });
});

describe("queue configuration through mmio", () => {
  it("programs size and 64-bit addresses and ignores them once the queue is ready", () => {
    const { r, w, negotiate, setupQueue, device, transport } = setup(new ConfigDevice());
    negotiate(1, 0);
    setupQueue(0, 4);
    const q = device.queues[0]!;
    expect(q.ready).toBe(true);
    expect([q.size, q.descAddr, q.driverAddr, q.deviceAddr]).toEqual([4, DESC, AVAIL, USED]);
    const before = transport.badAccesses;
    w(R.QUEUE_NUM, 8);
    w(R.QUEUE_DESC_LOW, 0x9000);
    expect(q.size).toBe(4);
    expect(q.descAddr).toBe(DESC);
    expect(transport.badAccesses).toBe(before + 2);
    expect(r(R.QUEUE_READY)).toBe(1);
    w(R.QUEUE_READY, 0); // Linux tears a queue down this way and reads it back
    expect(r(R.QUEUE_READY)).toBe(0);
  });

  it.each([
    ["a size that is not a power of two", 6, DESC, "BAD_QUEUE_SIZE"],
    ["a size above QueueNumMax", 16, DESC, "BAD_QUEUE_SIZE"],
    ["a size of zero", 0, DESC, "BAD_QUEUE_SIZE"],
    ["a misaligned descriptor table", 8, DESC + 8, "RING_MISALIGNED"],
    ["a descriptor table past the end of memory", 8, (1 << 20) - 64, "RING_OUT_OF_RANGE"],
  ])(
    "enabling a queue with %s leaves it disabled and sets NEEDS_RESET",
    (_name, size, desc, code) => {
      const { r, w, negotiate, device } = setup(new ConfigDevice());
      const errors: VirtioError[] = [];
      device.on("needsReset", (e) => errors.push(e));
      negotiate(1, 0);
      w(R.QUEUE_SEL, 0);
      w(R.QUEUE_NUM, size);
      w(R.QUEUE_DESC_LOW, desc);
      w(R.QUEUE_DRIVER_LOW, AVAIL);
      w(R.QUEUE_DEVICE_LOW, USED);
      w(R.QUEUE_READY, 1);
      expect(r(R.QUEUE_READY)).toBe(0);
      expect(r(R.STATUS) & NEEDS_RESET).toBe(NEEDS_RESET);
      expect(errors.map((e) => e.code)).toEqual([code]);
    },
  );

  it("treats a 64-bit ring address at or above 2^53 as out of range, not rounded", () => {
    const { r, w, negotiate, device } = setup(new ConfigDevice());
    negotiate(1, 0);
    w(R.QUEUE_SEL, 0);
    w(R.QUEUE_DESC_LOW, 0);
    w(R.QUEUE_DESC_HIGH, 0x0020_0000); // 2^53
    w(R.QUEUE_DRIVER_LOW, AVAIL);
    w(R.QUEUE_DEVICE_LOW, USED);
    w(R.QUEUE_READY, 1);
    expect(r(R.QUEUE_READY)).toBe(0);
    expect(device.status & NEEDS_RESET).toBe(NEEDS_RESET);
  });

  it("does not consume buffers before DRIVER_OK (§2.7.13)", () => {
    const rng = new VirtioRngDevice({ queueSize: 8 });
    const { memory, w, negotiate, setupQueue } = setup(rng);
    negotiate(1, 0);
    setupQueue(0, 8);
    memory.writeU32(DESC, 0x8000);
    memory.writeU32(DESC + 8, 16);
    memory.writeU16(DESC + 12, 2);
    memory.writeU16(AVAIL + 4, 0);
    memory.writeU16(AVAIL + 2, 1);
    w(R.QUEUE_NOTIFY, 0);
    expect(memory.readU16(USED + 2)).toBe(0);
    expect(rng.requestsServed).toBe(0);
    w(R.STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    w(R.QUEUE_NOTIFY, 0);
    expect(memory.readU16(USED + 2)).toBe(1);
    expect(memory.readU32(USED + 8)).toBe(16);
  });
});

describe("VirtioRngDevice (§5.4)", () => {
  function liveRng(options: ConstructorParameters<typeof VirtioRngDevice>[0] = {}) {
    const rng = new VirtioRngDevice({ queueSize: 8, ...options });
    const env = setup(rng);
    env.negotiate(1, 0);
    env.setupQueue(0, 8);
    env.w(R.STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    let availIdx = 0;
    const post = (
      descs: Array<[addr: number, len: number, flags: number, next: number]>,
      head = 0,
    ) => {
      descs.forEach(([addr, len, flags, next], i) => {
        const at = DESC + 16 * (head + i);
        env.memory.writeU32(at, addr);
        env.memory.writeU32(at + 4, 0);
        env.memory.writeU32(at + 8, len);
        env.memory.writeU16(at + 12, flags);
        env.memory.writeU16(at + 14, next);
      });
      env.memory.writeU16(AVAIL + 4 + 2 * (availIdx % 8), head);
      availIdx++;
      env.memory.writeU16(AVAIL + 2, availIdx);
      env.w(R.QUEUE_NOTIFY, 0);
    };
    return { ...env, rng, post };
  }

  it("fills a writable chain spanning two descriptors from the entropy source", () => {
    let calls = 0;
    const { memory, post, rng, irq } = liveRng({
      source: (b) => {
        calls++;
        b.fill(0xa5);
      },
    });
    post([
      [0x8000, 10, 1 | 2, 1],
      [0x9000, 6, 2, 0],
    ]);
    expect(memory.readU32(USED + 8)).toBe(16);
    expect([...(memory.slice(0x8000, 11) as Uint8Array)]).toEqual([...Array(10).fill(0xa5), 0]);
    expect([...(memory.slice(0x9000, 6) as Uint8Array)]).toEqual(Array(6).fill(0xa5));
    expect(calls).toBe(1);
    expect(rng.bytesServed).toBe(16);
    expect(irq.level).toBe(true);
  });

  it("completes a request with device-readable buffers with length 0 and keeps serving", () => {
    const { memory, post, rng } = liveRng({ source: (b) => b.fill(1) });
    post([[0x8000, 16, 0, 0]]);
    expect(memory.readU16(USED + 2)).toBe(1);
    expect(memory.readU32(USED + 8)).toBe(0);
    expect(memory.readU8(0x8000)).toBe(0);
    expect(rng.badRequests).toBe(1);
    post([[0x8000, 16, 2, 0]], 1);
    expect(memory.readU16(USED + 2)).toBe(2);
    expect(memory.readU32(USED + 16)).toBe(16);
    expect(rng.status & NEEDS_RESET).toBe(0);
  });

  it("serves at most maxBytesPerRequest and reports that as the used length", () => {
    const { memory, post } = liveRng({ maxBytesPerRequest: 100, source: (b) => b.fill(7) });
    post([[0x8000, 4096, 2, 0]]);
    expect(memory.readU32(USED + 8)).toBe(100);
    expect(memory.readU8(0x8000 + 99)).toBe(7);
    expect(memory.readU8(0x8000 + 100)).toBe(0);
  });

  it("enters NEEDS_RESET with one config interrupt on a corrupt chain, then stops serving", () => {
    const { memory, post, rng, r, w } = liveRng({ source: (b) => b.fill(1) });
    const resets: VirtioError[] = [];
    rng.on("needsReset", (e) => resets.push(e));
    post([[0xfff_0000, 16, 2, 0]]); // outside the 1 MiB guest
    expect(resets.map((e) => e.code)).toEqual(["BUFFER_OUT_OF_RANGE"]);
    expect(r(R.STATUS) & NEEDS_RESET).toBe(NEEDS_RESET);
    expect(r(R.INTERRUPT_STATUS) & 2).toBe(2);
    expect(memory.readU16(USED + 2)).toBe(0);
    post([[0x8000, 16, 2, 0]], 1);
    expect(memory.readU16(USED + 2)).toBe(0);
    expect(resets).toHaveLength(1);
    w(R.STATUS, 0);
    expect(r(R.STATUS)).toBe(0);
  });
});
