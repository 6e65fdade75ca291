/**
 * virtio-blk through the whole stack, in-process: `VirtioBlkDriver` → virtio-mmio on a
 * `Bus` → `VirtioBlkDevice` → `MemoryDisk`, interrupts delivered a microtask after the
 * exit that raised them (as a CPU takes them after the exit returns).
 *
 * Workloads: 4 KiB random reads (IOPS) and 64 KiB sequential reads and writes (GB/s),
 * each with a fixed number of requests kept in flight, using the driver's batched
 * `enqueue`/`commit` path with buffers in guest memory (what a guest kernel's block
 * layer does). memcpy bandwidth (`Uint8Array.prototype.set` of 64 KiB blocks over the
 * same working-set size) is measured in the same run as the ceiling for the 64 KiB
 * workloads. Exits (register accesses), notifications and interrupts per request are
 * counted on the host side.
 *
 * @module
 */

import {
  type BlockBackend,
  MemoryDisk,
  VirtioBlkDevice,
  VirtioBlkDriver,
  VirtioBlkType,
} from "@pvkit/virtio-blk";
import { DriverError, type GuestBuffer } from "@pvkit/virtio-core";
import { deliverInterrupts, testGuest } from "@pvkit/virtio-core/testing";
import type { ChartPoint, ChartSpec } from "../chart-spec.js";
import type { ResultCheck, Suite, SuiteOptions, SuiteResult } from "../suite.js";

const DISK_BYTES = 256 << 20;
/** Target: 4 KiB random reads per second. */
export const IOPS_TARGET = 1_000_000;
/** Target: 64 KiB throughput as a fraction of memcpy bandwidth. */
export const BANDWIDTH_TARGET = 0.5;

/** One workload of the suite. */
export interface Workload {
  readonly key: string;
  readonly label: string;
  readonly type: number;
  readonly size: number;
  readonly random: boolean;
}

/** The workloads, in run order. */
export const WORKLOADS: readonly Workload[] = [
  {
    key: "randread-4k",
    label: "4 KiB random read",
    type: VirtioBlkType.IN,
    size: 4096,
    random: true,
  },
  {
    key: "seqread-64k",
    label: "64 KiB sequential read",
    type: VirtioBlkType.IN,
    size: 65536,
    random: false,
  },
  {
    key: "seqwrite-64k",
    label: "64 KiB sequential write",
    type: VirtioBlkType.OUT,
    size: 65536,
    random: false,
  },
];

/** What one {@link drive} run counted. */
export interface Measured {
  readonly ops: number;
  readonly seconds: number;
  readonly exits: number;
  readonly notifies: number;
  readonly interrupts: number;
}

/** One guest with one virtio-blk disk, driven through the batched driver path. */
function rig(depth: number, backend: BlockBackend | undefined) {
  let disk = backend;
  if (disk === undefined) {
    const mem = new MemoryDisk(DISK_BYTES);
    mem.bytes.fill(1); // commit every page up front, as a real disk image in RAM would be
    disk = mem;
  }
  const device = new VirtioBlkDevice({ backend: disk, queueSize: 256, maxInFlight: 256 });
  const { memory, allocator, bus, irq, transport } = testGuest(device, { memoryBytes: 64 << 20 });
  const route = { handler: (): void => {} };
  deliverInterrupts(irq, () => route.handler());
  const driver = VirtioBlkDriver.create(transport, { memory, allocator, queueSize: 256 });
  if (driver instanceof DriverError) throw new Error(driver.message);
  route.handler = () => driver.onInterrupt();
  const buffers: GuestBuffer[][] = [];
  for (let i = 0; i < depth; i++)
    buffers.push([{ addr: allocator.alloc(65536, 4096), len: 65536 }]);
  return { bus, irq, device, driver, buffers };
}

/**
 * Keeps `depth` requests in flight for `seconds`, re-posting each one as it completes,
 * on `backend` (default: a fresh, fully committed 256 MiB `MemoryDisk`).
 */
