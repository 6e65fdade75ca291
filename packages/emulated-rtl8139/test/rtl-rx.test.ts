import {
  multicastHashBit,
  RTL_CAPR,
  RTL_CR,
  RTL_CR_BUFE,
  RTL_CR_RE,
  RTL_CR_TE,
  RTL_IDR0,
  RTL_IMR,
  RTL_ISR,
  RTL_ISR_ROK,
  RTL_ISR_RXOVW,
  RTL_MAR0,
  RTL_MPC,
  RTL_RBSTART,
  RTL_RCR,
  RTL_RCR_AAP,
  RTL_RCR_AB,
  RTL_RCR_AM,
  RTL_RCR_APM,
  RTL_RCR_WRAP,
} from "@pvkit/emulated-rtl8139";
import { LoopbackBackend } from "@pvkit/platform";
import { describe, expect, it } from "vitest";
import {
  crc32Reference,
  expectSameBytes,
  frameOf,
  rng,
  rtlDevice,
  rtlGuest,
  seqOf,
  settle,
} from "./harness.js";

const MAC = new Uint8Array([0x02, 0, 0, 0, 0x81, 0x39]);
const PEER = new Uint8Array([0x02, 0, 0, 0, 0, 0x01]);
const RING = 0x10000;

/** A chip programmed by hand: ring at RING, RCR as given, all interrupts on. */
function rawNic(rcr: number, opts: { rxPending?: number } = {}) {
  const backend = new LoopbackBackend({ mode: "sink" });
  const d = rtlDevice(backend, { mac: MAC, ...opts });
  const r = (off: number, size: 1 | 2 | 4) => d.bus.read("mmio", d.mmio + off, size);
  const w = (off: number, size: 1 | 2 | 4, v: number) => d.bus.write("mmio", d.mmio + off, size, v);
  w(RTL_RBSTART, 4, RING);
  w(RTL_CR, 1, RTL_CR_RE | RTL_CR_TE);
  w(RTL_RCR, 4, rcr);
  w(RTL_IMR, 2, 0xffff);
  const size = 8192 << ((rcr >> 11) & 3);
  return { ...d, r, w, backend, size };
}

function entryAt(d: ReturnType<typeof rawNic>, off: number) {
  const status = d.memory.readU16(RING + off) as number;
  const len = d.memory.readU16(RING + off + 2) as number;
  return { status, len };
}

