/**
 * The packed ring's fast path for short direct buffers (`PackedDeviceQueue` walks buffers
 * of one or two direct descriptors in one-region memory without its general walker). It
 * only ever accepts: anything it does not take goes to the general walker, which accepts
 * it or reports the corruption. Raw, mostly hostile descriptor sequences (IDs out of range
 * or reused while in flight, readable after writable, NEXT lists longer than the ring,
 * INDIRECT, buffers outside guest memory or above 4 GiB, lengths near 2^32) must give the
 * same pops, errors, used descriptors and stats with the fast path on and off (§2.8.4,
 * §2.8.6, §2.8.13, §2.8.19).
 */
import { GuestMemory } from "@pvkit/platform";
import {
  PackedDeviceQueue,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  type VirtioError,
} from "@pvkit/virtio-core";
import {
  chainRanges,
  checkCanary,
  fillCanary,
  MockPackedQueue,
  type RawPackedDescriptor,
} from "@pvkit/virtio-core/testing";
import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";

const MEM = 0x10000;
const DATA = 0x8000;
const NEXT = VIRTQ_DESC_F_NEXT;
const WRITE = VIRTQ_DESC_F_WRITE;

/** The two private walkers, reached for spying. */
interface Walkers {
  walkShort(pos: number, flags: number, chain: unknown): number;
  walk(pos: number, flags: number, chain: unknown, memory: unknown): number;
}

interface Rig {
  mem: GuestMemory;
  mock: MockPackedQueue;
  q: PackedDeviceQueue;
  errors: VirtioError[];
}

/** A live packed queue of `size` in 64 KiB of flat memory; `general` switches the fast path off. */
function rig(size: number, options: { general?: boolean; indirect?: boolean } = {}): Rig {
  const mem = GuestMemory.create(MEM);
  const mock = new MockPackedQueue(mem, size);
  const errors: VirtioError[] = [];
  const q = new PackedDeviceQueue(0, size, (e) => errors.push(e));
  if (options.general) vi.spyOn(q as unknown as Walkers, "walkShort").mockReturnValue(0);
  const err = mock.configure(q, { indirect: options.indirect ?? false });
  if (err !== undefined) throw new Error(err.message);
  return { mem, mock, q, errors };
}

/**
 * Pops until nothing is available, returning the buffers in the order `order` picks
 * (out-of-order completion), and records everything the driver could observe.
 */
function drain(r: Rig, order: readonly number[]): unknown[] {
  const out: unknown[] = [];
  const ids: number[] = [];
  for (let i = 0; i <= r.q.size + 1; i++) {
    const c = r.q.popChain();
    if (c === null) {
      out.push(r.q.error === null ? "empty" : `error ${r.q.error.code}`);
      break;
    }
    out.push({
      ...chainRanges(c),
      descriptors: c.descriptorCount,
      indirect: c.indirect,
      readableLength: c.readableLength,
      writableLength: c.writableLength,
      next: r.q.nextAvailIndex,
    });
    ids.push(c.head);
  }
  const left = [...ids];
  for (const k of order) {
    if (left.length === 0) break;
    const [id] = left.splice(k % left.length, 1);
    out.push(r.q.addUsed(id!, 0x7fff_ffff));
  }
  for (const id of left) out.push(r.q.addUsed(id, 3));
  const used: unknown[] = [];
  for (let u = r.mock.readUsed(); u !== null && used.length <= r.q.size; u = r.mock.readUsed())
    used.push(u);
  out.push(used, r.q.nextUsedIndex, r.errors.length, { ...r.q.stats });
  return out;
}

const addrArb = fc.oneof(
  { weight: 12, arbitrary: fc.integer({ min: DATA, max: MEM - 1 }) },
  { weight: 1, arbitrary: fc.integer({ min: MEM - 64, max: MEM + 64 }) },
  { weight: 1, arbitrary: fc.constantFrom<bigint | number>(1n << 32n, (1n << 32n) + 0x9000n) },
);
const lenArb = fc.oneof(
  { weight: 10, arbitrary: fc.integer({ min: 0, max: 2048 }) },
  { weight: 1, arbitrary: fc.constantFrom(0xffff_ffff, 0x8000_0000, MEM - DATA) },
);

