/**
 * The first emulated-vs-PV comparison: the same frames sent and received through the
 * fully emulated RTL8139 (8139too-like driver, MMIO BAR) and through virtio-net
 * (EVENT_IDX, virtio-pci), both in-process on the same kind of back-end, both with
 * interrupts delivered a microtask after the exit that raised them. Frames of 64 and 1514
 * bytes, in bursts of 1, 32 and 256 between returns to the event loop. Exits are every
 * register access the guest makes (each one a VM exit on real hardware); interrupts are
 * rising edges of the NIC's INTx line.
 *
 * @module
 */

import type { ChartPoint, ChartSpec } from "../chart-spec.js";
import { type NicRig, RX_PENDING, rtl8139Rig, virtioNetRig, yieldTurns } from "../net-rig.js";
import type { ResultCheck, Suite, SuiteOptions, SuiteResult } from "../suite.js";

/** Target: virtio-net with batching needs at least this many times fewer exits per frame. */
export const EXIT_RATIO_TARGET = 60;

type Nic = "rtl8139" | "virtio";

interface Measured {
  readonly frames: number;
  readonly seconds: number;
  readonly exits: number;
  readonly interrupts: number;
  readonly drops: number;
}

const SIZES = [64, 1514] as const;
const BURSTS = [1, 32, 256] as const;

function makeFrame(dst: Uint8Array, size: number): Uint8Array {
  const f = new Uint8Array(size);
  f.set(dst, 0);
  f.set([0x02, 0, 0, 0, 0, 1], 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  return f;
}

async function measure(
  nic: Nic,
  dir: "tx" | "rx",
  size: number,
  burst: number,
  seconds: number,
): Promise<Measured> {
  const r: NicRig = nic === "rtl8139" ? rtl8139Rig() : virtioNetRig(true);
  await new Promise((res) => setImmediate(res));
  const frame = makeFrame(dir === "rx" ? r.mac : new Uint8Array([0x02, 0, 0, 0, 0, 2]), size);
  r.bus.resetStats();
  r.irq.resetStats();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const e = r.backend.endpoint!;
  let injected = 0;
  while (performance.now() < end) {
    for (let k = 0; k < 8; k++) {
      if (dir === "tx") {
        // A burst: the guest's stack hands over `burst` frames, waiting for room when
        // the NIC has none (the RTL8139 has four slots; virtio-net 256).
        for (let i = 0; i < burst; i++) {
          let tries = 0;
          while (!r.enqueue(frame)) {
            r.commit();
            await yieldTurns();
            if (++tries > 100) throw new Error(`${nic}: transmit stalled`);
          }
        }
        r.commit();
        await yieldTurns();
      } else {
        for (let i = 0; i < burst; i++) e.receive(frame, null);
        injected += burst;
        // The next burst comes when the guest has taken this one (bounded wait), so
        // neither device's holding queue decides the result.
        for (let tries = 0; r.received() + r.drops() < injected && tries < 10_000; tries++)
          await yieldTurns();
      }
    }
  }
  for (let i = 0; i < 4; i++) await new Promise((res) => setImmediate(res));
  const secs = (performance.now() - t0) / 1000;
  return {
    frames: dir === "tx" ? r.backend.stats.txFrames : r.received(),
    seconds: secs,
    exits: r.bus.exits,
    interrupts: r.irq.raises,
    drops: r.drops(),
  };
}

const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n)
    ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : "∞";

const ratio = (emulated: number, pv: number): number =>
  pv === 0 ? (emulated === 0 ? 1 : Number.POSITIVE_INFINITY) : emulated / pv;