export function drive(
  w: Workload,
  depth: number,
  seconds: number,
  backend?: BlockBackend,
): Promise<Measured> {
  const { bus, irq, device, driver, buffers } = rig(depth, backend);
  const views = buffers.map((b) => [{ addr: b[0]!.addr, len: w.size }]);
  const sectorsPer = w.size / 512;
  const slots = Math.floor((backend?.byteLength ?? DISK_BYTES) / w.size);
  let x = 12345;
  let next = 0;
  bus.resetStats();
  irq.resetStats();
  const notifies0 = device.notifications;
  return new Promise<Measured>((resolve, reject) => {
    let ops = 0;
    let live = depth;
    let stop = false;
    const t0 = performance.now();
    const none: GuestBuffer[] = [];
    // One completion callback per in-flight slot, made once (as a block layer keeps its
    // per-request state), so the measured loop allocates no closures.
    const done = Array.from({ length: depth }, (_, i) => (status: number): void => {
      if (status !== 0) {
        reject(new Error(`request failed with status ${status}`));
        return;
      }
      ops++;
      if ((ops & 1023) === 0 && performance.now() - t0 > seconds * 1000) stop = true;
      if (!stop) issue(i);
      else if (--live === 0) {
        resolve({
          ops,
          seconds: (performance.now() - t0) / 1000,
          exits: bus.exits,
          notifies: device.notifications - notifies0,
          interrupts: irq.raises,
        });
      }
    });
    const issue = (i: number): void => {
      let slot: number;
      if (w.random) {
        x = (x * 1103515245 + 12345) & 0x7fffffff;
        slot = x % slots;
      } else slot = next++ % slots;
      const bufs = views[i]!;
      const out = w.type === VirtioBlkType.OUT ? bufs : none;
      const inBufs = w.type === VirtioBlkType.IN ? bufs : none;
      driver.enqueue(w.type, slot * sectorsPer, out, inBufs, done[i]!);
    };
    for (let i = 0; i < depth; i++) issue(i);
    driver.commit();
  });
}

/**
 * memcpy bandwidth for the same data movement as a 64 KiB sequential read (`toDisk`
 * false: 64 KiB blocks taken in order from a 256 MiB "disk" into `depth` buffers used
 * round robin) or write (`toDisk` true: the other way).
 */
function memcpyBandwidth(seconds: number, depth: number, toDisk: boolean): number {
  const block = 65536;
  const disk = new Uint8Array(DISK_BYTES);
  disk.fill(7);
  const buffers = new Uint8Array(depth * block);
  buffers.fill(3);
  const blocks = DISK_BYTES / block;
  let bytes = 0;
  let i = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    for (let k = 0; k < 64; k++, i++) {
      const d = (i % blocks) * block;
      const b = (i % depth) * block;
      if (toDisk) disk.set(buffers.subarray(b, b + block), d);
      else buffers.set(disk.subarray(d, d + block), b);
    }
    bytes += 64 * block;
  }
  return bytes / ((performance.now() - t0) / 1000);
}

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

async function run(options: SuiteOptions): Promise<SuiteResult> {
  const seconds = options.quick ? 0.3 : Math.max(1, options.maxTime);
  const depth = 128;
  // Warm up every path once so the JIT has compiled it before the measured runs.
  for (const w of WORKLOADS) await drive(w, depth, options.quick ? 0.1 : 0.5);
  const memcpyRead = memcpyBandwidth(seconds, depth, false);
  const memcpyWrite = memcpyBandwidth(seconds, depth, true);
  options.log(
    `memcpy 64 KiB blocks: ${fmt(memcpyRead / 1e9, 2)} GB/s disk→buffers, ${fmt(memcpyWrite / 1e9, 2)} GB/s buffers→disk`,
  );
  const rows: string[][] = [];
  const data: Record<string, unknown> = {
    memcpyReadBytesPerSecond: memcpyRead,
    memcpyWriteBytesPerSecond: memcpyWrite,
    depth,
  };
  const checks: ResultCheck[] = [];
  const rates: ChartPoint[] = [];
  const perRequest: ChartPoint[] = [];
  const ofMemcpy: ChartPoint[] = [];
  for (const w of WORKLOADS) {
    const m = await drive(w, depth, seconds);
    options.progress?.(rates.length + 1, WORKLOADS.length);
    const iops = m.ops / m.seconds;
    const bw = (iops * w.size) / 1e9;
    const memcpy = w.type === VirtioBlkType.OUT ? memcpyWrite : memcpyRead;
    options.log(`${w.label}: ${fmt(iops)} req/s, ${fmt(bw, 2)} GB/s`);
    rows.push([
      w.label,
      fmt(iops),
      fmt(bw, 2),
      w.size === 65536 ? `${fmt((100 * iops * w.size) / memcpy, 1)} %` : "—",
      fmt(m.exits / m.ops, 4),
      fmt(m.notifies / m.ops, 4),
      fmt(m.interrupts / m.ops, 4),
    ]);
    data[w.key] = { requestsPerSecond: iops, bytesPerSecond: iops * w.size, ...m };
    rates.push({ series: "blk", category: w.label, value: iops });
    for (const [facet, n] of [
      ["exits", m.exits],
      ["notifications", m.notifies],
      ["interrupts", m.interrupts],
    ] as const)
      perRequest.push({ series: "blk", category: w.label, facet, value: n / m.ops });
    if (w.size === 65536)
      ofMemcpy.push({ series: "blk", category: w.label, value: (iops * w.size) / memcpy });
    if (w.key === "randread-4k") {
      checks.push({
        name: "4 KiB random reads: ≥ 1M IOPS (shown as 1M / IOPS ≤ 1)",
        value: IOPS_TARGET / iops,
        limit: 1,
        unit: "×",
        pass: iops >= IOPS_TARGET,
      });
    } else {
      const ratio = (iops * w.size) / memcpy;
      checks.push({
        name: `${w.label}: ≥ 50% of memcpy bandwidth (shown as 0.5 / ratio ≤ 1)`,
        value: BANDWIDTH_TARGET / ratio,
        limit: 1,
        unit: "×",
        pass: ratio >= BANDWIDTH_TARGET,
      });
    }
  }
  return {
    name: "virtio-blk",
    title: "virtio-blk through the whole stack (driver → mmio → device → MemoryDisk)",
    description:
      "Requests kept in flight (depth 128) on one 256-entry queue with EVENT_IDX and indirect descriptors, through `VirtioBlkDriver.enqueue`/`commit` with guest-memory buffers, the virtio-mmio transport on a `Bus`, `VirtioBlkDevice` and a 256 MiB `MemoryDisk`. Interrupts are delivered a microtask after the exit that raised them. memcpy = `Uint8Array.set` of 64 KiB blocks between a 256 MiB array walked in order and 128 buffers used round robin, in each direction (the data movement of the 64 KiB read and of the 64 KiB write), measured in the same run.",
    tables: [
      {
        title: `virtio-blk, depth ${depth} (memcpy ${fmt(memcpyRead / 1e9, 2)} GB/s disk→buffers, ${fmt(memcpyWrite / 1e9, 2)} GB/s buffers→disk)`,
        columns: [
          "workload",
          "requests/s",
          "GB/s",
          "of memcpy",
          "exits/req",
          "notifies/req",
          "interrupts/req",
        ],
        rows,
      },
    ],
    checks,
    notes: [
      "Exits are every register access the guest made (notifications plus interrupt status reads and acks); with EVENT_IDX the device keeps the driver from notifying while it is still consuming, so a batch of completions costs one interrupt and one notification.",
    ],
    data,
    charts: blkCharts(rates, perRequest, ofMemcpy, depth),
  };
}

