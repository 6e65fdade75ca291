/**
 * virtio-net through the whole stack, in-process: `VirtioNetDriver` → virtio-mmio on a
 * `Bus` → `VirtioNetDevice` → a back-end. TX: the guest sends frames to a back-end that
 * discards them. RX: the back-end hands frames to the device, which writes them into the
 * guest's buffers; the guest takes them in its NAPI poll. Interrupts are delivered a
 * microtask after the exit that raised them. Frames of 64 and 1514 bytes, in batches of
 * 1, 32 and 256 frames between yields to the event loop, with and without EVENT_IDX.
 * Exits are every register access (notifications, interrupt status reads and acks).
 *
 * @module
 */

import { virtioNetRig, yieldTurns } from "../net-rig.js";
import type { ResultCheck, Suite, SuiteOptions, SuiteResult } from "../suite.js";

/** Target: exits per packet with EVENT_IDX and batches of 256. */
export const EXITS_TARGET = 0.05;

interface Measured {
  readonly packets: number;
  readonly seconds: number;
  readonly exits: number;
  readonly notifies: number;
  readonly interrupts: number;
  readonly drops: number;
}

async function measure(
  dir: "tx" | "rx",
  size: number,
  batch: number,
  eventIdx: boolean,
  seconds: number,
): Promise<Measured> {
  const r = virtioNetRig(eventIdx, "mmio");
  await new Promise((res) => setImmediate(res));
  const frame = new Uint8Array(size);
  frame.set(r.mac, 0); // to the NIC's MAC
  frame.set([0x02, 0, 0, 0, 0, 1], 6);
  frame[12] = 0x88;
  frame[13] = 0xb5;
  r.bus.resetStats();
  r.irq.resetStats();
  const n0 = r.notifications();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    for (let k = 0; k < 16; k++) {
      if (dir === "tx") {
        for (let i = 0; i < batch; i++) {
          if (!r.enqueue(frame)) break;
        }
        r.commit();
      } else {
        const e = r.backend.endpoint!;
        for (let i = 0; i < batch; i++) e.receive(frame, null);
      }
      await yieldTurns();
    }
  }
  await new Promise((res) => setImmediate(res));
  const secs = (performance.now() - t0) / 1000;
  const drops = r.drops();
  const done = dir === "tx" ? r.backend.stats.txFrames : r.received();
  return {
    packets: done,
    seconds: secs,
    exits: r.bus.exits,
    notifies: r.notifications() - n0,
    interrupts: r.irq.raises,
    drops,
  };
}

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

async function run(options: SuiteOptions): Promise<SuiteResult> {
  const seconds = options.quick ? 0.05 : Math.min(1, Math.max(0.3, options.maxTime / 4));
  const rows: string[][] = [];
  const data: Record<string, Measured> = {};
  const checks: ResultCheck[] = [];
  await measure("tx", 64, 32, true, 0.1); // warm-up
  await measure("rx", 64, 32, true, 0.1);
  for (const dir of ["tx", "rx"] as const) {
    for (const size of [64, 1514]) {
      for (const eventIdx of [true, false]) {
        for (const batch of [1, 32, 256]) {
          const m = await measure(dir, size, batch, eventIdx, seconds);
          const pps = m.packets / m.seconds;
          const key = `${dir}-${size}-${eventIdx ? "eventidx" : "noeventidx"}-b${batch}`;
          data[key] = m;
          options.log(`${key}: ${fmt(pps)} pkt/s, ${fmt(m.exits / m.packets, 4)} exits/pkt`);
          rows.push([
            dir.toUpperCase(),
            `${size}`,
            eventIdx ? "on" : "off",
            `${batch}`,
            fmt(pps),
            fmt((pps * size * 8) / 1e9, 2),
            fmt(m.exits / m.packets, 4),
            fmt(m.notifies / m.packets, 4),
            fmt(m.interrupts / m.packets, 4),
            fmt(m.drops),
          ]);
          if (eventIdx && batch === 256) {
            const v = m.exits / m.packets;
            checks.push({
              name: `${dir.toUpperCase()} ${size} B, EVENT_IDX, batch 256: exits/packet ≤ ${EXITS_TARGET}`,
              value: v,
              limit: EXITS_TARGET,
              unit: "exits/pkt",
              pass: v <= EXITS_TARGET,
            });
          }
        }
      }
    }
  }
  return {
    name: "virtio-net",
    title: "virtio-net through the whole stack (driver → mmio → device → back-end)",
    description:
      "One guest, one queue pair of 256 entries, virtio-mmio on a `Bus`, interrupts delivered a microtask after the exit that raised them. TX: `VirtioNetDriver.enqueue` × batch then one `commit` (TX completions reclaimed without interrupts, as Linux does); the back-end discards frames. RX: the back-end hands `batch` frames to the device, then the event loop turns so the guest's interrupt handler and NAPI poll (budget 64) run; receive buffers are reposted without notifications (the device only asks for them while frames wait). Exits = every guest register access.",
    tables: [
      {
        title: "virtio-net packets/s and exits, notifications, interrupts per packet",
        columns: [
          "dir",
          "frame B",
          "EVENT_IDX",
          "batch",
          "packets/s",
          "Gbit/s",
          "exits/pkt",
          "notifies/pkt",
          "irqs/pkt",
          "drops",
        ],
        rows,
      },
    ],
    checks,
    notes: [
      "Each batch is followed by a few microtask turns (the guest 'returns to the scheduler'), so batch 1 includes that cost per packet.",
    ],
    data,
  };
}

/** The virtio-net suite. */
export const virtioNetSuite: Suite = {
  name: "virtio-net",
  summary:
    "virtio-net packets/s (64/1514 B, TX/RX) and exits/interrupts per packet vs EVENT_IDX and batch size",
  run,
};
