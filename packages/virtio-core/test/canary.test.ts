/**
 * The canary helpers every hostile test rests on: `checkCanary` must report exactly the
 * bytes outside the kept ranges that changed, wherever they fall against word boundaries.
 */
import { GuestMemory } from "@pvkit/platform";
import * as fc from "fast-check";
import { describe, expect, it } from "vitest";
import { checkCanary, fillCanary, type MemoryRange } from "../src/testing/index.js";

const SIZE = 512;

describe("fillCanary / checkCanary", () => {
  it("report exactly the changed bytes outside the kept ranges, at any alignment", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ addr: fc.nat(SIZE - 1), len: fc.nat(64) }), { maxLength: 6 }),
        fc.uniqueArray(fc.nat(SIZE - 1), { maxLength: 12 }),
        fc.integer({ min: 1, max: 8 }),
        (keep: MemoryRange[], pokes, limit) => {
          // Kept ranges start anywhere, so unchecked stretches start and end off word bounds.
          const mem = new GuestMemory([{ base: 0, size: SIZE }]);
          fillCanary(mem, keep);
          for (const a of pokes) mem.writeU8(a, 0x5a);
          const kept = (a: number): boolean => keep.some((r) => a >= r.addr && a < r.addr + r.len);
          const expected = pokes
            .filter((a) => !kept(a))
            .sort((x, y) => x - y)
            .slice(0, limit);
          expect(checkCanary(mem, keep, 0xa5, limit)).toEqual(expected);
        },
      ),
      { seed: 77, numRuns: 500 },
    );
  });
});
