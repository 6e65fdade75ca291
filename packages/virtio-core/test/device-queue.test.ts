import { GuestMemory } from "@pvkit/platform";
import {
  DeviceQueue,
  isValidQueueSize,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  type VirtioError,
  vringNeedEvent,
} from "@pvkit/virtio-core";
import { type ChainBuffer, chainRanges, MockSplitQueue } from "@pvkit/virtio-core/testing";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

const DATA = 0x8000;
const TABLES = 0x6000;

interface Setup {
  mem: GuestMemory;
  mock: MockSplitQueue;
  q: DeviceQueue;
  errors: VirtioError[];
}

function setup(
  opts: {
    size?: number;
    eventIdx?: boolean;
    indirect?: boolean;
    shared?: boolean;
    mem?: GuestMemory;
  } = {},
): Setup {
  const size = opts.size ?? 8;
  const mem = opts.mem ?? GuestMemory.create(0x10000, { shared: opts.shared ?? false });
  const mock = new MockSplitQueue(mem, size);
  const errors: VirtioError[] = [];
  const q = new DeviceQueue(0, size, (e) => errors.push(e));
  const err = mock.configure(q, {
    eventIdx: opts.eventIdx ?? false,
    indirect: opts.indirect ?? false,
  });
  expect(err).toBeUndefined();
  expect(q.isActive).toBe(true);
  return { mem, mock, q, errors };
}

function pop(q: DeviceQueue) {
  const c = q.popChain();
  expect(c).not.toBeNull();
  expect(q.error).toBeNull();
  return c!;
}

