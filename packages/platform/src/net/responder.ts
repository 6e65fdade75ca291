/**
 * A host on the network with just enough IPv4 to be pinged and sent to: it answers ARP
 * requests for its address (RFC 826), answers ICMP echo requests (RFC 792), and counts
 * UDP datagrams sent to it (a sink for bulk-transfer measurements). It is what a guest's
 * `ping` and `nc -u` talk to in pvkit's end-to-end tests and benchmarks.
 *
 * @module
 */

import { ETH_HEADER_LEN, type NetBackend, parseMac } from "./backend.js";
import { ETHERTYPE_IPV4, IPPROTO_UDP, onesComplementSum } from "./checksum.js";

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
    ignored: 0,
  };
  private backend: NetBackend | null = null;

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
  }

  /** Attaches to `backend`: frames it delivers are answered through it. */
  attachTo(backend: NetBackend): void {
    this.backend = backend;
    backend.attach({ receive: (frame) => this.receive(frame) });
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
}
