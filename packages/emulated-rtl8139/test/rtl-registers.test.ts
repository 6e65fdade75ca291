import {
  Eeprom93C46,
  etherCrc,
  ethernetFcs,
  RTL_9346CR,
  RTL_ANAR,
  RTL_ANER,
  RTL_ANLPAR,
  RTL_BMCR,
  RTL_BMSR,
  RTL_CAPR,
  RTL_CBR,
  RTL_CONFIG0,
  RTL_CONFIG1,
  RTL_CONFIG3,
  RTL_CR,
  RTL_CR_BUFE,
  RTL_CR_RE,
  RTL_CR_RST,
  RTL_CR_TE,
  RTL_CSCR,
  RTL_CSCR_LINK_CHANGE,
  RTL_IDR0,
  RTL_IMR,
  RTL_ISR,
  RTL_ISR_PUN_LINKCHG,
  RTL_ISR_TIMEOUT,
  RTL_MAR0,
  RTL_MPC,
  RTL_MSR,
  RTL_RCR,
  RTL_RERID,
  RTL_TCR,
  RTL_TCTR,
  RTL_TIMERINT,
  RTL_TSAD_SUMMARY,
  RTL_TSD0,
  Rtl8139Driver,
} from "@pvkit/emulated-rtl8139";
import {
  LoopbackBackend,
  PCI_COMMAND_INTX_DISABLE,
  PCI_STATUS_INTERRUPT,
  PciConfigOffset,
  probePciBars,
} from "@pvkit/platform";
import { describe, expect, it } from "vitest";
import { crc32Reference, expectSameBytes, rng, rtlDevice, rtlGuest } from "./harness.js";

