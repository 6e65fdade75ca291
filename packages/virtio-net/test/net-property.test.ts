/**
 * Property test: virtio-net against a hostile (raw, unvalidated) driver. Random TX chains
 * and random control commands never throw, never touch guest memory they were not given,
 * always come back exactly once, and leave the device serving; frames reach the back-end
 * byte-exact only when the device's documented TX rules (§5.1.6.2) allow it.
 */
import {
  completeChecksum,
  type GuestMemory,
  LoopbackBackend,
  NET_META_NEEDS_CSUM,
} from "@pvkit/platform";
import {
  featureMask,
  VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
  VirtioMmio as R,
} from "@pvkit/virtio-core";
import {
  type ChainBuffer,
  checkCanary,
  fillCanary,
  type MemoryRange,
  rawMmioGuest,
} from "@pvkit/virtio-core/testing";
import {
  type NetControlError,
  type NetDropReason,
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MAC_TABLE_SET,
  VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_CTRL_RX_NOBCAST,
  VIRTIO_NET_CTRL_RX_PROMISC,
  VIRTIO_NET_ERR,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX,
  VIRTIO_NET_F_CTRL_RX_EXTRA,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_OK,
  VirtioNetDevice,
} from "@pvkit/virtio-net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { rng, settle, totalDrops, udpFrame } from "./harness.js";

const QSIZE = 16;
const MTU = 1500;
const HDR = 12;
const RX_RING = 0x1000;
const TX_RING = 0x2000;
const CTRL_RING = 0x3000;
const TX_BUF = 0x1_0000; // five regions of TX_STRIDE bytes
const TX_STRIDE = 0x1_2000; // > 70000: regions never overlap
const CTRL_BUF = 0x8_0000; // five regions of CTRL_STRIDE bytes
const CTRL_STRIDE = 0x1000;
const GOOD_BUF = 0xa_0000; // the well-formed frame after each case
const CANARY = 0xc3;
const MAC = new Uint8Array([0x52, 0x54, 0, 0, 0, 9]);
const PEER = new Uint8Array([0x52, 0x54, 0, 0, 0, 8]);

interface Negotiated {
  readonly csum: boolean;
  readonly rxExtra: boolean;
  readonly announce: boolean;
  readonly macAddr: boolean;
}

/** A live virtio-net device (rx 0, tx 1, ctrl 2) behind virtio-mmio, driven by raw queues. */
function rawRig(neg: Negotiated, checksumOffload: boolean) {
  const backend = new LoopbackBackend({ mode: "sink", checksumOffload });
  const device = new VirtioNetDevice({
    backend,
    mac: MAC,
    mtu: MTU,
    queueSize: QSIZE,
    ctrlQueueSize: QSIZE,
    mrgRxbuf: false,
  });
  let features = featureMask(
    VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_CTRL_VQ,
    VIRTIO_NET_F_CTRL_RX,
  );
  if (neg.csum) features |= featureMask(VIRTIO_NET_F_CSUM);
  if (neg.rxExtra) features |= featureMask(VIRTIO_NET_F_CTRL_RX_EXTRA);
  if (neg.announce) features |= featureMask(VIRTIO_NET_F_GUEST_ANNOUNCE);
  if (neg.macAddr) features |= featureMask(VIRTIO_NET_F_CTRL_MAC_ADDR);
  const g = rawMmioGuest(device, {
    features,
    queues: [RX_RING, TX_RING, CTRL_RING].map((base) => ({ base, size: QSIZE })),
  });
  const memory = g.memory;
  const queues = g.queues;
  const w = g.write;
  const r = g.read;
  const tx = queues[1]!;
  const ctrl = queues[2]!;
  const rings = queues.flatMap((q) => q.ringRanges());
  const mockOf = (qi: 1 | 2) => (qi === 1 ? tx : ctrl);
  /** Notifies queue `qi`, lets the device run; returns the used elements published. */
  const kick = async (qi: 1 | 2) => {
    w(R.QUEUE_NOTIFY, qi);
    await settle(1);
    return mockOf(qi).readUsed();
  };
  /** Posts a chain on queue `qi` and kicks it. */
  const submit = async (qi: 1 | 2, buffers: ChainBuffer[]) => {
    const head = mockOf(qi).addChain(buffers);
    return { head, used: await kick(qi) };
  };
  return { memory, backend, device, rings, tx, ctrl, kick, submit, r };
}

