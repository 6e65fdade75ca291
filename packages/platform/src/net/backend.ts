/**
 * The interface every network back-end implements, shared by every pvkit NIC (virtio-net,
 * the emulated RTL8139): a NIC hands frames to its back-end and receives frames from it
 * through a {@link NetEndpoint} it attaches.
 *
 * Frames are Ethernet frames without the FCS (what a tap device or QEMU's `-netdev`
 * back-ends carry). Ownership: a `send` or `receive` callee that keeps a frame beyond the
 * call must copy it (the caller reuses its buffer); the optional {@link NetFrameMeta} is
 * likewise only valid during the call.
 *
 * @module
 */

/**
 * Checksum metadata carried with a frame between pvkit NICs (the meaning of the virtio
 * net header flags, virtio 1.2 §5.1.6): either the transport checksum still has to be
 * completed, or it was already verified.
 */
export interface NetFrameMeta {
  /** {@link NET_META_NEEDS_CSUM} and/or {@link NET_META_DATA_VALID}, or 0. */
  flags: number;
  /** With NEEDS_CSUM: where the checksummed range starts (to the end of the frame). */
  csumStart: number;
  /** With NEEDS_CSUM: where, after `csumStart`, the 16-bit checksum is stored. */
  csumOffset: number;
  /**
   * A TCP segment larger than the MTU, to be cut into frames of `gsoSize` payload bytes
   * by whoever cannot take it whole (virtio 1.2 §5.1.6, `gso_type`): `NET_GSO_TCPV4`,
   * `NET_GSO_TCPV6`, optionally with `NET_GSO_ECN`; absent or `NET_GSO_NONE` for an
   * ordinary frame. Only sent to a back-end whose {@link NetBackend.gso} is true.
   */
  gsoType?: number;
  /** With `gsoType`: the MSS, payload bytes per segment (virtio 1.2 §5.1.6, `gso_size`). */
  gsoSize?: number;
}

/**
 * The transport checksum is partial: the field at `csumStart + csumOffset` holds the
 * pseudo-header sum, and the ones'-complement checksum of `[csumStart, end)` must still be
 * stored there (virtio 1.2 §5.1.6, VIRTIO_NET_HDR_F_NEEDS_CSUM).
 */
export const NET_META_NEEDS_CSUM = 1;
/** The checksum was already validated (virtio 1.2 §5.1.6, VIRTIO_NET_HDR_F_DATA_VALID). */
export const NET_META_DATA_VALID = 2;

/**
 * What {@link NetBackend.send} answers: `"sent"` (taken; it may still be lost further on,
 * which the back-end counts), `"busy"` (not now: the caller keeps the frame and retries
 * after {@link NetEndpoint.writable}), `"dropped"` (refused for good, counted).
 */
export type NetSendResult = "sent" | "busy" | "dropped";

/** What a NIC attaches to its back-end to be handed frames and events. */
export interface NetEndpoint {
  /**
   * Whether the NIC takes GSO frames ({@link NetFrameMeta.gsoType}) whole; absent or
   * false: a back-end (a switch) cuts them into MTU-sized frames first.
   */
  readonly acceptsGso?: boolean;
  /** A frame arrived for the NIC (copy it to keep it). */
  receive(frame: Uint8Array, meta: NetFrameMeta | null): void;
  /** The back-end's link went up or down. */
  linkChange?(up: boolean): void;
  /** After a `"busy"` answer: the back-end can take frames again. */
  writable?(): void;
}

/** Counters every back-end keeps. */
export interface NetBackendStats {
  /** Frames accepted by `send`. */
  txFrames: number;
  /** Bytes accepted by `send`. */
  txBytes: number;
  /** Frames handed to the endpoint. */
  rxFrames: number;
  /** Bytes handed to the endpoint. */
  rxBytes: number;
  /** Frames dropped (refused, lost, malformed, or no endpoint), in either direction. */
  drops: number;
  /** `send` calls answered `"busy"`. */
  busy: number;
}

/** A place a NIC's frames go to and come from. */
export interface NetBackend {
  /** A name for logs and statistics. */
  readonly name: string;
  /**
   * Whether the back-end carries {@link NetFrameMeta} to its peer. When false, a NIC
   * completes a NEEDS_CSUM checksum in software before sending.
   */
  readonly checksumOffload: boolean;
  /**
   * Whether the back-end carries GSO frames ({@link NetFrameMeta.gsoType}) to its peer
   * whole. When absent or false, a NIC cuts them into MTU-sized frames itself (see
   * `segmentGso`). Requires {@link checksumOffload}.
   */
  readonly gso?: boolean;
  /** Whether the link is up. */
  readonly linkUp: boolean;
  /** Counters. */
  readonly stats: NetBackendStats;
  /** Attaches the NIC (replaces any previous endpoint). */
  attach(endpoint: NetEndpoint): void;
  /** Detaches the NIC; frames arriving afterwards are dropped and counted. */
  detach(): void;
  /** Sends one frame (see {@link NetSendResult}). */
  send(frame: Uint8Array, meta: NetFrameMeta | null): NetSendResult;
}

/** Fresh zeroed {@link NetBackendStats}. */
export function newNetBackendStats(): NetBackendStats {
  return { txFrames: 0, txBytes: 0, rxFrames: 0, rxBytes: 0, drops: 0, busy: 0 };
}

/** Bytes of an Ethernet header (destination, source, EtherType). */
export const ETH_HEADER_LEN = 14;
/** The smallest Ethernet frame without FCS (IEEE 802.3: 64 bytes with the 4-byte FCS). */
export const ETH_MIN_FRAME = 60;

/** Formats a 6-byte MAC address as `aa:bb:cc:dd:ee:ff`. */
export function formatMac(mac: Uint8Array, offset = 0): string {
  const parts: string[] = [];
  for (let i = 0; i < 6; i++) parts.push((mac[offset + i] ?? 0).toString(16).padStart(2, "0"));
  return parts.join(":");
}

/**
 * Parses `aa:bb:cc:dd:ee:ff` (or `-` separated).
 *
 * @returns the 6 bytes, or null when the text is not a MAC address
 */
export function parseMac(text: string): Uint8Array | null {
  const parts = text.split(/[:-]/);
  if (parts.length !== 6) return null;
  const out = new Uint8Array(6);
  for (let i = 0; i < 6; i++) {
    const p = parts[i]!;
    if (!/^[0-9a-fA-F]{1,2}$/.test(p)) return null;
    out[i] = Number.parseInt(p, 16);
  }
  return out;
}
