/**
 * The one place that decides how ring indices are read and written (DESIGN.md, "Hot
 * paths"). In shared memory, `avail.idx`, `used.idx`, `used_event`, `avail_event` and the
 * ring flags go through `Atomics.load`/`Atomics.store`, which in the JavaScript memory
 * model order every plain payload write before them against every plain read after the
 * matching load on the other thread — the barrier §2.7.13 asks for between filling a
 * buffer and publishing its index. Payloads (descriptors, ring entries, buffers) are plain
 * copies.
 *
 * Fields are little-endian (§2.4); on a big-endian host the values are byte-swapped.
 *
 * @module
 */

import { HOST_LITTLE_ENDIAN } from "@pvkit/platform";

function swap16(v: number): number {
  return ((v & 0xff) << 8) | (v >>> 8);
}

/**
 * Reads a little-endian u16 ring field.
 *
 * @param words - a `Uint16Array` over the ring (2-byte aligned)
 * @param index - u16 index inside `words`
 * @param shared - whether another thread may write it concurrently
 */
export function loadIndex(words: Uint16Array, index: number, shared: boolean): number {
  const v = shared ? Atomics.load(words, index) : words[index]!;
  return HOST_LITTLE_ENDIAN ? v : swap16(v);
}

/**
 * Writes a little-endian u16 ring field (publishing everything written before it when
 * `shared`).
 *
 * @param words - a `Uint16Array` over the ring (2-byte aligned)
 * @param index - u16 index inside `words`
 * @param value - the value (masked to 16 bits)
 * @param shared - whether another thread reads it concurrently
 */
export function storeIndex(
  words: Uint16Array,
  index: number,
  value: number,
  shared: boolean,
): void {
  const v = HOST_LITTLE_ENDIAN ? value & 0xffff : swap16(value & 0xffff);
  if (shared) Atomics.store(words, index, v);
  else words[index] = v;
}

/**
 * A `Uint16Array` over `length` bytes at `byteOffset` of `bytes`' buffer, for
 * {@link loadIndex}/{@link storeIndex}.
 *
 * @returns the view, or `null` when the offset is not 2-byte aligned in the buffer
 */
export function wordsOver(
  bytes: Uint8Array,
  byteOffset: number,
  length: number,
): Uint16Array | null {
  const abs = bytes.byteOffset + byteOffset;
  if (abs % 2 !== 0) return null;
  return new Uint16Array(bytes.buffer, abs, length >>> 1);
}
