/**
 * virtio-net over packed virtqueues (§2.8): two guests on one EthernetSwitch, the
 * unchanged `VirtioNetDevice` and `VirtioNetDriver` with VIRTIO_F_RING_PACKED offered
 * (`ringPacked: true`), exchange every frame size byte-exact, on virtio-mmio and
 * virtio-pci, with mergeable buffers, multiqueue, EVENT_IDX and indirect tables on and off.
 */

import { EthernetSwitch, verifyTransportChecksum } from "@pvkit/platform";
import {
  featureMask,
  hasFeature,
  PackedDeviceQueue,
  PackedDriverQueue,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
} from "@pvkit/virtio-core";
import { VIRTIO_NET_F_MRG_RXBUF } from "@pvkit/virtio-net";
import { describe, expect, it } from "vitest";
import {
  expectSameBytes,
  type NetGuest,
  netGuest,
  rng,
  seqOf,
  settle,
  type Transport,
  totalDrops,
  udpFrame,
} from "./harness.js";

interface Config {
  readonly name: string;
  readonly mrg: boolean;
  readonly pairs: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
}

const CONFIGS: readonly Config[] = [
  { name: "MRG_RXBUF + EVENT_IDX", mrg: true, pairs: 1, eventIdx: true, indirect: false },
  { name: "no MRG_RXBUF, no EVENT_IDX", mrg: false, pairs: 1, eventIdx: false, indirect: false },
  {
    name: "MQ 3 pairs, INDIRECT_DESC, EVENT_IDX",
    mrg: false,
    pairs: 3,
    eventIdx: true,
    indirect: true,
  },
];

const MTU = 1500;

describe.each<Transport>(["mmio", "pci"])("virtio-net on packed rings over %s", (transport) => {
  it.each(CONFIGS)("two guests exchange every frame size byte-exact: $name", async (cfg) => {
    const sw = new EthernetSwitch();
    const without =
      (cfg.mrg ? 0n : featureMask(VIRTIO_NET_F_MRG_RXBUF)) |
      (cfg.eventIdx ? 0n : featureMask(VIRTIO_F_EVENT_IDX)) |
      (cfg.indirect ? 0n : featureMask(VIRTIO_F_INDIRECT_DESC));
    const mk = (i: number): NetGuest =>
      netGuest(sw.createPort(`g${i}`), {
        transport,
        device: {
          mac: new Uint8Array([0x52, 0x54, 0, 0, 0, i]),
          maxQueuePairs: cfg.pairs,
          mtu: MTU,
          ringPacked: true,
          queueSize: 64,
        },
        driver: { withoutFeatures: without, splitHeader: cfg.indirect, rxBufferSize: 512 },
      });
    const a = mk(1);
    const b = mk(2);
    const rand = rng(0xfacade + cfg.pairs);
    await settle();
    for (const g of [a, b]) {
      expect(hasFeature(g.device.negotiatedFeatures, VIRTIO_F_RING_PACKED)).toBe(true);
      expect(g.device.queues.every((q) => q instanceof PackedDeviceQueue)).toBe(true);
      expect(g.driver.txQueue(0)).toBeInstanceOf(PackedDriverQueue);
      expect(g.driver.activeQueuePairs).toBe(cfg.pairs);
    }
    const sizes: number[] = [];
    for (let s = 60; s <= MTU + 14; s += 7) sizes.push(s);
    for (let i = sizes.length - 1; i > 0; i--) {
      const j = rand() % (i + 1);
      [sizes[i], sizes[j]] = [sizes[j]!, sizes[i]!];
    }
    const sent = new Map<string, Uint8Array>();
    const batch = 24;
    for (let at = 0; at < sizes.length; at += batch) {
      for (const [from, to, tag] of [
        [a, b, 1],
        [b, a, 2],
      ] as const) {
        for (let k = at; k < Math.min(at + batch, sizes.length); k++) {
          const f = udpFrame(from.driver.mac, to.driver.mac, sizes[k]!, k, 1000 + (k % 8), rand);
          sent.set(`${tag}:${k}`, f);
          expect(from.driver.enqueue(f)).toBe(true);
        }
        from.driver.commit();
      }
      await settle();
    }
    await settle(5);
    for (const [rx, tag] of [
      [b, 1],
      [a, 2],
    ] as const) {
      expect(rx.received.length).toBe(sizes.length);
      for (const r of rx.received) {
        expectSameBytes(r.frame, sent.get(`${tag}:${seqOf(r.frame)}`)!);
        expect(verifyTransportChecksum(r.frame)).toBe(true);
      }
      if (cfg.mrg) expect(rx.received.some((r) => r.info.buffers >= 3)).toBe(true);
    }
    for (const g of [a, b]) {
      expect(totalDrops(g.device)).toBe(0);
      expect(g.device.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
      expect(g.device.stats.txFrames).toBe(sizes.length);
      // A ring wrapped (64-slot queues, hundreds of frames each way).
      expect(Math.max(...g.device.queues.map((q) => q.stats.used))).toBeGreaterThan(64);
    }
    if (cfg.indirect) expect(a.driver.txQueue(0).stats.indirect).toBeGreaterThan(0);
  });
});
