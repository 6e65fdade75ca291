/**
 * Internet checksums (RFC 1071) for TCP and UDP over IPv4 and IPv6, and the completion of
 * a partial checksum the way a virtio-net device does for VIRTIO_NET_HDR_F_NEEDS_CSUM
 * (virtio 1.2 §5.1.6.2: "the checksum … from csum_start to the end of the packet, stored
 * at csum_start + csum_offset").
 *
 * @module
 */

/** EtherType IPv4. */
export const ETHERTYPE_IPV4 = 0x0800;
/** EtherType IPv6. */
export const ETHERTYPE_IPV6 = 0x86dd;
/** EtherType of an IEEE 802.1Q VLAN tag. */
export const ETHERTYPE_VLAN = 0x8100;
/** EtherType of an IEEE 802.1ad service tag. */
export const ETHERTYPE_QINQ = 0x88a8;
/** IP protocol number of TCP. */
export const IPPROTO_TCP = 6;
/** IP protocol number of UDP. */
export const IPPROTO_UDP = 17;

/**
 * The 16-bit ones'-complement sum of `bytes[start, end)` (big-endian words, an odd last
 * byte padded with zero) added to `seed`, folded to 16 bits (not complemented).
 */
export function onesComplementSum(bytes: Uint8Array, start: number, end: number, seed = 0): number {
  let sum = seed;
  let i = start;
  for (; i + 1 < end; i += 2) {
    sum += (bytes[i]! << 8) | bytes[i + 1]!;
    if (sum > 0x7fff_ffff) sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (i < end) sum += bytes[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * Completes a partial checksum in place (NEEDS_CSUM): sums `[csumStart, end)` — the field
 * at `csumStart + csumOffset` already holds the pseudo-header sum — and stores the
 * complement there, big-endian. A UDP result of 0 is sent as 0xffff (RFC 768).
 *
 * @returns false (changing nothing) when the offsets do not fit in the frame
 */
export function completeChecksum(
  frame: Uint8Array,
  csumStart: number,
  csumOffset: number,
): boolean {
  const at = csumStart + csumOffset;
  if (csumStart >= frame.length || at + 2 > frame.length) return false;
  let c = ~onesComplementSum(frame, csumStart, frame.length) & 0xffff;
  if (c === 0 && csumOffset === 6) c = 0xffff;
  frame[at] = c >>> 8;
  frame[at + 1] = c & 0xff;
  return true;
}

/** Where a frame's TCP or UDP header is, as found by {@link parseTransport}. */
export interface TransportInfo {
  /** 4 or 6. */
  readonly ipVersion: 4 | 6;
  /** Offset of the IP header. */
  readonly l3Offset: number;
  /** Offset of the TCP/UDP header (the csum_start). */
  readonly l4Offset: number;
  /** {@link IPPROTO_TCP} or {@link IPPROTO_UDP}. */
  readonly protocol: number;
  /** Offset of the checksum inside the TCP/UDP header (16 for TCP, 6 for UDP: the csum_offset). */
  readonly checksumOffset: number;
  /** Bytes from the TCP/UDP header to the end of the IP payload. */
  readonly l4Length: number;
}

/**
 * Finds the TCP or UDP header of an Ethernet frame carrying IPv4 (no fragments) or IPv6
 * (no extension headers), after at most two VLAN tags.
 *
 * @returns where it is, or null for anything else (or a truncated frame)
 */
export function parseTransport(frame: Uint8Array): TransportInfo | null {
  let off = 12;
  let type = frame.length >= 14 ? (frame[12]! << 8) | frame[13]! : -1;
  for (let tags = 0; tags < 2 && (type === ETHERTYPE_VLAN || type === ETHERTYPE_QINQ); tags++) {
    off += 4;
    if (off + 2 > frame.length) return null;
    type = (frame[off]! << 8) | frame[off + 1]!;
  }
  const l3 = off + 2;
  if (type === ETHERTYPE_IPV4) {
    if (l3 + 20 > frame.length || frame[l3]! >> 4 !== 4) return null;
    const ihl = (frame[l3]! & 0xf) * 4;
    const total = (frame[l3 + 2]! << 8) | frame[l3 + 3]!;
    const frag = ((frame[l3 + 6]! << 8) | frame[l3 + 7]!) & 0x3fff;
    if (ihl < 20 || frag !== 0 || total < ihl || l3 + total > frame.length) return null;
    return transport(4, l3, l3 + ihl, frame[l3 + 9]!, total - ihl);
  }
  if (type === ETHERTYPE_IPV6) {
    if (l3 + 40 > frame.length || frame[l3]! >> 4 !== 6) return null;
    const payload = (frame[l3 + 4]! << 8) | frame[l3 + 5]!;
    if (l3 + 40 + payload > frame.length) return null;
    return transport(6, l3, l3 + 40, frame[l3 + 6]!, payload);
  }
  return null;
}

function transport(
  ipVersion: 4 | 6,
  l3Offset: number,
  l4Offset: number,
  protocol: number,
  l4Length: number,
): TransportInfo | null {
  if (protocol === IPPROTO_TCP && l4Length >= 20)
    return { ipVersion, l3Offset, l4Offset, protocol, checksumOffset: 16, l4Length };
  if (protocol === IPPROTO_UDP && l4Length >= 8)
    return { ipVersion, l3Offset, l4Offset, protocol, checksumOffset: 6, l4Length };
  return null;
}

/** The pseudo-header sum (RFC 793 / RFC 768 / RFC 8200 §8.1), folded, not complemented. */
export function pseudoHeaderSum(frame: Uint8Array, info: TransportInfo): number {
  const l3 = info.l3Offset;
  const sum =
    info.ipVersion === 4
      ? onesComplementSum(frame, l3 + 12, l3 + 20)
      : onesComplementSum(frame, l3 + 8, l3 + 40);
  return onesComplementSum(EMPTY, 0, 0, sum + info.protocol + info.l4Length);
}

const EMPTY = new Uint8Array(0);

/**
 * Prepares a frame for checksum offload, as a guest's network stack does before handing
 * it to a NIC with VIRTIO_NET_F_CSUM: writes the pseudo-header sum into the TCP/UDP
 * checksum field.
 *
 * @returns the csum_start / csum_offset to put in the virtio-net header, or null when the
 *   frame is not TCP/UDP over IPv4/IPv6
 */
export function seedPseudoHeader(
  frame: Uint8Array,
): { csumStart: number; csumOffset: number } | null {
  const info = parseTransport(frame);
  if (info === null) return null;
  const at = info.l4Offset + info.checksumOffset;
  const s = pseudoHeaderSum(frame, info);
  frame[at] = s >>> 8;
  frame[at + 1] = s & 0xff;
  return { csumStart: info.l4Offset, csumOffset: info.checksumOffset };
}

/**
 * Computes the full TCP/UDP checksum of a frame in place (what a NIC without offload, or
 * a guest stack, does).
 *
 * @returns false when the frame is not TCP/UDP over IPv4/IPv6
 */
export function fillTransportChecksum(frame: Uint8Array): boolean {
  const info = parseTransport(frame);
  if (info === null) return false;
  seedPseudoHeader(frame);
  const end = info.l4Offset + info.l4Length;
  const at = info.l4Offset + info.checksumOffset;
  let c = ~onesComplementSum(frame, info.l4Offset, end) & 0xffff;
  if (c === 0 && info.protocol === IPPROTO_UDP) c = 0xffff;
  frame[at] = c >>> 8;
  frame[at + 1] = c & 0xff;
  return true;
}

/**
 * Verifies the TCP/UDP checksum of a frame (pseudo-header included).
 *
 * @returns true when it is correct, false when wrong, null when the frame is not TCP/UDP
 *   over IPv4/IPv6
 */
export function verifyTransportChecksum(frame: Uint8Array): boolean | null {
  const info = parseTransport(frame);
  if (info === null) return null;
  const l3 = info.l3Offset;
  const addrs =
    info.ipVersion === 4
      ? onesComplementSum(frame, l3 + 12, l3 + 20)
      : onesComplementSum(frame, l3 + 8, l3 + 40);
  const sum = onesComplementSum(
    frame,
    info.l4Offset,
    info.l4Offset + info.l4Length,
    addrs + info.protocol + info.l4Length,
  );
  return sum === 0xffff;
}
