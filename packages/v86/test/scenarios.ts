/**
 * Boot scenarios: a real Debian kernel in v86 drives pvkit devices attached with
 * `attachPvkit`, and each scenario returns what the guest printed and what the host saw.
 * The boot tests assert on these results; the bench's `v86-guest` suite reports them.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Rtl8139 } from "@pvkit/emulated-rtl8139";
import { EthernetSwitch, HostResponder, parseMac } from "@pvkit/platform";
import { PcapFileWriter } from "@pvkit/platform/node";
import { type BlockBackend, MemoryDisk, VirtioBlkDevice, VirtioBlkType } from "@pvkit/virtio-blk";
import { FileDisk } from "@pvkit/virtio-blk/node";
import { VirtioNetDevice } from "@pvkit/virtio-net";
import {
  type AttachPvkitOptions,
  attachPvkit,
  type PvkitV86,
  pvkitAcpiInitrd,
  type V86Emulator,
  V86ExitCounter,
  type V86WakeupStats,
} from "../src/index.js";
import type { Fixture } from "./fixture.js";
import { guestTool } from "./guest-tools.js";
import { type BootOptions, type BootResult, bootLinux } from "./harness.js";

/** Sectors of every test disk (8 MiB). */
export const DISK_SECTORS = 16384;
/** Sectors the guest reads and checksums. */
export const KNOWN_SECTORS = [0, 1, 7, 100, 2047, 16383] as const;
/** Where the guest writes its pattern: 4 KiB block 512 (sector 4096, 2 MiB). */
export const PATTERN_SECTOR = 4096;
/** Bytes of the pattern. */
export const PATTERN_BYTES = 65536;

/** The known contents of sector `s` of a test disk: distinct per sector and per disk seed. */
export function knownSector(s: number, seed: number): Uint8Array {
  const out = new Uint8Array(512);
  let x = (s * 2654435761 + seed * 40503 + 1) >>> 0 || 1;
  for (let i = 0; i < 512; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
    out[i + 1] = (x >>> 8) & 0xff;
    out[i + 2] = (x >>> 16) & 0xff;
    out[i + 3] = x >>> 24;
  }
  out.set(new TextEncoder().encode(`PVKIT-SECTOR-${s}`));
  return out;
}

/** A whole test disk image. */
export function knownDisk(seed: number): Uint8Array {
  const disk = new Uint8Array(DISK_SECTORS * 512);
  for (let s = 0; s < DISK_SECTORS; s++) disk.set(knownSector(s, seed), s * 512);
  return disk;
}

/** What the guest's `yes "pvkit pattern vdX" | head -c 65536` produces. */
export function guestPattern(name: string): Uint8Array {
  const line = `pvkit pattern ${name}\n`;
  return new TextEncoder()
    .encode(line.repeat(Math.ceil(PATTERN_BYTES / line.length)))
    .subarray(0, PATTERN_BYTES);
}

/** MD5 in hex, as busybox `md5sum` prints it. */
export function md5(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

/**
 * Prints `VIRTIO <sysfs path> <features>` for every virtio device: the features the
 * driver negotiated, one '0'/'1' per bit from bit 0 (Linux `features_show`).
 */
const VIRTIO_FEATURES_SCRIPT = `for d in /sys/bus/virtio/devices/*; do
  echo "VIRTIO $(readlink -f $d) $(cat $d/features)"
done
`;

/** Options of the pvkit virtio devices a scenario creates (default: their defaults). */
export interface ScenarioDeviceOptions {
  /** Offer VIRTIO_F_RING_PACKED (§2.8). */
  readonly ringPacked?: boolean;
}

/** The negotiated features of every virtio device a scenario's guest printed, by sysfs path. */
export function virtioFeatures(lines: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const l of lines) {
    const m = /^VIRTIO (\S+) ([01]+)$/.exec(l);
    if (m !== null) out.set(m[1]!, m[2]!);
  }
  return out;
}

// The kernel's console output can land inside a line the script is printing (an
// asynchronous record such as "random: crng init done" written while the line is still in
// the tty): console log level 1 keeps kernel records off the console while the script
// runs; they stay in the log, and the DMESG lines at the end carry warnings with them.
const BLK_SCRIPT = `dmesg -n 1
${VIRTIO_FEATURES_SCRIPT}
for d in /sys/block/vd*; do
  n=\${d##*/}
  echo "DISK $n $(readlink -f $d/device) $(cat $d/size) $(cat $d/serial)"
  for s in ${KNOWN_SECTORS.join(" ")}; do
    echo "READ $n $s $(dd if=/dev/$n bs=512 skip=$s count=1 2>/dev/null | md5sum | cut -d' ' -f1)"
  done
  yes "pvkit pattern $n" | head -c ${PATTERN_BYTES} > /tmp/p.$n
  dd if=/tmp/p.$n of=/dev/$n bs=4096 seek=${PATTERN_SECTOR / 8} conv=fsync 2>/dev/null
  echo "WROTE $n $?"
  sync
  echo 3 > /proc/sys/vm/drop_caches
  blockdev --flushbufs /dev/$n
  echo "BACK $n $(dd if=/dev/$n bs=4096 skip=${PATTERN_SECTOR / 8} count=${PATTERN_BYTES / 4096} 2>/dev/null | md5sum | cut -d' ' -f1) $(md5sum < /tmp/p.$n | cut -d' ' -f1)"
done
dmesg | grep -a -i -E "virtio|vd[a-z]|LNRO|table upgrade|WARNING:|BUG:|Oops|Call Trace" | sed 's/^/DMESG /'
`;

