import { GuestMemory } from "@pvkit/platform";
import {
  DeviceQueue,
  DriverError,
  DriverQueue,
  type GuestBuffer,
  splitQueueLayout,
  type UsedBuffer,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VirtioErrorCode,
} from "@pvkit/virtio-core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

const RING_BASE = 0x1000;
const INDIRECT_BASE = 0x4_0000;
const DATA_BASE = 0x8_0000;
const MEM_SIZE = 1 << 21;

interface Pair {
  mem: GuestMemory;
  drv: DriverQueue<number>;
  dev: DeviceQueue;
  layout: ReturnType<typeof splitQueueLayout>;
  deviceErrors: number;
}

function makePair(
  shared: boolean,
  size: number,
  opts: { eventIdx?: boolean; indirect?: boolean; entries?: number; threshold?: number } = {},
): Pair {
  const mem = GuestMemory.create(MEM_SIZE, { shared });
  const layout = splitQueueLayout(RING_BASE, size);
  const indirect = opts.indirect ?? false;
  const drv = new DriverQueue<number>({
    memory: mem,
    index: 0,
    size,
    layout,
    eventIdx: opts.eventIdx ?? false,
    indirectDesc: indirect,
    indirect: { addr: INDIRECT_BASE, entries: opts.entries ?? 8 },
    ...(opts.threshold === undefined ? {} : { indirectThreshold: opts.threshold }),
  });
  const pair: Pair = { mem, drv, dev: new DeviceQueue(0, size), layout, deviceErrors: 0 };
  const dev = new DeviceQueue(0, size, () => pair.deviceErrors++);
  pair.dev = dev;
  dev.bind(mem);
  dev.size = size;
  dev.descAddr = layout.desc;
  dev.driverAddr = layout.driver;
  dev.deviceAddr = layout.device;
  expect(dev.enable()).toBeUndefined();
  dev.activate(opts.eventIdx ?? false, indirect);
  return pair;
}

/** Pattern byte for buffer `b` of token `t` at offset `i`. */
const pat = (t: number, b: number, i: number) => (t * 131 + b * 17 + i * 7 + 1) & 0xff;

/** Device side: echo readable bytes into writable buffers, return bytes written. */
function echo(dev: DeviceQueue): number {
  const chain = dev.popChain();
  if (chain === null) return -1;
  const tmp = new Uint8Array(chain.readableLength);
  chain.copyFromReadable(0, tmp);
  const n = chain.copyToWritable(0, tmp);
  dev.addUsed(chain.head, n);
  return chain.head;
}

const u16 = (mem: GuestMemory, addr: number) => mem.readU16(addr) as number;

/** Heads of every chain the device can pop now. */
function popAll(dev: DeviceQueue): number[] {
  const heads: number[] = [];
  for (let c = dev.popChain(); c !== null; c = dev.popChain()) heads.push(c.head);
  return heads;
}

/** Every completion the driver can take now. */
function usedAll<T>(drv: DriverQueue<T>): UsedBuffer<T>[] {
  const out: UsedBuffer<T>[] = [];
  for (let u = drv.getUsed(); u !== null; u = drv.getUsed()) out.push(u);
  return out;
}

