import {
  EthernetSwitch,
  HostResponder,
  patternSource,
  type TcpClock,
  TcpFlag,
  type TcpSegmentOut,
  TcpSender,
  tcpPatternByte,
  verifyTransportChecksum,
} from "@pvkit/platform";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

/** A manual clock: timers fire only when the test advances time. */
function fakeClock() {
  let now = 0;
  let timers: { at: number; fn: () => void; id: number }[] = [];
  let next = 1;
  const clock: TcpClock = {
    now: () => now,
    setTimer: (fn, ms) => {
      const id = next++;
      timers.push({ at: now + ms, fn, id });
      return id;
    },
    clearTimer: (h) => {
      timers = timers.filter((t) => t.id !== h);
    },
  };
  const advance = (ms: number): void => {
    const until = now + ms;
    for (;;) {
      timers.sort((a, b) => a.at - b.at);
      const t = timers[0];
      if (t === undefined || t.at > until) break;
      timers.shift();
      now = t.at;
      t.fn();
    }
    now = until;
  };
  return { clock, advance, pending: () => timers.length };
}

interface Seg {
  flags: number;
  seq: number;
  ack: number;
  payload: Uint8Array;
  mss?: number;
}

/**
 * A receiver in the guest's role: takes in-order data, keeps out-of-order segments, ACKs
 * every segment (duplicate ACKs for a gap) with a window of `window` minus what the
 * application has not read.
 */
function receiverRig(bytes: number, opts: { window?: number; mss?: number } = {}) {
  const { clock, advance, pending } = fakeClock();
  const out: Seg[] = [];
  const irs = 1000;
  const sender = new TcpSender({
    syn: { seq: irs, window: opts.window ?? 65535, ...(opts.mss ? { mss: opts.mss } : {}) },
    iss: 0xfffff000, // wraps during the transfer
    source: patternSource(bytes),
    emit: (s: TcpSegmentOut) => out.push({ ...s, payload: s.payload.slice() }),
    clock,
  });
  const received = new Uint8Array(bytes);
  let rcvNxt = 0; // stream offset
  let finReceived = false;
  const ooo = new Map<number, Uint8Array>();
  let windowBase = opts.window ?? 65535;
  let unread = 0;
  const iss = 0xfffff000;
  const offsetOf = (seq: number) => (seq - iss - 1) >>> 0;
  const ackSeq = () => (iss + 1 + rcvNxt + (finReceived ? 1 : 0)) >>> 0;
  const window = () => Math.max(0, windowBase - unread);
  const ack = (): void =>
    sender.receive({
      flags: TcpFlag.ACK,
      seq: irs + 1,
      ack: ackSeq(),
      window: window(),
      payload: new Uint8Array(0),
    });
  /** Delivers `seg` (unless dropped) and answers it. */
  const deliver = (seg: Seg): void => {
    if (seg.flags & TcpFlag.SYN) {
      ack();
      return;
    }
    const off = offsetOf(seg.seq);
    if (seg.payload.length > 0) {
      if (seg.payload.length > window() && off >= rcvNxt) {
        ack(); // no room: dropped, window re-announced
        return;
      }
      if (off === rcvNxt) {
        received.set(seg.payload, off);
        rcvNxt += seg.payload.length;
        unread += seg.payload.length;
        for (let p = ooo.get(rcvNxt); p !== undefined; p = ooo.get(rcvNxt)) {
          ooo.delete(rcvNxt);
          received.set(p, rcvNxt);
          rcvNxt += p.length;
          unread += p.length;
        }
      } else if (off > rcvNxt) ooo.set(off, seg.payload);
    }
    if (seg.flags & TcpFlag.FIN && off === rcvNxt) finReceived = true;
    ack();
  };
  return {
    sender,
    out,
    received,
    advance,
    pending,
    get rcvNxt() {
      return rcvNxt;
    },
    get finReceived() {
      return finReceived;
    },
    deliver,
    read: (n: number) => {
      unread = Math.max(0, unread - n);
    },
    setWindow: (w: number) => {
      windowBase = w;
    },
    ack,
  };
}

