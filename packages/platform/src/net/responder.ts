/**
 * A host on the network with just enough IPv4 to be pinged and sent to: it answers ARP
 * requests for its address (RFC 826), answers ICMP echo requests (RFC 792), counts UDP
 * datagrams sent to it, and accepts TCP connections on one port as a discard sink
 * (RFC 9293, receiver side only: in-order data, immediate ACKs, a fixed 65535-byte window)
 * for bulk-transfer measurements. On further ports it runs TCP senders
 * ({@link TcpSender}: MSS from the peer's SYN, the peer's window, congestion control,
 * retransmission): sources that send a fixed number of bytes on each connection and close,
 * and an echo service (RFC 862) that sends back what it receives and closes after the
 * peer's FIN. It is what a guest's `ping` and `nc` talk to in pvkit's end-to-end tests and
 * benchmarks.
 *
 * @module
 */

import { ETH_HEADER_LEN, NET_META_NEEDS_CSUM, type NetBackend, parseMac } from "./backend.js";
import { setU32, u32 } from "./be.js";
import {
  completeChecksum,
  ETHERTYPE_IPV4,
  fillTransportChecksum,
  IPPROTO_TCP,
  IPPROTO_UDP,
  onesComplementSum,
  verifyTransportChecksum,
} from "./checksum.js";
import {
  GrowingSource,
  patternSource,
  type TcpClock,
  type TcpSegmentOut,
  TcpSender,
  type TcpSenderStats,
} from "./tcp-source.js";

/** EtherType of ARP. */
export const ETHERTYPE_ARP = 0x0806;
/** IP protocol number of ICMP. */
export const IPPROTO_ICMP = 1;

/** Options of a {@link HostResponder}. */
export interface HostResponderOptions {
  /** Our MAC address (6 bytes or `aa:bb:…`; default 52:54:00:00:00:02). */
  readonly mac?: Uint8Array | string;
  /** Our IPv4 address, dotted quad. */
  readonly ip: string;
  /** TCP port accepting connections as a discard sink (default 9, "discard"). */
  readonly tcpSinkPort?: number;
  /**
   * TCP source ports: port → bytes sent on each connection to it (the pattern of
   * `tcpPatternByte`), then FIN. E.g. `{ 19: 16 << 20 }`. Default none.
   */
  readonly tcpSourcePorts?: Readonly<Record<number, number>>;
  /** TCP echo port (RFC 862): what the peer sends comes back; FIN after the peer's. Default none. */
  readonly tcpEchoPort?: number;
  /** Time and timers of the TCP senders (default `systemTcpClock`). */
  readonly tcpClock?: TcpClock;
}

/** Counters of a {@link HostResponder}. */
export interface HostResponderStats {
  /** ARP replies sent. */
  arpReplies: number;
  /** ICMP echo replies sent. */
  echoReplies: number;
  /** UDP datagrams addressed to us. */
  udpDatagrams: number;
  /** UDP payload bytes addressed to us. */
  udpBytes: number;
  /** TCP payload bytes received in order on the sink port. */
  tcpBytes: number;
  /** TCP connections the peer closed cleanly (FIN received and answered). */
  tcpConnections: number;
  /** TCP segments refused: bad checksum, closed port, no connection. */
  tcpRefused: number;
  /** Data bytes the peers acknowledged on the source ports. */
  tcpSourceBytes: number;
  /** Source connections whose data and FIN were all acknowledged. */
  tcpSourceConnections: number;
  /** Bytes echoed and acknowledged on the echo port. */
  tcpEchoBytes: number;
  /** Echo connections closed cleanly in both directions. */
  tcpEchoConnections: number;
  /** Frames not for us, or not understood. */
  ignored: number;
}

/**
 * Parses a dotted-quad IPv4 address.
 *
 * @returns the 4 bytes, or null when `text` is not one
 */
export function parseIpv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return null;
    out[i] = Number(p);
  }
  return out;
}

function equalAt(a: Uint8Array, at: number, b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (a[at + i] !== b[i]) return false;
  return true;
}

