/**
 * Two guests on one Ethernet switch: one with a virtio-net NIC (paravirtual, over
 * virtio-mmio), one with an emulated RTL8139 (a real chip's register file, on PCI).
 * They exchange frames, lock-step ping / pong, while a tap on the switch writes every
 * frame to a pcap file; the example then reads the file back and counts its records by
 * parsing the format itself.
 *
 * Each guest is its own machine: its own RAM, its own Bus (so each counts its own
 * exits), its own interrupt line and toy CPU. What they share is the switch, the way two
 * VMs on one host share a bridge. Both NIC models plug into the same back-end interface
 * (`NetBackend`), which is why an RTL8139 guest and a virtio-net guest can talk at all.
 *
 * Run: `npx tsx --conditions=@pvkit/source examples/nic-pair.ts [frames]` — it prints
 * the path of the capture, which Wireshark or `tcpdump -r` open.
 *
 * @module
 */

import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Rtl8139, Rtl8139Driver, Rtl8139DriverError } from "@pvkit/emulated-rtl8139";
import {
  assignPciBars,
  Bus,
  EthernetSwitch,
  formatMac,
  GuestMemory,
  IrqLine,
  PCAP_GLOBAL_HEADER_LEN,
  PCAP_RECORD_HEADER_LEN,
  PciConfigPortAccess,
  PciHost,
} from "@pvkit/platform";
import { PcapFileWriter } from "@pvkit/platform/node";
import {
  DriverError,
  GuestAllocator,
  VIRTIO_MMIO_WINDOW,
  VirtioMmioDriverTransport,
  VirtioMmioTransport,
} from "@pvkit/virtio-core";
import { VirtioNetDevice, VirtioNetDriver } from "@pvkit/virtio-net";

/** What a run did; the tests assert on it. */
export interface NicPairResult {
  /** Frames each side sent (pings from virtio-net, pongs from the RTL8139). */
  readonly sent: { readonly virtio: number; readonly rtl8139: number };
  /** Frames each guest's driver received. */
  readonly received: { readonly virtio: number; readonly rtl8139: number };
  /** Payloads, in the order the virtio-net guest received them. */
  readonly replies: readonly string[];
  /** Frames that entered the switch, from its ports' counters. */
  readonly switchFrames: number;
  /** Exits each guest made (register accesses through its Bus). */
  readonly exits: { readonly virtio: number; readonly rtl8139: number };
  /** Interrupts each guest's CPU delivered. */
  readonly interrupts: { readonly virtio: number; readonly rtl8139: number };
  /** The capture, as parsed back from the file. */
  readonly pcap: PcapSummary;
}

/** What {@link readPcap} found in a capture file. */
export interface PcapSummary {
  /** Where the file is. */
  readonly path: string;
  /** Its link type (1: Ethernet). */
  readonly linkType: number;
  /** Records (captured frames). */
  readonly records: number;
  /** The text payload of each record (bytes 14.. up to the first NUL), in order. */
  readonly payloads: readonly string[];
}

/** Options of {@link main}. */
export interface NicPairOptions {
  /** Ping / pong rounds (default 8). */
  readonly rounds?: number;
  /** Where to write the capture (default: a new temporary directory). */
  readonly pcapPath?: string;
  /** Where the lines of the report go (default `console.log`). */
  readonly log?: (line: string) => void;
}

/** IEEE 802 "local experimental" EtherType: frames that mean nothing to anyone else. */
const ETHERTYPE_EXPERIMENTAL = 0x88b5;
/** The shortest Ethernet frame without FCS; shorter ones are padded. */
const MIN_FRAME = 60;
/** Guest RAM of each machine. */
const RAM_BYTES = 4 << 20;
/** Driver heap: from 1 MiB (below it: what the guest kernel keeps) to the end of RAM. */
const HEAP_BASE = 0x10_0000;