/** One disk as the guest and the host saw it. */
export interface DiskReport {
  /** Transport. */
  readonly transport: "pci" | "mmio";
  /** Back-end kind. */
  readonly backend: "memory" | "file";
  /** Guest device name (vda, vdb). */
  readonly name: string;
  /** The sysfs path of the virtio device (PCI or LNRO0005 platform device). */
  readonly sysfs: string;
  /** Sectors the guest sees. */
  readonly sectors: number;
  /** Serial (from GET_ID) the guest sees. */
  readonly serial: string;
  /** Known sectors whose MD5 in the guest matched the host's contents. */
  readonly readsMatching: number;
  /** The guest's write of the pattern exited 0. */
  readonly wroteOk: boolean;
  /** The guest read its pattern back unchanged. */
  readonly readBackOk: boolean;
  /** The guest's `BACK` line (its read-back MD5, the pattern's MD5), for failure messages. */
  readonly backLine: string;
  /** The host's disk holds the pattern afterwards. */
  readonly hostHasPattern: boolean;
  /** Bytes outside the pattern that differ from the original image. */
  readonly otherBytesChanged: number;
  /** FLUSH requests the device completed. */
  readonly flushes: number;
  /** Requests the device failed, by error code (a healthy run has none). */
  readonly errors: Readonly<Record<string, number>>;
  /** Requests completed, all types. */
  readonly requests: number;
  /** Register exits on the device. */
  readonly exits: number;
}

/** The result of a {@link runBlkBoot}. */
export interface BlkBootReport {
  /** The boot. */
  readonly boot: BootResult;
  /** One report per disk, PCI first. */
  readonly disks: readonly DiskReport[];
  /** Kernel log lines about the disks. */
  readonly dmesg: readonly string[];
}

async function backendOf(
  kind: "memory" | "file",
  image: Uint8Array,
  dir: string,
  name: string,
): Promise<{
  backend: BlockBackend;
  contents: () => Promise<Uint8Array>;
  close: () => Promise<void>;
}> {
  if (kind === "memory") {
    const disk = new MemoryDisk(image.slice());
    return { backend: disk, contents: async () => disk.bytes, close: async () => {} };
  }
  const path = join(dir, `${name}.img`);
  await writeFile(path, image);
  const disk = await FileDisk.open(path);
  return {
    backend: disk,
    contents: async () => new Uint8Array(await readFile(path)),
    close: () => disk.close(),
  };
}

/**
 * Boots with one virtio-blk over PCI and one over virtio-mmio (ACPI), backed as asked;
 * the guest reads known sectors, writes a pattern with `conv=fsync`, drops its caches and
 * reads the pattern back.
 *
 * @param fixture - the guest
 * @param backends - back-end of the PCI disk and of the mmio disk
 * @param dir - a scratch directory for file-backed disks
 * @param deviceOptions - passed to both `VirtioBlkDevice`s (e.g. `ringPacked`)
 */
export async function runBlkBoot(
  fixture: Fixture,
  backends: { pci: "memory" | "file"; mmio: "memory" | "file" },
  dir: string,
  deviceOptions: ScenarioDeviceOptions = {},
): Promise<BlkBootReport> {
  const images = { pci: knownDisk(1), mmio: knownDisk(2) };
  const pci = await backendOf(backends.pci, images.pci, dir, "pci");
  const mmio = await backendOf(backends.mmio, images.mmio, dir, "mmio");
  const devices = {
    pci: new VirtioBlkDevice({ ...deviceOptions, backend: pci.backend, serial: "pvkit-pci-disk" }),
    mmio: new VirtioBlkDevice({
      ...deviceOptions,
      backend: mmio.backend,
      serial: "pvkit-mmio-disk",
    }),
  };
  const options: AttachPvkitOptions = {
    devices: [
      { kind: "virtio-pci", device: devices.pci, name: "blk-pci" },
      { kind: "virtio-mmio", device: devices.mmio, name: "blk-mmio" },
    ],
  };
  let pv: PvkitV86 | undefined;
  let boot: BootResult;
  try {
    boot = await bootLinux({
      fixture,
      acpi: true,
      initrdPrefix: pvkitAcpiInitrd(options),
      onLoaded: (emulator) => {
        pv = attachPvkit(emulator as unknown as V86Emulator, options);
      },
      script: BLK_SCRIPT,
    });
  } finally {
    await Promise.all([pci.close(), mmio.close()]);
  }
  const stats = pv!.bus.stats().byDevice;
  const lines = boot.scriptLines;
  const disks: DiskReport[] = [];
  for (const line of lines) {
    const m = /^DISK (\S+) (\S+) (\d+) (\S*)$/.exec(line);
    if (m === null) continue;
    const [, name, sysfs, sectors, serial] = m as unknown as [
      string,
      string,
      string,
      string,
      string,
    ];
    const transport = sysfs.includes("LNRO0005") ? "mmio" : "pci";
    const image = images[transport];
    const contents = await (transport === "pci" ? pci : mmio).contents();
    let readsMatching = 0;
    for (const l of lines) {
      const r = new RegExp(`^READ ${name} (\\d+) ([0-9a-f]{32})$`).exec(l);
      if (r === null) continue;
      const s = Number(r[1]);
      if (r[2] === md5(image.subarray(s * 512, s * 512 + 512))) readsMatching++;
    }
    const backLine = lines.find((l) => l.startsWith(`BACK ${name} `)) ?? "";
    const back = backLine.split(" ");
    const pattern = guestPattern(name);
    const at = PATTERN_SECTOR * 512;
    let otherBytesChanged = 0;
    for (let i = 0; i < contents.length; i++) {
      if (i === at) i += PATTERN_BYTES;
      if (i < contents.length && contents[i] !== image[i]) otherBytesChanged++;
    }
    const dev = devices[transport];
    const byType = dev.stats.byType;
    disks.push({
      transport,
      backend: backends[transport],
      name,
      sysfs,
      sectors: Number(sectors),
      serial,
      readsMatching,
      wroteOk: lines.includes(`WROTE ${name} 0`),
      readBackOk: back.length === 4 && back[2] === back[3] && back[2] === md5(pattern),
      backLine: `${backLine || "no BACK line"} (pattern ${md5(pattern)})`,
      hostHasPattern: md5(contents.subarray(at, at + PATTERN_BYTES)) === md5(pattern),
      otherBytesChanged,
      flushes: byType[VirtioBlkType.FLUSH] ?? 0,
      errors: { ...dev.stats.errors },
      requests: Object.values(byType).reduce((a, b) => a + b, 0),
      exits: stats[transport === "pci" ? "blk-pci.bar0" : "blk-mmio"]?.exits ?? 0,
    });
  }
  disks.sort((a, b) => (a.transport === b.transport ? 0 : a.transport === "pci" ? -1 : 1));
  return {
    boot,
    disks,
    dmesg: lines.filter((l) => l.startsWith("DMESG ")).map((l) => l.slice(6)),
  };
}