async function run(options: SuiteOptions): Promise<SuiteResult> {
  const seconds = options.quick ? 0.05 : Math.min(0.4, Math.max(0.15, options.maxTime / 8));
  const rows: string[][] = [];
  const data: Record<string, { rtl8139: Measured; virtio: Measured }> = {};
  const checks: ResultCheck[] = [];
  options.log("nic-compare: warming up");
  for (const nic of ["rtl8139", "virtio"] as const) {
    await measure(nic, "tx", 64, 32, 0.05);
    await measure(nic, "rx", 64, 32, 0.05);
  }
  const steps = 2 * SIZES.length * BURSTS.length;
  for (const dir of ["tx", "rx"] as const) {
    for (const size of SIZES) {
      for (const burst of BURSTS) {
        const rtl = await measure("rtl8139", dir, size, burst, seconds);
        const vio = await measure("virtio", dir, size, burst, seconds);
        const key = `${dir}-${size}-b${burst}`;
        data[key] = { rtl8139: rtl, virtio: vio };
        options.progress?.(Object.keys(data).length, steps);
        const rExits = rtl.exits / rtl.frames;
        const vExits = vio.exits / vio.frames;
        const rIrqs = rtl.interrupts / rtl.frames;
        const vIrqs = vio.interrupts / vio.frames;
        const exitRatio = ratio(rExits, vExits);
        options.log(
          `${key}: RTL8139 ${fmt(rtl.frames / rtl.seconds)} f/s ${fmt(rExits, 2)} exits/f; virtio ${fmt(vio.frames / vio.seconds)} f/s ${fmt(vExits, 3)} exits/f (${fmt(exitRatio, 1)}× fewer)`,
        );
        rows.push([
          dir.toUpperCase(),
          `${size}`,
          `${burst}`,
          fmt(rtl.frames / rtl.seconds),
          fmt(vio.frames / vio.seconds),
          fmt(rExits, 2),
          fmt(vExits, 3),
          `${fmt(exitRatio, 1)}×`,
          fmt(rIrqs, 3),
          fmt(vIrqs, 4),
          `${fmt(ratio(rIrqs, vIrqs), 1)}×`,
          `${rtl.drops}/${vio.drops}`,
        ]);
        if (burst === 256) {
          checks.push({
            name: `${dir.toUpperCase()} ${size} B, burst 256: virtio-net exits/frame ≤ RTL8139's / ${EXIT_RATIO_TARGET}`,
            value: vExits,
            limit: rExits / EXIT_RATIO_TARGET,
            unit: "exits/frame",
            pass: vExits <= rExits / EXIT_RATIO_TARGET,
          });
        }
      }
    }
  }
  return {
    name: "nic-compare",
    title: "Emulated RTL8139 vs virtio-net: frames/s, exits and interrupts per frame",
    description:
      "The same frames through two NICs in the same in-process guest model. **RTL8139**: the fully emulated chip (PCI 10ec:8139 rev 0x10) driven by an 8139too-like driver over its MMIO BAR: per TX frame a TSD write plus its read-back flush, per TX interrupt ISR read/ack and a TSD read; per RX frame CR.BUFE, CAPR, ISR read and ack inside a NAPI poll that masks RX interrupts (IMR write + flush) while it runs; 32 KiB ring with WRAP. **virtio-net**: one queue pair of 256 entries on virtio-pci with EVENT_IDX, TX reclaimed without interrupts, RX in a NAPI poll (budget 64). Both devices hold up to " +
      `${RX_PENDING} frames while the guest has no room (QEMU's net queue for the RTL8139, virtio-net's pending queue), so no frame is lost in the RX bursts. ` +
      'TX bursts hand `burst` frames to the driver (the RTL8139 takes four at a time and waits for the TX interrupt), then return to the event loop; RX bursts inject `burst` frames from the back-end, then return to the event loop until the guest has taken them. Exits = every guest register access (PIO/MMIO through the `Bus`); interrupts = rising edges of INTx. Ratios are RTL8139 ÷ virtio-net ("× fewer" for virtio-net).',
    tables: [
      {
        title: "RTL8139 (emulated) vs virtio-net (PV): frames/s, exits/frame, interrupts/frame",
        columns: [
          "dir",
          "frame B",
          "burst",
          "RTL8139 frames/s",
          "virtio frames/s",
          "RTL8139 exits/f",
          "virtio exits/f",
          "exits: virtio × fewer",
          "RTL8139 irqs/f",
          "virtio irqs/f",
          "irqs: virtio × fewer",
          "drops R/V",
        ],
        rows,
      },
    ],
    checks,
    notes: [
      "Per-frame exits of the RTL8139 follow 8139too's access pattern (see shared/reference/rtl8139.md §2): ≈2 exits per TX frame plus ≈3 per TX interrupt, ≈5 per RX frame plus a fixed ≈7 per poll. virtio-net's exits fall towards 0 per frame as bursts grow, since EVENT_IDX suppresses notifications while the device is busy and interrupts are coalesced by the NAPI poll.",
      "Frames/s are in-process numbers (an exit is a function call here), so they understate the gap a real VMM sees: multiply exits/frame by a published exit cost for a modelled figure.",
    ],
    data,
    charts: nicCharts(data, seconds),
  };
}