/** A case: queue size, indirect negotiated, the raw buffers the driver pushes, a completion order. */
const caseArb = fc.integer({ min: 1, max: 8 }).chain((size) =>
  fc.record({
    size: fc.constant(size),
    indirect: fc.boolean(),
    buffers: fc.array(
      fc.array(
        fc.record({
          addr: addrArb,
          len: lenArb,
          id: fc.oneof(
            { weight: 9, arbitrary: fc.integer({ min: 0, max: size - 1 }) },
            { weight: 1, arbitrary: fc.integer({ min: size, max: 0xffff }) },
          ),
          write: fc.boolean(),
          next: fc.oneof(
            { weight: 4, arbitrary: fc.constant(false) },
            { weight: 1, arbitrary: fc.constant(true) },
          ),
          indirect: fc.oneof(
            { weight: 12, arbitrary: fc.constant(false) },
            { weight: 1, arbitrary: fc.constant(true) },
          ),
        }),
        { minLength: 1, maxLength: 3 },
      ),
      { minLength: 0, maxLength: size + 1 },
    ),
    order: fc.array(fc.nat(), { maxLength: size + 2 }),
  }),
);

type CaseBuffer = {
  addr: bigint | number;
  len: number;
  id: number;
  write: boolean;
  next: boolean;
  indirect: boolean;
}[];

/** Pushes each buffer's descriptors (NEXT on all but the last unless `next` says so) with its lap's bits. */
function load(r: Rig, buffers: readonly CaseBuffer[]): void {
  for (const parts of buffers) {
    const descs: RawPackedDescriptor[] = [];
    let wrap = r.mock.availWrap;
    const start = r.mock.nextAvail;
    parts.forEach((p, i) => {
      if (i > 0 && (start + i) % r.mock.size === 0) wrap ^= 1;
      let flags = MockPackedQueue.availBits(wrap);
      if (p.write) flags |= WRITE;
      if (i + 1 < parts.length || p.next) flags |= NEXT;
      if (p.indirect) flags |= VIRTQ_DESC_F_INDIRECT;
      descs.push({ addr: p.addr, len: p.len, id: p.id, flags });
    });
    r.mock.pushRaw(descs);
  }
}

describe("packed short-buffer fast path", () => {
  it("pops one- and two-descriptor direct buffers without the general walker", () => {
    const r = rig(8);
    const walk = vi.spyOn(r.q as unknown as Walkers, "walk");
    const a = r.mock.addBuffer(
      [
        { addr: DATA, len: 12 },
        { addr: DATA + 0x100, len: 1500, writable: true },
      ],
      { id: 5 },
    );
    const b = r.mock.addBuffer([{ addr: DATA + 0x800, len: 4096 }], { id: 2 });
    const c1 = r.q.popChain()!;
    expect(chainRanges(c1)).toEqual({
      head: a,
      readable: [{ addr: DATA, len: 12 }],
      writable: [{ addr: DATA + 0x100, len: 1500 }],
    });
    expect([c1.descriptorCount, c1.readableLength, c1.writableLength]).toEqual([2, 12, 1500]);
    const c2 = r.q.popChain()!;
    expect(chainRanges(c2)).toEqual({
      head: b,
      readable: [{ addr: DATA + 0x800, len: 4096 }],
      writable: [],
    });
    expect(r.q.popChain()).toBeNull();
    expect(walk).not.toHaveBeenCalled();
    expect(r.q.addUsed(b, 0)).toBe(true);
    expect(r.q.addUsed(a, 99_999)).toBe(true);
    // Out of order; the used length is clamped to the buffer's writable bytes (§2.8.7).
    expect(r.mock.readUsed()).toMatchObject({ id: b, len: 0 });
    expect(r.mock.readUsed()).toMatchObject({ id: a, len: 1500 });
  });

  it("pops, errors, used descriptors and stats are the same with the fast path on and off", () => {
    let fastTaken = 0;
    let fastRefused = 0;
    fc.assert(
      fc.property(caseArb, ({ size, indirect, buffers, order }) => {
        const fast = rig(size, { indirect });
        const general = rig(size, { indirect, general: true });
        const short = vi.spyOn(fast.q as unknown as Walkers, "walkShort");
        load(fast, buffers);
        load(general, buffers);
        fillCanary(fast.mem, fast.mock.ringRanges());
        expect(drain(fast, order)).toEqual(drain(general, order));
        expect(checkCanary(fast.mem, fast.mock.ringRanges())).toEqual([]);
        fastTaken += short.mock.results.filter((x) => (x.value as number) > 0).length;
        fastRefused += short.mock.results.filter((x) => x.value === 0).length;
      }),
      { seed: 0x9ac4_ed01, numRuns: 1000 },
    );
    // The generator reaches both outcomes of the fast path many times (fixed seed).
    expect(fastTaken).toBeGreaterThan(150);
    expect(fastRefused).toBeGreaterThan(150);
  });
});
