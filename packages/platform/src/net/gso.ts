/**
 * TCP segmentation offload (TSO), the generic segmentation a NIC or a host does for a
 * guest that hands it one large TCP segment (virtio 1.2 §5.1.6.2, VIRTIO_NET_F_HOST_TSO4 /
 * HOST_TSO6 / HOST_ECN): check the frame a guest built, and cut it into frames of at most
 * `gsoSize` payload bytes with the headers each one needs.
 *
 * What each segment gets, as Linux's `tcp_gso_segment` / `inet_gso_segment` produce it:
 * the same Ethernet and IP headers with the IPv4 total length (or IPv6 payload length)
 * and the IPv4 identification (+1 per segment) rewritten and the IPv4 header checksum
 * recomputed; the TCP sequence number advanced by the bytes before it; FIN and PSH only on
 * the last segment and CWR only on the first; and the TCP checksum either completed or
 * left as a pseudo-header sum with {@link NET_META_NEEDS_CSUM} for a receiver that
 * completes it.
 *
 * Nothing the guest wrote is trusted: the IP and TCP header offsets are found again from
 * the frame (the virtio header's `hdr_len` is only a hint, §5.1.6.2), and `csum_start` /
 * `csum_offset` must name the TCP checksum field.
 *
 * @module
 */

import { NET_META_NEEDS_CSUM, type NetFrameMeta } from "./backend.js";
import { setU16, setU32, u32 } from "./be.js";
import { IPPROTO_TCP, onesComplementSum, parseTransport } from "./checksum.js";

/** `gsoType`: not a GSO frame (virtio 1.2 §5.1.6, VIRTIO_NET_HDR_GSO_NONE). */
export const NET_GSO_NONE = 0;
/** `gsoType`: a TCP segment over IPv4 larger than the MTU (VIRTIO_NET_HDR_GSO_TCPV4). */
export const NET_GSO_TCPV4 = 1;
/** `gsoType`: a TCP segment over IPv6 larger than the MTU (VIRTIO_NET_HDR_GSO_TCPV6). */
export const NET_GSO_TCPV6 = 4;
/** `gsoType` flag: the segment has CWR set; only the first frame keeps it (VIRTIO_NET_HDR_GSO_ECN). */
export const NET_GSO_ECN = 0x80;

/**
 * Most frames one GSO frame may be cut into. Linux never sends a TCP MSS below 48 bytes
 * (`net.ipv4.tcp_min_snd_mss`, default and floor 48) and a GSO frame carries at most
 * 65535 bytes of IP payload, so a real guest needs at most ⌈65535 / 48⌉ frames; more is a
 * guest asking the host to do unbounded work per frame.
 */
export const GSO_MAX_SEGMENTS = Math.ceil(65535 / 48);

/** Why a GSO frame was refused (see {@link checkGso}). */
export type GsoError =
  | "not-tcp"
  | "wrong-ip-version"
  | "bad-checksum-fields"
  | "zero-gso-size"
  | "no-payload"
  | "too-many-segments";

/** A GSO frame's layout, as {@link checkGso} found it. */
export interface GsoLayout {
  /** 4 or 6. */
  readonly ipVersion: 4 | 6;
  /** Offset of the IP header. */
  readonly l3: number;
  /** Offset of the TCP header. */
  readonly l4: number;
  /** Offset of the TCP payload (end of every segment's headers). */
  readonly payload: number;
  /** End of the IP packet (bytes after it are Ethernet padding). */
  readonly end: number;
  /** Payload bytes per segment. */
  readonly mss: number;
  /** Frames it cuts into. */
  readonly segments: number;
}

/**
 * Checks a frame a guest marked as GSO (`meta.gsoType` other than {@link NET_GSO_NONE}).
 * The caller checks first that the type was negotiated.
 *
 * @param frame - the Ethernet frame, headers and all the payload
 * @param meta - its metadata: NEEDS_CSUM with `csumStart` / `csumOffset` on the TCP
 *   checksum (virtio 1.2 §5.1.6.2: a driver sending GSO MUST set NEEDS_CSUM), `gsoType`,
 *   `gsoSize` (the MSS)
 * @returns the layout, or why the frame is refused
 */
