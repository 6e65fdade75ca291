/**
 * The guest-visible emulated-vs-paravirtual comparison, from inside Linux in v86:
 * - networking: Linux's `virtio_net` on pvkit's virtio-net and `8139too` on pvkit's RTL8139,
 *   each on its own switch with a host that answers ARP and ICMP echo and sinks TCP; the
 *   guest pings, floods and sends 4 MiB over TCP; every frame is checked byte for byte in
 *   a pcap read back by tshark;
 * - disks: `dd` through v86's own emulated IDE disk and through pvkit's virtio-blk.
 * The tables are printed here and kept by the bench (`pnpm bench v86-guest`).
 */

import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectSameBytes } from "../../../test-utils/bytes.js";
import { ensureFixture, type Fixture } from "./fixture.js";
import { logTimings } from "./harness.js";
import { type BenchNic, type NetBenchSizes, runNetBench, runTwoGuestBench } from "./net-bench.js";
import {
  BULK_BYTES,
  comparisonTables,
  type DiskCompareReport,
  FLOOD,
  markdownTable,
  type NetBootReport,
  NICS,
  type NicReport,
  runDiskCompareBoot,
  runNetBoot,
  WAKE_PROBES,
} from "./scenarios.js";

/** A stack frame in pvkit's device or platform sources (not tests, not the harness). */
const PVKIT_SOURCE =
  /packages\/(platform|virtio-core|virtio-net|virtio-blk|emulated-rtl8139|v86)\/src\//;