describe("DeviceQueue: well-formed chains", () => {
  it("pops a single readable descriptor whose view aliases guest memory", () => {
    const { mem, mock, q } = setup();
    mem.fill(DATA, 64, 0x11);
    const head = mock.addChain([{ addr: DATA, len: 64 }]);
    expect(q.hasAvailable()).toBe(true);
    const c = pop(q);
    expect(c.head).toBe(head);
    expect([c.readableCount, c.writableCount, c.readableLength, c.writableLength]).toEqual([
      1, 0, 64, 0,
    ]);
    expect(c.descriptorCount).toBe(1);
    expect(c.indirect).toBe(false);
    const v = c.readable(0);
    expect(v.length).toBe(64);
    expect(v.buffer).toBe(mem.regions[0]!.bytes.buffer);
    expect(v.byteOffset).toBe(DATA);
    mem.writeU8(DATA + 3, 0x99); // the guest changes it: the view sees it
    expect(v[3]).toBe(0x99);
    expect(() => c.readable(1)).toThrow(RangeError);
    expect(() => c.writable(0)).toThrow(RangeError);
    expect(q.popChain()).toBeNull();
    expect(q.hasAvailable()).toBe(false);
    expect(q.inFlight).toBe(1);
    expect(q.stats.popped).toBe(1);
  });

  it("pops multi-descriptor chains: readable first, then writable, in chain order", () => {
    const { mem, mock, q } = setup();
    const bufs: ChainBuffer[] = [
      { addr: DATA, len: 16 },
      { addr: DATA + 0x100, len: 8 },
      { addr: DATA + 0x200, len: 32, writable: true },
      { addr: DATA + 0x300, len: 4, writable: true },
    ];
    const head = mock.addChain(bufs, { descriptors: [5, 2, 7, 0] });
    expect(head).toBe(5);
    const c = pop(q);
    expect(chainRanges(c)).toEqual({
      head: 5,
      readable: [
        { addr: DATA, len: 16 },
        { addr: DATA + 0x100, len: 8 },
      ],
      writable: [
        { addr: DATA + 0x200, len: 32 },
        { addr: DATA + 0x300, len: 4 },
      ],
    });
    expect(c.descriptorCount).toBe(4);
    expect(c.bufferCount).toBe(4);
    // Writable views alias guest memory.
    c.writable(1).set([1, 2, 3, 4]);
    expect(mem.readU32(DATA + 0x300)).toBe(0x04030201);
    expect(c.writable(0).byteOffset).toBe(DATA + 0x200);
  });

  it("pops indirect chains (§2.7.5.3) and chained descriptors ending in an indirect one", () => {
    const { mock, q } = setup({ indirect: true });
    const head = mock.addChain(
      [
        { addr: DATA, len: 16 },
        { addr: DATA + 0x40, len: 512, writable: true },
        { addr: DATA + 0x400, len: 1, writable: true },
      ],
      { indirectTable: TABLES },
    );
    const c = pop(q);
    expect(c.head).toBe(head);
    expect(c.indirect).toBe(true);
    expect(c.descriptorCount).toBe(4);
    expect(chainRanges(c).writable).toEqual([
      { addr: DATA + 0x40, len: 512 },
      { addr: DATA + 0x400, len: 1 },
    ]);
    // A direct readable descriptor, then one whose INDIRECT table holds the rest. WRITE on
    // the indirect descriptor itself is ignored (§2.7.5.3.2).
    mock.writeDescriptor(3, { addr: DATA + 0x800, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 6 });
    mock.writeDescriptor(6, {
      addr: TABLES + 0x100,
      len: 32,
      flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE,
    });
    mock.writeIndirectTable(TABLES + 0x100, [
      { addr: DATA + 0x900, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 1 },
      { addr: DATA + 0xa00, len: 64, flags: VIRTQ_DESC_F_WRITE },
    ]);
    mock.pushAvail(3);
    const d = pop(q);
    expect(chainRanges(d)).toEqual({
      head: 3,
      readable: [
        { addr: DATA + 0x800, len: 8 },
        { addr: DATA + 0x900, len: 4 },
      ],
      writable: [{ addr: DATA + 0xa00, len: 64 }],
    });
    expect(d.descriptorCount).toBe(4);
  });

  it("follows an indirect table's own next links, in any order", () => {
    const { mock, q } = setup({ indirect: true });
    mock.writeIndirectTable(TABLES, [
      { addr: DATA, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 2 },
      { addr: DATA + 0x20, len: 3, flags: VIRTQ_DESC_F_WRITE },
      { addr: DATA + 0x10, len: 2, flags: VIRTQ_DESC_F_NEXT, next: 1 },
      { addr: 0xdead_0000, len: 99, flags: 0 }, // not on the path: never looked at
    ]);
    mock.writeDescriptor(0, { addr: TABLES, len: 64, flags: VIRTQ_DESC_F_INDIRECT });
    mock.pushAvail(0);
    const c = pop(q);
    expect(chainRanges(c)).toEqual({
      head: 0,
      readable: [
        { addr: DATA, len: 1 },
        { addr: DATA + 0x10, len: 2 },
      ],
      writable: [{ addr: DATA + 0x20, len: 3 }],
    });
  });

  it("skips zero-length descriptors (they count as descriptors, not buffers)", () => {
    const { mock, q } = setup();
    mock.addChain([
      { addr: DATA, len: 0 },
      { addr: DATA + 0x10, len: 16 },
      { addr: DATA + 0x20, len: 0, writable: true },
      { addr: DATA + 0x30, len: 8, writable: true },
      { addr: DATA + 0x40, len: 0, writable: true },
    ]);
    const c = pop(q);
    expect(c.descriptorCount).toBe(5);
    expect(chainRanges(c)).toEqual({
      head: c.head,
      readable: [{ addr: DATA + 0x10, len: 16 }],
      writable: [{ addr: DATA + 0x30, len: 8 }],
    });
  });

  it("accepts a chain of exactly the queue size", () => {
    const { mock, q } = setup({ size: 4 });
    mock.addChain([0, 1, 2, 3].map((i) => ({ addr: DATA + i * 0x10, len: 4, writable: i >= 2 })));
    const c = pop(q);
    expect(c.descriptorCount).toBe(4);
    expect(c.readableCount).toBe(2);
    expect(c.writableCount).toBe(2);
  });

  it("reader crosses descriptor boundaries, straddling u16/u32/u64", () => {
    const { mem, mock, q } = setup();
    // Readable data 00 01 02 … 0f split as 1 | 2 | 3 | 4 | 6 bytes over five buffers.
    const sizes = [1, 2, 3, 4, 6];
    let at = 0;
    const bufs: ChainBuffer[] = sizes.map((n, i) => {
      const addr = DATA + i * 0x100;
      for (let k = 0; k < n; k++) mem.writeU8(addr + k, at + k);
      at += n;
      return { addr, len: n };
    });
    mock.addChain([...bufs, { addr: DATA + 0x1000, len: 4, writable: true }]);
    const c = pop(q);
    const r = c.reader;
    expect(r.remaining).toBe(16);
    expect(r.readU16()).toBe(0x0100); // bytes 0 | 1 — crosses buffer 0 → 1
    expect(r.readU32()).toBe(0x05040302); // bytes 2 | 3 4 | 5 — crosses two boundaries
    expect(r.readU8()).toBe(6);
    expect(r.readU64()).toBe(0x0e0d0c0b0a090807n);
    expect(r.position).toBe(15);
    expect(r.readU16()).toBe(-1); // one byte left: refuse, do not move
    expect(r.position).toBe(15);
    expect(r.readU8()).toBe(0x0f);
    expect(r.readU8()).toBe(-1);
    expect(r.readU32()).toBe(-1);
    expect(r.readU64()).toBe(-1n);
    r.rewind();
    expect(r.skip(17)).toBe(false);
    expect(r.skip(9)).toBe(true);
    const dst = new Uint8Array(10).fill(0xee);
    expect(r.read(dst, 1)).toBe(7);
    expect([...dst]).toEqual([0xee, 9, 10, 11, 12, 13, 14, 15, 0xee, 0xee]);
    const all = new Uint8Array(16);
    expect(c.copyFromReadable(0, all)).toBe(16);
    expect([...all]).toEqual([...Array(16).keys()]);
    const mid = new Uint8Array(5);
    expect(c.copyFromReadable(2, mid)).toBe(5);
    expect([...mid]).toEqual([2, 3, 4, 5, 6]);
    expect(c.copyFromReadable(20, mid)).toBe(0);
  });

  it("writer crosses descriptor boundaries and reports bytes written", () => {
    const { mem, mock, q } = setup();
    const sizes = [1, 2, 3, 1, 40];
    mock.addChain([
      { addr: DATA, len: 8 },
      ...sizes.map((n, i) => ({ addr: DATA + 0x100 * (i + 1), len: n, writable: true })),
    ]);
    const c = pop(q);
    const w = c.writer;
    expect(w.remaining).toBe(47);
    expect(w.writeU16(0xbbaa)).toBe(true); // 1 | 1 byte
    expect(w.writeU32(0x44332211)).toBe(true); // 1 | 3 bytes
    expect(w.writeU8(0x55)).toBe(true); // buffer 3
    expect(mem.readU8(DATA + 0x100)).toBe(0xaa);
    expect(mem.readU16(DATA + 0x200)).toBe(0x11bb);
    expect([...(mem.slice(DATA + 0x300, 3) as Uint8Array)]).toEqual([0x22, 0x33, 0x44]);
    expect(mem.readU8(DATA + 0x400)).toBe(0x55);
    expect(w.bytesWritten).toBe(7);
    const big = Uint8Array.from({ length: 50 }, (_, i) => i + 100);
    expect(w.write(big)).toBe(40); // only 40 bytes left
    expect(mem.readU8(DATA + 0x500)).toBe(100);
    expect(mem.readU8(DATA + 0x500 + 39)).toBe(139);
    expect(w.remaining).toBe(0);
    expect(w.writeU8(1)).toBe(false);
    expect(w.bytesWritten).toBe(47);
    // The readable buffer was never written.
    expect(mem.readU32(DATA)).toBe(0);
    w.rewind();
    expect(w.skip(46)).toBe(true);
    expect(w.writeU16(0xffff)).toBe(false); // one byte left: writes nothing
    expect(mem.readU8(DATA + 0x500 + 39)).toBe(139);
    expect(c.copyToWritable(1, Uint8Array.of(7, 8, 9))).toBe(3);
    // position 1 skips buffer 0 (1 byte): 7 8 land in buffer 1, 9 in buffer 2.
    expect(mem.readU16(DATA + 0x200)).toBe(0x0807);
    expect(mem.readU8(DATA + 0x300)).toBe(9);
    expect(mem.readU8(DATA + 0x100)).toBe(0xaa);
  });
});