/**
 * The answering host. Attach it to a network back-end (e.g. a port of an
 * `EthernetSwitch`); replies go back through the same back-end.
 *
 * @example
 * ```ts
 * const sw = new EthernetSwitch();
 * const host = new HostResponder({ ip: "10.0.2.2" });
 * host.attachTo(sw.createPort("host"));
 * ```
 */
export class HostResponder {
  /** Our MAC address. */
  readonly mac: Uint8Array;
  /** Our IPv4 address. */
  readonly ip: Uint8Array;
  /** Counters. */
  readonly stats: HostResponderStats = {
    arpReplies: 0,
    echoReplies: 0,
    udpDatagrams: 0,
    udpBytes: 0,
    tcpBytes: 0,
    tcpConnections: 0,
    tcpRefused: 0,
    tcpSourceBytes: 0,
    tcpSourceConnections: 0,
    tcpEchoBytes: 0,
    tcpEchoConnections: 0,
    ignored: 0,
  };
  /** The TCP sink's port. */
  readonly tcpSinkPort: number;
  /** The source ports and the bytes each sends. */
  readonly tcpSourcePorts: ReadonlyMap<number, number>;
  /** The echo port, or undefined. */
  readonly tcpEchoPort: number | undefined;
  private backend: NetBackend | null = null;
  private readonly connections = new Map<string, TcpConnection | SenderConnection>();
  private readonly tcpClock: TcpClock | undefined;
  private readonly senderTotals: TcpSenderStats = {
    bytesAcked: 0,
    segments: 0,
    retransmits: 0,
    timeouts: 0,
    fastRetransmits: 0,
    probes: 0,
    bytesReceived: 0,
  };
  private senderCount = 0;

  /** @throws Error on an invalid MAC or IP address (host configuration) */
  constructor(options: HostResponderOptions) {
    const mac =
      typeof options.mac === "string"
        ? parseMac(options.mac)
        : (options.mac ?? new Uint8Array([0x52, 0x54, 0, 0, 0, 2]));
    if (mac === null || mac.length !== 6) throw new Error(`bad MAC address ${String(options.mac)}`);
    const ip = parseIpv4(options.ip);
    if (ip === null) throw new Error(`bad IPv4 address ${options.ip}`);
    this.mac = mac;
    this.ip = ip;
    this.tcpSinkPort = options.tcpSinkPort ?? 9;
    const sources = new Map<number, number>();
    for (const [port, bytes] of Object.entries(options.tcpSourcePorts ?? {})) {
      const p = Number(port);
      if (!Number.isInteger(p) || p < 1 || p > 0xffff || p === this.tcpSinkPort)
        throw new Error(`bad TCP source port ${port}`);
      if (!Number.isSafeInteger(bytes) || bytes < 0)
        throw new Error(`bad byte count ${bytes} for TCP source port ${port}`);
      sources.set(p, bytes);
    }
    const echo = options.tcpEchoPort;
    if (
      echo !== undefined &&
      (!Number.isInteger(echo) ||
        echo < 1 ||
        echo > 0xffff ||
        echo === this.tcpSinkPort ||
        sources.has(echo))
    )
      throw new Error(`bad TCP echo port ${echo}`);
    this.tcpSourcePorts = sources;
    this.tcpEchoPort = echo;
    this.tcpClock = options.tcpClock;
  }

  /**
   * The TCP senders' counters (sources and echo), summed over every connection so far:
   * segments, retransmissions, timeouts, fast retransmits, zero-window probes.
   */
  tcpSenderStats(): TcpSenderStats {
    const out = { ...this.senderTotals };
    for (const c of this.connections.values()) {
      if (!(c instanceof SenderConnection)) continue;
      for (const k of Object.keys(out) as (keyof TcpSenderStats)[]) out[k] += c.sender.stats[k];
    }
    return out;
  }

  /** Closes every connection and stops the TCP senders' timers. */
  closeConnections(): void {
    for (const c of this.connections.values()) if (c instanceof SenderConnection) this.retire(c);
    this.connections.clear();
  }