function u16(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8);
}
function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/** What the device does with a TX chain whose readable bytes are `s` (§5.1.6.2; module doc). */
function txOutcome(s: Uint8Array, csum: boolean): NetDropReason | "sent" {
  if (s.length === 0) return "txNoHeader";
  if (s.length < HDR) return "txShortHeader";
  const len = s.length - HDR;
  if (len > MTU + 14 + 4) return "txOversize";
  if (len < 14) return "txRunt";
  const type = (s[HDR + 12]! << 8) | s[HDR + 13]!;
  if (len > MTU + 14 && type !== 0x8100 && type !== 0x88a8) return "txOversize";
  if (s[1] !== 0) return "txBadGso";
  if (csum && s[0]! & 1) {
    const start = u16(s, 6);
    const off = u16(s, 8);
    if (start >= len || start + off + 2 > len) return "txBadChecksum";
  }
  return "sent";
}

/** The control-queue answer the device documents for a command with readable bytes `s`. */
function ctrlOutcome(s: Uint8Array, neg: Negotiated): NetControlError | null {
  if (s.length < 2) return "truncated";
  const cls = s[0]!;
  const cmd = s[1]!;
  const data = s.subarray(2);
  switch (cls) {
    case VIRTIO_NET_CTRL_RX:
      if (cmd > VIRTIO_NET_CTRL_RX_NOBCAST) return "unknownCommand";
      if (cmd >= 2 && !neg.rxExtra) return "notNegotiated";
      return data.length === 1 ? null : "badLength";
    case VIRTIO_NET_CTRL_MAC:
      if (cmd === VIRTIO_NET_CTRL_MAC_ADDR_SET) {
        if (!neg.macAddr) return "notNegotiated";
        return data.length === 6 ? null : "badLength";
      }
      if (cmd === VIRTIO_NET_CTRL_MAC_TABLE_SET) {
        if (data.length < 8) return "badMacTable";
        const nUni = u32(data, 0);
        if (8 + 6 * nUni > data.length) return "badMacTable";
        const nMulti = u32(data, 4 + 6 * nUni);
        return 8 + 6 * (nUni + nMulti) === data.length ? null : "badMacTable";
      }
      return "unknownCommand";
    case VIRTIO_NET_CTRL_ANNOUNCE:
      if (!neg.announce) return "notNegotiated";
      if (cmd !== 0) return "unknownCommand";
      return data.length === 0 ? null : "badLength";
    case 4: // MQ: not offered (one queue pair)
      return "notNegotiated";
    default:
      return "unknownClass"; // VLAN (2) and GUEST_OFFLOADS (5) are not offered either
  }
}

/** Splits `total` bytes over `n` pieces at positions drawn from `rand`. */
function split(total: number, n: number, rand: () => number): number[] {
  if (n === 0) return [];
  const cuts = Array.from({ length: n - 1 }, () => rand() % (total + 1)).sort((a, b) => a - b);
  const out: number[] = [];
  let prev = 0;
  for (const c of [...cuts, total]) {
    out.push(c - prev);
    prev = c;
  }
  return out;
}

