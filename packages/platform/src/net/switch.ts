/**
 * `EthernetSwitch`: a learning layer-2 switch with any number of ports (IEEE 802.1D
 * transparent bridging without spanning tree). Source addresses are learnt per port and
 * aged out; frames to a known unicast address go to its port only; broadcast, multicast
 * and unknown unicast are flooded to every other port. Every port counts what it carries.
 *
 * Ports come in two kinds. {@link EthernetSwitch.createPort} gives a NIC a
 * {@link NetBackend} (the NIC's cable into the switch); {@link EthernetSwitch.connect}
 * plugs an existing back-end (a UDP socket, a loopback) in as an uplink. Checksum
 * metadata travels between ports that carry it; towards a port that does not, a
 * NEEDS_CSUM checksum is completed in software (on a copy) first.
 *
 * @module
 */

import { expectArgument, expectOptions, isNetBackendLike } from "../args.js";
import {
  ETH_HEADER_LEN,
  NET_META_NEEDS_CSUM,
  type NetBackend,
  type NetBackendStats,
  type NetEndpoint,
  type NetFrameMeta,
  type NetSendResult,
  newNetBackendStats,
} from "./backend.js";
import { completeChecksum } from "./checksum.js";
import { checkGso, NET_GSO_NONE, segmentGso } from "./gso.js";

/** Per-port counters, seen from the switch. */
export interface SwitchPortStats {
  /** Frames that entered the switch through this port. */
  rxFrames: number;
  /** Bytes that entered the switch through this port. */
  rxBytes: number;
  /** Frames the switch sent out of this port. */
  txFrames: number;
  /** Bytes the switch sent out of this port. */
  txBytes: number;
  /** Frames for this port it refused (busy when flooding, or dropped). */
  txDrops: number;
  /** Frames from this port the switch dropped (runts, or a destination on the same port). */
  rxDrops: number;
  /** Frames from this port that were flooded. */
  flooded: number;
  /** Frames whose checksum the switch completed on the way out of this port. */
  checksumsCompleted: number;
  /** GSO frames the switch cut into MTU-sized frames on the way out of this port. */
  gsoSegmented: number;
}

/** Options of {@link EthernetSwitch}. */
export interface EthernetSwitchOptions {
  /** Milliseconds after which an address not seen is forgotten (default 300 000, 802.1D). */
  readonly ageingMs?: number;
  /** Clock in milliseconds (default `Date.now`); inject one to test ageing. */
  readonly now?: () => number;
  /** Most learnt addresses; beyond it new ones are not learnt (default 4096). */
  readonly maxAddresses?: number;
}

/** A tap sees every frame that enters the switch (checksums completed). */
export type SwitchTap = (frame: Uint8Array, ingressPort: string) => void;

interface Learnt {
  port: Port;
  seen: number;
}

/** One port of the switch. */
abstract class Port {
  readonly portStats: SwitchPortStats = {
    rxFrames: 0,
    rxBytes: 0,
    txFrames: 0,
    txBytes: 0,
    txDrops: 0,
    rxDrops: 0,
    flooded: 0,
    checksumsCompleted: 0,
    gsoSegmented: 0,
  };
  removed = false;
  constructor(
    readonly id: number,
    readonly name: string,
  ) {}
  /** Whether frames out of this port may carry checksum metadata. */
  abstract get carriesMeta(): boolean;
  /** Whether GSO frames leave this port whole (otherwise the switch segments them). */
  abstract get carriesGso(): boolean;
  /** Whether the port's link is up. */
  abstract get up(): boolean;
  /** Sends a frame out of this port. */
  abstract output(frame: Uint8Array, meta: NetFrameMeta | null): NetSendResult;
  /** The switch has room again (a busy port became writable). */
  abstract wake(): void;
}

/**
 * The NIC side of a switch port: the {@link NetBackend} a NIC is given by
 * {@link EthernetSwitch.createPort}.
 */