describe("DeviceQueue: completion", () => {
  it("completes in order; used.idx moves only when published (once per batch)", () => {
    const { mock, q } = setup();
    const heads = [0, 1, 2].map((i) =>
      mock.addChain([{ addr: DATA + i * 0x100, len: 32, writable: true }]),
    );
    const chains = heads.map(() => pop(q));
    expect(chains.map((c) => c.head)).toEqual(heads);
    for (const c of chains) expect(q.addUsed(c.head, 10 + c.head)).toBe(true);
    expect(mock.usedIdx()).toBe(0); // nothing visible yet
    expect(mock.usedElem(0)).toEqual({ id: heads[0], len: 10 + heads[0]! });
    q.publishUsed();
    expect(mock.usedIdx()).toBe(3);
    expect(mock.readUsed()).toEqual(heads.map((h) => ({ id: h, len: 10 + h })));
    expect(q.inFlight).toBe(0);
    expect(q.stats.used).toBe(3);
    q.publishUsed(); // nothing new: no change
    expect(mock.usedIdx()).toBe(3);
  });

  it("needsNotification publishes too", () => {
    const { mock, q } = setup();
    mock.addChain([{ addr: DATA, len: 4 }]);
    q.addUsed(pop(q).head, 0);
    expect(mock.usedIdx()).toBe(0);
    expect(q.needsNotification()).toBe(true);
    expect(mock.usedIdx()).toBe(1);
    expect(q.needsNotification()).toBe(false); // nothing new since the last answer
  });

  it("completes out of order and reuses freed descriptors", () => {
    const { mock, q } = setup({ size: 4 });
    const heads = [0, 1, 2, 3].map((i) =>
      mock.addChain([{ addr: DATA + i * 0x100, len: 8, writable: true }]),
    );
    const chains = heads.map(() => pop(q));
    for (const k of [2, 0, 3, 1]) expect(q.addUsed(chains[k]!.head, k)).toBe(true);
    q.publishUsed();
    expect(mock.readUsed()).toEqual([2, 0, 3, 1].map((k) => ({ id: heads[k], len: k })));
    // All four descriptors are free again; a 4-descriptor chain fits and pops.
    expect(mock.freeDescriptors).toBe(4);
    mock.addChain([0, 1, 2, 3].map((i) => ({ addr: DATA + i * 0x10, len: 1 })));
    expect(pop(q).descriptorCount).toBe(4);
  });

  it("clamps the used length to the chain's writable bytes", () => {
    const { mock, q } = setup();
    mock.addChain([
      { addr: DATA, len: 100 },
      { addr: DATA + 0x100, len: 12, writable: true },
    ]);
    mock.addChain([{ addr: DATA, len: 100 }]);
    mock.addChain([{ addr: DATA + 0x200, len: 8, writable: true }]);
    const [a, b, c] = [pop(q), pop(q), pop(q)];
    q.addUsed(a.head, 1e9);
    q.addUsed(b.head, 5); // read-only chain: the device wrote nothing
    q.addUsed(c.head, -3);
    q.publishUsed();
    expect(mock.readUsed().map((e) => e.len)).toEqual([12, 0, 0]);
  });

  it("refuses addUsed for a head that is not in flight, writing nothing", () => {
    const { mock, q } = setup();
    mock.addChain([{ addr: DATA, len: 4 }]);
    const c = pop(q);
    expect(q.addUsed(c.head + 1, 0)).toBe(false); // never popped
    expect(q.addUsed(8, 0)).toBe(false); // ≥ size
    expect(q.addUsed(-1, 0)).toBe(false);
    expect(q.addUsed(0.5, 0)).toBe(false);
    expect(q.addUsed(c.head, 4)).toBe(true);
    expect(q.addUsed(c.head, 4)).toBe(false); // twice
    q.publishUsed();
    expect(mock.usedIdx()).toBe(1);
    expect(mock.usedElem(1)).toEqual({ id: 0, len: 0 });
    expect(q.stats.used).toBe(1);
  });

  it("wraps the 16-bit avail and used indices", () => {
    const { mock, q } = setup({ size: 4 });
    const rounds = 0x10000 + 5;
    for (let i = 0; i < rounds; i++) {
      mock.addChain([{ addr: DATA + (i % 4) * 8, len: 8, writable: true }]);
      const c = q.popChain();
      if (c === null) throw new Error(`pop ${i} failed: ${q.error}`);
      q.addUsed(c.head, i & 7);
      q.publishUsed();
      const used = mock.readUsed();
      if (used.length !== 1 || used[0]!.len !== (i & 7))
        throw new Error(`round ${i}: ${JSON.stringify(used)}`);
    }
    expect(q.nextAvailIndex).toBe(rounds & 0xffff);
    expect(q.nextUsedIndex).toBe(rounds & 0xffff);
    expect(mock.usedIdx()).toBe(5);
    expect(q.error).toBeNull();
  });
});

