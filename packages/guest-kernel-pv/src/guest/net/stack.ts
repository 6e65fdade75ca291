/**
 * A very small IPv4 stack over the kernel's `NetDevice`, enough for the socket-like
 * system calls to talk to the host's `HostResponder` (`@pvkit/platform`): ARP (RFC 826)
 * to learn the host's MAC, ICMP echo (RFC 792) for request/response, UDP (RFC 768) to the
 * host's sink for bulk streams. Headers are built and checked in software (the IPv4 header
 * checksum of RFC 791 and the ICMP checksum with the ones'-complement sum of RFC 1071; the
 * UDP checksum is left 0, which RFC 768 allows over IPv4).
 *
 * Received data is kept in kernel memory until the waiting process runs (it copies to its
 * own address space then): an interrupt never writes into another process's memory.
 *
 * @module
 */

import { onesComplementSum } from "@pvkit/platform";
import type { NetDevice } from "../drivers/net.js";
import { WaitQueue } from "../sched/task.js";

const ETH_HLEN = 14;
const IP_HLEN = 20;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_ARP = 0x0806;
const IPPROTO_ICMP = 1;
const IPPROTO_UDP = 17;
/** The largest UDP payload in one 1514-byte frame (1500 − 20 − 8). */
export const UDP_MAX_PAYLOAD = 1472;

function parseIp(text: string): Uint8Array {
  return Uint8Array.from(text.split(".").map((p) => Number(p) & 0xff));
}

/** Counters. */
export interface NetStackStats {
  txFrames: number;
  rxFrames: number;
  arpRequests: number;
  echoReplies: number;
  dropped: number;
}

/** The stack. */
export class NetStack {
  /** The host's MAC once ARP answered, else null. */
  hostMac: Uint8Array | null = null;
  /** Woken when ARP resolves. */
  readonly arpWait = new WaitQueue(true);
  /** Woken when the NIC has transmit room again. */
  readonly txWait = new WaitQueue(true);
  /** Woken when an echo reply arrives. */
  readonly replyWait = new WaitQueue(true);
  /** Counters. */
  readonly stats: NetStackStats = {
    txFrames: 0,
    rxFrames: 0,
    arpRequests: 0,
    echoReplies: 0,
    dropped: 0,
  };
  private readonly ip: Uint8Array;
  private readonly hostIp: Uint8Array;
  private readonly replies = new Map<number, Uint8Array>();
  private readonly tx = new Uint8Array(ETH_HLEN + 1500);
  private ipId = 1;
  private arpInFlight = false;

  /**
   * @param dev - the NIC
   * @param ip - our address (dotted quad)
   * @param hostIp - the host's address
   * @param notify - wakes a wait queue's tasks
   */
  constructor(
    readonly dev: NetDevice,
    ip: string,
    hostIp: string,
    private readonly notify: (q: WaitQueue) => void,
  ) {
    this.ip = parseIp(ip);
    this.hostIp = parseIp(hostIp);
    dev.onFrame = (f) => this.receive(f);
    dev.onWritable = () => notify(this.txWait);
  }

  /**
   * Sends an ARP request for the host unless one is in flight.
   *
   * @returns false when the NIC had no room
   */
  resolveHost(): boolean {
    if (this.hostMac !== null || this.arpInFlight) return true;
    const f = new Uint8Array(60);
    f.fill(0xff, 0, 6);
    f.set(this.dev.mac, 6);
    f[12] = ETHERTYPE_ARP >> 8;
    f[13] = ETHERTYPE_ARP & 0xff;
    const a = ETH_HLEN;
    f[a + 1] = 1; // Ethernet
    f[a + 2] = 0x08; // IPv4
    f[a + 4] = 6;
    f[a + 5] = 4;
    f[a + 7] = 1; // request
    f.set(this.dev.mac, a + 8);
    f.set(this.ip, a + 14);
    f.set(this.hostIp, a + 24);
    if (!this.dev.enqueue(f)) return false;
    this.dev.commit();
    this.arpInFlight = true;
    this.stats.arpRequests++;
    this.stats.txFrames++;
    return true;
  }

  /** Writes Ethernet + IPv4 headers for `payloadLen` bytes of `proto` into the transmit buffer. @returns the frame length */
  private ipv4(proto: number, payloadLen: number): number {
    const f = this.tx;
    f.set(this.hostMac!, 0);
    f.set(this.dev.mac, 6);
    f[12] = ETHERTYPE_IPV4 >> 8;
    f[13] = ETHERTYPE_IPV4 & 0xff;
    const ip = ETH_HLEN;
    const total = IP_HLEN + payloadLen;
    f[ip] = 0x45;
    f[ip + 1] = 0;
    f[ip + 2] = total >> 8;
    f[ip + 3] = total & 0xff;
    const id = this.ipId++ & 0xffff;
    f[ip + 4] = id >> 8;
    f[ip + 5] = id & 0xff;
    f[ip + 6] = 0x40; // don't fragment
    f[ip + 7] = 0;
    f[ip + 8] = 64;
    f[ip + 9] = proto;
    f[ip + 10] = 0;
    f[ip + 11] = 0;
    f.set(this.ip, ip + 12);
    f.set(this.hostIp, ip + 16);
    const sum = ~onesComplementSum(f, ip, ip + IP_HLEN) & 0xffff;
    f[ip + 10] = sum >> 8;
    f[ip + 11] = sum & 0xff;
    return ETH_HLEN + total;
  }