export class SwitchPort extends Port implements NetBackend {
  /** The back-end counters, seen from the NIC. */
  readonly stats: NetBackendStats = newNetBackendStats();
  private endpoint: NetEndpoint | null = null;
  private link = true;
  /** @internal */
  constructor(
    private readonly sw: EthernetSwitch,
    id: number,
    name: string,
    readonly checksumOffload: boolean,
  ) {
    super(id, name);
  }
  get carriesMeta(): boolean {
    return this.checksumOffload;
  }
  get carriesGso(): boolean {
    return this.checksumOffload && this.endpoint?.acceptsGso === true;
  }
  /** A NIC may send GSO frames whole: the switch cuts them for ports that cannot take them. */
  get gso(): boolean {
    return this.checksumOffload;
  }
  get up(): boolean {
    return this.link && !this.removed;
  }
  get linkUp(): boolean {
    return this.up;
  }
  /** Sets the port's link (like pulling the cable); tells the NIC. */
  setLink(up: boolean): void {
    if (up === this.link) return;
    this.link = up;
    this.endpoint?.linkChange?.(up);
  }
  attach(endpoint: NetEndpoint): void {
    this.endpoint = endpoint;
  }
  detach(): void {
    this.endpoint = null;
  }
  /** The NIC transmits into the switch. */
  send(frame: Uint8Array, meta: NetFrameMeta | null): NetSendResult {
    const r = this.removed || !this.link ? "dropped" : this.sw.forward(this, frame, meta);
    const s = this.stats;
    if (r === "sent") {
      s.txFrames++;
      s.txBytes += frame.length;
    } else if (r === "busy") s.busy++;
    else s.drops++;
    return r;
  }
  /** @internal the switch delivers to the NIC */
  output(frame: Uint8Array, meta: NetFrameMeta | null): NetSendResult {
    const e = this.endpoint;
    if (e === null || !this.link) {
      this.stats.drops++;
      return "dropped";
    }
    this.stats.rxFrames++;
    this.stats.rxBytes += frame.length;
    e.receive(frame, meta);
    return "sent";
  }
  /** @internal */
  wake(): void {
    this.endpoint?.writable?.();
  }
}

/** @internal an existing back-end plugged in as a port */
class UplinkPort extends Port implements NetEndpoint {
  constructor(
    id: number,
    name: string,
    private readonly backend: NetBackend,
    private readonly sw: EthernetSwitch,
  ) {
    super(id, name);
  }
  get carriesMeta(): boolean {
    return this.backend.checksumOffload;
  }
  get carriesGso(): boolean {
    return this.backend.checksumOffload && this.backend.gso === true;
  }
  get up(): boolean {
    return this.backend.linkUp && !this.removed;
  }
  output(frame: Uint8Array, meta: NetFrameMeta | null): NetSendResult {
    return this.backend.send(frame, meta);
  }
  wake(): void {}
  receive(frame: Uint8Array, meta: NetFrameMeta | null): void {
    if (!this.removed) this.sw.forward(this, frame, meta);
  }
  writable(): void {
    this.sw.wakeAll();
  }
  detachBackend(): void {
    this.backend.detach();
  }
}

/** A handle on a port for statistics and removal. */
export interface SwitchPortHandle {
  /** The port's name. */
  readonly name: string;
  /** Its counters, seen from the switch. */
  readonly portStats: SwitchPortStats;
}

/** A learning Ethernet switch. */
export class EthernetSwitch {
  /** Frames flooded (broadcast, multicast or unknown destination). */
  floods = 0;
  /** Frames forwarded to one learnt port. */
  forwards = 0;
  private readonly ports: Port[] = [];
  private readonly table = new Map<number, Learnt>();
  private readonly taps: SwitchTap[] = [];
  /** Where GSO frames are cut (grows to the largest headers + MSS seen). */
  private gsoScratch = new Uint8Array(0);
  private readonly ageingMs: number;
  private readonly now: () => number;
  private readonly maxAddresses: number;
  private nextId = 0;

