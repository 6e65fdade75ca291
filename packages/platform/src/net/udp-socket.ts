/**
 * `UdpSocketBackend` (Node only): one Ethernet frame per UDP datagram, with no header of
 * its own — the encapsulation QEMU uses for `-netdev dgram` and `-netdev socket,udp=…`
 * (and `socket,mcast=…`), so a pvkit NIC can talk to a QEMU VM or to another process.
 * QEMU's *stream* sockets (`-netdev stream`, `socket,listen=`) prefix each frame with a
 * 4-byte big-endian length instead; that is not this back-end.
 *
 * @module
 */

import { createSocket, type Socket } from "node:dgram";
import {
  ETH_HEADER_LEN,
  type NetBackend,
  type NetBackendStats,
  type NetEndpoint,
  type NetFrameMeta,
  type NetSendResult,
  newNetBackendStats,
} from "./backend.js";

/** Options of {@link UdpSocketBackend.open}. */
export interface UdpSocketBackendOptions {
  /** Address to bind (default 127.0.0.1). */
  readonly localAddress?: string;
  /** Port to bind (default 0: any free port). */
  readonly localPort?: number;
  /** Where frames are sent. */
  readonly remoteAddress: string;
  /** The remote port. */
  readonly remotePort: number;
  /** Accept datagrams only from the remote address and port (default true). */
  readonly onlyFromRemote?: boolean;
  /** `"udp4"` (default) or `"udp6"`. */
  readonly type?: "udp4" | "udp6";
  /** A name for statistics. */
  readonly name?: string;
}

/** Largest UDP payload over IPv4 (65 535 − 20 − 8). */
export const UDP_MAX_PAYLOAD = 65_507;

/** Ethernet over UDP datagrams. */
export class UdpSocketBackend implements NetBackend {
  readonly name: string;
  readonly checksumOffload = false;
  readonly stats: NetBackendStats = newNetBackendStats();
  /** Send errors reported by the socket. */
  sendErrors = 0;
  private endpoint: NetEndpoint | null = null;
  private closed = false;

  private constructor(
    private readonly socket: Socket,
    private remoteAddress: string,
    private remotePort: number,
    private readonly onlyFromRemote: boolean,
    name: string,
  ) {
    this.name = name;
    socket.on("message", (msg, rinfo) => this.onMessage(msg, rinfo.address, rinfo.port));
    socket.on("error", () => {
      this.sendErrors++;
    });
  }

  /** Binds a socket and resolves once it is listening. */
  static open(options: UdpSocketBackendOptions): Promise<UdpSocketBackend> {
    const socket = createSocket(options.type ?? "udp4");
    return new Promise((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(options.localPort ?? 0, options.localAddress ?? "127.0.0.1", () => {
        socket.off("error", reject);
        resolve(
          new UdpSocketBackend(
            socket,
            options.remoteAddress,
            options.remotePort,
            options.onlyFromRemote ?? true,
            options.name ?? `udp:${options.remoteAddress}:${options.remotePort}`,
          ),
        );
      });
    });
  }

  /** The bound local address and port. */
  get local(): { address: string; port: number } {
    const a = this.socket.address();
    return { address: a.address, port: a.port };
  }

  /** Points the back-end at another peer (e.g. once its port is known). */
  setRemote(address: string, port: number): void {
    this.remoteAddress = address;
    this.remotePort = port;
  }

  get linkUp(): boolean {
    return !this.closed;
  }

  attach(endpoint: NetEndpoint): void {
    this.endpoint = endpoint;
  }

  detach(): void {
    this.endpoint = null;
  }

  send(frame: Uint8Array, _meta: NetFrameMeta | null): NetSendResult {
    const s = this.stats;
    if (this.closed || frame.length < ETH_HEADER_LEN || frame.length > UDP_MAX_PAYLOAD) {
      s.drops++;
      return "dropped";
    }
    // dgram keeps the buffer until the datagram is out: give it its own copy.
    this.socket.send(Buffer.from(frame), this.remotePort, this.remoteAddress, (err) => {
      if (err) this.sendErrors++;
    });
    s.txFrames++;
    s.txBytes += frame.length;
    return "sent";
  }

  private onMessage(msg: Buffer, address: string, port: number): void {
    const s = this.stats;
    if (this.onlyFromRemote && (address !== this.remoteAddress || port !== this.remotePort)) {
      s.drops++;
      return;
    }
    if (msg.length < ETH_HEADER_LEN || this.endpoint === null) {
      s.drops++;
      return;
    }
    s.rxFrames++;
    s.rxBytes += msg.length;
    this.endpoint.receive(new Uint8Array(msg.buffer, msg.byteOffset, msg.length), null);
  }

  /** Closes the socket; the link goes down. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    this.endpoint?.linkChange?.(false);
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}
