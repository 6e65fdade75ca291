/**
 * The guest-visible network benchmark: one Linux guest in v86 with pvkit's virtio-net,
 * pvkit's RTL8139 and one of v86's own NICs (its NE2000 or its virtio-net; v86 has one NIC
 * of its own per emulator), each on its own `EthernetSwitch` and subnet with a
 * `HostResponder` (discard sink on 9, TCP sources on 19 and 20, echo on 7). Every NIC runs
 * the same script: an untimed warm-up, then rounds in which the NICs take turns (the order
 * rotates each round): TCP bulk guest→host (`nc -e dd`, 64 KiB writes, to the sink), TCP bulk host→guest
 * (`nc | wc -c` from the source), sequential small TCP exchanges with the echo service, ping
 * (RTT as ping reports it) and a ping flood. Guest time comes from the kernel's µs
 * timestamps of `/dev/kmsg` records written around each timed command, as in the block
 * benchmark. The host samples, at `MARK` lines printed just outside each timed window,
 * the NIC's exits (pvkit's Bus for pvkit devices, `V86ExitCounter.pciFunction` for v86's),
 * guest instructions and the frames on the NIC's switch port.
 *
 * @module
 */

import { Rtl8139 } from "@pvkit/emulated-rtl8139";
import { EthernetSwitch, HostResponder } from "@pvkit/platform";
import { VirtioNetDevice } from "@pvkit/virtio-net";
import {
  type AttachPvkitOptions,
  attachPvkit,
  type PvkitV86,
  type V86Emulator,
  V86ExitCounter,
  type V86NicEmulator,
  v86NicBackend,
} from "../src/index.js";
import type { Fixture } from "./fixture.js";
import { type BootResult, bootLinux } from "./harness.js";

/** The NICs of the benchmark. */
export type BenchNic = "virtio" | "rtl8139" | "ne2k" | "v86-virtio";

/** Per NIC: who made it, the Linux driver that must bind, its subnet. */
export const BENCH_NICS: Record<
  BenchNic,
  { readonly label: string; readonly driver: string; readonly net: string }
> = {
  virtio: { label: "pvkit virtio-net (virtio_net)", driver: "virtio_net", net: "10.0.2" },
  rtl8139: { label: "pvkit RTL8139 (8139too)", driver: "8139too", net: "10.0.3" },
  ne2k: { label: "v86 NE2000 (ne2k-pci)", driver: "ne2k-pci", net: "10.0.4" },
  "v86-virtio": { label: "v86 virtio-net (virtio_net)", driver: "virtio_net", net: "10.0.4" },
};

/**
 * Frames pvkit's RTL8139 holds while its receive ring is full, delivered as the driver frees
 * room (CAPR): the default of pvkit's virtio-net (`rxPending` 256), so that both pvkit NICs
 * queue the same way, as QEMU's net queue does for every NIC. Without it the chip drops as
 * the hardware does, and a host burst larger than 8139too's 32 KiB ring is lost.
 */
const RTL_RX_PENDING = 256;

const PVKIT_MACS = { virtio: "52:54:00:12:34:56", rtl8139: "52:54:00:12:34:57" } as const;
/** v86's own NICs' PCI functions (src/ne2k.js: slot 5; src/virtio_net.js: pci_id 0x50). */
const V86_NIC_DEVFN = { ne2k: 5 << 3, "v86-virtio": 10 << 3 } as const;

/** Ports of the host services. */
export const NET_PORTS = { sink: 9, source: 19, warmSource: 20, echo: 7 } as const;

/** Sizes and counts of a {@link runNetBench}. */
export interface NetBenchSizes {
  /** Bytes of each timed bulk transfer, each direction. */
  readonly bulkBytes: number;
  /** Bytes of the untimed warm-up transfers. */
  readonly warmupBytes: number;
  /** Timed rounds. */
  readonly repeats: number;
  /** Sequential TCP exchanges (connect, 5 bytes each way, close) per timed run. */
  readonly exchanges: number;
  /** Pings per round (RTT). */
  readonly pings: number;
  /** Flood pings per round (1400 bytes, 5 ms apart). */
  readonly flood: number;
}

