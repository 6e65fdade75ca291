import {
  checkGso,
  EthernetSwitch,
  GSO_MAX_SEGMENTS,
  NET_GSO_NONE,
  NET_GSO_TCPV6,
  NET_META_NEEDS_CSUM,
  type NetFrameMeta,
  onesComplementSum,
  segmentGso,
  verifyTransportChecksum,
} from "@pvkit/platform";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  buildTcpFrame as build,
  expectedSegments as expected,
  gsoMeta,
  type TcpSeg as Seg,
} from "../../../test-utils/tcp.js";

function segment(frame: Uint8Array, meta: NetFrameMeta, complete = true) {
  const layout = checkGso(frame, meta);
  if (typeof layout === "string") throw new Error(layout);
  const got: { frame: Uint8Array; meta: NetFrameMeta | null }[] = [];
  const scratch = new Uint8Array(layout.payload + layout.mss);
  const n = segmentGso(frame, layout, complete, scratch, (f, m) => {
    got.push({ frame: f.slice(), meta: m && { ...m } });
    return true;
  });
  return { layout, got, n };
}

const segArb = fc.record({
  v6: fc.boolean(),
  vlan: fc.boolean(),
  ipId: fc.nat(0xffff),
  seq: fc.nat(0xffff_ffff),
  flags: fc.constantFrom(0x10, 0x18, 0x19, 0x98, 0x90),
  tcpOptions: fc.constantFrom(0, 12),
  payload: fc.uint8Array({ minLength: 1, maxLength: 20_000 }),
});

describe("TCP segmentation offload (segmentGso)", () => {
  it("cuts IPv4 and IPv6 segments exactly as built from scratch: lengths, IP id, seq, FIN/PSH last, CWR first, checksums", () => {
    fc.assert(
      fc.property(segArb, fc.integer({ min: 48, max: 9000 }), (s, mss) => {
        fc.pre(Math.ceil(s.payload.length / mss) <= GSO_MAX_SEGMENTS);
        const { frame, l4 } = build(s, false);
        const before = frame.slice();
        const { got, layout } = segment(frame, gsoMeta(s, l4, mss));
        const want = expected(s, mss);
        expect(layout.segments).toBe(want.length);
        expect(got.length).toBe(want.length);
        for (let i = 0; i < want.length; i++) {
          expect(got[i]!.meta).toBeNull();
          expect(Buffer.from(got[i]!.frame).equals(Buffer.from(want[i]!))).toBe(true);
          expect(verifyTransportChecksum(got[i]!.frame)).toBe(true);
        }
        expect(Buffer.from(frame).equals(Buffer.from(before))).toBe(true); // input untouched
      }),
      { seed: 1804, numRuns: 150 },
    );
  });

  it("leaves a pseudo-header sum and NEEDS_CSUM metadata when the receiver completes checksums", () => {
    const s: Seg = {
      v6: false,
      vlan: false,
      ipId: 7,
      seq: 0xffff_fff0, // wraps
      flags: 0x18,
      tcpOptions: 0,
      payload: Uint8Array.from({ length: 3000 }, (_, i) => i * 7),
    };
    const { frame, l4 } = build(s, false);
    const { got } = segment(frame, gsoMeta(s, l4, 1448), false);
    const want = expected(s, 1448);
    expect(got.length).toBe(3);
    for (let i = 0; i < 3; i++) {
      const m = got[i]!.meta!;
      expect(m).toEqual({ flags: NET_META_NEEDS_CSUM, csumStart: l4, csumOffset: 16 });
      // Completing the checksum gives the frame built from scratch.
      const f = got[i]!.frame;
      const c = ~onesComplementSum(f, l4, f.length) & 0xffff;
      f[l4 + 16] = c >> 8;
      f[l4 + 17] = c & 0xff;
      expect(Buffer.from(f).equals(Buffer.from(want[i]!))).toBe(true);
    }
    expect(got[1]!.frame[l4 + 4]).toBe(0x00); // seq wrapped past 2^32
  });

  it("stops when the receiver refuses a segment", () => {
    const s: Seg = {
      v6: true,
      vlan: true,
      ipId: 0,
      seq: 1,
      flags: 0x10,
      tcpOptions: 0,
      payload: new Uint8Array(5000),
    };
    const { frame, l4 } = build(s, false);
    const layout = checkGso(frame, gsoMeta(s, l4, 1000));
    if (typeof layout === "string") throw new Error(layout);
    let calls = 0;
    const n = segmentGso(
      frame,
      layout,
      true,
      new Uint8Array(layout.payload + 1000),
      () => ++calls < 2,
    );
    expect([n, calls]).toEqual([2, 2]);
  });

  it("refuses what a hostile guest marks as GSO: each rule by name", () => {
    const s: Seg = {
      v6: false,
      vlan: false,
      ipId: 0,
      seq: 1,
      flags: 0x10,
      tcpOptions: 0,
      payload: new Uint8Array(4000),
    };
    const { frame, l4 } = build(s, false);
    const ok = gsoMeta(s, l4, 1000);
    expect(typeof checkGso(frame, ok)).toBe("object");
    expect(checkGso(frame, { ...ok, gsoType: NET_GSO_TCPV6 })).toBe("wrong-ip-version");
    expect(checkGso(frame, { ...ok, gsoType: 3 })).toBe("wrong-ip-version"); // UDP
    expect(checkGso(frame, { ...ok, flags: 0 })).toBe("bad-checksum-fields");
    expect(checkGso(frame, { ...ok, csumStart: l4 + 1 })).toBe("bad-checksum-fields");
    expect(checkGso(frame, { ...ok, csumOffset: 6 })).toBe("bad-checksum-fields");
    expect(checkGso(frame, { ...ok, gsoSize: 0 })).toBe("zero-gso-size");
    expect(checkGso(frame, { ...ok, gsoSize: 1 })).toBe("too-many-segments");
    const empty = build({ ...s, payload: new Uint8Array(0) }, false);
    expect(checkGso(empty.frame, gsoMeta(s, empty.l4, 1000))).toBe("no-payload");
    const udp = frame.slice();
    udp[14 + 9] = 17;
    expect(checkGso(udp, ok)).toBe("not-tcp");
    // An IP total length past the frame: not a packet at all.
    expect(checkGso(frame.subarray(0, frame.length - 1), ok)).toBe("not-tcp");
    // A TCP data offset past the packet's end.
    const badOff = frame.slice(0, l4 + 20);
    badOff[14 + 2] = 0;
    badOff[14 + 3] = 40;
    badOff[l4 + 12] = 0xf0;
    expect(checkGso(badOff, ok)).toBe("not-tcp");
  });

  it("random corruptions of a GSO frame and its metadata: checked or cut, never a throw, never a segment beyond the packet", () => {
    fc.assert(
      fc.property(
        segArb,
        fc.integer({ min: 0, max: 9000 }),
        fc.array(fc.tuple(fc.nat(200), fc.nat(255)), { maxLength: 6 }),
        fc.record(
          { csumStart: fc.nat(200), csumOffset: fc.nat(40), gsoType: fc.nat(255) },
          { requiredKeys: [] },
        ),
        (s, mss, pokes, metaPokes) => {
          const { frame, l4 } = build(s, false);
          for (const [at, v] of pokes) if (at < frame.length) frame[at] = v;
          const meta = { ...gsoMeta(s, l4, mss), ...metaPokes };
          const layout = checkGso(frame, meta);
          if (typeof layout === "string") return;
          expect(layout.segments).toBeLessThanOrEqual(GSO_MAX_SEGMENTS);
          let bytes = 0;
          segmentGso(frame, layout, true, new Uint8Array(layout.payload + layout.mss), (f) => {
            expect(f.length).toBeLessThanOrEqual(layout.payload + layout.mss);
            bytes += f.length - layout.payload;
            return true;
          });
          expect(bytes).toBe(layout.end - layout.payload);
        },
      ),
      { seed: 42, numRuns: 300 },
    );
  });
});

