/**
 * TCP segmentation offload through virtio-net (virtio 1.2 §5.1.6.2, §5.1.6.4): TSO frames
 * the guest sends go whole to a back-end that takes GSO frames and are cut otherwise;
 * GSO frames from the back-end reach a guest that negotiated GUEST_TSO whole and are cut
 * for one that did not; what a hostile driver marks as GSO is dropped and counted, the
 * chain returned, the device left serving.
 */
import { EthernetSwitch, LoopbackBackend, NET_GSO_NONE, type NetBackend } from "@pvkit/platform";
import {
  featureMask,
  VirtioMmio as R,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
} from "@pvkit/virtio-core";
import { rawMmioGuest } from "@pvkit/virtio-core/testing";
import {
  type NetDropReason,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC,
  VirtioNetDevice,
} from "@pvkit/virtio-net";
import { describe, expect, it } from "vitest";
import { buildTcpFrame, expectedSegments, gsoMeta, type TcpSeg } from "../../../test-utils/tcp.js";
import { settle, totalDrops } from "./harness.js";

const HDR = 12;

/** `len` bytes of guest memory at `addr`. */
function peek(
  memory: { read(a: number, dst: Uint8Array): unknown },
  addr: number,
  len: number,
): Uint8Array {
  const out = new Uint8Array(len);
  memory.read(addr, out);
  return out;
}
const QSIZE = 16;
const RX_RING = 0x1000;
const TX_RING = 0x2000;
const TX_BUF = 0x1_0000;
const RX_BUF = 0x4_0000;
const MAC = [0x02, 0, 0, 0, 0, 2]; // the destination of buildTcpFrame's frames

const SEG: TcpSeg = {
  v6: false,
  vlan: false,
  ipId: 9,
  seq: 1000,
  flags: 0x18,
  tcpOptions: 12,
  payload: Uint8Array.from({ length: 20_000 }, (_, i) => (i * 13) & 0xff),
};

function rig(backend: NetBackend, features: bigint) {
  const device = new VirtioNetDevice({
    backend,
    mac: Uint8Array.from(MAC),
    queueSize: QSIZE,
    ctrlVq: false,
    mrgRxbuf: false,
  });
  const g = rawMmioGuest(device, {
    memoryBytes: 1 << 20,
    features: featureMask(VIRTIO_NET_F_MAC) | features,
    queues: [RX_RING, TX_RING].map((base) => ({ base, size: QSIZE })),
  });
  const [rx, tx] = g.queues as [(typeof g.queues)[0], (typeof g.queues)[0]];
  /** Puts a virtio-net header + `frame` on the TX ring and kicks it. */
  const send = async (
    frame: Uint8Array,
    hdr: {
      flags: number;
      gsoType: number;
      hdrLen?: number;
      gsoSize: number;
      csumStart: number;
      csumOffset: number;
    },
  ) => {
    const h = new DataView(new ArrayBuffer(HDR));
    h.setUint8(0, hdr.flags);
    h.setUint8(1, hdr.gsoType);
    h.setUint16(2, hdr.hdrLen ?? 0, true);
    h.setUint16(4, hdr.gsoSize, true);
    h.setUint16(6, hdr.csumStart, true);
    h.setUint16(8, hdr.csumOffset, true);
    g.memory.write(TX_BUF, new Uint8Array(h.buffer));
    g.memory.write(TX_BUF + HDR, frame);
    const head = tx.addChain([{ addr: TX_BUF, len: HDR + frame.length }]);
    g.notify(1);
    await settle(2);
    return { head, used: tx.readUsed() };
  };
  /** Posts `n` receive buffers of `len` bytes each. */
  const postRx = async (n: number, len: number) => {
    for (let i = 0; i < n; i++) rx.addChain([{ addr: RX_BUF + i * len, len, writable: true }]);
    g.notify(0);
    await settle(1);
  };
  return { g, device, send, postRx, rx };
}

const TSO = featureMask(
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
);

function hdrOf(seg: TcpSeg, l4: number, mss: number) {
  const m = gsoMeta(seg, l4, mss);
  return { flags: 1, gsoType: m.gsoType!, gsoSize: mss, csumStart: l4, csumOffset: 16 };
}

