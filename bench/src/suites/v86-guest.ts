/**
 * The guest-visible comparison: Debian's own Linux drivers in v86 on emulated devices
 * (v86's IDE disk, pvkit's RTL8139) and on pvkit's paravirtual ones (virtio-blk,
 * virtio-net). Boots the fixture 7 times (block; two network boots; two pairs of guests;
 * tens of minutes on a loaded machine, plus the first download of the
 * Debian packages); not part of the main job.
 *
 * Block: `dd` with direct I/O (no page cache) through v86's IDE disk and pvkit's
 * virtio-blk in the same boot, 1 MiB and 64 KiB sequential blocks over 64 MiB and 4 KiB
 * blocks at random offsets (QD1, `randio`) over 64 MiB, 16 MiB per run, each read and written; one untimed warm-up pass, then 3 timed
 * rounds with the disks alternating; guest time from the kernel's µs timestamps of
 * `/dev/kmsg` records written around each `dd` (busybox `date` has no `%N`);
 * median and range; exits and guest instructions per request next to every time.
 *
 * Network (`packages/v86/test/net-bench.ts`): one script for pvkit's virtio-net, pvkit's
 * RTL8139 and v86's own NE2000 and virtio-net, each on its own switch with a host
 * responder: TCP bulk guest→host and host→guest, sequential small TCP exchanges, ping and a
 * ping flood, kmsg µs clock, untimed warm-up, 3 rounds with the NICs alternating; then
 * guest-to-guest bulk with two emulators on one switch. `PVKIT_V86_NET=<MiB>,<KiB>,<n>`
 * shrinks the bulk, warm-up and exchange counts for a loaded machine (the report says so).
 *
 * @module
 */

import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { ensureFixture } from "../../../packages/v86/test/fixture.js";
import {
  BENCH_NICS,
  type BenchNic,
  type NetBenchReport,
  type NetBenchSizes,
  type NetOp,
  type NetRun,
  netBenchSizesFromEnv,
  type PingRun,
  runNetBench,
  runTwoGuestBench,
  type TwoGuestReport,
} from "../../../packages/v86/test/net-bench.js";
import {
  BLOCK_PATTERNS,
  type BlockBenchReport,
  type BlockRun,
  runBlockBench,
} from "../../../packages/v86/test/scenarios.js";
import type { ResultCheck, ResultTable, Suite, SuiteOptions, SuiteResult } from "../suite.js";

/** Median, lowest and highest of `xs` (NaN for none). */
function stats(xs: readonly number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return { median: Number.NaN, min: Number.NaN, max: Number.NaN };
  const mid = s.length >> 1;
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]! };
}

const size = (bs: number): string => (bs >= 1 << 20 ? `${bs >> 20} MiB` : `${bs >> 10} KiB`);

/** Per pattern and disk: throughput (MiB/s, or IOPS for 4 KiB) median and range, per-request costs. */
interface BlockSummary {
  readonly disk: BlockRun["disk"];
  readonly pattern: BlockRun["pattern"];
  readonly rate: { median: number; min: number; max: number };
  readonly ms: number;
  readonly exitsPerOp: number;
  readonly instrPerOp: number;
  readonly failed: number;
}

function summarize(report: BlockBenchReport): BlockSummary[] {
  const out: BlockSummary[] = [];
  for (const pattern of BLOCK_PATTERNS) {
    for (const disk of ["ide", "virtio-blk"] as const) {
      const runs = report.runs.filter((r) => r.disk === disk && r.pattern === pattern);
      const ops = pattern.bytes / pattern.bs;
      const iops = pattern.bs < 64 << 10;
      out.push({
        disk,
        pattern,
        rate: stats(
          runs.map((r) => (iops ? ops / r.seconds : pattern.bytes / (1 << 20) / r.seconds)),
        ),
        ms: stats(runs.map((r) => r.seconds * 1000)).median,
        exitsPerOp: stats(runs.map((r) => r.exits / ops)).median,
        instrPerOp: stats(runs.map((r) => r.instructions / ops)).median,
        failed: runs.filter((r) => r.status !== 0).length,
      });
    }
  }
  return out;
}