/** The virtio-blk suite. */
export const virtioBlkSuite: Suite = {
  name: "virtio-blk",
  summary:
    "virtio-blk through the whole stack: 4 KiB random-read IOPS, 64 KiB sequential GB/s vs memcpy",
  run,
};

/**
 * The suite's charts: requests/s, exits/notifications/interrupts per request (log), and
 * the 64 KiB rows' bandwidth ÷ memcpy's. There is no emulated disk in-process, so no
 * PV ÷ emulated chart (the v86-guest suite compares IDE with virtio-blk).
 */
function blkCharts(
  rates: ChartPoint[],
  perRequest: ChartPoint[],
  ofMemcpy: ChartPoint[],
  depth: number,
): ChartSpec[] {
  const series = [{ key: "blk", label: "virtio-blk (PV)", config: "full-pv" as const }];
  const how = `depth ${depth}, EVENT_IDX + indirect descriptors, virtio-mmio, in-process; no emulated disk to compare with here`;
  return [
    {
      id: "rate",
      title: "virtio-blk requests per second",
      subtitle: [how, "more is better"],
      category: { title: "workload" },
      value: {
        title: "requests per second",
        unit: "requests/s",
        scale: "linear",
        better: "higher",
        noise: 0.1,
      },
      series,
      points: rates,
    },
    {
      id: "exits",
      title: "virtio-blk exits, notifications and interrupts per request",
      subtitle: [how, "fewer is better; exits = notifications + interrupt status reads and acks"],
      category: { title: "workload" },
      facet: { title: "per request", order: ["exits", "notifications", "interrupts"] },
      value: { title: "per request", unit: "/request", scale: "log", better: "lower", noise: 0.05 },
      series,
      points: perRequest,
    },
    {
      id: "ratio",
      title: "virtio-blk bandwidth ÷ memcpy bandwidth, 64 KiB requests",
      subtitle: [
        how,
        "memcpy = the same data movement with Uint8Array.set, measured in the same run; target ≥ 0.5×",
      ],
      category: { title: "workload" },
      value: {
        title: "virtio-blk ÷ memcpy",
        unit: "×",
        scale: "linear",
        better: "higher",
        noise: 0.1,
      },
      legendTitle: "ratio",
      series,
      points: ofMemcpy,
      rules: [{ value: 0.5, label: "target 0.5×" }],
    },
  ];
}
