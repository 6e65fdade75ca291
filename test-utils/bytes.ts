import { expect } from "vitest";

/**
 * Asserts two byte arrays are equal, quickly: vitest's deep equality walks every index
 * as a property, which takes minutes on a disk image. On a mismatch, reports the lengths,
 * the first differing offset and 16 bytes from there.
 */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const b = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.equals(b)) return;
  let at = 0;
  while (at < Math.min(a.length, b.length) && a[at] === b[at]) at++;
  expect({ length: a.length, at, bytes: [...a.subarray(at, at + 16)] }).toEqual({
    length: b.length,
    at,
    bytes: [...b.subarray(at, at + 16)],
  });
}
