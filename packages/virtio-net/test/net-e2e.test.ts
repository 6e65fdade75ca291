import { EthernetSwitch, verifyTransportChecksum } from "@pvkit/platform";
import {
  featureMask,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
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
  readonly rxBufferSize?: number;
}

const CONFIGS: readonly Config[] = [
  {
    name: "MRG_RXBUF (256-byte buffers) + EVENT_IDX",
    mrg: true,
    pairs: 1,
    eventIdx: true,
    indirect: false,
    rxBufferSize: 256,
  },
  { name: "no MRG_RXBUF, no EVENT_IDX", mrg: false, pairs: 1, eventIdx: false, indirect: false },
  {
    name: "MQ 4 pairs + MRG_RXBUF + EVENT_IDX",
    mrg: true,
    pairs: 4,
    eventIdx: true,
    indirect: false,
  },
  {
    name: "MQ 3 pairs, no MRG, INDIRECT_DESC (split header)",
    mrg: false,
    pairs: 3,
    eventIdx: true,
    indirect: true,
  },
];

const MTU = 1500;

function pair(cfg: Config, transport: Transport, seed: number) {
  const sw = new EthernetSwitch();
  const without =
    (cfg.mrg ? 0n : featureMask(VIRTIO_NET_F_MRG_RXBUF)) |
    (cfg.eventIdx ? 0n : featureMask(VIRTIO_F_EVENT_IDX)) |
    (cfg.indirect ? 0n : featureMask(VIRTIO_F_INDIRECT_DESC));
  const mk = (i: number): NetGuest =>
    netGuest(sw.createPort(`g${i}`), {
      transport,
      device: { mac: new Uint8Array([0x52, 0x54, 0, 0, 0, i]), maxQueuePairs: cfg.pairs, mtu: MTU },
      driver: {
        withoutFeatures: without,
        splitHeader: cfg.indirect,
        ...(cfg.rxBufferSize === undefined ? {} : { rxBufferSize: cfg.rxBufferSize }),
      },
    });
  return { sw, a: mk(1), b: mk(2), rand: rng(seed) };
}

describe.each<Transport>(["mmio", "pci"])(
  "two guests on one EthernetSwitch over %s",
  (transport) => {
    it.each(CONFIGS)(
      "exchange every frame size 60…MTU+14 byte-exact, in order per flow: $name",
      async (cfg) => {
        const { sw, a, b, rand } = pair(cfg, transport, 0xc0ffee + cfg.pairs);
        await settle();
        expect(a.driver.activeQueuePairs).toBe(cfg.pairs);
        expect(b.device.activeQueuePairs).toBe(cfg.pairs);
        expect(a.driver.mtu).toBe(MTU);
        const sizes: number[] = [];
        for (let s = 60; s <= MTU + 14; s++) sizes.push(s);
        // Shuffle the sizes so that every batch mixes small and large frames.
        for (let i = sizes.length - 1; i > 0; i--) {
          const j = rand() % (i + 1);
          [sizes[i], sizes[j]] = [sizes[j]!, sizes[i]!];
        }
        const sent = new Map<string, Uint8Array>(); // "from:seq" → frame
        const flows = 8;
        const batch = 32;
        for (let at = 0; at < sizes.length; at += batch) {
          for (const [from, to, tag] of [
            [a, b, 1],
            [b, a, 2],
          ] as const) {
            for (let k = at; k < Math.min(at + batch, sizes.length); k++) {
              const f = udpFrame(
                from.driver.mac,
                to.driver.mac,
                sizes[k]!,
                k,
                1000 + (k % flows),
                rand,
              );
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
          const lastSeq = new Map<string, number>();
          const pairsUsed = new Set<number>();
          for (const r of rx.received) {
            const seq = seqOf(r.frame);
            expectSameBytes(r.frame, sent.get(`${tag}:${seq}`)!);
            expect(verifyTransportChecksum(r.frame)).toBe(true);
            // Frames of one flow arrive in the order they were sent, on one queue.
            const flow = `${seq % flows}`;
            const prev = lastSeq.get(flow) ?? -1;
            expect(seq).toBeGreaterThan(prev);
            lastSeq.set(flow, seq);
            pairsUsed.add(r.info.pair);
            if (!cfg.mrg) expect(r.info.buffers).toBe(1);
          }
          if (cfg.pairs > 1) expect(pairsUsed.size).toBeGreaterThan(1);
          if (cfg.rxBufferSize === 256)
            expect(rx.received.some((r) => r.info.buffers >= 6)).toBe(true);
        }
        for (const g of [a, b]) {
          expect(totalDrops(g.device)).toBe(0);
          expect(g.device.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
          expect(g.device.stats.txFrames).toBe(sizes.length);
        }
        if (cfg.indirect) expect(a.driver.txQueue(0).stats.indirect).toBeGreaterThan(0);
        expect(sw.forwards).toBeGreaterThan(0);
      },
    );
  },
);