  /**
   * Queues an ICMP echo request (no notification: call `dev.commit()`).
   *
   * @returns false when the NIC had no room
   */
  sendEcho(id: number, seq: number, payload: Uint8Array): boolean {
    const len = this.ipv4(IPPROTO_ICMP, 8 + payload.length);
    const f = this.tx;
    const l4 = ETH_HLEN + IP_HLEN;
    f[l4] = 8;
    f[l4 + 1] = 0;
    f[l4 + 2] = 0;
    f[l4 + 3] = 0;
    f[l4 + 4] = id >> 8;
    f[l4 + 5] = id & 0xff;
    f[l4 + 6] = seq >> 8;
    f[l4 + 7] = seq & 0xff;
    f.set(payload, l4 + 8);
    const sum = ~onesComplementSum(f, l4, len) & 0xffff;
    f[l4 + 2] = sum >> 8;
    f[l4 + 3] = sum & 0xff;
    return this.send(len);
  }

  /**
   * Queues a UDP datagram to the host (no notification: call `dev.commit()`).
   *
   * @returns false when the NIC had no room
   */
  sendUdp(srcPort: number, dstPort: number, payload: Uint8Array): boolean {
    const len = this.ipv4(IPPROTO_UDP, 8 + payload.length);
    const f = this.tx;
    const l4 = ETH_HLEN + IP_HLEN;
    const ulen = 8 + payload.length;
    f[l4] = srcPort >> 8;
    f[l4 + 1] = srcPort & 0xff;
    f[l4 + 2] = dstPort >> 8;
    f[l4 + 3] = dstPort & 0xff;
    f[l4 + 4] = ulen >> 8;
    f[l4 + 5] = ulen & 0xff;
    f[l4 + 6] = 0;
    f[l4 + 7] = 0;
    f.set(payload, l4 + 8);
    return this.send(len);
  }

  private send(len: number): boolean {
    if (len < 60) this.tx.fill(0, len, 60);
    if (!this.dev.enqueue(this.tx.subarray(0, Math.max(60, len)))) return false;
    this.stats.txFrames++;
    return true;
  }

  /**
   * Takes the payload of the echo reply `(id, seq)` if it arrived.
   *
   * @returns the payload (kernel memory), or null
   */
  takeReply(id: number, seq: number): Uint8Array | null {
    const key = (id << 16) | seq;
    const r = this.replies.get(key);
    if (r === undefined) return null;
    this.replies.delete(key);
    return r;
  }

  /** A received frame (from the driver's poll). */
  receive(f: Uint8Array): void {
    this.stats.rxFrames++;
    if (f.length < ETH_HLEN + 28) {
      this.stats.dropped++;
      return;
    }
    const type = (f[12]! << 8) | f[13]!;
    if (type === ETHERTYPE_ARP) {
      const a = ETH_HLEN;
      if (f[a + 7] === 2 && this.same(f, a + 14, this.hostIp)) {
        this.hostMac = f.slice(a + 8, a + 14);
        this.arpInFlight = false;
        this.notify(this.arpWait);
        return;
      }
      this.stats.dropped++;
      return;
    }
    const ip = ETH_HLEN;
    if (type !== ETHERTYPE_IPV4 || f[ip + 9] !== IPPROTO_ICMP || !this.same(f, ip + 16, this.ip)) {
      this.stats.dropped++;
      return;
    }
    const ihl = (f[ip]! & 0x0f) * 4;
    const total = (f[ip + 2]! << 8) | f[ip + 3]!;
    const l4 = ip + ihl;
    if (ip + total > f.length || total < ihl + 8 || f[l4] !== 0) {
      this.stats.dropped++;
      return;
    }
    if ((~onesComplementSum(f, l4, ip + total) & 0xffff) !== 0) {
      this.stats.dropped++;
      return;
    }
    const id = (f[l4 + 4]! << 8) | f[l4 + 5]!;
    const seq = (f[l4 + 6]! << 8) | f[l4 + 7]!;
    this.replies.set((id << 16) | seq, f.slice(l4 + 8, ip + total));
    this.stats.echoReplies++;
    this.notify(this.replyWait);
  }

  private same(f: Uint8Array, at: number, b: Uint8Array): boolean {
    for (let i = 0; i < b.length; i++) if (f[at + i] !== b[i]) return false;
    return true;
  }
}
