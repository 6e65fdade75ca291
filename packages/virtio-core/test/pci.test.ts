import {
  type AccessSize,
  assignPciBars,
  Bus,
  GuestMemory,
  PciConfigOffset as P,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_VNDR,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MEMORY,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_STATUS_CAP_LIST,
  PCI_STATUS_INTERRUPT,
  PciConfigPortAccess,
  PciConfigSpace,
  PciHost,
  probePciBars,
} from "@pvkit/platform";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VirtioPciCommonCfg as C,
  VirtioPciCapOffset as CAP,
  VIRTIO_CONFIG_S_DRIVER as DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK,
  DriverError,
  VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
  featureMask,
  findCapability,
  findVirtioCap,
  GuestAllocator,
  initVirtioDevice,
  VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
  VIRTIO_F_RING_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_CAP_PCI_CFG,
  VIRTIO_PCI_ISR_CONFIG,
  VIRTIO_PCI_ISR_QUEUE,
  VirtioDeviceBase,
  VirtioErrorCode,
  VirtioPciDriverTransport,
  type VirtioPciLayout,
  type VirtioPciLayoutPreset,
  VirtioPciTransport,
  VirtioRngDevice,
  virtioPciLayout,
} from "@pvkit/virtio-core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

const SLOT = 5;
const DESC = 0x1000;
const AVAIL = 0x2000;
const USED = 0x3000;

/** Three queues (16, 32, 8), 8 bytes of configuration, optional RING_RESET. */
class TestDevice extends VirtioDeviceBase {
  notified: number[] = [];
  constructor(opts: { ringReset?: boolean; deviceId?: number; configSize?: number } = {}) {
    super({
      deviceId: opts.deviceId ?? 42,
      queueSizes: [16, 32, 8],
      configSize: opts.configSize ?? 8,
      features: (1n << 3n) | (opts.ringReset ? featureMask(VIRTIO_F_RING_RESET) : 0n),
    });
    if (this.configSize >= 8) this.configView.setUint32(4, 0xcafef00d, true);
  }
  protected override onQueueNotify(index: number): void {
    this.notified.push(index);
  }
}

interface RigOptions {
  readonly layout?: VirtioPciLayoutPreset | VirtioPciLayout;
  readonly msix?: number;
  readonly device?: VirtioDeviceBase;
}

function rig(opts: RigOptions = {}) {
  const memory = GuestMemory.create(1 << 20);
  const bus = new Bus();
  const device = opts.device ?? new TestDevice();
  const messages: Array<[bigint, number]> = [];
  const ignored: string[] = [];
  const pci = new VirtioPciTransport({
    device,
    memory,
    name: "dev",
    layout: opts.layout ?? "mem64",
    onIgnored: (r) => ignored.push(r),
    ...(opts.msix === undefined
      ? {}
      : {
          msix: { vectors: opts.msix, onMessage: (a: bigint, d: number) => messages.push([a, d]) },
        }),
  });
  const host = new PciHost(bus);
  host.attach(pci, SLOT);
  host.mapConfigPorts();
  const cfg = new PciConfigPortAccess(bus, SLOT);
  const bars = assignPciBars(cfg, { io: 0xc000, mem32: 0xfe00_0000, mem64: 0x40_0000_0000 });
  const layout = pci.layout;
  const where = (region: { bar: number; offset: number }) => {
    const b = bars.find((x) => x.index === region.bar)!;
    return {
      space: b.kind === "io" ? ("pio" as const) : ("mmio" as const),
      base: b.address + region.offset,
    };
  };
  const common = where(layout.common);
  const notify = where(layout.notify);
  const isr = where(layout.isr);
  const dcfg = where(layout.device);
  const cr = (off: number, size: AccessSize = 4) => bus.read(common.space, common.base + off, size);
  const cw = (off: number, value: number, size: AccessSize = 4) =>
    bus.write(common.space, common.base + off, size, value);
  const negotiate = (lo: number, hi: number) => {
    cw(C.DEVICE_STATUS, 0, 1);
    cw(C.DEVICE_STATUS, ACK, 1);
    cw(C.DEVICE_STATUS, ACK | DRIVER, 1);
    cw(C.DRIVER_FEATURE_SELECT, 0);
    cw(C.DRIVER_FEATURE, lo);
    cw(C.DRIVER_FEATURE_SELECT, 1);
    cw(C.DRIVER_FEATURE, hi);
    cw(C.DEVICE_STATUS, ACK | DRIVER | FEATURES_OK, 1);
    return cr(C.DEVICE_STATUS, 1);
  };
  const setupQueue = (q: number, size: number, base = 0) => {
    cw(C.QUEUE_SELECT, q, 2);
    cw(C.QUEUE_SIZE, size, 2);
    cw(C.QUEUE_DESC, DESC + base);
    cw(C.QUEUE_DESC + 4, 0);
    cw(C.QUEUE_DRIVER, AVAIL + base);
    cw(C.QUEUE_DRIVER + 4, 0);
    cw(C.QUEUE_DEVICE, USED + base);
    cw(C.QUEUE_DEVICE + 4, 0);
    cw(C.QUEUE_ENABLE, 1, 2);
  };
  return {
    memory,
    bus,
    device,
    pci,
    host,
    cfg,
    bars,
    common,
    notify,
    isr,
    dcfg,
    cr,
    cw,
    negotiate,
    setupQueue,
    messages,
    ignored,
  };
}

const V1_HI = 1; // VIRTIO_F_VERSION_1 is bit 32