describe("virtio-net TSO (HOST_TSO4/6, GUEST_TSO4)", () => {
  it("cuts a guest's TSO frame for a back-end that cannot take it: frames byte-exact as built from scratch", async () => {
    for (const v6 of [false, true]) {
      const backend = new LoopbackBackend({ mode: "sink", checksumOffload: false });
      const r = rig(backend, TSO);
      const seg = { ...SEG, v6 };
      const { frame, l4 } = buildTcpFrame(seg, false);
      const { head, used } = await r.send(frame, hdrOf(seg, l4, 1448));
      expect(used).toEqual([{ id: head, len: 0 }]);
      const want = expectedSegments(seg, 1448);
      expect(backend.sent.map((s) => Buffer.from(s.frame))).toEqual(
        want.map((w) => Buffer.from(w)),
      );
      expect(backend.sent.every((s) => s.meta === null)).toBe(true);
      expect(r.device.stats).toMatchObject({
        txGsoFrames: 1,
        gsoSegmented: 1,
        txFrames: want.length,
      });
      expect(totalDrops(r.device)).toBe(0);
    }
  });

  it("hands a TSO frame whole to a switch, which delivers it whole to a NIC that takes GSO", async () => {
    const sw = new EthernetSwitch();
    const r = rig(sw.createPort("guest"), TSO);
    const got: { len: number; gsoType: number | undefined; gsoSize: number | undefined }[] = [];
    sw.createPort("host").attach({
      acceptsGso: true,
      receive: (f, m) => got.push({ len: f.length, gsoType: m?.gsoType, gsoSize: m?.gsoSize }),
    });
    const { frame, l4 } = buildTcpFrame(SEG, false);
    await r.send(frame, hdrOf(SEG, l4, 1448));
    expect(got).toEqual([{ len: frame.length, gsoType: 1, gsoSize: 1448 }]);
    expect(r.device.stats).toMatchObject({ txGsoFrames: 1, gsoSegmented: 0, txFrames: 1 });
  });

  it("drops what a hostile driver marks as GSO, returns the chain, keeps serving", async () => {
    const { frame, l4 } = buildTcpFrame(SEG, false);
    const good = hdrOf(SEG, l4, 1448);
    const cases: [string, bigint, Uint8Array, Partial<typeof good>, NetDropReason][] = [
      ["TSO not negotiated", featureMask(VIRTIO_NET_F_CSUM), frame, {}, "txOversize"],
      [
        "TSO4 not negotiated, small frame",
        featureMask(VIRTIO_NET_F_CSUM),
        frame.subarray(0, 1000),
        {},
        "txBadGso",
      ],
      ["ECN alone", TSO, frame.subarray(0, 1000), { gsoType: 0x80 }, "txBadGso"],
      [
        "ECN without HOST_ECN",
        featureMask(VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4),
        frame.subarray(0, 1000),
        { gsoType: 0x81 },
        "txBadGso",
      ],
      ["UDP type (not offered)", TSO, frame.subarray(0, 1000), { gsoType: 3 }, "txBadGso"],
      ["TCPV6 on an IPv4 packet", TSO, frame, { gsoType: 4 }, "txBadGso"],
      ["gso_size 0", TSO, frame, { gsoSize: 0 }, "txBadGso"],
      ["one-byte MSS: unbounded segments", TSO, frame, { gsoSize: 1 }, "txBadGso"],
      ["no NEEDS_CSUM", TSO, frame, { flags: 0 }, "txBadGso"],
      ["csum_start off the TCP header", TSO, frame, { csumStart: l4 - 2 }, "txBadGso"],
      ["csum_offset not TCP's", TSO, frame, { csumOffset: 6 }, "txBadGso"],
      ["IP length past the frame", TSO, frame.subarray(0, frame.length - 10), {}, "txBadGso"],
      ["above 64 KiB", TSO, new Uint8Array(65535 + 14 + 4 + 1), {}, "txOversize"],
    ];
    for (const [name, features, f, patch, reason] of cases) {
      const backend = new LoopbackBackend({ mode: "sink" });
      const r = rig(backend, features);
      const { head, used } = await r.send(f, { ...good, ...patch });
      expect(used, name).toEqual([{ id: head, len: 0 }]);
      expect(backend.sent.length, name).toBe(0);
      expect(r.device.stats.drops[reason], name).toBe(1);
      expect(r.g.read(R.STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, name).toBe(0);
      // Still serving: a good frame follows (when TSO is negotiated).
      if (features === TSO) {
        await r.send(frame, good);
        expect(backend.sent.length, name).toBe(Math.ceil(SEG.payload.length / 1448));
      }
    }
  });

  it("refuses HOST_TSO4 without CSUM and GUEST_TSO4 without GUEST_CSUM at FEATURES_OK (§5.1.3.1)", () => {
    for (const bad of [featureMask(VIRTIO_NET_F_HOST_TSO4), featureMask(VIRTIO_NET_F_GUEST_TSO4)]) {
      const r = rig(new LoopbackBackend({ mode: "sink" }), 0n);
      r.g.write(R.STATUS, 0);
      r.g.write(R.STATUS, 1 | 2);
      r.g.write(R.DRIVER_FEATURES_SEL, 0);
      r.g.write(R.DRIVER_FEATURES, Number(featureMask(VIRTIO_NET_F_MAC) | bad));
      r.g.write(R.DRIVER_FEATURES_SEL, 1);
      r.g.write(R.DRIVER_FEATURES, 1); // VERSION_1
      r.g.write(R.STATUS, 1 | 2 | VIRTIO_CONFIG_S_FEATURES_OK);
      expect(r.g.read(R.STATUS) & VIRTIO_CONFIG_S_FEATURES_OK).toBe(0);
    }
  });

  it("delivers a GSO frame whole to a guest with GUEST_TSO4, and cut to one without", async () => {
    const { frame, l4 } = buildTcpFrame(SEG, false);
    const meta = gsoMeta(SEG, l4, 1448);
    // With GUEST_TSO4: one 64 KiB-capable buffer, header says TCPV4 / MSS / NEEDS_CSUM.
    const lb = new LoopbackBackend({ mode: "sink" });
    const r = rig(lb, featureMask(VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4));
    await r.postRx(1, 0x1_0020);
    lb.inject(frame, meta);
    await settle(1);
    const [u] = r.rx.readUsed();
    expect(u?.len).toBe(HDR + frame.length);
    const h = peek(r.g.memory, RX_BUF, HDR);
    const v = new DataView(h.buffer, h.byteOffset);
    expect([
      v.getUint8(0),
      v.getUint8(1),
      v.getUint16(2, true),
      v.getUint16(4, true),
      v.getUint16(6, true),
      v.getUint16(8, true),
    ]).toEqual([1, 1, l4 + 32, 1448, l4, 16]);
    expect(
      Buffer.from(peek(r.g.memory, RX_BUF + HDR, frame.length)).equals(Buffer.from(frame)),
    ).toBe(true);
    expect(r.device.stats.rxGsoFrames).toBe(1);

    // Without it: MTU-sized frames with full checksums, each as built from scratch.
    const lb2 = new LoopbackBackend({ mode: "sink" });
    const r2 = rig(lb2, 0n);
    const want = expectedSegments(SEG, 1448);
    await r2.postRx(want.length, 2048);
    lb2.inject(frame, meta);
    await settle(1);
    const used = r2.rx.readUsed();
    expect(used.length).toBe(want.length);
    used.forEach((e, i) => {
      expect(e.len).toBe(HDR + want[i]!.length);
      const got = peek(r2.g.memory, RX_BUF + i * 2048 + HDR, want[i]!.length);
      expect(Buffer.from(got).equals(Buffer.from(want[i]!))).toBe(true);
      expect(peek(r2.g.memory, RX_BUF + i * 2048 + 1, 1)[0]).toBe(NET_GSO_NONE);
    });
    expect(r2.device.stats.gsoSegmented).toBe(1);
  });
});