/** The bench's sizes: 16 MiB each way, 3 rounds. */
export const NET_BENCH_SIZES: NetBenchSizes = {
  bulkBytes: 16 << 20,
  warmupBytes: 2 << 20,
  repeats: 3,
  exchanges: 50,
  pings: 20,
  flood: 100,
};

/**
 * {@link NET_BENCH_SIZES} with `PVKIT_V86_NET` (`<bulk MiB>,<warm-up KiB>,<exchanges>`)
 * applied, for runs on a loaded machine; the report says which sizes were used.
 */
export function netBenchSizesFromEnv(
  env: string | undefined = process.env.PVKIT_V86_NET,
): NetBenchSizes {
  if (env === undefined || env === "") return NET_BENCH_SIZES;
  const [bulk, warm, ex] = env.split(",").map(Number);
  return {
    ...NET_BENCH_SIZES,
    ...(bulk! > 0 ? { bulkBytes: Math.round(bulk! * 16) << 16 } : {}),
    ...(warm! > 0 ? { warmupBytes: Math.round(warm! / 64) << 16 } : {}),
    ...(ex! > 0 ? { exchanges: Math.round(ex!) } : {}),
  };
}

/** The timed operations. */
export type NetOp = "tx" | "rx" | "rr";

/** One timed run. */
export interface NetRun {
  /** The NIC. */
  readonly nic: BenchNic;
  /** guest→host bulk (`tx`), host→guest bulk (`rx`), TCP exchanges (`rr`). */
  readonly op: NetOp;
  /** Round (0-based). */
  readonly repeat: number;
  /** Exit status of the command (for rr: exchanges completed). */
  readonly status: number;
  /** Guest seconds (kmsg timestamps). */
  readonly seconds: number;
  /** Bytes: the sink received (tx), the guest's dd counted (rx), 0 for rr. */
  readonly bytes: number;
  /** Operations: MiB moved (tx, rx), exchanges (rr). */
  readonly ops: number;
  /** Register exits on the NIC. */
  readonly exits: number;
  /** Guest instructions. */
  readonly instructions: number;
  /** Frames the guest sent / received on the NIC's switch port. */
  readonly framesOut: number;
  /** See {@link NetRun.framesOut}. */
  readonly framesIn: number;
}

/** Ping results of one round. */
export interface PingRun {
  /** The NIC. */
  readonly nic: BenchNic;
  /** Round. */
  readonly repeat: number;
  /** `ping -c N` average RTT, ms, as busybox ping reports it. */
  readonly rttMs: number;
  /** Replies received. */
  readonly replies: number;
  /** Flood average RTT, ms. */
  readonly floodRttMs: number;
  /** Flood replies. */
  readonly floodReplies: number;
  /** Exits and instructions per flood packet. */
  readonly floodExits: number;
  /** See {@link PingRun.floodExits}. */
  readonly floodInstructions: number;
}

/** What a {@link runNetBench} boot measured. */
export interface NetBenchReport {
  /** The boot. */
  readonly boot: BootResult;
  /** The NICs measured, in first-round order. */
  readonly nics: readonly BenchNic[];
  /** Driver bound per NIC, as the guest's sysfs says (`NIC` lines). */
  readonly drivers: Partial<Record<BenchNic, string>>;
  /** Timed runs. */
  readonly runs: readonly NetRun[];
  /** Pings. */
  readonly pings: readonly PingRun[];
  /** Host responder counters per NIC. */
  readonly host: Partial<Record<BenchNic, HostResponder["stats"]>>;
  /** TCP sender counters per NIC (retransmissions, timeouts). */
  readonly senders: Partial<Record<BenchNic, ReturnType<HostResponder["tcpSenderStats"]>>>;
  /** The guest clock used. */
  readonly clock: string;
}