describe("PCI identity and header (§4.1.2)", () => {
  it("reports the modern virtio ids, revision, subsystem, class code and capability list", () => {
    const { cfg } = rig({ device: new VirtioRngDevice() });
    expect(cfg.read(P.VENDOR_ID, 2)).toBe(0x1af4);
    expect(cfg.read(P.DEVICE_ID, 2)).toBe(0x1044);
    expect(cfg.read(P.REVISION_ID, 1)).toBeGreaterThanOrEqual(1);
    expect(cfg.read(P.SUBSYSTEM_VENDOR_ID, 2)).toBe(0x1af4);
    expect(cfg.read(P.SUBSYSTEM_ID, 2)).toBeGreaterThanOrEqual(0x40);
    expect(cfg.read(P.CLASS, 1)).toBe(0xff); // entropy: "other"
    expect(cfg.read(P.HEADER_TYPE, 1)).toBe(0);
    expect(cfg.read(P.INTERRUPT_PIN, 1)).toBe(1);
    expect(cfg.read(P.STATUS, 2) & PCI_STATUS_CAP_LIST).toBe(PCI_STATUS_CAP_LIST);
    expect(cfg.read(P.CAPABILITY_LIST, 1)).toBeGreaterThanOrEqual(0x40);
  });

  it("uses class codes per device type", () => {
    const cls = (id: number) =>
      rig({ device: new TestDevice({ deviceId: id }) }).cfg.read(P.REVISION_ID, 4) >>> 8;
    expect(cls(1)).toBe(0x020000); // net: Ethernet
    expect(cls(2)).toBe(0x010000); // blk: storage
    expect(cls(3)).toBe(0x078000); // console
    expect(cls(42)).toBe(0xff0000);
  });

  it("keeps read-only header fields read-only", () => {
    const { cfg, pci } = rig();
    const before = Uint8Array.from(pci.config.bytes);
    for (const off of [
      P.VENDOR_ID,
      P.DEVICE_ID,
      P.REVISION_ID,
      P.CLASS_PROG,
      P.SUBSYSTEM_VENDOR_ID,
      P.CAPABILITY_LIST,
      P.INTERRUPT_PIN,
    ]) {
      cfg.write(off & ~3, 4, 0xffff_ffff);
    }
    for (let c = 0x40; c < 0x100; c += 4) cfg.write(c, 4, 0); // capability bodies
    const after = pci.config.bytes;
    for (const off of [0, 1, 2, 3, 8, 9, 10, 11, 0x2c, 0x2d, 0x2e, 0x2f, 0x34, 0x3d])
      expect(after[off]).toBe(before[off]);
    expect(pci.config.capabilities().length).toBe(5);
    // Status: CAP_LIST survives a write of zeros and of ones.
    cfg.write(P.STATUS, 2, 0);
    cfg.write(P.STATUS, 2, 0xffff);
    expect(cfg.read(P.STATUS, 2) & PCI_STATUS_CAP_LIST).toBe(PCI_STATUS_CAP_LIST);
  });
});

describe("BARs", () => {
  it("sizes the 64-bit memory BAR and the MSI-X BAR; unimplemented BARs read 0", () => {
    const { cfg, bars } = rig({ msix: 4 });
    expect(bars.map((b) => [b.index, b.kind, b.size])).toEqual([
      [1, "mem32", 0x1000],
      [4, "mem64", 0x4000],
    ]);
    cfg.write(P.COMMAND, 2, 0);
    cfg.write(0x20, 4, 0xffff_ffff);
    cfg.write(0x24, 4, 0xffff_ffff);
    expect(cfg.read(0x20, 4)).toBe((~(0x4000 - 1) | 0xc) >>> 0); // size mask | 64-bit | prefetchable
    expect(cfg.read(0x24, 4)).toBe(0xffff_ffff);
    for (const off of [0x10, 0x18, 0x1c]) {
      cfg.write(off, 4, 0xffff_ffff);
      expect(cfg.read(off, 4)).toBe(0);
    }
    cfg.write(0x14, 4, 0xffff_ffff);
    expect(cfg.read(0x14, 4)).toBe(~(0x1000 - 1) >>> 0);
  });

  it("sizes an I/O BAR (type bit read-only)", () => {
    const { cfg, bars, pci } = rig({ layout: "io" });
    expect(bars).toHaveLength(1);
    expect(bars[0]!.kind).toBe("io");
    expect(bars[0]!.address).toBe(0xc000);
    cfg.write(0x10, 4, 0xffff_ffff);
    expect(cfg.read(0x10, 4)).toBe((~(bars[0]!.size - 1) | 1) >>> 0);
    cfg.write(0x10, 4, 0);
    expect(cfg.read(0x10, 4)).toBe(1);
    expect(pci.bars[0]!.address).toBe(0);
  });

  it("decodes only while the Command register enables memory space", () => {
    const { cfg, bus, common } = rig();
    expect(bus.read("mmio", common.base + C.NUM_QUEUES, 2)).toBe(3);
    cfg.write(P.COMMAND, 2, cfg.read(P.COMMAND, 2) & ~PCI_COMMAND_MEMORY);
    expect(bus.read("mmio", common.base + C.NUM_QUEUES, 2)).toBe(0xffff);
    cfg.write(P.COMMAND, 2, cfg.read(P.COMMAND, 2) | PCI_COMMAND_MEMORY);
    expect(bus.read("mmio", common.base + C.NUM_QUEUES, 2)).toBe(3);
  });

  it("answers accesses to absent BARs with all-ones and never throws", () => {
    const { pci } = rig();
    expect(pci.barRead(0, 0, 4)).toBe(0xffff_ffff);
    expect(pci.barRead(9, 0, 2)).toBe(0xffff);
    expect(() => pci.barWrite(7, 0, 4, 1)).not.toThrow();
    expect(pci.barRead(4, 0x3f00, 4)).toBe(0); // inside the BAR, outside every structure
  });
});