export function checkGso(frame: Uint8Array, meta: NetFrameMeta): GsoLayout | GsoError {
  const info = parseTransport(frame);
  if (info === null || info.protocol !== IPPROTO_TCP) return "not-tcp";
  const type = (meta.gsoType ?? NET_GSO_NONE) & ~NET_GSO_ECN;
  if (
    (type === NET_GSO_TCPV4) !== (info.ipVersion === 4) ||
    (type !== NET_GSO_TCPV4 && type !== NET_GSO_TCPV6)
  )
    return "wrong-ip-version";
  if (
    (meta.flags & NET_META_NEEDS_CSUM) === 0 ||
    meta.csumStart !== info.l4Offset ||
    meta.csumOffset !== info.checksumOffset
  )
    return "bad-checksum-fields";
  const mss = meta.gsoSize ?? 0;
  if (mss === 0) return "zero-gso-size";
  const l4 = info.l4Offset;
  const thl = (frame[l4 + 12]! >> 4) * 4;
  const end = l4 + info.l4Length;
  if (thl < 20 || l4 + thl > end) return "not-tcp";
  const payload = end - (l4 + thl);
  if (payload === 0) return "no-payload";
  const segments = Math.ceil(payload / mss);
  if (segments > GSO_MAX_SEGMENTS) return "too-many-segments";
  return {
    ipVersion: info.ipVersion,
    l3: info.l3Offset,
    l4,
    payload: l4 + thl,
    end,
    mss,
    segments,
  };
}

const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/**
 * Cuts a checked GSO frame into frames of at most `layout.mss` payload bytes and hands
 * each to `emit`, in order. Each segment is built in `scratch` (reused, so `emit` must
 * copy what it keeps, as {@link NetBackend.send} callees do).
 *
 * @param frame - the GSO frame (not modified)
 * @param layout - what {@link checkGso} returned for it
 * @param completeChecksum - true: every segment carries its full TCP checksum and `emit`
 *   gets no metadata; false: the checksum field holds the pseudo-header sum and `emit`
 *   gets NEEDS_CSUM metadata (for a receiver that completes or ignores it)
 * @param scratch - at least `layout.payload + layout.mss` bytes
 * @param emit - called once per segment; returning false stops the segmentation
 * @returns segments emitted
 */
export function segmentGso(
  frame: Uint8Array,
  layout: GsoLayout,
  completeChecksum: boolean,
  scratch: Uint8Array,
  emit: (segment: Uint8Array, meta: NetFrameMeta | null) => boolean,
): number {
  const { l3, l4, payload: hdrEnd, end, mss, ipVersion } = layout;
  const meta: NetFrameMeta | null = completeChecksum
    ? null
    : { flags: NET_META_NEEDS_CSUM, csumStart: l4, csumOffset: 16 };
  scratch.set(frame.subarray(0, hdrEnd), 0);
  const seq0 = u32(frame, l4 + 4);
  const id0 = ipVersion === 4 ? (frame[l3 + 4]! << 8) | frame[l3 + 5]! : 0;
  const flags0 = frame[l4 + 13]!;
  // The addresses part of the pseudo-header is the same for every segment.
  const addrs =
    ipVersion === 4
      ? onesComplementSum(frame, l3 + 12, l3 + 20)
      : onesComplementSum(frame, l3 + 8, l3 + 40);
  let sent = 0;
  for (let at = hdrEnd, i = 0; at < end; at += mss, i++) {
    const n = Math.min(mss, end - at);
    const last = at + n >= end;
    const segEnd = hdrEnd + n;
    scratch.set(frame.subarray(at, at + n), hdrEnd);
    if (ipVersion === 4) {
      setU16(scratch, l3 + 2, segEnd - l3);
      setU16(scratch, l3 + 4, (id0 + i) & 0xffff);
      setU16(scratch, l3 + 10, 0);
      setU16(scratch, l3 + 10, ~onesComplementSum(scratch, l3, l4) & 0xffff);
    } else {
      setU16(scratch, l3 + 4, segEnd - (l3 + 40));
    }
    setU32(scratch, l4 + 4, (seq0 + (at - hdrEnd)) >>> 0);
    let f = flags0;
    if (!last) f &= ~(TCP_FIN | TCP_PSH);
    if (i > 0) f &= ~TCP_CWR;
    scratch[l4 + 13] = f;
    const l4Len = segEnd - l4;
    const pseudo = onesComplementSum(scratch, 0, 0, addrs + IPPROTO_TCP + l4Len);
    if (completeChecksum) {
      setU16(scratch, l4 + 16, 0);
      setU16(scratch, l4 + 16, ~onesComplementSum(scratch, l4, segEnd, pseudo) & 0xffff);
    } else {
      setU16(scratch, l4 + 16, pseudo);
    }
    sent++;
    if (!emit(scratch.subarray(0, segEnd), meta)) break;
  }
  return sent;
}