  /**
   * @param options - ageing, clock and table size
   * @throws TypeError when `options` or one of its fields has the wrong type (the message
   *   names the option, the type expected and the value given)
   */
  constructor(options: EthernetSwitchOptions = {}) {
    const where = "new EthernetSwitch";
    expectOptions(where, options, "{ ageingMs?, now?, maxAddresses? }");
    const o = options as Record<string, unknown>;
    if (o.ageingMs !== undefined)
      expectArgument(
        where,
        "options.ageingMs",
        o.ageingMs,
        "a number of milliseconds ≥ 0",
        (v) => typeof v === "number" && v >= 0,
      );
    if (o.now !== undefined)
      expectArgument(
        where,
        "options.now",
        o.now,
        "a function returning milliseconds",
        (v) => typeof v === "function",
      );
    if (o.maxAddresses !== undefined)
      expectArgument(
        where,
        "options.maxAddresses",
        o.maxAddresses,
        "a non-negative integer",
        (v) => Number.isSafeInteger(v) && (v as number) >= 0,
      );
    this.ageingMs = options.ageingMs ?? 300_000;
    this.now = options.now ?? Date.now;
    this.maxAddresses = options.maxAddresses ?? 4096;
  }

  /**
   * A new port for a NIC.
   *
   * @param name - for statistics
   * @param options - `checksumOffload` (default true): the NIC accepts NEEDS_CSUM frames
   *   (a pvkit virtio-net); false makes the switch complete checksums towards it
   */
  createPort(name: string, options: { checksumOffload?: boolean } = {}): SwitchPort {
    expectArgument(
      "EthernetSwitch.createPort",
      "name",
      name,
      "a string",
      (v) => typeof v === "string",
    );
    expectOptions("EthernetSwitch.createPort", options, "{ checksumOffload? }");
    const p = new SwitchPort(this, this.nextId++, name, options.checksumOffload ?? true);
    this.ports.push(p);
    return p;
  }

  /** Plugs an existing back-end in as an uplink port (the switch attaches to it). */
  connect(backend: NetBackend, name = backend?.name): SwitchPortHandle {
    expectArgument(
      "EthernetSwitch.connect",
      "backend",
      backend,
      "a NetBackend (attach, detach and send methods)",
      isNetBackendLike,
    );
    const p = new UplinkPort(this.nextId++, name, backend, this);
    this.ports.push(p);
    backend.attach(p);
    return p;
  }

  /** Removes a port: its learnt addresses are forgotten, frames to it are flooded again. */
  remove(port: SwitchPortHandle): void {
    const i = this.ports.indexOf(port as Port);
    if (i < 0) return;
    const p = this.ports[i]!;
    p.removed = true;
    this.ports.splice(i, 1);
    if (p instanceof UplinkPort) p.detachBackend();
    for (const [k, v] of this.table) if (v.port === p) this.table.delete(k);
  }

  /** Adds a tap that sees every frame entering the switch (e.g. a `PcapWriter`). @returns a remover */
  addTap(tap: SwitchTap): () => void {
    this.taps.push(tap);
    return () => {
      const i = this.taps.indexOf(tap);
      if (i >= 0) this.taps.splice(i, 1);
    };
  }

  /** Ports currently attached. */
  get portCount(): number {
    return this.ports.length;
  }

  /** Learnt addresses (after ageing out old ones). */
  addresses(): { mac: string; port: string }[] {
    this.age();
    return [...this.table].map(([k, l]) => ({
      mac: k
        .toString(16)
        .padStart(12, "0")
        .replace(/(..)(?!$)/g, "$1:"),
      port: l.port.name,
    }));
  }

  /** Forgets addresses not seen for the ageing time. */
  age(): void {
    const t = this.now();
    for (const [k, v] of this.table) if (t - v.seen > this.ageingMs) this.table.delete(k);
  }

  /** Six address bytes as one number below 2^48 (no allocation). */
  private key(frame: Uint8Array, off: number): number {
    const hi = (frame[off]! << 8) | frame[off + 1]!;
    const lo =
      ((frame[off + 2]! << 24) |
        (frame[off + 3]! << 16) |
        (frame[off + 4]! << 8) |
        frame[off + 5]!) >>>
      0;
    return hi * 0x1_0000_0000 + lo;
  }

