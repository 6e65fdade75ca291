/**
 * A hostile guest against the RTL8139, one test per CVE class of
 * `shared/reference/rtl8139.md`: nothing throws, nothing hangs, nothing outside guest
 * memory (or outside the programmed ring) changes, errors are reported the way the chip
 * reports them (TUN, RXOVW, SERR) and counted.
 */

import {
  RTL_CPCR,
  RTL_CR,
  RTL_CR_RE,
  RTL_CR_TE,
  RTL_IMR,
  RTL_ISR,
  RTL_ISR_ROK,
  RTL_ISR_RXOVW,
  RTL_ISR_SERR,
  RTL_ISR_TER,
  RTL_ISR_TOK,
  RTL_MPC,
  RTL_RBSTART,
  RTL_RCR,
  RTL_RCR_AAP,
  RTL_RCR_APM,
  RTL_RCR_WRAP,
  RTL_TCR,
  RTL_TCR_LBK_LOOPBACK,
  RTL_TPPOLL,
  RTL_TSAD0,
  RTL_TSD_OWN,
  RTL_TSD_TOK,
  RTL_TSD_TUN,
  RTL_TSD0,
} from "@pvkit/emulated-rtl8139";
import { LoopbackBackend } from "@pvkit/platform";
import { checkCanary, fillCanary, type MemoryRange } from "@pvkit/virtio-core/testing";
import { describe, expect, it } from "vitest";
import { frameOf, rng, rtlDevice, rtlGuest, settle } from "./harness.js";

const MAC = new Uint8Array([0x02, 0, 0, 0, 0x81, 0x39]);
const PEER = new Uint8Array([0x02, 0, 0, 0, 0, 0x01]);
const RING = 0x2_0000;
const TXBUF = 0x1_0000;
const MEM = 1 << 20;

function hostile(rcr = RTL_RCR_APM | RTL_RCR_WRAP) {
  const backend = new LoopbackBackend({ mode: "sink" });
  const d = rtlDevice(backend, { mac: MAC, memoryBytes: MEM });
  const r = (off: number, size: 1 | 2 | 4) => d.bus.read("mmio", d.mmio + off, size);
  const w = (off: number, size: 1 | 2 | 4, v: number) => d.bus.write("mmio", d.mmio + off, size, v);
  w(RTL_RBSTART, 4, RING);
  w(RTL_CR, 1, RTL_CR_RE | RTL_CR_TE);
  w(RTL_RCR, 4, rcr);
  w(RTL_IMR, 2, 0xffff);
  // Everything but the ring (with its pad) and the TX buffer is a canary.
  const keep: MemoryRange[] = [
    { addr: RING, len: 8192 + 1536 },
    { addr: TXBUF, len: 0x2000 },
  ];
  fillCanary(d.memory, keep);
  const intact = () => expect(checkCanary(d.memory, keep)).toEqual([]);
  return { ...d, r, w, backend, keep, intact };
}

