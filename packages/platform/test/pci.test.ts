import {
  type AccessSize,
  assignPciBars,
  Bus,
  IrqLine,
  MsixController,
  PciConfigOffset as P,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_VNDR,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_CONFIG_ADDRESS_PORT,
  PCI_CONFIG_DATA_PORT,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_STATUS_CAP_LIST,
  type PciBar,
  PciConfigEcamAccess,
  PciConfigPortAccess,
  PciConfigSpace,
  type PciFunction,
  PciHost,
  probePciBars,
} from "@pvkit/platform";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

const ID = {
  vendorId: 0x1234,
  deviceId: 0x5678,
  classCode: 0x02_00_00,
  revision: 3,
  subsystemVendorId: 0xabcd,
  subsystemId: 0x0042,
};

describe("PciConfigSpace", () => {
  it("fills the identity and keeps it read-only", () => {
    const c = new PciConfigSpace(ID);
    expect(c.read(P.VENDOR_ID, 4)).toBe(0x5678_1234);
    expect(c.read(P.REVISION_ID, 4)).toBe(0x0200_0003);
    expect(c.read(P.SUBSYSTEM_VENDOR_ID, 4)).toBe(0x0042_abcd);
    expect(c.read(P.INTERRUPT_PIN, 1)).toBe(1);
    c.write(0, 4, 0);
    c.write(8, 4, 0xffff_ffff);
    c.write(0x2c, 4, 0);
    expect(c.read(P.VENDOR_ID, 4)).toBe(0x5678_1234);
    expect(c.read(P.REVISION_ID, 4)).toBe(0x0200_0003);
    expect(c.read(0x2c, 4)).toBe(0x0042_abcd);
    // Writable scratch registers.
    c.write(P.INTERRUPT_LINE, 1, 11);
    c.write(P.CACHE_LINE_SIZE, 1, 0x10);
    expect(c.read(P.INTERRUPT_LINE, 1)).toBe(11);
    expect(c.read(P.CACHE_LINE_SIZE, 1)).toBe(0x10);
    expect(() => new PciConfigSpace({ ...ID, interruptPin: 5 })).toThrow();
  });

  it("applies the Command mask and write-1-to-clear Status bits", () => {
    const c = new PciConfigSpace(ID);
    c.write(P.COMMAND, 2, 0xffff);
    expect(c.read(P.COMMAND, 2)).toBe(0x0547);
    expect(c.intxDisabled).toBe(true);
    expect(c.busMaster).toBe(true);
    c.setU16(P.STATUS, 0x8000 | 0x0010);
    c.write(P.STATUS, 2, 0x8000);
    expect(c.read(P.STATUS, 2)).toBe(0x0010);
    c.write(P.STATUS, 2, 0x0010); // CAP_LIST is read-only, not W1C
    expect(c.read(P.STATUS, 2)).toBe(0x0010);
  });

  it("refuses unaligned, oversized and out-of-range accesses without throwing", () => {
    const c = new PciConfigSpace(ID);
    expect(c.read(1, 2)).toBe(0xffff);
    expect(c.read(2, 4)).toBe(0xffff_ffff);
    expect(c.read(256, 1)).toBe(0xff);
    expect(c.read(-4, 4)).toBe(0xffff_ffff);
    expect(c.read(0, 3 as AccessSize)).toBe(0xffff_ffff); // not a PCI access width: 32 one-bits
    c.write(P.COMMAND + 1, 2, 0xffff);
    c.write(0.5, 1, 1);
    expect(c.read(P.COMMAND, 2)).toBe(0);
    expect(c.rejected).toBe(7);
  });

  it("sizes every kind of BAR with an all-ones write and keeps the type bits", () => {
    const c = new PciConfigSpace(ID);
    c.defineBar(0, { kind: "io", size: 0x40 });
    c.defineBar(1, { kind: "mem32", size: 0x1000, prefetchable: true });
    const b64 = c.defineBar(2, { kind: "mem64", size: 0x10_0000, address: 0x1_2000_0000 });
    for (const off of [0x10, 0x14, 0x18, 0x1c, 0x20, 0x24]) c.write(off, 4, 0xffff_ffff);
    expect(c.read(0x10, 4)).toBe(0xffff_ffc1);
    expect(c.read(0x14, 4)).toBe(0xffff_f008);
    expect(c.read(0x18, 4)).toBe(0xfff0_0004);
    expect(c.read(0x1c, 4)).toBe(0xffff_ffff);
    expect(c.read(0x20, 4)).toBe(0);
    c.write(0x18, 4, 0xfe10_0000);
    c.write(0x1c, 4, 0x2);
    expect(b64.address).toBe(0x2_fe10_0000);
    expect(c.bars[3]).toBe(b64);
    c.reset();
    expect(b64.address).toBe(0x1_2000_0000);
    expect(c.read(0x10, 4)).toBe(1);
    expect(() => c.defineBar(3, { kind: "mem32", size: 0x1000 })).toThrow(/already used/);
    expect(() => c.defineBar(5, { kind: "mem64", size: 0x1000 })).toThrow();
    expect(() => c.defineBar(4, { kind: "mem32", size: 0x1800 })).toThrow(/power of two/);
    expect(() => c.defineBar(4, { kind: "io", size: 2 })).toThrow();
  });

  it("reports decode enables per BAR kind", () => {
    const c = new PciConfigSpace(ID);
    const io: PciBar = c.defineBar(0, { kind: "io", size: 0x20 });
    const mem: PciBar = c.defineBar(1, { kind: "mem32", size: 0x1000 });
    expect([io.decodeEnabled, mem.decodeEnabled]).toEqual([false, false]);
    c.write(P.COMMAND, 2, PCI_COMMAND_IO);
    expect([io.decodeEnabled, mem.decodeEnabled]).toEqual([true, false]);
    c.write(P.COMMAND, 2, PCI_COMMAND_MEMORY);
    expect([io.decodeEnabled, mem.decodeEnabled]).toEqual([false, true]);
    expect([io.space, mem.space]).toEqual(["pio", "mmio"]);
  });

  it("builds a linked capability list and runs hooks", () => {
    const c = new PciConfigSpace(ID);
    expect(c.read(P.STATUS, 2) & PCI_STATUS_CAP_LIST).toBe(0);
    const a = c.addCapability(PCI_CAP_ID_VNDR, 14);
    const b = c.addCapability(PCI_CAP_ID_MSIX, 12);
    expect(a).toBe(0x40);
    expect(b).toBe(0x50); // dword aligned after 0x40 + 14
    expect(c.read(P.CAPABILITY_LIST, 1)).toBe(a);
    expect(c.read(a + 1, 1)).toBe(b);
    expect(c.read(b + 1, 1)).toBe(0);
    expect(c.read(P.STATUS, 2) & PCI_STATUS_CAP_LIST).toBe(PCI_STATUS_CAP_LIST);
    expect(c.capabilities()).toEqual([
      { id: PCI_CAP_ID_VNDR, offset: a },
      { id: PCI_CAP_ID_MSIX, offset: b },
    ]);
    expect(() => c.addCapability(9, 200)).toThrow(/does not fit/);
    const seen: string[] = [];
    c.setWriteMask(a + 4, 4, 0xffff_ffff);
    c.hookWrite(a + 4, 4, (o, s, v) => seen.push(`w${o}/${s}=${v}`));
    c.hookRead(a + 4, 4, (o, s) => {
      seen.push(`r${o}/${s}`);
      c.setU8(a + 4, 0x77);
    });
    c.write(a + 4, 2, 0x1234);
    expect(c.read(a + 4, 1)).toBe(0x77);
    c.read(a, 1); // outside the hooked range
    expect(seen).toEqual([`w${a + 4}/2=${0x1234}`, `r${a + 4}/1`]);
  });

  it("only ever changes writable bits under random guest writes (fast-check)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.integer({ min: 0, max: 255 }),
            fc.constantFrom<AccessSize>(1, 2, 4),
            fc.integer({ min: 0, max: 0xffff_ffff }),
          ),
          { maxLength: 100 },
        ),
        (writes) => {
          const c = new PciConfigSpace(ID);
          c.defineBar(0, { kind: "mem32", size: 0x100 });
          c.addCapability(PCI_CAP_ID_VNDR, 16);
          const ro = Uint8Array.from(c.bytes);
          for (const [o, s, v] of writes) c.write(o, s, v);
          // Identity, class, header type, capability pointer and list never change.
          for (const off of [
            0, 1, 2, 3, 8, 9, 10, 11, 0x0e, 0x2c, 0x2d, 0x2e, 0x2f, 0x34, 0x3d, 0x40, 0x41,
          ]) {
            expect(c.bytes[off]).toBe(ro[off]);
          }
          expect(c.read(0x10, 4) & 0xff).toBe(0); // BAR low bits: size 0x100 → bits 7:0 read-only 0
        },
      ),
      { seed: 0x0c0f_f1e5, numRuns: 200 },
    );
  });
});

