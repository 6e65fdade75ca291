/**
 * Worker entry of the `sab-cross-thread` target (bundled with `bundleWorker`). Two roles:
 *
 * - `driver`: a guest driving a virtio-net device in the host thread — every register
 *   access is an exit over the trap channel, the rings live in the shared guest RAM. It
 *   negotiates, sets up a receive and a transmit queue with raw rings (`MockSplitQueue`),
 *   keeps receive buffers posted, transmits `frames` broadcast frames (looped back by the
 *   host's back-end into its own receive queue), checks what comes back and reports;
 * - `scribbler`: a second guest thread writing garbage into both rings at the same time
 *   — descriptor fields, avail entries and index, used entries — with values confined to
 *   the slots of `sab-protocol.ts` or outside guest memory.
 *
 * @module
 */

import { parentPort, workerData as rawData } from "node:worker_threads";
import { GuestMemory, TrapChannel, type TrapPort } from "@pvkit/platform";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VirtioMmio,
} from "@pvkit/virtio-core";
import { MockSplitQueue } from "@pvkit/virtio-core/testing";
import { VIRTIO_NET_F_MRG_RXBUF } from "@pvkit/virtio-net";
import {
  CTL_SCRIBBLES,
  CTL_STOP,
  frameBytes,
  OP_READ,
  OP_WRITE,
  RX_AREA,
  RX_RING,
  SAB_MEM,
  SAB_MMIO_BASE,
  SAB_QSIZE,
  type SabDriverReport,
  type SabWorkerCase,
  SLOT,
  SLOT_USE,
  SLOTS,
  slotBases,
  TX_AREA,
  TX_RING,
  xorshift,
  ZONE_AREA,
} from "./sab-protocol.js";

const HDR = 12;

function guestMemory(c: SabWorkerCase): GuestMemory {
  return new GuestMemory([{ base: 0, size: SAB_MEM, backing: c.memory, backingOffset: c.guard }]);
}

