import { EthernetSwitch, HostResponder, onesComplementSum, parseIpv4 } from "@pvkit/platform";
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
        expect(s.arpReplies + s.echoReplies + s.udpDatagrams + s.ignored).toBe(1);
      }),
      { seed: 8086, numRuns: 500 },
    );
  });

  it("rejects bad configuration", () => {
    expect(() => new HostResponder({ ip: "10.0.2" })).toThrow();
    expect(() => new HostResponder({ ip: "10.0.2.256" })).toThrow();
    expect(() => new HostResponder({ ip: "10.0.2.2", mac: "zz" })).toThrow();
    expect(parseIpv4("192.168.1.20")).toEqual(new Uint8Array([192, 168, 1, 20]));
  });
});