  /**
   * Attaches to `backend`: frames it delivers are answered through it. A frame whose
   * transport checksum is still partial (NEEDS_CSUM metadata from a NIC with checksum
   * offload, virtio 1.2 §5.1.6.2) is completed first, as a receiving NIC would.
   */
  attachTo(backend: NetBackend): void {
    this.backend = backend;
    backend.attach({
      // A GSO frame is one TCP segment larger than the MTU: the sink takes it whole, as a
      // host stack takes a GRO-merged segment.
      acceptsGso: true,
      receive: (frame, meta) => {
        if (meta !== null && meta.flags & NET_META_NEEDS_CSUM) {
          const copy = frame.slice();
          completeChecksum(copy, meta.csumStart, meta.csumOffset);
          this.receive(copy);
        } else {
          this.receive(frame);
        }
      },
    });
  }

  /** Handles one frame (also callable directly). */
  receive(frame: Uint8Array): void {
    if (frame.length < ETH_HEADER_LEN) {
      this.stats.ignored++;
      return;
    }
    const type = (frame[12]! << 8) | frame[13]!;
    if (type === ETHERTYPE_ARP) this.arp(frame);
    else if (type === ETHERTYPE_IPV4) this.ipv4(frame);
    else this.stats.ignored++;
  }

  private reply(frame: Uint8Array): void {
    frame.copyWithin(0, 6, 12); // destination := the sender
    frame.set(this.mac, 6);
    this.backend?.send(frame, null);
  }

  private arp(frame: Uint8Array): void {
    const a = ETH_HEADER_LEN;
    // Ethernet/IPv4 request (htype 1, ptype 0x0800, hlen 6, plen 4, op 1) for our address.
    if (
      frame.length < a + 28 ||
      frame[a] !== 0 ||
      frame[a + 1] !== 1 ||
      frame[a + 2] !== 0x08 ||
      frame[a + 3] !== 0 ||
      frame[a + 4] !== 6 ||
      frame[a + 5] !== 4 ||
      frame[a + 6] !== 0 ||
      frame[a + 7] !== 1 ||
      !equalAt(frame, a + 24, this.ip)
    ) {
      this.stats.ignored++;
      return;
    }
    const out = frame.slice(0, Math.max(60, a + 28));
    out[a + 7] = 2; // reply
    out.copyWithin(a + 18, a + 8, a + 18); // target := the requester (MAC and IP)
    out.set(this.mac, a + 8);
    out.set(this.ip, a + 14);
    this.stats.arpReplies++;
    this.reply(out);
  }

  private ipv4(frame: Uint8Array): void {
    const ip = ETH_HEADER_LEN;
    const ihl = ((frame[ip] ?? 0) & 0x0f) * 4;
    if (
      frame.length < ip + 20 ||
      frame[ip]! >> 4 !== 4 ||
      ihl < 20 ||
      !equalAt(frame, ip + 16, this.ip)
    ) {
      this.stats.ignored++;
      return;
    }
    const total = (frame[ip + 2]! << 8) | frame[ip + 3]!;
    const fragment = ((frame[ip + 6]! << 8) | frame[ip + 7]!) & 0x3fff;
    if (total < ihl || ip + total > frame.length || fragment !== 0) {
      this.stats.ignored++;
      return;
    }
    const l4 = ip + ihl;
    const proto = frame[ip + 9];
    if (proto === IPPROTO_TCP && total >= ihl + 20) {
      this.tcp(frame, l4, ip + total);
      return;
    }
    if (proto === IPPROTO_UDP && total >= ihl + 8) {
      this.stats.udpDatagrams++;
      this.stats.udpBytes += total - ihl - 8;
      return;
    }
    if (proto !== IPPROTO_ICMP || total < ihl + 8 || frame[l4] !== 8 || frame[l4 + 1] !== 0) {
      this.stats.ignored++;
      return;
    }
    // Echo reply: the request with addresses swapped, type 0, fresh checksums.
    const out = frame.slice(0, Math.max(60, ip + total));
    out.copyWithin(ip + 16, ip + 12, ip + 16); // destination := the source
    out.set(this.ip, ip + 12);
    out[ip + 8] = 64; // TTL
    out[ip + 10] = 0;
    out[ip + 11] = 0;
    const ipSum = ~onesComplementSum(out, ip, ip + ihl) & 0xffff;
    out[ip + 10] = ipSum >> 8;
    out[ip + 11] = ipSum & 0xff;
    out[l4] = 0;
    out[l4 + 2] = 0;
    out[l4 + 3] = 0;
    const icmpSum = ~onesComplementSum(out, l4, ip + total) & 0xffff;
    out[l4 + 2] = icmpSum >> 8;
    out[l4 + 3] = icmpSum & 0xff;
    this.stats.echoReplies++;
    this.reply(out);
  }

