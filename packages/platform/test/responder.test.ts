import {
  EthernetSwitch,
  fillTransportChecksum,
  HostResponder,
  NET_META_NEEDS_CSUM,
  type NetBackend,
  type NetEndpoint,
  newNetBackendStats,
  onesComplementSum,
  parseIpv4,
  seedPseudoHeader,
  verifyTransportChecksum,
} from "@pvkit/platform";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

const GUEST_MAC = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const GUEST_IP = [10, 0, 2, 15];

function arpRequest(target: number[]): Uint8Array {
  return new Uint8Array([
    ...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ...GUEST_MAC,
    0x08,
    0x06,
    ...[0, 1, 0x08, 0, 6, 4, 0, 1],
    ...GUEST_MAC,
    ...GUEST_IP,
    ...[0, 0, 0, 0, 0, 0],
    ...target,
    ...new Array(18).fill(0),
  ]);
}

function echoRequest(dst: number[], payload: number[], seq = 1): Uint8Array {
  const total = 20 + 8 + payload.length;
  const f = new Uint8Array(14 + total);
  f.set([0x52, 0x54, 0, 0, 0, 2, ...GUEST_MAC, 0x08, 0x00]);
  f.set([0x45, 0, total >> 8, total & 0xff, 0, 7, 0x40, 0, 64, 1, 0, 0, ...GUEST_IP, ...dst], 14);
  const ipSum = ~onesComplementSum(f, 14, 34) & 0xffff;
  f[24] = ipSum >> 8;
  f[25] = ipSum & 0xff;
  f.set([8, 0, 0, 0, 0x12, 0x34, seq >> 8, seq & 0xff, ...payload], 34);
  const s = ~onesComplementSum(f, 34, 14 + total) & 0xffff;
  f[36] = s >> 8;
  f[37] = s & 0xff;
  return f;
}

function rig() {
  const sw = new EthernetSwitch();
  const host = new HostResponder({ ip: "10.0.2.2" });
  host.attachTo(sw.createPort("host"));
  const port = sw.createPort("guest");
  const got: Uint8Array[] = [];
  port.attach({ receive: (f) => got.push(f.slice()) });
  return { host, port, got };
}