describe.each([
  ["ArrayBuffer", false],
  ["SharedArrayBuffer", true],
])("DriverQueue ↔ DeviceQueue over %s memory", (_name, shared) => {
  it("carries chains of any shape, direct and indirect, with bytes and lengths intact", () => {
    const buf = fc.record({ len: fc.integer({ min: 0, max: 48 }) });
    const chainArb = fc
      .record({
        outs: fc.array(buf, { maxLength: 5 }),
        ins: fc.array(buf, { maxLength: 5 }),
      })
      .filter((c) => c.outs.length + c.ins.length > 0);
    fc.assert(
      fc.property(
        fc.array(chainArb, { minLength: 1, maxLength: 12 }),
        fc.boolean(),
        (chains, indirect) => {
          const p = makePair(shared, 16, { indirect, entries: 8 });
          let cursor = DATA_BASE;
          const placed: { outs: GuestBuffer[]; ins: GuestBuffer[] }[] = [];
          for (let t = 0; t < chains.length; t++) {
            const c = chains[t]!;
            const outs = c.outs.map((b, bi) => {
              const addr = cursor;
              cursor += 64;
              for (let i = 0; i < b.len; i++) p.mem.writeU8(addr + i, pat(t, bi, i));
              return { addr, len: b.len };
            });
            const ins = c.ins.map((b) => {
              const addr = cursor;
              cursor += 64;
              p.mem.fill(addr, 64, 0xee);
              return { addr, len: b.len };
            });
            placed.push({ outs, ins });
            const total = outs.length + ins.length;
            const freeBefore = p.drv.numFree;
            const head = p.drv.add(outs, ins, t);
            const goesIndirect = indirect && total > 1 && total <= 8;
            if ((goesIndirect ? 1 : total) > freeBefore) {
              expect(head).toBeInstanceOf(DriverError);
              expect((head as DriverError).code).toBe(VirtioErrorCode.NO_SPACE);
              placed[t] = { outs: [], ins: [] };
              continue;
            }
            expect(typeof head).toBe("number");
            expect(p.drv.numFree).toBe(freeBefore - (goesIndirect ? 1 : total));
            // The device sees exactly this chain.
            const chain = p.dev.popChain();
            expect(chain).not.toBeNull();
            expect(chain!.head).toBe(head);
            expect(chain!.indirect).toBe(goesIndirect);
            const rl = outs.reduce((s, b) => s + b.len, 0);
            const wl = ins.reduce((s, b) => s + b.len, 0);
            expect(chain!.readableLength).toBe(rl);
            expect(chain!.writableLength).toBe(wl);
            const got = new Uint8Array(rl);
            chain!.copyFromReadable(0, got);
            const want = outs.flatMap((b, bi) =>
              Array.from({ length: b.len }, (_, i) => pat(t, bi, i)),
            );
            expect(Array.from(got)).toEqual(want);
            // Device writes a marker into every writable byte.
            const fill = new Uint8Array(wl).map((_, i) => (t + i) & 0xff);
            expect(chain!.copyToWritable(0, fill)).toBe(wl);
            p.dev.addUsed(chain!.head, wl);
          }
          p.dev.publishUsed();
          for (;;) {
            const u = p.drv.getUsed();
            if (u === null) break;
            const { ins } = placed[u.token]!;
            expect(u.len).toBe(ins.reduce((s, b) => s + b.len, 0));
            let k = 0;
            for (const b of ins) {
              for (let i = 0; i < b.len; i++)
                expect(p.mem.readU8(b.addr + i)).toBe((u.token + k++) & 0xff);
              expect(p.mem.readU8(b.addr + b.len)).toBe(0xee); // nothing past the buffer
            }
          }
          expect(p.drv.broken).toBe(false);
          expect(p.drv.inFlight).toBe(0);
          expect(p.drv.numFree).toBe(16);
          expect(p.deviceErrors).toBe(0);
        },
      ),
      { seed: 0x5eed, numRuns: 60 },
    );
  });

  it("frees chains completed out of order and reuses every descriptor", () => {
    const p = makePair(shared, 8);
    for (let t = 0; t < 4; t++) {
      const r = p.drv.add(
        [{ addr: DATA_BASE + t * 64, len: 8 }],
        [{ addr: DATA_BASE + 0x1000 + t * 64, len: 8 }],
        t,
      );
      expect(typeof r).toBe("number");
    }
    expect(p.drv.numFree).toBe(0);
    const heads: number[] = [];
    for (const c of popAll(p.dev)) heads.push(c);
    expect(heads).toHaveLength(4);
    const order = [2, 0, 3, 1];
    for (const i of order) p.dev.addUsed(heads[i]!, i);
    p.dev.publishUsed();
    const tokens: number[] = [];
    for (const u of usedAll(p.drv)) {
      tokens.push(u.token);
      expect(u.len).toBe(u.token);
    }
    expect(tokens).toEqual(order);
    expect(p.drv.numFree).toBe(8);
    // All 8 descriptors are usable again: 8 single-buffer chains fit, a ninth does not.
    for (let t = 0; t < 8; t++)
      expect(typeof p.drv.add([{ addr: DATA_BASE, len: 1 }], [], 100 + t)).toBe("number");
    const full = p.drv.add([{ addr: DATA_BASE, len: 1 }], [], 999);
    expect(full).toBeInstanceOf(DriverError);
    expect((full as DriverError).code).toBe(VirtioErrorCode.NO_SPACE);
    const seen = new Set<number>();
    for (const c of popAll(p.dev)) seen.add(c);
    expect(seen.size).toBe(8);
  });

  it("reports a full ring and bad requests as values, and uses indirect tables when short", () => {
    const p = makePair(shared, 4, { indirect: true, entries: 4, threshold: 3 });
    const b = (i: number) => ({ addr: DATA_BASE + i * 16, len: 16 });
    // Two buffers with threshold 3 and room for them: direct.
    expect(typeof p.drv.add([b(0)], [b(1)], 0)).toBe("number");
    expect(p.drv.numFree).toBe(2);
    // Three buffers, only two free descriptors: indirect (one descriptor).
    expect(typeof p.drv.add([b(2), b(3)], [b(4)], 1)).toBe("number");
    expect(p.drv.numFree).toBe(1);
    expect(p.drv.stats.indirect).toBe(1);
    // Five buffers: more than a table holds and than the ring holds.
    const long = p.drv.add([b(0), b(1), b(2)], [b(3), b(4)], 2);
    expect((long as DriverError).code).toBe(VirtioErrorCode.CHAIN_TOO_LONG);
    expect((p.drv.add([], [], 3) as DriverError).code).toBe(VirtioErrorCode.EMPTY_CHAIN);
    expect((p.drv.add([{ addr: MEM_SIZE - 4, len: 8 }], [], 4) as DriverError).code).toBe(
      VirtioErrorCode.BAD_BUFFER,
    );
    expect((p.drv.add([{ addr: 1.5, len: 8 }], [], 5) as DriverError).code).toBe(
      VirtioErrorCode.BAD_BUFFER,
    );
    expect((p.drv.add([{ addr: 0, len: 2 ** 32 }], [], 6) as DriverError).code).toBe(
      VirtioErrorCode.BAD_BUFFER,
    );
    expect(typeof p.drv.add([b(5)], [], 7)).toBe("number");
    const full = p.drv.add([b(6)], [], 8);
    expect((full as DriverError).code).toBe(VirtioErrorCode.NO_SPACE);
    expect(p.drv.stats.full).toBe(1);
    expect(p.drv.stats.added).toBe(3);
    expect(p.drv.inFlight).toBe(3);
    // The failed adds published nothing.
    expect(u16(p.mem, p.layout.driver + 2)).toBe(3);
    let popped = 0;
    while (p.dev.popChain() !== null) popped++;
    expect(popped).toBe(3);
    expect(p.deviceErrors).toBe(0);
  });

  it("suppresses kicks with VIRTQ_USED_F_NO_NOTIFY (no EVENT_IDX)", () => {
    const p = makePair(shared, 16);
    const add = (t: number) => p.drv.add([{ addr: DATA_BASE, len: 4 }], [], t);
    add(0);
    expect(p.drv.kickPrepare()).toBe(true);
    expect(p.drv.kickPrepare()).toBe(false); // nothing new
    p.dev.disableNotification();
    for (let t = 1; t <= 5; t++) {
      add(t);
      expect(p.drv.kickPrepare()).toBe(false);
    }
    expect(p.dev.enableNotification()).toBe(true); // buffers pending: keep going
    add(6);
    expect(p.drv.kickPrepare()).toBe(true);
    expect(p.drv.stats.kicks).toBe(2);
    expect(p.drv.stats.kicksSuppressed).toBe(5);
  });

  it("suppresses kicks with EVENT_IDX: one kick per batch the device has not seen", () => {
    const p = makePair(shared, 16, { eventIdx: true });
    const add = (t: number) => p.drv.add([{ addr: DATA_BASE, len: 4 }], [], t);
    add(0);
    expect(p.drv.kickPrepare()).toBe(true); // avail_event 0 crossed
    p.dev.disableNotification();
    expect(p.dev.popChain()).not.toBeNull(); // device busy: avail_event not moved
    add(1);
    add(2);
    expect(p.drv.kickPrepare()).toBe(false); // the device will look again before sleeping
    expect(p.dev.enableNotification()).toBe(true);
    while (p.dev.popChain() !== null);
    expect(p.dev.enableNotification()).toBe(false); // avail_event = 3
    expect(u16(p.mem, p.layout.device + 4 + 8 * 16)).toBe(3);
    add(3);
    add(4);
    expect(p.drv.kickPrepare()).toBe(true);
    expect(p.drv.stats.kicks).toBe(2);
    expect(p.drv.stats.kicksSuppressed).toBe(1);
    // With EVENT_IDX the driver leaves avail.flags at 0 even with callbacks off (§2.7.10).
    p.drv.disableCallbacks();
    expect(u16(p.mem, p.layout.driver)).toBe(0);
  });

  it("suppresses interrupts with VIRTQ_AVAIL_F_NO_INTERRUPT (no EVENT_IDX)", () => {
    const p = makePair(shared, 16);
    let interrupts = 0;
    const serve = () => {
      echo(p.dev);
      if (p.dev.needsNotification()) interrupts++;
    };
    for (let t = 0; t < 3; t++)
      p.drv.add([{ addr: DATA_BASE, len: 4 }], [{ addr: DATA_BASE + 64, len: 4 }], t);
    serve();
    expect(interrupts).toBe(1);
    p.drv.disableCallbacks();
    expect(u16(p.mem, p.layout.driver) & VIRTQ_AVAIL_F_NO_INTERRUPT).toBe(1);
    serve();
    expect(interrupts).toBe(1);
    expect(p.drv.enableCallbacks()).toBe(false); // two completions already pending
    expect(p.drv.getUsed()?.token).toBe(0);
    expect(p.drv.getUsed()?.token).toBe(1);
    expect(p.drv.enableCallbacks()).toBe(true);
    serve();
    expect(interrupts).toBe(2);
    expect(p.dev.stats.notificationsSuppressed).toBe(1);
  });

  it("suppresses interrupts with EVENT_IDX, and delays them by 3/4 of the outstanding buffers", () => {
    const p = makePair(shared, 16, { eventIdx: true });
    let interrupts = 0;
    const completeOne = () => {
      expect(echo(p.dev)).toBeGreaterThanOrEqual(0);
      if (p.dev.needsNotification()) interrupts++;
    };
    for (let t = 0; t < 12; t++)
      expect(p.drv.add([], [{ addr: DATA_BASE + 64, len: 4 }], t)).toBe(t);
    completeOne(); // used_event 0 → interrupt
    expect(interrupts).toBe(1);
    completeOne(); // the driver has not consumed anything: used_event still 0 → no interrupt
    expect(interrupts).toBe(1);
    p.drv.getUsed();
    p.drv.getUsed(); // used_event follows: 2
    expect(u16(p.mem, p.layout.driver + 4 + 2 * 16)).toBe(2);
    completeOne();
    expect(interrupts).toBe(2);
    p.drv.getUsed();
    p.drv.disableCallbacks();
    completeOne(); // used_event stays 3 → crossing 3 interrupts once
    completeOne();
    expect(interrupts).toBe(3);
    p.drv.getUsed();
    p.drv.getUsed();
    expect(u16(p.mem, p.layout.driver + 4 + 2 * 16)).toBe(3); // not updated while disabled
    // 7 outstanding (12 added, 5 used): the delayed callback fires after 3/4 of them.
    expect(p.drv.inFlight).toBe(7);
    expect(p.drv.enableCallbacksDelayed()).toBe(true);
    const before = interrupts;
    const firedAt: number[] = [];
    for (let k = 1; k <= 7; k++) {
      completeOne();
      if (interrupts > before + firedAt.length) firedAt.push(k);
    }
    expect(firedAt).toEqual([Math.floor((7 * 3) / 4) + 1]);
    expect(p.drv.enableCallbacksDelayed()).toBe(false); // all 7 already pending
  });

  it("keeps indices right across the 16-bit wrap, with one kick and one interrupt per batch", () => {
    const size = 16;
    const p = makePair(shared, size, { eventIdx: true, indirect: true, entries: 4 });
    let next = 0;
    let interrupts = 0;
    const rounds = 14_000; // 14000 × 5 = 70000 buffers: indices wrap once
    const outs = Array.from({ length: 5 }, (_, k) => [{ addr: DATA_BASE + k * 64, len: 4 }]);
    const ins = Array.from({ length: 5 }, (_, k) => {
      const a = DATA_BASE + 0x1000 + k * 64;
      return k % 2 === 0
        ? [{ addr: a, len: 4 }]
        : [
            { addr: a, len: 2 },
            { addr: a + 2, len: 2 },
          ];
    });
    let badAdds = 0;
    let badCompletions = 0;
    let wrongBatch = 0;
    let notIdle = 0;
    let noKick = 0;
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < 5; k++) {
        const t = next++;
        p.mem.writeU32(DATA_BASE + k * 64, t);
        if (typeof p.drv.add(outs[k]!, ins[k]!, t) !== "number") badAdds++;
      }
      if (!p.drv.kickPrepare()) noKick++;
      // The device's standard drain loop.
      do {
        p.dev.disableNotification();
        while (echo(p.dev) >= 0);
      } while (p.dev.enableNotification());
      if (p.dev.needsNotification()) interrupts++;
      let got = 0;
      for (let u = p.drv.getUsed(); u !== null; u = p.drv.getUsed(), got++) {
        if (u.len !== 4 || p.mem.readU32(DATA_BASE + 0x1000 + (u.token % 5) * 64) !== u.token)
          badCompletions++;
      }
      if (got !== 5) wrongBatch++;
      if (!p.drv.enableCallbacks()) notIdle++;
    }
    expect({ badAdds, badCompletions, wrongBatch, notIdle, noKick }).toEqual({
      badAdds: 0,
      badCompletions: 0,
      wrongBatch: 0,
      notIdle: 0,
      noKick: 0,
    });
    expect(p.drv.stats.kicks).toBe(rounds);
    expect(p.drv.stats.kicksSuppressed).toBe(0);
    expect(interrupts).toBe(rounds);
    expect(p.drv.stats.used).toBe(70_000);
    expect(p.drv.availIndex).toBe(70_000 & 0xffff);
    expect(p.drv.lastUsedIndex).toBe(70_000 & 0xffff);
    expect(u16(p.mem, p.layout.device + 2)).toBe(70_000 & 0xffff);
    expect(p.drv.numFree).toBe(size);
    expect(p.deviceErrors).toBe(0);
  });

  it("detachUnused returns never-used tokens and resets the ring for a fresh start", () => {
    const p = makePair(shared, 8, { eventIdx: true });
    for (let t = 0; t < 5; t++) p.drv.add([], [{ addr: DATA_BASE + t * 16, len: 16 }], 10 + t);
    const c0 = p.dev.popChain()!;
    p.dev.popChain();
    p.dev.addUsed(c0.head, 3);
    p.dev.publishUsed();
    expect(p.drv.getUsed()).toEqual({ token: 10, len: 3 });
    p.dev.reset(); // the device was reset
    expect(p.drv.detachUnused()).toEqual([11, 12, 13, 14]);
    expect(p.drv.inFlight).toBe(0);
    expect(p.drv.numFree).toBe(8);
    expect(p.drv.availIndex).toBe(0);
    expect(u16(p.mem, p.layout.driver + 2)).toBe(0);
    expect(u16(p.mem, p.layout.device + 2)).toBe(0);
    expect(p.drv.detachUnused()).toEqual([]);
    // Set the device up again: it works from index 0.
    p.dev.bind(p.mem);
    p.dev.size = 8;
    p.dev.descAddr = p.layout.desc;
    p.dev.driverAddr = p.layout.driver;
    p.dev.deviceAddr = p.layout.device;
    p.dev.enable();
    p.dev.activate(true, false);
    p.drv.add([{ addr: DATA_BASE, len: 1 }], [{ addr: DATA_BASE + 64, len: 1 }], 99);
    expect(echo(p.dev)).toBeGreaterThanOrEqual(0);
    p.dev.publishUsed();
    expect(p.drv.getUsed()).toEqual({ token: 99, len: 1 });
  });

  it("marks the queue broken (never throws) when the device returns a bad used element", () => {
    const cases: Array<[string, (p: Pair, head: number) => void, VirtioErrorCode]> = [
      ["id out of range", (p) => writeUsed(p, 0, 16, 0, 1), VirtioErrorCode.USED_ID_OUT_OF_RANGE],
      [
        "id not a head",
        (p, head) => writeUsed(p, 0, (head + 1) % 8, 0, 1),
        VirtioErrorCode.USED_ID_NOT_HEAD,
      ],
      ["len too big", (p, head) => writeUsed(p, 0, head, 65, 1), VirtioErrorCode.USED_LEN_TOO_BIG],
      ["used.idx jump", (p, head) => writeUsed(p, 0, head, 0, 5), VirtioErrorCode.USED_IDX_JUMP],
    ];
    for (const [name, corrupt, code] of cases) {
      const p = makePair(shared, 8);
      const head = p.drv.add(
        [{ addr: DATA_BASE, len: 8 }],
        [{ addr: DATA_BASE + 64, len: 64 }],
        1,
      ) as number;
      corrupt(p, head);
      expect(p.drv.hasUsed(), name).toBe(true);
      expect(p.drv.getUsed(), name).toBeNull();
      expect(p.drv.broken, name).toBe(true);
      expect(p.drv.error?.code, name).toBe(code);
      expect(p.drv.hasUsed()).toBe(false);
      expect(p.drv.inFlight).toBe(1); // the chain is not freed on a bad element
      const again = p.drv.add([{ addr: DATA_BASE, len: 8 }], [], 2);
      expect((again as DriverError).code).toBe(VirtioErrorCode.QUEUE_BROKEN);
      // A reset clears it.
      expect(p.drv.detachUnused()).toEqual([1]);
      expect(p.drv.broken).toBe(false);
    }
  });

  it("survives arbitrary hostile used rings: valid completions or broken, nothing else", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ id: fc.nat(40), len: fc.nat(200) }), { minLength: 1, maxLength: 10 }),
        fc.nat(0xffff),
        (elems, idx) => {
          const p = makePair(shared, 16);
          const writable = new Map<number, number>();
          for (let t = 0; t < 8; t++) {
            const h = p.drv.add(
              [],
              [{ addr: DATA_BASE + t * 128, len: 16 * (t + 1) }],
              t,
            ) as number;
            writable.set(h, 16 * (t + 1));
          }
          elems.forEach((e, i) => {
            writeUsed(p, i, e.id, e.len, undefined);
          });
          p.mem.writeU16(p.layout.device + 2, idx);
          const returned = new Set<number>();
          let n = 0;
          for (const u of usedAll(p.drv)) {
            n++;
            expect(returned.has(u.token)).toBe(false);
            returned.add(u.token);
            expect(u.len).toBeLessThanOrEqual(16 * (u.token + 1));
          }
          expect(n).toBeLessThanOrEqual(Math.min(idx, 8));
          if (n < Math.min(idx, elems.length)) expect(p.drv.broken).toBe(true);
          expect(p.drv.inFlight + n).toBe(8);
          expect(p.drv.numFree).toBe(8 + n);
        },
      ),
      { seed: 1234, numRuns: 300 },
    );
  });
});