  /** @internal a frame entered through `from` */
  forward(from: Port, frame: Uint8Array, meta: NetFrameMeta | null): NetSendResult {
    const fs = from.portStats;
    if (frame.length < ETH_HEADER_LEN) {
      fs.rxDrops++;
      return "dropped";
    }
    if (meta !== null && (meta.gsoType ?? NET_GSO_NONE) !== NET_GSO_NONE) {
      // A GSO frame the switch may have to cut: refuse one that cannot be cut.
      if (typeof checkGso(frame, meta) === "string") {
        fs.rxDrops++;
        return "dropped";
      }
    }
    fs.rxFrames++;
    fs.rxBytes += frame.length;
    const t = this.now();
    // Learn the source unless it is a group address (802.1D §7.8).
    if ((frame[6]! & 1) === 0) {
      const src = this.key(frame, 6);
      const l = this.table.get(src);
      if (l !== undefined) {
        l.port = from;
        l.seen = t;
      } else if (this.table.size < this.maxAddresses) this.table.set(src, { port: from, seen: t });
    }
    if (this.taps.length > 0) {
      const seen = this.completed(frame, meta);
      for (const tap of this.taps) tap(seen, from.name);
    }
    if ((frame[0]! & 1) === 0) {
      const l = this.table.get(this.key(frame, 0));
      if (l !== undefined && t - l.seen <= this.ageingMs && !l.port.removed) {
        if (l.port === from) {
          fs.rxDrops++; // the destination is on the port it came from: filtered
          return "dropped";
        }
        this.forwards++;
        return this.out(l.port, frame, meta, false);
      }
    }
    this.floods++;
    fs.flooded++;
    for (const p of this.ports) if (p !== from && p.up) this.out(p, frame, meta, true);
    return "sent";
  }

  private out(
    p: Port,
    frame: Uint8Array,
    meta: NetFrameMeta | null,
    flooding: boolean,
  ): NetSendResult {
    const s = p.portStats;
    if (!p.up) {
      s.txDrops++;
      return "dropped";
    }
    if (meta !== null && (meta.gsoType ?? NET_GSO_NONE) !== NET_GSO_NONE && !p.carriesGso)
      return this.outSegmented(p, frame, meta, flooding);
    let f = frame;
    let m = meta;
    if (meta !== null && !p.carriesMeta) {
      if (meta.flags & NET_META_NEEDS_CSUM) {
        f = this.completed(frame, meta);
        s.checksumsCompleted++;
      }
      m = null;
    }
    const r = p.output(f, m);
    if (r === "sent") {
      s.txFrames++;
      s.txBytes += f.length;
      return r;
    }
    s.txDrops++;
    // A flooded frame cannot wait for one port; a unicast one tells the sender to retry.
    return flooding ? "dropped" : r;
  }

  /**
   * Cuts a GSO frame into MTU-sized frames for a port that cannot take it whole. A busy
   * first frame asks a unicast sender to retry; one busy later drops the rest (TCP
   * retransmits them, as after a loss on a wire).
   */
  private outSegmented(
    p: Port,
    frame: Uint8Array,
    meta: NetFrameMeta,
    flooding: boolean,
  ): NetSendResult {
    const s = p.portStats;
    const layout = checkGso(frame, meta);
    if (typeof layout === "string") {
      s.txDrops++;
      return "dropped";
    }
    if (this.gsoScratch.length < layout.payload + layout.mss)
      this.gsoScratch = new Uint8Array(layout.payload + layout.mss);
    let first = "sent" as NetSendResult;
    let sent = 0;
    segmentGso(frame, layout, !p.carriesMeta, this.gsoScratch, (segment, m) => {
      const r = p.output(segment, m);
      if (r === "sent") {
        s.txFrames++;
        s.txBytes += segment.length;
        sent++;
        return true;
      }
      s.txDrops++;
      if (sent === 0) first = r;
      return false;
    });
    s.gsoSegmented++;
    if (!p.carriesMeta) s.checksumsCompleted += sent;
    return flooding && first === "busy" ? "dropped" : first;
  }

  /** The frame with a NEEDS_CSUM checksum completed (a copy), or the frame itself. */
  private completed(frame: Uint8Array, meta: NetFrameMeta | null): Uint8Array {
    if (meta === null || (meta.flags & NET_META_NEEDS_CSUM) === 0) return frame;
    const copy = frame.slice();
    completeChecksum(copy, meta.csumStart, meta.csumOffset);
    return copy;
  }

  /** @internal an uplink became writable: every NIC may retry */
  wakeAll(): void {
    for (const p of this.ports) p.wake();
  }
}