// ── Networking ──────────────────────────────────────────────────────────────────

/** Where each NIC lives. */
export const NICS = {
  virtio: {
    driver: "virtio_net",
    guestIp: "10.0.2.15",
    hostIp: "10.0.2.2",
    mac: "52:54:00:12:34:56",
  },
  rtl8139: {
    driver: "8139too",
    guestIp: "10.0.3.15",
    hostIp: "10.0.3.2",
    mac: "52:54:00:12:34:57",
  },
} as const;

/** Ping flood: count, payload size and interval (busybox ping hangs with `-i 0`). */
export const FLOOD = { count: 300, size: 1400, interval: 0.005 } as const;
/** TCP bulk transfer: bytes the guest sends with `dd | nc` to the host's discard sink. */
export const BULK_BYTES = 4 << 20;

function netScript(): string {
  const setup = Object.values(NICS)
    .map(
      (n) => `for i in /sys/class/net/eth*; do
  if [ "$(basename $(readlink $i/device/driver))" = "${n.driver}" ]; then
    ip link set \${i##*/} up; ip addr add ${n.guestIp}/24 dev \${i##*/}
    echo "NIC ${n.driver} \${i##*/} $(cat $i/address)"
  fi
done`,
    )
    .join("\n");
  const run = (key: string, n: (typeof NICS)[keyof typeof NICS]) => `
ping -c 4 -W 3 ${n.hostIp} > /tmp/ping.${key} 2>&1; echo "PING ${key} $? $(grep -c 'bytes from' /tmp/ping.${key})"
echo "MARK flood-${key}-start"
ping -q -c ${FLOOD.count} -i ${FLOOD.interval} -s ${FLOOD.size} -w 30 ${n.hostIp} > /tmp/flood.${key}
echo "MARK flood-${key}-end"
grep -a -E 'packets|round-trip' /tmp/flood.${key} | sed 's/^/FLOOD ${key} /'
echo "MARK bulk-${key}-start"
t0=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/zero bs=64k count=${BULK_BYTES >> 16} 2>/dev/null | nc ${n.hostIp} 9; rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
echo "MARK bulk-${key}-end"
echo "BULK ${key} $rc $t0 $t1"`;
  // Warm-up, untimed: the first pass through the guest's network stack and drivers runs
  // while v86's JIT compiles them (1 MiB took 2.9 s cold and 1.25 s warm), which would
  // favour whichever NIC is measured second.
  const warm = Object.values(NICS)
    .map(
      (n) => `ping -q -c 20 -i ${FLOOD.interval} -s ${FLOOD.size} ${n.hostIp} > /dev/null
dd if=/dev/zero bs=64k count=16 2>/dev/null | nc ${n.hostIp} 9`,
    )
    .join("\n");
  return `${VIRTIO_FEATURES_SCRIPT}${setup}
sleep 1
${warm}
${run("virtio", NICS.virtio)}
${run("rtl8139", NICS.rtl8139)}
echo "MARK idle-start"
sleep 2
echo "MARK idle-end"
dmesg | grep -a -i -E "virtio|8139|eth[0-9]" | sed 's/^/DMESG /'
`;
}

/** One measured phase of a NIC (between two guest markers). */
export interface NicPhase {
  /** Host wall time, ms. */
  readonly ms: number;
  /** Register exits on the NIC. */
  readonly exits: number;
  /** Frames the NIC sent. */
  readonly txFrames: number;
  /** Frames the NIC received. */
  readonly rxFrames: number;
  /** TCP payload bytes the host's sink received. */
  readonly tcpBytes: number;
  /** Guest instructions executed (v86's counter). */
  readonly instructions: number;
}

/** One NIC's results. */
export interface NicReport {
  /** Interface name and MAC the guest printed. */
  readonly iface: string;
  /** MAC the guest sees. */
  readonly mac: string;
  /** ping exit status and replies counted. */
  readonly ping: { status: number; replies: number };
  /** The flood's summary as ping printed it (packets, loss, round-trip min/avg/max). */
  readonly floodSummary: string;
  /** Round-trip time average of the flood, ms, as the guest measured it. */
  readonly floodRttMs: number;
  /** Flood phase. */
  readonly flood: NicPhase;
  /** TCP bulk transfer: nc's exit status and guest seconds (bytes: `tcpBytes`). */
  readonly bulk: NicPhase & { readonly status: number; readonly seconds: number };
  /** Every frame that crossed the NIC's switch, in order. */
  readonly frames: readonly Uint8Array[];
  /** The pcap file of the same frames. */
  readonly pcap: string;
  /** The responder's counters. */
  readonly host: HostResponder["stats"];
}

/**
 * One ARP request the host injected from a timer callback while the guest slept, and the
 * slice of v86's CPU loop in which the guest answered it.
 */