/** Per disk and direction, the 64 KiB direct-I/O run with the median time. */
function legacyDisk(report: BlockBenchReport) {
  const out: { disk: string; op: string; bytes: number; seconds: number; exits: number }[] = [];
  for (const disk of ["ide", "virtio-blk"] as const) {
    for (const op of ["read", "write"] as const) {
      const runs = report.runs
        .filter((r) => r.disk === disk && r.pattern.op === op && r.pattern.bs === 64 << 10)
        .sort((a, b) => a.seconds - b.seconds);
      const r = runs[runs.length >> 1];
      if (r !== undefined) {
        out.push({ disk, op, bytes: r.pattern.bytes, seconds: r.seconds, exits: r.exits });
      }
    }
  }
  return out;
}

function blockTable(rows: BlockSummary[]): ResultTable {
  const name = (d: BlockRun["disk"]) =>
    d === "ide" ? "v86 IDE (ata_piix)" : "pvkit virtio-blk (virtio_pci)";
  const cells: string[][] = [];
  for (const pattern of BLOCK_PATTERNS) {
    const pair = rows.filter((r) => r.pattern === pattern);
    const unit = pattern.bs < 64 << 10 ? "IOPS" : "MiB/s";
    const digits = unit === "IOPS" ? 0 : 1;
    for (const r of pair) {
      cells.push([
        `${pattern.random === true ? "random " : ""}${pattern.op} ${size(pattern.bs)} × ${pattern.bytes >> 20} MiB`,
        name(r.disk),
        `${r.rate.median.toFixed(digits)} ${unit}`,
        `${r.rate.min.toFixed(digits)}–${r.rate.max.toFixed(digits)}`,
        r.ms.toFixed(0),
        r.exitsPerOp.toFixed(1),
        (r.instrPerOp / 1000).toFixed(1),
      ]);
    }
    const ide = pair.find((r) => r.disk === "ide");
    const pv = pair.find((r) => r.disk === "virtio-blk");
    if (ide !== undefined && pv !== undefined) {
      cells.push([
        "",
        "virtio-blk ÷ IDE",
        `${(pv.rate.median / ide.rate.median).toFixed(2)}×`,
        "",
        "",
        `${(pv.exitsPerOp / Math.max(1e-9, ide.exitsPerOp)).toFixed(2)}×`,
        `${(pv.instrPerOp / Math.max(1, ide.instrPerOp)).toFixed(2)}×`,
      ]);
    }
  }
  return {
    title:
      "Block, direct I/O (dd iflag/oflag=direct; randio with O_DIRECT for the random rows), same boot, median of 3 timed rounds after an untimed warm-up (guest clock: kernel µs timestamps)",
    columns: [
      "pattern",
      "disk",
      "median",
      "range",
      "guest ms (median)",
      "exits/request",
      "guest kinstr/request",
    ],
    rows: cells,
  };
}

const NIC_ORDER: readonly BenchNic[] = ["virtio", "rtl8139", "v86-virtio", "ne2k"];

/** Per NIC and operation: rate median and range, per-operation costs (medians). */
interface NetSummary {
  readonly nic: BenchNic;
  readonly op: NetOp;
  /** MiB/s (tx, rx) or ms per exchange (rr). */
  readonly value: { median: number; min: number; max: number };
  readonly seconds: number;
  readonly exitsPerOp: number;
  readonly instrPerOp: number;
  readonly framesPerOp: number;
  readonly failed: number;
  readonly n: number;
}

function summarizeNet(runs: readonly NetRun[], bulkBytes: number, exchanges: number): NetSummary[] {
  const out: NetSummary[] = [];
  for (const op of ["tx", "rx", "rr"] as const) {
    for (const nic of NIC_ORDER) {
      const rs = runs.filter((r) => r.nic === nic && r.op === op);
      if (rs.length === 0) continue;
      const ok = (r: NetRun) =>
        op === "rr" ? r.status === exchanges : r.status === 0 && r.bytes === bulkBytes;
      out.push({
        nic,
        op,
        value: stats(
          rs.map((r) =>
            op === "rr" ? (r.seconds * 1000) / Math.max(1, r.ops) : r.bytes / (1 << 20) / r.seconds,
          ),
        ),
        seconds: stats(rs.map((r) => r.seconds)).median,
        exitsPerOp: stats(rs.map((r) => r.exits / Math.max(1e-9, r.ops))).median,
        instrPerOp: stats(rs.map((r) => r.instructions / Math.max(1e-9, r.ops))).median,
        framesPerOp: stats(rs.map((r) => (r.framesOut + r.framesIn) / Math.max(1e-9, r.ops)))
          .median,
        failed: rs.filter((r) => !ok(r)).length,
        n: rs.length,
      });
    }
  }
  return out;
}