/** Readable bytes of a chain laid out in `bufs`, concatenated. */
function gather(memory: GuestMemory, bufs: readonly ChainBuffer[]): Uint8Array {
  const parts = bufs.filter((b) => !b.writable);
  const out = new Uint8Array(parts.reduce((a, b) => a + b.len, 0));
  let at = 0;
  for (const b of parts) {
    out.set(memory.slice(Number(b.addr), b.len) as Uint8Array, at);
    at += b.len;
  }
  return out;
}

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));
const ranges = (bufs: readonly ChainBuffer[]): MemoryRange[] =>
  bufs.filter((b) => b.len > 0).map((b) => ({ addr: Number(b.addr), len: b.len }));
const snap = (memory: GuestMemory, rs: readonly MemoryRange[]): Uint8Array[] =>
  rs.map((x) => (memory.slice(x.addr, x.len) as Uint8Array).slice());

const interesting = [0, 1, 11, 12, 13, 60, 1514, MTU + 12, MTU + 13];
const lenArb = fc.oneof(
  { arbitrary: fc.constantFrom(...interesting), weight: 4 },
  { arbitrary: fc.nat(2000), weight: 2 },
  { arbitrary: fc.nat(70000), weight: 1 },
);
const txArb = fc.record({
  descs: fc.array(fc.record({ len: lenArb, writable: fc.boolean() }), {
    minLength: 1,
    maxLength: 5,
  }),
  // Sometimes force the readable total to a boundary (split over the readable descriptors).
  total: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 2 },
    {
      arbitrary: fc.constantFrom(
        0,
        11,
        12,
        12 + 13,
        12 + 14,
        12 + MTU + 14,
        12 + MTU + 15,
        12 + MTU + 18,
        12 + MTU + 19,
      ),
      weight: 1,
    },
  ),
  flags: fc.oneof(fc.constantFrom(0, 1, 2, 3), fc.nat(255)),
  gso: fc.oneof(
    { arbitrary: fc.constant(0), weight: 4 },
    fc.constantFrom(1, 3, 4, 0x80),
    fc.nat(255),
  ),
  hdrLen: fc.nat(0xffff),
  gsoSize: fc.nat(0xffff),
  csumStart: fc.oneof(fc.nat(80), fc.nat(0xffff)),
  csumOffset: fc.oneof(fc.constantFrom(6, 16), fc.nat(0xffff)),
  numBuffers: fc.nat(0xffff),
  ethertype: fc.oneof(fc.constantFrom(0x0800, 0x8100, 0x88a8, 0x86dd), fc.nat(0xffff)),
  seed: fc.nat(),
});
/** Random bytes of a length the commands care about (0, 1, 2, 6) or any. */
const bytesArb = fc.oneof(
  {
    arbitrary: fc
      .constantFrom(0, 1, 2, 6)
      .chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
    weight: 3,
  },
  { arbitrary: fc.uint8Array({ maxLength: 12 }), weight: 1 },
  { arbitrary: fc.uint8Array({ minLength: 100, maxLength: 300 }), weight: 1 },
);
/** A MAC table (§5.1.6.5.2): entries claimed vs carried, sometimes with trailing bytes. */
const macTableArb = fc
  .record({
    nUni: fc.oneof(fc.nat(3), fc.constant(0xffff_ffff), fc.constant(0x2aaa_aaab)),
    nMulti: fc.oneof(fc.nat(3), fc.constant(0xffff_ffff)),
    uniLie: fc.oneof({ arbitrary: fc.constant(0), weight: 3 }, fc.integer({ min: -1, max: 2 })),
    multiLie: fc.oneof({ arbitrary: fc.constant(0), weight: 3 }, fc.integer({ min: -1, max: 2 })),
    extra: fc.oneof({ arbitrary: fc.constant(0), weight: 3 }, fc.nat(7)),
    fill: fc.nat(255),
  })
  .map(({ nUni, nMulti, uniLie, multiLie, extra, fill }) => {
    const uni = Math.max(0, Math.min(nUni, 3) + uniLie);
    const multi = Math.max(0, Math.min(nMulti, 3) + multiLie);
    const b = new Uint8Array(8 + 6 * (uni + multi) + extra).fill(fill);
    const v = new DataView(b.buffer);
    v.setUint32(0, nUni, true);
    v.setUint32(4 + 6 * uni, nMulti, true);
    return b;
  });