const MAC = new Uint8Array([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);

function regs(backend = new LoopbackBackend(), opts: Parameters<typeof rtlDevice>[1] = {}) {
  const d = rtlDevice(backend, { mac: MAC, ...opts });
  const r = (off: number, size: 1 | 2 | 4) => d.bus.read("mmio", d.mmio + off, size);
  const w = (off: number, size: 1 | 2 | 4, v: number) => d.bus.write("mmio", d.mmio + off, size, v);
  const ri = (off: number, size: 1 | 2 | 4) => d.bus.read("pio", d.io + off, size);
  const wi = (off: number, size: 1 | 2 | 4, v: number) => d.bus.write("pio", d.io + off, size, v);
  return { ...d, r, w, ri, wi, backend };
}

describe("PCI function", () => {
  it("is 10ec:8139 revision 0x10, Ethernet class, INTA, BAR0 I/O 256 and BAR1 MMIO 256", () => {
    const d = regs();
    expect(d.cfg.read(PciConfigOffset.VENDOR_ID, 2)).toBe(0x10ec);
    expect(d.cfg.read(PciConfigOffset.DEVICE_ID, 2)).toBe(0x8139);
    expect(d.cfg.read(PciConfigOffset.REVISION_ID, 1)).toBe(0x10);
    expect(d.cfg.read(PciConfigOffset.CLASS, 1)).toBe(0x02);
    expect(d.cfg.read(PciConfigOffset.CLASS_DEVICE, 1)).toBe(0x00);
    expect(d.cfg.read(PciConfigOffset.INTERRUPT_PIN, 1)).toBe(1);
    const bars = probePciBars(d.cfg);
    expect(bars.map((b) => [b.index, b.kind, b.size])).toEqual([
      [0, "io", 256],
      [1, "mem32", 256],
    ]);
    expect(d.r(RTL_RERID, 1)).toBe(0x10);
  });

  it("BAR0 and BAR1 reach the same register file; every access is an exit", () => {
    const d = regs();
    d.bus.resetStats();
    d.w(RTL_MAR0, 4, 0xdeadbeef);
    expect(d.ri(RTL_MAR0, 4)).toBe(0xdeadbeef);
    d.wi(RTL_MAR0 + 4, 2, 0x1234);
    expect(d.r(RTL_MAR0 + 4, 2)).toBe(0x1234);
    const s = d.bus.stats();
    expect(s.byDevice["rtl8139.bar0"]!.exits).toBe(2);
    expect(s.byDevice["rtl8139.bar1"]!.exits).toBe(2);
    expect(s.total).toBe(4);
  });
});

describe("register file", () => {
  it("has the reset values of QEMU's rtl8139_reset with a revision-0x10 chip", () => {
    const d = regs();
    for (let i = 0; i < 6; i++) expect(d.r(RTL_IDR0 + i, 1)).toBe(MAC[i]);
    expect(d.r(RTL_IDR0 + 4, 4)).toBe(MAC[4]! | (MAC[5]! << 8)); // 0x06–0x07 read 0
    for (let i = 0; i < 4; i++) expect(d.r(RTL_TSD0 + 4 * i, 4)).toBe(0x2000); // OWN
    expect(d.r(RTL_TSAD_SUMMARY, 2)).toBe(0x000f);
    expect(d.r(RTL_TCR, 4)).toBe(0x7400_0000); // RTL-8139C HW_REVID
    expect(d.r(RTL_TCR + 3, 1)).toBe(0x74);
    expect(d.r(RTL_RCR, 4)).toBe(0);
    expect(d.r(RTL_CR, 1)).toBe(RTL_CR_BUFE);
    expect(d.r(RTL_CAPR, 2)).toBe(0xfff0);
    expect(d.r(RTL_IMR, 2)).toBe(0);
    expect(d.r(RTL_ISR, 2)).toBe(0);
    expect(d.r(RTL_CONFIG0, 1)).toBe(0x00);
    expect(d.r(RTL_CONFIG1, 1)).toBe(0x0c);
    expect(d.r(RTL_CONFIG3, 1)).toBe(0x01);
    expect(d.r(RTL_BMCR, 2)).toBe(0x1000);
    expect(d.r(RTL_BMSR, 2)).toBe(0x7809 | 0x20 | 0x04);
    expect(d.r(RTL_ANAR, 2)).toBe(0x05e1);
    expect(d.r(RTL_ANLPAR, 2)).toBe(0x05e1);
    expect(d.r(RTL_ANER, 2)).toBe(0x0001);
    expect(d.r(RTL_MSR, 1)).toBe(0xd0);
    expect(d.r(RTL_9346CR, 1)).toBe(0);
    expect(d.r(0x80, 4)).toBe(0); // reserved
  });

  it("applies the write masks: IMR/ISR 0x1e00, RCR 0xf0fc0040, TCR only with TE, read-only BMSR", () => {
    const d = regs();
    d.w(RTL_IMR, 2, 0xffff);
    expect(d.r(RTL_IMR, 2)).toBe(0xffff & ~0x1e00);
    d.w(RTL_RCR, 4, 0xffff_ffff);
    expect(d.r(RTL_RCR, 4)).toBe((0xffff_ffff & ~0xf0fc_0040) >>> 0);
    d.w(RTL_TCR, 4, 0x0306_0680);
    expect(d.r(RTL_TCR, 4)).toBe(0x7400_0000); // TE off: ignored
    d.w(RTL_CR, 1, RTL_CR_TE);
    d.w(RTL_TCR, 4, 0xffff_ffff);
    expect(d.r(RTL_TCR, 4)).toBe((0x7400_0000 | 0x0307_07f0) >>> 0); // HW rev kept, CLRABT not stored
    const bmsr = d.r(RTL_BMSR, 2);
    d.w(RTL_BMSR, 2, 0);
    expect(d.r(RTL_BMSR, 2)).toBe(bmsr);
    d.w(RTL_CBR, 2, 0x1234);
    expect(d.r(RTL_CBR, 2)).toBe(0);
    expect(d.nic.stats.ignoredWrites).toBeGreaterThanOrEqual(3);
  });

  it("ISR is write-1-to-clear and the INTx line is ISR & IMR ≠ 0 (and honours INTX_DISABLE)", () => {
    const d = regs();
    d.nic.setLinkUp(false); // raises PUN/LinkChg
    expect(d.r(RTL_ISR, 2)).toBe(RTL_ISR_PUN_LINKCHG);
    expect(d.irq.level).toBe(false); // masked
    d.w(RTL_IMR, 2, RTL_ISR_PUN_LINKCHG);
    expect(d.irq.level).toBe(true);
    expect(d.cfg.read(PciConfigOffset.STATUS, 2) & PCI_STATUS_INTERRUPT).toBe(PCI_STATUS_INTERRUPT);
    const cmd = d.cfg.read(PciConfigOffset.COMMAND, 2);
    d.cfg.write(PciConfigOffset.COMMAND, 2, cmd | PCI_COMMAND_INTX_DISABLE);
    expect(d.irq.level).toBe(false);
    d.cfg.write(PciConfigOffset.COMMAND, 2, cmd);
    expect(d.irq.level).toBe(true);
    d.w(RTL_ISR, 2, 0x0001); // a different bit: nothing cleared
    expect(d.irq.level).toBe(true);
    d.w(RTL_ISR + 0, 1, RTL_ISR_PUN_LINKCHG); // byte write clears the low byte's bit
    expect(d.r(RTL_ISR, 2)).toBe(0);
    expect(d.irq.level).toBe(false);
  });

  it("CR.RST resets the chip and reads back clear; MAC reloaded from the EEPROM", () => {
    const d = regs();
    d.w(RTL_IDR0, 4, 0x04030201);
    expect(d.r(RTL_IDR0, 1)).toBe(1);
    d.w(RTL_IMR, 2, 0xffff);
    d.w(RTL_CR, 1, RTL_CR_RE | RTL_CR_TE);
    d.w(RTL_TSD0, 4, 0x2000 | 100);
    d.w(RTL_CR, 1, RTL_CR_RST);
    expect(d.r(RTL_CR, 1) & RTL_CR_RST).toBe(0);
    expect(d.r(RTL_IMR, 2)).toBe(0);
    expect(d.r(RTL_IDR0, 1)).toBe(MAC[0]);
    expect(d.r(RTL_TSD0, 4)).toBe(0x2000);
    expect(d.nic.stats.resets).toBe(1);
  });

  it("CONFIG registers are writable only with 9346CR = config-write enable", () => {
    const d = regs();
    d.w(RTL_CONFIG3, 1, 0x70);
    expect(d.r(RTL_CONFIG3, 1)).toBe(0x01);
    d.w(RTL_9346CR, 1, 0xc0);
    d.w(RTL_CONFIG3, 1, 0xff);
    expect(d.r(RTL_CONFIG3, 1)).toBe(0x71); // only 0x70 writable
    d.w(RTL_CONFIG1, 1, 0x00);
    expect(d.r(RTL_CONFIG1, 1)).toBe(0x0c); // IOMAP/MEMMAP read-only
    d.w(RTL_9346CR, 1, 0x00);
    d.w(RTL_CONFIG3, 1, 0x01);
    expect(d.r(RTL_CONFIG3, 1)).toBe(0x71);
  });

  it("MPC counts missed frames (24 bits) and any write clears it", () => {
    const d = regs();
    d.w(RTL_MPC, 4, 0x1234);
    expect(d.r(RTL_MPC, 4)).toBe(0);
  });

  it("TCTR counts at 33 MHz; TimerInt raises PCSTimeout once when TCTR passes it; a write restarts TCTR", () => {
    let t = 1000;
    const d = regs(new LoopbackBackend(), { now: () => t });
    d.w(RTL_TCTR, 4, 0);
    t += 1; // 1 ms
    expect(d.r(RTL_TCTR, 4)).toBe(33_000);
    d.w(RTL_IMR, 2, RTL_ISR_TIMEOUT);
    d.w(RTL_TIMERINT, 4, 66_000);
    t += 0.5;
    d.nic.tick();
    expect(d.r(RTL_ISR, 2) & RTL_ISR_TIMEOUT).toBe(0);
    t += 0.6; // TCTR = 69 300
    expect(d.r(RTL_ISR, 2) & RTL_ISR_TIMEOUT).toBe(RTL_ISR_TIMEOUT);
    expect(d.irq.level).toBe(true);
    d.w(RTL_ISR, 2, RTL_ISR_TIMEOUT);
    t += 1;
    d.nic.tick();
    expect(d.r(RTL_ISR, 2) & RTL_ISR_TIMEOUT).toBe(0); // once per crossing
    d.w(RTL_TCTR, 4, 0);
    expect(d.r(RTL_TCTR, 4)).toBe(0);
    t += 3;
    d.nic.tick();
    expect(d.nic.stats.timerInterrupts).toBe(2);
  });

  it("link changes: BMSR bit 2, MSR LINKB, ISR PUN/LinkChg, CSCR link-change bit (cleared by reading)", () => {
    const backend = new LoopbackBackend();
    const d = regs(backend);
    backend.setLink(false);
    expect(d.r(RTL_BMSR, 2) & 0x04).toBe(0);
    expect(d.r(RTL_MSR, 1) & 0x04).toBe(0x04);
    expect(d.r(RTL_ISR, 2) & RTL_ISR_PUN_LINKCHG).toBe(RTL_ISR_PUN_LINKCHG);
    expect(d.r(RTL_CSCR, 2) & RTL_CSCR_LINK_CHANGE).toBe(RTL_CSCR_LINK_CHANGE);
    expect(d.r(RTL_CSCR, 2) & RTL_CSCR_LINK_CHANGE).toBe(0);
    backend.setLink(true);
    expect(d.r(RTL_BMSR, 2) & 0x04).toBe(0x04);
    expect(d.r(RTL_MSR, 1) & 0x04).toBe(0);
  });

  it("the driver sees link changes through its interrupt handler", async () => {
    const backend = new LoopbackBackend({ mode: "sink" });
    const g = rtlGuest(backend);
    const events: boolean[] = [];
    g.driver.on("link", (up) => events.push(up));
    backend.setLink(false);
    await new Promise((r) => setImmediate(r));
    backend.setLink(true);
    await new Promise((r) => setImmediate(r));
    expect(events).toEqual([false, true]);
    expect(g.driver.stats.linkChanges).toBe(2);
    expect(g.driver.linkUp).toBe(true);
  });

  it("CAPR is off by 16: a write of v reads back v, the internal pointer is v + 16", () => {
    const d = regs();
    d.w(RTL_CAPR, 2, 0x0ff0);
    expect(d.r(RTL_CAPR, 2)).toBe(0x0ff0);
    expect(d.nic.rxRing.read).toBe(0x1000);
    expect(d.r(RTL_CR, 1) & RTL_CR_BUFE).toBe(0); // CBR 0 ≠ read pointer
    d.w(RTL_CAPR, 2, 0xfff0);
    expect(d.nic.rxRing.read).toBe(0);
    expect(d.r(RTL_CR, 1) & RTL_CR_BUFE).toBe(RTL_CR_BUFE);
  });
});

describe("93C46 EEPROM", () => {
  it("the 8139too read sequence of the driver returns the configured MAC (6-bit addressing, ~131 exits a word)", () => {
    const g = rtlGuest(new LoopbackBackend(), { mac: MAC });
    expectSameBytes(g.driver.mac, MAC);
    expect(g.driver.eepromAddressBits).toBe(6);
    g.bus.resetStats();
    expect(g.driver.readEeprom(1, 6)).toBe(0x10ec);
    expect(g.bus.exits).toBe(131);
    expect(g.driver.readEeprom(2, 6)).toBe(0x8139);
    expect(g.driver.readEeprom(0, 6)).toBe(0x8129);
    // The 8-bit probe must not see the signature (the two extra address clocks shift it).
    expect(g.driver.readEeprom(0, 8)).not.toBe(0x8129);
    expect(g.nic.eeprom.ignoredCommands).toBe(0);
  });

  it("a hand-rolled bit-bang (different from the driver's) reads every word; write commands change nothing", () => {
    const e = new Eeprom93C46();
    const r = rng(7);
    for (let i = 0; i < 64; i++) e.words[i] = r() & 0xffff;
    const before = e.words.slice();
    const clock = (di: number) => {
      e.drive(true, false, di === 1);
      e.drive(true, true, di === 1);
    };
    const cmd = (op: number, addr: number) => {
      e.drive(false, false, false);
      e.drive(true, false, false);
      clock(1);
      clock((op >> 1) & 1);
      clock(op & 1);
      for (let b = 5; b >= 0; b--) clock((addr >> b) & 1);
    };
    for (let a = 0; a < 64; a++) {
      cmd(0b10, a);
      expect(e.dataOut).toBe(false); // dummy zero
      let v = 0;
      for (let i = 0; i < 16; i++) {
        clock(0);
        v = (v << 1) | (e.dataOut ? 1 : 0);
      }
      expect(v).toBe(before[a]);
    }
    cmd(0b00, 0b110000); // EWEN
    cmd(0b01, 5); // WRITE
    for (let i = 0; i < 16; i++) clock(1);
    cmd(0b11, 6); // ERASE
    e.drive(false, false, false);
    expect(e.ignoredCommands).toBe(3);
    expectSameBytes(new Uint8Array(e.words.buffer), new Uint8Array(before.buffer));
  });

  it("9346CR auto-load reloads IDR from the EEPROM and resets", () => {
    const d = regs();
    d.w(RTL_IDR0, 1, 0xee);
    d.w(RTL_9346CR, 1, 0x40);
    expect(d.r(RTL_IDR0, 1)).toBe(MAC[0]);
    expect(d.r(RTL_9346CR, 1)).toBe(0);
  });
});

describe("CRCs", () => {
  it("the stored FCS is the IEEE CRC-32 and the hash CRC is its MSB-first twin", () => {
    const r = rng(99);
    for (let n = 0; n < 200; n++) {
      const b = new Uint8Array(1 + (r() % 200));
      for (let i = 0; i < b.length; i++) b[i] = r() & 0xff;
      expect(ethernetFcs(b)).toBe(crc32Reference(b));
      const a = b.length >= 6 ? b.subarray(0, 6) : new Uint8Array(6);
      // ether_crc = bit-reversed, un-inverted reflected CRC-32.
      let x = ~crc32Reference(a) >>> 0;
      let rev = 0;
      for (let i = 0; i < 32; i++) {
        rev = ((rev << 1) | (x & 1)) >>> 0;
        x >>>= 1;
      }
      expect(etherCrc(a)).toBe(rev);
    }
  });
});

describe("driver bring-up", () => {
  it("refuses a revision ≥ 0x20 chip like 8139too ('use 8139cp') and binds to ours", () => {
    const d = regs();
    // Rewrite the revision as a C+ chip would report it.
    d.nic.config.setU8(PciConfigOffset.REVISION_ID, 0x20);
    const err = Rtl8139Driver.open({
      bus: d.bus,
      memory: d.memory,
      allocator: d.allocator,
      config: d.cfg,
    });
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain("8139cp");
    d.nic.config.setU8(PciConfigOffset.REVISION_ID, 0x10);
    const ok = Rtl8139Driver.open({
      bus: d.bus,
      memory: d.memory,
      allocator: d.allocator,
      config: d.cfg,
    });
    expect(ok).toBeInstanceOf(Rtl8139Driver);
    const drv = ok as Rtl8139Driver;
    expect(drv.chipVersion).toBe(0x7400_0000);
    expect(d.r(RTL_CR, 1) & (RTL_CR_RE | RTL_CR_TE)).toBe(RTL_CR_RE | RTL_CR_TE);
    expect(d.r(RTL_IMR, 2)).toBe(0xc07f);
    expect(d.r(0x30, 4)).toBe(drv.ringBase);
    expect(d.r(RTL_RCR, 4)).toBe((0x1000 | 0x80 | (7 << 13) | (7 << 8) | 0x0a) >>> 0);
    expect(d.r(RTL_TCR, 4) & 0x0307_07f0).toBe(0x0300_0680);
    for (let i = 0; i < 4; i++) expect(d.r(0x20 + 4 * i, 4)).toBe(drv.txBuffers[i]);
  });
});