/** Runs the exchange: pops segments in order, `drop(i)` decides the fate of the i-th. */
function run(
  r: ReturnType<typeof receiverRig>,
  drop: (i: number, s: Seg) => boolean,
  maxMs = 120_000,
) {
  let i = 0;
  let t = 0;
  while (t < maxMs) {
    while (r.out.length > 0) {
      const s = r.out.shift()!;
      if (!drop(i++, s)) r.deliver(s);
      r.read(1 << 30);
    }
    if (r.finReceived && r.sender.allAcked) return;
    r.advance(50);
    t += 50;
  }
}

describe("TcpSender", () => {
  it("answers SYN-ACK with the MSS, sends MSS-sized segments within the window, then FIN", () => {
    const r = receiverRig(100_000, { mss: 1000 });
    const synAck = r.out[0]!;
    expect(synAck.flags).toBe(TcpFlag.SYN | TcpFlag.ACK);
    expect(synAck.ack).toBe(1001);
    expect(synAck.mss).toBe(1000);
    run(r, () => false);
    expect(r.rcvNxt).toBe(100_000);
    expect(r.received.every((b, i) => b === tcpPatternByte(i))).toBe(true);
    expect(r.finReceived).toBe(true);
    expect(r.sender.allAcked).toBe(true);
    expect(r.sender.stats.bytesAcked).toBe(100_000);
    expect(r.sender.stats.retransmits).toBe(0);
    expect(r.pending()).toBe(0); // no timer left once all is acknowledged
  });

  it("never has more in flight than the peer's window", () => {
    const r = receiverRig(50_000, { window: 4000 });
    r.deliver(r.out.shift()!); // SYN-ACK → ACK
    // No reads: the window closes after 4000 bytes.
    for (let k = 0; k < 20 && r.out.length > 0; k++) r.deliver(r.out.shift()!);
    expect(r.rcvNxt).toBe(4000);
    expect(r.sender.inFlight).toBe(0);
  });

  it("probes a zero window, and resumes when it opens", () => {
    const r = receiverRig(20_000, { window: 3000 });
    r.deliver(r.out.shift()!);
    while (r.out.length > 0) r.deliver(r.out.shift()!);
    expect(r.rcvNxt).toBe(3000); // window now 0
    expect(r.out).toHaveLength(0);
    r.advance(999);
    expect(r.out).toHaveLength(0); // nothing before the persist timer
    r.advance(2);
    expect(r.sender.stats.probes).toBe(1);
    expect(r.out).toHaveLength(1);
    expect(r.out[0]!.payload.length).toBe(1); // one byte beyond the window
    r.deliver(r.out.shift()!); // dropped for want of room; window 0 again
    expect(r.rcvNxt).toBe(3000);
    r.advance(5000); // the probe is sent again, backed off
    expect(r.out.length).toBeGreaterThanOrEqual(1);
    expect(r.out.every((s) => s.payload.length === 1)).toBe(true);
    r.out.length = 0;
    // The application reads; the window update lets everything through.
    r.read(1 << 30);
    r.setWindow(65535);
    r.ack();
    run(r, () => false);
    expect(r.rcvNxt).toBe(20_000);
    expect(r.received.every((b, i) => b === tcpPatternByte(i))).toBe(true);
    expect(r.sender.allAcked).toBe(true);
  });

  it("recovers from dropped segments (fast retransmit and timeout), delivering every byte once", () => {
    const r = receiverRig(300_000);
    run(r, (i) => i === 5 || i === 6 || i === 40 || (i > 100 && i < 110));
    expect(r.rcvNxt).toBe(300_000);
    expect(r.received.every((b, i) => b === tcpPatternByte(i))).toBe(true);
    expect(r.sender.allAcked).toBe(true);
    expect(r.sender.stats.retransmits).toBeGreaterThanOrEqual(12);
    expect(r.sender.stats.fastRetransmits).toBeGreaterThanOrEqual(1);
  });

  it("retransmits a lost SYN-ACK and a lost FIN on timeout", () => {
    const r = receiverRig(3000);
    let fins = 0;
    run(r, (i, s) => i === 0 || ((s.flags & TcpFlag.FIN) !== 0 && fins++ < 2));
    expect(fins).toBe(3);
    expect(r.rcvNxt).toBe(3000);
    expect(r.finReceived).toBe(true);
    expect(r.sender.stats.timeouts).toBeGreaterThanOrEqual(1);
  });

  it("delivers every byte whatever frames are dropped (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 60_000 }),
        fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 30 }),
        (bytes, drops) => {
          const lost = new Set(drops);
          const r = receiverRig(bytes, { mss: 1460 });
          run(r, (i) => lost.has(i), 1_000_000);
          expect(r.rcvNxt).toBe(bytes);
          expect(r.finReceived).toBe(true);
          expect(r.received.every((b, i) => b === tcpPatternByte(i))).toBe(true);
          expect(r.sender.stats.bytesAcked).toBe(bytes);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("ignores an ACK for data never sent, and a RST closes it", () => {
    const r = receiverRig(10_000);
    r.deliver(r.out.shift()!);
    const acked = r.sender.stats.bytesAcked;
    r.sender.receive({
      flags: TcpFlag.ACK,
      seq: 1001,
      ack: 0x7fffffff,
      window: 65535,
      payload: new Uint8Array(0),
    });
    expect(r.sender.stats.bytesAcked).toBe(acked);
    r.sender.receive({
      flags: TcpFlag.RST,
      seq: 1001,
      ack: 0,
      window: 0,
      payload: new Uint8Array(0),
    });
    expect(r.sender.state).toBe("closed");
    expect(r.pending()).toBe(0);
  });
});

