/**
 * Seeded property tests of the packed ring (§2.8): random buffers (NEXT lists across the
 * ring's end, zero-length descriptors, indirect tables, occasionally a readable-after-
 * writable violation) and random out-of-order completion. An independent reference walker
 * reads the raw ring bytes; the device must agree with it on every buffer (ID, slots,
 * ranges) or error, and the used descriptors the driver reads must match. A second
 * property runs `PackedDriverQueue` against `PackedDeviceQueue`.
 */
import { GuestMemory } from "@pvkit/platform";
import {
  PackedDeviceQueue,
  PackedDriverQueue,
  packedQueueLayout,
  VirtioErrorCode,
} from "@pvkit/virtio-core";
import { chainRanges, type MemoryRange, MockPackedQueue } from "@pvkit/virtio-core/testing";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

const MEM = 0x40000;
const DATA = 0x10000;
const TABLES = 0x8000;

interface RefBuffer {
  id: number;
  slots: number;
  readable: MemoryRange[];
  writable: MemoryRange[];
}

/** Reads the buffer at `pos` straight from guest bytes (§2.8.6, §2.8.19), no device code. */
function refWalk(mem: GuestMemory, ring: number, size: number, pos: number): RefBuffer | string {
  const r16 = (a: number) => mem.readU16(a) as number;
  const r32 = (a: number) => mem.readU32(a) as number;
  const out: RefBuffer = { id: 0, slots: 0, readable: [], writable: [] };
  let writing = false;
  const add = (addr: number, len: number, w: boolean): string | undefined => {
    if (!w && writing) return VirtioErrorCode.READABLE_AFTER_WRITABLE;
    writing ||= w;
    if (len > 0) (w ? out.writable : out.readable).push({ addr, len });
    return undefined;
  };
  for (let p = pos; ; p = (p + 1) % size) {
    const a = ring + 16 * p;
    const flags = r16(a + 14);
    out.slots++;
    if (flags & 4) {
      const t = r32(a);
      if (r32(a + 8) / 16 > size) return VirtioErrorCode.INDIRECT_TOO_LONG;
      for (let i = 0; i < r32(a + 8) / 16; i++) {
        const e = add(r32(t + 16 * i), r32(t + 16 * i + 8), (r16(t + 16 * i + 14) & 2) !== 0);
        if (e) return e;
      }
      out.id = r16(a + 12);
      return out;
    }
    const e = add(r32(a), r32(a + 8), (flags & 2) !== 0);
    if (e) return e;
    if (!(flags & 1)) {
      out.id = r16(a + 12);
      return out;
    }
  }
}

const bufferArb = fc.record({
  parts: fc.array(fc.record({ len: fc.integer({ min: 0, max: 300 }), w: fc.boolean() }), {
    minLength: 1,
    maxLength: 4,
  }),
  indirect: fc.boolean(),
  misordered: fc.integer({ min: 0, max: 19 }), // 0: keep a readable after a writable
});

