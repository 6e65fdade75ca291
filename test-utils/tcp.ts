/**
 * TCP segments for GSO tests, built field by field from their description (independently
 * of pvkit's segmentation code): one large segment as a guest hands it to a NIC with
 * TSO, and the MTU-sized frames a correct segmentation must produce from it.
 */
/** Checksum metadata as pvkit's `NetFrameMeta` carries it (structurally the same type). */
export interface GsoFrameMeta {
  flags: number;
  csumStart: number;
  csumOffset: number;
  gsoType?: number;
  gsoSize?: number;
}

/** RFC 1071 ones'-complement sum of `b[start, end)` plus `seed`, folded to 16 bits. */
function onesComplementSum(b: Uint8Array, start: number, end: number, seed = 0): number {
  let sum = seed;
  for (let i = start; i + 1 < end; i += 2) sum += (b[i]! << 8) | b[i + 1]!;
  if ((end - start) & 1) sum += b[end - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** What a TCP segment is built from; the test builds frames from these, independently of gso.ts. */
export interface TcpSeg {
  v6: boolean;
  vlan: boolean;
  ipId: number;
  seq: number;
  flags: number;
  tcpOptions: number; // bytes of TCP options (multiple of 4)
  payload: Uint8Array;
}

const SRC4 = [10, 0, 0, 1];
const DST4 = [10, 0, 0, 2];
const SRC6 = Array.from({ length: 16 }, (_, i) => 0x20 + i);
const DST6 = Array.from({ length: 16 }, (_, i) => 0x40 + i);

/**
 * A frame carrying `s`, with the full TCP checksum (`full`) or the pseudo-header sum for the
 * whole segment in the checksum field (what a guest hands a NIC with NEEDS_CSUM).
 */
export function buildTcpFrame(s: TcpSeg, full: boolean): { frame: Uint8Array; l4: number } {
  const l3 = s.vlan ? 18 : 14;
  const ipLen = s.v6 ? 40 : 20;
  const l4 = l3 + ipLen;
  const thl = 20 + s.tcpOptions;
  const f = new Uint8Array(l4 + thl + s.payload.length);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], 0);
  if (s.vlan) f.set([0x81, 0x00, 0x00, 0x05], 12);
  f.set(s.v6 ? [0x86, 0xdd] : [0x08, 0x00], l3 - 2);
  const l4Len = thl + s.payload.length;
  if (s.v6) {
    f[l3] = 0x60;
    f[l3 + 4] = l4Len >> 8;
    f[l3 + 5] = l4Len & 0xff;
    f[l3 + 6] = 6;
    f[l3 + 7] = 64;
    f.set(SRC6, l3 + 8);
    f.set(DST6, l3 + 24);
  } else {
    f[l3] = 0x45;
    const total = 20 + l4Len;
    f[l3 + 2] = total >> 8;
    f[l3 + 3] = total & 0xff;
    f[l3 + 4] = s.ipId >> 8;
    f[l3 + 5] = s.ipId & 0xff;
    f[l3 + 6] = 0x40; // DF
    f[l3 + 8] = 64;
    f[l3 + 9] = 6;
    f.set(SRC4, l3 + 12);
    f.set(DST4, l3 + 16);
    const c = ~onesComplementSum(f, l3, l3 + 20) & 0xffff;
    f[l3 + 10] = c >> 8;
    f[l3 + 11] = c & 0xff;
  }
  f.set([0x30, 0x39, 0x00, 0x09], l4);
  f[l4 + 4] = s.seq >>> 24;
  f[l4 + 5] = (s.seq >>> 16) & 0xff;
  f[l4 + 6] = (s.seq >>> 8) & 0xff;
  f[l4 + 7] = s.seq & 0xff;
  f[l4 + 12] = (thl / 4) << 4;
  f[l4 + 13] = s.flags;
  f[l4 + 14] = 0xff;
  f[l4 + 15] = 0xff;
  for (let i = 0; i < s.tcpOptions; i++) f[l4 + 20 + i] = 1; // NOPs
  f.set(s.payload, l4 + thl);
  // Pseudo-header: addresses, protocol, TCP length.
  const addrs = s.v6
    ? onesComplementSum(f, l3 + 8, l3 + 40)
    : onesComplementSum(f, l3 + 12, l3 + 20);
  const pseudo = onesComplementSum(new Uint8Array(0), 0, 0, addrs + 6 + l4Len);
  const c = full ? ~onesComplementSum(f, l4, f.length, pseudo) & 0xffff : pseudo;
  f[l4 + 16] = c >> 8;
  f[l4 + 17] = c & 0xff;
  return { frame: f, l4 };
}

export function gsoMeta(s: TcpSeg, l4: number, mss: number, ecn = false): GsoFrameMeta {
  return {
    flags: 1, // NEEDS_CSUM
    csumStart: l4,
    csumOffset: 16,
    gsoType: (s.v6 ? 4 : 1) | (ecn ? 0x80 : 0), // virtio GSO TCPV6 / TCPV4, ECN
    gsoSize: mss,
  };
}

/** The frames a correct segmentation gives, each built from scratch. */
export function expectedSegments(s: TcpSeg, mss: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const n = Math.ceil(s.payload.length / mss);
  for (let i = 0; i < n; i++) {
    const last = i === n - 1;
    let flags = s.flags;
    if (!last) flags &= ~(0x01 | 0x08);
    if (i > 0) flags &= ~0x80;
    out.push(
      buildTcpFrame(
        {
          ...s,
          ipId: (s.ipId + i) & 0xffff,
          seq: (s.seq + i * mss) >>> 0,
          flags,
          payload: s.payload.subarray(i * mss, (i + 1) * mss),
        },
        true,
      ).frame,
    );
  }
  return out;
}