export interface WakeProbe {
  /** Whether the guest CPU was halted when the frame arrived. */
  readonly halted: boolean;
  /** v86 slices (`main_loop` calls) from the injection to the one that sent the reply; NaN without a reply. */
  readonly slicesToReply: number;
}

/** The result of a {@link runNetBoot}. */
export interface NetBootReport {
  /** The boot. */
  readonly boot: BootResult;
  /** ARP requests injected from host timers during `sleep` (virtio-net), in order. */
  readonly wakeProbes: readonly WakeProbe[];
  /** The adapter's wake-up accounting at the end of the boot. */
  readonly wakeups: V86WakeupStats;
  /** virtio-net. */
  readonly virtio: NicReport;
  /** RTL8139. */
  readonly rtl8139: NicReport;
  /** Kernel log lines about the NICs. */
  readonly dmesg: readonly string[];
}

/**
 * Boots with a virtio-net (PCI) and an RTL8139 (PCI), each on its own switch with a
 * {@link HostResponder} and a pcap tap. The guest pings each host, floods it with
 * near-MTU pings, then sends it 4 MiB over TCP (`dd | nc` to the discard sink); the host
 * counts exits during the flood and the transfer.
 *
 * @param fixture - the guest
 * @param dir - where the pcap files go
 * @param deviceOptions - passed to the `VirtioNetDevice` (e.g. `ringPacked`)
 */
export async function runNetBoot(
  fixture: Fixture,
  dir: string,
  deviceOptions: ScenarioDeviceOptions = {},
): Promise<NetBootReport> {
  const rigs = {
    virtio: netRig("virtio", dir),
    rtl8139: netRig("rtl8139", dir),
  };
  const virtioNet = new VirtioNetDevice({
    ...deviceOptions,
    backend: rigs.virtio.sw.createPort("guest"),
    mac: NICS.virtio.mac,
  });
  let rtl: Rtl8139 | undefined;
  const options: AttachPvkitOptions = {
    devices: [
      { kind: "virtio-pci", device: virtioNet, name: "virtio-net" },
      {
        kind: "pci",
        create: (memory) => {
          rtl = new Rtl8139({
            memory,
            backend: rigs.rtl8139.sw.createPort("guest"),
            mac: NICS.rtl8139.mac,
          });
          return rtl;
        },
      },
    ],
  };
  let pv: PvkitV86 | undefined;
  let instructions = (): number => 0;
  const marks = new Map<
    string,
    {
      t: number;
      exits: Record<string, number>;
      tx: number[];
      rx: number[];
      tcp: number[];
      instr: number;
    }
  >();
  const exitsNow = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(pv!.bus.stats().byDevice)) out[k] = v.exits;
    return out;
  };
  // Wake-up probes: while the guest sleeps, the host injects ARP requests from timer
  // callbacks (a host callback, as a socket or another thread would deliver a frame) and
  // notes in which slice of v86's loop the reply leaves.
  let halted = (): boolean => false;
  const probes: { halted: boolean; slices: number; replySlices: number }[] = [];
  const probePort = rigs.virtio.sw.createPort("probe");
  probePort.attach({
    receive: (frame) => {
      const p = probes.at(-1);
      const isReply = frame[12] === 0x08 && frame[13] === 0x06 && frame[21] === 2;
      if (p !== undefined && Number.isNaN(p.replySlices) && isReply && pv !== undefined) {
        p.replySlices = pv.wakeups.slices;
      }
    },
  });
  const probe = (): void => {
    if (pv === undefined) return;
    probes.push({ halted: halted(), slices: pv.wakeups.slices, replySlices: Number.NaN });
    probePort.send(arpRequest(PROBE_MAC, PROBE_IP, NICS.virtio.guestIp), null);
  };
  const boot = await bootLinux({
    fixture,
    onLoaded: (emulator) => {
      pv = attachPvkit(emulator as unknown as V86Emulator, options);
      instructions = () => emulator.get_instruction_counter();
      const cpu = (emulator as unknown as V86Emulator).v86.cpu;
      halted = () => cpu.in_hlt?.[0] !== undefined && cpu.in_hlt[0] !== 0;
    },
    script: netScript(),
    onSerialLine: (line) => {
      const m = /^MARK (\S+)$/.exec(line);
      if (m === null || pv === undefined) return;
      if (m[1] === "idle-start") {
        for (let i = 0; i < WAKE_PROBES; i++) setTimeout(probe, 400 + 250 * i);
      }
      marks.set(m[1]!, {
        t: performance.now(),
        exits: exitsNow(),
        tx: [rigs.virtio.hostSide.rxFrames, rigs.rtl8139.hostSide.rxFrames],
        rx: [rigs.virtio.hostSide.txFrames, rigs.rtl8139.hostSide.txFrames],
        tcp: [rigs.virtio.host.stats.tcpBytes, rigs.rtl8139.host.stats.tcpBytes],
        instr: instructions(),
      });
    },
  });
  for (const r of Object.values(rigs)) r.pcapFile.close();
  const lines = boot.scriptLines;
  const phase = (key: "virtio" | "rtl8139", name: string, device: string): NicPhase => {
    const a = marks.get(`${name}-${key}-start`);
    const b = marks.get(`${name}-${key}-end`);
    if (a === undefined || b === undefined)
      return {
        ms: Number.NaN,
        exits: Number.NaN,
        txFrames: 0,
        rxFrames: 0,
        tcpBytes: 0,
        instructions: Number.NaN,
      };
    const i = key === "virtio" ? 0 : 1;
    const exits = Object.keys(b.exits)
      .filter((k) => k.startsWith(device))
      .reduce((s, k) => s + b.exits[k]! - (a.exits[k] ?? 0), 0);
    return {
      ms: b.t - a.t,
      exits,
      txFrames: b.tx[i]! - a.tx[i]!,
      rxFrames: b.rx[i]! - a.rx[i]!,
      tcpBytes: b.tcp[i]! - a.tcp[i]!,
      instructions: (b.instr - a.instr) >>> 0, // v86's counter is 32-bit; a phase is shorter
    };
  };
  const report = (key: "virtio" | "rtl8139", device: string): NicReport => {
    const nic = lines.find((l) => l.startsWith(`NIC ${NICS[key].driver} `))?.split(" ") ?? [];
    const ping = lines.find((l) => l.startsWith(`PING ${key} `))?.split(" ") ?? [];
    const flood = lines
      .filter((l) => l.startsWith(`FLOOD ${key} `))
      .map((l) => l.slice(`FLOOD ${key} `.length));
    const rtt = /round-trip min\/avg\/max = [\d.]+\/([\d.]+)\//.exec(flood.join("\n"));
    const bulk = lines.find((l) => l.startsWith(`BULK ${key} `))?.split(" ") ?? [];
    return {
      iface: nic[2] ?? "",
      mac: nic[3] ?? "",
      ping: { status: Number(ping[2]), replies: Number(ping[3]) },
      floodSummary: flood.join("; "),
      floodRttMs: rtt === null ? Number.NaN : Number(rtt[1]),
      flood: phase(key, "flood", device),
      bulk: {
        ...phase(key, "bulk", device),
        status: Number(bulk[2]),
        seconds: Number(bulk[4]) - Number(bulk[3]),
      },
      frames: rigs[key].frames,
      pcap: rigs[key].pcapPath,
      host: rigs[key].host.stats,
    };
  };
  return {
    boot,
    wakeProbes: probes.map((p) => ({ halted: p.halted, slicesToReply: p.replySlices - p.slices })),
    wakeups: { ...pv!.wakeups },
    virtio: report("virtio", "virtio-net"),
    rtl8139: report("rtl8139", "rtl8139"),
    dmesg: lines.filter((l) => l.startsWith("DMESG ")).map((l) => l.slice(6)),
  };
}