  private tcp(frame: Uint8Array, l4: number, end: number): void {
    const stats = this.stats;
    const off = (frame[l4 + 12]! >> 4) * 4;
    if (off < 20 || l4 + off > end || verifyTransportChecksum(frame) !== true) {
      stats.tcpRefused++;
      return;
    }
    const srcPort = (frame[l4]! << 8) | frame[l4 + 1]!;
    const dstPort = (frame[l4 + 2]! << 8) | frame[l4 + 3]!;
    const seq = u32(frame, l4 + 4);
    const ack = u32(frame, l4 + 8);
    const flags = frame[l4 + 13]!;
    const length = end - l4 - off;
    const key = `${frame[ETH_HEADER_LEN + 12]}.${frame[ETH_HEADER_LEN + 13]}.${frame[ETH_HEADER_LEN + 14]}.${frame[ETH_HEADER_LEN + 15]}:${srcPort}>${dstPort}`;
    const c = this.connections.get(key);
    if (c instanceof SenderConnection) {
      if (flags & TCP_SYN && !(flags & TCP_ACK) && seq !== c.irs) {
        // A new connection on the same address and port: the old one is gone.
        this.retire(c);
        this.connections.delete(key);
      } else {
        this.toSender(key, c, frame, l4, off, end, seq, ack, flags);
        return;
      }
    }
    if (flags & TCP_RST) {
      this.connections.delete(key);
      return;
    }
    if (flags & TCP_SYN) {
      if (flags & TCP_ACK) {
        stats.tcpRefused++;
        this.tcpReply(frame, l4, TCP_RST | TCP_ACK, 0, (seq + 1) >>> 0);
        return;
      }
      const bytes = this.tcpSourcePorts.get(dstPort);
      if (bytes !== undefined || dstPort === this.tcpEchoPort) {
        this.openSender(key, frame, l4, off, seq, bytes);
        return;
      }
      if (dstPort !== this.tcpSinkPort) {
        stats.tcpRefused++;
        this.tcpReply(frame, l4, TCP_RST | TCP_ACK, 0, (seq + 1) >>> 0);
        return;
      }
      // A new connection (or a retransmitted SYN): SYN-ACK with MSS 1460.
      const conn: TcpConnection = {
        rcvNxt: (seq + 1) >>> 0,
        sndNxt: (TCP_ISS + 1) >>> 0,
        finSent: false,
      };
      this.connections.set(key, conn);
      this.tcpReply(frame, l4, TCP_SYN | TCP_ACK, TCP_ISS, conn.rcvNxt, TCP_MSS_OPTION);
      return;
    }
    const sink = c instanceof SenderConnection ? undefined : c;
    if (sink === undefined) {
      stats.tcpRefused++;
      if (flags & TCP_ACK) this.tcpReply(frame, l4, TCP_RST, ack, 0);
      return;
    }
    if (length > 0 || flags & TCP_FIN) {
      if (seq === sink.rcvNxt) {
        sink.rcvNxt = (sink.rcvNxt + length) >>> 0;
        stats.tcpBytes += length;
        if (flags & TCP_FIN && !sink.finSent) {
          // The peer is done: acknowledge its FIN and close our side at once.
          sink.rcvNxt = (sink.rcvNxt + 1) >>> 0;
          sink.finSent = true;
          stats.tcpConnections++;
          this.tcpReply(frame, l4, TCP_FIN | TCP_ACK, sink.sndNxt, sink.rcvNxt);
          sink.sndNxt = (sink.sndNxt + 1) >>> 0;
          return;
        }
      }
      // In order or not, say what we expect next (a duplicate ACK asks for a retransmit).
      this.tcpReply(frame, l4, TCP_ACK, sink.sndNxt, sink.rcvNxt);
      return;
    }
    if (sink.finSent && flags & TCP_ACK && ack === sink.sndNxt) this.connections.delete(key);
  }

