import { GuestAllocator } from "@pvkit/virtio-core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

type Op =
  | { kind: "alloc"; size: number; alignLog: number }
  | { kind: "free"; pick: number }
  | { kind: "wild"; addr: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("alloc" as const),
      size: fc.integer({ min: 1, max: 96 }),
      alignLog: fc.nat(6),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("free" as const), pick: fc.nat(1000) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("wild" as const),
      addr: fc.integer({ min: -8, max: 1200 }),
    }),
  },
);

describe("GuestAllocator", () => {
  it("never overlaps, stays in range, honours alignment, is first-fit, and coalesces", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 200 }),
        fc.integer({ min: 1, max: 600 }),
        fc.array(opArb, { maxLength: 120 }),
        (base, size, ops) => {
          const heap = new GuestAllocator(base, size);
          const used = new Uint8Array(size); // brute-force model of what is allocated
          const live = new Map<number, number>();
          const fits = (a: number, n: number) => {
            if (a < base || a + n > base + size) return false;
            for (let i = a - base; i < a - base + n; i++) if (used[i]) return false;
            return true;
          };
          for (const op of ops) {
            if (op.kind === "alloc") {
              const align = 1 << op.alignLog;
              const a = heap.alloc(op.size, align);
              // First fit: the lowest aligned address whose range is free.
              let expected = -1;
              for (
                let c = Math.ceil(base / align) * align;
                c + op.size <= base + size;
                c += align
              ) {
                if (fits(c, op.size)) {
                  expected = c;
                  break;
                }
              }
              expect(a).toBe(expected);
              if (a >= 0) {
                expect(a % align).toBe(0);
                used.fill(1, a - base, a - base + op.size);
                live.set(a, op.size);
              }
            } else if (op.kind === "free") {
              const keys = [...live.keys()];
              if (keys.length === 0) continue;
              const a = keys[op.pick % keys.length]!;
              expect(heap.sizeOf(a)).toBe(live.get(a));
              expect(heap.free(a)).toBe(true);
              expect(heap.free(a)).toBe(false); // double free is refused, changes nothing
              used.fill(0, a - base, a - base + live.get(a)!);
              live.delete(a);
            } else {
              expect(heap.free(op.addr)).toBe(live.has(op.addr));
              if (live.has(op.addr)) {
                used.fill(0, op.addr - base, op.addr - base + live.get(op.addr)!);
                live.delete(op.addr);
              }
            }
            // The free list is exactly the complement of the model, sorted and coalesced.
            const extents = heap.freeList();
            const expectedExtents: Array<[number, number]> = [];
            for (let i = 0; i < size; i++) {
              if (used[i]) continue;
              const last = expectedExtents[expectedExtents.length - 1];
              if (last && last[1] === base + i) last[1]++;
              else expectedExtents.push([base + i, base + i + 1]);
            }
            expect(extents).toEqual(expectedExtents);
            const stats = heap.stats();
            const allocated = [...live.values()].reduce((s, n) => s + n, 0);
            expect(stats.allocatedBytes).toBe(allocated);
            expect(stats.freeBytes).toBe(size - allocated);
            expect(stats.allocations).toBe(live.size);
          }
          for (const a of [...live.keys()]) expect(heap.free(a)).toBe(true);
          expect(heap.freeList()).toEqual([[base, base + size]]);
        },
      ),
      { seed: 0xa110c, numRuns: 300 },
    );
  });

  it("refuses invalid requests with -1 instead of throwing", () => {
    const heap = new GuestAllocator(0x1000, 0x1000);
    expect(heap.alloc(0)).toBe(-1);
    expect(heap.alloc(-5)).toBe(-1);
    expect(heap.alloc(1.5)).toBe(-1);
    expect(heap.alloc(16, 3)).toBe(-1);
    expect(heap.alloc(16, 0)).toBe(-1);
    expect(heap.alloc(0x1001)).toBe(-1);
    expect(heap.alloc(0x1000, 0x1000)).toBe(0x1000);
    expect(heap.alloc(1, 1)).toBe(-1);
    expect(heap.stats().largestFree).toBe(0);
    expect(() => new GuestAllocator(-1, 10)).toThrow(RangeError);
    expect(() => new GuestAllocator(2 ** 53 - 4, 8)).toThrow(RangeError);
  });

  it("serves page-aligned rings out of a fragmented heap", () => {
    const heap = new GuestAllocator(0x10, 0x4000);
    const small = heap.alloc(100, 8);
    expect(small).toBe(0x10);
    const ring = heap.alloc(0x1800, 0x1000);
    expect(ring).toBe(0x1000);
    // The gap before the ring is still usable.
    expect(heap.alloc(0x800, 16)).toBe(0x80);
    heap.free(small);
    heap.free(ring);
    expect(heap.stats().freeExtents).toBe(2);
  });
});
