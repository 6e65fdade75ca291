import { LoopbackBackend } from "@pvkit/platform";
import {
  DriverError,
  type DriverQueue,
  featureMask,
  initVirtioDevice,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
} from "@pvkit/virtio-core";
import {
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MAC_TABLE_SET,
  VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_CTRL_VLAN,
  VIRTIO_NET_ERR,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_OK,
} from "@pvkit/virtio-net";
import { describe, expect, it } from "vitest";
import { expectSameBytes, netDevice, netGuest, rng, settle, udpFrame } from "./harness.js";

const MAC = new Uint8Array([0x52, 0x54, 0, 0, 0, 9]);
const PEER = new Uint8Array([0x52, 0x54, 0, 0, 0, 8]);

/** A raw guest (no VirtioNetDriver): rx queue 0 and tx queue 1, buffers placed by hand. */
function rawGuest() {
  const backend = new LoopbackBackend({ mode: "sink" });
  const d = netDevice(backend, { device: { mac: MAC, mtu: 1500, ctrlVq: false, mrgRxbuf: false } });
  const dev = initVirtioDevice<number>(d.transport, {
    wanted: featureMask(VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU),
    memory: d.memory,
    allocator: d.allocator,
    queueSizes: [16, 16],
  });
  if (dev instanceof DriverError) throw new Error(dev.message);
  const rx = dev.queues[0] as DriverQueue<number>;
  const tx = dev.queues[1] as DriverQueue<number>;
  const buf = (len: number): number => d.allocator.alloc(Math.max(1, len), 16);
  return { ...d, backend, rx, tx, buf };
}