describe("packed ring properties (seeded)", () => {
  it("the device agrees with a reference walker; out-of-order used descriptors match", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 9 }),
        fc.array(fc.tuple(bufferArb, fc.nat()), { minLength: 1, maxLength: 40 }),
        (size, script) => {
          const mem = GuestMemory.create(MEM);
          const mock = new MockPackedQueue(mem, size);
          const q = new PackedDeviceQueue(0, size);
          expect(mock.configure(q, { indirect: true, eventIdx: true })).toBeUndefined();
          const held: { id: number; writable: number; slots: number }[] = [];
          let heldSlots = 0;
          let data = DATA;
          for (const [b, pick] of script) {
            const parts = b.misordered === 0 ? b.parts : [...b.parts].sort((x, y) => +x.w - +y.w);
            const slots = b.indirect ? 1 : parts.length;
            if (slots > size - heldSlots) {
              // Ring full: complete one held buffer, out of order, first.
              if (held.length === 0) continue;
              const [h] = held.splice(pick % held.length, 1);
              expect(q.addUsed(h!.id, h!.writable)).toBe(true);
              heldSlots -= h!.slots;
              const u = mock.readUsed();
              expect(u?.id).toBe(h!.id);
              expect(u?.len).toBe(h!.writable);
              if (slots > size - heldSlots) continue;
            }
            const bufs = parts.map((p) => {
              const r = { addr: data, len: p.len, writable: p.w };
              data = data + p.len < MEM - 0x1000 ? data + p.len : DATA;
              return r;
            });
            const pos = mock.nextAvail;
            const id = mock.addBuffer(bufs, {
              ...(b.indirect ? { indirectTable: TABLES + 0x100 * (pos % 64) } : {}),
            });
            const ref = refWalk(mem, mock.descAddr, size, pos);
            const chain = q.popChain();
            if (typeof ref === "string") {
              expect(chain).toBeNull();
              expect(q.error?.code).toBe(ref);
              return;
            }
            expect(chain).not.toBeNull();
            const got = chainRanges(chain!);
            expect(got.head).toBe(ref.id);
            expect(id).toBe(ref.id);
            expect(got.readable).toEqual(ref.readable);
            expect(got.writable).toEqual(ref.writable);
            expect(chain!.indirect).toBe(b.indirect);
            expect(q.popChain()).toBeNull();
            const wlen = ref.writable.reduce((s, r) => s + r.len, 0);
            held.push({ id, writable: wlen, slots: ref.slots });
            heldSlots += ref.slots;
          }
          // Drain the rest in reverse order.
          for (const h of held.reverse()) {
            expect(q.addUsed(h.id, h.writable + 7)).toBe(true); // clamped to the writable total
            const u = mock.readUsed();
            expect(u).toEqual({ id: h.id, len: h.writable, flags: expect.any(Number) });
          }
          expect(q.inFlight).toBe(0);
          expect(q.error).toBeNull();
        },
      ),
      { seed: 0x9ac4ed, numRuns: 300 },
    );
  });

  it("PackedDriverQueue and PackedDeviceQueue: every token back once, lengths exact, events honoured", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 12 }),
        fc.boolean(),
        fc.boolean(),
        fc.array(fc.tuple(fc.integer({ min: 1, max: 5 }), fc.nat(), fc.boolean()), {
          minLength: 1,
          maxLength: 80,
        }),
        (size, eventIdx, indirect, steps) => {
          const mem = GuestMemory.create(MEM);
          const layout = packedQueueLayout(0x1000, size);
          const dq = new PackedDriverQueue<number>({
            memory: mem,
            index: 0,
            size,
            layout,
            eventIdx,
            indirectDesc: indirect,
            indirect: { addr: 0x4000, entries: 8 },
          });
          const q = new PackedDeviceQueue(0, size);
          q.bind(mem);
          q.size = size;
          q.descAddr = layout.desc;
          q.driverAddr = layout.driver;
          q.deviceAddr = layout.device;
          expect(q.enable()).toBeUndefined();
          q.activate(eventIdx, indirect);
          const outstanding = new Map<number, number>(); // token → writable bytes
          const popped: { head: number; token: number }[] = [];
          const byHead = new Map<number, number>();
          let token = 0;
          let returned = 0;
          for (const [n, pick, complete] of steps) {
            if (!complete) {
              const bufs = Array.from({ length: n }, (_, i) => ({
                addr: DATA + 0x1000 * i,
                len: 64,
              }));
              const r = dq.add(bufs.slice(0, 1), bufs.slice(1), token);
              if (typeof r === "number") {
                outstanding.set(token, 64 * (n - 1));
                byHead.set(r, token);
                token++;
              } else expect(r.code).toMatch(/NO_SPACE|CHAIN_TOO_LONG/);
              dq.kick();
              for (let c = q.popChain(); c !== null; c = q.popChain())
                popped.push({ head: c.head, token: byHead.get(c.head)! });
            } else if (popped.length > 0) {
              const [p] = popped.splice(pick % popped.length, 1);
              expect(q.addUsed(p!.head, 1000)).toBe(true);
              q.needsNotification();
              dq.drainUsed((t, len) => {
                expect(outstanding.has(t)).toBe(true);
                expect(len).toBe(Math.min(1000, outstanding.get(t)!));
                outstanding.delete(t);
                returned++;
              });
            }
          }
          expect(dq.broken).toBe(false);
          expect(q.error).toBeNull();
          expect(returned + outstanding.size).toBe(token);
          expect(dq.inFlight).toBe(outstanding.size);
        },
      ),
      { seed: 0x5eed5, numRuns: 300 },
    );
  });
});