function netTables(
  sum: NetSummary[],
  pings: readonly PingRun[],
  sizes: NetBenchSizes,
): ResultTable[] {
  const mib = sizes.bulkBytes / (1 << 20);
  const label = (n: BenchNic) => BENCH_NICS[n].label;
  const bulk = (op: "tx" | "rx", title: string): ResultTable => ({
    title,
    columns: [
      "NIC (Linux driver)",
      "MiB/s (median)",
      "range",
      "guest s (median)",
      "exits/MiB",
      "guest Minstr/MiB",
      "frames/MiB (both ways)",
    ],
    rows: sum
      .filter((r) => r.op === op)
      .map((r) => [
        label(r.nic),
        r.value.median.toFixed(2),
        `${r.value.min.toFixed(2)}–${r.value.max.toFixed(2)}`,
        r.seconds.toFixed(2),
        r.exitsPerOp.toFixed(0),
        (r.instrPerOp / 1e6).toFixed(1),
        r.framesPerOp.toFixed(0),
      ]),
  });
  const rr: ResultTable = {
    title: `TCP request/response: ${sizes.exchanges} sequential \`echo ping | nc host 7\` to the host's echo service (connect, 5 bytes each way, close; the nc process start is inside the time)`,
    columns: [
      "NIC (Linux driver)",
      "ms/exchange (median)",
      "range",
      "exits/exchange",
      "guest kinstr/exchange",
    ],
    rows: sum
      .filter((r) => r.op === "rr")
      .map((r) => [
        label(r.nic),
        r.value.median.toFixed(2),
        `${r.value.min.toFixed(2)}–${r.value.max.toFixed(2)}`,
        r.exitsPerOp.toFixed(1),
        (r.instrPerOp / 1000).toFixed(0),
      ]),
  };
  const ping: ResultTable = {
    title: `ping: ${sizes.pings} echo requests 50 ms apart (RTT as busybox ping reports it), and a flood of ${sizes.flood} × 1400 bytes 5 ms apart; median over the rounds`,
    columns: [
      "NIC (Linux driver)",
      "RTT ms (median)",
      "range",
      "flood RTT ms",
      "flood exits/packet",
      "flood guest kinstr/packet",
    ],
    rows: NIC_ORDER.filter((n) => pings.some((p) => p.nic === n)).map((n) => {
      const ps = pings.filter((p) => p.nic === n);
      const rtt = stats(ps.map((p) => p.rttMs));
      return [
        label(n),
        rtt.median.toFixed(3),
        `${rtt.min.toFixed(3)}–${rtt.max.toFixed(3)}`,
        stats(ps.map((p) => p.floodRttMs)).median.toFixed(3),
        stats(ps.map((p) => p.floodExits)).median.toFixed(1),
        (stats(ps.map((p) => p.floodInstructions)).median / 1000).toFixed(0),
      ];
    }),
  };
  return [
    bulk(
      "tx",
      `TCP bulk guest→host: ${mib} MiB, \`nc -e dd\` (64 KiB writes) to the host's discard sink, timed until every byte is acknowledged; median of the timed rounds after an untimed warm-up (guest clock: kernel µs timestamps)`,
    ),
    bulk(
      "rx",
      `TCP bulk host→guest: ${mib} MiB from the host's TCP source (pvkit TcpSender: peer's MSS and window, Reno congestion control, retransmission), \`nc | wc -c\` in the guest`,
    ),
    rr,
    ping,
  ];
}