describe("EthernetSwitch with GSO frames", () => {
  const s: Seg = {
    v6: false,
    vlan: false,
    ipId: 1,
    seq: 100,
    flags: 0x18,
    tcpOptions: 0,
    payload: Uint8Array.from({ length: 10_000 }, (_, i) => i),
  };

  function rig(gsoEndpoint: boolean, offload = true) {
    const sw = new EthernetSwitch();
    const a = sw.createPort("a");
    const b = sw.createPort("b", { checksumOffload: offload });
    const got: { frame: Uint8Array; meta: NetFrameMeta | null }[] = [];
    a.attach({ receive: () => {} });
    b.attach({
      acceptsGso: gsoEndpoint,
      receive: (f, m) => got.push({ frame: f.slice(), meta: m && { ...m } }),
    });
    const tapped: number[] = [];
    sw.addTap((f) => tapped.push(f.length));
    return { sw, a, b, got, tapped };
  }

  it("hands a GSO frame whole to a port whose NIC takes GSO, and cuts it for one that does not", () => {
    const { frame, l4 } = build(s, false);
    const meta = gsoMeta(s, l4, 1448);
    const whole = rig(true);
    expect(whole.a.gso).toBe(true);
    expect(whole.a.send(frame, meta)).toBe("sent");
    expect(whole.got.length).toBe(1);
    expect(whole.got[0]!.meta).toEqual(meta);
    expect(whole.tapped).toEqual([frame.length]); // taps see the frame as it entered

    for (const offload of [true, false]) {
      const cut = rig(false, offload);
      expect(cut.a.send(frame, meta)).toBe("sent");
      const want = expected(s, 1448);
      expect(cut.got.length).toBe(want.length);
      cut.got.forEach((g, i) => {
        if (offload) expect(g.meta?.flags).toBe(NET_META_NEEDS_CSUM);
        else {
          expect(g.meta).toBeNull();
          expect(Buffer.from(g.frame).equals(Buffer.from(want[i]!))).toBe(true);
        }
        expect(g.meta?.gsoType ?? NET_GSO_NONE).toBe(NET_GSO_NONE);
      });
      const ps = cut.b.portStats;
      expect(ps.gsoSegmented).toBe(1);
      expect(ps.txFrames).toBe(want.length);
    }
  });

  it("drops a malformed GSO frame at the ingress port", () => {
    const { frame, l4 } = build(s, false);
    const r = rig(false);
    expect(r.a.send(frame, { ...gsoMeta(s, l4, 1448), gsoSize: 0 })).toBe("dropped");
    expect(r.got.length).toBe(0);
    expect(r.a.portStats.rxDrops).toBe(1);
  });
});