function driver(port: TrapPort, c: SabWorkerCase): number {
  const mem = guestMemory(c);
  const ctl = new Int32Array(c.control);
  const rand = xorshift(c.seed);
  const rd = (off: number): number => port.call(OP_READ, SAB_MMIO_BASE + off, 4) >>> 0;
  const wr = (off: number, v: number): void => {
    port.call(OP_WRITE, SAB_MMIO_BASE + off, 4, v >>> 0);
  };
  const ok = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
  wr(VirtioMmio.STATUS, 0);
  wr(VirtioMmio.STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  wr(VirtioMmio.STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  const features =
    (1n << BigInt(VIRTIO_F_VERSION_1)) | (c.mrg ? 1n << BigInt(VIRTIO_NET_F_MRG_RXBUF) : 0n);
  for (const page of [0, 1]) {
    wr(VirtioMmio.DRIVER_FEATURES_SEL, page);
    wr(VirtioMmio.DRIVER_FEATURES, Number((features >> BigInt(32 * page)) & 0xffff_ffffn));
  }
  wr(VirtioMmio.STATUS, ok);
  const queues = [RX_RING, TX_RING].map((base, i) => {
    const q = new MockSplitQueue(mem, SAB_QSIZE, { base });
    wr(VirtioMmio.QUEUE_SEL, i);
    wr(VirtioMmio.QUEUE_NUM, SAB_QSIZE);
    wr(VirtioMmio.QUEUE_DESC_LOW, q.descAddr);
    wr(VirtioMmio.QUEUE_DRIVER_LOW, q.availAddr);
    wr(VirtioMmio.QUEUE_DEVICE_LOW, q.usedAddr);
    wr(VirtioMmio.QUEUE_READY, 1);
    return q;
  });
  wr(VirtioMmio.STATUS, ok | VIRTIO_CONFIG_S_DRIVER_OK);
  const [rx, tx] = queues as [MockSplitQueue, MockSplitQueue];
  const slotOf = new Map<number, number>();
  const post = (slot: number): void => {
    try {
      const head = rx.addChain([{ addr: RX_AREA + slot * SLOT, len: SLOT_USE, writable: true }]);
      slotOf.set(head, slot);
    } catch {
      // no free descriptor: the scribbler made the device return heads we never posted
    }
  };
  for (let i = 0; i < SAB_QSIZE; i++) post(i);
  wr(VirtioMmio.QUEUE_NOTIFY, 0);

  let sent = 0;
  let received = 0;
  let corrupt = 0;
  let status = rd(VirtioMmio.STATUS);
  const reap = (): void => {
    tx.readUsed();
    const got = rx.readUsed();
    let reposted = false;
    for (const e of got) {
      const slot = slotOf.get(e.id);
      if (slot === undefined) continue;
      slotOf.delete(e.id);
      received++;
      const len = Math.min(e.len, SLOT_USE) - HDR;
      const view = mem.slice(RX_AREA + slot * SLOT + HDR, Math.max(len, 0));
      const want = len >= 12 && view instanceof Uint8Array ? frameBytes(view[11]!, len) : null;
      if (want === null || !(view instanceof Uint8Array) || view.some((b, i) => b !== want[i]))
        corrupt++;
      post(slot);
      reposted = true;
    }
    if (reposted) wr(VirtioMmio.QUEUE_NOTIFY, 0);
  };
  for (let n = 0; n < c.frames; n++) {
    status = rd(VirtioMmio.STATUS);
    if (status & VIRTIO_CONFIG_S_NEEDS_RESET) break;
    const len = 60 + (rand() % (1514 - 60));
    const slot = TX_AREA + (n % SLOTS) * SLOT;
    mem.fill(slot, HDR, 0);
    mem.write(slot + HDR, frameBytes(n, len));
    try {
      tx.addChain([{ addr: slot, len: HDR + len }]);
      sent++;
    } catch {
      // out of descriptors
    }
    wr(VirtioMmio.QUEUE_NOTIFY, 1);
    reap();
  }
  for (let i = 0; i < 4; i++) reap();
  status = rd(VirtioMmio.STATUS);
  Atomics.store(ctl, CTL_STOP, 1);
  const report: SabDriverReport = {
    sent,
    received,
    corrupt,
    needsReset: (status & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0,
    status,
  };
  parentPort?.postMessage(report);
  return 0;
}

function scribbler(c: SabWorkerCase): void {
  const dv = new DataView(c.memory, c.guard, SAB_MEM);
  const ctl = new Int32Array(c.control);
  const rand = xorshift(c.seed ^ 0x5bd1_e995);
  const addrs = [...slotBases(RX_AREA), ...slotBases(TX_AREA), ...slotBases(ZONE_AREA)];
  const parts = [1, 2, 4].filter((b) => c.parts & b);
  if (parts.length === 0) parts.push(1);
  const spin = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < c.scribbles && Atomics.load(ctl, CTL_STOP) === 0; i++) {
    const ring = rand() & 1 ? RX_RING : TX_RING;
    const l = MockSplitQueue.layout(SAB_QSIZE, ring);
    const part = parts[rand() % parts.length]!;
    if (part === 1) {
      const at = l.desc + 16 * (rand() % SAB_QSIZE);
      switch (rand() % 4) {
        case 0: {
          const r = rand() % 12;
          // A slot base, or outside guest memory (past its end, or above 4 GiB).
          dv.setUint32(at, r === 0 ? SAB_MEM + 0x100 : addrs[rand() % addrs.length]!, true);
          dv.setUint32(at + 4, r === 1 ? 1 : 0, true);
          break;
        }
        case 1:
          dv.setUint32(at + 8, rand() % 4 === 0 ? 0 : rand() % (SLOT_USE + 1), true);
          break;
        case 2:
          dv.setUint16(at + 12, [0, 1, 2, 3, 4, 6][rand() % 6]!, true);
          break;
        default:
          dv.setUint16(at + 14, rand() % (SAB_QSIZE + 2), true);
      }
    } else if (part === 2) {
      if (rand() % 3 === 0) {
        const idx = dv.getUint16(l.avail + 2, true);
        dv.setUint16(
          l.avail + 2,
          rand() % 4 === 0 ? rand() & 0xffff : (idx + (rand() % 3)) & 0xffff,
          true,
        );
      } else {
        dv.setUint16(l.avail + 4 + 2 * (rand() % SAB_QSIZE), rand() % (SAB_QSIZE + 2), true);
      }
    } else {
      const at = l.used + 4 + 8 * (rand() % SAB_QSIZE);
      dv.setUint32(at + (rand() & 1 ? 4 : 0), rand(), true);
    }
    Atomics.add(ctl, CTL_SCRIBBLES, 1);
    // Let the other threads run between scribbles now and then.
    if (rand() % 8 === 0) Atomics.wait(spin, 0, 0, rand() % 2);
  }
}

const wd = rawData as { channel?: SharedArrayBuffer; data?: SabWorkerCase } & SabWorkerCase;
if (wd.channel !== undefined) {
  const c = wd.data!;
  TrapChannel.attach(wd.channel)
    .port()
    .run((port) => driver(port, c));
} else {
  scribbler(wd);
}