/** Guest A → guest B over one switch, per NIC: MiB/s median and range, both guests' costs. */
function twoGuestTable(reports: readonly TwoGuestReport[], sizes: NetBenchSizes): ResultTable {
  const runs = reports.flatMap((r) => r.runs).filter((r) => r.repeat >= 0);
  const rows: string[][] = [];
  for (const nic of NIC_ORDER) {
    const rs = runs.filter((r) => r.nic === nic);
    if (rs.length === 0) continue;
    const mib = (r: (typeof rs)[number]) => r.bytes / (1 << 20);
    const rate = stats(rs.map((r) => mib(r) / r.seconds));
    rows.push([
      BENCH_NICS[nic].label,
      rate.median.toFixed(2),
      `${rate.min.toFixed(2)}–${rate.max.toFixed(2)}`,
      stats(rs.map((r) => r.seconds)).median.toFixed(2),
      stats(rs.map((r) => r.exits[0] / mib(r))).median.toFixed(0),
      stats(rs.map((r) => r.exits[1] / mib(r))).median.toFixed(0),
      (stats(rs.map((r) => (r.instructions[0] + r.instructions[1]) / mib(r))).median / 1e6).toFixed(
        1,
      ),
      String(rs.filter((r) => r.status !== 0 || r.bytes !== sizes.bulkBytes).length),
    ]);
  }
  return {
    title: `TCP between two guests on one switch: ${sizes.bulkBytes / (1 << 20)} MiB, \`nc -e dd\` (64 KiB writes) in guest A → nc -l | wc -c in guest B (two v86 emulators in one Node thread, taking turns in slices of ≥ 100k instructions, which adds latency to every exchange; reported as is)`,
    columns: [
      "NIC (Linux driver, both guests)",
      "MiB/s (median)",
      "range",
      "sender guest s",
      "exits/MiB A",
      "exits/MiB B",
      "guest Minstr/MiB (A+B)",
      "failed runs",
    ],
    rows,
  };
}

/** The earlier `data.net` shape (claims.ts, derived-charts.ts): the median tx run and the flood. */
function legacyNet(runs: readonly NetRun[], pings: readonly PingRun[], sizes: NetBenchSizes) {
  const out: Record<string, unknown> = {};
  for (const nic of ["virtio", "rtl8139"] as const) {
    const tx = runs
      .filter((r) => r.nic === nic && r.op === "tx")
      .sort((a, b) => a.seconds - b.seconds);
    const m = tx[tx.length >> 1];
    const ps = pings.filter((p) => p.nic === nic);
    const flood = sizes.flood;
    out[nic] = {
      bulk:
        m === undefined
          ? undefined
          : {
              exits: m.exits,
              txFrames: m.framesOut,
              rxFrames: m.framesIn,
              tcpBytes: m.bytes,
              seconds: m.seconds,
            },
      flood: {
        exits: stats(ps.map((p) => p.floodExits)).median * flood,
        txFrames: flood,
        rxFrames: flood,
      },
    };
  }
  return out;
}