/** A command shaped like a real one (the right class, command and payload size), mostly. */
const shapedArb = fc
  .constantFrom(0, 1, 3, 4)
  .chain((cls) =>
    fc
      .tuple(
        fc.constant(cls),
        cls === 1 ? fc.constantFrom(0, 1) : cls === 0 ? fc.nat(6) : fc.nat(1),
        cls === 0
          ? fc.uint8Array({ minLength: 1, maxLength: 1 })
          : cls === 1
            ? fc.oneof(macTableArb, fc.uint8Array({ minLength: 6, maxLength: 6 }))
            : cls === 3
              ? fc.constant(new Uint8Array(0))
              : fc.uint8Array({ minLength: 2, maxLength: 2 }),
      )
      .map(([c, cmd, payload]) => ({ cls: c, cmd, payload })),
  );
const ctrlArb = fc.record({
  command: fc.oneof(
    { arbitrary: shapedArb, weight: 1 },
    {
      arbitrary: fc.record({
        cls: fc.oneof({ arbitrary: fc.constantFrom(0, 1, 2, 3, 4, 5), weight: 4 }, fc.nat(255)),
        cmd: fc.oneof({ arbitrary: fc.constantFrom(0, 1, 2, 5, 6), weight: 4 }, fc.nat(255)),
        payload: fc.oneof({ arbitrary: bytesArb, weight: 2 }, macTableArb),
      }),
      weight: 1,
    },
  ),
  truncate: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 8 },
    { arbitrary: fc.constantFrom(0, 1), weight: 1 },
  ),
  readable: fc.integer({ min: 0, max: 3 }),
  writable: fc.oneof(
    { arbitrary: fc.constant<number[]>([1]), weight: 3 },
    { arbitrary: fc.array(fc.constantFrom<number>(0, 1, 2, 8), { maxLength: 2 }), weight: 1 },
  ),
  seed: fc.nat(),
});