/**
 * The suite's charts: exits per frame (log), frames/s, and virtio-net ÷ RTL8139 for both,
 * per direction, frame size and burst.
 */
function nicCharts(
  data: Readonly<Record<string, { rtl8139: Measured; virtio: Measured }>>,
  seconds: number,
): ChartSpec[] {
  const exits: ChartPoint[] = [];
  const rates: ChartPoint[] = [];
  const ratios: ChartPoint[] = [];
  for (const [key, m] of Object.entries(data)) {
    const [dir, size, b] = key.split("-") as [string, string, string];
    const facet = dir.toUpperCase();
    const category = `${size} B, burst ${b.slice(1)}`;
    for (const [series, r] of [
      ["rtl8139", m.rtl8139],
      ["virtio", m.virtio],
    ] as const) {
      exits.push({ series, category, facet, value: r.exits / r.frames });
      rates.push({ series, category, facet, value: r.frames / r.seconds });
    }
    const both = `${facet} ${category}`;
    ratios.push({
      series: "ratio",
      category: both,
      facet: "exits per frame",
      value: m.virtio.exits / m.virtio.frames / (m.rtl8139.exits / m.rtl8139.frames),
    });
    ratios.push({
      series: "ratio",
      category: both,
      facet: "frames/s",
      value: m.virtio.frames / m.virtio.seconds / (m.rtl8139.frames / m.rtl8139.seconds),
      better: "higher",
    });
  }
  const series = [
    { key: "rtl8139", label: "RTL8139 (emulated)", config: "full-emulation" as const },
    { key: "virtio", label: "virtio-net (PV, EVENT_IDX)", config: "full-pv" as const },
  ];
  const how = `in-process, ${seconds.toFixed(2)} s per row; an exit is a guest register access, each a VM exit on hardware`;
  const category = { title: "frame size, frames per burst" };
  const facet = { title: "direction", order: ["TX", "RX"] };
  return [
    {
      id: "exits",
      title: "Exits per frame: emulated RTL8139 vs paravirtual virtio-net",
      subtitle: [how, "fewer is better; 0 = no exit"],
      category,
      facet,
      value: {
        title: "exits per frame",
        unit: "exits/frame",
        scale: "log",
        better: "lower",
        noise: 0.02,
      },
      series,
      points: exits,
      rules: [{ value: 1, label: "1 exit/frame" }],
    },
    {
      id: "rate",
      title: "Frames per second: emulated RTL8139 vs paravirtual virtio-net",
      subtitle: [how, "more is better"],
      category,
      facet,
      value: {
        title: "frames per second",
        unit: "frames/s",
        scale: "linear",
        better: "higher",
        noise: 0.1,
      },
      series,
      points: rates,
    },
    {
      id: "ratio",
      title: "virtio-net ÷ RTL8139: exits per frame and frames per second",
      subtitle: [
        how,
        "below 1× on exits = fewer exits with PV; above 1× on frames/s = faster with PV",
      ],
      category: { title: "direction, frame size, burst" },
      facet: { title: "metric", order: ["exits per frame", "frames/s"] },
      value: { title: "PV ÷ emulated", unit: "×", scale: "log", better: "lower", noise: 0.1 },
      legendTitle: "ratio",
      series: [{ key: "ratio", label: "virtio-net ÷ RTL8139", config: "full-pv" }],
      points: ratios,
      rules: [{ value: 1, label: "1× (same)" }],
    },
  ];
}

/** The emulated-vs-PV NIC comparison. */
export const nicCompareSuite: Suite = {
  name: "nic-compare",
  summary:
    "emulated RTL8139 vs virtio-net: frames/s, exits/frame, interrupts/frame (64/1514 B, bursts 1/32/256)",
  main: true,
  run,
};