describe("HostResponder", () => {
  it("answers an ARP request for its address with a well-formed reply", () => {
    const { host, port, got } = rig();
    port.send(arpRequest([10, 0, 2, 2]), null);
    expect(got).toHaveLength(1);
    const r = got[0]!;
    expect([...r.subarray(0, 6)]).toEqual(GUEST_MAC);
    expect([...r.subarray(6, 12)]).toEqual([...host.mac]);
    expect([...r.subarray(12, 22)]).toEqual([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    expect([...r.subarray(22, 28)]).toEqual([...host.mac]);
    expect([...r.subarray(28, 32)]).toEqual([10, 0, 2, 2]);
    expect([...r.subarray(32, 38)]).toEqual(GUEST_MAC);
    expect([...r.subarray(38, 42)]).toEqual(GUEST_IP);
    expect(host.stats.arpReplies).toBe(1);
    port.send(arpRequest([10, 0, 2, 3]), null); // someone else
    expect(got).toHaveLength(1);
    expect(host.stats.ignored).toBe(1);
  });

  it("answers ICMP echo with the request's id, sequence and payload, and valid checksums", () => {
    const { host, port, got } = rig();
    const payload = Array.from({ length: 57 }, (_, i) => (i * 7) & 0xff); // odd length
    port.send(echoRequest([10, 0, 2, 2], payload, 300), null);
    expect(got).toHaveLength(1);
    const r = got[0]!;
    expect([...r.subarray(26, 30)]).toEqual([10, 0, 2, 2]);
    expect([...r.subarray(30, 34)]).toEqual(GUEST_IP);
    expect(onesComplementSum(r, 14, 34)).toBe(0xffff);
    expect(r[34]).toBe(0);
    expect([...r.subarray(38, 42)]).toEqual([0x12, 0x34, 300 >> 8, 300 & 0xff]);
    expect([...r.subarray(42, 42 + payload.length)]).toEqual(payload);
    expect(onesComplementSum(r, 34, 34 + 8 + payload.length)).toBe(0xffff);
    expect(host.stats.echoReplies).toBe(1);
    port.send(echoRequest([10, 0, 2, 9], payload), null);
    expect(got).toHaveLength(1);
  });

  it("counts UDP datagrams and bytes sent to it", () => {
    const { host, port } = rig();
    const f = echoRequest([10, 0, 2, 2], new Array(100).fill(1));
    f[23] = 17; // protocol UDP; 8 header + 100 payload
    port.send(f, null);
    expect(host.stats.udpDatagrams).toBe(1);
    expect(host.stats.udpBytes).toBe(100);
  });

  it("never answers or throws on arbitrary frames that are not a valid request to it", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), (bytes) => {
        const { host, got } = rig();
        const f = new Uint8Array(bytes);
        const isArp = f.length >= 42 && f[12] === 8 && f[13] === 6;
        const isIp = f.length >= 34 && f[12] === 8 && f[13] === 0;
        host.receive(f);
        if (!isArp && !isIp) expect(got).toHaveLength(0);
        const s = host.stats;
        // Every frame is counted once, except a (vanishingly unlikely) valid TCP SYN or data
        // segment, which is answered instead.
        const counted = s.arpReplies + s.echoReplies + s.udpDatagrams + s.tcpRefused + s.ignored;
        expect(counted).toBeLessThanOrEqual(1);
        if (!isIp || f[23] !== 6) expect(counted).toBe(1);
      }),
      { seed: 8086, numRuns: 500 },
    );
  });

  describe("TCP sink", () => {
    const SYN = 0x02;
    const ACK = 0x10;
    const FIN = 0x01;
    const RST = 0x04;
    function segment(
      flags: number,
      seq: number,
      ack: number,
      payload: number[] = [],
      port = 9,
    ): Uint8Array {
      const total = 20 + 20 + payload.length;
      const f = new Uint8Array(Math.max(60, 14 + total));
      f.set([0x52, 0x54, 0, 0, 0, 2, ...GUEST_MAC, 0x08, 0x00]);
      f.set(
        [0x45, 0, total >> 8, total & 0xff, 0, 1, 0x40, 0, 64, 6, 0, 0, ...GUEST_IP, 10, 0, 2, 2],
        14,
      );
      const ipSum = ~onesComplementSum(f, 14, 34) & 0xffff;
      f[24] = ipSum >> 8;
      f[25] = ipSum & 0xff;
      const be32 = (v: number) => [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
      f.set(
        [0xc3, 0x50, port >> 8, port & 0xff, ...be32(seq), ...be32(ack), 5 << 4, flags, 0x20, 0],
        34,
      );
      f.set(payload, 54);
      fillTransportChecksum(f);
      return f;
    }
    const fields = (r: Uint8Array) => ({
      flags: r[47]!,
      seq: ((r[38]! << 24) | (r[39]! << 16) | (r[40]! << 8) | r[41]!) >>> 0,
      ack: ((r[42]! << 24) | (r[43]! << 16) | (r[44]! << 8) | r[45]!) >>> 0,
      ports: [(r[34]! << 8) | r[35]!, (r[36]! << 8) | r[37]!],
    });

    it("accepts a connection, acknowledges in-order data, asks again for a gap, and closes on FIN", () => {
      const { host, port, got } = rig();
      const isn = 0xffff_fff0; // the sequence space wraps during the transfer
      port.send(segment(SYN, isn, 0), null);
      expect(got).toHaveLength(1);
      const synAck = fields(got[0]!);
      expect(synAck.flags).toBe(SYN | ACK);
      expect(synAck.ack).toBe((isn + 1) >>> 0);
      expect(synAck.ports).toEqual([9, 0xc350]);
      expect([...got[0]!.subarray(54, 58)]).toEqual([2, 4, 0x05, 0xb4]); // MSS 1460
      expect(verifyTransportChecksum(got[0]!)).toBe(true);
      expect(onesComplementSum(got[0]!, 14, 34)).toBe(0xffff);
      let next = (isn + 1) >>> 0;
      const mine = (synAck.seq + 1) >>> 0;
      port.send(segment(ACK, next, mine), null); // handshake done: nothing to answer
      expect(got).toHaveLength(1);
      for (let i = 0; i < 3; i++) {
        port.send(segment(ACK, next, mine, new Array(100).fill(i)), null);
        next = (next + 100) >>> 0;
        expect(fields(got.at(-1)!)).toMatchObject({ flags: ACK, ack: next });
      }
      port.send(segment(ACK, (next + 100) >>> 0, mine, new Array(50).fill(9)), null); // a gap
      expect(fields(got.at(-1)!)).toMatchObject({ flags: ACK, ack: next });
      expect(host.stats.tcpBytes).toBe(300);
      port.send(segment(FIN | ACK, next, mine), null);
      expect(fields(got.at(-1)!)).toMatchObject({
        flags: FIN | ACK,
        ack: (next + 1) >>> 0,
        seq: mine,
      });
      expect(host.stats.tcpConnections).toBe(1);
      const n = got.length;
      port.send(segment(ACK, (next + 1) >>> 0, (mine + 1) >>> 0), null); // last ACK: closed
      port.send(segment(ACK, (next + 1) >>> 0, (mine + 1) >>> 0, [1]), null); // no connection now
      expect(got).toHaveLength(n + 1);
      expect(fields(got.at(-1)!).flags).toBe(RST);
      expect(got.every((f) => verifyTransportChecksum(f) === true)).toBe(true);
    });

    it("completes a partial (NEEDS_CSUM) checksum from an offloading NIC before checking it", () => {
      let endpoint: NetEndpoint | null = null;
      const sent: Uint8Array[] = [];
      const fake: NetBackend = {
        name: "fake",
        checksumOffload: true,
        linkUp: true,
        stats: newNetBackendStats(),
        attach: (e) => {
          endpoint = e;
        },
        detach: () => {},
        send: (f) => {
          sent.push(f.slice());
          return "sent";
        },
      };
      const host = new HostResponder({ ip: "10.0.2.2" });
      host.attachTo(fake);
      const syn = segment(SYN, 77, 0);
      seedPseudoHeader(syn); // what a guest with checksum offload hands its NIC
      expect(verifyTransportChecksum(syn)).toBe(false);
      const meta = { flags: NET_META_NEEDS_CSUM, csumStart: 34, csumOffset: 16 };
      endpoint!.receive(syn, meta);
      expect(sent).toHaveLength(1);
      expect(fields(sent[0]!)).toMatchObject({ flags: SYN | ACK, ack: 78 });
      expect(host.stats.tcpRefused).toBe(0);
      endpoint!.receive(syn, null); // the same bytes without the metadata: a bad checksum
      expect(host.stats.tcpRefused).toBe(1);
    });

    it("resets a SYN to another port and drops segments with a bad checksum", () => {
      const { host, port, got } = rig();
      port.send(segment(SYN, 1000, 0, [], 80), null);
      expect(fields(got[0]!)).toMatchObject({ flags: RST | ACK, ack: 1001 });
      const bad = segment(SYN, 5, 0);
      bad[50] = (bad[50]! ^ 0xff) & 0xff; // checksum byte
      port.send(bad, null);
      expect(got).toHaveLength(1);
      expect(host.stats.tcpRefused).toBe(2);
    });
  });

  it("rejects bad configuration", () => {
    expect(() => new HostResponder({ ip: "10.0.2" })).toThrow();
    expect(() => new HostResponder({ ip: "10.0.2.256" })).toThrow();
    expect(() => new HostResponder({ ip: "10.0.2.2", mac: "zz" })).toThrow();
    expect(parseIpv4("192.168.1.20")).toEqual(new Uint8Array([192, 168, 1, 20]));
  });
});