/** Writes used element `slot` (and, when `idx` is given, used.idx) as a buggy device would. */
function writeUsed(p: Pair, slot: number, id: number, len: number, idx: number | undefined): void {
  const off = p.layout.device + 4 + 8 * slot;
  p.mem.writeU32(off, id);
  p.mem.writeU32(off + 4, len);
  if (idx !== undefined) p.mem.writeU16(p.layout.device + 2, idx);
}

describe("DriverQueue construction", () => {
  it("refuses invalid sizes and rings outside memory", () => {
    const mem = GuestMemory.create(0x10000);
    const layout = splitQueueLayout(0, 16);
    expect(() => new DriverQueue({ memory: mem, index: 0, size: 12, layout })).toThrow(RangeError);
    expect(
      () =>
        new DriverQueue({ memory: mem, index: 0, size: 16, layout: splitQueueLayout(0xff00, 16) }),
    ).toThrow(RangeError);
    expect(
      () =>
        new DriverQueue({
          memory: mem,
          index: 0,
          size: 16,
          layout: { ...layout, device: layout.device + 2 },
        }),
    ).toThrow(RangeError);
    const q = new DriverQueue({ memory: mem, index: 0, size: 16, layout });
    expect(q.numFree).toBe(16);
    expect(q.indirectDesc).toBe(false);
  });

  it("lays rings out with the §2.7 alignments", () => {
    fc.assert(
      fc.property(fc.nat(1 << 20), fc.nat(15), fc.boolean(), (base, log, page) => {
        const size = 1 << log;
        const l = splitQueueLayout(base, size, { pageAligned: page });
        expect(l.desc % 16).toBe(0);
        expect(l.desc).toBeGreaterThanOrEqual(base);
        expect(l.desc - base).toBeLessThan(16);
        expect(l.driver % 2).toBe(0);
        expect(l.driver).toBeGreaterThanOrEqual(l.desc + 16 * size);
        expect(l.device % (page ? 4096 : 4)).toBe(0);
        expect(l.device).toBeGreaterThanOrEqual(l.driver + 6 + 2 * size);
        expect(l.device - (l.driver + 6 + 2 * size)).toBeLessThan(page ? 4096 : 4);
        expect(l.end).toBe(l.device + 6 + 8 * size);
      }),
      { seed: 7, numRuns: 200 },
    );
    expect(() => splitQueueLayout(0, 3)).toThrow(RangeError);
    expect(() => splitQueueLayout(0, 65536)).toThrow(RangeError);
  });
});