describe("MsixController", () => {
  function make(vectors = 3) {
    const sent: Array<[bigint, number]> = [];
    const m = new MsixController(vectors, (a, d) => sent.push([a, d]));
    const c = new PciConfigSpace(ID);
    c.defineBar(1, { kind: "mem32", size: 0x1000 });
    const cap = m.install(c, { bar: 1, offset: 0 }, { bar: 1, offset: 0x800 });
    const program = (v: number, addr: number, data: number, masked = false) => {
      m.writeTable(v * 16, 4, addr);
      m.writeTable(v * 16 + 4, 4, 1);
      m.writeTable(v * 16 + 8, 4, data);
      m.writeTable(v * 16 + 12, 4, masked ? 1 : 0);
    };
    return { m, c, cap, sent, program };
  }

  it("installs the capability with table size, BIRs and writable control bits only", () => {
    const { c, cap, m } = make(5);
    expect(c.read(cap, 1)).toBe(PCI_CAP_ID_MSIX);
    expect(c.read(cap + PCI_MSIX_FLAGS, 2)).toBe(4);
    expect(c.read(cap + 4, 4)).toBe(0x1);
    expect(c.read(cap + 8, 4)).toBe(0x801);
    c.write(cap + PCI_MSIX_FLAGS, 2, 0xffff);
    expect(c.read(cap + PCI_MSIX_FLAGS, 2)).toBe(0xc004);
    expect(m.enabled).toBe(true);
    expect(m.functionMasked).toBe(true);
    c.write(cap + 4, 4, 0);
    expect(c.read(cap + 4, 4)).toBe(0x1);
    expect(m.tableBytes).toBe(80);
    expect(m.pbaBytes).toBe(8);
    expect(() => new MsixController(0, () => {})).toThrow();
    expect(() => new MsixController(2049, () => {})).toThrow();
    expect(() => make().m.install(c, { bar: 1, offset: 4 }, { bar: 1, offset: 0x800 })).toThrow();
  });

  it("starts masked, reports disabled, sends, pends and flushes on unmask", () => {
    const { m, c, cap, sent, program } = make();
    expect(m.isVectorMasked(0)).toBe(true);
    expect(m.signal(0)).toBe("disabled");
    c.write(cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE);
    expect(m.signal(0)).toBe("pending"); // entries are masked at reset
    program(0, 0xfee0_0000, 0x41);
    expect(sent).toEqual([[0x1_fee0_0000n, 0x41]]);
    expect(m.isPending(0)).toBe(false);
    expect(m.signal(0)).toBe("sent");
    expect(m.signal(3)).toBe("invalid");
    expect(m.signal(-1)).toBe("invalid");
    program(1, 0xfee0_1000, 0x42, true);
    expect(m.signal(1)).toBe("pending");
    expect(m.readPba(0, 1)).toBe(0b10);
    c.write(cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    expect(m.signal(0)).toBe("pending");
    expect(m.readPba(0, 4)).toBe(0b11);
    m.writeTable(16 + 12, 4, 0); // unmask vector 1 while the function is masked: still held
    expect(sent).toHaveLength(2);
    c.write(cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE);
    expect(sent.slice(2)).toEqual([
      [0x1_fee0_0000n, 0x41],
      [0x1_fee0_1000n, 0x42],
    ]);
    expect(m.messages).toBe(4);
    expect(m.pendings).toBe(3);
  });

  it("keeps reserved vector-control bits zero, ignores bad table accesses, clears on reset", () => {
    const { m, c, cap } = make();
    m.writeTable(12, 4, 0xffff_ffff);
    expect(m.readTable(12, 4)).toBe(1);
    m.writeTable(13, 1, 0xff);
    expect(m.readTable(12, 4)).toBe(1);
    expect(m.readTable(2, 4)).toBe(0);
    expect(m.readTable(48, 4)).toBe(0);
    m.writeTable(3 * 16, 4, 5); // past the table
    m.writeTable(2, 4, 5); // unaligned
    expect(m.readTable(0, 4)).toBe(0);
    expect(m.readPba(8, 4)).toBe(0);
    c.write(cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE);
    m.signal(2);
    expect(m.isPending(2)).toBe(true);
    const changes: boolean[] = [];
    m.onChange(() => changes.push(m.enabled));
    m.reset();
    expect(m.isPending(2)).toBe(false);
    expect(m.enabled).toBe(false);
    expect(c.read(cap + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_ENABLE).toBe(0);
    expect(changes).toEqual([false]);
  });
});

/** A trivial function: one I/O BAR of 16 registers and one memory BAR echoing offsets. */
class EchoFunction implements PciFunction {
  readonly name: string;
  readonly config = new PciConfigSpace(ID);
  readonly irq = new IrqLine("echo");
  readonly interruptPin = 1;
  readonly regs = new Uint32Array(4);
  constructor(name = "echo", memAddress = 0) {
    this.name = name;
    this.config.defineBar(0, { kind: "io", size: 16 });
    this.config.defineBar(2, { kind: "mem64", size: 0x1000, address: memAddress });
  }
  get bars() {
    return this.config.bars;
  }
  configRead(o: number, s: AccessSize) {
    return this.config.read(o, s);
  }
  configWrite(o: number, s: AccessSize, v: number) {
    this.config.write(o, s, v);
  }
  barRead(bar: number, o: number, _s: AccessSize) {
    return bar === 0 ? (this.regs[o >> 2] ?? 0) : 0x1000_0000 + o;
  }
  barWrite(bar: number, o: number, _s: AccessSize, v: number) {
    if (bar === 0) this.regs[o >> 2] = v;
  }
}

describe("PciHost", () => {
  it("routes mechanism #1 cycles and answers all-ones for absent functions", () => {
    const bus = new Bus();
    const host = new PciHost(bus);
    host.attach(new EchoFunction(), 2);
    host.mapConfigPorts();
    const cfg = new PciConfigPortAccess(bus, 2);
    expect(cfg.read(0, 4)).toBe(0x5678_1234);
    expect(cfg.read(2, 2)).toBe(0x5678);
    expect(cfg.read(9, 1)).toBe(0x00);
    expect(new PciConfigPortAccess(bus, 3).read(0, 4)).toBe(0xffff_ffff);
    expect(new PciConfigPortAccess(bus, 2, 0, 1).read(0, 4)).toBe(0xffff_ffff); // bus 1
    // The address register reads back; without the enable bit the data port floats.
    bus.write("pio", PCI_CONFIG_ADDRESS_PORT, 4, 2 << 11);
    expect(bus.read("pio", PCI_CONFIG_ADDRESS_PORT, 4)).toBe(2 << 11);
    expect(bus.read("pio", PCI_CONFIG_DATA_PORT, 4)).toBe(0xffff_ffff);
    // Two exits per configuration access.
    bus.resetStats();
    cfg.read(0, 2);
    expect(bus.stats().byDevice["pci-conf1"]!.exits).toBe(2);
    expect(() => host.attach(new EchoFunction(), 2)).toThrow(/taken/);
    expect(() => host.attach(new EchoFunction(), 32)).toThrow(/range/);
  });

  it("maps BARs where firmware puts them, follows moves and decode, counts conflicts", () => {
    const bus = new Bus();
    const host = new PciHost(bus);
    const fn = new EchoFunction("a");
    host.attach(fn, 1);
    host.mapEcam(0xe000_0000);
    const cfg = new PciConfigEcamAccess(bus, 0xe000_0000, 1);
    expect(cfg.read(0, 2)).toBe(0x1234);
    const bars = assignPciBars(cfg, { io: 0xc000, mem32: 0xfe00_0000, mem64: 0x1_0000_0000 });
    expect(bars.map((b) => [b.index, b.kind, b.size, b.address])).toEqual([
      [0, "io", 16, 0xc000],
      [2, "mem64", 0x1000, 0x1_0000_0000],
    ]);
    expect(
      cfg.read(P.COMMAND, 2) & (PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER),
    ).toBe(7);
    bus.write("pio", 0xc004, 4, 0xdead);
    expect(fn.regs[1]).toBe(0xdead);
    expect(bus.read("mmio", 0x1_0000_0010, 4)).toBe(0x1000_0010);
    // Move the I/O BAR.
    cfg.write(0x10, 4, 0xd000);
    expect(bus.read("pio", 0xd004, 4)).toBe(0xdead);
    expect(bus.read("pio", 0xc004, 4)).toBe(0xffff_ffff);
    // Decode off: unmapped.
    cfg.write(P.COMMAND, 2, PCI_COMMAND_MEMORY);
    expect(bus.read("pio", 0xd004, 4)).toBe(0xffff_ffff);
    expect(host.barMapping(1 << 3, 0)).toBeNull();
    // A second function whose BAR collides with the first: a conflict, not an exception.
    const other = new EchoFunction("b", 0x1_0000_0000);
    host.attach(other, 2);
    const cfg2 = new PciConfigEcamAccess(bus, 0xe000_0000, 2);
    cfg2.write(P.COMMAND, 2, PCI_COMMAND_MEMORY);
    expect(host.conflicts).toBe(1);
    expect(bus.read("mmio", 0x1_0000_0010, 4)).toBe(0x1000_0010);
    expect(host.functionAt(2 << 3)).toBe(other);
  });

  it("probes BAR sizes like the Linux PCI core, restoring addresses and Command", () => {
    const bus = new Bus();
    const host = new PciHost(bus);
    const fn = new EchoFunction("a", 0x2_0000_0000);
    host.attach(fn, 0);
    const cfg = {
      read: (o: number, s: AccessSize) => host.configRead(0, o, s),
      write: (o: number, s: AccessSize, v: number) => host.configWrite(0, o, s, v),
    };
    cfg.write(P.COMMAND, 2, PCI_COMMAND_MEMORY);
    expect(bus.read("mmio", 0x2_0000_0000, 4)).toBe(0x1000_0000);
    const found = probePciBars(cfg);
    expect(found).toEqual([
      { index: 0, kind: "io", size: 16, prefetchable: false, address: 0 },
      { index: 2, kind: "mem64", size: 0x1000, prefetchable: false, address: 0x2_0000_0000 },
    ]);
    expect(cfg.read(P.COMMAND, 2)).toBe(PCI_COMMAND_MEMORY);
    expect(bus.read("mmio", 0x2_0000_0000, 4)).toBe(0x1000_0000);
  });
});