/**
 * Brings every interface up on its NIC's subnet as `<net>.<octet>`, recognising each by MAC
 * (pvkit's are fixed, v86's is random, 00:22:15:…), and prints `NIC <if> <driver> <mac> <net>`.
 */
function setupScript(
  v86Nic: BenchNic,
  octet: number,
  macs: { readonly virtio: string; readonly rtl8139: string },
): string {
  return `for i in /sys/class/net/eth*; do
  n=\${i##*/}; a=$(cat $i/address); d=$(basename $(readlink $i/device/driver))
  case $a in
    ${macs.virtio}) net=${BENCH_NICS.virtio.net};;
    ${macs.rtl8139}) net=${BENCH_NICS.rtl8139.net};;
    *) net=${BENCH_NICS[v86Nic].net};;
  esac
  ip link set $n up; ip addr add $net.${octet}/24 dev $n
  echo "NIC $n $d $a $net"
done`;
}

/**
 * The guest command that sends `bytes` of zeros over TCP to `host`:`port`. `nc -e` makes
 * dd's standard output the socket, so the application writes 64 KiB at a time, as a file
 * server or `scp` would. (`dd | nc` makes busybox nc copy the pipe to the socket 1 KiB
 * per write(), which caps every NIC at the same ~27k guest instructions per KiB of
 * syscall and stack work: the NIC cannot show in the result.)
 */
function sendCommand(host: string, port: number, bytes: number): string {
  // dd's exit closes the socket with data still queued: the timed window ends only when no
  // connection to the port is ESTABLISHED (01) or FIN_WAIT1 (04) in /proc/net/tcp, i.e.
  // every byte and the FIN were acknowledged.
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  return `{ nc ${host} ${port} -e sh -c 'dd if=/dev/zero bs=64k count=${bytes >> 16} 2>/dev/null'; r=$?; while grep -qE ':${hexPort} 0[14] ' /proc/net/tcp; do usleep 1000; done; [ $r -eq 0 ]; }`;
}

/** The script of one boot. */
function benchScript(nics: readonly BenchNic[], s: NetBenchSizes, v86Nic: BenchNic): string {
  const host = (n: BenchNic) => `${BENCH_NICS[n].net}.2`;
  const lines: string[] = [setupScript(v86Nic, 15, PVKIT_MACS), "sleep 1"];
  const stamp = (key: string, what: string) => `echo "<7>NETT ${key} ${what}" > /dev/kmsg`;
  const tx = (n: BenchNic, bytes: number) => sendCommand(host(n), NET_PORTS.sink, bytes);
  const rx = (n: BenchNic, port: number, key: string) =>
    `nc ${host(n)} ${port} | wc -c > /tmp/rx.${key}`;
  const rr = (n: BenchNic, count: number) =>
    `i=0; while [ $i -lt ${count} ]; do echo ping | nc ${host(n)} ${NET_PORTS.echo} > /dev/null || break; i=$((i+1)); done`;
  // Warm-up, untimed: v86's JIT compiles the network stack and each driver on first use.
  for (const n of nics) {
    lines.push(
      `ping -q -c 5 -i 0.05 ${host(n)} > /dev/null`,
      tx(n, s.warmupBytes),
      `${rx(n, NET_PORTS.warmSource, `warm-${n}`)}`,
      rr(n, 5),
    );
  }
  for (let r = 0; r < s.repeats; r++) {
    const order = nics.map((_, i) => nics[(i + r) % nics.length]!);
    for (const n of order) {
      for (const op of ["tx", "rx", "rr"] as const) {
        const key = `${n}-${op}-${r}`;
        const cmd =
          op === "tx"
            ? `${tx(n, s.bulkBytes)}; rc=$?`
            : op === "rx"
              ? `${rx(n, NET_PORTS.source, key)}; rc=$?`
              : `${rr(n, s.exchanges)}; rc=$i`;
        lines.push(
          `echo "MARK ${key}"; ${stamp(key, "start")}; ${cmd}; ${stamp(key, "end $rc")}; echo "MARK ${key}-end"`,
        );
        if (op === "rx") lines.push(`echo "RXBYTES ${key} $(cat /tmp/rx.${key})"`);
      }
      const pkey = `${n}-ping-${r}`;
      lines.push(
        `ping -c ${s.pings} -i 0.05 -W 3 ${host(n)} > /tmp/ping 2>&1; echo "PING ${pkey} $(grep -c 'bytes from' /tmp/ping) $(sed -n 's/.*min\\/avg\\/max = [0-9.]*\\/\\([0-9.]*\\)\\/.*/\\1/p' /tmp/ping)"`,
        `echo "MARK ${n}-flood-${r}"`,
        `ping -q -c ${s.flood} -i 0.005 -s 1400 -w 30 ${host(n)} > /tmp/flood 2>&1`,
        `echo "MARK ${n}-flood-${r}-end"`,
        `echo "FLOOD ${pkey} $(sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p' /tmp/flood) $(sed -n 's/.*min\\/avg\\/max = [0-9.]*\\/\\([0-9.]*\\)\\/.*/\\1/p' /tmp/flood)"`,
      );
    }
  }
  lines.push(`dmesg | grep NETT | sed 's/^/T /'`);
  return `${lines.join("\n")}\n`;
}