async function run(options: SuiteOptions): Promise<SuiteResult> {
  const fixture = await ensureFixture();
  options.log(`v86-guest: Linux ${fixture.kernelVersion}`);
  const dir = mkdtempSync(join(tmpdir(), "pvkit-bench-v86-"));
  try {
    const load0 = loadavg();
    const block = await runBlockBench(fixture);
    const load1 = loadavg();
    options.log("v86-guest: block boot done");
    const sizes = netBenchSizesFromEnv();
    const netA = await runNetBench(fixture, "ne2k", undefined, sizes);
    options.log("v86-guest: network boot 1 (pvkit virtio-net, pvkit RTL8139, v86 NE2000) done");
    const netB = await runNetBench(fixture, "v86-virtio", ["v86-virtio"], sizes);
    const load2 = loadavg();
    options.log("v86-guest: network boot 2 (v86 virtio-net) done");
    const nets: NetBenchReport[] = [netA, netB];
    const netRuns = nets.flatMap((n) => n.runs);
    const netPings = nets.flatMap((n) => n.pings);
    const twoA = await runTwoGuestBench(fixture, "ne2k", undefined, sizes);
    options.log("v86-guest: two-guest boots 1 done");
    const twoB = await runTwoGuestBench(fixture, "v86-virtio", ["v86-virtio"], sizes);
    const load3 = loadavg();
    options.log("v86-guest: two-guest boots 2 done");
    const netSum = summarizeNet(netRuns, sizes.bulkBytes, sizes.exchanges);
    const summary = summarize(block);
    const rate = (disk: BlockRun["disk"], op: string, bs: number) =>
      summary.find((r) => r.disk === disk && r.pattern.op === op && r.pattern.bs === bs)?.rate
        .median ?? Number.NaN;
    const checks: ResultCheck[] = [];
    for (const [op, bs] of [
      ["read", 1 << 20],
      ["write", 1 << 20],
      ["read", 64 << 10],
      ["write", 64 << 10],
      ["read", 4 << 10],
      ["write", 4 << 10],
    ] as const) {
      const v = rate("virtio-blk", op, bs) / rate("ide", op, bs);
      checks.push({
        name: `direct ${bs < 64 << 10 ? "random " : ""}${op} ${size(bs)}: virtio-blk ÷ v86 IDE ≥ 2`,
        value: v,
        limit: 2,
        unit: "×",
        pass: v >= 2,
      });
    }
    const netRate = (nic: BenchNic, op: NetOp) =>
      netSum.find((r) => r.nic === nic && r.op === op)?.value.median ?? Number.NaN;
    const atLeast = (name: string, value: number, limit: number) =>
      checks.push({ name, value, limit, unit: "×", pass: value >= limit });
    for (const [op, what] of [
      ["tx", "guest→host"],
      ["rx", "host→guest"],
    ] as const) {
      atLeast(
        `TCP bulk ${what}: pvkit virtio-net ÷ pvkit RTL8139 ≥ 2`,
        netRate("virtio", op) / netRate("rtl8139", op),
        2,
      );
      atLeast(
        `TCP bulk ${what}: pvkit virtio-net ÷ v86 virtio-net ≥ 1.5`,
        netRate("virtio", op) / netRate("v86-virtio", op),
        1.5,
      );
      atLeast(
        `TCP bulk ${what}: pvkit RTL8139 ÷ v86 NE2000 ≥ 1`,
        netRate("rtl8139", op) / netRate("ne2k", op),
        1,
      );
    }
    const rtt = (nic: BenchNic) =>
      stats(netPings.filter((p) => p.nic === nic).map((p) => p.rttMs)).median;
    const rttRatio = rtt("virtio") / rtt("rtl8139");
    checks.push({
      name: "ping RTT: pvkit virtio-net ÷ pvkit RTL8139 ≤ 1",
      value: rttRatio,
      limit: 1,
      unit: "×",
      pass: rttRatio <= 1,
    });
    const boots = [block.boot, netA.boot, netB.boot].map(
      (b) => (b.timings.readyMs ?? Number.NaN) / 1000,
    );
    const la = (l: number[]) => l.map((x) => x.toFixed(2)).join(" ");
    const failed = summary.reduce((n, r) => n + r.failed, 0);
    return {
      name: "v86-guest",
      title: "Inside Linux in v86: emulated IDE and RTL8139 vs pvkit virtio-blk and virtio-net",
      description:
        "Debian's i386 kernel (" +
        fixture.kernelVersion +
        ") runs in v86 with its own drivers (ata_piix, 8139too, ne2k-pci, virtio_blk, virtio_net). Times are what the guest " +
        "measured; exits are counted on the host (pvkit's Bus for pvkit devices, V86ExitCounter on v86's IDE ports). " +
        "Block figures use direct I/O (dd iflag/oflag=direct) in one boot for both disks, the disks alternating inside each of 3 timed rounds after an untimed warm-up; " +
        "the guest clock is the kernel's own timestamp (local_clock, µs) of a /dev/kmsg record written just before and just after each dd (the dd process start, about a millisecond, is inside the time).",
      tables: [
        blockTable(summary),
        ...netTables(netSum, netPings, sizes),
        twoGuestTable([twoA, twoB], sizes),
      ],
      checks,
      notes: [
        `Host load average (1, 5, 15 min) on 2 shared cores: ${la(load0)} before the block boot, ${la(load1)} after it, ${la(load2)} after the network boot. Other engineers' jobs ran at the same time: prefer the ratios, measured side by side in one boot, to the absolute figures.`,
        `Boots reached /init's READY in ${boots.map((x) => x.toFixed(1)).join(" s and ")} s.${failed > 0 ? ` ${failed} timed dd runs failed.` : ""}`,
        "4 KiB rows: 4096 requests of 4 KiB at random 4 KiB-aligned offsets over the first 64 MiB, one at a time (queue depth 1), by randio (packages/v86/test/guest-tools/randio.c: busybox has no random-offset I/O tool; a static i386 program without libc, built with the host's gcc), which opens the disk with O_DIRECT and calls pread64/pwrite64; both disks get the same offsets in a round. Both disks are RAM-backed, so the offset order costs the device nothing: the figure is the guest's per-request cost.",
        "An exit in v86 is a JavaScript call, not a hardware VM exit: far cheaper relative to the emulated CPU.",
        "What bounds these figures (guest instructions per request and per byte, v86's instruction rate, two guests on one thread), from host-side traces and CPU profiles: v86-guest-trace.md, kept by hand beside this report.",
        ...(sizes.bulkBytes < 16 << 20
          ? [
              `Network sizes reduced for this run (PVKIT_V86_NET=${process.env.PVKIT_V86_NET}): ${sizes.bulkBytes / (1 << 20)} MiB per bulk run, not the issue's 16 MiB, because the shared machine's load made a 16 MiB transfer take minutes; the default is 16 MiB.`,
            ]
          : []),
        `Network: the same script for every NIC (untimed warm-up with ${sizes.warmupBytes >> 10} KiB each way, then ${sizes.repeats} timed rounds, the NICs taking turns inside each round in a rotating order); guest time from the kernel's µs timestamps of /dev/kmsg records around each command, the nc/dd process starts inside the time. v86 has one NIC of its own per emulator, so there are two network boots of the same shape (pvkit virtio-net, pvkit RTL8139 and one v86 NIC, each on its own EthernetSwitch and subnet with a host responder): boot 1 with v86's NE2000 measures pvkit's two NICs and the NE2000; boot 2 with v86's virtio-net measures only v86's virtio-net (pvkit's NICs present and idle). Exits: pvkit's Bus for pvkit's NICs, V86ExitCounter.pciFunction (port/MMIO accesses to the function's BARs) for v86's. Frames are counted on the NIC's switch port; the ≥ 2× / ≥ 1.5× rows are the issue's targets, reported, not asserted.`,
        `TCP sender on the host (host→guest): ${nets
          .map((n, i) =>
            Object.entries(n.senders)
              .filter(([k]) => n.nics.includes(k as BenchNic))
              .map(
                ([k, v]) =>
                  `${k} (boot ${i + 1}): ${v.retransmits} retransmitted segments, ${v.timeouts} timeouts, ${v.fastRetransmits} fast retransmits`,
              )
              .join("; "),
          )
          .join("; ")}.`,
        `Drivers bound: ${nets
          .map((n) =>
            Object.entries(n.drivers)
              .map(([k, v]) => `${k} → ${v}`)
              .join(", "),
          )
          .join(" | ")}.${
          netSum.some((r) => r.failed > 0)
            ? ` Failed network runs: ${netSum
                .filter((r) => r.failed > 0)
                .map((r) => `${r.nic}/${r.op} ${r.failed}`)
                .join(", ")}.`
            : ""
        }`,
      ],
      data: {
        // The earlier shape, kept for readers of `data.disk` (bench/src/claims.ts): per disk
        // and direction, the 64 KiB run with the median time.
        disk: legacyDisk(block),
        block: { clock: block.clock, runs: block.runs, summary },
        net: {
          ...legacyNet(netRuns, netPings, sizes),
          clock: netA.clock,
          sizes: sizes,
          runs: netRuns,
          pings: netPings,
          summary: netSum,
          drivers: nets.map((n) => n.drivers),
          host: nets.map((n) => n.host),
          senders: nets.map((n) => n.senders),
        },
        twoGuest: [twoA, twoB].map((t) => ({ nics: t.nics, drivers: t.drivers, runs: t.runs })),
        load: { beforeBlock: load0, afterBlock: load1, afterNet: load2, afterTwoGuest: load3 },
      },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The registered suite. */
export const v86GuestSuite: Suite = {
  name: "v86-guest",
  summary:
    "Linux in v86: direct I/O on IDE vs virtio-blk (1 MiB and 64 KiB sequential, 4 KiB random; 3 rounds); TCP bulk both ways, TCP request/response and ping on pvkit virtio-net, pvkit RTL8139, v86 NE2000 and v86 virtio-net, and TCP between two guests (3 rounds; 7 boots)",
  run,
};