describe("virtio-net against a hostile driver: property", () => {
  it("random TX chains and control commands: no throw, no stray writes, every chain back once, byte-exact frames, counters add up, keeps serving", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          csum: fc.boolean(),
          rxExtra: fc.boolean(),
          announce: fc.boolean(),
          macAddr: fc.boolean(),
        }),
        fc.boolean(),
        txArb,
        fc.oneof(
          { arbitrary: fc.constant(undefined), weight: 1 },
          { arbitrary: ctrlArb, weight: 4 },
        ),
        async (neg, offload, t, c) => {
          const rig = rawRig(neg, offload);
          const { memory, device, backend } = rig;
          const rand = rng(t.seed + 1);

          // ── TX ──
          let descs = t.descs;
          if (t.total !== undefined) {
            if (!descs.some((d) => !d.writable))
              descs = [{ ...descs[0]!, writable: false }, ...descs.slice(1)];
            const nr = descs.filter((d) => !d.writable).length;
            const parts = split(t.total, nr, rand);
            let k = 0;
            descs = descs.map((d) => (d.writable ? d : { ...d, len: parts[k++]! }));
          }
          const ordered = [...descs.filter((d) => !d.writable), ...descs.filter((d) => d.writable)];
          const chain: ChainBuffer[] = ordered.map((d, i) => ({
            addr: TX_BUF + i * TX_STRIDE,
            len: d.len,
            writable: d.writable,
          }));
          fillCanary(memory, rig.rings, CANARY);
          // The readable stream: the header, then frame bytes (ethertype at frame offset 12).
          const rl = chain.filter((b) => !b.writable).reduce((a, b) => a + b.len, 0);
          const stream = new Uint8Array(rl);
          for (let i = 0; i < rl; i++) stream[i] = rand() & 0xff;
          const hdr = new Uint8Array(HDR);
          const hv = new DataView(hdr.buffer);
          hv.setUint8(0, t.flags);
          hv.setUint8(1, t.gso);
          hv.setUint16(2, t.hdrLen, true);
          hv.setUint16(4, t.gsoSize, true);
          hv.setUint16(6, t.csumStart, true);
          hv.setUint16(8, t.csumOffset, true);
          hv.setUint16(10, t.numBuffers, true);
          stream.set(hdr.subarray(0, Math.min(HDR, rl)));
          if (rl >= HDR + 14) {
            stream[HDR + 12] = t.ethertype >> 8;
            stream[HDR + 13] = t.ethertype & 0xff;
          }
          let at = 0;
          for (const b of chain) {
            if (b.writable) {
              memory.fill(Number(b.addr), b.len, 0x5a);
              continue;
            }
            memory.write(Number(b.addr), stream.subarray(at, at + b.len));
            at += b.len;
          }
          const bufRanges = ranges(chain);
          const before = snap(memory, bufRanges);
          const sentBefore = backend.sent.length;
          const head = rig.tx.addChain(chain);
          // The driver's parts of every ring (descriptor tables, available rings).
          const driverRings = rig.rings.filter((_, i) => i % 3 !== 2);
          const ringsBefore = snap(memory, driverRings);
          const used = await rig.kick(1);
          expect(checkCanary(memory, [...rig.rings, ...bufRanges], CANARY)).toEqual([]);
          // TX buffers (readable or not) are never written; nor are the driver's rings: the
          // used ring is the only guest memory TX writes.
          const after = snap(memory, bufRanges);
          expect(before.every((b, i) => same(b, after[i]!))).toBe(true);
          const ringsAfter = snap(memory, driverRings);
          expect(ringsBefore.every((b, i) => same(b, ringsAfter[i]!))).toBe(true);
          // Well-formed at the ring level: never NEEDS_RESET; back exactly once, length 0.
          expect(rig.r(R.STATUS) & NEEDS_RESET).toBe(0);
          expect(device.status & NEEDS_RESET).toBe(0);
          expect(used).toEqual([{ id: head, len: 0 }]);
          const want = txOutcome(stream, neg.csum);
          expect(same(gather(memory, chain), stream)).toBe(true);
          if (want === "sent") {
            expect(backend.sent.length).toBe(sentBefore + 1);
            const got = backend.sent.at(-1)!;
            const len = rl - HDR;
            expect(len >= 14 && len <= MTU + 18).toBe(true);
            const expected = stream.slice(HDR);
            const needsCsum = neg.csum && (t.flags & 1) !== 0;
            if (needsCsum && offload)
              expect(got.meta).toEqual({
                flags: NET_META_NEEDS_CSUM,
                csumStart: t.csumStart,
                csumOffset: t.csumOffset,
              });
            else {
              expect(got.meta).toBeNull();
              if (needsCsum) completeChecksum(expected, t.csumStart, t.csumOffset);
            }
            expect(same(got.frame, expected)).toBe(true);
            expect(device.stats.txFrames).toBe(1);
            expect(totalDrops(device)).toBe(0);
          } else {
            expect(backend.sent.length).toBe(sentBefore);
            expect(device.stats.txFrames).toBe(0);
            expect(device.stats.drops[want]).toBe(1);
            expect(totalDrops(device)).toBe(1);
          }
          expect(device.stats.txFrames + totalDrops(device)).toBe(1);

          // ── Control ──
          if (c !== undefined) {
            const crand = rng(c.seed + 1);
            let bytes = Uint8Array.from([c.command.cls, c.command.cmd, ...c.command.payload]);
            if (c.truncate !== undefined) bytes = bytes.subarray(0, c.truncate);
            let readable = Math.max(c.readable, bytes.length > 0 ? 1 : 0);
            if (readable === 0 && c.writable.length === 0) readable = 1; // a chain needs a buffer
            const lens = split(bytes.length, readable, crand);
            const cchain: ChainBuffer[] = [
              ...lens.map((len, i) => ({ addr: CTRL_BUF + i * CTRL_STRIDE, len })),
              ...c.writable.map((len, i) => ({
                addr: CTRL_BUF + (3 + i) * CTRL_STRIDE,
                len,
                writable: true,
              })),
            ];
            fillCanary(memory, rig.rings, CANARY);
            let off = 0;
            for (const b of cchain) {
              if (b.writable) memory.fill(Number(b.addr), b.len, 0xee);
              else {
                memory.write(Number(b.addr), bytes.subarray(off, off + b.len));
                off += b.len;
              }
            }
            const cr = ranges(cchain);
            const okBefore = device.stats.controlOk;
            const errBefore = { ...device.stats.controlErrors };
            const { head: ch, used: cu } = await rig.submit(2, cchain);
            expect(checkCanary(memory, [...rig.rings, ...cr], CANARY)).toEqual([]);
            expect(same(gather(memory, cchain), bytes)).toBe(true);
            // The ack goes into the first writable byte; the other writable bytes stay as they were.
            const ackAt = cchain.find((b) => b.writable && b.len > 0);
            const want = ackAt === undefined ? ("noAckByte" as const) : ctrlOutcome(bytes, neg);
            // No writable byte: counted noAckByte and returned with used length 0 — not NEEDS_RESET.
            expect(device.status & NEEDS_RESET).toBe(0);
            expect(cu).toEqual([{ id: ch, len: ackAt === undefined ? 0 : 1 }]);
            for (const b of cchain.filter((x) => x.writable && x.len > 0)) {
              const got = memory.slice(Number(b.addr), b.len) as Uint8Array;
              const exp = new Uint8Array(b.len).fill(0xee);
              if (b === ackAt) exp[0] = want === null ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
              expect(same(got, exp)).toBe(true);
            }
            if (want === null) expect(device.stats.controlOk).toBe(okBefore + 1);
            else {
              expect(device.stats.controlOk).toBe(okBefore);
              expect(device.stats.controlErrors[want]).toBe(errBefore[want] + 1);
            }
            const errs = Object.values(device.stats.controlErrors).reduce((a, b) => a + b, 0);
            const errsBefore = Object.values(errBefore).reduce((a, b) => a + b, 0);
            expect(errs - errsBefore + device.stats.controlOk - okBefore).toBe(1);
          }

          // ── Still serving ──
          const good = udpFrame(MAC, PEER, 100, 1, 1, rng(5));
          memory.fill(GOOD_BUF, HDR, 0);
          memory.write(GOOD_BUF + HDR, good);
          const n0 = backend.sent.length;
          const g = await rig.submit(1, [{ addr: GOOD_BUF, len: HDR + good.length }]);
          expect(g.used).toEqual([{ id: g.head, len: 0 }]);
          expect(backend.sent.length).toBe(n0 + 1);
          expect(same(backend.sent.at(-1)!.frame, good)).toBe(true);
          expect(device.stats.txFrames + totalDrops(device)).toBe(2);
          memory.write(
            CTRL_BUF,
            Uint8Array.from([VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, 1]),
          );
          memory.writeU8(CTRL_BUF + 3 * CTRL_STRIDE, 0xee);
          const p = await rig.submit(2, [
            { addr: CTRL_BUF, len: 3 },
            { addr: CTRL_BUF + 3 * CTRL_STRIDE, len: 1, writable: true },
          ]);
          expect(p.used).toEqual([{ id: p.head, len: 1 }]);
          expect(memory.readU8(CTRL_BUF + 3 * CTRL_STRIDE)).toBe(VIRTIO_NET_OK);
          expect(device.status & NEEDS_RESET).toBe(0);
        },
      ),
      { seed: 0x7e7, numRuns: 200 },
    );
  }, 20_000);
});