/**
 * Boots one guest with pvkit's virtio-net, pvkit's RTL8139 and v86's own `v86Nic` and
 * measures the NICs in `measure` (all three by default) with one script (see the module
 * comment). Every boot has the same three NICs, so a boot for v86's virtio-net has the
 * same shape as the one for its NE2000.
 *
 * @param fixture - the guest
 * @param v86Nic - which of v86's NICs the emulator gets
 * @param measure - the NICs measured (the others are present and idle)
 * @param sizes - transfer sizes and counts
 */
export async function runNetBench(
  fixture: Fixture,
  v86Nic: "ne2k" | "v86-virtio",
  measure: readonly BenchNic[] = ["virtio", "rtl8139", v86Nic],
  sizes: NetBenchSizes = NET_BENCH_SIZES,
): Promise<NetBenchReport> {
  const nicsHere: BenchNic[] = ["virtio", "rtl8139", v86Nic];
  const rigs = new Map<
    BenchNic,
    { sw: EthernetSwitch; host: HostResponder; hostStats: { rxFrames: number; txFrames: number } }
  >();
  for (const n of nicsHere) {
    const sw = new EthernetSwitch();
    const host = new HostResponder({
      ip: `${BENCH_NICS[n].net}.2`,
      tcpSinkPort: NET_PORTS.sink,
      tcpSourcePorts: {
        [NET_PORTS.source]: sizes.bulkBytes,
        [NET_PORTS.warmSource]: sizes.warmupBytes,
      },
      tcpEchoPort: NET_PORTS.echo,
    });
    const hostPort = sw.createPort("host");
    host.attachTo(hostPort);
    rigs.set(n, { sw, host, hostStats: hostPort.stats });
  }
  const virtioNet = new VirtioNetDevice({
    backend: rigs.get("virtio")!.sw.createPort("guest"),
    mac: PVKIT_MACS.virtio,
  });
  const options: AttachPvkitOptions = {
    devices: [
      { kind: "virtio-pci", device: virtioNet, name: "virtio-net" },
      {
        kind: "pci",
        create: (memory) =>
          new Rtl8139({
            memory,
            backend: rigs.get("rtl8139")!.sw.createPort("guest"),
            mac: PVKIT_MACS.rtl8139,
            rxPending: RTL_RX_PENDING,
          }),
      },
    ],
  };
  let pv: PvkitV86 | undefined;
  let counter: V86ExitCounter | undefined;
  let instr = (): number => 0;
  type Sample = { exits: number; instr: number; out: number; in: number; sink: number };
  const marks = new Map<string, Sample>();
  const exitsOf = (n: BenchNic): number => {
    if (n === "virtio" || n === "rtl8139") {
      const prefix = n === "virtio" ? "virtio-net" : "rtl8139";
      let sum = 0;
      for (const [k, v] of Object.entries(pv!.bus.stats().byDevice))
        if (k.startsWith(prefix)) sum += v.exits;
      return sum;
    }
    return counter!.pciFunction(V86_NIC_DEVFN[n]).total;
  };
  const sample = (n: BenchNic): Sample => {
    const r = rigs.get(n)!;
    const h = r.hostStats;
    return {
      exits: exitsOf(n),
      instr: instr(),
      out: h.txFrames,
      in: h.rxFrames,
      sink: r.host.stats.tcpBytes,
    };
  };
  const boot = await bootLinux({
    fixture,
    timeoutMs: 1_800_000,
    v86Options: { net_device: { type: v86Nic === "ne2k" ? "ne2k" : "virtio" } },
    onLoaded: (emulator) => {
      const e = emulator as unknown as V86Emulator;
      pv = attachPvkit(e, options);
      counter = new V86ExitCounter(e.v86.cpu);
      instr = () => emulator.get_instruction_counter();
      rigs.get(v86Nic)!.sw.connect(v86NicBackend(emulator as unknown as V86NicEmulator));
    },
    onSerialLine: (line) => {
      const m = /^MARK ((ne2k|v86-virtio|virtio|rtl8139)-\S+)$/.exec(line);
      if (m === null || pv === undefined) return;
      marks.set(m[1]!, sample(m[2] as BenchNic));
    },
    script: benchScript(measure, sizes, v86Nic),
  });
  for (const r of rigs.values()) r.host.closeConnections();
  const lines = boot.scriptLines;
  const stamps = new Map<string, { t: number; rc: number }>();
  for (const l of lines) {
    const m = /^T \[\s*(\d+\.\d+)\] NETT (\S+) (start|end)(?: (-?\d+))?$/.exec(l);
    if (m !== null) stamps.set(`${m[2]}-${m[3]}`, { t: Number(m[1]), rc: Number(m[4] ?? 0) });
  }
  const drivers: Partial<Record<BenchNic, string>> = {};
  for (const l of lines) {
    const m = /^NIC \S+ (\S+) (\S+) (\S+)$/.exec(l);
    if (m === null) continue;
    const n = nicsHere.find(
      (k) =>
        BENCH_NICS[k].net === m[3] &&
        (k === "virtio" || k === "rtl8139" || m[2]!.startsWith("00:22:15")),
    );
    if (n !== undefined) drivers[n] = m[1]!;
  }
  const runs: NetRun[] = [];
  const pings: PingRun[] = [];
  for (let r = 0; r < sizes.repeats; r++) {
    for (const n of measure) {
      for (const op of ["tx", "rx", "rr"] as const) {
        const key = `${n}-${op}-${r}`;
        const t0 = stamps.get(`${key}-start`);
        const t1 = stamps.get(`${key}-end`);
        const a = marks.get(key);
        const b = marks.get(`${key}-end`);
        if (t0 === undefined || t1 === undefined || a === undefined || b === undefined) continue;
        const rxLine = lines.find((l) => l.startsWith(`RXBYTES ${key} `));
        const bytes =
          op === "tx"
            ? b.sink - a.sink
            : op === "rx"
              ? Number(rxLine?.split(" ")[2] ?? Number.NaN)
              : 0;
        runs.push({
          nic: n,
          op,
          repeat: r,
          status: t1.rc,
          seconds: t1.t - t0.t,
          bytes,
          ops: op === "rr" ? t1.rc : bytes / (1 << 20),
          exits: b.exits - a.exits,
          instructions: (b.instr - a.instr) >>> 0,
          framesOut: b.in - a.in,
          framesIn: b.out - a.out,
        });
      }
      const pkey = `${n}-ping-${r}`;
      const p = lines.find((l) => l.startsWith(`PING ${pkey} `))?.split(" ") ?? [];
      const f = lines.find((l) => l.startsWith(`FLOOD ${pkey} `))?.split(" ") ?? [];
      const fa = marks.get(`${n}-flood-${r}`);
      const fb = marks.get(`${n}-flood-${r}-end`);
      const floodPackets = Math.max(1, sizes.flood);
      pings.push({
        nic: n,
        repeat: r,
        replies: Number(p[2] ?? Number.NaN),
        rttMs: Number(p[3] ?? Number.NaN),
        floodReplies: Number(f[2] ?? Number.NaN),
        floodRttMs: Number(f[3] ?? Number.NaN),
        floodExits: fa && fb ? (fb.exits - fa.exits) / floodPackets : Number.NaN,
        floodInstructions: fa && fb ? ((fb.instr - fa.instr) >>> 0) / floodPackets : Number.NaN,
      });
    }
  }
  const host: Partial<Record<BenchNic, HostResponder["stats"]>> = {};
  const senders: NetBenchReport["senders"] = {};
  for (const [n, r] of rigs) {
    host[n] = { ...r.host.stats };
    senders[n] = r.host.tcpSenderStats();
  }
  return {
    boot,
    nics: measure,
    drivers,
    runs,
    pings,
    host,
    senders,
    clock: "kernel printk timestamps of /dev/kmsg records (local_clock, µs resolution)",
  };
}