describe("capability walk as Linux's virtio_pci_modern probe does", () => {
  for (const preset of ["mem64", "io"] as const) {
    it(`finds every structure with the right lengths (${preset} layout)`, () => {
      const { cfg, pci, device, bus, bars, memory } = rig({ layout: preset, msix: 4 });
      const sized = probePciBars(cfg);
      const caps: Record<number, { bar: number; offset: number; length: number; capLen: number }> =
        {};
      for (const type of [
        VIRTIO_PCI_CAP_COMMON_CFG,
        VIRTIO_PCI_CAP_NOTIFY_CFG,
        VIRTIO_PCI_CAP_ISR_CFG,
        VIRTIO_PCI_CAP_DEVICE_CFG,
        VIRTIO_PCI_CAP_PCI_CFG,
      ]) {
        const pos = findVirtioCap(cfg, sized, type);
        expect(pos, `cfg_type ${type}`).toBeGreaterThanOrEqual(0x40);
        expect(cfg.read(pos + CAP.CAP_VNDR, 1)).toBe(PCI_CAP_ID_VNDR);
        expect(cfg.read(pos + CAP.CFG_TYPE, 1)).toBe(type);
        caps[type] = {
          bar: cfg.read(pos + CAP.BAR, 1),
          offset: cfg.read(pos + CAP.OFFSET, 4),
          length: cfg.read(pos + CAP.LENGTH, 4),
          capLen: cfg.read(pos + CAP.CAP_LEN, 1),
        };
      }
      const L = pci.layout;
      expect(caps[VIRTIO_PCI_CAP_COMMON_CFG]).toEqual({
        bar: L.common.bar,
        offset: L.common.offset,
        length: 0x3c,
        capLen: 16,
      });
      expect(caps[VIRTIO_PCI_CAP_ISR_CFG]).toEqual({
        bar: L.isr.bar,
        offset: L.isr.offset,
        length: 1,
        capLen: 16,
      });
      expect(caps[VIRTIO_PCI_CAP_DEVICE_CFG]).toEqual({
        bar: L.device.bar,
        offset: L.device.offset,
        length: 8,
        capLen: 16,
      });
      expect(caps[VIRTIO_PCI_CAP_NOTIFY_CFG]!.capLen).toBe(20);
      expect(caps[VIRTIO_PCI_CAP_PCI_CFG]!.capLen).toBe(20);
      const notifyPos = findVirtioCap(cfg, sized, VIRTIO_PCI_CAP_NOTIFY_CFG);
      const mult = cfg.read(notifyPos + CAP.NOTIFY_OFF_MULTIPLIER, 4);
      expect(mult).toBe(4);
      // Every queue's notify address fits: off × mult + 2 ≤ length.
      expect((device.numQueues - 1) * mult + 2).toBeLessThanOrEqual(
        caps[VIRTIO_PCI_CAP_NOTIFY_CFG]!.length,
      );
      // Every structure lies inside its BAR (minlen + offset ≤ BAR size).
      for (const c of Object.values(caps)) {
        if (c.length === 0) continue;
        const b = bars.find((x) => x.index === c.bar)!;
        expect(c.offset + c.length).toBeLessThanOrEqual(b.size);
      }
      if (preset === "mem64") {
        expect(L.common).toEqual({ bar: 4, offset: 0 });
        expect(L.notify).toEqual({ bar: 4, offset: 0x3000 });
      } else {
        expect(bars.find((b) => b.index === 0)!.kind).toBe("io");
        expect(L.common).toEqual({ bar: 0, offset: 0 });
        expect(L.isr).toEqual({ bar: 0, offset: 0x40 });
        expect(L.notify).toEqual({ bar: 0, offset: 0x44 });
        expect(L.device.offset).toBe(0x44 + 3 * 4);
      }
      // MSI-X capability: table size and table in BAR 1.
      const mpos = findCapability(cfg, PCI_CAP_ID_MSIX, 0);
      expect(mpos).toBe(pci.capabilities.msix);
      expect((cfg.read(mpos + PCI_MSIX_FLAGS, 2) & 0x7ff) + 1).toBe(4);
      expect(cfg.read(mpos + 4, 4) & 7).toBe(1);

      // The full driver-side probe, then num_queues and every queue set up.
      bus.resetStats();
      const t = VirtioPciDriverTransport.probe(bus, cfg);
      if (t instanceof DriverError) throw new Error(t.message);
      expect(bus.stats().byDevice["pci-conf1"]!.exits).toBeGreaterThan(0);
      expect(t.deviceId).toBe(42);
      expect(t.common.length).toBe(0x3c);
      expect(t.isr.length).toBe(1);
      expect(t.device!.length).toBe(8);
      expect(t.msix!.tableSize).toBe(4);
      expect(t.numQueues()).toBe(3);
      const mem = new GuestAllocator(0x1_0000, 0xf_0000);
      const dev = initVirtioDevice(t, {
        wanted: featureMask(VIRTIO_F_VERSION_1, 3),
        memory,
        allocator: mem,
        queueSizes: [0, 0, 0],
      });
      if (dev instanceof DriverError) throw new Error(dev.message);
      expect(device.queues.map((q) => [q.ready, q.size])).toEqual([
        [true, 16],
        [true, 32],
        [true, 8],
      ]);
      expect(t.readConfig(4, 4)).toBe(0xcafef00d);
    });
  }

  it("omits DEVICE_CFG for a device without configuration, and the probe still succeeds", () => {
    const { cfg, bus } = rig({ device: new VirtioRngDevice() });
    expect(findVirtioCap(cfg, probePciBars(cfg), VIRTIO_PCI_CAP_DEVICE_CFG)).toBe(0);
    const t = VirtioPciDriverTransport.probe(bus, cfg);
    if (t instanceof DriverError) throw new Error(t.message);
    expect(t.device).toBeNull();
    expect(t.readConfig(0, 4)).toBe(0);
  });

  it("skips capabilities with reserved BAR numbers and survives a looping list", () => {
    const space = new PciConfigSpace({
      vendorId: 0x1af4,
      deviceId: 0x1044,
      classCode: 0xff0000,
      revision: 1,
    });
    space.defineBar(2, { kind: "mem32", size: 0x1000, address: 0xfe00_0000 });
    const bad = space.addCapability(PCI_CAP_ID_VNDR, 16);
    space.setU8(bad + CAP.CFG_TYPE, VIRTIO_PCI_CAP_COMMON_CFG);
    space.setU8(bad + CAP.BAR, 7); // reserved
    const good = space.addCapability(PCI_CAP_ID_VNDR, 16);
    space.setU8(good + CAP.CFG_TYPE, VIRTIO_PCI_CAP_COMMON_CFG);
    space.setU8(good + CAP.BAR, 2);
    const access = {
      read: (o: number, s: AccessSize) => space.read(o, s),
      write: (o: number, s: AccessSize, v: number) => space.write(o, s, v),
    };
    const bars = probePciBars(access);
    expect(findVirtioCap(access, bars, VIRTIO_PCI_CAP_COMMON_CFG)).toBe(good);
    space.setU8(good + 1, bad); // a cycle: good → bad → good → …
    let reads = 0;
    const counting = {
      read: (o: number, s: AccessSize) => {
        reads++;
        return space.read(o, s);
      },
      write: access.write,
    };
    expect(findVirtioCap(counting, bars, VIRTIO_PCI_CAP_ISR_CFG)).toBe(0);
    expect(reads).toBeLessThan(500); // bounded by the 48-entry TTL
  });

  it("refuses a function that is not virtio or lacks capabilities", () => {
    const bus = new Bus();
    const host = new PciHost(bus);
    host.mapConfigPorts();
    // Nothing in slot 9: the vendor reads as 0xffff.
    const none = VirtioPciDriverTransport.probe(bus, new PciConfigPortAccess(bus, 9));
    expect(none).toBeInstanceOf(DriverError);
    expect((none as DriverError).code).toBe(VirtioErrorCode.NO_DEVICE);
  });
});