/** ARP requests the host injects while the guest sleeps (see {@link runNetBoot}). */
export const WAKE_PROBES = 5;
const PROBE_MAC = "52:54:00:00:00:99";
const PROBE_IP = "10.0.2.99";

/** An ARP request (RFC 826) from `mac`/`ip` for `target`, padded to 60 bytes. */
function arpRequest(mac: string, ip: string, target: string): Uint8Array {
  const f = new Uint8Array(60);
  const src = parseMac(mac)!;
  const v4 = (a: string) => a.split(".").map(Number);
  f.fill(0xff, 0, 6);
  f.set(src, 6);
  f.set([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1], 12);
  f.set(src, 22);
  f.set(v4(ip), 28);
  f.set(v4(target), 38);
  return f;
}

function netRig(key: "virtio" | "rtl8139", dir: string) {
  const sw = new EthernetSwitch();
  const host = new HostResponder({ ip: NICS[key].hostIp });
  const hostPort = sw.createPort("host");
  host.attachTo(hostPort);
  const pcapPath = join(dir, `${key}.pcap`);
  const pcapFile = new PcapFileWriter(pcapPath);
  const frames: Uint8Array[] = [];
  sw.addTap(pcapFile.tap());
  sw.addTap((frame) => {
    frames.push(frame.slice());
  });
  return { sw, host, hostSide: hostPort.stats, pcapFile, pcapPath, frames };
}

// ── Guest-visible disk comparison ───────────────────────────────────────────────

/** Bytes each `dd` moves. */
export const DD_BYTES = 16 << 20;

/** One `dd` run as the guest reported it and the host counted it. */
export interface DdResult {
  /** The device. */
  readonly disk: "ide" | "virtio-blk";
  /** Direction. */
  readonly op: "read" | "write";
  /** dd's exit status. */
  readonly status: number;
  /** Bytes moved. */
  readonly bytes: number;
  /** Seconds, as the guest measured them (`/proc/uptime` around the run). */
  readonly seconds: number;
  /** Requests the guest's block layer completed on the disk during the run. */
  readonly requests: number;
  /** Register exits on the disk during the run. */
  readonly exits: number;
  /** Guest instructions executed during the run (v86's counter). */
  readonly instructions: number;
}

/**
 * The counters of an IDE-vs-virtio-blk boot, sampled at each `MARK <key>` serial line: exits
 * of v86's PIIX IDE function (00:1e.0: both legacy channels and its bus-master block at BAR4,
 * wherever firmware put it) for keys starting with `ide`, exits of pvkit's virtio-blk BAR
 * otherwise, and guest instructions.
 *
 * @param options - the pvkit devices to attach (one virtio-pci device named `virtio-blk`)
 * @returns the marks by key, and the `onLoaded`/`onSerialLine` hooks for {@link bootLinux}
 */
function diskMarkRecorder(options: AttachPvkitOptions): {
  readonly marks: Map<string, { exits: number; instr: number }>;
  readonly hooks: Required<Pick<BootOptions, "onLoaded" | "onSerialLine">>;
} {
  const marks = new Map<string, { exits: number; instr: number }>();
  let pv: PvkitV86 | undefined;
  let counter: V86ExitCounter | undefined;
  let cpu: V86Emulator["v86"]["cpu"] | undefined;
  let instructions = (): number => 0;
  const ideExits = (): number => {
    const c = counter!;
    const bar4 = cpu!.devices.pci.device_spaces[0x1e << 3]?.[8] ?? 0;
    const bm = bar4 & 0xfffc;
    return (
      c.ports(0x1f0, 8).total +
      c.ports(0x3f6, 1).total +
      c.ports(0x170, 8).total +
      c.ports(0x376, 1).total +
      (bm === 0 ? 0 : c.ports(bm, 16).total)
    );
  };
  return {
    marks,
    hooks: {
      onLoaded: (emulator) => {
        const e = emulator as unknown as V86Emulator;
        pv = attachPvkit(e, options);
        cpu = e.v86.cpu;
        counter = new V86ExitCounter(cpu);
        instructions = () => emulator.get_instruction_counter();
      },
      onSerialLine: (line) => {
        const m = /^MARK (\S+)$/.exec(line);
        if (m === null || pv === undefined) return;
        marks.set(m[1]!, {
          exits: m[1]!.startsWith("ide")
            ? ideExits()
            : (pv.bus.stats().byDevice["virtio-blk.bar0"]?.exits ?? 0),
          instr: instructions(),
        });
      },
    },
  };
}

