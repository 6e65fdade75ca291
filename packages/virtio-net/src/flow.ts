/**
 * The flow hash the device uses to steer received frames over its queue pairs (§5.1.6.5.5
 * "automatic receive steering") and the driver uses to pick a transmit queue: frames of
 * one flow (same addresses, protocol and ports) always hash alike, so they stay in order
 * on one queue.
 *
 * @module
 */

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;

function mix(h: number, byte: number): number {
  return Math.imul(h ^ byte, 0x0100_0193); // FNV-1a step
}

function mixRange(h: number, f: Uint8Array, start: number, end: number): number {
  for (let i = start; i < end; i++) h = mix(h, f[i]!);
  return h;
}

/**
 * A 32-bit hash of a frame's flow: IPv4/IPv6 addresses and protocol plus TCP/UDP ports
 * when present, otherwise the MAC addresses and EtherType.
 */
export function flowHash(frame: Uint8Array): number {
  let h = 0x811c_9dc5;
  const n = frame.length;
  if (n < 14) return mixRange(h, frame, 0, n) >>> 0;
  let off = 12;
  let type = (frame[12]! << 8) | frame[13]!;
  if ((type === 0x8100 || type === 0x88a8) && n >= 18) {
    off = 16;
    type = (frame[16]! << 8) | frame[17]!;
  }
  const l3 = off + 2;
  if (type === ETHERTYPE_IPV4 && n >= l3 + 20) {
    const proto = frame[l3 + 9]!;
    h = mixRange(mix(h, proto), frame, l3 + 12, l3 + 20);
    const ihl = (frame[l3]! & 0xf) * 4;
    const frag = ((frame[l3 + 6]! << 8) | frame[l3 + 7]!) & 0x3fff;
    if ((proto === 6 || proto === 17) && frag === 0 && n >= l3 + ihl + 4)
      h = mixRange(h, frame, l3 + ihl, l3 + ihl + 4);
    return h >>> 0;
  }
  if (type === ETHERTYPE_IPV6 && n >= l3 + 40) {
    const proto = frame[l3 + 6]!;
    h = mixRange(mix(h, proto), frame, l3 + 8, l3 + 40);
    if ((proto === 6 || proto === 17) && n >= l3 + 44) h = mixRange(h, frame, l3 + 40, l3 + 44);
    return h >>> 0;
  }
  return mixRange(h, frame, 0, 14) >>> 0;
}