describe("common configuration (§4.1.4.3)", () => {
  it("pages features through the select registers and reads num_queues", () => {
    const { cr, cw } = rig({ device: new TestDevice({ ringReset: true }) });
    cw(C.DEVICE_FEATURE_SELECT, 0);
    expect(cr(C.DEVICE_FEATURE) & 0x8).toBe(0x8);
    cw(C.DEVICE_FEATURE_SELECT, 1);
    expect(cr(C.DEVICE_FEATURE) & 0x1).toBe(V1_HI);
    expect(cr(C.DEVICE_FEATURE) & (1 << 8)).toBe(1 << 8); // RING_RESET (bit 40) offered
    cw(C.DEVICE_FEATURE_SELECT, 7);
    expect(cr(C.DEVICE_FEATURE)).toBe(0);
    expect(cr(C.DEVICE_FEATURE_SELECT)).toBe(7);
    expect(cr(C.NUM_QUEUES, 2)).toBe(3);
  });

  it("takes 64-bit addresses as two 32-bit halves and 16-bit fields as two byte writes", () => {
    const { cr, cw, device, ignored } = rig();
    // queue_select = 2 and queue_size = 4, each as two byte writes (low byte first).
    cw(C.QUEUE_SELECT, 2, 1);
    cw(C.QUEUE_SELECT + 1, 0, 1);
    expect(cr(C.QUEUE_SELECT, 2)).toBe(2);
    cw(C.QUEUE_SIZE, 4, 1);
    expect(device.queues[2]!.size).toBe(8); // only half of the field arrived
    cw(C.QUEUE_SIZE + 1, 0, 1);
    expect(device.queues[2]!.size).toBe(4);
    cw(C.QUEUE_DESC, 0x1234_5670);
    cw(C.QUEUE_DESC + 4, 0x1);
    expect(device.queues[2]!.descAddr).toBe(0x1_1234_5670);
    expect(cr(C.QUEUE_DESC)).toBe(0x1234_5670);
    expect(cr(C.QUEUE_DESC + 4)).toBe(1);
    // 8- and 16-bit reads inside a field.
    expect(cr(C.QUEUE_DESC + 2, 2)).toBe(0x1234);
    expect(cr(C.QUEUE_DESC + 1, 1)).toBe(0x56);
    expect(cr(C.NUM_QUEUES, 1)).toBe(3);
    expect(ignored).toEqual([]);
  });

  it("ignores writes to read-only fields and writes that span fields", () => {
    const { cr, cw, device, pci, ignored } = rig();
    cw(C.NUM_QUEUES, 9, 2);
    cw(C.DEVICE_FEATURE, 0xffff_ffff);
    cw(C.CONFIG_GENERATION, 5, 1);
    cw(C.QUEUE_NOTIFY_OFF, 7, 2);
    cw(C.QUEUE_NOTIFY_DATA, 7, 2);
    expect(cr(C.NUM_QUEUES, 2)).toBe(3);
    expect(cr(C.QUEUE_NOTIFY_OFF, 2)).toBe(0);
    // A 32-bit write at device_status would also hit config_generation and queue_select.
    cw(C.DEVICE_STATUS, ACK | (5 << 16));
    expect(device.status).toBe(0);
    expect(cr(C.QUEUE_SELECT, 2)).toBe(0);
    // Unaligned.
    cw(C.QUEUE_SELECT + 1, 0x0101, 2);
    expect(cr(C.QUEUE_SELECT, 2)).toBe(0);
    expect(pci.stats.ignored).toBe(7);
    expect(ignored.some((r) => r.includes("read-only"))).toBe(true);
    expect(ignored.some((r) => r.includes("spans"))).toBe(true);
    expect(ignored.some((r) => r.includes("unaligned"))).toBe(true);
  });

  it("reads config_generation and device configuration", () => {
    const { cr, bus, dcfg } = rig();
    expect(cr(C.CONFIG_GENERATION, 1)).toBe(0);
    expect(bus.read(dcfg.space, dcfg.base + 4, 4)).toBe(0xcafef00d);
    expect(bus.read(dcfg.space, dcfg.base + 6, 2)).toBe(0xcafe);
  });
});