describe("HostResponder TCP source and echo", () => {
  const GUEST_MAC = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
  function segment(
    dport: number,
    flags: number,
    seq: number,
    ack: number,
    payload: number[] = [],
    opts: number[] = [],
  ) {
    const tcpLen = 20 + opts.length;
    const total = 20 + tcpLen + payload.length;
    const f = new Uint8Array(14 + total);
    f.set([0x52, 0x54, 0, 0, 0, 2, ...GUEST_MAC, 0x08, 0x00]);
    f.set(
      [0x45, 0, total >> 8, total & 0xff, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2],
      14,
    );
    const t = 34;
    f.set([0x9c, 0x40, dport >> 8, dport & 0xff], t);
    new DataView(f.buffer).setUint32(t + 4, seq);
    new DataView(f.buffer).setUint32(t + 8, ack);
    f[t + 12] = (tcpLen / 4) << 4;
    f[t + 13] = flags;
    f[t + 14] = 0xff;
    f[t + 15] = 0xff;
    f.set(opts, t + 20);
    f.set(payload, t + tcpLen);
    let sum = 0;
    const add16 = (a: number, b: number) => {
      sum += (a << 8) | b;
    };
    for (let i = 26; i < 34; i += 2) add16(f[i]!, f[i + 1]!);
    sum += 6 + tcpLen + payload.length;
    for (let i = t; i < f.length; i += 2) add16(f[i]!, f[i + 1] ?? 0);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    const c = ~sum & 0xffff;
    f[t + 16] = c >> 8;
    f[t + 17] = c & 0xff;
    return f;
  }
  const u32 = (f: Uint8Array, at: number) => new DataView(f.buffer, f.byteOffset).getUint32(at);

  it("a source connection sends its bytes with valid checksums and the peer's MSS, then FIN", () => {
    const { clock } = fakeClock();
    const sw = new EthernetSwitch();
    const host = new HostResponder({
      ip: "10.0.2.2",
      tcpSourcePorts: { 19: 5000 },
      tcpClock: clock,
    });
    host.attachTo(sw.createPort("host"));
    const port = sw.createPort("guest");
    const got: Uint8Array[] = [];
    port.attach({ receive: (f) => got.push(f.slice()) });
    port.send(segment(19, TcpFlag.SYN, 100, 0, [], [2, 4, 0x02, 0x00]), null); // MSS 512
    expect(got).toHaveLength(1);
    const synAck = got[0]!;
    expect(synAck[47]).toBe(TcpFlag.SYN | TcpFlag.ACK);
    expect(u32(synAck, 42)).toBe(101);
    expect(verifyTransportChecksum(synAck)).toBe(true);
    const iss = u32(synAck, 38);
    port.send(segment(19, TcpFlag.ACK, 101, iss + 1), null);
    const data: number[] = [];
    let fin = false;
    for (let k = 0; k < 50 && !fin; k++) {
      const frames = got.splice(0);
      for (const f of frames) {
        expect(verifyTransportChecksum(f)).toBe(true);
        const ipLen = (f[16]! << 8) | f[17]!;
        const payload = f.subarray(34 + (f[46]! >> 4) * 4, 14 + ipLen);
        expect(payload.length).toBeLessThanOrEqual(512);
        data.push(...payload);
        if (f[47]! & TcpFlag.FIN) fin = true;
      }
      port.send(
        segment(
          19,
          TcpFlag.ACK | (fin ? TcpFlag.FIN : 0),
          101,
          iss + 1 + data.length + (fin ? 1 : 0),
        ),
        null,
      );
    }
    expect(data).toHaveLength(5000);
    expect(data.every((b, i) => b === tcpPatternByte(i))).toBe(true);
    expect(host.stats.tcpSourceBytes).toBe(5000);
    expect(host.stats.tcpSourceConnections).toBe(1);
    expect(host.tcpSenderStats().segments).toBeGreaterThan(10);
  });

  it("the echo port sends back what it receives and closes after the peer's FIN", async () => {
    const sw = new EthernetSwitch();
    const host = new HostResponder({ ip: "10.0.2.2", tcpEchoPort: 7 });
    host.attachTo(sw.createPort("host"));
    const port = sw.createPort("guest");
    const got: Uint8Array[] = [];
    port.attach({ receive: (f) => got.push(f.slice()) });
    port.send(segment(7, TcpFlag.SYN, 500, 0), null);
    const iss = u32(got[0]!, 38);
    port.send(segment(7, TcpFlag.ACK | TcpFlag.FIN, 501, iss + 1, [104, 105, 10]), null);
    await new Promise((r) => setImmediate(r));
    const back = got.flatMap((f) => [
      ...f.subarray(34 + (f[46]! >> 4) * 4, 14 + ((f[16]! << 8) | f[17]!)),
    ]);
    expect(back).toEqual([104, 105, 10]);
    const finSeg = got.find((f) => f[47]! & TcpFlag.FIN);
    expect(finSeg).toBeDefined();
    port.send(segment(7, TcpFlag.ACK, 505, iss + 1 + 3 + 1), null);
    expect(host.stats.tcpEchoBytes).toBe(3);
    expect(host.stats.tcpEchoConnections).toBe(1);
    host.closeConnections();
  });

  it("refuses a bad source configuration", () => {
    expect(() => new HostResponder({ ip: "10.0.2.2", tcpSourcePorts: { 9: 10 } })).toThrow();
    expect(() => new HostResponder({ ip: "10.0.2.2", tcpSourcePorts: { 19: -1 } })).toThrow();
    expect(
      () => new HostResponder({ ip: "10.0.2.2", tcpSourcePorts: { 19: 1 }, tcpEchoPort: 19 }),
    ).toThrow();
  });
});
