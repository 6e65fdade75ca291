/**
 * The two CRC-32 flavours the RTL8139 needs: the Ethernet FCS the chip stores after each
 * received frame (IEEE 802.3 CRC-32, reflected, as zlib's `crc32`), and the
 * most-significant-bit-first CRC whose top 6 bits index the multicast hash filter
 * (Linux `ether_crc`, QEMU `net_crc32` / `compute_mcast_idx`).
 *
 * @module
 */

const TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb8_8320 ^ (c >>> 1) : c >>> 1;
  TABLE[n] = c >>> 0;
}

/**
 * The IEEE 802.3 frame check sequence (zlib `crc32`) of `bytes[start, end)`.
 *
 * @returns the CRC as an unsigned 32-bit number (stored little-endian after the frame)
 */
export function ethernetFcs(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let c = 0xffff_ffff;
  for (let i = start; i < end; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffff_ffff) >>> 0;
}

/**
 * Linux's `ether_crc(6, addr)`: CRC-32 (polynomial 0x04C11DB7), bits taken LSB-first from
 * each byte, register shifted MSB-first, initial all-ones, no final inversion.
 *
 * @param bytes - holds the address
 * @param offset - where the 6 address bytes start
 */
export function etherCrc(bytes: Uint8Array, offset = 0): number {
  let crc = 0xffff_ffff;
  for (let i = 0; i < 6; i++) {
    let b = bytes[offset + i] ?? 0;
    for (let bit = 0; bit < 8; bit++, b >>>= 1) {
      const top = (crc >>> 31) ^ (b & 1);
      crc = (crc << 1) >>> 0;
      if (top) crc = (crc ^ 0x04c1_1db7) >>> 0;
    }
  }
  return crc >>> 0;
}

/**
 * The multicast hash bit (0–63) of a group address: the top 6 bits of
 * {@link etherCrc} [8139too `__set_rx_mode`: `ether_crc(ETH_ALEN, addr) >> 26`].
 */
export function multicastHashBit(bytes: Uint8Array, offset = 0): number {
  return etherCrc(bytes, offset) >>> 26;
}