describe("hostile guest", () => {
  it("TSAD outside guest memory, or so that TSAD + size passes its end: TUN + TER, nothing sent or read", () => {
    const d = hostile();
    const bad = [MEM, MEM - 100, 0xffff_fff0, 0xffff_ffff, 0xfe00_0000];
    let k = 0;
    for (const addr of bad) {
      const slot = k++ % 4;
      d.w(RTL_TSAD0 + 4 * slot, 4, addr);
      d.w(RTL_TSD0 + 4 * slot, 4, 200);
      const tsd = d.r(RTL_TSD0 + 4 * slot, 4);
      expect(tsd & (RTL_TSD_OWN | RTL_TSD_TUN | RTL_TSD_TOK)).toBe(RTL_TSD_OWN | RTL_TSD_TUN);
      expect(d.r(RTL_ISR, 2) & RTL_ISR_TER).toBe(RTL_ISR_TER);
      d.w(RTL_ISR, 2, 0xffff);
    }
    expect(d.nic.stats.drops.txDmaError).toBe(bad.length);
    expect(d.backend.sent.length).toBe(0);
    d.intact();
    // The next descriptor with a good address goes out.
    const slot = k % 4;
    d.w(RTL_TSAD0 + 4 * slot, 4, TXBUF);
    d.w(RTL_TSD0 + 4 * slot, 4, 64);
    expect(d.backend.sent.length).toBe(1);
    expect(d.r(RTL_ISR, 2) & RTL_ISR_TOK).toBe(RTL_ISR_TOK);
  });

  it("TSD sizes of 0 and above 1792 (up to 0x1fff): TUN + TER, counted", () => {
    const d = hostile();
    for (let i = 0; i < 4; i++) d.w(RTL_TSAD0 + 4 * i, 4, TXBUF);
    for (const size of [0, 1793, 0x1fff, 4096]) {
      const slot = d.nic.stats.drops.txBadSize % 4;
      d.w(RTL_TSD0 + 4 * slot, 4, 0xffff_0000 | size); // status bits in the write are ignored
      expect(d.r(RTL_TSD0 + 4 * slot, 4) & RTL_TSD_TUN).toBe(RTL_TSD_TUN);
    }
    expect(d.nic.stats.drops.txBadSize).toBe(4);
    expect(d.backend.sent.length).toBe(0);
    d.intact();
  });

  it("RBSTART outside guest memory, or a ring that runs past its end: frames dropped with SERR, nothing written", () => {
    for (const rb of [MEM, MEM - 4096, MEM - 100, 0xffff_fff0, 0xfe00_0000]) {
      const d = hostile();
      d.w(RTL_RBSTART, 4, rb);
      // The part of the programmed ring that is inside RAM may be written; nothing else.
      const keep = [...d.keep, { addr: rb, len: 8192 + 1536 }];
      fillCanary(d.memory, keep);
      const rand = rng(rb);
      for (let k = 0; k < 20; k++) d.backend.inject(frameOf(PEER, MAC, 1514, k, rand));
      expect(d.r(RTL_ISR, 2) & RTL_ISR_SERR).toBe(RTL_ISR_SERR);
      expect(d.nic.stats.drops.rxDmaError).toBeGreaterThan(0);
      expect(checkCanary(d.memory, keep)).toEqual([]);
      // Frames that fit before the end were stored; nothing was written past it.
      expect(d.nic.stats.rxFrames + d.nic.stats.drops.rxDmaError).toBe(20);
    }
  });

  it("CAPR garbage: random read pointers never make the chip write outside ring + pad", () => {
    for (const wrap of [true, false]) {
      const d = hostile(RTL_RCR_AAP | (wrap ? RTL_RCR_WRAP : 0));
      const rand = rng(wrap ? 1 : 2);
      for (let k = 0; k < 3000; k++) {
        d.w(0x38, 2, rand() & 0xffff);
        if (k % 7 === 0) d.w(0x38, 1, rand() & 0xff);
        d.backend.inject(frameOf(PEER, MAC, 60 + (rand() % 1459), k, rand));
      }
      expect(d.nic.stats.rxFrames).toBeGreaterThan(100);
      expect(d.nic.stats.drops.rxOverflow).toBeGreaterThan(0);
      expect(d.r(RTL_MPC, 4)).toBe(d.nic.stats.drops.rxOverflow);
      d.intact();
    }
  });

  it("oversized, runt and empty frames from the wire (CVE-2018-17958 class): dropped and counted", () => {
    const d = hostile(RTL_RCR_AAP | RTL_RCR_WRAP);
    const sizes = [0, 1, 13, 1519, 1600, 9000, 65535, 65536, 200_000];
    for (const s of sizes) d.backend.inject(new Uint8Array(s).fill(0x11));
    expect(d.nic.stats.drops.rxRunt).toBe(3);
    expect(d.nic.stats.drops.rxOversize).toBe(6);
    expect(d.nic.stats.rxFrames).toBe(0);
    d.intact();
  });

  it("loopback storm (CVE-2021-3416 class): a guest that re-arms every TSD from a synchronous IRQ handler is bounded", () => {
    const d = hostile(RTL_RCR_AAP | RTL_RCR_WRAP);
    d.w(RTL_TCR, 4, RTL_TCR_LBK_LOOPBACK);
    for (let i = 0; i < 4; i++) d.w(RTL_TSAD0 + 4 * i, 4, TXBUF);
    // The frame in the TX buffer is addressed to the chip itself.
    d.memory.write(TXBUF, frameOf(PEER, MAC, 100, 0, rng(3)));
    let handlerRuns = 0;
    let depth = 0;
    let maxDepth = 0;
    d.irq.onChange((high) => {
      if (!high) return;
      depth++;
      maxDepth = Math.max(maxDepth, depth);
      handlerRuns++;
      // Acknowledge everything and re-arm all four descriptors, synchronously.
      d.w(RTL_ISR, 2, 0xffff);
      for (let i = 0; i < 4; i++) d.w(RTL_TSD0 + 4 * i, 4, 100);
      // Consume the ring so loopback never runs out of room.
      d.w(0x38, 2, (d.r(0x3a, 2) - 16) & 0xffff);
      depth--;
    });
    const t0 = performance.now();
    d.w(RTL_TSD0, 4, 100);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(maxDepth).toBeLessThanOrEqual(2);
    expect(d.nic.stats.loopbackFrames).toBeGreaterThan(0);
    expect(d.nic.stats.loopbackFrames).toBeLessThanOrEqual(2 * 64);
    expect(d.nic.stats.txReentries).toBeGreaterThan(0);
    expect(d.nic.stats.txBudgetExhausted).toBeGreaterThan(0);
    expect(d.backend.sent.length).toBe(0); // loopback never reaches the wire
    expect(handlerRuns).toBeGreaterThan(0);
    d.intact();
    // Each further exit does a bounded amount of the remaining work.
    const before = d.nic.stats.loopbackFrames;
    d.r(RTL_ISR, 2);
    expect(d.nic.stats.loopbackFrames - before).toBeLessThanOrEqual(2 * 64);
  });

  it("loopback into a ring that overlaps the TX buffer copies first: the sent bytes are the ones that were armed", () => {
    const d = hostile(RTL_RCR_AAP | RTL_RCR_WRAP);
    d.w(RTL_RBSTART, 4, TXBUF);
    d.w(RTL_TCR, 4, RTL_TCR_LBK_LOOPBACK);
    const f = frameOf(PEER, MAC, 300, 5, rng(4));
    d.memory.write(TXBUF, f);
    d.w(RTL_TSAD0, 4, TXBUF);
    d.w(RTL_TSD0, 4, 300);
    expect(d.nic.stats.rxFrames).toBe(1);
    expect(d.memory.readU8(TXBUF + 4)).toBe(f[0]);
    expect(d.memory.readU8(TXBUF + 4 + 299)).toBe(f[299]);
  });

  it("a guest that never acknowledges interrupts: one rising edge, the chip keeps counting, nothing breaks", () => {
    const d = hostile(RTL_RCR_APM | RTL_RCR_WRAP);
    d.irq.resetStats();
    const rand = rng(5);
    for (let k = 0; k < 10_000; k++) d.backend.inject(frameOf(PEER, MAC, 60 + (k % 1400), k, rand));
    expect(d.irq.level).toBe(true);
    expect(d.irq.raises).toBe(1);
    expect(d.r(RTL_ISR, 2) & (RTL_ISR_ROK | RTL_ISR_RXOVW)).toBe(RTL_ISR_ROK | RTL_ISR_RXOVW);
    expect(d.nic.stats.rxFrames + d.nic.stats.drops.rxOverflow).toBe(10_000);
    expect(d.r(RTL_MPC, 4)).toBe(d.nic.stats.drops.rxOverflow);
    d.intact();
  });

  it("C+ registers (CVE-2015-5165 / CVE-2016-8910 live in the C+ path): ignored in normal mode, no DMA", () => {
    const d = hostile();
    // A would-be C+ TX ring of descriptors all OWN, pointing at everything.
    for (let i = 0; i < 64; i++) {
      d.memory.writeU32(TXBUF + 16 * i, 0x8000_0000 | 0x2000_0000 | 0xffff);
      d.memory.writeU32(TXBUF + 16 * i + 8, 0);
    }
    d.w(RTL_TSAD0, 4, TXBUF);
    d.w(RTL_TSAD0 + 4, 4, 0);
    d.w(RTL_CPCR, 2, 0x0003); // C+ TX/RX enable
    for (let i = 0; i < 10; i++) d.w(RTL_TPPOLL, 1, 0x40);
    expect(d.backend.sent.length).toBe(0);
    expect(d.nic.stats.ignoredWrites).toBeGreaterThanOrEqual(11);
    d.intact();
  });

  it("odd widths and offsets across register boundaries never throw", () => {
    const d = hostile();
    const rand = rng(6);
    for (let k = 0; k < 20_000; k++) {
      const off = rand() & 0xff;
      const size = ([1, 2, 4] as const)[rand() % 3]!;
      if (off === RTL_CR || (off < RTL_CR && off + size > RTL_CR)) continue; // keep running
      if (rand() & 1) d.w(off, size, rand());
      else d.r(off, size);
    }
    expect(d.bus.stats().handlerFaults).toBe(0);
    d.intact();
  });

  it("the driver survives a device that reports garbage headers (it resets its receiver, like 8139too)", async () => {
    const backend = new LoopbackBackend({ mode: "sink" });
    const g = rtlGuest(backend, { mac: MAC, driver: { ringSize: 8192 } });
    backend.inject(frameOf(PEER, MAC, 100, 1, rng(1)));
    // Corrupt the header in guest memory before the poll runs.
    g.memory.writeU32(g.driver.ringBase, 0xfff7_0000);
    await settle();
    expect(g.driver.stats.rxErrors).toBe(1);
    expect(g.received.length).toBe(0);
    backend.inject(frameOf(PEER, MAC, 100, 2, rng(2)));
    await settle();
    expect(g.received.length).toBe(1);
  });
});