const dir = mkdtempSync(join(tmpdir(), "pvkit-v86-net-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function tshark(path: string, args: string[]): string {
  return execFileSync("tshark", ["-r", path, ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
    maxBuffer: 64 << 20,
  });
}

/** Every frame of the pcap as tshark decodes it, compared with what the switch carried. */
function checkPcap(n: NicReport, guestMac: string, hostIp: string, guestIp: string): void {
  const dumps = tshark(n.pcap, ["-x"])
    .trim()
    .split(/\n\s*\n/);
  expect(dumps.length).toBe(n.frames.length);
  dumps.forEach((dump, i) => {
    let hex = "";
    for (const line of dump.split("\n")) {
      const m = /^[0-9a-f]{4}\s\s((?:[0-9a-f]{2} )+)/.exec(`${line} `);
      if (m) hex += m[1]!.replace(/ /g, "");
    }
    expectSameBytes(Uint8Array.from(Buffer.from(hex, "hex")), n.frames[i]!);
  });
  const fields = tshark(n.pcap, [
    "-o",
    "ip.check_checksum:TRUE",
    "-T",
    "fields",
    "-E",
    "separator=,",
    "-e",
    "eth.src",
    "-e",
    "arp.opcode",
    "-e",
    "ip.src",
    "-e",
    "ip.dst",
    "-e",
    "icmp.type",
    "-e",
    "icmp.ident",
    "-e",
    "icmp.seq",
    "-e",
    "data.data",
    "-e",
    "ip.checksum.status",
    "-e",
    "icmp.checksum.status",
  ])
    .trim()
    .split("\n")
    .map((l) => l.split(","));
  // ARP: the guest asked for the host, the host answered.
  expect(fields.some((f) => f[0] === guestMac && f[1] === "1")).toBe(true);
  expect(fields.some((f) => f[0] !== guestMac && f[1] === "2")).toBe(true);
  const requests = fields.filter((f) => f[4] === "8" && f[2] === guestIp && f[3] === hostIp);
  const replies = new Map(
    fields
      .filter((f) => f[4] === "0" && f[2] === hostIp && f[3] === guestIp)
      .map((f) => [`${f[5]}/${f[6]}`, f]),
  );
  expect(requests.length).toBeGreaterThanOrEqual(4 + FLOOD.count);
  for (const q of requests) {
    const r = replies.get(`${q[5]}/${q[6]}`);
    expect(r, `no reply to echo ${q[5]}/${q[6]}`).toBeDefined();
    expect(r![7]).toBe(q[7]); // same payload
    // tshark's checksum status: 0 bad, 1 good, 2 unverified.
    expect(q[8]).toBe("1");
    expect(r![8]).toBe("1");
    expect(q[9]).toBe("1");
    expect(r![9]).toBe("1");
  }
}

describe("Linux drives pvkit's NICs in v86, and the guest-visible comparison", () => {
  let fixture: Fixture;
  let net: NetBootReport;
  let disk: DiskCompareReport;
  beforeAll(async () => {
    fixture = await ensureFixture();
  }, 600_000);

  it("virtio_net and 8139too: ARP, ping, a ping flood and a TCP transfer, byte for byte in a pcap", {
    timeout: 400_000,
  }, async () => {
    // Every setTimeout called from pvkit's device and platform sources during the boot:
    // device work must never wait on a clamped timer (DESIGN.md, "Hot paths").
    const pvkitTimers: string[] = [];
    const setTimeoutOrig = globalThis.setTimeout;
    globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
      const stack = new Error().stack ?? "";
      if (PVKIT_SOURCE.test(stack)) pvkitTimers.push(stack);
      return setTimeoutOrig(...args);
    }) as typeof setTimeout;
    try {
      net = await runNetBoot(fixture, dir);
    } finally {
      globalThis.setTimeout = setTimeoutOrig;
    }
    logTimings("net", net.boot);
    expect(pvkitTimers).toEqual([]);
    // An interrupt raised from a host callback (an ARP request injected from a timer while
    // the guest sleeps) reaches the halted guest at once: it is taken inside the raise, and
    // the reply leaves in the very next slice of v86's loop.
    expect(net.wakeProbes).toHaveLength(WAKE_PROBES);
    const halted = net.wakeProbes.filter((p) => p.halted);
    expect(halted.length).toBeGreaterThanOrEqual(WAKE_PROBES - 1);
    for (const p of halted) expect(p.slicesToReply).toBe(1);
    expect(net.wakeups.haltedRaises).toBeGreaterThanOrEqual(halted.length);
    expect(net.wakeups.stillHalted).toBe(0);
    expect(net.boot.exitStatus).toBe(0);
    expect(net.boot.kernelWarnings).toEqual([]);
    for (const key of ["virtio", "rtl8139"] as const) {
      const n = net[key];
      const cfg = NICS[key];
      expect(n.mac).toBe(cfg.mac);
      expect(n.iface).toMatch(/^eth\d$/);
      expect(n.ping).toEqual({ status: 0, replies: 4 });
      expect(n.floodSummary).toContain(
        `${FLOOD.count} packets transmitted, ${FLOOD.count} packets received, 0% packet loss`,
      );
      expect(n.host.arpReplies).toBeGreaterThanOrEqual(1);
      expect(n.host.echoReplies).toBeGreaterThanOrEqual(4 + FLOOD.count);
      expect(n.flood.txFrames).toBeGreaterThanOrEqual(FLOOD.count);
      expect(n.flood.exits).toBeGreaterThan(0);
      expect(n.bulk.status).toBe(0);
      expect(n.bulk.tcpBytes).toBe(BULK_BYTES);
      expect(n.host.tcpConnections).toBe(2); // the warm-up and the measured transfer
      expect(n.host.tcpRefused).toBe(0);
      expect(n.bulk.seconds).toBeGreaterThan(0);
      checkPcap(n, cfg.mac, cfg.hostIp, cfg.guestIp);
    }
    expect(
      net.dmesg.some((l) =>
        /8139too .* eth\d: RealTek RTL8139 at .*, 52:54:00:12:34:57, IRQ \d+/.test(l),
      ),
    ).toBe(true);
    // Exits per flood packet: the paravirtual NIC needs far fewer.
    expect(net.virtio.flood.exits * 3).toBeLessThan(net.rtl8139.flood.exits);
  });

  it("the network benchmark's pieces: v86's own NICs bound and bridged, bulk both ways, TCP exchanges, ping", {
    timeout: 1_200_000,
  }, async () => {
    // Small sizes: this checks correctness (every byte arrives, every NIC works), not speed.
    const sizes: NetBenchSizes = {
      bulkBytes: 1 << 20,
      warmupBytes: 256 << 10,
      repeats: 1,
      exchanges: 3,
      pings: 2,
      flood: 5,
    };
    const boots = [
      await runNetBench(fixture, "ne2k", undefined, sizes),
      await runNetBench(fixture, "v86-virtio", ["v86-virtio"], sizes),
    ];
    const drivers: Record<BenchNic, string> = {
      virtio: "virtio_net",
      rtl8139: "8139too",
      ne2k: "ne2k-pci",
      "v86-virtio": "virtio_net",
    };
    for (const b of boots) {
      logTimings(`net bench ${b.nics.join("+")}`, b.boot);
      expect(b.boot.exitStatus).toBe(0);
      expect(b.boot.kernelWarnings).toEqual([]);
      for (const nic of b.nics) {
        expect(b.drivers[nic]).toBe(drivers[nic]);
        const runs = b.runs.filter((r) => r.nic === nic);
        expect(runs.map((r) => `${r.op}/${r.status}`)).toEqual([
          "tx/0",
          "rx/0",
          `rr/${sizes.exchanges}`,
        ]);
        // Every byte: the sink counted the guest's transfer, the guest counted the source's.
        expect(runs.find((r) => r.op === "tx")!.bytes).toBe(sizes.bulkBytes);
        expect(runs.find((r) => r.op === "rx")!.bytes).toBe(sizes.bulkBytes);
        for (const r of runs) {
          expect(r.exits).toBeGreaterThan(0);
          expect(r.instructions).toBeGreaterThan(0);
          expect(r.seconds).toBeGreaterThan(0);
        }
        const host = b.host[nic]!;
        expect(host.tcpBytes).toBe(sizes.warmupBytes + sizes.bulkBytes);
        expect(host.tcpSourceBytes).toBe(sizes.warmupBytes + sizes.bulkBytes);
        expect(host.tcpSourceConnections).toBe(2);
        expect(host.tcpEchoConnections).toBe(5 + sizes.exchanges);
        expect(host.tcpEchoBytes).toBe(5 * (5 + sizes.exchanges));
        const ping = b.pings.find((p) => p.nic === nic)!;
        expect(ping.replies).toBe(sizes.pings);
        expect(ping.floodReplies).toBe(sizes.flood);
        expect(ping.rttMs).toBeGreaterThan(0);
      }
    }
  });

  it("two guests on one switch: every NIC carries a TCP transfer from guest A to guest B", {
    timeout: 1_800_000,
  }, async () => {
    const sizes: NetBenchSizes = {
      bulkBytes: 256 << 10,
      warmupBytes: 64 << 10,
      repeats: 1,
      exchanges: 0,
      pings: 0,
      flood: 0,
    };
    const r = await runTwoGuestBench(fixture, "ne2k", undefined, sizes);
    for (const b of r.boots) {
      expect(b.exitStatus).toBe(0);
      expect(b.kernelWarnings).toEqual([]);
    }
    for (const d of r.drivers)
      expect(d).toEqual({ virtio: "virtio_net", rtl8139: "8139too", ne2k: "ne2k-pci" });
    expect(r.runs.map((x) => `${x.nic}/${x.repeat}/${x.status}/${x.bytes}`).sort()).toEqual(
      (["ne2k", "rtl8139", "virtio"] as const).flatMap((n) => [
        `${n}/-1/0/${sizes.warmupBytes}`,
        `${n}/0/0/${sizes.bulkBytes}`,
      ]),
    );
    for (const x of r.runs) {
      expect(x.exits[0]).toBeGreaterThan(0);
      expect(x.exits[1]).toBeGreaterThan(0);
    }
  });

  it("dd through v86's IDE disk and pvkit's virtio-blk", { timeout: 400_000 }, async () => {
    disk = await runDiskCompareBoot(fixture);
    logTimings("disk compare", disk.boot);
    expect(disk.boot.exitStatus).toBe(0);
    expect(disk.runs.map((r) => `${r.disk}/${r.op}/${r.status}`)).toEqual([
      "ide/read/0",
      "ide/write/0",
      "virtio-blk/read/0",
      "virtio-blk/write/0",
    ]);
    for (const r of disk.runs) {
      expect(r.seconds).toBeGreaterThan(0);
      expect(r.requests).toBeGreaterThan(0);
      expect(r.exits).toBeGreaterThan(0);
    }
    const exits = (d: string, op: string) =>
      disk.runs.find((r) => r.disk === d && r.op === op)!.exits;
    expect(exits("virtio-blk", "read") * 3).toBeLessThan(exits("ide", "read"));
    expect(exits("virtio-blk", "write") * 3).toBeLessThan(exits("ide", "write"));
  });

  it("prints the comparison", () => {
    expect(net).toBeDefined();
    expect(disk).toBeDefined();
    const tables = comparisonTables(disk, net);
    expect(tables.map((t) => t.rows.length)).toEqual([6, 3, 3]);
    console.log(tables.map(markdownTable).join("\n\n"));
  });
});