/**
 * A stand-in for an emulator's CPU loop: runs the guest program in slices and, between
 * slices, delivers the interrupt while the (level-triggered) line is high, by calling
 * the handler the guest registered, i.e. its driver's `onInterrupt()`. See
 * `block-device.ts` for the longer story.
 */
class ToyCpu {
  /** Interrupts delivered to the guest. */
  interrupts = 0;
  private handler: () => void = () => {};

  /** @param irq - the line the CPU watches (its interrupt controller's output) */
  constructor(private readonly irq: IrqLine) {}

  /** The guest kernel's `request_irq`. */
  requestIrq(handler: () => void): void {
    this.handler = handler;
  }

  /** Runs the guest program until it settles; rejects when it stops making progress. */
  async run<T>(guest: () => Promise<T>, maxSlices = 10_000): Promise<T> {
    let finished = false;
    const result = guest().finally(() => {
      finished = true;
    });
    result.catch(() => {}); // the caller sees the rejection through the returned promise
    for (let slice = 0; !finished; slice++) {
      if (slice >= maxSlices) throw new Error(`${this.irq.name}: the guest made no progress`);
      await new Promise((resolve) => setImmediate(resolve)); // the host's event loop runs
      for (let n = 0; this.irq.level && n < 64; n++) {
        this.interrupts++;
        this.handler();
      }
    }
    return result;
  }
}

/**
 * Frames a guest received, for the guest program to `await` one by one. The drivers
 * hand each frame to `onFrame` as a view into guest memory that is valid only during the
 * call, so it is copied.
 */
class Inbox {
  /** Frames received so far. */
  count = 0;
  private readonly frames: Uint8Array[] = [];
  private waiter: ((frame: Uint8Array) => void) | null = null;

  /** The driver's `onFrame`. */
  readonly onFrame = (frame: Uint8Array): void => {
    this.count++;
    const copy = frame.slice();
    const w = this.waiter;
    this.waiter = null;
    if (w !== null) w(copy);
    else this.frames.push(copy);
  };

  /** The next frame, when it arrives. */
  next(): Promise<Uint8Array> {
    const f = this.frames.shift();
    if (f !== undefined) return Promise.resolve(f);
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }
}

/** An Ethernet frame with a text payload, padded to the minimum length. */
function frame(to: Uint8Array, from: Uint8Array, text: string): Uint8Array {
  const payload = new TextEncoder().encode(text);
  const out = new Uint8Array(Math.max(MIN_FRAME, 14 + payload.length));
  out.set(to, 0);
  out.set(from, 6);
  out[12] = ETHERTYPE_EXPERIMENTAL >> 8;
  out[13] = ETHERTYPE_EXPERIMENTAL & 0xff;
  out.set(payload, 14);
  return out;
}

/** The text payload of a frame (up to the padding). */
function payloadOf(f: Uint8Array): string {
  const body = f.subarray(14);
  const end = body.indexOf(0);
  return new TextDecoder().decode(end < 0 ? body : body.subarray(0, end));
}

/**
 * Reads a classic pcap file (the libpcap format tcpdump writes): a 24-byte global header
 * whose magic number also tells the byte order, then per frame a 16-byte record header
 * (seconds, microseconds, captured length, original length) and the captured bytes.
 *
 * @throws Error when the file is not a pcap file, or a record runs past its end
 */
export function readPcap(path: string): PcapSummary {
  const bytes = readFileSync(path);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < PCAP_GLOBAL_HEADER_LEN) throw new Error(`${path}: too short for pcap`);
  const magic = view.getUint32(0, true);
  // 0xa1b2c3d4 read little-endian: a little-endian file; read big-endian: a big-endian one.
  const le = magic === 0xa1b2c3d4 ? true : magic === 0xd4c3b2a1 ? false : null;
  if (le === null) throw new Error(`${path}: not a pcap file (magic 0x${magic.toString(16)})`);
  const linkType = view.getUint32(20, le);
  const payloads: string[] = [];
  let at = PCAP_GLOBAL_HEADER_LEN;
  while (at < bytes.length) {
    if (at + PCAP_RECORD_HEADER_LEN > bytes.length) throw new Error(`${path}: truncated record`);
    const captured = view.getUint32(at + 8, le);
    const start = at + PCAP_RECORD_HEADER_LEN;
    if (start + captured > bytes.length) throw new Error(`${path}: truncated frame`);
    payloads.push(payloadOf(bytes.subarray(start, start + captured)));
    at = start + captured;
  }
  return { path, linkType, records: payloads.length, payloads };
}