  /** Starts a sender for a SYN to a source port (`bytes`) or the echo port (`bytes` undefined). */
  private openSender(
    key: string,
    frame: Uint8Array,
    l4: number,
    off: number,
    seq: number,
    bytes: number | undefined,
  ): void {
    const ip = ETH_HEADER_LEN;
    // The header every segment of this connection starts with: addresses and ports swapped.
    const head = new Uint8Array(ETH_HEADER_LEN + 20 + 4);
    head.set(frame.subarray(6, 12), 0);
    head.set(this.mac, 6);
    head[12] = 0x08;
    head.set(this.ip, ip + 12);
    head.set(frame.subarray(ip + 12, ip + 16), ip + 16);
    head.set(frame.subarray(l4 + 2, l4 + 4), ip + 20);
    head.set(frame.subarray(l4, l4 + 2), ip + 22);
    const echo = bytes === undefined ? new GrowingSource() : null;
    let sender: TcpSender | undefined;
    const conn = new SenderConnection(seq >>> 0, head, echo);
    this.connections.set(key, conn);
    this.senderCount++;
    sender = new TcpSender({
      syn: { seq, window: (frame[l4 + 14]! << 8) | frame[l4 + 15]!, ...mssOption(frame, l4, off) },
      iss: (TCP_ISS + this.senderCount * 0x0100_0000 + 0x10000) >>> 0,
      source: echo ?? patternSource(bytes!),
      emit: (segment) => this.sendSegment(conn, segment),
      ...(echo === null
        ? {}
        : {
            onData: (data: Uint8Array) => {
              echo.push(data);
              queueMicrotask(() => sender?.pump());
            },
            onPeerFin: () => {
              echo.end();
              queueMicrotask(() => sender?.pump());
            },
          }),
      ...(this.tcpClock === undefined ? {} : { clock: this.tcpClock }),
    });
    conn.sender = sender;
  }

  private toSender(
    key: string,
    c: SenderConnection,
    frame: Uint8Array,
    l4: number,
    off: number,
    end: number,
    seq: number,
    ack: number,
    flags: number,
  ): void {
    const s = c.sender;
    const acked = s.stats.bytesAcked;
    s.receive({
      flags,
      seq,
      ack,
      window: (frame[l4 + 14]! << 8) | frame[l4 + 15]!,
      payload: frame.subarray(l4 + off, end),
    });
    const delta = s.stats.bytesAcked - acked;
    if (c.echo === null) this.stats.tcpSourceBytes += delta;
    else this.stats.tcpEchoBytes += delta;
    if (s.state === "closed") {
      this.retire(c);
      this.connections.delete(key);
    } else if (s.allAcked && (c.echo === null || s.peerClosed)) {
      if (c.echo === null) this.stats.tcpSourceConnections++;
      else this.stats.tcpEchoConnections++;
      this.retire(c);
      this.connections.delete(key);
    }
  }

  /** Stops a sender and folds its counters into the totals. */
  private retire(c: SenderConnection): void {
    c.sender.close();
    for (const k of Object.keys(this.senderTotals) as (keyof TcpSenderStats)[])
      this.senderTotals[k] += c.sender.stats[k];
  }

  /** Builds and sends one segment of a sender connection. */
  private sendSegment(c: SenderConnection, seg: TcpSegmentOut): void {
    const ip = ETH_HEADER_LEN;
    const optLen = seg.mss === undefined ? 0 : 4;
    const tcpLen = 20 + optLen;
    const total = 20 + tcpLen + seg.payload.length;
    const out = new Uint8Array(Math.max(60, ip + total));
    out.set(c.head.subarray(0, ip + 24));
    out[ip] = 0x45;
    out[ip + 2] = total >> 8;
    out[ip + 3] = total & 0xff;
    out[ip + 6] = 0x40; // don't fragment
    out[ip + 8] = 64; // TTL
    out[ip + 9] = IPPROTO_TCP;
    const ipSum = ~onesComplementSum(out, ip, ip + 20) & 0xffff;
    out[ip + 10] = ipSum >> 8;
    out[ip + 11] = ipSum & 0xff;
    const t = ip + 20;
    setU32(out, t + 4, seg.seq);
    setU32(out, t + 8, seg.ack);
    out[t + 12] = (tcpLen / 4) << 4;
    out[t + 13] = seg.flags;
    out[t + 14] = seg.window >> 8;
    out[t + 15] = seg.window & 0xff;
    if (seg.mss !== undefined) out.set([2, 4, seg.mss >> 8, seg.mss & 0xff], t + 20);
    out.set(seg.payload, t + tcpLen);
    fillTransportChecksum(out);
    this.backend?.send(out, null);
  }

