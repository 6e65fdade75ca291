/**
 * Big-endian (network byte order) field access for the packet code in this folder.
 *
 * @module
 * @internal
 */

/** The big-endian 32-bit unsigned value at `at`. */
export function u32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

/** Stores `v` as a big-endian 16-bit value at `at`. */
export function setU16(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 8) & 0xff;
  b[at + 1] = v & 0xff;
}

/** Stores `v` as a big-endian 32-bit value at `at`. */
export function setU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 24;
  b[at + 1] = (v >>> 16) & 0xff;
  b[at + 2] = (v >>> 8) & 0xff;
  b[at + 3] = v & 0xff;
}