/** The result of a {@link runDiskCompareBoot}. */
export interface DiskCompareReport {
  /** The boot. */
  readonly boot: BootResult;
  /** Read and write runs on each disk. */
  readonly runs: readonly DdResult[];
}

/**
 * Boots with v86's own emulated IDE disk (`hda`, driven by Linux's `ata_piix`) and a
 * pvkit virtio-blk over PCI, and has the guest `dd` 16 MiB through each with the page
 * cache dropped: 64 KiB reads, then 64 KiB writes with `conv=fsync`.
 *
 * @param fixture - the guest
 */
export async function runDiskCompareBoot(fixture: Fixture): Promise<DiskCompareReport> {
  const size = 2 * DD_BYTES;
  const hda = new ArrayBuffer(size);
  const blk = new VirtioBlkDevice({ backend: new MemoryDisk(size), serial: "pvkit-compare" });
  const options: AttachPvkitOptions = {
    devices: [{ kind: "virtio-pci", device: blk, name: "virtio-blk" }],
  };
  // Warm-up, untimed: v86's JIT compiles the block layer and both drivers on first use,
  // which would favour the disk measured second.
  const steps: string[] = [
    "for d in sda vda; do dd if=/dev/$d of=/dev/null bs=64k count=64 2>/dev/null; dd if=/dev/zero of=/dev/$d bs=64k count=64 conv=fsync 2>/dev/null; done",
  ];
  for (const [disk, dev] of [
    ["ide", "sda"],
    ["virtio-blk", "vda"],
  ] as const) {
    for (const [op, cmd] of [
      ["read", `dd if=/dev/${dev} of=/dev/null bs=64k count=${DD_BYTES >> 16}`],
      ["write", `dd if=/dev/zero of=/dev/${dev} bs=64k count=${DD_BYTES >> 16} conv=fsync`],
    ] as const) {
      // Guest-visible time from /proc/uptime (10 ms resolution) around each run.
      steps.push(
        `sync; echo 3 > /proc/sys/vm/drop_caches; echo "MARK ${disk}-${op}"`,
        // Requests the block layer completed (/sys/block/<dev>/stat: read + write I/Os).
        `io0=$(awk '{print $1 + $5}' /sys/block/${dev}/stat)`,
        `t0=$(cut -d' ' -f1 /proc/uptime); ${cmd} 2>/tmp/dd.err; rc=$?; t1=$(cut -d' ' -f1 /proc/uptime)`,
        `io1=$(awk '{print $1 + $5}' /sys/block/${dev}/stat)`,
        `echo "MARK ${disk}-${op}-end"; echo "DD ${disk} ${op} $rc $t0 $t1 $((io1 - io0))"; sed 's/^/DDLOG /' /tmp/dd.err`,
      );
    }
  }
  const recorder = diskMarkRecorder(options);
  const { marks } = recorder;
  // v86's PIIX IDE function (00:1e.0): both legacy channels and its bus-master block (BAR4,
  // wherever firmware put it).
  const boot = await bootLinux({
    fixture,
    hda,
    ...recorder.hooks,
    script: `${steps.join("\n")}\n`,
  });
  const runs: DdResult[] = [];
  for (const line of boot.scriptLines) {
    const m = /^DD (ide|virtio-blk) (read|write) (\d+) ([\d.]+) ([\d.]+) (\d+)$/.exec(line);
    if (m === null) continue;
    const disk = m[1] as "ide" | "virtio-blk";
    const op = m[2] as "read" | "write";
    const a = marks.get(`${disk}-${op}`);
    const b = marks.get(`${disk}-${op}-end`);
    runs.push({
      disk,
      op,
      status: Number(m[3]),
      bytes: DD_BYTES,
      seconds: Number(m[5]) - Number(m[4]),
      requests: Number(m[6]),
      exits: a === undefined || b === undefined ? Number.NaN : b.exits - a.exits,
      instructions: a === undefined || b === undefined ? Number.NaN : (b.instr - a.instr) >>> 0,
    });
  }
  return { boot, runs };
}

// ── The guest-visible comparison ────────────────────────────────────────────────

/** A table of the comparison (same shape as the bench's result tables). */
export interface ComparisonTable {
  /** Title. */
  readonly title: string;
  /** Column headers. */
  readonly columns: readonly string[];
  /** Rows of cells. */
  readonly rows: readonly (readonly string[])[];
}

/**
 * The emulated-vs-paravirtual comparison as the guest saw it: `dd` on v86's IDE disk vs
 * pvkit's virtio-blk, and a TCP bulk transfer and a ping flood over the RTL8139 vs
 * virtio-net, with the exits the host counted.
 */