describe("receive into the ring", () => {
  it("writes header (status, length incl. CRC), frame, CRC-32, then aligns CBR to 4", () => {
    const d = rawNic(RTL_RCR_APM | RTL_RCR_AB);
    const f = frameOf(PEER, MAC, 101, 1, rng(1));
    d.backend.inject(f);
    const e = entryAt(d, 0);
    expect(e.status).toBe(0x4001); // PAM | ROK
    expect(e.len).toBe(105);
    expectSameBytes(d.memory.slice(RING + 4, 101) as Uint8Array, f);
    expect(d.memory.readU32(RING + 4 + 101)).toBe(crc32Reference(f));
    expect(d.r(0x3a, 2)).toBe((4 + 105 + 3) & ~3);
    expect(d.r(RTL_ISR, 2) & RTL_ISR_ROK).toBe(RTL_ISR_ROK);
    expect(d.irq.level).toBe(true);
    expect(d.r(RTL_CR, 1) & RTL_CR_BUFE).toBe(0);
    // The driver's CAPR update (cur_rx − 16) empties the ring.
    d.w(RTL_CAPR, 2, (((4 + 105 + 3) & ~3) - 16) & 0xffff);
    expect(d.r(RTL_CR, 1) & RTL_CR_BUFE).toBe(RTL_CR_BUFE);
  });

  it("pads runts to 60 bytes (CRC over the padded frame)", () => {
    const d = rawNic(RTL_RCR_APM);
    const f = frameOf(PEER, MAC, 20, 0, rng(2));
    d.backend.inject(f);
    expect(entryAt(d, 0).len).toBe(64);
    const padded = new Uint8Array(60);
    padded.set(f);
    expectSameBytes(d.memory.slice(RING + 4, 60) as Uint8Array, padded);
    expect(d.memory.readU32(RING + 64)).toBe(crc32Reference(padded));
  });

  it.each([
    [true, "WRAP: written linearly past the end into the pad"],
    [false, "no WRAP: split, continued at the ring start"],
  ])("wraps at the end of an 8K ring (%s)", (wrap, _label) => {
    const d = rawNic(RTL_RCR_APM | (wrap ? RTL_RCR_WRAP : 0));
    const rand = rng(3);
    // Fill to near the end, consuming as a driver would.
    let cur = 0;
    let k = 0;
    while (cur < 8192 - 1600) {
      d.backend.inject(frameOf(PEER, MAC, 1000, k++, rand));
      cur = (cur + 4 + 1004 + 3) & ~3;
      d.w(RTL_CAPR, 2, (cur - 16) & 0xffff);
    }
    d.memory.fill(RING, 64, 0xcc);
    const f = frameOf(PEER, MAC, 1500, 77, rand);
    d.backend.inject(f);
    const total = 4 + 1500 + 4;
    const first = 8192 - cur;
    expect(first).toBeLessThan(total);
    const crc = new Uint8Array(4);
    new DataView(crc.buffer).setUint32(0, crc32Reference(f), true);
    const entry = new Uint8Array(total);
    entry.set(f, 4);
    entry.set(crc, 4 + 1500);
    if (wrap) {
      expectSameBytes(d.memory.slice(RING + cur + 4, 1504) as Uint8Array, entry.subarray(4));
      expect(d.memory.readU8(RING)).toBe(0xcc); // the start was not written
    } else {
      expectSameBytes(
        d.memory.slice(RING + cur + 4, first - 4) as Uint8Array,
        entry.subarray(4, first),
      );
      expectSameBytes(d.memory.slice(RING, total - first) as Uint8Array, entry.subarray(first));
      expect(d.memory.readU8(RING + 8192)).not.toBe(0xcc);
    }
    expect(d.r(0x3a, 2)).toBe(((cur + total + 3) & ~3) % 8192);
  });

  it("overflow: RXOVW, MPC + 1, frame dropped and counted; nothing overwritten", () => {
    const d = rawNic(RTL_RCR_APM | RTL_RCR_WRAP);
    const rand = rng(4);
    let stored = 0;
    for (let k = 0; k < 20; k++) d.backend.inject(frameOf(PEER, MAC, 1000, k, rand));
    stored = d.nic.stats.rxFrames;
    // 1008-byte entries: the 8th still fits (1008 + 8 < 8192 − 7056), the 9th does not
    // (QEMU's rule: never let CBR catch up with the read pointer).
    expect(stored).toBe(8);
    const snapshot = (d.memory.slice(RING, 8192) as Uint8Array).slice();
    expect(d.r(RTL_ISR, 2) & RTL_ISR_RXOVW).toBe(RTL_ISR_RXOVW);
    expect(d.r(RTL_MPC, 4)).toBe(12);
    expect(d.nic.stats.drops.rxOverflow).toBe(12);
    d.backend.inject(frameOf(PEER, MAC, 200, 99, rand)); // 208 ≥ 128 bytes left
    expectSameBytes(d.memory.slice(RING, 8192) as Uint8Array, snapshot);
    // Consuming one entry makes room again.
    d.w(RTL_CAPR, 2, 1008 - 16);
    d.backend.inject(frameOf(PEER, MAC, 60, 100, rand));
    expect(d.nic.stats.rxFrames).toBe(9);
    expect(d.r(RTL_MPC, 4)).toBe(13);
  });

  it("with rxPending, a full ring holds frames and delivers them on the CAPR write", () => {
    const d = rawNic(RTL_RCR_APM | RTL_RCR_WRAP, { rxPending: 4 });
    const rand = rng(5);
    for (let k = 0; k < 13; k++) d.backend.inject(frameOf(PEER, MAC, 1000, k, rand));
    expect(d.nic.stats.rxFrames).toBe(8);
    expect(d.nic.pendingFrames).toBe(4);
    expect(d.nic.stats.drops.rxOverflow).toBe(1);
    d.w(RTL_CAPR, 2, 2 * 1008 - 16);
    expect(d.nic.stats.rxFrames).toBe(10);
    expect(d.nic.pendingFrames).toBe(2);
    // In order: the frames that waited are seq 8 and 9, stored after seq 7.
    const at = (8064 + 1008) % 8192;
    expect(
      new DataView((d.memory.slice(RING + at + 4 + 14, 4) as Uint8Array).slice().buffer).getUint32(
        0,
        true,
      ),
    ).toBe(9);
  });

  it("with rxPending, a NAPI poll that ends on its budget still finds an RX bit while frames wait (8139too)", () => {
    // 8139too's rtl8139_poll runs rtl8139_rx only when IntrStatus has an RX bit, and
    // rtl8139_rx acknowledges the RX bits after every CAPR write. Frames moved from the
    // queue into the ring by that CAPR write must leave ROK set after the acknowledgement,
    // or a poll that used its whole budget leaves them in the ring with nothing to wake it.
    const d = rawNic(RTL_RCR_APM | RTL_RCR_WRAP, { rxPending: 64 });
    const rand = rng(9);
    for (let k = 0; k < 40; k++) d.backend.inject(frameOf(PEER, MAC, 1000, k, rand));
    expect(d.nic.pendingFrames).toBe(32);
    const rxAck = RTL_ISR_ROK | RTL_ISR_RXOVW | 0x40;
    let cur = 0;
    let got = 0;
    const budget = 4;
    const poll = (): number => {
      if ((d.r(RTL_ISR, 2) & rxAck) === 0) return 0; // rtl8139_poll: nothing to do
      let done = 0;
      while (done < budget && (d.r(RTL_CR, 1) & RTL_CR_BUFE) === 0) {
        const len = d.memory.readU16(RING + cur + 2) as number;
        expect(seqOf(d.memory.slice(RING + cur + 4, len - 4) as Uint8Array)).toBe(got);
        got++;
        done++;
        cur = (cur + len + 4 + 3) & ~3;
        cur %= d.size;
        d.w(RTL_CAPR, 2, (cur - 16) & 0xffff);
        d.w(RTL_ISR, 2, d.r(RTL_ISR, 2) & rxAck); // rtl8139_isr_ack
      }
      return done;
    };
    // NAPI: poll again while a poll uses its whole budget; otherwise unmask and wait for
    // an interrupt (IMR is all ones here: any ISR bit is one).
    for (let rounds = 0; rounds < 100; rounds++) {
      if (poll() < budget && d.r(RTL_ISR, 2) === 0) break;
    }
    expect(got).toBe(40);
    expect(d.nic.pendingFrames).toBe(0);
    expect(d.r(RTL_CR, 1) & RTL_CR_BUFE).toBe(RTL_CR_BUFE);
  });

  it("filters: own MAC (APM), broadcast (AB), multicast hash (AM + MAR), promiscuous (AAP)", () => {
    const rand = rng(6);
    const bcast = new Uint8Array(6).fill(0xff);
    const group = new Uint8Array([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    const other = new Uint8Array([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
    const stranger = new Uint8Array([0x02, 9, 9, 9, 9, 9]);
    const bit = multicastHashBit(group);
    const otherBit = multicastHashBit(other);
    expect(bit).not.toBe(otherBit);
    const cases: Array<[number, Uint8Array, boolean, number]> = [
      [RTL_RCR_APM, MAC, true, 0x4001],
      [RTL_RCR_AB, MAC, false, 0],
      [RTL_RCR_AB, bcast, true, 0x2001],
      [RTL_RCR_APM, bcast, false, 0],
      [RTL_RCR_AM, group, true, 0x8001],
      [RTL_RCR_AM, other, false, 0],
      [RTL_RCR_APM | RTL_RCR_AB, group, false, 0],
      [RTL_RCR_APM | RTL_RCR_AB | RTL_RCR_AM, stranger, false, 0],
      [RTL_RCR_AAP, stranger, true, 0x0001],
    ];
    for (const [rcr, dst, accept, status] of cases) {
      const d = rawNic(rcr);
      d.w(RTL_MAR0 + (bit >> 3), 1, 1 << (bit & 7));
      d.backend.inject(frameOf(PEER, dst, 64, 0, rand));
      expect(d.nic.stats.rxFrames).toBe(accept ? 1 : 0);
      expect(d.nic.stats.drops.rxFiltered).toBe(accept ? 0 : 1);
      if (accept) expect(entryAt(d, 0).status).toBe(status);
    }
  });

  it("the filter follows IDR rewrites", () => {
    const d = rawNic(RTL_RCR_APM);
    d.w(RTL_IDR0, 4, 0x0300_0002);
    d.w(RTL_IDR0 + 4, 4, 0x0000_0100);
    d.backend.inject(frameOf(PEER, MAC, 64, 0, rng(1)));
    expect(d.nic.stats.rxFrames).toBe(0);
    d.backend.inject(frameOf(PEER, new Uint8Array([2, 0, 0, 3, 0, 1]), 64, 0, rng(1)));
    expect(d.nic.stats.rxFrames).toBe(1);
  });
});

describe("the driver's receive path", () => {
  it("multicast join and promiscuous mode through setRxMode (MAR hash as 8139too computes it)", async () => {
    const backend = new LoopbackBackend({ mode: "sink" });
    const g = rtlGuest(backend, { mac: MAC });
    const group = new Uint8Array([0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa]);
    const rand = rng(8);
    backend.inject(frameOf(PEER, group, 80, 1, rand));
    g.driver.setRxMode({ multicast: [group] });
    backend.inject(frameOf(PEER, group, 80, 2, rand));
    backend.inject(frameOf(PEER, PEER, 80, 3, rand)); // someone else's unicast
    g.driver.setRxMode({ promiscuous: true });
    backend.inject(frameOf(PEER, PEER, 80, 4, rand));
    await settle();
    expect(g.received.map(seqOf)).toEqual([2, 4]);
    expect(g.nic.stats.drops.rxFiltered).toBe(2);
  });

  it("CAPR updates let the ring wrap hundreds of times without losing a byte", async () => {
    const backend = new LoopbackBackend({ mode: "sink" });
    const g = rtlGuest(backend, { mac: MAC, driver: { ringSize: 8192 } });
    const rand = rng(9);
    const sent: Uint8Array[] = [];
    for (let k = 0; k < 2000; k++) {
      const f = frameOf(PEER, MAC, 60 + (rand() % 1455), k, rand);
      sent.push(f);
      backend.inject(f);
      if (k % 4 === 3) await settle(1);
    }
    await settle();
    expect(g.received.length).toBe(2000);
    for (let k = 0; k < 2000; k++) expectSameBytes(g.received[k]!, sent[k]!);
    expect(g.nic.stats.drops.rxOverflow).toBe(0);
    expect(g.nic.stats.rxBytes).toBeGreaterThan(100 * 8192);
  });

  it("a ring overflow is reported to the driver (RXOVW acked, MPC collected) and it carries on", async () => {
    const backend = new LoopbackBackend({ mode: "sink" });
    const g = rtlGuest(backend, { mac: MAC, driver: { ringSize: 8192 } });
    const rand = rng(10);
    for (let k = 0; k < 30; k++) backend.inject(frameOf(PEER, MAC, 1514, k, rand));
    await settle();
    expect(g.received.length).toBe(5);
    expect(g.nic.stats.drops.rxOverflow).toBe(25);
    expect(g.driver.stats.rxOverflows).toBeGreaterThan(0);
    for (let k = 0; k < 5; k++) backend.inject(frameOf(PEER, MAC, 200, 100 + k, rand));
    await settle();
    expect(g.received.slice(5).map(seqOf)).toEqual([100, 101, 102, 103, 104]);
  });

  it("transmits round-robin over the four descriptors with TOK interrupts", async () => {
    const backend = new LoopbackBackend({ mode: "sink" });
    const g = rtlGuest(backend, { mac: MAC });
    const rand = rng(11);
    const sent: Uint8Array[] = [];
    for (let k = 0; k < 10; k++) {
      const f = frameOf(MAC, PEER, 14 + k * 150, k, rand);
      sent.push(f);
      while (!g.driver.send(f)) await settle(1);
    }
    await settle();
    expect(backend.sent.length).toBe(10);
    for (let k = 0; k < 10; k++) {
      const pad = Math.max(sent[k]!.length, 60);
      expect(backend.sent[k]!.frame.length).toBe(pad);
      expectSameBytes(backend.sent[k]!.frame.subarray(0, sent[k]!.length), sent[k]!);
    }
    expect(g.driver.txOutstanding).toBe(0);
    expect(g.driver.stats.txFull).toBeGreaterThan(0);
    expect(g.nic.stats.txFrames).toBe(10);
  });
});