/**
 * Builds the two machines on one switch, runs `rounds` ping / pong exchanges, captures
 * them and reads the capture back.
 *
 * @returns what happened
 * @throws Error when a reply is wrong, or a guest stops making progress
 */
export async function main(options: NicPairOptions = {}): Promise<NicPairResult> {
  const rounds = options.rounds ?? 8;
  const log = options.log ?? console.log;
  const pcapPath =
    options.pcapPath ?? join(mkdtempSync(join(tmpdir(), "pvkit-nic-pair-")), "nic-pair.pcap");

  // ── The host's network: a learning switch, and a tap that writes every frame that
  // enters it to a pcap file (PcapWriter from @pvkit/platform writes to any sink; the
  // file sink is Node-only, hence @pvkit/platform/node).
  const sw = new EthernetSwitch();
  const capture = new PcapFileWriter(pcapPath);
  sw.addTap(capture.tap());

  // ── Machine A: virtio-net behind virtio-mmio ──
  const memA = GuestMemory.create(RAM_BYTES);
  const busA = new Bus();
  const irqA = new IrqLine("virtio-net");
  const portA = sw.createPort("guest-a"); // the NIC's cable into the switch
  const netDevice = new VirtioNetDevice({
    backend: portA,
    mac: "52:54:00:00:00:0a",
  });
  busA.map(
    "mmio",
    0xfeb0_0000,
    VIRTIO_MMIO_WINDOW,
    new VirtioMmioTransport({ device: netDevice, memory: memA, irq: irqA }),
    "virtio-net",
  );
  // Guest A's side: probe the window, bind the driver. Its receive buffers and rings come
  // from the heap (the driver posts every receive buffer at once, so the device can
  // deliver frames without asking).
  const transportA = VirtioMmioDriverTransport.probe(busA, 0xfeb0_0000);
  if (transportA instanceof DriverError) throw new Error(transportA.message);
  const inboxA = new Inbox();
  const netDriver = VirtioNetDriver.create(transportA, {
    memory: memA,
    allocator: new GuestAllocator(HEAP_BASE, RAM_BYTES - HEAP_BASE),
    onFrame: inboxA.onFrame,
  });
  if (netDriver instanceof DriverError) throw new Error(netDriver.message);
  const cpuA = new ToyCpu(irqA);
  // Received frames are handed to onFrame only after the interrupt: the handler
  // acknowledges it and schedules the receive poll (NAPI).
  cpuA.requestIrq(() => netDriver.onInterrupt());

  // ── Machine B: an emulated RTL8139 on PCI ──
  const memB = GuestMemory.create(RAM_BYTES);
  const busB = new Bus();
  // No checksum offload on this chip: the switch completes checksums towards it.
  const portB = sw.createPort("guest-b", { checksumOffload: false });
  const nic = new Rtl8139({
    backend: portB,
    memory: memB,
    mac: "52:54:00:00:00:0b",
  });
  const host = new PciHost(busB);
  host.attach(nic, 4);
  host.mapConfigPorts();
  const config = new PciConfigPortAccess(busB, 4);
  assignPciBars(config, { io: 0xc000, mem32: 0xfe00_0000 }); // what the firmware does
  // Guest B's side: an 8139too-like driver. It reads the MAC bit by bit from the chip's
  // EEPROM and sets up the receive ring: hundreds of exits before the first frame.
  const inboxB = new Inbox();
  const rtlDriver = Rtl8139Driver.open({
    bus: busB,
    memory: memB,
    config,
    allocator: new GuestAllocator(HEAP_BASE, RAM_BYTES - HEAP_BASE),
    onFrame: inboxB.onFrame,
  });
  if (rtlDriver instanceof Rtl8139DriverError) throw rtlDriver;
  const cpuB = new ToyCpu(nic.irq);
  cpuB.requestIrq(() => rtlDriver.onInterrupt());

  const macA = netDriver.mac;
  const macB = rtlDriver.mac;
  const setupExits = { virtio: busA.exits, rtl8139: busB.exits };

  // ── The two guest programs, run by their CPUs side by side ──
  // A sends a ping to B's MAC (a real stack would learn it with ARP) and waits for the
  // pong; B answers each ping it receives. One frame in flight at a time.
  const replies: string[] = [];
  const guestA = async (): Promise<void> => {
    for (let i = 0; i < rounds; i++) {
      if (!netDriver.send(frame(macB, macA, `ping ${i}`))) throw new Error("A: TX ring full");
      replies.push(payloadOf(await inboxA.next()));
    }
  };
  const guestB = async (): Promise<void> => {
    for (let i = 0; i < rounds; i++) {
      const ping = payloadOf(await inboxB.next());
      if (!rtlDriver.send(frame(macA, macB, ping.replace("ping", "pong")))) {
        throw new Error("B: all four TX slots busy");
      }
    }
  };
  // allSettled, not all: when one guest fails the other is left waiting for a frame, and
  // its CPU gives up after a while; the first failure is the one to report.
  const outcomes = await Promise.allSettled([cpuA.run(guestA), cpuB.run(guestB)]);
  capture.close();
  for (const o of outcomes) if (o.status === "rejected") throw o.reason;

  for (let i = 0; i < rounds; i++) {
    if (replies[i] !== `pong ${i}`) throw new Error(`reply ${i} was "${replies[i]}"`);
  }
  const pcap = readPcap(pcapPath);
  // Frames that entered the switch, as its ports counted them.
  const switchFrames = portA.portStats.rxFrames + portB.portStats.rxFrames;
  const result: NicPairResult = {
    sent: { virtio: netDriver.stats.txFrames, rtl8139: rtlDriver.stats.txFrames },
    received: { virtio: inboxA.count, rtl8139: inboxB.count },
    replies,
    switchFrames,
    exits: { virtio: busA.exits, rtl8139: busB.exits },
    interrupts: { virtio: cpuA.interrupts, rtl8139: cpuB.interrupts },
    pcap,
  };

  log(`guest A: virtio-net ${formatMac(macA)}; guest B: RTL8139 ${formatMac(macB)}`);
  log(`  ${rounds} pings A→B and ${rounds} pongs B→A: ${replies.join(", ")}`);
  log(
    `  setup exits: A ${setupExits.virtio}, B ${setupExits.rtl8139}; exits per frame ` +
      `(send + receive): A ${((busA.exits - setupExits.virtio) / (2 * rounds)).toFixed(1)}, ` +
      `B ${((busB.exits - setupExits.rtl8139) / (2 * rounds)).toFixed(1)}`,
  );
  log(
    `  interrupts: A ${cpuA.interrupts}, B ${cpuB.interrupts}; frames into the switch: ${switchFrames}`,
  );
  log(`  capture: ${pcap.records} frames (link type ${pcap.linkType}) in ${pcapPath}`);
  return result;
}

// Run when executed directly (`tsx examples/nic-pair.ts [rounds]`), not when imported.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const rounds = process.argv[2] === undefined ? undefined : Number(process.argv[2]);
  if (rounds !== undefined && !(Number.isInteger(rounds) && rounds > 0)) {
    console.error(`usage: nic-pair.ts [rounds] (got ${process.argv[2]})`);
    process.exit(2);
  }
  await main(rounds === undefined ? {} : { rounds });
}