// ── Two guests on one switch ─────────────────────────────────────────────────────

/** The TCP port guest B listens on. */
export const TWO_GUEST_PORT = 5001;
const GUEST_B_MACS = { virtio: "52:54:00:12:35:56", rtl8139: "52:54:00:12:35:57" } as const;

/** One timed guest-to-guest transfer. */
export interface TwoGuestRun {
  /** The NIC (both guests have it, on one switch). */
  readonly nic: BenchNic;
  /** Round; -1 is the untimed warm-up. */
  readonly repeat: number;
  /** Sender's exit status (`nc -e dd`, see {@link sendCommand}). */
  readonly status: number;
  /** Sender's guest seconds (kmsg timestamps around the send, until every byte is acknowledged). */
  readonly seconds: number;
  /** Bytes the receiver counted (`nc -l | wc -c`). */
  readonly bytes: number;
  /** Exits on the NIC of guest A (sender) and of guest B (receiver). */
  readonly exits: readonly [number, number];
  /** Instructions of guest A and of guest B. */
  readonly instructions: readonly [number, number];
}

/** What a {@link runTwoGuestBench} measured. */
export interface TwoGuestReport {
  /** The two boots (A sends, B receives). */
  readonly boots: readonly [BootResult, BootResult];
  /** The NICs measured. */
  readonly nics: readonly BenchNic[];
  /** Drivers bound in A and in B. */
  readonly drivers: readonly [Partial<Record<BenchNic, string>>, Partial<Record<BenchNic, string>>];
  /** Timed runs. */
  readonly runs: readonly TwoGuestRun[];
}