describe("hostile writes", () => {
  it("queue_select out of range: queue fields read 0 and writes are ignored", () => {
    const { cr, cw, device, pci } = rig();
    cw(C.QUEUE_SELECT, 3, 2);
    expect(cr(C.QUEUE_SELECT, 2)).toBe(3);
    expect(cr(C.QUEUE_SIZE, 2)).toBe(0); // §4.1.4.3.1: 0 = unavailable
    expect(cr(C.QUEUE_ENABLE, 2)).toBe(0);
    expect(cr(C.QUEUE_MSIX_VECTOR, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    const n = pci.stats.ignored;
    cw(C.QUEUE_SIZE, 4, 2);
    cw(C.QUEUE_DESC, DESC);
    cw(C.QUEUE_ENABLE, 1, 2);
    cw(C.QUEUE_MSIX_VECTOR, 0, 2);
    cw(C.QUEUE_SELECT, 0xffff, 2);
    cw(C.QUEUE_ENABLE, 1, 2);
    expect(pci.stats.ignored).toBe(n + 5);
    expect(device.queues.every((q) => !q.ready && q.size === q.maxSize && q.descAddr === 0)).toBe(
      true,
    );
  });

  it("queue_size reads back what the driver wrote; a valid size rewritten before enable wins", () => {
    const { cr, cw, device } = rig();
    cw(C.QUEUE_SELECT, 1, 2);
    for (const bad of [0, 3, 24, 64, 0x8000, 0xffff]) {
      cw(C.QUEUE_SIZE, bad, 2);
      expect(cr(C.QUEUE_SIZE, 2)).toBe(bad); // §4.1.4.3: a driver-writable register
    }
    cw(C.QUEUE_SIZE, 2, 2);
    expect(device.queues[1]!.size).toBe(2);
  });

  it("queue_enable: 0 is not allowed, unset addresses refuse, bad rings need a reset", () => {
    const { cr, cw, device, negotiate, pci } = rig();
    expect(negotiate(0, V1_HI)).toBe(ACK | DRIVER | FEATURES_OK);
    cw(C.QUEUE_SELECT, 0, 2);
    cw(C.QUEUE_DESC, DESC);
    cw(C.QUEUE_DRIVER, AVAIL);
    cw(C.QUEUE_ENABLE, 1, 2); // device area never written
    expect(cr(C.QUEUE_ENABLE, 2)).toBe(0);
    expect(device.status & NEEDS_RESET).toBe(0);
    cw(C.QUEUE_DEVICE, USED);
    cw(C.QUEUE_ENABLE, 0, 2);
    expect(cr(C.QUEUE_ENABLE, 2)).toBe(0);
    cw(C.QUEUE_ENABLE, 1, 2);
    expect(cr(C.QUEUE_ENABLE, 2)).toBe(1);
    // Writes to an enabled queue's fields are ignored.
    const n = pci.stats.ignored;
    cw(C.QUEUE_SIZE, 4, 2);
    cw(C.QUEUE_DESC, 0x8000);
    cw(C.QUEUE_ENABLE, 1, 2);
    expect(pci.stats.ignored).toBe(n + 3);
    expect(device.queues[0]!.size).toBe(16);
    expect(device.queues[0]!.descAddr).toBe(DESC);
    // Queue 1 with its rings outside guest memory (high half set): enable → NEEDS_RESET.
    cw(C.QUEUE_SELECT, 1, 2);
    cw(C.QUEUE_DESC, DESC);
    cw(C.QUEUE_DESC + 4, 0xffff_ffff);
    cw(C.QUEUE_DRIVER, AVAIL);
    cw(C.QUEUE_DEVICE, USED);
    cw(C.QUEUE_ENABLE, 1, 2);
    expect(cr(C.QUEUE_ENABLE, 2)).toBe(0);
    expect(device.status & NEEDS_RESET).toBe(NEEDS_RESET);
  });

  it("survives random accesses to every BAR offset and config register (fast-check)", () => {
    const { pci, device } = rig({ msix: 3, device: new TestDevice({ ringReset: true }) });
    const access = fc.record({
      target: fc.constantFrom("bar", "cfg"),
      bar: fc.integer({ min: 0, max: 6 }),
      offset: fc.oneof(
        fc.integer({ min: 0, max: 0x3fff }),
        fc.integer({ min: 0, max: 0x48 }),
        fc.integer({ min: -4, max: 0x10000 }),
      ),
      size: fc.constantFrom<AccessSize>(1, 2, 4),
      value: fc.oneof(
        fc.integer({ min: 0, max: 0xffff_ffff }),
        fc.constantFrom(0, 1, 0xffff, 0xffff_ffff),
      ),
      write: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(access, { maxLength: 200 }), (ops) => {
        for (const op of ops) {
          if (op.target === "cfg") {
            if (op.write) pci.configWrite(op.offset & 0x1ff, op.size, op.value);
            else pci.configRead(op.offset & 0x1ff, op.size);
          } else if (op.write) pci.barWrite(op.bar, op.offset, op.size, op.value);
          else pci.barRead(op.bar, op.offset, op.size);
        }
        for (const q of device.queues) {
          expect(q.size & (q.size - 1)).toBe(0);
          expect(q.size).toBeGreaterThan(0);
          expect(q.size).toBeLessThanOrEqual(q.maxSize);
        }
        for (let i = 0; i < 3; i++) {
          const v = pci.queueMsixVector(i);
          expect(v === VIRTIO_MSI_NO_VECTOR || v < 3).toBe(true);
        }
        // Vendor/device ids and the capability list are untouched.
        expect(pci.configRead(0, 4)).toBe(0x106a_1af4);
        expect(pci.config.capabilities().map((c) => c.id)).toEqual([9, 9, 9, 9, 9, 0x11]);
      }),
      { seed: 0x5eed_1040, numRuns: 150 },
    );
  });
});

describe("notifications, ISR and INTx (§4.1.4.4, §4.1.4.5)", () => {
  it("notifies each queue at offset × multiplier; a split 16-bit write notifies once", () => {
    const { bus, notify, device, negotiate, setupQueue, cw, pci } = rig();
    negotiate(0, V1_HI);
    setupQueue(0, 16);
    setupQueue(1, 32, 0x4000);
    cw(C.DEVICE_STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK, 1);
    bus.write(notify.space, notify.base + 4, 2, 1);
    bus.write(notify.space, notify.base + 0, 2, 0);
    bus.write(notify.space, notify.base + 0, 1, 0);
    bus.write(notify.space, notify.base + 1, 1, 0); // the high byte: ignored
    bus.write(notify.space, notify.base + 8, 2, 2); // queue 2 is not enabled: the device ignores it
    expect((device as TestDevice).notified).toEqual([1, 0, 0]);
    expect(pci.stats.notifications).toBe(4);
    bus.write(notify.space, notify.base + 12, 2, 3); // beyond the last queue
    expect(pci.stats.notifications).toBe(4);
    expect(bus.read(notify.space, notify.base, 2)).toBe(0);
  });

  it("uses the written value with notify_off_multiplier 0", () => {
    const layout: VirtioPciLayout = {
      ...virtioPciLayout("mem64", { numQueues: 3, configSize: 8, msixVectors: 0 }),
      notifyOffMultiplier: 0,
    };
    const { bus, notify, device, negotiate, setupQueue, cw } = rig({ layout });
    negotiate(0, V1_HI);
    setupQueue(2, 8);
    cw(C.DEVICE_STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK, 1);
    cw(C.QUEUE_SELECT, 2, 2);
    expect(bus.read(notify.space, notify.base - 0x3000 + C.QUEUE_NOTIFY_OFF, 2)).toBe(2);
    bus.write(notify.space, notify.base, 2, 2);
    expect((device as TestDevice).notified).toEqual([2]);
  });

  it("raises INTx while ISR is set; reading ISR clears it; Interrupt Disable masks the line", () => {
    const { pci, bus, isr, cfg } = rig();
    pci.signalUsed(0);
    expect(pci.irq.level).toBe(true);
    expect(cfg.read(P.STATUS, 2) & PCI_STATUS_INTERRUPT).toBe(PCI_STATUS_INTERRUPT);
    pci.signalConfig();
    expect(pci.irq.raises).toBe(1);
    expect(bus.read(isr.space, isr.base, 1)).toBe(VIRTIO_PCI_ISR_QUEUE | VIRTIO_PCI_ISR_CONFIG);
    expect(pci.irq.level).toBe(false);
    expect(cfg.read(P.STATUS, 2) & PCI_STATUS_INTERRUPT).toBe(0);
    expect(bus.read(isr.space, isr.base, 1)).toBe(0);
    bus.write(isr.space, isr.base, 1, 0xff); // read-only
    expect(pci.isr).toBe(0);
    cfg.write(P.COMMAND, 2, cfg.read(P.COMMAND, 2) | PCI_COMMAND_INTX_DISABLE);
    pci.signalUsed(1);
    expect(pci.irq.level).toBe(false);
    expect(cfg.read(P.STATUS, 2) & PCI_STATUS_INTERRUPT).toBe(PCI_STATUS_INTERRUPT);
    cfg.write(P.COMMAND, 2, cfg.read(P.COMMAND, 2) & ~PCI_COMMAND_INTX_DISABLE);
    expect(pci.irq.level).toBe(true);
  });
});

describe("MSI-X (§4.1.5.1.2, PCI 3.0 §6.8.2)", () => {
  function msixRig(vectors = 4) {
    const r = rig({ msix: vectors });
    const m = r.pci.msix!;
    const tableBar = r.bars.find((b) => b.index === 1)!;
    const entry = (v: number, off: number) => tableBar.address + v * 16 + off;
    const program = () => {
      for (let v = 0; v < vectors; v++) {
        r.bus.write("mmio", entry(v, 0), 4, 0xfee0_0000 + v * 0x1000);
        r.bus.write("mmio", entry(v, 4), 4, 0);
        r.bus.write("mmio", entry(v, 8), 4, 0x30 + v);
        r.bus.write("mmio", entry(v, 12), 4, 0);
      }
      const ctl = m.capOffset + PCI_MSIX_FLAGS;
      r.cfg.write(ctl, 2, PCI_MSIX_FLAGS_ENABLE);
    };
    return { ...r, m, entry, program, pba: tableBar.address + 0x800 };
  }

  it("maps vectors, delivers per-queue messages, holds masked ones in the PBA", () => {
    const { cw, cr, pci, messages, program, bus, entry, pba, m } = msixRig();
    program();
    cw(C.CONFIG_MSIX_VECTOR, 0, 2);
    expect(cr(C.CONFIG_MSIX_VECTOR, 2)).toBe(0);
    for (let q = 0; q < 3; q++) {
      cw(C.QUEUE_SELECT, q, 2);
      cw(C.QUEUE_MSIX_VECTOR, q + 1, 2);
      expect(cr(C.QUEUE_MSIX_VECTOR, 2)).toBe(q + 1);
    }
    // A vector beyond the table is refused: it reads back NO_VECTOR.
    cw(C.QUEUE_MSIX_VECTOR, 4, 2);
    expect(cr(C.QUEUE_MSIX_VECTOR, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    cw(C.QUEUE_MSIX_VECTOR, 3, 2);
    pci.signalUsed(1);
    pci.signalConfig();
    expect(messages).toEqual([
      [0xfee0_2000n, 0x32],
      [0xfee0_0000n, 0x30],
    ]);
    expect(pci.isr).toBe(0);
    expect(pci.irq.raises).toBe(0);
    // Mask vector 3 (queue 2): the event goes pending.
    bus.write("mmio", entry(3, 12), 4, 1);
    pci.signalUsed(2);
    expect(messages).toHaveLength(2);
    expect(bus.read("mmio", pba, 4)).toBe(1 << 3);
    expect(m.isPending(3)).toBe(true);
    bus.write("mmio", pba, 4, 0); // the PBA is read-only
    expect(bus.read("mmio", pba, 4)).toBe(1 << 3);
    bus.write("mmio", entry(3, 12), 4, 0);
    expect(messages.at(-1)).toEqual([0xfee0_3000n, 0x33]);
    expect(bus.read("mmio", pba, 4)).toBe(0);
    // Function mask: everything pends, then flushes when cleared.
    const ctl = m.capOffset + PCI_MSIX_FLAGS;
    cw(C.QUEUE_SELECT, 0, 2);
    pci.config.write(ctl, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    pci.signalUsed(0);
    pci.signalConfig();
    expect(messages).toHaveLength(3);
    expect(bus.read("mmio", pba, 4)).toBe(0b11);
    pci.config.write(ctl, 2, PCI_MSIX_FLAGS_ENABLE);
    expect(messages.slice(3)).toEqual([
      [0xfee0_0000n, 0x30],
      [0xfee0_1000n, 0x31],
    ]);
    // NO_VECTOR: no message and no ISR.
    cw(C.QUEUE_MSIX_VECTOR, VIRTIO_MSI_NO_VECTOR, 2);
    pci.signalUsed(0);
    expect(messages).toHaveLength(5);
    expect(pci.isr).toBe(0);
  });

  it("falls back to INTx while MSI-X is disabled, and drops INTx when it is enabled", () => {
    const { pci, program, cw, messages, m } = msixRig();
    cw(C.CONFIG_MSIX_VECTOR, 0, 2);
    pci.signalConfig();
    expect(messages).toHaveLength(0);
    expect(pci.isr).toBe(VIRTIO_PCI_ISR_CONFIG);
    expect(pci.irq.level).toBe(true);
    program();
    expect(m.enabled).toBe(true);
    expect(pci.irq.level).toBe(false); // PCI 3.0 §6.8.2: no INTx with MSI-X on
  });

  it("refuses vectors without an MSI-X capability", () => {
    const { cw, cr } = rig();
    cw(C.CONFIG_MSIX_VECTOR, 0, 2);
    expect(cr(C.CONFIG_MSIX_VECTOR, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    cw(C.QUEUE_MSIX_VECTOR, 1, 2);
    expect(cr(C.QUEUE_MSIX_VECTOR, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
  });
});

describe("reset and re-initialisation", () => {
  it("firmware init, use, full reset, Linux-style re-init: nothing leaks", () => {
    const { bus, cfg, memory, device, pci, messages, cr, cw } = rig({ msix: 4 });
    const alloc = new GuestAllocator(0x1_0000, 0xf_0000);
    // "SeaBIOS": INTx, all queues.
    const fw = VirtioPciDriverTransport.probe(bus, cfg);
    if (fw instanceof DriverError) throw new Error(fw.message);
    const first = initVirtioDevice(fw, {
      wanted: featureMask(VIRTIO_F_VERSION_1, 3),
      memory,
      allocator: alloc,
      queueSizes: [0, 0, 0],
    });
    if (first instanceof DriverError) throw new Error(first.message);
    expect(device.driverFeatures).toBe(featureMask(VIRTIO_F_VERSION_1, 3));
    fw.notify(1);
    expect((device as TestDevice).notified).toEqual([1]);
    pci.signalUsed(1);
    expect(pci.isr).toBe(VIRTIO_PCI_ISR_QUEUE);
    // Leave selects and a half-written field behind, and an MSI-X event pending.
    cw(C.DEVICE_FEATURE_SELECT, 1);
    cw(C.DRIVER_FEATURE_SELECT, 1);
    cw(C.QUEUE_SELECT, 2, 2);
    cw(C.QUEUE_SIZE, 0x02, 1); // low byte only
    const m = pci.msix!;
    m.setControl(true, true);
    cw(C.CONFIG_MSIX_VECTOR, 0, 2);
    pci.signalConfig();
    expect(m.isPending(0)).toBe(true);
    m.setControl(false, false);

    // "Linux": reset.
    fw.reset();
    expect(device.status).toBe(0);
    expect(pci.isr).toBe(0);
    expect(pci.irq.level).toBe(false);
    expect(m.isPending(0)).toBe(false);
    expect(device.driverFeatures).toBe(0n);
    expect(cr(C.DEVICE_FEATURE_SELECT)).toBe(0);
    expect(cr(C.DRIVER_FEATURE_SELECT)).toBe(0);
    expect(cr(C.QUEUE_SELECT, 2)).toBe(0);
    expect(cr(C.CONFIG_MSIX_VECTOR, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    for (let q = 0; q < 3; q++) {
      cw(C.QUEUE_SELECT, q, 2);
      expect(cr(C.QUEUE_ENABLE, 2)).toBe(0);
      expect(cr(C.QUEUE_SIZE, 2)).toBe(device.queues[q]!.maxSize);
      expect(cr(C.QUEUE_MSIX_VECTOR, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
      for (const off of [
        C.QUEUE_DESC,
        C.QUEUE_DESC + 4,
        C.QUEUE_DRIVER,
        C.QUEUE_DRIVER + 4,
        C.QUEUE_DEVICE,
        C.QUEUE_DEVICE + 4,
      ]) {
        expect(cr(off)).toBe(0);
      }
      expect(device.queues[q]!.descAddr).toBe(0);
    }
    // The stale half write does not combine with a new byte.
    cw(C.QUEUE_SELECT, 2, 2);
    cw(C.QUEUE_SIZE + 1, 0, 1);
    expect(cr(C.QUEUE_SIZE, 2)).toBe(8);
    // An unmasked vector with nothing pending sends nothing once MSI-X comes back.
    m.setControl(true, false);
    expect(messages).toHaveLength(0);
    m.setControl(false, false);
    // A queue cannot be enabled on leftover addresses after the reset.
    cw(C.QUEUE_SELECT, 1, 2);
    cw(C.QUEUE_ENABLE, 1, 2);
    expect(device.queues[1]!.ready).toBe(false);

    // Linux re-inits with MSI-X and two queues.
    const linux = VirtioPciDriverTransport.probe(bus, cfg);
    if (linux instanceof DriverError) throw new Error(linux.message);
    expect(linux.enableMsix({ numQueues: 2, dataBase: 0x60 })).toBe("msix-per-queue");
    alloc.reset();
    const second = initVirtioDevice(linux, {
      wanted: featureMask(VIRTIO_F_VERSION_1),
      memory,
      allocator: alloc,
      queueSizes: [4, 0],
    });
    if (second instanceof DriverError) throw new Error(second.message);
    expect(device.status).toBe(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    expect(device.queues.map((q) => q.ready)).toEqual([true, true, false]);
    expect(device.queues[0]!.size).toBe(4);
    expect(pci.configMsixVector).toBe(0);
    expect([pci.queueMsixVector(0), pci.queueMsixVector(1), pci.queueMsixVector(2)]).toEqual([
      1,
      2,
      VIRTIO_MSI_NO_VECTOR,
    ]);
    pci.signalUsed(1);
    expect(messages).toEqual([[0xfee0_0000n, 0x62]]);
    expect(linux.handleMsixMessage(0x62)).toBe(VIRTIO_PCI_ISR_QUEUE);
    expect(linux.ackInterrupt()).toBe(VIRTIO_PCI_ISR_QUEUE);
    expect(linux.ackInterrupt()).toBe(0);
  });

  it("pciReset returns BARs, Command and MSI-X to power-on state", () => {
    const { pci, cfg, program } = (() => {
      const r = rig({ msix: 2 });
      const ctl = r.pci.msix!.capOffset + PCI_MSIX_FLAGS;
      return { ...r, program: () => r.cfg.write(ctl, 2, PCI_MSIX_FLAGS_ENABLE) };
    })();
    program();
    expect(pci.msix!.enabled).toBe(true);
    pci.pciReset();
    expect(cfg.read(P.COMMAND, 2)).toBe(0);
    expect(cfg.read(0x20, 4)).toBe(0xc); // address cleared, type bits kept
    expect(pci.msix!.enabled).toBe(false);
    expect(pci.msix!.isVectorMasked(0)).toBe(true);
    expect(pci.device.status).toBe(0);
  });
});

describe("PCI_CFG window (§4.1.4.9) and queue_reset", () => {
  it("reads and writes the structures through configuration space", () => {
    const { cfg, pci, device } = rig();
    const p = pci.capabilities.pciCfg;
    cfg.write(p + CAP.BAR, 1, 4);
    cfg.write(p + CAP.OFFSET, 4, C.NUM_QUEUES);
    cfg.write(p + CAP.LENGTH, 4, 2);
    expect(cfg.read(p + CAP.PCI_CFG_DATA, 4) & 0xffff).toBe(3);
    cfg.write(p + CAP.OFFSET, 4, C.DEVICE_STATUS);
    cfg.write(p + CAP.LENGTH, 4, 1);
    cfg.write(p + CAP.PCI_CFG_DATA, 4, ACK);
    expect(device.status).toBe(ACK);
    // ISR through the window clears it.
    pci.signalUsed(0);
    cfg.write(p + CAP.OFFSET, 4, pci.layout.isr.offset);
    expect(cfg.read(p + CAP.PCI_CFG_DATA, 1)).toBe(1);
    expect(pci.isr).toBe(0);
    // Bad length / unaligned offset: nothing happens.
    const n = pci.stats.ignored;
    cfg.write(p + CAP.LENGTH, 4, 3);
    cfg.write(p + CAP.PCI_CFG_DATA, 4, 0);
    cfg.write(p + CAP.LENGTH, 4, 4);
    cfg.write(p + CAP.OFFSET, 4, 2);
    cfg.read(p + CAP.PCI_CFG_DATA, 4);
    expect(pci.stats.ignored).toBe(n + 2);
    expect(device.status).toBe(ACK);
  });

  it("resets one queue only when VIRTIO_F_RING_RESET was negotiated", () => {
    const dev = new TestDevice({ ringReset: true });
    const { cr, cw, negotiate, setupQueue, pci } = rig({ device: dev });
    expect(negotiate(0, V1_HI)).toBe(ACK | DRIVER | FEATURES_OK);
    setupQueue(0, 8);
    cw(C.QUEUE_RESET, 1, 2);
    expect(dev.queues[0]!.ready).toBe(true); // not negotiated: ignored
    expect(negotiate(0, V1_HI | (1 << 8))).toBe(ACK | DRIVER | FEATURES_OK);
    setupQueue(0, 8);
    setupQueue(1, 16, 0x8000);
    cw(C.QUEUE_SELECT, 0, 2);
    cw(C.QUEUE_RESET, 2, 2);
    expect(dev.queues[0]!.ready).toBe(true);
    cw(C.QUEUE_RESET, 1, 2);
    expect(cr(C.QUEUE_RESET, 2)).toBe(0);
    expect(cr(C.QUEUE_ENABLE, 2)).toBe(0);
    expect(cr(C.QUEUE_DESC)).toBe(0);
    expect(cr(C.QUEUE_SIZE, 2)).toBe(16);
    expect(dev.queues[1]!.ready).toBe(true);
    setupQueue(0, 4, 0x10000);
    expect(dev.queues[0]!.ready).toBe(true);
    expect(dev.queues[0]!.size).toBe(4);
    expect(pci.stats.ignored).toBeGreaterThanOrEqual(2);
  });
});

describe("layout validation (host configuration errors throw at construction)", () => {
  const device = () => new TestDevice();
  const memory = GuestMemory.create(1 << 16);
  const base = virtioPciLayout("mem64", { numQueues: 3, configSize: 8, msixVectors: 0 });
  it("rejects overlapping structures, bad multipliers, MSI-X in an I/O BAR, undeclared BARs", () => {
    expect(
      () =>
        new VirtioPciTransport({
          device: device(),
          memory,
          layout: { ...base, isr: { bar: 4, offset: 0x10 } },
        }),
    ).toThrow(/overlap/);
    expect(
      () =>
        new VirtioPciTransport({
          device: device(),
          memory,
          layout: { ...base, notifyOffMultiplier: 3 },
        }),
    ).toThrow(/multiplier/);
    expect(
      () =>
        new VirtioPciTransport({
          device: device(),
          memory,
          layout: { ...base, common: { bar: 2, offset: 0 } },
        }),
    ).toThrow(/BAR 2/);
    const io = virtioPciLayout("io", { numQueues: 3, configSize: 8, msixVectors: 0 });
    expect(
      () =>
        new VirtioPciTransport({
          device: device(),
          memory,
          layout: {
            ...io,
            msixTable: { bar: 0, offset: 0x100 },
            msixPba: { bar: 0, offset: 0x180 },
          },
          msix: { vectors: 2, onMessage: () => {} },
        }),
    ).toThrow(/memory BAR/);
  });
});