export function comparisonTables(disk: DiskCompareReport, net: NetBootReport): ComparisonTable[] {
  const mib = DD_BYTES / (1 << 20);
  const diskRows = disk.runs.map((r) => [
    r.disk === "ide" ? "v86 IDE (ata_piix)" : "pvkit virtio-blk (virtio_pci)",
    r.op,
    r.seconds.toFixed(2),
    (mib / r.seconds).toFixed(1),
    String(r.requests),
    String(r.exits),
    (r.exits / Math.max(1, r.requests)).toFixed(1),
    (r.instructions / 1e6).toFixed(0),
  ]);
  for (const op of ["read", "write"] as const) {
    const ide = disk.runs.find((r) => r.disk === "ide" && r.op === op);
    const pv = disk.runs.find((r) => r.disk === "virtio-blk" && r.op === op);
    if (ide === undefined || pv === undefined) continue;
    diskRows.push([
      "IDE ÷ virtio-blk",
      op,
      `${(ide.seconds / pv.seconds).toFixed(2)}×`,
      "",
      "",
      `${(ide.exits / Math.max(1, pv.exits)).toFixed(1)}×`,
      "",
      `${(ide.instructions / pv.instructions).toFixed(2)}×`,
    ]);
  }
  const nicRow = (name: string, n: NicReport): string[] => {
    const packets = n.flood.txFrames;
    return [
      name,
      String(packets),
      n.floodRttMs.toFixed(3),
      String(n.flood.exits),
      (n.flood.exits / Math.max(1, packets)).toFixed(2),
      (n.flood.instructions / Math.max(1, packets) / 1000).toFixed(0),
    ];
  };
  const ratio = net.rtl8139.flood.exits / Math.max(1, net.virtio.flood.exits);
  const bulkRow = (name: string, n: NicReport): string[] => [
    name,
    n.bulk.seconds.toFixed(2),
    (n.bulk.tcpBytes / (1 << 20) / n.bulk.seconds).toFixed(2),
    String(n.bulk.txFrames),
    String(n.bulk.exits),
    (n.bulk.exits / Math.max(1, n.bulk.txFrames)).toFixed(2),
    (n.bulk.instructions / Math.max(1, n.bulk.txFrames) / 1000).toFixed(0),
  ];
  return [
    {
      title: `dd of ${mib} MiB in 64 KiB blocks, page cache dropped (guest time from /proc/uptime)`,
      columns: [
        "disk",
        "op",
        "guest s",
        "MiB/s",
        "requests",
        "exits",
        "exits/request",
        "guest Minstr",
      ],
      rows: diskRows,
    },
    {
      title: `TCP bulk transfer: ${BULK_BYTES >> 20} MiB from the guest (dd | nc) to the host's sink (guest time from /proc/uptime)`,
      columns: [
        "NIC (Linux driver)",
        "guest s",
        "MiB/s",
        "frames sent",
        "exits",
        "exits/frame",
        "guest kinstr/frame",
      ],
      rows: [
        bulkRow("RTL8139 (8139too)", net.rtl8139),
        bulkRow("virtio-net (virtio_net)", net.virtio),
        [
          "RTL8139 ÷ virtio-net",
          `${(net.rtl8139.bulk.seconds / net.virtio.bulk.seconds).toFixed(2)}×`,
          "",
          "",
          `${(net.rtl8139.bulk.exits / Math.max(1, net.virtio.bulk.exits)).toFixed(1)}×`,
          "",
          `${(net.rtl8139.bulk.instructions / net.virtio.bulk.instructions).toFixed(2)}×`,
        ],
      ],
    },
    {
      title: `ping flood: ${FLOOD.count} echo requests of ${FLOOD.size} bytes every ${FLOOD.interval * 1000} ms (guest-measured round trip)`,
      columns: [
        "NIC (Linux driver)",
        "packets",
        "avg RTT ms",
        "exits",
        "exits/packet",
        "guest kinstr/packet",
      ],
      rows: [
        nicRow("RTL8139 (8139too)", net.rtl8139),
        nicRow("virtio-net (virtio_net)", net.virtio),
        [
          "RTL8139 ÷ virtio-net",
          "",
          `${(net.rtl8139.floodRttMs / net.virtio.floodRttMs).toFixed(2)}×`,
          `${ratio.toFixed(1)}×`,
          "",
          `${(net.rtl8139.flood.instructions / net.virtio.flood.instructions).toFixed(2)}×`,
        ],
      ],
    },
  ];
}