/**
 * Two v86 emulators in this Node process, each with pvkit's virtio-net, pvkit's RTL8139 and
 * v86's `v86Nic`; each kind of NIC of both guests on one `EthernetSwitch`. For each NIC in
 * `measure`, guest B listens (`nc -l -p 5001 | wc -c`) and, once B prints `LISTEN <key>`,
 * the host types `go` on A's serial console and A sends `bulkBytes` ({@link sendCommand}). One
 * untimed warm-up transfer per NIC (`warmupBytes`), then `repeats` rounds with the NICs
 * alternating. Both emulators share one JavaScript thread and take turns in slices of at
 * least 100k instructions, which adds latency to every exchange between them.
 *
 * @param fixture - the guest
 * @param v86Nic - which of v86's NICs each emulator gets
 * @param measure - the NICs measured
 * @param sizes - transfer sizes and rounds
 */
export async function runTwoGuestBench(
  fixture: Fixture,
  v86Nic: "ne2k" | "v86-virtio",
  measure: readonly BenchNic[] = ["virtio", "rtl8139", v86Nic],
  sizes: NetBenchSizes = NET_BENCH_SIZES,
): Promise<TwoGuestReport> {
  const nicsHere: BenchNic[] = ["virtio", "rtl8139", v86Nic];
  const switches = new Map<BenchNic, EthernetSwitch>(
    nicsHere.map((n) => [n, new EthernetSwitch()]),
  );
  const rounds = [-1, ...Array.from({ length: sizes.repeats }, (_, r) => r)];
  const keyOf = (n: BenchNic, r: number) => `${n}-g2g-${r < 0 ? "warm" : r}`;
  const order = (r: number) =>
    measure.map((_, i) => measure[(i + Math.max(0, r)) % measure.length]!);
  const stamp = (key: string, what: string) => `echo "<7>NETT ${key} ${what}" > /dev/kmsg`;
  const scriptA = [setupScript(v86Nic, 15, PVKIT_MACS), "sleep 1"];
  const scriptB = [setupScript(v86Nic, 16, GUEST_B_MACS), "sleep 1"];
  for (const r of rounds) {
    for (const n of order(r)) {
      const key = keyOf(n, r);
      const bytes = r < 0 ? sizes.warmupBytes : sizes.bulkBytes;
      scriptB.push(
        // A background job's stdin is /dev/null, and busybox nc ends the connection when
        // its stdin ends: give it the console, where nothing is typed.
        `nc -l -p ${TWO_GUEST_PORT} < /dev/console | wc -c > /tmp/rx.${key} &`,
        "sleep 1",
        `echo "LISTEN ${key}"`,
        "wait",
        `echo "RXBYTES ${key} $(cat /tmp/rx.${key})"`,
      );
      scriptA.push(
        "read -r go",
        `echo "MARK ${key}"; ${stamp(key, "start")}; ${sendCommand(`${BENCH_NICS[n].net}.16`, TWO_GUEST_PORT, bytes)}; rc=$?; ${stamp(key, "end $rc")}; echo "MARK ${key}-end"`,
      );
    }
  }
  scriptA.push(`dmesg | grep NETT | sed 's/^/T /'`);
  type Guest = {
    pv?: PvkitV86;
    counter?: V86ExitCounter;
    emulator?: { get_instruction_counter(): number; serial0_send(s: string): void };
  };
  const guests: [Guest, Guest] = [{}, {}];
  const exitsOf = (g: Guest, n: BenchNic): number => {
    if (n === "virtio" || n === "rtl8139") {
      const prefix = n === "virtio" ? "virtio-net" : "rtl8139";
      let sum = 0;
      for (const [k, v] of Object.entries(g.pv!.bus.stats().byDevice))
        if (k.startsWith(prefix)) sum += v.exits;
      return sum;
    }
    return g.counter!.pciFunction(V86_NIC_DEVFN[n]).total;
  };
  const marks = new Map<string, { exits: [number, number]; instr: [number, number] }>();
  const optionsFor = (macs: { readonly virtio: string; readonly rtl8139: string }) =>
    ({
      devices: [
        {
          kind: "virtio-pci",
          device: new VirtioNetDevice({
            backend: switches.get("virtio")!.createPort("guest"),
            mac: macs.virtio,
          }),
          name: "virtio-net",
        },
        {
          kind: "pci",
          create: (memory) =>
            new Rtl8139({
              memory,
              backend: switches.get("rtl8139")!.createPort("guest"),
              mac: macs.rtl8139,
              rxPending: RTL_RX_PENDING,
            }),
        },
      ],
    }) satisfies AttachPvkitOptions;
  const onLoaded =
    (g: Guest, macs: typeof PVKIT_MACS | typeof GUEST_B_MACS) => (emulator: unknown) => {
      const e = emulator as V86Emulator & Guest["emulator"] & V86NicEmulator;
      g.pv = attachPvkit(e, optionsFor(macs));
      g.counter = new V86ExitCounter(e.v86.cpu);
      g.emulator = e;
      switches.get(v86Nic)!.connect(v86NicBackend(e));
    };
  const [bootA, bootB] = await Promise.all([
    bootLinux({
      fixture,
      timeoutMs: 3_600_000,
      v86Options: { net_device: { type: v86Nic === "ne2k" ? "ne2k" : "virtio" } },
      onLoaded: onLoaded(guests[0], PVKIT_MACS),
      onSerialLine: (line) => {
        const m = /^MARK ((ne2k|v86-virtio|virtio|rtl8139)-\S+)$/.exec(line);
        if (m === null || guests[1].pv === undefined) return;
        const n = m[2] as BenchNic;
        marks.set(m[1]!, {
          exits: [exitsOf(guests[0], n), exitsOf(guests[1], n)],
          instr: [
            guests[0].emulator!.get_instruction_counter(),
            guests[1].emulator!.get_instruction_counter(),
          ],
        });
      },
      script: `${scriptA.join("\n")}\n`,
    }),
    bootLinux({
      fixture,
      timeoutMs: 3_600_000,
      v86Options: { net_device: { type: v86Nic === "ne2k" ? "ne2k" : "virtio" } },
      onLoaded: onLoaded(guests[1], GUEST_B_MACS),
      onSerialLine: (line) => {
        if (/^LISTEN \S+$/.test(line)) guests[0].emulator?.serial0_send("go\n");
      },
      script: `${scriptB.join("\n")}\n`,
    }),
  ]);
  const stamps = new Map<string, { t: number; rc: number }>();
  for (const l of bootA.scriptLines) {
    const m = /^T \[\s*(\d+\.\d+)\] NETT (\S+) (start|end)(?: (-?\d+))?$/.exec(l);
    if (m !== null) stamps.set(`${m[2]}-${m[3]}`, { t: Number(m[1]), rc: Number(m[4] ?? 0) });
  }
  const driversOf = (b: BootResult) => {
    const out: Partial<Record<BenchNic, string>> = {};
    for (const l of b.scriptLines) {
      const m = /^NIC \S+ (\S+) (\S+) (\S+)$/.exec(l);
      const n = nicsHere.find(
        (k) =>
          m !== null &&
          BENCH_NICS[k].net === m[3] &&
          (k === "virtio" || k === "rtl8139" || m[2]!.startsWith("00:22:15")),
      );
      if (m !== null && n !== undefined) out[n] = m[1]!;
    }
    return out;
  };
  const runs: TwoGuestRun[] = [];
  for (const r of rounds) {
    for (const n of measure) {
      const key = keyOf(n, r);
      const t0 = stamps.get(`${key}-start`);
      const t1 = stamps.get(`${key}-end`);
      const a = marks.get(key);
      const b = marks.get(`${key}-end`);
      if (t0 === undefined || t1 === undefined || a === undefined || b === undefined) continue;
      const rx = bootB.scriptLines.find((l) => l.startsWith(`RXBYTES ${key} `));
      runs.push({
        nic: n,
        repeat: r,
        status: t1.rc,
        seconds: t1.t - t0.t,
        bytes: Number(rx?.split(" ")[2] ?? Number.NaN),
        exits: [b.exits[0] - a.exits[0], b.exits[1] - a.exits[1]],
        instructions: [(b.instr[0] - a.instr[0]) >>> 0, (b.instr[1] - a.instr[1]) >>> 0],
      });
    }
  }
  return {
    boots: [bootA, bootB],
    nics: measure,
    drivers: [driversOf(bootA), driversOf(bootB)],
    runs,
  };
}