describe("hostile guest", () => {
  it("TX without header, short header, runt and oversize frames are dropped and counted; the queue keeps going", () => {
    const g = rawGuest();
    const rand = rng(7);
    const good = udpFrame(MAC, PEER, 200, 1, 1, rand);
    const put = (bytes: Uint8Array): { addr: number; len: number } => {
      const addr = g.buf(bytes.length);
      g.memory.write(addr, bytes);
      return { addr, len: bytes.length };
    };
    const hdr = new Uint8Array(12);
    const withHdr = (f: Uint8Array): Uint8Array => {
      const b = new Uint8Array(12 + f.length);
      b.set(hdr);
      b.set(f, 12);
      return b;
    };
    // No readable bytes at all (only a writable buffer).
    g.tx.add([], [{ addr: g.buf(64), len: 64 }], 0);
    // A short header: 8 bytes.
    g.tx.add([put(new Uint8Array(8))], [], 1);
    // Header split over two descriptors (4 + 8) followed by a good frame: must be accepted.
    const whole = withHdr(good);
    g.tx.add(
      [put(whole.subarray(0, 4)), put(whole.subarray(4, 12)), put(whole.subarray(12))],
      [],
      2,
    );
    // Oversize: MTU + 14 + 1 bytes, no VLAN tag.
    g.tx.add([put(withHdr(udpFrame(MAC, PEER, 1515, 3, 1, rand)))], [], 3);
    // Runt: 10 bytes of frame.
    g.tx.add([put(withHdr(new Uint8Array(10)))], [], 4);
    // A GSO type that was not negotiated.
    const gso = withHdr(good);
    gso[1] = 1;
    g.tx.add([put(gso)], [], 5);
    // And a good frame at the end.
    g.tx.add([put(withHdr(good))], [], 6);
    g.tx.kick();
    const s = g.device.stats.drops;
    expect(s.txNoHeader).toBe(1);
    expect(s.txShortHeader).toBe(1);
    expect(s.txOversize).toBe(1);
    expect(s.txRunt).toBe(1);
    expect(s.txBadGso).toBe(1);
    expect(g.device.stats.txFrames).toBe(2);
    expect(g.backend.sent.length).toBe(2);
    expectSameBytes(g.backend.sent[0]!.frame, good);
    expectSameBytes(g.backend.sent[1]!.frame, good);
    // Every chain came back (used length 0: TX writes nothing).
    const used: number[] = [];
    for (let u = g.tx.getUsed(); u !== null; u = g.tx.getUsed()) used.push(u.token);
    expect(used).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(g.device.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
  });

  it("RX buffers smaller than a frame without MRG_RXBUF: frame dropped, buffer returned empty, later frames delivered", () => {
    const g = rawGuest();
    const rand = rng(9);
    const small = g.buf(100);
    const big = g.buf(1526);
    g.rx.add([], [{ addr: small, len: 100 }], 1);
    g.rx.kick();
    const f1 = udpFrame(PEER, MAC, 600, 1, 1, rand);
    g.backend.inject(f1);
    expect(g.device.stats.drops.rxBufferTooSmall).toBe(1);
    const u1 = g.rx.getUsed();
    expect(u1).toEqual({ token: 1, len: 0 });
    // No buffer now: the next frame waits, then goes out as soon as the guest refills.
    const f2 = udpFrame(PEER, MAC, 1514, 2, 1, rand);
    g.backend.inject(f2);
    expect(g.device.pendingFrames()).toBe(1);
    g.rx.add([], [{ addr: big, len: 1526 }], 2);
    g.rx.kick();
    expect(g.device.pendingFrames()).toBe(0);
    const u2 = g.rx.getUsed();
    expect(u2).toEqual({ token: 2, len: 12 + 1514 });
    const got = new Uint8Array(1514);
    g.memory.read(big + 12, got);
    expectSameBytes(got, f2);
    // num_buffers is little-endian 1 at offset 10 (v86 wrote it big-endian).
    expect(g.memory.readU8(big + 10)).toBe(1);
    expect(g.memory.readU8(big + 11)).toBe(0);
    expect(g.device.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
  });

  it("frames beyond the bounded RX backlog are dropped and counted", () => {
    const backend = new LoopbackBackend({ mode: "sink" });
    const d = netDevice(backend, { device: { mac: MAC, ctrlVq: false, rxPending: 4 } });
    const dev = initVirtioDevice<number>(d.transport, {
      wanted: featureMask(VIRTIO_F_VERSION_1),
      memory: d.memory,
      allocator: d.allocator,
      queueSizes: [16, 16],
    });
    expect(dev).not.toBeInstanceOf(DriverError);
    const rand = rng(3);
    for (let i = 0; i < 10; i++) backend.inject(udpFrame(PEER, MAC, 100, i, 1, rand));
    expect(d.device.pendingFrames()).toBe(4);
    expect(d.device.stats.drops.rxQueueFull).toBe(6);
  });

  it("malformed control commands and VQ_PAIRS_SET beyond max get VIRTIO_NET_ERR; the device keeps serving", async () => {
    const backend = new LoopbackBackend({ mode: "sink" });
    const g = netGuest(backend, { device: { mac: MAC, maxQueuePairs: 2 } });
    await settle();
    const d = g.driver;
    const u8 = (...b: number[]): Uint8Array => Uint8Array.from(b);
    expect(await d.control(VIRTIO_NET_CTRL_RX, 0, u8(1, 1))).toBe(VIRTIO_NET_ERR); // 2 data bytes
    expect(await d.control(VIRTIO_NET_CTRL_RX, 0)).toBe(VIRTIO_NET_ERR); // no data
    expect(await d.control(VIRTIO_NET_CTRL_RX, 9, u8(1))).toBe(VIRTIO_NET_ERR); // unknown command
    expect(
      await d.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, u8(1, 2, 3, 4, 5)),
    ).toBe(VIRTIO_NET_ERR);
    // A table that claims more entries than it carries.
    expect(
      await d.control(
        VIRTIO_NET_CTRL_MAC,
        VIRTIO_NET_CTRL_MAC_TABLE_SET,
        u8(5, 0, 0, 0, 0, 0, 0, 0),
      ),
    ).toBe(VIRTIO_NET_ERR);
    expect(
      await d.control(
        VIRTIO_NET_CTRL_MAC,
        VIRTIO_NET_CTRL_MAC_TABLE_SET,
        u8(0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0),
      ),
    ).toBe(VIRTIO_NET_ERR);
    expect(await d.control(VIRTIO_NET_CTRL_VLAN, 0, u8(1, 0))).toBe(VIRTIO_NET_ERR); // not offered
    expect(await d.control(77, 0)).toBe(VIRTIO_NET_ERR); // unknown class
    expect(await d.control(VIRTIO_NET_CTRL_ANNOUNCE, 0, u8(1))).toBe(VIRTIO_NET_ERR); // data on ACK
    const pairs = (n: number) => u8(n & 0xff, n >> 8);
    expect(await d.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, pairs(0))).toBe(
      VIRTIO_NET_ERR,
    );
    expect(await d.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, pairs(3))).toBe(
      VIRTIO_NET_ERR,
    );
    expect(
      await d.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, pairs(0x8000)),
    ).toBe(VIRTIO_NET_ERR);
    expect(await d.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u8(1))).toBe(
      VIRTIO_NET_ERR,
    );
    expect(await d.controlRaw(u8(VIRTIO_NET_CTRL_RX))).toBe(VIRTIO_NET_ERR); // truncated: 1 byte
    expect(await d.controlRaw(u8(VIRTIO_NET_CTRL_RX, 0, 1), 0)).toBe(-1); // no ack byte: returned empty
    const e = g.device.stats.controlErrors;
    expect(e.badLength).toBe(5);
    expect(e.unknownCommand).toBe(1);
    expect(e.badMacTable).toBe(2);
    expect(e.unknownClass).toBe(2);
    expect(e.badPairs).toBe(3);
    expect(e.truncated).toBe(1);
    expect(e.noAckByte).toBe(1);
    // Still serving: valid commands work and change behaviour.
    expect(await d.setQueuePairs(2)).toBe(true);
    expect(g.device.activeQueuePairs).toBe(2);
    expect(await d.control(VIRTIO_NET_CTRL_RX, 0, u8(0))).toBe(VIRTIO_NET_OK);
    expect(g.device.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
    expect(d.send(udpFrame(MAC, PEER, 80, 1, 1, rng(1)))).toBe(true);
    expect(backend.sent.length).toBeGreaterThan(0);
  });
});