/** A table as Markdown. */
export function markdownTable(t: ComparisonTable): string {
  return [
    `**${t.title}**`,
    "",
    `| ${t.columns.join(" | ")} |`,
    `|${t.columns.map(() => "---").join("|")}|`,
    ...t.rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");
}

// ── Guest-visible block benchmark (direct I/O) ──────────────────────────────────

/** One direct-I/O pattern of {@link runBlockBench}. */
export interface BlockPattern {
  /** `read` or `write`. */
  readonly op: "read" | "write";
  /** Block size in bytes. */
  readonly bs: number;
  /** Bytes per run. */
  readonly bytes: number;
  /**
   * Random offsets over the first {@link BLOCK_SPAN} bytes, one request at a time
   * (`randio`, see `guest-tools/randio.c`), instead of `dd`'s sequential ones.
   */
  readonly random?: boolean;
}

/** Bytes of each disk the patterns cover (sequential runs start at 0; random ones stay inside). */
export const BLOCK_SPAN = 64 << 20;

/**
 * The patterns: sequential 1 MiB and 64 KiB blocks over 64 MiB; 4 KiB blocks at random
 * offsets over 64 MiB, queue depth 1, 4096 requests (16 MiB).
 */
export const BLOCK_PATTERNS: readonly BlockPattern[] = [
  { op: "read", bs: 1 << 20, bytes: 64 << 20 },
  { op: "write", bs: 1 << 20, bytes: 64 << 20 },
  { op: "read", bs: 64 << 10, bytes: 64 << 20 },
  { op: "write", bs: 64 << 10, bytes: 64 << 20 },
  { op: "read", bs: 4 << 10, bytes: 16 << 20, random: true },
  { op: "write", bs: 4 << 10, bytes: 16 << 20, random: true },
];

/** Timed repeats of every pattern on every disk. */
export const BLOCK_REPEATS = 3;

/** One timed direct-I/O run. */
export interface BlockRun {
  /** The disk. */
  readonly disk: "ide" | "virtio-blk";
  /** The pattern. */
  readonly pattern: BlockPattern;
  /** Repeat number (0-based). */
  readonly repeat: number;
  /** dd's exit status. */
  readonly status: number;
  /** Guest-measured seconds (kernel timestamps of /dev/kmsg records around dd, µs resolution). */
  readonly seconds: number;
  /** Register exits on the disk during the run. */
  readonly exits: number;
  /** Guest instructions executed during the run (v86's counter). */
  readonly instructions: number;
}

/** What {@link runBlockBench} measured. */
export interface BlockBenchReport {
  /** The boot. */
  readonly boot: BootResult;
  /** Every timed run, in the order run. */
  readonly runs: readonly BlockRun[];
  /** The guest clock used. */
  readonly clock: string;
}

/**
 * Boots with v86's own IDE disk (`ata_piix`) and pvkit's virtio-blk (PCI) and runs
 * `dd` with `iflag=direct` / `oflag=direct` (no page cache), or `randio` (O_DIRECT, random
 * offsets) for the random patterns, through each: every pattern
 * of {@link BLOCK_PATTERNS} once untimed (v86's JIT compiles the paths on first use), then
 * {@link BLOCK_REPEATS} timed rounds, the two disks alternating inside each round. Guest
 * time comes from the kernel's own timestamps (µs) of records written to `/dev/kmsg`
 * around each `dd` (busybox `date` has no `%N`; `/proc/uptime` has 10 ms).
 */
export async function runBlockBench(fixture: Fixture): Promise<BlockBenchReport> {
  const size = 80 << 20;
  const hda = new ArrayBuffer(size);
  const blk = new VirtioBlkDevice({ backend: new MemoryDisk(size), serial: "pvkit-bench" });
  const options: AttachPvkitOptions = {
    devices: [{ kind: "virtio-pci", device: blk, name: "virtio-blk" }],
  };
  const disks = [
    ["ide", "sda"],
    ["virtio-blk", "vda"],
  ] as const;
  // Every disk gets the same random offsets in a round (the seed is the round's number).
  const dd = (dev: string, p: BlockPattern, count: number, seed = 0): string => {
    if (p.random === true)
      return `/pvkit/randio /dev/${dev} ${p.op === "read" ? "r" : "w"} ${count} ${p.bs} ${BLOCK_SPAN} ${seed}`;
    return p.op === "read"
      ? `dd if=/dev/${dev} of=/dev/null bs=${p.bs} count=${count} iflag=direct`
      : `dd if=/dev/zero of=/dev/${dev} bs=${p.bs} count=${count} oflag=direct`;
  };
  const steps: string[] = [];
  for (const p of BLOCK_PATTERNS) {
    for (const [, dev] of disks)
      steps.push(`${dd(dev, p, Math.max(1, (4 << 20) / p.bs))} 2>/dev/null`);
  }
  for (let r = 0; r < BLOCK_REPEATS; r++) {
    BLOCK_PATTERNS.forEach((p, i) => {
      for (const [disk, dev] of disks) {
        const key = `${disk}-${i}-${r}`;
        steps.push(
          // The kernel stamps /dev/kmsg records with local_clock (µs in dmesg); level 7
          // keeps them off the console, so nothing is printed inside the timed window.
          `echo "MARK ${key}"; echo "<7>BLKT ${key} start" > /dev/kmsg; ${dd(dev, p, p.bytes / p.bs, r + 1)} 2>/tmp/dd.err; rc=$?; echo "<7>BLKT ${key} end $rc" > /dev/kmsg; echo "MARK ${key}-end"`,
          `grep -v records /tmp/dd.err | grep -v copied | sed 's/^/DDLOG /'`,
        );
      }
    });
  }
  steps.push(`dmesg | grep BLKT | sed 's/^/T /'`);
  const recorder = diskMarkRecorder(options);
  const { marks } = recorder;
  const boot = await bootLinux({
    fixture,
    hda,
    tools: { randio: await guestTool("randio") },
    timeoutMs: 900_000,
    ...recorder.hooks,
    script: `${steps.join("\n")}\n`,
  });
  const stamps = new Map<string, { t: number; rc: number }>();
  for (const line of boot.scriptLines) {
    const m = /^T \[\s*(\d+\.\d+)\] BLKT (\S+) (start|end)(?: (\d+))?$/.exec(line);
    if (m !== null) stamps.set(`${m[2]}-${m[3]}`, { t: Number(m[1]), rc: Number(m[4] ?? 0) });
  }
  const runs: BlockRun[] = [];
  for (let r = 0; r < BLOCK_REPEATS; r++) {
    BLOCK_PATTERNS.forEach((pattern, i) => {
      for (const [disk] of disks) {
        const key = `${disk}-${i}-${r}`;
        const t0 = stamps.get(`${key}-start`);
        const t1 = stamps.get(`${key}-end`);
        const a = marks.get(key);
        const b = marks.get(`${key}-end`);
        if (t0 === undefined || t1 === undefined) continue;
        runs.push({
          disk,
          pattern,
          repeat: r,
          status: t1.rc,
          seconds: t1.t - t0.t,
          exits: a === undefined || b === undefined ? Number.NaN : b.exits - a.exits,
          instructions: a === undefined || b === undefined ? Number.NaN : (b.instr - a.instr) >>> 0,
        });
      }
    });
  }
  const clock = "kernel printk timestamps of /dev/kmsg records (local_clock, µs resolution)";
  return { boot, runs, clock };
}