describe("DeviceQueue: notification suppression (§2.7.10)", () => {
  it("vringNeedEvent equals 'event ∈ [old, new)' modulo 2^16", () => {
    const u16 = fc.integer({ min: 0, max: 0xffff });
    fc.assert(
      fc.property(u16, u16, fc.integer({ min: 0, max: 0x8000 }), (event, old, step) => {
        const now = (old + step) & 0xffff;
        let inWindow = false;
        for (let k = 0; k < step; k++) if (((old + k) & 0xffff) === event) inWindow = true;
        return vringNeedEvent(event, now, old) === inWindow;
      }),
      { seed: 0x1d_e7e7, numRuns: 500 },
    );
    expect(vringNeedEvent(0xffff, 0, 0xfffe)).toBe(true);
    expect(vringNeedEvent(0, 0, 0xfffe)).toBe(false);
    expect(vringNeedEvent(0xfffe, 1, 0xfffe)).toBe(true);
  });

  it("EVENT_IDX: interrupts only when used.idx crosses used_event", () => {
    const { mock, q } = setup({ eventIdx: true });
    const complete = (n: number): boolean => {
      for (let i = 0; i < n; i++) mock.addChain([{ addr: DATA, len: 4 }]);
      for (let i = 0; i < n; i++) q.addUsed(pop(q).head, 0);
      const need = q.needsNotification();
      mock.readUsed(); // the driver reclaims its descriptors
      return need;
    };
    mock.setUsedEvent(2); // interrupt me when used.idx passes 2
    expect(complete(1)).toBe(false); // 0 → 1
    expect(complete(1)).toBe(false); // 1 → 2
    expect(complete(1)).toBe(true); // 2 → 3 crosses 2
    expect(complete(3)).toBe(false); // 3 → 6: event 2 is behind
    mock.setUsedEvent(7);
    expect(complete(3)).toBe(true); // 6 → 9 crosses 7 in one batch
    expect(q.stats.notificationsNeeded).toBe(2);
    expect(q.stats.notificationsSuppressed).toBe(3);
    // The low bit of avail.flags is ignored with EVENT_IDX.
    mock.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    mock.setUsedEvent(9);
    expect(complete(1)).toBe(true);
  });

  it("EVENT_IDX: used_event across the 16-bit wrap", () => {
    const { mock, q } = setup({ size: 4, eventIdx: true });
    mock.setUsedEvent(0x8000); // far away: no interrupts while we spin up to 0xfffe
    for (let i = 0; i < 0xfffe; i++) {
      mock.addChain([{ addr: DATA, len: 4 }]);
      q.addUsed(q.popChain()!.head, 0);
      q.publishUsed();
      mock.readUsed();
    }
    expect(q.needsNotification()).toBe(true); // it did cross 0x8000 on the way
    expect(mock.usedIdx()).toBe(0xfffe);
    const step = (event: number): boolean => {
      mock.setUsedEvent(event);
      mock.addChain([{ addr: DATA, len: 4 }]);
      mock.addChain([{ addr: DATA, len: 4 }]);
      q.addUsed(pop(q).head, 0);
      q.addUsed(pop(q).head, 0);
      const need = q.needsNotification();
      mock.readUsed();
      return need;
    };
    expect(step(0xffff)).toBe(true); // 0xfffe → 0x0000 crosses 0xffff
    expect(mock.usedIdx()).toBe(0);
    expect(step(0xffff)).toBe(false); // 0 → 2: 0xffff is behind
    expect(step(2)).toBe(true); // 2 → 4 crosses 2
    expect(step(0)).toBe(false); // 4 → 6
  });

  it("EVENT_IDX: publishes avail_event = next avail index, frozen while disabled", () => {
    const { mock, q } = setup({ eventIdx: true });
    for (let i = 0; i < 3; i++) mock.addChain([{ addr: DATA, len: 4 }]);
    pop(q);
    expect(mock.availEvent()).toBe(1);
    pop(q);
    expect(mock.availEvent()).toBe(2);
    q.disableNotification();
    expect(mock.usedFlags()).toBe(0); // no NO_NOTIFY with EVENT_IDX
    pop(q);
    expect(mock.availEvent()).toBe(2);
    expect(q.enableNotification()).toBe(false);
    expect(mock.availEvent()).toBe(3);
    mock.addChain([{ addr: DATA, len: 4 }]);
    pop(q);
    expect(mock.availEvent()).toBe(4);
  });

  it("no EVENT_IDX: NO_INTERRUPT suppresses, NO_NOTIFY is set while disabled", () => {
    const { mock, q } = setup();
    mock.addChain([{ addr: DATA, len: 4 }]);
    q.disableNotification();
    expect(mock.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(VIRTQ_USED_F_NO_NOTIFY);
    q.addUsed(pop(q).head, 0);
    // The driver adds a buffer while notifications are off: enableNotification reports it.
    mock.addChain([{ addr: DATA, len: 4 }]);
    expect(q.enableNotification()).toBe(true);
    expect(mock.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(0);
    mock.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    expect(q.needsNotification()).toBe(false);
    expect(mock.usedIdx()).toBe(1); // published nonetheless
    q.addUsed(pop(q).head, 0);
    mock.setAvailFlags(0);
    expect(q.needsNotification()).toBe(true);
    expect(q.enableNotification()).toBe(false);
    // avail_event is not written without EVENT_IDX.
    expect(mock.availEvent()).toBe(0);
  });
});

describe("DeviceQueue: lifecycle", () => {
  it("serves nothing before activate and after reset; works again after reconfiguring", () => {
    const mem = GuestMemory.create(0x10000);
    const mock = new MockSplitQueue(mem, 8);
    const q = new DeviceQueue(3, 16);
    q.bind(mem);
    mock.applyLayout(q);
    expect(q.enable()).toBeUndefined();
    expect(q.ready).toBe(true);
    mock.addChain([{ addr: DATA, len: 4 }]);
    expect(q.popChain()).toBeNull(); // enabled but not activated (no DRIVER_OK)
    expect(q.hasAvailable()).toBe(false);
    q.activate(false, false);
    const c = pop(q);
    expect(q.inFlight).toBe(1);
    q.reset();
    expect(q.ready).toBe(false);
    expect(q.isActive).toBe(false);
    expect(q.size).toBe(16);
    expect(q.inFlight).toBe(0);
    expect([q.descAddr, q.driverAddr, q.deviceAddr]).toEqual([0, 0, 0]);
    expect(q.popChain()).toBeNull();
    expect(q.addUsed(c.head, 0)).toBe(false); // a completion from before the reset
    const mock2 = new MockSplitQueue(mem, 16, { base: 0x2000 });
    expect(mock2.configure(q)).toBeUndefined();
    const head = mock2.addChain([{ addr: DATA + 0x100, len: 4, writable: true }]);
    const d = pop(q);
    expect(d.head).toBe(head);
    expect(q.addUsed(d.head, 4)).toBe(true);
    q.publishUsed();
    expect(mock2.readUsed()).toEqual([{ id: head, len: 4 }]);
  });

  it("validates queue sizes", () => {
    expect([1, 2, 256, 32768].every(isValidQueueSize)).toBe(true);
    expect([0, 3, 6, 65536, -2, 1.5, Number.NaN].some(isValidQueueSize)).toBe(false);
    expect(() => new DeviceQueue(0, 100)).toThrow();
    expect(() => new DeviceQueue(0, 65536)).toThrow();
  });

  it("works on SharedArrayBuffer memory (indices through Atomics)", () => {
    const { mem, mock, q } = setup({ shared: true, eventIdx: true, indirect: true });
    expect(mem.shared).toBe(true);
    mock.addChain(
      [
        { addr: DATA, len: 4 },
        { addr: DATA + 16, len: 4, writable: true },
      ],
      { indirectTable: TABLES },
    );
    const c = pop(q);
    expect(c.writable(0).buffer).toBeInstanceOf(SharedArrayBuffer);
    c.writer.writeU32(0xfeedface);
    q.addUsed(c.head, c.writer.bytesWritten);
    expect(q.needsNotification()).toBe(true);
    expect(mock.readUsed()).toEqual([{ id: c.head, len: 4 }]);
    expect(mem.readU32(DATA + 16)).toBe(0xfeedface);
    expect(mock.availEvent()).toBe(1);
  });

  it("maps buffers in any region of multi-region memory", () => {
    const mem = new GuestMemory([
      { base: 0, size: 0x4000 },
      { base: 0x10_0000, size: 0x1000 },
      { base: 0x1_0000_0000, size: 0x1000, backing: new SharedArrayBuffer(0x1000) },
    ]);
    const { mock, q } = setup({ mem });
    mock.addChain([
      { addr: 0x10_0010, len: 16 },
      { addr: 0x1_0000_0100n, len: 8, writable: true },
    ]);
    const c = pop(q);
    expect(chainRanges(c)).toEqual({
      head: c.head,
      readable: [{ addr: 0x10_0010, len: 16 }],
      writable: [{ addr: 0x1_0000_0100, len: 8 }],
    });
    c.writable(0)[0] = 0x42;
    expect(mem.readU8(0x1_0000_0100)).toBe(0x42);
    expect(c.readable(0).buffer).toBe(mem.regions[1]!.bytes.buffer);
  });

  it("keeps working when a WebAssembly.Memory grows mid-flight", () => {
    const wasm = new WebAssembly.Memory({ initial: 1, maximum: 8 });
    const mem = GuestMemory.over(wasm);
    const mock = new MockSplitQueue(mem, 8);
    const q = new DeviceQueue(0, 8);
    expect(mock.configure(q, { eventIdx: true })).toBeUndefined();
    mock.addChain([{ addr: DATA, len: 16, writable: true }]);
    const c = pop(q);
    wasm.grow(1); // detaches every view the queue holds
    // Completing after the grow must neither throw nor lose the length.
    expect(() => q.addUsed(c.head, 16)).not.toThrow();
    expect(q.needsNotification()).toBe(true);
    expect(mock.readUsed()).toEqual([{ id: c.head, len: 16 }]);
    // A grow with no other memory access in between: the queue itself must notice.
    wasm.grow(1);
    mem.writeU16(mock.availAddr + 4 + 2, 1); // avail slot 1 → head 1 (plain write into the new buffer)
    new Uint8Array(wasm.buffer).set(
      [0, 0x90, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0],
      mock.descAddr + 16,
    );
    new DataView(wasm.buffer).setUint16(mock.availAddr + 2, 2, true);
    wasm.grow(1);
    expect(q.hasAvailable()).toBe(true);
    const d = pop(q);
    expect(chainRanges(d).readable).toEqual([{ addr: 0x9000, len: 4 }]);
    expect(q.error).toBeNull();
  });
});

describe("write observer (code-cache coherence for emulators with a JIT)", () => {
  it("reports the writable bytes a returned chain used, the used element and used.idx", () => {
    const { mem, mock, q } = setup({ size: 8 });
    const head = mock.addChain([
      { addr: DATA, len: 16 },
      { addr: DATA + 0x100, len: 100, writable: true },
      { addr: DATA + 0x400, len: 50, writable: true },
    ]);
    const seen: Array<[number, number]> = [];
    mem.writeObserver = (a, n) => seen.push([a, n]); // the mock's own ring writes are done
    const c = pop(q);
    expect(seen).toEqual([]); // popping writes nothing
    expect(q.addUsed(c.head, 120)).toBe(true);
    q.publishUsed();
    const used = MockSplitQueue.layout(8).used;
    expect(seen).toEqual([
      [DATA + 0x100, 100],
      [DATA + 0x400, 20],
      [used + 4 + 8 * 0, 8],
      [used + 2, 2],
    ]);
    expect(head).toBe(c.head);
  });

  it("reports nothing for a chain returned with length 0 beyond its used element", () => {
    const { mem, mock, q } = setup({ size: 8 });
    mock.addChain([{ addr: DATA, len: 32, writable: true }]);
    const seen: Array<[number, number]> = [];
    mem.writeObserver = (a, n) => seen.push([a, n]);
    expect(q.addUsed(pop(q).head, 0)).toBe(true);
    expect(seen).toEqual([[MockSplitQueue.layout(8).used + 4, 8]]);
  });
});