  /** Sends a segment back to the sender of `req` (no payload). */
  private tcpReply(
    req: Uint8Array,
    l4: number,
    flags: number,
    seq: number,
    ack: number,
    options: readonly number[] = [],
  ): void {
    const ip = ETH_HEADER_LEN;
    const tcpLen = 20 + options.length;
    const total = 20 + tcpLen;
    const out = new Uint8Array(Math.max(60, ip + total));
    out.set(req.subarray(6, 12), 0);
    out.set(this.mac, 6);
    out[12] = 0x08;
    out[14] = 0x45;
    out[16] = total >> 8;
    out[17] = total & 0xff;
    out[20] = 0x40; // don't fragment
    out[22] = 64; // TTL
    out[23] = IPPROTO_TCP;
    out.set(this.ip, ip + 12);
    out.set(req.subarray(ip + 12, ip + 16), ip + 16);
    const ipSum = ~onesComplementSum(out, ip, ip + 20) & 0xffff;
    out[ip + 10] = ipSum >> 8;
    out[ip + 11] = ipSum & 0xff;
    const t = ip + 20;
    out.set(req.subarray(l4 + 2, l4 + 4), t); // our port: the one they sent to
    out.set(req.subarray(l4, l4 + 2), t + 2);
    setU32(out, t + 4, seq);
    setU32(out, t + 8, ack);
    out[t + 12] = (tcpLen / 4) << 4;
    out[t + 13] = flags;
    out[t + 14] = 0xff; // window 65535
    out[t + 15] = 0xff;
    out.set(options, t + 20);
    fillTransportChecksum(out);
    this.backend?.send(out, null);
  }
}

interface TcpConnection {
  /** Next sequence number expected from the peer. */
  rcvNxt: number;
  /** Our next sequence number. */
  sndNxt: number;
  /** Whether we answered the peer's FIN with ours. */
  finSent: boolean;
}

/** A connection served by a {@link TcpSender} (a source or the echo service). */
class SenderConnection {
  /** Set right after construction (the sender's constructor already emits the SYN-ACK). */
  sender!: TcpSender;
  constructor(
    /** The peer's initial sequence number. */
    readonly irs: number,
    /** Ethernet, IPv4 addresses and TCP ports of every segment we send. */
    readonly head: Uint8Array,
    /** The echo service's buffer, or null for a source. */
    readonly echo: GrowingSource | null,
  ) {}
}

/** The MSS option of a SYN (RFC 9293 §3.2), as `{ mss }`, or `{}` when absent or malformed. */
function mssOption(frame: Uint8Array, l4: number, off: number): { mss?: number } {
  let i = l4 + 20;
  const end = l4 + off;
  while (i < end) {
    const kind = frame[i]!;
    if (kind === 0) break;
    if (kind === 1) {
      i++;
      continue;
    }
    const len = frame[i + 1] ?? 0;
    if (len < 2 || i + len > end) break;
    if (kind === 2 && len === 4) {
      const mss = (frame[i + 2]! << 8) | frame[i + 3]!;
      return mss > 0 ? { mss } : {};
    }
    i += len;
  }
  return {};
}

const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_ACK = 0x10;
/** Our initial sequence number (fixed: the sink never sends data). */
const TCP_ISS = 0x5056_0000;
/** The MSS option (RFC 9293 §3.7.1): 1460 bytes, for a 1500-byte MTU. */
const TCP_MSS_OPTION = [2, 4, 0x05, 0xb4] as const;
