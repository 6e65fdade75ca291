import {
  completeChecksum,
  EthernetSwitch,
  fillTransportChecksum,
  LoopbackBackend,
  memoryPcapSink,
  NET_META_NEEDS_CSUM,
  type NetFrameMeta,
  PcapWriter,
  seedPseudoHeader,
  verifyTransportChecksum,
} from "@pvkit/platform";
import { describe, expect, it } from "vitest";

const mac = (i: number) => [0x02, 0, 0, 0, 0, i];
function frame(dst: number[], src: number[], len = 60): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let i = 14; i < len; i++) f[i] = i & 0xff;
  return f;
}

function nic(sw: EthernetSwitch, name: string, offload = true) {
  const port = sw.createPort(name, { checksumOffload: offload });
  const got: { frame: Uint8Array; meta: NetFrameMeta | null }[] = [];
  port.attach({ receive: (f, m) => got.push({ frame: f.slice(), meta: m && { ...m } }) });
  return { port, got };
}

describe("EthernetSwitch", () => {
  it("floods unknown and broadcast, learns sources, then forwards unicast to one port", () => {
    const sw = new EthernetSwitch();
    const [a, b, c] = [nic(sw, "a"), nic(sw, "b"), nic(sw, "c")];
    a.port.send(frame(mac(2), mac(1)), null); // b unknown: flooded
    expect([a.got.length, b.got.length, c.got.length]).toEqual([0, 1, 1]);
    b.port.send(frame(mac(1), mac(2)), null); // a learnt: forwarded to a only
    expect([a.got.length, b.got.length, c.got.length]).toEqual([1, 1, 1]);
    a.port.send(frame(mac(2), mac(1)), null); // b learnt now
    expect([a.got.length, b.got.length, c.got.length]).toEqual([1, 2, 1]);
    a.port.send(frame([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], mac(1)), null);
    a.port.send(frame([0x01, 0, 0x5e, 0, 0, 1], mac(1)), null); // multicast
    expect([a.got.length, b.got.length, c.got.length]).toEqual([1, 4, 3]);
    expect(sw.floods).toBe(3);
    expect(sw.forwards).toBe(2);
    expect(a.port.portStats.rxFrames).toBe(4);
    expect(a.port.portStats.flooded).toBe(3);
    expect(c.port.portStats.txFrames).toBe(3);
    expect(
      sw
        .addresses()
        .map((x) => x.port)
        .sort(),
    ).toEqual(["a", "b"]);
    // A runt never enters; a group source address is never learnt.
    expect(a.port.send(new Uint8Array(10), null)).toBe("dropped");
    expect(a.port.portStats.rxDrops).toBe(1);
  });

  it("ages addresses out with an injected clock and relearns a moved station", () => {
    let now = 0;
    const sw = new EthernetSwitch({ ageingMs: 1000, now: () => now });
    const [a, b, c] = [nic(sw, "a"), nic(sw, "b"), nic(sw, "c")];
    b.port.send(frame(mac(9), mac(2)), null);
    a.port.send(frame(mac(2), mac(1)), null);
    expect(c.got.length).toBe(1); // only the first (unknown 9) was flooded to c
    now = 1500;
    a.port.send(frame(mac(2), mac(1)), null); // aged out: flooded again
    expect(c.got.length).toBe(2);
    // Station 2 moves to port c.
    c.port.send(frame(mac(1), mac(2)), null);
    a.port.send(frame(mac(2), mac(1)), null);
    expect(c.got.length).toBe(3);
    expect(b.got.length).toBe(2);
  });

  it("completes NEEDS_CSUM checksums towards ports without offload; passes metadata to those with it", () => {
    const sw = new EthernetSwitch();
    const a = nic(sw, "a");
    const off = nic(sw, "offload", true);
    const plain = nic(sw, "plain", false);
    const pcap = memoryPcapSink();
    const writer = new PcapWriter(pcap.sink, { nowMicros: () => 1_700_000_000_123_456 });
    sw.addTap(writer.tap());
    // An IPv6 / TCP frame.
    const f = new Uint8Array(14 + 40 + 20 + 33);
    f.set(frame([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], mac(1)).subarray(0, 12));
    f[12] = 0x86;
    f[13] = 0xdd;
    f[14] = 0x60;
    f[18] = 0;
    f[19] = 53;
    f[20] = 6;
    f[21] = 64;
    for (let i = 22; i < 54; i++) f[i] = i;
    for (let i = 54; i < f.length; i++) f[i] = (i * 7) & 0xff;
    f[54 + 12] = 0x50;
    const full = f.slice();
    expect(fillTransportChecksum(full)).toBe(true);
    expect(verifyTransportChecksum(full)).toBe(true);
    const partial = f.slice();
    const o = seedPseudoHeader(partial)!;
    expect(o).toEqual({ csumStart: 54, csumOffset: 16 });
    a.port.send(partial, { flags: NET_META_NEEDS_CSUM, ...o });
    expect(off.got[0]!.meta).toEqual({ flags: NET_META_NEEDS_CSUM, csumStart: 54, csumOffset: 16 });
    expect(Buffer.from(off.got[0]!.frame).equals(Buffer.from(partial))).toBe(true);
    expect(plain.got[0]!.meta).toBeNull();
    expect(Buffer.from(plain.got[0]!.frame).equals(Buffer.from(full))).toBe(true);
    expect(plain.port.portStats.checksumsCompleted).toBe(1);
    // The sender's buffer is untouched; the tap saw the completed frame.
    expect(Buffer.from(partial).equals(Buffer.from(full))).toBe(false);
    const cap = pcap.bytes();
    const v = new DataView(cap.buffer);
    expect(v.getUint32(0, true)).toBe(0xa1b2c3d4);
    expect(v.getUint32(20, true)).toBe(1);
    expect(v.getUint32(24, true)).toBe(1_700_000_000);
    expect(v.getUint32(28, true)).toBe(123_456);
    expect(v.getUint32(32, true)).toBe(full.length);
    expect(Buffer.from(cap.subarray(40)).equals(Buffer.from(full))).toBe(true);
    // A bogus offset is refused without writing.
    const g = full.slice();
    expect(completeChecksum(g, 200, 16)).toBe(false);
    expect(Buffer.from(g).equals(Buffer.from(full))).toBe(true);
  });

  it("an uplink back-end is a port; a busy unicast destination tells the sender to retry", () => {
    const sw = new EthernetSwitch();
    const a = nic(sw, "a");
    const lb = new LoopbackBackend({ mode: "sink" });
    const up = sw.connect(lb, "uplink");
    lb.inject(frame(mac(1), mac(7))); // learn 7 behind the uplink
    expect(a.got.length).toBe(1);
    lb.setBusy(true);
    let woken = 0;
    a.port.attach({ receive: () => {}, writable: () => woken++ });
    expect(a.port.send(frame(mac(7), mac(1)), null)).toBe("busy");
    lb.setBusy(false);
    expect(woken).toBe(1);
    expect(a.port.send(frame(mac(7), mac(1)), null)).toBe("sent");
    expect(lb.sent.length).toBe(1);
    expect(up.portStats.txDrops).toBe(1);
    sw.remove(up);
    expect(sw.portCount).toBe(1);
  });
});
